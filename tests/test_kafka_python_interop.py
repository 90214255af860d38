"""Known answers from a real Kafka client library: kafka-python's record-batch builder and
reader, captured at test time.

- batches built by kafka-python decode, with our C decoder, to exactly the records it was given;
- our encoder's bytes for the same input are byte-for-byte kafka-python's (uncompressed) and
  decode identically in kafka-python's reader (every codec);
- control batches (transaction markers) we write read as markers in kafka-python.
"""

from __future__ import annotations

import random

import pytest

import logkernel
from logkernel import compression

kafka_default_records = pytest.importorskip("kafka.record.default_records")
kafka_codec = pytest.importorskip("kafka.codec")
Builder = kafka_default_records.DefaultRecordBatchBuilder
Reader = kafka_default_records.DefaultRecordBatch

CODECS = {
    "none": True,
    "gzip": kafka_codec.has_gzip(),
    "snappy": kafka_codec.has_snappy(),
    "lz4": kafka_codec.has_lz4(),
    "zstd": kafka_codec.has_zstd(),
}


def sample_records(seed: int, n: int = 200) -> list[tuple[int, bytes | None, bytes | None, list]]:
    rng = random.Random(seed)
    out = []
    base = 1_700_000_000_000
    for i in range(n):
        key = None if i % 5 == 0 else b"key-%d" % rng.randrange(50)
        value = None if i % 11 == 0 else rng.randbytes(rng.randrange(0, 300))
        headers = [("trace-id", b"%08x" % rng.getrandbits(32))] if i % 3 == 0 else []
        if i % 17 == 0:
            headers.append(("nullable", None))
        out.append((base + i * 7 - rng.randrange(5), key, value, headers))
    return out


def kafka_python_batch(records: list, codec: str, *, producer: tuple[int, int, int] = (-1, -1, -1),
                       transactional: bool = False) -> bytes:
    builder = Builder(magic=2, compression_type=compression.codec_id(codec),
                      is_transactional=transactional, producer_id=producer[0],
                      producer_epoch=producer[1], base_sequence=producer[2], batch_size=2**30)
    for offset, (ts, key, value, headers) in enumerate(records):
        assert builder.append(offset, ts, key, value, headers) is not None
    return bytes(builder.build())


@pytest.mark.parametrize("codec", [c for c, ok in CODECS.items() if ok])
def test_kafka_python_batches_decode_to_their_records(codec: str) -> None:
    records = sample_records(1)
    data = kafka_python_batch(records, codec, producer=(4242, 3, 17))
    batch = logkernel.decode_batch(data)
    assert batch.header.producer_id == 4242
    assert batch.header.producer_epoch == 3
    assert batch.header.base_sequence == 17
    assert batch.header.record_count == len(records)
    if codec != "none":
        assert batch.header.compression == compression.codec_id(codec)
    got = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch.records()]
    want = [(i, ts, k, v, h) for i, (ts, k, v, h) in enumerate(records)]
    assert got == want


def test_our_uncompressed_bytes_equal_kafka_pythons() -> None:
    records = sample_records(2)
    theirs = kafka_python_batch(records, "none", producer=(99, 1, 0), transactional=True)
    ours = logkernel.encode_batch(
        [v for _, _, v, _ in records],
        keys=[k for _, k, _, _ in records],
        timestamps=[ts for ts, _, _, _ in records],
        headers=[h for _, _, _, h in records],
        producer_id=99, producer_epoch=1, base_sequence=0, transactional=True,
        partition_leader_epoch=0,  # kafka-python's builder leaves the leader epoch 0
    )
    assert ours == theirs


@pytest.mark.parametrize("codec", [c for c, ok in CODECS.items() if ok])
def test_kafka_python_reads_our_batches(codec: str) -> None:
    records = sample_records(3)
    ours = logkernel.encode_batch(
        [v for _, _, v, _ in records],
        keys=[k for _, k, _, _ in records],
        timestamps=[ts for ts, _, _, _ in records],
        headers=[h for _, _, _, h in records],
        compression_type=codec,
        base_offset=1000,
    )
    reader = Reader(ours)
    assert reader.validate_crc()
    assert reader.base_offset == 1000
    assert reader.compression_type == compression.codec_id(codec)
    got = [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in reader]
    want = [(1000 + i, ts, k, v, h) for i, (ts, k, v, h) in enumerate(records)]
    assert got == want


@pytest.mark.parametrize("marker", [logkernel.CONTROL_COMMIT, logkernel.CONTROL_ABORT])
def test_control_batches_read_as_markers_in_kafka_python(marker: int) -> None:
    data = logkernel.encode_control_batch(marker, producer_id=7, producer_epoch=2,
                                          coordinator_epoch=5, timestamp=1234, base_offset=50)
    reader = Reader(data)
    assert reader.validate_crc()
    assert reader.is_control_batch and reader.is_transactional
    (record,) = list(reader)
    assert record.offset == 50
    assert record.type == marker
    assert record.commit is (marker == logkernel.CONTROL_COMMIT)
    ours = logkernel.decode_batch(data).control_record()
    assert (ours.control_type, ours.coordinator_epoch, ours.offset) == (marker, 5, 50)


def test_kafka_python_crc_agrees_on_random_buffers() -> None:
    crc_module = pytest.importorskip("kafka.record.util")
    rng = random.Random(4)
    for size in (0, 1, 100, 4096, 100_000):
        data = rng.randbytes(size)
        assert logkernel.crc32c(data) == crc_module.calc_crc32c(data)


def test_kafka_python_reads_a_segment_file_we_wrote(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A .log segment is a record set Kafka clients read as-is."""
    memory_records = pytest.importorskip("kafka.record.memory_records")
    stem = tmp_path / ("0" * 20)
    offset = 0
    with logkernel.Segment(f"{stem}.log", f"{stem}.index", f"{stem}.timeindex", base_offset=0,
                           writable=True, log_capacity=1 << 24) as seg:
        for codec in ("none", "gzip", "zstd", "lz4", "none"):
            _, offset = seg.append(logkernel.encode_batch(
                [b"%s-%d" % (codec.encode(), i) for i in range(5)], compression_type=codec),
                offset)
    records = memory_records.MemoryRecords((tmp_path / ("0" * 20 + ".log")).read_bytes())
    got = []
    while records.has_next():
        batch = records.next_batch()
        assert batch.validate_crc()
        got += [(r.offset, r.value) for r in batch]
    assert [o for o, _ in got] == list(range(25))
    assert got[7][1] == b"gzip-2"
