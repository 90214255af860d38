"""The partition log: one partition's directory of segments, and the one home of its
offsets (log start, log end, high watermark, recovery point).

Files in ``<topic>-<partition>/``::

    00000000000000000000.log        RecordBatch v2, Kafka's bytes
    00000000000000000000.index      sparse offset index (Kafka's layout)
    00000000000000000000.timeindex  sparse time index (Kafka's layout)
    00000000000000005120.log ...    the next segment, named by its base offset
    00000000000000000000.txnindex   aborted transactions whose ABORT marker is in this
                                    segment (Kafka's layout; producer_state.py)
    00000000000000005120.snapshot   producer state as of offset 5120 (Kafka's layout),
                                    written at roll and close; the newest two are kept
    partition.checkpoint            recovery point and log start offset (checkpoint.py)
    cleaner.checkpoint              compacted topics: the cleaner's progress (cleaner.py)
    *.cleaned, *.swap, *.deleted    compacted topics, for moments: a cleaning's swap
                                    (replace_segments); open completes or undoes it

Offsets, in the order they must always keep (``check()`` asserts them)::

    first segment's base <= log_start_offset <= recovery_point* <= high_watermark == log_end_offset
    last_stable_offset <= high_watermark (the first offset of the earliest open transaction)

    (* the recovery point may lag behind the log start offset after delete_records; it
       only says which bytes were fsynced, and every segment below it was.)

Invariants a crash must not break:

1. Segment base offsets are strictly increasing, and every offset in a segment is below
   the next segment's base. Only the last segment (the active one) is written to; the
   cleaner replaces sealed segments whole, with segments holding a subset of their
   records at the same offsets (offsets never move; compacted segments have gaps).
2. Every byte below the recovery point was fsynced, and so was every segment before the
   active one (a segment is sealed, which flushes it, when the log rolls past it).
3. The checkpoint never claims more than is durable: the recovery point written is one
   that a flush reached, and a stale checkpoint only makes the next open re-validate more.
4. The log start offset only moves forward. It is checkpointed before the segments below
   it are deleted, and open takes max(checkpoint, first segment's base), so a crash
   between the two never brings deleted offsets back to readers. (On a full disk the
   checkpoint cannot be written first, and deleting is what frees the space: the segments
   go first, oldest first, then the checkpoint. A crash in between may bring back records
   from the first remaining segment's base to the new start; it never loses any.)

A full disk (NoSpaceError) refuses an append whole: nothing is written and the offsets do
not move, whichever file refused (the .log's growth, an index page, a rolled segment's new
files). What only saves the next open time (checkpoints, producer snapshots) is skipped
with a warning and written later.

Opening after an unclean shutdown re-validates every segment holding offsets at or past
the recovery point (CRC and structure of every batch), truncates at the first invalid
byte, deletes any segment after a truncated one, rebuilds indexes, and logs what it
dropped. After a clean shutdown (the engine's marker file) only the active segment is
opened; older segments are opened on first use, so opening thousands is cheap.

Thread safety: one lock serialises appends, reads (which copy bytes out of the maps) and
every change to the segment list. fsync happens under that lock too, so appends wait for
a flush in progress and the next flush covers all of them: that is the group commit.

This is a single-replica log: the high watermark equals the log end offset, because no
follower has to acknowledge a record before consumers may read it.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from logkernel import _binding, compression, errors
from logkernel._binding import NULL, Segment
from logkernel.config import LONG_MAX, TopicConfig
from logkernel.log import producer_state
from logkernel.log.checkpoint import (
    CHECKPOINT_FILE,
    CleanerCheckpoint,
    PartitionCheckpoint,
    fsync_directory,
    read_cleaner_checkpoint,
    read_partition_checkpoint,
    write_cleaner_checkpoint,
    write_partition_checkpoint,
)
from logkernel.log.producer_state import AbortedTxn, Duplicate, ProducerStateManager
from logkernel.records import (
    batch_sizes,
    decode_batch,
    decompressed_batch,
    recompressed_record_set,
    stamp_log_append_time,
)

log = logging.getLogger("logkernel.log")

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
SEGMENT_SUFFIXES = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX)  # the log last: see swap
# The log cleaner's files (log/cleaner.py): a cleaned group of segments is written to
# ``<base>.log.cleaned`` (and its indexes), renamed to ``.swap`` (the commit point is the
# .log's rename), the segments it replaces renamed to ``.deleted``, the swap renamed to
# the live names, and the ``.deleted`` files removed, with directory fsyncs between.
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETED_SUFFIX = ".deleted"
# Files a crash can leave behind once open has completed any committed swap: half-written
# checkpoints, cleaner output never committed, replaced segments not yet removed.
LEFTOVER_SUFFIXES = (".tmp", CLEANED_SUFFIX, SWAP_SUFFIX, DELETED_SUFFIX)

# Largest bytes one record adds to its batch beyond key, value and headers: the 61-byte
# batch header plus Kafka's MAX_RECORD_OVERHEAD (21). Used to decide, without encoding,
# whether a record could exceed max.message.bytes or overflow the active segment.
RECORD_BATCH_OVERHEAD = 61 + 21 + 5

# The partition leader epoch stamped on batches appended here. One replica, never a
# leader change: epoch 0, as a freshly created Kafka partition has.
LEADER_EPOCH = 0

# Bytes read at a time when producer state is rebuilt from the log.
REPLAY_CHUNK_BYTES = 1024 * 1024

# The .log file grows in steps of this many bytes (fallocate): big enough that a stream of
# small appends rarely reaches the file system, small enough not to waste disk on many
# nearly empty partitions.
GROW_STEP = 8 * 1024 * 1024

ATTRIBUTE_LOG_APPEND_TIME = 0x08


# What a read needs from a batch header before the batch itself is in hand.
_BASE_OFFSET = struct.Struct(">q")   # baseOffset at byte 0
_LAST_DELTA = struct.Struct(">i")    # lastOffsetDelta at byte 23
_PRODUCER_ID = struct.Struct(">q")   # producerId at byte 43
_LENGTH = struct.Struct(">i")        # batchLength at byte 8
_MAX_TIMESTAMP = struct.Struct(">q")  # maxTimestamp at byte 35
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")  # the whole 61-byte header, in field order
# batchLength @8, attributes @21, lastOffsetDelta @23, producerId @43
_PLAIN_CHECK = struct.Struct(">8xi9xhi16xq")
_TRANSACTIONAL = 0x10               # attribute bit 4
_TRANSACTIONAL_OR_CONTROL = 0x30    # attribute bits 4 and 5
_COMPRESSION_BITS = 0x07            # attribute bits 0-2
_RECORD_COUNT = struct.Struct(">i")  # at byte 57 of a batch
_ATTRIBUTES = struct.Struct(">h")    # at byte 21
_HEADER_BYTES = 61                   # a batch's header, before its records section
# The most a produced batch may decompress to. Producers' batches are a few MB at most
# (batch.size: 16 KiB in Kafka's Java client, 1 MB in librdkafka); a bound keeps a
# compression bomb of a few KB from taking hundreds of MB in the broker.
PRODUCE_MAX_DECOMPRESSED = 64 * 1024 * 1024


def _batch_size(header: bytes | memoryview) -> int:
    return _LENGTH.unpack_from(header, 8)[0] + 12


def _varint_size(value: int) -> int:
    """Bytes of a zig-zag varint (Kafka's record fields)."""
    n = (value << 1) ^ (value >> 63)
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def single_record_batch_size(key_len: int, value_len: int, headers_len: int,
                             headers_count: int) -> int:
    """Exact bytes of a batch holding one record (offset and timestamp deltas 0)."""
    body = (3 + _varint_size(key_len) + max(key_len, 0) + _varint_size(value_len)
            + max(value_len, 0) + _varint_size(headers_count) + headers_len)
    return 61 + _varint_size(body) + body


def _producer_batches(view: memoryview) -> list[tuple[_binding.BatchHeader, int]] | None:
    """The batches of a validated record set that carry a producer id (or claim to be
    transactional or control), each with its offset from the set's first offset; None
    when there are none (plain producers: the common case)."""
    out = None
    position = 0
    delta = 0
    while position < len(view):
        # The set is validated: plain producers' batches cost one small unpack (length,
        # attributes, lastOffsetDelta, producerId); only the others are read whole.
        length, attributes, last_delta, producer_id = _PLAIN_CHECK.unpack_from(view, position)
        if producer_id >= 0 or attributes & _TRANSACTIONAL_OR_CONTROL:
            if out is None:
                out = []
            out.append((_binding.BatchHeader._make(_BATCH_HEADER.unpack_from(view, position)),
                        delta))
        delta += last_delta + 1
        position += length + 12
    return out


def validate_produced(view: memoryview) -> None:
    """Checks a producer's record set as Kafka's broker does before storing it: whole
    batches, each with a right CRC, and every record of each parsed, inside compressed
    batches too (decompressed for it). Raises CorruptRecordError naming the batch. The CRC
    alone is not enough: a batch whose records do not parse (a client bug, or hostile
    bytes with the CRC fixed after the damage) would be stored, and every reader of the
    partition would then fail at its offset. The record walk costs a few percent of the
    CRC pass; decompressing is what Kafka pays for compressed batches too."""
    _binding.validate_record_set(view, _binding.VALIDATE_CRC | _binding.VALIDATE_RECORDS)
    position = 0
    while position < len(view):
        length, attributes, _, _ = _PLAIN_CHECK.unpack_from(view, position)
        size = length + 12
        if attributes & _COMPRESSION_BITS and _RECORD_COUNT.unpack_from(view, position + 57)[0]:
            try:
                _validate_compressed_records(view[position:position + size])
            except errors.CorruptRecordError as exc:
                raise exc.in_record_set(position) from exc
        position += size


def _validate_compressed_records(batch: memoryview) -> None:
    """Walks the records of a compressed batch (CRC already checked). The records section
    is decompressed up to PRODUCE_MAX_DECOMPRESSED and put behind a copy of the header
    with the compression bits cleared (one copy: the validator's CRC check is off, so the
    CRC need not be recomputed): a small hostile batch cannot make the broker hold more
    than about twice the cap."""
    attributes = _ATTRIBUTES.unpack_from(batch, 21)[0]
    try:
        records = compression.decompress(attributes & _COMPRESSION_BITS,
                                         batch[_HEADER_BYTES:], PRODUCE_MAX_DECOMPRESSED)
    except errors.CorruptRecordError as exc:
        if "larger than" in exc.reason:
            raise errors.RecordTooLargeError(
                f"a compressed batch decompresses to more than {PRODUCE_MAX_DECOMPRESSED} "
                "bytes, the most a produced batch may hold; nothing was written. Send "
                "smaller batches (batch.size, linger.ms)") from None
        raise
    plain = bytearray(_HEADER_BYTES + len(records))
    plain[:_HEADER_BYTES] = batch[:_HEADER_BYTES]
    plain[_HEADER_BYTES:] = records
    del records
    _LENGTH.pack_into(plain, 8, len(plain) - 12)
    _ATTRIBUTES.pack_into(plain, 21, attributes & ~_COMPRESSION_BITS)
    _binding.validate_batch(plain, _binding.VALIDATE_RECORDS)


def _whole_batches_in(view: memoryview) -> Iterator[memoryview]:
    """The whole batches at the start of ``view``, in order, by their length fields (a
    read cut inside its last batch ends before it)."""
    position = 0
    while position + 12 <= len(view):
        size = _batch_size(view[position:position + 12])
        if size < 12 or position + size > len(view):
            return
        yield view[position:position + size]
        position += size


def _control_of(batch: memoryview) -> tuple[int, int]:
    """(control type, coordinator epoch) of a control batch; (-1, -1) if unreadable."""
    try:
        marker = decode_batch(bytes(batch)).control_record()
    except (errors.CorruptRecordError, ValueError):
        return -1, -1
    return marker.control_type, marker.coordinator_epoch


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class AppendNotifier:
    """Wakes consumers blocked in poll, and the broker's waiting fetches, when any partition
    gets data.

    ``waiting`` is read without the lock on every append; a waiter increments it (holding
    ``condition``) before it checks for data, so an append either sees the waiter or the
    waiter sees the append. ``listeners`` are called on every notify from the appending
    thread; they must be quick and thread-safe (the broker's schedules a wake-up on its
    event loop)."""

    def __init__(self) -> None:
        self.condition = threading.Condition(threading.Lock())
        self.waiting = 0
        self.listeners: list[Callable[[], None]] = []

    def notify(self) -> None:
        with self.condition:
            self.condition.notify_all()
        for listener in self.listeners:
            listener()


class _DurableFiles:
    """Descriptors of the active segment's three files, so a flush can fdatasync them
    without holding the partition's lock: appends go on during the fsync and the next
    flush takes all of them at once (group commit). fdatasync on any descriptor of a file
    writes back its dirty pages, including those written through the segment's shared
    map. Closed when the last flusher using them lets go (reference counting)."""

    __slots__ = ("fds", "synced_entries")

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.synced_entries = (-1, -1)
        self.fds: list[int] = []
        try:
            for path in paths:
                self.fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except BaseException:
            self.close()
            raise

    def sync(self, index_entries: tuple[int, int]) -> None:
        """fdatasync of the log, then of the indexes that gained entries since the last
        sync (an fdatasync of an unchanged file still costs ~0.07 ms here)."""
        os.fdatasync(self.fds[0])  # the log first: an index entry never outlives its batch
        if index_entries != self.synced_entries:
            for fd in self.fds[1:]:
                os.fdatasync(fd)
            self.synced_entries = index_entries

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


@dataclass(frozen=True)
class RecoveryReport:
    """What opening the log had to repair (empty lists after a clean shutdown)."""

    truncated: tuple[str, ...] = ()       # one sentence per segment cut short
    deleted: tuple[str, ...] = ()         # segment files removed because an earlier one was cut
    rebuilt_indexes: tuple[str, ...] = ()  # segments whose indexes were rebuilt

    @property
    def clean(self) -> bool:
        return not (self.truncated or self.deleted or self.rebuilt_indexes)


@dataclass(frozen=True)
class SealedSegment:
    """A segment below the active one, as the cleaner sees it: every offset in it is in
    [base, end), and its .log holds ``size`` bytes."""

    base: int
    end: int
    size: int
    path: str


@dataclass(frozen=True)
class CleaningView:
    """What the cleaner needs of a log, read at one moment under its lock."""

    log_start_offset: int
    first_dirty: int          # offsets below this were cleaned (clamped to the log start)
    next_horizon_ms: int      # earliest delete horizon of a kept tombstone, -1: none
    active_base: int          # the cleaner never reads at or past this
    sealed: tuple[SealedSegment, ...]
    config: TopicConfig


class PartitionLog:
    """One partition's log. See the module docstring for files, offsets and invariants."""

    def __init__(self, directory: str, topic: str, partition: int, config: TopicConfig, *,
                 clean_shutdown: bool = False, notifier: AppendNotifier | None = None) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.name = f"{topic}-{partition}"
        self._config = config
        self._notifier = notifier or AppendNotifier()
        self._lock = threading.Lock()
        self._flush_condition = threading.Condition(threading.Lock())
        self._flushing = False
        self._closed = False
        self._bases: list[int] = []
        self._segments: dict[int, Segment] = {}   # open handles, by base offset
        self._sealed_sizes: dict[int, int] = {}  # sizes of every segment but the active one
        self._active: Segment
        self._active_files: _DurableFiles | None = None
        self._appender: Callable[..., int]
        self._active_size = 0
        self._active_first_timestamp = -1       # first batch's timestamp, for segment.ms
        self._next_offset = 0
        self._log_start_offset = 0
        self._recovery_point = 0
        self._reported_damage: set[tuple[int, int]] = set()  # (offset, position) logged by servable
        self._checkpointed: PartitionCheckpoint | None = None
        self._unflushed_messages = 0
        self._first_unflushed_ms = -1
        self._producers = ProducerStateManager(directory, self.name)
        self._first_unstable = -1  # first offset of the earliest open transaction, or -1
        # Aborted transactions whose .txnindex entry a full disk refused, with the base of
        # the segment whose index they belong in: written at the next marker, roll or
        # close. Readers already see them (they are in the producer state).
        self._unindexed_aborts: list[tuple[int, AbortedTxn]] = []
        self._checkpoint_failing = False  # the last checkpoint write met a full disk
        os.makedirs(directory, exist_ok=True)
        self._cleaner_checkpoint = read_cleaner_checkpoint(directory)
        self.recovery = self._open(clean_shutdown)
        self._load_producer_state()

    # ---- offsets -------------------------------------------------------------------

    @property
    def config(self) -> TopicConfig:
        return self._config

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._next_offset

    @property
    def high_watermark(self) -> int:
        """Offsets below this are readable. One replica: the log end offset."""
        return self._next_offset

    @property
    def last_stable_offset(self) -> int:
        """Offsets below this are decided: no open transaction has records there. The
        first offset of the earliest open transaction, or the high watermark."""
        first = self._first_unstable
        # Kafka's updateFirstUnstableOffset: never below the log start (retention or
        # delete_records may remove the start of an open transaction).
        return max(first, self._log_start_offset) if first >= 0 else self._next_offset

    @property
    def recovery_point(self) -> int:
        """Every offset below this has been fsynced."""
        return self._recovery_point

    @property
    def segment_count(self) -> int:
        return len(self._bases)

    def size_bytes(self) -> int:
        with self._lock:
            return sum(self._sealed_sizes.values()) + self._active_size

    # ---- opening and recovery ------------------------------------------------------

    def _paths(self, base_offset: int) -> tuple[str, str, str]:
        stem = os.path.join(self.directory, segment_name(base_offset))
        return stem + LOG_SUFFIX, stem + INDEX_SUFFIX, stem + TIME_INDEX_SUFFIX

    def _open_segment(self, base_offset: int, *, writable: bool, reset_indexes: bool = False) -> Segment:
        log_path, index_path, time_index_path = self._paths(base_offset)
        if not writable:
            return Segment(log_path, index_path, time_index_path, base_offset=base_offset,
                           writable=False)
        c = self._config
        # Room for segment.bytes plus one maximum batch: a batch that starts below
        # segment.bytes always fits, so the roll rule alone decides where segments end.
        capacity = c.segment_bytes + max(c.max_message_bytes, 0) + RECORD_BATCH_OVERHEAD
        return Segment(log_path, index_path, time_index_path, base_offset=base_offset,
                       writable=True, reset_indexes=reset_indexes, log_capacity=capacity,
                       index_capacity=c.segment_index_bytes,
                       grow_step=min(GROW_STEP, capacity),
                       index_interval_bytes=c.index_interval_bytes)

    def _open(self, clean_shutdown: bool) -> RecoveryReport:
        names = os.listdir(self.directory)
        if any(name.endswith(LOG_SUFFIX + SWAP_SUFFIX) for name in names):
            self._complete_swaps(names)
            names = os.listdir(self.directory)
        for name in names:
            if name.endswith(LEFTOVER_SUFFIXES):
                log.warning("%s: removing leftover file %s from an interrupted operation",
                            self.name, name)
                os.unlink(os.path.join(self.directory, name))
        bases = sorted(int(n[:20]) for n in names
                       if n.endswith(LOG_SUFFIX) and len(n) == 24 and n[:20].isdigit())
        present = set(names)
        base_set = set(bases)
        for name in names:  # indexes without their log cannot be used for anything
            if (name.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX)) and name[:20].isdigit()
                    and int(name[:20]) not in base_set):
                os.unlink(os.path.join(self.directory, name))

        checkpoint, why = read_partition_checkpoint(self.directory)
        if checkpoint is None and bases and why != "no checkpoint file":
            log.warning("%s: %s; recovering every segment", self.name, why)
        if not bases:
            start = checkpoint.log_start_offset if checkpoint else 0
            self._bases = [start]
            self._set_active(self._open_segment(start, writable=True))
            self._next_offset = self._log_start_offset = self._recovery_point = start
            self._active_first_timestamp = -1
            self._checkpoint_or_warn()
            return RecoveryReport()

        if checkpoint is not None and checkpoint.recovery_point >= bases[0]:
            recovery_point = checkpoint.recovery_point
        else:
            recovery_point = bases[0]
        must_recover_from = LONG_MAX if clean_shutdown and checkpoint is not None else recovery_point
        truncated: list[str] = []
        deleted: list[str] = []
        rebuilt: list[str] = []

        kept = list(bases)
        for i, base in enumerate(bases):
            last = i == len(bases) - 1
            next_base = LONG_MAX if last else bases[i + 1]
            log_path, index_path, time_index_path = self._paths(base)
            indexes_missing = (os.path.basename(index_path) not in present
                               or os.path.basename(time_index_path) not in present)
            recover = next_base > must_recover_from
            # A kill inside a roll (after the new segment's files were made, before this
            # one was sealed) leaves the segment before the last untrimmed: zeros after its
            # batches. Opened writable, the C core finds its end past the last index entry,
            # and the seal below trims it: one short read and an fsync, on unclean opens.
            unsealed = not clean_shutdown and i == len(bases) - 2
            if not (last or recover or indexes_missing or unsealed):
                self._sealed_sizes[base] = os.stat(log_path).st_size
                continue
            try:
                seg = self._open_segment(base, writable=True, reset_indexes=indexes_missing)
            except errors.IndexCorruptError as exc:
                log.warning("%s: %s; rebuilding its indexes", self.name, exc)
                seg = self._open_segment(base, writable=True, reset_indexes=True)
                indexes_missing = True
            if seg.info().needs_recovery:
                recover = True
            if recover:
                before = seg.info().size
                result = seg.recover(_binding.VALIDATE_CRC | _binding.SCAN_DENSE
                                     if self._never_compacted() else _binding.VALIDATE_CRC)
                if result.valid_bytes < before:
                    sentence = (f"{log_path}: kept {result.valid_bytes} bytes (offsets {base}.."
                                f"{result.next_offset - 1}), dropped {before - result.valid_bytes} "
                                f"bytes from position {result.valid_bytes} (offset "
                                f"{result.next_offset}): {result.stop_reason}"
                                f"{': ' + result.stop_detail if result.stop_detail else ''}")
                    log.warning("%s: recovery truncated %s", self.name, sentence)
                    truncated.append(sentence)
                if not last and (result.valid_bytes < before or result.next_offset > next_base):
                    # A hole in the middle of the log: what follows cannot be trusted to
                    # continue it (Kafka deletes it too).
                    for later in bases[i + 1:]:
                        self._delete_segment_files(later)
                        deleted.append(self._paths(later)[0])
                        log.warning("%s: deleted %s after the truncation before it", self.name,
                                    self._paths(later)[0])
                    fsync_directory(self.directory)
                    kept = bases[:i + 1]
                    last = True
            elif indexes_missing:
                seg.rebuild_indexes()
                rebuilt.append(log_path)
                log.warning("%s: rebuilt the indexes of %s", self.name, log_path)
            if last:
                self._set_active(seg)
                break
            seg.seal()
            self._sealed_sizes[base] = seg.info().size
            seg.close()

        self._bases = kept
        info = self._active.info()
        self._active_size = info.size
        self._next_offset = info.next_offset
        self._active_first_timestamp = self._first_timestamp(self._active, info.size)
        start = max(checkpoint.log_start_offset if checkpoint else 0, kept[0])
        self._log_start_offset = min(start, self._next_offset)
        if checkpoint is not None and checkpoint.recovery_point > self._next_offset:
            # Offsets the checkpoint says were fsynced are gone (cut on a batch boundary:
            # nothing torn for recovery to see). Say so: the records are lost.
            sentence = (f"the log ends at offset {self._next_offset}, but its checkpoint says "
                        f"every offset below {checkpoint.recovery_point} was fsynced: offsets "
                        f"{self._next_offset}..{checkpoint.recovery_point - 1} are lost (a "
                        "segment file was cut or replaced outside logkernel, or the disk lost "
                        "fsynced data)")
            log.error("%s: %s", self.name, sentence)
            truncated.append(sentence)
            recovery_point = self._next_offset
        if must_recover_from == LONG_MAX:
            self._recovery_point = min(recovery_point, self._next_offset)
        else:
            # Everything that survived recovery is durable (recovered segments were sealed,
            # and _set_active flushed the last one) before the recovery point claims it.
            self._recovery_point = self._next_offset
        self._checkpoint_or_warn()  # on a full disk: the background task writes it later
        return RecoveryReport(tuple(truncated), tuple(deleted), tuple(rebuilt))

    def _complete_swaps(self, names: list[str]) -> None:
        """Finishes cleanings that a crash interrupted after their commit point (a
        ``<base>.log.swap`` exists, fsynced, with its directory entry fsynced): deletes the
        live segments whose offsets it covers, then gives the swap files their live names.
        Output never committed (``.cleaned``, an index ``.swap`` without its log) is
        removed afterwards with the other leftovers."""
        for base in sorted(int(n[:20]) for n in names
                           if n.endswith(LOG_SUFFIX + SWAP_SUFFIX) and n[:20].isdigit()):
            stem = os.path.join(self.directory, segment_name(base))
            swap = Segment(stem + LOG_SUFFIX + SWAP_SUFFIX, None, None, base_offset=base,
                           writable=False)
            try:
                end = max(swap.info().next_offset, base + 1)
            finally:
                swap.close()
            for name in names:
                if (name.endswith(LOG_SUFFIX) and len(name) == 24 and name[:20].isdigit()
                        and base <= int(name[:20]) < end):
                    for path in self._paths(int(name[:20])):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)
            for suffix in SEGMENT_SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(stem + suffix + SWAP_SUFFIX, stem + suffix)
            log.warning("%s: completed the swap of cleaned segment %s (offsets %d..%d) that "
                        "a crash interrupted", self.name, segment_name(base), base, end - 1)
        fsync_directory(self.directory)

    def _set_active(self, seg: Segment, files: _DurableFiles | None = None) -> None:
        """Makes ``seg`` the active segment. Flushes it once through the C core, which
        also fsyncs the directory if the files are new, so later flushes need only the
        files' own fdatasync. ``files``: its _DurableFiles, if the caller opened them
        already (a roll does, before it seals the old segment). Everything that can fail
        happens before anything is assigned."""
        base = seg.info().base_offset
        if files is None:
            seg.flush()
            files = _DurableFiles(self._paths(base))
        self._active = seg
        self._appender = seg.record_appender()  # replaced with the segment, never outlives it
        self._segments[base] = seg
        self._active_files = files

    @staticmethod
    def _first_timestamp(seg: Segment, size: int) -> int:
        if size < _binding.BATCH_HEADER_SIZE:
            return -1
        return _MAX_TIMESTAMP.unpack_from(seg.read(35, 8))[0]

    # ---- segments ------------------------------------------------------------------

    def _segment_at(self, i: int) -> Segment:
        base = self._bases[i]
        seg = self._segments.get(base)
        if seg is None:
            seg = self._open_segment(base, writable=False)
            self._segments[base] = seg
        return seg

    def _segment_size(self, i: int) -> int:
        if i == len(self._bases) - 1:
            return self._active_size
        return self._sealed_sizes[self._bases[i]]

    def _roll_locked(self) -> None:
        """Seals the active segment (trim + fsync) and starts a new one at the log end.

        The new segment's files are created (and their directory fsynced) before the old
        segment is sealed: when the file system refuses them (no inode, no room in the
        directory, no descriptor) nothing has changed, the old segment stays active and
        writable, and the append that asked for the roll fails with NoSpaceError (or
        StorageError) and can simply be retried. Kafka's producer snapshot at the roll is
        skipped on a full disk (see _write_producer_snapshot)."""
        old = self._active
        old_base = self._bases[-1]
        if self._active_size == 0 and old_base == self._next_offset:
            return  # already an empty active segment
        new_base = self._next_offset
        new = self._open_segment(new_base, writable=True)
        files = None
        try:
            new.flush()  # fsyncs the directory that holds its new files
            files = _DurableFiles(self._paths(new_base))
            self._index_pending_aborts(sync_active=False)  # fsynced with the segment next
            self._seal_txn_index(old_base)
            old.seal()
        except BaseException:
            if files is not None:
                files.close()
            new.close()
            for path in self._paths(new_base):  # created empty just now: nothing to keep
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            raise
        self._sealed_sizes[old_base] = self._active_size
        # Kafka's rule: producer state is snapshotted at every roll, so recovery replays at
        # most the active segment.
        self._write_producer_snapshot(new_base)
        self._set_active(new, files)
        self._bases.append(new_base)
        self._active_size = 0
        self._active_first_timestamp = -1
        # Sealing flushed the old segment, and every one before it was sealed too.
        self._recovery_point = max(self._recovery_point, new_base)
        self._unflushed_messages = 0
        self._first_unflushed_ms = -1

    def roll(self) -> None:
        """Starts a new active segment now (no-op if the active one is empty)."""
        with self._lock:
            self._live()
            self._roll_locked()

    def _write_producer_snapshot(self, offset: int) -> None:
        """Snapshots the producer state as of ``offset`` (the log end), at a roll, a close or
        an open that replayed more than the active segment. Optional, so a full disk skips
        it with a warning: the next open replays from an older snapshot (or the log start)
        instead, which takes longer and rebuilds the same state. Also skipped while an
        abort's .txnindex entry is unwritten: a snapshot past its marker would stop the
        next open from replaying the marker, and the entry would be lost for good."""
        if not self._index_pending_aborts(sync_active=True):
            log.warning("%s: no producer snapshot at offset %d while an aborted transaction's "
                        "index entry waits for disk space", self.name, offset)
            return
        try:
            self._producers.write_snapshot(offset)
        except errors.NoSpaceError as exc:
            log.warning("%s: no producer snapshot at offset %d: %s. The next open replays "
                        "the log from the previous snapshot instead.", self.name, offset,
                        exc.strerror)

    def _live(self) -> None:
        if self._closed:
            raise errors.ClosedError(f"partition log {self.name} is closed")

    def _delete_segment_files(self, base: int) -> None:
        seg = self._segments.pop(base, None)
        if seg is not None:
            seg.close()
        self._sealed_sizes.pop(base, None)
        for path in (*self._paths(base), self._txn_index_path(base)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _seal_txn_index(self, base: int) -> None:
        """fsyncs a segment's aborted-transactions index as the segment is sealed."""
        try:
            fd = os.open(self._txn_index_path(base), os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- producer state at open ----------------------------------------------------

    def _load_producer_state(self) -> None:
        """Aborted transactions from the .txnindex files, producer state from the newest
        snapshot, then the batches after it replayed (Kafka's loadProducerState). After a
        clean shutdown the snapshot is at the log end and nothing is replayed."""
        names = os.listdir(self.directory)
        bases = set(self._bases)
        stray: list[AbortedTxn] = []
        stray_paths: list[str] = []
        for name in names:
            if not (name.endswith(producer_state.TXN_INDEX_SUFFIX) and name[:20].isdigit()):
                continue
            path = os.path.join(self.directory, name)
            entries = producer_state.read_txn_index(path)
            if int(name[:20]) in bases:
                kept = [a for a in entries if a.last_offset < self._next_offset]
                if len(kept) < len(entries):  # recovery cut the log below their markers
                    producer_state.cut_txn_index(path, entries, kept)
                for aborted in kept:
                    self._producers.add_aborted(aborted)
            else:  # its segment was merged by the cleaner or truncated away
                stray += entries
                stray_paths.append(path)
        for aborted in stray:
            if (self._bases[0] <= aborted.last_offset < self._next_offset
                    and self._producers.add_aborted(aborted)):
                self._index_aborted(aborted)
        if self._index_pending_aborts(sync_active=True):  # else a full disk: keep them
            for path in stray_paths:
                os.unlink(path)
        indexed = {a.last_offset for a in self._producers.aborted}
        replay_from, found = self._rebuild_producer_state(names)
        for aborted in found:
            if aborted.last_offset not in indexed:  # its marker was not fsynced with it
                self._index_aborted(aborted)
        self._index_pending_aborts(sync_active=True)
        if replay_from < self._bases[-1]:
            # More than the active segment was scanned (no snapshot at its roll, e.g. a
            # log older than snapshots): save the next open that scan.
            self._write_producer_snapshot(self._next_offset)

    def _rebuild_producer_state(self, names: list[str] | None = None
                                ) -> tuple[int, list[AbortedTxn]]:
        """Producer state as of the log end: the newest snapshot at or below it (those past
        it are deleted), then the batches after it replayed. Returns where the replay
        started and the aborted transactions whose markers it met."""
        start = self._producers.load_snapshot(self._next_offset, names)
        replay_from = max(start, self._bases[0]) if start >= 0 else self._bases[0]
        found = self._replay(replay_from)
        self._producer_state_changed()
        return replay_from, found

    def _index_aborted(self, aborted: AbortedTxn) -> None:
        """Queues the .txnindex entry of an aborted transaction found at open, in the
        segment holding its marker (written by _index_pending_aborts)."""
        i = bisect.bisect_right(self._bases, aborted.last_offset) - 1
        self._unindexed_aborts.append((self._bases[max(i, 0)], aborted))

    def _replay(self, from_offset: int) -> list[AbortedTxn]:
        """Replays every producer batch from ``from_offset`` to the log end into the
        producer state: batch headers only, read a chunk at a time. Returns the aborted
        transactions whose markers it met."""
        found: list[AbortedTxn] = []
        if from_offset >= self._next_offset:
            return found
        first = max(bisect.bisect_right(self._bases, from_offset) - 1, 0)
        for i in range(first, len(self._bases)):
            seg = self._segment_at(i)
            end = self._segment_size(i)
            position = 0
            if from_offset > self._bases[i]:
                try:
                    position, _ = seg.find_offset(from_offset)
                except errors.OffsetOutOfRangeError:
                    continue
            while position + _binding.BATCH_HEADER_SIZE <= end:
                view = memoryview(seg.read(position, min(end - position, REPLAY_CHUNK_BYTES)))
                if _batch_size(view[:12]) > len(view):  # one batch bigger than a chunk
                    view = memoryview(seg.read(position, _batch_size(view[:12])))
                before = position
                for batch in _whole_batches_in(view):
                    position += len(batch)
                    if len(batch) >= _binding.BATCH_HEADER_SIZE and \
                            _PRODUCER_ID.unpack_from(batch, 43)[0] < 0:
                        continue  # plain producers' batches (most logs): two reads each
                    header = _binding.parse_header(batch)  # a damaged length raises here
                    if header.producer_id >= 0 and header.last_offset >= from_offset:
                        control_type, coordinator_epoch = -1, -1
                        if header.is_control:
                            control_type, coordinator_epoch = _control_of(batch)
                        aborted = self._producers.replay(header, header.base_offset, control_type,
                                                         coordinator_epoch)
                        if aborted is not None:
                            found.append(aborted)
                if position == before:
                    break  # no whole batch here (recovery keeps only whole ones: never)
        return found

    # ---- appending -----------------------------------------------------------------

    def append_record(self, key: bytes | None, value: bytes | None, timestamp: int,
                      headers: bytes | None = None, headers_count: int = 0, *,
                      producer: tuple[int, int, int] | None = None,
                      transactional: bool = False) -> tuple[int, int]:
        """Appends one record as its own batch; returns (offset, timestamp stored).

        ``headers`` is the encoded headers section (``_binding.encode_headers``). O(record
        size): the batch is encoded straight into the segment's map. Durable on return only
        when flush.messages says so (then it returns after fsync, sharing it with
        concurrent appenders). ``producer``: (producer id, epoch, sequence) of an idempotent
        producer, checked against the producer state as ``append`` checks batches (a
        retry answers with the offset it got), ``transactional`` for its transactions."""
        key_len = -1 if key is None else len(key)
        value_len = -1 if value is None else len(value)
        headers_len = 0 if headers is None else len(headers)
        upper = key_len + value_len + headers_len + RECORD_BATCH_OVERHEAD
        with self._lock:
            if self._closed:
                self._live()
            c = self._config
            if key is None and c.compacts:
                raise errors.InvalidRecordError(
                    f"topic {self.topic!r} is compacted (cleanup.policy={c.cleanup_policy}), "
                    "so every record needs a key; this one has none and was not written")
            attributes = 0
            if c.log_append_time:
                timestamp = _now_ms()
                attributes = ATTRIBUTE_LOG_APPEND_TIME
            header = None
            if producer is not None:
                if transactional:
                    attributes |= _TRANSACTIONAL
                header = _binding.BatchHeader(0, 0, LEADER_EPOCH, 2, 0, attributes, 0, timestamp,
                                              timestamp, *producer, 1)
                duplicate = self._producers.check([header])
                if duplicate is not None:
                    return duplicate.first_offset, duplicate.timestamp
            if upper > c.max_message_bytes:
                size = single_record_batch_size(key_len, value_len, headers_len, headers_count)
                if size > c.max_message_bytes:
                    raise errors.RecordTooLargeError(
                        f"a record batch of {size} bytes exceeds max.message.bytes="
                        f"{c.max_message_bytes} of topic {self.topic!r}; nothing was written. "
                        "Send smaller records, or raise max.message.bytes with "
                        "alter_topic_config.")
            size = self._active_size
            if size and (size + upper > c.segment_bytes
                         or timestamp - self._active_first_timestamp > c.segment_ms):
                self._roll_locked()
                size = 0
            offset = self._next_offset
            if header is not None:
                end = self._append_record_slowly(offset, timestamp, attributes, key, value,
                                                 headers, headers_count, producer)
                self._producers.apply(header, offset)
                self._producer_state_changed()
            else:
                try:
                    end = self._appender(offset, timestamp, attributes, LEADER_EPOCH,
                                         NULL if key is None else key, key_len,
                                         NULL if value is None else value, value_len,
                                         NULL if headers is None else headers, headers_count,
                                         headers_len)
                except TypeError:
                    end = -1  # not bytes: append_record converts bytes-likes or explains
                if end < 0:
                    end = self._append_record_slowly(offset, timestamp, attributes, key, value,
                                                     headers, headers_count)
            if not size:
                self._active_first_timestamp = timestamp
            self._active_size = end
            self._next_offset = offset + 1
            self._unflushed_messages += 1
            sync = self._unflushed_messages >= c.flush_messages
            if self._first_unflushed_ms < 0 and c.flush_ms != LONG_MAX:
                self._first_unflushed_ms = _now_ms()
        if self._notifier.waiting:
            self._notifier.notify()
        if sync:
            self._sync_to(offset + 1)
        return offset, timestamp

    def _append_record_slowly(self, offset: int, timestamp: int, attributes: int,
                              key: bytes | None, value: bytes | None, headers: bytes | None,
                              headers_count: int,
                              producer: tuple[int, int, int] | None = None) -> int:
        """The checked path, for what the fast call refused (and for producer records): it
        raises the exception that says why, or rolls a full segment and appends to the new
        one."""
        try:
            return self._active.append_record(offset, timestamp, attributes, LEADER_EPOCH, key,
                                              value, headers, headers_count, producer)
        except errors.SegmentFullError:
            self._roll_locked()
            end = self._active.append_record(offset, timestamp, attributes, LEADER_EPOCH, key,
                                             value, headers, headers_count, producer)
            self._active_first_timestamp = timestamp
            return end

    def append(self, record_set: bytes | bytearray | memoryview, *, validated: bool = False,
               max_timestamp: int = -1, sync: bool = True,
               coordinator: bool = False) -> tuple[int, int, int]:
        """Appends a record set (whole batches, as a producer sends them; base offsets are
        assigned here) and returns (first offset, next offset, log append time or -1 when
        the topic keeps CreateTime). ``max_timestamp``, if the caller knows it, saves reading
        it back for the segment.ms rule. Every batch's CRC and
        structure are checked first unless ``validated``. Each batch must fit
        max.message.bytes. O(bytes). Durability as for ``append_record``; with
        ``sync=False`` an fsync that flush.messages calls for is left to the caller, who must
        call ``flush_to(next offset)`` before acknowledging when ``sync_due`` (the broker
        does that on a worker thread, so its event loop never waits for a disk).

        Batches with a producer id are checked against the producer state first (see
        producer_state.py): a retried batch is answered with its original offsets and not
        written; a refused one raises and nothing of the set is written. ``coordinator``
        marks a coordinator's own transactional writes (offsets committed in a
        transaction), which carry no sequence numbers and skip those checks, as in Kafka."""
        view = memoryview(record_set).cast("B")
        if not validated:
            validate_produced(view)
        if self._config.compacts:
            self._require_keys(view)
        producer_batches = _producer_batches(view)
        codec = compression.topic_codec(self._config.compression_type)
        if codec is not None:  # the topic names a codec: store batches in it, as Kafka does
            converted = recompressed_record_set(view, codec)
            if converted is not None:
                view = memoryview(converted)
        with self._lock:
            self._live()
            c = self._config
            sizes = batch_sizes(view)
            largest = max(sizes)
            if largest > c.max_message_bytes:
                raise errors.RecordTooLargeError(
                    f"a record batch of {largest} bytes exceeds max.message.bytes="
                    f"{c.max_message_bytes} of topic {self.topic!r}; nothing was written")
            if producer_batches and not coordinator:
                duplicate = self._producers.check([h for h, _ in producer_batches])
                if duplicate is not None:
                    if len(sizes) > 1:  # Kafka's produce carries one batch: cannot happen there
                        raise errors.InvalidRecordError(
                            f"a record set for {self.name} holds a retried batch (offsets "
                            f"{duplicate.first_offset}..{duplicate.last_offset}) beside other "
                            "batches; nothing was written. Send each producer batch alone.")
                    return self._answer_duplicate(duplicate)
            append_time = -1
            if c.log_append_time:
                append_time = _now_ms()
                view = memoryview(stamp_log_append_time(view, append_time))
            first, next_offset = self._append_locked(view, max_timestamp)
            if producer_batches:
                for header, delta in producer_batches:
                    self._producers.apply(header, first + delta)
                self._producer_state_changed()
            self._next_offset = next_offset
            due = self._count_unflushed(next_offset - first)
        if self._notifier.waiting:
            self._notifier.notify()
        if due and sync:
            self._sync_to(next_offset)
        return first, next_offset, append_time

    def _append_locked(self, view: memoryview, max_timestamp: int) -> tuple[int, int]:
        """Writes whole batches at the log end, rolling first if the segment is full or
        old; returns (first offset, next offset). The caller moves ``_next_offset``."""
        c = self._config
        first_timestamp = max_timestamp if max_timestamp >= 0 else -1
        if self._active_size and (self._active_size + len(view) > c.segment_bytes or (
                first_timestamp >= 0
                and first_timestamp - self._active_first_timestamp > c.segment_ms)):
            self._roll_locked()
        first = self._next_offset
        try:
            position, next_offset = self._active.append(view, first, validated=True)
        except errors.SegmentFullError:
            if not self._active_size:
                raise
            self._roll_locked()
            position, next_offset = self._active.append(view, first, validated=True)
        if not self._active_size:
            self._active_first_timestamp = (first_timestamp if first_timestamp >= 0 else
                                            self._first_timestamp(self._active, len(view)))
        self._active_size = position + len(view)
        return first, next_offset

    def _count_unflushed(self, records: int) -> bool:
        """Counts appended records for flush.messages / flush.ms; True if an fsync is due."""
        c = self._config
        self._unflushed_messages += records
        if self._first_unflushed_ms < 0 and c.flush_ms != LONG_MAX:
            self._first_unflushed_ms = _now_ms()
        return self._unflushed_messages >= c.flush_messages

    def _answer_duplicate(self, duplicate: Duplicate) -> tuple[int, int, int]:
        log.info("%s: a retried batch (offsets %d..%d) was already written; answered with "
                 "its offsets", self.name, duplicate.first_offset, duplicate.last_offset)
        append_time = duplicate.timestamp if self._config.log_append_time else -1
        return duplicate.first_offset, duplicate.last_offset + 1, append_time

    def _producer_state_changed(self) -> None:
        """Publishes the first unstable offset. Called before ``_next_offset`` moves, so a
        reader without the lock never sees new transactional records as stable."""
        first = self._producers.first_unstable_offset()
        self._first_unstable = -1 if first is None else first

    # ---- transactions --------------------------------------------------------------

    def append_marker(self, producer_id: int, producer_epoch: int, commit: bool,
                      coordinator_epoch: int = 0) -> int:
        """Writes a COMMIT or ABORT marker (a control batch) closing the producer's open
        transaction here, and indexes an abort. Returns the marker's offset. Only the
        transaction coordinator calls this. Durability as for ``append``."""
        timestamp = _now_ms()
        batch = _binding.encode_control_batch(
            producer_state.CONTROL_COMMIT if commit else producer_state.CONTROL_ABORT,
            coordinator_epoch, timestamp, partition_leader_epoch=LEADER_EPOCH,
            producer_id=producer_id, producer_epoch=producer_epoch)
        with self._lock:
            self._live()
            self._producers.check_marker(producer_id, producer_epoch, coordinator_epoch)
            offset, next_offset = self._append_locked(memoryview(batch), timestamp)
            aborted = self._producers.apply_marker(producer_id, producer_epoch, coordinator_epoch,
                                                   commit, offset, timestamp, next_offset)
            if aborted is not None:
                self._unindexed_aborts.append((self._bases[-1], aborted))
            self._producer_state_changed()
            self._next_offset = next_offset
            due = self._count_unflushed(1)
            # After the marker is accounted for: a full disk refusing the index entry
            # must not leave the log end behind the marker it already holds.
            self._index_pending_aborts(sync_active=False)
        if self._notifier.waiting:
            self._notifier.notify()
        if due:
            self._sync_to(next_offset)
        return offset

    def open_transactions(self) -> dict[int, int]:
        """Producer id -> first offset of its open transaction here."""
        with self._lock:
            return dict(self._producers.ongoing)

    def producer_states(self) -> list[producer_state.ProducerEntry]:
        """A copy of every producer's state here (DescribeProducers)."""
        with self._lock:
            return [producer_state.ProducerEntry(
                e.producer_id, e.epoch, type(e.batches)(e.batches, maxlen=e.batches.maxlen),
                e.coordinator_epoch, e.current_txn_first_offset, e.last_timestamp)
                for e in self._producers.producers.values()]

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        """Aborted transactions with records in [start_offset, end_offset)."""
        with self._lock:
            return self._producers.aborted_between(start_offset, end_offset)

    def read_committed(self, offset: int, max_bytes: int) -> tuple[bytes, int, list[AbortedTxn]]:
        """``read`` for isolation_level=read_committed: whole batches below the last stable
        offset only, the LSO, and the aborted transactions with records in what was read
        (Kafka's FetchResponse AbortedTransactions). Raises as ``read`` does."""
        with self._lock:
            lso = self.last_stable_offset
            if offset >= lso:
                if offset < self._log_start_offset or offset > self._next_offset:
                    self._read_locked(offset, 0)  # raises OffsetOutOfRangeError
                return b"", lso, []
            data = self._read_locked(offset, max_bytes)
            # Whole batches below the LSO (it is always a batch's base offset); a last batch
            # cut by max_bytes stays, the reader stops inside it.
            view = memoryview(data)
            cut = 0
            while cut + 12 <= len(view) and _BASE_OFFSET.unpack_from(view, cut)[0] < lso:
                cut += _batch_size(view[cut:cut + 12])
            if cut < len(data):
                data = data[:cut]
            aborted = self._producers.aborted_between(offset, lso) if data else []
            return data, lso, aborted

    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Drops producers idle past producer.id.expiration.ms (none with an open
        transaction). Returns how many."""
        with self._lock:
            if self._closed:
                return 0
            return len(self._producers.expire(now_ms, expiration_ms))

    def _txn_index_path(self, base: int) -> str:
        return producer_state.txn_index_path(self.directory, base)

    def _index_pending_aborts(self, *, sync_active: bool) -> bool:
        """Appends the aborted transactions waiting for their .txnindex entry (normally
        just the one an ABORT marker closed a moment ago); True when none is left waiting.
        An entry for a segment other than the active one is fsynced at once (its segment
        was sealed without it), and so is the active one's with ``sync_active`` (a
        snapshot is about to be written past it). A full disk leaves the rest waiting,
        with a warning; readers are not affected (the producer state holds them), and the
        next open would rebuild them from their markers, as no snapshot is written past
        them."""
        while self._unindexed_aborts:
            base, aborted = self._unindexed_aborts[0]
            if base in self._segments or base in self._sealed_sizes:
                try:
                    producer_state.append_txn_index(
                        self._txn_index_path(base), aborted,
                        sync=sync_active or base != self._bases[-1])
                except errors.NoSpaceError as exc:
                    log.warning("%s: the index entry of the transaction aborted at offset %d "
                                "waits for disk space: %s", self.name, aborted.last_offset,
                                exc.strerror)
                    return False
            self._unindexed_aborts.pop(0)  # or its segment is gone: nothing to index
        return True

    # ---- durability ----------------------------------------------------------------

    def _sync_to(self, target: int) -> None:
        """Returns once every offset below ``target`` is fsynced. Callers that arrive while a
        flush is running wait for it, then one of them flushes for everyone who appended
        meanwhile: group commit."""
        with self._flush_condition:
            while self._recovery_point < target:
                if not self._flushing:
                    self._flushing = True
                    break
                self._flush_condition.wait()
            else:
                return
        reached = -1
        try:
            # Let the threads the previous flush just released append first (they are
            # runnable, waiting for the GIL): then this fsync covers them too. Measured with
            # 8 threads: 4.5 -> 6+ records per fsync.
            time.sleep(0)
            with self._lock:
                self._live()
                reached = self._next_offset
                files = self._active_files
                info = self._active.info()
                self._unflushed_messages = 0
                self._first_unflushed_ms = -1
            # Outside the lock: appends continue while this fsync runs. If the log rolls
            # meanwhile, sealing flushed the old segment, so syncing its files is redundant
            # but harmless; `files` keeps them open until this returns.
            assert files is not None
            files.sync((info.index_entries, info.time_index_entries))
        finally:
            with self._flush_condition:
                self._flushing = False
                if reached > self._recovery_point:
                    self._recovery_point = reached
                self._flush_condition.notify_all()

    def flush(self) -> None:
        """fsyncs everything appended so far; returns when it is durable."""
        self._sync_to(self._next_offset)

    @property
    def sync_due(self) -> bool:
        """flush.messages records are unflushed: the next acknowledgement needs an fsync."""
        return self._unflushed_messages >= self._config.flush_messages

    def flush_to(self, offset: int) -> None:
        """Returns once every record below ``offset`` is fsynced (group commit: concurrent
        callers share one fsync)."""
        self._sync_to(offset)

    def flush_if_due(self, now_ms: int) -> bool:
        """Flushes if the oldest unflushed append is older than flush.ms (background task)."""
        first = self._first_unflushed_ms
        if first < 0 or now_ms - first < self._config.flush_ms:
            return False
        self._sync_to(self._next_offset)
        return True

    def checkpoint(self) -> None:
        """Writes the recovery point and log start offset if they changed (a full disk:
        a warning, and the next call tries again)."""
        with self._lock:
            if not self._closed:
                self._checkpoint_or_warn()

    def _write_checkpoint(self) -> None:
        current = PartitionCheckpoint(self._recovery_point, self._log_start_offset)
        if current != self._checkpointed:
            write_partition_checkpoint(self.directory, current)
            self._checkpointed = current

    def _checkpoint_or_warn(self) -> bool:
        """``_write_checkpoint`` where a stale checkpoint is safe (invariant 3: it only
        makes the next open re-validate more): a full disk is a warning, once per spell of
        failures, and False. The background checkpoint task retries it."""
        try:
            self._write_checkpoint()
        except errors.NoSpaceError as exc:
            if not self._checkpoint_failing:
                log.warning("%s: cannot write its checkpoint: %s. Retrying in the background; "
                            "until then a crash makes the next open re-validate more of the "
                            "log.", self.name, exc.strerror)
            self._checkpoint_failing = True
            return False
        if self._checkpoint_failing:
            log.info("%s: checkpoint written again", self.name)
            self._checkpoint_failing = False
        return True

    # ---- reading -------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> bytes:
        """A copy of the batches from the one holding ``offset``: at most ``max_bytes``
        (cut at a batch boundary or inside the last batch; the decoder stops there), but
        always the whole first batch, however large (as Kafka's fetch does, so a consumer
        never stalls on a batch bigger than its limit). Empty at the log end, and in a
        gap compaction left at the end of the log (no batch at or after ``offset``).

        O(log segments + log index entries) to find the start, plus O(bytes) copied.
        Raises OffsetOutOfRangeError below the log start offset or past the log end."""
        return self.read_from(offset, max_bytes)[0]

    def _never_compacted(self) -> bool:
        """No cleaning ever ran here (the topic does not compact, and has no cleaner
        checkpoint from a time it did): offsets are dense, every batch starts where the
        one before it ended, so a gap is damage, not compaction."""
        return not self._config.compacts and self._cleaner_checkpoint.first_dirty == 0

    def servable(self, data: bytes, offset: int) -> bytes:
        """What may be sent to a remote reader of ``data``, read from this log at
        ``offset``: the batches before the first whose framing or CRC is bad (a last batch
        cut by the byte limit is fine: clients stop there). Raises CorruptRecordError when
        the first batch is bad. Damage below the recovery point (bit rot, a zeroed page)
        is not re-validated at open, and librdkafka does not check CRCs by default, so the
        broker checks what it sends: a CRC pass over bytes it just copied, tens of GB/s.
        Logs each damaged place once; ``logkernel verify --repair`` cuts the log there."""
        scan = _binding.scan_log(data)
        if scan.stop_reason in ("end", "torn"):
            return data
        where = (offset, scan.valid_bytes)
        if where not in self._reported_damage:
            self._reported_damage.add(where)
            log.error("%s: a batch read from offset %d is damaged (%s%s); it is not served. "
                      "Run `logkernel verify` on the data directory; `--repair` cuts the log "
                      "before it", self.name, max(offset, scan.next_offset), scan.stop_reason,
                      f": {scan.stop_detail}" if scan.stop_detail else "")
        if scan.valid_bytes:
            return data[:scan.valid_bytes]
        raise errors.CorruptRecordError(
            f"the batch of {self.name} holding offset {offset} is damaged on disk "
            f"({scan.stop_reason}); run `logkernel verify` on the data directory", 0)

    def read_from(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """``read``, and the log end offset at that moment: when the bytes are empty, no
        record exists in [offset, that end), so a reader may move its position there."""
        with self._lock:
            return self._read_locked(offset, max_bytes), self._next_offset

    def _read_locked(self, offset: int, max_bytes: int) -> bytes:
        self._live()
        if offset < self._log_start_offset or offset > self._next_offset:
            raise errors.OffsetOutOfRangeError(
                f"offset {offset} is out of range for {self.name}: readable offsets are "
                f"{self._log_start_offset}..{self._next_offset - 1}" if self._next_offset >
                self._log_start_offset else
                f"offset {offset} is out of range for {self.name}: the log is empty at "
                f"{self._next_offset}")
        if offset == self._next_offset:
            return b""
        i = bisect.bisect_right(self._bases, offset) - 1
        while i < len(self._bases):
            seg = self._segment_at(i)
            try:
                position, _ = seg.find_offset(max(offset, self._bases[i]))
            except errors.OffsetOutOfRangeError:
                # The offset falls in a gap after this segment's last batch: compaction
                # leaves such gaps. In a log never compacted there are none, and a gap is
                # a segment that lost its end (a zeroed or lost page: its batches now end
                # early); going on to the next segment would skip records without a word.
                if i + 1 < len(self._bases) and self._never_compacted():
                    raise errors.CorruptRecordError(
                        f"offsets {max(offset, self._bases[i])}..{self._bases[i + 1] - 1} of "
                        f"{self.name} are missing: segment {segment_name(self._bases[i])}"
                        f"{LOG_SUFFIX} ends before them, and this topic was never compacted, "
                        "so its file is damaged. Run `logkernel verify` on the data "
                        "directory (`--repair` cuts the log there)", 0) from None
                i += 1
                continue
            end = self._segment_size(i)
            first = _batch_size(seg.read(position, 12))
            data = seg.read(position, min(end - position, max(max_bytes, first)))
            return self._dense_prefix(data, offset) if self._never_compacted() else data
        return b""

    def _dense_prefix(self, data: bytes, offset: int) -> bytes:
        """``data``, read for ``offset`` from a log never compacted, up to the first batch
        that does not start where the one before it ended; CorruptRecordError if the first
        batch does not hold ``offset``. A batch's baseOffset is not covered by its CRC, and
        a sealed segment below the recovery point is not re-validated at open: without
        this a damaged baseOffset would hand out records at wrong offsets. A walk over the
        batch headers read (no CRC: readers check that), O(batches)."""
        base = _BASE_OFFSET.unpack_from(data)[0] if len(data) >= _HEADER_BYTES else -1
        last = base + _LAST_DELTA.unpack_from(data, 23)[0] if base >= 0 else -1
        scan = _binding.scan_log(data, min_offset=base, flags=_binding.SCAN_DENSE) \
            if base <= offset <= last else None
        if scan is not None and scan.stop_reason in ("end", "torn"):
            return data
        if scan is not None and scan.valid_bytes:
            return data[:scan.valid_bytes]
        raise errors.CorruptRecordError(
            f"the batch of {self.name} read for offset {offset} is damaged (it holds offsets "
            f"{base}..{last}, or is no batch): its baseOffset, which the CRC does not cover, "
            "or its header was changed on disk. Run `logkernel verify` on the data directory "
            "(`--repair` cuts the log there)", 0)

    def whole_batches(self, read_bytes: int = 1024 * 1024) -> Iterator[memoryview]:
        """Every batch from the log start to the log end, whole, read ``read_bytes`` at a
        time (a batch larger than that is read whole): for loaders that replay a log, such
        as the coordinators' internal topics. A read cut inside its last batch yields the
        whole ones and reads on after them."""
        offset = self.log_start_offset
        while offset < self.log_end_offset:
            before = offset
            for batch in _whole_batches_in(memoryview(self.read(offset, read_bytes))):
                offset = _BASE_OFFSET.unpack_from(batch)[0] + _LAST_DELTA.unpack_from(batch, 23)[0] + 1
                yield batch
            if offset == before:
                return  # nothing at or after the offset (a gap at the log end)

    def max_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the record with the largest timestamp (ListOffsets'
        MAX_TIMESTAMP), the earliest such if several; None when the log is empty. Reads each
        segment's tracked maximum: O(segments)."""
        with self._lock:
            self._live()
            best: tuple[int, int] | None = None
            for i in range(len(self._bases)):
                if self._segment_size(i) == 0:
                    continue
                info = self._segment_at(i).info()
                if info.max_timestamp >= 0 and info.offset_of_max_timestamp >= self._log_start_offset \
                        and (best is None or info.max_timestamp > best[1]):
                    best = (info.offset_of_max_timestamp, info.max_timestamp)
        if best is None:
            return None
        # Segments track the batch (its last offset) holding the largest timestamp; the
        # record inside it is found by decoding that one batch.
        try:
            data = self.read(best[0], 1)
        except errors.OffsetOutOfRangeError:  # retention moved the start meanwhile
            return None
        for record in decode_batch(data).records():
            if record.timestamp == best[1] and record.offset >= self._log_start_offset:
                return record.offset, record.timestamp
        return best

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record whose timestamp is >= ``timestamp``, as
        Kafka's ListOffsets answers it: the first batch whose max timestamp reaches it, then
        the first record in that batch that does. None if there is none. O(segments)."""
        with self._lock:
            self._live()
            for i in range(len(self._bases)):
                seg = self._segment_at(i)
                if self._segment_size(i) == 0:
                    continue
                try:
                    position, _ = seg.find_timestamp(timestamp)
                except errors.OffsetOutOfRangeError:
                    continue
                # Batches whose records all lie below the log start (delete_records cut
                # into this segment) do not count: go on batch by batch in the segment.
                end = self._segment_size(i)
                while position < end:
                    size = _batch_size(seg.read(position, 12))
                    for record in decode_batch(seg.read(position, size)).records():
                        if record.timestamp >= timestamp and record.offset >= self._log_start_offset:
                            return record.offset, record.timestamp
                    position += size
        return None

    # ---- deleting ------------------------------------------------------------------

    def delete_records(self, before_offset: int) -> int:
        """Advances the log start offset to ``before_offset`` (Kafka's DeleteRecords; -1 means
        the high watermark) and deletes segments wholly below it. Returns the new log start
        offset. Durable on return (the checkpoint is written)."""
        with self._lock:
            self._live()
            if before_offset == -1:
                before_offset = self._next_offset
            if before_offset < 0 or before_offset > self._next_offset:
                raise errors.OffsetOutOfRangeError(
                    f"cannot delete records before offset {before_offset} of {self.name}: it must "
                    f"be between 0 and the high watermark {self._next_offset} (or -1 for the "
                    "high watermark)")
            if before_offset <= self._log_start_offset:
                return self._log_start_offset
            self._log_start_offset = before_offset
            self._checkpoint_or_warn()  # a full disk: after the deletion, see _delete_oldest
            self._delete_segments_below_start()
            return self._log_start_offset

    def _delete_segments_below_start(self) -> None:
        if self._log_start_offset >= self._next_offset and self._active_size:
            self._roll_locked()
        count = 0
        while count + 1 < len(self._bases) and self._bases[count + 1] <= self._log_start_offset:
            count += 1
        self._delete_oldest(count, "below the log start offset")

    def _delete_oldest(self, count: int, why: str) -> None:
        if count <= 0:
            return
        doomed = self._bases[:count]
        self._bases = self._bases[count:]
        self._log_start_offset = max(self._log_start_offset, self._bases[0])
        # The checkpoint moves first: after a crash between it and the unlinks, open serves
        # from the checkpointed start, never from the files not yet deleted. On a full
        # disk it cannot, and deleting is what frees the space, so the files go first
        # (oldest first: a crash midway leaves a suffix of the log, which open serves from
        # its first segment) and the checkpoint follows. Until it is written a crash brings
        # back records of the first remaining segment below the new start, never loses
        # any: Kafka's own checkpoint of the start offset is written later still.
        checkpointed = self._checkpoint_or_warn()
        for base in doomed:
            self._delete_segment_files(base)
            log.info("%s: deleted segment %s (%s)", self.name, segment_name(base), why)
        fsync_directory(self.directory)
        if not checkpointed:
            self._checkpoint_or_warn()
        self._producers.forget_aborted_below(self._log_start_offset)

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Deletes whole old segments past retention.ms (by their newest timestamp) or beyond
        retention.bytes, oldest first, if cleanup.policy includes delete. If every segment
        has expired the active one is rolled first, as Kafka does. Returns segments deleted."""
        now = _now_ms() if now_ms is None else now_ms
        with self._lock:
            self._live()
            c = self._config
            if not c.deletes:
                return 0
            count = 0
            if c.retention_ms >= 0:
                for i in range(len(self._bases)):
                    if self._segment_size(i) == 0:
                        if i == len(self._bases) - 1:
                            break  # an empty active segment
                        count = i + 1  # emptied by the cleaner: nothing to keep
                        continue
                    newest = self._segment_at(i).info().max_timestamp
                    if now - newest <= c.retention_ms:
                        break
                    count = i + 1
            if c.retention_bytes >= 0:
                excess = sum(self._sealed_sizes.values()) + self._active_size - c.retention_bytes
                by_size = 0
                for i in range(len(self._bases)):
                    size = self._segment_size(i)
                    if excess - size < 0:
                        break
                    excess -= size
                    by_size = i + 1
                count = max(count, by_size)
            if count == 0:
                return 0
            if count >= len(self._bases):
                if not self._active_size:
                    count = len(self._bases) - 1
                else:
                    self._roll_locked()
            self._delete_oldest(count, "retention")
            return count

    def truncate_to(self, offset: int) -> int:
        """Removes every batch with offsets >= ``offset`` (whole batches: a batch that
        straddles it goes too). Returns the new log end offset. For tests and tools; the
        log is normally only appended to."""
        with self._lock:
            self._live()
            if offset >= self._next_offset:
                return self._next_offset
            if offset < self._log_start_offset:
                raise errors.OffsetOutOfRangeError(
                    f"cannot truncate {self.name} to {offset}: below the log start offset "
                    f"{self._log_start_offset}")
            keep = max(1, bisect.bisect_right(self._bases, offset) if offset > self._bases[0] else 1)
            if offset == self._bases[keep - 1] and keep > 1:
                keep -= 1
            for base in self._bases[keep:]:
                self._delete_segment_files(base)
            del self._bases[keep:]
            last = self._bases[-1]
            if self._segments.get(last) is not self._active:
                old = self._segments.pop(last, None)
                if old is not None:
                    old.close()
                self._sealed_sizes.pop(last, None)
                self._set_active(self._open_segment(last, writable=True))
            self._active.truncate_to_offset(offset)
            info = self._active.info()
            self._active_size = info.size
            self._next_offset = info.next_offset
            self._active_first_timestamp = self._first_timestamp(self._active, info.size)
            self._active.flush()
            self._recovery_point = min(self._recovery_point, self._next_offset)
            self._log_start_offset = min(self._log_start_offset, self._next_offset)
            self._write_checkpoint()
            fsync_directory(self.directory)
            # Producer state and aborted transactions as of the new end: the newest snapshot
            # at or below it, then the batches after it.
            self._producers.truncate_aborted(self._next_offset)
            producer_state.write_txn_index(
                self._txn_index_path(last),
                [a for a in self._producers.aborted if a.last_offset >= last])
            # Waiting entries: those cut off are gone, the active segment's are written now.
            self._unindexed_aborts = [(base, a) for base, a in self._unindexed_aborts
                                      if base < last and a.last_offset < self._next_offset]
            self._rebuild_producer_state()
            return self._next_offset

    # ---- compaction ----------------------------------------------------------------

    @property
    def cleaner_checkpoint(self) -> CleanerCheckpoint:
        return self._cleaner_checkpoint

    def set_cleaner_checkpoint(self, checkpoint: CleanerCheckpoint) -> None:
        """Records the cleaner's progress (durable on return)."""
        with self._lock:
            self._live()
            if checkpoint != self._cleaner_checkpoint:
                write_cleaner_checkpoint(self.directory, checkpoint)
                self._cleaner_checkpoint = checkpoint

    def cleaning_view(self) -> CleaningView:
        """The segments below the active one and the cleaner's progress, at this moment."""
        with self._lock:
            self._live()
            sealed = tuple(
                SealedSegment(base, self._bases[i + 1], self._sealed_sizes[base],
                              self._paths(base)[0])
                for i, base in enumerate(self._bases[:-1]))
            checkpoint = self._cleaner_checkpoint
            return CleaningView(self._log_start_offset,
                                max(checkpoint.first_dirty, self._log_start_offset),
                                checkpoint.next_horizon_ms, self._bases[-1], sealed,
                                self._config)

    def segment_timestamps(self, base: int) -> tuple[int, int]:
        """(first batch's max timestamp, largest timestamp) of a sealed segment, -1 when
        empty or gone; for the compaction lag rules."""
        with self._lock:
            self._live()
            i = bisect.bisect_left(self._bases, base)
            if i >= len(self._bases) - 1 or self._bases[i] != base:
                return -1, -1
            size = self._segment_size(i)
            seg = self._segment_at(i)
            return self._first_timestamp(seg, size), seg.info().max_timestamp

    def replace_segments(self, replaced: tuple[SealedSegment, ...]) -> list[str] | None:
        """Swaps ``<first base>.log.cleaned`` (with its indexes), written and fsynced by the
        cleaner, in for the segments ``replaced``: consecutive sealed segments, unchanged
        since the cleaner read them. Returns the replaced files, renamed ``.deleted``, for
        the caller to remove (unlinking a big file takes long; open removes any a crash
        leaves). Returns None, touching nothing, if the segments changed meanwhile
        (retention or delete_records removed some); the caller then deletes its output.
        Readers wait for the lock only while files are renamed."""
        base = replaced[0].base
        stem = os.path.join(self.directory, segment_name(base))
        doomed: list[str] = []
        with self._lock:
            self._live()
            i = bisect.bisect_left(self._bases, base)
            bases = [r.base for r in replaced]
            if (self._bases[i:i + len(bases)] != bases or i + len(bases) >= len(self._bases)
                    or any(self._sealed_sizes.get(r.base) != r.size for r in replaced)):
                return None
            # The commit point: once the .log is renamed to .swap, open completes the swap.
            for suffix in SEGMENT_SUFFIXES:
                os.replace(stem + suffix + CLEANED_SUFFIX, stem + suffix + SWAP_SUFFIX)
            fsync_directory(self.directory)
            for r in replaced:
                seg = self._segments.pop(r.base, None)
                if seg is not None:
                    seg.close()
                del self._sealed_sizes[r.base]
                for path in self._paths(r.base):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(path, path + DELETED_SUFFIX)
                        doomed.append(path + DELETED_SUFFIX)
            for suffix in SEGMENT_SUFFIXES:
                os.replace(stem + suffix + SWAP_SUFFIX, stem + suffix)
            fsync_directory(self.directory)
            self._bases[i:i + len(bases)] = [base]
            self._sealed_sizes[base] = os.stat(stem + LOG_SUFFIX).st_size
            # One aborted-transactions index for the merged segment. A crash before the
            # old files go leaves them without a segment; open moves their entries back.
            end = self._bases[i + 1]
            merged = [a for a in self._producers.aborted if base <= a.last_offset < end]
            if merged:
                producer_state.write_txn_index(self._txn_index_path(base), merged)
            for r in replaced[1:]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._txn_index_path(r.base))
        return doomed

    def _require_keys(self, view: memoryview) -> None:
        """Raises InvalidRecordError if a data record in the record set has no key (a
        compacted topic keeps the latest record per key, so a keyless one means nothing;
        Kafka refuses it the same way)."""
        position = 0
        while position < len(view):
            found, index = _binding.first_keyless(view[position:])
            if found < 0:
                return
            at = position + found
            if index == -2:  # compressed: look inside
                size = _batch_size(view[at:at + 12])
                _, index = _binding.first_keyless(decompressed_batch(view[at:at + size]))
                if index < 0:
                    position = at + size
                    continue
            raise errors.InvalidRecordError(
                f"topic {self.topic!r} is compacted (cleanup.policy="
                f"{self._config.cleanup_policy}), so every record needs a key; record "
                f"{index} of the batch at byte {at} of the request has none. Nothing was "
                "written. Send a key with every record.")

    # ---- lifecycle -----------------------------------------------------------------

    def close(self, *, flush: bool = True) -> None:
        """Flushes (unless told not to), checkpoints and releases every file."""
        if self._closed:
            return
        if flush:
            self.flush()
        with self._lock:
            if self._closed:
                return
            if flush:
                # On a full disk both are skipped with a warning: neither is needed to
                # reopen with everything (a stale checkpoint re-validates more, a missing
                # snapshot replays more), and a close that raises helps nobody.
                self._checkpoint_or_warn()
                self._seal_txn_index(self._bases[-1])
                if self._producers.snapshot_offset != self._next_offset:  # else unchanged
                    self._write_producer_snapshot(self._next_offset)
            del self._appender  # bound to the active segment's handle, closed next
            for seg in self._segments.values():
                seg.close()
            self._segments.clear()
            # Dropped, not closed: a flush running outside the lock may still hold them;
            # they close when the last user lets go.
            self._active_files = None
            self._closed = True

    def update_config(self, config: TopicConfig) -> None:
        """New settings take effect at the next append (segment sizes at the next roll)."""
        with self._lock:
            self._config = config

    def check(self) -> None:
        """Asserts the invariants in the module docstring (for tests; O(segments))."""
        with self._lock:
            assert self._bases == sorted(set(self._bases)), self._bases
            assert self._bases[0] <= self._log_start_offset <= self._next_offset
            assert self._recovery_point <= self._next_offset
            assert set(self._sealed_sizes) == set(self._bases[:-1])
            assert self._segments[self._bases[-1]] is self._active
            info = self._active.info()
            assert info.size == self._active_size and info.next_offset == self._next_offset
            assert info.base_offset == self._bases[-1] <= self._next_offset
            for i, base in enumerate(self._bases[:-1]):
                seg = self._segment_at(i)
                sinfo = seg.info()
                assert sinfo.size == self._sealed_sizes[base], (base, sinfo, self._sealed_sizes)
                assert sinfo.next_offset <= self._bases[i + 1], (base, sinfo.next_offset)
            on_disk = sorted(int(n[:20]) for n in os.listdir(self.directory) if n.endswith(LOG_SUFFIX))
            assert on_disk == self._bases, (on_disk, self._bases)
            assert self._log_start_offset <= self.last_stable_offset <= self._next_offset
            ongoing = self._producers.first_unstable_offset()
            assert self._first_unstable == (-1 if ongoing is None else ongoing)
            assert CHECKPOINT_FILE in os.listdir(self.directory)

