"""What the real-client broker tests (tests/test_broker_clients*.py) share: the broker in
this process or as a ``logkernel serve`` process, the records they send, and the checks on
what comes back.

Every wait here is bounded (the constants below), so a broker that stops answering fails
a test with a message instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiokafka
import aiokafka.codec
import aiokafka.errors
import confluent_kafka
import confluent_kafka.admin

import logkernel

# kafka-python's protocol package calls importlib.resources.read_text/open_text at import
# time, which Python 3.11 deprecates; pytest turns that warning into an error. Every module
# that imports kafka-python ignores exactly this warning around its import, nothing else.
KAFKA_PYTHON_IMPORT_WARNING = r"(read_text|open_text) is deprecated"

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", KAFKA_PYTHON_IMPORT_WARNING, DeprecationWarning)
    import kafka
    import kafka.admin
    import kafka.codec
    import kafka.errors

    # A port of the Java client's murmur2: the reference for where keyed records must land.
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

# ---- patience -------------------------------------------------------------------------------
# Generous, because the test machine has 2 shared cores and the clients start threads; none of
# these is a timing assertion, only the point where a stuck test gives up and says why.

# A client request (metadata, produce, fetch, admin) answered by a local broker takes
# milliseconds; 10 s is long enough for a loaded machine and short enough that a broker which
# never answers fails the test in seconds, not after the clients' 30-60 s defaults.
CLIENT_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_MS = int(CLIENT_TIMEOUT_S * 1000)
# Consuming a few hundred records from a local broker takes well under a second.
CONSUME_TIMEOUT_S = 20.0
# `logkernel serve` imports numpy, cffi and kio before it listens: ~1 s, more under load.
SERVE_START_TIMEOUT_S = 30.0
# SIGTERM: the broker finishes in-flight requests (up to 5 s), flushes and closes.
SERVE_STOP_TIMEOUT_S = 20.0

# Got.timestamp_type values. The adapters translate each client's numbering: kafka-python and
# aiokafka give the batch attribute bit (0, 1), confluent-kafka librdkafka's enum (1, 2).
CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"

_UNSAFE_NAME = re.compile(r"[^a-zA-Z0-9._-]+")
_READY_LINE = re.compile(r"logkernel ready bootstrap=(\S+:\d+) data_dir=(.+)")


def topic_name(node_name: str) -> str:
    """A legal, unique-per-test topic name made from the test's node name."""
    return _UNSAFE_NAME.sub("-", node_name).strip("-.")[:200]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def kafka_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a non-null key (the Java client's rule)."""
    return (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions


def wait_until(condition: Any, timeout_s: float, what: str, interval_s: float = 0.02) -> Any:
    """Calls ``condition()`` until it returns something truthy (returned) or the time is up
    (AssertionError naming ``what``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


# ---- records --------------------------------------------------------------------------------

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class Sent:
    """A record as a test sends it; (key, value, headers) is unique within one sample."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int

    @property
    def content(self) -> tuple[bytes | None, bytes | None, Headers]:
        return (self.key, self.value, self.headers)


@dataclass(frozen=True)
class Got:
    """A record as a client returned it, normalised across clients."""

    partition: int
    offset: int
    timestamp_ms: int
    timestamp_type: str
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def content(self) -> tuple[bytes | None, bytes | None, Headers]:
        return (self.key, self.value, self.headers)


UNICODE_HEADER_KEY = "ünïcødé-ключ-鍵-🔑"
ALL_BYTES = bytes(range(256))


def sample_records(count: int, *, null_header_values: bool = True,
                   base_timestamp_ms: int | None = None) -> list[Sent]:
    """``count`` records covering what a client must carry unchanged: null keys, empty keys,
    empty and null values, every byte value, non-ASCII keys, compressible and random values,
    no headers, repeated and unicode header keys, empty and (where the client allows) null
    header values. Timestamps are explicit (CreateTime), one ms apart, a minute in the past."""
    base = now_ms() - 60_000 if base_timestamp_ms is None else base_timestamp_ms
    rng = random.Random(count)
    records = []
    for i in range(count):
        kind = i % 8
        key: bytes | None = b"key-%d" % i
        value: bytes | None
        if kind == 0:
            key, value = None, b"null key %d" % i
        elif kind == 1:
            value = b""
        elif kind == 2:
            value = ALL_BYTES[i % 256:] + ALL_BYTES[:i % 256] + i.to_bytes(4, "big")
        elif kind == 3:
            value = None
        elif kind == 4:
            key, value = b"", b"empty key %d" % i
        elif kind == 5:
            key, value = f"ключ-{i}".encode(), rng.randbytes(1000 + i % 1000)
        elif kind == 6:
            value = b"compressible %d " % i * 50
        else:
            value = rng.randbytes(i % 100)
        shape = i % 4
        headers: Headers
        if shape == 0:
            headers = ()
        elif shape == 1:
            headers = (("trace-id", b"%08d" % i),)
        elif shape == 2:
            headers = ((UNICODE_HEADER_KEY, b"\x00\xff\x80"), ("empty", b""), ("dup", b"1"),
                       ("dup", b"2"))
        else:
            headers = (("nullable", None if null_header_values else b"not null"),)
        records.append(Sent(key, value, headers, base + i))
    return records


def as_headers(raw: Iterable[tuple[str, bytes | None]] | None) -> Headers:
    return tuple((k, None if v is None else bytes(v)) for k, v in (raw or ()))


def check_round_trip(sent: Sequence[Sent], got: Sequence[Got], partitions: int, *,
                     acked: Sequence[tuple[int, int] | None] | None = None) -> None:
    """What a produce-then-consume round trip into a new topic must show:

    1. every record came back exactly once, byte for byte (key, value, headers);
    2. each partition's offsets are contiguous from 0;
    3. each partition holds its records in the order they were sent;
    4. keyed records are in the partition Kafka's murmur2 partitioner picks;
    5. timestamps are the producer's (CreateTime);
    6. where the producer reported (partition, offset), the record is there.
    """
    index = {record.content: i for i, record in enumerate(sent)}
    assert len(index) == len(sent), "sample records must be unique"
    by_partition: dict[int, list[Got]] = {}
    for record in got:
        by_partition.setdefault(record.partition, []).append(record)
    seen: set[int] = set()
    for partition, records in by_partition.items():
        records.sort(key=lambda r: r.offset)
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(records))), (
            f"partition {partition}: offsets are not contiguous from 0: {offsets[:20]}...")
        order = []
        for record in records:
            i = index.get(record.content)
            assert i is not None, f"partition {partition} offset {record.offset}: a record that " \
                                  f"was never sent: {record}"
            assert i not in seen, f"record {i} came back twice: {record}"
            seen.add(i)
            order.append(i)
            want = sent[i]
            assert record.timestamp_ms == want.timestamp_ms, (record, want)
            assert record.timestamp_type == CREATE_TIME, record
            if want.key is not None:
                assert partition == kafka_partition(want.key, partitions), (
                    f"key {want.key!r} went to partition {partition}, Kafka's partitioner "
                    f"says {kafka_partition(want.key, partitions)}")
            if acked is not None and acked[i] is not None:
                assert acked[i] == (partition, record.offset), (i, acked[i], record)
        assert order == sorted(order), f"partition {partition}: records out of send order"
    missing = sorted(set(range(len(sent))) - seen)
    assert not missing, f"{len(missing)} records never came back, e.g. {sent[missing[0]]}"


# ---- the embedded engine's consumer --------------------------------------------------------

def engine_read(engine: logkernel.Engine, topic: str, partitions: int, count: int,
                timeout_s: float = CONSUME_TIMEOUT_S) -> list[Got]:
    """``count`` records of ``topic`` read through the embedded consumer, from offset 0."""
    consumer = engine.consumer(auto_offset_reset="earliest")
    try:
        consumer.assign([(topic, p) for p in range(partitions)])
        for p in range(partitions):
            consumer.seek((topic, p), 0)
        out: list[Got] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            for r in consumer.poll(timeout_ms=200, max_records=1000):
                out.append(Got(r.partition, r.offset, r.timestamp_ms, CREATE_TIME, r.key, r.value,
                               as_headers(r.headers)))
        assert len(out) == count, f"the embedded consumer read {len(out)} of {count} records"
        return out
    finally:
        consumer.close(autocommit=False)


# ---- brokers --------------------------------------------------------------------------------

def in_process_broker(data_dir: Path, config: dict[str, Any] | None = None
                      ) -> Iterator[logkernel.Broker]:
    """A started ``logkernel.Broker`` on a free loopback port; stopped afterwards."""
    broker = logkernel.Broker(str(data_dir), listen="127.0.0.1:0", config=config)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def logkernel_command() -> list[str]:
    """The installed ``logkernel`` script next to this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("logkernel")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "logkernel"]


class ServeProcess:
    """``logkernel serve`` in its own process, ready (its ready line read) on return.

    Always used as a context manager: leaving it SIGKILLs the process if it still runs, so
    a failing test never leaves a broker behind."""

    def __init__(self, data_dir: Path, log_path: Path, *, listen: str = "127.0.0.1:0",
                 settings: Sequence[str] = (), advertised: str | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        command = [*logkernel_command(), "serve", "--data-dir", str(data_dir), "--listen", listen,
                   "--log-level", "info"]
        if advertised is not None:  # what clients are told to connect to (a proxy, say)
            command += ["--advertised", advertised]
        for setting in settings:
            command += ["--set", setting]
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in _cleanup
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log,
                                        stdin=subprocess.DEVNULL, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        try:
            self.bootstrap = self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(f"logkernel serve printed no ready line within "
                                     f"{SERVE_START_TIMEOUT_S} s; stdout {seen}; log:\n"
                                     f"{self.log_tail()}") from None
            if line is None:
                code = self.process.wait(timeout=SERVE_STOP_TIMEOUT_S)
                raise AssertionError(f"logkernel serve exited with {code} before it was ready; "
                                     f"stdout {seen}; log:\n{self.log_tail()}")
            seen.append(line)
            match = _READY_LINE.search(line)
            if match:
                assert Path(match.group(2)).resolve() == self.data_dir.resolve(), line
                return match.group(1)

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def terminate(self) -> int:
        """SIGTERM, then the exit code (SIGKILL and AssertionError if it does not exit)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=SERVE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"logkernel serve did not exit within {SERVE_STOP_TIMEOUT_S} s of "
                                 f"SIGTERM; log:\n{self.log_tail()}") from None
        self._cleanup()
        return code

    def kill(self) -> int:
        """SIGKILL (a crash: nothing is flushed or closed), then the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        code = self.process.wait(timeout=SERVE_STOP_TIMEOUT_S)
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        self._reader.join(timeout=SERVE_STOP_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill()
        elif not self._log.closed:
            self._cleanup()


# ---- the three clients behind one interface ---------------------------------------------------
#
# The matrix tests (tests/test_broker_clients.py) run the same checks through each client;
# these adapters are the only place that knows each client's calls. Each call makes its own
# client objects and closes them before returning, so no test leaks threads or sockets into
# the next. Admin calls differ too much between the clients to share: the admin tests use
# each client directly (tests/test_broker_clients_admin.py).

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


class ProduceFailed(Exception):
    """A produce the broker refused: ``codes`` are the Kafka error codes the client got."""

    def __init__(self, codes: set[int], detail: str) -> None:
        super().__init__(f"produce failed with Kafka error codes {sorted(codes)}: {detail}")
        self.codes = codes


@dataclass(frozen=True)
class Offsets:
    """A client's answers about one partition's offsets."""

    earliest: int
    latest: int
    by_time: list[tuple[int, int] | None]  # per asked timestamp: (offset, timestamp) or None
    max_timestamp: tuple[int, int] | None  # (offset, timestamp); None if the client cannot ask


class Client:
    name = ""
    # kafka-python refuses None as a header value (its send() checks for bytes).
    null_header_values = True

    def codec_skip_reason(self, codec: str) -> str | None:
        """Why this client cannot compress with ``codec`` here, or None if it can."""
        return None

    def produce(self, bootstrap: str, topic: str, records: Sequence[Sent], *, acks: int | str = "all",
                codec: str = "none", partition: int | None = None) -> list[tuple[int, int] | None]:
        """Sends ``records`` (linger 5 ms, so several records share a batch) and returns each
        one's (partition, offset) as acknowledged; None for each under acks=0. Raises
        ProduceFailed if the broker refused any."""
        raise NotImplementedError

    def consume(self, bootstrap: str, topic: str, partitions: int, count: int, *,
                start: dict[int, int] | None = None, reset: str = "earliest") -> list[Got]:
        """``count`` records from an assign()ed consumer (no group, no commits), starting at
        ``start`` (partition -> offset; default 0)."""
        raise NotImplementedError

    def out_of_range_error(self, bootstrap: str, topic: str, partition: int, offset: int) -> str:
        """Fetches from ``offset`` with no reset policy; returns the error the client raised."""
        raise NotImplementedError

    def offsets(self, bootstrap: str, topic: str, partition: int, timestamps: Sequence[int]) -> Offsets:
        raise NotImplementedError

    def arrival_seconds(self, bootstrap: str, topic: str, fetch_wait_ms: int,
                        append: Any) -> float:
        """A consumer at the end of partition 0 of ``topic`` (one record there already)
        polls for a while, so its fetch waits at the broker; then ``append()`` adds one
        record. Returns the seconds from ``append()`` to the consumer having it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


def _collect(poll: Any, count: int, what: str) -> list[Got]:
    out: list[Got] = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    while len(out) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: consumed {len(out)} of {count} records in "
                                 f"{CONSUME_TIMEOUT_S} s")
        out.extend(poll())
    return out


# ---- kafka-python ----------------------------------------------------------------------------

class KafkaPython(Client):
    name = "kafka-python"
    null_header_values = False

    def codec_skip_reason(self, codec: str) -> str | None:
        has = {"none": True, "gzip": kafka.codec.has_gzip(), "snappy": kafka.codec.has_snappy(),
               "lz4": kafka.codec.has_lz4(), "zstd": kafka.codec.has_zstd()}[codec]
        if has:
            return None
        package = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}.get(codec, codec)
        return (f"kafka-python compresses {codec} only with the {package} package, which is not "
                f"installed in this environment (pip install {package})")

    def producer(self, bootstrap: str, *, acks: int | str = "all", codec: str = "none",
                 linger_ms: int = 5) -> Any:
        return kafka.KafkaProducer(
            bootstrap_servers=bootstrap, acks=acks, compression_type=None if codec == "none" else codec,
            linger_ms=linger_ms, enable_idempotence=acks in ("all", -1),
            request_timeout_ms=CLIENT_TIMEOUT_MS, max_block_ms=CLIENT_TIMEOUT_MS)

    def consumer(self, bootstrap: str, reset: str = "earliest", fetch_wait_ms: int = 500) -> Any:
        return kafka.KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset=reset, fetch_max_wait_ms=fetch_wait_ms,
            request_timeout_ms=max(CLIENT_TIMEOUT_MS, fetch_wait_ms + 5000))

    def produce(self, bootstrap: str, topic: str, records: Sequence[Sent], *, acks: int | str = "all",
                codec: str = "none", partition: int | None = None) -> list[tuple[int, int] | None]:
        producer = self.producer(bootstrap, acks=acks, codec=codec)
        try:
            futures = [producer.send(topic, value=r.value, key=r.key, headers=list(r.headers),
                                     partition=partition, timestamp_ms=r.timestamp_ms)
                       for r in records]
            producer.flush(timeout=CLIENT_TIMEOUT_S)
            out: list[tuple[int, int] | None] = []
            failures: list[kafka.errors.KafkaError] = []
            for future in futures:
                try:
                    metadata = future.get(timeout=CLIENT_TIMEOUT_S)
                except kafka.errors.KafkaError as exc:
                    failures.append(exc)
                    continue
                out.append(None if acks == 0 else (metadata.partition, metadata.offset))
            if failures:
                raise ProduceFailed({getattr(e, "errno", -1) for e in failures}, repr(failures[0]))
            return out
        finally:
            producer.close(timeout=CLIENT_TIMEOUT_S)

    @staticmethod
    def got(record: Any) -> Got:
        return Got(record.partition, record.offset, record.timestamp,
                   LOG_APPEND_TIME if record.timestamp_type == 1 else CREATE_TIME,
                   record.key, record.value, as_headers(record.headers))

    def consume(self, bootstrap: str, topic: str, partitions: int, count: int, *,
                start: dict[int, int] | None = None, reset: str = "earliest") -> list[Got]:
        consumer = self.consumer(bootstrap, reset)
        try:
            tps = [kafka.TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, (start or {}).get(tp.partition, 0))

            def poll() -> list[Got]:
                batches = consumer.poll(timeout_ms=200)
                return [self.got(r) for records in batches.values() for r in records]

            return _collect(poll, count, f"kafka-python consuming {topic}")
        finally:
            consumer.close(autocommit=False)

    def out_of_range_error(self, bootstrap: str, topic: str, partition: int, offset: int) -> str:
        consumer = self.consumer(bootstrap, reset="none")
        try:
            tp = kafka.TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            deadline = time.monotonic() + CONSUME_TIMEOUT_S
            while time.monotonic() < deadline:
                try:
                    records = consumer.poll(timeout_ms=200)
                except kafka.errors.KafkaError as exc:
                    return f"{type(exc).__name__}: {exc}"
                assert not records, f"kafka-python read {records} from below the log start"
            raise AssertionError("kafka-python never reported the offset out of range")
        finally:
            consumer.close(autocommit=False)

    def offsets(self, bootstrap: str, topic: str, partition: int, timestamps: Sequence[int]) -> Offsets:
        tp = kafka.TopicPartition(topic, partition)
        consumer = self.consumer(bootstrap)
        try:
            earliest = consumer.beginning_offsets([tp], timeout_ms=CLIENT_TIMEOUT_MS)[tp]
            latest = consumer.end_offsets([tp], timeout_ms=CLIENT_TIMEOUT_MS)[tp]
            by_time: list[tuple[int, int] | None] = []
            for ts in timestamps:
                found = consumer.offsets_for_times({tp: ts}, timeout_ms=CLIENT_TIMEOUT_MS)[tp]
                by_time.append(None if found is None else (found.offset, found.timestamp))
        finally:
            consumer.close(autocommit=False)
        admin = kafka.KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=CLIENT_TIMEOUT_MS)
        try:
            answer = admin.list_partition_offsets({tp: kafka.admin.OffsetSpec.MAX_TIMESTAMP})[tp]
            # The admin client asks ListOffsets too: it must agree with the consumer's answers.
            listed = admin.list_partition_offsets({tp: kafka.admin.OffsetSpec.EARLIEST})[tp]
            assert listed.offset == earliest, (listed, earliest)
        finally:
            admin.close()
        max_timestamp = None if answer.offset < 0 else (answer.offset, answer.timestamp)
        return Offsets(earliest, latest, by_time, max_timestamp)

    def arrival_seconds(self, bootstrap: str, topic: str, fetch_wait_ms: int, append: Any) -> float:
        consumer = self.consumer(bootstrap, fetch_wait_ms=fetch_wait_ms)
        try:
            tp = kafka.TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            _collect(lambda: consumer.poll(timeout_ms=200).get(tp, []), 1, "kafka-python warm-up")
            assert not consumer.poll(timeout_ms=300)
            began = time.monotonic()
            append()
            _collect(lambda: consumer.poll(timeout_ms=50).get(tp, []), 1, "kafka-python long poll")
            return time.monotonic() - began
        finally:
            consumer.close(autocommit=False)


# ---- confluent-kafka (librdkafka) ------------------------------------------------------------

class Confluent(Client):
    name = "confluent-kafka"

    @staticmethod
    def base_config(bootstrap: str) -> dict[str, Any]:
        # socket.timeout.ms bounds every request; the default (60 s) would let a broker that
        # stops answering hold a test for a minute.
        return {"bootstrap.servers": bootstrap, "socket.timeout.ms": CLIENT_TIMEOUT_MS}

    def producer(self, bootstrap: str, *, acks: int | str = "all", codec: str = "none",
                 **extra: Any) -> Any:
        return confluent_kafka.Producer({
            **self.base_config(bootstrap), "acks": str(acks), "compression.type": codec,
            # librdkafka's default partitioner is consistent_random (CRC32 of the key);
            # murmur2_random is the Java client's choice, the one the tests check.
            "partitioner": "murmur2_random", "linger.ms": 5,
            "enable.idempotence": acks in ("all", -1),
            "message.timeout.ms": CLIENT_TIMEOUT_MS, **extra})

    def consumer(self, bootstrap: str, reset: str = "earliest", **extra: Any) -> Any:
        # librdkafka requires a group.id even for assign(); with no subscribe() and no
        # commits it never needs a group coordinator (not offered by this broker).
        return confluent_kafka.Consumer({
            **self.base_config(bootstrap), "group.id": "logkernel-tests",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": reset, **extra})

    def produce(self, bootstrap: str, topic: str, records: Sequence[Sent], *, acks: int | str = "all",
                codec: str = "none", partition: int | None = None) -> list[tuple[int, int] | None]:
        producer = self.producer(bootstrap, acks=acks, codec=codec)
        out: list[tuple[int, int] | None] = [None] * len(records)
        failures: list[Any] = []

        def delivered(i: int, error: Any, message: Any) -> None:
            if error is not None:
                failures.append(error)
            elif acks != 0:
                out[i] = (message.partition(), message.offset())

        for i, r in enumerate(records):
            extra = {} if partition is None else {"partition": partition}
            producer.produce(topic, value=r.value, key=r.key, headers=list(r.headers),
                             timestamp=r.timestamp_ms,
                             on_delivery=lambda e, m, i=i: delivered(i, e, m), **extra)
            producer.poll(0)
        remaining = producer.flush(CLIENT_TIMEOUT_S * 2)
        assert remaining == 0, f"confluent-kafka: {remaining} records still undelivered"
        if failures:
            raise ProduceFailed({e.code() for e in failures}, str(failures[0]))
        return out

    @staticmethod
    def got(message: Any) -> Got:
        kind, timestamp = message.timestamp()
        return Got(message.partition(), message.offset(), timestamp,
                   LOG_APPEND_TIME if kind == confluent_kafka.TIMESTAMP_LOG_APPEND_TIME else CREATE_TIME,
                   message.key(), message.value(), as_headers(message.headers()))

    def _poll(self, consumer: Any) -> list[Got]:
        out = []
        for message in consumer.consume(num_messages=1000, timeout=0.2):
            if message.error() is not None:
                raise AssertionError(f"confluent-kafka consume error: {message.error()}")
            out.append(self.got(message))
        return out

    def consume(self, bootstrap: str, topic: str, partitions: int, count: int, *,
                start: dict[int, int] | None = None, reset: str = "earliest") -> list[Got]:
        consumer = self.consumer(bootstrap, reset)
        try:
            consumer.assign([confluent_kafka.TopicPartition(topic, p, (start or {}).get(p, 0))
                             for p in range(partitions)])
            return _collect(lambda: self._poll(consumer), count, f"confluent-kafka consuming {topic}")
        finally:
            consumer.close()

    def out_of_range_error(self, bootstrap: str, topic: str, partition: int, offset: int) -> str:
        consumer = self.consumer(bootstrap, reset="error")
        try:
            consumer.assign([confluent_kafka.TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + CONSUME_TIMEOUT_S
            while time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                assert error is not None, "confluent-kafka read a record from below the log start"
                return f"{error.name()}: {error.str()}"
            raise AssertionError("confluent-kafka never reported the offset out of range")
        finally:
            consumer.close()

    def offsets(self, bootstrap: str, topic: str, partition: int, timestamps: Sequence[int]) -> Offsets:
        TopicPartition = confluent_kafka.TopicPartition
        consumer = self.consumer(bootstrap)
        try:
            earliest, latest = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                              timeout=CLIENT_TIMEOUT_S)
            by_time: list[tuple[int, int] | None] = []
            for ts in timestamps:
                [found] = consumer.offsets_for_times([TopicPartition(topic, partition, ts)],
                                                     timeout=CLIENT_TIMEOUT_S)
                assert found.error is None, found
                # The consumer API gives no timestamp; the admin API below does.
                by_time.append(None if found.offset < 0 else (found.offset, -1))
        finally:
            consumer.close()
        OffsetSpec = confluent_kafka.admin.OffsetSpec
        admin = confluent_kafka.admin.AdminClient(self.base_config(bootstrap))
        tp = TopicPartition(topic, partition)

        def ask(spec: Any) -> Any:
            [future] = admin.list_offsets({tp: spec}, request_timeout=CLIENT_TIMEOUT_S).values()
            return future.result(timeout=CLIENT_TIMEOUT_S)

        assert ask(OffsetSpec.earliest()).offset == earliest
        assert ask(OffsetSpec.latest()).offset == latest
        for i, ts in enumerate(timestamps):
            info = ask(OffsetSpec.for_timestamp(ts))
            if by_time[i] is None:
                assert info.offset < 0, (ts, info.offset)
            else:
                assert info.offset == by_time[i][0], (ts, info.offset, by_time[i])
                by_time[i] = (info.offset, info.timestamp)
        newest = ask(OffsetSpec.max_timestamp())
        max_timestamp = None if newest.offset < 0 else (newest.offset, newest.timestamp)
        return Offsets(earliest, latest, by_time, max_timestamp)

    def arrival_seconds(self, bootstrap: str, topic: str, fetch_wait_ms: int, append: Any) -> float:
        consumer = self.consumer(bootstrap, **{"fetch.wait.max.ms": fetch_wait_ms,
                                               "socket.timeout.ms": fetch_wait_ms + CLIENT_TIMEOUT_MS})
        try:
            consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
            _collect(lambda: self._poll(consumer), 1, "confluent-kafka warm-up")
            assert consumer.poll(0.3) is None
            began = time.monotonic()
            append()
            _collect(lambda: self._poll(consumer), 1, "confluent-kafka long poll")
            return time.monotonic() - began
        finally:
            consumer.close()


# ---- aiokafka ----------------------------------------------------------------------------------

def run_async(coroutine: Any, timeout_s: float = CONSUME_TIMEOUT_S + CLIENT_TIMEOUT_S) -> Any:
    """Runs an aiokafka coroutine on a fresh event loop, bounded by ``timeout_s``."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout_s))


class AioKafka(Client):
    name = "aiokafka"

    def codec_skip_reason(self, codec: str) -> str | None:
        codecs = aiokafka.codec
        has = {"none": True, "gzip": codecs.has_gzip(), "snappy": codecs.has_snappy(),
               "lz4": codecs.has_lz4(), "zstd": codecs.has_zstd()}[codec]
        return None if has else f"aiokafka cannot compress {codec} here (its cramjam lacks it)"

    @staticmethod
    def producer(bootstrap: str, *, acks: int | str = "all", codec: str = "none") -> Any:
        return aiokafka.AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks=acks, compression_type=None if codec == "none" else codec,
            linger_ms=5, enable_idempotence=acks in ("all", -1), request_timeout_ms=CLIENT_TIMEOUT_MS)

    @staticmethod
    def consumer(bootstrap: str, reset: str = "earliest", fetch_wait_ms: int = 500) -> Any:
        return aiokafka.AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset=reset,
            fetch_max_wait_ms=fetch_wait_ms,
            request_timeout_ms=max(CLIENT_TIMEOUT_MS, fetch_wait_ms + 5000))

    @staticmethod
    def got(record: Any) -> Got:
        return Got(record.partition, record.offset, record.timestamp,
                   LOG_APPEND_TIME if record.timestamp_type == 1 else CREATE_TIME,
                   record.key, record.value, as_headers(record.headers))

    def produce(self, bootstrap: str, topic: str, records: Sequence[Sent], *, acks: int | str = "all",
                codec: str = "none", partition: int | None = None) -> list[tuple[int, int] | None]:
        async def main() -> list[tuple[int, int] | None]:
            producer = self.producer(bootstrap, acks=acks, codec=codec)
            await producer.start()
            try:
                futures = [await producer.send(topic, value=r.value, key=r.key, partition=partition,
                                               timestamp_ms=r.timestamp_ms, headers=list(r.headers))
                           for r in records]
                results = await asyncio.gather(*futures, return_exceptions=True)
            finally:
                await producer.stop()
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise ProduceFailed({getattr(e, "errno", -1) for e in failures}, repr(failures[0]))
            return [None if acks == 0 else (m.partition, m.offset) for m in results]

        return run_async(main())

    async def _assigned(self, bootstrap: str, topic: str, starts: dict[int, int], reset: str,
                        fetch_wait_ms: int = 500) -> Any:
        consumer = self.consumer(bootstrap, reset, fetch_wait_ms)
        await consumer.start()
        tps = [aiokafka.TopicPartition(topic, p) for p in starts]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp.partition])
        return consumer

    async def _collect(self, consumer: Any, count: int, what: str, poll_ms: int = 200) -> list[Got]:
        out: list[Got] = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(out) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: consumed {len(out)} of {count} records")
            batches = await consumer.getmany(timeout_ms=poll_ms)
            out.extend(self.got(r) for records in batches.values() for r in records)
        return out

    def consume(self, bootstrap: str, topic: str, partitions: int, count: int, *,
                start: dict[int, int] | None = None, reset: str = "earliest") -> list[Got]:
        async def main() -> list[Got]:
            starts = {p: (start or {}).get(p, 0) for p in range(partitions)}
            consumer = await self._assigned(bootstrap, topic, starts, reset)
            try:
                return await self._collect(consumer, count, f"aiokafka consuming {topic}")
            finally:
                await consumer.stop()

        return run_async(main())

    def out_of_range_error(self, bootstrap: str, topic: str, partition: int, offset: int) -> str:
        async def main() -> str:
            consumer = await self._assigned(bootstrap, topic, {partition: offset}, "none")
            try:
                deadline = time.monotonic() + CONSUME_TIMEOUT_S
                while time.monotonic() < deadline:
                    try:
                        records = await consumer.getmany(timeout_ms=200)
                    except aiokafka.errors.KafkaError as exc:
                        return f"{type(exc).__name__}: {exc}"
                    assert not records, f"aiokafka read {records} from below the log start"
                raise AssertionError("aiokafka never reported the offset out of range")
            finally:
                await consumer.stop()

        return run_async(main())

    def offsets(self, bootstrap: str, topic: str, partition: int, timestamps: Sequence[int]) -> Offsets:
        async def main() -> Offsets:
            tp = aiokafka.TopicPartition(topic, partition)
            consumer = self.consumer(bootstrap)
            await consumer.start()
            try:
                consumer.assign([tp])
                earliest = (await consumer.beginning_offsets([tp]))[tp]
                latest = (await consumer.end_offsets([tp]))[tp]
                by_time: list[tuple[int, int] | None] = []
                for ts in timestamps:
                    found = (await consumer.offsets_for_times({tp: ts}))[tp]
                    by_time.append(None if found is None else (found.offset, found.timestamp))
            finally:
                await consumer.stop()
            # aiokafka has no call for ListOffsets' max-timestamp (-3) query.
            return Offsets(earliest, latest, by_time, None)

        return run_async(main())

    def arrival_seconds(self, bootstrap: str, topic: str, fetch_wait_ms: int, append: Any) -> float:
        async def main() -> float:
            consumer = await self._assigned(bootstrap, topic, {0: 0}, "earliest", fetch_wait_ms)
            try:
                await self._collect(consumer, 1, "aiokafka warm-up")
                assert not await consumer.getmany(timeout_ms=300)
                began = time.monotonic()
                append()
                await self._collect(consumer, 1, "aiokafka long poll", poll_ms=50)
                return time.monotonic() - began
            finally:
                await consumer.stop()

        return run_async(main())


CLIENTS: list[Client] = [KafkaPython(), Confluent(), AioKafka()]
