"""RecordBatch v2 encode and decode of 1,000 records with 100-byte values, beside
kafka-python's own record-batch builder and reader, in the same run.

What each side does, so the ratio is honest:
- encode, ours: ``logkernel.encode_batch(values, timestamps=t)`` -> complete batch bytes with CRC.
  kafka-python: ``DefaultRecordBatchBuilder.append`` per record, then ``build()``.
- decode/validate, ours: CRC + every record boundary checked in C, spans (positions of keys,
  values, headers) returned, no payload copied: what the broker and the log do with a batch.
- decode to Python objects, ours: the same plus a ``Record`` per record (``records()``), or
  just the values (``values()``). kafka-python: construct the reader, ``validate_crc()``, and
  iterate every record (it has no spans-only mode).
"""

from __future__ import annotations

import os

import pytest

import logkernel
from logkernel import _binding

N = 1000
VALUES = [os.urandom(100) for _ in range(N)]
TIMESTAMP = 1_700_000_000_000

kafka_default_records = pytest.importorskip("kafka.record.default_records")


def _kafka_python_encode(values: list[bytes]) -> bytes:
    builder = kafka_default_records.DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=2**30)
    for offset, value in enumerate(values):
        builder.append(offset, TIMESTAMP, None, value, [])
    return builder.build()


def _kafka_python_decode(data: bytes) -> int:
    reader = kafka_default_records.DefaultRecordBatch(data)
    assert reader.validate_crc()
    count = 0
    for _record in reader:
        count += 1
    return count


BATCH = logkernel.encode_batch(VALUES, timestamps=TIMESTAMP, partition_leader_epoch=0)
# Same work on both sides: the two encoders produce identical bytes.
assert bytes(_kafka_python_encode(VALUES)) == BATCH


def _mark(benchmark, group: str, peer: bool) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = group
    benchmark.extra_info.update(items=N, unit="rec", peer=peer)


def test_encode_logkernel(benchmark) -> None:  # type: ignore[no-untyped-def]
    _mark(benchmark, "encode 1000 x 100 B", peer=False)
    out = benchmark(logkernel.encode_batch, VALUES, timestamps=TIMESTAMP, partition_leader_epoch=0)
    assert len(out) == len(BATCH)


def test_encode_kafka_python(benchmark) -> None:  # type: ignore[no-untyped-def]
    _mark(benchmark, "encode 1000 x 100 B", peer=True)
    out = benchmark(_kafka_python_encode, VALUES)
    assert len(out) == len(BATCH)


def test_decode_validate_logkernel(benchmark) -> None:  # type: ignore[no-untyped-def]
    _mark(benchmark, "decode 1000 x 100 B", peer=False)
    _header, spans = benchmark(_binding.decode_batch, BATCH)
    assert len(spans) == N


def test_decode_values_logkernel(benchmark) -> None:  # type: ignore[no-untyped-def]
    _mark(benchmark, "decode 1000 x 100 B", peer=False)
    values = benchmark(lambda d: logkernel.decode_batch(d).values(), BATCH)
    assert values == VALUES


def test_decode_records_logkernel(benchmark) -> None:  # type: ignore[no-untyped-def]
    _mark(benchmark, "decode 1000 x 100 B", peer=False)
    records = benchmark(lambda d: logkernel.decode_batch(d).records(), BATCH)
    assert len(records) == N


def test_decode_kafka_python(benchmark) -> None:  # type: ignore[no-untyped-def]
    _mark(benchmark, "decode 1000 x 100 B", peer=True)
    assert benchmark(_kafka_python_decode, BATCH) == N
