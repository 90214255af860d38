"""The log cleaner against a model: random puts, overwrites and deletes on a compacted
topic (single sends, send_batch, raw batches with per-record timestamps and headers,
compressed or not), small segments, key maps from tiny (many passes) to roomy, cleanings
at chosen times (to pass delete horizons), one pass at a time or to the end, and
close/reopen; after every cleaning the log read from the start must be what compaction
promises. Plus a deterministic many-pass cleaning, readers racing the cleaner, and the
regression tests for the bugs they found."""

from __future__ import annotations

import bisect
import itertools
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import logkernel
from logkernel import _binding
from logkernel.log.cleaner import clean_partition, remove_files
from logkernel.log.partition import PartitionLog
from logkernel.records import Record, decode_batch, encode_batch
from tests.cleaner_workers import read_log

TOPIC = "t"
BIG_MAP = 1 << 20         # ~39,000 keys: one pass for anything these tests write
HOUR = 3_600_000
# Far enough from the wall clock that Engine.compact (which cleans at the wall clock)
# never passes a horizon set by a cleaning the model ran at its own clock.
T0 = 4_000_000_000_000


# ---- reading the log --------------------------------------------------------------------

def consume_all(lk: logkernel.Engine) -> list:
    consumer = lk.consumer(auto_offset_reset="earliest")
    consumer.assign([(TOPIC, 0)])
    out: list = []
    while got := consumer.poll(max_records=100_000):
        out.extend(got)
    consumer.close()
    return out


# ---- the model --------------------------------------------------------------------------

@dataclass(frozen=True)
class Written:
    offset: int
    key: bytes
    value: bytes | None
    timestamp: int
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass
class Tombstone:
    """When a tombstone was first cleaned (its batch got its horizon then): between
    first_min and first_max. ``after``: the times of later cleanings."""

    first_min: int
    first_max: int
    after: list[int]


def clean_fully(pl: PartitionLog, map_bytes: int, now_ms: int, chunk: int,
                passes: int | None = None) -> list:
    """clean_partition until the map no longer fills (or ``passes`` passes); one OffsetMap
    of ``map_bytes`` for all, as the cleaner's threads keep theirs."""
    offset_map = _binding.OffsetMap(map_bytes, 0.9)
    buffers = _binding.FilterBuffers(chunk)
    results = []
    while passes is None or len(results) < passes:
        result = clean_partition(pl, offset_map, buffers, now_ms=now_ms, chunk_bytes=chunk,
                                 remove=remove_files)
        if result is None:
            break
        results.append(result)
        if not result.map_full:
            break
    return results


class CleanerMachine(RuleBasedStateMachine):
    """Keys k0..k11 (and fresh ones from bursts), one partition, the model's own clock for
    timestamps and for cleanings run through clean_partition; Engine.compact runs at the
    wall clock, far before the model's clock, so it never passes a horizon the model set.

    What the model does not follow: a tombstone first seen by one pass of a multi-pass
    cleaning may legitimately go in a later pass of the same cleaning once its horizon
    has passed, and the model dates a cleaning's tombstones by the cleaning, not the
    pass. So with a map small enough to need several passes, every pass of a cleaning runs
    before any horizon it could meet: delete.retention.ms > 0 and no unfinished
    multi-pass cleaning whose horizons the clock could pass. The tombstone-between-passes
    cases have their own tests (test_tombstone_dropped_before_the_records_it_deletes,
    test_tombstone_horizon_passing_between_passes)."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="lk-cleaner-model-")
        self.lk: logkernel.Engine | None = None
        self.written: list[Written] = []
        self.tombstones: dict[int, Tombstone] = {}
        self.gone: set[int] = set()  # tombstones no longer in the log (never come back)
        self.retention = 0
        self.dedupe = 1024
        self.clock = T0
        self.counter = 0
        self.fresh = 0
        self.unfinished_since: int | None = None  # model time of an unfinished multi-pass
        self.fully_cleaned = False

    # ---- set-up and plumbing -----------------------------------------------------------

    @initialize(segment_bytes=st.one_of(st.integers(160, 1600), st.sampled_from([4096, 16384])),
                dedupe=st.sampled_from([1024, 1024, 2048, 1 << 20]),
                retention=st.sampled_from([0, 1, 5_000, HOUR]),
                codec=st.sampled_from(["producer", "producer", "producer", "gzip", "lz4"]),
                index_interval=st.sampled_from([1, 64, 4096]))
    def open_topic(self, segment_bytes: int, dedupe: int, retention: int, codec: str,
                   index_interval: int) -> None:
        self.retention = retention
        self.dedupe = dedupe
        self._open()
        assert self.lk is not None
        self.lk.create_topic(TOPIC, partitions=1, config={
            "cleanup.policy": "compact", "segment.bytes": segment_bytes,
            "delete.retention.ms": retention, "compression.type": codec,
            "index.interval.bytes": index_interval, "min.compaction.lag.ms": 0})

    def _open(self) -> None:
        self.lk = logkernel.open(self.dir, config={
            "log.cleaner.enable": False, "log.cleaner.dedupe.buffer.size": self.dedupe,
            "log.cleaner.io.buffer.size": 1024})
        self.producers = {codec: self.lk.producer(compression_type=codec)
                          for codec in (None, "gzip", "snappy", "lz4", "zstd")}

    def teardown(self) -> None:
        if self.lk is not None:
            self.lk.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def pl(self) -> PartitionLog:
        assert self.lk is not None
        return self.lk.partition_log(TOPIC, 0)

    def _value(self, size: int) -> bytes:
        self.counter += 1
        return b"v%d:" % self.counter + b"x" * size

    def _record(self, first: int, keys: list[bytes], values: list[bytes | None],
                timestamps: list[int], headers: list | None = None) -> None:
        assert first == len(self.written), (first, len(self.written))
        for i, (k, v, ts) in enumerate(zip(keys, values, timestamps, strict=True)):
            h = tuple(headers[i]) if headers and headers[i] else ()
            self.written.append(Written(first + i, k, v, ts, h))
        self.fully_cleaned = False

    # ---- writes ----------------------------------------------------------------------

    keys = st.sampled_from([b"k%d" % i for i in range(12)])

    @rule(key=keys, size=st.integers(0, 60), delete=st.booleans(),
          codec=st.sampled_from([None, None, "gzip", "zstd"]), jitter=st.integers(-5, 5))
    def send(self, key: bytes, size: int, delete: bool, codec: str | None, jitter: int) -> None:
        value = None if delete else self._value(size)
        ts = self.clock + jitter
        md = self.producers[codec].send(TOPIC, value, key=key, partition=0, timestamp_ms=ts)
        self._record(md.offset, [key], [value], [md.timestamp_ms])

    @rule(items=st.lists(st.tuples(keys, st.integers(0, 40), st.integers(0, 4)),
                         min_size=1, max_size=12),
          codec=st.sampled_from([None, None, "gzip", "snappy", "lz4"]))
    def send_batch(self, items: list[tuple[bytes, int, int]], codec: str | None) -> None:
        keys = [k for k, _, _ in items]
        values = [None if d == 0 else self._value(s) for _, s, d in items]
        md = self.producers[codec].send_batch(TOPIC, values, keys=keys, partition=0,
                                              timestamp_ms=self.clock)
        self._record(int(md.offsets[0]), keys, values, [md.timestamp_ms] * len(keys))

    @rule(items=st.lists(st.tuples(keys, st.integers(-1, 30), st.integers(-3000, 3000),
                                   st.booleans()), min_size=1, max_size=10),
          codec=st.sampled_from(["none", "none", "gzip", "zstd"]))
    def append_raw(self, items: list[tuple[bytes, int, int, bool]], codec: str) -> None:
        """A batch with a timestamp per record (the cleaner re-encodes their deltas when
        it drops the first record or sets a horizon) and headers on some records."""
        keys = [k for k, _, _, _ in items]
        values = [None if s < 0 else self._value(s) for _, s, _, _ in items]
        timestamps = [self.clock + d for _, _, d, _ in items]
        headers = [[("h", b"%d" % i), ("n", None)] if h else None
                   for i, (_, _, _, h) in enumerate(items)]
        if self.pl.config.compression_type not in ("producer", "uncompressed"):
            codec = "none"  # the topic re-compresses anyway
        first, _, _ = self.pl.append(encode_batch(values, keys=keys, timestamps=timestamps,
                                                  headers=headers, compression_type=codec))
        self._record(first, keys, values, timestamps, headers)

    @rule(count=st.integers(30, 120), overwrite=st.booleans())
    def burst(self, count: int, overwrite: bool) -> None:
        """Many distinct keys at once, more than a tiny map holds."""
        keys = []
        for i in range(count):
            if overwrite and i % 3 == 0 and self.fresh:
                keys.append(b"f%d" % (self.fresh - 1 - i % self.fresh))
            else:
                keys.append(b"f%d" % self.fresh)
                self.fresh += 1
        values = [self._value(i % 7) for i in range(count)]
        md = self.producers[None].send_batch(TOPIC, values, keys=keys, partition=0,
                                             timestamp_ms=self.clock)
        self._record(int(md.offsets[0]), keys, values, [md.timestamp_ms] * count)

    @rule(ms=st.sampled_from([1, 100, 4_999, 5_000, 60_000, HOUR, HOUR + 1, 10 * HOUR]))
    def advance_clock(self, ms: int) -> None:
        self.clock += ms

    # ---- cleaning --------------------------------------------------------------------

    def _tiny_map_is_safe(self, now: int) -> bool:
        if self.retention == 0:
            return False
        return self.unfinished_since is None or now < self.unfinished_since + self.retention

    def _note_cleaning(self, results: list, first_cover_upto: int) -> None:
        """Records the cleaning's times: tombstones below ``first_cover_upto`` not seen
        by a cleaning before were first cleaned now; the others saw one more cleaning."""
        if not results:
            return
        times = [r.started_ms for r in results]
        lo, hi = min(times), max(times)
        for t in self.tombstones.values():
            t.after.extend(times)
        for w in self.written:
            if (w.value is None and w.offset < first_cover_upto
                    and w.offset not in self.tombstones and w.offset not in self.gone):
                self.tombstones[w.offset] = Tombstone(lo, hi, [])

    def _covered_upto(self) -> int:
        """The end of the last segment a cleaning from now could filter."""
        view = self.pl.cleaning_view()
        return view.sealed[-1].end if view.sealed else 0

    @rule(roll=st.booleans(), tiny=st.sampled_from([1024, 1024, 1536, None]),
          chunk=st.sampled_from([1024, 1500, 65536]))
    def clean_to_the_end(self, roll: bool, tiny: int | None, chunk: int) -> None:
        """clean_partition at the model's clock, pass after pass until the map holds the
        rest."""
        now = self.clock
        map_bytes = tiny if tiny and self._tiny_map_is_safe(now) else BIG_MAP
        if roll:
            self.pl.roll()
        covered = self._covered_upto()
        end_before = self.pl.log_end_offset
        results = clean_fully(self.pl, map_bytes, now, chunk)
        event(f"clean_to_the_end: {min(len(results), 3)} passes")
        assert self.pl.log_end_offset == end_before
        if results:
            assert not results[-1].map_full
            assert all(r.map_full for r in results[:-1])
            self.unfinished_since = None
        self._note_cleaning(results, covered)
        self.fully_cleaned = True
        self._check()

    @precondition(lambda self: self.retention > 0)
    @rule(tiny=st.sampled_from([1024, 1536]), chunk=st.sampled_from([1024, 65536]))
    def clean_one_pass(self, tiny: int, chunk: int) -> None:
        """One pass of a cleaning that needs several, as the background thread does one
        at a time; the log is then only partly clean."""
        now = self.clock
        if not self._tiny_map_is_safe(now):
            return
        covered = self._covered_upto()
        before = self.pl.cleaning_view()
        end_before = self.pl.log_end_offset
        results = clean_fully(self.pl, tiny, now, chunk, passes=1)
        assert self.pl.log_end_offset == end_before
        if results:
            r = results[0]
            # the segments this pass filtered: those below the map's end
            upto = max((s.end for s in before.sealed
                        if s.base < max(r.first_dirty_after, r.first_dirty_before)), default=0)
            covered = min(covered, upto)
            event(f"one pass: map_full={r.map_full}")
            if r.map_full:
                if self.unfinished_since is None:
                    self.unfinished_since = now
            else:
                self.unfinished_since = None
                self.fully_cleaned = True
        self._note_cleaning(results, covered)
        self._check()

    @rule(roll=st.booleans())
    def compact(self, roll: bool) -> None:
        """Engine.compact: the engine's map (maybe tiny), at the wall clock."""
        assert self.lk is not None
        if self.dedupe < BIG_MAP and self.retention < HOUR:
            return  # several passes at wall-clock times: a small retention could pass
        if roll:
            self.pl.roll()
        covered = self._covered_upto()
        end_before = self.pl.log_end_offset
        results = self.lk.compact(TOPIC, roll=False)
        assert self.pl.log_end_offset == end_before
        if results:
            assert not results[-1].map_full
            self.unfinished_since = None
        self._note_cleaning(results, covered)
        self.fully_cleaned = True
        self._check()

    @rule(dedupe=st.sampled_from([None, 1024, 1 << 20]))
    def reopen(self, dedupe: int | None) -> None:
        assert self.lk is not None
        end = self.pl.log_end_offset
        before, _ = read_log(self.pl)
        self.lk.close()
        if dedupe is not None:
            self.dedupe = dedupe
        self._open()
        assert self.pl.log_end_offset == end
        after, _ = read_log(self.pl)
        assert after == before

    # ---- checks ----------------------------------------------------------------------

    @invariant()
    def end_offset_is_what_was_written(self) -> None:
        if self.lk is not None:
            assert self.pl.log_end_offset == len(self.written)

    def _check(self) -> None:
        pl = self.pl
        pl.check()
        records, end_position = read_log(pl)
        written = {w.offset: w for w in self.written}
        # no record that was not written, each as written (timestamps and headers too)
        for r in records:
            w = written[r.offset]
            assert (r.key, r.value, r.timestamp, r.headers) == (w.key, w.value, w.timestamp,
                                                                w.headers), (r, w)
        view = pl.cleaning_view()
        active = view.active_base
        # the active segment is never cleaned: all of it is there
        assert [r.offset for r in records if r.offset >= active] == list(
            range(active, len(self.written)))
        latest: dict[bytes, Written] = {}
        for w in self.written:
            latest[w.key] = w
        by_key: dict[bytes, list[Record]] = {}
        for r in records:
            by_key.setdefault(r.key, []).append(r)
        # every key's last record is its latest (a deleted key may have none left)
        for key, w in latest.items():
            got = by_key.get(key, [])
            if w.value is None:
                assert not got or got[-1].offset == w.offset, (key, got[-3:], w)
            else:
                assert got and got[-1].offset == w.offset, (key, got[-3:], w)
        if self.fully_cleaned:
            self._check_fully_cleaned(records, active)
        self._forget_dropped_tombstones({r.offset for r in records if r.value is None})
        self._check_lookups(pl, records)
        if end_position == pl.log_end_offset:
            # the consumer agrees (only here: it spins on a gap at the end of the log)
            assert self.lk is not None
            consumed = [(r.offset, r.timestamp_ms, r.key, r.value, r.headers)
                        for r in consume_all(self.lk)]
            assert consumed == [tuple(r) for r in records]

    def _check_lookups(self, pl: PartitionLog, records: list[Record]) -> None:
        """The indexes of cleaned segments (rebuilt over batches with gaps, timestamps out
        of order, horizons as base timestamps): a read from any offset starts with the
        first record at or after it; offset_for_timestamp and max_timestamp agree with
        the records."""
        end = pl.log_end_offset
        offsets = [r.offset for r in records]
        step = max(1, end // 150)
        for o in range(pl.log_start_offset, end, step):
            i = bisect.bisect_left(offsets, o)
            first = None
            position = o
            # as a consumer does: the batch holding the position may have none left at or
            # after it (its last records were cleaned away); go on after that batch
            while first is None and (data := pl.read(position, 1)):
                batch = decode_batch(data)
                first = next((r for r in batch.records() if r.offset >= o), None)
                position = batch.header.base_offset + batch.header.last_offset_delta + 1
            if i == len(offsets):
                assert first is None, (o, first)
            else:
                assert first == records[i], (o, first, records[i])
        if not records:
            assert pl.max_timestamp() is None
            return
        best = max(records, key=lambda r: (r.timestamp, -r.offset))
        assert pl.max_timestamp() == (best.offset, best.timestamp)
        for target in [*sorted({r.timestamp for r in records})[::3], best.timestamp + 1]:
            want = next(((r.offset, r.timestamp) for r in records if r.timestamp >= target),
                        None)
            assert pl.offset_for_timestamp(target) == want, (target, want)

    def _check_fully_cleaned(self, records: list[Record], active: int) -> None:
        """Below the active segment: the latest record of each key, a tombstone only
        until a cleaning past its horizon."""
        if self.pl.cleaning_view().sealed:
            assert self.pl.cleaner_checkpoint.first_dirty == active
        latest_below: dict[bytes, Written] = {}
        for w in self.written:
            if w.offset < active:
                latest_below[w.key] = w
        must: set[int] = set()
        may: set[int] = set()
        for w in latest_below.values():
            if w.value is not None:
                must.add(w.offset)
                continue
            if w.offset in self.gone:
                continue  # dropped by an earlier cleaning: must stay gone
            t = self.tombstones.get(w.offset)
            assert t is not None, f"tombstone at {w.offset} below the active segment {active} " \
                                  "was never cleaned"
            if any(now >= t.first_max + self.retention for now in t.after):
                event("a tombstone past its horizon")
                continue  # past its horizon: gone
            if any(now >= t.first_min + self.retention for now in t.after):
                may.add(w.offset)
            else:
                must.add(w.offset)
        got = {r.offset for r in records if r.offset < active}
        assert must <= got, (sorted(must - got)[:10], "missing")
        assert got <= must | may, (sorted(got - must - may)[:10], "should have been cleaned")

    def _forget_dropped_tombstones(self, present: set[int]) -> None:
        for offset in list(self.tombstones):
            if offset not in present:
                del self.tombstones[offset]
                self.gone.add(offset)


TestCleanerModel = CleanerMachine.TestCase
# Each example costs ~250 ms (files, fsyncs): a fifth of the profile's examples.
TestCleanerModel.settings = settings(max_examples=max(settings.default.max_examples // 5, 10),
                                     stateful_step_count=30, deadline=None)


# ---- deterministic tests ----------------------------------------------------------------

def _engine(path: Path, **config: object) -> logkernel.Engine:
    return logkernel.open(path, config={"log.cleaner.enable": False, **config})


def test_many_passes_when_the_map_fills(tmp_path: Path) -> None:
    """2,000 distinct keys, each written twice or three times, with a 1 KiB key map
    (~37 keys a pass): compact() cleans in many passes and ends exactly at the model."""
    lk = _engine(tmp_path, **{"log.cleaner.dedupe.buffer.size": 1024,
                              "log.cleaner.io.buffer.size": 1024})
    lk.create_topic(TOPIC, config={"cleanup.policy": "compact", "segment.bytes": 4096,
                                   "delete.retention.ms": HOUR})
    producer = lk.producer()
    model: dict[bytes, tuple[int, bytes | None]] = {}
    n = 2000
    offset = 0
    for round_ in range(3):
        keys = [b"key-%05d" % ((i * 7919 + round_) % n) for i in range(n) if round_ < 2 or i % 3 == 0]
        values = [None if round_ == 2 and i % 2 else b"%d-%d" % (round_, i)
                  for i in range(len(keys))]
        for start in range(0, len(keys), 200):
            producer.send_batch(TOPIC, values[start:start + 200], keys=keys[start:start + 200],
                                partition=0)
        for k, v in zip(keys, values, strict=True):
            model[k] = (offset, v)
            offset += 1
    pl = lk.partition_log(TOPIC, 0)
    results = lk.compact(TOPIC, roll=True)
    assert len(results) > 20
    assert [r.map_full for r in results] == [True] * (len(results) - 1) + [False]
    assert all(a.first_dirty_after == b.first_dirty_before
               for a, b in itertools.pairwise(results))
    assert pl.log_end_offset == offset
    records, _ = read_log(pl)
    assert {r.offset: (r.key, r.value) for r in records} == {
        o: (k, v) for k, (o, v) in model.items()}
    pl.check()
    assert lk.compact(TOPIC) == []
    lk.close()


def test_readers_racing_the_cleaner(tmp_path: Path) -> None:
    """A writer appends new versions, a cleaner compacts in many passes (tiny map) and
    rolls, and readers read the log from the start again and again. In every read: offsets
    increase; every key written before the read started is there (tombstones are kept for
    an hour); the last record of each key is at least as new as its latest when the read
    started; and across reads a key's last version never goes back."""
    lk = _engine(tmp_path, **{"log.cleaner.dedupe.buffer.size": 1024,
                              "log.cleaner.io.buffer.size": 1024})
    lk.create_topic(TOPIC, config={"cleanup.policy": "compact", "segment.bytes": 600,
                                   "delete.retention.ms": HOUR})
    pl = lk.partition_log(TOPIC, 0)
    producer = lk.producer()
    lock = threading.Lock()
    latest: dict[bytes, int] = {}   # key -> offset of its latest record, as acknowledged
    stop = threading.Event()
    errors_seen: list[BaseException] = []
    keys = [b"k%03d" % i for i in range(120)]

    def write(i: int) -> None:
        key = keys[(i * 37) % len(keys)]
        value = None if i % 11 == 0 else b"%s=%d" % (key, i)
        if i % 4 == 0:
            md = producer.send_batch(TOPIC, [value, b"%s=%d" % (keys[i % len(keys)], i)],
                                     keys=[key, keys[i % len(keys)]], partition=0)
            with lock:
                latest[key] = max(latest.get(key, -1), int(md.offsets[0]))
                latest[keys[i % len(keys)]] = int(md.offsets[1])
        else:
            md1 = producer.send(TOPIC, value, key=key, partition=0)
            with lock:
                latest[key] = md1.offset

    for i in range(600):
        write(i)

    def guarded(fn):
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # pragma: no cover - reported below
                errors_seen.append(exc)
                stop.set()
        return run

    @guarded
    def writer() -> None:
        i = 600
        while not stop.is_set():
            write(i)
            i += 1
            time.sleep(0.0005)

    @guarded
    def cleaner() -> None:
        while not stop.is_set():
            lk.compact(TOPIC, roll=True)

    reads = 0

    @guarded
    def reader() -> None:
        nonlocal reads
        last_seen: dict[bytes, int] = {}
        while not stop.is_set():
            with lock:
                before = dict(latest)
            records, _ = read_log(pl)
            seen: dict[bytes, int] = {}
            for r in records:
                seen[r.key] = r.offset
                if r.value is not None:
                    assert r.value.startswith(r.key + b"="), r
            missing = [k for k in before if k not in seen]
            assert not missing, f"keys vanished from a read: {missing[:5]}"
            for k, o in before.items():
                assert seen[k] >= o, (k, seen[k], o)
            for k, o in seen.items():
                assert o >= last_seen.get(k, -1), (k, o, last_seen[k])
            last_seen.update(seen)
            reads += 1

    threads = [threading.Thread(target=f) for f in (writer, cleaner, reader, reader)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    if errors_seen:
        raise errors_seen[0]
    assert reads >= 3
    assert lk.cleaner_stats(TOPIC).cleanings >= 2
    pl.check()
    lk.compact(TOPIC, roll=True)
    records, _ = read_log(pl)
    assert {r.key: r.offset for r in records} == latest
    assert len(records) == len(latest)
    lk.close()


def test_background_cleaner_reaches_the_model(tmp_path: Path) -> None:
    """The cleaner thread alone (one pass at a time, a 1 KiB map, 5 ms backoff) while a
    writer appends: once writes stop and it has caught up, every sealed segment holds
    exactly the latest record of each key; closing mid-way loses nothing."""
    config = {"log.cleaner.enable": True, "log.cleaner.backoff.ms": 5,
              "log.cleaner.dedupe.buffer.size": 1024, "log.cleaner.io.buffer.size": 1024}
    lk = logkernel.open(tmp_path, config=config)
    lk.create_topic(TOPIC, config={"cleanup.policy": "compact", "segment.bytes": 500,
                                   "delete.retention.ms": HOUR,
                                   "min.cleanable.dirty.ratio": 0.01})
    producer = lk.producer()
    written: list[tuple[bytes, bytes | None]] = []
    for i in range(1200):
        key = b"k%03d" % (i * 7 % 100)
        value = None if i % 13 == 0 else b"%d" % i
        producer.send(TOPIC, value, key=key, partition=0)
        written.append((key, value))
        if i == 600:  # close and reopen while the cleaner is busy
            lk.close()
            lk = logkernel.open(tmp_path, config=config)
            producer = lk.producer()
    pl = lk.partition_log(TOPIC, 0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (state,) = [p for p in lk.cleaner_stats(TOPIC).partitions]
        if state.state.dirty_bytes == 0 and not state.in_progress and state.uncleanable is None:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"the cleaner did not catch up: {lk.cleaner_stats(TOPIC)}")
    active = pl.cleaning_view().active_base
    latest: dict[bytes, int] = {}
    for offset, (key, _) in enumerate(written):
        if offset < active:
            latest[key] = offset
    records, _ = read_log(pl)
    assert [r.offset for r in records if r.offset < active] == sorted(latest.values())
    assert [r.offset for r in records if r.offset >= active] == list(range(active, len(written)))
    for r in records:
        assert (r.key, r.value) == written[r.offset]
    pl.check()
    lk.close()


# ---- regressions: bugs these tests found, now fixed ----------------------------------------

def _tombstone_beyond_a_full_map(lk: logkernel.Engine) -> PartitionLog:
    """k=old in the first segment; then, in one big segment, 200 distinct other keys and
    last a tombstone for k. A 1 KiB map fills long before the tombstone, so the first
    pass ends inside that segment and filters all of it, the tombstone included, though
    its map never saw it (k=old stays, rightly, for now). The tombstone must then stay
    until a pass whose map holds it has dropped k=old: it once got its delete horizon in
    that first pass and went in a later one, and k=old came back."""
    lk.create_topic(TOPIC, config={"cleanup.policy": "compact", "segment.bytes": 1 << 20,
                                   "delete.retention.ms": 0})
    producer = lk.producer()
    producer.send(TOPIC, b"old", key=b"k", partition=0)
    pl = lk.partition_log(TOPIC, 0)
    pl.roll()
    producer.send_batch(TOPIC, [b"v"] * 200, keys=[b"f%d" % i for i in range(200)], partition=0)
    producer.send(TOPIC, None, key=b"k", partition=0)
    return pl


def test_tombstone_dropped_before_the_records_it_deletes(tmp_path: Path) -> None:
    lk = _engine(tmp_path, **{"log.cleaner.dedupe.buffer.size": 1024})
    pl = _tombstone_beyond_a_full_map(lk)
    results = lk.compact(TOPIC, roll=True)
    assert len(results) > 2 and results[0].map_full
    records, _ = read_log(pl)
    lk.close()
    assert [(r.offset, r.value) for r in records if r.key == b"k"] in ([], [(201, None)])


def test_tombstone_horizon_passing_between_passes(tmp_path: Path) -> None:
    lk = _engine(tmp_path)
    pl = _tombstone_beyond_a_full_map(lk)
    lk.alter_topic_config(TOPIC, {"delete.retention.ms": 1000})
    pl.roll()
    offset_map = _binding.OffsetMap(1024, 0.9)
    buffers = _binding.FilterBuffers(1 << 16)
    first = clean_partition(pl, offset_map, buffers, now_ms=T0)
    assert first is not None and first.map_full and first.first_dirty_after < 201
    while (r := clean_partition(pl, offset_map, buffers, now_ms=T0 + 1000)) is not None:
        if not r.map_full:
            break
    records, _ = read_log(pl)
    lk.close()
    assert [(r.offset, r.value) for r in records if r.key == b"k"] in ([], [(201, None)])


def test_consumer_poll_returns_on_a_gap_at_the_log_end(tmp_path: Path) -> None:
    lk = _engine(tmp_path)
    lk.create_topic(TOPIC, config={"cleanup.policy": "compact", "delete.retention.ms": 0})
    producer = lk.producer()
    producer.send(TOPIC, b"1", key=b"a", partition=0)
    producer.send(TOPIC, b"1", key=b"b", partition=0)
    producer.send(TOPIC, b"2", key=b"b", partition=0)
    producer.send(TOPIC, None, key=b"b", partition=0)
    lk.compact(TOPIC, roll=True)
    lk.compact(TOPIC, roll=True)  # now past the tombstone's horizon: offsets 1..3 gone
    assert lk.end_offset(TOPIC, 0) == 4
    got: list[list[Record]] = []
    consumer = lk.consumer(auto_offset_reset="earliest")
    consumer.assign([(TOPIC, 0)])

    def poll() -> None:
        try:
            got.append(consumer.poll(timeout_ms=0, max_records=10))
            got.append(consumer.poll(timeout_ms=0, max_records=10))
        except logkernel.errors.ClosedError:
            pass  # the engine closed under a spinning poll

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    thread.join(timeout=2)
    hung = thread.is_alive()
    lk.close()  # a spinning poll then fails with ClosedError and the thread ends
    thread.join(timeout=10)
    assert not hung, "poll(timeout_ms=0) did not return within 2 s"
    assert [(r.offset, r.key) for r in got[0]] == [(0, b"a")] and got[1] == []


@pytest.mark.parametrize("when", [1, 6])  # in the map pass; in the filter pass
def test_retention_deleting_a_segment_during_a_cleaning(tmp_path: Path, when: int) -> None:
    lk = _engine(tmp_path)
    try:
        lk.create_topic(TOPIC, config={"cleanup.policy": "compact,delete",
                                       "segment.bytes": 300})
        producer = lk.producer()
        for i in range(300):
            producer.send(TOPIC, b"%d" % i, key=b"k%d" % (i % 23), partition=0)
        pl = lk.partition_log(TOPIC, 0)
        calls = 0

        def progress(done: int, planned: int) -> None:
            nonlocal calls
            calls += 1
            if calls == when:  # what the retention thread may do at any moment
                lk.delete_records(TOPIC, 0, pl.cleaning_view().sealed[2].base + 1)

        lk.compact(TOPIC, roll=True, progress=progress)
        assert calls >= when
        assert lk.cleaner_stats(TOPIC).partitions[0].uncleanable is None
        pl.check()
    finally:
        lk.close()


def test_engine_opens_with_over_a_mebibyte_of_committed_offsets(tmp_path: Path) -> None:
    config = {"log.cleaner.enable": False, "offsets.topic.num.partitions": 1}
    lk = logkernel.open(tmp_path, config=config)
    lk.create_topic("x", partitions=200)
    n = 0
    while lk.partition_log("__consumer_offsets", 0).size_bytes() < 1_200_000:
        lk.commit_offsets("g", {("x", p): n for p in range(200)})
        n += 1
    lk.close()
    with logkernel.open(tmp_path, config=config) as lk:
        assert lk.committed("g", "x", 5) == n - 1


def test_delete_retention_of_long_max(tmp_path: Path) -> None:
    lk = _engine(tmp_path)
    try:
        lk.create_topic(TOPIC, config={"cleanup.policy": "compact",
                                       "delete.retention.ms": 2**63 - 1})
        producer = lk.producer()
        producer.send(TOPIC, b"1", key=b"a", partition=0)
        producer.send(TOPIC, None, key=b"a", partition=0)
        results = lk.compact(TOPIC, roll=True)
        assert results and results[0].records_kept == 1
    finally:
        lk.close()
