"""Consumer groups on the Kafka-protocol broker (``logkernel serve``) beside tansu: how fast
a classic group rebalances, and how many OffsetCommits one connection gets through. Same
run, same client, same machine, over loopback; bench/conftest.py prints the rates and the
ratios to tansu, and each rebalance benchmark writes a line with its percentiles.

The client is the raw one of tests/test_broker_protocol.py (requests built from Kafka's
message schemas through kio, responses decoded and checked the same way), on one TCP
connection per member with TCP_NODELAY, as Kafka's clients set it. Its cost per request is
a few microseconds and the same whichever broker answers (librdkafka's mock, the cheapest
broker here, answers 30,000 pipelined commits a second through it). Versions: JoinGroup 7,
SyncGroup 5, Heartbeat 4 and LeaveGroup 5, the highest logkernel offers (tansu offers as
much or more); FindCoordinator 3 and OffsetFetch 6 (one group per request); OffsetCommit
8, as the issue states.

The brokers (bench/bench_broker.py starts them):

- logkernel: ``logkernel serve`` with ``--set group.initial.rebalance.delay.ms=0``, else
  its default config (so commits are appended to ``__consumer_offsets`` on disk, not
  fsynced per commit).
- tansu 0.6.0 with its in-memory storage; it has no initial rebalance delay to set. It
  answers every JoinGroup that carries a member id after half the session timeout,
  whether or not the other members have rejoined (measured: 5.0 s with the 10 s session
  here, 3.0 s with 6 s, for one member or ten, whatever the rebalance timeout). Its
  rebalances are measured as they are, in fewer rounds.
- librdkafka's mock cluster, for standalone commits only. Its classic groups complete a
  rebalance on a timer, not when every member has rejoined: a new group's joins are
  answered after 3.0 s, a Stable group's rebalance after the session timeout less 1 s
  (9.0 s here), measured with this client (at JoinGroup v5: it closes the connection on
  v6). Timing that measures the timer, so its rebalance, member-commit and real-client
  benchmarks are skipped with that reason.

What is measured (a fresh broker per benchmark, torn down after it; timings never
asserted, results always checked):

- Rebalance of 10 members (session and rebalance timeouts 10 s, protocol type "consumer",
  assignor name "range", subscriptions to a topic of 10 partitions, which no broker looks
  at: the classic protocol leaves subscriptions and assignments to the clients). Untimed,
  every member finds the coordinator, joins with an empty member id, is told
  MEMBER_ID_REQUIRED and rejoins with the id it was given; the leader's SyncGroup assigns
  one partition to each member, followers SyncGroup; heartbeats until a full round answers
  0 (the group is Stable, every member at the same generation). Each round, untimed: the
  leader rejoins with changed user data in its subscription (a rebalance, as when a
  leader's subscription changes); every follower heartbeats until it is told
  REBALANCE_IN_PROGRESS (how a real client learns of it, less the heartbeat interval), so
  the broker is known to be rebalancing. Timed: the nine followers' JoinGroups (their
  metadata unchanged), sent back to back, then every answer handled as it arrives (one
  thread, a selector over the ten connections): each JoinGroup answer is followed at once
  by that member's SyncGroup, the leader's carrying the assignment computed from the
  member list it was given. The round ends when every member has its SyncGroup answer. The
  benchmark's time starts before the first of the nine JoinGroups is sent (the nine sends
  take tens of microseconds); ``extra_info`` and the printed line have the issue's
  measure, from the moment the last JoinGroup was sent: to every JoinGroup answered
  (``join_ms``) and to every SyncGroup answered (``sync_ms``), median and max over the
  rounds. Checked: every answer has error 0, all ten members are at the same generation,
  one more than before, and each holds the partition the leader assigned it (the ten
  partitions once each).
- OffsetCommit from one connection, one group, one topic-partition per request, offsets
  1..N: standalone (generation -1, empty member id: a consumer that assigns its own
  partitions) and as the only member of a group (its member id and generation, after the
  same join and sync as above). Pipelined: up to ``COMMIT_WINDOW`` requests in flight,
  answers read as they arrive and each read refills the window, N =
  ``LOGKERNEL_BENCH_COMMITS`` (default 50,000). Sequential: one request in flight, N =
  ``LOGKERNEL_BENCH_SEQUENTIAL_COMMITS`` (default 5,000). The request frames are built
  before the clock starts (one kio-encoded template, the offset and correlation id patched
  in), so the timed loop is sends, reads and a byte comparison of each answer with the
  first one (decoded in full; any answer that differs is decoded and checked too). Rate =
  N / time. Checked: every answer has its correlation id in order and error 0; an
  OffsetFetch afterwards returns offset N. Broker CPU per commit (user + system seconds of
  its process, before and after the round) is in ``extra_info``.
- Real clients: 10 confluent-kafka consumers of one group (threads of this process, each
  polling its own Consumer; session timeout 10 s, else the client's defaults) subscribe
  to a 10-partition topic. Untimed: each is created and has the topic's metadata. Timed:
  from the first ``subscribe()`` until every consumer holds a non-empty assignment (its
  on_assign, not yet revoked), which with 10 partitions means one each. Checked: the ten
  partitions are held once each. This is what a user sees, and it includes the client's
  own timers (a member that is in a group learns of the next rebalance from a heartbeat,
  every 3 s by default).
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.bench_broker import (
    STALL_TIMEOUT_S,
    Broker,
    Brokers,
    ClientLog,
    _percentile,
    kafka,
)
from logkernel.protocol import error_codes, schema
from logkernel.protocol.apis import (
    FIND_COORDINATOR,
    HEARTBEAT,
    JOIN_GROUP,
    LEAVE_GROUP,
    OFFSET_COMMIT,
    OFFSET_FETCH,
    SYNC_GROUP,
)
from logkernel.protocol.frames import FrameReader
from tests.test_broker_protocol import RawClient, decode_response, request

COMMITS = int(os.environ.get("LOGKERNEL_BENCH_COMMITS", "50000"))
SEQUENTIAL_COMMITS = int(os.environ.get("LOGKERNEL_BENCH_SEQUENTIAL_COMMITS", "5000"))

# The settings: the initial delay off, so a rebalance is as fast as the broker
# makes it; the group's timeouts as the issue states them.
LOGKERNEL_SETTINGS = {"group.initial.rebalance.delay.ms": "0"}
SESSION_TIMEOUT_MS = 10_000
REBALANCE_TIMEOUT_MS = 10_000

MEMBERS = 10
PARTITIONS = 10  # one per member, so every member's assignment is non-empty
# Rounds: a logkernel rebalance takes milliseconds, so 20 rounds cost little and give a
# median and a max that is the p95 of what this shared 2-vCPU VM does. tansu 0.6.0 answers
# every JoinGroup that carries a member id after half the session timeout (5 s here; 3 s
# with a 6 s session, whatever the member count or rebalance timeout), so it gets 3 rounds:
# its rounds take 5-6 s each, and 20 would take minutes.
REBALANCE_ROUNDS = {"logkernel": 20, "tansu": 3}
# Commit rounds. Pipelined: one, because on this VM both brokers commit 2,000-4,000 times
# a second (~250 us of broker CPU each), so a 50,000-commit round takes 15-30 s and is
# already an average over 50,000 requests; three would put the file far past its few
# minutes. Sequential rounds are a few seconds, so 3 give a best and a median.
COMMIT_ROUNDS = {"pipelined": 1, "sequential": 3}
# 64 in flight: the broker always has the next requests already read when it answers one,
# so loopback round trips never leave it idle (the "e.g. 64"), and few enough that
# neither side's socket buffers fill (64 commits are a few KiB each way).
COMMIT_WINDOW = 64
# How long a follower waits before heartbeating again when its heartbeat reached the
# broker before the leader's JoinGroup did (rare: the leader's was sent first).
HEARTBEAT_RETRY_S = 0.001

JOIN_VERSION = 7
SYNC_VERSION = 5
HEARTBEAT_VERSION = 4
LEAVE_VERSION = 5
FIND_COORDINATOR_VERSION = 3
COMMIT_VERSION = 8
OFFSET_FETCH_VERSION = 6

PROTOCOL_TYPE = "consumer"
ASSIGNOR = "range"

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


# ---- the consumer protocol's member metadata and assignment (ConsumerProtocol v0) ----------


def _string(text: str) -> bytes:
    data = text.encode()
    return _I16.pack(len(data)) + data


def subscription(topics: list[str], user_data: bytes) -> bytes:
    """ConsumerProtocolSubscription v0: version, topics, user data."""
    return (_I16.pack(0) + _I32.pack(len(topics)) + b"".join(_string(t) for t in topics)
            + _I32.pack(len(user_data)) + user_data)


def assignment(topic: str, partitions: list[int]) -> bytes:
    """ConsumerProtocolAssignment v0: version, [topic, partitions], user data (null)."""
    return (_I16.pack(0) + _I32.pack(1) + _string(topic) + _I32.pack(len(partitions))
            + b"".join(_I32.pack(p) for p in partitions) + _I32.pack(-1))


def assigned_partitions(data: bytes, topic: str) -> list[int]:
    """The partitions of ``topic`` in an assignment that ``assignment`` encoded."""
    expected_head = _I16.pack(0) + _I32.pack(1) + _string(topic)
    if not data.startswith(expected_head):
        raise AssertionError(f"assignment {data!r} is not one of {topic!r}'s partitions")
    position = len(expected_head)
    (count,) = _I32.unpack_from(data, position)
    return [_I32.unpack_from(data, position + 4 + 4 * i)[0] for i in range(count)]


def round_robin(member_ids: list[str], topic: str, partitions: int) -> dict[str, bytes]:
    """The leader's assignment: partitions dealt out over the members in id order."""
    ordered = sorted(member_ids)
    owned: dict[str, list[int]] = {m: [] for m in ordered}
    for partition in range(partitions):
        owned[ordered[partition % len(ordered)]].append(partition)
    return {m: assignment(topic, p) for m, p in owned.items()}


# ---- the brokers, with logkernel's group settings --------------------------------------------


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Brokers]:
    """As bench_broker's fixture, logkernel with LOGKERNEL_SETTINGS: logs stay in tmp_path,
    data directories do not."""
    started = Brokers(tmp_path, LOGKERNEL_SETTINGS)
    try:
        yield started
    finally:
        started.close()
    if started.problems:
        pytest.fail("\n".join(started.problems), pytrace=False)


@pytest.fixture
def write_line(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Writes a line to the terminal whatever the capture mode."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def write(line: str) -> None:
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(line)

    return write


def _label(benchmark: Any, group: str, broker: str, unit: str, items: int, **info: Any) -> None:
    """Labels a benchmark for bench/conftest.py's throughput summary: ``items`` per call in
    ``unit``; tansu is the peer the ratios refer to."""
    benchmark.group = group
    benchmark.extra_info.update(items=items, unit=unit, broker=broker, peer=broker == "tansu",
                                loadavg=list(os.getloadavg()), **info)
    if broker == "mock":
        benchmark.extra_info["tag"] = "mock"


def _error_name(code: int) -> str:
    names = {v: k for k, v in vars(error_codes).items() if k.isupper() and isinstance(v, int)}
    return f"{names.get(int(code), 'error')} ({int(code)})"


# ---- a group member on its own connection -------------------------------------------------------


class GroupMember:
    """One member of a classic group on its own connection, with at most one request in
    flight (as Kafka's clients send group requests)."""

    def __init__(self, broker: Broker, group_id: str, topic: str, name: str) -> None:
        self.broker = broker
        self.client = RawClient(broker.bootstrap)
        self.client.sock.settimeout(STALL_TIMEOUT_S)
        self.client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.group_id = group_id
        self.topic = topic
        self.name = name
        self.user_data = b""
        self.member_id = ""
        self.generation = -1
        self.leader = ""
        self.synced_generation = -1
        self.assignment = b""
        self.sent_assignments: dict[str, bytes] = {}
        self.in_flight: tuple[int, int, int] | None = None  # api key, version, correlation

    def close(self) -> None:
        self.client.close()

    def fail(self, what: str) -> AssertionError:
        return AssertionError(f"member {self.name} ({self.member_id or 'no id yet'}): {what}"
                              f"{self.broker.diagnosis()}")

    def _send(self, api_key: int, version: int, **fields: Any) -> None:
        if self.in_flight is not None:
            raise self.fail(f"a second request while api {self.in_flight[0]} is in flight")
        body = schema.encode_entity(request(api_key, version, **fields))
        self.in_flight = (api_key, version, self.client.send(api_key, version, body))

    def receive(self) -> tuple[int, Any]:
        """The answer to the request in flight (blocks until it is whole)."""
        if self.in_flight is None:
            raise self.fail("an answer to no request")
        api_key, version, correlation = self.in_flight
        self.in_flight = None
        try:
            frame = self.client.receive()
        except OSError as error:
            raise self.fail(f"no answer to api {api_key}: {error!r}") from error
        return api_key, decode_response(api_key, version, frame, correlation)

    def call(self, api_key: int, version: int, **fields: Any) -> Any:
        self._send(api_key, version, **fields)
        return self.receive()[1]

    def find_coordinator(self) -> None:
        """The coordinator must be this broker (each of them is a one-broker cluster)."""
        response = self.call(FIND_COORDINATOR, FIND_COORDINATOR_VERSION, key=self.group_id,
                             key_type=0)
        host, port = self.broker.bootstrap.rsplit(":", 1)
        if response.error_code != 0 or (response.host, response.port) != (host, int(port)):
            raise self.fail(f"FindCoordinator answered {response!r}, not {host}:{port}")

    def send_join(self) -> None:
        self._send(JOIN_GROUP, JOIN_VERSION, group_id=self.group_id,
                   session_timeout=SESSION_TIMEOUT_MS, rebalance_timeout=REBALANCE_TIMEOUT_MS,
                   member_id=self.member_id, group_instance_id=None, protocol_type=PROTOCOL_TYPE,
                   protocols=[{"name": ASSIGNOR,
                               "metadata": subscription([self.topic], self.user_data)}])

    def send_sync(self, assignments: dict[str, bytes]) -> None:
        self.sent_assignments = assignments
        self._send(SYNC_GROUP, SYNC_VERSION, group_id=self.group_id,
                   generation_id=self.generation, member_id=self.member_id,
                   group_instance_id=None, protocol_type=PROTOCOL_TYPE, protocol_name=ASSIGNOR,
                   assignments=[{"member_id": m, "assignment": a} for m, a in assignments.items()])

    def send_heartbeat(self) -> None:
        self._send(HEARTBEAT, HEARTBEAT_VERSION, group_id=self.group_id,
                   generation_id=self.generation, member_id=self.member_id,
                   group_instance_id=None)

    def leave(self) -> None:
        response = self.call(LEAVE_GROUP, LEAVE_VERSION, group_id=self.group_id,
                             members=[{"member_id": self.member_id, "group_instance_id": None,
                                       "reason": "benchmark done"}])
        codes = [response.error_code, *(m.error_code for m in response.members)]
        if any(codes):
            raise self.fail(f"LeaveGroup answered {[_error_name(c) for c in codes]}")

    @property
    def stable(self) -> bool:
        return self.in_flight is None and self.synced_generation == self.generation >= 0


class Timeline:
    """When the last JoinGroup and the last SyncGroup answers of a drive arrived."""

    def __init__(self) -> None:
        self.last_join_answer = 0.0
        self.last_sync_answer = 0.0
        self.rejoins = 0


def _handle(member: GroupMember, api_key: int, response: Any, partitions: int,
            rejoin_allowed: bool, timeline: Timeline) -> None:
    """What a client does with each answer: rejoin with the id it is given, SyncGroup
    after a join (the leader with everyone's assignment), rejoin when told a rebalance
    is in progress (only while the group forms: in a timed round that is a failure)."""
    code = response.error_code
    if code == error_codes.REBALANCE_IN_PROGRESS and rejoin_allowed:
        timeline.rejoins += 1
        member.send_join()
    elif api_key == JOIN_GROUP:
        if code == error_codes.MEMBER_ID_REQUIRED and response.member_id:
            member.member_id = response.member_id
            member.send_join()
        elif code == error_codes.NONE:
            timeline.last_join_answer = time.perf_counter()
            member.member_id = response.member_id
            member.generation = response.generation_id
            member.leader = response.leader
            if response.leader == response.member_id:
                member.send_sync(round_robin([m.member_id for m in response.members],
                                             member.topic, partitions))
            else:
                member.send_sync({})
        else:
            raise member.fail(f"JoinGroup answered {_error_name(code)}")
    elif api_key == SYNC_GROUP:
        if code != error_codes.NONE:
            raise member.fail(f"SyncGroup answered {_error_name(code)}")
        timeline.last_sync_answer = time.perf_counter()
        member.synced_generation = member.generation
        member.assignment = response.assignment
    elif api_key == HEARTBEAT:
        if code != error_codes.NONE:
            raise member.fail(f"Heartbeat answered {_error_name(code)}")
    else:
        raise member.fail(f"an answer to api {api_key}")


def drive(members: list[GroupMember], partitions: int, *, rejoin_allowed: bool) -> Timeline:
    """Handles answers as they arrive until no request is in flight."""
    timeline = Timeline()
    deadline = time.monotonic() + STALL_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        for member in members:
            selector.register(member.client.sock, selectors.EVENT_READ, member)
        while any(m.in_flight is not None for m in members):
            ready = selector.select(max(deadline - time.monotonic(), 0.0))
            if not ready:
                waiting = [f"{m.name}: api {m.in_flight[0]}" for m in members if m.in_flight]
                raise AssertionError(f"no answer for {STALL_TIMEOUT_S} s; waiting: {waiting}"
                                     f"{members[0].broker.diagnosis()}")
            for key, _ in ready:
                member = key.data
                api_key, response = member.receive()
                _handle(member, api_key, response, partitions, rejoin_allowed, timeline)
    return timeline


def form_group(members: list[GroupMember], partitions: int) -> None:
    """Joins every member (MEMBER_ID_REQUIRED first), syncs, and heartbeats until one round
    of heartbeats all answer 0: the group is Stable with every member in it."""
    for member in members:
        member.find_coordinator()
    for member in members:
        member.send_join()
    drive(members, partitions, rejoin_allowed=True)
    for _ in range(100):
        for member in members:
            member.send_heartbeat()
        if drive(members, partitions, rejoin_allowed=True).rejoins == 0:
            break
    else:
        raise AssertionError(f"the group never settled{members[0].broker.diagnosis()}")
    check_group(members, partitions)


def check_group(members: list[GroupMember], partitions: int) -> None:
    """Every member Stable at one generation under one leader, holding what the leader
    assigned it, and the partitions assigned once each."""
    generations = {m.generation for m in members}
    leaders = {m.leader for m in members}
    leader = next((m for m in members if m.member_id in leaders), None)
    if (not all(m.stable for m in members) or len(generations) != 1 or len(leaders) != 1
            or leader is None):
        states = [(m.name, m.generation, m.synced_generation, m.leader[-8:]) for m in members]
        raise AssertionError(f"the group is not Stable: (member, generation, synced, leader) "
                             f"{states}{members[0].broker.diagnosis()}")
    owned: list[int] = []
    for member in members:
        expected = leader.sent_assignments.get(member.member_id)
        if member.assignment != expected:
            raise member.fail(f"holds assignment {member.assignment!r}, the leader sent "
                              f"{expected!r}")
        got = assigned_partitions(member.assignment, member.topic)
        if not got:
            raise member.fail("has an empty assignment")
        owned += got
    if sorted(owned) != list(range(partitions)):
        raise AssertionError(f"partitions assigned {sorted(owned)}, not 0..{partitions - 1}")


# ---- rebalance --------------------------------------------------------------------------------


def _skip_timer_driven_mock(broker_name: str) -> None:
    if broker_name == "mock":
        pytest.skip("librdkafka's mock completes a rebalance on a timer, not when every member "
                    "has rejoined: 3.0 s for a new group, session timeout - 1 s (9.0 s here) "
                    "for a Stable group's rebalance; timing it measures the timer")


@pytest.mark.parametrize("broker_name", ["logkernel", "tansu", "mock"])
def test_rebalance(benchmark: Any, brokers: Brokers, write_line: Callable[[str], None],
                   broker_name: str) -> None:
    _skip_timer_driven_mock(broker_name)
    broker = brokers.start(broker_name)
    topic = "rebalance"
    members = [GroupMember(broker, "bench-rebalance", topic, f"m{i}") for i in range(MEMBERS)]
    join_ms: list[float] = []
    sync_ms: list[float] = []
    _label(benchmark, f"rebalance of {MEMBERS} members: last JoinGroup to every SyncGroup "
           "answered (rebalances/s)", broker_name, "rebalance", 1, join_ms=join_ms,
           sync_ms=sync_ms)
    rounds = iter(range(1, REBALANCE_ROUNDS[broker_name] + 1))
    try:
        form_group(members, PARTITIONS)

        def setup() -> Any:
            leader = next(m for m in members if m.member_id == m.leader)
            followers = [m for m in members if m is not leader]
            before = leader.generation
            leader.user_data = f"round {next(rounds)}".encode()
            leader.send_join()
            _wait_for_rebalance(followers)
            with selectors.DefaultSelector() as selector:
                selector.register(leader.client.sock, selectors.EVENT_READ)
                if selector.select(0):
                    _, early = leader.receive()
                    raise leader.fail(f"the leader's JoinGroup was answered before any "
                                      f"follower rejoined: {early!r}")
            return (followers, before), {}

        def rebalance(followers: list[GroupMember], before: int) -> None:
            for follower in followers:
                follower.send_join()
            last_sent = time.perf_counter()
            timeline = drive(members, PARTITIONS, rejoin_allowed=False)
            join_ms.append((timeline.last_join_answer - last_sent) * 1e3)
            sync_ms.append((timeline.last_sync_answer - last_sent) * 1e3)

        def teardown(followers: list[GroupMember], before: int) -> None:
            check_group(members, PARTITIONS)
            if members[0].generation != before + 1:
                raise AssertionError(f"generation {members[0].generation} after "
                                     f"{before}{broker.diagnosis()}")

        benchmark.pedantic(rebalance, setup=setup, teardown=teardown,
                           rounds=REBALANCE_ROUNDS[broker_name],
                           iterations=1, warmup_rounds=0)
    finally:
        for member in members:
            member.close()
    joins, syncs = sorted(join_ms), sorted(sync_ms)
    benchmark.extra_info.update(
        rounds=len(syncs), join_median_ms=_percentile(joins, 50), join_max_ms=joins[-1],
        sync_median_ms=_percentile(syncs, 50), sync_max_ms=syncs[-1])
    write_line(f"rebalance {broker_name:<9} last JoinGroup sent -> every JoinGroup answered: "
               f"median {_percentile(joins, 50):6.2f} ms max {joins[-1]:6.2f} ms; -> every "
               f"SyncGroup answered: median {_percentile(syncs, 50):6.2f} ms max "
               f"{syncs[-1]:6.2f} ms ({len(syncs)} rounds)")


def _wait_for_rebalance(followers: list[GroupMember]) -> None:
    """Heartbeats from every follower until each is told REBALANCE_IN_PROGRESS."""
    waiting = list(followers)
    deadline = time.monotonic() + STALL_TIMEOUT_S
    while waiting:
        for follower in waiting:
            follower.send_heartbeat()
        told = []
        for follower in waiting:
            code = follower.receive()[1].error_code
            if code == error_codes.REBALANCE_IN_PROGRESS:
                told.append(follower)
            elif code != error_codes.NONE:
                raise follower.fail(f"Heartbeat answered {_error_name(code)}")
        waiting = [f for f in waiting if f not in told]
        if waiting:
            if time.monotonic() > deadline:
                raise waiting[0].fail(f"not told of the rebalance within {STALL_TIMEOUT_S} s")
            time.sleep(HEARTBEAT_RETRY_S)


# ---- OffsetCommit -------------------------------------------------------------------------------

# A placeholder offset for the template request: 8 bytes that occur nowhere else in it.
_OFFSET_PLACEHOLDER = 0x0123_4567_89AB_CDEF


class Commits:
    """N OffsetCommit frames of one committer, built before the clock starts: the template
    is encoded through kio once; each frame is a copy with its correlation id (bytes 8-11:
    after the size, api key and version) and its offset patched in."""

    def __init__(self, client: RawClient, group_id: str, topic: str, member_id: str,
                 generation: int, count: int) -> None:
        body = schema.encode_entity(request(
            OFFSET_COMMIT, COMMIT_VERSION, group_id=group_id,
            generation_id_or_member_epoch=generation, member_id=member_id,
            group_instance_id=None, topics=[{"name": topic, "partitions": [{
                "partition_index": 0, "committed_offset": _OFFSET_PLACEHOLDER,
                "committed_leader_epoch": -1, "committed_metadata": ""}]}]))
        template = client.frame(OFFSET_COMMIT, COMMIT_VERSION, body, correlation=0)
        placeholder = _I64.pack(_OFFSET_PLACEHOLDER)
        offset_at = template.find(placeholder)
        assert offset_at > 0 and template.count(placeholder) == 1
        self.size = len(template)
        self.count = count
        self.first_correlation = client.correlation + 1
        client.correlation += count
        frames = bytearray(template * count)
        for i in range(count):
            _I32.pack_into(frames, i * self.size + 8, self.first_correlation + i)
            _I64.pack_into(frames, i * self.size + offset_at, i + 1)
        self.frames = memoryview(frames)
        self.group_id = group_id
        self.topic = topic
        self._ok_answer: bytes | None = None  # an answer with error 0, less its correlation id

    def check(self, frame: memoryview, index: int, broker: Broker) -> None:
        """The answer to commit ``index``: compared with the first good answer, decoded in
        full when it differs (the first one, or any other that is not identical)."""
        correlation = self.first_correlation + index
        if _I32.unpack_from(frame)[0] == correlation and frame[4:] == self._ok_answer:
            return
        try:
            response = decode_response(OFFSET_COMMIT, COMMIT_VERSION, bytes(frame), correlation)
        except AssertionError as error:
            raise AssertionError(f"commit {index + 1}: answer {bytes(frame)!r} is not the "
                                 f"answer to correlation id {correlation}: {error}"
                                 f"{broker.diagnosis()}") from None
        partitions = [(t.name, p.partition_index, p.error_code)
                      for t in response.topics for p in t.partitions]
        if partitions != [(self.topic, 0, 0)]:
            raise AssertionError(f"commit {index + 1} answered {partitions}"
                                 f"{broker.diagnosis()}")
        if self._ok_answer is None:
            self._ok_answer = bytes(frame[4:])

    def send_pipelined(self, sock: socket.socket, broker: Broker) -> None:
        """Up to COMMIT_WINDOW in flight; each read's answers make room for as many more."""
        frames, size, count = self.frames, self.size, self.count
        reader = FrameReader(1 << 20)
        sent = min(COMMIT_WINDOW, count)
        sock.sendall(frames[:sent * size])
        answered = 0
        while answered < count:
            data = sock.recv(1 << 16)
            if not data:
                raise AssertionError(f"the broker closed the connection after {answered} "
                                     f"answers{broker.diagnosis()}")
            for frame in reader.feed(data):
                self.check(frame, answered, broker)
                answered += 1
            more = min(answered + COMMIT_WINDOW, count) - sent
            if more > 0:
                sock.sendall(frames[sent * size:(sent + more) * size])
                sent += more

    def send_sequential(self, sock: socket.socket, broker: Broker) -> None:
        """One in flight: each commit is sent once the previous one is answered."""
        frames, size = self.frames, self.size
        reader = FrameReader(1 << 20)
        for index in range(self.count):
            sock.sendall(frames[index * size:(index + 1) * size])
            answers: list[memoryview] = []
            while not answers:
                data = sock.recv(1 << 16)
                if not data:
                    raise AssertionError(f"the broker closed the connection after {index} "
                                         f"answers{broker.diagnosis()}")
                answers = reader.feed(data)
            if len(answers) != 1:
                raise AssertionError(f"{len(answers)} answers to one commit{broker.diagnosis()}")
            self.check(answers[0], index, broker)

    def check_committed(self, member: GroupMember) -> None:
        """OffsetFetch must return the last offset committed: N."""
        response = member.call(OFFSET_FETCH, OFFSET_FETCH_VERSION, group_id=self.group_id,
                               topics=[{"name": self.topic, "partition_indexes": [0]}])
        got = [(t.name, p.partition_index, p.committed_offset, p.error_code)
               for t in response.topics for p in t.partitions]
        if response.error_code != 0 or got != [(self.topic, 0, self.count, 0)]:
            raise member.fail(f"OffsetFetch answered {_error_name(response.error_code)} "
                              f"{got}, not offset {self.count}")


class CommitRound:
    def __init__(self, member: GroupMember, commits: Commits, cpu_before: float) -> None:
        self.member = member
        self.commits = commits
        self.cpu_before = cpu_before


COMMIT_CASES = [(mode, committer, broker)
                for mode in ("pipelined", "sequential")
                for committer in ("standalone", "member")
                for broker in ("logkernel", "tansu", "mock")]


@pytest.mark.parametrize(("mode", "committer", "broker_name"), COMMIT_CASES,
                         ids=[f"{m}-{c}-{b}" for m, c, b in COMMIT_CASES])
def test_offset_commit(benchmark: Any, brokers: Brokers, mode: str, committer: str,
                       broker_name: str) -> None:
    if broker_name == "mock" and committer == "member":
        _skip_timer_driven_mock(broker_name)
    broker = brokers.start(broker_name)
    topic = "commits"
    broker.create_topic(topic, 1, ClientLog())
    count = COMMITS if mode == "pipelined" else SEQUENTIAL_COMMITS
    in_flight = COMMIT_WINDOW if mode == "pipelined" else 1
    who = ("standalone (generation -1, no member id)" if committer == "standalone"
           else "the group's only member (its generation)")
    cpu_us: list[float] = []
    _label(benchmark, f"OffsetCommit v{COMMIT_VERSION} x {count:,}, {in_flight} in flight, "
           f"one connection, by {who}", broker_name, "commit", count, broker_cpu_us=cpu_us)
    rounds = iter(range(COMMIT_ROUNDS[mode]))

    def setup() -> Any:
        group_id = f"commits-{next(rounds)}"
        member = GroupMember(broker, group_id, topic, "committer")
        member.find_coordinator()
        if committer == "member":
            form_group([member], 1)
            commits = Commits(member.client, group_id, topic, member.member_id,
                              member.generation, count)
        else:
            commits = Commits(member.client, group_id, topic, "", -1, count)
        return (CommitRound(member, commits, broker.cpu_seconds()),), {}

    def commit(round_: CommitRound) -> None:
        if mode == "pipelined":
            round_.commits.send_pipelined(round_.member.client.sock, broker)
        else:
            round_.commits.send_sequential(round_.member.client.sock, broker)

    def teardown(round_: CommitRound) -> None:
        cpu_us.append((broker.cpu_seconds() - round_.cpu_before) / count * 1e6)
        try:
            round_.commits.check_committed(round_.member)
            if committer == "member":
                round_.member.leave()
        finally:
            round_.member.close()

    benchmark.pedantic(commit, setup=setup, teardown=teardown, rounds=COMMIT_ROUNDS[mode],
                       iterations=1, warmup_rounds=0)


# ---- real clients -------------------------------------------------------------------------------

# Rounds: with no initial delay a logkernel round takes either ~50 ms (every consumer's
# first JoinGroup arrived before the first rejoin completed the group) or ~2 s (a group
# formed with some of them, and the rest wait for the client's heartbeats to hear of the
# rebalance), so 5 show both; tansu's rounds take seconds every time (each rejoin waits
# half the session timeout), so 2.
REAL_CLIENT_ROUNDS = {"logkernel": 5, "tansu": 2}
# How often the benchmark looks whether every consumer has its partition: small against
# the seconds measured.
ASSIGNED_POLL_S = 0.005
# Each consumer thread's poll() timeout: how soon it notices the end of the round.
CONSUMER_POLL_S = 0.05


class ConsumerFleet:
    """MEMBERS confluent-kafka consumers of one group, each polled by its own thread; the
    partitions each holds, from its on_assign and on_revoke callbacks (run inside poll)."""

    def __init__(self, broker: Broker, group_id: str, topic: str, client_log: ClientLog) -> None:
        self.topic = topic
        self.consumers = [kafka.Consumer(client_log.config(
            broker.bootstrap, group_id=group_id, session_timeout_ms=SESSION_TIMEOUT_MS,
            enable_auto_commit=False)) for _ in range(MEMBERS)]
        for consumer in self.consumers:  # connected, with metadata, before the clock starts
            consumer.list_topics(topic, timeout=STALL_TIMEOUT_S)
        self.assigned: dict[int, list[int]] = {}
        self.errors: list[str] = []
        self.stop = False
        self.threads: list[threading.Thread] = []

    def _poll(self, index: int) -> None:
        consumer = self.consumers[index]
        assigned = self.assigned

        def on_assign(_consumer: Any, partitions: list[Any]) -> None:
            assigned[index] = sorted(p.partition for p in partitions)

        def on_revoke(_consumer: Any, _partitions: list[Any]) -> None:
            assigned.pop(index, None)

        try:
            consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
            while not self.stop:
                message = consumer.poll(CONSUMER_POLL_S)
                if message is not None and message.error() is not None:
                    self.errors.append(str(message.error()))
        except Exception as error:  # reported by the benchmark, not lost in a thread
            self.errors.append(repr(error))

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._poll, args=(i,), daemon=True,
                                         name=f"consumer-{i}") for i in range(MEMBERS)]
        for thread in self.threads:
            thread.start()

    def all_assigned(self) -> bool:
        held = list(self.assigned.values())
        return len(held) == MEMBERS and all(held)

    def close(self) -> None:
        self.stop = True
        for thread in self.threads:
            thread.join(STALL_TIMEOUT_S)
        for consumer in self.consumers:
            consumer.close()


@pytest.mark.parametrize("broker_name", ["logkernel", "tansu", "mock"])
def test_real_consumers_assigned(benchmark: Any, brokers: Brokers, broker_name: str) -> None:
    _skip_timer_driven_mock(broker_name)
    broker = brokers.start(broker_name)
    client_log = ClientLog()
    topic = "real-consumers"
    broker.create_topic(topic, PARTITIONS, client_log)
    _label(benchmark, f"{MEMBERS} confluent-kafka consumers, {PARTITIONS} partitions: first "
           "subscribe() to every consumer assigned (groups/s)", broker_name, "group", 1)
    rounds = iter(range(REAL_CLIENT_ROUNDS[broker_name]))

    def setup() -> Any:
        return (ConsumerFleet(broker, f"real-{next(rounds)}", topic, client_log),), {}

    def subscribe_all(fleet: ConsumerFleet) -> None:
        fleet.start()
        deadline = time.monotonic() + STALL_TIMEOUT_S
        while not fleet.all_assigned():
            if fleet.errors or time.monotonic() > deadline:
                raise AssertionError(f"assigned {fleet.assigned} after {STALL_TIMEOUT_S} s; "
                                     f"errors {fleet.errors[:5]}{broker.diagnosis(client_log)}")
            time.sleep(ASSIGNED_POLL_S)

    def teardown(fleet: ConsumerFleet) -> None:
        held = sorted(p for partitions in fleet.assigned.values() for p in partitions)
        fleet.close()
        if held != list(range(PARTITIONS)):
            raise AssertionError(f"partitions held {held}, not 0..{PARTITIONS - 1} once each"
                                 f"{broker.diagnosis(client_log)}")

    benchmark.pedantic(subscribe_all, setup=setup, teardown=teardown,
                       rounds=REAL_CLIENT_ROUNDS[broker_name], iterations=1, warmup_rounds=0)
