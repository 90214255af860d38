"""The log cleaner under SIGKILL: a child cleans (and writes) and dies at random moments,
or at every single file operation of a cleaning (each rename of the .cleaned -> .swap ->
.deleted -> live sequence, each fsync, each unlink, the checkpoint), or again while the
next open completes an interrupted swap. Reopened, the log must hold the latest record
of every key, only records that were written, every record a finished cleaning keeps,
no leftover cleaner files, and must clean again to exactly the model. The child code is
tests/cleaner_workers.py."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import logkernel
from logkernel import _binding
from logkernel.log.cleaner import clean_partition, remove_files
from logkernel.log.partition import PartitionLog
from tests import cleaner_workers as workers

WORKERS = str(Path(__file__).with_name("cleaner_workers.py"))
ROOT = str(Path(__file__).parent.parent)
TOPIC = workers.TOPIC
LEFTOVERS = (".cleaned", ".swap", ".deleted", ".tmp")


# ---- helpers ----------------------------------------------------------------------------

@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory for many short-lived copies: in /dev/shm when there is one (SIGKILL
    does not need a disk, and fsync there costs nothing), else tmp_path."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="lk-cleaner-crash-", dir="/dev/shm"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


@pytest.fixture(scope="module")
def server() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, WORKERS, "server"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        yield proc
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


def run_child(server: subprocess.Popen, out: Path, *args: object) -> tuple[int, list[str]]:
    """Runs ``cleaner_workers.main(args)`` in a child forked by the server; returns its
    wait status and output lines."""
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(" ".join(map(str, [out, *args])) + "\n")
    server.stdin.flush()
    line = server.stdout.readline()
    assert line.startswith("status "), line
    return int(line.split()[1]), out.read_text().splitlines()


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def engine(path: Path | str) -> logkernel.Engine:
    return logkernel.open(path, config=workers.ENGINE_CONFIG)


def read_all(pl: PartitionLog) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) of every record from the log start; offsets must increase."""
    records, _ = workers.read_log(pl)
    return [(r.offset, r.key, r.value) for r in records]


def partition_files(directory: Path) -> list[str]:
    return sorted(p.name for p in next(directory.rglob(f"{TOPIC}-0")).iterdir())


def leftover_files(directory: Path) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.name.endswith(LEFTOVERS)]


def crash_state(directory: Path) -> set[str]:
    """The kinds of cleaner files a crash left in the partition directory."""
    names = partition_files(directory)
    out = {suffix for suffix in (".cleaned", ".deleted", ".tmp")
           if any(n.endswith(suffix) for n in names)}
    if any(n.endswith(".log.swap") for n in names):
        out.add("committed .swap")
    elif any(n.endswith(".swap") for n in names):
        out.add("uncommitted .swap")
    return out


def model_of(rounds: list[list[tuple[bytes, bytes | None]]]) -> dict[bytes, tuple[int, bytes | None]]:
    """key -> (offset, value) of its latest record, one batch per round from offset 0."""
    latest: dict[bytes, tuple[int, bytes | None]] = {}
    offset = 0
    for items in rounds:
        for key, value in items:
            latest[key] = (offset, value)
            offset += 1
    return latest


def clean_to_the_end(pl: PartitionLog, map_bytes: int, now_ms: int) -> list:
    offset_map = _binding.OffsetMap(map_bytes, 0.9)
    buffers = _binding.FilterBuffers(1024)
    results = []
    while (r := clean_partition(pl, offset_map, buffers, now_ms=now_ms, chunk_bytes=1024,
                                remove=remove_files)) is not None:
        results.append(r)
        if not r.map_full:
            break
    return results


@dataclass
class Scenario:
    """A directory as the cleaning under test finds it, what it holds before and after
    that cleaning, and the model."""

    template: Path
    map_bytes: int
    now_ms: int
    end_offset: int
    before: list[tuple[int, bytes, bytes | None]]
    after: list[tuple[int, bytes, bytes | None]]
    model: dict[bytes, tuple[int, bytes | None]]


def make_scenario(root: Path, *, seed: int, first: int, total: int, keys: int,
                  map_bytes: int) -> Scenario:
    """Rounds [0, first) written and compacted (so the cleaning under test regroups
    cleaned segments), rounds [first, total) written and rolled: dirty."""
    template = root / f"template-{seed}"
    rounds = workers.data_rounds(seed, total, keys)
    with engine(template) as lk:
        lk.create_topic(TOPIC, config=workers.TOPIC_CONFIG)
        workers.write_rounds(lk, rounds, 0, first)
        lk.compact(TOPIC, roll=True)
        workers.write_rounds(lk, rounds, first, total)
        pl = lk.partition_log(TOPIC, 0)
        pl.roll()
        end = pl.log_end_offset
        before = read_all(pl)
    now = int(time.time() * 1000)
    reference = root / f"reference-{seed}"
    shutil.copytree(template, reference)
    with engine(reference) as lk:
        pl = lk.partition_log(TOPIC, 0)
        results = clean_to_the_end(pl, map_bytes, now)
        assert results and not results[-1].map_full
        after = read_all(pl)
    shutil.rmtree(reference)
    model = model_of(rounds)
    assert after == sorted((o, k, v) for k, (o, v) in model.items())
    return Scenario(template, map_bytes, now, end, before, after, model)


def verify(directory: Path, s: Scenario, context: str) -> None:
    """Reopens a directory a SIGKILL left and checks it (see the module docstring)."""
    with engine(directory) as lk:
        assert not leftover_files(directory), (context, leftover_files(directory))
        pl = lk.partition_log(TOPIC, 0)
        pl.check()
        assert pl.log_end_offset == s.end_offset, context
        records = read_all(pl)
        got = set(records)
        assert got <= set(s.before), (context, sorted(got - set(s.before))[:5])
        assert set(s.after) <= got, (context, sorted(set(s.after) - got)[:5])
        last = {k: (o, v) for o, k, v in records}
        assert last == s.model, context
        lk.compact(TOPIC, roll=True)
        assert read_all(pl) == s.after, context
        pl.check()


# ---- every file operation of a cleaning -------------------------------------------------

SCENARIOS = {
    # one pass, 7 groups of 1-3 segments (cleaned segments regrouped with dirty ones)
    "one-pass": dict(seed=7, first=12, total=18, keys=40, map_bytes=1 << 20),
    # a 1 KiB map (37 keys) over 90 keys: two passes, each rewriting from the log start
    "passes": dict(seed=11, first=6, total=14, keys=90, map_bytes=1024),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sigkill_at_every_file_operation_of_a_cleaning(
        name: str, server: subprocess.Popen, scratch: Path) -> None:
    s = make_scenario(scratch, **SCENARIOS[name])
    count_dir = scratch / "count"
    shutil.copytree(s.template, count_dir)
    status, lines = run_child(server, scratch / "count.out", "clean", count_dir, s.map_bytes,
                              s.now_ms, 0)
    assert status == 0, lines
    ops = [line for line in lines if line.startswith("op ")]
    total = int(lines[-1].split()[1])
    assert len(ops) == total
    # the whole sequence is there: .cleaned -> .swap, live -> .deleted, .swap -> live,
    # .deleted removed, the checkpoint
    for call, source, target in (("replace", ".log.cleaned", ".log.swap"),
                                 ("replace", ".log", ".log.deleted"),
                                 ("replace", ".log.swap", ".log"),
                                 ("unlink", ".log.deleted", None),
                                 ("replace", ".checkpoint.tmp", "cleaner.checkpoint"),
                                 ("fsync_directory", f"{TOPIC}-0", None),
                                 ("fsync", "fd:", None)):
        assert any(op.split()[2] == call and (op.split()[3].endswith(source)
                                              or op.split()[3].startswith(source))
                   and (target is None or op.split()[4].endswith(target)) for op in ops), (
            call, source, target, ops)
    if name == "passes":
        assert sum(line.startswith("pass ") for line in lines) >= 2
    verify(count_dir, s, "no kill")
    left: set[str] = set()  # what the kills left for open to sort out
    for n in range(1, total + 1):
        directory = scratch / f"kill-{n}"
        shutil.copytree(s.template, directory)
        status, lines = run_child(server, scratch / "kill.out", "clean", directory,
                                  s.map_bytes, s.now_ms, n)
        assert killed(status), (n, status, lines[-5:])
        assert lines[-1].startswith(f"kill {n} "), lines[-3:]
        left |= crash_state(directory)
        verify(directory, s, f"killed before op {n}: {lines[-1]}")
        shutil.rmtree(directory)
    assert left >= {".cleaned", "uncommitted .swap", "committed .swap", ".deleted",
                    ".tmp"}, left


def test_sigkill_while_open_completes_a_swap(server: subprocess.Popen, scratch: Path) -> None:
    """Killed after a swap's commit point (the .log.swap rename) and at every later step
    of the replacement; then killed again at every file operation of the open that
    completes the swap."""
    s = make_scenario(scratch, **SCENARIOS["one-pass"])
    count_dir = scratch / "count"
    shutil.copytree(s.template, count_dir)
    _, lines = run_child(server, scratch / "count.out", "clean", count_dir, s.map_bytes,
                         s.now_ms, 0)
    ops = [line for line in lines if line.startswith("op ")]
    commit = next(int(op.split()[1]) for op in ops if op.endswith(".log.swap"))
    live = next(int(op.split()[1]) for op in ops if op.split()[-1].endswith(".log")
                and ".log.swap" in op)
    checked = 0
    for first_kill in (commit + 1, commit + 3, live - 1, live):
        crashed = scratch / f"crashed-{first_kill}"
        shutil.copytree(s.template, crashed)
        status, _ = run_child(server, scratch / "kill.out", "clean", crashed, s.map_bytes,
                              s.now_ms, first_kill)
        assert killed(status)
        assert any(n.endswith(".swap") for n in partition_files(crashed)), first_kill
        probe = scratch / "probe"
        shutil.copytree(crashed, probe)
        _, lines = run_child(server, scratch / "probe.out", "clean", probe, s.map_bytes,
                             s.now_ms, 0, "open")
        shutil.rmtree(probe)
        opened = int(next(line for line in lines if line.startswith("opened")).split()[1])
        open_ops = [line for line in lines if line.startswith("op ")][:opened]
        assert any("swap" in op for op in open_ops), open_ops
        for n in range(1, len(open_ops) + 1):
            directory = scratch / f"again-{first_kill}-{n}"
            shutil.copytree(crashed, directory)
            status, lines = run_child(server, scratch / "again.out", "clean", directory,
                                      s.map_bytes, s.now_ms, n, "open")
            assert killed(status), (n, lines[-3:])
            verify(directory, s, f"killed before op {first_kill}, then before open op {n}")
            shutil.rmtree(directory)
            checked += 1
        shutil.rmtree(crashed)
    assert checked > 20


def test_torn_cleaner_output_and_uncommitted_swap_are_discarded(scratch: Path) -> None:
    """What a crash before the commit point can leave: a .cleaned log cut short (with an
    index beside it), a .swap of the indexes without its log, a .tmp checkpoint. Open
    removes them all and serves the old segments."""
    s = make_scenario(scratch, **SCENARIOS["one-pass"])
    directory = scratch / "torn"
    shutil.copytree(s.template, directory)
    part = next(directory.rglob(f"{TOPIC}-0"))
    logs = sorted(p for p in part.iterdir() if p.name.endswith(".log"))
    first, second = logs[0], logs[1]
    data = first.read_bytes()
    (part / (first.name + ".cleaned")).write_bytes(data[:len(data) // 2 + 7])
    shutil.copy(first.with_suffix(".index"), part / (first.stem + ".index.cleaned"))
    shutil.copy(second.with_suffix(".index"), part / (second.stem + ".index.swap"))
    shutil.copy(second.with_suffix(".timeindex"), part / (second.stem + ".timeindex.swap"))
    (part / "cleaner.checkpoint.tmp").write_bytes(b"0\nfirst-dirty 99")
    with engine(directory) as lk:
        assert not leftover_files(directory)
        pl = lk.partition_log(TOPIC, 0)
        pl.check()
        assert read_all(pl) == s.before
    verify(directory, s, "torn output")


# ---- SIGKILL at random moments, writes and cleanings interleaved ------------------------

KILLS = int(os.environ.get("LOGKERNEL_CLEANER_CRASH_KILLS", "6"))


def test_sigkill_at_random_moments_while_writing_and_cleaning(scratch: Path) -> None:
    """A child writes round after round (flushing and printing each), compacts every
    third round with a 1 KiB map (many passes) while the background cleaner runs too;
    SIGKILLed at a random moment, reopened: the rounds in the log are the printed ones
    and at most the one in flight, whole; the latest record of every key is the model's;
    a compaction then leaves exactly the model."""
    rng = random.Random(20240611)
    seed = 5
    all_rounds = workers.data_rounds(seed, 5000 * (KILLS + 1))
    ends = list(itertools.accumulate((len(items) for items in all_rounds), initial=0))
    present = 0  # rounds in the log
    directory = scratch / "data"
    for kill in range(KILLS):
        child = subprocess.Popen([sys.executable, WORKERS, "loop", str(directory), str(seed),
                                  str(present)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        out = child.stdout.read()
        child.stdout.close()
        child.wait(timeout=60)
        printed = [int(line.split()[1]) for line in out.split("\n")[:-1]
                   if line.startswith("round ")]
        flushed = printed[-1] + 1 if printed else present
        with engine(directory) as lk:
            assert not leftover_files(directory)
            pl = lk.partition_log(TOPIC, 0)
            pl.check()
            end = pl.log_end_offset
            assert end in (ends[flushed], ends[flushed + 1]), (kill, end, ends[flushed])
            present = ends.index(end)
            model = model_of(all_rounds[:present])
            records = read_all(pl)
            assert {k: (o, v) for o, k, v in records} == model, kill
            lk.compact(TOPIC, roll=True)
            assert read_all(pl) == sorted((o, k, v) for k, (o, v) in model.items()), kill
            pl.check()
    assert present > KILLS  # the children got somewhere
