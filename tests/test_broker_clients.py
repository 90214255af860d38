"""Real Kafka clients against the broker, over TCP, on real files: kafka-python 3.0,
confluent-kafka 2.16 (librdkafka) and aiokafka 0.14, each through the same checks
(tests/broker_support.py has one adapter per client).

- Round trip: keyed and keyless records with headers, under acks 0, 1 and all, with every
  compression codec the client can use here, come back byte for byte from assigned
  partitions, at contiguous offsets, in send order, keyed ones in the partition Kafka's
  murmur2 partitioner picks, with the producer's timestamps; the stored batches carry
  the codec the client sent.
- A LogAppendTime topic stamps broker time.
- Offsets by time, earliest, latest and (where the client can ask) the max timestamp.
- The embedded producer's records reach each client, and each client's records read the
  same through the embedded consumer.
- A consumer's waiting fetch is answered when a record arrives, not at its max wait.
- ``logkernel serve`` as a process: everything survives SIGTERM and a restart on the same
  port (offsets, deleted-records start, config overrides) and acknowledged acks=all writes
  survive SIGKILL.

Admin calls (create/delete topics, partitions, configs, delete records) are in
tests/test_broker_clients_admin.py.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import confluent_kafka.admin
import pytest

import logkernel
from logkernel.compression import CODEC_NAMES
from tests import broker_support as support
from tests.broker_support import CLIENTS, CODECS, Client, Got, Sent

# Records per round trip: enough for several batches per partition under linger 5 ms and
# for every record shape of sample_records (8 kinds x 4 header shapes) to repeat, small
# enough that 45 client/acks/codec combinations take seconds.
ROUND_TRIP_RECORDS = 96
# The long-poll consumer's fetch.wait.max.ms: far above the arrival bound asserted below,
# so a fetch answered only at its max wait fails the test. (The clients' default of 500 ms
# could not tell the two apart.)
LONG_POLL_FETCH_WAIT_MS = 8000
# Sanity bound on arrival, not a latency measurement: a parked fetch answered on arrival
# takes milliseconds here.
ARRIVAL_BOUND_S = 2.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[logkernel.Broker]:
    yield from support.in_process_broker(tmp_path_factory.mktemp("broker"))


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return support.topic_name(request.node.name)


def client_params() -> list[Any]:
    return [pytest.param(client, id=client.name) for client in CLIENTS]


def stored_codecs(engine: logkernel.Engine, topic: str, partitions: int) -> set[str]:
    """The compression of every batch stored for ``topic``, read from the partition logs."""
    found = set()
    for partition in range(partitions):
        log = engine.partition_log(topic, partition, create=False)
        if log.high_watermark > log.log_start_offset:
            data = log.read(log.log_start_offset, 1 << 26)
            found.update(CODEC_NAMES[batch.header.compression] for batch in logkernel.iter_batches(data))
    return found


def end_offsets(engine: logkernel.Engine, topic: str) -> list[int]:
    return [p.log_end_offset for p in engine.describe_topic(topic).partitions]


# ---- round trip ------------------------------------------------------------------------------

# Broker gaps a client shows, each an xfail(strict=True) until the broker is fixed.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def round_trip_cases() -> Iterator[Any]:
    for client in CLIENTS:
        for codec in CODECS:
            reason = client.codec_skip_reason(codec)
            gap = KNOWN_GAPS.get((client.name, codec))
            for acks in (0, 1, "all"):
                marks = [pytest.mark.skip(reason=reason)] if reason else []
                if gap:
                    marks.append(pytest.mark.xfail(strict=True, reason=gap))
                yield pytest.param(client, acks, codec, marks=marks,
                                   id=f"{client.name}-acks={acks}-{codec}")


@pytest.mark.parametrize(("client", "acks", "codec"), list(round_trip_cases()))
def test_round_trip(broker: logkernel.Broker, topic: str, client: Client, acks: Any,
                    codec: str) -> None:
    broker.engine.create_topic(topic, partitions=3)
    sent = support.sample_records(ROUND_TRIP_RECORDS, null_header_values=client.null_header_values)

    acked = client.produce(broker.bootstrap, topic, sent, acks=acks, codec=codec)
    if acks != 0:
        assert None not in acked
    # Under acks=0 nothing says the records arrived: the consumer's bounded wait does.
    got = client.consume(broker.bootstrap, topic, 3, len(sent))

    support.check_round_trip(sent, got, 3, acked=acked)
    assert sum(end_offsets(broker.engine, topic)) == len(sent)
    # Clients send a batch uncompressed when compressing does not make it smaller (a
    # single random value), so some batches may be "none"; most here compress.
    stored = stored_codecs(broker.engine, topic, 3)
    assert codec in stored and stored <= {codec, "none"}, stored


@pytest.mark.parametrize("client", client_params())
def test_log_append_time_topic_stamps_broker_time(broker: logkernel.Broker, topic: str,
                                                  client: Client) -> None:
    broker.engine.create_topic(topic, partitions=2,
                               config={"message.timestamp.type": "LogAppendTime"})
    old = 1_000_000_000_000  # 2001: far from any broker clock
    sent = support.sample_records(24, null_header_values=client.null_header_values,
                                  base_timestamp_ms=old)
    before = support.now_ms()
    client.produce(broker.bootstrap, topic, sent, acks=1)
    after = support.now_ms()
    got = client.consume(broker.bootstrap, topic, 2, len(sent))

    assert Counter(g.content for g in got) == Counter(s.content for s in sent)
    for record in got:
        assert record.timestamp_type == support.LOG_APPEND_TIME, record
        # One clock (the machine's) on both sides; 1 ms of slack for rounding to ms.
        assert before - 1 <= record.timestamp_ms <= after + 1, (before, record, after)


# ---- offsets by time -------------------------------------------------------------------------

def append_batches(engine: logkernel.Engine, topic: str, timestamps: list[int], per_batch: int) -> None:
    """Records k0.. with these timestamps, ``per_batch`` to a batch, appended to partition 0
    as batches the test controls (a client's batching depends on its timing)."""
    log = engine.partition_log(topic, 0)
    for first in range(0, len(timestamps), per_batch):
        chunk = timestamps[first:first + per_batch]
        log.append(logkernel.encode_batch([b"v%d" % (first + i) for i in range(len(chunk))],
                                          keys=[b"k%d" % (first + i) for i in range(len(chunk))],
                                          timestamps=chunk))


@pytest.mark.parametrize("client", client_params())
def test_offsets_by_time_earliest_and_latest(broker: logkernel.Broker, topic: str,
                                             client: Client) -> None:
    broker.engine.create_topic(topic, partitions=1)
    base = support.now_ms() - 3_600_000
    # Two batches of five, one second apart, except offset 5 (first of the second batch),
    # the newest of all: a look-up between offsets 4 and 6 finds 5, the first offset whose
    # timestamp is at or after the one asked for.
    timestamps = [base + 1000 * i for i in range(10)]
    timestamps[5] = base + 20_000
    append_batches(broker.engine, topic, timestamps, per_batch=5)

    asked = [base - 5, base, base + 1500, base + 4500, base + 15_000, base + 20_000, base + 20_001]
    answers = client.offsets(broker.bootstrap, topic, 0, asked)

    assert (answers.earliest, answers.latest) == (0, 10)
    expected = [(0, base), (0, base), (2, base + 2000), (5, base + 20_000), (5, base + 20_000),
                (5, base + 20_000), None]
    for ts, want, have in zip(asked, expected, answers.by_time, strict=True):
        if want is None or have is None or have[1] == -1:  # -1: the client gives no timestamp
            assert (have and have[0]) == (want and want[0]), (ts - base, have, want)
        else:
            assert have == want, (ts - base, have, want)


def max_timestamp_cases() -> Iterator[Any]:
    # Segments track the batch holding the newest timestamp; the answer must be the record's
    # own offset (Kafka since KAFKA-16310), wherever it sits in its batch.
    for client in CLIENTS:
        if client.name == "aiokafka":  # aiokafka has no call for ListOffsets' max-timestamp query
            continue
        yield pytest.param(client, 9, id=f"{client.name}-last-of-its-batch")
        yield pytest.param(client, 7, id=f"{client.name}-inside-its-batch")


@pytest.mark.parametrize(("client", "newest"), list(max_timestamp_cases()))
def test_max_timestamp_offset(broker: logkernel.Broker, topic: str, client: Client,
                              newest: int) -> None:
    broker.engine.create_topic(topic, partitions=1)
    base = support.now_ms() - 3_600_000
    timestamps = [base + 1000 * i for i in range(10)]
    timestamps[newest] = base + 20_000
    append_batches(broker.engine, topic, timestamps, per_batch=5)

    answers = client.offsets(broker.bootstrap, topic, 0, [])

    assert answers.max_timestamp == (newest, base + 20_000)


# ---- the embedded engine and remote clients ----------------------------------------------------

@pytest.mark.parametrize("client", client_params())
def test_embedded_producer_records_reach_the_client(broker: logkernel.Broker, topic: str,
                                                     client: Client) -> None:
    broker.engine.create_topic(topic, partitions=3)
    sent = support.sample_records(64)  # null header values too: every client reads them
    # Four embedded producers in turn, so the client reads every codec the engine writes.
    producers = [broker.engine.producer(compression_type=c) for c in (None, "gzip", "lz4", "zstd")]
    acked: list[tuple[int, int] | None] = []
    for i, record in enumerate(sent):
        metadata = producers[i % 4].send(topic, record.value, key=record.key,
                                         headers=list(record.headers), timestamp_ms=record.timestamp_ms)
        acked.append((metadata.partition, metadata.offset))

    got = client.consume(broker.bootstrap, topic, 3, len(sent))

    support.check_round_trip(sent, got, 3, acked=acked)
    assert stored_codecs(broker.engine, topic, 3) == {"none", "gzip", "lz4", "zstd"}


@pytest.mark.parametrize("client", client_params())
def test_client_records_read_the_same_through_the_embedded_consumer(
        broker: logkernel.Broker, topic: str, client: Client) -> None:
    broker.engine.create_topic(topic, partitions=3)
    sent = support.sample_records(64, null_header_values=client.null_header_values)
    acked = client.produce(broker.bootstrap, topic, sent, acks="all", codec="gzip")

    got = support.engine_read(broker.engine, topic, 3, len(sent))

    support.check_round_trip(sent, got, 3, acked=acked)


# ---- long poll ---------------------------------------------------------------------------------

@pytest.mark.parametrize("client", client_params())
def test_waiting_fetch_is_answered_when_a_record_arrives(broker: logkernel.Broker, topic: str,
                                                        client: Client) -> None:
    broker.engine.create_topic(topic, partitions=1)
    producer = broker.engine.producer()
    producer.send(topic, b"warm-up")

    elapsed = client.arrival_seconds(broker.bootstrap, topic, LONG_POLL_FETCH_WAIT_MS,
                                     lambda: producer.send(topic, b"arrived"))

    assert elapsed < ARRIVAL_BOUND_S, (
        f"{client.name} got the record {elapsed:.2f} s after it was appended; its fetch waits "
        f"up to {LONG_POLL_FETCH_WAIT_MS} ms, so the broker did not answer on arrival")


# ---- logkernel serve: restart and crash --------------------------------------------------------

def confluent_admin(bootstrap: str) -> Any:
    """An AdminClient; keep it referenced until its futures are done (a collected client
    fails them with _DESTROY)."""
    return confluent_kafka.admin.AdminClient(support.Confluent.base_config(bootstrap))


def create_topic(bootstrap: str, name: str, partitions: int, config: dict[str, str] | None = None
                 ) -> None:
    new = confluent_kafka.admin.NewTopic(name, num_partitions=partitions, replication_factor=1,
                                         config=config or {})
    admin = confluent_admin(bootstrap)
    [future] = admin.create_topics([new], request_timeout=support.CLIENT_TIMEOUT_S).values()
    future.result(timeout=support.CLIENT_TIMEOUT_S)


def by_position(records: list[Got]) -> list[Got]:
    return sorted(records, key=lambda g: (g.partition, g.offset))


def test_everything_survives_sigterm_and_a_restart_on_the_same_port(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    topic = "survives-restart"
    sent = support.sample_records(96, null_header_values=False)
    share = len(sent) // len(CLIENTS)
    codecs = {"kafka-python": "gzip", "confluent-kafka": "zstd", "aiokafka": "lz4"}
    confluent = support.Confluent()

    with support.ServeProcess(data, log) as serve:
        bootstrap = serve.bootstrap
        create_topic(bootstrap, topic, 3, {"retention.ms": "3600000"})
        acked: list[tuple[int, int] | None] = []
        for i, client in enumerate(CLIENTS):
            acked += client.produce(bootstrap, topic, sent[i * share:(i + 1) * share], acks="all",
                                    codec=codecs[client.name])
        before = confluent.consume(bootstrap, topic, 3, len(sent))
        support.check_round_trip(sent, before, 3, acked=acked)
        admin = confluent_admin(bootstrap)
        [deleted] = admin.delete_records([confluent_kafka.TopicPartition(topic, 0, 2)],
                                         request_timeout=support.CLIENT_TIMEOUT_S).values()
        assert deleted.result(timeout=support.CLIENT_TIMEOUT_S).low_watermark == 2
        assert serve.terminate() == 0, serve.log_tail()

    with support.ServeProcess(data, log, listen=bootstrap) as again:
        assert again.bootstrap == bootstrap
        expected = by_position([g for g in before if g.partition != 0 or g.offset >= 2])
        for client in CLIENTS:
            after = client.consume(bootstrap, topic, 3, len(expected), start={0: 2})
            assert by_position(after) == expected, client.name
        assert confluent.offsets(bootstrap, topic, 0, []).earliest == 2
        ends = {p: 1 + max(g.offset for g in before if g.partition == p) for p in range(3)}

        # Writes go on from where they stopped, and the override set at creation is there.
        more = support.sample_records(len(sent) + 8, null_header_values=False)[len(sent):]
        for partition, offset in support.KafkaPython().produce(bootstrap, topic, more):
            assert offset == ends[partition]
            ends[partition] += 1
        admin = confluent_admin(bootstrap)
        [described] = admin.describe_configs(
            [confluent_kafka.admin.ConfigResource("topic", topic)],
            request_timeout=support.CLIENT_TIMEOUT_S).values()
        retention = described.result(timeout=support.CLIENT_TIMEOUT_S)["retention.ms"]
        assert retention.value == "3600000"
        assert retention.source == confluent_kafka.admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        assert again.terminate() == 0, again.log_tail()


def test_acknowledged_records_survive_sigkill(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    topic = "survives-sigkill"
    sent = support.sample_records(1040, null_header_values=False)
    durable = ["log.flush.interval.messages=1"]  # every append fsyncs before it is acknowledged

    with support.ServeProcess(data, log, settings=durable) as serve:
        create_topic(serve.bootstrap, topic, 2)
        # All of these are acknowledged before the crash...
        acked = support.KafkaPython().produce(serve.bootstrap, topic, sent[:40], acks="all")
        # ...and these are in flight when it happens: small batches, each fsynced, so the
        # broker is killed with acknowledged and unacknowledged records around.
        streamed: list[tuple[int, int] | None] = [None] * (len(sent) - 40)
        producer = support.Confluent().producer(
            serve.bootstrap, acks="all", codec="zstd", **{"batch.num.messages": 5, "linger.ms": 0})
        lock = threading.Lock()

        def delivered(i: int, error: Any, message: Any) -> None:
            if error is None:
                with lock:
                    streamed[i] = (message.partition(), message.offset())

        for i, record in enumerate(sent[40:]):
            producer.produce(topic, value=record.value, key=record.key, headers=list(record.headers),
                             timestamp=record.timestamp_ms,
                             on_delivery=lambda e, m, i=i: delivered(i, e, m))

        def hundred_acknowledged() -> bool:
            producer.poll(0.05)  # runs the delivery callbacks
            with lock:
                return sum(s is not None for s in streamed) >= 100

        support.wait_until(hundred_acknowledged, support.CLIENT_TIMEOUT_S, "100 acknowledged records")
        assert serve.kill() == -signal.SIGKILL
        # What was not acknowledged by now will not be: fail it at once (delivery reports
        # with _PURGE_*) rather than after message.timeout.ms.
        producer.purge()
        assert producer.flush(support.CLIENT_TIMEOUT_S) == 0
        producer.close()
        acked += streamed
    assert sum(a is not None for a in acked) >= 140

    with support.ServeProcess(data, log) as again:  # a new port this time
        confluent = support.Confluent()
        stored = [confluent.offsets(again.bootstrap, topic, p, []).latest for p in range(2)]
        got = confluent.consume(again.bootstrap, topic, 2, sum(stored))
        check_acknowledged_survived(sent, acked, got)
        assert again.terminate() == 0, again.log_tail()


def check_acknowledged_survived(sent: list[Sent], acked: list[tuple[int, int] | None],
                                got: list[Got]) -> None:
    """Every acknowledged record is at its acknowledged offset, byte for byte; whatever
    else is there was sent, once, at contiguous offsets, in send order."""
    at = {(g.partition, g.offset): g for g in got}
    assert len(at) == len(got)
    for i, position in enumerate(acked):
        if position is not None:
            record = at.get(position)
            assert record is not None, f"acknowledged record {i} at {position} is gone"
            assert record.content == sent[i].content, (i, record)
            assert record.timestamp_ms == sent[i].timestamp_ms
    index = {s.content: i for i, s in enumerate(sent)}
    for partition in {g.partition for g in got}:
        mine = by_position([g for g in got if g.partition == partition])
        assert [g.offset for g in mine] == list(range(len(mine)))
        order = [index[g.content] for g in mine]
        assert order == sorted(set(order)), f"partition {partition}: duplicates or reordering"

