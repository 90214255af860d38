"""`logkernel verify` as an operator runs it: a data directory written by the engine (plain,
batched, compressed, idempotent and transactional records, a compacted topic that was
cleaned), then one kind of damage at a time. Each case checks that the command names the
file, the byte and the offset, says what a repair drops, exits 1, changed nothing, and
that --repair leaves a directory that verifies clean and serves exactly the records before
the damage (all of them when only an index or checkpoint was hurt)."""

from __future__ import annotations

import itertools
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import logkernel
from logkernel import cli, engine
from logkernel.log import checkpoint, partition, producer_state
from logkernel.log import verify as verification
from tests.scratch import memory_directory

TOPIC = "events"          # delete policy, 2 partitions; partition 1 holds transactions
COMPACTED = "users"       # compacted and cleaned: sparse offsets that are not damage
PARTITION = f"{TOPIC}-0"
TXN_PARTITION = f"{TOPIC}-1"
# Small segments and a small index interval: several segments of a few pages each and an
# index entry every few batches, so every kind of damage has a place to land.
SEGMENT_BYTES = 16 * 1024
INDEX_INTERVAL = 512
CONFIG = {"log.cleaner.enable": False}
HEADER = struct.Struct(">qi")

Stored = list[tuple[int, int, bytes | None]]  # (partition, offset, value)


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "logkernel", *args]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(command(*args), capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def build(path: Path) -> None:
    with logkernel.open(path, CONFIG) as lk:
        lk.create_topic(TOPIC, partitions=2, config={"segment.bytes": SEGMENT_BYTES,
                                                    "index.interval.bytes": INDEX_INTERVAL})
        lk.create_topic(COMPACTED, config={"cleanup.policy": "compact", "segment.bytes": 2048,
                                           "min.cleanable.dirty.ratio": 0.01})
        plain = lk.producer()
        zstd = lk.producer(compression_type="zstd")
        idempotent = lk.producer(enable_idempotence=True)
        for i in range(450):
            value = b"record %05d " % i + b"." * (i % 90)
            if i % 7 == 0:
                plain.send_batch(TOPIC, [value, value + b"+"], partition=0)
            elif i % 11 == 0:
                zstd.send_batch(TOPIC, [value] * 4, partition=0)
            elif i % 3 == 0:
                idempotent.send(TOPIC, value, key=b"k%d" % (i % 5), partition=0)
            else:
                plain.send(TOPIC, value, partition=0, headers=[("n", b"%d" % i)])
        txn = lk.producer(transactional_id="verify-test")
        txn.init_transactions()
        for i in range(60):
            txn.begin_transaction()
            txn.send_batch(TOPIC, [b"txn %03d a" % i, b"txn %03d b" % i], partition=1)
            txn.send(TOPIC, b"txn %03d c" % i, partition=1)
            if i % 3 == 1:
                txn.abort_transaction()
            else:
                txn.commit_transaction()
        for i in range(300):  # the last 20 writes overwrite half the keys: gaps once cleaned
            plain.send(COMPACTED, b"v%d" % i, key=b"user-%d" % (i % 20 if i < 280 else i % 10))
        lk.compact(COMPACTED, roll=True)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the directories live: tmpfs (/dev/shm) when there is one, else a temporary
    directory. The damage is made by editing files, so the disk's fsyncs, which every open
    and close of the engine pays, buy nothing here but time."""
    with memory_directory("logkernel-verify-", tmp_path_factory.mktemp("verify")) as path:
        yield path


@pytest.fixture(scope="module")
def pristine(scratch: Path) -> Path:
    path = scratch / "pristine"
    build(path)
    return path


@pytest.fixture
def data_dir(pristine: Path, scratch: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    copy = scratch / f"data-{abs(hash(request.node.nodeid))}"
    shutil.copytree(pristine, copy)
    yield copy
    shutil.rmtree(copy, ignore_errors=True)


def read_all(path: Path) -> tuple[Stored, Stored]:
    """Every record of TOPIC through the embedded consumer (every batch CRC-checked):
    read_uncommitted, then read_committed."""
    views = []
    with logkernel.open(path, CONFIG) as lk:
        for isolation in ("read_uncommitted", "read_committed"):
            consumer = lk.consumer(auto_offset_reset="earliest", isolation_level=isolation)
            consumer.assign([(TOPIC, 0), (TOPIC, 1)])
            out: Stored = []
            for _ in range(10_000):
                got = consumer.poll(max_records=5000)
                if not got:
                    break
                out += [(r.partition, r.offset, r.value) for r in got]
            consumer.close(autocommit=False)
            views.append(sorted(out))
    return views[0], views[1]


def snapshot_files(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time (ns), by relative path."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


def batches(log: Path) -> list[tuple[int, int, int]]:
    """(position, base offset, size) of each batch of a segment file."""
    data = log.read_bytes()
    out, position = [], 0
    while position + 12 <= len(data):
        base, length = HEADER.unpack_from(data, position)
        if length <= 0:
            break
        out.append((position, base, length + 12))
        position += length + 12
    return out


def segments(path: Path, name: str = PARTITION, suffix: str = ".log") -> list[Path]:
    return sorted((path / name).glob(f"*{suffix}"))


def patch(path: Path, position: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        f.write(data)


def flip(path: Path, position: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ mask]))


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command run in this process (as the console script calls it): status, stdout,
    stderr. Most cases run this way; the subprocess runs above cover the real entry point."""
    capsys.readouterr()
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return status, out, err


def verify_json(path: Path, *extra: str) -> tuple[int, dict]:
    out = run("verify", str(path), "--json", *extra)
    return out.returncode, json.loads(out.stdout)


def test_engine_file_names_agree() -> None:
    """verify repeats the engine's top-level names (log/ may not import the engine)."""
    assert verification.LOCK_FILE == engine.LOCK_FILE
    assert verification.CLEAN_SHUTDOWN_FILE == engine.CLEAN_SHUTDOWN_FILE
    assert verification.CLUSTER_ID_FILE == engine.CLUSTER_ID_FILE
    assert verification.PRODUCER_IDS_FILE == engine.PRODUCER_IDS_FILE
    assert verification.TOPICS_DIR == engine.TOPICS_DIR
    assert verification.PRODUCER_ID_BLOCK == engine.PRODUCER_ID_BLOCK


def test_a_clean_directory_verifies_clean_and_changes_nothing(
        data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot_files(data_dir)
    out = run("verify", str(data_dir))  # the installed entry point, in its own process
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.rstrip().endswith("clean"), out.stdout
    assert out.stderr == ""  # not a terminal: no progress bar
    status, document = verify_json(data_dir)
    assert status == 0 and document["clean"] and document["problems"] == []
    assert snapshot_files(data_dir) == before
    summary = document["summary"]
    with logkernel.open(data_dir, CONFIG) as lk:
        partitions = {f"{t}-{p.partition}": p for t in lk.topics(internal=True)
                      for p in lk.describe_topic(t).partitions}
    assert summary["partitions"] == len(partitions)
    assert summary["segments"] == sum(p.segments for p in partitions.values())
    assert summary["bytes"] == sum(p.size_bytes for p in partitions.values())
    # Plain topic: every offset is one record (data or marker); with --topic only its own.
    status, out_text, _ = main(capsys, "verify", str(data_dir), "--topic", TOPIC, "--json")
    only = json.loads(out_text)
    assert status == 0 and only["summary"]["records"] == sum(
        p.log_end_offset for name, p in partitions.items() if name.startswith(TOPIC + "-"))
    # The files as the engine left them, and verify again changes nothing.
    after_open = snapshot_files(data_dir)
    assert main(capsys, "verify", str(data_dir))[0] == 0
    assert snapshot_files(data_dir) == after_open
    assert set(before) == set(after_open)


@dataclass(frozen=True)
class Damage:
    """One kind of damage: how to do it, what verify must call it, and what survives."""

    inject: Callable[[Path], tuple[str, int, int]]   # -> (relative path, position, offset)
    kind: str
    severity: str = "error"
    survives: str = "all"    # "all" records, a "prefix" of them, or "unchecked"
    repairable: bool = True


def damage_older_segment_value(path: Path) -> tuple[str, int, int]:
    log = segments(path)[1]
    position, base, size = batches(log)[10]
    flip(log, position + size - 3)  # inside the last record's value: only the CRC can tell
    return str(log.relative_to(path)), position, base


def damage_last_segment_value(path: Path) -> tuple[str, int, int]:
    log = segments(path)[-1]
    position, base, size = batches(log)[-4]
    flip(log, position + size - 2)
    return str(log.relative_to(path)), position, base


def tear_the_tail(path: Path) -> tuple[str, int, int]:
    log = segments(path)[-1]
    position, base, size = batches(log)[-2]
    os.truncate(log, position + size // 2)
    return str(log.relative_to(path)), position, base


def zero_a_page(path: Path) -> tuple[str, int, int]:
    log = segments(path)[0]
    position, base, _ = next(b for b in batches(log) if b[0] + b[2] > 4096)
    patch(log, 4096, bytes(4096))
    return str(log.relative_to(path)), position, base


def jump_a_base_offset(path: Path) -> tuple[str, int, int]:
    log = segments(path)[1]
    position, base, _ = batches(log)[7]
    flip(log, position + 6)  # +256 or -256: baseOffset is outside the CRC
    return str(log.relative_to(path)), position, base ^ 0x100


def jump_the_last_base_offset(path: Path) -> tuple[str, int, int]:
    """Nothing after it to go backwards from: only the dense-offsets rule can tell."""
    log = segments(path)[-1]
    position, base, _ = batches(log)[-1]
    flip(log, position + 5, 0x01)  # +65536: still inside the segment's int32 range
    return str(log.relative_to(path)), position, base + 0x10000


def delete_a_middle_segment(path: Path) -> tuple[str, int, int]:
    logs = segments(path)
    logs[1].unlink()
    return str(logs[2].relative_to(path)), 0, -1


def delete_the_first_segment(path: Path) -> tuple[str, int, int]:
    first = segments(path)[0]
    for suffix in (".log", ".index", ".timeindex"):
        first.with_suffix(suffix).unlink()
    return f"{PARTITION}/{checkpoint.CHECKPOINT_FILE}", -1, 0


def cut_on_a_batch_boundary(path: Path) -> tuple[str, int, int]:
    """A cut exactly between batches leaves a valid log; the index entry past the cut is the
    evidence that records were there."""
    log = segments(path)[-1]
    index = log.with_suffix(".index").read_bytes()
    position = struct.unpack_from(">i", index, len(index) - 4)[0]
    os.truncate(log, position)
    return str(log.relative_to(path)), position, -1


def interrupt_a_roll(path: Path) -> tuple[str, int, int]:
    """What a kill between a roll's two steps leaves (the next segment created, the old one
    not yet trimmed, no snapshot at the roll; tests/reliability/test_power_loss.py::
    test_open_after_a_kill_inside_a_roll): repair trims the zeros."""
    directory = path / PARTITION
    last = segments(path)[-1]
    size = last.stat().st_size
    position, base, _ = batches(last)[-1]
    end = base + struct.unpack_from(">i", last.read_bytes(), position + 23)[0] + 1
    with open(last, "ab") as f:
        f.write(bytes(64 * 1024))
    for suffix in (".log", ".index", ".timeindex"):
        (directory / f"{end:020d}{suffix}").write_bytes(b"")
    for snapshot in directory.glob("*.snapshot"):
        snapshot.unlink()
    (directory / checkpoint.CHECKPOINT_FILE).write_text(
        f"0\nrecovery-point {end}\nlog-start-offset 0\n")
    (path / engine.CLEAN_SHUTDOWN_FILE).unlink()
    return str(last.relative_to(path)), size, end


def garble_index_entry(path: Path) -> tuple[str, int, int]:
    index = segments(path, suffix=".index")[1]
    data = bytearray(index.read_bytes())
    relative = struct.unpack_from(">i", data, 8)[0]
    struct.pack_into(">i", data, 8, relative + 1)  # still increasing: the engine trusts it
    index.write_bytes(bytes(data))
    return str(index.relative_to(path)), 8, -1


def garble_index_file(path: Path) -> tuple[str, int, int]:
    index = segments(path, suffix=".index")[0]
    index.write_bytes(os.urandom(index.stat().st_size))
    return str(index.relative_to(path)), -1, -1


def delete_index(path: Path) -> tuple[str, int, int]:
    index = segments(path, suffix=".index")[1]
    index.unlink()
    return str(index.relative_to(path)), -1, -1


def garble_time_entry(path: Path) -> tuple[str, int, int]:
    index = segments(path, suffix=".timeindex")[1]
    data = bytearray(index.read_bytes())
    timestamp = struct.unpack_from(">q", data, 0)[0]
    struct.pack_into(">q", data, 0, timestamp + 1)  # still sorted: the engine trusts it
    index.write_bytes(bytes(data))
    return str(index.relative_to(path)), 0, -1


def delete_time_index(path: Path) -> tuple[str, int, int]:
    index = segments(path, suffix=".timeindex")[0]
    index.unlink()
    return str(index.relative_to(path)), -1, -1


def delete_txn_index(path: Path) -> tuple[str, int, int]:
    index = segments(path, TXN_PARTITION, producer_state.TXN_INDEX_SUFFIX)[0]
    index.unlink()
    return str(index.relative_to(path)), -1, -1


def garble_txn_index(path: Path) -> tuple[str, int, int]:
    index = segments(path, TXN_PARTITION, producer_state.TXN_INDEX_SUFFIX)[0]
    patch(index, 34, b"\x00\x05")  # the second entry's version
    return str(index.relative_to(path)), -1, -1


def txn_entry_of_another_producer(path: Path) -> tuple[str, int, int]:
    index = segments(path, TXN_PARTITION, producer_state.TXN_INDEX_SUFFIX)[0]
    patch(index, 34 + 8, b"\x7f")  # the low byte of the second entry's producer id
    last = struct.unpack_from(">q", index.read_bytes(), 34 + 18)[0]
    return str(index.relative_to(path)), 34, last


def txn_entry_with_wrong_bounds(path: Path) -> tuple[str, int, int]:
    """The third entry: its first offset one lower (well formed, wrong)."""
    index = segments(path, TXN_PARTITION, producer_state.TXN_INDEX_SUFFIX)[0]
    data = bytearray(index.read_bytes())
    first, last = struct.unpack_from(">qq", data, 68 + 10)
    struct.pack_into(">q", data, 68 + 10, first - 1)
    index.write_bytes(bytes(data))
    return str(index.relative_to(path)), 68, last


def txn_entry_with_wrong_stable_offset(path: Path) -> tuple[str, int, int]:
    index = segments(path, TXN_PARTITION, producer_state.TXN_INDEX_SUFFIX)[0]
    data = bytearray(index.read_bytes())
    last, lso = struct.unpack_from(">qq", data, 18)
    struct.pack_into(">q", data, 26, lso - 1)
    index.write_bytes(bytes(data))
    return str(index.relative_to(path)), 0, last


def garble_snapshot(path: Path) -> tuple[str, int, int]:
    snapshot = segments(path, TXN_PARTITION, producer_state.SNAPSHOT_SUFFIX)[-1]
    flip(snapshot, 20)
    return str(snapshot.relative_to(path)), -1, -1


def delete_checkpoint(path: Path) -> tuple[str, int, int]:
    (path / PARTITION / checkpoint.CHECKPOINT_FILE).unlink()
    return f"{PARTITION}/{checkpoint.CHECKPOINT_FILE}", -1, -1


def garble_checkpoint(path: Path) -> tuple[str, int, int]:
    (path / PARTITION / checkpoint.CHECKPOINT_FILE).write_bytes(b"0\nrecovery-point x\n")
    return f"{PARTITION}/{checkpoint.CHECKPOINT_FILE}", -1, -1


def recovery_point_past_the_end(path: Path) -> tuple[str, int, int]:
    (path / PARTITION / checkpoint.CHECKPOINT_FILE).write_bytes(
        b"0\nrecovery-point 99999\nlog-start-offset 0\n")
    return f"{PARTITION}/{checkpoint.CHECKPOINT_FILE}", -1, -1


def garble_cleaner_checkpoint(path: Path) -> tuple[str, int, int]:
    target = path / f"{COMPACTED}-0" / checkpoint.CLEANER_CHECKPOINT_FILE
    target.write_bytes(b"0\nfirst-dirty\n")
    return str(target.relative_to(path)), -1, -1


def garble_topic_metadata(path: Path) -> tuple[str, int, int]:
    target = next((path / engine.TOPICS_DIR).glob("*.json"))
    target.write_bytes(b'{"name": ')
    return str(target.relative_to(path)), -1, -1


def garble_producer_ids(path: Path) -> tuple[str, int, int]:
    (path / engine.PRODUCER_IDS_FILE).write_bytes(b"x1000\n")
    return engine.PRODUCER_IDS_FILE, -1, -1


def delete_partition_directory(path: Path) -> tuple[str, int, int]:
    shutil.rmtree(path / f"{COMPACTED}-0")
    return f"{COMPACTED}-0", -1, -1


DAMAGE = {
    "older segment value byte": Damage(damage_older_segment_value, "log-corrupt", survives="prefix"),
    "last segment value byte": Damage(damage_last_segment_value, "log-corrupt", survives="prefix"),
    "torn tail": Damage(tear_the_tail, "log-torn", survives="prefix"),
    "zeroed page": Damage(zero_a_page, "log-corrupt", survives="prefix"),
    "baseOffset bit": Damage(jump_a_base_offset, "log-offsets", survives="prefix"),
    "baseOffset bit of the last batch": Damage(jump_the_last_base_offset, "log-offsets",
                                               survives="prefix"),
    "middle segment deleted": Damage(delete_a_middle_segment, "log-gap", survives="prefix"),
    "first segment deleted": Damage(delete_the_first_segment, "log-lost-head", survives="unchecked"),
    "cut on a batch boundary": Damage(cut_on_a_batch_boundary, "log-lost-tail", survives="prefix"),
    "roll interrupted by a kill": Damage(interrupt_a_roll, "log-untrimmed", severity="warning"),
    "index entry off by one": Damage(garble_index_entry, "index-mismatch"),
    "index random bytes": Damage(garble_index_file, "index-corrupt", severity="warning"),
    "index deleted": Damage(delete_index, "index-missing", severity="warning"),
    "time index entry": Damage(garble_time_entry, "timeindex-mismatch"),
    "time index deleted": Damage(delete_time_index, "timeindex-missing", severity="warning"),
    "txnindex deleted": Damage(delete_txn_index, "txnindex-missing-entry"),
    "txnindex garbled": Damage(garble_txn_index, "txnindex-corrupt"),
    "txnindex names another producer": Damage(txn_entry_of_another_producer,
                                              "txnindex-mismatch"),
    "txnindex first offset": Damage(txn_entry_with_wrong_bounds, "txnindex-mismatch"),
    "txnindex last stable offset": Damage(txn_entry_with_wrong_stable_offset,
                                          "txnindex-mismatch"),
    "snapshot garbled": Damage(garble_snapshot, "snapshot-corrupt", severity="warning"),
    "checkpoint deleted": Damage(delete_checkpoint, "checkpoint-missing", severity="warning"),
    "checkpoint garbled": Damage(garble_checkpoint, "checkpoint-corrupt", severity="warning"),
    "recovery point past the end": Damage(recovery_point_past_the_end, "log-lost-tail"),
    "cleaner checkpoint garbled": Damage(garble_cleaner_checkpoint,
                                         "cleaner-checkpoint-corrupt", severity="warning"),
    "topic metadata garbled": Damage(garble_topic_metadata, "metadata-corrupt",
                                     survives="unchecked", repairable=False),
    "producer-ids garbled": Damage(garble_producer_ids, "producer-ids-corrupt",
                                   repairable=False),
    "partition directory deleted": Damage(delete_partition_directory, "partition-missing",
                                          survives="unchecked"),
}


@pytest.fixture(scope="module")
def written(pristine: Path) -> tuple[Stored, Stored]:
    """What the pristine directory serves: every record, and the read_committed view."""
    copy = pristine.parent / "read"
    shutil.copytree(pristine, copy)
    try:
        return read_all(copy)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damage_is_reported_then_repaired(name: str, data_dir: Path,
                                          written: tuple[Stored, Stored],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    damage = DAMAGE[name]
    path, position, offset = damage.inject(data_dir)
    before = snapshot_files(data_dir)

    status, out, _ = main(capsys, "verify", str(data_dir), "--json")
    document = json.loads(out)
    assert status == 1, document
    assert not document["clean"]
    assert snapshot_files(data_dir) == before  # read-only, whatever it found
    found = [p for p in document["problems"] if p["kind"] == damage.kind]
    assert found, (name, document["problems"])
    problem = found[0]
    assert problem["severity"] == damage.severity, problem
    assert problem["path"] == path, (problem, path)
    if position >= 0:
        assert problem["position"] == position, problem
    if offset >= 0:
        assert problem["offset"] == offset, problem
    if damage.survives == "prefix" and damage.kind != "log-lost-tail":
        assert problem["dropped"].startswith("repair drops"), problem

    # The human report names the same file and says what goes.
    _, text, _ = main(capsys, "verify", str(data_dir))
    assert path in text and ("ERROR" if damage.severity == "error" else "WARNING") in text
    assert snapshot_files(data_dir) == before

    status, out, err = main(capsys, "verify", str(data_dir), "--repair")
    if not damage.repairable:
        assert status == 1, out + err
        return
    assert status == 0, out + err
    assert out.rstrip().endswith("clean"), out
    assert verification.verify(data_dir).clean

    if damage.survives == "unchecked":
        return
    everything, committed = written
    got, got_committed = read_all(data_dir)
    if damage.survives == "all":
        assert got == everything
        assert got_committed == committed
    else:
        # The valid prefix of the damaged partition, each record at its offset; the other
        # partition untouched; and something was dropped.
        damaged = [r for r in got if r[0] == 0]
        want = [r for r in everything if r[0] == 0]
        assert damaged == want[:len(damaged)] and len(damaged) < len(want)
        assert [r for r in got if r[0] == 1] == [r for r in everything if r[0] == 1]


def test_human_report_names_file_byte_offset_and_what_goes(data_dir: Path) -> None:
    path, position, offset = damage_older_segment_value(data_dir)
    out = run("verify", str(data_dir))
    assert out.returncode == 1
    line = next(line for line in out.stdout.splitlines() if line.startswith("ERROR"))
    assert f"{path} byte {position} (offset {offset})" in line
    assert "CRC" in line
    dropped = out.stdout.splitlines()[out.stdout.splitlines().index(line) + 1]
    assert "repair drops" in dropped and "later segment" in dropped
    assert "1 error(s)" in out.stdout.splitlines()[-1]


# Holds the directory open in another process until its stdin closes.
HOLDER = """
import sys, logkernel
with logkernel.open(sys.argv[1], {"log.cleaner.enable": False}):
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_repair_is_refused_while_an_engine_holds_the_directory(data_dir: Path) -> None:
    damage_last_segment_value(data_dir)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        before = snapshot_files(data_dir)
        refused = run("verify", str(data_dir), "--repair")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "refusing to repair" in refused.stderr
        assert f"process {holder.pid}" in refused.stderr
        assert snapshot_files(data_dir) == before
        # Verifying a live directory works, and says who holds it.
        live = run("verify", str(data_dir))
        assert live.returncode == 1 and "open in a running engine" in live.stdout
        assert snapshot_files(data_dir) == before
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
        if holder.stdout is not None:
            holder.stdout.close()
    assert run("verify", str(data_dir), "--repair").returncode == 0


def test_repair_refused_if_an_engine_takes_the_lock_meanwhile(data_dir: Path) -> None:
    """The lock is checked again when the repair starts writing."""
    damage_last_segment_value(data_dir)
    report = verification.verify(data_dir)
    with logkernel.open(data_dir, CONFIG), pytest.raises(logkernel.errors.DataDirLockedError), \
            verification.hold_lock(str(data_dir)):
        verification.apply_repair(report, verification.plan_repair(report))


def test_progress_bar_on_request(data_dir: Path) -> None:
    out = run("verify", str(data_dir), "--progress")
    assert out.returncode == 0
    assert "verify [" in out.stderr and "%" in out.stderr and out.stderr.endswith("\n")


def test_progress_bar_on_a_terminal(data_dir: Path) -> None:
    """stderr on a terminal: the bar is drawn without being asked; stdout stays the report."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(command("verify", str(data_dir)), stdout=subprocess.PIPE,
                                   stderr=follower, stdin=subprocess.DEVNULL)
        os.close(follower)
        follower = -1
        stdout, _ = process.communicate(timeout=120)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        terminal = b"".join(chunks).decode()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert process.returncode == 0, terminal
    assert "\rverify [" in terminal and "%" in terminal and terminal.endswith("\n"), repr(terminal)
    assert stdout.decode().rstrip().endswith("clean")


def test_progress_callback_reaches_the_total(data_dir: Path) -> None:
    calls: list[tuple[int, int]] = []
    report = verification.verify(data_dir, progress=lambda done, total: calls.append((done, total)))
    assert report.clean
    assert calls and calls[-1][0] == calls[-1][1] == report.bytes_checked
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))


def test_topic_filter_and_usage_errors(data_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    damage_last_segment_value(data_dir)
    assert main(capsys, "verify", str(data_dir), "--topic", COMPACTED)[0] == 0
    assert main(capsys, "verify", str(data_dir), "--topic", TOPIC)[0] == 1
    status, _, err = main(capsys, "verify", str(data_dir), "--topic", "nope")
    assert status == 2 and "no topic 'nope'" in err
    status, _, err = main(capsys, "verify", str(tmp_path / "absent"))
    assert status == 2 and "no data directory" in err
    assert run("verify").returncode == 2  # DATA_DIR is required (argparse)


def test_in_process_main_and_json_repair_document(data_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tear_the_tail(data_dir)
    assert cli.main(["verify", str(data_dir), "--repair", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert not document["clean"]
    actions = document["repair"]["actions"]
    assert actions[0]["action"] == "truncate" and actions[-1]["action"] == "force-recovery"
    assert document["repair"]["after"]["clean"]


def test_compacted_topic_gaps_are_not_damage(pristine: Path) -> None:
    """The cleaned topic has offsets missing inside and between segments."""
    directory = pristine / f"{COMPACTED}-0"
    logs = sorted(directory.glob("*.log"))
    offsets = [base for log in logs for _, base, _ in batches(log)]
    assert offsets != list(range(offsets[0], offsets[0] + len(offsets)))  # gaps exist
    assert verification.verify(pristine, topic=COMPACTED).clean
    assert partition.LOG_SUFFIX == ".log"
