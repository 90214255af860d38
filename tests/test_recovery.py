"""Durability is shown by breaking things: SIGKILL a writer at random moments, tear the
tail, flip a byte, delete or garble an index or the checkpoint; then reopen and check that
exactly the valid prefix survives, that the log says what it dropped, and that a damaged
record never reaches a reader."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import logkernel
from logkernel import errors

# A child that appends numbered records with flush.messages=1 and prints each offset
# once send returned (so once it is fsynced): what it printed is what was acknowledged.
WRITER = textwrap.dedent("""
    import sys, logkernel
    lk = logkernel.open(sys.argv[1])
    if "t" not in lk.topics():
        lk.create_topic("t", partitions=2, config={"flush.messages": 1, "segment.bytes": 2000,
                                                    "index.interval.bytes": 100})
    producer = lk.producer()
    start = int(sys.argv[2])
    print("ready", flush=True)
    i = start
    while True:
        value = b"record-%08d" % i + b"." * (i % 50)
        if i % 5 == 0:
            producer.send_batch("t", [value, value + b"+"], partition=i % 2)
        else:
            producer.send("t", value, key=b"%d" % (i % 2), partition=i % 2)
        print(i, flush=True)
        i += 1
""")

KILLS = int(os.environ.get("LOGKERNEL_CRASH_KILLS", "12"))


def expected_values(i: int) -> list[bytes]:
    value = b"record-%08d" % i + b"." * (i % 50)
    return [value, value + b"+"] if i % 5 == 0 else [value]


def read_partition(lk: logkernel.Engine, partition: int) -> list[logkernel.Record]:
    consumer = lk.consumer(auto_offset_reset="earliest")
    consumer.assign([("t", partition)])
    out = []
    while got := consumer.poll(max_records=100_000):
        out.extend(got)
    return out


def test_sigkill_while_appending_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(1234)
    baseline: dict[int, list[bytes]] = {0: [], 1: []}  # what earlier rounds left
    next_number = 0
    total_acknowledged = 0
    for _round in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(next_number)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        # One acknowledgement first, so every round kills a writer that is appending (on a
        # loaded machine a kill right after "ready" could otherwise find it still idle).
        first = child.stdout.readline()
        time.sleep(rng.uniform(0.01, 0.3))
        child.send_signal(signal.SIGKILL)
        # read(), not communicate(timeout=...): the latter reads the pipe's descriptor and
        # would drop lines readline() already pulled into the text buffer (acknowledged
        # records the check would then miss).
        out = first + child.stdout.read()
        child.stdout.close()
        child.wait(timeout=60)
        lines = out.split("\n")[:-1]  # only whole lines: a half-printed one was not seen
        acknowledged = [int(x) for x in lines]
        total_acknowledged += len(acknowledged)
        with logkernel.open(tmp_path) as lk:
            for p in (0, 1):
                records = read_partition(lk, p)
                assert [r.offset for r in records] == list(range(len(records)))
                stored = [r.value for r in records]
                want = baseline[p] + [v for i in acknowledged if i % 2 == p for v in expected_values(i)]
                # every acknowledged record, in order, exactly once ...
                assert stored[:len(want)] == want, (
                    f"round {_round} partition {p}: baseline {len(baseline[p])} records, ends "
                    f"{[v[:15] for v in baseline[p][-3:]]}; acknowledged now {acknowledged[:4]}.."
                    f"{acknowledged[-4:]}; stored {len(stored)}, around the first difference "
                    f"{[v[:15] for v in stored[len(baseline[p]) - 2:len(baseline[p]) + 6]]}")
                # ... and at most the one send in flight at the kill (a batch of two)
                assert len(stored) - len(want) <= 2, stored[len(want):]
                baseline[p] = stored
                lk.partition_log("t", p).check()
            assert lk.producer().send("t", b"probe", partition=0).offset == len(baseline[0])
            baseline[0].append(b"probe")
        next_number = max(acknowledged, default=next_number - 1) + 1
    assert total_acknowledged > KILLS  # the writer did get work done between kills


def build(tmp_path: Path, records: int = 300) -> tuple[Path, list[bytes]]:
    values = [b"value-%05d-" % i + bytes(random.Random(i).randbytes(i % 60)) for i in range(records)]
    with logkernel.open(tmp_path) as lk:
        lk.create_topic("t", config={"segment.bytes": 3000, "index.interval.bytes": 200})
        producer = lk.producer()
        for i in range(0, records, 3):
            producer.send_batch("t", values[i:i + 3])
    return tmp_path / "t-0", values


def segment_files(partition_dir: Path, suffix: str) -> list[Path]:
    return sorted(partition_dir.glob(f"*{suffix}"))


def crash(data_dir: Path) -> None:
    """What a kill leaves that a clean close does not: no clean-shutdown marker."""
    (data_dir / ".clean-shutdown").unlink()


def test_torn_tail_is_truncated_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    partition_dir, values = build(tmp_path)
    last = segment_files(partition_dir, ".log")[-1]
    size = last.stat().st_size
    rng = random.Random(5)
    for cut in sorted({rng.randrange(1, size) for _ in range(6)}, reverse=True):
        with open(last, "r+b") as f:
            f.truncate(cut)
        crash(tmp_path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="logkernel"), logkernel.open(tmp_path) as lk:
            report = lk.recovery.get("t-0")
            records = read_partition(lk, 0)
            assert [r.value for r in records] == values[:len(records)]
            if report is not None:
                assert any(str(last) in line for line in report.truncated)
                assert "dropped" in caplog.text
            lk.partition_log("t", 0).check()
            size = last.stat().st_size


def test_garbled_byte_ends_the_valid_prefix(tmp_path: Path) -> None:
    partition_dir, values = build(tmp_path)
    last = segment_files(partition_dir, ".log")[-1]
    data = bytearray(last.read_bytes())
    position = len(data) // 2
    data[position] ^= 0x40
    last.write_bytes(bytes(data))
    crash(tmp_path)
    with logkernel.open(tmp_path) as lk:
        report = lk.recovery["t-0"]
        assert report.truncated and "corrupt" in report.truncated[0]
        records = read_partition(lk, 0)
        assert [r.value for r in records] == values[:len(records)]
        assert len(records) < len(values)
        assert lk.producer().send("t", b"after").offset == len(records)
    with logkernel.open(tmp_path) as lk:
        assert read_partition(lk, 0)[-1].value == b"after"


def test_damage_in_an_older_segment_deletes_what_follows(tmp_path: Path) -> None:
    partition_dir, values = build(tmp_path)
    logs = segment_files(partition_dir, ".log")
    assert len(logs) >= 4
    victim = logs[1]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    # the checkpoint says everything was flushed; a crash makes the log re-check only past
    # it, so point the recovery point back to the start as a stale checkpoint would
    (partition_dir / "partition.checkpoint").write_text("0\nrecovery-point 0\nlog-start-offset 0\n")
    crash(tmp_path)
    with logkernel.open(tmp_path) as lk:
        report = lk.recovery["t-0"]
        assert report.truncated and len(report.deleted) == len(logs) - 2
        records = read_partition(lk, 0)
        assert [r.value for r in records] == values[:len(records)]
        lk.partition_log("t", 0).check()


def test_damage_below_the_recovery_point_is_never_served(tmp_path: Path) -> None:
    partition_dir, values = build(tmp_path)
    first = segment_files(partition_dir, ".log")[0]
    data = bytearray(first.read_bytes())
    data[200] ^= 0x01
    first.write_bytes(bytes(data))
    with logkernel.open(tmp_path) as lk:  # clean shutdown: nothing re-validated at open
        consumer = lk.consumer(auto_offset_reset="earliest")
        consumer.assign([("t", 0)])
        got: list[logkernel.Record] = []
        with pytest.raises(errors.CorruptRecordError, match="t-0"):
            while batch := consumer.poll(max_records=1000):
                got.extend(batch)
        assert [r.value for r in got] == values[:len(got)]
        bad = consumer.position("t", 0)
        # the bad batch is skipped only on request
        consumer.seek(("t", 0), bad + 3)
        rest = read_rest(consumer)
        assert [r.value for r in rest] == values[bad + 3:]


def read_rest(consumer: logkernel.Consumer) -> list[logkernel.Record]:
    out = []
    while got := consumer.poll(max_records=1000):
        out.extend(got)
    return out


@pytest.mark.parametrize("damage", ["delete", "garble", "zero-fill"])
@pytest.mark.parametrize("suffix", [".index", ".timeindex"])
def test_missing_or_corrupt_indexes_are_rebuilt(tmp_path: Path, damage: str, suffix: str) -> None:
    partition_dir, values = build(tmp_path)
    for path in segment_files(partition_dir, suffix):
        if damage == "delete":
            path.unlink()
        elif damage == "garble":
            path.write_bytes(os.urandom(max(path.stat().st_size, 24)))
        else:
            path.write_bytes(bytes(path.stat().st_size + 16))
    crash(tmp_path)
    with logkernel.open(tmp_path) as lk:
        records = read_partition(lk, 0)
        assert [r.value for r in records] == values
        for i in range(0, len(values), 17):
            consumer = lk.consumer()
            consumer.assign([("t", 0)])
            consumer.seek(("t", 0), i)
            assert consumer.poll(max_records=1)[0].value == values[i]
        assert lk.offset_for_time("t", 0, 0) is not None
        lk.partition_log("t", 0).check()


@pytest.mark.parametrize("content", [None, b"", b"garbage\n", b"0\nrecovery-point x\n",
                                     b"0\nrecovery-point 99999\nlog-start-offset 0\n"])
def test_bad_checkpoint_recovers_everything(tmp_path: Path, content: bytes | None) -> None:
    partition_dir, values = build(tmp_path)
    last = segment_files(partition_dir, ".log")[-1]
    with open(last, "ab") as f:
        f.write(b"\x00\x00\x00\x00\x00\x00\x00\x07torn")
    checkpoint = partition_dir / "partition.checkpoint"
    if content is None:
        checkpoint.unlink()
    else:
        checkpoint.write_bytes(content)
    crash(tmp_path)
    with logkernel.open(tmp_path) as lk:
        assert [r.value for r in read_partition(lk, 0)] == values
        assert lk.recovery["t-0"].truncated
        lk.partition_log("t", 0).check()


def test_clean_reopen_of_many_segments_opens_only_the_active_one(tmp_path: Path) -> None:
    with logkernel.open(tmp_path) as lk:
        lk.create_topic("t", config={"segment.bytes": 200})
        producer = lk.producer()
        for i in range(400):
            producer.send("t", b"%d" % i)
        assert lk.describe_topic("t").partitions[0].segments > 100
    with logkernel.open(tmp_path) as lk:
        partition_log = lk.partition_log("t", 0)
        assert len(partition_log._segments) == 1
        assert lk.recovery == {}
        assert [r.value for r in read_partition(lk, 0)] == [b"%d" % i for i in range(400)]
