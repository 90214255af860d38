"""Consumer groups over the wire: real clients in their own processes (tests/group_workers.py:
kafka-python 3.0 and confluent-kafka 2.16 / librdkafka), the broker as a ``logkernel serve``
process or a ``logkernel.Broker`` in this process, real files.

- Three members share six partitions, commit after processing; one is killed with SIGKILL
  mid-run. After its session timeout the survivors take its partitions, every record
  produced is processed at least once, the committed offsets reach the log end, no partition
  is ever owned by two live members at once, and every owner resumes at the committed offset.
- A broker restart (SIGTERM, start again on the same data directory) keeps every committed
  offset and the members go on from them. As in Kafka, which stores a group's generation and
  members in __consumer_offsets, the restarted broker still knows the group: its members see
  no rebalance, no commit of theirs is refused, nothing is processed twice.
- A static member (group.instance.id) killed and restarted within its session timeout gets
  its partitions back; the others see no rebalance and the generation does not move.
- An embedded consumer and a remote one in one group split the partitions and between them
  read everything exactly once.
- librdkafka's KIP-848 protocol (group.protocol=consumer): two members split a topic; when
  one leaves, the other gets everything.
- Admin over the wire, both admin clients: list, describe (members, assignments, state),
  list offsets, alter and delete offsets (refused for a subscribed topic), delete the group
  (refused while it has members).

The evidence of the multi-process tests is the workers' logs (format in
tests/group_workers.py): every assignment change and every processed record, stamped with
CLOCK_MONOTONIC so events of different processes share one time line. The checks on them
(``check_ownership`` and friends) are pure functions with their own tests, fed logs of
broken runs they must reject.

Every wait is bounded; every child process is killed on the way out, whatever happens.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import confluent_kafka.admin
import pytest

import logkernel
from logkernel.protocol import apis
from tests import broker_support as support
from tests.test_broker_protocol import RawClient
from tests.test_broker_protocol import request as raw_request

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", support.KAFKA_PYTHON_IMPORT_WARNING, DeprecationWarning)
    import kafka
    import kafka.admin
    import kafka.errors

WORKER_SCRIPT = Path(__file__).with_name("group_workers.py")
LIBRARIES = ("kafka-python", "confluent-kafka")

# ---- timing ---------------------------------------------------------------------------------
# The broker's group settings for these tests: no initial rebalance delay (Kafka's 3 s would
# be added to every test), and a minimum session timeout low enough for the short sessions
# below (Kafka's minimum is 6 s).
GROUP_SETTINGS = {"group.initial.rebalance.delay.ms": 0, "group.min.session.timeout.ms": 1000}
# The members' session timeout where a killed member must be noticed: 6 s, the shortest
# Kafka itself allows, so a test of a dead member takes seconds, not the default 45.
SESSION_TIMEOUT_MS = 6000
# Heartbeats every 500 ms: a survivor hears of a rebalance within half a second, and twelve
# heartbeats fit in a session, so a busy 2-core machine never expires a live member.
HEARTBEAT_MS = 500
# Static members: a session long enough that a member killed and restarted a second later is
# back well inside it (a Python client takes 1-3 s to start here), short enough to bound the test.
STATIC_SESSION_TIMEOUT_MS = 15_000
# Starting a worker (interpreter, client import) and joining a group of three, with the
# rebalances their staggered arrival causes: 3-5 s here, more under load.
JOIN_TIMEOUT_S = 40.0
# A worker given its stop file closes its consumer (a LeaveGroup, or librdkafka's final
# revocation) and exits: well under a second.
WORKER_STOP_TIMEOUT_S = 30.0
# Records reach a member and are processed and committed within a second of being produced.
PROCESS_TIMEOUT_S = 30.0
# The producer's pace while a member dies: 200 records a second, so records keep arriving
# through the session timeout and the rebalance, some 1,500 in all.
PRODUCE_RATE_PER_S = 200


# ---- the workers' logs and the checks on them --------------------------------------------------

def read_events(path: Path) -> list[dict[str, Any]]:
    """The events a worker logged. Each line is one write(); a line being written as the file
    is read can only be the last, and is left for the next read."""
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


OWNERSHIP_EVENTS = ("assigned", "revoked", "lost")


def owned_now(events: Sequence[Mapping[str, Any]]) -> set[int]:
    """The partitions a worker owns after these events."""
    owned: set[int] = set()
    for event in events:
        if event["event"] == "assigned":
            owned |= set(event["partitions"])
        elif event["event"] in ("revoked", "lost"):
            owned -= set(event["partitions"])
    return owned


@dataclass(frozen=True)
class Ownership:
    """``worker`` owned ``partition`` from ``start_ns`` (entering its assign callback) to
    ``end_ns`` (leaving its revoke or lost callback, or its death)."""

    worker: str
    partition: int
    start_ns: int
    end_ns: int


def ownership_intervals(worker: str, events: Sequence[Mapping[str, Any]], end_ns: int) -> list[Ownership]:
    """Each (partition, time span) the worker owned, from its callbacks; what it still owned
    at the end it owned until ``end_ns`` (its exit or its death). A partition assigned while
    already owned is a contradiction in the client's account. One revoked while not owned is
    not: kafka-python, closing while an eager rebalance is under way, revokes again what it
    revoked when the rebalance began."""
    since: dict[int, int] = {}
    out = []
    for event in events:
        if event["event"] == "assigned":
            for p in event["partitions"]:
                assert p not in since, f"{worker} was assigned partition {p}, which it owned: {event}"
                since[p] = event["t"]
        elif event["event"] in ("revoked", "lost"):
            for p in event["partitions"]:
                if p in since:
                    out.append(Ownership(worker, p, since.pop(p), event["t"]))
    out.extend(Ownership(worker, p, start, end_ns) for p, start in since.items())
    return out


def check_ownership(logs: Mapping[str, Sequence[Mapping[str, Any]]], end_ns: Mapping[str, int]) -> None:
    """No partition is owned by two workers at the same time, and every record a worker
    processed it processed while it owned the record's partition.

    Kafka's eager rebalance makes the first hold exactly: a member leaves its revoke callback
    before it sends JoinGroup; the coordinator answers SyncGroup, which carries the new
    assignment, only after every member has joined; so an old owner's revocation ends before
    the new owner's assign callback begins. A member that died owned its partitions until its
    death (``end_ns``): the coordinator may give them away only after its session timed out.
    """
    intervals = [iv for name, events in logs.items()
                 for iv in ownership_intervals(name, events, end_ns[name])]
    overlaps = [(a, b) for a, b in itertools.combinations(intervals, 2)
                if a.partition == b.partition and a.worker != b.worker
                and a.start_ns < b.end_ns and b.start_ns < a.end_ns]
    assert not overlaps, "partitions owned by two members at once:\n" + "\n".join(
        f"  partition {a.partition}: {a.worker} {a.start_ns}..{a.end_ns}, {b.worker} "
        f"{b.start_ns}..{b.end_ns} ({(min(a.end_ns, b.end_ns) - max(a.start_ns, b.start_ns)) / 1e6:.1f} ms)"
        for a, b in overlaps)
    for name, events in logs.items():
        mine = [iv for iv in intervals if iv.worker == name]
        for event in events:
            if event["event"] == "record" and not any(
                    iv.partition == event["p"] and iv.start_ns <= event["t"] <= iv.end_ns for iv in mine):
                raise AssertionError(f"{name} processed a record of partition {event['p']} it did "
                                     f"not own: {event}")


def check_resume_positions(logs: Mapping[str, Sequence[Mapping[str, Any]]], end_ns: Mapping[str, int],
                           killed: Sequence[str] = ()) -> None:
    """Every owner of a partition starts where the group's commits say and reads on without
    gaps or repeats.

    In each span of ownership the processed offsets are consecutive, and the first is the
    group's committed offset at the time of the assignment: at least the newest commit any
    member had seen acknowledged by then (resuming below it would process committed records
    again), and at most what a killed member may have committed without living to log the
    acknowledgement (one past the last record it processed; a failed commit's offsets count
    too, as a timed-out commit may have been stored). With nothing committed, the log start."""
    commits: dict[int, list[tuple[int, int]]] = {}     # partition -> [(t, offset)], acknowledged
    maybe: dict[int, list[tuple[int, int]]] = {}       # partition -> [(t, offset)], perhaps stored
    for name, events in logs.items():
        for event in events:
            if event["event"] == "committed":
                for p, offset in event["offsets"].items():
                    commits.setdefault(int(p), []).append((event["t"], offset))
            elif event["event"] == "commit_failed":
                for p, offset in event["offsets"].items():
                    maybe.setdefault(int(p), []).append((event["t"], offset))
            elif event["event"] == "record" and name in killed:
                maybe.setdefault(event["p"], []).append((event["t"], event["o"] + 1))
    for name, events in logs.items():
        for span in ownership_intervals(name, events, end_ns[name]):
            offsets = [e["o"] for e in events if e["event"] == "record" and e["p"] == span.partition
                       and span.start_ns <= e["t"] <= span.end_ns]
            if not offsets:
                continue
            at_least = max((o for t, o in commits.get(span.partition, []) if t < span.start_ns), default=0)
            at_most = max([at_least] + [o for t, o in maybe.get(span.partition, []) if t < span.start_ns])
            assert at_least <= offsets[0] <= at_most, (
                f"{name} began partition {span.partition} at offset {offsets[0]}; the group had "
                f"committed {at_least}" + (f" (perhaps up to {at_most})" if at_most > at_least else ""))
            gaps = [(a, b) for a, b in itertools.pairwise(offsets) if b != a + 1]
            assert not gaps, f"{name} read partition {span.partition} with gaps or repeats: {gaps[:5]}"


def processed(logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> Counter[tuple[int, int, str]]:
    """How many times each (partition, offset, value) was processed, by all workers together."""
    return Counter((e["p"], e["o"], e["v"]) for events in logs.values() for e in events
                   if e["event"] == "record")


def check_processed(logs: Mapping[str, Sequence[Mapping[str, Any]]], produced: Mapping[tuple[int, int], str],
                    *, exactly_once: bool) -> None:
    """Every produced record (partition, offset -> value) was processed, with its value, at
    least once (or exactly once); nothing else was."""
    counts = processed(logs)
    expected = {(p, o, v) for (p, o), v in produced.items()}
    missing = sorted(expected - set(counts))
    assert not missing, f"{len(missing)} of {len(expected)} records never processed, e.g. {missing[:5]}"
    unexpected = sorted(set(counts) - expected)
    assert not unexpected, f"records processed that were never produced: {unexpected[:5]}"
    if exactly_once:
        twice = sorted(r for r, n in counts.items() if n > 1)
        assert not twice, f"{len(twice)} records processed more than once, e.g. {twice[:5]}"


def last_commits(logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[int, int]:
    """Per partition, the newest offset a worker had acknowledged as committed."""
    newest: dict[int, tuple[int, int]] = {}
    for events in logs.values():
        for event in events:
            if event["event"] == "committed":
                for p, offset in event["offsets"].items():
                    if int(p) not in newest or event["t"] > newest[int(p)][0]:
                        newest[int(p)] = (event["t"], offset)
    return {p: offset for p, (_, offset) in newest.items()}


# ---- the checks reject broken runs ------------------------------------------------------------

def _event(t: int, event: str, **fields: Any) -> dict[str, Any]:
    return {"t": t, "event": event, **fields}


def test_ownership_check_rejects_an_overlap() -> None:
    handed_over = {
        "a": [_event(10, "assigned", partitions=[0, 1]), _event(20, "record", p=0, o=0, v="x"),
              _event(30, "revoked", partitions=[0, 1])],
        "b": [_event(35, "assigned", partitions=[0, 1]), _event(40, "record", p=0, o=1, v="y")],
    }
    check_ownership(handed_over, {"a": 100, "b": 100})  # a clean hand-over passes
    # b is told of partition 0 before a has finished giving it up.
    early = {**handed_over, "b": [_event(25, "assigned", partitions=[0, 1])]}
    with pytest.raises(AssertionError, match="owned by two members at once"):
        check_ownership(early, {"a": 100, "b": 100})
    # a dies owning partition 0 (no revocation); b gets it before a is dead.
    dead = {"a": handed_over["a"][:2], "b": handed_over["b"]}
    check_ownership(dead, {"a": 34, "b": 100})
    with pytest.raises(AssertionError, match="owned by two members at once"):
        check_ownership(dead, {"a": 36, "b": 100})
    # a processes a record after its revocation.
    late = {**handed_over, "a": [*handed_over["a"], _event(31, "record", p=1, o=0, v="z")]}
    with pytest.raises(AssertionError, match="did not own"):
        check_ownership(late, {"a": 100, "b": 100})


def test_resume_check_rejects_a_wrong_start() -> None:
    def run(b_first: int, *, commit: int = 5, killed: Sequence[str] = ()) -> dict[str, Any]:
        return {
            "a": [_event(10, "assigned", partitions=[0]),
                  *[_event(11 + o, "record", p=0, o=o, v="") for o in range(7)],
                  _event(20, "committed", offsets={"0": commit})],
            "b": [_event(30, "assigned", partitions=[0]), _event(31, "record", p=0, o=b_first, v="")],
        }

    ends = {"a": 25, "b": 100}
    check_resume_positions(run(5), ends)
    with pytest.raises(AssertionError, match="began partition 0 at offset 4"):
        check_resume_positions(run(4), ends)       # below the commit: committed records again
    with pytest.raises(AssertionError, match="began partition 0 at offset 6"):
        check_resume_positions(run(6), ends)       # above it: a record skipped
    # a was killed after processing offset 6: its commit of 7 may have been stored unlogged.
    check_resume_positions(run(7), ends, killed=["a"])
    with pytest.raises(AssertionError, match="perhaps up to 7"):
        check_resume_positions(run(8), ends, killed=["a"])
    gap = run(5)
    gap["b"].append(_event(32, "record", p=0, o=7, v=""))
    with pytest.raises(AssertionError, match="gaps or repeats"):
        check_resume_positions(gap, ends)


# ---- workers ----------------------------------------------------------------------------------

class Worker:
    """One tests/group_workers.py process and its log."""

    def __init__(self, directory: Path, name: str, library: str, bootstrap: str, group: str,
                 topic: str, *, instance_id: str | None = None,
                 session_timeout_ms: int = SESSION_TIMEOUT_MS, heartbeat_ms: int = HEARTBEAT_MS,
                 assignor: str = "range", protocol: str = "classic") -> None:
        self.name = name
        self.log_path = directory / f"{name}.jsonl"
        self.stop_path = directory / f"{name}.stop"
        self.stderr_path = directory / f"{name}.stderr"
        self.ended_ns: int | None = None
        command = [sys.executable, str(WORKER_SCRIPT), "--library", library, "--bootstrap", bootstrap,
                   "--group", group, "--topic", topic, "--log", str(self.log_path),
                   "--stop", str(self.stop_path), "--name", name,
                   "--session-timeout-ms", str(session_timeout_ms), "--heartbeat-ms", str(heartbeat_ms),
                   "--assignor", assignor, "--protocol", protocol]
        if instance_id is not None:
            command += ["--instance-id", instance_id]
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=stderr)

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.log_path)

    def owned(self) -> set[int]:
        return owned_now(self.events())

    def records(self) -> int:
        return sum(e["event"] == "record" for e in self.events())

    def kill(self) -> None:
        """SIGKILL; its ownership ends when it is dead."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
        self.ended_ns = time.monotonic_ns()

    def stop(self) -> None:
        """Asks the worker to close its consumer and exit; it must, with status 0."""
        self.stop_path.touch()
        try:
            code = self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            raise AssertionError(f"{self.name} did not stop within {WORKER_STOP_TIMEOUT_S} s\n"
                                 f"{self.report()}") from None
        self.ended_ns = time.monotonic_ns()
        assert code == 0, f"{self.name} exited with {code}\n{self.report()}"

    def end_ns(self) -> int:
        return self.ended_ns if self.ended_ns is not None else time.monotonic_ns()

    def report(self) -> str:
        """The worker's last log lines (records left out) and its stderr, for a failure."""
        events = [e for e in self.events() if e["event"] != "record"]
        try:
            stderr = self.stderr_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            stderr = ""
        return (f"--- {self.name} (pid {self.process.pid}, exit {self.process.poll()}) events:\n"
                + "\n".join(json.dumps(e) for e in events[-25:]) + f"\n--- stderr:\n{stderr}")


class Workers:
    """The workers of a test; leaving kills whichever still run."""

    def __init__(self, directory: Path, bootstrap: str, group: str, topic: str, library: str,
                 **options: Any) -> None:
        self.directory, self.bootstrap, self.group, self.topic = directory, bootstrap, group, topic
        self.library, self.options = library, options
        self.all: list[Worker] = []

    def start(self, name: str, **options: Any) -> Worker:
        worker = Worker(self.directory, name, self.library, self.bootstrap, self.group, self.topic,
                        **{**self.options, **options})
        self.all.append(worker)
        return worker

    def logs(self) -> dict[str, list[dict[str, Any]]]:
        return {w.name: w.events() for w in self.all}

    def end_times(self) -> dict[str, int]:
        return {w.name: w.end_ns() for w in self.all}

    def report(self) -> str:
        return "\n".join(w.report() for w in self.all)

    def wait_until(self, condition: Any, timeout_s: float, what: str) -> Any:
        """support.wait_until, with every worker's log in the failure message; fails at once
        if a worker that should run has exited."""
        def check() -> Any:
            for w in self.all:
                if w.ended_ns is None and w.process.poll() is not None:
                    raise AssertionError(f"{w.name} exited ({w.process.returncode}) while waiting "
                                         f"for {what}\n{self.report()}")
            return condition()

        try:
            return support.wait_until(check, timeout_s, what, interval_s=0.05)
        except AssertionError as exc:
            if "exited" in str(exc):
                raise
            raise AssertionError(f"{exc}\n{self.report()}") from None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.all:
            if w.process.poll() is None:
                w.process.kill()
                w.process.wait(timeout=WORKER_STOP_TIMEOUT_S)


def split_evenly(workers: Sequence[Worker], partitions: int) -> bool:
    """Whether these workers own disjoint sets of partitions that cover all ``partitions``,
    the same number each (as the range assignor splits a multiple of the member count)."""
    owned = [w.owned() for w in workers]
    return (sum(map(len, owned)) == partitions and set().union(*owned) == set(range(partitions))
            and len({len(o) for o in owned}) == 1)


def covered_by(workers: Sequence[Worker], partitions: int) -> bool:
    owned = [w.owned() for w in workers]
    return sum(map(len, owned)) == partitions and set().union(*owned) == set(range(partitions))


# ---- producing --------------------------------------------------------------------------------

def confluent_producer(bootstrap: str) -> Any:
    return confluent_kafka.Producer({
        **support.Confluent.base_config(bootstrap), "acks": "all", "enable.idempotence": True,
        "partitioner": "murmur2_random", "linger.ms": 5, "message.timeout.ms": support.CLIENT_TIMEOUT_MS})


class SteadyProducer:
    """Keyed records ``key-i`` / ``value-i`` at a steady pace from a thread, until stopped;
    ``stop()`` returns every acknowledged record as (partition, offset) -> value."""

    def __init__(self, bootstrap: str, topic: str, rate_per_s: int = PRODUCE_RATE_PER_S) -> None:
        self._producer = confluent_producer(bootstrap)
        self._topic, self._interval = topic, 1 / rate_per_s
        self._lock = threading.Lock()
        self._acked: dict[tuple[int, int], str] = {}
        self._failures: list[Any] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)
        self._thread.start()

    def _delivered(self, error: Any, message: Any) -> None:
        with self._lock:
            if error is not None:
                self._failures.append(error)
            else:
                self._acked[(message.partition(), message.offset())] = message.value().decode()

    def _run(self) -> None:
        due = time.monotonic()
        for i in itertools.count():
            if self._stopping.is_set():
                break
            self._producer.produce(self._topic, key=b"key-%d" % i, value=b"value-%d" % i,
                                   on_delivery=self._delivered)
            self._producer.poll(0)
            due += self._interval
            time.sleep(max(0.0, due - time.monotonic()))
        self._producer.flush(support.CLIENT_TIMEOUT_S)

    def acked(self) -> int:
        with self._lock:
            return len(self._acked)

    def stop(self) -> dict[tuple[int, int], str]:
        self._stopping.set()
        self._thread.join(timeout=support.CLIENT_TIMEOUT_S * 2)
        assert not self._thread.is_alive(), "the producer thread did not finish"
        assert len(self._producer) == 0, f"{len(self._producer)} records never acknowledged"
        with self._lock:
            assert not self._failures, f"produce failed: {self._failures[:3]}"
            return dict(self._acked)


def produce(bootstrap: str, topic: str, first: int, count: int) -> dict[tuple[int, int], str]:
    """Records ``first``..``first + count - 1`` (keyed), acknowledged; (partition, offset) -> value."""
    producer = confluent_producer(bootstrap)
    acked: dict[tuple[int, int], str] = {}
    failures: list[Any] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(error)
        else:
            acked[(message.partition(), message.offset())] = message.value().decode()

    for i in range(first, first + count):
        producer.produce(topic, key=b"key-%d" % i, value=b"value-%d" % i, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(support.CLIENT_TIMEOUT_S * 2) == 0, "records never acknowledged"
    assert not failures, failures[:3]
    return acked


def engine_produce(engine: logkernel.Engine, topic: str, first: int, count: int
                   ) -> dict[tuple[int, int], str]:
    producer = engine.producer()
    acked = {}
    for i in range(first, first + count):
        metadata = producer.send(topic, b"value-%d" % i, key=b"key-%d" % i)
        acked[(metadata.partition, metadata.offset)] = f"value-{i}"
    return acked


def end_offsets(produced: Mapping[tuple[int, int], str], partitions: int) -> dict[int, int]:
    ends = dict.fromkeys(range(partitions), 0)
    for p, o in produced:
        ends[p] = max(ends[p], o + 1)
    return ends


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = confluent_kafka.admin.AdminClient(support.Confluent.base_config(bootstrap))
    [future] = admin.create_topics([confluent_kafka.admin.NewTopic(topic, partitions, 1)],
                                   request_timeout=support.CLIENT_TIMEOUT_S).values()
    future.result(timeout=support.CLIENT_TIMEOUT_S)


def serve_settings(extra: Mapping[str, Any] | None = None) -> list[str]:
    return [f"{k}={v}" for k, v in {**GROUP_SETTINGS, **(extra or {})}.items()]


def stored_state(data: Path, group: str, topic: str, partitions: int
                 ) -> tuple[dict[int, int], dict[int, int]]:
    """(committed offsets, log end offsets) per partition, read from a stopped broker's files."""
    with logkernel.open(str(data)) as engine:
        committed = {p: o.offset for (t, p), o in engine.committed_offsets(group).items() if t == topic}
        ends = {p: engine.end_offset(topic, p) for p in range(partitions)}
    return committed, ends


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[logkernel.Broker]:
    """A broker in this process, for tests that read the group's state through its engine."""
    yield from support.in_process_broker(tmp_path / "data", config={
        **GROUP_SETTINGS, "group.consumer.heartbeat.interval.ms": HEARTBEAT_MS,
        "group.consumer.session.timeout.ms": SESSION_TIMEOUT_MS})


# ---- a member dies ----------------------------------------------------------------------------

@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
@pytest.mark.parametrize("library", LIBRARIES)
def test_a_killed_member_hands_its_partitions_over(tmp_path: Path, library: str,
                                                   assignor: str) -> None:
    """With an eager assignor and with the cooperative-sticky one, whose rebalances are
    incremental (the clients' own protocol on top of JoinGroup/SyncGroup)."""
    topic, group, partitions = "orders", "billing", 6
    data = tmp_path / "data"
    with support.ServeProcess(data, tmp_path / "serve.log", settings=serve_settings()) as serve, \
            Workers(tmp_path, serve.bootstrap, group, topic, library) as workers:
        create_topic(serve.bootstrap, topic, partitions)
        members = [workers.start(f"w{i}", assignor=assignor) for i in range(3)]
        workers.wait_until(lambda: split_evenly(members, partitions), JOIN_TIMEOUT_S,
                           "three members with two partitions each")

        producer = SteadyProducer(serve.bootstrap, topic)
        try:
            victim, survivors = members[0], members[1:]
            # The victim dies in the middle of things: records flowing, some processed by it.
            workers.wait_until(lambda: victim.records() >= 30 and producer.acked() >= 200,
                               PROCESS_TIMEOUT_S, "the victim processing records")
            victim.kill()
            workers.wait_until(lambda: covered_by(survivors, partitions),
                               SESSION_TIMEOUT_MS / 1000 + JOIN_TIMEOUT_S,
                               "the survivors taking the dead member's partitions")
            taken_over_ns = time.monotonic_ns()
            # More records after the hand-over, read by the new owners.
            after = producer.acked() + 200
            workers.wait_until(lambda: producer.acked() >= after, PROCESS_TIMEOUT_S,
                               "records produced after the hand-over")
        finally:
            produced = producer.stop()
        ends = end_offsets(produced, partitions)
        workers.wait_until(lambda: last_commits(workers.logs()) == ends, PROCESS_TIMEOUT_S,
                           f"the survivors committing up to the log end {ends}")
        for w in survivors:
            w.stop()
        assert serve.terminate() == 0, serve.log_tail()

    logs, end_ns = workers.logs(), workers.end_times()
    # The session timed out: the partitions moved no sooner than a session after the last
    # heartbeat (at most a heartbeat interval before the kill), and not much later.
    assert victim.ended_ns is not None
    moved_ns = min(e["t"] for w in survivors for e in logs[w.name]
                   if e["event"] == "assigned" and e["t"] > victim.ended_ns)
    delay_s = (moved_ns - victim.ended_ns) / 1e9
    earliest_s = (SESSION_TIMEOUT_MS - HEARTBEAT_MS) / 1000 - 0.5
    assert earliest_s <= delay_s <= (taken_over_ns - victim.ended_ns) / 1e9, (
        f"the dead member's partitions moved {delay_s:.2f} s after its death; its session is "
        f"{SESSION_TIMEOUT_MS} ms")
    check_processed(logs, produced, exactly_once=False)
    check_ownership(logs, end_ns)
    check_resume_positions(logs, end_ns, killed=[victim.name])
    # Records processed twice are the dead member's, processed after its last acknowledged commit.
    twice = {(p, o) for (p, o, _), n in processed(logs).items() if n > 1}
    victim_committed = last_commits({victim.name: logs[victim.name]})
    victim_uncommitted = {(e["p"], e["o"]) for e in logs[victim.name]
                          if e["event"] == "record" and e["o"] >= victim_committed.get(e["p"], 0)}
    assert twice <= victim_uncommitted, sorted(twice - victim_uncommitted)[:5]
    committed, stored_ends = stored_state(data, group, topic, partitions)
    assert stored_ends == ends
    assert committed == ends, f"committed {committed}, log end offsets {ends}"


# ---- the broker restarts ----------------------------------------------------------------------

@pytest.mark.parametrize("library", LIBRARIES)
def test_commits_and_members_survive_a_broker_restart(tmp_path: Path, library: str) -> None:
    topic, group, partitions = "payments", "ledger", 4
    data, serve_log = tmp_path / "data", tmp_path / "serve.log"
    admin_config = support.Confluent.base_config
    with contextlib.ExitStack() as stack:
        serve = stack.enter_context(support.ServeProcess(data, serve_log, settings=serve_settings()))
        bootstrap = serve.bootstrap
        workers = stack.enter_context(Workers(tmp_path, bootstrap, group, topic, library))
        create_topic(bootstrap, topic, partitions)
        members = [workers.start(f"w{i}") for i in range(2)]
        workers.wait_until(lambda: split_evenly(members, partitions), JOIN_TIMEOUT_S,
                           "two members with two partitions each")
        before = produce(bootstrap, topic, 0, 200)
        ends_before = end_offsets(before, partitions)
        workers.wait_until(lambda: last_commits(workers.logs()) == ends_before, PROCESS_TIMEOUT_S,
                           f"commits up to {ends_before}")
        assert group_offsets(admin_config(bootstrap), group, topic) == ends_before

        assert serve.terminate() == 0, serve.log_tail()
        restarted_ns = time.monotonic_ns()
        serve = stack.enter_context(support.ServeProcess(data, serve_log, listen=bootstrap,
                                                         settings=serve_settings()))
        # Every commit is there before any member has done anything on the new broker.
        assert group_offsets(admin_config(bootstrap), group, topic) == ends_before
        after = produce(bootstrap, topic, 200, 200)
        produced = {**before, **after}
        ends = end_offsets(produced, partitions)
        workers.wait_until(lambda: last_commits(workers.logs()) == ends, JOIN_TIMEOUT_S,
                           f"the members, back in the group, committing up to {ends}")
        stopping_ns = time.monotonic_ns()
        for w in members:
            w.stop()
        assert serve.terminate() == 0, serve.log_tail()

    logs, end_ns = workers.logs(), workers.end_times()
    # The commits outlived the broker; every record was processed; each owner began at the
    # committed offset, so nothing committed before the restart was processed again.
    assert stored_state(data, group, topic, partitions) == (ends, ends)
    check_processed(logs, produced, exactly_once=False)
    check_resume_positions(logs, end_ns)
    twice = sorted((p, o) for (p, o, _), n in processed(logs).items() if n > 1)
    assert all(o >= ends_before[p] for p, o in twice), f"committed records processed again: {twice[:5]}"
    first_after: dict[int, int] = {}
    for events in logs.values():
        for e in events:
            if e["event"] == "record" and e["t"] > restarted_ns:
                first_after[e["p"]] = min(first_after.get(e["p"], e["o"]), e["o"])
    assert first_after == ends_before, (first_after, ends_before)
    # As Kafka does, the restarted broker knows the group: its members go on as they were,
    # with no rebalance, no refused commit, nothing processed twice, and no partition owned
    # by a member the broker forgot while it gives the partition to another. (Fails while
    # the broker forgets groups on restart: test_a_member_keeps_its_generation_across_a_broker_restart.)
    disturbed = [(name, e) for name, events in logs.items() for e in events
                 if restarted_ns < e["t"] < stopping_ns
                 and (e["event"] == "commit_failed" or (e["event"] in OWNERSHIP_EVENTS and e["partitions"]))]
    assert not disturbed, "the members were thrown out of the group by the broker's restart:\n" + "\n".join(
        f"  {name}: {json.dumps(e)}" for name, e in disturbed)
    check_processed(logs, produced, exactly_once=True)
    check_ownership(logs, end_ns)


def test_a_member_keeps_its_generation_across_a_broker_restart(tmp_path: Path) -> None:
    """Kafka writes a classic group's metadata (generation, leader, members, assignments) to
    __consumer_offsets after each rebalance and loads it when the coordinator starts, so its
    members go on across a broker restart: their heartbeats and commits, naming the
    generation they joined, are accepted. A broker that forgets the group refuses them
    (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION); the members lose their partitions and process
    again whatever they processed since the restart (what
    test_commits_and_members_survive_a_broker_restart sees kafka-python do). Raw requests,
    so the test is deterministic: JoinGroup (twice: MEMBER_ID_REQUIRED), SyncGroup, restart,
    then Heartbeat and OffsetCommit as the same member."""
    data, config = tmp_path / "data", {**GROUP_SETTINGS}

    def join(client: RawClient, member_id: str) -> Any:
        return client.call(apis.JOIN_GROUP, 7, raw_request(
            apis.JOIN_GROUP, 7, group_id="g", session_timeout=SESSION_TIMEOUT_MS,
            rebalance_timeout=SESSION_TIMEOUT_MS, member_id=member_id, protocol_type="consumer",
            protocols=[{"name": "range", "metadata": b""}]))

    with logkernel.Broker(str(data), listen="127.0.0.1:0", config=config) as first:
        bootstrap = first.bootstrap
        first.engine.create_topic("t", 1)
        client = RawClient(bootstrap)
        try:
            required = join(client, "")
            assert required.error_code == 79  # MEMBER_ID_REQUIRED
            joined = join(client, required.member_id)
            assert joined.error_code == 0
            synced = client.call(apis.SYNC_GROUP, 5, raw_request(
                apis.SYNC_GROUP, 5, group_id="g", generation_id=joined.generation_id,
                member_id=joined.member_id, protocol_type="consumer", protocol_name="range",
                assignments=[{"member_id": joined.member_id, "assignment": b""}]))
            assert synced.error_code == 0
        finally:
            client.close()
        before = first.engine.describe_group("g")
        assert (before.state, before.generation) == ("Stable", joined.generation_id)

    with logkernel.Broker(str(data), listen=bootstrap, config=config) as second:
        client = RawClient(bootstrap)
        try:
            heartbeat = client.call(apis.HEARTBEAT, 4, raw_request(
                apis.HEARTBEAT, 4, group_id="g", generation_id=joined.generation_id,
                member_id=joined.member_id))
            commit = client.call(apis.OFFSET_COMMIT, 8, raw_request(
                apis.OFFSET_COMMIT, 8, group_id="g", generation_id_or_member_epoch=joined.generation_id,
                member_id=joined.member_id, topics=[{"name": "t", "partitions": [{
                    "partition_index": 0, "committed_offset": 0, "committed_leader_epoch": -1,
                    "committed_metadata": ""}]}]))
        finally:
            client.close()
        groups = {g.group_id: g.state for g in second.engine.list_groups()}
        assert (heartbeat.error_code, commit.topics[0].partitions[0].error_code) == (0, 0), (
            f"after a restart the broker answered member {joined.member_id!r} of generation "
            f"{joined.generation_id}: Heartbeat error {heartbeat.error_code}, OffsetCommit error "
            f"{commit.topics[0].partitions[0].error_code} (25 UNKNOWN_MEMBER_ID, 22 "
            f"ILLEGAL_GENERATION); its groups now: {groups}. Kafka restores the group and accepts both.")
        after = second.engine.describe_group("g")
        assert (after.state, after.generation, [m.member_id for m in after.members]) == (
            "Stable", before.generation, [m.member_id for m in before.members])


def group_offsets(config: dict[str, Any], group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of ``topic``, asked over the wire (OffsetFetch)."""
    admin = confluent_kafka.admin.AdminClient(config)
    request = confluent_kafka.ConsumerGroupTopicPartitions(group)
    [future] = admin.list_consumer_group_offsets([request], request_timeout=support.CLIENT_TIMEOUT_S).values()
    answer = future.result(timeout=support.CLIENT_TIMEOUT_S)
    return {tp.partition: tp.offset for tp in answer.topic_partitions if tp.topic == topic}


# ---- static membership ------------------------------------------------------------------------

@pytest.mark.parametrize("library", LIBRARIES)
def test_a_restarted_static_member_gets_its_partitions_back_without_a_rebalance(
        broker: logkernel.Broker, tmp_path: Path, library: str) -> None:
    topic, group, partitions = "shipments", "warehouse", 6
    broker.engine.create_topic(topic, partitions)
    with Workers(tmp_path, broker.bootstrap, group, topic, library,
                 session_timeout_ms=STATIC_SESSION_TIMEOUT_MS) as workers:
        members = [workers.start(f"s{i}", instance_id=f"static-{i}") for i in range(3)]
        workers.wait_until(lambda: split_evenly(members, partitions), JOIN_TIMEOUT_S,
                           "three static members with two partitions each")
        stable_ns = time.monotonic_ns()
        stable = broker.engine.describe_group(group)
        assert stable.state == "Stable"
        assert sorted(m.instance_id for m in stable.members) == ["static-0", "static-1", "static-2"]
        produced = engine_produce(broker.engine, topic, 0, 120)
        workers.wait_until(lambda: last_commits(workers.logs()) == end_offsets(produced, partitions),
                           PROCESS_TIMEOUT_S, "every record processed and committed")

        victim, others = members[1], [members[0], members[2]]
        victims_partitions = victim.owned()
        victim.kill()
        time.sleep(1.0)
        restarted = workers.start("s1-restarted", instance_id="static-1")
        workers.wait_until(lambda: restarted.owned(), STATIC_SESSION_TIMEOUT_MS / 1000 - 2,
                           "the restarted static member's assignment")
        assert restarted.owned() == victims_partitions
        produced.update(engine_produce(broker.engine, topic, 120, 120))
        workers.wait_until(lambda: last_commits(workers.logs()) == end_offsets(produced, partitions),
                           PROCESS_TIMEOUT_S, "the records produced after the restart")
        after = broker.engine.describe_group(group)
        stopping_ns = time.monotonic_ns()
        for w in others:
            w.stop()
        restarted.stop()

    assert after.state == "Stable"
    assert after.generation == stable.generation, "a static member's return started a rebalance"
    before_ids = {m.instance_id: m.member_id for m in stable.members}
    after_ids = {m.instance_id: m.member_id for m in after.members}
    assert {k: v for k, v in after_ids.items() if k != "static-1"} == \
        {k: v for k, v in before_ids.items() if k != "static-1"}
    assert after_ids["static-1"] != before_ids["static-1"], "the restarted member kept its old member id"
    logs = workers.logs()
    for w in others:
        # Between the stable point and the workers' closing (each revokes as it closes).
        changes = [e for e in logs[w.name] if e["event"] in OWNERSHIP_EVENTS and e["partitions"]
                   and stable_ns < e["t"] < stopping_ns]
        assert not changes, f"{w.name} saw a rebalance when static-1 came back: {changes}"
    generations = {e["generation"] for e in logs[restarted.name] if e["event"] == "assigned"}
    assert generations <= {None, stable.generation}, generations
    check_processed(logs, produced, exactly_once=True)
    check_ownership(logs, workers.end_times())
    check_resume_positions(logs, workers.end_times())


# ---- an embedded and a remote member ------------------------------------------------------------

class RecordingListener:
    """The embedded consumer's rebalance listener, logging as the workers do."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _log(self, event: str, partitions: set[tuple[str, int]]) -> None:
        self.events.append({"t": time.monotonic_ns(), "event": event,
                            "partitions": sorted(p for _, p in partitions)})

    def on_partitions_assigned(self, assigned: set[tuple[str, int]]) -> None:
        self._log("assigned", assigned)

    def on_partitions_revoked(self, revoked: set[tuple[str, int]]) -> None:
        self._log("revoked", revoked)

    def on_partitions_lost(self, lost: set[tuple[str, int]]) -> None:
        self._log("lost", lost)


@pytest.mark.parametrize("library", LIBRARIES)
def test_embedded_and_remote_members_split_a_topic(broker: logkernel.Broker, tmp_path: Path,
                                                   library: str) -> None:
    topic, group, partitions = "clicks", "sessions", 4
    broker.engine.create_topic(topic, partitions)
    listener = RecordingListener()
    embedded = broker.engine.consumer(
        group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
        partition_assignment_strategy=["range"], session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS, client_id="embedded")
    try:
        embedded.subscribe([topic], listener=listener)

        def poll_embedded() -> None:
            records = embedded.poll(timeout_ms=100)
            for r in records:
                listener.events.append({"t": time.monotonic_ns(), "event": "record", "p": r.partition,
                                        "o": r.offset, "v": r.value.decode()})
            if records:
                embedded.commit()
                listener.events.append({"t": time.monotonic_ns(), "event": "committed", "offsets": {
                    str(tp.partition): embedded.position(tp) for tp in embedded.assignment()}})

        with Workers(tmp_path, broker.bootstrap, group, topic, library) as workers:
            remote = workers.start("remote")

            def split() -> bool:
                poll_embedded()
                mine, theirs = owned_now(listener.events), remote.owned()
                described = broker.engine.describe_group(group)
                return (len(mine) == 2 and len(theirs) == 2 and mine | theirs == set(range(partitions))
                        and described.state == "Stable" and len(described.members) == 2)

            workers.wait_until(split, JOIN_TIMEOUT_S, "the embedded and remote members with two "
                                                      "partitions each")
            described = broker.engine.describe_group(group)
            assert {m.client_id: {p for _, p in m.partitions} for m in described.members} == {
                "embedded": owned_now(listener.events), "remote": remote.owned()}
            produced = engine_produce(broker.engine, topic, 0, 200)
            ends = end_offsets(produced, partitions)

            def everything_committed() -> bool:
                poll_embedded()
                return broker.engine.committed_offsets(group) and {
                    p: o.offset for (_, p), o in broker.engine.committed_offsets(group).items()} == ends

            workers.wait_until(everything_committed, PROCESS_TIMEOUT_S, f"commits up to {ends}")
            remote.stop()
            logs = {"embedded": listener.events, **workers.logs()}
            end_ns = {"embedded": time.monotonic_ns(), **workers.end_times()}
    finally:
        embedded.close()
    check_processed(logs, produced, exactly_once=True)
    check_ownership(logs, end_ns)
    check_resume_positions(logs, end_ns)
    for name, events in logs.items():
        assert any(e["event"] == "record" for e in events), f"{name} processed nothing"


# ---- KIP-848 ------------------------------------------------------------------------------------

def test_kip848_members_split_a_topic_and_one_takes_over(broker: logkernel.Broker, tmp_path: Path) -> None:
    topic, group, partitions = "telemetry", "kip848", 4
    broker.engine.create_topic(topic, partitions)
    with Workers(tmp_path, broker.bootstrap, group, topic, "confluent-kafka", protocol="consumer") as workers:
        first, second = workers.start("c0"), workers.start("c1")
        workers.wait_until(lambda: split_evenly([first, second], partitions), JOIN_TIMEOUT_S,
                           "two KIP-848 members with two partitions each")
        described = broker.engine.describe_group(group)
        assert described.group_type == "consumer"
        assert sorted(len(m.partitions) for m in described.members) == [2, 2]
        produced = engine_produce(broker.engine, topic, 0, 100)
        workers.wait_until(lambda: last_commits(workers.logs()) == end_offsets(produced, partitions),
                           PROCESS_TIMEOUT_S, "every record processed and committed")
        first.stop()
        workers.wait_until(lambda: second.owned() == set(range(partitions)), JOIN_TIMEOUT_S,
                           "the remaining member owning all four partitions")
        produced.update(engine_produce(broker.engine, topic, 100, 100))
        workers.wait_until(lambda: last_commits(workers.logs()) == end_offsets(produced, partitions),
                           PROCESS_TIMEOUT_S, "the remaining member processing everything")
        described = broker.engine.describe_group(group)
        assert [sorted(p for _, p in m.partitions) for m in described.members] == [list(range(partitions))]
        second.stop()
    logs = workers.logs()
    check_processed(logs, produced, exactly_once=True)
    check_ownership(logs, workers.end_times())
    check_resume_positions(logs, workers.end_times())


# ---- admin over the wire ------------------------------------------------------------------------

def test_group_admin_over_the_wire(broker: logkernel.Broker, tmp_path: Path) -> None:
    topic, other, group, partitions = "inventory", "archive", "stock", 4
    broker.engine.create_topic(topic, partitions)
    broker.engine.create_topic(other, 1)
    # Offsets of a topic the group will not subscribe to, committed while it has no members.
    broker.engine.commit_offsets(group, {(other, 0): 0})
    kafka_admin = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap,
                                         request_timeout_ms=support.CLIENT_TIMEOUT_MS)
    confluent_admin = confluent_kafka.admin.AdminClient(support.Confluent.base_config(broker.bootstrap))
    ConfluentTP = confluent_kafka.TopicPartition
    ConsumerGroupTopicPartitions = confluent_kafka.ConsumerGroupTopicPartitions
    timeout = support.CLIENT_TIMEOUT_S

    def confluent_result(futures: Mapping[Any, Any]) -> Any:
        [future] = futures.values()
        return future.result(timeout=timeout)

    try:
        with Workers(tmp_path, broker.bootstrap, group, topic, "confluent-kafka") as workers:
            members = [workers.start(f"m{i}") for i in range(2)]
            workers.wait_until(lambda: split_evenly(members, partitions), JOIN_TIMEOUT_S,
                               "two members with two partitions each")
            produced = engine_produce(broker.engine, topic, 0, 40)
            ends = end_offsets(produced, partitions)
            workers.wait_until(lambda: last_commits(workers.logs()) == ends, PROCESS_TIMEOUT_S,
                               f"commits up to {ends}")
            owned = {w.name: w.owned() for w in members}

            # -- kafka-python
            listed = {g["group_id"]: g for g in kafka_admin.list_groups()}
            assert listed[group]["protocol_type"] == "consumer"
            assert (listed[group]["group_state"], listed[group]["group_type"]) == ("Stable", "classic")
            described = kafka_admin.describe_groups([group])[group]
            assert described["error"] is None
            assert (described["group_state"], described["protocol_type"], described["protocol_data"]) == (
                "Stable", "consumer", "range")
            assignments = {m["client_id"]: {p for listed in m["member_assignment"]["assigned_partitions"]
                                            for p in listed["partitions"]}
                           for m in described["members"]}
            assert {m["member_metadata"]["topics"][0] for m in described["members"]} == {topic}
            assert assignments == owned
            offsets = kafka_admin.list_group_offsets(group)[group]
            assert {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == topic} == ends
            assert dict(kafka_admin.delete_groups([group])) == {group: "NonEmptyGroupError"}
            refused = kafka_admin.delete_group_offsets(group, [kafka.TopicPartition(topic, 0)])
            assert refused == {kafka.TopicPartition(topic, 0): kafka.errors.GroupSubscribedToTopicError}
            # A topic the group does not subscribe to: its offsets go, members or not.
            deleted = kafka_admin.delete_group_offsets(group, [kafka.TopicPartition(other, 0)])
            assert deleted == {kafka.TopicPartition(other, 0): kafka.errors.NoError}
            assert broker.engine.committed(group, other, 0) is None

            # -- confluent-kafka (its AdminClient has no call for OffsetDelete)
            listings = confluent_result({0: confluent_admin.list_consumer_groups(request_timeout=timeout)})
            assert not listings.errors
            [listing] = [g for g in listings.valid if g.group_id == group]
            assert listing.state == confluent_kafka.ConsumerGroupState.STABLE
            assert not listing.is_simple_consumer_group
            description = confluent_result(confluent_admin.describe_consumer_groups(
                [group], request_timeout=timeout))
            assert description.state == confluent_kafka.ConsumerGroupState.STABLE
            assert description.partition_assignor == "range"
            assert not description.is_simple_consumer_group
            assert {m.client_id: {tp.partition for tp in m.assignment.topic_partitions}
                    for m in description.members} == owned
            answer = confluent_result(confluent_admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=timeout))
            assert {tp.partition: tp.offset for tp in answer.topic_partitions if tp.topic == topic} == ends
            with pytest.raises(confluent_kafka.KafkaException) as refused_delete:
                confluent_result(confluent_admin.delete_consumer_groups([group], request_timeout=timeout))
            assert refused_delete.value.args[0].code() == confluent_kafka.KafkaError.NON_EMPTY_GROUP
            # Kafka refuses offsets altered from outside (no member id, generation -1) while the
            # group has members: UNKNOWN_MEMBER_ID.
            refused_alter = confluent_result(confluent_admin.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, [ConfluentTP(topic, 0, 1)])], request_timeout=timeout))
            [(partition_error)] = [tp.error for tp in refused_alter.topic_partitions]
            assert partition_error.code() == confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID
            refused_alter_kp = kafka_admin.alter_group_offsets(
                group, {kafka.TopicPartition(topic, 1): kafka.OffsetAndMetadata(0, "", -1)})
            assert refused_alter_kp == {kafka.TopicPartition(topic, 1): kafka.errors.UnknownMemberIdError}
            assert (broker.engine.committed(group, topic, 0), broker.engine.committed(group, topic, 1)) == (
                ends[0], ends[1])

            for w in members:
                w.stop()
        support.wait_until(lambda: broker.engine.describe_group(group).state == "Empty", timeout,
                           "the group empty once its members left")

        # Without members: offsets can be altered and deleted, and the group deleted.
        altered = confluent_result(confluent_admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [ConfluentTP(topic, 0, 1)])], request_timeout=timeout))
        assert [(tp.partition, tp.offset, tp.error) for tp in altered.topic_partitions] == [(0, 1, None)]
        assert broker.engine.committed(group, topic, 0) == 1
        altered_kp = kafka_admin.alter_group_offsets(
            group, {kafka.TopicPartition(topic, 1): kafka.OffsetAndMetadata(2, "reset", -1)})
        assert altered_kp == {kafka.TopicPartition(topic, 1): kafka.errors.NoError}
        assert broker.engine.committed_offsets(group)[(topic, 1)].metadata == "reset"
        deleted = kafka_admin.delete_group_offsets(group, [kafka.TopicPartition(topic, 0)])
        assert deleted == {kafka.TopicPartition(topic, 0): kafka.errors.NoError}
        assert broker.engine.committed(group, topic, 0) is None
        assert [g["group_state"] for g in kafka_admin.list_groups() if g["group_id"] == group] == ["Empty"]
        assert dict(kafka_admin.delete_groups([group])) == {group: "OK"}
        assert broker.engine.committed_offsets(group) == {}
        assert group not in {g.group_id for g in broker.engine.list_groups()}
        # Deleting it again: GROUP_ID_NOT_FOUND, through librdkafka this time.
        with pytest.raises(confluent_kafka.KafkaException) as gone:
            confluent_result(confluent_admin.delete_consumer_groups([group], request_timeout=timeout))
        assert gone.value.args[0].code() == confluent_kafka.KafkaError.GROUP_ID_NOT_FOUND
    finally:
        kafka_admin.close()
        # pytest.raises keeps the failing calls' frames in reference cycles; collecting them
        # destroys the AdminClient now rather than after the broker stopped (a reconnect loop).
        del confluent_admin
        gc.collect()


# ---- aiokafka ----------------------------------------------------------------------------------


def test_aiokafka_members_split_a_topic_and_commit(broker: logkernel.Broker) -> None:
    """aiokafka's consumer (JoinGroup v5 / SyncGroup v3 / Heartbeat v3 here) in a group of two:
    they split the partitions, read every record between them, and their commits reach
    the log end."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    topic, group, partitions, per_partition = "aio", "aio-group", 4, 10
    broker.engine.create_topic(topic, partitions)
    producer = broker.engine.producer()
    for i in range(per_partition * partitions):
        producer.send(topic, f"v{i}".encode(), partition=i % partitions)

    async def run() -> tuple[list[set[int]], Counter[tuple[int, int]]]:
        consumers = [AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      session_timeout_ms=SESSION_TIMEOUT_MS,
                                      heartbeat_interval_ms=HEARTBEAT_MS)
                     for _ in range(2)]
        seen: Counter[tuple[int, int]] = Counter()
        try:
            for consumer in consumers:
                await consumer.start()
            deadline = time.monotonic() + JOIN_TIMEOUT_S
            while time.monotonic() < deadline:
                for consumer in consumers:
                    batches = await consumer.getmany(timeout_ms=100)
                    for tp, records in batches.items():
                        seen.update((tp.partition, r.offset) for r in records)
                    if batches:
                        await consumer.commit()
                if sum(seen.values()) >= per_partition * partitions and all(
                        len(c.assignment()) == partitions // 2 for c in consumers):
                    break
            owned = [{tp.partition for tp in c.assignment()} for c in consumers]
        finally:
            for consumer in consumers:
                await consumer.stop()
        return owned, seen

    owned, seen = asyncio.run(run())
    assert owned[0] | owned[1] == set(range(partitions)) and not owned[0] & owned[1], owned
    assert set(seen) == {(p, o) for p in range(partitions) for o in range(per_partition)}
    assert {tp: o.offset for tp, o in broker.engine.committed_offsets(group).items()} == {
        (topic, p): per_partition for p in range(partitions)}
