"""Full disk: every write the engine makes meets ENOSPC on a real, small file system made
for the test (tmpfs with a size or inode limit, and a loop-mounted ext4 image), and
nothing already written is damaged, the error says what happened and is retriable, and
once space is freed writes are accepted again without a restart.

Why two file systems: tmpfs charges every page (a checkpoint's 40 bytes cost 4 KiB),
gives a fallocate all or nothing and never fails an fsync; ext4 keeps a journal,
allocates in blocks with extent metadata beside them, and a failed fallocate keeps what
it got (one log's failed 8 MiB step took the whole volume until segment.c gave it back).
What holds on both is what an operator can count on.

How the disk is filled: a filler file takes the free space (``posix_fallocate``, so the
blocks are really reserved), leaving a chosen amount, or empty files take every inode;
freeing space is deleting or shrinking them, as an operator would delete some other file
on the volume. Closing or rolling gives back a segment's preallocated tail, so a test that
means "not one page free" fills again ("top-up") after such a step. Retention,
delete_records and topic deletion are tested as ways to free space too, because on a full
disk they must work without writing anything new first.

What is tested (the embedded engine, then ``logkernel serve`` with real clients):

- sends refused as NoSpaceError that says what to do, the disk really full first;
- a roll whose new files cannot be created (no inode), a roll without room for the
  producer snapshot, index growth, checkpoints, close and reopen on a full volume;
- delete_records and retention freeing a full disk; topic creation and deletion;
  committed offsets (never lost, never half-written); the cleaner's output, in the
  foreground and in the background; transactions (producer id and __transaction_state,
  an ABORT's index entry, a marker after PrepareCommit);
- the broker filled while kafka-python and confluent-kafka produce, serving while full,
  offset commits refused and retried, an idempotent producer carrying on through the full
  disk, a SIGKILL while full and a SIGTERM while full; every acknowledged record read back
  byte for byte after each, and ``logkernel verify`` run on what each stop left.

The tests need root (mount). CI runs as root; elsewhere they skip, saying so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import confluent_kafka.admin
import pytest

import logkernel
from logkernel import errors
from logkernel.broker import data as data_module
from logkernel.log import verify as verification
from tests import broker_support
from tests.broker_support import (
    CLIENT_TIMEOUT_MS,
    CLIENT_TIMEOUT_S,
    CONSUME_TIMEOUT_S,
    Confluent,
    ServeProcess,
)
from tests.reliability.conftest import FULL, Figures, scale

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", broker_support.KAFKA_PYTHON_IMPORT_WARNING,
                            DeprecationWarning)
    import kafka
    import kafka.errors

# ---- small file systems ---------------------------------------------------------------------

MOUNT_TIMEOUT_S = 30.0  # mount, mkfs and umount take milliseconds; 30 s bounds a stuck one
FS_KINDS = ("tmpfs", "ext4")
PAGE = 4096


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S,
                          check=False)


@contextlib.contextmanager
def small_filesystem(kind: str, where: Path, size: int, *, inodes: int | None = None
                     ) -> Iterator[Path]:
    """A file system of ``size`` bytes mounted at a new directory under ``where``
    (``inodes``: at most that many files), unmounted afterwards. Skips the test if this
    process may not mount (not root, no loop devices)."""
    mount = where / f"{kind}-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    image = where / f"{mount.name}.img"
    if kind == "tmpfs":
        options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
        done = _run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)])
    else:
        with open(image, "wb") as f:
            f.truncate(size)
        # 4 KiB blocks as on a real volume; -m 0: no blocks reserved for root (the tests
        # run as root and would otherwise write into the reserve).
        made = _run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0",
                     *(["-N", str(inodes)] if inodes else []), str(image)])
        if made.returncode != 0:
            pytest.skip(f"mkfs.ext4 is not usable here: {made.stderr.strip()}")
        done = _run(["mount", "-o", "loop", str(image), str(mount)])
    if done.returncode != 0:
        image.unlink(missing_ok=True)
        pytest.skip(f"cannot mount a {kind} file system for the full-disk tests (needs root "
                    f"and, for ext4, a loop device): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if _run(["umount", str(mount)]).returncode != 0:
            # Something still holds a file open (a failing test's broker); detach it so the
            # next test starts clean, the kernel frees it when the last user lets go.
            _run(["umount", "-l", str(mount)])
        image.unlink(missing_ok=True)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Polls ``condition`` until it is true; AssertionError naming ``what`` after
    ``timeout_s`` (a bound on the wait, never a performance check)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def free_bytes(mount: Path) -> int:
    st = os.statvfs(mount)
    return st.f_bavail * st.f_frsize


def fill(mount: Path, leave: int = 0, name: str = "filler") -> Path:
    """Takes the free space of ``mount`` but about ``leave`` bytes into a filler file
    (blocks really allocated); returns its path. With ``leave=0`` not one more page can be
    allocated afterwards."""
    filler = mount / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        want = free_bytes(mount) - leave
        for _ in range(200):  # halving from megabytes to one page: a few dozen rounds
            if want < PAGE:
                break
            try:
                os.posix_fallocate(fd, size, want)
                size += want
                want = free_bytes(mount) - leave
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                want //= 2  # metadata (ext4's extent blocks) took some of what statvfs said
    finally:
        os.close(fd)
    return filler


def make_room(filler: Path, amount: int | None = None) -> None:
    """Frees ``amount`` bytes of the filler (all of it if None), as an operator would
    delete some other file on the volume."""
    if amount is None:
        filler.unlink()
    else:
        os.truncate(filler, max(filler.stat().st_size - amount, 0))


@pytest.fixture(params=FS_KINDS)
def fs_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# The broker tests take seconds each (three broker starts, clients): the short run (make
# test) runs them on ext4, the volume kind a broker runs on; the full run on both.
BROKER_FS_KINDS = FS_KINDS if FULL else ("ext4",)


# ---- the embedded engine -------------------------------------------------------------------

# Small segments so that a few megabytes hold many rolls, and little else on the volume: one
# __consumer_offsets partition instead of 50 (each would hold a checkpoint file, a page).
ENGINE_CONFIG = {"offsets.topic.num.partitions": 1, "log.segment.bytes": 64 * 1024,
                 "log.cleaner.enable": False}


def value_of(i: int) -> bytes:
    """Record i's value: its number and a body whose bytes depend on it, so a misplaced or
    damaged record cannot pass for another."""
    body = (i.to_bytes(4, "big") * 64)[: 200 + i % 300]
    return b"record-%08d:" % i + body


def read_all(lk: logkernel.Engine, topic: str, partition: int = 0, *,
             committed: bool = False) -> list[logkernel.Record]:
    consumer = lk.consumer(auto_offset_reset="earliest", isolation_level="read_committed"
                           if committed else "read_uncommitted")
    try:
        consumer.assign([(topic, partition)])
        consumer.seek((topic, partition), lk.beginning_offset(topic, partition))
        out: list[logkernel.Record] = []
        for _ in range(100_000):  # bounded: each poll returns at least one record or ends
            got = consumer.poll(max_records=5000)
            if not got:
                break
            out.extend(got)
        return out
    finally:
        consumer.close(autocommit=False)


def check_verified(data: Path) -> None:
    """``logkernel verify``'s checks (every CRC, index, snapshot and checkpoint, against each
    other) find nothing wrong in the directory: what a full disk left (a stale checkpoint,
    no snapshot, no clean-shutdown marker) is a state the engine is meant to be in."""
    report = verification.verify(data)
    assert report.clean, [f"{p.path}: {p.what}" for p in report.problems]


def check_no_space_error(exc: BaseException) -> None:
    """What a full disk must look like to a caller: a NoSpaceError (a StorageError, so
    KAFKA_STORAGE_ERROR over the wire) whose message says the disk is full and what to do."""
    assert isinstance(exc, errors.NoSpaceError), repr(exc)
    assert isinstance(exc, errors.StorageError)
    assert exc.errno == errno.ENOSPC, exc.errno
    text = str(exc)
    assert "full" in text and "free space" in text and "retry" in text, text


def send_until_full(producer: logkernel.Producer, topic: str, start: int, limit: int,
                    **send: object) -> tuple[int, errors.NoSpaceError]:
    """Sends records start, start+1, ... until the disk refuses one: (next number, the
    error). Fails if ``limit`` records fit (the volume was not full enough)."""
    for i in range(start, start + limit):
        try:
            producer.send(topic, value_of(i), key=b"%d" % i, **send)  # type: ignore[arg-type]
        except errors.NoSpaceError as exc:
            return i, exc
    raise AssertionError(f"{limit} records fitted on a volume meant to be full")


def test_embedded_send_on_full_disk_fails_cleanly_and_recovers(
        tmp_path: Path, fs_kind: str, figures: Figures) -> None:
    """producer.send on a full disk raises NoSpaceError saying what to do; nothing written
    before is damaged, the partition's invariants hold, a second refused send changes
    nothing, and once space is freed the same engine accepts records again (and rolls
    segments, and reopens with everything)."""
    rounds = scale(2, 12)
    with small_filesystem(fs_kind, tmp_path, 8 << 20) as mount:
        data = mount / "data"
        lk = logkernel.open(data, ENGINE_CONFIG)
        try:
            lk.create_topic("t", config={"segment.bytes": 64 * 1024})
            producer = lk.producer()
            filler = fill(mount, leave=256 * 1024)
            written = 0
            for _ in range(rounds):
                written, exc = send_until_full(producer, "t", written, 100_000)
                check_no_space_error(exc)
                # Really full: appends are not refused while the space a whole fallocate
                # step would take (a segment's capacity here, 1 MiB) is still free.
                assert free_bytes(mount) < 4 * PAGE, free_bytes(mount)
                figures.add("full disk: ENOSPC episodes survived")
                figures.add("full disk: embedded sends refused as NoSpaceError")
                with pytest.raises(errors.NoSpaceError):  # still full: still refused, no change
                    producer.send("t", value_of(written), key=b"%d" % written)
                log = lk.partition_log("t", 0)
                log.check()
                assert log.log_end_offset == written
                got = read_all(lk, "t")
                assert [r.value for r in got] == [value_of(i) for i in range(written)]
                assert [r.offset for r in got] == list(range(written))
                figures.add("full disk: acknowledged records verified", len(got))
                make_room(filler, 256 * 1024)  # room for a few segments more
            make_room(filler)
            for i in range(written, written + 500):
                producer.send("t", value_of(i), key=b"%d" % i)
            written += 500
            lk.partition_log("t", 0).check()
        finally:
            lk.close()
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            got = read_all(lk, "t")
            assert [r.value for r in got] == [value_of(i) for i in range(written)]
            figures.add("full disk: acknowledged records verified", len(got))
            figures.add("full disk: records lost", written - len(got))


def fill_inodes(mount: Path, leave: int = 0) -> list[Path]:
    """Creates empty files until the file system has no inode left, then removes
    ``leave`` of them; returns the rest (delete them to free inodes)."""
    directory = mount / "inode-filler"
    directory.mkdir(exist_ok=True)
    made: list[Path] = []
    for i in range(1_000_000):  # bounded; a test volume has a few hundred inodes
        path = directory / f"{i}"
        try:
            path.touch()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            break
        made.append(path)
    else:
        raise AssertionError(f"{mount} still had inodes after a million files")
    for path in made[len(made) - leave:] if leave else ():
        path.unlink()
    return made[:len(made) - leave] if leave else made


def idempotent_state(lk: logkernel.Engine, topic: str) -> list[tuple[int, int, int, int]]:
    """(producer id, epoch, last sequence, last offset) of each producer of the partition."""
    return sorted((e.producer_id, e.epoch, e.batches[-1].last_seq, e.batches[-1].last_offset)
                  for e in lk.partition_log(topic, 0).producer_states() if e.batches)


def test_roll_snapshot_and_close_without_inodes(tmp_path: Path, fs_kind: str,
                                                figures: Figures) -> None:
    """A file system out of inodes (space left, no file can be created): the append that
    must roll fails with NoSpaceError and changes nothing, as long as the new segment's
    files cannot be created, however often it is retried; with just enough inodes for the
    segment but none for the producer snapshot the roll completes without the snapshot;
    close completes without checkpoint, snapshot or clean-shutdown marker. Reopening (the
    volume still out of inodes) loses no record and rebuilds the idempotent producer's
    state; once inodes are freed, everything is written again."""
    with small_filesystem(fs_kind, tmp_path, 16 << 20, inodes=256) as mount:
        data = mount / "data"
        config = {"segment.bytes": 16 * 1024, "max.message.bytes": 2048}
        lk = logkernel.open(data, ENGINE_CONFIG)
        try:
            lk.create_topic("t", config=config)
            producer = lk.producer(enable_idempotence=True)
            log = lk.partition_log("t", 0)
            written = 0
            while log.segment_count < 3:  # a roll or two with inodes to spare
                producer.send("t", value_of(written), key=b"%d" % written)
                written += 1
            fillers = fill_inodes(mount)
            segments = log.segment_count
            refused = 0
            for _ in range(scale(3, 25)):  # each retry of the roll is refused the same way
                try:
                    for _ in range(1000):  # until the segment is full and must roll
                        producer.send("t", value_of(written), key=b"%d" % written)
                        written += 1
                except errors.NoSpaceError as exc:
                    check_no_space_error(exc)
                    refused += 1
                log.check()
                assert log.segment_count == segments and log.log_end_offset == written
            assert refused == scale(3, 25)
            figures.add("full disk: ENOSPC episodes survived")
            figures.add("full disk: segment rolls refused without damage", refused)
            # Three inodes: the new segment's files, none for the snapshot's temp file.
            for path in fillers[-3:]:
                path.unlink()
            del fillers[-3:]
            for _ in range(200):
                producer.send("t", value_of(written), key=b"%d" % written)
                written += 1
                if log.segment_count > segments:
                    break
            assert log.segment_count == segments + 1, "the roll did not happen"
            log.check()
            before = idempotent_state(lk, "t")
            assert before
        finally:
            lk.close()  # no inode left for the checkpoint's temp file nor the marker
        assert not (data / ".clean-shutdown").exists()
        check_verified(data)
        with logkernel.open(data, ENGINE_CONFIG) as lk:  # still no inode to spare
            got = read_all(lk, "t")
            assert [r.value for r in got] == [value_of(i) for i in range(written)]
            assert idempotent_state(lk, "t") == before
            lk.partition_log("t", 0).check()
            for path in fillers:
                path.unlink()
            producer = lk.producer(enable_idempotence=True)
            for i in range(written, written + 300):  # rolls with snapshots again
                producer.send("t", value_of(i), key=b"%d" % i)
            written += 300
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            got = read_all(lk, "t")
            assert [r.value for r in got] == [value_of(i) for i in range(written)]
            figures.add("full disk: acknowledged records verified", len(got))
            figures.add("full disk: records lost", written - len(got))


def test_index_growth_on_full_disk(tmp_path: Path, fs_kind: str, figures: Figures) -> None:
    """The log has room (its segment was preallocated whole) but an index file needs its
    next page and the disk has none: the append fails with NoSpaceError and writes nothing,
    neither the batch nor a partial entry; each page freed lets exactly the appends it
    indexes through, and every index lookup still finds the right record."""
    with small_filesystem(fs_kind, tmp_path, 8 << 20) as mount:
        data = mount / "data"
        # One index entry per batch (interval 100 bytes < a record), and a segment larger
        # than everything this test writes, preallocated at its first append.
        config = {"segment.bytes": 1 << 20, "max.message.bytes": 2048,
                  "index.interval.bytes": 100}
        base_ts = 1_700_000_000_000
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            lk.create_topic("t", config=config)
            producer = lk.producer()
            log = lk.partition_log("t", 0)

            def send(i: int) -> None:
                producer.send("t", value_of(i), key=b"%d" % i, timestamp_ms=base_ts + i)

            for i in range(20):
                send(i)
            filler = fill(mount)
            written = 20
            refusals = 0
            for _ in range(scale(2, 4)):
                for _ in range(2000):
                    try:
                        send(written)
                    except errors.NoSpaceError as exc:
                        check_no_space_error(exc)
                        break
                    written += 1
                else:
                    raise AssertionError("no index page was refused")
                refusals += 1
                info = log._active.info()
                assert log.log_end_offset == written and info.next_offset == written
                log.check()
                make_room(filler, PAGE)
            figures.add("full disk: ENOSPC episodes survived", refusals)
            figures.add("full disk: index growths refused without damage", refusals)
            make_room(filler, 2 * PAGE)  # the two indexes may want their next page together
            send(written)
            written += 1
            assert log._active.info().index_entries > 512  # the offset index grew a page
            for i in range(written):  # lookups by offset and by time, through the indexes
                if i % 37 == 0 or i == written - 1:
                    assert lk.offset_for_time("t", 0, base_ts + i) == (i, base_ts + i)
            got = read_all(lk, "t")
            assert [r.value for r in got] == [value_of(i) for i in range(written)]
            figures.add("full disk: acknowledged records verified", len(got))
        check_verified(data)
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            for i in range(0, written, 41):
                assert lk.offset_for_time("t", 0, base_ts + i) == (i, base_ts + i)
            assert [r.value for r in read_all(lk, "t")] == [value_of(i) for i in range(written)]


def fill_topic(lk: logkernel.Engine, topic: str, count: int) -> None:
    producer = lk.producer()
    for i in range(count):
        producer.send(topic, value_of(i), key=b"%d" % i)


def checkpointed_start(directory: Path) -> int:
    text = (directory / "partition.checkpoint").read_text()
    return int(text.split("log-start-offset ")[1].split()[0])


@pytest.mark.parametrize("how", ["delete_records", "retention"])
def test_freeing_space_works_on_a_full_disk(tmp_path: Path, fs_kind: str, how: str,
                                            figures: Figures) -> None:
    """delete_records and retention are how space comes back, so on a full disk they must
    not need any first: the checkpoint that should precede the deletion cannot be
    written, so the segments go first and the checkpoint follows. Appends are accepted
    again at once, the log starts where asked (also after reopening), and the records
    kept read back unchanged."""
    with small_filesystem(fs_kind, tmp_path, 8 << 20) as mount:
        data = mount / "data"
        config: dict[str, object] = {"segment.bytes": 64 * 1024, "max.message.bytes": 2048}
        if how == "retention":
            config["retention.bytes"] = 512 * 1024  # the background check is minutes away
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            lk.create_topic("t", config=config)
            count = 4000  # about 2 MB, 30 segments
            fill_topic(lk, "t", count)
            fill(mount)
            producer = lk.producer()
            end, exc = send_until_full(producer, "t", count, 100_000)
            check_no_space_error(exc)
            fill(mount, name="top-up")  # pages a roll's trim gave back: none is left now
            figures.add("full disk: ENOSPC episodes survived")
            log = lk.partition_log("t", 0)
            segments = log.segment_count
            if how == "delete_records":
                start = end // 2 + 7  # inside a segment
                assert lk.delete_records("t", 0, start) == start
            else:
                assert lk.run_retention() > 0
                start = lk.beginning_offset("t", 0)
                assert start > 0
            assert log.segment_count < segments
            assert free_bytes(mount) > 256 * 1024
            log.check()
            assert checkpointed_start(data / "t-0") == start  # written once space was freed
            figures.add(f"full disk: space freed by {how} on a full disk")
            for i in range(end, end + 100):  # accepted again at once
                producer.send("t", value_of(i), key=b"%d" % i)
            end += 100
            got = read_all(lk, "t")
            assert [r.offset for r in got] == list(range(start, end))
            assert [r.value for r in got] == [value_of(i) for i in range(start, end)]
            figures.add("full disk: acknowledged records verified", len(got))
        check_verified(data)
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            assert lk.beginning_offset("t", 0) == start
            got = read_all(lk, "t")
            assert [r.value for r in got] == [value_of(i) for i in range(start, end)]


def test_close_and_reopen_on_a_full_disk(tmp_path: Path, fs_kind: str, figures: Figures) -> None:
    """With not one page free, close completes (what it cannot write only saves the next
    open time), the engine reopens on the still-full volume (the directory lock, recovery
    of nothing, the producer state rebuilt) with every record and the idempotent
    producer's state, serves reads, refuses appends with NoSpaceError, and takes them
    again once space is freed."""
    with small_filesystem(fs_kind, tmp_path, 8 << 20) as mount:
        data = mount / "data"
        config = {"segment.bytes": 64 * 1024, "max.message.bytes": 2048}
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            lk.create_topic("t", config=config)
            producer = lk.producer(enable_idempotence=True)
            for i in range(1000):
                producer.send("t", value_of(i), key=b"%d" % i)
            filler = fill(mount)
            written, exc = send_until_full(producer, "t", 1000, 100_000)
            check_no_space_error(exc)
            fill(mount, name="top-up")  # pages a roll's trim gave back: none is left now
            before = idempotent_state(lk, "t")
        check_verified(data)
        figures.add("full disk: ENOSPC episodes survived")
        figures.add("full disk: clean shutdowns on a full disk")
        for i in range(2):  # reopened twice on the full volume
            fill(mount, name=f"top-up-{i}")  # what closing gave back (the segment's tail)
            with logkernel.open(data, ENGINE_CONFIG) as lk:
                assert idempotent_state(lk, "t") == before
                got = read_all(lk, "t")
                assert [r.value for r in got] == [value_of(i) for i in range(written)]
                written, exc = send_until_full(lk.producer(), "t", written, 1000)
                check_no_space_error(exc)
                lk.partition_log("t", 0).check()
        for path in (filler, mount / "top-up", mount / "top-up-0", mount / "top-up-1"):
            make_room(path)
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            producer = lk.producer(enable_idempotence=True)
            for i in range(written, written + 200):
                producer.send("t", value_of(i), key=b"%d" % i)
            got = read_all(lk, "t")
            assert [r.value for r in got] == [value_of(i) for i in range(written + 200)]
            figures.add("full disk: acknowledged records verified", len(got))
            figures.add("full disk: records lost", written + 200 - len(got))


TXN_CONFIG = {**ENGINE_CONFIG, "transaction.state.log.num.partitions": 1,
              "transaction.state.log.segment.bytes": 64 * 1024}


def test_transaction_abort_on_a_full_disk(tmp_path: Path, fs_kind: str, figures: Figures) -> None:
    """An ABORT marker lands in the log (its segment has preallocated room) but its
    aborted-transactions index entry needs a page the disk does not have. The abort still
    completes, the partition is not left behind its own marker (the next transaction
    commits), read_committed readers never see the aborted records, neither now nor after
    a close and reopen on the still-full volume, nor after space is freed, when the entry
    is written after all."""
    with small_filesystem(fs_kind, tmp_path, 8 << 20) as mount:
        data = mount / "data"
        with logkernel.open(data, TXN_CONFIG) as lk:
            lk.create_topic("t", config={"segment.bytes": 64 * 1024, "max.message.bytes": 2048})
            producer = lk.producer(transactional_id="etl")
            producer.init_transactions()
            producer.begin_transaction()
            producer.send("t", b"committed-0")
            producer.commit_transaction()
            lk.partition_log("t", 0).roll()  # no .txnindex yet in the active segment
            producer.begin_transaction()
            for i in range(5):
                producer.send("t", b"aborted-%d" % i)
            filler = fill(mount)
            producer.abort_transaction()  # the marker fits; its index entry does not
            figures.add("full disk: ENOSPC episodes survived")
            producer.begin_transaction()
            producer.send("t", b"committed-1")
            producer.commit_transaction()
            lk.partition_log("t", 0).check()
            expected = [b"committed-0", b"committed-1"]
            assert [r.value for r in read_all(lk, "t", committed=True)] == expected
            figures.add("full disk: transactions aborted with their index entry refused")
        with logkernel.open(data, TXN_CONFIG) as lk:  # still full
            assert [r.value for r in read_all(lk, "t", committed=True)] == expected
            everything = [b"committed-0", *(b"aborted-%d" % i for i in range(5)), b"committed-1"]
            assert [r.value for r in read_all(lk, "t")] == everything  # read_uncommitted
        make_room(filler)
        with logkernel.open(data, TXN_CONFIG) as lk:
            assert [r.value for r in read_all(lk, "t", committed=True)] == expected
            aborted = lk.partition_log("t", 0).aborted_transactions(0, 100)
            assert len(aborted) == 1
        indexed = list((data / "t-0").glob("*.txnindex"))
        assert indexed and sum(p.stat().st_size for p in indexed) == 34  # one entry, at last
        check_verified(data)
        with logkernel.open(data, TXN_CONFIG) as lk:
            assert [r.value for r in read_all(lk, "t", committed=True)] == expected


def test_topics_and_committed_offsets_on_a_full_disk(tmp_path: Path, fs_kind: str,
                                                      figures: Figures) -> None:
    """On a full disk: a topic creation fails with NoSpaceError and leaves nothing behind
    (no topic, no directory, no temp file); offset commits are refused whole, and the
    committed offset stays the last one that was stored (never lost, never half-written),
    also after reopening; deleting a topic works (it is how space comes back) and is
    finished for good; then topics are created and offsets committed again."""
    with small_filesystem(fs_kind, tmp_path, 8 << 20) as mount:
        data = mount / "data"
        config = {"segment.bytes": 64 * 1024, "max.message.bytes": 2048}
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            lk.create_topic("big", config=config)
            lk.create_topic("other", config=config)
            fill_topic(lk, "big", 3000)
            lk.commit_offsets("g", {("other", 0): 1})
            fill(mount)
            with pytest.raises(errors.NoSpaceError) as refused:
                lk.create_topic("new", partitions=3)
            check_no_space_error(refused.value)
            assert "new" not in lk.topics()
            assert not list(data.glob("new-*")) and not list((data / "topics").glob("*.tmp"))
            committed = 1
            for offset in range(2, 100_000):  # until the commits' preallocated page is used
                try:
                    lk.commit_offsets("g", {("other", 0): offset, ("big", 0): offset})
                except errors.NoSpaceError as exc:
                    check_no_space_error(exc)
                    break
                committed = offset
            else:
                raise AssertionError("every commit fitted on a full disk")
            assert lk.committed("g", "other", 0) == committed
            figures.add("full disk: ENOSPC episodes survived")
            figures.add("full disk: offset commits refused whole")
        with logkernel.open(data, ENGINE_CONFIG) as lk:  # still full
            assert lk.committed("g", "other", 0) == committed
            assert lk.committed("g", "big", 0) == committed
            fill(mount, name="top-up")  # what closing gave back: not one page is free
            lk.delete_topic("big")  # frees the space
            assert free_bytes(mount) > 1 << 20
            assert lk.committed("g", "big", 0) is None
            lk.create_topic("new", partitions=3)
            lk.commit_offsets("g", {("other", 0): committed + 1})
            figures.add("full disk: topics deleted on a full disk")
        assert not list(data.glob("big-*"))
        assert not [p for p in (data / "topics").iterdir() if not p.name.endswith(".json")]
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            assert lk.topics() == ["new", "other"]
            assert lk.committed("g", "other", 0) == committed + 1
            assert lk.committed("g", "big", 0) is None
            doomed = lk.get_topic("new").topic_id
        # A crash right after a full-disk deletion marked the topic (by the rename): the
        # next open finishes the deletion.
        metadata = data / "topics" / f"{doomed}.json"
        metadata.rename(metadata.with_name(metadata.name + ".deleting"))
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            assert lk.topics() == ["other"]
        assert not list(data.glob("new-*")) and not list((data / "topics").glob("*.deleting"))
        check_verified(data)


COMPACTED = {"cleanup.policy": "compact", "segment.bytes": 64 * 1024, "max.message.bytes": 2048,
             "min.cleanable.dirty.ratio": 0.01}
KEYS = 100
STATIC = 20


def fill_compacted(lk: logkernel.Engine, topic: str, rounds: int) -> dict[bytes, bytes]:
    """STATIC keys written once, then ``rounds`` values for each of the other keys; returns
    the latest value per key. The static keys make the first segment's cleaned output
    non-empty: otherwise the cleaner's first output is empty, needs no space, and its swap
    frees the space the rest needs (a cleaning that succeeds on a full disk)."""
    producer = lk.producer()
    latest = {}
    for k in range(STATIC):
        key, value = b"static-%d" % k, value_of(k) * 4
        producer.send(topic, value, key=key)
        latest[key] = value
    for r in range(rounds):
        for k in range(KEYS):
            key, value = b"key-%d" % k, value_of(r * KEYS + k)
            producer.send(topic, value, key=key)
            latest[key] = value
    lk.partition_log(topic, 0).roll()  # the active segment is never cleaned
    return latest


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".cleaned", ".swap", ".tmp"))


def test_cleaner_output_on_a_full_disk(tmp_path: Path, fs_kind: str, figures: Figures) -> None:
    """The log cleaner writing its output on a full disk: compact() fails with an error
    that names the full disk, leaves no partial output behind (it would hold the space),
    changes no record of the log; once space is freed it compacts as usual."""
    with small_filesystem(fs_kind, tmp_path, 8 << 20) as mount:
        data = mount / "data"
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            lk.create_topic("c", config=COMPACTED)
            latest = fill_compacted(lk, "c", 30)
            before = [(r.offset, r.key, r.value) for r in read_all(lk, "c")]
            filler = fill(mount)
            with pytest.raises(OSError) as refused:
                lk.compact("c")
            assert refused.value.errno == errno.ENOSPC, refused.value
            figures.add("full disk: ENOSPC episodes survived")
            figures.add("full disk: cleanings refused without damage")
            assert leftovers(data / "c-0") == []
            lk.partition_log("c", 0).check()
            assert [(r.offset, r.key, r.value) for r in read_all(lk, "c")] == before
            make_room(filler)
            lk.compact("c")
            got = read_all(lk, "c")
            assert {r.key: r.value for r in got} == latest and len(got) == KEYS + STATIC
        check_verified(data)
        with logkernel.open(data, ENGINE_CONFIG) as lk:
            assert {r.key: r.value for r in read_all(lk, "c")} == latest


def test_background_cleaner_resumes_after_space_is_freed(tmp_path: Path, figures: Figures) -> None:
    """The background cleaner meets a full disk, then space is freed: it cleans the
    partition again by itself, as an operator would expect, without a restart."""
    config = {**ENGINE_CONFIG, "log.cleaner.enable": True, "log.cleaner.backoff.ms": 50}
    with small_filesystem("tmpfs", tmp_path, 8 << 20) as mount, \
            logkernel.open(mount / "data", config) as lk:
        lk.create_topic("c", config=COMPACTED)
        latest = fill_compacted(lk, "c", 30)  # the cleaner cleans this meanwhile

        def cleaning() -> Any:
            return lk.cleaner_stats("c").partitions[0]

        wait_for(lambda: not cleaning().in_progress and not cleaning().state.due, 20.0,
                 "the cleaner to clean what was written")
        producer = lk.producer()
        for k in range(KEYS // 2):  # preallocates the segment, and its indexes' first page
            producer.send("c", value_of(k), key=b"key-%d" % k)
        filler = fill(mount)
        for k in range(KEYS):  # into that preallocated room
            latest[b"key-%d" % k] = value_of(k)
            producer.send("c", value_of(k), key=b"key-%d" % k)
        lk.partition_log("c", 0).roll()  # dirty now: the cleaner meets the full disk
        # It retries every 50 ms (backoff) and says nothing the stats show: a second of
        # retries against the full disk.
        time.sleep(1.0)
        assert cleaning().state.due  # not cleaned: the disk is full
        make_room(filler)
        wait_for(lambda: len(read_all(lk, "c")) == KEYS + STATIC, 3.0,
                 "the cleaner to compact the partition once space was freed")
        assert {r.key: r.value for r in read_all(lk, "c")} == latest


def test_transaction_state_on_a_full_disk(tmp_path: Path, fs_kind: str, figures: Figures) -> None:
    """The first transactional producer on a full disk: its producer id and the
    __transaction_state topic (created on first use) need space, so init_transactions
    fails with NoSpaceError and leaves nothing half-made; once space is freed the same
    producer initialises and commits."""
    with small_filesystem(fs_kind, tmp_path, 8 << 20) as mount:
        data = mount / "data"
        with logkernel.open(data, TXN_CONFIG) as lk:
            lk.create_topic("t", config={"segment.bytes": 64 * 1024, "max.message.bytes": 2048})
            filler = fill(mount)
            producer = lk.producer(transactional_id="etl")
            with pytest.raises(errors.NoSpaceError) as refused:
                producer.init_transactions()
            check_no_space_error(refused.value)
            figures.add("full disk: ENOSPC episodes survived")
            assert "__transaction_state" not in lk.topics(internal=True)
            assert not list(data.glob("__transaction_state-*"))
            make_room(filler)
            producer.init_transactions()
            producer.begin_transaction()
            producer.send("t", b"committed")
            producer.commit_transaction()
            assert [r.value for r in read_all(lk, "t", committed=True)] == [b"committed"]
        check_verified(data)


def exhaust_active_segment(lk: logkernel.Engine, topic: str) -> None:
    """Uses up the preallocated room of the topic's active segment on a full disk: records,
    then the smallest batches there are (~70 bytes), until even one is refused. After
    this not even a transaction marker (~79 bytes) fits."""
    producer = lk.producer()
    for value in (b"x" * 300, b""):
        for _ in range(10_000):
            try:
                producer.send(topic, value)
            except errors.NoSpaceError:
                break


def test_transaction_commit_when_a_marker_meets_a_full_disk(tmp_path: Path,
                                                            figures: Figures) -> None:
    """A commit whose PrepareCommit is stored but whose marker for one partition finds no
    space: the commit fails retriably, and once space is freed a retried commit completes
    it, without a restart: read_committed readers then see all of it, on both partitions."""
    with small_filesystem("tmpfs", tmp_path, 8 << 20) as mount, \
            logkernel.open(mount / "data", TXN_CONFIG) as lk:
        config = {"segment.bytes": 64 * 1024, "max.message.bytes": 2048}
        lk.create_topic("a", config=config)
        lk.create_topic("b", config=config)
        producer = lk.producer(transactional_id="etl")
        producer.init_transactions()
        producer.begin_transaction()
        producer.send("a", b"to-a")
        producer.send("b", b"to-b")
        filler = fill(mount)
        exhaust_active_segment(lk, "b")
        with pytest.raises(errors.StorageError) as refused:
            producer.commit_transaction()
        check_no_space_error(refused.value)
        figures.add("full disk: ENOSPC episodes survived")
        assert b"to-b" not in [r.value for r in read_all(lk, "b", committed=True)]
        make_room(filler)
        deadline = time.monotonic() + 3.0  # a fixed coordinator completes at the first retry
        while True:  # bounded: the client's retry of a retriable answer
            try:
                producer.commit_transaction()
                break
            except errors.ConcurrentTransactionsError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert [r.value for r in read_all(lk, "a", committed=True)] == [b"to-a"]
        assert b"to-b" in [r.value for r in read_all(lk, "b", committed=True)]


# ---- the broker, with real clients -----------------------------------------------------------

BROKER_SETTINGS = ("offsets.topic.num.partitions=1", "transaction.state.log.num.partitions=1",
                   "group.initial.rebalance.delay.ms=0")
# flush.messages=1: every acknowledged record was fsynced, so a SIGKILL loses none of them,
# and the fsync path meets the full disk too.
BROKER_TOPIC = {"segment.bytes": "131072", "max.message.bytes": "32768", "flush.messages": "1"}
KAFKA_STORAGE_ERROR = 56


def free_port() -> int:
    """A loopback port nobody listens on now, so a restarted broker comes back at the address
    its clients know (they reconnect to it, and an idempotent producer retries there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Acked:
    """Every record a client was told is written: offset -> value. The log must hold exactly
    these, in offset order (a refused produce writes nothing, a retry is not written twice)."""

    def __init__(self) -> None:
        self.values: dict[int, bytes] = {}
        self.lock = threading.Lock()
        self.next_number = 0  # record numbers are never reused: value_of(n) is unique

    def numbers(self, count: int) -> range:
        with self.lock:
            start, self.next_number = self.next_number, self.next_number + count
        return range(start, start + count)

    def add(self, offset: int, value: bytes) -> None:
        with self.lock:
            assert offset not in self.values, f"offset {offset} acknowledged twice"
            self.values[offset] = value


def consume_all(bootstrap: str, topic: str) -> list[tuple[int, bytes]]:
    """(offset, value) of every record of partition 0, up to its high watermark, through a
    confluent-kafka consumer (assigned, no group)."""
    consumer = confluent_kafka.Consumer({**Confluent.base_config(bootstrap),
                                         "group.id": "full-disk-reader",
                                         "enable.auto.commit": False})
    try:
        _, high = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0),
                                                 timeout=CLIENT_TIMEOUT_S)
        consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while (not out or out[-1][0] < high - 1) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                assert message.error() is None, message.error()
                out.append((message.offset(), bytes(message.value())))
        return out
    finally:
        consumer.close()


def check_log(bootstrap: str, acked: Acked, figures: Figures) -> None:
    """The topic holds exactly the acknowledged records, byte for byte, at their offsets."""
    got = consume_all(bootstrap, "t")
    expected = sorted(acked.values.items())
    assert [o for o, _ in got] == [o for o, _ in expected], "offsets differ from those acknowledged"
    assert got == expected, "a record read back differs from the one acknowledged"
    figures.add("full disk: acknowledged records verified", len(got))
    figures.add("full disk: records lost", len(expected) - len(set(got) & set(expected)))


def kafka_python_until_refused(bootstrap: str, acked: Acked) -> BaseException:
    """kafka-python (acks=all, no retries, so the broker's answer reaches us) sends batches
    of records until one is refused; returns the error."""
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=0,
                                   enable_idempotence=False, linger_ms=5,
                                   request_timeout_ms=CLIENT_TIMEOUT_MS)
    try:
        for _ in range(2000):  # bounded: the volume holds a few thousand records
            futures = [(n, producer.send("t", value_of(n), key=b"%d" % n))
                       for n in acked.numbers(20)]
            refused = None
            for n, future in futures:
                try:
                    acked.add(future.get(timeout=CLIENT_TIMEOUT_S).offset, value_of(n))
                except kafka.errors.KafkaError as exc:
                    refused = refused or exc
            if refused is not None:
                return refused
        raise AssertionError("the volume never filled")
    finally:
        producer.close(timeout=CLIENT_TIMEOUT_S)


def confluent_until_refused(bootstrap: str, acked: Acked) -> Any:
    """A non-idempotent confluent-kafka producer with no retries sends records one at a time
    until one is refused (what the segment had preallocated fits first); returns the
    delivery error."""
    producer = confluent_kafka.Producer({**Confluent.base_config(bootstrap), "acks": "all",
                                         "retries": 0, "enable.idempotence": False})
    outcome: list[tuple[Any, Any]] = []
    for number in acked.numbers(1000):
        producer.produce("t", value_of(number), on_delivery=lambda e, m: outcome.append((e, m)))
        assert producer.flush(CLIENT_TIMEOUT_S) == 0
        error, message = outcome.pop()
        if error is not None:
            assert error.code() == KAFKA_STORAGE_ERROR, error
            return error
        acked.add(message.offset(), value_of(number))
    raise AssertionError("1000 more records fitted on a full volume")


class IdempotentProducer:
    """A confluent-kafka producer with enable.idempotence (acks=all, retries forever within
    a long message.timeout.ms): it keeps sending what the broker refuses, and must end
    with every record written exactly once, in order."""

    def __init__(self, bootstrap: str, acked: Acked) -> None:
        self.acked = acked
        self.errors: list[Any] = []
        self.delivered = 0
        # From librdkafka's statistics: messages transmitted to partition 0 (a retried one
        # counts again), and how many statistics reports came.
        self.transmitted = 0
        self.reports = 0
        self.expected = 0  # transmissions if nothing had been sent twice
        self.producer = confluent_kafka.Producer({
            **Confluent.base_config(bootstrap), "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "batch.size": 16_384, "message.timeout.ms": 120_000,
            # Retry a refused batch within 0.2 s (not librdkafka's 1 s): the test waits
            # for those retries after every freeing of space.
            "retry.backoff.ms": 50, "retry.backoff.max.ms": 200,
            "statistics.interval.ms": 100, "stats_cb": self._statistics})

    def _statistics(self, text: str) -> None:
        partitions = json.loads(text).get("topics", {}).get("t", {}).get("partitions", {})
        self.transmitted = int(partitions.get("0", {}).get("txmsgs", 0))
        self.reports += 1

    def wait_refused(self) -> None:
        """Polls until librdkafka has transmitted a record again, which it does only when
        the broker refused it: proof that the full disk was met, and the records are held
        by the client, neither lost nor (as check_log shows later) written twice."""
        wait_for(lambda: self.producer.poll(0.05) >= 0 and self.transmitted > self.expected,
                 CONSUME_TIMEOUT_S, "the idempotent producer to be refused and retry")

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.errors.append(error)
        else:
            self.delivered += 1
            self.acked.add(message.offset(), bytes(message.value()))

    def send(self, count: int) -> None:
        """Sends ``count`` new records (after the earlier ones were delivered)."""
        reports = self.reports  # a report made after now says what was transmitted so far
        wait_for(lambda: self.producer.poll(0.05) >= 0 and self.reports > reports + 1,
                 CLIENT_TIMEOUT_S, "librdkafka's statistics")
        self.expected = self.transmitted + count
        for n in self.acked.numbers(count):
            self.producer.produce("t", value_of(n), key=b"%d" % n, on_delivery=self._delivered)
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(CONSUME_TIMEOUT_S + CLIENT_TIMEOUT_S) == 0, \
            "records still undelivered"
        assert not self.errors, self.errors


def commit_offset(consumer: Any, offset: int) -> None:
    consumer.commit(offsets=[confluent_kafka.TopicPartition("t", 0, offset)], asynchronous=False)


def committed_offset(consumer: Any) -> int:
    (tp,) = consumer.committed([confluent_kafka.TopicPartition("t", 0)], timeout=CLIENT_TIMEOUT_S)
    return int(tp.offset)


def logkernel_verify(data: Path) -> None:
    """``logkernel verify DATA_DIR``, the command an operator runs, finds the directory
    clean (exit status 0)."""
    done = subprocess.run([*broker_support.logkernel_command(), "verify", str(data)],
                          capture_output=True, text=True, timeout=CONSUME_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("volume", BROKER_FS_KINDS)
def test_broker_on_a_full_disk(tmp_path: Path, volume: str, figures: Figures) -> None:
    """``logkernel serve`` on a small volume, with real clients, through five phases:

    1. filled while producing: kafka-python (retries=0) gets KafkaStorageError, which it
       counts retriable; confluent-kafka gets KAFKA_STORAGE_ERROR;
    2. while full, the broker serves metadata and fetches (every acknowledged record reads
       back byte for byte), refuses an offset commit retriably and keeps the committed
       offset; kafka-python's commit, retried by the client, completes once space is freed;
    3. an idempotent producer's records, refused while full, are all written exactly once
       and in order once space is freed, without a restart;
    4. full again, the broker is SIGKILLed with that producer's records refused; after
       space is freed it restarts at the same address and the producer carries on, no
       duplicate, no gap;
    5. full again, SIGTERM: a clean stop; it starts again on the still-full volume and
       serves everything, then takes writes once space is freed.
    After each phase the topic holds exactly the acknowledged records."""
    started = time.monotonic()
    extra_spells = scale(0, 15)
    spells = 3 + extra_spells  # full-disk spells the broker meets: phases 1-3, 4, 5, extras
    with small_filesystem(volume, tmp_path, 16 << 20) as mount:
        data = mount / "data"
        log_path = tmp_path / "serve.log"  # on the real disk: the broker's log must not fill
        listen = f"127.0.0.1:{free_port()}"
        acked = Acked()

        def serve() -> ServeProcess:
            return ServeProcess(data, log_path, listen=listen, settings=BROKER_SETTINGS)

        with serve() as broker:
            bootstrap = broker.bootstrap
            admin = confluent_kafka.admin.AdminClient(Confluent.base_config(bootstrap))
            admin.create_topics([confluent_kafka.admin.NewTopic("t", 1, 1, config=BROKER_TOPIC)]
                                )["t"].result(CLIENT_TIMEOUT_S)
            # Started before the disk fills: a new producer id is a write too.
            idempotent = IdempotentProducer(bootstrap, acked)
            idempotent.send(10)
            idempotent.flush()
            group = confluent_kafka.Consumer({**Confluent.base_config(bootstrap),
                                              "group.id": "g", "enable.auto.commit": False})
            commit_offset(group, 1)

            # 1. Filled while producing.
            filler = fill(mount, leave=150 * 1024)
            refused = kafka_python_until_refused(bootstrap, acked)
            assert isinstance(refused, kafka.errors.KafkaStorageError), repr(refused)
            assert refused.retriable
            confluent_until_refused(bootstrap, acked)  # KAFKA_STORAGE_ERROR
            figures.add("full disk: produce errors returned as retriable", 2)
            figures.add("full disk: ENOSPC episodes survived")

            # 2. Still serving; commits refused whole, never lost.
            top_up = fill(mount, name="top-up")  # what the last roll gave back
            metadata = admin.list_topics(timeout=CLIENT_TIMEOUT_S)
            assert metadata.topics["t"].error is None
            check_log(bootstrap, acked, figures)
            commits_refused = 0
            for offset in range(2, 10_000):  # until the commits' preallocated room is used
                try:
                    commit_offset(group, offset)
                except confluent_kafka.KafkaException as exc:
                    assert exc.args[0].code() == KAFKA_STORAGE_ERROR, exc
                    commits_refused += 1
                    break
            assert commits_refused == 1
            assert committed_offset(group) == offset - 1
            figures.add("full disk: offset commits refused whole", commits_refused)
            python_group = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id="g",
                                               enable_auto_commit=False)
            python_commit = threading.Thread(target=python_group.commit, args=(
                {kafka.TopicPartition("t", 0): kafka.OffsetAndMetadata(offset + 7, "", -1)},))
            python_commit.start()  # kafka-python retries KAFKA_STORAGE_ERROR itself

            # 3. An idempotent producer's records wait out the full disk.
            idempotent.send(200)
            idempotent.wait_refused()
            make_room(filler)
            make_room(top_up)
            idempotent.flush()
            python_commit.join(CONSUME_TIMEOUT_S)
            assert not python_commit.is_alive(), "kafka-python's commit never completed"
            python_group.close()
            assert committed_offset(group) == offset + 7
            commit_offset(group, offset + 8)  # and confluent-kafka's commits work again
            group.close()
            check_log(bootstrap, acked, figures)
            figures.add("full disk: ENOSPC episodes survived")
            for _ in range(extra_spells):  # the full run: more spells of the same
                filler = fill(mount)
                confluent_until_refused(bootstrap, acked)
                idempotent.send(100)
                idempotent.wait_refused()
                make_room(filler)
                idempotent.flush()
                check_log(bootstrap, acked, figures)
                figures.add("full disk: ENOSPC episodes survived")

            # 4. Full again; SIGKILL with records refused; restart after freeing space.
            filler = fill(mount)
            confluent_until_refused(bootstrap, acked)  # uses up the segment's preallocation
            idempotent.send(100)
            idempotent.wait_refused()
            broker.kill()
        figures.add("full disk: broker kills on a full disk survived")
        logkernel_verify(data)  # what the SIGKILL left on the full volume
        make_room(filler)
        with serve() as broker:
            idempotent.flush()  # the same producer, through the restart
            check_log(broker.bootstrap, acked, figures)
            figures.add("full disk: ENOSPC episodes survived")

            # 5. Full again; a clean stop, and a start on the full volume.
            filler = fill(mount)
            confluent_until_refused(broker.bootstrap, acked)
            idempotent.send(50)
            idempotent.wait_refused()
            assert broker.terminate() == 0, broker.log_tail()
        figures.add("full disk: clean shutdowns on a full disk")
        logkernel_verify(data)
        with serve() as broker:
            check_log(broker.bootstrap, acked, figures)  # served while still full
            make_room(filler)
            idempotent.flush()
            check_log(broker.bootstrap, acked, figures)
            assert broker.terminate() == 0, broker.log_tail()
        # Clients retry a refused produce several times a second; the broker's log says so
        # once per spell (and every 10 s of it), not once per refusal: a log that grows
        # with the refusals would help fill the disk it reports on.
        text = log_path.read_text()
        lines = text.count("failed in storage")
        periods = (time.monotonic() - started) / data_module.STORAGE_FAILURE_LOG_INTERVAL_S
        # (+2: phase 1's kafka-python and confluent-kafka spells may be two.)
        assert 1 <= lines <= spells + periods + 2, (lines, spells)
        assert "is accepted again" in text
