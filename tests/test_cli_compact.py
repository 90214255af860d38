"""`logkernel compact` and `logkernel cleaner` as a user runs them: real processes over a data
directory prepared with the engine, then the engine reopened to see what reached the disk.
The progress bar is checked through a pseudo-terminal, and as the class the command uses."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import logkernel
from logkernel import cli

TOPIC = "users"            # compacted, 2 partitions
PLAIN = "events"           # cleanup.policy=delete
PARTITIONS = 2
KEYS_PER_PARTITION = 60
ROUNDS = 3                 # every key written ROUNDS times, the last round deleting some keys
SEGMENT_BYTES = 1024       # ~10 records a segment: each partition spans ~18 segments
BASE_MS = 1_790_000_000_000
# The background cleaner stays off while the test prepares and inspects the directory, so
# only the command under test cleans anything.
QUIET = {"log.cleaner.enable": False, "offsets.topic.num.partitions": 1}
TABLE_HEADER = ["TOPIC", "PARTITION", "PASSES", "RECORDS-READ", "RECORDS-KEPT", "MB-READ",
                "MB-WRITTEN", "SECONDS", "RATE"]
CLEANER_HEADER = ["TOPIC", "PARTITION", "DIRTY-RATIO", "CLEAN-BYTES", "DIRTY-BYTES",
                  "UNCLEANABLE-BYTES", "FIRST-DIRTY", "DUE"]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "logkernel", *args]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(command(*args), capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in out.stderr, out.stderr
    return out


Record = tuple[int, int, bytes, bytes | None, int]  # partition, offset, key, value, timestamp


def fill(lk: logkernel.Engine) -> list[Record]:
    """ROUNDS values of every key, one record a batch, to a fixed partition; in the last
    round every fifth key gets a tombstone instead. Returns what was appended."""
    producer = lk.producer()
    written: list[Record] = []
    n = 0
    for r in range(ROUNDS):
        for partition in range(PARTITIONS):
            for k in range(KEYS_PER_PARTITION):
                key = b"p%d-key-%03d" % (partition, k)
                value = None if r == ROUNDS - 1 and k % 5 == 0 else b"round %d of %s" % (r, key)
                ts = BASE_MS + n
                n += 1
                meta = producer.send(TOPIC, value, key=key, partition=partition, timestamp_ms=ts)
                written.append((partition, meta.offset, key, value, ts))
    return written


def latest(written: Sequence[Record]) -> list[Record]:
    last: dict[tuple[int, bytes], Record] = {}
    for record in written:
        last[(record[0], record[2])] = record
    return sorted(last.values())


def stored(data_dir: Path, topic: str = TOPIC, partitions: int = PARTITIONS) -> list[Record]:
    """Every record in the topic, read back through the embedded consumer."""
    with logkernel.open(data_dir, QUIET) as lk:
        consumer = lk.consumer(auto_offset_reset="earliest")
        consumer.assign([(topic, p) for p in range(partitions)])
        ends = {p: lk.end_offset(topic, p) for p in range(partitions)}
        out: list[Record] = []
        deadline = time.monotonic() + 20
        while any(consumer.position((topic, p)) < ends[p] for p in range(partitions)):
            assert time.monotonic() < deadline, "the embedded consumer stopped short of the end"
            out += [(r.partition, r.offset, r.key, r.value, r.timestamp_ms)
                    for r in consumer.poll(timeout_ms=100, max_records=10_000)]
        consumer.close(autocommit=False)
        return sorted(out)


@pytest.fixture
def data_dir(tmp_path: Path) -> tuple[Path, list[Record]]:
    """TOPIC with ROUNDS x KEYS_PER_PARTITION records a partition, nothing cleaned; PLAIN
    (delete policy) with a few records."""
    with logkernel.open(tmp_path, QUIET) as lk:
        lk.create_topic(TOPIC, partitions=PARTITIONS,
                        config={"cleanup.policy": "compact", "segment.bytes": SEGMENT_BYTES})
        lk.create_topic(PLAIN, config={"segment.bytes": SEGMENT_BYTES})
        written = fill(lk)
        for i in range(5):
            lk.producer().send(PLAIN, b"event %d" % i)
    return tmp_path, written


def table(stdout: str, header: list[str]) -> dict[tuple[str, int], list[str]]:
    """Rows of a printed table by (topic, partition); the last column may hold spaces."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines[0].split() == header, stdout
    rows = {}
    for line in lines[1:]:
        cells = line.split(None, len(header) - 1)
        rows[(cells[0], int(cells[1]))] = cells
    return rows


# ---- logkernel compact -------------------------------------------------------------------------

def test_compact_roll_keeps_the_latest_record_per_key(data_dir: tuple[Path, list[Record]]) -> None:
    path, written = data_dir
    out = run("compact", TOPIC, "--roll", "--data-dir", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # stderr is not a terminal: no progress bar
    rows = table(out.stdout, TABLE_HEADER)
    assert sorted(rows) == [(TOPIC, p) for p in range(PARTITIONS)]
    for p in range(PARTITIONS):
        cells = rows[(TOPIC, p)]
        # One pass read every record of the partition and kept one per key.
        assert cells[2:5] == ["1", str(ROUNDS * KEYS_PER_PARTITION), str(KEYS_PER_PARTITION)], cells
        assert float(cells[5]) >= float(cells[6]) >= 0 and float(cells[7]) >= 0
    expected = latest(written)
    assert sum(1 for r in expected if r[3] is None) == PARTITIONS * KEYS_PER_PARTITION // 5
    assert stored(path) == expected  # offsets, values, tombstones and timestamps as appended

    # Nothing is dirty any more: a second run has nothing to clean.
    again = run("compact", TOPIC, "--partition", "1", "--roll", "--data-dir", str(path))
    assert again.returncode == 0, again.stderr
    [cells] = table(again.stdout, TABLE_HEADER).values()
    assert cells[:3] == [TOPIC, "1", "0"] and "nothing to clean" in cells[-1], cells
    assert stored(path) == expected


def test_a_small_dedupe_buffer_cleans_in_several_passes(
        data_dir: tuple[Path, list[Record]]) -> None:
    path, written = data_dir
    # 1,024 bytes hold ~38 keys at 24 bytes a key and load factor 0.9: 60 keys need 2+ passes.
    out = run("compact", TOPIC, "--partition", "0", "--roll", "--data-dir", str(path),
              "--set", "log.cleaner.dedupe.buffer.size=1024")
    assert out.returncode == 0, out.stderr
    [cells] = table(out.stdout, TABLE_HEADER).values()
    assert cells[:2] == [TOPIC, "0"] and int(cells[2]) > 1, cells
    assert int(cells[4]) == KEYS_PER_PARTITION  # the last pass rewrote the whole partition
    assert KEYS_PER_PARTITION <= int(cells[3]) <= ROUNDS * KEYS_PER_PARTITION
    assert [r for r in stored(path) if r[0] == 0] == [r for r in latest(written) if r[0] == 0]
    # --partition 0 left partition 1 as it was.
    assert [r for r in stored(path) if r[0] == 1] == sorted(r for r in written if r[0] == 1)


def test_compact_without_roll_leaves_the_active_segment(tmp_path: Path) -> None:
    with logkernel.open(tmp_path, QUIET) as lk:
        lk.create_topic(TOPIC, config={"cleanup.policy": "compact"})  # 1 GiB segments
        producer = lk.producer()
        for i in range(20):
            producer.send(TOPIC, b"v%d" % i, key=b"k%d" % (i % 4), timestamp_ms=BASE_MS + i)
    out = run("compact", TOPIC, "--data-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    [cells] = table(out.stdout, TABLE_HEADER).values()
    assert cells[:3] == [TOPIC, "0", "0"], cells
    assert "nothing to clean (the active segment is not cleaned without --roll)" in cells[-1]
    assert len(stored(tmp_path, partitions=1)) == 20
    rolled = run("compact", TOPIC, "--roll", "--data-dir", str(tmp_path))
    assert rolled.returncode == 0, rolled.stderr
    assert [r[1:4] for r in stored(tmp_path, partitions=1)] == [
        (16, b"k0", b"v16"), (17, b"k1", b"v17"), (18, b"k2", b"v18"), (19, b"k3", b"v19")]


def test_compact_errors_are_one_line_and_exit_1(data_dir: tuple[Path, list[Record]]) -> None:
    path, written = data_dir
    unknown = run("compact", "nope", "--data-dir", str(path))
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.count("\n") == 1 and "unknown topic 'nope'" in unknown.stderr, unknown.stderr

    plain = run("compact", PLAIN, "--roll", "--data-dir", str(path))
    assert plain.returncode == 1
    assert "cleanup.policy=delete" in plain.stderr and "Set cleanup.policy=compact" in plain.stderr

    partition = run("compact", TOPIC, "--partition", "7", "--data-dir", str(path))
    assert partition.returncode == 1
    assert "partitions 0..1" in partition.stderr and "7" in partition.stderr, partition.stderr

    missing = run("compact", TOPIC, "--data-dir", str(path / "absent"))
    assert missing.returncode == 1 and "no data directory" in missing.stderr
    assert not (path / "absent").exists()

    with logkernel.open(path, QUIET):
        locked = run("compact", TOPIC, "--roll", "--data-dir", str(path))
    assert locked.returncode == 1
    assert f"in use by another process (process {os.getpid()})" in locked.stderr, locked.stderr
    assert stored(path) == sorted(written)  # none of these cleaned anything


@pytest.mark.parametrize(("setting", "status", "message"), [
    ("log.cleaner.dedupe.buffer.size", 2, "--set takes key=value"),          # no '='
    ("=1024", 2, "--set takes key=value"),                                     # no key
    ("no.such.setting=1", 1, "unknown engine config 'no.such.setting'"),
    ("log.cleaner.dedupe.buffer.size=10", 1,
     "invalid value '10' for config 'log.cleaner.dedupe.buffer.size'"),
    ("log.cleaner.threads=lots", 1, "invalid value 'lots' for config 'log.cleaner.threads'"),
])
def test_a_bad_set_is_refused(data_dir: tuple[Path, list[Record]], setting: str, status: int,
                              message: str) -> None:
    path, written = data_dir
    out = run("compact", TOPIC, "--roll", "--data-dir", str(path), "--set", setting)
    assert out.returncode == status, out
    assert message in out.stderr, out.stderr
    assert out.stdout == ""
    if status == 2:
        assert "usage:" in out.stderr
    assert stored(path) == sorted(written)


def test_a_refused_cleaner_setting_leaves_the_directory_usable(
        data_dir: tuple[Path, list[Record]], capsys: pytest.CaptureFixture[str]) -> None:
    """In-process (main()), as a program driving the CLI or a test would call it."""
    path, _ = data_dir
    base = ["compact", TOPIC, "--roll", "--data-dir", str(path)]
    assert cli.main([*base, "--set", "log.cleaner.dedupe.buffer.size=1024",
                     "--set", "log.cleaner.threads=2"]) == 1
    assert "leaves 512 bytes for a thread's key map" in capsys.readouterr().err
    status = cli.main(base)
    assert "in use by another process" not in capsys.readouterr().err
    assert status == 0


# ---- logkernel cleaner -------------------------------------------------------------------------

def test_cleaner_shows_dirty_ratios_before_and_after(data_dir: tuple[Path, list[Record]]) -> None:
    path, _ = data_dir
    with logkernel.open(path, QUIET) as lk:
        sizes = {p.partition: p.size_bytes for p in lk.describe_topic(TOPIC).partitions}
        ends = {p.partition: p.log_end_offset for p in lk.describe_topic(TOPIC).partitions}
    out = run("cleaner", "--data-dir", str(path))
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout, CLEANER_HEADER)
    # Every compacted partition, the internal offsets topic too; not the delete-policy topic.
    assert sorted(rows) == [("__consumer_offsets", 0), *((TOPIC, p) for p in range(PARTITIONS))]
    for p in range(PARTITIONS):
        _, _, ratio, clean, dirty, uncleanable, first_dirty, due = rows[(TOPIC, p)]
        assert (ratio, clean, first_dirty, due) == ("1.00", "0", "0", "dirty ratio")
        assert int(dirty) > 0 and int(uncleanable) > 0  # the active segment is never cleanable
        assert int(dirty) + int(uncleanable) == sizes[p]
    assert rows[("__consumer_offsets", 0)][2:] == ["0.00", "0", "0", "0", "0", "no"]

    assert run("compact", TOPIC, "--roll", "--data-dir", str(path)).returncode == 0
    after = run("cleaner", "--topic", TOPIC, "--data-dir", str(path))
    assert after.returncode == 0, after.stderr
    rows = table(after.stdout, CLEANER_HEADER)
    assert sorted(rows) == [(TOPIC, p) for p in range(PARTITIONS)]  # --topic filters
    for p in range(PARTITIONS):
        _, _, ratio, clean, dirty, uncleanable, first_dirty, due = rows[(TOPIC, p)]
        assert (ratio, dirty, uncleanable, first_dirty, due) == ("0.00", "0", "0", str(ends[p]), "no")
        assert 0 < int(clean) < sizes[p]


def test_cleaner_topic_filter_and_errors(data_dir: tuple[Path, list[Record]]) -> None:
    path, _ = data_dir
    plain = run("cleaner", "--topic", PLAIN, "--data-dir", str(path))
    assert plain.returncode == 0 and plain.stdout == f"no compacted partitions in topic {PLAIN!r}\n"
    unknown = run("cleaner", "--topic", "nope", "--data-dir", str(path))
    assert unknown.returncode == 1 and "unknown topic 'nope'" in unknown.stderr
    missing = run("cleaner", "--data-dir", str(path / "absent"))
    assert missing.returncode == 1 and "no data directory" in missing.stderr
    with logkernel.open(path, QUIET):
        locked = run("cleaner", "--data-dir", str(path))
    assert locked.returncode == 1 and "in use by another process" in locked.stderr


# ---- the progress bar --------------------------------------------------------------------------

class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_and_ends_the_line() -> None:
    stream = FakeTerminal()
    bar = cli.ProgressBar("users-0", stream)
    assert bar.enabled
    bar(0, 200_000_000)
    bar(50_000_000, 200_000_000)  # within 0.1 s of the last drawing: skipped
    time.sleep(0.12)
    bar(100_000_000, 200_000_000)
    bar.finish()
    text = stream.getvalue()
    drawings = text.split("\r")[1:]
    assert len(drawings) == 2, text
    assert drawings[0].startswith("users-0 [" + "." * 30 + "]   0%  0.0/200.0 MB"), drawings
    assert drawings[1].startswith("users-0 [" + "#" * 15 + "." * 15 + "]  50%  100.0/200.0 MB")
    assert drawings[1].rstrip("\n").endswith("MB/s") and text.endswith("\n")
    assert text.count("\n") == 1


def test_progress_bar_is_silent_when_not_a_terminal_or_never_drawn() -> None:
    plain = io.StringIO()
    bar = cli.ProgressBar("users-0", plain)
    assert not bar.enabled
    bar(10, 20)
    bar.finish()
    assert plain.getvalue() == ""
    terminal = FakeTerminal()
    untouched = cli.ProgressBar("users-0", terminal)
    untouched.finish()  # nothing drawn: no empty line either
    assert terminal.getvalue() == ""


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_compact_draws_a_progress_bar_on_a_terminal(data_dir: tuple[Path, list[Record]]) -> None:
    path, written = data_dir
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(command("compact", TOPIC, "--roll", "--data-dir", str(path)),
                                   stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL)
        os.close(follower)
        follower = -1
        stdout, _ = process.communicate(timeout=60)
        terminal = read_all(leader).decode()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert process.returncode == 0, terminal
    assert "Traceback" not in terminal
    # A bar per partition, each drawn from the start of the line and finished with a newline
    # (the terminal shows it as \r\n), before the table on stdout.
    for p in range(PARTITIONS):
        assert f"\r{TOPIC}-{p} [" in terminal, repr(terminal)
    lines = [line for line in terminal.replace("\r\n", "\n").split("\n") if line]
    assert len(lines) == PARTITIONS and terminal.endswith("\n"), repr(terminal)
    for line in lines:
        assert line.startswith("\r") and "%" in line and line.endswith("MB/s"), repr(line)
    assert sorted(table(stdout.decode(), TABLE_HEADER)) == [(TOPIC, p) for p in range(PARTITIONS)]
    assert stored(path) == latest(written)
