"""The embedded API: topics, configs, producer, consumer, offsets, retention, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

import logkernel
from logkernel import errors


@pytest.fixture
def lk(tmp_path: Path):
    engine = logkernel.open(tmp_path / "data")
    yield engine
    engine.close()


def reopen(engine: logkernel.Engine, config: dict | None = None) -> logkernel.Engine:
    engine.close()
    return logkernel.open(engine.path, config)


def read_all(engine: logkernel.Engine, topic: str, partition: int = 0, start: int = 0) -> list:
    consumer = engine.consumer(auto_offset_reset="earliest")
    consumer.assign([(topic, partition)])
    consumer.seek((topic, partition), start)
    out = []
    while True:
        got = consumer.poll(max_records=10_000)
        if not got:
            return out
        out.extend(got)


# ---- topics ---------------------------------------------------------------------------


def test_topics_are_created_described_and_persist(lk: logkernel.Engine) -> None:
    lk.create_topic("orders", partitions=3, config={"retention.ms": "3600000", "segment.bytes": 4096})
    assert lk.topics() == ["orders"]
    assert "__consumer_offsets" in lk.topics(internal=True)
    description = lk.describe_topic("orders")
    assert [p.partition for p in description.partitions] == [0, 1, 2]
    assert description.config["retention.ms"] == 3600000
    assert description.overrides == {"retention.ms": 3600000, "segment.bytes": 4096}
    assert description.config["cleanup.policy"] == "delete"
    topic_id = description.topic_id
    lk = reopen(lk)
    try:
        again = lk.describe_topic("orders")
        assert again.topic_id == topic_id and again.overrides == description.overrides
        assert len(again.partitions) == 3
    finally:
        lk.close()


@pytest.mark.parametrize("name", ["", ".", "..", "a b", "x" * 250, "ünïcode", "a/b", "__mine"])
def test_bad_topic_names_are_refused(lk: logkernel.Engine, name: str) -> None:
    with pytest.raises(errors.ConfigError):
        lk.create_topic(name)
    assert lk.topics() == []


def test_longest_legal_name_works(lk: logkernel.Engine) -> None:
    name = "a.b_c-" + "x" * 243
    lk.create_topic(name)
    assert lk.producer().send(name, b"v").offset == 0


@pytest.mark.parametrize(("config", "words"), [
    ({"retention.ms": "soon"}, ["retention.ms", "soon"]),
    ({"segment.bytes": 10}, ["segment.bytes", "10"]),
    ({"cleanup.policy": "shred"}, ["cleanup.policy", "shred"]),
    ({"flush.messages": 0}, ["flush.messages"]),
    ({"no.such.key": 1}, ["no.such.key"]),
    ({"message.timestamp.type": "Now"}, ["message.timestamp.type", "Now"]),
    ({"min.cleanable.dirty.ratio": "1.5"}, ["min.cleanable.dirty.ratio"]),
])
def test_bad_configs_name_key_and_value(lk: logkernel.Engine, config: dict, words: list[str]) -> None:
    with pytest.raises(errors.ConfigError) as info:
        lk.create_topic("t", config=config)
    for word in words:
        assert word in str(info.value)
    assert lk.topics() == []


def test_topic_exists_and_unknown_topic(lk: logkernel.Engine) -> None:
    lk.create_topic("t")
    with pytest.raises(errors.TopicExistsError):
        lk.create_topic("t")
    lk.create_topic("a.b")
    with pytest.raises(errors.ConfigError, match="collides"):
        lk.create_topic("a_b")
    with pytest.raises(errors.UnknownTopicError, match="create_topic"):
        lk.producer().send("nope", b"x")
    with pytest.raises(errors.UnknownTopicError):
        lk.consumer("nope")
    with pytest.raises(errors.UnknownTopicError):
        lk.producer().send("t", b"x", partition=1)
    with pytest.raises(errors.ConfigError):
        lk.create_topic("u", partitions=0)


def test_auto_create_when_enabled(tmp_path: Path) -> None:
    with logkernel.open(tmp_path, {"auto.create.topics.enable": "true", "num.partitions": 2}) as lk:
        metadata = lk.producer().send("fresh", b"v", key=b"k")
        assert lk.describe_topic("fresh").partitions[metadata.partition].log_end_offset == 1
        assert len(lk.describe_topic("fresh").partitions) == 2


def test_alter_config_takes_effect_and_persists(lk: logkernel.Engine) -> None:
    lk.create_topic("t", config={"max.message.bytes": 200})
    producer = lk.producer()
    with pytest.raises(errors.RecordTooLargeError, match=r"max\.message\.bytes"):
        producer.send("t", b"x" * 300)
    lk.alter_topic_config("t", {"max.message.bytes": "1000"})
    assert producer.send("t", b"x" * 300).offset == 0
    lk.alter_topic_config("t", {"max.message.bytes": None})  # back to the default
    assert "max.message.bytes" not in lk.describe_topic("t").overrides
    with pytest.raises(errors.ConfigError):
        lk.alter_topic_config("t", {"retention.ms": -5})
    lk.alter_topic_config("t", {"retention.ms": 1000})
    lk = reopen(lk)
    try:
        assert lk.describe_topic("t").overrides == {"retention.ms": 1000}
    finally:
        lk.close()


def test_delete_topic_removes_data_and_offsets(lk: logkernel.Engine) -> None:
    lk.create_topic("t", partitions=2)
    lk.producer().send("t", b"v", partition=1)
    lk.commit_offsets("g", {("t", 1): 1})
    lk.delete_topic("t")
    assert lk.topics() == []
    assert not any(n.startswith("t-") for n in os.listdir(lk.path))
    with pytest.raises(errors.UnknownTopicError):
        lk.describe_topic("t")
    lk.create_topic("t")  # the name is free again, and starts empty
    assert lk.describe_topic("t").partitions[0].log_end_offset == 0
    assert lk.offsets.fetch("g", "t", 1) is None


def test_interrupted_delete_is_finished_at_open(tmp_path: Path) -> None:
    with logkernel.open(tmp_path) as lk:
        lk.create_topic("t")
        lk.producer().send("t", b"v")
        topic = lk._topics["t"]
        lk._write_metadata(topic, state="deleting")  # as if the process died right here
    with logkernel.open(tmp_path) as lk:
        assert lk.topics() == []
        assert not os.path.exists(os.path.join(lk.path, "t-0"))


def test_create_partitions(lk: logkernel.Engine) -> None:
    lk.create_topic("t", partitions=1)
    lk.create_partitions("t", 4)
    assert len(lk.describe_topic("t").partitions) == 4
    with pytest.raises(errors.ConfigError):
        lk.create_partitions("t", 2)
    assert lk.producer().send("t", b"v", partition=3).offset == 0


# ---- producing and consuming ----------------------------------------------------------


def test_send_and_poll_round_trip(lk: logkernel.Engine) -> None:
    lk.create_topic("t")
    producer = lk.producer()
    sent = [producer.send("t", b"value-%d" % i, key=b"k%d" % i if i % 2 else None,
                          headers=[("h", b"x"), ("n", None)] if i % 3 == 0 else None,
                          timestamp_ms=1_700_000_000_000 + i) for i in range(100)]
    assert [m.offset for m in sent] == list(range(100))
    assert all(m.topic == "t" and m.partition == 0 for m in sent)
    got = read_all(lk, "t")
    assert [r.offset for r in got] == list(range(100))
    for i, record in enumerate(got):
        assert record.value == b"value-%d" % i
        assert record.key == (b"k%d" % i if i % 2 else None)
        assert record.timestamp_ms == 1_700_000_000_000 + i
        assert record.headers == ((("h", b"x"), ("n", None)) if i % 3 == 0 else ())
        assert (record.topic, record.partition) == ("t", 0)


def test_null_and_empty_values(lk: logkernel.Engine) -> None:
    lk.create_topic("t")
    producer = lk.producer()
    producer.send("t", None, key=b"k")
    producer.send("t", b"", key=b"")
    producer.send_batch("t", [None, b""], keys=[b"", None])
    got = [(r.key, r.value) for r in read_all(lk, "t")]
    assert got == [(b"k", None), (b"", b""), (b"", None), (None, b"")]


def test_keys_go_where_the_java_client_puts_them(lk: logkernel.Engine) -> None:
    with warnings.catch_warnings():  # kafka-python's import calls a deprecated importlib API
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.partitioner.default import murmur2  # a port of the Java client's

    lk.create_topic("t", partitions=7)
    producer = lk.producer()
    for i in range(300):
        key = os.urandom(i % 40)
        metadata = producer.send("t", b"v", key=key)
        assert metadata.partition == (murmur2(key) & 0x7FFFFFFF) % 7
    keys = [b"user-%d" % i for i in range(200)]
    for key, metadata in zip(keys, producer.send_batch("t", [b"v"] * 200, keys=keys), strict=True):
        assert metadata.partition == (murmur2(key) & 0x7FFFFFFF) % 7


def test_keyless_records_stick_then_move(lk: logkernel.Engine) -> None:
    lk.create_topic("t", partitions=3)
    producer = lk.producer(batch_size=1000)
    partitions = [producer.send("t", b"x" * 100).partition for _ in range(60)]
    runs = [p for i, p in enumerate(partitions) if i == 0 or partitions[i - 1] != p]
    assert set(partitions) == {0, 1, 2}
    assert len(runs) < 12  # about ten records per partition before moving on


def test_send_batch_offsets_and_partition_order(lk: logkernel.Engine) -> None:
    lk.create_topic("t", partitions=3)
    producer = lk.producer()
    keys = [b"k%d" % (i % 10) for i in range(100)]
    sent = producer.send_batch("t", [b"%d" % i for i in range(100)], keys=keys)
    for p in range(3):
        mine = [m.offset for m in sent if m.partition == p]
        assert mine == list(range(len(mine)))
        values = [r.value for r in read_all(lk, "t", p)]
        assert values == [b"%d" % i for i, m in enumerate(sent) if m.partition == p]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_codec_is_written_and_read(lk: logkernel.Engine, codec: str) -> None:
    lk.create_topic("t")
    producer = lk.producer(compression_type=codec)
    plain = lk.producer()
    plain.send("t", b"before")
    producer.send("t", b"one", key=b"k", headers=[("a", b"b")])
    producer.send_batch("t", [b"v%d" % i for i in range(50)])
    plain.send("t", b"after")
    got = read_all(lk, "t")
    assert [r.value for r in got] == [b"before", b"one"] + [b"v%d" % i for i in range(50)] + [b"after"]
    assert [r.offset for r in got] == list(range(53))
    assert got[1].headers == (("a", b"b"),)
    # reading from the middle of a compressed batch starts at the asked offset
    assert [r.offset for r in read_all(lk, "t", start=10)] == list(range(10, 53))
    columns = lk.consumer(auto_offset_reset="earliest")
    columns.assign([("t", 0)])
    seen = []
    while (batch := columns.poll_batch(max_records=7)) is not None:
        seen.extend(batch.offsets.tolist())
    assert seen == list(range(53))


def test_topic_compression_type_recompresses_what_the_producer_sends(lk: logkernel.Engine) -> None:
    lk.create_topic("t", config={"compression.type": "zstd"})
    lk.producer().send_batch("t", [b"x" * 100] * 20)
    partition_log = lk.partition_log("t", 0)
    data = partition_log.read(0, 1 << 20)
    assert logkernel.decode_batch(data).header.compression == 4
    assert [r.value for r in read_all(lk, "t")] == [b"x" * 100] * 20


def test_log_append_time(lk: logkernel.Engine) -> None:
    lk.create_topic("t", config={"message.timestamp.type": "LogAppendTime"})
    producer = lk.producer()
    before = int(time.time() * 1000)
    single = producer.send("t", b"a", timestamp_ms=5)
    many = producer.send_batch("t", [b"b", b"c"], timestamp_ms=5)
    after = int(time.time() * 1000)
    assert before <= single.timestamp_ms <= after
    assert all(before <= m.timestamp_ms <= after for m in many)
    assert all(before <= r.timestamp_ms <= after for r in read_all(lk, "t"))


def test_poll_batch_columns(lk: logkernel.Engine) -> None:
    lk.create_topic("t")
    values = [os.urandom(i % 50) if i % 7 else None for i in range(1000)]
    keys = [b"key%d" % i if i % 3 else None for i in range(1000)]
    lk.producer().send_batch("t", values, keys=keys)
    consumer = lk.consumer(auto_offset_reset="earliest")
    consumer.assign([("t", 0)])
    batch = consumer.poll_batch(max_records=10_000)
    assert batch is not None and len(batch) == 1000
    assert (batch.topic, batch.partition) == ("t", 0)
    assert batch.offsets.tolist() == list(range(1000))
    assert batch.values() == values and batch.keys() == keys
    assert (batch.value_lengths == [-1 if v is None else len(v) for v in values]).all()
    first = bytes(batch.buffer[batch.value_offsets[1]:batch.value_offsets[1] + batch.value_lengths[1]])
    assert first == values[1]
    assert consumer.poll_batch() is None


def test_auto_offset_reset_and_positions(lk: logkernel.Engine) -> None:
    lk.create_topic("t")
    producer = lk.producer()
    producer.send_batch("t", [b"a", b"b", b"c"])
    latest = lk.consumer("t")
    assert latest.poll() == []
    assert latest.position("t", 0) == 3
    producer.send("t", b"d")
    assert [r.value for r in latest.poll()] == [b"d"]
    earliest = lk.consumer("t", auto_offset_reset="earliest")
    assert [r.value for r in earliest.poll()] == [b"a", b"b", b"c", b"d"]
    earliest.seek(("t", 0), 1)
    assert [r.offset for r in earliest.poll(max_records=2)] == [1, 2]
    earliest.seek_to_beginning()
    assert earliest.position(("t", 0)) == 0
    earliest.seek_to_end()
    assert earliest.poll() == []
    none = lk.consumer("t", auto_offset_reset="none")
    with pytest.raises(errors.OffsetOutOfRangeError, match="seek"):
        none.poll()


def test_delete_records_and_readers_below_the_start(lk: logkernel.Engine) -> None:
    lk.create_topic("t", config={"segment.bytes": 1024})
    producer = lk.producer()
    for i in range(100):
        producer.send("t", b"%03d" % i + b"." * 50)
    segments_before = lk.describe_topic("t").partitions[0].segments
    early = lk.consumer(auto_offset_reset="earliest")
    early.assign([("t", 0)])
    early.seek(("t", 0), 5)
    strict = lk.consumer(auto_offset_reset="none")
    strict.assign([("t", 0)])
    strict.seek(("t", 0), 5)
    assert lk.delete_records("t", 0, 60) == 60
    description = lk.describe_topic("t").partitions[0]
    assert description.log_start_offset == 60
    assert description.segments < segments_before
    assert [r.offset for r in early.poll(max_records=1000)] == list(range(60, 100))
    with pytest.raises(errors.OffsetOutOfRangeError):
        strict.poll()
    with pytest.raises(errors.OffsetOutOfRangeError, match="high watermark"):
        lk.delete_records("t", 0, 101)
    assert lk.delete_records("t", 0, 10) == 60  # never moves back
    lk = reopen(lk)
    try:
        assert lk.beginning_offset("t", 0) == 60
        assert [r.offset for r in read_all(lk, "t", start=60)] == list(range(60, 100))
        assert lk.delete_records("t", 0, -1) == 100
        assert lk.describe_topic("t").partitions[0].log_end_offset == 100
        assert lk.producer().send("t", b"next").offset == 100
    finally:
        lk.close()


def test_retention_by_size_and_time(lk: logkernel.Engine) -> None:
    lk.create_topic("size", config={"segment.bytes": 1000, "retention.bytes": 3000})
    lk.create_topic("time", config={"segment.bytes": 1000, "retention.ms": 60_000})
    lk.create_topic("kept", config={"segment.bytes": 1000, "cleanup.policy": "compact",
                                    "retention.bytes": 1})
    producer = lk.producer()
    now = int(time.time() * 1000)
    for i in range(200):
        producer.send("size", b"x" * 40)
        producer.send("time", b"x" * 40, timestamp_ms=now - 3_600_000 if i < 150 else now)
        producer.send("kept", b"x" * 40, key=b"k")
    lk.run_retention()
    size = lk.describe_topic("size").partitions[0]
    assert 2000 <= size.size_bytes <= 4000
    assert size.log_start_offset > 0 and size.log_end_offset == 200
    time_part = lk.describe_topic("time").partitions[0]
    assert 100 < time_part.log_start_offset <= 150
    assert read_all(lk, "time", start=time_part.log_start_offset)[-1].offset == 199
    assert lk.describe_topic("kept").partitions[0].log_start_offset == 0


def test_retention_of_everything_rolls_first(lk: logkernel.Engine) -> None:
    lk.create_topic("t", config={"retention.ms": 1000})
    lk.producer().send_batch("t", [b"a", b"b"], timestamp_ms=1)
    lk.run_retention()
    partition = lk.describe_topic("t").partitions[0]
    assert (partition.log_start_offset, partition.log_end_offset) == (2, 2)
    assert lk.producer().send("t", b"c").offset == 2


def test_offsets_for_times(lk: logkernel.Engine) -> None:
    lk.create_topic("t", config={"segment.bytes": 500})
    producer = lk.producer()
    for i in range(50):
        producer.send("t", b"x" * 20, timestamp_ms=1000 + 10 * i)
    consumer = lk.consumer()
    found = consumer.offsets_for_times({("t", 0): 1255})
    assert found[logkernel.TopicPartition("t", 0)] == (26, 1260)
    assert lk.offset_for_time("t", 0, 0) == (0, 1000)
    assert lk.offset_for_time("t", 0, 99999) is None


def test_offset_for_time_starts_at_the_log_start(lk: logkernel.Engine) -> None:
    # delete_records cuts into the segment: the batches below the new log start do not
    # count, and the search goes on with the next batch of the same segment.
    lk.create_topic("t")
    producer = lk.producer()
    for i in range(6):
        producer.send("t", b"v", partition=0, timestamp_ms=1000 + i)
    lk.delete_records("t", 0, 3)
    assert lk.offset_for_time("t", 0, 0) == (3, 1003)
    assert lk.offset_for_time("t", 0, 1004) == (4, 1004)


def test_commits_are_durable_and_per_group(lk: logkernel.Engine) -> None:
    # A subscribed consumer with a group id is a group member: no initial rebalance delay
    # here, so its first poll joins at once.
    lk = reopen(lk, {"group.initial.rebalance.delay.ms": 0})
    lk.create_topic("t", partitions=2)
    producer = lk.producer()
    producer.send_batch("t", [b"v"] * 10, partition=0)
    consumer = lk.consumer("t", group_id="g1", auto_offset_reset="earliest", enable_auto_commit=False)
    assert len(consumer.poll(max_records=4)) == 4
    consumer.commit()
    assert consumer.committed("t", 0) == 4
    # As Kafka's consumer does, a poll gives every assigned partition a position, and
    # commit() stores them all: partition 1 is committed at its start though nothing was read.
    assert consumer.committed(("t", 1)) == 0
    consumer.close()
    lk.commit_offsets("g2", {("t", 0): 9})
    lk = reopen(lk, {"group.initial.rebalance.delay.ms": 0})
    try:
        assert lk.committed("g1", "t", 0) == 4
        assert lk.committed("g2", "t", 0) == 9
        resumed = lk.consumer("t", group_id="g1", auto_offset_reset="earliest")
        assert [r.offset for r in resumed.poll(max_records=100)] == list(range(4, 10))
        resumed.close()  # auto commit on close
        assert lk.committed("g1", "t", 0) == 10
    finally:
        lk.close()


def test_poll_wakes_on_append(lk: logkernel.Engine) -> None:
    lk.create_topic("t")
    consumer = lk.consumer("t")
    assert consumer.poll() == []
    delay = 0.3

    def later() -> None:
        time.sleep(delay)
        lk.producer().send("t", b"wake")

    threading.Thread(target=later).start()
    began = time.monotonic()
    got = consumer.poll(timeout_ms=10_000)
    waited = time.monotonic() - began
    assert [r.value for r in got] == [b"wake"]
    assert waited < 5  # woken by the append, long before the 10 s timeout


def test_iteration_blocks_and_ends_when_closed(lk: logkernel.Engine) -> None:
    lk.create_topic("t")
    lk.producer().send_batch("t", [b"a", b"b"])
    consumer = lk.consumer("t", auto_offset_reset="earliest")
    got = []
    for record in consumer:
        got.append(record.value)
        if len(got) == 2:
            consumer.close()
    assert got == [b"a", b"b"]


def test_many_threads_produce_and_consume(lk: logkernel.Engine) -> None:
    lk.create_topic("t", partitions=4, config={"segment.bytes": 20_000})
    threads = 6
    per_thread = 500
    errors_seen: list[BaseException] = []

    def produce(n: int) -> None:
        try:
            producer = lk.producer()
            for i in range(per_thread):
                producer.send("t", b"%d-%d" % (n, i), key=b"%d" % n)
        except BaseException as exc:
            errors_seen.append(exc)

    consumer = lk.consumer("t", auto_offset_reset="earliest")
    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    seen: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(seen) < threads * per_thread and time.monotonic() < deadline:
        seen.extend(r.value for r in consumer.poll(timeout_ms=200))
    for w in workers:
        w.join()
    assert not errors_seen
    assert len(seen) == threads * per_thread
    for n in range(threads):  # per key (one partition each), in send order
        mine = [v for v in seen if v.startswith(b"%d-" % n)]
        assert mine == [b"%d-%d" % (n, i) for i in range(per_thread)]
    for p in range(4):
        lk.partition_log("t", p).check()


def test_flush_messages_one_makes_every_send_durable(lk: logkernel.Engine) -> None:
    lk.create_topic("t", config={"flush.messages": 1})
    producer = lk.producer()
    partition_log = lk.partition_log("t", 0)
    for _i in range(20):
        metadata = producer.send("t", b"x")
        assert partition_log.recovery_point >= metadata.offset + 1
    lk.create_topic("lazy")
    producer.send("lazy", b"x")
    assert lk.partition_log("lazy", 0).recovery_point == 0  # no fsync unless asked


def test_flush_ms_flushes_in_the_background(tmp_path: Path) -> None:
    with logkernel.open(tmp_path, {"log.flush.scheduler.interval.ms": 20}) as lk:
        lk.create_topic("t", config={"flush.ms": 50})
        lk.producer().send("t", b"x")
        partition_log = lk.partition_log("t", 0)
        deadline = time.monotonic() + 10
        while partition_log.recovery_point < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert partition_log.recovery_point == 1


def test_segments_roll_by_size_and_time(lk: logkernel.Engine) -> None:
    lk.create_topic("size", config={"segment.bytes": 1000})
    lk.create_topic("time", config={"segment.ms": 1000})
    producer = lk.producer()
    for i in range(100):
        producer.send("size", b"x" * 50)
        producer.send("time", b"x", timestamp_ms=1_000_000 + i * 300)
    assert lk.describe_topic("size").partitions[0].segments >= 7
    assert 20 <= lk.describe_topic("time").partitions[0].segments <= 40
    for topic in ("size", "time"):
        lk.partition_log(topic, 0).check()
        assert [r.offset for r in read_all(lk, topic)] == list(range(100))


# ---- bad calls ------------------------------------------------------------------------


def test_wrong_types_are_clear_and_store_nothing(lk: logkernel.Engine) -> None:
    lk.create_topic("t")
    producer = lk.producer()
    with pytest.raises(TypeError, match="encode"):
        producer.send("t", "a string")
    with pytest.raises(TypeError, match="encode"):
        producer.send("t", b"v", key=12)
    with pytest.raises(ValueError, match="timestamp"):
        producer.send("t", b"v", timestamp_ms=-3)
    with pytest.raises(TypeError):
        producer.send_batch("t", [b"ok", "not bytes"])
    assert producer.send("t", bytearray(b"ba")).offset == 0
    assert [r.value for r in read_all(lk, "t")] == [b"ba"]
    with pytest.raises(errors.ConfigError):
        lk.producer(acks="most")
    with pytest.raises(errors.ConfigError):
        lk.producer(linger_ms=5)
    with pytest.raises(errors.ConfigError):
        lk.consumer(auto_offset_reset="middle")
    with pytest.raises(errors.ConfigError, match="engine config"):
        logkernel.open(os.path.join(lk.path, "other"), {"log.segment.byte": 1})


def test_closed_engine_refuses_work(tmp_path: Path) -> None:
    lk = logkernel.open(tmp_path)
    lk.create_topic("t")
    producer = lk.producer()
    consumer = lk.consumer("t")
    lk.close()
    lk.close()  # idempotent
    with pytest.raises(errors.ClosedError):
        producer.send("t", b"x")
    with pytest.raises(errors.ClosedError):
        consumer.poll()
    with pytest.raises(errors.ClosedError):
        lk.create_topic("u")


def test_a_data_directory_has_one_owner(tmp_path: Path) -> None:
    with logkernel.open(tmp_path) as lk:
        with pytest.raises(errors.DataDirLockedError, match="another engine"):
            logkernel.open(tmp_path)
        script = textwrap.dedent(f"""
            import logkernel, sys
            try:
                logkernel.open({str(tmp_path)!r})
            except logkernel.errors.DataDirLockedError as exc:
                print("locked:", exc)
                sys.exit(3)
        """)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 3, result.stderr
        assert str(os.getpid()) in result.stdout
        lk.create_topic("still-works")
    with logkernel.open(tmp_path) as again:  # released by close
        assert again.topics() == ["still-works"]


RUN_OUT_OF_DESCRIPTORS = """
import resource, sys, logkernel
from logkernel import errors
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
with logkernel.open(sys.argv[1]) as lk:
    lk.create_topic("wide", 2)
    lk.producer().send("wide", b"kept", partition=1)
    for attempt in (lambda: lk.create_partitions("wide", 400),
                    lambda: lk.create_topic("wider", 400)):
        try:
            attempt()
            raise SystemExit("expected StorageError")
        except errors.StorageError as exc:
            assert "file descriptors" in str(exc), exc
    assert len(lk.describe_topic("wide").partitions) == 2
    assert "wider" not in lk.topics()
    lk.create_topic("after", 3)   # the descriptors of the failed attempts were released
    print("ok")
"""


def test_running_out_of_descriptors_is_a_clear_error_that_keeps_nothing(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", RUN_OUT_OF_DESCRIPTORS, str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("wide"))
    assert names == ["wide-0", "wide-1"], names   # no directories left by the failed attempts
    with logkernel.open(str(tmp_path)) as lk:
        assert len(lk.describe_topic("wide").partitions) == 2
