"""The records layer: building and reading batches through the public API, compression,
headers, control batches, and the errors bad input gets."""

from __future__ import annotations

import os
import struct

import pytest

import logkernel
from logkernel import compression
from logkernel.errors import (
    ConfigError,
    CorruptRecordError,
    CrcMismatchError,
    TruncatedBatchError,
    UnsupportedMagicError,
)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_codec(codec: str) -> None:
    values = [os.urandom(100) for _ in range(500)] + [None, b""]
    keys = [b"k%d" % i for i in range(len(values))]
    data = logkernel.encode_batch(values, keys=keys, timestamps=list(range(len(values))),
                                  compression_type=codec, base_offset=77)
    batch = logkernel.decode_batch(data)
    assert batch.header.compression == compression.codec_id(codec)
    records = batch.records()
    assert [r.value for r in records] == values
    assert [r.key for r in records] == keys
    assert [r.offset for r in records] == list(range(77, 77 + len(values)))
    assert [r.timestamp for r in records] == list(range(len(values)))
    assert batch.values() == values


def test_header_defaults_and_fields() -> None:
    data = logkernel.encode_batch([b"v"], timestamps=5, producer_id=3, producer_epoch=1,
                                  base_sequence=9, transactional=True, partition_leader_epoch=4)
    h = logkernel.decode_batch(data).header
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (3, 1, 9)
    assert h.is_transactional and not h.is_control
    assert h.partition_leader_epoch == 4
    assert h.base_timestamp == h.max_timestamp == 5
    assert h.size == len(data)


def test_headers_round_trip_including_non_utf8_keys() -> None:
    weird = b"\xff\xfe".decode("utf-8", "surrogateescape")
    headers = [[("a", b"1"), ("b", None)], None, [(weird, b"x"), ("ünïcode", b"")]]
    data = logkernel.encode_batch([b"1", b"2", b"3"], headers=headers)
    got = [list(r.headers) for r in logkernel.decode_batch(data).records()]
    assert got == [[("a", b"1"), ("b", None)], [], [(weird, b"x"), ("ünïcode", b"")]]


def test_log_append_time_gives_every_record_the_max_timestamp() -> None:
    data = bytearray(logkernel.encode_batch([b"a", b"b"], timestamps=[10, 20], log_append_time=True))
    struct.pack_into(">q", data, 35, 999)  # the broker stamps maxTimestamp...
    logkernel._binding.update_crc(data)    # ...and recomputes the CRC
    assert [r.timestamp for r in logkernel.decode_batch(data).records()] == [999, 999]


def test_iter_batches_over_a_record_set() -> None:
    a = logkernel.encode_batch([b"a1", b"a2"], base_offset=0)
    b = logkernel.encode_batch([b"b1"], base_offset=2, compression_type="zstd")
    offsets = [r.offset for batch in logkernel.iter_batches(a + b) for r in batch]
    assert offsets == [0, 1, 2]
    with pytest.raises(TruncatedBatchError, match=f"batch at byte {len(a)}"):
        list(logkernel.iter_batches(a + b[:-1]))


def test_errors_name_the_problem_and_position() -> None:
    good = logkernel.encode_batch([b"hello"] * 3)
    with pytest.raises(TruncatedBatchError):
        logkernel.decode_batch(good[:-1])
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    with pytest.raises(CrcMismatchError, match="CRC-32C") as info:
        logkernel.decode_batch(bad)
    assert info.value.position == 17
    old = bytearray(good)
    old[16] = 1
    with pytest.raises(UnsupportedMagicError, match="magic") as info:
        logkernel.decode_batch(old)
    assert info.value.position == 16
    # A record damaged under a valid CRC: the walker names the record.
    bad = bytearray(good)
    bad[61] = 0x7F  # first record's length varint: now runs past the section
    logkernel._binding.update_crc(bad)
    with pytest.raises(CorruptRecordError, match="record length") as info:
        logkernel.decode_batch(bad)
    assert info.value.record_index == 0
    for garbage in (b"", b"\x00" * 11, os.urandom(5000)):
        with pytest.raises(CorruptRecordError):
            logkernel.decode_batch(garbage)


def test_compressed_garbage_is_a_corrupt_record_error() -> None:
    good = bytearray(logkernel.encode_batch([b"x" * 1000] * 10, compression_type="lz4"))
    good[70] ^= 0xFF
    logkernel._binding.update_crc(good)
    with pytest.raises(CorruptRecordError, match="lz4"):
        logkernel.decode_batch(good)


def test_decompression_bomb_is_bounded() -> None:
    data = logkernel.encode_batch([b"\x00" * 1_000_000] * 5, compression_type="zstd")
    assert len(data) < 10_000
    with pytest.raises(CorruptRecordError, match="larger than"):
        logkernel.decode_batch(data, max_decompressed=1_000_000)
    assert len(logkernel.decode_batch(data).records()) == 5


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_codec_bounds_its_output(codec: str) -> None:
    payload = b"\x00" * 2_000_000
    packed = compression.compress(compression.codec_id(codec), payload)
    with pytest.raises(CorruptRecordError, match="larger than"):
        compression.decompress(compression.codec_id(codec), packed, max_size=1_000_000)
    assert compression.decompress(compression.codec_id(codec), packed) == payload


def test_raw_snappy_is_read_too() -> None:
    import cramjam
    raw = bytes(cramjam.snappy.compress_raw(b"abc" * 1000))
    assert compression.decompress(compression.SNAPPY, raw) == b"abc" * 1000


def test_bad_arguments_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        logkernel.encode_batch([])
    with pytest.raises(TypeError, match=r"values\[1\] is str"):
        logkernel.encode_batch([b"ok", "not bytes"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="keys has 1 entries for 2 records"):
        logkernel.encode_batch([b"a", b"b"], keys=[b"k"])
    with pytest.raises(ConfigError, match=r"compression\.type='brotli'"):
        logkernel.encode_batch([b"a"], compression_type="brotli")
    with pytest.raises(ValueError, match="offset deltas must increase"):
        logkernel.encode_batch([b"a", b"b"], offset_deltas=[1, 1])


def test_control_batch_round_trip() -> None:
    data = logkernel.encode_control_batch(logkernel.CONTROL_ABORT, producer_id=1, producer_epoch=0,
                                          coordinator_epoch=3, timestamp=10, base_offset=5)
    batch = logkernel.decode_batch(data)
    assert batch.is_control
    marker = batch.control_record()
    assert (marker.control_type, marker.coordinator_epoch, marker.offset) == (0, 3, 5)
    with pytest.raises(ValueError, match="not a control batch"):
        logkernel.decode_batch(logkernel.encode_batch([b"x"])).control_record()


def test_impossible_record_count_is_corrupt_not_a_crash() -> None:
    data = bytearray(logkernel.encode_batch([b"x"]))
    struct.pack_into(">i", data, 57, 1_000_000)   # recordsCount
    struct.pack_into(">i", data, 23, 999_999)     # lastOffsetDelta, consistent with it
    logkernel._binding.update_crc(data)
    with pytest.raises(CorruptRecordError, match="recordsCount is larger"):
        logkernel.decode_batch(data)


def test_negative_lengths_below_minus_one_read_as_null_like_kafka() -> None:
    # record: attrs 0, tsΔ 0, offΔ 0, key len -2 (zig-zag 3), value len -5 (9), 0 headers
    body = bytes([0, 0, 0, 3, 9, 0])
    records = bytes([len(body) * 2]) + body
    data = bytearray(logkernel.encode_batch([b""]))
    data = data[:61] + records
    struct.pack_into(">i", data, 8, len(data) - 12)
    logkernel._binding.update_crc(data)
    (record,) = logkernel.decode_batch(bytes(data)).records()
    assert record.key is None and record.value is None


def test_record_columns_refuse_arrays_of_the_wrong_width() -> None:
    from array import array
    with pytest.raises(TypeError, match="4-byte items"):
        logkernel._binding.RecordColumns(2, values=b"ab", value_lengths=array("h", [1, 1]))


def test_hostile_count_allocates_by_the_batch_not_the_buffer() -> None:
    """recordsCount sizes the span array before C checks it: the bound must come from the
    batch's own length, not from whatever follows it in the buffer (a whole segment)."""
    import tracemalloc
    data = bytearray(logkernel.encode_batch([b"x"]))
    struct.pack_into(">i", data, 57, 2**31 - 1)
    struct.pack_into(">i", data, 23, 2**31 - 2)
    logkernel._binding.update_crc(data)
    tail = bytes(20_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptRecordError, match="recordsCount"):
            next(logkernel.iter_batches(bytes(data) + tail))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 25_000_000  # the concatenated input itself, and no 137 MB span array
