"""Seeds for the broker fuzzer (tests/reliability/test_fuzz.py): the requests real clients
send, captured on the wire.

A recording TCP proxy sits between kafka-python, confluent-kafka (librdkafka) and aiokafka
and a ``logkernel serve`` broker that advertises the proxy's address, so every connection
a client opens (bootstrap, coordinator, leader) goes through it. The proxy passes bytes
both ways unchanged and keeps a copy of every request frame. Each client then does what
its users do: produce (acks 0, 1 and all; idempotent; compressed), fetch, consume in a
group (join, sync, heartbeat, commit, leave; librdkafka also through KIP-848's
ConsumerGroupHeartbeat), transactions (with offsets sent in them, committed and aborted),
and the admin calls it has (topics, partitions, configs, records, groups, offsets,
transactions, producers, cluster).

The capture is stored in ``fuzz_seeds/clients.frames``: the request frames exactly as sent
(4-byte size, header, body), one after another, at most ``KEEP_PER_KIND`` distinct frames
per client, API and version. Regenerate it after a client upgrade with::

    .venv/bin/python -m tests.reliability.fuzz_capture

Each client names itself ``capture-<client>`` in its requests' client id, so a seed says
where it came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiokafka
import aiokafka.admin
import confluent_kafka
import confluent_kafka.admin

from logkernel.protocol import apis
from logkernel.protocol.frames import parse_request_header
from tests.broker_support import (
    CLIENT_TIMEOUT_MS,
    CLIENT_TIMEOUT_S,
    KAFKA_PYTHON_IMPORT_WARNING,
    ServeProcess,
    run_async,
    wait_until,
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", KAFKA_PYTHON_IMPORT_WARNING, DeprecationWarning)
    import kafka
    import kafka.admin
    import kafka.errors

SEED_FILE = Path(__file__).with_name("fuzz_seeds") / "clients.frames"
# Distinct frames kept per (client, API, version): the first few a client sends of a kind
# differ where it matters (a JoinGroup without and with a member id, a Fetch before and
# after data arrived); hundreds more of the same shape would only make the file bigger.
KEEP_PER_KIND = 3
# The topics the captured requests name. The fuzzer's broker creates them too, so that
# replayed requests reach the code behind the topic lookup.
TOPICS = {"seed-a": 2, "seed-b": 1}
CLIENT_NAMES = ("kafka-python", "confluent-kafka", "aiokafka")
# Small values keep the stored Produce requests (and the seed file) small.
VALUES = [b"v%d" % i for i in range(6)]


@dataclass(frozen=True)
class Seed:
    """One request frame as a client sent it: ``frame`` is the whole frame (size prefix
    included); ``header_size`` is where its body starts, counted from the size prefix."""

    api_key: int
    version: int
    client_id: str
    frame: bytes
    header_size: int

    @property
    def header(self) -> bytes:
        """The request header, without the size prefix."""
        return self.frame[4:self.header_size]

    @property
    def body(self) -> bytes:
        return self.frame[self.header_size:]


def parse_frames(stream: bytes) -> Iterator[Seed]:
    """The frames of a recorded request stream, as seeds."""
    pos = 0
    while pos + 4 <= len(stream):
        (size,) = struct.unpack_from(">i", stream, pos)
        frame = stream[pos:pos + 4 + size]
        if size < 0 or len(frame) < 4 + size:
            raise ValueError(f"a truncated frame at byte {pos} of the seed stream")
        header = parse_request_header(memoryview(frame)[4:])
        yield Seed(header.api_key, header.api_version, header.client_id or "", frame,
                   4 + header.body_offset)
        pos += 4 + size
    if pos != len(stream):
        raise ValueError(f"{len(stream) - pos} bytes after the last whole frame")


def load_seeds(path: Path = SEED_FILE) -> list[Seed]:
    return list(parse_frames(path.read_bytes()))


def client_of(seed: Seed) -> str:
    return seed.client_id.removeprefix("capture-").split("#", 1)[0]


# ---- the recording proxy ------------------------------------------------------------------

class RecordingProxy:
    """A TCP proxy on 127.0.0.1 that forwards every connection to ``upstream`` and keeps
    each request frame the clients send (``frames``, in arrival order per connection).

    A context manager: leaving it closes every socket and joins every thread (bounded)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._upstream: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.frames: list[bytes] = []
        self.connections = 0

    def forward_to(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._upstream is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                broker = socket.create_connection(self._upstream, timeout=CLIENT_TIMEOUT_S)
            except OSError:
                client.close()
                continue
            for sock in (client, broker):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._sockets += [client, broker]
            self._spawn(self._pump, client, broker, True)
            self._spawn(self._pump, broker, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        pending = b""
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
            except OSError:
                break
            if requests:  # split the client's stream into frames (sizes are trusted: real clients)
                pending += data
                while len(pending) >= 4:
                    size = struct.unpack_from(">i", pending)[0]
                    if len(pending) < 4 + size:
                        break
                    with self._lock:
                        self.frames.append(pending[:4 + size])
                    pending = pending[4 + size:]
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            sock.close()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- what each client does ------------------------------------------------------------------
#
# Every step is bounded by the clients' own timeouts (CLIENT_TIMEOUT_S). A step that fails is
# reported (``Capture.failures``) and the capture goes on: one client's hiccup must not cost
# the seeds of every other step.

class Capture:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.failures: list[str] = []

    def step(self, name: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as exc:  # reported, and the capture goes on
            self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            return None

    # -- kafka-python -----------------------------------------------------------------------

    def kafka_python(self) -> None:
        cid = "capture-kafka-python"
        common = {"bootstrap_servers": self.bootstrap, "client_id": cid,
                  "request_timeout_ms": CLIENT_TIMEOUT_MS}
        admin = kafka.admin.KafkaAdminClient(**common)
        topic = "seed-kp-admin"
        tp = kafka.TopicPartition("seed-a", 0)
        try:
            self.step("kp create_topics", lambda: admin.create_topics(
                [kafka.admin.NewTopic(topic, 1, 1, topic_configs={"retention.ms": "3600000"})]))
            self.step("kp create_partitions", lambda: admin.create_partitions(
                {topic: kafka.admin.NewPartitions(2)}))
            self.step("kp describe_configs", lambda: admin.describe_configs(
                [kafka.admin.ConfigResource("TOPIC", topic), kafka.admin.ConfigResource("BROKER", "0")],
                include_synonyms=True))
            self.step("kp alter_configs", lambda: admin.alter_configs(
                [kafka.admin.ConfigResource("TOPIC", topic, {"retention.ms": "7200000"})],
                incremental=False))
            self.step("kp incremental alter_configs", lambda: admin.alter_configs(
                [kafka.admin.ConfigResource("TOPIC", topic, {"retention.ms": "7300000"})],
                incremental=True))
            self.step("kp describe_topics", lambda: admin.describe_topics([topic]))
            self.step("kp describe_cluster", admin.describe_cluster)
        finally:
            admin.close()
        self.step("kp produce", lambda: self._kp_produce(common, acks="all", idempotent=True,
                                                          compression_type="gzip"))
        self.step("kp produce acks=1", lambda: self._kp_produce(common, acks=1, idempotent=False))
        self.step("kp produce acks=0", lambda: self._kp_produce(common, acks=0, idempotent=False))
        self.step("kp consume in a group", lambda: self._kp_consume(common, "seed-kp-group"))
        self.step("kp transactions", lambda: self._kp_transactions(common, "seed-kp-group"))
        admin = kafka.admin.KafkaAdminClient(**common)
        try:
            self.step("kp list_partition_offsets", lambda: admin.list_partition_offsets(
                {tp: kafka.admin.OffsetSpec.EARLIEST,
                 kafka.TopicPartition("seed-a", 1): kafka.admin.OffsetSpec.LATEST}))
            self.step("kp delete_records", lambda: admin.delete_records({tp: 1}))
            self.step("kp list_groups", admin.list_groups)
            self.step("kp describe_groups", lambda: admin.describe_groups(["seed-kp-group"]))
            self.step("kp list_group_offsets", lambda: admin.list_group_offsets(
                {"seed-kp-group": None}))
            self.step("kp alter_group_offsets", lambda: admin.alter_group_offsets(
                "seed-kp-group", {tp: kafka.OffsetAndMetadata(1, "", -1)}))
            self.step("kp delete_group_offsets", lambda: admin.delete_group_offsets(
                "seed-kp-group", [tp]))
            self.step("kp list_transactions", admin.list_transactions)
            self.step("kp describe_transactions", lambda: admin.describe_transactions(
                ["seed-kp-txn"]))
            self.step("kp describe_producers", lambda: admin.describe_producers([tp]))
            self.step("kp delete_groups", lambda: admin.delete_groups(["seed-kp-group"]))
            self.step("kp delete_topics", lambda: admin.delete_topics([topic]))
        finally:
            admin.close()

    def _kp_produce(self, common: dict[str, Any], *, acks: Any, idempotent: bool,
                    compression_type: str | None = None) -> None:
        producer = kafka.KafkaProducer(**common, acks=acks, enable_idempotence=idempotent,
                                       compression_type=compression_type, linger_ms=5,
                                       max_block_ms=CLIENT_TIMEOUT_MS)
        try:
            futures = [producer.send("seed-a", value=v, key=b"k%d" % i, partition=i % 2,
                                     headers=[("h", b"1")])
                       for i, v in enumerate(VALUES)]
            producer.flush(timeout=CLIENT_TIMEOUT_S)
            for future in futures:
                future.get(timeout=CLIENT_TIMEOUT_S)
        finally:
            producer.close(timeout=CLIENT_TIMEOUT_S)

    def _kp_consume(self, common: dict[str, Any], group: str) -> None:
        consumer = kafka.KafkaConsumer(**common, group_id=group, enable_auto_commit=False,
                                       auto_offset_reset="earliest", heartbeat_interval_ms=200,
                                       isolation_level="read_committed")
        try:
            consumer.subscribe(["seed-a"])
            got: list[Any] = []
            wait_until(lambda: got.extend(r for rs in consumer.poll(timeout_ms=200).values()
                                          for r in rs) or len(got) >= 3,
                       CLIENT_TIMEOUT_S, "kafka-python consuming seed-a")
            consumer.commit()
            time.sleep(0.5)  # a few heartbeats
            consumer.poll(timeout_ms=300)
        finally:
            consumer.close()

    def _kp_transactions(self, common: dict[str, Any], group: str) -> None:
        producer = kafka.KafkaProducer(**common, transactional_id="seed-kp-txn", acks="all",
                                       enable_idempotence=True, linger_ms=5,
                                       max_block_ms=CLIENT_TIMEOUT_MS)
        try:
            producer.init_transactions()
            for commit in (True, False):
                producer.begin_transaction()
                producer.send("seed-b", value=b"txn", partition=0).get(timeout=CLIENT_TIMEOUT_S)
                producer.send_offsets_to_transaction(
                    {kafka.TopicPartition("seed-a", 0): kafka.OffsetAndMetadata(2, "", -1)},
                    group)
                if commit:
                    producer.commit_transaction()
                else:
                    producer.abort_transaction()
        finally:
            producer.close(timeout=CLIENT_TIMEOUT_S)

    # -- confluent-kafka (librdkafka) ---------------------------------------------------------

    def confluent(self) -> None:
        base = {"bootstrap.servers": self.bootstrap, "client.id": "capture-confluent-kafka",
                "socket.timeout.ms": CLIENT_TIMEOUT_MS}
        admin = confluent_kafka.admin.AdminClient(base)
        a = confluent_kafka.admin
        topic = "seed-cf-admin"
        tp = confluent_kafka.TopicPartition("seed-a", 0)

        def done(futures: Any) -> Any:
            values = futures.values() if isinstance(futures, dict) else [futures]
            return [f.result(timeout=CLIENT_TIMEOUT_S) for f in values]

        kw = {"request_timeout": CLIENT_TIMEOUT_S}
        self.step("cf create_topics", lambda: done(admin.create_topics(
            [a.NewTopic(topic, 1, 1, config={"retention.ms": "3600000"})], **kw)))
        self.step("cf create_partitions", lambda: done(admin.create_partitions(
            [a.NewPartitions(topic, 2)], **kw)))
        self.step("cf describe_configs", lambda: done(admin.describe_configs(
            [a.ConfigResource(a.ResourceType.TOPIC, topic)], **kw)))
        with warnings.catch_warnings():  # deprecated in favour of the incremental call, still sent
            warnings.simplefilter("ignore", DeprecationWarning)
            self.step("cf alter_configs", lambda: done(admin.alter_configs(
                [a.ConfigResource(a.ResourceType.TOPIC, topic, set_config={"retention.ms": "7200000"})],
                **kw)))
        self.step("cf incremental_alter_configs", lambda: done(admin.incremental_alter_configs(
            [a.ConfigResource(a.ResourceType.TOPIC, topic, incremental_configs=[
                a.ConfigEntry("retention.ms", "7300000",
                              incremental_operation=a.AlterConfigOpType.SET)])], **kw)))
        self.step("cf describe_cluster", lambda: done(admin.describe_cluster(**kw)))
        self.step("cf describe_topics", lambda: done(admin.describe_topics(
            confluent_kafka.TopicCollection([topic]), **kw)))
        self.step("cf produce", self._cf_produce)
        self.step("cf produce acks=0", lambda: self._cf_produce(acks="0", idempotent=False))
        self.step("cf consume (classic)", lambda: self._cf_consume("seed-cf-group", "classic"))
        self.step("cf consume (KIP-848)", lambda: self._cf_consume("seed-cf-848", "consumer"))
        self.step("cf transactions", lambda: self._cf_transactions("seed-cf-group"))
        self.step("cf list_offsets", lambda: done(admin.list_offsets(
            {tp: a.OffsetSpec.earliest(), confluent_kafka.TopicPartition("seed-a", 1):
             a.OffsetSpec.max_timestamp()}, **kw)))
        self.step("cf delete_records", lambda: done(admin.delete_records(
            [confluent_kafka.TopicPartition("seed-a", 0, 2)], **kw)))
        self.step("cf list_consumer_groups", lambda: done(admin.list_consumer_groups(**kw)))
        self.step("cf describe_consumer_groups", lambda: done(admin.describe_consumer_groups(
            ["seed-cf-group", "seed-cf-848"], **kw)))
        self.step("cf list_consumer_group_offsets", lambda: done(admin.list_consumer_group_offsets(
            [confluent_kafka.ConsumerGroupTopicPartitions("seed-cf-group")], **kw)))
        self.step("cf alter_consumer_group_offsets", lambda: done(admin.alter_consumer_group_offsets(
            [confluent_kafka.ConsumerGroupTopicPartitions("seed-cf-group",
                                            [confluent_kafka.TopicPartition("seed-a", 0, 1)])],
            **kw)))
        self.step("cf delete_consumer_groups", lambda: done(admin.delete_consumer_groups(
            ["seed-cf-group"], **kw)))
        self.step("cf delete_topics", lambda: done(admin.delete_topics([topic], **kw)))

    def _cf_produce(self, acks: str = "all", idempotent: bool = True) -> None:
        producer = confluent_kafka.Producer({
            "bootstrap.servers": self.bootstrap, "client.id": "capture-confluent-kafka",
            "socket.timeout.ms": CLIENT_TIMEOUT_MS, "acks": acks,
            "enable.idempotence": idempotent, "compression.type": "lz4", "linger.ms": 5})
        for i, v in enumerate(VALUES):
            producer.produce("seed-a", value=v, key=b"k%d" % i, partition=i % 2,
                             headers=[("h", b"1")])
        remaining = producer.flush(CLIENT_TIMEOUT_S)
        assert remaining == 0, f"{remaining} records undelivered"

    def _cf_consume(self, group: str, protocol: str) -> None:
        config = {"bootstrap.servers": self.bootstrap, "client.id": "capture-confluent-kafka",
                  "socket.timeout.ms": CLIENT_TIMEOUT_MS, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "group.protocol": protocol}
        if protocol == "classic":
            config.update({"heartbeat.interval.ms": 200, "session.timeout.ms": 6000,
                           "isolation.level": "read_committed"})
        consumer = confluent_kafka.Consumer(config)
        try:
            consumer.subscribe(["seed-a"])
            got: list[Any] = []
            wait_until(lambda: got.extend(m for m in consumer.consume(10, 0.2) if m.error() is None)
                       or len(got) >= 3, CLIENT_TIMEOUT_S, f"confluent-kafka consuming ({protocol})")
            consumer.commit(asynchronous=False)
            consumer.committed([confluent_kafka.TopicPartition("seed-a", 0)], CLIENT_TIMEOUT_S)
            consumer.consume(10, 0.5)  # heartbeats
        finally:
            consumer.close()

    def _cf_transactions(self, group: str) -> None:
        producer = confluent_kafka.Producer({
            "bootstrap.servers": self.bootstrap, "client.id": "capture-confluent-kafka",
            "socket.timeout.ms": CLIENT_TIMEOUT_MS, "message.timeout.ms": CLIENT_TIMEOUT_MS,
            "transactional.id": "seed-cf-txn", "linger.ms": 5})
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": self.bootstrap, "client.id": "capture-confluent-kafka",
            "group.id": group, "enable.auto.commit": False})
        try:
            producer.init_transactions(CLIENT_TIMEOUT_S)
            for commit in (True, False):
                producer.begin_transaction()
                producer.produce("seed-b", value=b"txn", partition=0)
                producer.send_offsets_to_transaction(
                    [confluent_kafka.TopicPartition("seed-a", 0, 2)],
                    consumer.consumer_group_metadata(), CLIENT_TIMEOUT_S)
                if commit:
                    producer.commit_transaction(CLIENT_TIMEOUT_S)
                else:
                    producer.abort_transaction(CLIENT_TIMEOUT_S)
        finally:
            consumer.close()

    # -- aiokafka ------------------------------------------------------------------------------

    def aiokafka(self) -> None:
        cid = "capture-aiokafka"
        common = {"bootstrap_servers": self.bootstrap, "client_id": cid,
                  "request_timeout_ms": CLIENT_TIMEOUT_MS}
        self.step("aio admin", lambda: run_async(self._aio_admin(common)))
        self.step("aio produce", lambda: run_async(self._aio_produce(common, acks="all")))
        self.step("aio produce acks=0", lambda: run_async(self._aio_produce(common, acks=0)))
        self.step("aio consume in a group", lambda: run_async(self._aio_consume(common)))
        self.step("aio transactions", lambda: run_async(self._aio_transactions(common)))
        self.step("aio admin after", lambda: run_async(self._aio_admin_after(common)))

    async def _aio_admin(self, common: dict[str, Any]) -> None:
        admin = aiokafka.admin.AIOKafkaAdminClient(**common)
        await admin.start()
        ConfigResource = aiokafka.admin.config_resource.ConfigResource
        ConfigResourceType = aiokafka.admin.config_resource.ConfigResourceType
        topic = "seed-aio-admin"
        try:
            await admin.create_topics([aiokafka.admin.NewTopic(topic, 1, 1)])
            await admin.create_partitions({topic: aiokafka.admin.NewPartitions(2)})
            await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                         include_synonyms=True)
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                      {"retention.ms": "7200000"})])
            await admin.describe_cluster()
            await admin.list_topics()
            await admin.describe_topics([topic])
            await admin.delete_topics([topic])
        finally:
            await admin.close()

    async def _aio_produce(self, common: dict[str, Any], acks: Any) -> None:
        producer = aiokafka.AIOKafkaProducer(**common, acks=acks, linger_ms=5,
                                             enable_idempotence=acks == "all",
                                             compression_type="gzip" if acks == "all" else None)
        await producer.start()
        try:
            for i, v in enumerate(VALUES):
                await producer.send("seed-a", value=v, key=b"k%d" % i, partition=i % 2,
                                    headers=[("h", b"1")])
            await producer.flush()
        finally:
            await producer.stop()

    async def _aio_consume(self, common: dict[str, Any]) -> None:
        consumer = aiokafka.AIOKafkaConsumer("seed-a", **common, group_id="seed-aio-group",
                                             enable_auto_commit=False,
                                             auto_offset_reset="earliest",
                                             heartbeat_interval_ms=200,
                                             isolation_level="read_committed")
        await consumer.start()
        try:
            got = 0
            deadline = time.monotonic() + CLIENT_TIMEOUT_S
            while got < 3 and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                got += sum(len(b) for b in batches.values())
            await consumer.commit()
            await consumer.committed(aiokafka.TopicPartition("seed-a", 0))
            await consumer.end_offsets([aiokafka.TopicPartition("seed-a", 0)])
            await consumer.offsets_for_times({aiokafka.TopicPartition("seed-a", 0): 0})
            await asyncio.sleep(0.5)  # heartbeats
        finally:
            await consumer.stop()

    async def _aio_transactions(self, common: dict[str, Any]) -> None:
        producer = aiokafka.AIOKafkaProducer(**common, transactional_id="seed-aio-txn")
        await producer.start()
        try:
            for commit in (True, False):
                await producer.begin_transaction()
                await producer.send_and_wait("seed-b", b"txn", partition=0)
                await producer.send_offsets_to_transaction(
                    {aiokafka.TopicPartition("seed-a", 0): 2}, "seed-aio-group")
                if commit:
                    await producer.commit_transaction()
                else:
                    await producer.abort_transaction()
        finally:
            await producer.stop()

    async def _aio_admin_after(self, common: dict[str, Any]) -> None:
        admin = aiokafka.admin.AIOKafkaAdminClient(**common)
        await admin.start()
        try:
            await admin.list_consumer_groups()
            await admin.describe_consumer_groups(["seed-aio-group"])
            await admin.list_consumer_group_offsets("seed-aio-group")
            await admin.delete_records({aiokafka.TopicPartition("seed-a", 1):
                                        aiokafka.admin.RecordsToDelete(1)})
        finally:
            await admin.close()


def capture(workdir: Path) -> tuple[list[Seed], list[str]]:
    """Runs every client through the recording proxy against a fresh ``logkernel serve``;
    returns the distinct request frames (at most KEEP_PER_KIND per client, API and version)
    and the steps that failed."""
    with RecordingProxy() as proxy:
        listen = f"127.0.0.1:{free_port()}"
        with ServeProcess(workdir / "data", workdir / "capture-serve.log", listen=listen,
                          advertised=proxy.address,
                          settings=["transaction.max.timeout.ms=60000",
                                    "group.initial.rebalance.delay.ms=0"]) as served:
            proxy.forward_to(listen)
            run = Capture(proxy.address)
            admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": listen,
                                                       "socket.timeout.ms": CLIENT_TIMEOUT_MS})
            for future in admin.create_topics(
                    [confluent_kafka.admin.NewTopic(t, n, 1) for t, n in TOPICS.items()],
                    request_timeout=CLIENT_TIMEOUT_S).values():
                future.result(timeout=CLIENT_TIMEOUT_S)
            run.kafka_python()
            run.confluent()
            run.aiokafka()
            served.terminate()
    return distinct(parse_frames(b"".join(proxy.frames))), run.failures


def distinct(seeds: Iterator[Seed]) -> list[Seed]:
    kept: list[Seed] = []
    seen: set[tuple[str, bytes]] = set()
    per_kind: dict[tuple[str, int, int], int] = {}
    for seed in seeds:
        if not seed.client_id.startswith("capture-"):
            continue  # the set-up's own admin client
        kind = (client_of(seed), seed.api_key, seed.version)
        key = (seed.client_id, seed.frame[4:6] + seed.frame[6:8] + seed.body)
        if key in seen or per_kind.get(kind, 0) >= KEEP_PER_KIND:
            continue
        seen.add(key)
        per_kind[kind] = per_kind.get(kind, 0) + 1
        kept.append(seed)
    return kept


def describe(seeds: list[Seed]) -> str:
    kinds: dict[str, set[str]] = {}
    for seed in seeds:
        kinds.setdefault(client_of(seed), set()).add(f"{apis.api_name(seed.api_key)} v{seed.version}")
    return "\n".join(f"{client}: {', '.join(sorted(k))}" for client, k in sorted(kinds.items()))


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        began = time.monotonic()
        seeds, failures = capture(Path(scratch))
    SEED_FILE.parent.mkdir(exist_ok=True)
    SEED_FILE.write_bytes(b"".join(seed.frame for seed in seeds))
    print(describe(seeds))
    print(f"{len(seeds)} frames, {SEED_FILE.stat().st_size} bytes written to {SEED_FILE} "
          f"in {time.monotonic() - began:.1f} s")
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
