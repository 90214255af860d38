"""`logkernel groups` as a user runs it: a real process over a data directory prepared with
the engine, then the engine reopened to see what reached the disk."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest

import logkernel
from logkernel import cli, errors

TOPIC = "orders"
RECORDS = 10  # per partition, offsets 0..9
# Record i of every partition is stamped BASE_MS + i seconds: 2026-11-29T10:00:0i UTC.
BASE_MS = int(datetime.datetime(2026, 11, 29, 10, tzinfo=datetime.timezone.utc).timestamp()) * 1000
# One __consumer_offsets partition instead of 50: every open (the test's and each command's,
# which keeps the count the directory was created with) costs ~35 ms instead of ~650 ms.
CONFIG = {"group.initial.rebalance.delay.ms": 0, "offsets.topic.num.partitions": 1}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "logkernel", "groups", *args], capture_output=True,
                         text=True, timeout=60, check=False)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def rows(stdout: str) -> list[list[str]]:
    """The table's rows (header dropped), each split into its columns."""
    lines = [line.split() for line in stdout.splitlines() if line.strip()]
    return lines[1:]


def committed(data_dir: Path, group: str) -> dict[tuple[str, int], int]:
    with logkernel.open(data_dir, CONFIG) as lk:
        return {tp: stored.offset for tp, stored in lk.committed_offsets(group).items()}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Topic "orders": 3 partitions of 10 records each, partition 2's log starting at 3.
    Group g1 has committed orders-0 at 4 and orders-1 at 10; group g2 orders-2 at 5."""
    with logkernel.open(tmp_path, CONFIG) as lk:
        lk.create_topic(TOPIC, partitions=3)
        producer = lk.producer()
        for partition in range(3):
            for i in range(RECORDS):
                producer.send(TOPIC, b"value %d" % i, key=b"key %d" % i, partition=partition,
                              timestamp_ms=BASE_MS + i * 1000)
        lk.delete_records(TOPIC, 2, 3)
        lk.commit_offsets("g1", {(TOPIC, 0): 4, (TOPIC, 1): 10})
        lk.commit_offsets("g2", {(TOPIC, 2): 5})
    return tmp_path


def test_list_on_an_empty_data_dir(tmp_path: Path) -> None:
    out = run("list", "--data-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert "no groups" in out.stderr


def test_list_shows_every_group_and_filters_by_state(data_dir: Path) -> None:
    out = run("list", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == ["GROUP", "TYPE", "PROTOCOL-TYPE", "STATE"]
    assert rows(out.stdout) == [["g1", "classic", "-", "Empty"], ["g2", "classic", "-", "Empty"]]
    assert [r[0] for r in rows(run("list", "--data-dir", str(data_dir), "--state", "empty").stdout)] \
        == ["g1", "g2"]
    stable = run("list", "--data-dir", str(data_dir), "--state", "Stable", "PreparingRebalance")
    assert stable.returncode == 0 and stable.stdout == ""
    bogus = run("list", "--data-dir", str(data_dir), "--state", "Running")
    assert bogus.returncode == 2
    assert "unknown group state 'Running'" in bogus.stderr


def test_describe_shows_offsets_lag_and_total(data_dir: Path) -> None:
    out = run("describe", "g1", "--data-dir", str(data_dir), "--members")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split() == ["g1", "classic", "Empty", "-", "-", "0", "0"]
    table = lines.index("TOPIC   PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  MEMBER")
    assert [line.split() for line in lines[table + 1:table + 3]] == [
        ["orders", "0", "4", "10", "6", "-"], ["orders", "1", "10", "10", "0", "-"]]
    assert "total lag: 6" in lines
    assert "group 'g1' has no active members" in lines


def test_unknown_group_is_one_line_and_exit_1(data_dir: Path) -> None:
    for command in ("describe", "delete"):
        out = run(command, "nobody", "--data-dir", str(data_dir))
        assert out.returncode == 1
        assert out.stderr.count("\n") == 1 and "'nobody'" in out.stderr, out.stderr


# Each mode over --topic orders (partitions 0, 1, 2; log starts 0, 0, 3; ends 10): the
# expected new offsets. Group g1 has committed 4, 10 and nothing there.
MODES = [
    (["--to-earliest"], [0, 0, 3]),
    (["--to-latest"], [10, 10, 10]),
    (["--to-offset", "1"], [1, 1, 3]),                           # clamped up to a log start
    (["--to-datetime", "2026-11-29T10:00:05"], [5, 5, 5]),       # naive: UTC
]
# More of the same modes, checked as dry runs only (each command run costs ~0.4 s).
MORE_MODES = [
    (["--to-offset", "99"], [10, 10, 10]),                       # clamped down to the log end
    (["--to-datetime", "2026-11-29T11:00:07.000+01:00"], [7, 7, 7]),
    (["--to-datetime", "2026-11-30T00:00:00Z"], [10, 10, 10]),   # after every record: the end
    # Before every record; partition 2's log start is inside a segment (delete_records).
    (["--to-datetime", "2026-11-29T09:00:00Z"], [0, 0, 3]),
]


def mode_id(value: object) -> str:
    return " ".join(value) if isinstance(value, list) and isinstance(value[0], str) else ""


def plan_for(expected: list[int]) -> list[list[str]]:
    return [[TOPIC, "0", "4", str(expected[0])], [TOPIC, "1", "10", str(expected[1])],
            [TOPIC, "2", "-", str(expected[2])]]


@pytest.mark.parametrize(("mode", "expected"), MODES + MORE_MODES, ids=mode_id)
def test_reset_dry_run_plans_and_changes_nothing(data_dir: Path, mode: list[str],
                                                 expected: list[int]) -> None:
    before = committed(data_dir, "g1")
    dry = run("reset-offsets", "g1", "--data-dir", str(data_dir), "--topic", TOPIC, *mode)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0].split() == ["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]
    assert rows(dry.stdout) == plan_for(expected)
    assert "--execute" in dry.stderr
    assert committed(data_dir, "g1") == before


@pytest.mark.parametrize(("mode", "expected"), MODES, ids=mode_id)
def test_reset_execute_commits_the_plan(data_dir: Path, mode: list[str],
                                        expected: list[int]) -> None:
    executed = run("reset-offsets", "g1", "--data-dir", str(data_dir), "--topic", TOPIC, *mode,
                   "--execute")
    assert executed.returncode == 0, executed.stderr
    assert rows(executed.stdout) == plan_for(expected)
    assert committed(data_dir, "g1") == {(TOPIC, p): offset for p, offset in enumerate(expected)}
    assert committed(data_dir, "g2") == {(TOPIC, 2): 5}  # another group's offsets stay


def test_shift_by_moves_committed_offsets_and_clamps(data_dir: Path) -> None:
    base = ["reset-offsets", "g1", "--data-dir", str(data_dir), "--topic", f"{TOPIC}:0,1"]
    assert rows(run(*base, "--shift-by", "-6").stdout) == [[TOPIC, "0", "4", "0"],
                                                           [TOPIC, "1", "10", "4"]]
    assert committed(data_dir, "g1") == {(TOPIC, 0): 4, (TOPIC, 1): 10}
    out = run(*base, "--shift-by", "3", "--execute")
    assert out.returncode == 0, out.stderr
    assert rows(out.stdout) == [[TOPIC, "0", "4", "7"], [TOPIC, "1", "10", "10"]]
    assert committed(data_dir, "g1") == {(TOPIC, 0): 7, (TOPIC, 1): 10}
    # Kafka refuses to shift a partition without a committed offset: there is nothing to shift.
    refused = run("reset-offsets", "g2", "--data-dir", str(data_dir), "--topic", f"{TOPIC}:1",
                  "--shift-by", "1")
    assert refused.returncode == 1
    assert "no committed offset" in refused.stderr


def test_all_topics_means_the_partitions_the_group_committed(data_dir: Path) -> None:
    out = run("reset-offsets", "g1", "--data-dir", str(data_dir), "--all-topics", "--to-earliest",
              "--execute")
    assert out.returncode == 0, out.stderr
    assert rows(out.stdout) == [[TOPIC, "0", "4", "0"], [TOPIC, "1", "10", "0"]]
    assert committed(data_dir, "g1") == {(TOPIC, 0): 0, (TOPIC, 1): 0}
    nothing = run("reset-offsets", "new", "--data-dir", str(data_dir), "--all-topics", "--to-latest")
    assert nothing.returncode == 1
    assert "--topic" in nothing.stderr


def test_reset_creates_the_offsets_of_a_new_group(data_dir: Path) -> None:
    out = run("reset-offsets", "new", "--data-dir", str(data_dir), "--topic", f"{TOPIC}:2",
              "--to-earliest", "--execute")
    assert out.returncode == 0, out.stderr
    assert committed(data_dir, "new") == {(TOPIC, 2): 3}


def test_reset_refuses_unknown_topics_partitions_and_missing_modes(data_dir: Path) -> None:
    base = ["reset-offsets", "g1", "--data-dir", str(data_dir)]
    unknown = run(*base, "--topic", "nope", "--to-earliest", "--execute")
    assert unknown.returncode == 1
    assert "topic 'nope' does not exist" in unknown.stderr
    partition = run(*base, "--topic", f"{TOPIC}:0,3", "--to-earliest", "--execute")
    assert partition.returncode == 1
    assert "no partition 3" in partition.stderr
    assert committed(data_dir, "g1") == {(TOPIC, 0): 4, (TOPIC, 1): 10}
    # Usage mistakes are argparse's: exit 2, naming what is missing or wrong.
    no_mode = run(*base, "--topic", TOPIC)
    assert no_mode.returncode == 2
    assert "--to-earliest" in no_mode.stderr


@pytest.mark.parametrize("mistake", [
    ["--topic", TOPIC, "--to-earliest", "--to-latest"],   # two modes
    ["--to-earliest"],                                    # neither --topic nor --all-topics
    ["--topic", TOPIC, "--all-topics", "--to-earliest"],
    ["--topic", f"{TOPIC}:x", "--to-earliest"],
    ["--topic", TOPIC, "--to-datetime", "yesterday"],
    ["--topic", TOPIC, "--to-earliest", "--dry-run", "--execute"],
], ids=" ".join)
def test_reset_usage_mistakes_exit_2(mistake: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The parser alone (in-process: no data directory is opened before arguments parse)."""
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["groups", "reset-offsets", "g1", *mistake])
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_delete_removes_the_group_and_its_offsets(data_dir: Path) -> None:
    out = run("delete", "g2", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    assert "deleted group 'g2' and its 1 committed offset(s)" in out.stdout
    assert committed(data_dir, "g2") == {}
    assert [r[0] for r in rows(run("list", "--data-dir", str(data_dir)).stdout)] == ["g1"]


def test_a_locked_data_dir_names_the_holder(data_dir: Path) -> None:
    with logkernel.open(data_dir, CONFIG):
        out = run("list", "--data-dir", str(data_dir))
    assert out.returncode == 1
    assert f"in use by another process (process {os.getpid()})" in out.stderr
    assert "kafka-consumer-groups.sh --bootstrap-server" in out.stderr


def test_a_missing_data_dir_is_not_created(tmp_path: Path) -> None:
    out = run("list", "--data-dir", str(tmp_path / "absent"))
    assert out.returncode == 1
    assert "no data directory" in out.stderr
    assert not (tmp_path / "absent").exists()


def test_a_group_with_members_is_left_alone(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Membership lives in the engine that has the directory open, so the CLI (which opens
    it) only meets members if called in-process: run the commands against a live engine."""
    parser = cli.build_parser()
    with logkernel.open(data_dir, CONFIG) as lk:
        consumer = lk.consumer(TOPIC, group_id="g1", enable_auto_commit=False)
        for _ in range(50):
            consumer.poll(timeout_ms=100)
            if consumer.assignment():
                break
        assert len(consumer.assignment()) == 3
        reset = parser.parse_args(["groups", "reset-offsets", "g1", "--all-topics", "--to-earliest",
                                   "--execute"])
        assert cli.groups_reset_offsets(lk, reset) == 1
        assert "only be reset while it is inactive" in capsys.readouterr().err
        assert lk.committed("g1", TOPIC, 0) == 4
        with pytest.raises(errors.NonEmptyGroupError):
            lk.delete_group("g1")
        assert cli.groups_describe(lk, parser.parse_args(["groups", "describe", "g1", "--members"])) == 0
        shown = capsys.readouterr().out
        assert "Stable" in shown and f"{TOPIC}(0,1,2)" in shown
        consumer.close(autocommit=False)
