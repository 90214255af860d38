"""``decode_columns`` (lk_decode_columns) against ``records.iter_batches`` as the oracle.

A log is a run of batches: data batches (null, empty and random keys, values and headers;
per-record timestamps; gapped offset deltas as compaction leaves them; LogAppendTime),
control batches, and compressed batches, with offset gaps between batches. A driver plays
the consumer: it resumes after "full" (from ``position`` at ``next_offset``) and decodes a
"compressed" batch itself, as the caller must. Whatever the capacity, the rows must be the
oracle's records in [min_offset, max_offset), control records left out. Then damage: a byte
flipped in any batch (a CRC error naming it, the records before it returned) and the buffer
cut at every position ("torn" or "end", the whole batches before the cut returned)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkernel import _binding, records
from logkernel._binding import Columns, decode_columns
from logkernel.errors import CrcMismatchError

INT64_MAX = 2**63 - 1
Row = tuple[int, int, "bytes | None", "bytes | None", tuple]

maybe_bytes = st.one_of(st.none(), st.just(b""), st.binary(max_size=60))
headers = st.lists(st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=8))),
                   max_size=2)


@st.composite
def data_batch(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 12))
    gapped = draw(st.booleans())
    deltas = None
    if gapped:
        steps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
        deltas = [sum(steps[:i]) for i in range(n)]
    return {
        "kind": "data",
        "values": draw(st.lists(maybe_bytes, min_size=n, max_size=n)),
        "keys": draw(st.lists(maybe_bytes, min_size=n, max_size=n)),
        "headers": draw(st.lists(headers, min_size=n, max_size=n)),
        "timestamps": draw(st.lists(st.integers(-1, 2**40), min_size=n, max_size=n)),
        "offset_deltas": deltas,
        "log_append_time": draw(st.booleans()),
        "compression": draw(st.sampled_from(["none"] * 6 + ["gzip", "snappy", "lz4", "zstd"])),
    }


batch_spec = st.one_of(data_batch(), st.fixed_dictionaries({
    "kind": st.just("control"), "commit": st.booleans()}))
log_spec = st.lists(st.tuples(st.integers(0, 3), batch_spec), min_size=1, max_size=12)


def build(spec: list[tuple[int, dict]], first_offset: int = 0) -> bytes:
    parts = []
    offset = first_offset
    for gap, b in spec:
        offset += gap
        if b["kind"] == "control":
            kind = records.CONTROL_COMMIT if b["commit"] else records.CONTROL_ABORT
            blob = records.encode_control_batch(kind, producer_id=7, producer_epoch=1,
                                                timestamp=99, base_offset=offset)
        else:
            blob = records.encode_batch(
                b["values"], keys=b["keys"], headers=b["headers"], timestamps=b["timestamps"],
                offset_deltas=b["offset_deltas"], base_offset=offset,
                log_append_time=b["log_append_time"], compression_type=b["compression"])
        parts.append(blob)
        offset = _binding.parse_header(blob).next_offset
    return b"".join(parts)


def row_of(r: records.Record) -> Row:
    return (r.offset, r.timestamp, r.key, r.value, tuple(r.headers))


def expected(data: bytes, min_offset: int, max_offset: int) -> tuple[list[Row], str, int]:
    """The oracle: iter_batches' records in [min, max), control batches skipped, and the stop
    and next offset the contract promises for a buffer of whole batches."""
    rows: list[Row] = []
    next_offset = min_offset
    for batch in records.iter_batches(data):
        h = batch.header
        if h.compression and h.last_offset < min_offset:
            continue  # skipped without decompressing
        if h.compression and h.base_offset >= max_offset:
            return rows, "limit", max(next_offset, max_offset)
        if not h.is_control:
            for r in batch.records():
                if min_offset <= r.offset < max_offset:
                    rows.append(row_of(r))
                    next_offset = r.offset + 1
        if h.last_offset >= max_offset and h.last_offset >= min_offset:
            return rows, "limit", max(next_offset, max_offset)
        next_offset = max(next_offset, h.next_offset)
    return rows, "end", next_offset


def rows_of(c: Columns, data: bytes | memoryview) -> list[Row]:
    """The records the columns describe, read out of the decoded buffer."""
    buf = bytes(data)
    out: list[Row] = []
    for i in range(c.count):
        def piece(pos: int, length: int) -> bytes | None:
            return None if length < 0 else buf[pos:pos + length]
        hp, hl, hc = (int(c.headers_offsets[i]), int(c.headers_lengths[i]),
                      int(c.headers_counts[i]))
        block = buf[hp:hp + hl]
        spans = _binding.decode_headers(block, hc).tolist()
        hs = tuple((block[kp:kp + kl].decode("utf-8", "surrogateescape"),
                    None if vl < 0 else block[vp:vp + vl]) for kp, kl, vp, vl in spans)
        out.append((int(c.offsets[i]), int(c.timestamps[i]),
                    piece(int(c.key_offsets[i]), int(c.key_lengths[i])),
                    piece(int(c.value_offsets[i]), int(c.value_lengths[i])), hs))
    return out


def drive(data: bytes, min_offset: int, max_offset: int, max_records: int | None,
          validate_crc: bool = True) -> tuple[list[Row], Columns, int]:
    """Decodes all of ``data`` the way a consumer would; returns the rows, the last result,
    and where in ``data`` the buffer of that last call started."""
    rows: list[Row] = []
    start, low = 0, min_offset
    while True:
        view = memoryview(data)[start:]
        c = decode_columns(view, low, max_offset, max_records, validate_crc)
        assert c.count == len(c.offsets) == len(c.value_lengths) == len(c.headers_counts)
        assert c.offsets.dtype == np.int64 and c.key_offsets.dtype == np.int32
        assert max_records is None or c.count <= max_records
        assert c.next_offset >= low
        rows += rows_of(c, view)
        if c.stop == "full":
            assert c.count == max_records
            if max_records == 0:
                return rows, c, start
            start, low = start + c.position, c.next_offset
            continue
        if c.stop == "compressed":
            batch = records.decode_batch(view[c.position:])
            rows += [row_of(r) for r in batch.records() if c.next_offset <= r.offset < max_offset]
            if batch.header.last_offset >= max_offset:
                c.stop, c.next_offset = "limit", max(c.next_offset, max_offset)
                return rows, c, start
            start += c.position + batch.header.size
            low = max(c.next_offset, batch.header.next_offset)
            continue
        if c.stop == "end":
            assert c.position == len(view)
        return rows, c, start


@settings(max_examples=150)
@given(log_spec, st.integers(0, 1000), st.data())
def test_matches_iter_batches(spec: list[tuple[int, dict]], first: int, draw: st.DataObject) -> None:
    data = build(spec, first)
    last = first + 200
    min_offset = draw.draw(st.one_of(st.just(0), st.integers(first, last)), label="min")
    max_offset = draw.draw(st.one_of(st.just(INT64_MAX), st.integers(first, last)), label="max")
    max_records = draw.draw(st.one_of(st.none(), st.integers(1, 30)), label="max_records")
    want, stop, next_offset = expected(data, min_offset, max_offset)
    got, c, _ = drive(data, min_offset, max_offset, max_records, draw.draw(st.booleans()))
    assert got == want
    assert (c.stop, c.next_offset, c.error) == (stop, next_offset, None)


@settings(max_examples=60)
@given(log_spec, st.data())
def test_a_flipped_byte_is_a_crc_error_after_the_good_prefix(
        spec: list[tuple[int, dict]], draw: st.DataObject) -> None:
    data = bytearray(build(spec))
    starts = []
    position = 0
    while position < len(data):
        starts.append(position)
        position += _binding.parse_header(memoryview(data)[position:]).size
    k = draw.draw(st.integers(0, len(starts) - 1), label="batch")
    end = starts[k + 1] if k + 1 < len(starts) else len(data)
    at = draw.draw(st.integers(starts[k] + 21, end - 1), label="byte")  # CRC-covered bytes
    good, _, _ = expected(bytes(data[:starts[k]]), 0, INT64_MAX)
    data[at] ^= 1 << draw.draw(st.integers(0, 7), label="bit")
    got, c, start = drive(bytes(data), 0, INT64_MAX, draw.draw(st.sampled_from([None, 1, 5])))
    assert got == good
    assert c.stop == "corrupt"
    assert isinstance(c.error, CrcMismatchError)
    # positions are relative to the buffer of the call that met the bad batch
    assert start + c.position == starts[k]
    assert c.error.position == c.position + 17


def test_every_cut_is_torn_or_end_with_the_whole_batches_before_it() -> None:
    spec = [(0, {"kind": "data", "values": [b"v" * 30, None, b""], "keys": [None, b"k", b""],
                 "headers": [[("h", b"1")], [], [("", None)]], "timestamps": [5, 6, 7],
                 "offset_deltas": None, "log_append_time": False, "compression": "none"}),
            (1, {"kind": "control", "commit": True}),
            (0, {"kind": "data", "values": [b"x"], "keys": [b"y"], "headers": [[]],
                 "timestamps": [8], "offset_deltas": None, "log_append_time": True,
                 "compression": "none"}),
            (2, {"kind": "data", "values": [b"a", b"b"], "keys": [None, None],
                 "headers": [[], []], "timestamps": [1, 2], "offset_deltas": [0, 3],
                 "log_append_time": False, "compression": "gzip"})]
    data = build(spec)
    boundaries = [0]
    while boundaries[-1] < len(data):
        boundaries.append(boundaries[-1] + _binding.parse_header(data[boundaries[-1]:]).size)
    for cut in range(len(data) + 1):
        whole = max(b for b in boundaries if b <= cut)
        want, _, _ = expected(data[:whole], 0, INT64_MAX)
        got, c, start = drive(data[:cut], 0, INT64_MAX, None)
        assert got == want, cut
        assert (c.stop, start + c.position, c.error) == ("end" if cut == whole else "torn",
                                                         cut if cut == whole else whole, None)


def test_stops_and_positions_of_a_known_log() -> None:
    """offsets: batch A 10..12, control 13, B (LogAppendTime) 14, gzip C 17..18, D 19..20."""
    a = records.encode_batch([b"a0", b"a1", b"a2"], keys=[b"k", None, b""], timestamps=[1, 2, 3],
                             headers=[[("h", b"v")], None, [("x", None)]], base_offset=10)
    control = records.encode_control_batch(records.CONTROL_COMMIT, producer_id=1,
                                           producer_epoch=0, timestamp=4, base_offset=13)
    b = records.encode_batch([b"b"], timestamps=[5], base_offset=14, log_append_time=True)
    b = bytearray(b)  # the broker stamps maxTimestamp of a LogAppendTime batch
    b[35:43] = (77).to_bytes(8, "big")
    _binding.update_crc(b)
    compressed = records.encode_batch([b"c0", b"c1"], timestamps=[6, 7], base_offset=17,
                                      compression_type="gzip")
    d = records.encode_batch([b"d0", b"d1"], timestamps=[8, 9], base_offset=19)
    data = a + control + bytes(b) + compressed + d
    pc = len(a) + len(control) + len(b)

    c = decode_columns(data)
    assert (c.count, c.stop, c.position, c.next_offset) == (4, "compressed", pc, 15)
    assert c.offsets.tolist() == [10, 11, 12, 14]
    assert c.timestamps.tolist() == [1, 2, 3, 77]
    assert c.key_lengths.tolist() == [1, -1, 0, -1]
    assert c.headers_counts.tolist() == [1, 0, 1, 0]
    assert data[c.value_offsets[3]:c.value_offsets[3] + 1] == b"b"
    assert repr(c) == f"Columns(count=4, stop='compressed', position={pc}, next_offset=15)"
    assert len(c) == 4

    c = decode_columns(data, min_offset=11, max_offset=12)  # both inside batch A
    assert (c.offsets.tolist(), c.stop, c.position, c.next_offset) == ([11], "limit", 0, 12)
    c = decode_columns(data, min_offset=11, max_records=1)  # full inside batch A
    assert (c.offsets.tolist(), c.stop, c.position, c.next_offset) == ([11], "full", 0, 12)
    c = decode_columns(data, min_offset=12, max_records=1)  # full: the control batch needs
    assert (c.offsets.tolist(), c.stop, c.next_offset) == ([12], "full", 14)  # no row, B does
    assert c.position == len(a) + len(control)
    c = decode_columns(data, min_offset=13, max_records=1)  # the control batch is consumed
    assert (c.offsets.tolist(), c.stop, c.next_offset) == ([14], "compressed", 15)
    c = decode_columns(data, min_offset=19)  # the compressed batch is skipped unopened
    assert (c.offsets.tolist(), c.stop, c.position, c.next_offset) == ([19, 20], "end",
                                                                         len(data), 21)
    c = decode_columns(data, min_offset=15, max_offset=17)  # a limit before the gzip batch
    assert (c.count, c.stop, c.position, c.next_offset) == (0, "limit", pc, 17)
    c = decode_columns(data[pc:], min_offset=15, max_offset=INT64_MAX)
    assert (c.count, c.stop, c.position) == (0, "compressed", 0)
    c = decode_columns(data, max_records=0)
    assert (c.count, c.stop, c.position, c.next_offset) == (0, "full", 0, 0)
    c = decode_columns(b"", min_offset=5)
    assert (c.count, c.stop, c.position, c.next_offset) == (0, "end", 0, 5)

    # bytes-like inputs: memoryview, bytearray, numpy; positions relative to what was given
    for buffer in (memoryview(data)[len(a):], bytearray(data[len(a):]),
                   np.frombuffer(data, dtype=np.uint8)[len(a):]):
        c = decode_columns(buffer)
        assert (c.offsets.tolist(), c.position) == ([14], len(control) + len(b))


def test_damage_before_any_good_batch_and_arguments() -> None:
    data = bytearray(records.encode_batch([b"x"], timestamps=[1]))
    data[16] = 1  # magic
    c = decode_columns(bytes(data))
    assert (c.count, c.stop, c.position) == (0, "corrupt", 0)
    assert c.error is not None and c.error.position == 16
    data[16] = 2
    data[-1] ^= 0xFF
    assert decode_columns(bytes(data), validate_crc=False).stop == "corrupt"  # record walk
    assert decode_columns(bytes(data)).stop == "corrupt"
    with pytest.raises(ValueError, match="max_records"):
        decode_columns(b"", max_records=-1)
    with pytest.raises(TypeError):
        decode_columns("not bytes")  # type: ignore[arg-type]
