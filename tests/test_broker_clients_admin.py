"""Admin calls of real Kafka clients against the broker: kafka-python 3.0 (KafkaAdminClient),
confluent-kafka 2.16 (AdminClient, librdkafka) and aiokafka 0.14 (AIOKafkaAdminClient).

Each client creates topics with partition counts and configs (and is refused a duplicate,
an invalid name and replication factor 3), deletes topics, adds partitions, describes
topic configs (every one, with its default and source) and broker configs, alters configs
(AlterConfigs, and IncrementalAlterConfigs where the client has it) with effects seen both
in DescribeConfigs and in behaviour (a lowered max.message.bytes refuses a big record with
MESSAGE_TOO_LARGE), and deletes records (the low watermark moves; consuming from below it
resets or reports the offset out of range).

The clients' admin APIs differ too much to share one code path, so each has its own tests;
consuming goes through the adapters of tests/broker_support.py.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from typing import Any

import aiokafka
import aiokafka.admin
import aiokafka.admin.config_resource
import aiokafka.errors
import confluent_kafka
import confluent_kafka.admin
import pytest

import logkernel
from tests import broker_support as support
from tests.broker_support import ProduceFailed, Sent

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", support.KAFKA_PYTHON_IMPORT_WARNING, DeprecationWarning)
    import kafka
    import kafka.admin
    import kafka.errors

# Kafka's own defaults of every topic config this broker has (Kafka's documentation), the
# known answers DescribeConfigs must give for a topic with no overrides.
KAFKA_TOPIC_DEFAULTS = {
    "cleanup.policy": "delete",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "segment.bytes": "1073741824",
    "segment.ms": "604800000",
    "segment.index.bytes": "10485760",
    "index.interval.bytes": "4096",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "compression.type": "producer",
    "flush.messages": "9223372036854775807",
    "flush.ms": "9223372036854775807",
    "min.cleanable.dirty.ratio": "0.5",
    "delete.retention.ms": "86400000",
    "min.compaction.lag.ms": "0",
    "max.compaction.lag.ms": "9223372036854775807",
}
# The module's broker sets two configs explicitly, so their source is STATIC_BROKER_CONFIG;
# log.retention.ms is also the default of every topic's retention.ms.
BROKER_SETTINGS = {"num.partitions": 2, "log.retention.ms": 172_800_000}
TOPIC_DEFAULTS_HERE = {**KAFKA_TOPIC_DEFAULTS, "retention.ms": "172800000"}
# Overrides given at creation, each a DYNAMIC_TOPIC_CONFIG.
CREATE_OVERRIDES = {"retention.ms": "3600000", "cleanup.policy": "compact",
                    "message.timestamp.type": "LogAppendTime"}

DYNAMIC_TOPIC, STATIC_BROKER, DEFAULT = "DYNAMIC_TOPIC_CONFIG", "STATIC_BROKER_CONFIG", "DEFAULT_CONFIG"
SOURCE_NAMES = {1: DYNAMIC_TOPIC, 4: STATIC_BROKER, 5: DEFAULT}  # Kafka's ConfigSource numbers
MESSAGE_TOO_LARGE = 10  # Kafka's error code
BIG_VALUE = b"x" * 4000
SMALL_MAX_MESSAGE_BYTES = "2048"  # a batch of BIG_VALUE (4 KB, uncompressed) cannot fit


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[logkernel.Broker]:
    yield from support.in_process_broker(tmp_path_factory.mktemp("broker"), BROKER_SETTINGS)


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return support.topic_name(request.node.name)


def expected_topic_configs(overrides: dict[str, str]) -> dict[str, tuple[str, str]]:
    """name -> (value, source) DescribeConfigs must give for a topic with ``overrides``."""
    out = {}
    for name, value in TOPIC_DEFAULTS_HERE.items():
        if name in overrides:
            out[name] = (overrides[name], DYNAMIC_TOPIC)
        elif name == "retention.ms":
            out[name] = (value, STATIC_BROKER)
        else:
            out[name] = (value, DEFAULT)
    return out


def check_broker_configs(described: dict[str, tuple[str, str, bool]]) -> None:
    """name -> (value, source, read only) of the broker resource."""
    assert described["num.partitions"] == ("2", STATIC_BROKER, True)
    assert described["log.retention.ms"] == ("172800000", STATIC_BROKER, True)
    assert described["log.segment.bytes"] == ("1073741824", DEFAULT, True)
    assert described["message.max.bytes"] == ("1048588", DEFAULT, True)
    assert described["auto.create.topics.enable"] == ("true", DEFAULT, True)
    assert all(read_only for _, _, read_only in described.values())


def check_size_limit(client: support.Client, bootstrap: str, topic: str, refused: bool) -> None:
    """A 4 KB record is refused with MESSAGE_TOO_LARGE iff ``refused``; a small one is not."""
    big = [Sent(b"big", BIG_VALUE, (), support.now_ms())]
    if refused:
        with pytest.raises(ProduceFailed) as failure:
            client.produce(bootstrap, topic, big, acks=1, partition=0)
        assert failure.value.codes == {MESSAGE_TOO_LARGE}
    else:
        client.produce(bootstrap, topic, big, acks=1, partition=0)
    client.produce(bootstrap, topic, [Sent(b"small", b"fits", (), support.now_ms())], acks=1, partition=0)


def fill(broker: logkernel.Broker, topic: str, count: int = 100) -> None:
    """``count`` records in partition 0, through the embedded producer."""
    producer = broker.engine.producer()
    for i in range(count):
        producer.send(topic, b"value %d" % i, key=b"k%d" % i, partition=0)


def check_deleted_below(client: support.Client, broker: logkernel.Broker, topic: str,
                        low_watermark: int) -> None:
    """Consuming from below the low watermark resets to it (earliest), or reports the
    offset out of range (no reset policy)."""
    assert broker.engine.describe_topic(topic).partitions[0].log_start_offset == low_watermark
    got = client.consume(broker.bootstrap, topic, 1, 10, start={0: low_watermark - 30})
    assert [g.offset for g in sorted(got, key=lambda g: g.offset)][:10] == list(
        range(low_watermark, low_watermark + 10))
    error = client.out_of_range_error(broker.bootstrap, topic, 0, low_watermark - 30)
    assert "out of range" in error.lower() or "OutOfRange" in error, error


# ---- kafka-python ------------------------------------------------------------------------------

@pytest.fixture
def kp_admin(broker: logkernel.Broker) -> Iterator[Any]:
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap,
                                   request_timeout_ms=support.CLIENT_TIMEOUT_MS)
    try:
        yield admin
    finally:
        admin.close()


def kp_topic_configs(admin: Any, topic: str) -> dict[str, Any]:
    return admin.describe_configs([kafka.admin.ConfigResource("TOPIC", topic)], include_synonyms=True,
                                  config_filter="all")["topic"][topic]


def test_kafka_python_creates_and_deletes_topics(broker: logkernel.Broker, topic: str,
                                                 kp_admin: Any) -> None:
    created = kp_admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1,
                                              "configs": CREATE_OVERRIDES}}, wait_for_metadata=True)
    [result] = created["topics"]
    assert (result["error_code"], result["num_partitions"], result["replication_factor"]) == (0, 3, 1)
    assert {k: v["value"] for k, v in result["configs"].items() if k in CREATE_OVERRIDES} == CREATE_OVERRIDES
    assert len(broker.engine.describe_topic(topic).partitions) == 3
    [described] = kp_admin.describe_topics([topic])
    assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2]
    assert topic in kp_admin.list_topics()
    default_count = topic + "-default"
    kp_admin.create_topics([default_count])  # no count: the broker's num.partitions
    assert len(broker.engine.describe_topic(default_count).partitions) == 2

    with pytest.raises(kafka.errors.TopicAlreadyExistsError):
        kp_admin.create_topics({topic: {"num_partitions": 1}})
    with pytest.raises(kafka.errors.InvalidTopicError):
        kp_admin.create_topics({"not a valid name!": {"num_partitions": 1}})
    with pytest.raises(kafka.errors.InvalidReplicationFactorError):
        kp_admin.create_topics({topic + "-rf3": {"num_partitions": 1, "replication_factor": 3}})
    assert kp_admin.create_topics({topic + "-checked": {"num_partitions": 1}}, validate_only=True)
    assert topic + "-checked" not in broker.engine.topics()

    kp_admin.delete_topics([topic, default_count])
    assert {topic, default_count}.isdisjoint(broker.engine.topics())
    assert topic not in kp_admin.list_topics()
    with pytest.raises(kafka.errors.UnknownTopicOrPartitionError):
        kp_admin.delete_topics([topic])


def test_kafka_python_creates_partitions(broker: logkernel.Broker, topic: str, kp_admin: Any) -> None:
    kp_admin.create_topics({topic: {"num_partitions": 1}})
    kp_admin.create_partitions({topic: 4})
    assert len(broker.engine.describe_topic(topic).partitions) == 4
    [described] = kp_admin.describe_topics([topic])
    assert len(described["partitions"]) == 4
    with pytest.raises(kafka.errors.InvalidPartitionsError):
        kp_admin.create_partitions({topic: 2})
    # Keyed records reach the new partitions, where Kafka's partitioner puts them.
    sent = support.sample_records(40, null_header_values=False)
    acked = support.KafkaPython().produce(broker.bootstrap, topic, sent)
    assert {p for p, _ in acked} == {0, 1, 2, 3}
    support.check_round_trip(sent, support.KafkaPython().consume(broker.bootstrap, topic, 4, 40), 4,
                             acked=acked)


def test_kafka_python_describes_topic_and_broker_configs(topic: str, kp_admin: Any) -> None:
    kp_admin.create_topics({topic: {"num_partitions": 1, "configs": CREATE_OVERRIDES}})
    described = kp_topic_configs(kp_admin, topic)
    assert {k: (v["value"], v["config_source"]) for k, v in described.items()} == \
        expected_topic_configs(CREATE_OVERRIDES)
    assert described["retention.ms"]["synonyms"] == [
        {"name": "retention.ms", "value": "3600000", "source": DYNAMIC_TOPIC},
        {"name": "log.retention.ms", "value": "172800000", "source": STATIC_BROKER},
        {"name": "log.retention.ms", "value": "604800000", "source": DEFAULT}]
    assert described["segment.bytes"]["config_type"] == "INT"
    assert described["retention.ms"]["config_type"] == "LONG"
    # The default filter keeps what differs from the defaults: the overrides.
    modified = kp_admin.describe_configs([kafka.admin.ConfigResource("TOPIC", topic)])["topic"][topic]
    assert set(modified) == set(CREATE_OVERRIDES)

    broker_configs = kp_admin.describe_configs([kafka.admin.ConfigResource("BROKER", "0")],
                                               config_filter="all")["broker"]["0"]
    check_broker_configs({k: (v["value"], v["config_source"], v["read_only"])
                          for k, v in broker_configs.items()})


def test_kafka_python_alter_configs(broker: logkernel.Broker, topic: str, kp_admin: Any) -> None:
    kp_admin.create_topics({topic: {"num_partitions": 1, "configs": {"retention.ms": "3600000"}}})
    check_size_limit(support.KafkaPython(), broker.bootstrap, topic, refused=False)

    # AlterConfigs (non-incremental): kafka-python re-sends the other overrides itself, so
    # retention.ms stays.
    resource = kafka.admin.ConfigResource("TOPIC", topic,
                                          {"max.message.bytes": SMALL_MAX_MESSAGE_BYTES})
    assert kp_admin.alter_configs([resource], incremental=False) == {"topic": {topic: "OK"}}
    described = kp_topic_configs(kp_admin, topic)
    assert (described["max.message.bytes"]["value"], described["max.message.bytes"]["config_source"]) \
        == (SMALL_MAX_MESSAGE_BYTES, DYNAMIC_TOPIC)
    assert described["retention.ms"]["value"] == "3600000"
    check_size_limit(support.KafkaPython(), broker.bootstrap, topic, refused=True)

    # IncrementalAlterConfigs: SET one key, DELETE another (back to its default), APPEND
    # to a list config; validate_only changes nothing.
    Op = kafka.admin.AlterConfigOp
    check_only = kafka.admin.ConfigResource("TOPIC", topic, {"retention.ms": "1"})
    assert kp_admin.alter_configs([check_only], validate_only=True, incremental=True) == \
        {"topic": {topic: "OK"}}
    assert kp_topic_configs(kp_admin, topic)["retention.ms"]["value"] == "3600000"
    changes = {"retention.ms": "7200000", "max.message.bytes": (Op.DELETE, None),
               "cleanup.policy": (Op.APPEND, "compact")}
    result = kp_admin.alter_configs([kafka.admin.ConfigResource("TOPIC", topic, changes)],
                                    incremental=True)
    assert result == {"topic": {topic: "OK"}}
    described = kp_topic_configs(kp_admin, topic)
    assert (described["retention.ms"]["value"], described["retention.ms"]["config_source"]) == \
        ("7200000", DYNAMIC_TOPIC)
    assert (described["max.message.bytes"]["value"], described["max.message.bytes"]["config_source"]) \
        == ("1048588", DEFAULT)
    assert described["cleanup.policy"]["value"] == "compact,delete"
    check_size_limit(support.KafkaPython(), broker.bootstrap, topic, refused=False)

    # A bad value and a broker config are refused, each with a reason.
    bad = kp_admin.alter_configs([kafka.admin.ConfigResource("TOPIC", topic, {"retention.ms": "soon"})],
                                 incremental=True)
    assert "InvalidConfig" in bad["topic"][topic], bad
    refused = kp_admin.alter_configs([kafka.admin.ConfigResource("BROKER", "0", {"num.partitions": "3"})],
                                     raise_on_unknown=False)
    assert "logkernel serve --set" in refused["broker"]["0"], refused


def test_kafka_python_deletes_records(broker: logkernel.Broker, topic: str, kp_admin: Any) -> None:
    kp_admin.create_topics({topic: {"num_partitions": 1}})
    fill(broker, topic)
    tp = kafka.TopicPartition(topic, 0)
    result = kp_admin.delete_records({tp: 40})
    assert result[tp]["low_watermark"] == 40
    assert kp_admin.list_partition_offsets({tp: kafka.admin.OffsetSpec.EARLIEST})[tp].offset == 40
    check_deleted_below(support.KafkaPython(), broker, topic, 40)
    with pytest.raises(kafka.errors.OffsetOutOfRangeError):
        kp_admin.delete_records({tp: 1000})  # past the high watermark
    assert kp_admin.delete_records({tp: -1})[tp]["low_watermark"] == 100  # -1: everything


# ---- confluent-kafka ---------------------------------------------------------------------------

@pytest.fixture
def cf_admin(broker: logkernel.Broker) -> Iterator[Any]:
    yield confluent_kafka.admin.AdminClient(support.Confluent.base_config(broker.bootstrap))
    # pytest.raises keeps the failing call's frames in a reference cycle; collecting it
    # destroys the client now rather than after the broker stopped (a reconnect loop).
    gc.collect()


def cf_result(futures: dict[Any, Any]) -> Any:
    """The one result of a one-item admin call (raises its KafkaException)."""
    [future] = futures.values()
    return future.result(timeout=support.CLIENT_TIMEOUT_S)


def cf_error(futures: dict[Any, Any]) -> str:
    """The error name of a one-item admin call that must fail."""
    with pytest.raises(confluent_kafka.KafkaException) as failure:
        cf_result(futures)
    return str(failure.value.args[0].name())


def cf_topic_configs(admin: Any, topic: str) -> dict[str, Any]:
    resource = confluent_kafka.admin.ConfigResource(confluent_kafka.admin.ResourceType.TOPIC, topic)
    return cf_result(admin.describe_configs([resource], request_timeout=support.CLIENT_TIMEOUT_S))


def cf_source(entry: Any) -> str:
    return str(confluent_kafka.admin.ConfigSource(entry.source).name)


def cf_new_topic(name: str, partitions: int = 1, replication_factor: int = 1,
                 config: dict[str, str] | None = None) -> Any:
    return confluent_kafka.admin.NewTopic(name, num_partitions=partitions,
                                          replication_factor=replication_factor, config=config or {})


def test_confluent_creates_and_deletes_topics(broker: logkernel.Broker, topic: str, cf_admin: Any) -> None:
    timeout = support.CLIENT_TIMEOUT_S
    assert cf_result(cf_admin.create_topics([cf_new_topic(topic, 3, config=CREATE_OVERRIDES)],
                                            request_timeout=timeout)) is None
    assert len(broker.engine.describe_topic(topic).partitions) == 3
    assert broker.engine.get_topic(topic).config.overrides == {
        "retention.ms": 3600000, "cleanup.policy": "compact", "message.timestamp.type": "LogAppendTime"}
    metadata = cf_admin.list_topics(topic=topic, timeout=timeout)
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2]
    assert metadata.cluster_id == broker.engine.cluster_id

    assert cf_error(cf_admin.create_topics([cf_new_topic(topic)], request_timeout=timeout)) == \
        "TOPIC_ALREADY_EXISTS"
    assert cf_error(cf_admin.create_topics([cf_new_topic("not a valid name!")],
                                           request_timeout=timeout)) == "TOPIC_EXCEPTION"
    assert cf_error(cf_admin.create_topics([cf_new_topic(topic + "-rf3", replication_factor=3)],
                                           request_timeout=timeout)) == "INVALID_REPLICATION_FACTOR"
    assert cf_error(cf_admin.create_topics([cf_new_topic(topic + "-bad", config={"retention.ms": "x"})],
                                           request_timeout=timeout)) == "INVALID_CONFIG"
    cf_result(cf_admin.create_topics([cf_new_topic(topic + "-checked")], validate_only=True,
                                     request_timeout=timeout))
    assert topic + "-checked" not in broker.engine.topics()

    cf_result(cf_admin.delete_topics([topic], request_timeout=timeout))
    assert topic not in broker.engine.topics()
    assert topic not in cf_admin.list_topics(timeout=timeout).topics
    assert cf_error(cf_admin.delete_topics([topic], request_timeout=timeout)) == "UNKNOWN_TOPIC_OR_PART"


def test_confluent_creates_partitions(broker: logkernel.Broker, topic: str, cf_admin: Any) -> None:
    timeout = support.CLIENT_TIMEOUT_S
    cf_result(cf_admin.create_topics([cf_new_topic(topic, 1)], request_timeout=timeout))
    NewPartitions = confluent_kafka.admin.NewPartitions
    cf_result(cf_admin.create_partitions([NewPartitions(topic, 4)], request_timeout=timeout))
    assert len(broker.engine.describe_topic(topic).partitions) == 4
    assert len(cf_admin.list_topics(topic=topic, timeout=timeout).topics[topic].partitions) == 4
    assert cf_error(cf_admin.create_partitions([NewPartitions(topic, 2)], request_timeout=timeout)) == \
        "INVALID_PARTITIONS"
    sent = support.sample_records(40)
    acked = support.Confluent().produce(broker.bootstrap, topic, sent)
    assert {p for p, _ in acked} == {0, 1, 2, 3}


def test_confluent_describes_topic_and_broker_configs(topic: str, cf_admin: Any) -> None:
    timeout = support.CLIENT_TIMEOUT_S
    cf_result(cf_admin.create_topics([cf_new_topic(topic, config=CREATE_OVERRIDES)], request_timeout=timeout))
    described = cf_topic_configs(cf_admin, topic)
    assert {k: (e.value, cf_source(e)) for k, e in described.items()} == \
        expected_topic_configs(CREATE_OVERRIDES)
    # librdkafka keys synonyms by name, so the two log.retention.ms entries are one here.
    synonyms = described["retention.ms"].synonyms
    assert (synonyms["retention.ms"].value, cf_source(synonyms["retention.ms"])) == \
        ("3600000", DYNAMIC_TOPIC)
    assert "log.retention.ms" in synonyms

    resource = confluent_kafka.admin.ConfigResource(confluent_kafka.admin.ResourceType.BROKER, "0")
    broker_configs = cf_result(cf_admin.describe_configs([resource], request_timeout=timeout))
    check_broker_configs({k: (e.value, cf_source(e), e.is_read_only) for k, e in broker_configs.items()})


def test_confluent_alter_configs(broker: logkernel.Broker, topic: str, cf_admin: Any) -> None:
    timeout = support.CLIENT_TIMEOUT_S
    admin = confluent_kafka.admin
    cf_result(cf_admin.create_topics([cf_new_topic(topic, config={"retention.ms": "3600000"})],
                                     request_timeout=timeout))
    check_size_limit(support.Confluent(), broker.bootstrap, topic, refused=False)

    # AlterConfigs replaces the whole set of overrides: retention.ms, not listed, reverts.
    resource = admin.ConfigResource(admin.ResourceType.TOPIC, topic,
                                    set_config={"max.message.bytes": SMALL_MAX_MESSAGE_BYTES})
    with pytest.warns(DeprecationWarning, match="alter_configs has been deprecated"):
        futures = cf_admin.alter_configs([resource], request_timeout=timeout)
    cf_result(futures)
    described = cf_topic_configs(cf_admin, topic)
    assert (described["max.message.bytes"].value, cf_source(described["max.message.bytes"])) == \
        (SMALL_MAX_MESSAGE_BYTES, DYNAMIC_TOPIC)
    assert (described["retention.ms"].value, cf_source(described["retention.ms"])) == \
        ("172800000", STATIC_BROKER)
    check_size_limit(support.Confluent(), broker.bootstrap, topic, refused=True)

    # IncrementalAlterConfigs: SET, DELETE (back to the default), APPEND to a list config.
    Op = admin.AlterConfigOpType
    entries = [admin.ConfigEntry("retention.ms", "7200000", incremental_operation=Op.SET),
               admin.ConfigEntry("max.message.bytes", None, incremental_operation=Op.DELETE),
               admin.ConfigEntry("cleanup.policy", "compact", incremental_operation=Op.APPEND)]
    check_only = admin.ConfigResource(admin.ResourceType.TOPIC, topic, incremental_configs=entries)
    cf_result(cf_admin.incremental_alter_configs([check_only], validate_only=True, request_timeout=timeout))
    assert cf_topic_configs(cf_admin, topic)["max.message.bytes"].value == SMALL_MAX_MESSAGE_BYTES
    resource = admin.ConfigResource(admin.ResourceType.TOPIC, topic, incremental_configs=entries)
    cf_result(cf_admin.incremental_alter_configs([resource], request_timeout=timeout))
    described = cf_topic_configs(cf_admin, topic)
    assert (described["retention.ms"].value, cf_source(described["retention.ms"])) == \
        ("7200000", DYNAMIC_TOPIC)
    assert (described["max.message.bytes"].value, cf_source(described["max.message.bytes"])) == \
        ("1048588", DEFAULT)
    assert described["cleanup.policy"].value == "compact,delete"
    check_size_limit(support.Confluent(), broker.bootstrap, topic, refused=False)

    bad = admin.ConfigResource(admin.ResourceType.TOPIC, topic, incremental_configs=[
        admin.ConfigEntry("no.such.config", "1", incremental_operation=Op.SET)])
    assert cf_error(cf_admin.incremental_alter_configs([bad], request_timeout=timeout)) == "INVALID_CONFIG"
    broker_resource = admin.ConfigResource(admin.ResourceType.BROKER, "0", incremental_configs=[
        admin.ConfigEntry("num.partitions", "3", incremental_operation=Op.SET)])
    assert cf_error(cf_admin.incremental_alter_configs([broker_resource], request_timeout=timeout)) == \
        "INVALID_REQUEST"


def test_confluent_deletes_records(broker: logkernel.Broker, topic: str, cf_admin: Any) -> None:
    timeout = support.CLIENT_TIMEOUT_S
    cf_result(cf_admin.create_topics([cf_new_topic(topic)], request_timeout=timeout))
    fill(broker, topic)
    TopicPartition = confluent_kafka.TopicPartition
    deleted = cf_result(cf_admin.delete_records([TopicPartition(topic, 0, 40)], request_timeout=timeout))
    assert deleted.low_watermark == 40
    earliest = cf_result(cf_admin.list_offsets(
        {TopicPartition(topic, 0): confluent_kafka.admin.OffsetSpec.earliest()}, request_timeout=timeout))
    assert earliest.offset == 40
    check_deleted_below(support.Confluent(), broker, topic, 40)
    assert cf_error(cf_admin.delete_records([TopicPartition(topic, 0, 1000)], request_timeout=timeout)) \
        == "OFFSET_OUT_OF_RANGE"
    everything = cf_result(cf_admin.delete_records([TopicPartition(topic, 0, confluent_kafka.OFFSET_END)],
                                                   request_timeout=timeout))
    assert everything.low_watermark == 100


# ---- aiokafka ------------------------------------------------------------------------------------

AioConfigResource = aiokafka.admin.config_resource.ConfigResource
AioResourceType = aiokafka.admin.config_resource.ConfigResourceType


def aio_admin_run(bootstrap: str, body: Any) -> Any:
    """Runs ``await body(admin)`` with a started AIOKafkaAdminClient, closed afterwards."""
    async def main() -> Any:
        admin = aiokafka.admin.AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                                                  request_timeout_ms=support.CLIENT_TIMEOUT_MS)
        await admin.start()
        try:
            return await body(admin)
        finally:
            await admin.close()

    return support.run_async(main())


def aio_errors(response: Any) -> dict[str, int]:
    """topic -> error code of a CreateTopics or DeleteTopics response."""
    rows = getattr(response, "topic_errors", None) or response.topic_error_codes
    return {row[0]: row[1] for row in rows}


def aio_configs(response: Any) -> dict[str, tuple[str, str, bool]]:
    """name -> (value, source, read only) of a one-resource DescribeConfigs response."""
    [resource] = response.resources
    error_code, _message, _type, _name, entries = resource[:5]
    assert error_code == 0, resource
    return {e[0]: (e[1], SOURCE_NAMES[e[3]], e[2]) for e in entries}


def test_aiokafka_creates_and_deletes_topics(broker: logkernel.Broker, topic: str) -> None:
    NewTopic = aiokafka.admin.NewTopic

    async def body(admin: Any) -> None:
        created = await admin.create_topics([NewTopic(topic, 3, 1, topic_configs=CREATE_OVERRIDES)])
        assert aio_errors(created) == {topic: 0}
        assert len(broker.engine.describe_topic(topic).partitions) == 3
        assert topic in await admin.list_topics()
        [described] = await admin.describe_topics([topic])
        assert len(described["partitions"]) == 3
        assert aio_errors(await admin.create_topics([NewTopic(topic, 1, 1)])) == {topic: 36}
        bad = "not a valid name!"
        assert aio_errors(await admin.create_topics([NewTopic(bad, 1, 1)])) == {bad: 17}
        assert aio_errors(await admin.create_topics([NewTopic(topic + "-rf3", 1, 3)])) == {topic + "-rf3": 38}
        assert aio_errors(await admin.delete_topics([topic])) == {topic: 0}
        assert topic not in broker.engine.topics()
        assert topic not in await admin.list_topics()
        assert aio_errors(await admin.delete_topics([topic])) == {topic: 3}

    aio_admin_run(broker.bootstrap, body)


def test_aiokafka_creates_partitions(broker: logkernel.Broker, topic: str) -> None:
    NewPartitions = aiokafka.admin.NewPartitions

    async def body(admin: Any) -> None:
        await admin.create_topics([aiokafka.admin.NewTopic(topic, 1, 1)])
        await admin.create_partitions({topic: NewPartitions(4)})
        assert len(broker.engine.describe_topic(topic).partitions) == 4
        with pytest.raises(aiokafka.errors.InvalidPartitionsError):
            await admin.create_partitions({topic: NewPartitions(2)})

    aio_admin_run(broker.bootstrap, body)
    sent = support.sample_records(40)
    acked = support.AioKafka().produce(broker.bootstrap, topic, sent)
    assert {p for p, _ in acked} == {0, 1, 2, 3}


def test_aiokafka_describes_topic_and_broker_configs(broker: logkernel.Broker, topic: str) -> None:
    async def body(admin: Any) -> tuple[Any, Any]:
        await admin.create_topics([aiokafka.admin.NewTopic(topic, 1, 1, topic_configs=CREATE_OVERRIDES)])
        [topic_configs] = await admin.describe_configs([AioConfigResource(AioResourceType.TOPIC, topic)])
        [broker_configs] = await admin.describe_configs([AioConfigResource(AioResourceType.BROKER, "0")])
        return topic_configs, broker_configs

    topic_configs, broker_configs = aio_admin_run(broker.bootstrap, body)
    assert {k: (value, source) for k, (value, source, _) in aio_configs(topic_configs).items()} == \
        expected_topic_configs(CREATE_OVERRIDES)
    check_broker_configs(aio_configs(broker_configs))


def test_aiokafka_alter_configs(broker: logkernel.Broker, topic: str) -> None:
    client = support.AioKafka()

    async def create(admin: Any) -> None:
        await admin.create_topics([aiokafka.admin.NewTopic(topic, 1, 1,
                                                           topic_configs={"retention.ms": "3600000"})])

    async def alter(admin: Any) -> Any:
        # AlterConfigs replaces the whole set of overrides: retention.ms, not listed, reverts.
        resource = AioConfigResource(AioResourceType.TOPIC, topic,
                                     {"max.message.bytes": SMALL_MAX_MESSAGE_BYTES})
        responses = await admin.alter_configs([resource])
        refused = await admin.alter_configs([AioConfigResource(AioResourceType.BROKER, "0",
                                                               {"num.partitions": "3"})])
        [described] = await admin.describe_configs([AioConfigResource(AioResourceType.TOPIC, topic)])
        return responses, refused, described

    aio_admin_run(broker.bootstrap, create)
    check_size_limit(client, broker.bootstrap, topic, refused=False)
    responses, refused, described = aio_admin_run(broker.bootstrap, alter)
    assert [r[:2] for response in responses for r in response.resources] == [(0, None)]
    [broker_answer] = [r for response in refused for r in response.resources]
    assert broker_answer[0] == 42 and "logkernel serve --set" in broker_answer[1], broker_answer
    configs = aio_configs(described)
    assert configs["max.message.bytes"][:2] == (SMALL_MAX_MESSAGE_BYTES, DYNAMIC_TOPIC)
    assert configs["retention.ms"][:2] == ("172800000", STATIC_BROKER)
    check_size_limit(client, broker.bootstrap, topic, refused=True)


def test_aiokafka_deletes_records(broker: logkernel.Broker, topic: str) -> None:
    RecordsToDelete = aiokafka.admin.RecordsToDelete
    tp = aiokafka.TopicPartition(topic, 0)

    async def create(admin: Any) -> None:
        await admin.create_topics([aiokafka.admin.NewTopic(topic, 1, 1)])

    async def delete(admin: Any) -> Any:
        low = await admin.delete_records({tp: RecordsToDelete(40)})
        with pytest.raises(aiokafka.errors.OffsetOutOfRangeError):
            await admin.delete_records({tp: RecordsToDelete(1000)})
        return low

    aio_admin_run(broker.bootstrap, create)
    fill(broker, topic)
    assert aio_admin_run(broker.bootstrap, delete) == {tp: 40}
    check_deleted_below(support.AioKafka(), broker, topic, 40)

