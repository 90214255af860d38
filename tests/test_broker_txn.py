"""Transactions over the wire: real clients (confluent-kafka 2.16 / librdkafka, kafka-python
3.0) and hand-built requests against a ``logkernel serve`` process, checked against what
Apache Kafka documents and does.

- Transactions spanning two topics of three partitions each commit and abort; a
  read_committed consumer sees exactly the committed records, in order per partition, and a
  read_uncommitted one sees them all, the aborted ones included. Each transaction leaves one
  control record (its marker) in every partition it touched. Both producers, both consumers.
  Also: two producers' transactions interleaved batch by batch in one partition; aborted
  transactions spanning several segments, read from inside them, across a clean restart
  and a SIGKILL; offsets sent in a transaction (send_offsets_to_transaction) committed or
  dropped with it, pending in between (UNSTABLE_OFFSET_COMMIT for require_stable fetches).
- Consume-transform-produce is exactly once across crashes: a worker process
  (tests/txn_workers.py) reads an input topic in a consumer group and writes one output
  record per input record in transactions that also commit the consumer's offsets. It is
  SIGKILLed mid-transaction several times and restarted; in the end a read_committed read
  of the output holds each input record's result exactly once, in input order.
- Fencing: a second producer with the same transactional id fences the first (whose next
  transactional call fails with a fatal fenced error) and aborts its open transaction.
- A broker SIGKILLed mid-transaction: restarted, it times the transaction out and aborts
  it; the last stable offset moves past it; read_committed never sees its records.
- Bad input, as raw requests: EndTxn with no transaction, with a wrong epoch, for an unknown
  transactional id; AddPartitionsToTxn for an unknown topic; a timeout above
  transaction.max.timeout.ms. Each gets Kafka's error code, and the coordinator goes on.
- ListOffsets with an isolation level: read_committed's end is the first offset of the open
  transaction (the last stable offset), read_uncommitted's the high watermark.
- Admin: ListTransactions, DescribeTransactions and DescribeProducers through kafka-python's
  admin client. confluent-kafka 2.16's AdminClient offers none of the three.
- Expiration: an idle transactional id and its producer's state are forgotten after their
  expiration times, across a restart too; an open transaction keeps both.

Every wait is bounded; every child process is killed on the way out, whatever happens.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import confluent_kafka
import confluent_kafka.admin
import pytest
from kio.serial import entity_reader, entity_writer

from logkernel.protocol import schema
from tests import broker_support as support

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", support.KAFKA_PYTHON_IMPORT_WARNING, DeprecationWarning)
    import kafka
    import kafka.admin
    import kafka.errors

WORKER_SCRIPT = Path(__file__).with_name("txn_workers.py")

# ---- Kafka's error codes (the protocol's, not this package's: the tests check the broker
# against Kafka's numbers) -------------------------------------------------------------------
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
CONCURRENT_TRANSACTIONS = 51
OPERATION_NOT_ATTEMPTED = 55
UNSTABLE_OFFSET_COMMIT = 88
PRODUCER_FENCED = 90
# What a client retries: the coordinator is busy finishing the previous transaction
# (writing its markers) or loading.
RETRIABLE = {CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE}

# API keys and the versions these tests speak (each capped at the broker's highest).
LIST_OFFSETS, OFFSET_FETCH, API_VERSIONS, INIT_PRODUCER_ID = 2, 9, 18, 22
ADD_PARTITIONS_TO_TXN, END_TXN = 24, 26
# InitProducerId 4 and EndTxn 4 are the last versions before KIP-890's transaction protocol
# version 2 (EndTxn 5 bumps the epoch on every commit); AddPartitionsToTxn 3 is the last
# version clients send (4+ is the broker-to-broker form). ListOffsets 5: isolation level,
# leader epoch, and still the simple encoding. OffsetFetch 7: require_stable (KIP-447).
HIGHEST = {LIST_OFFSETS: 5, OFFSET_FETCH: 7, INIT_PRODUCER_ID: 4, ADD_PARTITIONS_TO_TXN: 3, END_TXN: 4}
READ_UNCOMMITTED, READ_COMMITTED = 0, 1
LATEST_TIMESTAMP = -1

# ---- settings and patience --------------------------------------------------------------------
# transaction.max.timeout.ms: Kafka's default is 15 minutes; a minute is plenty for these
# tests and leaves room above it for the refused-timeout case.
MAX_TRANSACTION_TIMEOUT_MS = 60_000
BROKER_SETTINGS = {
    "transaction.max.timeout.ms": MAX_TRANSACTION_TIMEOUT_MS,
    "transaction.state.log.num.partitions": 1,
    # Group tests: no initial rebalance delay (Kafka's 3 s on every join), and sessions
    # short enough that a killed worker's partitions move within seconds.
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
}
# A transactional call (init, commit, abort, send offsets) may wait for the coordinator to
# finish the previous transaction (CONCURRENT_TRANSACTIONS, retried by the client): well
# under a second on a local broker; 30 s is where a stuck coordinator fails the test.
TXN_CALL_TIMEOUT_S = 30.0
# Transactions the test abandons (a killed broker's) time out after this: short, so the test
# takes seconds; the broker checks for timed-out transactions every CLEANUP_INTERVAL_MS.
SHORT_TRANSACTION_TIMEOUT_MS = 3000
CLEANUP_INTERVAL_MS = 200
# Markers of a finished transaction reach the partitions within milliseconds; a timed-out
# one is aborted within its timeout plus a cleanup interval. Beyond these the broker is stuck.
SETTLE_TIMEOUT_S = 20.0
TIMED_OUT_ABORT_TIMEOUT_S = SHORT_TRANSACTION_TIMEOUT_MS / 1000 + 30.0
# The exactly-once worker: starting (interpreter, client import, init_transactions) and
# joining the group, where a killed predecessor holds the partitions until its 3 s session
# times out: 5 s here, more under load.
WORKER_JOIN_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 30.0
# 2,000 input records over 3 partitions, transactions of 100 records, killed three times.
EOS_RECORDS = 2000
EOS_PARTITIONS = 3
EOS_COMMIT_EVERY = 100
EOS_KILLS = 3
# The worker's poll batch (txn_workers.MAX_BATCH): a kill waits until the open transaction
# holds records and at least two more batches must come before its commit, so the kill
# lands inside it.
WORKER_BATCH = 20
# The whole input is transformed and committed within seconds of the last restart.
EOS_FINISH_TIMEOUT_S = 90.0


def broker_settings(extra: Mapping[str, Any] | None = None) -> list[str]:
    """``logkernel serve --set`` arguments: BROKER_SETTINGS and ``extra``."""
    return [f"{k}={v}" for k, v in {**BROKER_SETTINGS, **(extra or {})}.items()]


def bounded(call: Callable[[], Any], what: str, timeout_s: float = TXN_CALL_TIMEOUT_S) -> Any:
    """``call()`` in a thread, its result or exception; AssertionError if it has not returned
    within ``timeout_s`` (kafka-python's commit and abort wait without a limit)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"bounded {what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise AssertionError(f"{what} did not return within {timeout_s} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


# ---- raw requests -----------------------------------------------------------------------------

class Raw:
    """One TCP connection speaking Kafka's framing; bodies encoded and decoded with kio (Kafka's
    own message schemas). Versions are capped at what the broker advertises."""

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=support.CLIENT_TIMEOUT_S)
        self.correlation = 0
        answer = self.call(API_VERSIONS, 0)
        assert answer.error_code == NONE, answer
        self.versions = {int(a.api_key): (a.min_version, a.max_version) for a in answer.api_keys}

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self, api_key: int) -> int:
        """The version to use: HIGHEST[api_key] or the broker's highest if lower."""
        assert api_key in self.versions, f"the broker does not advertise API {api_key}"
        low, high = self.versions[api_key]
        version = min(high, HIGHEST[api_key])
        assert version >= low, (api_key, self.versions[api_key])
        return version

    def call(self, api_key: int, version: int, **fields: Any) -> Any:
        request_type = schema.request_type(api_key, version)
        body = io.BytesIO()
        entity_writer(request_type)(body, schema.build(request_type, fields))
        flexible = bool(request_type.__flexible__)
        self.correlation += 1
        header = struct.pack(">hhih", api_key, version, self.correlation, 3) + b"raw"
        if flexible:
            header += b"\x00"  # no tagged fields (request header v2)
        payload = header + body.getvalue()
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        frame = self._exactly(struct.unpack(">i", self._exactly(4))[0])
        assert struct.unpack_from(">i", frame)[0] == self.correlation
        # Response header v1 (tagged fields) for flexible versions, except ApiVersions'.
        offset = 5 if flexible and api_key != API_VERSIONS else 4
        entity, consumed = entity_reader(schema.response_type(api_key, version))(frame, offset)
        assert offset + consumed == len(frame), "trailing bytes after the response"
        return entity

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            out += chunk
        return out

    # -- the transactional requests -------------------------------------------------------------

    def init_producer_id(self, transactional_id: str | None, timeout_ms: int,
                         version: int | None = None) -> Any:
        return self.call(INIT_PRODUCER_ID, self.version(INIT_PRODUCER_ID) if version is None else version,
                         transactional_id=transactional_id, transaction_timeout=timeout_ms,
                         producer_id=-1, producer_epoch=-1)

    def end_txn(self, transactional_id: str, producer_id: int, epoch: int, committed: bool,
                version: int | None = None) -> int:
        answer = self.call(END_TXN, self.version(END_TXN) if version is None else version,
                           transactional_id=transactional_id, producer_id=producer_id,
                           producer_epoch=epoch, committed=committed)
        return int(answer.error_code)

    def add_partitions(self, transactional_id: str, producer_id: int, epoch: int,
                       partitions: Mapping[str, Sequence[int]], version: int | None = None
                       ) -> dict[tuple[str, int], int]:
        """AddPartitionsToTxn; the error code of each (topic, partition)."""
        answer = self.call(
            ADD_PARTITIONS_TO_TXN, self.version(ADD_PARTITIONS_TO_TXN) if version is None else version,
            v3_and_below_transactional_id=transactional_id, v3_and_below_producer_id=producer_id,
            v3_and_below_producer_epoch=epoch,
            v3_and_below_topics=[{"name": t, "partitions": list(ps)} for t, ps in partitions.items()])
        return {(topic.name, p.partition_index): int(p.partition_error_code)
                for topic in answer.results_by_topic_v3_and_below for p in topic.results_by_partition}

    def retrying(self, request: Callable[[], Any], code: Callable[[Any], int], what: str) -> Any:
        """``request()`` again while it answers a retriable error (as clients do); the answer."""
        def attempt() -> Any:
            answer = request()
            return None if code(answer) in RETRIABLE else (answer,)

        return support.wait_until(attempt, SETTLE_TIMEOUT_S, f"{what} without a retriable error",
                                  interval_s=0.05)[0]

    def list_offsets(self, partitions: Sequence[tuple[str, int]], isolation: int
                     ) -> dict[tuple[str, int], int]:
        """The latest offset of each partition under ``isolation``: the high watermark for
        read_uncommitted, the last stable offset for read_committed."""
        topics: dict[str, list[int]] = {}
        for topic, partition in partitions:
            topics.setdefault(topic, []).append(partition)
        answer = self.call(LIST_OFFSETS, self.version(LIST_OFFSETS), replica_id=-1,
                           isolation_level=isolation,
                           topics=[{"name": t, "partitions": [
                               {"partition_index": p, "current_leader_epoch": -1,
                                "timestamp": LATEST_TIMESTAMP} for p in ps]}
                               for t, ps in topics.items()])
        out = {}
        for topic in answer.topics:
            for p in topic.partitions:
                assert int(p.error_code) == NONE, (topic.name, p)
                out[(topic.name, p.partition_index)] = p.offset
        return out


def fetch_offsets(bootstrap: str, group: str, topic: str, partition: int, *,
                  require_stable: bool) -> tuple[int, int]:
    """OffsetFetch of one partition: (error code, committed offset)."""
    with Raw(bootstrap) as raw:
        answer = raw.call(OFFSET_FETCH, raw.version(OFFSET_FETCH), group_id=group,
                          topics=[{"name": topic, "partition_indexes": [partition]}],
                          require_stable=require_stable)
    assert int(answer.error_code) == NONE, answer
    [[found]] = [t.partitions for t in answer.topics]
    return int(found.error_code), found.committed_offset


def init_raw_producer(raw: Raw, transactional_id: str, timeout_ms: int = 10_000) -> tuple[int, int]:
    answer = raw.retrying(lambda: raw.init_producer_id(transactional_id, timeout_ms),
                          lambda a: int(a.error_code), f"InitProducerId({transactional_id!r})")
    assert int(answer.error_code) == NONE, answer
    assert answer.producer_id >= 0 and answer.producer_epoch >= 0, answer
    return answer.producer_id, answer.producer_epoch


def end_offsets(bootstrap: str, partitions: Sequence[tuple[str, int]]
                ) -> tuple[dict[Any, int], dict[Any, int]]:
    """(last stable offsets, high watermarks), by ListOffsets."""
    with Raw(bootstrap) as raw:
        return (raw.list_offsets(partitions, READ_COMMITTED), raw.list_offsets(partitions, READ_UNCOMMITTED))


def wait_settled(bootstrap: str, partitions: Sequence[tuple[str, int]],
                 timeout_s: float = SETTLE_TIMEOUT_S) -> dict[tuple[str, int], int]:
    """Waits until no transaction is open on these partitions (each one's last stable offset
    is its high watermark: every marker written); returns the high watermarks."""
    seen: list[Any] = []

    def settled() -> dict[tuple[str, int], int] | None:
        stable, high = end_offsets(bootstrap, partitions)
        seen[:] = [stable, high]
        return high if stable == high else None

    try:
        return support.wait_until(settled, timeout_s, "the open transactions to finish", interval_s=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: last stable offsets {seen[0]}, high watermarks {seen[1]}") from None


# ---- topics, producers, readers ------------------------------------------------------------------

def create_topics(bootstrap: str, topics: Mapping[str, int], config: Mapping[str, str] | None = None) -> None:
    admin = confluent_kafka.admin.AdminClient(support.Confluent.base_config(bootstrap))
    futures = admin.create_topics([confluent_kafka.admin.NewTopic(t, n, 1, config=dict(config or {}))
                                   for t, n in topics.items()], request_timeout=support.CLIENT_TIMEOUT_S)
    for future in futures.values():
        future.result(timeout=support.CLIENT_TIMEOUT_S)


def confluent_txn_producer(bootstrap: str, transactional_id: str,
                           transaction_timeout_ms: int = MAX_TRANSACTION_TIMEOUT_MS) -> Any:
    # librdkafka refuses a message.timeout.ms or socket.timeout.ms above transaction.timeout.ms.
    request_timeout_ms = min(support.CLIENT_TIMEOUT_MS, transaction_timeout_ms)
    return confluent_kafka.Producer({
        **support.Confluent.base_config(bootstrap), "transactional.id": transactional_id,
        "transaction.timeout.ms": transaction_timeout_ms, "linger.ms": 5,
        "message.timeout.ms": request_timeout_ms, "socket.timeout.ms": request_timeout_ms})


def kafka_python_txn_producer(bootstrap: str, transactional_id: str) -> Any:
    return kafka.KafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=transactional_id, acks="all",
        enable_idempotence=True, linger_ms=5, request_timeout_ms=support.CLIENT_TIMEOUT_MS,
        max_block_ms=int(TXN_CALL_TIMEOUT_S * 1000), transaction_timeout_ms=MAX_TRANSACTION_TIMEOUT_MS)


def confluent_flush(producer: Any) -> None:
    remaining = producer.flush(support.CLIENT_TIMEOUT_S)
    assert remaining == 0, f"confluent-kafka: {remaining} records undelivered"


def plain_produce(bootstrap: str, topic: str, values: Sequence[bytes], partition: int = 0) -> None:
    """Non-transactional (idempotent) records, acknowledged."""
    producer = support.Confluent().producer(bootstrap)
    failures: list[Any] = []
    for value in values:
        producer.produce(topic, value=value, partition=partition,
                         on_delivery=lambda e, _m: failures.append(e) if e is not None else None)
    confluent_flush(producer)
    assert not failures, failures


Read = dict[tuple[str, int], list[tuple[int, bytes | None]]]   # (topic, partition) -> [(offset, value)]
ISOLATIONS = ("read_committed", "read_uncommitted")


def confluent_read(bootstrap: str, ends: Mapping[tuple[str, int], int], isolation: str,
                   start: Mapping[tuple[str, int], int] | None = None) -> Read:
    """Everything an assign()ed confluent-kafka consumer with ``isolation`` gets from ``start``
    (default 0) until it reports the end of each partition (partition EOF) at ``ends``."""
    consumer = confluent_kafka.Consumer({
        **support.Confluent.base_config(bootstrap), "group.id": "txn-tests-reader",
        "isolation.level": isolation, "enable.partition.eof": True, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
    got: Read = {tp: [] for tp in ends}
    eof: dict[tuple[str, int], int] = {}
    try:
        consumer.assign([confluent_kafka.TopicPartition(t, p, (start or {}).get((t, p), 0)) for t, p in ends])
        deadline = time.monotonic() + support.CONSUME_TIMEOUT_S
        while any(eof.get(tp) != end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"confluent-kafka {isolation}: reached {eof}, want the ends "
                                     f"{dict(ends)}; read {({tp: len(v) for tp, v in got.items()})}")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                tp = (message.topic(), message.partition())
                error = message.error()
                if error is not None:
                    assert error.code() == confluent_kafka.KafkaError._PARTITION_EOF, error
                    eof[tp] = message.offset()
                    continue
                got[tp].append((message.offset(), message.value()))
    finally:
        consumer.close()
    return got


def kafka_python_read(bootstrap: str, ends: Mapping[tuple[str, int], int], isolation: str,
                      start: Mapping[tuple[str, int], int] | None = None) -> Read:
    """Everything an assign()ed kafka-python consumer with ``isolation`` gets from ``start``
    (default 0) until its position reaches ``ends`` (past markers and aborted records too)."""
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level=isolation, auto_offset_reset="earliest", fetch_max_wait_ms=100,
        request_timeout_ms=support.CLIENT_TIMEOUT_MS)
    got: Read = {tp: [] for tp in ends}
    try:
        tps = {kafka.TopicPartition(t, p): (t, p) for t, p in ends}
        consumer.assign(list(tps))
        for tp, key in tps.items():
            consumer.seek(tp, (start or {}).get(key, 0))
        deadline = time.monotonic() + support.CONSUME_TIMEOUT_S

        def positions() -> dict[tuple[str, int], int]:
            return {key: consumer.position(tp, timeout_ms=support.CLIENT_TIMEOUT_MS)
                    for tp, key in tps.items()}

        while positions() != dict(ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"kafka-python {isolation}: positions {positions()}, want the "
                                     f"ends {dict(ends)}; read {({tp: len(v) for tp, v in got.items()})}")
            for tp, records in consumer.poll(timeout_ms=200).items():
                got[(tp.topic, tp.partition)].extend((r.offset, r.value) for r in records)
    finally:
        consumer.close(autocommit=False)
    return got


READERS: dict[str, Callable[..., Read]] = {
    "confluent-kafka": confluent_read, "kafka-python": kafka_python_read}


def values(read: Read) -> dict[tuple[str, int], list[bytes | None]]:
    """Each partition's values in offset order; checks offsets only ever grow."""
    out = {}
    for tp, records in read.items():
        offsets = [o for o, _ in records]
        assert offsets == sorted(set(offsets)), f"{tp}: offsets out of order or repeated: {offsets}"
        out[tp] = [v for _, v in records]
    return out


def check_reads(bootstrap: str, ends: Mapping[tuple[str, int], int],
                committed: Mapping[tuple[str, int], Sequence[bytes]],
                everything: Mapping[tuple[str, int], Sequence[bytes]],
                readers: Sequence[str] = tuple(READERS),
                start: Mapping[tuple[str, int], int] | None = None) -> None:
    """Each reader, read_committed, gets exactly ``committed``; read_uncommitted, ``everything``
    (reading from ``start``, default 0)."""
    for reader in readers:
        for isolation, want in (("read_committed", committed), ("read_uncommitted", everything)):
            got = values(READERS[reader](bootstrap, ends, isolation, start))
            want = {tp: list(want.get(tp, [])) for tp in ends}
            assert got == want, f"{reader} {isolation} read:\n{got}\nwant:\n{want}"


# ---- 1. commit and abort across topics and partitions ----------------------------------------

TOPICS = ("orders", "payments")
PARTITIONS = 3
OUTCOMES = ("commit", "abort", "commit", "commit", "abort", "commit")
RECORDS_PER_PARTITION = 3


def transaction_values(n: int) -> dict[tuple[str, int], list[bytes]]:
    return {(topic, p): [b"txn%d %s/%d #%d" % (n, topic.encode(), p, i) for i in range(RECORDS_PER_PARTITION)]
            for topic in TOPICS for p in range(PARTITIONS)}


def run_confluent_transactions(bootstrap: str, transactional_id: str) -> None:
    producer = confluent_txn_producer(bootstrap, transactional_id)
    producer.init_transactions(TXN_CALL_TIMEOUT_S)
    for n, outcome in enumerate(OUTCOMES):
        producer.begin_transaction()
        for (topic, p), batch in transaction_values(n).items():
            for value in batch:
                producer.produce(topic, value=value, key=b"k", partition=p)
        if outcome == "commit":
            producer.commit_transaction(TXN_CALL_TIMEOUT_S)  # flushes first
        else:
            # Flushed first, so the aborted records are in the log for read_uncommitted.
            confluent_flush(producer)
            producer.abort_transaction(TXN_CALL_TIMEOUT_S)


def run_kafka_python_transactions(bootstrap: str, transactional_id: str) -> None:
    producer = kafka_python_txn_producer(bootstrap, transactional_id)
    try:
        producer.init_transactions()
        for n, outcome in enumerate(OUTCOMES):
            producer.begin_transaction()
            futures = [producer.send(topic, value=value, key=b"k", partition=p)
                       for (topic, p), batch in transaction_values(n).items() for value in batch]
            producer.flush(timeout=support.CLIENT_TIMEOUT_S)
            for future in futures:
                future.get(timeout=support.CLIENT_TIMEOUT_S)
            if outcome == "commit":
                bounded(producer.commit_transaction, "kafka-python commit_transaction")
            else:
                bounded(producer.abort_transaction, "kafka-python abort_transaction")
    finally:
        producer.close(timeout=support.CLIENT_TIMEOUT_S)


@pytest.mark.parametrize("library", ["confluent-kafka", "kafka-python"])
def test_committed_and_aborted_transactions_across_topics(tmp_path: Path, library: str) -> None:
    with support.ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings=broker_settings()) as serve:
        create_topics(serve.bootstrap, dict.fromkeys(TOPICS, PARTITIONS))
        run = run_confluent_transactions if library == "confluent-kafka" else run_kafka_python_transactions
        run(serve.bootstrap, f"{library}-txn")
        partitions = [(t, p) for t in TOPICS for p in range(PARTITIONS)]
        ends = wait_settled(serve.bootstrap, partitions)
        # Every transaction wrote its records and one marker to every partition.
        per_partition = len(OUTCOMES) * (RECORDS_PER_PARTITION + 1)
        assert ends == dict.fromkeys(partitions, per_partition), ends
        committed: dict[tuple[str, int], list[bytes]] = {tp: [] for tp in partitions}
        everything: dict[tuple[str, int], list[bytes]] = {tp: [] for tp in partitions}
        for n, outcome in enumerate(OUTCOMES):
            for tp, batch in transaction_values(n).items():
                everything[tp] += batch
                if outcome == "commit":
                    committed[tp] += batch
        check_reads(serve.bootstrap, ends, committed, everything)
        assert serve.terminate() == 0, serve.log_tail()


def test_interleaved_transactions_in_one_partition(tmp_path: Path) -> None:
    """Two producers' transactions interleave batch by batch in one partition; one aborts,
    the other commits, a plain record follows. read_committed drops exactly the aborted
    producer's batches (the aborted-transactions list names the producer and where its
    transaction began), whatever lies between them."""
    topic = "interleaved"
    tp = (topic, 0)
    with support.ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings=broker_settings()) as serve:
        bootstrap = serve.bootstrap
        create_topics(bootstrap, {topic: 1})
        aborting = confluent_txn_producer(bootstrap, "aborting")
        committing = confluent_txn_producer(bootstrap, "committing")
        for producer in (aborting, committing):
            producer.init_transactions(TXN_CALL_TIMEOUT_S)
            producer.begin_transaction()
        order = [(aborting, b"a1"), (committing, b"c1"), (aborting, b"a2"), (committing, b"c2"),
                 (aborting, b"a3")]
        for producer, value in order:
            producer.produce(topic, value=value, partition=0)
            confluent_flush(producer)  # one batch each, in this order in the log
        aborting.abort_transaction(TXN_CALL_TIMEOUT_S)
        committing.produce(topic, value=b"c3", partition=0)
        committing.commit_transaction(TXN_CALL_TIMEOUT_S)
        plain_produce(bootstrap, topic, [b"plain"])
        ends = wait_settled(bootstrap, [tp])
        assert ends == {tp: 9}, "6 transactional records, 2 markers, 1 plain record"
        check_reads(bootstrap, ends, {tp: [b"c1", b"c2", b"c3", b"plain"]},
                    {tp: [b"a1", b"c1", b"a2", b"c2", b"a3", b"c3", b"plain"]})
        assert serve.terminate() == 0, serve.log_tail()


@pytest.mark.parametrize("library", ["confluent-kafka", "kafka-python"])
def test_offsets_sent_in_a_transaction_commit_and_abort_with_it(tmp_path: Path, library: str) -> None:
    """send_offsets_to_transaction (AddOffsetsToTxn, TxnOffsetCommit with the consumer's group
    metadata): offsets of an aborted transaction are dropped; those of an open one are pending
    (OffsetFetch shows the last committed offset, or UNSTABLE_OFFSET_COMMIT when the fetch
    requires stable offsets); those of a committed one are the group's."""
    source, sink, group = "requests", "responses", "responders"
    with support.ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings=broker_settings()) as serve:
        bootstrap = serve.bootstrap
        create_topics(bootstrap, {source: 1, sink: 1})
        plain_produce(bootstrap, source, [b"request %d" % i for i in range(10)])

        def committed(require_stable: bool = False) -> tuple[int, int]:
            return fetch_offsets(bootstrap, group, source, 0, require_stable=require_stable)

        if library == "confluent-kafka":
            consumer = confluent_kafka.Consumer({
                **support.Confluent.base_config(bootstrap), "group.id": group,
                "enable.auto.commit": False, "auto.offset.reset": "earliest",
                "isolation.level": "read_committed"})
            consumer.subscribe([source])
            support.wait_until(lambda: consumer.consume(num_messages=10, timeout=0.2)
                               and consumer.assignment(),
                               support.CONSUME_TIMEOUT_S, "the consumer joining and reading")
            producer = confluent_txn_producer(bootstrap, "responder")
            producer.init_transactions(TXN_CALL_TIMEOUT_S)

            def transaction(value: bytes, offset: int, commit: bool, *, check_pending: bool = False) -> None:
                producer.begin_transaction()
                producer.produce(sink, value=value, partition=0)
                producer.send_offsets_to_transaction([confluent_kafka.TopicPartition(source, 0, offset)],
                                                     consumer.consumer_group_metadata(), TXN_CALL_TIMEOUT_S)
                confluent_flush(producer)
                if check_pending:
                    pending_checks()
                if commit:
                    producer.commit_transaction(TXN_CALL_TIMEOUT_S)
                else:
                    producer.abort_transaction(TXN_CALL_TIMEOUT_S)
        else:
            consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                           enable_auto_commit=False, auto_offset_reset="earliest",
                                           isolation_level="read_committed",
                                           request_timeout_ms=support.CLIENT_TIMEOUT_MS)
            consumer.subscribe([source])
            support.wait_until(lambda: consumer.poll(timeout_ms=200) and consumer.assignment(),
                               support.CONSUME_TIMEOUT_S, "the consumer joining and reading")
            producer = kafka_python_txn_producer(bootstrap, "responder")
            producer.init_transactions()

            def transaction(value: bytes, offset: int, commit: bool, *, check_pending: bool = False) -> None:
                producer.begin_transaction()
                producer.send(sink, value=value, partition=0).get(timeout=support.CLIENT_TIMEOUT_S)
                bounded(lambda: producer.send_offsets_to_transaction(
                    {kafka.TopicPartition(source, 0): kafka.OffsetAndMetadata(offset, "", -1)},
                    consumer.group_metadata()), "kafka-python send_offsets_to_transaction")
                if check_pending:
                    pending_checks()
                end = producer.commit_transaction if commit else producer.abort_transaction
                bounded(end, "kafka-python end of transaction")

        def pending_checks() -> None:
            assert committed() == (NONE, 3), "an open transaction's offsets are not yet the group's"
            assert committed(require_stable=True)[0] == UNSTABLE_OFFSET_COMMIT

        try:
            assert committed() == (NONE, -1)
            transaction(b"first", 3, commit=True)
            assert committed() == (NONE, 3)
            transaction(b"aborted", 5, commit=False)
            support.wait_until(lambda: committed(require_stable=True)[0] == NONE, SETTLE_TIMEOUT_S,
                               "the aborted transaction's offsets resolving")
            assert committed() == (NONE, 3), "offsets sent in an aborted transaction were committed"
            transaction(b"second", 7, commit=True, check_pending=True)
            support.wait_until(lambda: committed(require_stable=True) == (NONE, 7), SETTLE_TIMEOUT_S,
                               "the committed transaction's offsets becoming the group's")
        finally:
            consumer.close()
            if library == "kafka-python":
                producer.close(timeout=support.CLIENT_TIMEOUT_S)
        ends = wait_settled(bootstrap, [(sink, 0)])
        check_reads(bootstrap, ends, {(sink, 0): [b"first", b"second"]},
                    {(sink, 0): [b"first", b"aborted", b"second"]}, readers=[library])
        assert serve.terminate() == 0, serve.log_tail()


# Small segments: a transaction of 200-byte records spans several of them.
TINY_SEGMENT_BYTES = 1024


def test_aborted_transactions_across_segments_survive_restarts(tmp_path: Path) -> None:
    """Interleaved transactions whose batches span several segments (segment.bytes 1 KiB), one
    aborted: read_committed drops all of the aborted one's records in every segment, before
    and after a clean restart and after a SIGKILL (the aborted transactions are found again
    from the files: Kafka's .txnindex and producer snapshots)."""
    topic = "rolled"
    tp = (topic, 0)
    aborted = [b"aborted %02d " % i + b"a" * 190 for i in range(12)]
    kept = [b"kept %02d " % i + b"k" * 190 for i in range(8)]
    later = [b"later %02d " % i + b"l" * 190 for i in range(4)]
    data, serve_log = tmp_path / "data", tmp_path / "serve.log"
    with contextlib.ExitStack() as stack:
        serve = stack.enter_context(support.ServeProcess(data, serve_log, settings=broker_settings()))
        bootstrap = serve.bootstrap
        create_topics(bootstrap, {topic: 1}, {"segment.bytes": str(TINY_SEGMENT_BYTES)})
        aborting = confluent_txn_producer(bootstrap, "rolling-aborter")
        committing = confluent_txn_producer(bootstrap, "rolling-committer")
        for producer in (aborting, committing):
            producer.init_transactions(TXN_CALL_TIMEOUT_S)
            producer.begin_transaction()
        log: list[tuple[int, bytes, bool]] = []  # (offset, value, committed), markers left out
        for i in range(len(aborted)):
            pairs = [(aborting, aborted[i], False)] + ([(committing, kept[i], True)] if i < len(kept) else [])
            for producer, value, commits in pairs:
                producer.produce(topic, value=value, partition=0)
                confluent_flush(producer)
                log.append((len(log), value, commits))
        aborting.abort_transaction(TXN_CALL_TIMEOUT_S)
        committing.commit_transaction(TXN_CALL_TIMEOUT_S)
        wait_settled(bootstrap, [tp])  # both markers written before the next transaction
        aborting.begin_transaction()
        for value in later:
            aborting.produce(topic, value=value, partition=0)
        aborting.commit_transaction(TXN_CALL_TIMEOUT_S)
        log += [(len(log) + 2 + i, value, True) for i, value in enumerate(later)]  # after 2 markers
        ends = wait_settled(bootstrap, [tp])
        assert ends == {tp: len(log) + 3}, "the records and three markers"
        segments = list((data / f"{topic}-0").glob("*.log"))
        assert len(segments) >= 4, f"the transactions should span several segments: {segments}"

        def check(start: int) -> None:
            """Reads from offset ``start``: a consumer resuming inside the aborted transaction
            still needs to know it was aborted (Fetch lists it as it began before ``start``)."""
            committed = [v for o, v, commits in log if o >= start and commits]
            everything = [v for o, v, _ in log if o >= start]
            check_reads(bootstrap, ends, {tp: committed}, {tp: everything}, start={tp: start})

        check(0)
        check(9)

        assert serve.terminate() == 0, serve.log_tail()
        serve = stack.enter_context(support.ServeProcess(data, serve_log, listen=bootstrap,
                                                         settings=broker_settings()))
        assert end_offsets(bootstrap, [tp]) == (ends, ends)
        check(0)
        check(13)

        serve.kill()
        serve = stack.enter_context(support.ServeProcess(data, serve_log, listen=bootstrap,
                                                         settings=broker_settings()))
        assert end_offsets(bootstrap, [tp]) == (ends, ends)
        check(0)
        check(5)
        assert serve.terminate() == 0, serve.log_tail()


# ---- 2. consume-transform-produce, exactly once across kills ------------------------------------

def read_events(path: Path) -> list[dict[str, Any]]:
    """The events a worker logged (a line being written as the file is read is left out)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return events


class TxnWorker:
    """One tests/txn_workers.py process, its log and its stderr."""

    def __init__(self, directory: Path, name: str, bootstrap: str, *, group: str, input_topic: str,
                 output_topic: str, transactional_id: str) -> None:
        self.name = name
        self.log_path = directory / f"{name}.jsonl"
        self.stop_path = directory / f"{name}.stop"
        self.stderr_path = directory / f"{name}.stderr"
        command = [sys.executable, str(WORKER_SCRIPT), "--bootstrap", bootstrap, "--group", group,
                   "--input", input_topic, "--output", output_topic,
                   "--transactional-id", transactional_id, "--log", str(self.log_path),
                   "--stop", str(self.stop_path), "--commit-every", str(EOS_COMMIT_EVERY)]
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=stderr)

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.log_path)

    def in_open_transaction(self, at_least: int) -> bool:
        """Whether the worker has committed once and now holds an open transaction with at
        least ``at_least`` records in the output log, and two more batches to go before its
        commit."""
        events = [e for e in self.events() if e["event"] in ("sent", "committed", "revoked")]
        return (any(e["event"] == "committed" for e in events) and events[-1]["event"] == "sent"
                and at_least <= events[-1]["pending"] <= EOS_COMMIT_EVERY - 2 * WORKER_BATCH)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode})\n{self.report()}")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)

    def stop(self) -> None:
        self.stop_path.touch()
        try:
            code = self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            raise AssertionError(f"{self.name} did not stop within {WORKER_STOP_TIMEOUT_S} s\n"
                                 f"{self.report()}") from None
        assert code == 0, f"{self.name} exited with {code}\n{self.report()}"

    def report(self) -> str:
        events = [e for e in self.events() if e["event"] != "sent"]
        try:
            stderr = self.stderr_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            stderr = ""
        return (f"--- {self.name} (pid {self.process.pid}, exit {self.process.poll()}) events:\n"
                + "\n".join(json.dumps(e) for e in events[-25:]) + f"\n--- stderr:\n{stderr}")


def group_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of ``topic`` (OffsetFetch through the admin client)."""
    admin = confluent_kafka.admin.AdminClient(support.Confluent.base_config(bootstrap))
    request = confluent_kafka.ConsumerGroupTopicPartitions(group)
    [future] = admin.list_consumer_group_offsets([request], request_timeout=support.CLIENT_TIMEOUT_S).values()
    answer = future.result(timeout=support.CLIENT_TIMEOUT_S)
    return {tp.partition: tp.offset for tp in answer.topic_partitions if tp.topic == topic and tp.offset >= 0}


def fill_input(bootstrap: str, topic: str, count: int) -> dict[tuple[int, int], bytes]:
    """``count`` keyed records, acknowledged; (partition, offset) -> value."""
    producer = support.Confluent().producer(bootstrap)
    acked: dict[tuple[int, int], bytes] = {}
    failures: list[Any] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(error)
        else:
            acked[(message.partition(), message.offset())] = message.value()

    for i in range(count):
        producer.produce(topic, key=b"key-%d" % i, value=b"value-%d" % i, on_delivery=delivered)
        producer.poll(0)
    confluent_flush(producer)
    assert not failures, failures[:3]
    assert len(acked) == count
    return acked


def test_consume_transform_produce_is_exactly_once_across_kills(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    group, input_topic, output_topic = "transformers", "raw-events", "enriched-events"
    workers: list[TxnWorker] = []

    def start(n: int) -> TxnWorker:
        worker = TxnWorker(tmp_path, f"worker-{n}", serve.bootstrap, group=group, input_topic=input_topic,
                           output_topic=output_topic, transactional_id="transformer-0")
        workers.append(worker)
        return worker

    def report() -> str:
        return f"(seed {seed})\n" + "\n".join(w.report() for w in workers)

    def wait_for(worker: TxnWorker, condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
        def check() -> Any:
            worker.check_alive()
            return condition()

        try:
            return support.wait_until(check, timeout_s, what, interval_s=0.01)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{report()}") from None

    with contextlib.ExitStack() as stack:
        serve = stack.enter_context(support.ServeProcess(tmp_path / "data", tmp_path / "serve.log",
                                                         settings=broker_settings()))
        stack.callback(lambda: [w.process.kill() for w in workers if w.process.poll() is None])
        create_topics(serve.bootstrap, {input_topic: EOS_PARTITIONS, output_topic: EOS_PARTITIONS})
        produced = fill_input(serve.bootstrap, input_topic, EOS_RECORDS)
        input_ends = {p: 0 for p in range(EOS_PARTITIONS)}
        for p, o in produced:
            input_ends[p] = max(input_ends[p], o + 1)

        killed_mid_transaction = 0
        for n in range(EOS_KILLS):
            worker = start(n)
            # Killed at a random moment inside a transaction holding records in the output log:
            # after a random number of its batches, a random moment into the next one.
            at_least = rng.randrange(WORKER_BATCH, EOS_COMMIT_EVERY - 2 * WORKER_BATCH + 1, WORKER_BATCH)
            wait_for(worker, functools.partial(worker.in_open_transaction, at_least), WORKER_JOIN_TIMEOUT_S,
                     f"{worker.name} committing once and then holding an open transaction of "
                     f"{at_least} or more records")
            time.sleep(rng.uniform(0, 0.02))
            worker.kill()
            killed_mid_transaction += worker.events()[-1]["event"] == "sent"
        last = start(EOS_KILLS)
        wait_for(last, lambda: group_offsets(serve.bootstrap, group, input_topic) == input_ends,
                 EOS_FINISH_TIMEOUT_S, f"the group's committed offsets reaching the input's end {input_ends}")
        last.stop()
        assert not [e for e in last.events() if e["event"] in ("crashed", "error")], report()

        output = [(output_topic, p) for p in range(EOS_PARTITIONS)]
        ends = wait_settled(serve.bootstrap, output)
        committed = values(confluent_read(serve.bootstrap, ends, "read_committed"))
        everything = values(confluent_read(serve.bootstrap, ends, "read_uncommitted"))
        assert serve.terminate() == 0, serve.log_tail()

    # Each input record's result exactly once, in input order, in the input's partition.
    for p in range(EOS_PARTITIONS):
        results = [v.split(b":", 2) for v in committed[(output_topic, p)] if v is not None]
        assert len(results) == len(committed[(output_topic, p)])
        sources = [(int(rp), int(ro)) for rp, ro, _ in results]
        counts = Counter(sources)
        twice = sorted(s for s, c in counts.items() if c > 1)
        assert not twice, f"partition {p}: {len(twice)} input records have more than one result, " \
                          f"e.g. {twice[:5]} {report()}"
        assert sources == [(p, o) for o in range(input_ends[p])], (
            f"partition {p}: results for {len(sources)} of {input_ends[p]} input records, or out of "
            f"order: {sources[:10]}... {report()}")
        assert [v for _, _, v in results] == [produced[s] for s in sources]
    # The kills left aborted transactions behind: read_uncommitted has results read_committed hides.
    assert killed_mid_transaction >= 1, report()
    assert sum(map(len, everything.values())) > EOS_RECORDS, report()


# ---- 3. fencing -----------------------------------------------------------------------------

CONFLUENT_FENCED = {confluent_kafka.KafkaError._FENCED, confluent_kafka.KafkaError.PRODUCER_FENCED}


@pytest.mark.parametrize("library", ["confluent-kafka", "kafka-python"])
def test_a_second_producer_fences_the_first_and_aborts_its_transaction(tmp_path: Path, library: str) -> None:
    topic, transactional_id = "ledger", "ledger-writer"
    tps = [(topic, 0), (topic, 1)]
    zombie_values = [b"zombie %d" % i for i in range(4)]
    live_values = [b"live %d" % i for i in range(4)]
    with support.ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings=broker_settings()) as serve:
        create_topics(serve.bootstrap, {topic: 2})
        if library == "confluent-kafka":
            first = confluent_txn_producer(serve.bootstrap, transactional_id)
            first.init_transactions(TXN_CALL_TIMEOUT_S)
            first.begin_transaction()
            for i, value in enumerate(zombie_values):
                first.produce(topic, value=value, partition=i % 2)
            confluent_flush(first)
        else:
            first = kafka_python_txn_producer(serve.bootstrap, transactional_id)
            first.init_transactions()
            first.begin_transaction()
            futures = [first.send(topic, value=v, partition=i % 2) for i, v in enumerate(zombie_values)]
            first.flush(timeout=support.CLIENT_TIMEOUT_S)
            for future in futures:
                future.get(timeout=support.CLIENT_TIMEOUT_S)
        # The first producer's transaction is open: read_committed stops before it.
        stable, high = end_offsets(serve.bootstrap, tps)
        assert stable == {tp: 0 for tp in tps} and high == {tp: 2 for tp in tps}, (stable, high)

        second = confluent_txn_producer(serve.bootstrap, transactional_id)
        second.init_transactions(TXN_CALL_TIMEOUT_S)
        # The fence aborted the first producer's transaction: one marker per partition.
        assert wait_settled(serve.bootstrap, tps) == {tp: 3 for tp in tps}

        if library == "confluent-kafka":
            with pytest.raises(confluent_kafka.KafkaException) as caught:
                first.commit_transaction(TXN_CALL_TIMEOUT_S)
            error = caught.value.args[0]
            assert error.code() in CONFLUENT_FENCED and error.fatal(), (error, error.fatal())
        else:
            try:
                fenced = (kafka.errors.ProducerFencedError, kafka.errors.InvalidProducerEpochError)
                with pytest.raises(fenced):
                    bounded(first.commit_transaction, "kafka-python commit_transaction of a fenced producer")
            finally:
                first.close(timeout=support.CLIENT_TIMEOUT_S)

        second.begin_transaction()
        for i, value in enumerate(live_values):
            second.produce(topic, value=value, partition=i % 2)
        second.commit_transaction(TXN_CALL_TIMEOUT_S)
        ends = wait_settled(serve.bootstrap, tps)
        committed = {(topic, p): live_values[p::2] for p in (0, 1)}
        everything = {(topic, p): zombie_values[p::2] + live_values[p::2] for p in (0, 1)}
        check_reads(serve.bootstrap, ends, committed, everything, readers=[library])
        assert serve.terminate() == 0, serve.log_tail()


# ---- 4. a broker killed mid-transaction ---------------------------------------------------------

def test_a_transaction_open_when_the_broker_is_killed_times_out_and_aborts(tmp_path: Path) -> None:
    topic = "shipments"
    tps = [(topic, 0), (topic, 1)]
    settings = broker_settings({"transaction.abort.timed.out.transaction.cleanup.interval.ms":
                                CLEANUP_INTERVAL_MS})
    before = [b"before %d" % i for i in range(4)]
    doomed = [b"doomed %d" % i for i in range(4)]
    after = [b"after %d" % i for i in range(4)]
    data, serve_log = tmp_path / "data", tmp_path / "serve.log"
    with contextlib.ExitStack() as stack:
        serve = stack.enter_context(support.ServeProcess(data, serve_log, settings=settings))
        bootstrap = serve.bootstrap
        create_topics(bootstrap, {topic: 2})
        producer = confluent_txn_producer(bootstrap, "shipper", SHORT_TRANSACTION_TIMEOUT_MS)
        producer.init_transactions(TXN_CALL_TIMEOUT_S)
        producer.begin_transaction()
        for i, value in enumerate(before):
            producer.produce(topic, value=value, partition=i % 2)
        producer.commit_transaction(TXN_CALL_TIMEOUT_S)
        settled = wait_settled(bootstrap, tps)
        producer.begin_transaction()
        for i, value in enumerate(doomed):
            producer.produce(topic, value=value, partition=i % 2)
        confluent_flush(producer)
        stable, high = end_offsets(bootstrap, tps)
        assert stable == settled and high == {tp: o + 2 for tp, o in settled.items()}, (settled, stable, high)
        serve.kill()

        serve = stack.enter_context(support.ServeProcess(data, serve_log, listen=bootstrap,
                                                         settings=settings))
        # The restarted broker knows the transaction is open, and its timeout aborts it.
        ends = wait_settled(bootstrap, tps, TIMED_OUT_ABORT_TIMEOUT_S)
        assert ends == {tp: o + 3 for tp, o in settled.items()}, (settled, ends)
        committed = {(topic, p): before[p::2] for p in (0, 1)}
        everything = {(topic, p): before[p::2] + doomed[p::2] for p in (0, 1)}
        check_reads(bootstrap, ends, committed, everything, readers=["confluent-kafka"])
        # The producer's transaction is gone: committing it now fails.
        with pytest.raises(confluent_kafka.KafkaException):
            producer.commit_transaction(TXN_CALL_TIMEOUT_S)

        # The transactional id goes on with a new producer; the aborted records stay hidden.
        successor = confluent_txn_producer(bootstrap, "shipper")
        successor.init_transactions(TXN_CALL_TIMEOUT_S)
        successor.begin_transaction()
        for i, value in enumerate(after):
            successor.produce(topic, value=value, partition=i % 2)
        successor.commit_transaction(TXN_CALL_TIMEOUT_S)
        ends = wait_settled(bootstrap, tps)
        committed = {(topic, p): before[p::2] + after[p::2] for p in (0, 1)}
        everything = {(topic, p): before[p::2] + doomed[p::2] + after[p::2] for p in (0, 1)}
        check_reads(bootstrap, ends, committed, everything)
        assert serve.terminate() == 0, serve.log_tail()


# ---- 5. bad input ---------------------------------------------------------------------------------

def commit_empty_transaction(raw: Raw, transactional_id: str, topic: str) -> tuple[int, int]:
    """The coordinator still works: a fresh producer id and epoch, a partition added, the
    transaction committed. Returns (producer id, epoch)."""
    producer_id, epoch = init_raw_producer(raw, transactional_id)
    added = raw.retrying(lambda: raw.add_partitions(transactional_id, producer_id, epoch, {topic: [0]}),
                         lambda a: max(a.values()), "AddPartitionsToTxn")
    assert added == {(topic, 0): NONE}, added
    code = raw.retrying(lambda: raw.end_txn(transactional_id, producer_id, epoch, committed=True),
                        lambda c: c, "EndTxn")
    assert code == NONE, code
    return producer_id, epoch


def test_bad_transactional_requests_get_kafka_error_codes(tmp_path: Path) -> None:
    topic, transactional_id = "audit", "auditor"
    settings = broker_settings()
    with support.ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings=settings) as serve, \
            Raw(serve.bootstrap) as raw:
        create_topics(serve.bootstrap, {topic: 2})

        # A timeout above transaction.max.timeout.ms, raw and as librdkafka reports it (fatal).
        answer = raw.init_producer_id(transactional_id, MAX_TRANSACTION_TIMEOUT_MS + 1)
        assert int(answer.error_code) == INVALID_TRANSACTION_TIMEOUT, answer
        too_long = confluent_txn_producer(serve.bootstrap, transactional_id, MAX_TRANSACTION_TIMEOUT_MS + 1)
        with pytest.raises(confluent_kafka.KafkaException) as caught:
            too_long.init_transactions(TXN_CALL_TIMEOUT_S)
        assert caught.value.args[0].code() == confluent_kafka.KafkaError.INVALID_TRANSACTION_TIMEOUT
        commit_empty_transaction(raw, transactional_id, topic)

        # EndTxn with no transaction: right after InitProducerId (state Empty), and an abort
        # of a transaction that has committed (CompleteCommit).
        producer_id, epoch = init_raw_producer(raw, transactional_id)
        assert raw.end_txn(transactional_id, producer_id, epoch, committed=True) == INVALID_TXN_STATE
        assert raw.end_txn(transactional_id, producer_id, epoch, committed=False) == INVALID_TXN_STATE
        producer_id, epoch = commit_empty_transaction(raw, transactional_id, topic)
        code = raw.retrying(lambda: raw.end_txn(transactional_id, producer_id, epoch, committed=False),
                            lambda c: c, "EndTxn(abort) after a commit")
        assert code == INVALID_TXN_STATE, code
        commit_empty_transaction(raw, transactional_id, topic)

        # A wrong producer epoch: PRODUCER_FENCED from EndTxn 2 and AddPartitionsToTxn 2 on,
        # INVALID_PRODUCER_EPOCH in the versions before (KIP-588).
        producer_id, epoch = init_raw_producer(raw, transactional_id)
        for api in (END_TXN, ADD_PARTITIONS_TO_TXN):
            low, high = raw.versions[api]
            for version in sorted({v for v in (1, raw.version(api)) if low <= v <= high}):
                want = PRODUCER_FENCED if version >= 2 else INVALID_PRODUCER_EPOCH
                if api == END_TXN:
                    got: Any = raw.end_txn(transactional_id, producer_id, epoch + 1, True, version=version)
                else:
                    got = raw.add_partitions(transactional_id, producer_id, epoch + 1, {topic: [0]},
                                             version=version)
                    want = {(topic, 0): want}
                assert got == want, (api, version, got)
        commit_empty_transaction(raw, transactional_id, topic)

        # An unknown transactional id, and a known one with another producer id.
        producer_id, epoch = init_raw_producer(raw, transactional_id)
        assert raw.end_txn("never-initialised", producer_id, epoch, True) == INVALID_PRODUCER_ID_MAPPING
        assert raw.add_partitions("never-initialised", producer_id, epoch, {topic: [0]}) == {
            (topic, 0): INVALID_PRODUCER_ID_MAPPING}
        assert raw.end_txn(transactional_id, producer_id + 1, epoch, True) == INVALID_PRODUCER_ID_MAPPING
        commit_empty_transaction(raw, transactional_id, topic)

        # AddPartitionsToTxn naming an unknown topic, or an unknown partition: those get
        # UNKNOWN_TOPIC_OR_PARTITION, the good ones OPERATION_NOT_ATTEMPTED, and nothing is added.
        producer_id, epoch = init_raw_producer(raw, transactional_id)
        answer_codes = raw.add_partitions(transactional_id, producer_id, epoch,
                                          {topic: [0, 1, 7], "no-such-topic": [0]})
        assert answer_codes == {(topic, 0): OPERATION_NOT_ATTEMPTED, (topic, 1): OPERATION_NOT_ATTEMPTED,
                                (topic, 7): UNKNOWN_TOPIC_OR_PARTITION,
                                ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION}, answer_codes
        # Nothing was added, so there is still no transaction to end.
        assert raw.end_txn(transactional_id, producer_id, epoch, True) == INVALID_TXN_STATE
        commit_empty_transaction(raw, transactional_id, topic)

        # And a real client's transaction, with records, commits through the same coordinator.
        producer = confluent_txn_producer(serve.bootstrap, transactional_id)
        producer.init_transactions(TXN_CALL_TIMEOUT_S)
        producer.begin_transaction()
        producer.produce(topic, value=b"after the bad requests", partition=0)
        producer.commit_transaction(TXN_CALL_TIMEOUT_S)
        tps = [(topic, 0), (topic, 1)]
        ends = wait_settled(serve.bootstrap, tps)
        check_reads(serve.bootstrap, ends, {(topic, 0): [b"after the bad requests"]},
                    {(topic, 0): [b"after the bad requests"]}, readers=["confluent-kafka"])
        assert serve.terminate() == 0, serve.log_tail()


# ---- 6. ListOffsets with an isolation level ---------------------------------------------------

def test_read_committed_end_offset_is_the_first_offset_of_the_open_transaction(tmp_path: Path) -> None:
    topic = "ticks"
    tp = (topic, 0)
    with support.ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings=broker_settings()) as serve:
        bootstrap = serve.bootstrap
        create_topics(bootstrap, {topic: 1})
        plain_produce(bootstrap, topic, [b"plain 0", b"plain 1", b"plain 2"])
        first = confluent_txn_producer(bootstrap, "ticker-1")
        first.init_transactions(TXN_CALL_TIMEOUT_S)
        first.begin_transaction()
        first.produce(topic, value=b"committed 0", partition=0)
        first.produce(topic, value=b"committed 1", partition=0)
        first.commit_transaction(TXN_CALL_TIMEOUT_S)
        open_start = wait_settled(bootstrap, [tp])[tp]
        assert open_start == 6, "3 plain records, 2 in a transaction, its marker"

        second = confluent_txn_producer(bootstrap, "ticker-2")
        second.init_transactions(TXN_CALL_TIMEOUT_S)
        second.begin_transaction()
        for i in range(3):
            second.produce(topic, value=b"open %d" % i, partition=0)
        confluent_flush(second)
        plain_produce(bootstrap, topic, [b"plain after"])
        high = open_start + 4

        # ListOffsets as such, and as each client asks it.
        assert end_offsets(bootstrap, [tp]) == ({tp: open_start}, {tp: high})
        for isolation, want in (("read_committed", open_start), ("read_uncommitted", high)):
            consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                           isolation_level=isolation,
                                           request_timeout_ms=support.CLIENT_TIMEOUT_MS)
            try:
                kp_tp = kafka.TopicPartition(topic, 0)
                assert consumer.end_offsets([kp_tp], timeout_ms=support.CLIENT_TIMEOUT_MS) == {kp_tp: want}
            finally:
                consumer.close(autocommit=False)
            consumer = confluent_kafka.Consumer({
                **support.Confluent.base_config(bootstrap), "group.id": "txn-tests-offsets",
                "isolation.level": isolation})
            try:
                watermarks = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0),
                                                            timeout=support.CLIENT_TIMEOUT_S)
                assert watermarks == (0, want), (isolation, watermarks)
            finally:
                consumer.close()
            admin = confluent_kafka.admin.AdminClient(support.Confluent.base_config(bootstrap))
            level = {"read_committed": confluent_kafka.IsolationLevel.READ_COMMITTED,
                     "read_uncommitted": confluent_kafka.IsolationLevel.READ_UNCOMMITTED}[isolation]
            [future] = admin.list_offsets({confluent_kafka.TopicPartition(topic, 0):
                                           confluent_kafka.admin.OffsetSpec.latest()},
                                          isolation_level=level,
                                          request_timeout=support.CLIENT_TIMEOUT_S).values()
            assert future.result(timeout=support.CLIENT_TIMEOUT_S).offset == want, isolation

        # A read_committed consumer reaches the end of the partition at the open transaction;
        # the plain record behind it waits for it.
        committed = [b"plain 0", b"plain 1", b"plain 2", b"committed 0", b"committed 1"]
        for reader in READERS:
            assert values(READERS[reader](bootstrap, {tp: open_start}, "read_committed")) == {tp: committed}

        second.commit_transaction(TXN_CALL_TIMEOUT_S)
        ends = wait_settled(bootstrap, [tp])
        assert ends == {tp: high + 1}
        everything = [*committed, b"open 0", b"open 1", b"open 2", b"plain after"]
        check_reads(bootstrap, ends, {tp: everything}, {tp: everything})
        assert serve.terminate() == 0, serve.log_tail()


# ---- 7. admin: ListTransactions, DescribeTransactions, DescribeProducers ------------------------
# Through kafka-python's admin client (3.0.12 has all three). confluent-kafka 2.16's AdminClient
# has no list_transactions, describe_transactions or describe_producers, so it is not used here.

ADMIN_TRANSACTION_TIMEOUT_MS = 20_000


@contextlib.contextmanager
def open_transaction(tmp_path: Path, topic: str, transactional_id: str) -> Iterator[tuple[str, Any, int]]:
    """A broker whose ``topic`` (2 partitions) has two plain records in partition 0 and then
    an open transaction of ``transactional_id`` holding one record there (offset 2).
    Yields (bootstrap, the transactional producer, when the transaction began in ms)."""
    with support.ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings=broker_settings()) as serve:
        create_topics(serve.bootstrap, {topic: 2})
        plain_produce(serve.bootstrap, topic, [b"plain 0", b"plain 1"], partition=0)
        producer = confluent_txn_producer(serve.bootstrap, transactional_id, ADMIN_TRANSACTION_TIMEOUT_MS)
        producer.init_transactions(TXN_CALL_TIMEOUT_S)
        began_ms = support.now_ms()
        producer.begin_transaction()
        producer.produce(topic, value=b"open", partition=0)
        confluent_flush(producer)
        yield serve.bootstrap, producer, began_ms
        assert serve.terminate() == 0, serve.log_tail()


@contextlib.contextmanager
def kafka_python_admin(bootstrap: str) -> Iterator[Any]:
    admin = kafka.KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=support.CLIENT_TIMEOUT_MS)
    try:
        yield admin
    finally:
        admin.close()


def test_list_transactions_and_describe_producers(tmp_path: Path) -> None:
    topic, transactional_id = "invoices", "invoicer"
    TransactionState = kafka.admin.TransactionState
    with open_transaction(tmp_path, topic, transactional_id) as (bootstrap, producer, _), \
            kafka_python_admin(bootstrap) as admin:
        def listed(**filters: Any) -> list[Any]:
            return [t for ts in admin.list_transactions(**filters).values() for t in ts]

        [mine] = [t for t in listed() if t.transactional_id == transactional_id]
        assert mine.state == TransactionState.ONGOING, mine
        producer_id = mine.producer_id
        assert producer_id >= 0
        assert transactional_id in [t.transactional_id for t in listed(state_filters=["Ongoing"])]
        assert transactional_id not in [t.transactional_id for t in listed(state_filters=["CompleteCommit"])]
        assert [t.transactional_id for t in listed(producer_id_filters=[producer_id])] == [transactional_id]

        tp0, tp1 = kafka.TopicPartition(topic, 0), kafka.TopicPartition(topic, 1)
        producers = admin.describe_producers([tp0, tp1])
        [active] = [p for p in producers[tp0].active_producers if p.producer_id == producer_id]
        # Its first record in the partition: sequence 0, and the transaction starts at offset 2.
        assert (active.current_transaction_start_offset, active.last_sequence) == (2, 0), active
        assert active.producer_epoch >= 0
        assert not [p for p in producers[tp1].active_producers if p.producer_id == producer_id]

        producer.commit_transaction(TXN_CALL_TIMEOUT_S)
        wait_settled(bootstrap, [(topic, 0), (topic, 1)])
        support.wait_until(lambda: [t.state for t in listed() if t.transactional_id == transactional_id]
                           == [TransactionState.COMPLETE_COMMIT], SETTLE_TIMEOUT_S,
                           "ListTransactions showing the transaction CompleteCommit")
        assert transactional_id not in [t.transactional_id for t in listed(state_filters=["Ongoing"])]
        [after] = [p for p in admin.describe_producers([tp0])[tp0].active_producers
                   if p.producer_id == producer_id]
        assert (after.producer_epoch, after.current_transaction_start_offset) == (active.producer_epoch, -1)


def test_describe_transactions(tmp_path: Path) -> None:
    topic, transactional_id = "receipts", "receipter"
    TransactionState = kafka.admin.TransactionState
    with open_transaction(tmp_path, topic, transactional_id) as (bootstrap, producer, began_ms), \
            kafka_python_admin(bootstrap) as admin:
        described = admin.describe_transactions([transactional_id])[transactional_id]
        assert (described.state, described.transaction_timeout_ms, described.topic_partitions) == (
            TransactionState.ONGOING, ADMIN_TRANSACTION_TIMEOUT_MS,
            {kafka.TopicPartition(topic, 0)}), described
        assert described.producer_id >= 0 and described.producer_epoch >= 0, described
        assert began_ms - 1000 <= described.transaction_start_time_ms <= support.now_ms(), described

        producer.commit_transaction(TXN_CALL_TIMEOUT_S)

        def complete() -> Any:
            answer = admin.describe_transactions([transactional_id])[transactional_id]
            return answer if answer.state == TransactionState.COMPLETE_COMMIT else None

        after = support.wait_until(complete, SETTLE_TIMEOUT_S, "DescribeTransactions showing CompleteCommit")
        assert (after.producer_id, after.producer_epoch, after.topic_partitions) == (
            described.producer_id, described.producer_epoch, set()), after
        with pytest.raises(kafka.errors.TransactionalIdNotFoundError):
            admin.describe_transactions(["never-used"])


# ---- 8. expiration of idle transactional ids and producer ids ------------------------------------

EXPIRATION_MS = 1000
EXPIRATION_SETTINGS = {
    "transactional.id.expiration.ms": EXPIRATION_MS,
    "transaction.remove.expired.transaction.cleanup.interval.ms": 200,
    "producer.id.expiration.ms": EXPIRATION_MS,
    "producer.id.expiration.check.interval.ms": 200,
}
# Expired within the expiration time plus a check interval; beyond this the broker never does it.
EXPIRED_TIMEOUT_S = EXPIRATION_MS / 1000 + 20.0


def test_idle_transactional_and_producer_ids_expire_but_open_transactions_stay(tmp_path: Path) -> None:
    """An idle transactional id (no open transaction) is forgotten after
    transactional.id.expiration.ms, and its producer's state in a partition after
    producer.id.expiration.ms; a transaction left open (timeout a minute) keeps both. Both hold
    across a broker restart (Kafka writes a tombstone to __transaction_state for the id)."""
    topic = "telemetry"
    tp = (topic, 0)
    settings = broker_settings(EXPIRATION_SETTINGS)
    data, serve_log = tmp_path / "data", tmp_path / "serve.log"
    with contextlib.ExitStack() as stack:
        serve = stack.enter_context(support.ServeProcess(data, serve_log, settings=settings))
        bootstrap = serve.bootstrap
        create_topics(bootstrap, {topic: 1})
        idle = confluent_txn_producer(bootstrap, "idle")
        idle.init_transactions(TXN_CALL_TIMEOUT_S)
        idle.begin_transaction()
        idle.produce(topic, value=b"committed", partition=0)
        idle.commit_transaction(TXN_CALL_TIMEOUT_S)
        open_start = wait_settled(bootstrap, [tp])[tp]
        lingering = confluent_txn_producer(bootstrap, "lingering")
        lingering.init_transactions(TXN_CALL_TIMEOUT_S)
        lingering.begin_transaction()
        lingering.produce(topic, value=b"open", partition=0)
        confluent_flush(lingering)

        with kafka_python_admin(bootstrap) as admin:
            ids = {t.transactional_id: t.producer_id for ts in admin.list_transactions().values() for t in ts}
            assert set(ids) == {"idle", "lingering"}, ids

            def state() -> tuple[set[str], set[int]]:
                listed = {t.transactional_id for ts in admin.list_transactions().values() for t in ts}
                producers = {p.producer_id: p for p in admin.describe_producers(
                    [kafka.TopicPartition(topic, 0)])[kafka.TopicPartition(topic, 0)].active_producers}
                return listed, set(producers)

            support.wait_until(lambda: state() == ({"lingering"}, {ids["lingering"]}), EXPIRED_TIMEOUT_S,
                               "the idle transactional id and its producer id expiring")
        with Raw(bootstrap) as raw:
            # The idle id is gone: ending a transaction of it names nothing the coordinator knows.
            assert raw.end_txn("idle", ids["idle"], 0, True) == INVALID_PRODUCER_ID_MAPPING
        assert end_offsets(bootstrap, [tp]) == ({tp: open_start}, {tp: open_start + 1})

        assert serve.terminate() == 0, serve.log_tail()
        serve = stack.enter_context(support.ServeProcess(data, serve_log, listen=bootstrap,
                                                         settings=settings))
        with kafka_python_admin(bootstrap) as admin:
            listed = {t.transactional_id: t.state for ts in admin.list_transactions().values() for t in ts}
            assert listed == {"lingering": kafka.admin.TransactionState.ONGOING}, listed
        assert end_offsets(bootstrap, [tp]) == ({tp: open_start}, {tp: open_start + 1})
        lingering.commit_transaction(TXN_CALL_TIMEOUT_S)
        ends = wait_settled(bootstrap, [tp])
        check_reads(bootstrap, ends, {tp: [b"committed", b"open"]}, {tp: [b"committed", b"open"]},
                    readers=["confluent-kafka"])
        assert serve.terminate() == 0, serve.log_tail()
