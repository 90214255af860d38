"""lk_log_scan through logkernel.scan_log: the valid prefix of a run of batches is found
exactly, whatever follows it (torn batch, flipped byte, zeros, garbage)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import logkernel


@st.composite
def record_sets(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Consecutive batches with increasing offsets; returns (batches, base offsets)."""
    batches, bases = [], []
    offset = draw(st.integers(0, 1000))
    for _ in range(draw(st.integers(1, 8))):
        values = draw(st.lists(st.binary(max_size=40), min_size=1, max_size=6))
        codec = draw(st.sampled_from(["none", "none", "zstd"]))
        batches.append(logkernel.encode_batch(values, timestamps=draw(st.integers(0, 10**6)),
                                              base_offset=offset, compression_type=codec))
        bases.append(offset)
        offset += len(values) + draw(st.integers(0, 3))  # gaps are legal (compaction)
    return batches, bases


@given(record_sets())
def test_whole_record_set_is_valid(rs: tuple[list[bytes], list[int]]) -> None:
    batches, bases = rs
    data = b"".join(batches)
    result = logkernel.scan_log(data, min_offset=bases[0])
    assert result.stop_reason == "end"
    assert result.valid_bytes == len(data)
    assert result.batches == len(batches)
    assert result.first_offset == bases[0]
    last = logkernel.decode_batch(batches[-1]).header
    assert result.next_offset == last.next_offset


@given(record_sets(), st.data())
def test_cut_anywhere_keeps_the_whole_batches_before_it(rs: tuple[list[bytes], list[int]],
                                                         data: st.DataObject) -> None:
    batches, _ = rs
    blob = b"".join(batches)
    cut = data.draw(st.integers(0, len(blob)))
    result = logkernel.scan_log(blob[:cut])
    boundaries = [0]
    for b in batches:
        boundaries.append(boundaries[-1] + len(b))
    kept = max(x for x in boundaries if x <= cut)
    assert result.valid_bytes == kept
    if kept == cut:
        assert result.stop_reason == "end"
    else:  # a torn batch whose bytes so far happen to be all zero looks like preallocation
        all_zero = not any(blob[kept:cut])
        assert result.stop_reason == ("zeros" if all_zero else "torn")


@given(record_sets(), st.data())
def test_flipped_crc_covered_byte_ends_the_prefix_at_its_batch(
        rs: tuple[list[bytes], list[int]], data: st.DataObject) -> None:
    batches, _ = rs
    k = data.draw(st.integers(0, len(batches) - 1))
    start = sum(len(b) for b in batches[:k])
    # bytes 8..11 (length), 16 (magic) and 17.. (CRC and everything it covers)
    inside = data.draw(st.sampled_from([8, 9, 10, 11]) | st.integers(16, len(batches[k]) - 1))
    blob = bytearray(b"".join(batches))
    blob[start + inside] ^= data.draw(st.integers(1, 255))
    result = logkernel.scan_log(bytes(blob))
    assert result.valid_bytes == start
    assert result.batches == k
    assert result.stop_reason in ("corrupt", "torn")


@given(record_sets(), st.binary(min_size=1, max_size=300), st.booleans())
def test_anything_after_the_prefix_is_not_accepted(rs: tuple[list[bytes], list[int]],
                                                   tail: bytes, zeros: bool) -> None:
    batches, _ = rs
    blob = b"".join(batches)
    tail = bytes(len(tail)) if zeros else tail
    result = logkernel.scan_log(blob + tail)
    assert result.valid_bytes == len(blob)
    if zeros:
        assert result.stop_reason == "zeros"


def test_offsets_going_backwards_end_the_prefix() -> None:
    a = logkernel.encode_batch([b"a", b"b"], base_offset=10)
    b = logkernel.encode_batch([b"c"], base_offset=11)
    result = logkernel.scan_log(a + b)
    assert result.valid_bytes == len(a)
    assert result.stop_reason == "offset"


@given(st.binary(max_size=2000), st.integers(0, 2000))
def test_garbage_never_crashes(blob: bytes, start: int) -> None:
    start = min(start, len(blob))
    result = logkernel.scan_log(blob, start)
    assert start <= result.valid_bytes <= len(blob) or result.valid_bytes == start
