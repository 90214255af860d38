"""`logkernel transactions` and `logkernel producers` as a user runs them: real processes
over a data directory prepared with the engine's transactional and idempotent producers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import logkernel


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logkernel", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Three transactional ids (one committed, one aborted, one with a transaction left
    open across partitions 0 and 2) and an idempotent producer on partition 1."""
    with logkernel.open(tmp_path) as lk:
        lk.create_topic("orders", 3)
        for txn_id, commit in (("billing", True), ("refunds", False)):
            producer = lk.producer(transactional_id=txn_id)
            producer.init_transactions()
            producer.begin_transaction()
            producer.send("orders", b"v", partition=0)
            if commit:
                producer.commit_transaction()
            else:
                producer.abort_transaction()
        open_one = lk.producer(transactional_id="open")
        open_one.init_transactions()
        open_one.begin_transaction()
        open_one.send("orders", b"pending", partition=2)
        open_one.send("orders", b"pending", partition=0)
        lk.producer(enable_idempotence=True).send_batch("orders", [b"a", b"b", b"c"], partition=1)
    return tmp_path


def test_transactions_lists_every_id_with_its_state_and_open_partitions(data_dir: Path) -> None:
    done = run("transactions", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    assert rows[0] == ["TRANSACTIONAL-ID", "PRODUCER-ID", "EPOCH", "STATE", "TIMEOUT-MS",
                       "STARTED", "PARTITIONS"]
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id["billing"][3] == "CompleteCommit"
    assert by_id["refunds"][3] == "CompleteAbort"
    assert by_id["open"][3] == "Ongoing" and by_id["open"][6] == "orders(0,2)"
    ongoing = run("transactions", "--data-dir", str(data_dir), "--state", "Ongoing")
    assert [row[0] for row in table(ongoing.stdout)[1:]] == ["open"]


def test_producers_shows_each_partitions_last_stable_offset_and_producers(data_dir: Path) -> None:
    done = run("producers", "orders", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    assert rows[0] == ["PARTITION", "HIGH-WATERMARK", "LAST-STABLE", "PRODUCER-ID", "EPOCH",
                       "LAST-SEQUENCE", "LAST-TIMESTAMP", "OPEN-TXN-FROM"]
    by_partition: dict[str, list[list[str]]] = {}
    for row in rows[1:]:
        by_partition.setdefault(row[0], []).append(row)
    # partition 0: billing (1 record + marker), refunds (1 + marker), open (1, still open)
    assert by_partition["0"][0][1:3] == ["5", "4"]
    assert sorted(r[7] for r in by_partition["0"]) == ["-", "-", "4"]
    assert by_partition["1"][0][1:3] == ["3", "3"] and by_partition["1"][0][5] == "2"
    assert by_partition["2"][0][1:3] == ["1", "0"] and by_partition["2"][0][7] == "0"
    one = run("producers", "orders", "--partition", "1", "--data-dir", str(data_dir))
    assert [row[0] for row in table(one.stdout)[1:]] == ["1"]


def test_errors_are_one_line_and_exit_1(tmp_path: Path, data_dir: Path) -> None:
    missing = run("transactions", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no data directory" in missing.stderr
    unknown = run("producers", "nope", "--data-dir", str(data_dir))
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1
    assert "nope" in unknown.stderr
