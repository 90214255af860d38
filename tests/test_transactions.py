"""Idempotent producers and transactions: the partition's producer state (duplicates, gaps,
epochs, wrapping sequences), its snapshots and recovery (clean and unclean reopen, damaged
snapshots, torn tails, truncation), the last stable offset and read_committed reads, the
transaction coordinator through the embedded producer and consumer, and compaction of a
transactional topic.

Partition-level tests build batches with ``encode_batch(producer_id=..., ...)`` as a client
would send them and append them with ``PartitionLog.append``; markers are written with
``append_marker`` as the coordinator writes them. A Hypothesis state machine drives one
partition through appends, retries, refusals, markers, rolls, reopens, torn tails and
truncations against a model derived from what the log holds, and calls ``check()`` after
every step."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import logkernel
from logkernel import _binding, errors
from logkernel.config import EngineConfig, TopicConfig
from logkernel.log import producer_state
from logkernel.log.partition import PartitionLog
from logkernel.log.producer_state import AbortedTxn, next_sequence
from logkernel.records import decode_batch, encode_batch, encode_control_batch

SEQUENCE_MAX = 2**31 - 1
# Tiny segments and indexes, so appends, markers and snapshots cross segment edges often.
TINY = {"segment.bytes": 400, "index.interval.bytes": 60, "segment.index.bytes": 64,
        "max.message.bytes": 2000}
# Engine settings of the coordinator tests: a group's first rebalance does not wait.
ENGINE = {"group.initial.rebalance.delay.ms": 0, "log.cleaner.enable": False}


# ---- helpers --------------------------------------------------------------------------

@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory in /dev/shm when there is one (the tests fsync a lot and need no disk),
    else tmp_path."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="lk-txn-", dir="/dev/shm"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def topic_config(overrides: dict[str, Any] | None = None) -> TopicConfig:
    return TopicConfig(EngineConfig().topic_defaults, TINY if overrides is None else overrides)


def open_log(directory: Path | str, *, clean: bool = True,
             overrides: dict[str, Any] | None = None) -> PartitionLog:
    return PartitionLog(str(directory), "t", 0, topic_config(overrides), clean_shutdown=clean)


def batch(pid: int, epoch: int, seq: int, count: int = 1, *, txn: bool = False,
          tag: bytes = b"") -> bytes:
    """A producer's batch of ``count`` records; values name the producer and sequence."""
    values = [b"p%d-e%d-s%d%s" % (pid, epoch, next_sequence(seq, i), tag) for i in range(count)]
    return encode_batch(values, producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                        transactional=txn)


def plain(count: int = 1, tag: bytes = b"plain") -> bytes:
    return encode_batch([tag + b"-%d" % i for i in range(count)])


def whole_batches(data: bytes) -> list[tuple[int, _binding.BatchHeader]]:
    """(position, header) of every whole batch at the start of ``data``."""
    out = []
    position = 0
    while position + 61 <= len(data):
        size = int.from_bytes(data[position + 8:position + 12], "big") + 12
        if position + size > len(data):
            break
        out.append((position, _binding.parse_header(data[position:position + size])))
        position += size
    return out


def is_aborted(header: _binding.BatchHeader, aborted: list[AbortedTxn]) -> bool:
    return header.is_transactional and not header.is_control and any(
        a.producer_id == header.producer_id and a.first_offset <= header.base_offset <= a.last_offset
        for a in aborted)


def read_committed_records(pl: PartitionLog, max_bytes: int = 150,
                           known_aborted: list[AbortedTxn] | None = None
                           ) -> list[tuple[int, bytes | None]]:
    """(offset, value) of every record a read_committed reader gets, read with
    ``PartitionLog.read_committed`` a few batches at a time, checking each answer: whole
    batches below the LSO only, and the aborted transactions listed are those of the
    partition (``known_aborted``) that overlap what was read (more may be listed, never
    one outside [offset, LSO))."""
    out: list[tuple[int, bytes | None]] = []
    offset = pl.log_start_offset
    while True:
        data, lso, aborted = pl.read_committed(offset, max_bytes)
        if not data:
            assert offset == lso == pl.last_stable_offset, (offset, lso)
            return out
        batches = whole_batches(data)
        assert batches, f"read_committed({offset}) returned no whole batch"
        end = batches[-1][1].base_offset + batches[-1][1].last_offset_delta + 1
        for _, h in whole_batches(data):
            assert h.base_offset + h.last_offset_delta < lso, (h.base_offset, lso)
        # a partial last batch may follow (max_bytes), but never one at or past the LSO
        tail = data[sum(h.size for _, h in batches):]
        if len(tail) >= 8:
            assert int.from_bytes(tail[:8], "big") < lso
        for a in aborted:
            assert a.last_offset >= offset and a.first_offset < lso, (a, offset, lso)
        if known_aborted is not None:
            assert set(aborted) <= set(known_aborted), (aborted, known_aborted)
            overlapping = {a for a in known_aborted if a.last_offset >= offset and a.first_offset < end}
            assert overlapping <= set(aborted), (overlapping, aborted, offset, end)
        for position, h in batches:
            if h.is_control or is_aborted(h, aborted):
                continue
            out.extend((r.offset, r.value) for r in decode_batch(data[position:position + h.size]).records())
        offset = end


def producer_snapshot(pl: PartitionLog) -> dict[int, tuple[int, int, int, int, int]]:
    """pid -> (epoch, last sequence, last offset, open transaction's first offset,
    coordinator epoch): what a snapshot keeps of each producer."""
    return {e.producer_id: (e.epoch, e.last_seq, e.last_offset, e.current_txn_first_offset,
                            e.coordinator_epoch) for e in pl.producer_states()}


def txn_index_entries(directory: Path | str) -> list[AbortedTxn]:
    out: list[AbortedTxn] = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".txnindex"):
            out += producer_state.read_txn_index(os.path.join(directory, name))
    return sorted(out, key=lambda a: a.last_offset)


@dataclass(frozen=True)
class LogState:
    log_end_offset: int
    last_stable_offset: int
    open_transactions: dict[int, int]
    aborted: list[AbortedTxn]
    producers: dict[int, tuple[int, int, int, int, int]]
    committed: list[tuple[int, bytes | None]]


def state_of(pl: PartitionLog) -> LogState:
    pl.check()
    return LogState(pl.log_end_offset, pl.last_stable_offset, pl.open_transactions(),
                    pl.aborted_transactions(0, pl.log_end_offset + 1), producer_snapshot(pl),
                    read_committed_records(pl))


# A partition's history as operations: ("append", bytes) | ("marker", pid, epoch, commit) |
# ("roll",). Replaying a prefix into an empty log gives the state that prefix must leave.
Op = tuple[Any, ...]


def apply(pl: PartitionLog, op: Op) -> tuple[int, int]:
    """Applies one operation; returns the offsets it took [first, next)."""
    if op[0] == "append":
        first, next_offset, _ = pl.append(op[1])
        return first, next_offset
    if op[0] == "marker":
        offset = pl.append_marker(op[1], op[2], op[3])
        return offset, offset + 1
    pl.roll()
    return pl.log_end_offset, pl.log_end_offset


def history() -> list[Op]:
    """Three producers over several segments: 1 idempotent, 2 and 3 transactional (an
    abort, commits, a transaction still open at the end), plain records between."""
    return [
        ("append", batch(1, 0, 0, 2)),
        ("append", batch(2, 0, 0, 1, txn=True)),
        ("append", plain(2)),
        ("append", batch(3, 0, 0, 2, txn=True)),
        ("append", batch(2, 0, 1, 2, txn=True)),
        ("marker", 2, 0, False),
        ("roll",),
        ("append", batch(1, 0, 2, 1)),
        ("append", batch(2, 0, 3, 1, txn=True)),
        ("marker", 3, 0, True),
        ("append", batch(3, 0, 2, 1, txn=True)),
        ("append", plain(1)),
        ("marker", 2, 0, False),
        ("roll",),
        ("append", batch(1, 0, 3, 3)),
        ("append", batch(2, 0, 4, 2, txn=True)),
        ("marker", 3, 0, True),
        ("append", batch(3, 0, 3, 1, txn=True)),
        ("marker", 2, 0, True),
        ("append", batch(1, 0, 6, 1)),
        ("append", batch(2, 0, 6, 1, txn=True)),
        ("append", plain(1)),
        ("marker", 2, 0, False),
        ("append", batch(1, 0, 7, 2)),
    ]


def build(directory: Path, ops: list[Op], *, overrides: dict[str, Any] | None = None
          ) -> list[tuple[int, int]]:
    """Writes the operations into a new log (closed cleanly); returns their offsets."""
    pl = open_log(directory, overrides=overrides)
    offsets = [apply(pl, op) for op in ops]
    pl.close()
    return offsets


def reference_state(directory: Path, ops: list[Op], end: int) -> LogState:
    """The state of a log holding exactly the operations below offset ``end``."""
    pl = open_log(directory)
    for op in ops:
        if op[0] == "roll" or pl.log_end_offset < end:
            apply(pl, op)
        if pl.log_end_offset >= end:
            break
    assert pl.log_end_offset == end, (pl.log_end_offset, end)
    try:
        return state_of(pl)
    finally:
        pl.close()


# ---- producer state: the rules for a client's batches -----------------------------------

@pytest.fixture
def plog(scratch: Path) -> Iterator[PartitionLog]:
    pl = open_log(scratch / "t-0", overrides={})
    yield pl
    pl.check()
    pl.close()


def refused(pl: PartitionLog, record_set: bytes, error: type[Exception]) -> None:
    """The append raises ``error`` and writes nothing."""
    end, size = pl.log_end_offset, pl.size_bytes()
    with pytest.raises(error):
        pl.append(record_set)
    assert (pl.log_end_offset, pl.size_bytes()) == (end, size)


def test_each_of_the_last_five_batches_is_a_duplicate_and_the_sixth_is_not(plog: PartitionLog) -> None:
    written = []
    seq = 0
    for count in (1, 3, 2, 1, 4, 2):
        written.append((batch(7, 0, seq, count), plog.append(batch(7, 0, seq, count))))
        seq += count
    end, size = plog.log_end_offset, plog.size_bytes()
    for record_set, (first, next_offset, _) in written[1:]:
        assert plog.append(record_set) == (first, next_offset, -1)
        assert (plog.log_end_offset, plog.size_bytes()) == (end, size)
    # the sixth-oldest has left the window: it is out of sequence, not a duplicate
    refused(plog, written[0][0], errors.OutOfOrderSequenceError)
    # the same first sequence with another record count is no duplicate either
    refused(plog, batch(7, 0, 13 - 2, 1), errors.OutOfOrderSequenceError)
    # a duplicate of another epoch is no duplicate
    refused(plog, batch(7, 1, 11, 2), errors.OutOfOrderSequenceError)
    assert plog.append(batch(7, 0, seq, 1))[0] == end
    assert [v for _, v in read_committed_records(plog)] == [
        b"p7-e0-s%d" % s for s in range(seq + 1)]


def test_a_gap_in_the_sequence_is_refused_and_the_producer_goes_on(plog: PartitionLog) -> None:
    plog.append(batch(7, 0, 0, 2))
    for bad in (3, 4, 100, SEQUENCE_MAX):
        refused(plog, batch(7, 0, bad), errors.OutOfOrderSequenceError)
    assert plog.append(batch(7, 0, 2))[:2] == (2, 3)


def test_a_new_epoch_starts_at_zero_and_an_older_epoch_is_refused(plog: PartitionLog) -> None:
    plog.append(batch(7, 0, 0, 3))
    refused(plog, batch(7, 1, 3), errors.OutOfOrderSequenceError)
    refused(plog, batch(7, 1, 1), errors.OutOfOrderSequenceError)
    assert plog.append(batch(7, 1, 0, 2))[:2] == (3, 5)
    refused(plog, batch(7, 0, 3), errors.InvalidProducerEpochError)
    refused(plog, batch(7, 0, 0, 3), errors.InvalidProducerEpochError)  # a retry from the old epoch
    assert plog.append(batch(7, 1, 2))[:2] == (5, 6)
    assert producer_snapshot(plog)[7][:2] == (1, 2)


def test_an_epoch_brought_by_a_marker_also_starts_at_zero(plog: PartitionLog) -> None:
    plog.append(batch(7, 0, 0, 3, txn=True))
    plog.append_marker(7, 1, False)  # the coordinator aborts with a bumped epoch
    refused(plog, batch(7, 1, 5, txn=True), errors.OutOfOrderSequenceError)
    assert plog.append(batch(7, 1, 0, txn=True))[0] == 4


def test_an_unknown_producer_may_start_at_any_sequence(plog: PartitionLog) -> None:
    assert plog.append(batch(8, 3, 1000, 2))[:2] == (0, 2)
    assert plog.append(batch(9, 0, SEQUENCE_MAX))[:2] == (2, 3)
    refused(plog, batch(8, 3, 1003), errors.OutOfOrderSequenceError)
    assert plog.append(batch(8, 3, 1002))[:2] == (3, 4)
    assert plog.append(batch(9, 0, 0))[:2] == (4, 5)  # 2^31-1 is followed by 0


def test_sequences_wrap_at_2_31_minus_1(scratch: Path) -> None:
    pl = open_log(scratch / "t-0", overrides={})
    pl.append(batch(7, 0, SEQUENCE_MAX - 4, 3))      # ..., 2^31-3
    wrapping = batch(7, 0, SEQUENCE_MAX - 1, 4)      # 2^31-2, 2^31-1, 0, 1
    assert pl.append(wrapping)[:2] == (3, 7)
    assert pl.append(wrapping)[:2] == (3, 7)         # its retry is a duplicate
    assert producer_snapshot(pl)[7][1] == 1
    refused(pl, batch(7, 0, SEQUENCE_MAX), errors.OutOfOrderSequenceError)
    refused(pl, batch(7, 0, 0), errors.OutOfOrderSequenceError)
    pl.close()
    # the snapshot keeps the last sequence and the record count: the first sequence of a
    # batch that wrapped is computed back across the wrap
    pl = open_log(scratch / "t-0", overrides={})
    try:
        assert pl.append(wrapping)[:2] == (3, 7)
        refused(pl, batch(7, 0, SEQUENCE_MAX), errors.OutOfOrderSequenceError)
        assert pl.append(batch(7, 0, 2, 2))[:2] == (7, 9)
        assert pl.append(batch(7, 0, 4))[:2] == (9, 10)
        pl.check()
    finally:
        pl.close()


def test_several_batches_of_a_producer_in_one_record_set(plog: PartitionLog) -> None:
    record_set = batch(7, 0, 0, 2) + batch(7, 0, 2, 3) + plain(1) + batch(8, 0, 50)
    assert plog.append(record_set)[:2] == (0, 7)
    assert producer_snapshot(plog)[7][1:3] == (4, 4)
    assert producer_snapshot(plog)[8][1:3] == (50, 6)
    # any refusal inside a record set refuses all of it
    refused(plog, batch(7, 0, 5) + batch(7, 0, 7), errors.OutOfOrderSequenceError)
    refused(plog, batch(7, 0, 5) + batch(8, 0, 52), errors.OutOfOrderSequenceError)
    refused(plog, batch(8, 0, 51) + batch(7, 0, 5) + batch(7, 1, 3), errors.OutOfOrderSequenceError)
    refused(plog, batch(7, 0, 5, 2) + batch(7, 1, 1), errors.OutOfOrderSequenceError)
    # a new epoch may begin inside a record set
    assert plog.append(batch(7, 0, 5) + batch(7, 1, 0, 2))[:2] == (7, 10)
    refused(plog, plain(1) + batch(7, 0, 6), errors.InvalidProducerEpochError)
    assert plog.log_end_offset == 10


@pytest.mark.parametrize("first", ["plain", "new-producer"])
def test_a_record_set_mixing_a_retry_with_new_batches_loses_nothing_silently(
        plog: PartitionLog, first: str) -> None:
    plog.append(batch(7, 0, 0, 2))
    new = plain(1, b"new") if first == "plain" else batch(8, 0, 0, tag=b"new")
    try:
        first_offset, next_offset, _ = plog.append(new + batch(7, 0, 0, 2))
    except errors.LogkernelError:  # refusing the whole set is fine: then nothing is written
        assert plog.log_end_offset == 2
        return
    # else what was acknowledged covers the new batch, and the new batch is in the log
    assert (first_offset, next_offset) == (2, 3) and plog.log_end_offset == 3
    assert read_committed_records(plog)[-1][1].startswith(b"new" if first == "plain" else b"p8")


def test_control_batches_and_malformed_producer_batches_from_clients_are_refused(
        plog: PartitionLog) -> None:
    plog.append(batch(7, 0, 0, txn=True))
    for control_type in (producer_state.CONTROL_COMMIT, producer_state.CONTROL_ABORT):
        marker = encode_control_batch(control_type, producer_id=7, producer_epoch=0)
        refused(plog, marker, errors.InvalidRecordError)
        refused(plog, batch(7, 0, 1, txn=True) + marker, errors.InvalidRecordError)
    # a transactional batch without a producer id, and producer batches without a sequence
    refused(plog, encode_batch([b"x"], transactional=True), errors.InvalidRecordError)
    refused(plog, encode_batch([b"x"], producer_id=9, producer_epoch=0), errors.InvalidRecordError)
    refused(plog, encode_batch([b"x"], producer_id=9, base_sequence=0), errors.InvalidRecordError)
    assert plog.open_transactions() == {7: 0}  # the refused marker closed nothing
    # a producer with an open transaction writes only transactionally
    refused(plog, batch(7, 0, 1), errors.InvalidTxnStateError)
    assert plog.append(batch(7, 0, 1, txn=True))[0] == 1


def test_markers_with_an_old_producer_or_coordinator_epoch_are_refused(plog: PartitionLog) -> None:
    plog.append(batch(7, 2, 0, txn=True))
    end = plog.log_end_offset
    with pytest.raises(errors.InvalidProducerEpochError):
        plog.append_marker(7, 1, True)
    plog.append_marker(7, 2, True, coordinator_epoch=3)
    plog.append(batch(7, 2, 1, txn=True))
    with pytest.raises(errors.TransactionCoordinatorFencedError):
        plog.append_marker(7, 2, False, coordinator_epoch=2)
    assert plog.log_end_offset == end + 2
    assert plog.open_transactions() == {7: end + 1}


# ---- snapshots and recovery -------------------------------------------------------------

def test_producer_state_survives_a_clean_reopen(scratch: Path) -> None:
    ops = history()
    offsets = build(scratch / "t-0", ops)
    end = offsets[-1][1]
    assert (scratch / "t-0" / f"{end:020d}.snapshot").exists()  # taken at close, at the log end
    pl = open_log(scratch / "t-0")
    before = state_of(pl)
    pl.close()
    entries = txn_index_entries(scratch / "t-0")
    pl = open_log(scratch / "t-0")
    try:
        assert state_of(pl) == before == reference_state(scratch / "ref", ops, end)
        assert txn_index_entries(scratch / "t-0") == entries == before.aborted
        assert before.open_transactions == {3: offsets[17][0]}
        # the last batch of each producer is still a duplicate; the next sequence goes on
        assert pl.append(ops[-1][1])[:2] == offsets[-1]
        assert pl.append(ops[20][1])[:2] == offsets[20]
        assert pl.append(batch(1, 0, 9))[0] == end
        refused(pl, batch(2, 0, 8, txn=True), errors.OutOfOrderSequenceError)
    finally:
        pl.close()


def test_an_unclean_reopen_replays_from_the_roll_snapshot(scratch: Path) -> None:
    ops = history()
    pl = open_log(scratch / "t-0")
    offsets = [apply(pl, op) for op in ops]
    before = state_of(pl)
    # the producers' batches among the last operations, and where they went
    last = [(op[1], o) for op, o in zip(ops[-6:], offsets[-6:], strict=True)
            if op[0] == "append" and _binding.parse_header(op[1]).producer_id >= 0]
    retries = [pl.append(record_set)[:2] for record_set, _ in last]
    assert retries == [o for _, o in last]
    pl.close(flush=False)  # a crash: no snapshot at the log end
    bases = {int(p.name[:20]) for p in (scratch / "t-0").glob("*.log")}
    snapshots = {int(p.name[:20]) for p in (scratch / "t-0").glob("*.snapshot")}
    assert snapshots and snapshots <= bases and before.log_end_offset not in snapshots
    pl = open_log(scratch / "t-0", clean=False)
    try:
        assert state_of(pl) == before
        # batches after the roll snapshot were replayed: duplicates again, as before
        assert [pl.append(record_set)[:2] for record_set, _ in last] == retries
        assert pl.log_end_offset == before.log_end_offset
    finally:
        pl.close()


@pytest.mark.parametrize("damage", ["delete", "garble", "flip-a-byte", "truncate", "empty"])
@pytest.mark.parametrize("clean", [True, False], ids=["clean", "unclean"])
def test_damaged_snapshots_are_rebuilt_by_scanning(scratch: Path, damage: str, clean: bool) -> None:
    ops = history()
    offsets = build(scratch / "t-0", ops)
    pl = open_log(scratch / "t-0")
    before = state_of(pl)
    pl.close()
    entries = txn_index_entries(scratch / "t-0")
    rng = random.Random(damage)
    for path in (scratch / "t-0").glob("*.snapshot"):
        data = bytearray(path.read_bytes())
        if damage == "delete":
            path.unlink()
            continue
        if damage == "garble":
            data = bytearray(rng.randbytes(len(data)))
        elif damage == "flip-a-byte":
            data[rng.randrange(6, len(data))] ^= 0x10
        elif damage == "truncate":
            data = data[:len(data) - 7]
        else:
            data = bytearray()
        path.write_bytes(bytes(data))
    if not clean:
        with contextlib.suppress(FileNotFoundError):
            (scratch / "t-0" / "partition.checkpoint").unlink()
    pl = open_log(scratch / "t-0", clean=clean)
    try:
        assert state_of(pl) == before
        assert txn_index_entries(scratch / "t-0") == entries
        assert pl.append(ops[-1][1])[:2] == offsets[-1]
        # unreadable snapshots are gone; one at the log end replaces them
        for path in (scratch / "t-0").glob("*.snapshot"):
            assert producer_state._read_snapshot(str(path)) is not None
    finally:
        pl.close()


def active_batches(directory: Path) -> tuple[Path, list[tuple[int, _binding.BatchHeader]]]:
    """The active segment's .log and (position, header) of its batches."""
    last = sorted(directory.glob("*.log"))[-1]
    return last, whole_batches(last.read_bytes())


def test_a_torn_tail_leaves_the_state_of_the_valid_prefix(scratch: Path) -> None:
    ops = history()
    build(scratch / "template", ops, overrides={})  # segments end at the history's rolls only
    segment, batches = active_batches(scratch / "template")
    assert len(batches) == 10
    rng = random.Random(11)
    for i, (position, header) in enumerate(batches):
        # every other batch: cut inside it; else at its start
        cut = position + rng.randrange(1, header.size) if i % 2 else position
        work = scratch / f"cut-{i}"
        shutil.copytree(scratch / "template", work)
        (work / ".clean-shutdown").unlink(missing_ok=True)
        # What a crash leaves: no snapshot at the end (that is written at close), a tail cut
        with open(work / segment.name, "r+b") as f:
            f.truncate(cut)
        for snapshot in work.glob("*.snapshot"):
            if int(snapshot.name[:20]) > header.base_offset:
                snapshot.unlink()
        pl = open_log(work, clean=False, overrides={})
        try:
            assert pl.log_end_offset == header.base_offset
            assert state_of(pl) == reference_state(scratch / f"ref-{i}", ops, header.base_offset)
        finally:
            pl.close()


def test_an_abort_marker_lost_with_the_tail_is_not_remembered(scratch: Path) -> None:
    pl = open_log(scratch / "t-0")
    pl.append(plain(1))
    pl.append(batch(5, 0, 0, 2, txn=True))
    marker = pl.append_marker(5, 0, False)
    pl.close()
    # Power lost before the .log reached the disk but after the .txnindex did: the tail
    # with the marker is gone.
    segment, batches = active_batches(scratch / "t-0")
    with open(segment, "r+b") as f:
        f.truncate(batches[-1][0])
    for snapshot in (scratch / "t-0").glob("*.snapshot"):
        snapshot.unlink()
    pl = open_log(scratch / "t-0", clean=False)
    assert pl.log_end_offset == marker
    assert pl.open_transactions() == {5: 1} and pl.aborted_transactions(0, 100) == []
    assert pl.append_marker(5, 0, True) == marker  # this time the transaction commits
    committed = read_committed_records(pl)
    assert [v for _, v in committed] == [b"plain-0", b"p5-e0-s0", b"p5-e0-s1"]
    pl.close()
    pl = open_log(scratch / "t-0")
    try:
        assert read_committed_records(pl) == committed   # the committed records are not lost
        assert pl.aborted_transactions(0, 100) == []
        assert txn_index_entries(scratch / "t-0") == []
    finally:
        pl.close()


def test_aborted_transactions_rebuilt_by_scanning_are_the_same(scratch: Path) -> None:
    pl = open_log(scratch / "t-0", overrides={})
    pl.append(batch(1, 0, 0, txn=True))
    pl.append_marker(1, 0, False)
    pl.append(batch(2, 0, 0, txn=True))
    pl.append(plain(5))
    pl.append_marker(2, 0, False)
    pl.append(plain(1))
    before = state_of(pl)
    assert [v for _, v in before.committed] == [b"plain-%d" % i for i in range(5)] + [b"plain-0"]
    pl.close()
    # The aborted-transactions index and the snapshots are lost: all is rebuilt by scanning.
    for path in [*(scratch / "t-0").glob("*.txnindex"), *(scratch / "t-0").glob("*.snapshot")]:
        path.unlink()
    pl = open_log(scratch / "t-0", clean=False, overrides={})
    try:
        # a reader fetching a whole MiB, as a consumer does, must not get producer 2's
        # aborted record
        assert read_committed_records(pl, 1 << 20) == before.committed
        assert state_of(pl) == before
        assert txn_index_entries(scratch / "t-0") == before.aborted
    finally:
        pl.close()


def test_truncate_to_rebuilds_the_state_of_the_prefix(scratch: Path) -> None:
    ops = history()
    offsets = build(scratch / "template", ops)
    # every batch boundary, and offsets inside batches (the whole batch goes)
    cuts = sorted({first for first, _ in offsets} | {first + 1 for first, n in offsets if n - first > 1})
    for cut in cuts:
        work = scratch / f"cut-{cut}"
        shutil.copytree(scratch / "template", work)
        pl = open_log(work)
        try:
            new_end = pl.truncate_to(cut)
            boundary = max(first for first, _ in offsets if first <= cut)
            assert new_end == boundary
            expected = reference_state(scratch / f"ref-{cut}", ops, new_end)
            assert state_of(pl) == expected
            assert txn_index_entries(work) == expected.aborted
            pl.close()
            pl = open_log(work)  # and the truncated state is what the next open finds
            assert state_of(pl) == expected
        finally:
            pl.close()


# ---- a model of one partition's producer state --------------------------------------------

@dataclass
class Written:
    """One batch or marker in the log, as the model remembers it."""

    first: int
    next: int
    pid: int = -1
    epoch: int = -1
    first_seq: int = -1
    last_seq: int = -1
    txn: bool = False
    marker: bool | None = None  # None: data; True: COMMIT; False: ABORT
    record_set: bytes = b""
    values: tuple[bytes, ...] = ()


@dataclass
class Producer:
    epoch: int
    batches: list[Written] = field(default_factory=list)   # this epoch's, oldest first
    open_first: int = -1


@dataclass
class Derived:
    producers: dict[int, Producer]
    aborted: list[AbortedTxn]
    end: int

    @property
    def lso(self) -> int:
        return min((p.open_first for p in self.producers.values() if p.open_first >= 0),
                   default=self.end)

    def visible(self, written: list[Written]) -> list[tuple[int, bytes]]:
        lso = self.lso
        out = []
        for w in written:
            if w.marker is not None or w.next > lso:
                continue
            if w.txn and any(a.producer_id == w.pid and a.first_offset <= w.first <= a.last_offset
                             for a in self.aborted):
                continue
            out.extend((w.first + i, v) for i, v in enumerate(w.values))
        return out


def derive(written: list[Written]) -> Derived:
    """The producer state a log holding exactly ``written`` must have (Kafka's rules)."""
    producers: dict[int, Producer] = {}
    aborted: list[AbortedTxn] = []
    for w in written:
        if w.pid < 0:
            continue
        p = producers.get(w.pid)
        if p is None:
            p = producers[w.pid] = Producer(w.epoch)
        elif w.epoch > p.epoch:
            p.epoch, p.batches = w.epoch, []
        if w.marker is None:
            p.batches = [*p.batches, w][-5:]
            if w.txn and p.open_first < 0:
                p.open_first = w.first
            continue
        if p.open_first >= 0 and not w.marker:
            others = [o.open_first for pid, o in producers.items()
                      if pid != w.pid and o.open_first >= 0]
            aborted.append(AbortedTxn(w.pid, p.open_first, w.first, min(others, default=w.next)))
        p.open_first = -1
    return Derived(producers, aborted, written[-1].next if written else 0)


class ProducerStateModel(RuleBasedStateMachine):
    """One partition with three producers (the third starts near 2^31, so its sequences
    wrap) and plain writes, against ``derive`` of what the log holds. After a reopen or a
    truncation, which retries are still recognised as duplicates depends on the snapshot
    used; the model only insists on each producer's last batch, and on any batch written
    since, and accepts "duplicate" or "out of order" for the rest of the last five."""

    PIDS = (1, 2, 3)

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="lk-txn-model-",
                                         dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
        self.log = open_log(self.dir)
        self.written: list[Written] = []
        # the clients: epoch and next sequence each will send
        self.client = {1: [0, 0], 2: [0, 0], 3: [0, SEQUENCE_MAX - 3]}
        self.certain: dict[int, list[Written]] = {pid: [] for pid in self.PIDS}

    def teardown(self) -> None:
        self.log.close(flush=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def end(self) -> int:
        return self.written[-1].next if self.written else 0

    def derived(self) -> Derived:
        return derive(self.written)

    def expect_refusal(self, record_set: bytes, error: type[Exception]) -> None:
        end, size = self.log.log_end_offset, self.log.size_bytes()
        with pytest.raises(error):
            self.log.append(record_set)
        assert (self.log.log_end_offset, self.log.size_bytes()) == (end, size)

    def reset_clients(self) -> None:
        """After a reopen or truncation: clients go on from what the log holds."""
        d = self.derived()
        for pid in self.PIDS:
            p = d.producers.get(pid)
            self.certain[pid] = p.batches[-1:] if p is not None else []
            if p is None:
                continue  # unknown to the log: any sequence starts it again
            if self.client[pid][0] > p.epoch or not p.batches:
                self.client[pid][1] = 0   # the client's epoch is new to the log
            else:
                self.client[pid][1] = next_sequence(p.batches[-1].last_seq)

    # ---- writes ----

    @rule(pid=st.sampled_from(PIDS), count=st.integers(1, 3), txn=st.booleans())
    def send(self, pid: int, count: int, txn: bool) -> None:
        epoch, seq = self.client[pid]
        record_set = batch(pid, epoch, seq, count, txn=txn, tag=b"-%d" % self.end)
        p = self.derived().producers.get(pid)
        if p is not None and p.open_first >= 0 and not txn:
            self.expect_refusal(record_set, errors.InvalidTxnStateError)
            return
        first, next_offset, _ = self.log.append(record_set)
        assert (first, next_offset) == (self.end, self.end + count)
        w = Written(first, next_offset, pid, epoch, seq, next_sequence(seq, count - 1), txn,
                    None, record_set, tuple(decode_batch(record_set).values()))
        if p is not None and epoch > p.epoch:
            self.certain[pid] = []
        self.certain[pid] = [*self.certain[pid], w][-5:]
        self.written.append(w)
        self.client[pid][1] = next_sequence(seq, count)

    @rule(pid=st.sampled_from(PIDS), counts=st.lists(st.integers(1, 3), min_size=2, max_size=6),
          txn=st.booleans())
    def burst(self, pid: int, counts: list[int], txn: bool) -> None:
        """Several batches of one producer in a row (as with 5 requests in flight)."""
        for count in counts:
            self.send(pid, count, txn)

    @rule(pid=st.sampled_from(PIDS))
    def retry_oldest(self, pid: int) -> None:
        """The oldest batch the log must still recognise (the 5th-last, after a burst)."""
        if self.certain[pid]:
            w = self.certain[pid][0]
            end = self.log.log_end_offset
            assert self.log.append(w.record_set) == (w.first, w.next, -1)
            assert self.log.log_end_offset == end

    @rule(count=st.integers(1, 3))
    def send_plain(self, count: int) -> None:
        record_set = plain(count, b"plain-%d" % self.end)
        first, next_offset, _ = self.log.append(record_set)
        assert (first, next_offset) == (self.end, self.end + count)
        self.written.append(Written(first, next_offset, record_set=record_set,
                                    values=tuple(decode_batch(record_set).values())))

    @rule(pid=st.sampled_from(PIDS), counts=st.lists(st.integers(1, 3), min_size=1, max_size=4),
          commit=st.booleans())
    def transaction(self, pid: int, counts: list[int], commit: bool) -> None:
        """A whole transaction of one producer, ended by the coordinator's marker."""
        for count in counts:
            self.send(pid, count, True)
        self.marker(pid, commit, False)

    @precondition(lambda self: any(w.marker is None and w.pid >= 0 for w in self.written))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from([w for w in self.written if w.marker is None and w.pid >= 0]))
        p = self.derived().producers[w.pid]
        if w.epoch < p.epoch:
            self.expect_refusal(w.record_set, errors.InvalidProducerEpochError)
        elif any(c is w for c in self.certain[w.pid]):
            end, size = self.log.log_end_offset, self.log.size_bytes()
            assert self.log.append(w.record_set) == (w.first, w.next, -1)
            assert (self.log.log_end_offset, self.log.size_bytes()) == (end, size)
        elif any(b is w for b in p.batches):
            end, size = self.log.log_end_offset, self.log.size_bytes()
            with contextlib.suppress(errors.OutOfOrderSequenceError):
                assert self.log.append(w.record_set) == (w.first, w.next, -1)
            assert (self.log.log_end_offset, self.log.size_bytes()) == (end, size)
        else:
            self.expect_refusal(w.record_set, errors.OutOfOrderSequenceError)

    def known(self) -> list[int]:
        return sorted(self.derived().producers)

    @precondition(lambda self: self.written)
    @rule(data=st.data(), kind=st.sampled_from(
        ["gap", "new epoch not at 0", "old epoch", "old epoch's retry", "stale marker"]),
        skip=st.integers(1, 5))
    def refused(self, data: st.DataObject, kind: str, skip: int) -> None:
        """What a known producer's log must refuse, writing nothing."""
        if not self.known():
            return
        pid = data.draw(st.sampled_from(self.known()))
        p = self.derived().producers[pid]
        epoch, seq = self.client[pid]
        if kind == "gap" and p.batches and epoch == p.epoch:
            self.expect_refusal(batch(pid, epoch, next_sequence(seq, skip), txn=p.open_first >= 0),
                                errors.OutOfOrderSequenceError)
        elif kind == "new epoch not at 0":
            self.expect_refusal(batch(pid, max(epoch, p.epoch) + 1, skip, txn=True),
                                errors.OutOfOrderSequenceError)
        elif kind == "old epoch" and p.epoch > 0:
            self.expect_refusal(batch(pid, p.epoch - 1, 0, txn=True),
                                errors.InvalidProducerEpochError)
        elif kind == "old epoch's retry":
            # a zombie's retry: its sequences may match batches of the new epoch
            old = [w for w in self.written if w.pid == pid and w.marker is None and w.epoch < p.epoch]
            if old:
                self.expect_refusal(old[-1].record_set, errors.InvalidProducerEpochError)
        elif kind == "stale marker" and p.epoch > 0:
            end = self.log.log_end_offset
            with pytest.raises(errors.InvalidProducerEpochError):
                self.log.append_marker(pid, p.epoch - 1, False)
            assert self.log.log_end_offset == end

    @rule(pid=st.sampled_from(PIDS))
    def bump_epoch(self, pid: int) -> None:
        """The client gets a new epoch (InitProducerId) with no transaction open."""
        p = self.derived().producers.get(pid)
        if p is not None and p.open_first >= 0:
            return
        self.client[pid] = [self.client[pid][0] + 1, 0]

    @precondition(lambda self: self.written)
    @rule(data=st.data(), commit=st.booleans(), fence=st.booleans())
    def end_transaction(self, data: st.DataObject, commit: bool, fence: bool) -> None:
        if self.known():
            self.marker(data.draw(st.sampled_from(self.known())), commit, fence)

    def marker(self, pid: int, commit: bool, fence: bool) -> None:
        """A COMMIT or ABORT from the coordinator (with or without a transaction open);
        ``fence``: an abort with the epoch bumped (a timeout, or a new producer instance),
        after which the client's epoch is the next."""
        p = self.derived().producers.get(pid)
        epoch = max(p.epoch if p is not None else 0, self.client[pid][0])
        if fence:
            commit = False
            epoch += 1
            self.client[pid] = [epoch + 1, 0]
        offset = self.log.append_marker(pid, epoch, commit)
        assert offset == self.end
        if p is None or epoch > p.epoch:
            self.certain[pid] = []
        self.written.append(Written(offset, offset + 1, pid, epoch, txn=True, marker=commit))

    # ---- the files ----

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule(clean=st.booleans(), lose=st.sampled_from(
        ["nothing", "snapshots", "garbled snapshots", "snapshots and aborted-transaction indexes"]))
    def reopen(self, clean: bool, lose: str) -> None:
        """Close (cleanly, or as a crash leaves it) and open again, having lost files: then
        producer state (and aborted transactions) are rebuilt by scanning."""
        self.log.close(flush=clean)
        doomed = [] if lose == "nothing" else list(self.dir.glob("*.snapshot"))
        if lose.endswith("indexes"):
            doomed += self.dir.glob("*.txnindex")
        for path in doomed:
            if lose == "garbled snapshots":
                path.write_bytes(b"\x00\x01" + os.urandom(30))
            else:
                path.unlink()
        self.log = open_log(self.dir, clean=clean)
        self.reset_clients()

    @rule(data=st.data())
    def tear_the_tail(self, data: st.DataObject) -> None:
        """A crash that loses the end of the active segment (cut at a batch start or inside
        a batch), then an unclean open."""
        self.log.close(flush=False)
        segment, batches = active_batches(self.dir)
        markers = [b for b in batches if b[1].is_control]
        if markers and data.draw(st.booleans()):
            batches = markers  # lose a marker (and all after it)
        if batches:
            position, header = data.draw(st.sampled_from(batches))
            cut = data.draw(st.integers(position, position + header.size - 1))
            with open(segment, "r+b") as f:
                f.truncate(cut)
            for snapshot in self.dir.glob("*.snapshot"):
                if int(snapshot.name[:20]) > header.base_offset:
                    snapshot.unlink()
            self.written = [w for w in self.written if w.next <= header.base_offset]
        self.log = open_log(self.dir, clean=False)
        assert self.log.log_end_offset == self.end
        self.reset_clients()

    @precondition(lambda self: self.written)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        cut = data.draw(st.integers(0, self.end - 1))
        boundary = max((w.first for w in self.written if w.first <= cut), default=0)
        assert self.log.truncate_to(cut) == boundary
        self.written = [w for w in self.written if w.next <= boundary]
        self.reset_clients()

    # ---- what must hold after every step ----

    @invariant()
    def agrees_with_the_model(self) -> None:
        self.log.check()
        d = self.derived()
        assert self.log.log_end_offset == d.end
        assert self.log.last_stable_offset == d.lso
        assert self.log.open_transactions() == {
            pid: p.open_first for pid, p in d.producers.items() if p.open_first >= 0}
        assert self.log.aborted_transactions(0, d.end + 1) == d.aborted
        states = producer_snapshot(self.log)
        assert set(states) == set(d.producers)
        for pid, p in d.producers.items():
            epoch, last_seq, last_offset, open_first, _ = states[pid]
            assert (epoch, open_first) == (p.epoch, p.open_first), (pid, states[pid], p)
            if p.batches:
                assert (last_seq, last_offset) == (p.batches[-1].last_seq, p.batches[-1].next - 1)
        assert read_committed_records(self.log, 120, d.aborted) == d.visible(self.written)


# Each step touches files and fsyncs; `make test-thorough` runs many more examples.
ProducerStateModel.TestCase.settings = settings(
    max_examples=max(settings.default.max_examples // 4, 10), stateful_step_count=40,
    deadline=None)
TestProducerStateModel = ProducerStateModel.TestCase


# ---- the last stable offset and read_committed ----------------------------------------

def test_last_stable_offset_with_none_one_and_several_open_transactions(plog: PartitionLog) -> None:
    plog.append(plain(3))
    assert plog.last_stable_offset == plog.high_watermark == 3
    plog.append(batch(1, 0, 0, 2, txn=True))                # 3, 4: the first open transaction
    assert plog.last_stable_offset == 3 and plog.high_watermark == 5
    plog.append(plain(1))
    plog.append(batch(2, 0, 0, txn=True))                   # 6
    plog.append(batch(3, 0, 0, txn=True))                   # 7
    assert plog.last_stable_offset == 3
    plog.append_marker(2, 0, True)                          # 8: not the earliest: no change
    assert plog.last_stable_offset == 3
    plog.append_marker(1, 0, False)                         # 9: now producer 3's at 7
    assert plog.last_stable_offset == 7
    plog.append(batch(1, 0, 2, txn=True))                   # 10: a new one of producer 1
    plog.append_marker(3, 0, True)                          # 11
    assert plog.last_stable_offset == 10
    plog.append_marker(1, 0, True)                          # 12
    assert plog.last_stable_offset == plog.high_watermark == 13
    # an idempotent, non-transactional producer never holds the LSO back
    plog.append(batch(4, 0, 0))
    assert plog.last_stable_offset == plog.high_watermark == 14
    assert plog.aborted_transactions(0, 14) == [AbortedTxn(1, 3, 9, 7)]


def test_read_committed_gives_whole_batches_below_the_lso_and_the_overlapping_aborts(
        plog: PartitionLog) -> None:
    ops: list[Op] = []
    for i in range(6):   # aborted and committed transactions of two producers, interleaved
        ops += [("append", batch(1, 0, 2 * i, 2, txn=True)), ("append", plain(1, b"x%d" % i)),
                ("append", batch(2, 0, i, 1, txn=True)), ("marker", 1, 0, i % 2 == 0),
                ("marker", 2, 0, i % 3 == 0)]
    ops += [("append", batch(2, 0, 6, 1, txn=True)), ("append", plain(2, b"after"))]
    for op in ops:
        apply(plog, op)
    aborted = plog.aborted_transactions(0, plog.high_watermark)
    # round i: producer 1 at 6i..6i+1, x<i> at 6i+2, producer 2 at 6i+3, markers at 6i+4
    # (producer 1: commit when i is even) and 6i+5 (producer 2: commit when 3 divides i)
    assert aborted == [AbortedTxn(1, 6, 10, 9), AbortedTxn(2, 9, 11, 12), AbortedTxn(2, 15, 17, 18),
                       AbortedTxn(1, 18, 22, 21), AbortedTxn(2, 27, 29, 30),
                       AbortedTxn(1, 30, 34, 33), AbortedTxn(2, 33, 35, 36)]
    lso = plog.last_stable_offset
    assert lso == 36 < plog.high_watermark == 39
    for max_bytes in (1, 100, 300, 1 << 20):
        records = read_committed_records(plog, max_bytes, aborted)
        assert [v for _, v in records] == [
            b"p1-e0-s0", b"p1-e0-s1", b"x0-0", b"p2-e0-s0", b"x1-0", b"p1-e0-s4", b"p1-e0-s5",
            b"x2-0", b"x3-0", b"p2-e0-s3", b"p1-e0-s8", b"p1-e0-s9", b"x4-0", b"x5-0"]
        assert all(offset < lso for offset, _ in records)
    # reads from inside the log: the aborts overlapping [offset, LSO), no others
    for offset in range(0, lso):
        data, stable, listed = plog.read_committed(offset, 1 << 20)
        assert stable == lso
        assert listed == [a for a in aborted if a.last_offset >= offset and a.first_offset < lso]
        assert all(h.base_offset < lso for _, h in whole_batches(data))
    # at and past the LSO: nothing, and past the high watermark: out of range
    assert plog.read_committed(lso, 1 << 20) == (b"", lso, [])
    assert plog.read_committed(plog.high_watermark, 1 << 20) == (b"", lso, [])
    with pytest.raises(errors.OffsetOutOfRangeError):
        plog.read_committed(plog.high_watermark + 1, 1 << 20)


def test_read_committed_consumers_end_at_the_last_stable_offset(scratch: Path) -> None:
    with logkernel.open(scratch / "data", ENGINE) as lk:
        lk.create_topic("t", 2)
        plain_producer = lk.producer()
        tx = lk.producer(transactional_id="tx")
        tx.init_transactions()
        plain_producer.send("t", b"before", partition=0)
        tx.begin_transaction()
        tx.send("t", b"open", partition=0)
        plain_producer.send("t", b"after", partition=0)
        plain_producer.send("t", b"other", partition=1)
        committed = lk.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
        uncommitted = lk.consumer(auto_offset_reset="earliest")
        tps = [("t", 0), ("t", 1)]
        committed.assign(tps)
        uncommitted.assign(tps)
        assert committed.end_offsets(tps) == {("t", 0): 1, ("t", 1): 1}
        assert uncommitted.end_offsets(tps) == {("t", 0): 3, ("t", 1): 1}
        assert [r.value for r in committed.poll()] in ([b"before", b"other"], [b"other", b"before"])
        assert committed.poll() == []
        assert committed.position(("t", 0)) == 1
        committed.seek_to_end()
        assert committed.position(("t", 0)) == 1
        uncommitted.seek_to_end()
        assert uncommitted.position(("t", 0)) == 3
        latest = lk.consumer(isolation_level="read_committed", auto_offset_reset="latest")
        latest.assign([("t", 0)])
        assert latest.position(("t", 0)) == 1
        tx.commit_transaction()
        assert committed.end_offsets(tps)[("t", 0)] == 4  # past the marker
        assert [r.value for r in committed.poll()] == [b"open", b"after"]
        assert [r.value for r in latest.poll()] == [b"open", b"after"]
        committed.seek_to_end(("t", 0))
        assert committed.position(("t", 0)) == 4


def test_the_last_stable_offset_never_falls_below_the_log_start(scratch: Path) -> None:
    with logkernel.open(scratch / "data", ENGINE) as lk:
        lk.create_topic("t", 1)
        plain_producer = lk.producer()
        plain_producer.send("t", b"p0", partition=0)
        tx = lk.producer(transactional_id="tx")
        tx.init_transactions()
        tx.begin_transaction()
        tx.send("t", b"t1", partition=0)
        plain_producer.send("t", b"p2", partition=0)
        plain_producer.send("t", b"p3", partition=0)
        # DeleteRecords may go up to the high watermark, past the open transaction's start
        assert lk.delete_records("t", 0, 3) == 3
        pl = lk.partition_log("t", 0)
        consumer = lk.consumer(isolation_level="read_committed", auto_offset_reset="latest")
        consumer.assign([("t", 0)])
        assert consumer.poll() == []
        assert pl.last_stable_offset == 3
        assert consumer.end_offsets([("t", 0)]) == {("t", 0): 3}
        tx.commit_transaction()
        assert [r.value for r in consumer.poll()] == [b"p3"]


# ---- the transaction coordinator, through the embedded clients ------------------------

TOPICS = ("orders", "payments")


def read_all(lk: logkernel.Engine, level: str, topics: tuple[str, ...] = TOPICS
             ) -> dict[tuple[str, int], list[bytes | None]]:
    consumer = lk.consumer(isolation_level=level, auto_offset_reset="earliest")
    consumer.assign([(t, p) for t in topics for p in range(len(lk.get_topic(t).partitions))])
    out: dict[tuple[str, int], list[bytes | None]] = {}
    while got := consumer.poll(max_records=1000):
        for r in got:
            out.setdefault((r.topic, r.partition), []).append(r.value)
    consumer.close()
    return out


def no_open_transactions(lk: logkernel.Engine) -> None:
    for name in lk.topics(internal=True):
        for pl in lk.get_topic(name).partitions:
            assert pl.open_transactions() == {}, pl.name
            assert pl.last_stable_offset == pl.high_watermark, pl.name


@pytest.fixture
def engine(scratch: Path) -> Iterator[logkernel.Engine]:
    lk = logkernel.open(scratch / "data", ENGINE)
    for topic in TOPICS:
        lk.create_topic(topic, 3)
    lk.create_topic("in", 3)
    yield lk
    lk.close()


def test_commits_and_aborts_across_two_topics_of_three_partitions(engine: logkernel.Engine) -> None:
    lk = engine
    tx = lk.producer(transactional_id="app")
    tx.init_transactions()
    outsider = lk.producer()
    committed: dict[tuple[str, int], list[bytes]] = {}
    everything: dict[tuple[str, int], list[bytes]] = {}
    rng = random.Random(3)
    for n in range(12):
        commit = rng.random() < 0.6
        tx.begin_transaction()
        for i in range(rng.randint(1, 8)):
            topic, partition = rng.choice(TOPICS), rng.randrange(3)
            value = b"txn%d-%d" % (n, i)
            tx.send(topic, value, partition=partition)
            everything.setdefault((topic, partition), []).append(value)
            if commit:
                committed.setdefault((topic, partition), []).append(value)
            if rng.random() < 0.3:  # non-transactional writes interleave
                value = b"plain%d-%d" % (n, i)
                outsider.send(topic, value, partition=partition)
                everything.setdefault((topic, partition), []).append(value)
                committed.setdefault((topic, partition), []).append(value)
        if commit:
            tx.commit_transaction()
        else:
            tx.abort_transaction()
        assert lk.transactions.describe("app").state_name == (
            "CompleteCommit" if commit else "CompleteAbort")
    assert read_all(lk, "read_committed") == committed
    assert read_all(lk, "read_uncommitted") == everything
    no_open_transactions(lk)
    lk.close()
    reopened = logkernel.open(lk.path, ENGINE)
    try:
        assert read_all(reopened, "read_committed") == committed
        no_open_transactions(reopened)
    finally:
        reopened.close()


def write_interleaved(lk: logkernel.Engine, steps: int = 150) -> dict[tuple[str, int], list[bytes]]:
    """Three transactional producers (one compressing) and an idempotent one write to the
    same partitions at once, transactions committed or aborted at random; returns the
    committed records of each partition in offset order."""
    producers = [lk.producer(transactional_id=f"tx{i}", compression_type="gzip" if i == 2 else None)
                 for i in range(3)]
    for p in producers:
        p.init_transactions()
    outsider = lk.producer(enable_idempotence=True)
    rng = random.Random(5)
    pending: dict[int, list[tuple[tuple[str, int], bytes]]] = {}
    written: list[tuple[tuple[str, int], int, bytes]] = []   # (partition, offset, value)
    committed: set[bytes] = set()
    for step in range(steps):
        i = rng.randrange(3)
        p = producers[i]
        roll = rng.random()
        if roll < 0.6:
            if i not in pending:
                p.begin_transaction()
                pending[i] = []
            tp = (rng.choice(TOPICS), rng.randrange(3))
            values = [b"tx%d-%d-%d" % (i, step, n) + b"." * rng.randrange(150)
                      for n in range(rng.randint(1, 3))]
            sent = p.send_batch(tp[0], values, partition=tp[1])
            written += [(tp, int(o), v) for o, v in zip(sent.offsets, values, strict=True)]
            pending[i] += [(tp, v) for v in values]
        elif roll < 0.8:
            tp = (rng.choice(TOPICS), rng.randrange(3))
            value = b"plain-%d" % step
            written.append((tp, outsider.send(tp[0], value, partition=tp[1]).offset, value))
            committed.add(value)
        elif i in pending:
            if rng.random() < 0.5:
                p.commit_transaction()
                committed.update(v for _, v in pending[i])
            else:
                p.abort_transaction()
            del pending[i]
    for i in list(pending):
        producers[i].abort_transaction()
    out: dict[tuple[str, int], list[bytes]] = {}
    for tp, _, value in sorted(written):
        if value in committed:
            out.setdefault(tp, []).append(value)
    return out


def drain(consumer: Any, max_records: int = 7, bound_s: float = 20.0
          ) -> dict[tuple[str, int], list[bytes | None]]:
    """Polls until a poll returns nothing, on a thread, failing if that takes longer than
    ``bound_s`` (a poll that never returns); the caller closes the engine, which ends it."""
    got: dict[tuple[str, int], list[bytes | None]] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            while records := consumer.poll(max_records=max_records):
                for r in records:
                    got.setdefault((r.topic, r.partition), []).append(r.value)
        except BaseException as exc:  # reported by the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound_s)
    if thread.is_alive():
        pytest.fail(f"the consumer's poll did not return in {bound_s} s (stuck at positions "
                    f"{dict(consumer._positions)})")
    if failure:
        raise failure[0]
    return got


def test_interleaved_transactions_of_several_producers(engine: logkernel.Engine) -> None:
    committed = write_interleaved(engine)
    for options in ({"max_partition_fetch_bytes": 1}, {}):  # a batch at a time, or all
        consumer = engine.consumer(isolation_level="read_committed",
                                   auto_offset_reset="earliest", **options)
        consumer.assign([(t, p) for t in TOPICS for p in range(3)])
        assert drain(consumer) == committed
    no_open_transactions(engine)


def test_read_committed_fetches_cut_inside_an_aborted_transaction_go_on(
        engine: logkernel.Engine) -> None:
    tx = engine.producer(transactional_id="big")
    tx.init_transactions()
    tx.begin_transaction()
    for n in range(20):   # an aborted transaction of many batches, bigger than a fetch
        tx.send("orders", b"aborted-%d" % n + b"." * 120, partition=0)
    tx.abort_transaction()
    engine.producer().send("orders", b"after", partition=0)
    # 350 bytes: one whole aborted batch and the start of the next
    assert len(engine.partition_log("orders", 0).read(0, 1)) < 350 < 2 * len(
        engine.partition_log("orders", 0).read(0, 1))
    consumer = engine.consumer(isolation_level="read_committed", auto_offset_reset="earliest",
                               max_partition_fetch_bytes=350)
    consumer.assign([("orders", 0)])
    try:
        # reading 21 small batches takes milliseconds; a bound, not a measurement
        assert drain(consumer, bound_s=5) == {("orders", 0): [b"after"]}
    finally:
        engine.close()  # ends a poll that is still spinning


@pytest.mark.parametrize("before", ["nothing", "a commit", "an abort"])
def test_an_empty_transaction_commits_and_aborts(engine: logkernel.Engine, before: str) -> None:
    """A consume-transform-produce loop whose poll returned nothing still begins and
    commits a transaction."""
    tx = engine.producer(transactional_id="loop")
    tx.init_transactions()
    if before != "nothing":
        tx.begin_transaction()
        tx.send("orders", b"x", partition=0)
        tx.commit_transaction() if before == "a commit" else tx.abort_transaction()
    for end in (tx.commit_transaction, tx.abort_transaction):
        tx.begin_transaction()
        end()
    tx.begin_transaction()
    tx.send("orders", b"after", partition=1)
    tx.commit_transaction()
    assert read_all(engine, "read_committed")[("orders", 1)] == [b"after"]


def test_offsets_sent_to_a_transaction_move_only_on_commit(engine: logkernel.Engine) -> None:
    lk = engine
    feeder = lk.producer()
    for i in range(30):
        feeder.send("in", b"in-%d" % i, partition=i % 3)
    consumer = lk.consumer("in", group_id="g", isolation_level="read_committed",
                           enable_auto_commit=False, auto_offset_reset="earliest")
    tx = lk.producer(transactional_id="ctp")
    tx.init_transactions()
    expected: dict[tuple[str, int], int] = {}
    for n in range(6):
        records = consumer.poll(timeout_ms=5000, max_records=4)
        assert records
        tx.begin_transaction()
        positions: dict[tuple[str, int], int] = {}
        for r in records:
            tx.send("orders", r.value, partition=r.partition)
            positions[(r.topic, r.partition)] = r.offset + 1
        tx.send_offsets_to_transaction(positions, consumer.group_metadata())
        # pending offsets are not the group's yet
        for (topic, partition) in positions:
            assert lk.committed("g", topic, partition) == expected.get((topic, partition))
        assert lk.offsets.has_pending("g")
        if n % 3 == 2:
            tx.abort_transaction()
            for tp in positions:   # re-read from the group's committed offsets
                consumer.seek(tp, expected.get(tp, 0))
        else:
            tx.commit_transaction()
            expected.update(positions)
        assert not lk.offsets.has_pending("g")
        assert {tp: lk.committed("g", *tp) for tp in positions} == {
            tp: expected.get(tp) for tp in positions}
    consumer.close()
    lk.close()
    with logkernel.open(lk.path, ENGINE) as reopened:
        assert {tp: o.offset for tp, o in reopened.committed_offsets("g").items()} == expected
        assert not reopened.offsets.has_pending("g")
        no_open_transactions(reopened)


def test_a_second_producer_fences_the_first_and_aborts_its_transaction(engine: logkernel.Engine) -> None:
    lk = engine
    first = lk.producer(transactional_id="shared")
    first.init_transactions()
    first.begin_transaction()
    first.send("orders", b"zombie-0", partition=0)
    first.send("payments", b"zombie-1", partition=1)
    first.send_offsets_to_transaction({("in", 0): 7}, "g")
    old_id, old_epoch = first.producer_id, first.producer_epoch
    assert lk.partition_log("orders", 0).last_stable_offset == 0

    second = lk.producer(transactional_id="shared")
    second.init_transactions()
    assert second.producer_id == old_id and second.producer_epoch > old_epoch + 1
    # the open transaction was aborted (with a bumped epoch on its markers)
    no_open_transactions(lk)
    assert read_all(lk, "read_committed") == {}
    assert lk.committed("g", "in", 0) is None
    for action in (lambda: first.send("orders", b"late", partition=0),      # in the txn
                   lambda: first.send("orders", b"late", partition=2),      # a new partition
                   first.commit_transaction):
        with pytest.raises(errors.ProducerFencedError):
            action()
    with pytest.raises(errors.ProducerFencedError):
        first.begin_transaction()
    with pytest.raises(errors.ProducerFencedError):  # fenced for good: a new producer is needed
        first.init_transactions()
    with pytest.raises(errors.ProducerFencedError):  # the coordinator refuses the old epoch too
        lk.transactions.add_partitions("shared", old_id, old_epoch, [("orders", 0)])
    second.begin_transaction()
    second.send("orders", b"ok", partition=0)
    second.send_offsets_to_transaction({("in", 0): 9}, "g")
    second.commit_transaction()
    assert read_all(lk, "read_committed") == {("orders", 0): [b"ok"]}
    assert read_all(lk, "read_uncommitted")[("orders", 0)] == [b"zombie-0", b"ok"]
    assert lk.committed("g", "in", 0) == 9


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return value


def test_a_timed_out_transaction_is_aborted_and_its_producer_fenced(scratch: Path) -> None:
    config = {**ENGINE, "transaction.abort.timed.out.transaction.cleanup.interval.ms": 20}
    with logkernel.open(scratch / "data", config) as lk:
        lk.create_topic("orders", 3)
        slow = lk.producer(transactional_id="slow", transaction_timeout_ms=500)
        slow.init_transactions()
        epoch = slow.producer_epoch
        slow.begin_transaction()
        for p in range(3):
            slow.send("orders", b"never-%d" % p, partition=p)
        slow.send_offsets_to_transaction({("orders", 0): 1}, "g")
        assert lk.partition_log("orders", 0).last_stable_offset == 0
        wait_until(lambda: lk.transactions.describe("slow").state_name == "CompleteAbort",
                   "the transaction's timeout to abort it")
        assert lk.transactions.describe("slow").producer_epoch == epoch + 1
        no_open_transactions(lk)
        assert read_all(lk, "read_committed", ("orders",)) == {}
        assert lk.committed("g", "orders", 0) is None
        with pytest.raises(errors.ProducerFencedError):
            slow.send("orders", b"late", partition=0)
        with pytest.raises(errors.ProducerFencedError):
            slow.commit_transaction()
        # a new instance of the id carries on
        again = lk.producer(transactional_id="slow", transaction_timeout_ms=60_000)
        again.init_transactions()
        again.begin_transaction()
        again.send("orders", b"done", partition=0)
        again.commit_transaction()
        with pytest.raises(errors.ProducerFencedError):
            slow.init_transactions()
        assert read_all(lk, "read_committed", ("orders",)) == {("orders", 0): [b"done"]}


def test_bad_transactional_requests_raise_their_errors_and_the_coordinator_goes_on(
        scratch: Path) -> None:
    with logkernel.open(scratch / "data", {**ENGINE, "transaction.max.timeout.ms": 1000}) as lk:
        lk.create_topic("orders", 3)
        coordinator = lk.transactions
        good = lk.producer(transactional_id="good", transaction_timeout_ms=1000)
        good.init_transactions()
        pid, epoch = good.producer_id, good.producer_epoch

        def works(n: int) -> None:
            good.begin_transaction()
            good.send("orders", b"ok-%d" % n, partition=0)
            good.commit_transaction()

        works(0)
        bad: list[tuple[type[Exception], Callable[[], Any]]] = [
            # unknown transactional ids, and a producer id the id does not have
            (errors.InvalidProducerIdMappingError,
             lambda: coordinator.add_partitions("nobody", pid, epoch, [("orders", 0)])),
            (errors.InvalidProducerIdMappingError,
             lambda: coordinator.end_txn("nobody", pid, epoch, True)),
            (errors.InvalidProducerIdMappingError,
             lambda: coordinator.txn_offset_commit("nobody", "g", pid, epoch, {})),
            (errors.InvalidProducerIdMappingError,
             lambda: coordinator.add_partitions("good", pid + 1, epoch, [("orders", 0)])),
            (errors.InvalidProducerIdMappingError, lambda: coordinator.init_producer_id("", 1000)),
            (errors.InvalidProducerIdMappingError,
             lambda: coordinator.init_producer_id("fresh", 1000, producer_id=pid, producer_epoch=0)),
            # a wrong epoch, older or newer
            (errors.ProducerFencedError,
             lambda: coordinator.add_partitions("good", pid, epoch + 1, [("orders", 0)])),
            (errors.ProducerFencedError, lambda: coordinator.end_txn("good", pid, epoch - 1, True)),
            (errors.ProducerFencedError, lambda: coordinator.init_producer_id(
                "good", 1000, producer_id=pid, producer_epoch=epoch + 5)),
            # EndTxn with no transaction open (after a commit, an abort is no retry)
            (errors.InvalidTxnStateError, lambda: coordinator.end_txn("good", pid, epoch, False)),
            # TxnOffsetCommit for a group that was not added to the transaction
            (errors.InvalidTxnStateError,
             lambda: coordinator.txn_offset_commit("good", "g", pid, epoch, {})),
            # transaction timeouts above transaction.max.timeout.ms, or not positive
            (errors.InvalidTransactionTimeoutError, lambda: coordinator.init_producer_id("other", 1001)),
            (errors.InvalidTransactionTimeoutError, lambda: coordinator.init_producer_id("other", 0)),
            (errors.InvalidTransactionTimeoutError,
             lambda: lk.producer(transactional_id="long", transaction_timeout_ms=5000).init_transactions()),
        ]
        for i, (error, call) in enumerate(bad):
            with pytest.raises(error):
                call()
            works(i + 1)
        # a commit retried after it completed succeeds; the client-side state rules hold
        coordinator.end_txn("good", pid, epoch, True)
        with pytest.raises(errors.InvalidTxnStateError):
            good.commit_transaction()
        good.begin_transaction()
        with pytest.raises(errors.InvalidTxnStateError):
            good.begin_transaction()
        good.send("orders", b"aborted", partition=1)
        with pytest.raises(errors.InvalidTxnStateError):   # not added to this transaction
            coordinator.txn_offset_commit("good", "g", pid, epoch, {})
        good.abort_transaction()
        assert coordinator.list_transactions(states=["Ongoing"]) == []
        assert coordinator.describe("other") is None and coordinator.describe("long") is None
        assert read_all(lk, "read_committed", ("orders",)) == {
            ("orders", 0): [b"ok-%d" % n for n in range(len(bad) + 1)]}
        no_open_transactions(lk)


@pytest.mark.parametrize("last", ["committed", "aborted"])
def test_markers_lost_with_torn_tails_are_written_again_at_open(scratch: Path, last: str) -> None:
    """Power lost after the coordinator's Complete record but before two partitions' last
    marker reached the disk: the next open finds their transaction open, and closes it
    with the outcome the coordinator stored (offsets included)."""
    config = {**ENGINE, "transaction.state.log.num.partitions": 3}
    data = scratch / "data"
    with logkernel.open(data, config) as lk:
        lk.create_topic("t", 3)
        for i in range(5):
            tx = lk.producer(transactional_id=f"id{i}")
            tx.init_transactions()
            tx.begin_transaction()
            for p in range(3):
                tx.send("t", b"v%d-%d" % (i, p), partition=p)
            tx.send_offsets_to_transaction({("t", 0): i + 1}, "g")
            commit = i % 2 == 0 if i < 4 else last == "committed"
            tx.commit_transaction() if commit else tx.abort_transaction()
    for directory in (data / "t-1", data / "__consumer_offsets-0"):
        segment, batches = active_batches(directory)
        assert batches[-1][1].is_control
        with open(segment, "r+b") as f:
            f.truncate(batches[-1][0])
        for snapshot in directory.glob("*.snapshot"):
            snapshot.unlink()
    (data / ".clean-shutdown").unlink()
    for _ in range(2):  # and the second open finds nothing left to do
        with logkernel.open(data, config) as lk:
            outcome = "CompleteCommit" if last == "committed" else "CompleteAbort"
            assert [(t.transactional_id, t.state) for t in lk.transactions.list_transactions()] == [
                ("id0", "CompleteCommit"), ("id1", "CompleteAbort"), ("id2", "CompleteCommit"),
                ("id3", "CompleteAbort"), ("id4", outcome)]
            no_open_transactions(lk)
            shown = [0, 2, 4] if last == "committed" else [0, 2]
            assert read_all(lk, "read_committed", ("t",)) == {
                ("t", p): [b"v%d-%d" % (i, p) for i in shown] for p in range(3)}
            assert lk.committed("g", "t", 0) == shown[-1] + 1
            aborted = [i for i in range(5) if i not in shown]
            assert [a.producer_id for a in lk.partition_log("t", 1).aborted_transactions(0, 100)] == [
                lk.transactions.describe(f"id{i}").producer_id for i in aborted]


def test_transactional_ids_expire(scratch: Path) -> None:
    config = {**ENGINE, "transactional.id.expiration.ms": 60_000}
    with logkernel.open(scratch / "data", config) as lk:
        lk.create_topic("orders", 1)
        idle = lk.producer(transactional_id="idle")
        idle.init_transactions()
        idle.begin_transaction()
        idle.send("orders", b"x", partition=0)
        idle.commit_transaction()
        busy = lk.producer(transactional_id="busy")
        busy.init_transactions()
        busy.begin_transaction()
        busy.send("orders", b"y", partition=0)
        now = int(time.time() * 1000)
        assert lk.transactions.expire_transactional_ids(now_ms=now) == 0
        assert lk.transactions.expire_transactional_ids(now_ms=now + 60_000) == 1
        assert lk.transactions.describe("idle") is None
        assert [t.transactional_id for t in lk.transactions.list_transactions()] == ["busy"]
        idle.begin_transaction()
        with pytest.raises(errors.InvalidProducerIdMappingError):
            idle.send("orders", b"late", partition=0)
        old_id = idle.producer_id
        busy.commit_transaction()
    with logkernel.open(scratch / "data", config) as lk:
        assert lk.transactions.describe("idle") is None        # the tombstone is kept
        assert lk.transactions.describe("busy").state_name == "CompleteCommit"
        fresh = lk.producer(transactional_id="idle")
        fresh.init_transactions()
        assert (fresh.producer_id, fresh.producer_epoch) != (old_id, 0)
        assert fresh.producer_epoch == 0
        assert lk.transactions.expire_transactional_ids(
            now_ms=int(time.time() * 1000) + 60_000) == 2


def test_producer_ids_expire(scratch: Path) -> None:
    config = {**ENGINE, "producer.id.expiration.ms": 60_000}
    with logkernel.open(scratch / "data", config) as lk:
        lk.create_topic("orders", 1)
        pl = lk.partition_log("orders", 0)
        idempotent = lk.producer(enable_idempotence=True)
        for i in range(3):
            idempotent.send("orders", b"%d" % i, partition=0)
        tx = lk.producer(transactional_id="open")
        tx.init_transactions()
        tx.begin_transaction()
        tx.send("orders", b"open", partition=0)
        now = int(time.time() * 1000)
        lk.expire_producer_ids(now_ms=now)
        assert set(producer_snapshot(pl)) == {idempotent.producer_id, tx.producer_id}
        assert lk.expire_producer_ids(now_ms=now + 120_000) >= 1
        # the open transaction's producer stays; the idle one is forgotten ...
        assert set(producer_snapshot(pl)) == {tx.producer_id}
        # ... so its next batch may start at any sequence (written "later": CreateTime)
        end = pl.log_end_offset
        later = encode_batch([b"later"], producer_id=idempotent.producer_id, producer_epoch=0,
                             base_sequence=500, timestamps=now + 100_000)
        assert pl.append(later)[0] == end
        tx.commit_transaction()
        assert lk.expire_producer_ids(now_ms=now + 120_000) >= 1
        assert set(producer_snapshot(pl)) == {idempotent.producer_id}  # idle 20 s only
    with logkernel.open(scratch / "data", config) as lk:   # the expiry survives the snapshot
        pl = lk.partition_log("orders", 0)
        assert tx.producer_id not in producer_snapshot(pl)
        assert pl.append(batch(tx.producer_id, 0, 77, txn=True))[0] == end + 2


@pytest.mark.parametrize("damage", ["deleted", "garbled"])
def test_a_lost_producer_ids_file_never_reuses_a_tracked_id(scratch: Path, damage: str) -> None:
    """producer-ids says where the next block of ids starts. Lost or damaged, the engine
    must not start again at 0: a new producer would take over the sequence state of one
    the partitions still track, and its first batch would be refused or, worse, taken
    for a retry and answered with another producer's offsets."""
    with logkernel.open(scratch / "data", ENGINE) as lk:
        lk.create_topic("orders", 1)
        for _ in range(3):
            lk.producer(enable_idempotence=True).send("orders", b"x", partition=0)
        tracked = set(producer_snapshot(lk.partition_log("orders", 0)))
    path = scratch / "data" / "producer-ids"
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"\xff\x00garbage")
    with logkernel.open(scratch / "data", ENGINE) as lk:
        fresh = lk.producer(enable_idempotence=True)
        fresh.send("orders", b"y", partition=0)
        assert fresh.producer_id > max(tracked)
        assert int(path.read_text()) > fresh.producer_id


def test_list_and_describe_transactions_and_producers(engine: logkernel.Engine) -> None:
    lk = engine
    done = lk.producer(transactional_id="b-done")
    done.init_transactions()
    done.begin_transaction()
    done.send("orders", b"1", partition=1)
    done.commit_transaction()
    running = lk.producer(transactional_id="a-running", transaction_timeout_ms=90_000)
    running.init_transactions()
    running.begin_transaction()
    running.send("orders", b"2", partition=2)
    running.send("payments", b"3", partition=0)
    running.send_offsets_to_transaction({("in", 0): 1}, "g")
    idle = lk.producer(transactional_id="c-idle")
    idle.init_transactions()
    coordinator = lk.transactions
    assert [(t.transactional_id, t.state) for t in coordinator.list_transactions()] == [
        ("a-running", "Ongoing"), ("b-done", "CompleteCommit"), ("c-idle", "Empty")]
    assert [t.transactional_id for t in coordinator.list_transactions(states=["Ongoing", "Empty"])] == [
        "a-running", "c-idle"]
    assert coordinator.list_transactions(producer_ids=[done.producer_id])[0].transactional_id == "b-done"
    assert coordinator.list_transactions(states=["PrepareCommit"]) == []
    meta = coordinator.describe("a-running")
    assert meta.producer_id == running.producer_id and meta.producer_epoch == running.producer_epoch
    assert meta.timeout_ms == 90_000 and meta.state_name == "Ongoing"
    offsets_partition = lk.offsets.partition_for("g")
    assert meta.partitions == {("orders", 2), ("payments", 0), ("__consumer_offsets", offsets_partition)}
    assert coordinator.running_ms("a-running", now_ms=meta.start_ms + 500) == 500
    assert coordinator.running_ms("b-done") == coordinator.running_ms("nobody") == -1
    assert coordinator.describe("nobody") is None
    # DescribeProducers: the partitions' producer state
    states = {e.producer_id: e for e in lk.partition_log("orders", 2).producer_states()}
    assert states[running.producer_id].current_txn_first_offset == 0
    assert states[running.producer_id].epoch == running.producer_epoch
    states = {e.producer_id: e for e in lk.partition_log("orders", 1).producer_states()}
    assert states[done.producer_id].current_txn_first_offset == -1
    assert states[done.producer_id].coordinator_epoch == 0
    running.abort_transaction()
    assert coordinator.describe("a-running").state_name == "CompleteAbort"
    lk.close()
    with logkernel.open(lk.path, ENGINE) as reopened:
        assert [(t.transactional_id, t.state) for t in reopened.transactions.list_transactions()] == [
            ("a-running", "CompleteAbort"), ("b-done", "CompleteCommit"), ("c-idle", "Empty")]


# ---- compaction of a transactional topic ----------------------------------------------

def test_compaction_keeps_the_latest_committed_value_of_every_key(scratch: Path) -> None:
    with logkernel.open(scratch / "data", ENGINE) as lk:
        lk.create_topic("c", 1, {"cleanup.policy": "compact", "segment.bytes": 1000,
                                 "delete.retention.ms": 0})
        tx = lk.producer(transactional_id="c")
        tx.init_transactions()
        outsider = lk.producer()
        latest: dict[bytes, bytes] = {}
        rng = random.Random(8)
        for n in range(20):
            commit = n % 3 != 1
            tx.begin_transaction()
            for i in range(rng.randint(1, 4)):
                key = b"k%d" % rng.randrange(6)
                value = b"%s=%d.%d" % (key, n, i)
                tx.send("c", value, key=key, partition=0)
                if commit:
                    latest[key] = value
            if n % 4 == 0:
                key = b"k%d" % rng.randrange(6)
                outsider.send("c", b"%s=plain%d" % (key, n), key=key, partition=0)
                latest[key] = b"%s=plain%d" % (key, n)
            tx.commit_transaction() if commit else tx.abort_transaction()
        # an aborted transaction is the last word on k0 .. k5: it must shadow nothing
        tx.begin_transaction()
        for k in range(6):
            tx.send("c", b"k%d=aborted-last" % k, key=b"k%d" % k, partition=0)
        tx.abort_transaction()

        def latest_committed() -> dict[bytes, bytes]:
            consumer = lk.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
            consumer.assign([("c", 0)])
            out: dict[bytes, bytes] = {}
            while got := consumer.poll(max_records=1000):
                for r in got:
                    out[r.key] = r.value
            return out

        assert latest_committed() == latest
        before = len(read_all(lk, "read_uncommitted", ("c",))[("c", 0)])
        results = lk.compact("c", roll=True)
        assert results and results[0].records_kept < before
        assert latest_committed() == latest
        # committed records follow compaction: one per key is left of the committed ones
        kept = read_all(lk, "read_committed", ("c",))[("c", 0)]
        assert sorted(kept) == sorted(latest.values())
        # an open transaction holds compaction back at its first offset
        tx.begin_transaction()
        tx.send("c", b"k0=open", key=b"k0", partition=0)
        lk.producer().send("c", b"k0=plain-after", key=b"k0", partition=0)
        lk.compact("c", roll=True)
        assert latest_committed() == latest
        tx.commit_transaction()
        lk.compact("c", roll=True)
        latest[b"k0"] = b"k0=plain-after"
        assert latest_committed() == latest
        no_open_transactions(lk)
