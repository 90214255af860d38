"""Paired comparisons: ours and the peer timed in alternation, call by call.

This VM's speed drifts by up to 2x over minutes, and pytest-benchmark times one function
after another, so a drift between two groups skews their ratio. Alternating the calls
exposes both sides to the same drift; the ratio of their medians is the robust figure.
Results are printed by bench/conftest.py at the end of the run.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

import logkernel
from logkernel import _binding

PAIRED_RESULTS: list[dict[str, Any]] = []

ROUNDS = 600


def paired(name: str, unit: str, items: int, ours: Callable[[], Any],
           peer: Callable[[], Any], peer_name: str) -> None:
    ours_ns, peer_ns = [], []
    for _ in range(10):  # warm up both
        ours()
        peer()
    # The cyclic GC is paused while timing and run between rounds instead: otherwise a
    # collection triggered by one side's garbage lands in the other side's timing.
    gc.disable()
    try:
        for i in range(ROUNDS):
            if i % 20 == 0:
                gc.collect()
            t = time.perf_counter_ns()
            ours()
            ours_ns.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            peer()
            peer_ns.append(time.perf_counter_ns() - t)
    finally:
        gc.enable()
    ours_ns.sort()
    peer_ns.sort()
    PAIRED_RESULTS.append({
        "name": name, "unit": unit, "peer": peer_name,
        "ours_median": items / (ours_ns[ROUNDS // 2] / 1e9),
        "peer_median": items / (peer_ns[ROUNDS // 2] / 1e9),
        "ours_best": items / (ours_ns[0] / 1e9),
        "peer_best": items / (peer_ns[0] / 1e9),
    })


def test_paired_crc32c_1mib() -> None:
    crc32c_pkg = pytest.importorskip("crc32c")
    data = os.urandom(1 << 20)
    assert logkernel.crc32c(data) == crc32c_pkg.crc32c(data)
    paired("CRC-32C 1 MiB", "B", 1 << 20, lambda: logkernel.crc32c(data),
           lambda: crc32c_pkg.crc32c(data), "crc32c")


kafka_default_records = pytest.importorskip("kafka.record.default_records")
VALUES = [os.urandom(100) for _ in range(1000)]
TIMESTAMP = 1_700_000_000_000


def _kafka_python_encode() -> bytes:
    builder = kafka_default_records.DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=2**30)
    for offset, value in enumerate(VALUES):
        builder.append(offset, TIMESTAMP, None, value, [])
    return bytes(builder.build())


def _kafka_python_decode(data: bytes) -> int:
    reader = kafka_default_records.DefaultRecordBatch(data)
    assert reader.validate_crc()
    return sum(1 for _ in reader)


def test_paired_encode() -> None:
    ours = lambda: logkernel.encode_batch(VALUES, timestamps=TIMESTAMP, partition_leader_epoch=0)  # noqa: E731
    assert ours() == _kafka_python_encode()
    paired("encode 1000 x 100 B", "rec", 1000, ours, _kafka_python_encode, "kafka-python")


def test_paired_decode() -> None:
    batch = logkernel.encode_batch(VALUES, timestamps=TIMESTAMP)
    paired("decode + validate, spans", "rec", 1000, lambda: _binding.decode_batch(batch),
           lambda: _kafka_python_decode(batch), "kafka-python (objects)")
    paired("decode to Record objects", "rec", 1000,
           lambda: logkernel.decode_batch(batch).records(),
           lambda: _kafka_python_decode(batch), "kafka-python (objects)")
