"""Transactions under SIGKILL: a consume-transform-produce loop killed at random moments
and restarted must leave each input's result in the output exactly once; a commit killed
between the markers of its partitions must end the same way in every partition (all
committed or all aborted); a transaction left open by a killed process must be aborted
once its timeout passes. The child code is tests/txn_crash_workers.py; every child opens
the engine itself and is killed (or exits) without closing it, so each reopen here is a
recovery."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import logkernel
from logkernel.log.partition import PartitionLog
from logkernel.records import iter_batches
from tests import txn_crash_workers as workers

WORKERS = str(Path(__file__).with_name("txn_crash_workers.py"))
ROOT = str(Path(__file__).parent.parent)
# Kills from outside, at random moments, beside one self-kill at each phase of a
# transaction (txn_crash_workers.CtpKill.PHASES).
OUTSIDE_KILLS = int(os.environ.get("LOGKERNEL_TXN_CRASH_KILLS", "6"))


# ---- helpers ----------------------------------------------------------------------------

@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """/dev/shm when there is one: a SIGKILL needs no disk, and fsync there costs nothing."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="lk-txn-crash-", dir="/dev/shm"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


class Server:
    """The fork server of txn_crash_workers: one child at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, WORKERS, "server"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def start(self, out: Path, *args: object) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(" ".join(map(str, [out, *args])) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.startswith("pid "), line
        return int(line.split()[1])

    def wait(self) -> int:
        """The wait status of the child started last."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("status "), line
        return int(line.split()[1])

    def run(self, out: Path, *args: object) -> tuple[int, list[str]]:
        self.start(out, *args)
        return self.wait(), out.read_text().splitlines()

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def exited_ok(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def wait_for_line(path: Path, prefixes: tuple[str, ...], timeout: float = 30.0) -> str | None:
    """The first whole line of ``path`` starting with one of ``prefixes``; None if none came
    within ``timeout`` (a bound on waiting, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().split("\n")[:-1]:
                if line.startswith(prefixes):
                    return line
        time.sleep(0.005)
    return None


def read_partition(lk: logkernel.Engine, topic: str, partition: int, level: str) -> list[bytes | None]:
    consumer = lk.consumer(isolation_level=level, auto_offset_reset="earliest")
    consumer.assign([(topic, partition)])
    out: list[bytes | None] = []
    while got := consumer.poll(max_records=10_000):
        out.extend(r.value for r in got)
    consumer.close()
    return out


def marker_types(pl: PartitionLog) -> list[int]:
    """The control type (0 ABORT, 1 COMMIT) of every marker in the partition."""
    out = []
    data = pl.read(pl.log_start_offset, 1 << 20)
    for batch in iter_batches(data):
        if batch.is_control:
            out.append(batch.control_record().control_type)
    return out


def transactions_closed(lk: logkernel.Engine) -> None:
    for name in lk.topics(internal=True):
        for pl in lk.get_topic(name).partitions:
            assert pl.open_transactions() == {}, pl.name
            assert pl.last_stable_offset == pl.high_watermark, pl.name
            pl.check()


# ---- the exactly-once loop ------------------------------------------------------------------

def check_exactly_once_prefix(directory: Path, final: bool) -> int:
    """Opens the data directory as a restart would: per input partition, the committed
    output is the results of inputs 0..k-1, in order, each once, and the group's committed
    offset is k. Returns the inputs done."""
    done = 0
    with logkernel.open(directory, workers.ENGINE_CONFIG) as lk:
        for p in range(workers.INPUT_PARTITIONS):
            out = read_partition(lk, "out", p, "read_committed")
            k = len(out)
            assert out == [workers.output_value(p, o) for o in range(k)], (
                f"out-{p}: {[v[:12] for v in out if v is not None]}")
            assert lk.committed("g", "in", p) == (k or None), (p, k)
            done += k
            if final:
                assert k == workers.INPUTS_PER_PARTITION
        if final:
            transactions_closed(lk)
    return done


def test_consume_transform_produce_is_exactly_once_across_sigkills(
        scratch: Path, server: Server) -> None:
    data = scratch / "data"
    with logkernel.open(data, workers.ENGINE_CONFIG) as lk:
        lk.create_topic("in", workers.INPUT_PARTITIONS)
        lk.create_topic("out", workers.INPUT_PARTITIONS)
        feeder = lk.producer()
        for o in range(workers.INPUTS_PER_PARTITION):
            for p in range(workers.INPUT_PARTITIONS):
                feeder.send("in", workers.input_value(p, o), key=b"k%d" % o, partition=p)
    rng = random.Random(20)
    total = workers.INPUT_PARTITIONS * workers.INPUTS_PER_PARTITION
    rounds = [f"{rng.randint(1, 4)}/{phase}" for phase in workers.CtpKill.PHASES]
    rounds += ["outside"] * OUTSIDE_KILLS
    rng.shuffle(rounds)
    done = 0
    kills: list[str] = []
    for round_, kill_at in enumerate(rounds):
        out = scratch / f"ctp-{round_}.out"
        if kill_at != "outside":
            # killed by itself at a chosen phase of a transaction
            status, lines = server.run(out, "ctp", data, rng.randrange(1_000_000), kill_at)
            assert killed(status), lines[-20:]
            assert lines[-1] == "kill " + kill_at.split("/")[1], lines[-5:]
        else:
            # killed from outside at a random moment after its first commit
            pid = server.start(out, "ctp", data, rng.randrange(1_000_000), "0")
            seen = wait_for_line(out, ("committed", "done"))
            if seen is not None and seen != "done":
                time.sleep(rng.uniform(0.0, 0.1))
                os.kill(pid, signal.SIGKILL)
            status = server.wait()
            lines = out.read_text().splitlines()
            assert seen is not None, lines[-20:]
            assert killed(status) or (exited_ok(status) and lines[-1:] == ["done"]), lines[-20:]
        if killed(status):
            kills.append(kill_at)
        # every commit the child saw return is durable, and nothing is there twice
        acknowledged = max([int(line.split()[1]) for line in lines if line.startswith("committed ")],
                           default=0)
        now_done = check_exactly_once_prefix(data, final=False)
        assert now_done >= done + acknowledged, (kill_at, done, acknowledged, now_done)
        # the transaction the kill interrupted: decided by its Prepare record, so aborted
        # if killed before it (the next incarnation's init_transactions aborts it) and
        # committed if killed after it (the next open finishes the commit)
        phase = kill_at.split("/")[-1]
        if phase in ("send:first", "send:last", "offsets", "commit", "prepare"):
            assert now_done == done + acknowledged, (kill_at, done, acknowledged, now_done)
        elif phase != "outside":
            assert now_done > done + acknowledged, (kill_at, done, acknowledged, now_done)
        done = now_done
        assert done < total, "the input ran out before every kill point was tried"
    assert len(kills) >= len(workers.CtpKill.PHASES) + 1, kills
    status, lines = server.run(scratch / "ctp-final.out", "ctp", data, 1, "0")
    assert exited_ok(status) and lines[-1] == "done", lines[-20:]
    assert check_exactly_once_prefix(data, final=True) == total
    with logkernel.open(data, workers.ENGINE_CONFIG) as lk:
        # the kills did interrupt transactions: aborted results are in the log, unread
        uncommitted = sum(len(read_partition(lk, "out", p, "read_uncommitted"))
                          for p in range(workers.INPUT_PARTITIONS))
        assert uncommitted > total


# ---- a commit killed between its markers ------------------------------------------------------

PARTITIONS = 8
# The commit's writes: the Prepare record, a marker in __consumer_offsets and in each of
# the topic's partitions, the Complete record.
COMMIT_WRITES = 1 + 1 + PARTITIONS + 1


def test_a_commit_killed_between_markers_ends_the_same_in_every_partition(
        scratch: Path, server: Server) -> None:
    outcomes = {}
    for kill_at in range(1, COMMIT_WRITES + 2):  # every write, and past the last one
        data = scratch / f"data-{kill_at}"
        status, lines = server.run(scratch / f"endtxn-{kill_at}.out", "endtxn", data, PARTITIONS,
                                   f"any/any/{kill_at}")
        writes = [line for line in lines if line.startswith("write ")]
        if kill_at <= COMMIT_WRITES:
            assert killed(status), lines[-20:]
            assert len(writes) == kill_at - 1, lines
        else:
            assert exited_ok(status) and "committed" in lines, lines[-20:]
            assert len(writes) == COMMIT_WRITES, lines
        assert writes[:1] in ([], ["write append_record __transaction_state-0"]), writes
        with logkernel.open(data, workers.ENGINE_CONFIG) as lk:
            meta = lk.transactions.describe("wide")
            if meta.state_name == "Ongoing":
                # killed before the Prepare record: nothing is decided until the timeout
                assert kill_at == 1
                pl = lk.partition_log("many", 0)
                assert pl.last_stable_offset < pl.high_watermark
                assert lk.transactions.abort_timed_out(now_ms=meta.start_ms + meta.timeout_ms + 1) == 1
                meta = lk.transactions.describe("wide")
            assert meta.state_name in ("CompleteCommit", "CompleteAbort"), meta
            commit = meta.state_name == "CompleteCommit"
            # decided once the Prepare record is in the log: the commit is finished at open
            assert commit == (kill_at > 1), (kill_at, meta.state_name)
            transactions_closed(lk)
            seen = [read_partition(lk, "many", p, "read_committed") for p in range(PARTITIONS)]
            assert seen == [[b"txn-%d" % p] if commit else [] for p in range(PARTITIONS)], seen
            assert lk.committed("g", "many", 0) == (1 if commit else None)
            # every partition holds the record and markers of this outcome only (a marker
            # written before the kill is written again when the commit is finished)
            for p in range(PARTITIONS):
                assert read_partition(lk, "many", p, "read_uncommitted") == [b"txn-%d" % p]
                assert set(marker_types(lk.partition_log("many", p))) == {1 if commit else 0}
        with logkernel.open(data, workers.ENGINE_CONFIG) as lk:  # and it stays decided
            assert lk.transactions.describe("wide").state_name == meta.state_name
            transactions_closed(lk)
            assert lk.committed("g", "many", 0) == (1 if commit else None)
        outcomes[kill_at] = meta.state_name
    assert set(outcomes.values()) == {"CompleteCommit", "CompleteAbort"}


# ---- a transaction left open by a killed process --------------------------------------------------

def test_a_transaction_left_open_by_a_killed_process_is_aborted_after_its_timeout(
        scratch: Path, server: Server) -> None:
    data = scratch / "data"
    status, lines = server.run(scratch / "open.out", "open", data)
    assert killed(status) and lines[-1] == "open", lines[-20:]
    before = [b"before-%d" % p for p in range(3)]
    with logkernel.open(data, workers.ENGINE_CONFIG) as lk:  # the default sweep: 10 s
        meta = lk.transactions.describe("opened")
        assert meta.state_name == "Ongoing"
        for p in range(3):
            pl = lk.partition_log("t", p)
            assert pl.open_transactions() == {meta.producer_id: 1}
            assert pl.last_stable_offset == 1 < pl.high_watermark == 3
            # nothing of the transaction, nor what followed it, is read_committed yet
            assert read_partition(lk, "t", p, "read_committed") == [before[p]]
        assert lk.committed("g", "t", 0) is None
    config = {**workers.ENGINE_CONFIG,
              "transaction.abort.timed.out.transaction.cleanup.interval.ms": 20}
    with logkernel.open(data, config) as lk:
        deadline = time.monotonic() + 30
        while lk.transactions.describe("opened").state_name != "CompleteAbort":
            assert time.monotonic() < deadline, "the open transaction was never aborted"
            time.sleep(0.01)
        transactions_closed(lk)
        for p in range(3):
            assert read_partition(lk, "t", p, "read_committed") == [before[p], b"after-%d" % p]
        assert lk.committed("g", "t", 0) is None
    with logkernel.open(data, workers.ENGINE_CONFIG) as lk:
        assert lk.transactions.describe("opened").state_name == "CompleteAbort"
        transactions_closed(lk)
