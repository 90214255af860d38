"""Producer state of one partition: what idempotent and transactional producers have
written, so retries are answered instead of written twice, gaps and zombies are refused,
and open transactions bound what read_committed consumers may see.

Kept per producer id (Kafka's ProducerStateEntry):

- the epoch, and the sequence ranges and offsets of its last 5 batches (a client keeps at
  most 5 requests in flight per partition, so a retry is always one of them);
- the first offset of its open transaction, if it has one;
- the coordinator epoch of the last marker, and the time of its last write (expiry).

Rules for a batch from a client (Kafka's ProducerAppendInfo; checked before anything of
the request is written, applied once the bytes are in the segment):

- epoch below the producer's: INVALID_PRODUCER_EPOCH;
- same epoch, same (first, last) sequence as one of the last 5 batches: a duplicate,
  answered with the original offsets and not written again;
- a new epoch must start at sequence 0; the same epoch must continue at last + 1
  (at 0 if it has written no batch here yet, e.g. only a marker), wrapping from 2^31-1 to
  0; else OUT_OF_ORDER_SEQUENCE_NUMBER;
- a producer with no state (never seen, or expired) may start at any sequence;
- a producer with an open transaction may not write non-transactionally.

Markers (control batches the transaction coordinator writes) close a producer's open
transaction; an ABORT marker also records an ``AbortedTxn`` in the aborted-transactions
index (``<segment>.txnindex``, Kafka's 34-byte entries) so read_committed fetches can tell
consumers which records to drop. The last stable offset (LSO) is the first offset of the
earliest open transaction, or the high watermark when none is open.

Snapshots (``<offset>.snapshot``, Kafka's ProducerSnapshot v1 layout, CRC-32C checked) are
written at every segment roll and at close; open loads the newest one at or below the
log end and replays only the batches after it, so a big log is not rescanned.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from logkernel import _binding, errors
from logkernel.log.checkpoint import write_atomically

# A client keeps at most this many requests in flight per partition with idempotence on.
BATCHES_TO_RETAIN = 5
SEQUENCE_MAX = 2**31 - 1
_SEQUENCES = SEQUENCE_MAX + 1
NO_SEQUENCE = -1

SNAPSHOT_SUFFIX = ".snapshot"
TXN_INDEX_SUFFIX = ".txnindex"
SNAPSHOTS_KEPT = 2

CONTROL_ABORT = 0
CONTROL_COMMIT = 1
_TRANSACTIONAL = 0x10   # batch attribute bits
_CONTROL = 0x20

# ProducerSnapshot v1: version int16 | crc uint32 (CRC-32C of what follows) | count int32 |
# count x (ProducerId int64, Epoch int16, LastSequence int32, LastOffset int64,
# OffsetDelta int32, Timestamp int64, CoordinatorEpoch int32, CurrentTxnFirstOffset int64)
_SNAPSHOT_VERSION = 1
_SNAPSHOT_HEAD = struct.Struct(">hI")
_SNAPSHOT_COUNT = struct.Struct(">i")
_SNAPSHOT_ENTRY = struct.Struct(">qhiqiqiq")
# AbortedTxn in .txnindex: version int16 (0) | producerId | firstOffset | lastOffset |
# lastStableOffset (int64s)
_TXN_ENTRY = struct.Struct(">hqqqq")


class BatchMetadata(NamedTuple):
    first_seq: int
    last_seq: int
    last_offset: int
    offset_delta: int
    timestamp: int

    @property
    def first_offset(self) -> int:
        return self.last_offset - self.offset_delta


class AbortedTxn(NamedTuple):
    """An aborted transaction of one partition: the producer's transactional batches with
    base offsets in [first_offset, last_offset] (the ABORT marker's offset) are aborted.
    ``last_stable_offset`` is the LSO right after the abort: every transaction aborted
    later starts at or after it, which lets a search stop early."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


@dataclass
class ProducerEntry:
    producer_id: int
    epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=BATCHES_TO_RETAIN))
    coordinator_epoch: int = -1
    current_txn_first_offset: int = -1
    last_timestamp: int = -1

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    def find_duplicate(self, first_seq: int, last_seq: int) -> BatchMetadata | None:
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches.clear()


def next_sequence(sequence: int, increment: int = 1) -> int:
    """``sequence + increment``, wrapping past 2^31-1 to 0 as Kafka's producers do."""
    return (sequence + increment) % _SEQUENCES


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == SEQUENCE_MAX)


class Duplicate(NamedTuple):
    """A retried batch already in the log: its first and last offset and its timestamp."""

    first_offset: int
    last_offset: int
    timestamp: int


class ProducerStateManager:
    """The producer state of one partition. Not thread safe: the partition log calls it
    under its lock."""

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.name = name
        self.producers: dict[int, ProducerEntry] = {}
        self.ongoing: dict[int, int] = {}          # producer id -> open transaction's first offset
        self.aborted: list[AbortedTxn] = []        # by last offset (= marker order)
        self.snapshot_offset = -1  # the state equals the snapshot at this offset (-1: none)
        self._aborted_ends: list[int] = []         # last offsets, for bisect

    # ---- checking and applying appends ------------------------------------------------

    def check(self, headers: Iterable[_binding.BatchHeader]) -> Duplicate | None:
        """Checks the producer batches of one append before anything is written: returns
        the duplicate to answer with, None to go ahead, or raises the refusal."""
        pending: dict[int, tuple[int, int]] = {}   # producer id -> (epoch, last seq) so far
        for h in headers:
            pid = h.producer_id
            if pid < 0:
                if h.attributes & _TRANSACTIONAL:
                    raise errors.InvalidRecordError(
                        "a transactional batch must carry a producer id; nothing was written")
                continue
            if h.attributes & _CONTROL:
                raise errors.InvalidRecordError(
                    "control batches (transaction markers) are written by the transaction "
                    "coordinator, not by producers; nothing was written")
            if h.producer_epoch < 0 or h.base_sequence < 0:
                raise errors.InvalidRecordError(
                    f"a batch of producer {pid} carries epoch {h.producer_epoch} and base "
                    f"sequence {h.base_sequence}; idempotent batches need both >= 0")
            last_seq = (h.base_sequence + h.last_offset_delta) % _SEQUENCES
            entry = self.producers.get(pid)
            if pid in pending:
                epoch, current_last = pending[pid]
            elif entry is not None:
                epoch, current_last = entry.epoch, entry.last_seq
                if h.producer_epoch == epoch:
                    dup = entry.find_duplicate(h.base_sequence, last_seq)
                    if dup is not None:
                        return Duplicate(dup.first_offset, dup.last_offset, dup.timestamp)
            else:
                pending[pid] = (h.producer_epoch, last_seq)
                continue  # no state: any sequence starts it
            if h.producer_epoch < epoch:
                raise errors.InvalidProducerEpochError(
                    f"producer {pid} wrote with epoch {h.producer_epoch}, but epoch {epoch} "
                    f"has written to {self.name} since: a newer instance took over this "
                    "producer id. Nothing was written.")
            if h.producer_epoch > epoch:
                if h.base_sequence != 0:
                    raise errors.OutOfOrderSequenceError(
                        f"producer {pid} starts epoch {h.producer_epoch} at sequence "
                        f"{h.base_sequence} on {self.name}; a new epoch starts at 0")
            elif not _in_sequence(current_last, h.base_sequence):  # none yet: must be 0
                raise errors.OutOfOrderSequenceError(
                    f"producer {pid} (epoch {epoch}) sent sequence {h.base_sequence} to "
                    f"{self.name}, but the last one written was {current_last}: a batch is "
                    "missing. Nothing was written.")
            if entry is not None and pid not in pending and not h.attributes & _TRANSACTIONAL \
                    and entry.current_txn_first_offset >= 0:
                raise errors.InvalidTxnStateError(
                    f"producer {pid} has an open transaction on {self.name} (since offset "
                    f"{entry.current_txn_first_offset}) and sent a non-transactional batch")
            pending[pid] = (h.producer_epoch, last_seq)
        return None

    def apply(self, header: _binding.BatchHeader, base_offset: int) -> None:
        """Records one producer batch now stored at ``base_offset`` (check() passed, or
        the batch is being replayed from the log)."""
        pid = header.producer_id
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(pid, header.producer_epoch)
        else:
            entry.set_epoch(max(entry.epoch, header.producer_epoch))
        delta = header.last_offset_delta
        if header.base_sequence >= 0:  # a coordinator's transactional write has none
            entry.batches.append(BatchMetadata(
                header.base_sequence, (header.base_sequence + delta) % _SEQUENCES,
                base_offset + delta, delta, header.max_timestamp))
        if header.max_timestamp > entry.last_timestamp:
            entry.last_timestamp = header.max_timestamp
        if header.attributes & _TRANSACTIONAL and entry.current_txn_first_offset < 0:
            entry.current_txn_first_offset = base_offset
            self.ongoing[pid] = base_offset

    def check_marker(self, producer_id: int, epoch: int, coordinator_epoch: int) -> None:
        entry = self.producers.get(producer_id)
        if entry is None:
            return
        if epoch < entry.epoch:
            raise errors.InvalidProducerEpochError(
                f"a transaction marker for producer {producer_id} carries epoch {epoch}, "
                f"below the epoch {entry.epoch} already written to {self.name}")
        if coordinator_epoch < entry.coordinator_epoch:
            raise errors.TransactionCoordinatorFencedError(
                f"a transaction marker for producer {producer_id} carries coordinator epoch "
                f"{coordinator_epoch}, below {entry.coordinator_epoch}")

    def apply_marker(self, producer_id: int, epoch: int, coordinator_epoch: int, commit: bool,
                     offset: int, timestamp: int, high_watermark: int) -> AbortedTxn | None:
        """Closes the producer's open transaction with the marker stored at ``offset``.
        Returns the AbortedTxn to index for an ABORT that closed a transaction."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(producer_id, epoch)
        entry.set_epoch(max(entry.epoch, epoch))
        entry.coordinator_epoch = max(entry.coordinator_epoch, coordinator_epoch)
        entry.last_timestamp = max(entry.last_timestamp, timestamp)
        first = entry.current_txn_first_offset
        entry.current_txn_first_offset = -1
        self.ongoing.pop(producer_id, None)
        if commit or first < 0:
            return None
        lso = min(self.ongoing.values(), default=high_watermark)
        aborted = AbortedTxn(producer_id, first, offset, lso)
        self.add_aborted(aborted)
        return aborted

    def add_aborted(self, aborted: AbortedTxn) -> bool:
        """Adds an aborted transaction unless it is known already (same marker offset)."""
        i = bisect.bisect_left(self._aborted_ends, aborted.last_offset)
        if i < len(self._aborted_ends) and self._aborted_ends[i] == aborted.last_offset:
            return False
        self.aborted.insert(i, aborted)
        self._aborted_ends.insert(i, aborted.last_offset)
        return True

    def first_unstable_offset(self) -> int | None:
        return min(self.ongoing.values()) if self.ongoing else None

    def aborted_between(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions with records in [start, end): last offset >= start and
        first offset < end (Kafka's collectAbortedTxns)."""
        out = []
        for i in range(bisect.bisect_left(self._aborted_ends, start), len(self.aborted)):
            aborted = self.aborted[i]
            if aborted.first_offset < end:
                out.append(aborted)
            if aborted.last_stable_offset >= end:
                break
        return out

    def replay(self, header: _binding.BatchHeader, base_offset: int, control_type: int,
               coordinator_epoch: int) -> AbortedTxn | None:
        """Rebuilds state from one batch of the log (recovery), as it was when the batch
        was appended (a marker's LSO is computed with the log ending right after it)."""
        if header.producer_id < 0:
            return None
        if header.is_control:
            if control_type not in (CONTROL_ABORT, CONTROL_COMMIT):
                return None
            return self.apply_marker(header.producer_id, header.producer_epoch, coordinator_epoch,
                                     control_type == CONTROL_COMMIT, base_offset,
                                     header.max_timestamp, base_offset + 1)
        self.apply(header, base_offset)
        return None

    # ---- truncation and expiry -----------------------------------------------------

    def truncate_aborted(self, end_offset: int) -> None:
        """Forgets aborted transactions whose marker is at or past ``end_offset``."""
        i = bisect.bisect_left(self._aborted_ends, end_offset)
        del self.aborted[i:]
        del self._aborted_ends[i:]

    def forget_aborted_below(self, start_offset: int) -> None:
        """Forgets aborted transactions wholly below ``start_offset`` (retention)."""
        i = bisect.bisect_left(self._aborted_ends, start_offset)
        if i:
            del self.aborted[:i]
            del self._aborted_ends[:i]

    def expire(self, now_ms: int, expiration_ms: int) -> list[int]:
        """Drops producers idle longer than ``expiration_ms`` with no open transaction.
        Returns their ids."""
        gone = [pid for pid, entry in self.producers.items()
                if entry.current_txn_first_offset < 0
                and now_ms - max(entry.last_timestamp, 0) >= expiration_ms]
        for pid in gone:
            del self.producers[pid]
        if gone:
            self.snapshot_offset = -1
        return gone

    def clear(self) -> None:
        self.producers.clear()
        self.ongoing.clear()

    # ---- snapshots -----------------------------------------------------------------

    def snapshot_offsets(self, names: Iterable[str] | None = None) -> list[int]:
        """Offsets of the snapshots in the directory (or among ``names``, its listing)."""
        return sorted(int(n[:20]) for n in (os.listdir(self.directory) if names is None else names)
                      if n.endswith(SNAPSHOT_SUFFIX) and len(n) == 29 and n[:20].isdigit())

    def snapshot_path(self, offset: int) -> str:
        return os.path.join(self.directory, f"{offset:020d}{SNAPSHOT_SUFFIX}")

    def write_snapshot(self, offset: int) -> None:
        """Writes the state as of ``offset`` (the log end) and keeps the newest few."""
        body = bytearray(_SNAPSHOT_COUNT.pack(len(self.producers)))
        for entry in self.producers.values():
            last = entry.batches[-1] if entry.batches else None
            body += _SNAPSHOT_ENTRY.pack(
                entry.producer_id, entry.epoch, last.last_seq if last else NO_SEQUENCE,
                last.last_offset if last else -1, last.offset_delta if last else 0,
                entry.last_timestamp, entry.coordinator_epoch, entry.current_txn_first_offset)
        data = _SNAPSHOT_HEAD.pack(_SNAPSHOT_VERSION, _binding.crc32c(body)) + bytes(body)
        write_atomically(self.snapshot_path(offset), data)
        self.snapshot_offset = offset
        for old in self.snapshot_offsets()[:-SNAPSHOTS_KEPT]:
            self._remove(self.snapshot_path(old))

    def load_snapshot(self, end_offset: int, names: Iterable[str] | None = None) -> int:
        """Loads the newest readable snapshot at or below ``end_offset`` and returns its
        offset (replay from there), or -1 when there is none. Snapshots past the end (the
        log was truncated) and unreadable ones are deleted. ``names``: the directory's
        listing, if the caller has it."""
        for offset in reversed(self.snapshot_offsets(names)):
            path = self.snapshot_path(offset)
            if offset > end_offset:
                self._remove(path)
                continue
            try:
                entries = _read_snapshot(path)
            except (OSError, ValueError):
                self._remove(path)
                continue
            self.clear()
            self.snapshot_offset = offset
            for entry in entries:
                self.producers[entry.producer_id] = entry
                if entry.current_txn_first_offset >= 0:
                    self.ongoing[entry.producer_id] = entry.current_txn_first_offset
            return offset
        self.clear()
        self.snapshot_offset = -1
        return -1

    @staticmethod
    def _remove(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _read_snapshot(path: str) -> list[ProducerEntry]:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _SNAPSHOT_HEAD.size + _SNAPSHOT_COUNT.size:
        raise ValueError(f"{path}: too short for a producer snapshot")
    version, crc = _SNAPSHOT_HEAD.unpack_from(data)
    if version != _SNAPSHOT_VERSION:
        raise ValueError(f"{path}: producer snapshot version {version}, expected 1")
    body = memoryview(data)[_SNAPSHOT_HEAD.size:]
    if _binding.crc32c(body) != crc:
        raise ValueError(f"{path}: producer snapshot CRC mismatch")
    (count,) = _SNAPSHOT_COUNT.unpack_from(body)
    if count < 0 or len(body) != _SNAPSHOT_COUNT.size + count * _SNAPSHOT_ENTRY.size:
        raise ValueError(f"{path}: producer snapshot length does not match its count")
    entries = []
    for i in range(count):
        (pid, epoch, last_seq, last_offset, offset_delta, timestamp, coordinator_epoch,
         txn_first) = _SNAPSHOT_ENTRY.unpack_from(body, _SNAPSHOT_COUNT.size + i * _SNAPSHOT_ENTRY.size)
        entry = ProducerEntry(pid, epoch, coordinator_epoch=coordinator_epoch,
                              current_txn_first_offset=txn_first, last_timestamp=timestamp)
        if last_seq != NO_SEQUENCE and last_offset >= 0:
            first_seq = next_sequence(last_seq, -offset_delta)
            entry.batches.append(BatchMetadata(first_seq, last_seq, last_offset, offset_delta,
                                               timestamp))
        entries.append(entry)
    return entries


# ---- the aborted-transactions index files ---------------------------------------------

def txn_index_path(directory: str, base_offset: int) -> str:
    return os.path.join(directory, f"{base_offset:020d}{TXN_INDEX_SUFFIX}")


def append_txn_index(path: str, aborted: AbortedTxn, *, sync: bool = False) -> None:
    """Appends one entry; fsynced with the segment (PartitionLog flushes it at seal), or
    now with ``sync``. The entry goes at the end of the file's whole entries, so a torn
    one left by a crash is overwritten; if the disk is full (NoSpaceError) the file is cut
    back to them, so no half entry stays to misalign the next."""
    entry = _TXN_ENTRY.pack(0, *aborted)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        end = os.fstat(fd).st_size // _TXN_ENTRY.size * _TXN_ENTRY.size
        try:
            written = 0
            while written < len(entry):
                written += os.pwrite(fd, entry[written:], end + written)
            if sync:
                os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            converted = errors.no_space(exc, "appending to an aborted-transactions index", path)
            if converted is exc:
                raise
            raise converted from exc
    finally:
        os.close(fd)


def cut_txn_index(path: str, entries: list[AbortedTxn], kept: list[AbortedTxn]) -> None:
    """Rewrites a .txnindex that held ``entries`` (as read) to hold ``kept`` (recovery cut
    the log below the others' markers). A cut that keeps a prefix of a file of whole
    entries is a truncate, which needs no free space (an open on a full disk does this);
    anything else is written anew."""
    if kept == entries[:len(kept)] and os.path.getsize(path) == len(entries) * _TXN_ENTRY.size:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, len(kept) * _TXN_ENTRY.size)
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        write_txn_index(path, kept)


def write_txn_index(path: str, entries: Iterable[AbortedTxn]) -> None:
    data = b"".join(_TXN_ENTRY.pack(0, *a) for a in entries)
    if data:
        write_atomically(path, data)
    else:
        ProducerStateManager._remove(path)


def read_txn_index(path: str) -> list[AbortedTxn]:
    """The whole entries of a .txnindex file (a torn last entry is ignored)."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    for pos in range(0, len(data) - _TXN_ENTRY.size + 1, _TXN_ENTRY.size):
        version, pid, first, last, lso = _TXN_ENTRY.unpack_from(data, pos)
        if version == 0 and 0 <= first <= last:
            out.append(AbortedTxn(pid, first, last, lso))
    return out
