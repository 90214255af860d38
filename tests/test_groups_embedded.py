"""Embedded consumers in consumer groups: Consumer(group_id=...) with real threads.

Each consumer is polled by its own thread (a consumer is used by one thread at a time, as
in Kafka); its heartbeat thread runs beside it. A Recorder takes every rebalance-listener
call of every consumer under one lock, in the order they happen, so a test can say who
owned what at any moment. Deadlines in these tests only bound waiting for something that
must happen; no test asserts that anything is fast.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

import logkernel
from logkernel import errors

TOPIC = "events"
PARTITIONS = 6
ALL = {(TOPIC, p) for p in range(PARTITIONS)}
# Small so the tests do not wait on defaults made for networks: no initial rebalance delay,
# and session timeouts allowed down to 100 ms.
ENGINE_CONFIG = {"group.initial.rebalance.delay.ms": 0, "group.min.session.timeout.ms": 100}
# Long enough never to expire by accident on a slow machine; rebalances are driven by
# heartbeats every HEARTBEAT_MS, not by expiry.
SESSION_MS = 10_000
HEARTBEAT_MS = 20
MAX_POLL_MS = 10_000


# The poll loops of the running test: waiting stops early (and says why) if one has died,
# and a failed test's loops are stopped before its engine closes.
LOOPS: list[PollLoop] = []


@pytest.fixture
def lk(tmp_path: Path):
    engine = logkernel.open(tmp_path / "data", ENGINE_CONFIG)
    engine.create_topic(TOPIC, PARTITIONS)
    yield engine
    for loop in LOOPS:
        loop.halt()
    LOOPS.clear()
    engine.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for loop in LOOPS:
            loop.check()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


class Recorder:
    """Every listener call of every consumer, with the partitions each one owns after it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, str, frozenset]] = []
        self.owned: dict[str, set[tuple[str, int]]] = {}
        self.overlaps: list[str] = []    # partitions assigned while another consumer owned them

    def listener(self, name: str) -> Any:
        recorder = self

        class Listener:
            def on_partitions_revoked(self, revoked: set) -> None:
                recorder.record(name, "revoked", revoked)

            def on_partitions_assigned(self, assigned: set) -> None:
                recorder.record(name, "assigned", assigned)

            def on_partitions_lost(self, lost: set) -> None:
                recorder.record(name, "lost", lost)

        return Listener()

    def record(self, name: str, kind: str, partitions: Iterable[tuple[str, int]]) -> None:
        partitions = frozenset(partitions)
        with self.lock:
            mine = self.owned.setdefault(name, set())
            if kind == "assigned":
                for other, theirs in self.owned.items():
                    if other != name and theirs & partitions:
                        self.overlaps.append(f"{name} was given {sorted(theirs & partitions)} "
                                             f"while {other} owned them")
                mine |= partitions
            else:
                assert partitions <= mine, f"{name} {kind} {partitions} it did not own ({mine})"
                mine -= partitions
            self.events.append((time.monotonic(), name, kind, partitions))

    def forget(self, name: str) -> None:
        """``name`` closed: it owns nothing any more (whether or not close() told its listener)."""
        with self.lock:
            self.owned.pop(name, None)

    def of(self, name: str) -> set[tuple[str, int]]:
        with self.lock:
            return set(self.owned.get(name, ()))

    def events_of(self, name: str) -> list[tuple[str, frozenset]]:
        with self.lock:
            return [(kind, parts) for _, who, kind, parts in self.events if who == name]

    def split(self, *names: str, partitions: set[tuple[str, int]] = ALL) -> bool:
        """Whether ``names`` together own exactly ``partitions``, each some, none twice."""
        with self.lock:
            sets = [self.owned.get(n, set()) for n in names]
        return (all(sets) and sum(len(s) for s in sets) == len(partitions)
                and set().union(*sets) == partitions)


class PollLoop:
    """Polls one consumer on its own thread until stopped, keeping what it read."""

    def __init__(self, consumer: Any, name: str) -> None:
        self.consumer = consumer
        self.name = name
        self.records: list[tuple[int, int]] = []      # (partition, offset)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poll {name}", daemon=True)
        self._thread.start()
        LOOPS.append(self)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._pause.is_set():
                    self._paused.set()
                    time.sleep(0.01)
                    continue
                self._paused.clear()
                for record in self.consumer.poll(timeout_ms=50):
                    self.records.append((record.partition, record.offset))
        except BaseException as exc:
            self.error = exc

    def pause(self) -> None:
        """Stops polling (the consumer is then free for the test's thread)."""
        self._pause.set()
        assert self._paused.wait(10), f"{self.name} did not pause"

    def resume(self) -> None:
        self._pause.clear()

    def halt(self) -> None:
        """Stops polling and closes the consumer, whatever state the test left it in."""
        self._stop.set()
        self._thread.join(10)
        with contextlib.suppress(Exception):
            self.consumer.close()

    def stop(self, *, close: bool = True) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), f"{self.name}'s poll loop is stuck"
        if close:
            self.consumer.close()
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"{self.name}'s poll raised {self.error!r}") from self.error


def stop_all(*loops: PollLoop) -> None:
    """Stops every poll loop first, then closes the consumers, so no one reacts to the
    others' departure in the middle of a test's final checks."""
    for loop in loops:
        loop.stop(close=False)
    for loop in loops:
        loop.consumer.close()


def group_consumer(lk: logkernel.Engine, strategy: str = "range", **options: Any) -> Any:
    settings: dict[str, Any] = dict(
        group_id="group", partition_assignment_strategy=[strategy], auto_offset_reset="earliest",
        session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
        max_poll_interval_ms=MAX_POLL_MS)
    settings.update(options)
    return lk.consumer(**settings)


def start(lk: logkernel.Engine, recorder: Recorder, name: str, strategy: str = "range",
          **options: Any) -> PollLoop:
    consumer = group_consumer(lk, strategy, client_id=name, **options)
    consumer.subscribe([TOPIC], listener=recorder.listener(name))
    return PollLoop(consumer, name)


def produce(lk: logkernel.Engine, per_partition: int, start: int = 0) -> None:
    producer = lk.producer()
    for i in range(start, start + per_partition):
        for p in range(PARTITIONS):
            producer.send(TOPIC, f"{p}-{i}".encode(), partition=p)
    producer.close()


def poll_until(consumers: list[Any], predicate: Callable[[], Any], what: str,
               timeout: float = 15.0) -> None:
    """Polls each consumer in turn on this thread until ``predicate`` holds. Each poll has
    timeout 0, so it takes at most one step of a rebalance (a longer poll may take two, and
    the order between members is then the test's no longer)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        for consumer in consumers:
            consumer.poll(timeout_ms=0)
        time.sleep(0.01)


# ---- assignment -------------------------------------------------------------------------


def test_one_member_gets_every_partition(lk: logkernel.Engine) -> None:
    recorder = Recorder()
    consumer = group_consumer(lk)
    consumer.subscribe([TOPIC], listener=recorder.listener("a"))
    poll_until([consumer], lambda: recorder.of("a") == ALL, "the lone member's assignment")
    assert {(tp.topic, tp.partition) for tp in consumer.assignment()} == ALL
    assert recorder.events_of("a") == [("assigned", frozenset(ALL))]
    consumer.close()
    assert lk.describe_group("group").state == "Empty"


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_two_members_split_the_partitions(lk: logkernel.Engine, strategy: str) -> None:
    recorder = Recorder()
    a = start(lk, recorder, "a", strategy)
    wait_until(lambda: recorder.of("a") == ALL, what="a to own everything")
    b = start(lk, recorder, "b", strategy)
    wait_until(lambda: recorder.split("a", "b") and len(recorder.of("a")) == 3,
               what="a 3/3 split")
    a.check()
    b.check()
    a_events, b_events = recorder.events_of("a"), recorder.events_of("b")
    if strategy == "range":
        assert {frozenset(recorder.of("a")), frozenset(recorder.of("b"))} == {
            frozenset((TOPIC, p) for p in (0, 1, 2)), frozenset((TOPIC, p) for p in (3, 4, 5))}
    if strategy == "roundrobin":
        assert {frozenset(recorder.of("a")), frozenset(recorder.of("b"))} == {
            frozenset((TOPIC, p) for p in (0, 2, 4)), frozenset((TOPIC, p) for p in (1, 3, 5))}
    if strategy == "cooperative-sticky":
        # a gives up only the three that move, and keeps the rest throughout.
        revoked = set().union(*(parts for kind, parts in a_events if kind == "revoked"))
        assert revoked == recorder.of("b")
        assert not revoked & recorder.of("a")
        assert not any(kind == "revoked" for kind, _ in b_events)
    else:
        # Eager: every revocation gives up everything owned at the time, and is followed
        # by an assignment.
        owned: set = set()
        for i, (kind, parts) in enumerate(a_events):
            if kind == "revoked":
                assert parts == owned, "an eager rebalance revokes every partition"
                assert a_events[i + 1][0] == "assigned"
                owned = set()
            else:
                owned |= parts
    assert recorder.overlaps == []
    stop_all(a, b)


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_records_are_delivered_once_across_members(lk: logkernel.Engine, strategy: str) -> None:
    """600 records, two members joining at different times, auto commit on (commits on
    revocation): each (partition, offset) is read exactly once."""
    recorder = Recorder()
    produce(lk, 50)
    a = start(lk, recorder, "a", strategy, max_poll_records=7)
    wait_until(lambda: len(a.records) >= 60, what="a to read some records")
    b = start(lk, recorder, "b", strategy, max_poll_records=7)
    produce(lk, 25, start=50)
    wait_until(lambda: recorder.split("a", "b"), what="the split")
    produce(lk, 25, start=75)
    total = 100 * PARTITIONS
    wait_until(lambda: len(set(a.records) | set(b.records)) >= total,
               what="every record to be read")
    stop_all(a, b)
    read = a.records + b.records
    assert len(read) == len(set(read)) == total, "a record was read twice"
    assert set(read) == {(p, o) for p in range(PARTITIONS) for o in range(100)}
    assert b.records, "b never got anything to read"
    assert recorder.overlaps == []


def test_closed_member_hands_its_partitions_over(lk: logkernel.Engine) -> None:
    recorder = Recorder()
    a, b = start(lk, recorder, "a"), start(lk, recorder, "b")
    wait_until(lambda: recorder.split("a", "b"), what="the split")
    b.stop()  # close() leaves the group
    recorder.forget("b")
    wait_until(lambda: recorder.of("a") == ALL, what="a to take b's partitions")
    assert recorder.overlaps == []
    a.stop()


def test_close_and_unsubscribe_revoke_through_the_listener(lk: logkernel.Engine) -> None:
    """Kafka's ConsumerRebalanceListener.onPartitionsRevoked "can also be called when
    consumer is being closed (KafkaConsumer.close(Duration)) or is unsubscribing
    (KafkaConsumer.unsubscribe())", and the Java consumer does call it then
    (ConsumerCoordinator.onLeavePrepare): applications commit or flush state there."""
    recorder = Recorder()
    closing = group_consumer(lk, client_id="closing")
    closing.subscribe([TOPIC], listener=recorder.listener("closing"))
    poll_until([closing], lambda: recorder.of("closing") == ALL, "the assignment")
    closing.close()
    assert recorder.events_of("closing")[-1] == ("revoked", frozenset(ALL))
    leaving = group_consumer(lk, client_id="leaving")
    leaving.subscribe([TOPIC], listener=recorder.listener("leaving"))
    poll_until([leaving], lambda: recorder.of("leaving") == ALL, "the assignment")
    leaving.unsubscribe()
    assert recorder.events_of("leaving")[-1] == ("revoked", frozenset(ALL))
    leaving.close()


def test_member_that_stops_polling_is_fenced(lk: logkernel.Engine) -> None:
    """A consumer that does not poll for max_poll_interval_ms leaves the group; its
    partitions go to the live member, it hears they are lost, and its commits fail cleanly."""
    recorder = Recorder()
    a = start(lk, recorder, "a", max_poll_interval_ms=600)
    b = start(lk, recorder, "b", max_poll_interval_ms=600)
    wait_until(lambda: recorder.split("a", "b"), what="the split")
    a_owned = recorder.of("a")
    a.pause()
    wait_until(lambda: recorder.of("b") == ALL, what="b to take over a's partitions")
    with pytest.raises(errors.GroupFencedError):
        a.consumer.commit({tp: 5 for tp in a_owned})
    a.resume()
    wait_until(lambda: ("lost", frozenset(a_owned)) in recorder.events_of("a")
               or ("revoked", frozenset(a_owned)) in recorder.events_of("a"),
               what="a to hear its partitions are gone")
    wait_until(lambda: recorder.split("a", "b"), what="a to come back")
    stop_all(a, b)


def test_new_partitions_are_assigned_after_a_rebalance(lk: logkernel.Engine) -> None:
    recorder = Recorder()
    a, b = start(lk, recorder, "a"), start(lk, recorder, "b")
    wait_until(lambda: recorder.split("a", "b"), what="the split")
    lk.create_partitions(TOPIC, 8)
    grown = {(TOPIC, p) for p in range(8)}
    wait_until(lambda: recorder.split("a", "b", partitions=grown), what="the new partitions")
    assert len(recorder.of("a")) == len(recorder.of("b")) == 4
    assert recorder.overlaps == []
    stop_all(a, b)


def test_configuration_errors_at_creation(lk: logkernel.Engine) -> None:
    with pytest.raises(errors.UnsupportedAssignorError):
        lk.consumer(group_id="group", partition_assignment_strategy=["sticky-ish"])
    with pytest.raises(errors.UnsupportedAssignorError):
        lk.consumer(group_id="group", partition_assignment_strategy=["range", "nope"])
    with pytest.raises(errors.ConfigError):
        lk.consumer(group_instance_id="host-1")
    with pytest.raises(errors.ConfigError):
        lk.consumer(group_id="group", group_instance_id="")


# ---- static membership ------------------------------------------------------------------


def test_static_member_restart_keeps_its_partitions(lk: logkernel.Engine) -> None:
    """KIP-345: a static member that closes and comes back with the same
    group.instance.id within its session timeout gets its partitions back, and the rest of
    the group does not rebalance (Kafka rebalances only if the selected protocol changes)."""
    recorder = Recorder()
    a = start(lk, recorder, "a", group_instance_id="host-a")
    b = start(lk, recorder, "b")
    wait_until(lambda: recorder.split("a", "b"), what="the split")
    a_owned = recorder.of("a")
    b_events = len(recorder.events_of("b"))
    a.stop()  # a static member does not leave: it is expected back
    recorder.forget("a")
    restarted = start(lk, recorder, "a2", group_instance_id="host-a")
    wait_until(lambda: recorder.of("a2"), what="the restarted member's assignment")
    time.sleep(0.3)  # b's heartbeats would have told it of a rebalance by now
    assert recorder.of("a2") == a_owned
    assert recorder.events_of("b")[b_events:] == [], "b went through a rebalance"
    stop_all(restarted, b)


def test_static_member_that_stops_polling_rejoins(lk: logkernel.Engine) -> None:
    """After max_poll_interval_ms without a poll the member is out of the group; its next
    poll must report the partitions lost and rejoin, not raise."""
    recorder = Recorder()
    consumer = group_consumer(lk, group_instance_id="host-a", max_poll_interval_ms=300)
    consumer.subscribe([TOPIC], listener=recorder.listener("a"))
    poll_until([consumer], lambda: recorder.of("a") == ALL, "the first assignment")
    time.sleep(0.8)  # no poll: the heartbeat thread takes the member out of the group
    poll_until([consumer], lambda: ("lost", frozenset(ALL)) in recorder.events_of("a")
               and recorder.of("a") == ALL, "the member to rejoin")
    consumer.close()


# ---- the poll loop must survive ordinary rebalance races ----------------------------------


def test_long_poll_does_not_count_as_a_stalled_application(lk: logkernel.Engine) -> None:
    """max.poll.interval.ms bounds the time *between* polls; Kafka's consumer resets that
    timer as its poll loop runs, so one poll(timeout) longer than the interval does not make
    the member leave the group."""
    recorder = Recorder()
    consumer = group_consumer(lk, max_poll_interval_ms=300)
    consumer.subscribe([TOPIC], listener=recorder.listener("a"))
    poll_until([consumer], lambda: recorder.of("a") == ALL, "the first assignment")
    assert consumer.poll(timeout_ms=1200) == []  # an idle topic: nothing to read
    assert recorder.events_of("a") == [("assigned", frozenset(ALL))]
    consumer.close()


def test_sync_after_another_rebalance_started_rejoins(lk: logkernel.Engine) -> None:
    """A member whose JoinGroup answer is waiting when a third member arrives finds the
    group rebalancing again at its SyncGroup: it must rejoin (as Kafka's consumer does on
    REBALANCE_IN_PROGRESS), not raise from poll."""
    recorder = Recorder()
    a = group_consumer(lk, client_id="a")
    a.subscribe([TOPIC], listener=recorder.listener("a"))
    poll_until([a], lambda: recorder.of("a") == ALL, "a's assignment")
    b = group_consumer(lk, client_id="b")
    b.subscribe([TOPIC], listener=recorder.listener("b"))
    b.poll(timeout_ms=30)  # b's JoinGroup waits for a to rejoin
    poll_until([a], lambda: len(recorder.of("a")) == 3, "a to rejoin (and lead)")
    c = group_consumer(lk, client_id="c")
    c.subscribe([TOPIC], listener=recorder.listener("c"))
    c.poll(timeout_ms=30)  # a new rebalance starts before b syncs
    poll_until([a, b, c], lambda: recorder.split("a", "b", "c"), "the three-way split")
    for consumer in (a, b, c):
        consumer.close()


def cooperative_member_waiting_for_the_leader(lk: logkernel.Engine, recorder: Recorder,
                                              **options: Any) -> tuple[Any, Any, Any]:
    """a (the leader) and b split the topic (cooperative-sticky); then c joins, a rejoins,
    and b's rejoin completes the join: the group is in CompletingRebalance with b waiting
    for a's SyncGroup, while b still owns (and has positions in) its partitions."""
    produce(lk, 3)
    consumers = []
    for name in ("a", "b", "c"):
        consumer = group_consumer(lk, "cooperative-sticky", client_id=name, **options)
        consumer.subscribe([TOPIC], listener=recorder.listener(name))
        consumers.append(consumer)
    a, b, c = consumers
    poll_until([a], lambda: recorder.of("a") == ALL, "a's assignment")
    poll_until([a, b], lambda: recorder.split("a", "b"), "the a/b split")
    for consumer in (a, b):
        consumer.poll(timeout_ms=30)
    c.poll(timeout_ms=30)     # c's JoinGroup starts a rebalance and waits
    time.sleep(0.3)           # a's and b's heartbeats hear of it
    a.poll(timeout_ms=30)     # a rejoins and waits for b
    return a, b, c


def test_auto_commit_in_poll_does_not_raise_while_a_rebalance_completes(
        lk: logkernel.Engine) -> None:
    """Kafka's consumer commits automatically in the background of poll and only logs a
    failed auto commit; a poll that happens to auto commit while the group completes a
    rebalance (REBALANCE_IN_PROGRESS) must not raise into the application."""
    recorder = Recorder()
    a, b, c = cooperative_member_waiting_for_the_leader(lk, recorder, auto_commit_interval_ms=1)
    assert lk.groups.describe_group("group").state == "PreparingRebalance"
    b.poll(timeout_ms=100)    # completes the join; waits for a's SyncGroup; auto commits
    poll_until([a, b, c], lambda: recorder.split("a", "b", "c"), "the three-way split")
    for consumer in (a, b, c):
        consumer.close()


def test_close_does_not_raise_while_a_rebalance_completes(lk: logkernel.Engine) -> None:
    """close() commits (auto commit on) and leaves; a commit refused because a rebalance is
    completing must not escape close() (Kafka logs a failed final auto commit)."""
    recorder = Recorder()
    a, b, c = cooperative_member_waiting_for_the_leader(lk, recorder,
                                                        auto_commit_interval_ms=60_000)
    b.poll(timeout_ms=100)
    assert lk.groups.describe_group("group").state == "CompletingRebalance"
    b.close()
    poll_until([a, c], lambda: recorder.split("a", "c"), "a and c to split")
    a.close()
    c.close()


def test_stale_heartbeat_answer_does_not_lose_the_partitions(
        lk: logkernel.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat sent for generation g can be answered after the member has moved on to
    g+1: ILLEGAL_GENERATION then speaks of a generation the member has already left, and
    Kafka's consumer ignores it (AbstractCoordinator.HeartbeatResponseHandler checks
    generationUnchanged()). Taking it as "fenced" gives the partitions up as lost, without
    the commit before revocation, so their next owner reads again what was delivered."""
    recorder = Recorder()
    consumer = group_consumer(lk, client_id="a")
    consumer.subscribe([TOPIC], listener=recorder.listener("a"))
    poll_until([consumer], lambda: recorder.of("a") == ALL, "generation 1")
    real_heartbeat = lk.groups.heartbeat
    sent, release, answered = threading.Event(), threading.Event(), threading.Event()

    def late_heartbeat(group_id: str, **request: Any) -> None:
        sent.set()
        release.wait(10)
        try:
            real_heartbeat(group_id, **request)
        finally:
            answered.set()

    monkeypatch.setattr(lk.groups, "heartbeat", late_heartbeat)
    assert sent.wait(10)  # a heartbeat for generation 1 is on its way...
    monkeypatch.setattr(lk.groups, "heartbeat", real_heartbeat)
    lk.create_partitions(TOPIC, 8)  # ...while the member (the leader) moves to generation 2
    grown = {(TOPIC, p) for p in range(8)}
    poll_until([consumer], lambda: recorder.of("a") == grown, "generation 2")
    release.set()
    assert answered.wait(10)
    consumer.poll(timeout_ms=0)
    assert [kind for kind, _ in recorder.events_of("a")] == ["assigned", "revoked", "assigned"]
    consumer.close()


def test_a_stalled_application_is_reported_once(lk: logkernel.Engine,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """After max_poll_interval_ms without a poll the heartbeat thread leaves the group and
    says so; it should then stop (Kafka's heartbeat thread resets the generation and sends
    nothing more until the next poll), not send LeaveGroup and log the same warning again at
    every heartbeat interval for as long as the application is stuck."""
    recorder = Recorder()
    consumer = group_consumer(lk, max_poll_interval_ms=200)
    consumer.subscribe([TOPIC], listener=recorder.listener("a"))
    poll_until([consumer], lambda: recorder.of("a") == ALL, "the assignment")
    with caplog.at_level("WARNING", logger="logkernel"):
        time.sleep(0.8)  # 40 heartbeat intervals after the poll timeout
    stalls = [r for r in caplog.records if "max_poll_interval_ms" in r.getMessage()]
    assert len(stalls) == 1, f"{len(stalls)} warnings about one stall"
    consumer.close()
