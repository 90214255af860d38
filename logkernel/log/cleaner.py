"""The log cleaner: keeps the latest record per key of compacted topics (Kafka's log
compaction), on background threads and on demand.

A compacted log has three parts, in offset order::

    [log start .. first dirty)        clean: cleaned at least once
    [first dirty .. first uncleanable) dirty and cleanable
    [first uncleanable .. log end)    not cleanable yet: the active segment, segments
                                      holding records younger than min.compaction.lag.ms,
                                      and everything at or past the last stable offset
                                      (records of open transactions, and after them)

One cleaning of a partition (``clean_partition``):

1. **Map pass.** Reads the cleanable section and records, for every key, the offset of its
   latest record (aborted transactions' records aside) in an ``OffsetMap``
   (native/cleaner.c: 24 bytes a key, in memory of fixed size). If the map fills, the pass
   stops there: the cleaning covers the offsets seen, and the rest stays dirty for the
   next one (several passes, never a failure).
2. **Filter pass.** Rewrites every segment below the end of the map, from the log start,
   in groups of consecutive segments no bigger together than segment.bytes, keeping a
   record unless the map holds a later offset for its key, it has no key, or it is a
   tombstone whose batch's delete horizon has passed, or an aborted transaction wrote it
   (see below). Batches that keep tombstones get a horizon (now + delete.retention.ms)
   the first time they are cleaned (Kafka's attribute bit 6). Offsets never change:
   cleaned segments have gaps.
3. **Swap.** Each group is written to ``<base>.log.cleaned`` (indexes beside it), fsynced,
   and swapped in by ``PartitionLog.replace_segments`` (``.cleaned`` -> ``.swap`` ->
   live names, replaced segments -> ``.deleted`` -> removed; the .log's ``.swap`` rename
   is the commit point, which the next open completes after a crash).
4. The partition's ``cleaner.checkpoint`` records the new first dirty offset and the
   earliest delete horizon still pending.

Readers are never blocked for longer than the renames of one swap, and never see a key
vanish: a record is dropped only where a later record of the same key is already in the
log, before or after the swap.

Choosing (``LogCleaner``): each thread takes the compacted partition with the highest
dirty ratio (cleanable bytes / clean + cleanable bytes) at or above
min.cleanable.dirty.ratio, or one whose oldest dirty record passed max.compaction.lag.ms,
or one holding tombstones whose delete horizon has passed.

Transactions, as Kafka's LogCleaner treats them:

- nothing at or past the last stable offset is cleaned (it bounds the first uncleanable
  offset), so every transaction the cleaner sees is decided;
- batches of aborted transactions (``PartitionLog.aborted_transactions`` of the range,
  judged per batch in C: native/txn.c) put no key in the map, whatever their keys (an
  aborted later value must never make the filter drop the committed value before it),
  and lose every record in the filter pass;
- control batches (the COMMIT and ABORT markers) are kept (see native/cleaner.c for why
  they are not dropped once their transaction is gone, as Kafka eventually does);
- a producer pass over the batch headers of the range finds each producer id's last data
  batch; for the producers the partition still tracks (not expired), the filter pass
  keeps it even when it loses every record, as a header without records (Kafka's empty
  batch: same offsets, sequence and epoch), so producer state can be rebuilt from the
  log; older empty batches of a producer go, and so do an expired producer's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from logkernel import _binding, errors
from logkernel._binding import NO_ABORTED, OFFSET_MAP_ENTRY_BYTES, AbortedList, OffsetMap, Segment
from logkernel.config import INT_MAX
from logkernel.log.checkpoint import CleanerCheckpoint, fsync_directory
from logkernel.log.partition import (
    CLEANED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    CleaningView,
    PartitionLog,
    SealedSegment,
    segment_name,
)
from logkernel.records import decompressed_batch, recompressed_record_set

log = logging.getLogger("logkernel.cleaner")

INT64_MAX = 2**63 - 1

# Memory of the producer pass's map (producer id -> last offset of its last batch), 24
# bytes a producer: room for ~40,000 producer ids in the range cleaned before it is
# redone with four times as much. Its table starts small and grows inside the buffer, and
# pages never touched cost nothing, so a log of few producers pays a few KiB.
PRODUCER_MAP_BYTES = 1024 * 1024


class AbortedTransaction(Protocol):
    """What the cleaner needs of an aborted transaction (the partition log's AbortedTxn):
    the producer's transactional batches with base offsets in [first_offset, last_offset]
    are aborted."""

    @property
    def producer_id(self) -> int: ...

    @property
    def first_offset(self) -> int: ...

    @property
    def last_offset(self) -> int: ...


# (start, end) -> the aborted transactions with records in [start, end): the partition
# log's aborted_transactions.
AbortedLookup = Callable[[int, int], Iterable[AbortedTransaction]]


class CleaningAborted(errors.LogkernelError):
    """The cleaning was stopped (engine closing, topic deleted); nothing was swapped in
    after the stop, and the partition is as consistent as after any finished swap."""

    def __init__(self) -> None:
        super().__init__("the cleaning was stopped: the engine is closing or the topic was "
                         "deleted; what was already swapped in stays")


class _SegmentsChanged(Exception):
    """A segment the cleaning planned to read is gone (retention, delete_records): the
    cleaning gives up quietly and the next one starts from the log as it is then."""


@dataclass(frozen=True)
class DirtyState:
    """How dirty a compacted partition is now (see the module docstring)."""

    first_dirty: int
    first_uncleanable: int
    clean_bytes: int
    dirty_bytes: int           # cleanable
    uncleanable_bytes: int     # dirty but not cleanable yet (active segment, lag)
    dirty_ratio: float
    due: str | None            # why it should be cleaned now, or None


@dataclass(frozen=True)
class CleanResult:
    """What one cleaning of one partition did."""

    topic: str
    partition: int
    started_ms: int
    seconds: float
    first_dirty_before: int
    first_dirty_after: int     # the map's end: the next cleaning's first dirty offset
    first_uncleanable: int
    map_full: bool             # the map filled: more passes are needed for the rest
    keys: int                  # distinct keys the map pass recorded
    bytes_read: int            # map pass + filter pass
    bytes_written: int
    records_read: int          # by the filter pass
    records_kept: int
    tombstones_dropped: int
    keyless_dropped: int
    segments_before: int       # segments the filter pass rewrote
    segments_after: int
    dirty_ratio_before: float
    aborted_dropped: int = 0   # records of aborted transactions removed
    empty_batches_kept: int = 0  # producers' last batches kept without records


@dataclass
class PartitionCleaning:
    """The cleaner's view of one compacted partition, for ``Engine.cleaner_stats()``."""

    topic: str
    partition: int
    state: DirtyState
    in_progress: bool
    last: CleanResult | None
    uncleanable: str | None    # why the cleaner gave up on it (until reopen or compact())


@dataclass
class CleanerStats:
    """The cleaner as a whole: settings, totals since open, and each compacted partition."""

    enabled: bool
    threads: int
    dedupe_buffer_bytes: int
    cleanings: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    seconds: float = 0.0
    partitions: list[PartitionCleaning] = field(default_factory=list)


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---- assessing -------------------------------------------------------------------------

def first_uncleanable(partition_log: PartitionLog, view: CleaningView, now_ms: int,
                      last_stable_offset: int) -> int:
    """The first of: the active segment's base, the base of the first dirty segment holding
    a record younger than min.compaction.lag.ms, and the last stable offset (nothing at or
    past it is decided: an open transaction's records may still be aborted)."""
    lag = view.config["min.compaction.lag.ms"]
    if lag > 0:
        for s in view.sealed:
            if s.end <= view.first_dirty:
                continue
            if s.base >= last_stable_offset:
                break
            _, largest = partition_log.segment_timestamps(s.base)
            if largest > now_ms - lag:
                return min(s.base, last_stable_offset)
    return min(view.active_base, last_stable_offset)


def assess(partition_log: PartitionLog, now_ms: int | None = None,
           view: CleaningView | None = None, *,
           last_stable_offset: int | None = None) -> DirtyState:
    """The partition's dirty ratio and whether it is due for cleaning. The last stable
    offset is the partition log's unless given (read it before ``view``: it only grows)."""
    now = _now_ms() if now_ms is None else now_ms
    if last_stable_offset is None:
        last_stable_offset = partition_log.last_stable_offset
    view = view or partition_log.cleaning_view()
    c = view.config
    limit = first_uncleanable(partition_log, view, now, last_stable_offset)
    clean = dirty = 0
    first_dirty_segment: SealedSegment | None = None
    for s in view.sealed:
        if s.end <= view.first_dirty:
            clean += s.size
        elif s.base < limit and view.first_dirty < limit:
            # (With the LSO inside a segment, first dirty may reach it there: then nothing
            # is cleanable until the transaction ends, and a "due" here would have the
            # cleaner threads pick this log again and again for nothing.)
            dirty += s.size
            if first_dirty_segment is None:
                first_dirty_segment = s
    total = partition_log.size_bytes()
    uncleanable = max(total - clean - dirty, 0)
    ratio = dirty / (clean + dirty) if clean + dirty else 0.0
    due: str | None = None
    if dirty and ratio >= c["min.cleanable.dirty.ratio"]:
        due = "dirty ratio"
    elif dirty and first_dirty_segment is not None and c["max.compaction.lag.ms"] < INT64_MAX:
        first_ts, _ = partition_log.segment_timestamps(first_dirty_segment.base)
        if 0 <= first_ts < now - c["max.compaction.lag.ms"]:
            due = "max.compaction.lag.ms"
    if due is None and 0 <= view.next_horizon_ms <= now and view.sealed:
        due = "delete horizon"
    return DirtyState(view.first_dirty, limit, clean, dirty, uncleanable, ratio, due)


# ---- cleaning one partition ------------------------------------------------------------

class _Reader:
    """Reads whole batches of one sealed segment through the cleaner's own read-only
    handle, so retention deleting the segment meanwhile cannot pull it from under us (an
    unlinked file stays readable through an open map)."""

    def __init__(self, segment: SealedSegment, chunk_bytes: int) -> None:
        stem = segment.path[:-len(LOG_SUFFIX)]
        self.segment = segment
        self.chunk = chunk_bytes
        try:
            self._seg = Segment(segment.path, stem + INDEX_SUFFIX, stem + TIME_INDEX_SUFFIX,
                                base_offset=segment.base, writable=False)
        except errors.StorageError as exc:
            if exc.errno == errno.ENOENT:
                raise _SegmentsChanged(segment.path) from exc
            raise

    def position_of(self, offset: int) -> int:
        """Where the batch holding ``offset`` (or the first after it) starts; the size
        when there is none."""
        if offset <= self.segment.base:
            return 0
        try:
            return self._seg.find_offset(offset)[0]
        except errors.OffsetOutOfRangeError:
            return self.segment.size

    def read(self, position: int) -> bytes:
        """At least one whole batch from ``position`` (more, up to the chunk size)."""
        data = self._seg.read(position, min(self.chunk, self.segment.size - position))
        if len(data) >= 12:
            size = int.from_bytes(data[8:12], "big", signed=True) + 12
            if size > len(data):
                data = self._seg.read(position, size)
        return data

    def producers(self, producers: OffsetMap, result: object) -> bool:
        """The producer pass over the whole segment, in place (batch headers only).
        False when ``producers`` filled up."""
        step = _binding.cleaner_producers(producers, self._seg, self.segment.size, result,
                                          context=f"walking the batches of {self.segment.path}")
        if step.stop == _binding.CLEAN_FULL:
            return False
        if step.position != self.segment.size:
            raise errors.CleanerError(f"{self.segment.path}: a batch is cut at byte "
                                      f"{step.position} of {self.segment.size}")
        return True

    def whole_batch(self, position: int) -> bytes:
        head = self._seg.read(position, 12)
        return self._seg.read(position, int.from_bytes(head[8:12], "big", signed=True) + 12)

    def close(self) -> None:
        self._seg.close()


def _groups(segments: list[SealedSegment], max_bytes: int, max_index_entries: int,
            index_interval: int) -> Iterator[tuple[SealedSegment, ...]]:
    """Consecutive segments whose sizes together fit one segment (Kafka's
    groupSegmentsBySize): at most segment.bytes of log, indexes that fit
    segment.index.bytes, and offsets within int32 of the group's base."""
    group: list[SealedSegment] = []
    size = 0
    for s in segments:
        if group and (size + s.size > max_bytes
                      or (size + s.size) // max(index_interval, 1) + len(group) + 1 > max_index_entries
                      or s.end - 1 - group[0].base > INT_MAX):
            yield tuple(group)
            group, size = [], 0
        group.append(s)
        size += s.size
    if group:
        yield tuple(group)


class _Pass:
    """Counters of one cleaning, the stop check, and the I/O throttle."""

    def __init__(self, should_stop: Callable[[], bool],
                 progress: Callable[[int, int], None] | None, total: int,
                 max_bytes_per_second: float = float("inf")) -> None:
        self.should_stop = should_stop
        self.progress = progress
        self.total = total
        self.read = 0
        self.written = 0
        self.rate = max_bytes_per_second
        self.began = time.monotonic()

    def advance(self, read: int) -> None:
        self.read += read
        if self.should_stop():
            raise CleaningAborted()
        if self.rate != float("inf"):  # log.cleaner.io.max.bytes.per.second
            ahead = (self.read + self.written) / self.rate - (time.monotonic() - self.began)
            if ahead > 0:
                time.sleep(ahead)
        if self.progress is not None:
            self.progress(self.read, max(self.total, self.read))


def _map_pass(view: CleaningView, limit: int, offset_map: OffsetMap, chunk: int,
              counters: _Pass, aborted: AbortedList = NO_ABORTED) -> tuple[int, bool]:
    """Records the latest offset of every key in [first dirty, limit), but for the records
    of the ``aborted`` transactions (which must never hide a committed value of their
    key). Returns (the first offset not recorded, whether the map filled before
    ``limit``)."""
    result = _binding.new_map_result()
    start = view.first_dirty
    context = f"building the cleaner's key map of {view.sealed[0].path if view.sealed else ''}"
    for s in view.sealed:
        if s.end <= start or s.size == 0:
            continue
        if s.base >= limit:
            break
        reader = _Reader(s, chunk)
        try:
            position = reader.position_of(start)
            while position < s.size:
                data = reader.read(position)
                step = _binding.cleaner_map(offset_map, data, start, limit, result,
                                            aborted=aborted, context=context)
                if step.stop == _binding.CLEAN_COMPRESSED:
                    at = position + step.position
                    batch = reader.whole_batch(at)
                    inner = _binding.cleaner_map(offset_map, decompressed_batch(batch), start,
                                                 limit, result, aborted=aborted,
                                                 context=context)
                    if inner.stop == _binding.CLEAN_FULL:
                        return inner.next_offset, True
                    if inner.stop == _binding.CLEAN_LIMIT:
                        return limit, False
                    counters.advance(at + len(batch) - position)
                    position = at + len(batch)
                    continue
                if step.stop == _binding.CLEAN_FULL:
                    return step.next_offset, True
                if step.stop == _binding.CLEAN_LIMIT:
                    return limit, False
                if step.position == 0:  # cannot happen with whole batches; never spin
                    raise errors.CleanerError(f"{s.path}: no whole batch at byte {position}")
                del data  # before the next read: one chunk in memory at a time
                counters.advance(step.position)
                position += step.position
        finally:
            reader.close()
    return limit, False


def _producer_pass(segments: list[SealedSegment], chunk: int) -> OffsetMap:
    """The last offset of every producer's last data batch in ``segments`` (the range
    about to be cleaned), for the filter pass to keep those batches. Batch headers only,
    read in place: O(batches)."""
    memory = PRODUCER_MAP_BYTES
    while True:
        producers = OffsetMap(memory)
        result = _binding.new_map_result()
        for s in segments:
            if s.size == 0:
                continue
            reader = _Reader(s, chunk)
            try:
                if not reader.producers(producers, result):
                    break
            finally:
                reader.close()
        else:
            return producers
        memory *= 4


def _live_only(producers: OffsetMap, live: list[int]) -> OffsetMap:
    """The producer pass's map cut to the producers the partition still tracks, as Kafka
    keeps only the last batch of active producers: an expired producer's last batch may go
    (else every producer session ever would leave a header per partition)."""
    kept = OffsetMap(max(OFFSET_MAP_ENTRY_BYTES * 2 * (len(live) + 1), 1024))
    kept.reset(len(live))
    for producer_id in live:
        key = producer_id.to_bytes(8, "big", signed=True)
        last = producers.get(key)
        if last >= 0:
            kept.put(key, last)
    return kept


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def _filter_segment(reader: _Reader, fd: int, offset_map: OffsetMap, now_ms: int,
                    horizon_ms: int, map_end: int, buffers: _binding.FilterBuffers,
                    result: object, counters: _Pass) -> None:
    s = reader.segment
    context = f"cleaning {s.path}"
    position = 0
    while position < s.size:
        data = reader.read(position)
        consumed, written, stop = _binding.cleaner_filter(offset_map, data, now_ms, horizon_ms,
                                                          buffers, result, map_end=map_end,
                                                          context=context)
        if written:
            _write_all(fd, memoryview(buffers.out)[:written])
            counters.written += written
        if stop == _binding.CLEAN_COMPRESSED:
            at = position + consumed
            batch = reader.whole_batch(at)
            plain = decompressed_batch(batch)
            _, kept, _ = _binding.cleaner_filter(offset_map, plain, now_ms, horizon_ms, buffers,
                                                 result, map_end=map_end, context=context)
            # A producer's last batch left without records stays a bare header, never
            # compressed (Kafka's empty batches are not).
            if kept and _binding.parse_header(buffers.out[:kept]).record_count:
                codec = _binding.parse_header(batch).compression
                out = recompressed_record_set(bytes(buffers.out[:kept]), codec)
                _write_all(fd, memoryview(out if out is not None else buffers.out[:kept]))
                counters.written += len(out) if out is not None else kept
            elif kept:
                _write_all(fd, memoryview(buffers.out)[:kept])
                counters.written += kept
            consumed = at + len(batch) - position
        elif consumed == 0 and stop != _binding.CLEAN_FULL:
            raise errors.CleanerError(f"{s.path}: no whole batch at byte {position}")
        del data  # before the next read: one chunk in memory at a time
        counters.advance(consumed)
        position += consumed


def _write_group(partition_log: PartitionLog, group: tuple[SealedSegment, ...],
                 offset_map: OffsetMap, now_ms: int, horizon_ms: int, map_end: int,
                 buffers: _binding.FilterBuffers, result: object, counters: _Pass,
                 chunk: int, aborted: AbortedList = NO_ABORTED,
                 producers: OffsetMap | None = None) -> int:
    """Writes the cleaned group to ``<base>.*.cleaned`` (fsynced, indexed); returns its
    size. Batches of the ``aborted`` transactions below ``map_end`` lose their records;
    with ``producers`` (the producer pass's map) each producer's last batch stays."""
    c = partition_log.config
    buffers.set_transactions(aborted, producers)
    stem = os.path.join(partition_log.directory, segment_name(group[0].base))
    log_path = stem + LOG_SUFFIX + CLEANED_SUFFIX
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        for s in group:
            reader = _Reader(s, chunk)
            try:
                _filter_segment(reader, fd, offset_map, now_ms, horizon_ms, map_end, buffers,
                                result, counters)
            finally:
                reader.close()
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    # The indexes come from the cleaned log itself; seal() trims and fsyncs all three.
    seg = Segment(log_path, stem + INDEX_SUFFIX + CLEANED_SUFFIX,
                  stem + TIME_INDEX_SUFFIX + CLEANED_SUFFIX, base_offset=group[0].base,
                  writable=True, reset_indexes=True, log_capacity=max(size, 4096),
                  index_capacity=c.segment_index_bytes, grow_step=max(size, 4096),
                  index_interval_bytes=c.index_interval_bytes)
    try:
        seg.rebuild_indexes()
        seg.seal()
    finally:
        seg.close()
    return size


def _remove_cleaned(partition_log: PartitionLog, base: int) -> None:
    stem = os.path.join(partition_log.directory, segment_name(base))
    for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stem + suffix + CLEANED_SUFFIX)


def remove_files(paths: list[str]) -> None:
    """Unlinks replaced segment files, then fsyncs their directory."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if paths:
        with contextlib.suppress(FileNotFoundError):
            fsync_directory(os.path.dirname(paths[0]))


class _Deleter:
    """Removes replaced segments on a thread of its own: unlinking a 1 GiB file takes tens
    of milliseconds that the cleaner need not wait for (Kafka defers it too)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __call__(self, paths: list[str]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="logkernel-deleter",
                                                daemon=True)
                self._thread.start()
        self._queue.put(paths)

    def _run(self) -> None:
        while (paths := self._queue.get()) is not None:
            try:
                remove_files(paths)
            except OSError as exc:  # open removes leftovers; only log
                log.warning("could not remove replaced segment files %s: %s", paths, exc)

    def drain(self) -> None:
        """Returns once everything queued is removed (and stops the thread)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()


def clean_partition(partition_log: PartitionLog, offset_map: OffsetMap,
                    buffers: _binding.FilterBuffers, *, now_ms: int | None = None,
                    chunk_bytes: int = 512 * 1024,
                    should_stop: Callable[[], bool] = lambda: False,
                    progress: Callable[[int, int], None] | None = None,
                    remove: Callable[[list[str]], None] = remove_files,
                    max_bytes_per_second: float = float("inf")) -> CleanResult | None:
    """One cleaning (one map pass) of the partition, whatever its dirty ratio; None if it
    has nothing to clean. Raises CleaningAborted if ``should_stop`` turns true, and
    CleanerError / CorruptRecordError / StorageError when it cannot go on; the log is
    then as it was before the group being written. Replaced files go to ``remove``.
    ``max_bytes_per_second`` caps bytes read plus written (Kafka's
    log.cleaner.io.max.bytes.per.second). Transactions: see ``clean_partition_with``,
    given the partition log's last stable offset (read first: it only grows, so every
    transaction below it is decided) and its aborted transactions."""
    return clean_partition_with(
        partition_log, offset_map, buffers, last_stable_offset=partition_log.last_stable_offset,
        aborted_transactions=partition_log.aborted_transactions, now_ms=now_ms,
        chunk_bytes=chunk_bytes, should_stop=should_stop, progress=progress, remove=remove,
        max_bytes_per_second=max_bytes_per_second)


def clean_partition_with(partition_log: PartitionLog, offset_map: OffsetMap,
                         buffers: _binding.FilterBuffers, *, last_stable_offset: int,
                         aborted_transactions: AbortedLookup, now_ms: int | None = None,
                         chunk_bytes: int = 512 * 1024,
                         should_stop: Callable[[], bool] = lambda: False,
                         progress: Callable[[int, int], None] | None = None,
                         remove: Callable[[list[str]], None] = remove_files,
                         max_bytes_per_second: float = float("inf")) -> CleanResult | None:
    """``clean_partition`` with the transaction state given, as Kafka's cleaner uses it:
    nothing at or past ``last_stable_offset`` is cleaned (it bounds the first uncleanable
    offset); batches of the transactions ``aborted_transactions(start, end)`` returns for
    a range lose every record and put no key in the map; markers stay; and each producer
    id's last data batch in the range cleaned stays, as a header without records if it
    loses them all. The lookup must list every aborted transaction with records in the
    range asked for (it is asked for the map pass's range, then for each group's)."""
    now = _now_ms() if now_ms is None else now_ms
    started = time.perf_counter()
    view = partition_log.cleaning_view()
    state = assess(partition_log, now, view, last_stable_offset=last_stable_offset)
    limit = state.first_uncleanable
    horizon_due = 0 <= view.next_horizon_ms <= now
    if not view.sealed or (view.first_dirty >= limit and not horizon_due):
        return None
    below = sum(s.size for s in view.sealed if s.base < limit)
    counters = _Pass(should_stop, progress, state.dirty_bytes + below, max_bytes_per_second)
    try:
        return _clean(partition_log, offset_map, buffers, now, started, view, state, chunk_bytes,
                      counters, remove, aborted_transactions)
    except _SegmentsChanged as exc:
        log.info("%s: %s went away during cleaning (retention or delete_records); cleaning "
                 "again later", partition_log.name, exc)
        return None


def _clean(partition_log: PartitionLog, offset_map: OffsetMap,
           buffers: _binding.FilterBuffers, now: int, started: float, view: CleaningView,
           state: DirtyState, chunk_bytes: int, counters: _Pass,
           remove: Callable[[list[str]], None],
           aborted_transactions: AbortedLookup) -> CleanResult | None:
    try:
        return _clean_groups(partition_log, offset_map, buffers, now, started, view, state,
                             chunk_bytes, counters, remove, aborted_transactions)
    finally:
        buffers.set_transactions()  # let go of this cleaning's producer map


def _clean_groups(partition_log: PartitionLog, offset_map: OffsetMap,
                  buffers: _binding.FilterBuffers, now: int, started: float,
                  view: CleaningView, state: DirtyState, chunk_bytes: int, counters: _Pass,
                  remove: Callable[[list[str]], None],
                  aborted_transactions: AbortedLookup) -> CleanResult | None:
    limit = state.first_uncleanable
    c = view.config
    end, full = view.first_dirty, False  # with nothing dirty: only expired tombstones to drop
    offset_map.reset(0)  # never filter with keys of an earlier cleaning (or another log)
    if view.first_dirty < limit:
        aborted = AbortedList(aborted_transactions(view.first_dirty, limit))
        # The map's table starts small and grows, so few keys stay in cache. Growing
        # needs room beside the table, so it stops at about half the buffer; if the map
        # fills there, the pass starts again with the whole buffer (reading that part of
        # the dirty section twice) rather than cleaning in more passes than needed.
        end, full = _map_pass(view, limit, offset_map, chunk_bytes, counters, aborted)
        if full and not offset_map.whole:
            offset_map.reset(None)
            end, full = _map_pass(view, limit, offset_map, chunk_bytes, counters, aborted)
    keys = offset_map.entries
    map_end = max(end, view.first_dirty)

    horizon_ms = min(now + c["delete.retention.ms"], INT64_MAX)
    result = _binding.new_clean_result()
    to_clean = [s for s in view.sealed if s.base < map_end]
    producers = _live_only(_producer_pass(to_clean, chunk_bytes),
                           [e.producer_id for e in partition_log.producer_states()])
    before = len(to_clean)
    after = 0
    max_index_entries = c.segment_index_bytes // 12
    for group in _groups(to_clean, c.segment_bytes, max_index_entries, c.index_interval_bytes):
        group_end = min(group[-1].end, map_end)
        group_aborted = AbortedList(aborted_transactions(group[0].base, group_end))
        try:
            _write_group(partition_log, group, offset_map, now, horizon_ms, map_end, buffers,
                         result, counters, chunk_bytes, group_aborted, producers)
            replaced = partition_log.replace_segments(group)
        except BaseException:
            _remove_cleaned(partition_log, group[0].base)
            raise
        if replaced is None:  # retention or delete_records changed the log meanwhile
            _remove_cleaned(partition_log, group[0].base)
            log.info("%s: segments changed during cleaning; cleaning again later",
                     partition_log.name)
            return None
        remove(replaced)
        after += 1

    next_horizon = int(result.next_horizon_ms)
    partition_log.set_cleaner_checkpoint(CleanerCheckpoint(
        map_end, next_horizon if next_horizon != INT64_MAX else -1))
    outcome = CleanResult(
        partition_log.topic, partition_log.partition, now, time.perf_counter() - started,
        view.first_dirty, map_end, limit, full, keys, counters.read,
        counters.written, int(result.records_read), int(result.records_kept),
        int(result.tombstones_dropped), int(result.keyless_dropped), before, after,
        state.dirty_ratio, int(result.aborted_dropped), int(result.empty_batches_kept))
    log.info("%s: cleaned %d segments into %d: %d of %d records kept (%d aborted dropped), "
             "%d keys, %.1f MB read in %.2f s%s", partition_log.name, before, after,
             outcome.records_kept, outcome.records_read, outcome.aborted_dropped, keys,
             outcome.bytes_read / 1e6, outcome.seconds,
             "; the key map filled, more passes follow" if full else "")
    return outcome


# ---- the cleaner threads ---------------------------------------------------------------

def map_memory(dedupe_buffer_bytes: int, threads: int, io_buffer_bytes: int) -> int:
    """Bytes of one thread's key map: its share of log.cleaner.dedupe.buffer.size less three
    log.cleaner.io.buffer.size (the read chunk, the write buffer, and the scratch and
    Python objects around them), so a thread's memory stays within its share (measured
    by bench/bench_cleaner.py). A share too small to give up four times that (a test's
    tiny buffer) all goes to the map, and the I/O buffers come on top, as in Kafka."""
    share = dedupe_buffer_bytes // threads
    io = 3 * io_buffer_bytes
    return share - io if share >= 4 * io else share


class LogCleaner:
    """Background cleaning of every compacted partition the engine holds.

    ``logs`` returns the engine's partition logs at call time. Each of ``threads`` threads
    owns an OffsetMap of its share of ``dedupe_buffer_bytes`` less its I/O buffers
    (``map_memory``; allocated when the thread starts, and pages it never touches cost no
    memory) and cleans one partition at a time; a
    partition is never cleaned by two threads, nor by a thread and ``clean_now``."""

    def __init__(self, logs: Callable[[], Iterable[PartitionLog]], *, enabled: bool,
                 threads: int, backoff_ms: int, dedupe_buffer_bytes: int, io_buffer_bytes: int,
                 load_factor: float, max_bytes_per_second: float = float("inf")) -> None:
        self._logs = logs
        self.enabled = enabled
        self.threads = threads
        self.backoff_s = backoff_ms / 1000
        self.dedupe_buffer_bytes = dedupe_buffer_bytes
        self.map_bytes = map_memory(dedupe_buffer_bytes, threads, io_buffer_bytes)
        self.io_buffer_bytes = io_buffer_bytes
        self.load_factor = load_factor
        self.max_bytes_per_second = max_bytes_per_second
        if self.map_bytes < 1024:
            raise errors.ConfigError(
                f"log.cleaner.dedupe.buffer.size={dedupe_buffer_bytes} split over "
                f"log.cleaner.threads={threads} leaves {self.map_bytes} bytes for a thread's key "
                "map; each needs at least 1024. Raise log.cleaner.dedupe.buffer.size.")
        self._lock = threading.Condition(threading.Lock())
        self._busy: set[PartitionLog] = set()
        self._aborting: set[PartitionLog] = set()
        self._uncleanable: dict[PartitionLog, str] = {}
        # Partitions whose last cleaning met a full disk: monotonic time of the next try.
        # Unlike the uncleanable, they come back by themselves once there is room.
        self._no_space: dict[PartitionLog, float] = {}
        self._last: dict[tuple[str, int], CleanResult] = {}
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stats = CleanerStats(enabled, threads, dedupe_buffer_bytes)
        self._deleter = _Deleter()

    # ---- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._threads:
            return
        for i in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"logkernel-cleaner-{i}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stops the threads; a cleaning in progress is abandoned at its next chunk (its
        output so far is deleted; swaps already done stay)."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self._deleter.drain()

    def wake(self) -> None:
        """Look for work now (e.g. after a config change)."""
        self._wake.set()

    @contextlib.contextmanager
    def paused(self, logs: Iterable[PartitionLog]) -> Iterator[None]:
        """Aborts any cleaning of ``logs`` and keeps the cleaner off them inside the block
        (topic deletion, close)."""
        wanted = set(logs)
        with self._lock:
            self._aborting |= wanted
            while self._busy & wanted:
                self._lock.wait()
            self._busy |= wanted
        self._deleter.drain()  # no unlink of theirs may race the caller (rmtree)
        try:
            yield
        finally:
            with self._lock:
                self._busy -= wanted
                self._aborting -= wanted
                for gone in wanted:
                    self._uncleanable.pop(gone, None)
                    self._no_space.pop(gone, None)
                self._lock.notify_all()

    # ---- cleaning ------------------------------------------------------------------

    def _acquire(self, partition_log: PartitionLog, wait: bool) -> bool:
        with self._lock:
            while partition_log in self._busy:
                if not wait:
                    return False
                self._lock.wait()
            self._busy.add(partition_log)
            return True

    def _release(self, partition_log: PartitionLog) -> None:
        with self._lock:
            self._busy.discard(partition_log)
            self._lock.notify_all()

    def _should_stop(self, partition_log: PartitionLog) -> Callable[[], bool]:
        return lambda: self._stopping.is_set() or partition_log in self._aborting

    def _record(self, result: CleanResult) -> None:
        with self._lock:
            self._last[(result.topic, result.partition)] = result
            s = self._stats
            s.cleanings += 1
            s.bytes_read += result.bytes_read
            s.bytes_written += result.bytes_written
            s.records_read += result.records_read
            s.records_kept += result.records_kept
            s.seconds += result.seconds

    def _pick(self, now_ms: int) -> PartitionLog | None:
        best: tuple[int, float, PartitionLog] | None = None
        for partition_log in self._logs():
            if not partition_log.config.compacts:
                continue
            with self._lock:
                if partition_log in self._busy or partition_log in self._uncleanable:
                    continue
                if self._no_space.get(partition_log, 0.0) > time.monotonic():
                    continue
            try:
                state = assess(partition_log, now_ms)
            except errors.ClosedError:
                continue
            if state.due is None:
                continue
            # A forced cleaning (lag, horizon) goes before the dirtiest log, as in Kafka.
            rank = (0 if state.due == "dirty ratio" else 1, state.dirty_ratio, partition_log)
            if best is None or rank[:2] > best[:2]:
                best = rank
        return best[2] if best is not None else None

    def _run(self) -> None:
        offset_map = OffsetMap(self.map_bytes, self.load_factor)
        buffers = _binding.FilterBuffers(self.io_buffer_bytes)
        while not self._stopping.is_set():
            partition_log = self._pick(_now_ms())
            if partition_log is None or not self._acquire(partition_log, wait=False):
                self._wake.wait(self.backoff_s)
                self._wake.clear()
                continue
            try:
                result = clean_partition(partition_log, offset_map, buffers,
                                         chunk_bytes=self.io_buffer_bytes,
                                         should_stop=self._should_stop(partition_log),
                                         remove=self._deleter,
                                         max_bytes_per_second=self.max_bytes_per_second)
                if result is not None:
                    self._record(result)
                with self._lock:
                    if self._no_space.pop(partition_log, None) is not None:
                        log.info("%s: the log cleaner found room again and cleaned it",
                                 partition_log.name)
            except (CleaningAborted, errors.ClosedError):
                pass
            except Exception as exc:  # one partition's trouble must not stop the others'
                if _no_space(exc):
                    # A full disk is not the partition's fault, and deleting or retention
                    # frees space without a restart: try again after the backoff (the
                    # failed output was removed), with one warning per episode.
                    with self._lock:
                        first = partition_log not in self._no_space
                        self._no_space[partition_log] = time.monotonic() + self.backoff_s
                    if first:
                        log.warning("%s: the log cleaner found the disk full and will try "
                                    "again every log.cleaner.backoff.ms until there is room: "
                                    "%s", partition_log.name, exc)
                    continue
                known = isinstance(exc, (errors.LogkernelError, OSError))
                log.error("%s: the log cleaner cannot clean this partition and skips it until "
                          "the engine is reopened or compact() is called: %s",
                          partition_log.name, exc, exc_info=not known)
                with self._lock:
                    self._uncleanable[partition_log] = f"{type(exc).__name__}: {exc}"
            finally:
                self._release(partition_log)

    def clean_now(self, partition_log: PartitionLog, *,
                  progress: Callable[[int, int], None] | None = None,
                  offset_map: OffsetMap | None = None) -> list[CleanResult]:
        """Cleans the partition now, whatever its dirty ratio, in as many passes as the
        map needs, until nothing below the first uncleanable offset is dirty. Waits for a
        background cleaning of it to finish first. Raises what cleaning raises."""
        offset_map = offset_map or OffsetMap(self.map_bytes, self.load_factor)
        buffers = _binding.FilterBuffers(self.io_buffer_bytes)
        results: list[CleanResult] = []
        self._acquire(partition_log, wait=True)
        try:
            with self._lock:
                self._uncleanable.pop(partition_log, None)
            while True:
                try:
                    result = clean_partition(partition_log, offset_map, buffers,
                                             chunk_bytes=self.io_buffer_bytes,
                                             should_stop=self._should_stop(partition_log),
                                             progress=progress, remove=self._deleter,
                                             max_bytes_per_second=self.max_bytes_per_second)
                except (errors.LogkernelError, OSError) as exc:
                    if not isinstance(exc, (errors.ClosedError, CleaningAborted)):
                        with self._lock:
                            self._uncleanable[partition_log] = str(exc)
                    raise
                if result is None:
                    break
                self._record(result)
                results.append(result)
                if not result.map_full:
                    break
        finally:
            self._release(partition_log)
        return results

    # ---- observing -----------------------------------------------------------------

    def stats(self, logs: Iterable[PartitionLog] | None = None) -> CleanerStats:
        now = _now_ms()
        with self._lock:
            s = self._stats
            out = CleanerStats(s.enabled, s.threads, s.dedupe_buffer_bytes, s.cleanings,
                               s.bytes_read, s.bytes_written, s.records_read, s.records_kept,
                               s.seconds)
            busy = set(self._busy)
            uncleanable = dict(self._uncleanable)
            last = dict(self._last)
        for partition_log in (self._logs() if logs is None else logs):
            if not partition_log.config.compacts:
                continue
            try:
                state = assess(partition_log, now)
            except errors.ClosedError:
                continue
            out.partitions.append(PartitionCleaning(
                partition_log.topic, partition_log.partition, state, partition_log in busy,
                last.get((partition_log.topic, partition_log.partition)),
                uncleanable.get(partition_log)))
        return out


def _no_space(exc: BaseException) -> bool:
    """A failure because the file system is full (or the user's quota used up)."""
    return isinstance(exc, errors.NoSpaceError) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))
