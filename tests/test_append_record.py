"""``Segment.append_record`` (lk_segment_append_record) against its definition: the bytes,
indexes and state it leaves are exactly those of ``encode_batch`` for the same single record
followed by ``Segment.append``; recovery then finds every batch valid; a failed call writes
nothing. Plus ``encode_headers``, whose output is the headers section ``encode_batch`` writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import logkernel
from logkernel import Segment
from logkernel._binding import VALIDATE_CONTIGUOUS, VALIDATE_CRC, VALIDATE_RECORDS, encode_headers
from logkernel.errors import (
    ClosedError,
    CorruptRecordError,
    NeedsRecoveryError,
    OffsetOrderError,
    SegmentFullError,
)

LOG_APPEND_TIME = 8

Header = tuple[str, "bytes | None"]

maybe_bytes = st.one_of(st.none(), st.just(b""), st.binary(max_size=300))
header_key = st.one_of(
    st.text(max_size=12),
    # bytes that are not UTF-8 travel as surrogate escapes, as records.py reads them
    st.binary(min_size=1, max_size=8).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
headers_strategy = st.lists(st.tuples(header_key, st.one_of(st.none(), st.binary(max_size=20))),
                            max_size=3)
record_strategy = st.fixed_dictionaries({
    "gap": st.sampled_from([0, 0, 0, 1, 7]),
    "timestamp": st.one_of(st.just(-1), st.just(0), st.integers(0, 2**62)),
    "log_append_time": st.booleans(),
    "epoch": st.sampled_from([-1, 0, 5]),
    "key": maybe_bytes,
    "value": maybe_bytes,
    "headers": headers_strategy,
})


def paths(directory: str, name: str) -> tuple[str, str, str]:
    stem = os.path.join(directory, name)
    return stem + ".log", stem + ".index", stem + ".timeindex"


def open_segment(directory: str, name: str, *, base: int = 0, create: bool = True,
                 **kw: int) -> Segment:
    kw.setdefault("log_capacity", 16 << 20)
    kw.setdefault("grow_step", 64 << 10)
    kw.setdefault("index_capacity", 64 << 10)
    return Segment(*paths(directory, name), base_offset=base, writable=True, create=create, **kw)


def encoded(record: dict, offset: int) -> bytes:
    """The same record through the batch encoder: what append_record must equal."""
    return logkernel.encode_batch(
        [record["value"]], keys=[record["key"]], timestamps=record["timestamp"],
        headers=[record["headers"]], base_offset=offset,
        log_append_time=record["log_append_time"], partition_leader_epoch=record["epoch"])


def file_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


@settings(max_examples=100)
@given(st.lists(record_strategy, min_size=1, max_size=40), st.sampled_from([0, 1000]),
       st.sampled_from([0, 64, 300, 4096]))
def test_append_record_equals_encode_then_append(records: list[dict], base: int,
                                                 interval: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        a = open_segment(directory, "a", base=base, index_interval_bytes=interval)
        b = open_segment(directory, "b", base=base, index_interval_bytes=interval)
        offset = base
        for record in records:
            offset += record["gap"]
            blob, count = encode_headers(record["headers"])
            attributes = LOG_APPEND_TIME if record["log_append_time"] else 0
            end = a.append_record(offset, record["timestamp"], attributes, record["epoch"],
                                  record["key"], record["value"], blob if count else None, count)
            batch = encoded(record, offset)
            expected_position, next_offset = b.append(batch, offset)
            assert end == expected_position + len(batch)
            assert next_offset == offset + 1
            assert a.info() == b.info()
            offset += 1
        a.close()
        b.close()
        for path_a, path_b in zip(paths(directory, "a"), paths(directory, "b"), strict=True):
            assert file_bytes(path_a) == file_bytes(path_b), path_a

        # Recovery with every check finds it all valid; the records read back as given.
        with open_segment(directory, "a", base=base, create=False) as seg:
            size = seg.info().size
            scan = seg.recover(VALIDATE_CRC | VALIDATE_RECORDS | VALIDATE_CONTIGUOUS)
            assert (scan.stop_reason, scan.valid_bytes, scan.records) == ("end", size, len(records))
            got = [r for batch in logkernel.iter_batches(seg.read(0, size)) for r in batch]
        offset = base
        for record, read in zip(records, got, strict=True):
            offset += record["gap"]
            assert read.offset == offset
            assert read.timestamp == record["timestamp"]
            assert read.key == record["key"] and read.value == record["value"]
            assert list(read.headers) == [(k, v) for k, v in record["headers"]]
            offset += 1


@given(headers_strategy)
def test_encode_headers_is_the_section_encode_batch_writes(headers: list[Header]) -> None:
    blob, count = encode_headers(headers)
    assert count == len(headers)
    batch = logkernel.encode_batch([b"v"], timestamps=0, headers=[headers])
    # one record: ... valueLength, value "v", headerCount varint, then exactly the section
    assert batch.endswith(blob)
    assert logkernel.decode_batch(batch).records()[0].headers == tuple(headers)


def test_encode_headers_lengths_and_types() -> None:
    for n in (0, 63, 64, 8191, 8192, 100_000):  # 1-, 2- and 3-byte length varints
        blob, count = encode_headers([("k" * n, b"v" * n)])
        batch = logkernel.encode_batch([None], timestamps=0, headers=[[("k" * n, b"v" * n)]])
        assert count == 1 and batch.endswith(blob)
    assert encode_headers([]) == (b"", 0)
    assert encode_headers([("", None)]) == (b"\x00\x01", 1)
    assert encode_headers([("a", bytearray(b"x")), ("b", memoryview(b"y"))]) == (  # type: ignore[list-item]
        b"\x02a\x02x\x02b\x02y", 2)
    with pytest.raises(TypeError, match="header keys are str"):
        encode_headers([(b"k", b"v")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="header values are bytes"):
        encode_headers([("k", "v")])  # type: ignore[list-item]


def assert_untouched(seg: Segment, before: logkernel.SegmentInfo, log_path: str) -> None:
    assert seg.info() == before
    assert file_bytes(log_path)[before.size:].strip(b"\x00") == b""


def test_errors_write_nothing(tmp_path: Path) -> None:
    directory = str(tmp_path)
    log = paths(directory, "e")[0]
    seg = open_segment(directory, "e", base=10, max_batch_size=200, log_capacity=1000)
    assert seg.append_record(10, 1, 0, -1, b"k", b"v") == 70  # the new end: 61 + 1 + 8
    before = seg.info()
    cases: list[tuple[type[Exception], str, tuple]] = [
        (OffsetOrderError, "next offset is 11", (10, 1, 0, -1, None, None)),
        (OffsetOrderError, "2\\^31-1", (10 + 2**31, 1, 0, -1, None, None)),
        (ValueError, "only the LogAppendTime bit", (11, 1, 1, -1, None, None)),
        (ValueError, "only the LogAppendTime bit", (11, 1, 0x10, -1, None, None)),
        (ValueError, "only the LogAppendTime bit", (11, 1, 0x20, -1, None, None)),
        (ValueError, "encode_headers", (11, 1, 0, -1, None, None, b"\x02a", 1)),  # no value
        (ValueError, "encode_headers", (11, 1, 0, -1, None, None, b"\x02a\x01\x00", 1)),  # extra
        (ValueError, "encode_headers", (11, 1, 0, -1, None, None, b"\x02a\x01", 2)),  # count
        (ValueError, "encode_headers", (11, 1, 0, -1, None, None, b"\x02a\x03", 1)),  # -2
        (CorruptRecordError, "max_batch_size", (11, 1, 0, -1, None, b"x" * 200)),
        (TypeError, "encode strings first", (11, 1, 0, -1, "key", None)),
        (TypeError, "got int", (11, 1, 0, -1, None, 5)),
    ]
    for error, message, args in cases:
        with pytest.raises(error, match=message):
            seg.append_record(*args)
        assert_untouched(seg, before, log)
    # fill the 1000-byte log: the batch that does not fit is refused whole
    offset = 11
    with pytest.raises(SegmentFullError):
        while True:
            seg.append_record(offset, 1, 0, -1, None, b"y" * 100)
            offset += 1
    full = seg.info()
    assert full.size + 61 + 3 + 100 + 3 > 1000 and full.next_offset == offset
    assert_untouched(seg, full, log)
    seg.seal()
    with pytest.raises(ClosedError):
        seg.append_record(offset, 1, 0, -1, None, None)
    seg.close()
    with pytest.raises(ClosedError, match="closed"):
        seg.append_record(offset, 1, 0, -1, None, None)


def test_bytes_like_arguments_and_log_append_time(tmp_path: Path) -> None:
    with open_segment(str(tmp_path), "s") as seg:
        blob, count = encode_headers([("h", b"1")])
        seg.append_record(0, 5, LOG_APPEND_TIME, 3, bytearray(b"k"), memoryview(b"v"),
                          bytearray(blob), count)  # type: ignore[arg-type]
        (batch,) = logkernel.iter_batches(seg.read(0, seg.info().size))
        assert batch.header.timestamp_type_is_log_append and batch.header.max_timestamp == 5
        assert batch.header.partition_leader_epoch == 3
        assert [tuple(r) for r in batch.records()] == [(0, 5, b"k", b"v", (("h", b"1"),))]


def test_needs_recovery_first(tmp_path: Path) -> None:
    directory = str(tmp_path)
    with open_segment(directory, "r") as seg:
        seg.append_record(0, 1, 0, -1, None, b"v")
        seg.flush()
    with open(paths(directory, "r")[0], "ab") as f:
        f.write(b"garbage after the last batch")
    with open_segment(directory, "r", create=False) as seg:
        with pytest.raises(NeedsRecoveryError):
            seg.append_record(1, 1, 0, -1, None, b"w")
        assert seg.recover().valid_bytes == 69  # 61 + length 1 + 7-byte record
        assert seg.append_record(1, 1, 0, -1, None, b"w") == 69 + 69  # the new end
