"""Log compaction: logkernel's cleaner beside Apache Kafka's, on the same segment files.

Data: N records of 100 bytes (a 10-byte key, a 90-byte value of random hex) in producer
batches of 500, keys drawn at random from N/10 (10% live keys, the issue's case),
segment.bytes 64 MiB, the active segment rolled so everything is cleanable. N is 2,000,000
(~204 MB) unless ``LOGKERNEL_BENCH_CLEAN_RECORDS`` says otherwise. Two more sets of N/2
records: one record per batch, and zstd batches of 500.

How each side is timed, so the ratio is honest:

- logkernel: ``clean_partition`` on a fresh copy of the data each round (the copy is not
  timed), with the OffsetMap a cleaner thread keeps (128 MiB, allocated before timing; the
  pages the map touches are first touched inside the timing). Timed: the map pass, the
  filter pass, writing and fsyncing the cleaned segments, the swaps and the checkpoint.
- Kafka: its real ``Cleaner.doClean`` on a copy of the same partition directory, through
  ``bench/kafka_peer`` (Kafka 4.x storage code; needs Java and a Kafka build, see that
  module: skipped when unavailable). Timed by the harness around doClean only (map pass,
  filter, fsyncs), the 128 MiB dedupe buffer allocated before; "cold" is the first
  cleaning in a fresh JVM, "warm" a second copy in the same JVM.

Both keep exactly one record per key (checked). The memory benchmark runs the cleaner in a
fresh process with a 16 MiB dedupe buffer on logs of 10 thousand to 2 million distinct
keys and reports the peak growth of the process's anonymous memory (RssAnon, sampled every
5 ms) over what it held after opening the engine; pages of the segment files mapped for
reading are page cache, not the cleaner's memory, and are left out.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import logkernel
from bench import kafka_peer
from logkernel import _binding
from logkernel.log.cleaner import clean_partition

N = int(os.environ.get("LOGKERNEL_BENCH_CLEAN_RECORDS", "2000000"))
LIVE = max(N // 10, 1)
BATCH = 500
SEGMENT_BYTES = 64 << 20
DEDUPE_BYTES = 128 << 20
ROUNDS = 3

CLEANER_RESULTS: list[dict[str, Any]] = []  # printed by conftest's summary


# The data sets: (records, producer batch size, codec). "batches": the case;
# "single": one record per batch, as __consumer_offsets and one-at-a-time producers write;
# "zstd": compressed batches (the cleaner decompresses and recompresses them in Python).
KINDS = {
    "batches": (N, BATCH, None),
    "single": (N // 2, 1, None),
    "zstd": (N // 2, BATCH, "zstd"),
}


def _write_dataset(root: Path, records: int, keys: int, seed: int = 1, batch: int = BATCH,
                   codec: str | None = None) -> tuple[Path, int]:
    """The data directory and the number of distinct keys written. Values are 90 bytes of
    random hex (so the zstd set is not flattered by repeated values)."""
    rnd = random.Random(seed)
    pool = [rnd.randbytes(45).hex().encode() for _ in range(1024)]
    seen: set[int] = set()
    with logkernel.open(root, {"log.cleaner.enable": False,
                               "log.segment.bytes": SEGMENT_BYTES}) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        producer = lk.producer(compression_type=codec)
        for start in range(0, records, batch):
            n = min(batch, records - start)
            drawn = [rnd.randrange(keys) for _ in range(n)]
            seen.update(drawn)
            values = [pool[(start + i) % len(pool)] for i in range(n)]
            if n == 1:
                producer.send("t", values[0], key=b"key-%06d" % drawn[0], partition=0)
            else:
                producer.send_batch("t", values, keys=[b"key-%06d" % k for k in drawn],
                                    partition=0)
        lk.partition_log("t", 0).roll()
    return root, len(seen)


@pytest.fixture(scope="module", params=list(KINDS))
def dataset(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    records, batch, codec = KINDS[request.param]
    path, distinct = _write_dataset(tmp_path_factory.mktemp("clean-data") / "data", records,
                                    max(records // 10, 1), batch=batch, codec=codec)
    return path, distinct, request.param


def _input_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in (data / "t-0").glob("*.log"))


def test_clean_logkernel(benchmark: Any, dataset: tuple[Path, int, str], tmp_path: Path) -> None:
    data, distinct, kind = dataset
    size = _input_bytes(data)
    offset_map = _binding.OffsetMap(DEDUPE_BYTES)
    buffers = _binding.FilterBuffers(512 * 1024)
    state: dict[str, Any] = {}

    def setup() -> None:
        if "lk" in state:
            state["lk"].close()
        copy = tmp_path / "round"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(data, copy)
        os.sync()  # write the copy back now, not inside the timed cleaning (which fsyncs)
        state["lk"] = lk = logkernel.open(copy, {"log.cleaner.enable": False})
        state["log"] = lk.partition_log("t", 0)

    def clean() -> Any:
        return clean_partition(state["log"], offset_map, buffers)

    benchmark.group = f"compaction ({kind}): 100-byte records, 10% live keys"
    benchmark.extra_info.update(items=size, unit="B", peer=False)
    result = benchmark.pedantic(clean, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert result is not None and not result.map_full
    assert result.records_kept == result.keys == distinct  # the latest record of every key
    consumer = state["lk"].consumer("t", auto_offset_reset="earliest")
    read = 0
    while batch := consumer.poll(max_records=100_000):
        read += len(batch)
    assert read == distinct
    state["lk"].close()
    CLEANER_RESULTS.append({"kind": kind, "name": "logkernel",
                            "mb_s": [size / 1e6 / t for t in benchmark.stats.stats.data],
                            "keys": result.keys, "input_mb": size / 1e6})


def test_clean_kafka(dataset: tuple[Path, int, str], tmp_path: Path) -> None:
    reason = kafka_peer.available()
    if reason is not None:
        pytest.skip(f"Kafka's cleaner: {reason}")
    data, distinct, kind = dataset
    size = _input_bytes(data)
    cold, warm = [], []
    for i in range(ROUNDS):
        result = kafka_peer.clean_with_kafka(data / "t-0", tmp_path / f"k{i}",
                                             DEDUPE_BYTES, segment_bytes=SEGMENT_BYTES)
        assert result["records_retained"] == distinct
        cold.append(size / 1e6 / result["seconds"])
        warm.append(size / 1e6 / result["seconds_warm"])
        shutil.rmtree(tmp_path / f"k{i}", ignore_errors=True)
    CLEANER_RESULTS.append({"kind": kind, "name": f"Kafka {result['kafka_version']} cold JVM",
                            "mb_s": cold, "peer": True, "keys": result["records_retained"]})
    CLEANER_RESULTS.append({"kind": kind, "name": f"Kafka {result['kafka_version']} warm JVM",
                            "mb_s": warm, "peer": True, "keys": result["records_retained"]})


MEMORY_SCRIPT = textwrap.dedent("""
    import sys, threading, time, logkernel
    from logkernel import _binding
    from logkernel.log.cleaner import clean_partition, map_memory

    # Anonymous memory only: reading segments through their maps adds page-cache pages to
    # the RSS (file-backed, shared, reclaimable) that are not the cleaner's memory.
    def anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

    lk = logkernel.open(sys.argv[1], {"log.cleaner.enable": False})
    log = lk.partition_log("t", 0)
    base = anon()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    io = 512 * 1024  # as a cleaner thread: the map gets the buffer less the I/O buffers
    offset_map = _binding.OffsetMap(map_memory(int(sys.argv[2]), 1, io))
    buffers = _binding.FilterBuffers(io)
    passes = 0
    chunk = io
    while True:
        r = clean_partition(log, offset_map, buffers, chunk_bytes=chunk)
        if r is None:
            break
        passes += 1
        if not r.map_full:
            break
    done.set()
    sampler.join()
    print(max(peak[0], anon()) - base, passes)
    lk.close()
""")


@pytest.mark.parametrize("keys", [10_000, 200_000, 2_000_000])
def test_cleaner_memory_stays_under_the_dedupe_buffer(keys: int, tmp_path: Path) -> None:
    """Peak growth of anonymous memory while cleaning with a 16 MiB dedupe buffer (about
    630k keys a pass), sampled every 5 ms."""
    buffer = 16 << 20
    data, _ = _write_dataset(tmp_path / "data", keys * 2, keys, seed=keys)
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(data), str(buffer)],
                         capture_output=True, text=True, check=True)
    growth, passes = (int(x) for x in out.stdout.split())
    CLEANER_RESULTS.append({"kind": "memory", "name": f"{keys:,} keys",
                            "peak_growth_mb": growth / 1e6,
                            "buffer_mb": buffer / 1e6, "passes": passes,
                            "seconds": time.perf_counter() - began})
