"""``logkernel verify``: checks every file of a data directory against the others, changes
nothing, and plans the repair of what it finds.

What is checked (file layouts: log/partition.py, native/segment.c, log/producer_state.py,
log/checkpoint.py, engine.py)::

    <topic>-<p>/<base>.log        every batch: structure and CRC-32C (in C, lk_log_scan with
                                  records validated), offsets increasing from the segment's
                                  base, within its int32 range and below the next segment's
                                  base; in a topic that was never compacted, offsets dense
                                  (each batch starts where the previous ended, segments
                                  continue each other: a baseOffset is not covered by the
                                  CRC, so a flipped bit there shows only as a gap); a
                                  sealed segment ends at its last batch (zeros after it: a
                                  roll interrupted before it trimmed the file)
    <base>.index / .timeindex     each entry the engine would use: the batch it names
                                  starts where it says, with that last offset; the time
                                  entry's batch is the first to reach its timestamp
    <base>.txnindex               well-formed entries that name an ABORT marker of their
                                  producer, and an entry for every aborted transaction
                                  (partitions with transactional producers only)
    <offset>.snapshot             layout, CRC-32C, not past the log end
    partition.checkpoint          parses; recovery point and log start inside the log
    cleaner.checkpoint            parses; first dirty offset inside the log
    topics/*.json, producer-ids,  parse; every partition directory of every topic exists;
    cluster.id                    producer ids not behind those the partitions track

Verdicts. An *error* is damage that changes what readers get: records lost, records
that open or ``--repair`` would drop, or a file the engine trusts that would make it
serve the wrong thing. A *warning* is a derived file (index, checkpoint, snapshot) that is
missing or unusable where the engine notices and rebuilds it from the log, losing no
record. A *note* is not damage (an unclean shutdown, a preallocated zero tail, files an
interrupted operation left, which open tidies up).

Read-only: every file is opened O_RDONLY and read with pread. Nothing is mapped: a
running engine trims the file of a segment it seals, and a read through a map past a
file's new end is a SIGBUS. A directory a running engine holds can be verified; its
active segments may then show a tail that was being written.

Cost: one pass over every byte (the C scan, ~GB/s), plus a Python walk of batch headers
only where the cheap checks point at a problem, and over partitions that hold
transactions (to match ABORT markers with the .txnindex).

Repair (``plan_repair`` / ``apply_repair``; the CLI then opens the directory with recovery
forced): each damaged log is cut at the first bad byte found here and the segments after
it removed, which is what the engine's recovery does for the damage it detects (this
applies it also to damage only verify sees, such as a baseOffset that jumps); unusable
index, time index, .txnindex, snapshot and cleaner checkpoint files are removed (open
rebuilds them from the log; snapshots newer than a rebuilt .txnindex go too, so the
replay that rebuilds it covers its segment); a sealed segment's zero tail is trimmed;
the recovery point is lowered to the first cut segment and the clean-shutdown marker
removed, so the engine's own recovery re-validates and rebuilds everything from there.
What no repair can fix (unparseable topic metadata, a producer-ids file behind the ids in
use) is listed in ``Report.unrepairable`` with what to do by hand.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from logkernel import _binding, errors
from logkernel.config import validate_topic_name
from logkernel.log.checkpoint import (
    CHECKPOINT_FILE,
    CHECKPOINT_VERSION,
    CLEANER_CHECKPOINT_FILE,
    PartitionCheckpoint,
    fsync_directory,
    read_partition_checkpoint,
    write_partition_checkpoint,
)
from logkernel.log.partition import (
    INDEX_SUFFIX,
    LEFTOVER_SUFFIXES,
    LOG_SUFFIX,
    SWAP_SUFFIX,
    TIME_INDEX_SUFFIX,
    segment_name,
)
from logkernel.log.producer_state import CONTROL_ABORT, SNAPSHOT_SUFFIX, TXN_INDEX_SUFFIX
from logkernel.records import decode_batch

# The engine's files at the top of a data directory (engine.py). log/ may not import the
# engine (the layers point down), so the names are repeated here; tests/test_cli_verify.py
# checks that they agree.
LOCK_FILE = ".lock"
CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
CLUSTER_ID_FILE = "cluster.id"
PRODUCER_IDS_FILE = "producer-ids"
TOPICS_DIR = "topics"
PRODUCER_ID_BLOCK = 1000

ERROR = "error"
WARNING = "warning"

# Bytes read per pread: large enough that the C scan, not the call, dominates (~1.5 ms of
# scanning at 5 GB/s), small enough that verifying a 1 GiB segment needs 8 MiB of memory.
CHUNK_BYTES = 8 * 1024 * 1024
# Bytes read at a time by a walk that stops within an index interval (the time index's
# check): a page or two of batches, not a chunk.
WALK_BYTES = 64 * 1024
# The largest relative offset a segment may hold: index entries store offsets as int32.
MAX_RELATIVE_OFFSET = 2**31 - 1

_SCAN_FLAGS = _binding.VALIDATE_CRC | _binding.VALIDATE_RECORDS
_HEADER = struct.Struct(">qiibIhiqqqhii")       # the 61-byte batch header, Kafka's order
_BASE_AND_LENGTH = struct.Struct(">qi")         # baseOffset, batchLength
_OFFSET_ENTRY = struct.Struct(">ii")            # relativeOffset, position
_TIME_ENTRY = struct.Struct(">qi")              # timestamp, relativeOffset
_TXN_ENTRY = struct.Struct(">hqqqq")            # version, producerId, first, last, LSO
_SNAPSHOT_HEAD = struct.Struct(">hIi")          # version, crc, count
_SNAPSHOT_ENTRY = struct.Struct(">qhiqiqiq")
_SNAPSHOT_VERSION = 1
_ATTR_TRANSACTIONAL = 0x10
_ATTR_CONTROL = 0x20
HEADER_SIZE = _binding.BATCH_HEADER_SIZE

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Problem:
    """One thing wrong. ``position`` is a byte position in ``path`` (-1: the whole file),
    ``offset`` the log offset involved (-1: none); ``dropped`` says what a repair (or the
    engine's recovery) drops because of it, "" when nothing."""

    severity: str
    kind: str
    partition: str
    path: str
    what: str
    position: int = -1
    offset: int = -1
    dropped: str = ""


@dataclass
class SegmentResult:
    base: int
    path: str
    file_size: int
    valid_bytes: int = 0        # end of the valid prefix
    next_offset: int = 0        # last offset of the valid prefix + 1 (base when empty)
    batches: int = 0
    records: int = 0
    max_timestamp: int = -1
    offset_of_max_timestamp: int = -1
    zero_tail: int = 0          # zero bytes after the valid prefix (preallocated)
    damaged: bool = False       # the valid prefix ends before the file's data does
    problem: int = -1           # the index of the log's problem in Report.problems


@dataclass
class PartitionResult:
    name: str
    directory: str
    segments: list[SegmentResult] = field(default_factory=list)
    compacted: bool = False
    # What a repair does here (plan_repair turns these into actions).
    cut: tuple[int, int] | None = None       # (segment base, position): keep bytes before it
    remove: dict[str, str] = field(default_factory=dict)  # path -> why
    trim: dict[str, int] = field(default_factory=dict)    # sealed .log -> its valid size
    rebuild_txn_from: int | None = None      # drop snapshots past this offset
    checkpoint: PartitionCheckpoint | None = None
    # Where open's producer-state replay starts: the newest usable snapshot at or below the
    # log end (0 without one). Open indexes the aborts it meets from there by itself.
    replay_from: int = 0

    @property
    def log_end(self) -> int:
        kept = self.segments if self.cut is None else [
            s for s in self.segments if s.base <= self.cut[0]]
        return kept[-1].next_offset if kept else 0


@dataclass
class Report:
    data_dir: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    partitions: list[PartitionResult] = field(default_factory=list)
    bytes_checked: int = 0
    seconds: float = 0.0
    largest_producer_id: int = -1
    unrepairable: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def errors(self) -> int:
        return sum(p.severity == ERROR for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.severity == WARNING for p in self.problems)

    def summary(self) -> dict[str, Any]:
        segments = [s for p in self.partitions for s in p.segments]
        return {"partitions": len(self.partitions), "segments": len(segments),
                "batches": sum(s.batches for s in segments),
                "records": sum(s.records for s in segments), "bytes": self.bytes_checked,
                "errors": self.errors, "warnings": self.warnings, "notes": len(self.notes),
                "seconds": round(self.seconds, 3)}

    def to_json(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "clean": self.clean, "summary": self.summary(),
                "problems": [asdict(p) for p in self.problems], "notes": list(self.notes),
                "unrepairable": list(self.unrepairable)}


# ---- the directory lock -------------------------------------------------------------------

def lock_holder(data_dir: str) -> str | None:
    """A description of the engine holding ``data_dir`` ("process 1234"), or None when no
    engine does. Reads /proc/locks, so asking takes no lock (taking one, even for a moment,
    could make an engine starting at that moment fail); where /proc/locks is missing it
    tries a shared flock and lets it go at once."""
    path = os.path.join(data_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        written = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        st = os.fstat(fd)
        try:
            with open("/proc/locks") as f:
                locks = f.read()
        except OSError:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return f"process {written or 'unknown'}"
                raise
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)
    for line in locks.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 3459 08:01:1234567 0 EOF" (a "->" marks a waiter). Only
        # the inode is compared: on overlay file systems the device named there is not the
        # one stat reports.
        if len(fields) >= 6 and "->" not in fields and fields[1] == "FLOCK" and \
                fields[5].rsplit(":", 1)[-1] == str(st.st_ino):
            return f"process {fields[4]}"
    return None


@contextlib.contextmanager
def hold_lock(data_dir: str) -> Iterator[None]:
    """Holds the engine's directory lock (DataDirLockedError if an engine has it)."""
    fd = os.open(os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise errors.DataDirLockedError(
                    f"{data_dir} is open in a running engine or broker; stop it before "
                    "repairing (verify without --repair works on a live directory)") from None
            raise
        yield
    finally:
        os.close(fd)


# ---- reading files ------------------------------------------------------------------------

def _pread(fd: int, size: int, position: int) -> bytes:
    """Up to ``size`` bytes at ``position`` (fewer only at the end of the file)."""
    parts = []
    while size > 0:
        part = os.pread(fd, size, position)
        if not part:
            break
        parts.append(part)
        size -= len(part)
        position += len(part)
    return b"".join(parts)


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class _Header:
    position: int
    base_offset: int
    size: int
    attributes: int
    last_offset: int
    max_timestamp: int
    producer_id: int
    record_count: int


def _walk(fd: int, start: int, end: int, chunk_bytes: int = CHUNK_BYTES
          ) -> Iterator[tuple[_Header, memoryview]]:
    """The batches in [start, end) of a log whose bytes there were validated, with their
    bytes: headers parsed in Python (the slow path: only where a cheap check failed, and
    for partitions with transactions). Reads ``chunk_bytes`` at a time: a caller that
    stops after a few batches asks for little."""
    position = start
    while position + HEADER_SIZE <= end:
        chunk = _pread(fd, min(chunk_bytes, end - position), position)
        view = memoryview(chunk)
        at = 0
        while at + HEADER_SIZE <= len(view):
            (base, length, _epoch, _magic, _crc, attributes, last_delta, _first_ts, max_ts,
             producer_id, _producer_epoch, _sequence, count) = _HEADER.unpack_from(view, at)
            size = length + 12
            if size < HEADER_SIZE:
                return
            if at + size > len(view):
                if at == 0:  # one batch larger than a chunk
                    view = memoryview(_pread(fd, size, position))
                    if len(view) < size:
                        return
                else:
                    break
            yield (_Header(position + at, base, size, attributes, base + last_delta, max_ts,
                           producer_id, count), view[at:at + size])
            at += size
        if at == 0:
            return
        position += at


# ---- one segment ---------------------------------------------------------------------------

@dataclass
class _OffsetEntry:
    relative: int
    position: int
    slot: int
    status: str = "unchecked"     # "ok", "inside", "wrong-offset", "past-end"
    detail: str = ""


@dataclass
class _Boundary:
    """A confirmed offset-index entry: the batch at ``position`` and what precedes it."""

    position: int
    last_offset: int
    max_timestamp: int
    max_before: int


def _parse_offset_index(data: bytes) -> tuple[list[_OffsetEntry], str]:
    """The entries the engine would use (its valid-prefix rule), and why the file does
    not continue past them cleanly ("" if it does)."""
    entries: list[_OffsetEntry] = []
    whole = len(data) - len(data) % 8
    previous_relative, previous_position = -1, 0
    for slot, (relative, position) in enumerate(_OFFSET_ENTRY.iter_unpack(data[:whole])):
        if relative == 0 and position == 0:
            rest = data[slot * 8:]
            if rest.count(0) != len(rest):
                return entries, (f"non-zero bytes after its {slot} entries (from byte "
                                 f"{slot * 8 + next(i for i, b in enumerate(rest) if b)})")
            return entries, ""
        if relative <= previous_relative or position <= previous_position:
            return entries, (f"entry {slot} (relative offset {relative}, position {position}) "
                             f"does not follow entry {slot - 1} (relative offset "
                             f"{previous_relative}, position {previous_position}): offsets and "
                             "positions must increase")
        entries.append(_OffsetEntry(relative, position, slot))
        previous_relative, previous_position = relative, position
    tail = data[whole:]
    if tail.count(0) != len(tail):
        return entries, f"a torn entry of {len(tail)} bytes at its end"
    return entries, ""


def _parse_time_index(data: bytes) -> tuple[list[tuple[int, int, int]], str]:
    """(slot, timestamp, relative offset) of the entries the engine would use, and why the
    file does not continue past them cleanly."""
    entries: list[tuple[int, int, int]] = []
    whole = len(data) - len(data) % 12
    previous_ts, previous_relative = -1, 0
    for slot, (timestamp, relative) in enumerate(_TIME_ENTRY.iter_unpack(data[:whole])):
        if timestamp == 0 and relative == 0:
            rest = data[slot * 12:]
            if rest.count(0) != len(rest):
                return entries, f"non-zero bytes after its {slot} entries"
            return entries, ""
        if timestamp < previous_ts or relative < previous_relative or relative < 0:
            return entries, (f"entry {slot} (timestamp {timestamp}, relative offset "
                             f"{relative}) goes below the entry before it")
        entries.append((slot, timestamp, relative))
        previous_ts, previous_relative = timestamp, relative
    tail = data[whole:]
    if tail.count(0) != len(tail):
        return entries, f"a torn entry of {len(tail)} bytes at its end"
    return entries, ""


@dataclass(frozen=True)
class _Stop:
    """Where a log's valid prefix ends and why: ``next_offset`` is the kept prefix's."""

    kind: str
    position: int
    offset: int
    what: str
    next_offset: int


class _SegmentCheck:
    """Scans one .log from byte 0 with the C scanner, split at every offset-index position
    so that each entry is checked to start a batch; records where the valid prefix ends
    and why."""

    def __init__(self, fd: int, result: SegmentResult, dense: bool,
                 entries: list[_OffsetEntry], progress: Callable[[int], None]) -> None:
        self.fd = fd
        self.result = result
        self.dense = dense
        self.entries = entries
        self.progress = progress
        self.boundaries: list[_Boundary] = []
        self.stop: _Stop | None = None
        self.expected = result.base

    # -- accumulating C scan results

    def _take(self, r: _binding.ScanResult, pos: int, local: int) -> bool:
        """Adds the batches a scan of the chunk at ``pos`` from ``local`` found; False
        (self.stop set) if offsets jump inside them."""
        # Offsets jump somewhere in this piece, or a batch is sparse: find out which.
        if r.batches and self.dense and (r.first_offset != self.expected
                                         or r.next_offset - self.expected != r.records) \
                and self._find_gap(pos + local, pos + r.valid_bytes):
            return False
        res = self.result
        if r.batches:
            res.batches += r.batches
            res.records += r.records
            if r.max_timestamp > res.max_timestamp:
                res.max_timestamp = r.max_timestamp
                res.offset_of_max_timestamp = r.offset_of_max_timestamp
            self.expected = r.next_offset
        return True

    def _find_gap(self, start: int, end: int) -> bool:
        """Walks the headers in [start, end) for the first batch that does not start where
        the one before it ended; True (and self.stop set there, with the batches before it
        counted) if there is one. False when the sum check tripped on a sparse batch (fewer
        records than offsets: a topic compacted once and reconfigured), which is no damage:
        the dense check is then off for the rest of the segment."""
        expected = self.expected
        records = 0
        max_ts, offset_of_max = self.result.max_timestamp, self.result.offset_of_max_timestamp
        for batches, (header, _) in enumerate(_walk(self.fd, start, end)):
            if header.base_offset != expected:
                res = self.result
                res.batches += batches
                res.records += records
                res.max_timestamp, res.offset_of_max_timestamp = max_ts, offset_of_max
                self.expected = expected
                self.stop = _Stop(
                    "log-offsets", header.position, header.base_offset,
                    f"the batch at byte {header.position} starts at offset "
                    f"{header.base_offset}, but the one before it ended at {expected - 1}: "
                    f"offsets {_span(expected, header.base_offset)} are missing (baseOffset is "
                    "not covered by the CRC: a damaged baseOffset field, or a lost batch)",
                    expected)
                return True
            records += header.record_count
            if header.max_timestamp > max_ts:
                max_ts, offset_of_max = header.max_timestamp, header.last_offset
            expected = header.last_offset + 1
        self.dense = False
        return False

    # -- the scan

    def run(self) -> None:
        res = self.result
        size = res.file_size
        pending = list(reversed(self.entries))  # pop() gives the lowest position first
        pos = 0
        read_size = CHUNK_BYTES
        while pos < size and self.stop is None:
            chunk = _pread(self.fd, min(read_size, size - pos), pos)
            if len(chunk) < min(read_size, size - pos):
                # The file shrank while it was read (a running engine trimmed or truncated
                # it): what is there is all there is.
                size = res.file_size = pos + len(chunk)
            read_size = CHUNK_BYTES
            if not chunk:
                break
            view = memoryview(chunk)
            at_eof = pos + len(chunk) >= size
            local = 0
            carry = -1  # >= 0: a batch starting there runs past this chunk; read from it
            while pending and pending[-1].position <= pos + len(chunk):
                entry = pending[-1]
                cut = entry.position - pos
                r = _binding.scan_log(view[:cut], local, self.expected, flags=_SCAN_FLAGS)
                if not self._take(r, pos, local):
                    break
                local = r.valid_bytes
                if r.stop_reason == "end":
                    pending.pop()
                    self._confirm(entry, view, cut)
                    continue
                if r.stop_reason != "torn":
                    break  # corrupt, offset or zeros before the entry: the scan below says
                declared = self._declared(view, local)
                if (declared < 0 or local + declared > len(view)) and not at_eof:
                    carry = local
                    break
                # The entry points inside a batch that ends within this chunk (or at a
                # length that is garbage, which the scan below reports).
                pending.pop()
                entry.status = "inside"
            if self.stop is not None:
                break
            if carry < 0:
                r = _binding.scan_log(view, local, self.expected, flags=_SCAN_FLAGS)
                if not self._take(r, pos, local):
                    break
                if r.stop_reason == "end":
                    pos += len(chunk)
                    self.progress(pos)
                    continue
                if r.stop_reason != "torn" or at_eof:
                    self._stopped(r, pos, len(view))
                    break
                carry = r.valid_bytes
            declared = self._declared(view, carry)
            if declared > 0 and pos + carry + declared > size:
                # The length runs past the end of the file: torn (or a damaged length).
                self._stopped(_binding.scan_log(view, carry, self.expected, flags=_SCAN_FLAGS),
                              pos, len(view), declared=declared)
                break
            pos += carry
            read_size = max(CHUNK_BYTES, declared)
            self.progress(pos)
        if self.stop is None and res.zero_tail == 0:
            res.valid_bytes = size
        res.next_offset = self.expected if self.stop is None else self.stop.next_offset
        if self.stop is not None:
            res.valid_bytes = self.stop.position
        for entry in pending:
            entry.status = "past-end"
        for entry in self.entries:
            if entry.status != "past-end" and entry.position >= res.valid_bytes:
                entry.status = "past-end"

    @staticmethod
    def _declared(view: memoryview, at: int) -> int:
        """The size the batch at ``at`` declares, or -1 if its length is not in view."""
        if at + 12 > len(view):
            return -1
        return int(_BASE_AND_LENGTH.unpack_from(view, at)[1]) + 12

    def _confirm(self, entry: _OffsetEntry, view: memoryview, cut: int) -> None:
        """The scan reached ``entry.position`` exactly on a batch boundary: checks the
        batch there has the entry's last offset, and remembers it for the time index."""
        if cut + HEADER_SIZE <= len(view):
            head = bytes(view[cut:cut + HEADER_SIZE])
        else:
            head = _pread(self.fd, HEADER_SIZE, entry.position)
        if len(head) < HEADER_SIZE:
            entry.status = "past-end"
            return
        fields = _HEADER.unpack_from(head)
        last = fields[0] + fields[6]
        res = self.result
        if last != res.base + entry.relative:
            entry.status = "wrong-offset"
            entry.detail = (f"the batch there holds offsets {fields[0]}..{last}, not last "
                            f"offset {res.base + entry.relative}")
        else:
            entry.status = "ok"
        self.boundaries.append(_Boundary(entry.position, last, fields[8], res.max_timestamp))

    def _stopped(self, r: _binding.ScanResult, pos: int, length: int, declared: int = -1) -> None:
        """The scan of the chunk at ``pos`` (``length`` bytes) ended early with ``r``."""
        res = self.result
        stop_at = pos + r.valid_bytes
        if r.stop_reason == "zeros":
            nonzero = _first_nonzero(self.fd, pos + length, res.file_size)
            if nonzero < 0:
                res.valid_bytes = stop_at
                res.zero_tail = res.file_size - stop_at
                return
            self.stop = _Stop("log-zeros", stop_at, self.expected,
                              f"bytes {stop_at}..{nonzero - 1} are zeros but data follows at "
                              f"byte {nonzero} (a lost page?)", self.expected)
        elif r.stop_reason == "torn":
            declared = declared if declared > 0 else -1
            self.stop = _Stop("log-torn", stop_at, self.expected,
                              f"the batch at byte {stop_at} runs past the end of the file "
                              + (f"(it declares {declared} bytes, {res.file_size - stop_at} "
                                 "remain)" if declared > 0 else
                                 f"({res.file_size - stop_at} bytes of it remain)")
                              + ": a torn write, or a damaged length", self.expected)
        elif r.stop_reason == "offset":
            self.stop = self._offset_stop(stop_at, r.stop_detail)
        else:
            self.stop = _Stop("log-corrupt", stop_at, self.expected,
                              f"the batch at byte {stop_at} is damaged at byte "
                              f"{r.stop_position}: {r.stop_detail}", self.expected)

    def _offset_stop(self, stop_at: int, detail: str) -> _Stop:
        """Offsets go backwards at ``stop_at``. When the batch before it jumped forward
        (baseOffset is not covered by the CRC) and this one continues the batch before
        that, the jump is the damage: blame the earlier batch."""
        walked: list[_Header] = []
        for header, _ in _walk(self.fd, 0, stop_at + HEADER_SIZE):
            walked.append(header)
            if header.position >= stop_at:
                break
        if len(walked) >= 2 and walked[-1].position == stop_at:
            bad, suspect = walked[-1], walked[-2]
            before = walked[-3].last_offset + 1 if len(walked) >= 3 else self.result.base
            if before <= bad.base_offset < suspect.base_offset:
                _recount(self.result, walked[:-2])
                return _Stop("log-offsets", suspect.position, suspect.base_offset,
                             f"the batch at byte {suspect.position} claims offsets "
                             f"{suspect.base_offset}..{suspect.last_offset}, past the batch after "
                             f"it (offset {bad.base_offset}): its baseOffset is damaged (the CRC "
                             "does not cover it)", before)
        return _Stop("log-offsets", stop_at, self.expected,
                     f"the batch at byte {stop_at}: {detail}", self.expected)


def _recount(res: SegmentResult, kept: list[_Header]) -> None:
    """Counts exactly the batches ``kept`` (the valid prefix moved back to their end)."""
    res.batches = len(kept)
    res.records = sum(h.record_count for h in kept)
    res.max_timestamp, res.offset_of_max_timestamp = -1, -1
    for h in kept:
        if h.max_timestamp > res.max_timestamp:
            res.max_timestamp, res.offset_of_max_timestamp = h.max_timestamp, h.last_offset

def _first_nonzero(fd: int, start: int, end: int) -> int:
    """Position of the first non-zero byte in [start, end), or -1."""
    position = start
    while position < end:
        chunk = _pread(fd, min(CHUNK_BYTES, end - position), position)
        if not chunk:
            break
        stripped = chunk.lstrip(b"\x00")
        if stripped:
            return position + len(chunk) - len(stripped)
        position += len(chunk)
    return -1


def _span(first: int, end: int) -> str:
    return f"{first}" if end - first == 1 else f"{first}..{end - 1}"


# ---- the checker ----------------------------------------------------------------------------

class _Checker:
    def __init__(self, data_dir: str, topic: str | None, progress: Progress | None) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.topic = topic
        self.progress = progress
        self.report = Report(self.data_dir)
        self.total_bytes = 0
        self.done_bytes = 0

    def problem(self, severity: str, kind: str, partition: str, path: str, what: str, *,
                position: int = -1, offset: int = -1, dropped: str = "") -> int:
        """Records a problem; returns its index (describe_cut fills in ``dropped`` later)."""
        self.report.problems.append(Problem(severity, kind, partition, self.relative(path),
                                            what, position, offset, dropped))
        return len(self.report.problems) - 1

    def note(self, text: str) -> None:
        self.report.notes.append(text)

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.data_dir) if path else ""

    # -- the directory

    def run(self) -> Report:
        began = time.perf_counter()
        d = self.data_dir
        holder = lock_holder(d)
        if holder is not None:
            self.note(f"the directory is open in a running engine ({holder}): an active "
                      "segment may show the tail being written as torn")
        topics = self.load_topics()
        partitions: list[tuple[str, str, bool]] = []  # (name, directory, compacted)
        for name, (count, compacted) in sorted(topics.items()):
            if self.topic is not None and name != self.topic:
                continue
            for p in range(count):
                directory = os.path.join(d, f"{name}-{p}")
                if not os.path.isdir(directory):
                    self.problem(ERROR, "partition-missing", f"{name}-{p}", directory,
                                 f"topic {name!r} has {count} partitions but there is no "
                                 f"directory for partition {p}: the engine would start it "
                                 "empty", dropped="every record of the partition (already gone)")
                    continue
                partitions.append((f"{name}-{p}", directory, compacted))
        if self.topic is not None and self.topic not in topics:
            raise errors.UnknownTopicError(f"there is no topic {self.topic!r} in {d}")
        if self.topic is None:
            self.check_top_level(topics)
        for _, directory, _ in partitions:
            for entry in os.scandir(directory):
                if entry.name.endswith(LOG_SUFFIX) and entry.is_file():
                    self.total_bytes += entry.stat().st_size
        for name, directory, compacted in partitions:
            self.check_partition(name, directory, compacted)
        if self.topic is None:
            self.check_producer_ids()
        self.report.bytes_checked = self.done_bytes
        self.report.seconds = time.perf_counter() - began
        return self.report

    def load_topics(self) -> dict[str, tuple[int, bool]]:
        """name -> (partition count, compacted) from topics/*.json."""
        out: dict[str, tuple[int, bool]] = {}
        directory = os.path.join(self.data_dir, TOPICS_DIR)
        if not os.path.isdir(directory):
            strays = [n for n in os.listdir(self.data_dir)
                      if os.path.isdir(os.path.join(self.data_dir, n)) and "-" in n]
            if strays:
                self.problem(ERROR, "metadata-missing", "", directory,
                             f"there is no {TOPICS_DIR}/ directory, so the engine sees no topics "
                             f"and ignores the {len(strays)} partition directories here (creating "
                             "a topic of the same name would delete them)")
                self.report.unrepairable.append(f"{TOPICS_DIR}/ is missing")
            return out
        for entry in sorted(os.listdir(directory)):
            path = os.path.join(directory, entry)
            if entry.endswith(".tmp"):
                self.note(f"{self.relative(path)}: a topic metadata file an interrupted write "
                          "left; open removes it")
                continue
            if not entry.endswith(".json"):
                continue
            try:
                document = json.loads(_read_file(path) or b"")
                name = validate_topic_name(document["name"])
                count = int(document["partitions"])
                overrides = dict(document.get("config", {}))
                state = document.get("state", "live")
                if count < 1 or state not in ("live", "deleting"):
                    raise ValueError(f"partitions {count}, state {state!r}")
            except (ValueError, KeyError, TypeError, errors.ConfigError) as exc:
                self.problem(ERROR, "metadata-corrupt", "", path,
                             f"topic metadata does not parse ({exc}): the engine refuses to "
                             "open the directory until it is fixed or removed")
                self.report.unrepairable.append(f"{self.relative(path)} does not parse")
                continue
            if state == "deleting":
                self.note(f"topic {name!r} was being deleted when the engine stopped; open "
                          "finishes deleting it")
                continue
            policy = str(overrides.get("cleanup.policy", ""))
            out[name] = (count, "compact" in policy)
        return out

    def check_top_level(self, topics: dict[str, tuple[int, bool]]) -> None:
        d = self.data_dir
        if not os.path.exists(os.path.join(d, CLEAN_SHUTDOWN_FILE)) and topics:
            self.note("the last shutdown was not clean (or an engine has the directory open): "
                      "the next open re-validates every segment past each partition's "
                      "recovery point")
        cluster_id = _read_file(os.path.join(d, CLUSTER_ID_FILE))
        if cluster_id is None:
            if topics:
                self.note(f"no {CLUSTER_ID_FILE}: the next open makes a new cluster id (clients "
                          "that remember the old one see a different cluster)")
        elif not cluster_id.strip() or len(cluster_id) > 64 or not cluster_id.strip().isascii():
            self.problem(WARNING, "cluster-id-corrupt", "", os.path.join(d, CLUSTER_ID_FILE),
                         f"{CLUSTER_ID_FILE} holds {cluster_id[:40]!r}, not a cluster id")
        known = {f"{name}-{p}" for name, (count, _) in topics.items() for p in range(count)}
        for entry in sorted(os.listdir(d)):
            path = os.path.join(d, entry)
            head, _, tail = entry.rpartition("-")
            if os.path.isdir(path) and head and tail.isdigit() and entry not in known:
                self.note(f"{entry}/ belongs to no topic (left by an interrupted create or "
                          "delete): the engine ignores it")

    def check_producer_ids(self) -> None:
        path = os.path.join(self.data_dir, PRODUCER_IDS_FILE)
        data = _read_file(path)
        largest = self.report.largest_producer_id
        if data is None:
            if largest >= 0:
                self.problem(ERROR, "producer-ids-missing", "", path,
                             f"{PRODUCER_IDS_FILE} is missing but partitions track producer ids "
                             f"up to {largest}: the engine would hand out ids from 0 again, "
                             "reusing ids whose sequence state the partitions keep")
                self.report.unrepairable.append(
                    f"{PRODUCER_IDS_FILE}: write a multiple of {PRODUCER_ID_BLOCK} above {largest}")
            return
        try:
            value = int(data.decode("ascii").strip())
            if value < 0:
                raise ValueError("negative")
        except (UnicodeDecodeError, ValueError):
            self.problem(ERROR, "producer-ids-corrupt", "", path,
                         f"{PRODUCER_IDS_FILE} holds {data[:40]!r}, not a number: the engine "
                         "would hand out producer ids from 0 again"
                         + (f", reusing ids up to {largest} that partitions still track"
                            if largest >= 0 else ""))
            self.report.unrepairable.append(
                f"{PRODUCER_IDS_FILE}: write a multiple of {PRODUCER_ID_BLOCK} above "
                f"{max(largest, 0)}")
            return
        if largest >= value:
            self.problem(ERROR, "producer-ids-behind", "", path,
                         f"{PRODUCER_IDS_FILE} says ids below {value} were handed out, but a "
                         f"partition tracks producer id {largest}: ids would be reused")
            self.report.unrepairable.append(
                f"{PRODUCER_IDS_FILE}: write a multiple of {PRODUCER_ID_BLOCK} above {largest}")

    # -- one partition

    def check_partition(self, name: str, directory: str, compacted: bool) -> None:
        try:
            self._check_partition(name, directory, compacted)
        except FileNotFoundError as exc:
            # A running engine removed a file meanwhile (retention, a roll's snapshot pruning).
            self.note(f"{name}: {exc.filename} disappeared while it was checked (a running "
                      "engine's retention or cleaning); verify again with the engine stopped")

    def _check_partition(self, name: str, directory: str, compacted: bool) -> None:
        part = PartitionResult(name, directory, compacted=compacted)
        self.report.partitions.append(part)
        names = sorted(os.listdir(directory))
        if CLEANER_CHECKPOINT_FILE in names:
            part.compacted = True  # cleaned once: its segments may have gaps
        for entry in names:
            if entry.endswith(LEFTOVER_SUFFIXES):
                kind = ("an interrupted cleaning's committed swap, which open completes"
                        if entry.endswith(LOG_SUFFIX + SWAP_SUFFIX) else
                        "left by an interrupted operation; open removes it")
                self.note(f"{name}/{entry}: {kind}")
        bases = sorted(int(n[:20]) for n in names
                       if n.endswith(LOG_SUFFIX) and len(n) == 24 and n[:20].isdigit())
        base_set = set(bases)
        for entry in names:
            stem = entry.split(".", 1)[0]
            if (entry.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX)) and stem.isdigit()
                    and len(stem) == 20 and int(stem) not in base_set):
                self.note(f"{name}/{entry}: an index without its log; open removes it")
        checkpoint, why = read_partition_checkpoint(directory)
        part.checkpoint = checkpoint
        checkpoint_path = os.path.join(directory, CHECKPOINT_FILE)
        if checkpoint is None:
            consequence = ("the next open re-validates every segment, and the log start "
                           "offset falls back to the first segment's base")
            if why == "no checkpoint file":
                self.problem(WARNING, "checkpoint-missing", name, checkpoint_path,
                             f"missing: {consequence}")
            else:
                detail = why.split(" (", 1)[1].split("):", 1)[0] if " (" in why else why
                self.problem(WARNING, "checkpoint-corrupt", name, checkpoint_path,
                             f"does not parse ({detail}): {consequence}")
        for i, base in enumerate(bases):
            next_base = bases[i + 1] if i + 1 < len(bases) else None
            seg = self.check_segment(part, base, next_base)
            if seg.damaged:
                self.cut(part, seg, seg.valid_bytes, bases[i + 1:], seg.problem)
                break
            if i and not part.compacted:
                previous = part.segments[-2]
                if previous.next_offset != base:
                    at = self.problem(
                        ERROR, "log-gap", name, seg.path,
                        f"the segment before it ends at offset {previous.next_offset - 1}, but "
                        f"this one starts at {base}: offsets {_span(previous.next_offset, base)} "
                        "are missing", position=0, offset=previous.next_offset)
                    self.cut(part, previous, previous.valid_bytes, bases[i:], at)
                    break
        if not bases:
            return
        self.check_checkpoint_offsets(part, bases)
        self.check_snapshots(part, names)
        self.check_txn_indexes(part, names)
        self.check_cleaner_checkpoint(part)

    def cut(self, part: PartitionResult, seg: SegmentResult, position: int, doomed: list[int],
            problem: int) -> None:
        """The repair keeps ``seg``'s bytes before ``position`` and removes the segments
        ``doomed`` after it (what follows a hole cannot continue the log: the engine's
        recovery rule); ``problem`` (an index into the problems) learns what goes."""
        part.cut = (seg.base, position)
        pieces = []
        if seg.file_size > position:
            pieces.append(f"bytes {position}..{seg.file_size - 1} of "
                          f"{os.path.basename(seg.path)} (offsets from {seg.next_offset})")
        if doomed:
            size = sum(_size(self.segment_path(part.directory, b, LOG_SUFFIX)) for b in doomed)
            names = segment_name(doomed[0]) + LOG_SUFFIX + (
                f"..{segment_name(doomed[-1])}{LOG_SUFFIX}" if len(doomed) > 1 else "")
            pieces.append(f"{len(doomed)} later segment(s) ({names}, {size} bytes, offsets from "
                          f"{doomed[0]})")
            for later in doomed:
                for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX):
                    path = self.segment_path(part.directory, later, suffix)
                    if os.path.exists(path):
                        part.remove[path] = "after the cut"
                self.done_bytes += _size(self.segment_path(part.directory, later, LOG_SUFFIX))
            self.tick()
        p = self.report.problems[problem]
        self.report.problems[problem] = Problem(
            p.severity, p.kind, p.partition, p.path, p.what, p.position, p.offset,
            "repair drops " + " and ".join(pieces) if pieces else "")

    def segment_path(self, directory: str, base: int, suffix: str) -> str:
        return os.path.join(directory, segment_name(base) + suffix)

    def tick(self) -> None:
        if self.progress is not None:
            self.progress(self.done_bytes, self.total_bytes)

    def check_segment(self, part: PartitionResult, base: int, next_base: int | None
                      ) -> SegmentResult:
        log_path = self.segment_path(part.directory, base, LOG_SUFFIX)
        index_path = self.segment_path(part.directory, base, INDEX_SUFFIX)
        time_path = self.segment_path(part.directory, base, TIME_INDEX_SUFFIX)
        fd = os.open(log_path, os.O_RDONLY)
        try:
            result = SegmentResult(base, log_path, os.fstat(fd).st_size, next_offset=base)
            part.segments.append(result)
            index_data = _read_file(index_path)
            entries: list[_OffsetEntry] = []
            if index_data is None:
                self.problem(WARNING, "index-missing", part.name, index_path,
                             "missing: the next open rebuilds it from the log")
            else:
                entries, trouble = _parse_offset_index(index_data)
                if trouble:
                    self.problem(WARNING, "index-corrupt", part.name, index_path,
                                 f"{trouble}: the engine uses the {len(entries)} entries before "
                                 "it, and rebuilds the file when it recovers the segment")
                    part.remove[index_path] = "unusable"
            start = self.done_bytes

            def moved(position: int) -> None:
                self.done_bytes = start + position
                self.tick()

            check = _SegmentCheck(fd, result, not part.compacted, entries, moved)
            check.run()
            self.done_bytes = start + result.file_size
            self.tick()
            stop = check.stop
            if stop is None and next_base is not None and result.next_offset > next_base:
                stop = self.find_batch_past(fd, result, next_base,
                                            f"the next segment's base offset {next_base}")
            if stop is None and result.next_offset - 1 - base > MAX_RELATIVE_OFFSET:
                stop = self.find_batch_past(fd, result, base + MAX_RELATIVE_OFFSET + 1,
                                            "the segment's int32 offset range")
            if stop is not None:
                result.damaged = True
                result.valid_bytes = stop.position
                result.next_offset = stop.next_offset
                result.zero_tail = 0
                result.problem = self.problem(ERROR, stop.kind, part.name, log_path, stop.what,
                                              position=stop.position, offset=stop.offset)
            elif result.zero_tail and next_base is not None:
                # Sealing trims a segment to its batches, and a roll creates the next
                # segment before it seals this one: a crash between the two leaves these
                # zeros (whether pages of batches were lost instead, the offsets tell: the
                # next segment must start where this one ends, checked per partition).
                self.problem(WARNING, "log-untrimmed", part.name, log_path,
                             f"a sealed segment with {result.zero_tail} zero bytes after its "
                             f"last batch (from byte {result.valid_bytes}): a roll interrupted "
                             "before it trimmed the file", position=result.valid_bytes,
                             offset=result.next_offset)
                part.trim[log_path] = result.valid_bytes
            elif result.zero_tail:
                self.note(f"{part.name}/{os.path.basename(log_path)}: {result.zero_tail} zero "
                          "bytes after the last batch (space allocated ahead of the writes, "
                          "left by a crash); open ignores them")
            self.check_offset_entries(part, result, entries, index_path)
            self.check_time_index(part, result, check, time_path)
            return result
        finally:
            os.close(fd)

    def find_batch_past(self, fd: int, result: SegmentResult, limit: int, what: str) -> _Stop:
        kept: list[_Header] = []
        expected = result.base
        for header, _ in _walk(fd, 0, result.valid_bytes):
            if header.last_offset >= limit:
                _recount(result, kept)
                return _Stop("log-offsets", header.position, header.base_offset,
                             f"the batch at byte {header.position} holds offsets "
                             f"{header.base_offset}..{header.last_offset}, past {what} (a "
                             "damaged baseOffset: the CRC does not cover it)", expected)
            kept.append(header)
            expected = header.last_offset + 1
        return _Stop("log-offsets", result.valid_bytes, result.next_offset,
                     f"the segment's offsets run past {what}", result.next_offset)

    def check_offset_entries(self, part: PartitionResult, result: SegmentResult,
                             entries: list[_OffsetEntry], path: str) -> None:
        damaged = result.damaged
        lost_tail = []
        for entry in entries:
            if entry.status == "ok" and entry.position >= result.valid_bytes:
                entry.status = "past-end"  # a cut placed before it by a later check
            if entry.status in ("ok", "unchecked"):
                continue
            part.remove[path] = "disagrees with the log"
            if entry.status == "past-end":
                if not damaged:
                    lost_tail.append(entry)
                continue
            what = ("points inside a batch, not at its start" if entry.status == "inside"
                    else entry.detail)
            self.problem(ERROR, "index-mismatch", part.name, path,
                         f"entry {entry.slot} (offset {result.base + entry.relative}, byte "
                         f"{entry.position}) {what}: a read near that offset could start at "
                         "the wrong batch", position=entry.slot * 8,
                         offset=result.base + entry.relative)
        if lost_tail:
            first = lost_tail[0]
            self.problem(ERROR, "log-lost-tail", part.name, result.path,
                         f"the log ends at byte {result.valid_bytes} (offset "
                         f"{result.next_offset}), but its .index names a batch at byte "
                         f"{first.position} holding offset {result.base + first.relative}: "
                         "records written before that index entry are gone",
                         position=result.valid_bytes, offset=result.next_offset,
                         dropped=f"offsets {result.next_offset}..{result.base + lost_tail[-1].relative} "
                         "at least (already gone)")

    def check_time_index(self, part: PartitionResult, result: SegmentResult,
                         check: _SegmentCheck, path: str) -> None:
        damaged = result.damaged
        data = _read_file(path)
        if data is None:
            self.problem(WARNING, "timeindex-missing", part.name, path,
                         "missing: the next open rebuilds it from the log")
            part.remove[path] = "missing"
            return
        entries, trouble = _parse_time_index(data)
        if trouble:
            self.problem(WARNING, "timeindex-corrupt", part.name, path,
                         f"{trouble}: the engine uses the {len(entries)} entries before it and "
                         "rebuilds the file when it recovers the segment")
            part.remove[path] = "unusable"
        by_last = {b.last_offset: b for b in check.boundaries}
        last_offsets = [b.last_offset for b in check.boundaries]  # increasing
        last_relative = result.next_offset - 1 - result.base
        fd = -1
        try:
            for slot, timestamp, relative in entries:
                offset = result.base + relative
                if relative > last_relative or not result.batches:
                    part.remove[path] = "disagrees with the log"
                    if not damaged:
                        self.problem(ERROR, "log-lost-tail", part.name, result.path,
                                     f"the log ends at offset {result.next_offset}, but its "
                                     f".timeindex entry {slot} names offset {offset}: records "
                                     "written before that entry are gone",
                                     position=result.valid_bytes, offset=result.next_offset,
                                     dropped=f"offsets {result.next_offset}..{offset} at least "
                                     "(already gone)")
                    break
                boundary = by_last.get(offset)
                if boundary is not None and boundary.max_timestamp == timestamp and \
                        boundary.max_before < timestamp:
                    continue  # the usual entry: written with the offset entry of its batch
                if fd < 0:
                    fd = os.open(result.path, os.O_RDONLY)
                why = self.time_entry_wrong(fd, result, check.boundaries, last_offsets, offset,
                                            timestamp)
                if why:
                    part.remove[path] = "disagrees with the log"
                    self.problem(ERROR, "timeindex-mismatch", part.name, path,
                                 f"entry {slot} (timestamp {timestamp}, offset {offset}): {why}: "
                                 "a search by time could start after the record it should find",
                                 position=slot * 12, offset=offset)
        finally:
            if fd >= 0:
                os.close(fd)

    @staticmethod
    def time_entry_wrong(fd: int, result: SegmentResult, boundaries: list[_Boundary],
                         last_offsets: list[int], offset: int, timestamp: int) -> str:
        """Why the time entry (timestamp, offset) breaks its rule, or "": walks from the
        confirmed offset entry before ``offset`` (at most an index interval of batches)."""
        start, max_before = 0, -1
        i = bisect.bisect_left(last_offsets, offset)  # boundaries before the entry's batch
        if i:
            start, max_before = boundaries[i - 1].position, boundaries[i - 1].max_before
        # An index interval of batches (4 KiB by default), read a little more at a time.
        for header, _ in _walk(fd, start, result.valid_bytes, WALK_BYTES):
            if header.last_offset == offset:
                if header.max_timestamp != timestamp:
                    return (f"the batch with last offset {offset} has max timestamp "
                            f"{header.max_timestamp}")
                if max_before >= timestamp:
                    return (f"an earlier batch already reached timestamp {max_before}")
                return ""
            if header.last_offset > offset:
                return f"no batch ends at offset {offset}"
            max_before = max(max_before, header.max_timestamp)
        return f"no batch ends at offset {offset}"

    def check_checkpoint_offsets(self, part: PartitionResult, bases: list[int]) -> None:
        checkpoint = part.checkpoint
        if checkpoint is None:
            return
        path = os.path.join(part.directory, CHECKPOINT_FILE)
        end = part.log_end
        if checkpoint.log_start_offset < bases[0]:
            self.problem(ERROR, "log-lost-head", part.name, path,
                         f"the log start offset is {checkpoint.log_start_offset}, but the first "
                         f"segment starts at {bases[0]}: offsets "
                         f"{_span(checkpoint.log_start_offset, bases[0])} are gone (a deleted "
                         "segment file?)", offset=checkpoint.log_start_offset,
                         dropped=f"offsets {_span(checkpoint.log_start_offset, bases[0])} "
                         "(already gone)")
        if part.cut is not None:
            return  # the damage found in the log explains the rest
        if checkpoint.recovery_point > end:
            self.problem(ERROR, "log-lost-tail", part.name, path,
                         f"the recovery point says every offset below "
                         f"{checkpoint.recovery_point} was fsynced, but the log ends at {end}",
                         offset=end, dropped=f"offsets {_span(end, checkpoint.recovery_point)} "
                         "(already gone)")
        elif checkpoint.log_start_offset > end:
            self.problem(ERROR, "log-lost-tail", part.name, path,
                         f"the log start offset {checkpoint.log_start_offset} is past the log "
                         f"end {end}", offset=end)

    def check_snapshots(self, part: PartitionResult, names: list[str]) -> None:
        end = part.log_end
        for entry in names:
            if not (entry.endswith(SNAPSHOT_SUFFIX) and len(entry) == 29 and entry[:20].isdigit()):
                continue
            path = os.path.join(part.directory, entry)
            offset = int(entry[:20])
            data = _read_file(path) or b""
            why = _snapshot_trouble(data, offset)
            if why:
                self.problem(WARNING, "snapshot-corrupt", part.name, path,
                             f"{why}: the engine skips it and replays the log from an older "
                             "snapshot or the first segment instead")
                part.remove[path] = "unusable"
                continue
            for producer_id in _snapshot_producers(data):
                self.report.largest_producer_id = max(self.report.largest_producer_id,
                                                      producer_id)
            if offset <= end:
                part.replay_from = max(part.replay_from, offset)
            if offset > end and part.cut is None:
                self.problem(ERROR, "log-lost-tail", part.name, path,
                             f"producer state was saved when the log ended at offset {offset}, "
                             f"but the log now ends at {end}", offset=end,
                             dropped=f"offsets {_span(end, offset)} (already gone)")

    def check_txn_indexes(self, part: PartitionResult, names: list[str]) -> None:
        """Entries must be well formed and name ABORT markers; with transactions in the
        partition, every aborted transaction needs its entry."""
        entries: dict[int, list[tuple[int, int, int, int]]] = {}  # segment base -> entries
        bases = {int(n[:20]) for n in names
                 if n.endswith(LOG_SUFFIX) and len(n) == 24 and n[:20].isdigit()}
        evidence = False
        for entry in names:
            if not (entry.endswith(TXN_INDEX_SUFFIX) and entry[:20].isdigit()
                    and len(entry) == 20 + len(TXN_INDEX_SUFFIX)):
                continue
            evidence = True
            base = int(entry[:20])
            path = os.path.join(part.directory, entry)
            data = _read_file(path) or b""
            parsed, trouble = [], ""
            whole = len(data) - len(data) % _TXN_ENTRY.size
            for slot, (version, pid, first, last, lso) in enumerate(
                    _TXN_ENTRY.iter_unpack(data[:whole])):
                if version != 0 or not 0 <= first <= last or pid < 0:
                    trouble = (f"entry {slot} (version {version}, producer {pid}, offsets "
                               f"{first}..{last}) is not an aborted transaction")
                    break
                parsed.append((pid, first, last, lso))
            if not trouble and len(data) % _TXN_ENTRY.size:
                trouble = f"a torn entry of {len(data) % _TXN_ENTRY.size} bytes at its end"
            if base not in bases:
                self.note(f"{part.name}/{entry}: its segment is gone; open moves its entries to "
                          "the segment holding their markers")
            if trouble:
                self.problem(ERROR, "txnindex-corrupt", part.name, path,
                             f"{trouble}: aborted transactions after it are not known to "
                             "read_committed readers until the file is rebuilt")
                part.remove[path] = "unusable"
                self.rebuild_txn(part, base)
            entries[base] = parsed
        # Transactions leave traces in the producer snapshots too, which survive the loss of
        # every .txnindex file.
        for entry in names:
            if entry.endswith(SNAPSHOT_SUFFIX) and os.path.join(part.directory, entry) not in part.remove:
                data = _read_file(os.path.join(part.directory, entry)) or b""
                if any(coordinator_epoch >= 0 or txn_first >= 0 for *_, coordinator_epoch, txn_first
                       in _snapshot_entries(data)):
                    evidence = True
        if not evidence:
            return
        self.match_markers(part, entries)

    def rebuild_txn(self, part: PartitionResult, base: int) -> None:
        part.rebuild_txn_from = base if part.rebuild_txn_from is None else min(
            part.rebuild_txn_from, base)

    def match_markers(self, part: PartitionResult, entries: dict[int, list[tuple[int, int, int, int]]]
                      ) -> None:
        """Walks every batch header of the kept log: transactional batches open a
        producer's transaction, markers close it; an ABORT that closes one must have its
        entry, and every entry must name an ABORT marker of its producer."""
        open_txn: dict[int, int] = {}
        # marker offset -> (producer, first offset, last stable offset after it)
        aborts: dict[int, tuple[int, int, int]] = {}
        aborted_markers: dict[int, int] = {}      # marker offset -> producer (every ABORT)
        for seg in part.segments:
            if part.cut is not None and seg.base > part.cut[0]:
                break
            fd = os.open(seg.path, os.O_RDONLY)
            try:
                for header, batch in _walk(fd, 0, seg.valid_bytes):
                    if header.producer_id < 0:
                        continue
                    self.report.largest_producer_id = max(self.report.largest_producer_id,
                                                          header.producer_id)
                    if header.attributes & _ATTR_CONTROL:
                        try:
                            marker = decode_batch(bytes(batch)).control_record()
                        except (errors.CorruptRecordError, ValueError):
                            continue
                        first = open_txn.pop(header.producer_id, -1)
                        if marker.control_type == CONTROL_ABORT:
                            aborted_markers[header.base_offset] = header.producer_id
                            if first >= 0:
                                # The LSO right after the abort, as the partition computed
                                # it: the earliest transaction still open, or the offset
                                # after the marker.
                                lso = min(open_txn.values(), default=header.base_offset + 1)
                                aborts[header.base_offset] = (header.producer_id, first, lso)
                    elif header.attributes & _ATTR_TRANSACTIONAL:
                        open_txn.setdefault(header.producer_id, header.base_offset)
            finally:
                os.close(fd)
        # The walk saw every transaction's start only if no segment left the log's head.
        whole = bool(part.segments) and part.segments[0].base == 0
        indexed: dict[int, tuple[int, int]] = {}
        for base, listed in entries.items():
            path = os.path.join(part.directory, segment_name(base) + TXN_INDEX_SUFFIX)
            if path in part.remove:
                continue
            for slot, (pid, first, last, lso) in enumerate(listed):
                indexed[last] = (pid, first)
                if last >= part.log_end:
                    continue  # past the kept log: open drops such entries itself
                if part.compacted:
                    continue  # the cleaner removes markers and keeps their entries
                why = ""
                if aborted_markers.get(last) != pid:
                    why = (f"offset {last} is not an ABORT marker of that producer: "
                           "read_committed readers would drop records that were not aborted")
                elif last in aborts and aborts[last][1] != first:
                    why = (f"the transaction began at offset {aborts[last][1]}: read_committed "
                           "readers would be served some of its records, or lose others")
                elif whole and last in aborts and aborts[last][2] != lso:
                    why = (f"its last stable offset {lso} should be {aborts[last][2]}: a fetch "
                           "could stop looking for aborted transactions too early")
                if why:
                    self.problem(ERROR, "txnindex-mismatch", part.name, path,
                                 f"entry {slot} says producer {pid} aborted offsets "
                                 f"{first}..{last}, but {why}", position=slot * _TXN_ENTRY.size,
                                 offset=last)
                    part.remove[path] = "disagrees with the log"
                    self.rebuild_txn(part, base)
        bases = [s.base for s in part.segments]
        for last, (pid, first, _lso) in sorted(aborts.items()):
            if last in indexed:
                continue
            seg_base = max((b for b in bases if b <= last), default=bases[0])
            path = os.path.join(part.directory, segment_name(seg_base) + TXN_INDEX_SUFFIX)
            if part.remove.get(path) == "unusable":
                continue  # reported as a damaged file already
            if last >= part.replay_from:
                # Open replays the log from its newest snapshot and indexes the aborts it
                # meets: an entry a crash or a full disk kept from the file comes back.
                self.problem(WARNING, "txnindex-missing-entry", part.name, path,
                             f"producer {pid} aborted offsets {first}..{last}, and no .txnindex "
                             "lists it yet; the next open indexes it (its ABORT marker is past "
                             f"the newest producer snapshot, at {part.replay_from})", offset=last)
                continue
            self.problem(ERROR, "txnindex-missing-entry", part.name, path,
                         f"producer {pid} aborted offsets {first}..{last} (its ABORT marker is "
                         f"at {last}), but no .txnindex lists it: read_committed readers would "
                         "be served the aborted records", offset=last)
            self.rebuild_txn(part, seg_base)

    def check_cleaner_checkpoint(self, part: PartitionResult) -> None:
        path = os.path.join(part.directory, CLEANER_CHECKPOINT_FILE)
        data = _read_file(path)
        if data is None:
            return
        try:
            lines = data.decode("ascii").split("\n")
            if lines[0] != str(CHECKPOINT_VERSION) or len(lines) != 4 or lines[3] != "":
                raise ValueError("unexpected layout")
            fields = dict(line.split(" ") for line in lines[1:3])
            first_dirty = int(fields["first-dirty"])
            int(fields["next-horizon-ms"])
        except (UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
            self.problem(WARNING, "cleaner-checkpoint-corrupt", part.name, path,
                         f"does not parse ({exc}): the cleaner starts over and cleans the whole "
                         "log once")
            part.remove[path] = "unusable"
            return
        if first_dirty > part.log_end and part.cut is None:
            self.problem(WARNING, "cleaner-checkpoint-inconsistent", part.name, path,
                         f"the first dirty offset {first_dirty} is past the log end "
                         f"{part.log_end}: nothing would be cleaned until the log passes it")
            part.remove[path] = "inconsistent"


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _snapshot_trouble(data: bytes, offset: int) -> str:
    """Why a producer snapshot (Kafka's ProducerSnapshot v1) is unusable, or ""."""
    if len(data) < _SNAPSHOT_HEAD.size:
        return f"{len(data)} bytes, too short for a producer snapshot"
    version, crc, count = _SNAPSHOT_HEAD.unpack_from(data)
    if version != _SNAPSHOT_VERSION:
        return f"version {version}, expected {_SNAPSHOT_VERSION}"
    if _binding.crc32c(memoryview(data)[6:]) != crc:
        return "its CRC-32C does not match its bytes"
    if count < 0 or len(data) != _SNAPSHOT_HEAD.size + count * _SNAPSHOT_ENTRY.size:
        return f"{len(data)} bytes do not hold the {count} producers it counts"
    for i, entry in enumerate(_snapshot_entries(data)):
        last_offset = entry[3]
        if last_offset >= offset:
            return (f"producer {entry[0]} (entry {i}) has a batch at offset {last_offset}, not "
                    f"below the snapshot's offset {offset}")
    return ""


def _snapshot_entries(data: bytes) -> list[tuple[int, ...]]:
    if len(data) < _SNAPSHOT_HEAD.size:
        return []
    count = _SNAPSHOT_HEAD.unpack_from(data)[2]
    body = data[_SNAPSHOT_HEAD.size:]
    if count < 0 or len(body) != count * _SNAPSHOT_ENTRY.size:
        return []
    return list(_SNAPSHOT_ENTRY.iter_unpack(body))


def _snapshot_producers(data: bytes) -> list[int]:
    return [entry[0] for entry in _snapshot_entries(data)]


def verify(data_dir: str | os.PathLike[str], topic: str | None = None,
           progress: Progress | None = None) -> Report:
    """Checks every file of ``data_dir`` (or of one topic's partitions) and returns what is
    wrong. Changes nothing. ``progress(done_bytes, total_bytes)`` is called as segments are
    scanned. O(bytes of every segment)."""
    return _Checker(os.fspath(data_dir), topic, progress).run()


# ---- repair -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RepairAction:
    """One change ``apply_repair`` makes: "truncate" (``path`` to ``size`` bytes),
    "remove" (``path``), "recovery-point" (``path`` is a partition directory, ``size`` the
    offset) or "force-recovery" (remove the clean-shutdown marker)."""

    action: str
    path: str
    size: int
    why: str


def plan_repair(report: Report) -> list[RepairAction]:
    """What ``apply_repair`` would do for ``report``'s problems, in order."""
    actions: list[RepairAction] = []
    for part in report.partitions:
        if part.cut is not None:
            base, position = part.cut
            seg = next(s for s in part.segments if s.base == base)
            if position < seg.file_size:
                actions.append(RepairAction("truncate", seg.path, position,
                                            f"keep the valid prefix ({position} of "
                                            f"{seg.file_size} bytes)"))
        for path, size in sorted(part.trim.items()):
            if path not in part.remove and (part.cut is None or path != segment_path_of(part)):
                actions.append(RepairAction("truncate", path, size,
                                            "trim the zeros an interrupted roll left"))
        for path, why in sorted(part.remove.items()):
            if os.path.exists(path):
                actions.append(RepairAction("remove", path, 0, why))
        if part.rebuild_txn_from is not None:
            for entry in sorted(os.listdir(part.directory)):
                if (entry.endswith(SNAPSHOT_SUFFIX) and entry[:20].isdigit()
                        and int(entry[:20]) > part.rebuild_txn_from):
                    path = os.path.join(part.directory, entry)
                    if path not in part.remove:
                        actions.append(RepairAction(
                            "remove", path, 0, "newer than a rebuilt .txnindex: open replays "
                            "the log from an older snapshot (or the start) and re-indexes the "
                            "aborted transactions"))
        lowest = min([part.cut[0]] if part.cut is not None else [], default=None)
        if lowest is not None and part.checkpoint is not None and \
                part.checkpoint.recovery_point > lowest:
            actions.append(RepairAction("recovery-point", part.directory, lowest,
                                        "re-validate from the cut segment on"))
    if actions:
        actions.append(RepairAction("force-recovery",
                                    os.path.join(report.data_dir, CLEAN_SHUTDOWN_FILE), 0,
                                    "the next open recovers"))
    return actions


def segment_path_of(part: PartitionResult) -> str:
    """The .log the partition's cut truncates ("" without a cut)."""
    if part.cut is None:
        return ""
    return next(s.path for s in part.segments if s.base == part.cut[0])


def apply_repair(report: Report, actions: list[RepairAction]) -> None:
    """Makes the changes ``plan_repair`` planned. The caller holds the directory lock
    (``hold_lock``) and then opens the directory, whose recovery finishes the repair."""
    directories = set()
    for a in actions:
        if a.action == "truncate":
            os.truncate(a.path, a.size)
            fd = os.open(a.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif a.action in ("remove", "force-recovery"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(a.path)
            directories.add(os.path.dirname(a.path))
        elif a.action == "recovery-point":
            part = next(p for p in report.partitions if p.directory == a.path)
            assert part.checkpoint is not None
            write_partition_checkpoint(a.path, PartitionCheckpoint(
                a.size, part.checkpoint.log_start_offset))
    for directory in sorted(directories):
        fsync_directory(directory)
