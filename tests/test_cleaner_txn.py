"""The log cleaner and transactions (Kafka's LogCleaner rules): aborted records go and
never hide committed values of their keys, markers stay, nothing at or past the last
stable offset is cleaned, and each producer's last batch survives, as a bare header when
it loses every record. Plus the read_committed drop of aborted batches
(``_binding.drop_aborted``), and the rest of logkernel (validator, decoders, segment
recovery, embedded consumers, producer state) and real Kafka clients over the wire
reading what the cleaner leaves.

Logs are written through ``PartitionLog.append`` (batches built with
``logkernel.records.encode_batch`` and producer fields) and ``append_marker``; a small
model (``Writer``) knows every record, batch, marker and aborted transaction. The inner
cleaning (``clean_partition_with``) is run with explicit last stable offsets and aborted
lists as well as through ``clean_partition``, which reads them from the partition log.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import logkernel
from logkernel import _binding
from logkernel.config import EngineConfig, TopicConfig
from logkernel.log.cleaner import (
    AbortedLookup,
    CleanResult,
    assess,
    clean_partition,
    clean_partition_with,
)
from logkernel.log.partition import PartitionLog
from logkernel.records import decode_batch, encode_batch, iter_batches

T0 = 1_700_000_000_000
HOUR = 3_600_000
TRANSACTIONAL = 0x10
CONTROL = 0x20
COMPACT = {"cleanup.policy": "compact", "segment.bytes": 1 << 20,
           "delete.retention.ms": HOUR, "index.interval.bytes": 256}


# ---- writing logs with a model ---------------------------------------------------------

@dataclass(frozen=True)
class Rec:
    offset: int
    key: bytes
    value: bytes | None
    batch_base: int
    producer_id: int
    transactional: bool


@dataclass
class Writer:
    """Appends to a PartitionLog and remembers what it wrote."""

    log: PartitionLog
    records: list[Rec] = field(default_factory=list)
    batches: list[tuple[int, int, int]] = field(default_factory=list)  # (base, last, producer)
    markers: list[tuple[int, int, bool]] = field(default_factory=list)  # (offset, producer, commit)
    aborted: list[tuple[int, int, int]] = field(default_factory=list)
    sequences: dict[int, int] = field(default_factory=dict)
    open: dict[int, int] = field(default_factory=dict)  # producer -> first offset
    clock: int = T0

    def send(self, items: list[tuple[bytes, bytes | None]], producer_id: int = -1, *,
             transactional: bool = False, compression: str = "none") -> tuple[int, int]:
        sequence = self.sequences.get(producer_id, 0) if producer_id >= 0 else -1
        self.clock += 1
        batch = encode_batch([v for _, v in items], keys=[k for k, _ in items],
                             timestamps=self.clock, producer_id=producer_id,
                             producer_epoch=0 if producer_id >= 0 else -1,
                             base_sequence=sequence, transactional=transactional,
                             compression_type=compression)
        first, next_offset, _ = self.log.append(batch)
        assert next_offset - first == len(items)
        if producer_id >= 0:
            self.sequences[producer_id] = sequence + len(items)
        if transactional:
            self.open.setdefault(producer_id, first)
        for i, (k, v) in enumerate(items):
            self.records.append(Rec(first + i, k, v, first, producer_id, transactional))
        self.batches.append((first, next_offset - 1, producer_id))
        return first, next_offset

    def end(self, producer_id: int, commit: bool) -> int:
        offset = self.log.append_marker(producer_id, 0, commit)
        first = self.open.pop(producer_id)
        self.markers.append((offset, producer_id, commit))
        if not commit:
            self.aborted.append((producer_id, first, offset))
        return offset

    # ---- what the model says ------------------------------------------------------

    def is_aborted(self, r: Rec) -> bool:
        return r.transactional and any(p == r.producer_id and f <= r.batch_base <= last
                                       for p, f, last in self.aborted)

    def lookup(self) -> AbortedLookup:
        """The aborted transactions with records in [start, end), as the log gives them."""
        def aborted_between(start: int, end: int) -> list[tuple[int, int, int]]:
            return [a for a in self.aborted if a[2] >= start and a[1] < end]
        return aborted_between  # type: ignore[return-value]

    def expected(self, map_end: int) -> list[tuple[int, bytes, bytes | None]]:
        """Every record after cleaning everything below ``map_end`` with a roomy map:
        below it the latest non-aborted record of each key, at or past it everything."""
        latest: dict[bytes, int] = {}
        for r in self.records:
            if r.offset < map_end and not self.is_aborted(r):
                latest[r.key] = r.offset
        return [(r.offset, r.key, r.value) for r in self.records
                if r.offset >= map_end or (not self.is_aborted(r) and latest[r.key] == r.offset)]

    def committed_latest(self, below: int) -> dict[bytes, bytes | None]:
        """What a read_committed reader ends with, per key, for offsets below ``below``."""
        out: dict[bytes, bytes | None] = {}
        for r in self.records:
            if r.offset < below and not self.is_aborted(r):
                out[r.key] = r.value
        return out


def open_log(directory: str | Path, **overrides: object) -> PartitionLog:
    config = TopicConfig(EngineConfig().topic_defaults, {**COMPACT, **overrides})
    return PartitionLog(str(directory), "t", 0, config)


@pytest.fixture
def log_dir() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="lk-cleaner-txn-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def batches_of(pl: PartitionLog) -> list[tuple[_binding.BatchHeader, bytes]]:
    """Every batch of the log from its start: (header, bytes)."""
    out: list[tuple[_binding.BatchHeader, bytes]] = []
    offset = pl.log_start_offset
    while data := pl.read(offset, 1 << 20):
        view = memoryview(data)
        at = 0
        while len(view) - at >= 12:
            h = _binding.parse_header(view[at:])
            if h.base_offset + h.last_offset_delta >= offset:
                out.append((h, bytes(view[at:at + h.size])))
            offset = max(offset, h.base_offset + h.last_offset_delta + 1)
            at += h.size
    return out


def records_of(pl: PartitionLog) -> list[tuple[int, bytes, bytes | None]]:
    out = []
    for h, raw in batches_of(pl):
        if h.is_control:
            continue
        for r in decode_batch(raw).records():
            assert r.key is not None
            out.append((r.offset, r.key, r.value))
    return out


def markers_of(pl: PartitionLog) -> list[tuple[int, int, bytes]]:
    return [(h.base_offset, h.producer_id, raw) for h, raw in batches_of(pl) if h.is_control]


def tools(memory: int = 1 << 20) -> tuple[_binding.OffsetMap, _binding.FilterBuffers]:
    return _binding.OffsetMap(memory), _binding.FilterBuffers(64 * 1024)


def clean_with(pl: PartitionLog, w: Writer, lso: int, *, memory: int = 1 << 20,
               chunk: int = 4096) -> list[CleanResult]:
    """clean_partition_with, pass after pass, with the model's aborted list."""
    offset_map, buffers = tools(memory)
    results = []
    while (r := clean_partition_with(pl, offset_map, buffers, last_stable_offset=lso,
                                     aborted_transactions=w.lookup(), now_ms=T0,
                                     chunk_bytes=chunk)) is not None:
        results.append(r)
        pl.check()
        if not r.map_full:
            break
    return results


def clean_fully(pl: PartitionLog, *, memory: int = 1 << 20, chunk: int = 4096
                ) -> list[CleanResult]:
    """clean_partition (the partition log's own LSO and aborted transactions)."""
    offset_map, buffers = tools(memory)
    results = []
    while (r := clean_partition(pl, offset_map, buffers, now_ms=T0, chunk_bytes=chunk)) is not None:
        results.append(r)
        pl.check()
        if not r.map_full:
            break
    return results


# ---- the rules, one at a time ----------------------------------------------------------

def test_aborted_values_go_and_never_hide_the_committed_value_of_their_key(log_dir: str) -> None:
    pl = open_log(log_dir)
    w = Writer(pl)
    w.send([(b"k", b"committed"), (b"j", b"j1")], 7, transactional=True)
    w.end(7, commit=True)
    w.send([(b"k", b"aborted"), (b"x", b"only-aborted")], 7, transactional=True)
    w.send([(b"j", b"aborted-j")], 7, transactional=True)
    w.end(7, commit=False)
    w.send([(b"z", b"plain")])
    pl.roll()
    end = pl.log_end_offset
    [result] = clean_with(pl, w, end)
    assert result.aborted_dropped == 3
    assert records_of(pl) == w.expected(end)
    latest = {k: v for _, k, v in records_of(pl)}
    assert latest == {b"k": b"committed", b"j": b"j1", b"z": b"plain"}
    assert [m[0] for m in markers_of(pl)] == [o for o, _, _ in w.markers]
    pl.close()


def test_without_the_aborted_list_an_aborted_value_would_shadow_the_committed_one(
        log_dir: str) -> None:
    """Why the map pass needs the aborted transactions: the same log cleaned as if nothing
    had aborted loses the committed value of "k" (a read_committed reader would then find
    no "k" at all)."""
    pl = open_log(log_dir)
    w = Writer(pl)
    w.send([(b"k", b"committed")], 7, transactional=True)
    w.end(7, commit=True)
    w.send([(b"k", b"aborted")], 7, transactional=True)
    w.end(7, commit=False)
    pl.roll()
    offset_map, buffers = tools()
    clean_partition_with(pl, offset_map, buffers, last_stable_offset=pl.log_end_offset,
                         aborted_transactions=lambda start, end: [], now_ms=T0)
    assert [v for _, k, v in records_of(pl) if k == b"k"] == [b"aborted"]
    pl.close()


def test_markers_stay_and_aborted_batches_go_compressed_or_not(log_dir: str) -> None:
    pl = open_log(log_dir)
    w = Writer(pl)
    for i, codec in enumerate(["gzip", "none", "lz4", "zstd", "snappy"]):
        pid = 10 + i
        w.send([(b"a", b"%d" % i), (b"b%d" % i, b"x" * 50)], pid, transactional=True,
               compression=codec)
        w.send([(b"c", b"%d" % i)], pid, transactional=True, compression=codec)
        w.end(pid, commit=i % 2 == 0)
        w.send([(b"tail%d" % i, b"t")], pid, compression=codec)  # each producer's last batch
    pl.roll()
    markers_before = markers_of(pl)
    end = pl.log_end_offset
    [result] = clean_with(pl, w, end)
    assert markers_of(pl) == markers_before  # byte for byte
    assert records_of(pl) == w.expected(end)
    assert result.aborted_dropped == 2 * 3
    # Aborted data is gone whatever its key: "b1" and "b3" were written only there.
    keys = {k for _, k, _ in records_of(pl)}
    assert {b"b0", b"b2", b"b4"} <= keys and not {b"b1", b"b3"} & keys
    pl.close()


def test_nothing_at_or_past_the_last_stable_offset_is_cleaned(log_dir: str) -> None:
    pl = open_log(log_dir)
    w = Writer(pl)
    for i in range(5):
        w.send([(b"k", b"v%d" % i), (b"x", b"x%d" % i)])
    w.send([(b"k", b"open-1")], 7, transactional=True)      # opens: the LSO stops here
    lso = w.open[7]
    for i in range(5):
        w.send([(b"k", b"after-%d" % i), (b"x", b"y%d" % i)])
    w.send([(b"k", b"open-2")], 7, transactional=True)
    pl.roll()
    assert pl.last_stable_offset == lso
    before = batches_of(pl)
    [result] = clean_fully(pl)  # the partition log's own LSO
    assert result.first_uncleanable == lso and result.first_dirty_after == lso
    assert pl.cleaner_checkpoint.first_dirty == lso
    after = batches_of(pl)
    # Every batch at or past the LSO is there, byte for byte.
    assert [b for h, b in after if h.base_offset >= lso] == \
        [b for h, b in before if h.base_offset >= lso]
    assert records_of(pl) == w.expected(lso)
    # The LSO sits inside the segment now: nothing is due, and cleaning does nothing.
    assert assess(pl, T0).due is None and assess(pl, T0).dirty_bytes == 0
    assert clean_fully(pl) == []
    # The transaction commits: the LSO moves to the log end, and the rest is cleaned.
    w.end(7, commit=True)
    pl.roll()
    assert pl.last_stable_offset == pl.log_end_offset
    assert assess(pl, T0).dirty_bytes > 0
    [result] = clean_fully(pl)
    assert result.first_dirty_before == lso
    end = result.first_dirty_after
    assert records_of(pl) == w.expected(end)
    assert {k: v for _, k, v in records_of(pl)} == {b"k": b"open-2", b"x": b"y4"}
    pl.close()


def test_an_explicit_lso_bounds_the_cleaning_inside_a_segment(log_dir: str) -> None:
    pl = open_log(log_dir)
    w = Writer(pl)
    for i in range(20):
        w.send([(b"k%d" % (i % 3), b"v%d" % i)])
    pl.roll()
    for lso in (7, 7, 12, 20):
        results = clean_with(pl, w, lso)
        if results:
            assert results[-1].first_uncleanable == lso
        assert records_of(pl) == w.expected(lso)
        assert pl.cleaner_checkpoint.first_dirty == lso
    pl.close()


def test_the_last_batch_of_each_producer_survives_empty(log_dir: str) -> None:
    pl = open_log(log_dir)
    w = Writer(pl)
    w.send([(b"a", b"p1"), (b"b", b"p1")], 5)            # superseded, not 5's last
    w.send([(b"a", b"p2"), (b"b", b"p2")], 5)            # superseded: 5's last batch
    w.send([(b"c", b"q")], 6, transactional=True)        # aborted: 6's last batch
    w.end(6, commit=False)
    w.send([(b"a", b"plain"), (b"b", b"plain")])         # no producer id
    pl.roll()
    raw = {h.base_offset: (h, b) for h, b in batches_of(pl)}
    end = pl.log_end_offset
    [result] = clean_with(pl, w, end)
    assert result.empty_batches_kept == 2
    after = {h.base_offset: (h, b) for h, b in batches_of(pl)}
    assert 0 not in after  # 5's first batch: gone
    for base in (2, 4):
        original, _ = raw[base]
        h, b = after[base]
        assert (h.record_count, h.size, h.base_timestamp) == (0, 61, -1)
        assert (h.last_offset_delta, h.producer_id, h.producer_epoch, h.base_sequence,
                h.max_timestamp, h.partition_leader_epoch) == \
            (original.last_offset_delta, original.producer_id, original.producer_epoch,
             original.base_sequence, original.max_timestamp, original.partition_leader_epoch)
        assert h.is_transactional == original.is_transactional
        assert h.compression == 0 and not h.attributes & 0x40
        _binding.validate_batch(b)  # CRC and structure
    assert records_of(pl) == w.expected(end)
    # Cleaning again (other keys dirty) keeps them as they are...
    kept = {base: b for base, (_, b) in after.items() if base in (2, 4)}
    w.send([(b"d", b"1")])
    w.send([(b"d", b"2")])
    pl.roll()
    [result] = clean_with(pl, w, pl.log_end_offset)
    assert result.records_kept < result.records_read
    assert {h.base_offset: b for h, b in batches_of(pl) if h.base_offset in (2, 4)} == kept
    # ...until producer 5 writes again: then its old empty batch goes.
    w.send([(b"a", b"p3")], 5)
    w.send([(b"a", b"plain2")])
    pl.roll()
    end = pl.log_end_offset
    clean_with(pl, w, end)
    headers = {h.base_offset: h for h, _ in batches_of(pl)}
    assert 2 not in headers and 4 in headers
    assert headers[w.batches[-2][0]].record_count == 0  # 5's newest batch, now its last
    assert records_of(pl) == w.expected(end)
    pl.close()


def test_an_expired_producers_last_batch_goes(log_dir: str) -> None:
    """Kafka keeps the last batch of producers it still tracks only: once a producer has
    expired (producer.id.expiration.ms), its emptied last batch is not kept, so producer
    sessions that come and go leave no header behind each."""
    pl = open_log(log_dir)
    w = Writer(pl)
    w.send([(b"a", b"old")], 5)            # producer 5's last batch, superseded below
    w.send([(b"a", b"old")], 6)            # producer 6's, superseded too
    w.send([(b"a", b"plain")])
    pl.roll()
    # Both expire (their batch timestamps are long past); then 6 writes again.
    assert pl.expire_producers(T0 + 2 * HOUR, HOUR) == 2
    w.send([(b"b", b"again")], 6)
    pl.roll()
    end = pl.log_end_offset
    [result] = clean_with(pl, w, end)
    headers = {h.base_offset: h for h, _ in batches_of(pl)}
    assert 0 not in headers                # 5 expired: its emptied batch is gone
    assert 1 not in headers                # 6's emptied batch: 6 wrote again since
    assert result.empty_batches_kept == 0
    assert records_of(pl) == w.expected(end)
    pl.close()


def test_a_compressed_last_batch_left_empty_is_written_uncompressed(log_dir: str) -> None:
    pl = open_log(log_dir)
    w = Writer(pl)
    w.send([(b"a", b"1"), (b"b", b"1")], 5, compression="gzip")
    w.send([(b"a", b"2"), (b"b", b"2")])
    pl.roll()
    clean_with(pl, w, pl.log_end_offset)
    first, raw = batches_of(pl)[0]
    assert (first.base_offset, first.record_count, first.compression, len(raw)) == (0, 0, 0, 61)
    pl.close()


# ---- against a model ---------------------------------------------------------------------

def random_log(w: Writer, rng: random.Random, steps: int, *, roll_every: int) -> None:
    """Plain, idempotent and transactional producers interleaved; transactions commit or
    abort; some stay open at the end."""
    producers = [20, 21, 22, 23]
    for step in range(steps):
        pid = rng.choice([*producers, -1])
        items = [(b"k%d" % rng.randrange(12), None if rng.random() < 0.1 else b"v%d" % step)
                 for _ in range(rng.randint(1, 4))]
        codec = rng.choice(["none", "none", "gzip", "lz4"])
        if pid >= 0 and pid in w.open:
            if rng.random() < 0.35:
                w.end(pid, commit=rng.random() < 0.5)
            else:
                w.send(items, pid, transactional=True, compression=codec)
        elif pid >= 0 and rng.random() < 0.5:
            w.send(items, pid, transactional=True, compression=codec)
        else:
            w.send(items, pid, compression=codec)
        if step % roll_every == roll_every - 1:
            w.log.roll()
    w.log.roll()


def check_model(pl: PartitionLog, w: Writer, before: list[tuple[_binding.BatchHeader, bytes]],
                map_end: int, cleaned_end: int) -> None:
    """The log after cleaning [log start, map_end) of the segments below ``cleaned_end``."""
    after = batches_of(pl)
    assert records_of(pl) == w.expected(map_end)
    # Markers: all of them, byte for byte.
    assert [b for h, b in after if h.is_control] == [b for h, b in before if h.is_control]
    # Batches at or past map_end: unchanged.
    assert [b for h, b in after if h.base_offset >= map_end] == \
        [b for h, b in before if h.base_offset >= map_end]
    # Each producer's last data batch of the range cleaned is there (the same header
    # fields; empty if it lost every record), and no other empty batch of a producer.
    last: dict[int, _binding.BatchHeader] = {}
    for h, _ in before:
        if h.base_offset < cleaned_end and h.producer_id >= 0 and not h.is_control:
            last[h.producer_id] = h
    kept = {h.base_offset: h for h, _ in after}
    for pid, h in last.items():
        if h.base_offset >= map_end:
            continue
        got = kept.get(h.base_offset)
        assert got is not None, (pid, h)
        assert (got.last_offset_delta, got.producer_id, got.base_sequence) == \
            (h.last_offset_delta, h.producer_id, h.base_sequence)
    for h, _ in after:
        if h.record_count == 0 and h.producer_id >= 0 and h.base_offset < map_end:
            assert last[h.producer_id].base_offset == h.base_offset


@pytest.mark.parametrize("seed", range(12))
def test_cleaning_transactional_logs_against_a_model(log_dir: str, seed: int) -> None:
    rng = random.Random(seed)
    pl = open_log(log_dir, **{"segment.bytes": rng.choice([600, 1500, 1 << 20])})
    w = Writer(pl)
    random_log(w, rng, rng.randint(30, 120), roll_every=rng.randint(5, 40))
    lso = pl.last_stable_offset
    assert lso == min(w.open.values(), default=pl.log_end_offset)
    assert [tuple(a[:3]) for a in pl.aborted_transactions(0, pl.log_end_offset)] == w.aborted
    before = batches_of(pl)
    memory = rng.choice([24 * 8, 24 * 40, 1 << 20])  # tiny maps: several passes
    results = clean_fully(pl, memory=memory, chunk=rng.choice([512, 4096, 1 << 16]))
    map_end = results[-1].first_dirty_after if results else pl.cleaner_checkpoint.first_dirty
    assert map_end <= lso
    if results and not results[-1].map_full:
        assert map_end == min(lso, pl.cleaning_view().active_base)
    # The model of one cleaning: segments below the map's end were rewritten.
    check_model(pl, w, before, map_end, map_end if not results else
                max(s.end for s in pl.cleaning_view().sealed if s.base < map_end))
    # A read_committed reader sees the committed value of every key below the LSO.
    seen: dict[bytes, bytes | None] = {}
    for offset, k, v in records_of(pl):
        rec = next(r for r in w.records if r.offset == offset)
        if offset < lso and not w.is_aborted(rec):
            seen[k] = v
    assert seen == w.committed_latest(lso)
    # Closing every transaction and cleaning again finishes the job.
    for pid in list(w.open):
        w.end(pid, commit=rng.random() < 0.5)
    pl.roll()
    before = batches_of(pl)
    results = clean_fully(pl, memory=1 << 20)
    assert results and not results[-1].map_full
    end = results[-1].first_dirty_after
    assert end == pl.cleaning_view().active_base == pl.log_end_offset
    check_model(pl, w, before, end, end)
    pl.close()
    reopened = open_log(log_dir, **{"segment.bytes": 600})
    assert records_of(reopened) == w.expected(end)
    reopened.check()
    reopened.close()


def test_the_partition_log_lookup_and_explicit_lists_clean_alike(tmp_path: Path) -> None:
    """clean_partition (reading the partition log) and clean_partition_with (the model's
    LSO and aborted list) make the same bytes (markers aside: they carry the wall clock)."""
    outputs = []
    for name in ("log", "model"):
        directory = tmp_path / name
        pl = open_log(directory, **{"segment.bytes": 900})
        w = Writer(pl)
        random_log(w, random.Random(99), 80, roll_every=9)
        if name == "log":
            clean_fully(pl)
        else:
            clean_with(pl, w, min(w.open.values(), default=pl.log_end_offset))
        outputs.append([(h.base_offset, h.size) if h.is_control else b
                        for h, b in batches_of(pl)])
        pl.close()
    assert outputs[0] == outputs[1]


# ---- the rest of logkernel reading what the cleaner leaves -------------------------------

def test_empty_batches_pass_every_reader(tmp_path: Path) -> None:
    """A producer's last batch kept without records: the validator, the decoders, the
    segment recovery, the consumers (both isolation levels) and producer state rebuilt
    from the log all take it."""
    settings = {"log.cleaner.enable": False, "offsets.topic.num.partitions": 1}
    with logkernel.open(tmp_path, settings) as lk:
        lk.create_topic("t", config={"cleanup.policy": "compact"})
        pl = lk.partition_log("t", 0)
        w = Writer(pl)
        w.send([(b"a", b"1"), (b"b", b"1")], 5)
        w.send([(b"c", b"1")], 6, transactional=True)
        w.end(6, commit=False)
        w.send([(b"a", b"2"), (b"b", b"2")])
        pl.roll()
        clean_fully(pl)
        empties = [h for h, _ in batches_of(pl) if h.record_count == 0]
        assert [h.producer_id for h in empties] == [5, 6]
        data = pl.read(0, 1 << 20)
        assert _binding.validate_record_set(data) > 0
        assert [b.header.record_count for b in iter_batches(data)][:2] == [0, 0]
        assert _binding.scan_log(data).stop_reason == "end"
        columns = _binding.decode_columns(data)
        assert list(columns.offsets) == [4, 5]
        for isolation in ("read_uncommitted", "read_committed"):
            consumer = lk.consumer(auto_offset_reset="earliest", isolation_level=isolation)
            consumer.assign([("t", 0)])
            got = [(r.offset, r.key, r.value) for r in consumer.poll(max_records=100)]
            consumer.close()
            assert got == [(4, b"a", b"2"), (5, b"b", b"2")], isolation
        # Producer 5 may go on where it left off (its sequence state is in the log).
        w.send([(b"a", b"3")], 5)
        directory = pl.directory
        segment = min(n for n in os.listdir(directory) if n.endswith(".log"))
    # The cleaned segment recovered from scratch keeps every batch.
    stem = os.path.join(directory, segment[:-4])
    seg = _binding.Segment(stem + ".log", stem + ".index", stem + ".timeindex", base_offset=0,
                           writable=True, log_capacity=1 << 20)
    size = seg.info().size
    report = seg.recover()
    assert report.valid_bytes == size and report.stop_reason == "end"
    seg.close()
    # Producer state rebuilt from the log alone (no snapshot): producer 5 continues its
    # sequence, which the empty batch carried.
    for name in os.listdir(directory):
        if name.endswith(".snapshot"):
            os.unlink(os.path.join(directory, name))
    with logkernel.open(tmp_path, settings) as lk:
        pl = lk.partition_log("t", 0)
        state = {e.producer_id: e for e in pl.producer_states()}
        assert state[5].last_seq == 2
        w = Writer(pl, sequences={5: 3})
        w.send([(b"a", b"4")], 5)
        with pytest.raises(logkernel.errors.OutOfOrderSequenceError):
            Writer(pl, sequences={5: 9}).send([(b"a", b"5")], 5)


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka", "aiokafka"])
def test_real_clients_read_a_cleaned_transactional_log(tmp_path: Path, client: str) -> None:
    """Over the wire: a cleaned log with producers' empty batches, markers and aborted
    transactions removed reads as the model says (confluent-kafka reads read_committed by
    default, the others read_uncommitted: after cleaning, with every transaction decided,
    both see the same records)."""
    from tests import broker_support as support

    reader = next(c for c in support.CLIENTS if c.name == client)
    serving = contextlib.contextmanager(support.in_process_broker)
    with serving(tmp_path / "broker", {"log.cleaner.enable": False}) as broker:
        engine = broker.engine
        assert engine is not None
        engine.create_topic("t", config={"cleanup.policy": "compact"})
        pl = engine.partition_log("t", 0)
        w = Writer(pl)
        w.send([(b"k1", b"superseded")], 30)  # producer 30's last batch: left empty
        w.send([(b"zz", b"aborted")], 31, transactional=True)  # 31's last, aborted
        w.end(31, commit=False)
        random_log(w, random.Random(5), 60, roll_every=10)
        for pid in list(w.open):
            w.end(pid, commit=True)
        w.send([(b"k1", b"last")])
        pl.roll()
        clean_fully(pl)
        empty = [h.producer_id for h, _ in batches_of(pl) if h.record_count == 0]
        assert empty[:2] == [30, 31]
        want = w.expected(pl.cleaner_checkpoint.first_dirty)
        got = reader.consume(broker.bootstrap, "t", 1, len(want))
        assert [(g.offset, g.key, g.value) for g in got] == want


# ---- drop_aborted ------------------------------------------------------------------------

def test_drop_aborted_removes_aborted_batches_in_place() -> None:
    batches = [
        encode_batch([b"1"], keys=[b"k"], producer_id=1, producer_epoch=0, base_sequence=0,
                     transactional=True, base_offset=0, timestamps=T0),
        encode_batch([b"2"], keys=[b"k"], producer_id=2, producer_epoch=0, base_sequence=0,
                     transactional=True, base_offset=1, timestamps=T0),
        _binding.encode_control_batch(0, 0, T0, base_offset=2, producer_id=1, producer_epoch=0),
        encode_batch([b"3"], keys=[b"k"], producer_id=1, producer_epoch=0, base_sequence=1,
                     transactional=True, base_offset=3, timestamps=T0, compression_type="gzip"),
        encode_batch([b"4"], keys=[b"k"], base_offset=4, timestamps=T0),
    ]
    data = b"".join(batches)
    buf = bytearray(data)
    assert _binding.drop_aborted(buf, []) == len(data) and buf == data
    # (1, 0, 2) and (1, 3, 9): overlapping, unsorted and as objects are all taken.
    aborted = [(1, 3, 9), (1, 0, 2), (1, 1, 1)]
    n = _binding.drop_aborted(buf, aborted)
    assert bytes(buf[:n]) == batches[1] + batches[2] + batches[4]

    @dataclass
    class Txn:
        producer_id: int
        first_offset: int
        last_offset: int

    buf = bytearray(data)
    view = memoryview(buf)
    n = _binding.drop_aborted(view, [Txn(2, 1, 1)])
    assert bytes(buf[:n]) == batches[0] + batches[2] + batches[3] + batches[4]
    with pytest.raises(ValueError, match="first offset 5 is past its last offset 4"):
        _binding.drop_aborted(bytearray(data), [(1, 5, 4)])
    # A torn tail stays for the decoder to report.
    buf = bytearray(data[:-3])
    n = _binding.drop_aborted(buf, [(1, 0, 2)])
    assert bytes(buf[:n]) == (batches[1] + batches[2] + batches[3] + batches[4])[:-3]
