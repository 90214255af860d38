"""Committed offsets over the wire (OffsetCommit, OffsetFetch) for consumers that assign
their own partitions: each real client commits, reads its commits back and resumes from
them; the commits are the engine's, shared with embedded consumers and kept across a broker
restart. Commits that claim a generation of a group with no members are refused as Kafka
refuses them; commits of group members are tested with the group suites."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import aiokafka
import confluent_kafka
import pytest

import logkernel
from logkernel.protocol import apis
from tests import broker_support as support
from tests.test_broker_protocol import RawClient, request

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", support.KAFKA_PYTHON_IMPORT_WARNING, DeprecationWarning)
    import kafka


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with logkernel.Broker(str(tmp_path / "data")) as running:
        running.engine.create_topic("orders", 2)
        producer = running.engine.producer()
        for i in range(10):
            producer.send("orders", b"v%d" % i, partition=i % 2)
        yield running


def test_confluent_commits_and_resumes(broker: Any) -> None:
    common = {"bootstrap.servers": broker.bootstrap, "group.id": "billing",
              "enable.auto.commit": False, "auto.offset.reset": "earliest",
              "socket.timeout.ms": support.CLIENT_TIMEOUT_MS}
    consumer = confluent_kafka.Consumer(common)
    try:
        consumer.assign([confluent_kafka.TopicPartition("orders", 0)])
        first = [consumer.poll(support.CLIENT_TIMEOUT_S) for _ in range(2)]
        assert [m.offset() for m in first] == [0, 1]
        consumer.commit(message=first[-1], asynchronous=False)  # commits offset 2
        (committed,) = consumer.committed([confluent_kafka.TopicPartition("orders", 0)],
                                          timeout=support.CLIENT_TIMEOUT_S)
        assert committed.offset == 2
    finally:
        consumer.close()
    assert broker.engine.committed("billing", "orders", 0) == 2
    resumed = confluent_kafka.Consumer(common)
    try:
        resumed.assign([confluent_kafka.TopicPartition("orders", 0)])  # no offset: the commit
        message = resumed.poll(support.CLIENT_TIMEOUT_S)
        assert message is not None and message.offset() == 2 and message.value() == b"v4"
    finally:
        resumed.close()


def test_kafka_python_commits_with_metadata(broker: Any) -> None:
    consumer = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="audit",
                                   enable_auto_commit=False,
                                   request_timeout_ms=support.CLIENT_TIMEOUT_MS)
    try:
        partitions = [kafka.TopicPartition("orders", 0), kafka.TopicPartition("orders", 1)]
        consumer.assign(partitions)
        consumer.commit({partitions[0]: kafka.OffsetAndMetadata(3, "checkpoint-a", -1),
                         partitions[1]: kafka.OffsetAndMetadata(1, "", -1)})
        stored = consumer.committed(partitions[0], metadata=True)
        assert (stored.offset, stored.metadata) == (3, "checkpoint-a")
        assert consumer.committed(partitions[1]) == 1
        assert consumer.position(partitions[0]) == 3  # resumes from the commit
    finally:
        consumer.close()
    # The embedded consumer of the same group starts where the remote one committed.
    embedded = broker.engine.consumer(group_id="audit")
    embedded.assign([("orders", 0)])
    assert [r.offset for r in embedded.poll(timeout_ms=2000)][:1] == [3]


def test_aiokafka_commits(broker: Any) -> None:
    async def run() -> int | None:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="ai",
                                             enable_auto_commit=False,
                                             request_timeout_ms=support.CLIENT_TIMEOUT_MS)
        await consumer.start()
        try:
            tp = aiokafka.TopicPartition("orders", 1)
            consumer.assign([tp])
            await consumer.commit({tp: 4})
            return await consumer.committed(tp)  # type: ignore[no-any-return]
        finally:
            await consumer.stop()

    assert support.run_async(run()) == 4
    assert broker.engine.committed("ai", "orders", 1) == 4


def test_commits_survive_a_restart(tmp_path: Path) -> None:
    with logkernel.Broker(str(tmp_path / "d")) as first:
        first.engine.create_topic("t", 1)
        client = RawClient(first.bootstrap)
        response = client.call(apis.OFFSET_COMMIT, 8, request(
            apis.OFFSET_COMMIT, 8, group_id="g", generation_id_or_member_epoch=-1, member_id="",
            topics=[{"name": "t", "partitions": [{"partition_index": 0, "committed_offset": 7,
                                                  "committed_leader_epoch": -1,
                                                  "committed_metadata": "m"}]}]))
        assert response.topics[0].partitions[0].error_code == 0
        client.close()
    with logkernel.Broker(str(tmp_path / "d")) as second:
        client = RawClient(second.bootstrap)
        response = client.call(apis.OFFSET_FETCH, 8, request(
            apis.OFFSET_FETCH, 8, groups=[{"group_id": "g", "topics": None}]))
        (partition,) = response.groups[0].topics[0].partitions
        assert (partition.committed_offset, partition.metadata) == (7, "m")
        client.close()


def commit(client: RawClient, version: int, group: str, *, member: str = "", generation: int = -1,
           topic: str = "orders", offset: int = 1, metadata: str = "") -> int:
    response = client.call(apis.OFFSET_COMMIT, version, request(
        apis.OFFSET_COMMIT, version, group_id=group, generation_id_or_member_epoch=generation,
        member_id=member, retention_time=-1, topics=[{"name": topic, "partitions": [{
            "partition_index": 0, "committed_offset": offset, "committed_leader_epoch": -1,
            "committed_metadata": metadata}]}]))
    return int(response.topics[0].partitions[0].error_code)


@pytest.mark.parametrize("version", range(2, 10))
def test_offset_commit_every_version(broker: Any, version: int) -> None:
    client = RawClient(broker.bootstrap)
    try:
        assert commit(client, version, f"g{version}", offset=version) == 0
        assert broker.engine.committed(f"g{version}", "orders", 0) == version
    finally:
        client.close()


@pytest.mark.parametrize("version", range(1, 10))
def test_offset_fetch_every_version(broker: Any, version: int) -> None:
    broker.engine.commit_offsets("reader", {("orders", 1): 6})
    client = RawClient(broker.bootstrap)
    try:
        topics = [{"name": "orders", "partition_indexes": [0, 1]}]
        if version >= 8:
            response = client.call(apis.OFFSET_FETCH, version, request(
                apis.OFFSET_FETCH, version, groups=[
                    {"group_id": "reader", "member_id": None, "member_epoch": -1, "topics": topics},
                    {"group_id": "nobody", "member_id": None, "member_epoch": -1, "topics": topics}]))
            answers = [g.topics[0].partitions for g in response.groups]
        else:
            response = client.call(apis.OFFSET_FETCH, version, request(
                apis.OFFSET_FETCH, version, group_id="reader", topics=topics))
            answers = [response.topics[0].partitions]
        assert [(p.partition_index, p.committed_offset) for p in answers[0]] == [(0, -1), (1, 6)]
        if version >= 8:
            assert [p.committed_offset for p in answers[1]] == [-1, -1]
    finally:
        client.close()


def test_refused_commits(broker: Any) -> None:
    client = RawClient(broker.bootstrap)
    try:
        # A generation of a group that has none: Kafka's ILLEGAL_GENERATION, and from v9
        # GROUP_ID_NOT_FOUND.
        assert commit(client, 8, "g", member="consumer-1-abc", generation=3) == 22
        assert commit(client, 8, "g", generation=3) == 22
        assert commit(client, 9, "g", member="consumer-1-abc", generation=3) == 69
        assert commit(client, 8, "") == 24                           # INVALID_GROUP_ID
        assert commit(client, 8, "g", topic="missing") == 3          # UNKNOWN_TOPIC_OR_PARTITION
        assert commit(client, 8, "g", metadata="x" * 5000) == 12     # OFFSET_METADATA_TOO_LARGE
        assert "missing" not in broker.engine.topics()               # commits never create topics
        assert broker.engine.committed("g", "orders", 0) is None
    finally:
        client.close()


def test_commit_is_stored_when_acknowledged(broker: Any) -> None:
    """The answer comes after the commit is in __consumer_offsets: an embedded reader of the
    group sees it at once."""
    client = RawClient(broker.bootstrap)
    try:
        assert commit(client, 9, "fast", offset=9) == 0
        assert broker.engine.committed("fast", "orders", 0) == 9
    finally:
        client.close()
