"""Log compaction seen from real Kafka clients over TCP: kafka-python 3.0, confluent-kafka 2.16
(librdkafka) and aiokafka 0.14 against a broker whose background log cleaner runs every
100 ms and cleans any partition with 1% of it dirty.

- A compacted topic, created by each client's admin API, gets keyed records with overwrites
  and tombstones from two producers (kafka-python and confluent-kafka, uncompressed and
  compressed); once the cleaner has cleaned every sealed segment, each client's consumer,
  reading from the beginning, gets exactly the latest record per key (tombstones included),
  at the offsets the producers were given (so with gaps), byte for byte, with the producer's
  timestamps although the cleaner re-encoded the batches (timestamp deltas against a new
  base, and the delete-horizon base of batches that keep tombstones).
- Tombstones go once delete.retention.ms has passed (a second cleaning, due to the horizon).
- A record without a key is refused with INVALID_RECORD (87) and not stored; keyed records
  to the same partition go on at the next offset.
- cleanup.policy switched live by AlterConfigs / IncrementalAlterConfigs: delete -> compact is
  compacted by the background cleaner without a restart; compact -> delete hands the log to
  retention; DescribeConfigs shows the new policy.
- ``__consumer_offsets`` stays a few segments long under tens of thousands of commits of the
  same partitions, and the committed offsets are the same after a restart.

Waits poll the cleaner's own state (``Engine.cleaner_stats``, what ``logkernel cleaner``
prints) or the data directory, each bounded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiokafka
import aiokafka.admin
import aiokafka.admin.config_resource
import confluent_kafka
import confluent_kafka.admin
import pytest

import logkernel
from logkernel.compression import CODEC_NAMES
from tests import broker_support as support
from tests.broker_support import CLIENTS, Client, Got, ProduceFailed, Sent
from tests.test_broker_clients_admin import aio_admin_run

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", support.KAFKA_PYTHON_IMPORT_WARNING, DeprecationWarning)
    import kafka
    import kafka.admin
    import kafka.errors

# The cleaner looks for work every 100 ms and cleans a partition as soon as 1% of it is
# dirty; retention runs every 100 ms too. (Kafka's defaults: 15 s, 50%, 5 minutes.)
BROKER_SETTINGS = {"log.cleaner.backoff.ms": 100, "log.cleaner.min.cleanable.ratio": 0.01,
                   "log.retention.check.interval.ms": 100}
SERVE_SETTINGS = [f"{name}={value}" for name, value in BROKER_SETTINGS.items()]
# Small segments: each producer round of ~12 records of ~100 bytes fills about one.
SEGMENT_BYTES = 1024
PARTITIONS = 2
INVALID_RECORD = 87  # Kafka's error code
# How long the cleaner may take to catch up: it cleans a few KB in milliseconds, every 100 ms.
CLEANED_TIMEOUT_S = 20.0
DYNAMIC_TOPIC_CONFIG = 1  # Kafka's ConfigSource number


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[logkernel.Broker]:
    yield from support.in_process_broker(tmp_path_factory.mktemp("broker"), BROKER_SETTINGS)


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return support.topic_name(request.node.name)


# ---- admin calls of each client ------------------------------------------------------------

def create_topic(admin: str, bootstrap: str, name: str, partitions: int,
                 configs: dict[str, str]) -> None:
    """CreateTopics through ``admin``'s client ("kafka-python", "confluent-kafka", "aiokafka")."""
    if admin == "kafka-python":
        client = kafka.KafkaAdminClient(bootstrap_servers=bootstrap,
                                        request_timeout_ms=support.CLIENT_TIMEOUT_MS)
        try:
            created = client.create_topics({name: {"num_partitions": partitions,
                                                   "replication_factor": 1, "configs": configs}})
            assert [t["error_code"] for t in created["topics"]] == [0], created
        finally:
            client.close()
    elif admin == "confluent-kafka":
        client = confluent_kafka.admin.AdminClient(support.Confluent.base_config(bootstrap))
        new = confluent_kafka.admin.NewTopic(name, num_partitions=partitions, replication_factor=1,
                                             config=configs)
        [future] = client.create_topics([new], request_timeout=support.CLIENT_TIMEOUT_S).values()
        assert future.result(timeout=support.CLIENT_TIMEOUT_S) is None
    else:
        async def body(client: Any) -> Any:
            return await client.create_topics([aiokafka.admin.NewTopic(name, partitions, 1,
                                                                       topic_configs=configs)])

        response = aio_admin_run(bootstrap, body)
        assert [row[1] for row in response.topic_errors] == [0], response


def alter_topic(admin: str, bootstrap: str, name: str, changes: dict[str, str],
                all_overrides: dict[str, str]) -> None:
    """Changes topic configs through ``admin``: IncrementalAlterConfigs (SET) for kafka-python
    and confluent-kafka, AlterConfigs (which replaces every override, so it is given
    ``all_overrides``) for aiokafka, whose admin client has no incremental call."""
    if admin == "kafka-python":
        client = kafka.KafkaAdminClient(bootstrap_servers=bootstrap,
                                        request_timeout_ms=support.CLIENT_TIMEOUT_MS)
        try:
            result = client.alter_configs([kafka.admin.ConfigResource("TOPIC", name, changes)],
                                          incremental=True)
            assert result == {"topic": {name: "OK"}}, result
        finally:
            client.close()
    elif admin == "confluent-kafka":
        a = confluent_kafka.admin
        client = a.AdminClient(support.Confluent.base_config(bootstrap))
        entries = [a.ConfigEntry(k, v, incremental_operation=a.AlterConfigOpType.SET)
                   for k, v in changes.items()]
        resource = a.ConfigResource(a.ResourceType.TOPIC, name, incremental_configs=entries)
        [future] = client.incremental_alter_configs(
            [resource], request_timeout=support.CLIENT_TIMEOUT_S).values()
        future.result(timeout=support.CLIENT_TIMEOUT_S)
    else:
        resource = aiokafka.admin.config_resource.ConfigResource(
            aiokafka.admin.config_resource.ConfigResourceType.TOPIC, name,
            {**all_overrides, **changes})

        async def body(client: Any) -> Any:
            return await client.alter_configs([resource])

        responses = aio_admin_run(bootstrap, body)
        assert [r[:2] for response in responses for r in response.resources] == [(0, None)]


def described_policy(admin: str, bootstrap: str, name: str) -> tuple[str, int]:
    """(value, source number) of cleanup.policy in DescribeConfigs through ``admin``."""
    if admin == "kafka-python":
        client = kafka.KafkaAdminClient(bootstrap_servers=bootstrap,
                                        request_timeout_ms=support.CLIENT_TIMEOUT_MS)
        try:
            configs = client.describe_configs([kafka.admin.ConfigResource("TOPIC", name)],
                                              config_filter="all")["topic"][name]
        finally:
            client.close()
        entry = configs["cleanup.policy"]
        sources = {"DYNAMIC_TOPIC_CONFIG": 1, "STATIC_BROKER_CONFIG": 4, "DEFAULT_CONFIG": 5}
        return entry["value"], sources[entry["config_source"]]
    if admin == "confluent-kafka":
        a = confluent_kafka.admin
        client = a.AdminClient(support.Confluent.base_config(bootstrap))
        [future] = client.describe_configs([a.ConfigResource(a.ResourceType.TOPIC, name)],
                                           request_timeout=support.CLIENT_TIMEOUT_S).values()
        entry = future.result(timeout=support.CLIENT_TIMEOUT_S)["cleanup.policy"]
        return entry.value, entry.source

    async def body(client: Any) -> Any:
        return await client.describe_configs([aiokafka.admin.config_resource.ConfigResource(
            aiokafka.admin.config_resource.ConfigResourceType.TOPIC, name)])

    [response] = aio_admin_run(bootstrap, body)
    [resource] = response.resources
    assert resource[0] == 0, resource
    [entry] = [e for e in resource[4] if e[0] == "cleanup.policy"]
    return entry[1], entry[3]


ADMINS = ["kafka-python", "confluent-kafka", "aiokafka"]


# ---- records -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Round:
    """Records one producer sends in one go (one or a few batches per partition)."""

    client: Client
    codec: str
    records: list[Sent]


KEYS = [b"user-%02d" % i for i in range(12)]
# Per round: which keys get a new value and which a tombstone, in that order. Keys come
# back after a tombstone (user-08 in round 2), and some are written once only.
PLAN: list[tuple[list[int], list[int]]] = [
    (list(range(12)), []),
    ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9]),
    ([0, 1, 2, 3, 8], [4]),
    ([0, 1], [10]),
    ([0, 5], []),
]


def rounds(cycles: int, base_ms: int) -> list[Round]:
    """``cycles`` times the PLAN, alternating kafka-python and confluent-kafka, uncompressed
    and compressed batches; every record with its own timestamp (1 ms apart, a minute ago)
    and a header naming its round."""
    producers = [(support.KafkaPython(), "none"), (support.Confluent(), "zstd"),
                 (support.KafkaPython(), "gzip"), (support.Confluent(), "none")]
    out: list[Round] = []
    n = 0
    for cycle in range(cycles):
        for i, (written, deleted) in enumerate(PLAN):
            number = cycle * len(PLAN) + i
            records = []
            for k in written:
                value = b"%s round %d " % (KEYS[k], number) + b"." * (40 + k)
                records.append(Sent(KEYS[k], value, (("round", b"%d" % number),), base_ms + n))
                n += 1
            for k in deleted:
                records.append(Sent(KEYS[k], None, (("round", b"%d" % number),), base_ms + n))
                n += 1
            client, codec = producers[number % len(producers)]
            out.append(Round(client, codec, records))
    return out


@dataclass(frozen=True)
class Stored:
    """A record as acknowledged: where it is, and what it was."""

    partition: int
    offset: int
    sent: Sent


def produce(bootstrap: str, topic: str, plan: Sequence[Round]) -> list[Stored]:
    stored = []
    for r in plan:
        acked = r.client.produce(bootstrap, topic, r.records, acks="all", codec=r.codec)
        stored += [Stored(p, o, s) for (p, o), s in zip(acked, r.records, strict=True)]  # type: ignore[misc]
    return stored


def seal(bootstrap: str, topic: str, partitions: int, ts: int) -> list[Stored]:
    """One record per partition under a key of its own, bigger than a segment: appending it
    rolls the active segment, so everything sent before is in sealed segments, which the
    cleaner cleans (it never cleans the active segment). Being the only record of its key,
    it is also the latest one."""
    stored = []
    for p in range(partitions):
        filler = Sent(b"seal-%d" % p, b"s" * (SEGMENT_BYTES + 100), (), ts)
        [(partition, offset)] = support.Confluent().produce(bootstrap, topic, [filler], partition=p)  # type: ignore[misc]
        stored.append(Stored(partition, offset, filler))
    return stored


def latest_per_key(stored: Sequence[Stored]) -> list[Stored]:
    """What a compacted log keeps: the last record of each key (in send order), tombstones
    included, sorted by position."""
    last: dict[bytes | None, Stored] = {}
    for s in stored:
        last[s.sent.key] = s
    return sorted(last.values(), key=lambda s: (s.partition, s.offset))


def check_latest(got: Sequence[Got], expected: Sequence[Stored], what: str) -> None:
    """``got`` is exactly ``expected``: same positions, keys, values, headers, and the
    producer's timestamps (CreateTime)."""
    have = sorted((g.partition, g.offset, g.key, g.value, g.headers, g.timestamp_ms, g.timestamp_type)
                  for g in got)
    want = [(s.partition, s.offset, s.sent.key, s.sent.value, s.sent.headers, s.sent.timestamp_ms,
             support.CREATE_TIME) for s in expected]
    assert len(have) == len(want), f"{what}: {len(have)} records, expected {len(want)}"
    for h, w in zip(have, want, strict=True):
        assert h == w, f"{what}: got {h}, expected {w}"


# ---- the broker's state --------------------------------------------------------------------

def cleaned_up_to_active(engine: logkernel.Engine, topic: str) -> bool:
    """Every sealed segment of every partition has been cleaned (nothing cleanable is left
    dirty), and each partition was cleaned at least once."""
    stats = engine.cleaner_stats(topic)
    return bool(stats.partitions) and all(
        p.last is not None and not p.in_progress and p.state.dirty_bytes == 0
        and p.state.first_dirty >= p.state.first_uncleanable for p in stats.partitions)


def wait_cleaned(engine: logkernel.Engine, topic: str) -> None:
    try:
        support.wait_until(lambda: cleaned_up_to_active(engine, topic), CLEANED_TIMEOUT_S,
                           f"the background cleaner to clean every sealed segment of {topic}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the cleaner's state: {engine.cleaner_stats(topic)}") from None


def stored_batches(engine: logkernel.Engine, topic: str, partition: int) -> list[Any]:
    """Every batch stored in the partition, as the engine reads them (CRC-checked)."""
    log = engine.partition_log(topic, partition, create=False)
    out: list[Any] = []
    offset = log.log_start_offset
    while offset < log.high_watermark:
        batches = list(logkernel.iter_batches(log.read(offset, 1 << 26)))  # one segment a read
        assert batches, f"{topic}-{partition}: nothing readable at offset {offset}"
        out += batches
        offset = batches[-1].header.base_offset + batches[-1].header.last_offset_delta + 1
    return out


def log_start_offsets(engine: logkernel.Engine, topic: str) -> list[int]:
    return [p.log_start_offset for p in engine.describe_topic(topic).partitions]


# ---- compaction over the wire --------------------------------------------------------------

@pytest.mark.parametrize("admin", ADMINS)
def test_consumers_read_the_latest_record_per_key(broker: logkernel.Broker, topic: str,
                                                  admin: str) -> None:
    create_topic(admin, broker.bootstrap, topic, PARTITIONS,
                 {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES)})
    base = support.now_ms() - 60_000
    stored = produce(broker.bootstrap, topic, rounds(3, base))
    stored += seal(broker.bootstrap, topic, PARTITIONS, base + 10_000)
    wait_cleaned(broker.engine, topic)

    expected = latest_per_key(stored)
    assert len(expected) == len(KEYS) + PARTITIONS
    assert any(s.sent.value is None for s in expected)  # tombstones stay (delete.retention.ms: 1 day)
    for p in range(PARTITIONS):
        mine = [s.offset for s in expected if s.partition == p]
        assert mine[-1] + 1 > len(mine), f"partition {p}: the cleaner left no gaps: {mine}"
    for client in CLIENTS:
        got = client.consume(broker.bootstrap, topic, PARTITIONS, len(expected))
        check_latest(got, expected, client.name)
    # Offsets by time (ListOffsets) go through the rebuilt time indexes: each kept record's
    # timestamp finds that record (timestamps grow with offsets here).
    kept = [s for s in expected if s.partition == 0]
    answers = support.KafkaPython().offsets(broker.bootstrap, topic, 0,
                                            [s.sent.timestamp_ms for s in kept])
    assert answers.by_time == [(s.offset, s.sent.timestamp_ms) for s in kept]

    # The cleaner rewrote batches: those keeping tombstones carry the delete horizon (their
    # base timestamp is the horizon, about a day ahead, and every record's delta is negative)
    # and every stored batch is whole and CRC-valid.
    batches = [b for p in range(PARTITIONS) for b in stored_batches(broker.engine, topic, p)]
    horizon = [b for b in batches if b.header.has_delete_horizon]
    assert horizon, "no stored batch carries the delete horizon, though tombstones were kept"
    for b in horizon:
        assert b.header.base_timestamp > support.now_ms() + 23 * 3600_000, b.header
    # Compressed batches are stored compressed again, in the producer's codec.
    codecs = {CODEC_NAMES[b.header.compression] for b in batches}
    assert {"gzip", "zstd"} <= codecs <= {"none", "gzip", "zstd"}, codecs


@pytest.mark.parametrize("client", [support.KafkaPython(), support.Confluent()], ids=str)
def test_max_timestamp_after_compaction_is_a_kept_record(broker: logkernel.Broker, topic: str,
                                                        client: Client) -> None:
    create_topic("kafka-python", broker.bootstrap, topic, 1,
                 {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES)})
    base = support.now_ms() - 60_000
    # One batch (linger 1 s, then flush): a at base+100, the newest of all, and b at base+50.
    producer = support.KafkaPython().producer(broker.bootstrap, linger_ms=1000)
    try:
        futures = [producer.send(topic, key=b"a", value=b"a1", partition=0, timestamp_ms=base + 100),
                   producer.send(topic, key=b"b", value=b"b1", partition=0, timestamp_ms=base + 50)]
        producer.flush(timeout=support.CLIENT_TIMEOUT_S)
        assert [f.get(timeout=support.CLIENT_TIMEOUT_S).offset for f in futures] == [0, 1]
    finally:
        producer.close(timeout=support.CLIENT_TIMEOUT_S)
    # a again, older than its first value: the cleaner drops a1 and keeps b1 of that batch.
    [(_, newer)] = support.KafkaPython().produce(broker.bootstrap, topic,  # type: ignore[misc]
                                                 [Sent(b"a", b"a2", (), base + 90)], partition=0)
    seal(broker.bootstrap, topic, 1, base + 10)
    wait_cleaned(broker.engine, topic)
    assert [(r.offset, r.key) for b in stored_batches(broker.engine, topic, 0) for r in b.records()] \
        == [(1, b"b"), (2, b"a"), (3, b"seal-0")]

    answers = client.offsets(broker.bootstrap, topic, 0, [base + 95, base + 90])
    assert answers.by_time == [None, (newer, base + 90)]
    assert answers.max_timestamp == (newer, base + 90)


def test_tombstones_go_after_delete_retention(broker: logkernel.Broker, topic: str) -> None:
    create_topic("confluent-kafka", broker.bootstrap, topic, 1,
                 {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES),
                  "delete.retention.ms": "0"})
    base = support.now_ms() - 60_000
    stored = produce(broker.bootstrap, topic, rounds(2, base))
    stored += seal(broker.bootstrap, topic, 1, base + 10_000)
    expected = [s for s in latest_per_key(stored) if s.sent.value is not None]

    def tombstones_gone() -> bool:
        batches = stored_batches(broker.engine, topic, 0)
        return cleaned_up_to_active(broker.engine, topic) and not any(
            r.value is None for b in batches for r in b.records())

    support.wait_until(tombstones_gone, CLEANED_TIMEOUT_S, "the cleaner to drop expired tombstones")
    assert not any(b.header.has_delete_horizon for b in stored_batches(broker.engine, topic, 0))
    for client in CLIENTS:
        check_latest(client.consume(broker.bootstrap, topic, 1, len(expected)), expected, client.name)


# ---- records without a key -------------------------------------------------------------------

@pytest.mark.parametrize("client", [pytest.param(c, id=c.name) for c in CLIENTS])
def test_a_record_without_a_key_is_refused(broker: logkernel.Broker, topic: str,
                                           client: Client) -> None:
    create_topic("confluent-kafka", broker.bootstrap, topic, 1, {"cleanup.policy": "compact"})
    ts = support.now_ms()
    first = client.produce(broker.bootstrap, topic, [Sent(b"k", b"before", (), ts)], partition=0)
    assert first == [(0, 0)]

    with pytest.raises(ProduceFailed) as failure:
        client.produce(broker.bootstrap, topic, [Sent(None, b"no key", (), ts + 1)], partition=0)
    # aiokafka 0.14 does not know Kafka's code 87: it reports UnknownError (errno -1).
    assert failure.value.codes == ({-1} if client.name == "aiokafka" else {INVALID_RECORD}), \
        failure.value
    assert broker.engine.describe_topic(topic).partitions[0].log_end_offset == 1  # nothing stored

    after = client.produce(broker.bootstrap, topic, [Sent(b"k", b"after", (), ts + 2)], partition=0)
    assert after == [(0, 1)]
    got = client.consume(broker.bootstrap, topic, 1, 2)
    assert [(g.offset, g.key, g.value) for g in got] == [(0, b"k", b"before"), (1, b"k", b"after")]


def test_kafka_python_future_fails_with_invalid_record(broker: logkernel.Broker, topic: str) -> None:
    create_topic("kafka-python", broker.bootstrap, topic, 1, {"cleanup.policy": "compact"})
    # acks=1: not idempotent. kafka-python 3.0 makes every non-retriable error fatal for an
    # idempotent producer (TransactionManager.classify_batch_error), so one refused record
    # would fail the keyed send after it too; that is the client's rule, not the broker's.
    producer = support.KafkaPython().producer(broker.bootstrap, acks=1)
    try:
        keyless = producer.send(topic, value=b"no key", partition=0)
        with pytest.raises(kafka.errors.InvalidRecordError):
            keyless.get(timeout=support.CLIENT_TIMEOUT_S)
        keyed = producer.send(topic, key=b"k", value=b"v", partition=0)
        metadata = keyed.get(timeout=support.CLIENT_TIMEOUT_S)
        assert (metadata.partition, metadata.offset) == (0, 0)
    finally:
        producer.close(timeout=support.CLIENT_TIMEOUT_S)


def test_confluent_delivery_report_says_invalid_record(broker: logkernel.Broker, topic: str) -> None:
    create_topic("confluent-kafka", broker.bootstrap, topic, 1, {"cleanup.policy": "compact"})
    producer = support.Confluent().producer(broker.bootstrap)
    reports: list[tuple[Any, Any]] = []
    producer.produce(topic, value=b"no key", partition=0,
                     on_delivery=lambda error, message: reports.append((error, message)))
    assert producer.flush(support.CLIENT_TIMEOUT_S * 2) == 0
    [(error, _)] = reports
    assert error is not None and error.code() == confluent_kafka.KafkaError.INVALID_RECORD, error
    assert not error.retriable()
    producer.produce(topic, key=b"k", value=b"v", partition=0,
                     on_delivery=lambda error, message: reports.append((error, message)))
    assert producer.flush(support.CLIENT_TIMEOUT_S * 2) == 0
    error, message = reports[1]
    assert error is None and (message.partition(), message.offset()) == (0, 0)


# ---- cleanup.policy changed live --------------------------------------------------------------

@pytest.mark.parametrize("admin", ADMINS)
def test_delete_to_compact_is_compacted_without_a_restart(broker: logkernel.Broker, topic: str,
                                                          admin: str) -> None:
    overrides = {"segment.bytes": str(SEGMENT_BYTES)}
    create_topic(admin, broker.bootstrap, topic, PARTITIONS, overrides)
    base = support.now_ms() - 60_000
    stored = produce(broker.bootstrap, topic, rounds(2, base))
    # Keyless records are fine under delete; compaction drops them (as Kafka's cleaner does).
    keyless = [Sent(None, b"keyless %d" % i, (), base + 5000 + i) for i in range(6)]
    support.KafkaPython().produce(broker.bootstrap, topic, keyless)
    stored += seal(broker.bootstrap, topic, PARTITIONS, base + 10_000)
    assert broker.engine.cleaner_stats(topic).partitions == []  # not compacted: not the cleaner's

    alter_topic(admin, broker.bootstrap, topic, {"cleanup.policy": "compact"}, overrides)
    assert described_policy(admin, broker.bootstrap, topic) == ("compact", DYNAMIC_TOPIC_CONFIG)
    wait_cleaned(broker.engine, topic)

    expected = latest_per_key(stored)
    check_latest(support.Confluent().consume(broker.bootstrap, topic, PARTITIONS, len(expected)),
                 expected, "confluent-kafka")
    stats = broker.engine.cleaner_stats(topic)
    assert sum(p.last.keyless_dropped for p in stats.partitions if p.last) == len(keyless)


def pairs(count: int, base_ms: int) -> list[Round]:
    """Each key written twice in a row: every segment keeps the second value of most of its
    keys, so no segment is emptied by cleaning."""
    records = []
    for i in range(count):
        for version in (1, 2):
            records.append(Sent(b"pair-%03d" % i, b"version %d of %d " % (version, i) + b"." * 40,
                                (), base_ms + 2 * i + version))
    return [Round(support.KafkaPython(), "none", records[j:j + 10]) for j in range(0, len(records), 10)]


@pytest.mark.parametrize("admin", ["kafka-python", "confluent-kafka"])
def test_compact_to_delete_hands_the_log_to_retention(broker: logkernel.Broker, topic: str,
                                                      admin: str) -> None:
    overrides = {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES)}
    create_topic(admin, broker.bootstrap, topic, 1, overrides)
    base = support.now_ms() - 60_000
    stored = produce(broker.bootstrap, topic, pairs(40, base))
    assert [s.offset for s in stored] == list(range(80))
    [sealer] = seal(broker.bootstrap, topic, 1, support.now_ms())  # recent: outlives retention
    wait_cleaned(broker.engine, topic)
    last = broker.engine.cleaner_stats(topic).partitions[0].last
    assert last is not None and last.records_kept < last.records_read
    assert all(s.size for s in broker.engine.partition_log(topic, 0).cleaning_view().sealed)
    assert log_start_offsets(broker.engine, topic) == [0]

    # Retention takes segments whose newest record is over 30 s old: all but the active one.
    alter_topic(admin, broker.bootstrap, topic, {"cleanup.policy": "delete", "retention.ms": "30000"},
                overrides)
    assert described_policy(admin, broker.bootstrap, topic) == ("delete", DYNAMIC_TOPIC_CONFIG)
    support.wait_until(lambda: log_start_offsets(broker.engine, topic) == [sealer.offset],
                       CLEANED_TIMEOUT_S, "retention to delete the old segments")
    assert broker.engine.cleaner_stats(topic).partitions == []
    got = support.KafkaPython().consume(broker.bootstrap, topic, 1, 1)
    check_latest(got, [sealer], "kafka-python")


def test_retention_passes_segments_the_cleaner_emptied(broker: logkernel.Broker,
                                                       topic: str) -> None:
    """Retention used to stop at the first empty segment (meant for an empty active one),
    and cleaning leaves sealed segments without records where every record was superseded
    (holding at most the idempotent producer's last batch, kept as an empty header as
    Kafka keeps it)."""
    overrides = {"segment.bytes": str(SEGMENT_BYTES)}
    create_topic("confluent-kafka", broker.bootstrap, topic, 1, overrides)
    base = support.now_ms() - 60_000
    produce(broker.bootstrap, topic, rounds(2, base))  # round 5 rewrites every key of round 0
    [sealer] = seal(broker.bootstrap, topic, 1, support.now_ms())
    # Compacted in one cleaning (the policy was delete while the records came): each segment
    # is cleaned on its own, and the first one, all superseded, is left empty.
    alter_topic("confluent-kafka", broker.bootstrap, topic, {"cleanup.policy": "compact"}, overrides)
    wait_cleaned(broker.engine, topic)
    sealed = broker.engine.partition_log(topic, 0).cleaning_view().sealed
    first = Path(sealed[0].path).read_bytes()[:sealed[0].size]
    assert sum(batch.header.record_count for batch in logkernel.iter_batches(first)) == 0, sealed
    assert sealed[-1].size > 0, sealed

    alter_topic("confluent-kafka", broker.bootstrap, topic,
                {"cleanup.policy": "delete", "retention.ms": "30000"}, overrides)
    # Retention runs every 100 ms: 3 s is 30 chances to delete the segments.
    support.wait_until(lambda: log_start_offsets(broker.engine, topic) == [sealer.offset], 3.0,
                       "retention to delete the segments older than retention.ms")


# ---- __consumer_offsets ---------------------------------------------------------------------

OFFSETS_SEGMENT_BYTES = 65536
OFFSETS_DIR = "__consumer_offsets-0"


def segment_sizes(directory: Path) -> list[int]:
    """Sizes of the .log files of a partition directory in offset order, tolerating files a
    running cleaner renames meanwhile. While the broker runs, the last (active) one has the
    size the broker reserved for it, not the size of its records."""
    sizes = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".log"):
            try:
                sizes.append(os.stat(directory / name).st_size)
            except FileNotFoundError:
                continue
    return sizes


def test_consumer_offsets_stays_small_and_survives_a_restart(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    settings = [*SERVE_SETTINGS, f"offsets.topic.segment.bytes={OFFSETS_SEGMENT_BYTES}"]
    commits = 20_000  # OffsetCommit requests of 3 partitions each
    topic = "orders"
    TopicPartition = confluent_kafka.TopicPartition
    with support.ServeProcess(data, log, settings=settings) as serve:
        create_topic("confluent-kafka", serve.bootstrap, topic, 3, {})
        # librdkafka pipelines asynchronous commits: thousands of OffsetCommit requests a second.
        bulk = confluent_kafka.Consumer({**support.Confluent.base_config(serve.bootstrap),
                                         "group.id": "bulk", "enable.auto.commit": False})
        try:
            for i in range(commits):
                bulk.commit(offsets=[TopicPartition(topic, p, i + p) for p in range(3)],
                            asynchronous=True)
            bulk.commit(offsets=[TopicPartition(topic, p, commits + p) for p in range(3)],
                        asynchronous=False)
        finally:
            bulk.close()
        # A kafka-python consumer with manual commits, each a request answered before the next.
        audit = kafka.KafkaConsumer(bootstrap_servers=serve.bootstrap, group_id="audit",
                                    enable_auto_commit=False,
                                    request_timeout_ms=support.CLIENT_TIMEOUT_MS)
        try:
            tps = [kafka.TopicPartition(topic, p) for p in range(3)]
            for i in range(300):
                audit.commit({tp: kafka.OffsetAndMetadata(10 * i + tp.partition, f"m{i}", -1)
                              for tp in tps})
        finally:
            audit.close(autocommit=False)
        # Written: 60,900 records in 20,300 batches, ~4 MB: 60+ segments of 64 KiB.
        directory = data / OFFSETS_DIR

        def small() -> bool:
            sealed = segment_sizes(directory)[:-1]
            return sum(sealed) <= OFFSETS_SEGMENT_BYTES

        support.wait_until(small, CLEANED_TIMEOUT_S, "the cleaner to shrink __consumer_offsets",
                           interval_s=0.1)
        assert serve.terminate() == 0, serve.log_tail()

    # Stopped, the active segment has its real size: the whole partition is about one
    # segment (the active one, up to 64 KiB, and what the cleaner kept: a record per key).
    sizes = segment_sizes(directory)
    assert sum(sizes) <= 2 * OFFSETS_SEGMENT_BYTES and len(sizes) <= 8, sizes
    with logkernel.open(data, {"log.cleaner.enable": False}) as lk:
        offsets = lk.describe_topic("__consumer_offsets").partitions[0]
        assert offsets.log_end_offset > 3 * commits  # every commit reached the log

    with support.ServeProcess(data, log, settings=settings) as again:
        resumed = kafka.KafkaConsumer(bootstrap_servers=again.bootstrap, group_id="audit",
                                      enable_auto_commit=False,
                                      request_timeout_ms=support.CLIENT_TIMEOUT_MS)
        try:
            for p in range(3):
                stored = resumed.committed(kafka.TopicPartition(topic, p), metadata=True)
                assert (stored.offset, stored.metadata) == (2990 + p, "m299"), stored
        finally:
            resumed.close(autocommit=False)
        check = confluent_kafka.Consumer({**support.Confluent.base_config(again.bootstrap),
                                          "group.id": "bulk", "enable.auto.commit": False})
        try:
            committed = check.committed([TopicPartition(topic, p) for p in range(3)],
                                        timeout=support.CLIENT_TIMEOUT_S)
            assert [c.offset for c in committed] == [commits + p for p in range(3)]
        finally:
            check.close()
        assert again.terminate() == 0, again.log_tail()
