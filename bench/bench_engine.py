"""The engine end to end (open, Producer, Consumer, recovery) beside what a user would
pick instead for an embedded append-only log in Python: LMDB (``lmdb``) and SQLite
(``sqlite3``), in the same run, on N records of 100 bytes.

N is 1,000,000 unless ``LOGKERNEL_BENCH_RECORDS`` says otherwise; the durable sends use
``LOGKERNEL_BENCH_DURABLE`` (default 2,000), the transactions ``LOGKERNEL_BENCH_TRANSACTIONS``
(default 2,000). The 1 GiB recovery benchmark runs when the
temporary directory has 3 GiB free; ``LOGKERNEL_BENCH_BIG=0`` skips it, ``=1`` runs it
regardless of the free-space check.

How each side is used, so the ratios are honest. Where there was a choice, the peer got
the option that is faster for it (or no slower, where this VM could not tell them apart):

- Appends, logkernel: a topic with 1 partition and the default config (no fsync on
  send: the bytes sit in the segment's map, as Kafka's page-cache writes do); the timed
  part is the calls, the engine is opened before and closed (which fsyncs) after.
- Appends, LMDB: ``writemap=True, metasync=False, sync=False``, one write transaction,
  8-byte big-endian keys built before timing, ``append=True`` (MDB_APPEND: keys arrive
  sorted, so LMDB skips the B-tree search); the commit is timed (it does not fsync).
- Appends, SQLite: WAL, ``synchronous=NORMAL``, one transaction, ``executemany`` into
  ``t("offset" INTEGER PRIMARY KEY, value BLOB)``; the commit is timed (in WAL mode with
  NORMAL, it fsyncs only when it checkpoints, which a 100 MB transaction makes it do).
- Reads: data written once per module (logkernel in batches of 1,000 records, or one
  record per batch with ``send``; LMDB with ``putmulti``; SQLite as above); each round
  reads all N records through a fresh consumer / read transaction / query. ``poll`` makes
  a ``Record`` per record (value as bytes), LMDB's cursor a (key, value) pair of bytes,
  SQLite's ``fetchall`` a tuple per row; the cursor is drained in C (no Python loop per
  record), as ``poll`` builds its list in one call per 500. ``poll_batch`` makes no
  per-record object: it is there to show what the columnar path costs, not as a
  like-for-like peer of the others.
- Batches: ``send_batch`` in batches of 1,000 and of 10,000 values (the latter is ~1.1 MB,
  over the default max.message.bytes of 1 MiB + 12, as in Kafka, so that topic raises
  it); LMDB: one ``putmulti`` of all N pairs in one transaction, its fastest bulk load.
- Open: a data dir whose one partition has 1,000 segments, opened after a clean close,
  and after an unclean one (the ".clean-shutdown" marker deleted). Recovery: a 1 GiB
  active segment with 100 garbage bytes after its last batch (a torn append), opened
  with the marker deleted: every batch's CRC is checked and the tail cut; once with the
  file in the page cache, once evicted (``posix_fadvise(DONTNEED)``) so the disk is read.
- Durable sends: flush.messages=1 (``send`` returns after fsync; concurrent senders share
  one fsync). SQLite: WAL, ``synchronous=FULL``, one transaction per insert. LMDB:
  ``sync=True, metasync=True``, one write transaction per put.
- Transactions of 100 records committed one after another, none fsynced (each system's
  default or its no-sync setting): logkernel's transactional producer (begin, one
  ``send_batch`` or 100 ``send``, commit: two transaction-state records and a COMMIT marker
  per commit); SQLite: WAL, ``synchronous=NORMAL``, BEGIN, ``executemany`` of 100 rows,
  COMMIT; LMDB: ``sync=False``, one write transaction of 100 appended puts.

Every writing round gets a fresh directory (rounds never see each other's data; the
read benchmarks share one data set per system and only read it), and every benchmark
checks what it produced or read (counts, offsets in order, a value compared), so a broken
engine cannot post a fast number. Timings are never asserted.

Groups with two peers (LMDB and SQLite) are split into two groups, each timing logkernel
again right next to that peer: the summary then prints both ratios, and each ratio comes
from measurements taken minutes apart at most (this VM's speed drifts).
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import logkernel

lmdb = pytest.importorskip("lmdb")

N = int(os.environ.get("LOGKERNEL_BENCH_RECORDS", "1000000"))
N_DURABLE = int(os.environ.get("LOGKERNEL_BENCH_DURABLE", "2000"))
VALUE_SIZE = 100
TOPIC = "events"

# 1,024 distinct random values, reused in order: the list of N costs 8 bytes per record
# instead of 133, and nothing here compresses or deduplicates, so repeats change nothing.
_rng = random.Random(1_700_000_000)
_POOL = [_rng.randbytes(VALUE_SIZE) for _ in range(1024)]
VALUES = [_POOL[i % len(_POOL)] for i in range(N)]  # record i's value, for any i: _value(i)
# LMDB's keys, built before any timing (a user would build them in the loop: that would
# only slow the peer down).
KEYS = [i.to_bytes(8, "big") for i in range(N)]

# Rounds per benchmark: enough for a min and a median, few enough that the file stays
# within ~5 minutes at N = 1,000,000 (a million-record round takes seconds).
WRITE_ROUNDS = 3
READ_ROUNDS = 5
DURABLE_ROUNDS = 3
OPEN_ROUNDS = 10
RECOVERY_ROUNDS = 3

# LMDB reserves its map up front; records take ~130 bytes of pages each, so this leaves
# room for page splits and a copy-on-write transaction twice over.
LMDB_MAP_SIZE = N * 512 + (64 << 20)
SEGMENTS_FOR_OPEN = 1000
RECOVERY_BYTES = 1 << 30
RECOVERY_FREE_SPACE = 3 << 30


def _mark(benchmark: Any, group: str, *, peer: bool, items: int = N, unit: str = "rec",
          tag: str | None = None) -> None:
    """``peer``: the group's reference for ratios. ``tag``: the summary's label when
    "peer"/"ours" would mislead (a reference of ours is "ref", a peer that is not the
    reference is "peer")."""
    benchmark.group = group
    benchmark.extra_info.update(items=items, unit=unit, peer=peer)
    if tag:
        benchmark.extra_info["tag"] = tag


def _run(benchmark: Any, target: Callable[..., Any], setup: Callable[[], Any], rounds: int) -> Any:
    """One call per round, ``setup`` (untimed) before each; returns the last call's result."""
    return benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)


class Rounds:
    """A fresh directory per round; closes what the previous round opened and deletes its
    directory, so only one round's data is on disk at a time."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._count = 0
        self._open: list[Any] = []
        self._dirs: list[Path] = []

    def fresh_dir(self) -> str:
        self.release()
        path = self._base / f"round-{self._count}"
        self._count += 1
        path.mkdir()
        self._dirs.append(path)
        return str(path)

    def keep(self, resource: Any) -> Any:
        """Closes ``resource`` before the next round's directory is made."""
        self._open.append(resource)
        return resource

    def release(self) -> None:
        while self._open:
            self._open.pop().close()
        while self._dirs:
            shutil.rmtree(self._dirs.pop(), ignore_errors=True)


@pytest.fixture
def rounds(tmp_path: Path) -> Iterator[Rounds]:
    r = Rounds(tmp_path)
    yield r
    r.release()


# ---- the systems, opened the way a user wanting each one's speed would ---------------


def _logkernel_topic(rounds: Rounds, topic_config: dict[str, Any] | None = None) -> Any:
    engine = rounds.keep(logkernel.open(rounds.fresh_dir()))
    engine.create_topic(TOPIC, 1, topic_config)
    return engine


def _lmdb_env(path: str, *, durable: bool = False) -> Any:
    if durable:
        return lmdb.open(path, map_size=LMDB_MAP_SIZE, sync=True, metasync=True)
    return lmdb.open(path, map_size=LMDB_MAP_SIZE, writemap=True, metasync=False, sync=False)


def _sqlite(path: str, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions, so BEGIN/COMMIT (or their absence,
    # one transaction per statement) are exactly what the benchmark says.
    con = sqlite3.connect(os.path.join(path, "log.db"), isolation_level=None,
                          check_same_thread=False)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute('CREATE TABLE t ("offset" INTEGER PRIMARY KEY, value BLOB NOT NULL)')
    return con


# ---- what each benchmark checks ---------------------------------------------------------


def _value(i: int) -> bytes:
    return _POOL[i % len(_POOL)]


def _key(i: int) -> bytes:
    return i.to_bytes(8, "big")


def _check_logkernel(engine: Any, count: int, written: list[bytes] = _POOL) -> None:
    """The log holds ``count`` records, and the first and last read back as written
    (``written`` repeated: record i was ``written[i % len(written)]``)."""
    assert engine.end_offset(TOPIC, 0) == count
    consumer = engine.consumer(auto_offset_reset="earliest")
    consumer.assign([(TOPIC, 0)])
    for offset in (0, count - 1):
        consumer.seek((TOPIC, 0), offset)
        record = consumer.poll(max_records=1)[0]
        assert (record.offset, record.value) == (offset, written[offset % len(written)])
    consumer.close()


def _check_lmdb(env: Any, count: int) -> None:
    with env.begin() as txn:
        assert txn.stat()["entries"] == count
        assert txn.get(_key(0)) == _value(0)
        assert txn.get(_key(count - 1)) == _value(count - 1)


def _check_sqlite(con: sqlite3.Connection, count: int) -> None:
    assert con.execute('SELECT count(*), min("offset"), max("offset") FROM t').fetchone() == (
        count, 0, count - 1)
    last = con.execute('SELECT value FROM t WHERE "offset" = ?', (count - 1,)).fetchone()[0]
    assert last == _value(count - 1)


# ---- 1. appending one record at a time --------------------------------------------------

GROUP_ONE = {
    "lmdb": f"append {N:,} x 100 B one at a time, vs lmdb put",
    "sqlite": f"append {N:,} x 100 B one at a time, vs sqlite executemany",
}


def _send_each(producer: Any) -> Any:
    send = producer.send
    metadata = None
    for value in VALUES:
        metadata = send(TOPIC, value)
    return metadata


@pytest.mark.parametrize("versus", ["lmdb", "sqlite"])
def test_append_one_logkernel_send(benchmark: Any, rounds: Rounds, versus: str) -> None:
    _mark(benchmark, GROUP_ONE[versus], peer=False)
    engines: list[Any] = []

    def setup() -> Any:
        engines[:] = [_logkernel_topic(rounds)]
        return (engines[0].producer(),), {}

    last = _run(benchmark, _send_each, setup, WRITE_ROUNDS)
    assert (last.partition, last.offset) == (0, N - 1)
    _check_logkernel(engines[0], N)


def _lmdb_put_each(env: Any) -> Any:
    with env.begin(write=True) as txn:
        put = txn.put
        for key, value in zip(KEYS, VALUES, strict=True):
            put(key, value, append=True)
    return env


def test_append_one_lmdb_put(benchmark: Any, rounds: Rounds) -> None:
    _mark(benchmark, GROUP_ONE["lmdb"], peer=True)

    def setup() -> Any:
        return (rounds.keep(_lmdb_env(rounds.fresh_dir())),), {}

    _check_lmdb(_run(benchmark, _lmdb_put_each, setup, WRITE_ROUNDS), N)


def _sqlite_executemany(con: sqlite3.Connection) -> sqlite3.Connection:
    con.execute("BEGIN")
    con.executemany('INSERT INTO t ("offset", value) VALUES (?, ?)', enumerate(VALUES))
    con.execute("COMMIT")
    return con


def test_append_one_sqlite_executemany(benchmark: Any, rounds: Rounds) -> None:
    _mark(benchmark, GROUP_ONE["sqlite"], peer=True)

    def setup() -> Any:
        return (rounds.keep(_sqlite(rounds.fresh_dir(), "NORMAL")),), {}

    _check_sqlite(_run(benchmark, _sqlite_executemany, setup, WRITE_ROUNDS), N)


# ---- 2. appending in batches --------------------------------------------------------------

GROUP_BATCHES = f"append {N:,} x 100 B in batches, vs lmdb putmulti"


@pytest.mark.parametrize("batch", [1000, 10000])
def test_append_logkernel_send_batch(benchmark: Any, rounds: Rounds, batch: int) -> None:
    _mark(benchmark, GROUP_BATCHES, peer=False)
    chunks = [VALUES[i:i + batch] for i in range(0, N, batch)]
    engines: list[Any] = []
    # A batch of 10,000 x 100 B is ~1.07 MB, over Kafka's (and our) default
    # max.message.bytes of 1 MiB + 12: raise it, as a Kafka user sending such batches must.
    config = {"max.message.bytes": 4 << 20}

    def setup() -> Any:
        engines[:] = [_logkernel_topic(rounds, config)]
        return (engines[0].producer(),), {}

    def send_batches(producer: Any) -> Any:
        send_batch = producer.send_batch
        metadata = None
        for chunk in chunks:
            metadata = send_batch(TOPIC, chunk)
        return metadata

    last = _run(benchmark, send_batches, setup, WRITE_ROUNDS)
    assert last[-1].offset == N - 1 and len(last) == len(chunks[-1])
    _check_logkernel(engines[0], N)


def _lmdb_putmulti(env: Any) -> Any:
    with env.begin(write=True) as txn:
        consumed, added = txn.cursor().putmulti(zip(KEYS, VALUES, strict=True), append=True)
    assert consumed == added == N
    return env


def test_append_lmdb_putmulti(benchmark: Any, rounds: Rounds) -> None:
    """All N pairs in one putmulti call in one transaction: LMDB's fastest bulk load."""
    _mark(benchmark, GROUP_BATCHES, peer=True)

    def setup() -> Any:
        return (rounds.keep(_lmdb_env(rounds.fresh_dir())),), {}

    _check_lmdb(_run(benchmark, _lmdb_putmulti, setup, WRITE_ROUNDS), N)


# ---- 3. reading back ----------------------------------------------------------------------

READ_BATCH = 1000
GROUP_READ = {
    "lmdb": f"read back {N:,} x 100 B (batches of {READ_BATCH:,}), vs lmdb cursor",
    "sqlite": f"read back {N:,} x 100 B (batches of {READ_BATCH:,}), vs sqlite SELECT",
    "single": f"read back {N:,} x 100 B written by send (1 per batch), vs lmdb cursor",
}


def _verify_whole_log(engine: Any) -> None:
    """Once per data set, untimed: every offset 0..N-1 in order, every value as written."""
    consumer = engine.consumer(auto_offset_reset="earliest")
    consumer.assign([(TOPIC, 0)])
    consumer.seek((TOPIC, 0), 0)
    expected = 0
    while expected < N:
        batch = consumer.poll_batch(max_records=10_000)
        assert batch is not None, f"the log ends at {expected} of {N} records"
        assert batch.offsets.tolist() == list(range(expected, expected + len(batch)))
        assert batch.values() == VALUES[expected:expected + len(batch)]
        expected += len(batch)
    consumer.close()


@pytest.fixture(scope="module")
def batched_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("read-batched")
    engine = logkernel.open(path)
    engine.create_topic(TOPIC, 1)
    producer = engine.producer()
    for i in range(0, N, READ_BATCH):
        producer.send_batch(TOPIC, VALUES[i:i + READ_BATCH])
    _verify_whole_log(engine)
    yield engine
    engine.close()
    shutil.rmtree(path)  # pytest keeps its last 3 runs' directories: leave no 100s of MB


@pytest.fixture(scope="module")
def single_record_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("read-single")
    engine = logkernel.open(path)
    engine.create_topic(TOPIC, 1)
    _send_each(engine.producer())
    _verify_whole_log(engine)
    yield engine
    engine.close()
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def lmdb_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("read-lmdb")
    env = _lmdb_env(str(path))
    _check_lmdb(_lmdb_putmulti(env), N)
    yield env
    env.close()
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def sqlite_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    path = tmp_path_factory.mktemp("read-sqlite")
    con = _sqlite(str(path), "NORMAL")
    _check_sqlite(_sqlite_executemany(con), N)
    yield con
    con.close()
    shutil.rmtree(path)


def _fresh_consumer(engine: Any) -> Callable[[], Any]:
    def setup() -> Any:
        consumer = engine.consumer(auto_offset_reset="earliest")
        consumer.assign([(TOPIC, 0)])
        consumer.seek((TOPIC, 0), 0)
        return (consumer,), {}
    return setup


def _poll_all(consumer: Any) -> Any:
    poll = consumer.poll
    count = 0
    records = None
    while count < N:
        records = poll(timeout_ms=0, max_records=500)
        if not records or records[0].offset != count or records[-1].offset != count + len(records) - 1:
            raise AssertionError(f"after {count} records poll returned offsets "
                                 f"{[r.offset for r in records[:3]] if records else []}...")
        count += len(records)
    return count, records[-1] if records else None


def _poll_batch_all(consumer: Any) -> Any:
    poll_batch = consumer.poll_batch
    count = 0
    batch = None
    while count < N:
        batch = poll_batch(timeout_ms=0, max_records=10_000)
        if batch is None or batch.offsets[0] != count or batch.offsets[-1] != count + len(batch) - 1:
            raise AssertionError(f"after {count} records poll_batch returned {batch!r}")
        count += len(batch)
    return count, batch


def _check_poll(result: Any) -> None:
    count, last = result
    assert count == N and (last.offset, last.value) == (N - 1, VALUES[-1])


def _check_poll_batch(result: Any) -> None:
    count, batch = result
    start, length = int(batch.value_offsets[-1]), int(batch.value_lengths[-1])
    assert count == N and int(batch.offsets[-1]) == N - 1
    assert batch.buffer[start:start + length] == VALUES[-1]


@pytest.mark.parametrize("versus", ["lmdb", "sqlite"])
def test_read_logkernel_poll(benchmark: Any, batched_log: Any, versus: str) -> None:
    _mark(benchmark, GROUP_READ[versus], peer=False)
    _check_poll(_run(benchmark, _poll_all, _fresh_consumer(batched_log), READ_ROUNDS))


@pytest.mark.parametrize("versus", ["lmdb", "sqlite"])
def test_read_logkernel_poll_batch(benchmark: Any, batched_log: Any, versus: str) -> None:
    _mark(benchmark, GROUP_READ[versus], peer=False)
    _check_poll_batch(_run(benchmark, _poll_batch_all, _fresh_consumer(batched_log), READ_ROUNDS))


def test_read_single_logkernel_poll(benchmark: Any, single_record_log: Any) -> None:
    _mark(benchmark, GROUP_READ["single"], peer=False)
    _check_poll(_run(benchmark, _poll_all, _fresh_consumer(single_record_log), READ_ROUNDS))


def test_read_single_logkernel_poll_batch(benchmark: Any, single_record_log: Any) -> None:
    _mark(benchmark, GROUP_READ["single"], peer=False)
    _check_poll_batch(_run(benchmark, _poll_batch_all, _fresh_consumer(single_record_log),
                           READ_ROUNDS))


def _lmdb_read_all(env: Any) -> Any:
    # Iterated in C (deque keeps only the last item): the cursor's own cost, no Python
    # loop per record, as poll builds its list of Records in one call per 500.
    with env.begin() as txn:
        (count, (key, value)), = collections.deque(enumerate(txn.cursor(), 1), maxlen=1)
    return count, key, value


@pytest.mark.parametrize("group", ["lmdb", "single"])
def test_read_lmdb_cursor(benchmark: Any, lmdb_data: Any, group: str) -> None:
    """Keys are unique and iterate sorted: N of them ending at N-1 are 0..N-1 in order."""
    _mark(benchmark, GROUP_READ[group], peer=True)
    result = _run(benchmark, _lmdb_read_all, lambda: ((lmdb_data,), {}), READ_ROUNDS)
    assert result == (N, KEYS[-1], VALUES[-1])


def _sqlite_read_all(con: sqlite3.Connection) -> list[tuple[int, bytes]]:
    return con.execute('SELECT "offset", value FROM t ORDER BY "offset"').fetchall()


def test_read_sqlite_select(benchmark: Any, sqlite_data: sqlite3.Connection) -> None:
    """Offsets are the primary key: N rows from 0 ending at N-1 are 0..N-1 in order."""
    _mark(benchmark, GROUP_READ["sqlite"], peer=True)
    rows = _run(benchmark, _sqlite_read_all, lambda: ((sqlite_data,), {}), READ_ROUNDS)
    assert len(rows) == N and rows[0] == (0, VALUES[0]) and rows[-1] == (N - 1, VALUES[-1])


# ---- 4. durable sends ------------------------------------------------------------------------

GROUP_DURABLE = f"durable appends, {N_DURABLE:,} x 100 B, each returns after fsync (vs 1 thread)"


@pytest.mark.parametrize("threads", [1, 8])
def test_durable_logkernel_send(benchmark: Any, rounds: Rounds, threads: int) -> None:
    """flush.messages=1. The threads are started before timing and released together; the
    timed part is from their release to the last one finishing."""
    _mark(benchmark, GROUP_DURABLE, peer=threads == 1, items=N_DURABLE,
          tag="ref" if threads == 1 else None)
    engines: list[Any] = []

    def setup() -> Any:
        engines[:] = [_logkernel_topic(rounds, {"flush.messages": 1})]
        producer = engines[0].producer()
        start = threading.Barrier(threads + 1)
        offsets: list[list[int]] = [[] for _ in range(threads)]

        def sender(mine: list[int], count: int) -> None:
            start.wait()
            for i in range(count):
                mine.append(producer.send(TOPIC, _value(i)).offset)

        shares = [N_DURABLE // threads + (i < N_DURABLE % threads) for i in range(threads)]
        workers = [threading.Thread(target=sender, args=(offsets[i], shares[i]), daemon=True)
                   for i in range(threads)]
        for worker in workers:
            worker.start()
        return (start, workers, offsets), {}

    def release_and_join(start: threading.Barrier, workers: list[threading.Thread],
                         offsets: list[list[int]]) -> list[list[int]]:
        start.wait()
        for worker in workers:
            worker.join()
        return offsets

    offsets = _run(benchmark, release_and_join, setup, DURABLE_ROUNDS)
    assert sorted(o for mine in offsets for o in mine) == list(range(N_DURABLE))
    assert all(mine == sorted(mine) for mine in offsets)
    # Every send returned after an fsync that covered it: the log says so too.
    assert engines[0].describe_topic(TOPIC).partitions[0].recovery_point == N_DURABLE


def test_durable_sqlite_full(benchmark: Any, rounds: Rounds) -> None:
    _mark(benchmark, GROUP_DURABLE, peer=False, items=N_DURABLE, tag="peer")

    def setup() -> Any:
        return (rounds.keep(_sqlite(rounds.fresh_dir(), "FULL")),), {}

    def insert_each(con: sqlite3.Connection) -> sqlite3.Connection:
        execute = con.execute
        for i in range(N_DURABLE):  # autocommit: one transaction per insert
            execute('INSERT INTO t ("offset", value) VALUES (?, ?)', (i, _value(i)))
        return con

    _check_sqlite(_run(benchmark, insert_each, setup, DURABLE_ROUNDS), N_DURABLE)


def test_durable_lmdb_sync(benchmark: Any, rounds: Rounds) -> None:
    _mark(benchmark, GROUP_DURABLE, peer=False, items=N_DURABLE, tag="peer")

    def setup() -> Any:
        return (rounds.keep(_lmdb_env(rounds.fresh_dir(), durable=True)),), {}

    def put_each(env: Any) -> Any:
        for i in range(N_DURABLE):
            with env.begin(write=True) as txn:
                txn.put(_key(i), _value(i), append=True)
        return env

    _check_lmdb(_run(benchmark, put_each, setup, DURABLE_ROUNDS), N_DURABLE)


# ---- 4b. transactions ---------------------------------------------------------------------

N_TXN = int(os.environ.get("LOGKERNEL_BENCH_TRANSACTIONS", "2000"))
TXN_RECORDS = 100
TXN_ROUNDS = 3
GROUP_TXN = f"transactions of {TXN_RECORDS} x 100 B, {N_TXN:,} committed one after another"
TXN_VALUES = [_value(i) for i in range(TXN_RECORDS)]


@pytest.mark.parametrize("how", ["send_batch", "send"])
def test_transactions_logkernel(benchmark: Any, rounds: Rounds, how: str) -> None:
    """One transactional producer (default config: no fsync, like the peers' settings
    here): begin, 100 records (one send_batch, or 100 sends), commit. Each commit stores the
    transaction's state twice and writes a COMMIT marker. Checked: a read_committed
    consumer reads every record, the markers between them."""
    _mark(benchmark, GROUP_TXN, peer=False, items=N_TXN, unit="txn",
          tag=None if how == "send_batch" else "ours (send)")
    engines: list[Any] = []

    def setup() -> Any:
        engines[:] = [_logkernel_topic(rounds)]
        producer = engines[0].producer(transactional_id="bench")
        producer.init_transactions()
        return (producer,), {}

    def transact(producer: Any) -> Any:
        for _ in range(N_TXN):
            producer.begin_transaction()
            if how == "send_batch":
                producer.send_batch(TOPIC, TXN_VALUES, partition=0)
            else:
                for value in TXN_VALUES:
                    producer.send(TOPIC, value, partition=0)
            producer.commit_transaction()
        return producer

    _run(benchmark, transact, setup, TXN_ROUNDS)
    engine = engines[0]
    total = N_TXN * TXN_RECORDS
    assert engine.end_offset(TOPIC, 0) == total + N_TXN  # one marker per transaction
    assert engine.partition_log(TOPIC, 0).last_stable_offset == total + N_TXN
    consumer = engine.consumer(auto_offset_reset="earliest", isolation_level="read_committed",
                               max_poll_records=100_000)
    consumer.assign([(TOPIC, 0)])
    read = 0
    while batch := consumer.poll_batch(max_records=100_000):
        read += len(batch)
    consumer.close()
    assert read == total


def test_transactions_sqlite(benchmark: Any, rounds: Rounds) -> None:
    """BEGIN, executemany of 100 rows, COMMIT (WAL, synchronous=NORMAL: no fsync per
    commit, as logkernel's default)."""
    _mark(benchmark, GROUP_TXN, peer=True, items=N_TXN, unit="txn")

    def setup() -> Any:
        return (rounds.keep(_sqlite(rounds.fresh_dir(), "NORMAL")),), {}

    def transact(con: sqlite3.Connection) -> sqlite3.Connection:
        execute, executemany = con.execute, con.executemany
        for t in range(N_TXN):
            execute("BEGIN")
            executemany('INSERT INTO t ("offset", value) VALUES (?, ?)',
                        zip(range(t * TXN_RECORDS, (t + 1) * TXN_RECORDS), TXN_VALUES, strict=True))
            execute("COMMIT")
        return con

    con = _run(benchmark, transact, setup, TXN_ROUNDS)
    total = N_TXN * TXN_RECORDS
    assert con.execute('SELECT count(*), max("offset") FROM t').fetchone() == (total, total - 1)
    last = con.execute('SELECT value FROM t WHERE "offset" = ?', (total - 1,)).fetchone()[0]
    assert last == TXN_VALUES[-1]


def test_transactions_lmdb(benchmark: Any, rounds: Rounds) -> None:
    """One write transaction of 100 appended puts per commit (sync=False)."""
    _mark(benchmark, GROUP_TXN, peer=False, items=N_TXN, unit="txn", tag="peer")

    def setup() -> Any:
        return (rounds.keep(_lmdb_env(rounds.fresh_dir())),), {}

    def transact(env: Any) -> Any:
        for t in range(N_TXN):
            with env.begin(write=True) as txn:
                put = txn.put
                for i, value in enumerate(TXN_VALUES):
                    put(_key(t * TXN_RECORDS + i), value, append=True)
        return env

    env = _run(benchmark, transact, setup, TXN_ROUNDS)
    with env.begin() as txn:
        assert txn.stat()["entries"] == N_TXN * TXN_RECORDS


# ---- 5. opening a data directory ---------------------------------------------------------

GROUP_OPEN = f"open a data dir, 1 partition of {SEGMENTS_FOR_OPEN:,} segments (vs clean)"
SEGMENT_RECORDS = 20  # one batch of 20 x 100 B (~2.2 KB) per 4 KiB segment
SEGMENT_VALUES = [_value(i) for i in range(SEGMENT_RECORDS)]


@pytest.fixture(scope="module")
def segmented_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    path = str(tmp_path_factory.mktemp("open-segments"))
    with logkernel.open(path) as engine:
        engine.create_topic(TOPIC, 1, {"segment.bytes": 4096})
        producer = engine.producer()
        for _ in range(SEGMENTS_FOR_OPEN):
            producer.send_batch(TOPIC, SEGMENT_VALUES)
        records = SEGMENTS_FOR_OPEN * SEGMENT_RECORDS
        assert engine.describe_topic(TOPIC).partitions[0].segments == SEGMENTS_FOR_OPEN
        _check_logkernel(engine, records, SEGMENT_VALUES)
    return path, records


@pytest.mark.parametrize("shutdown", ["clean", "unclean"])
def test_open_segments(benchmark: Any, segmented_dir: tuple[str, int], shutdown: str) -> None:
    """Unclean: the ".clean-shutdown" marker is deleted before each open, as a crash leaves
    it. items is the records the open makes readable; the time per open is in the table."""
    path, records = segmented_dir
    _mark(benchmark, GROUP_OPEN, peer=shutdown == "clean", items=records,
          tag="ref" if shutdown == "clean" else None)
    marker = os.path.join(path, ".clean-shutdown")
    opened: list[Any] = []

    def setup() -> Any:
        while opened:
            opened.pop().close()
        assert os.path.exists(marker)
        if shutdown == "unclean":
            os.unlink(marker)
        return (path,), {}

    def open_engine(path: str) -> Any:
        opened.append(logkernel.open(path))
        return opened[-1]

    engine = _run(benchmark, open_engine, setup, OPEN_ROUNDS)
    try:
        assert engine.end_offset(TOPIC, 0) == records
        assert engine.describe_topic(TOPIC).partitions[0].segments == SEGMENTS_FOR_OPEN
    finally:
        while opened:
            opened.pop().close()


# ---- 6. recovery of a large active segment ------------------------------------------------

GROUP_RECOVERY = "recovery: open after a crash, 1 GiB active segment with a torn tail"
GARBAGE = random.Random(7).randbytes(100)
RECOVERY_BATCH = [_value(i) for i in range(10_000)]


def _recovery_skip_reason(path: Path) -> str | None:
    setting = os.environ.get("LOGKERNEL_BENCH_BIG", "")
    if setting == "0":
        return "LOGKERNEL_BENCH_BIG=0"
    free = shutil.disk_usage(path).free
    if setting != "1" and free < RECOVERY_FREE_SPACE:
        return f"{free / 2**30:.1f} GiB free under {path}, the 1 GiB recovery needs 3 GiB"
    return None


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, int, int]]:
    """(data dir, active .log file, its valid bytes, records), closed cleanly; deleted
    after the module."""
    path = tmp_path_factory.mktemp("recovery")
    reason = _recovery_skip_reason(path)
    if reason:
        pytest.skip(reason)
    with logkernel.open(path) as engine:
        engine.create_topic(TOPIC, 1, {"segment.bytes": 2**31 - 1,
                                       "max.message.bytes": 4 << 20})
        producer = engine.producer()
        producer.send_batch(TOPIC, RECOVERY_BATCH)
        batch_bytes = engine.describe_topic(TOPIC).partitions[0].size_bytes
        for _ in range(-(-RECOVERY_BYTES // batch_bytes) - 1):
            producer.send_batch(TOPIC, RECOVERY_BATCH)
        description = engine.describe_topic(TOPIC).partitions[0]
        assert description.segments == 1 and description.size_bytes >= RECOVERY_BYTES
        records = engine.end_offset(TOPIC, 0)
        size = description.size_bytes
    log_file = os.path.join(path, f"{TOPIC}-0", "00000000000000000000.log")
    yield str(path), log_file, size, records
    shutil.rmtree(path)


@pytest.mark.parametrize("cache", ["in page cache", "evicted"])
def test_recovery_torn_tail(benchmark: Any, big_log: tuple[str, str, int, int], cache: str) -> None:
    """Before each open: delete the clean-shutdown marker and write 100 garbage bytes after
    the last whole batch (a torn append). "evicted": the file's pages are dropped from the
    page cache first (fsync, then posix_fadvise DONTNEED), so the scan reads the disk."""
    path, log_file, size, records = big_log
    _mark(benchmark, GROUP_RECOVERY, peer=False, items=size, unit="B")
    opened: list[Any] = []

    def setup() -> Any:
        while opened:
            opened.pop().close()
        os.unlink(os.path.join(path, ".clean-shutdown"))
        fd = os.open(log_file, os.O_WRONLY)
        try:
            os.pwrite(fd, GARBAGE, size)
            os.fsync(fd)
            if cache == "evicted":
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return (path,), {}

    def open_engine(path: str) -> Any:
        opened.append(logkernel.open(path))
        return opened[-1]

    engine = _run(benchmark, open_engine, setup, RECOVERY_ROUNDS)
    try:
        report = engine.recovery[f"{TOPIC}-0"]
        assert report.truncated, "the torn tail was not noticed"
        assert engine.end_offset(TOPIC, 0) == records
        assert engine.describe_topic(TOPIC).partitions[0].size_bytes == size
        _check_logkernel(engine, records, RECOVERY_BATCH)
    finally:
        while opened:
            opened.pop().close()
