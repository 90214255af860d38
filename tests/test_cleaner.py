"""The log cleaner: the native passes, one cleaning, the background threads, the policies.

The Hypothesis model and the crash tests are in test_cleaner_model.py and
test_cleaner_crash.py; real clients and the CLI in test_cleaner_broker.py and
test_cli_compact.py.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
import xxhash

import logkernel
from logkernel import _binding, errors
from logkernel.log.checkpoint import read_cleaner_checkpoint
from logkernel.log.cleaner import assess, clean_partition
from logkernel.log.partition import PartitionLog
from logkernel.records import decode_batch, encode_batch, iter_batches

HOUR_MS = 3600 * 1000


def open_engine(path: Path, **config: object) -> logkernel.Engine:
    settings: dict[str, object] = {"log.cleaner.enable": False}
    settings.update({k.replace("_", "."): v for k, v in config.items()})
    return logkernel.open(path, settings)


def read_all(lk: logkernel.Engine, topic: str = "t", partition: int = 0) -> list[logkernel.Record]:
    consumer = lk.consumer(auto_offset_reset="earliest")
    consumer.assign([(topic, partition)])
    out: list[logkernel.Record] = []
    while batch := consumer.poll(max_records=100_000):
        out.extend(batch)
    consumer.close()
    return out


def latest(records: list[logkernel.Record]) -> dict[bytes, bytes | None]:
    return {r.key: r.value for r in records}


def fill(lk: logkernel.Engine, count: int, keys: int, *, seed: int = 0, tombstones: float = 0.0,
         batch: int = 50, topic: str = "t") -> dict[bytes, bytes | None]:
    """Writes ``count`` keyed records over ``keys`` keys; returns the latest value per key."""
    rnd = random.Random(seed)
    producer = lk.producer()
    model: dict[bytes, bytes | None] = {}
    for start in range(0, count, batch):
        ks = [b"key-%d" % rnd.randrange(keys) for _ in range(min(batch, count - start))]
        vs = [None if rnd.random() < tombstones else b"value-%d" % (start + i) * 3
              for i in range(len(ks))]
        producer.send_batch(topic, vs, keys=ks, partition=0)
        model.update(zip(ks, vs, strict=True))
    return model


def cleaner_tools(memory: int = 1 << 20) -> tuple[_binding.OffsetMap, _binding.FilterBuffers]:
    return _binding.OffsetMap(memory), _binding.FilterBuffers(64 * 1024)


# ---- native core --------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 3, 4, 7, 8, 15, 31, 32, 33, 63, 64, 100, 1000])
def test_xxh64_matches_the_reference_library(length: int) -> None:
    data = bytes(random.Random(length).randrange(256) for _ in range(length))
    for seed in (0, 1, 2**64 - 1, 0x6C6F676B65726E6C):
        assert _binding.xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed)


def test_offset_map_keeps_the_latest_offset_and_grows_inside_its_memory() -> None:
    m = _binding.OffsetMap(1 << 20)
    m.reset(0)
    small = m.capacity
    for i in range(10_000):
        assert m.put(b"k%d" % i, i)
    for i in range(10_000):
        assert m.put(b"k%d" % i, 20_000 + i)  # overwrite: no new key
    assert m.entries == 10_000
    assert m.capacity > small and m.grown > 0
    assert all(m.get(b"k%d" % i) == 20_000 + i for i in range(0, 10_000, 7))
    assert m.get(b"absent") == -1


def test_offset_map_fills_at_its_load_factor_and_refuses_only_new_keys() -> None:
    m = _binding.OffsetMap(24 * 1000, load_factor=0.9)
    m.reset(None)
    assert m.whole
    accepted = 0
    while m.put(b"k%d" % accepted, accepted):
        accepted += 1
    assert accepted == 900
    assert m.put(b"k5", 99_999)  # an old key still updates
    assert m.get(b"k5") == 99_999
    m.reset(0)
    assert m.entries == 0 and m.get(b"k5") == -1


def test_a_dedupe_buffer_too_small_for_one_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="dedupe buffer"):
        _binding.OffsetMap(10)
    with pytest.raises(errors.ConfigError, match=r"log\.cleaner\.dedupe\.buffer\.size"):
        logkernel.open(tmp_path, {"log.cleaner.dedupe.buffer.size": 100})


def test_filter_rewrites_a_batch_keeping_offsets_timestamps_and_max_timestamp() -> None:
    batch = encode_batch([b"a1", b"b1", None, b"a2"], keys=[b"a", b"b", b"c", b"a"],
                         timestamps=[1000, 1001, 1002, 1003], base_offset=40)
    m, buffers = cleaner_tools()
    m.reset(0)
    m.put(b"a", 43)  # a later record of "a" exists at 43
    m.put(b"c", 42)
    result = _binding.new_clean_result()
    now = 5000
    consumed, written, stop = _binding.cleaner_filter(m, batch, now, now + 100, buffers, result)
    assert (consumed, stop) == (len(batch), _binding.CLEAN_END)
    out = bytes(buffers.out[:written])
    header = _binding.parse_header(out)
    assert header.base_offset == 40 and header.last_offset_delta == 3
    assert header.record_count == 3 and header.max_timestamp == 1003
    assert header.has_delete_horizon and header.base_timestamp == now + 100  # keeps a tombstone
    records = list(decode_batch(out).records())
    assert [(r.offset, r.key, r.value, r.timestamp) for r in records] == [
        (41, b"b", b"b1", 1001), (42, b"c", None, 1002), (43, b"a", b"a2", 1003)]
    assert result.records_read == 4 and result.records_kept == 3
    assert result.next_horizon_ms == now + 100

    # Past the horizon, a second cleaning drops the tombstone and the horizon with it.
    result = _binding.new_clean_result()
    _, written, _ = _binding.cleaner_filter(m, out, now + 100, now + 200, buffers, result)
    again = bytes(buffers.out[:written])
    header = _binding.parse_header(again)
    assert not header.has_delete_horizon and header.base_timestamp == 1001
    assert [(r.offset, r.value, r.timestamp) for r in decode_batch(again).records()] == [
        (41, b"b1", 1001), (43, b"a2", 1003)]
    assert result.tombstones_dropped == 1 and result.next_horizon_ms == 2**63 - 1


def test_filter_copies_unchanged_batches_byte_for_byte_and_drops_empty_ones() -> None:
    keep = encode_batch([b"x"], keys=[b"x"], timestamps=[7], base_offset=0)
    gone = encode_batch([b"y"], keys=[b"y"], timestamps=[8], base_offset=1)
    m, buffers = cleaner_tools()
    m.reset(0)
    m.put(b"y", 5)
    result = _binding.new_clean_result()
    _, written, _ = _binding.cleaner_filter(m, keep + gone, 0, 0, buffers, result)
    assert bytes(buffers.out[:written]) == keep
    assert result.batches_read == 2 and result.batches_kept == 1


def test_passes_refuse_a_damaged_batch() -> None:
    batch = bytearray(encode_batch([b"v"], keys=[b"k"], base_offset=0))
    batch[-1] ^= 0xFF
    m, buffers = cleaner_tools()
    m.reset(0)
    with pytest.raises(errors.CrcMismatchError):
        _binding.cleaner_map(m, batch, 0, 100, _binding.new_map_result())
    with pytest.raises(errors.CrcMismatchError):
        _binding.cleaner_filter(m, batch, 0, 0, buffers, _binding.new_clean_result())


def test_passes_refuse_offsets_that_go_backwards_even_across_calls() -> None:
    """A garbled base offset (outside the CRC) must not put keys at wrong offsets."""
    first = encode_batch([b"a", b"b"], keys=[b"a", b"b"], base_offset=10)
    second = encode_batch([b"c"], keys=[b"c"], base_offset=11)  # overlaps the first
    m, buffers = cleaner_tools()
    m.reset(0)
    result = _binding.new_map_result()
    _binding.cleaner_map(m, first, 0, 100, result)
    with pytest.raises(errors.CorruptRecordError, match="base offset"):
        _binding.cleaner_map(m, second, 0, 100, result)
    clean = _binding.new_clean_result()
    _binding.cleaner_filter(m, first, 0, 0, buffers, clean)
    with pytest.raises(errors.CorruptRecordError, match="base offset"):
        _binding.cleaner_filter(m, second, 0, 0, buffers, clean)


# ---- one cleaning ---------------------------------------------------------------------------

def test_cleaning_keeps_the_latest_record_per_key_with_offsets_unchanged(tmp_path: Path) -> None:
    lk = open_engine(tmp_path, log_segment_bytes=4096)
    try:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        model = fill(lk, 3000, 100, tombstones=0.1)
        log = lk.partition_log("t", 0)
        end = log.log_end_offset
        before = read_all(lk)
        results = lk.compact("t", roll=True)
        assert len(results) == 1 and not results[0].map_full
        after = read_all(lk)
        assert latest(after) == model
        assert len(after) == len(model)  # one record per key, tombstones within retention
        by_offset = {r.offset: r for r in before}
        for r in after:  # every kept record is the original, at its original offset
            assert by_offset[r.offset] == r
        assert log.log_end_offset == end and log.log_start_offset == 0
        assert log.size_bytes() < sum(1 for _ in before) * 20
        log.check()
        assert read_cleaner_checkpoint(log.directory).first_dirty == end
    finally:
        lk.close()
    lk = open_engine(tmp_path)
    try:
        assert latest(read_all(lk)) == model
    finally:
        lk.close()


def test_the_active_segment_is_never_cleaned(tmp_path: Path) -> None:
    with open_engine(tmp_path) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        fill(lk, 500, 5)
        assert lk.compact("t") == []
        assert len(read_all(lk)) == 500


def test_a_full_key_map_cleans_in_several_passes(tmp_path: Path) -> None:
    lk = open_engine(tmp_path, log_segment_bytes=8192,
                     **{"log.cleaner.dedupe.buffer.size": 24 * 100})
    try:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        model = fill(lk, 5000, 1000, tombstones=0.05, seed=3)
        results = lk.compact("t", roll=True)
        assert len(results) > 5
        assert all(r.map_full for r in results[:-1]) and not results[-1].map_full
        assert all(r.keys <= 90 for r in results)  # 100 slots at load factor 0.9
        assert latest(read_all(lk)) == model
        assert len(read_all(lk)) == len(model)
        lk.partition_log("t", 0).check()
    finally:
        lk.close()


def test_tombstones_go_once_the_delete_horizon_passes(tmp_path: Path) -> None:
    with open_engine(tmp_path, log_segment_bytes=2048) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact", "delete.retention.ms": HOUR_MS})
        model = fill(lk, 1000, 50, tombstones=0.3, seed=5)
        log = lk.partition_log("t", 0)
        log.roll()
        m, buffers = cleaner_tools()
        now = int(time.time() * 1000)
        first = clean_partition(log, m, buffers, now_ms=now)
        assert first is not None and first.tombstones_dropped == 0
        assert latest(read_all(lk)) == model  # tombstones kept for delete.retention.ms
        checkpoint = read_cleaner_checkpoint(log.directory)
        assert checkpoint.next_horizon_ms == now + HOUR_MS
        assert assess(log, now + HOUR_MS - 1).due is None
        assert assess(log, now + HOUR_MS).due == "delete horizon"
        # Still inside the horizon: a second cleaning keeps them.
        clean_partition(log, m, buffers, now_ms=now + HOUR_MS - 1)
        assert latest(read_all(lk)) == model
        last = clean_partition(log, m, buffers, now_ms=now + HOUR_MS)
        assert last is not None and last.tombstones_dropped == sum(v is None for v in model.values())
        assert latest(read_all(lk)) == {k: v for k, v in model.items() if v is not None}
        assert read_cleaner_checkpoint(log.directory).next_horizon_ms == -1
        log.check()


def test_min_compaction_lag_keeps_young_segments_dirty(tmp_path: Path) -> None:
    with open_engine(tmp_path, log_segment_bytes=2048) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact",
                                     "min.compaction.lag.ms": HOUR_MS})
        now = int(time.time() * 1000)
        producer = lk.producer()
        for i in range(200):  # old records, then young ones
            producer.send("t", b"old-%d" % i, key=b"k%d" % (i % 10), partition=0,
                          timestamp_ms=now - 2 * HOUR_MS)
        log = lk.partition_log("t", 0)
        log.roll()
        young_start = log.log_end_offset
        for i in range(200):
            producer.send("t", b"young-%d" % i, key=b"k%d" % (i % 10), partition=0,
                          timestamp_ms=now)
        log.roll()
        results = lk.compact("t")
        assert results[0].first_uncleanable == young_start
        records = read_all(lk)
        assert sum(1 for r in records if r.offset >= young_start) == 200  # untouched
        assert sum(1 for r in records if r.offset < young_start) == 10


def test_max_compaction_lag_forces_a_cleaning_below_the_dirty_ratio(tmp_path: Path) -> None:
    with open_engine(tmp_path, log_segment_bytes=2048) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact",
                                     "min.cleanable.dirty.ratio": 1.0,
                                     "max.compaction.lag.ms": HOUR_MS})
        now = int(time.time() * 1000)
        producer = lk.producer()
        for i in range(100):
            producer.send("t", b"v", key=b"k%d" % (i % 5), partition=0,
                          timestamp_ms=now - 2 * HOUR_MS)
        log = lk.partition_log("t", 0)
        log.roll()
        # Make the ratio fall short: a cleaned section first, then a little dirt.
        lk.compact("t")
        for i in range(3):
            producer.send("t", b"w", key=b"k%d" % i, partition=0, timestamp_ms=now - 2 * HOUR_MS)
        log.roll()
        state = assess(log, now)
        assert state.dirty_ratio < 1.0
        assert state.due == "max.compaction.lag.ms"
        assert assess(log, now - 2 * HOUR_MS).due is None


def test_a_compacted_topic_rolls_its_active_segment_at_max_compaction_lag(tmp_path: Path) -> None:
    with open_engine(tmp_path) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact", "max.compaction.lag.ms": 1000})
        producer = lk.producer()
        producer.send("t", b"a", key=b"k", partition=0, timestamp_ms=10_000)
        producer.send("t", b"b", key=b"k", partition=0, timestamp_ms=12_000)
        assert lk.partition_log("t", 0).segment_count == 2


def test_compressed_batches_are_cleaned_and_stay_compressed(tmp_path: Path) -> None:
    with open_engine(tmp_path, log_segment_bytes=4096) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        producer = lk.producer(compression_type="zstd")
        model: dict[bytes, bytes | None] = {}
        for i in range(60):
            keys = [b"k%d" % ((i * 7 + j) % 40) for j in range(20)]
            values = [b"v%d-%d" % (i, j) * 5 for j in range(20)]
            producer.send_batch("t", values, keys=keys, partition=0)
            model.update(zip(keys, values, strict=True))
        lk.compact("t", roll=True)
        assert latest(read_all(lk)) == model and len(read_all(lk)) == len(model)
        log = lk.partition_log("t", 0)
        data = log.read(0, 1 << 20)
        codecs = {b.header.compression for b in iter_batches(data)}
        assert codecs == {4}  # zstd


# ---- what compacted topics accept -----------------------------------------------------------

def test_a_compacted_topic_refuses_records_without_keys(tmp_path: Path) -> None:
    with open_engine(tmp_path) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        producer = lk.producer()
        with pytest.raises(errors.InvalidRecordError, match="needs a key"):
            producer.send("t", b"v", partition=0)
        with pytest.raises(errors.InvalidRecordError, match="record 1 of the batch"):
            producer.send_batch("t", [b"a", b"b"], keys=[b"k", None], partition=0)
        with pytest.raises(errors.InvalidRecordError):
            lk.producer(compression_type="gzip").send_batch("t", [b"a", b"b"], keys=[b"k", None],
                                                           partition=0)
        assert lk.end_offset("t", 0) == 0  # nothing of any refused batch was written
        producer.send("t", None, key=b"k", partition=0)  # a tombstone has a key: fine
        assert lk.end_offset("t", 0) == 1


# ---- policies and the background cleaner -----------------------------------------------------

def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_switching_to_compact_is_picked_up_by_the_background_cleaner(tmp_path: Path) -> None:
    lk = logkernel.open(tmp_path, {"log.cleaner.backoff.ms": 20, "log.segment.bytes": 4096})
    try:
        lk.create_topic("t")  # delete policy: keyless records are fine
        model = fill(lk, 2000, 20)
        log = lk.partition_log("t", 0)
        log.roll()
        time.sleep(0.1)
        assert len(read_all(lk)) == 2000  # the cleaner leaves a delete-policy topic alone
        lk.alter_topic_config("t", {"cleanup.policy": "compact"})
        # The swap makes the result readable a moment before the cleaning's stats are in.
        wait_for(lambda: len(read_all(lk)) == len(model) and lk.cleaner_stats("t").cleanings)
        assert latest(read_all(lk)) == model
        stats = lk.cleaner_stats("t")
        assert stats.cleanings >= 1 and stats.partitions[0].last is not None
        assert stats.partitions[0].state.dirty_ratio == 0.0
        lk.alter_topic_config("t", {"cleanup.policy": "delete", "retention.ms": 1})
        assert lk.run_retention() >= 1
        assert lk.cleaner_stats("t").partitions == []
    finally:
        lk.close()


def test_the_background_cleaner_waits_for_the_dirty_ratio(tmp_path: Path) -> None:
    lk = logkernel.open(tmp_path, {"log.cleaner.backoff.ms": 20, "log.segment.bytes": 4096})
    try:
        lk.create_topic("t", config={"cleanup.policy": "compact",
                                     "min.cleanable.dirty.ratio": 0.9})
        fill(lk, 2000, 20)
        log = lk.partition_log("t", 0)
        lk.compact("t", roll=True)  # waits for the background cleaner, then finishes
        assert log.cleaner_checkpoint.first_dirty == log.log_end_offset
        fill(lk, 20, 20, seed=9)  # a little dirt: far below 0.9 of the log
        log.roll()
        cleaned_to = log.cleaner_checkpoint.first_dirty
        time.sleep(0.3)
        state = lk.cleaner_stats("t").partitions[0].state
        assert 0 < state.dirty_ratio < 0.9 and state.due is None
        assert log.cleaner_checkpoint.first_dirty == cleaned_to  # left alone
        cleanings = lk.cleaner_stats().cleanings
        model = fill(lk, 3000, 20, seed=10)  # now the log is mostly dirty: cleaned as it rolls
        log.roll()
        wait_for(lambda: lk.cleaner_stats().cleanings > cleanings
                 and lk.cleaner_stats("t").partitions[0].state.due is None, timeout=30)
        assert log.cleaner_checkpoint.first_dirty > cleaned_to
        assert latest(read_all(lk)) == model
    finally:
        lk.close()


def test_a_damaged_segment_makes_the_partition_uncleanable_and_loses_nothing(tmp_path: Path) -> None:
    with open_engine(tmp_path, log_segment_bytes=4096) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        fill(lk, 500, 10)
        log = lk.partition_log("t", 0)
        log.roll()
        first = log.cleaning_view().sealed[1]
        size_before = log.size_bytes()
    with open(first.path, "r+b") as f:  # garble the last value byte of a sealed segment
        f.seek(first.size - 2)
        byte = f.read(1)
        f.seek(first.size - 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with open_engine(tmp_path) as lk:
        log = lk.partition_log("t", 0)
        with pytest.raises(errors.CorruptRecordError):
            lk.compact("t")
        assert log.size_bytes() == size_before
        assert lk.cleaner_stats("t").partitions[0].uncleanable is not None
        assert not [n for n in os.listdir(log.directory) if n.endswith((".cleaned", ".swap"))]


def test_deleting_a_topic_stops_its_cleaning(tmp_path: Path) -> None:
    lk = logkernel.open(tmp_path, {"log.cleaner.backoff.ms": 10, "log.segment.bytes": 4096})
    try:
        for round_ in range(5):
            lk.create_topic("t", config={"cleanup.policy": "compact"})
            fill(lk, 3000, 300, seed=round_)
            lk.partition_log("t", 0).roll()
            time.sleep(random.Random(round_).random() * 0.05)
            lk.delete_topic("t")
            assert not os.path.exists(tmp_path / "topics" / "t-0")
    finally:
        lk.close()


# ---- crash safety of the swap (every state is also killed for real in test_cleaner_crash) -----

def segment_files(log: PartitionLog) -> list[str]:
    return sorted(os.listdir(log.directory))


def test_open_completes_a_committed_swap_and_drops_uncommitted_output(tmp_path: Path) -> None:
    with open_engine(tmp_path, log_segment_bytes=2048) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        model = fill(lk, 600, 10)
        log = lk.partition_log("t", 0)
        log.roll()
        directory = log.directory
        sealed = log.cleaning_view().sealed
    # A committed swap: cleaned output for the first two segments, renamed .swap, the old
    # segments still in place (a crash right after the commit point).
    group = sealed[:2]
    with open_engine(tmp_path) as lk:
        log = lk.partition_log("t", 0)
        stem = os.path.join(directory, f"{group[0].base:020d}")
        # Build real cleaned output with the cleaner's own writer, then stop before the swap.
        from logkernel.log import cleaner as cleaner_module
        m, buffers = cleaner_tools()
        m.reset(0)
        counters = cleaner_module._Pass(lambda: False, None, 0)
        end, _ = cleaner_module._map_pass(log.cleaning_view(), group[-1].end, m, 4096, counters)
        cleaner_module._write_group(log, group, m, int(time.time() * 1000), 0, end, buffers,
                                    _binding.new_clean_result(), counters, 4096)
    for suffix in (".index", ".timeindex", ".log"):
        os.replace(stem + suffix + ".cleaned", stem + suffix + ".swap")
    with open(os.path.join(directory, "00000000000000099999.log.cleaned"), "wb") as f:
        f.write(b"torn output")
    with open_engine(tmp_path) as lk:
        log = lk.partition_log("t", 0)
        names = segment_files(log)
        assert not [n for n in names if n.endswith((".swap", ".cleaned", ".deleted"))]
        assert f"{group[1].base:020d}.log" not in names  # replaced by the swap
        assert latest(read_all(lk)) == model
        log.check()


def test_an_index_swap_without_its_log_is_discarded(tmp_path: Path) -> None:
    with open_engine(tmp_path, log_segment_bytes=2048) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        model = fill(lk, 300, 10)
        log = lk.partition_log("t", 0)
        log.roll()
        directory = log.directory
        before = segment_files(log)
    with open(os.path.join(directory, "00000000000000000000.index.swap"), "wb") as f:
        f.write(b"\0" * 8)
    with open_engine(tmp_path) as lk:
        assert segment_files(lk.partition_log("t", 0)) == before
        records = read_all(lk)
        assert len(records) == 300 and latest(records) == model


def test_consumer_offsets_stays_small_after_a_million_commits(tmp_path: Path) -> None:
    """__consumer_offsets is compacted like any topic: a million commits of 500 partitions
    leave about one record per (group, partition), and every committed offset survives."""
    config = {"log.cleaner.backoff.ms": 20, "offsets.topic.segment.bytes": 1 << 20}
    lk = logkernel.open(tmp_path, config)
    try:
        lk.create_topic("t", partitions=500)
        offsets_log = lk.partition_log("__consumer_offsets", 0)
        largest = 0
        for round_ in range(2000):  # 2,000 commits of 500 partitions each
            lk.commit_offsets("g", {("t", p): round_ * 1000 + p for p in range(500)})
            largest = max(largest, offsets_log.size_bytes())
        offsets_log.roll()
        wait_for(lambda: lk.cleaner_stats("__consumer_offsets").partitions[0].state.dirty_bytes == 0,
                 timeout=60)
        # ~60 bytes a commit record: 60 MB uncompacted; the cleaner kept it to a few segments.
        assert largest < 8 << 20
        assert offsets_log.size_bytes() < 200_000
    finally:
        lk.close()
    with logkernel.open(tmp_path, config) as lk:
        assert all(lk.committed("g", "t", p) == 1_999_000 + p for p in range(500))


def test_the_io_throttle_slows_a_cleaning_down(tmp_path: Path) -> None:
    with open_engine(tmp_path, log_segment_bytes=16384,
                     **{"log.cleaner.io.max.bytes.per.second": 400_000}) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        fill(lk, 3000, 30)
        began = time.monotonic()
        result = lk.compact("t", roll=True)[0]
        elapsed = time.monotonic() - began
        moved = result.bytes_read + result.bytes_written
        assert moved > 200_000
        assert elapsed >= moved / 400_000 * 0.8  # a floor from the limit, not a timing target
