"""The consumer-protocol (KIP-848) group state machine and its server-side assignors.

State-machine tests: a hand-advanced clock stands in for the timer thread, so session and
rebalance timeouts fire exactly when a test says. Real clients over TCP are tested with the
broker."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import itertools
import random
import threading
from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logkernel import errors
from logkernel.coordinator.consumer_group import (
    ConsumerGroup,
    ConsumerGroupSettings,
    HeartbeatResult,
)
from logkernel.coordinator.server_assignors import (
    ASSIGNORS,
    MemberSpec,
    RangeAssignor,
    TopicSpec,
    UniformAssignor,
)
from logkernel.coordinator.timers import Timer

SESSION_MS = 10_000
REBALANCE_MS = 4_000
SETTINGS = ConsumerGroupSettings(session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000,
                                 max_size=10, assignors=("uniform", "range"))


class ManualTimers:
    """The ``Timers`` shape, advanced by hand: callbacks run inside ``advance``."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self.scheduled: list[tuple[float, Timer]] = []  # (delay, timer), every one

    def clock(self) -> float:
        return self.now

    def schedule(self, delay_seconds: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + max(delay_seconds, 0.0), callback)
        heapq.heappush(self._heap, (timer.deadline, next(self._sequence), timer))
        self.scheduled.append((delay_seconds, timer))
        return timer

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._heap and self._heap[0][0] <= until:
            deadline, _, timer = heapq.heappop(self._heap)
            self.now = deadline
            if not timer.cancelled:
                timer.callback()
        self.now = until

    def pending(self) -> int:
        return sum(not entry[2].cancelled for entry in self._heap)


class FakeTopics:
    """The engine's topic registry, as the group sees it."""

    def __init__(self) -> None:
        self.by_name: dict[str, tuple[bytes, int]] = {}
        self._generation = itertools.count()

    def create(self, name: str, partitions: int) -> bytes:
        topic_id = hashlib.md5(f"{name}/{next(self._generation)}".encode()).digest()
        self.by_name[name] = (topic_id, partitions)
        return topic_id

    def grow(self, name: str, partitions: int) -> None:
        topic_id, _ = self.by_name[name]
        self.by_name[name] = (topic_id, partitions)

    def delete(self, name: str) -> None:
        del self.by_name[name]

    def id(self, name: str) -> bytes:
        return self.by_name[name][0]

    def lookup(self, name: str) -> tuple[bytes, int] | None:
        return self.by_name.get(name)

    def name_for(self, topic_id: bytes) -> str | None:
        return next((n for n, (i, _) in self.by_name.items() if i == topic_id), None)

    def names(self) -> list[str]:
        return sorted(self.by_name)


class Client:
    """A consumer as the protocol expects one: it joins with epoch 0, then heartbeats with
    the epoch of its last response, takes every assignment it is sent as what it owns (it
    revokes and adds at once), and reports what it owns."""

    def __init__(self, group: ConsumerGroup, member_id: str, names: list[str] | None = None,
                 regex: str | None = None, instance_id: str | None = None,
                 assignor: str | None = None, rebalance_timeout_ms: int = REBALANCE_MS,
                 rack_id: str | None = None) -> None:
        self.group = group
        self.rack_id = rack_id
        self.member_id = member_id
        self.names = names
        self.regex = regex
        self.instance_id = instance_id
        self.assignor = assignor
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.epoch = 0
        self.owned: dict[bytes, set[int]] = {}
        self.send_full = False  # after a lost response, as the Java client does
        self.subscription_changed = False

    def owned_list(self) -> list[tuple[bytes, list[int]]]:
        return [(t, sorted(p)) for t, p in sorted(self.owned.items()) if p]

    def request(self, *, send_owned: bool = True, epoch: int | None = None,
                **overrides: object) -> HeartbeatResult:
        joining = self.epoch == 0
        full = joining or self.send_full
        subscription = full or self.subscription_changed
        arguments: dict[str, object] = dict(
            version=1, member_id=self.member_id,
            member_epoch=self.epoch if epoch is None else epoch,
            instance_id=self.instance_id if full else None,
            rack_id=self.rack_id if full else None,
            rebalance_timeout_ms=self.rebalance_timeout_ms if full else -1,
            subscribed_topic_names=self.names if subscription else None,
            subscribed_topic_regex=self.regex if subscription else None,
            server_assignor=self.assignor if full else None,
            owned_partitions=[] if joining else (
                self.owned_list() if send_owned or full else None),
            client_id="test-client", client_host="/127.0.0.1")
        arguments.update(overrides)
        return self.group.heartbeat(**arguments)  # type: ignore[arg-type]

    def heartbeat(self, *, send_owned: bool = True) -> HeartbeatResult | None:
        """One heartbeat; on a fencing error the client drops its partitions and will
        rejoin with epoch 0 (as Kafka's clients do) and None is returned."""
        try:
            result = self.request(send_owned=send_owned)
        except (errors.UnknownMemberIdError, errors.FencedMemberEpochError):
            self.epoch = 0
            self.owned = {}
            return None
        self.send_full = self.subscription_changed = False
        self.epoch = result.member_epoch
        if result.assignment is not None:
            self.owned = {t: set(p) for t, p in result.assignment}
        return result

    def leave(self, epoch: int = -1) -> HeartbeatResult:
        result = self.request(epoch=epoch, instance_id=self.instance_id)
        self.owned = {}
        return result


def make_group(**changes: object) -> tuple[ConsumerGroup, FakeTopics, ManualTimers, list[str]]:
    topics = FakeTopics()
    timers = ManualTimers()
    removed: list[str] = []
    group_settings = dataclasses.replace(SETTINGS, **changes)  # type: ignore[arg-type]
    group = ConsumerGroup("g", group_settings, topics, timers, threading.RLock(),
                          on_member_removed=removed.append)
    return group, topics, timers, removed


def assigned(group: ConsumerGroup, member_id: str) -> dict[bytes, list[int]]:
    return next(m.assignment for m in group.describe().members if m.member_id == member_id)


def assert_no_shared_partitions(group: ConsumerGroup, *clients: Client) -> None:
    group._check()
    seen: set[tuple[bytes, int]] = set()
    for member in group.describe().members:
        for topic_id, partitions in member.assignment.items():
            for partition in partitions:
                assert (topic_id, partition) not in seen
                seen.add((topic_id, partition))
    held: set[tuple[bytes, int]] = set()
    for client in clients:
        for topic_id, partitions in client.owned.items():
            for partition in partitions:
                assert (topic_id, partition) not in held, "two consumers own a partition"
                held.add((topic_id, partition))


def flat(assignment: list[tuple[bytes, list[int]]] | dict[bytes, list[int]] | None,
         ) -> set[tuple[bytes, int]]:
    items = assignment.items() if isinstance(assignment, dict) else assignment or []
    return {(t, p) for t, parts in items for p in parts}


# ---- joining, revoking, leaving ------------------------------------------------------------


def test_one_member_gets_every_partition_and_then_null_assignments() -> None:
    group, topics, _, _ = make_group()
    t = topics.create("t", 4)
    a = Client(group, "a", ["t"])
    result = a.heartbeat()
    assert result is not None
    assert (result.member_id, result.member_epoch, result.heartbeat_interval_ms) == ("a", 1, 1000)
    assert result.assignment == [(t, [0, 1, 2, 3])]
    assert group.state == "Stable"
    for _ in range(3):  # unchanged: null, so clients do not reprocess it every heartbeat
        again = a.heartbeat()
        assert again is not None and again.assignment is None and again.member_epoch == 1
    full = a.request(rebalance_timeout_ms=REBALANCE_MS, subscribed_topic_names=["t"],
                     owned_partitions=a.owned_list())
    assert full.assignment == [(t, [0, 1, 2, 3])]  # a full request gets it again
    group._check()


def test_second_member_gets_partitions_only_after_the_first_revokes() -> None:
    group, topics, _, _ = make_group()
    t = topics.create("t", 4)
    a, b = Client(group, "a", ["t"]), Client(group, "b", ["t"])
    a.heartbeat()
    joined = b.heartbeat()
    assert joined is not None and joined.member_epoch == 2 and joined.assignment == []
    assert group.state == "Reconciling"
    assert_no_shared_partitions(group, a, b)

    revoke = a.heartbeat()  # a must give up half first, at its old epoch
    assert revoke is not None and revoke.member_epoch == 1
    assert len(flat(revoke.assignment)) == 2
    assert_no_shared_partitions(group, a, b)
    # b is told nothing new while a still reports the partitions it must give up
    waiting = b.heartbeat()
    assert waiting is not None and waiting.assignment is None
    still = a.request(owned_partitions=[(t, [0, 1, 2, 3])])
    assert still.member_epoch == 1 and still.assignment is None
    assert b.heartbeat().assignment is None  # type: ignore[union-attr]

    acknowledged = a.heartbeat()  # now a reports only the two it kept
    assert acknowledged is not None and acknowledged.member_epoch == 2
    assert acknowledged.assignment is None  # what it has did not change
    got = b.heartbeat()
    assert got is not None and got.member_epoch == 2
    assert flat(got.assignment) == {(t, p) for p in range(4)} - flat(revoke.assignment)
    assert group.state == "Stable"
    assert_no_shared_partitions(group, a, b)


def test_revocation_with_null_owned_partitions_waits() -> None:
    group, topics, _, _ = make_group()
    topics.create("t", 2)
    a, b = Client(group, "a", ["t"]), Client(group, "b", ["t"])
    a.heartbeat()
    b.heartbeat()
    a.heartbeat()  # revoke one
    assert a.heartbeat(send_owned=False).member_epoch == 1  # type: ignore[union-attr]
    assert b.heartbeat().assignment is None  # type: ignore[union-attr]
    assert a.heartbeat().member_epoch == 2  # type: ignore[union-attr]
    assert len(flat(b.heartbeat().assignment)) == 1  # type: ignore[union-attr]


def test_leave_and_session_expiry_give_partitions_back() -> None:
    group, topics, timers, removed = make_group()
    t = topics.create("t", 4)
    a, b, c = Client(group, "a", ["t"]), Client(group, "b", ["t"]), Client(group, "c", ["t"])
    for _ in range(4):
        for client in (a, b, c):
            client.heartbeat()
    assert group.state == "Stable"
    epoch = group.group_epoch

    left = c.leave()
    assert (left.member_id, left.member_epoch, left.assignment) == ("c", -1, None)
    assert group.group_epoch == epoch + 1 and removed == ["c"]
    for _ in range(2):
        for client in (a, b):
            client.heartbeat()
    assert flat(a.owned) | flat(b.owned) == {(t, p) for p in range(4)}
    assert group.state == "Stable"

    timers.advance(SESSION_MS / 1000 * 0.6)
    a.heartbeat()
    timers.advance(SESSION_MS / 1000 * 0.6)  # b has not heartbeated for 1.2 sessions
    assert removed == ["c", "b"]
    assert group.group_epoch == epoch + 2
    result = a.heartbeat()
    assert result is not None and flat(result.assignment) == {(t, p) for p in range(4)}
    with pytest.raises(errors.UnknownMemberIdError):
        b.request()
    timers.advance(SESSION_MS / 1000 * 2)
    assert group.is_empty() and group.state == "Empty"
    assert timers.pending() == 0


def test_rebalance_timeout_fences_a_member_that_does_not_revoke() -> None:
    group, topics, timers, removed = make_group()
    t = topics.create("t", 2)
    a, b = Client(group, "a", ["t"]), Client(group, "b", ["t"], rebalance_timeout_ms=2000)
    b.heartbeat()
    a.heartbeat()
    b.heartbeat()  # b is asked to revoke one partition; it never confirms
    timers.advance(1.0)
    b.heartbeat(send_owned=False)  # heartbeats alone do not extend the rebalance timeout
    a.heartbeat()
    timers.advance(1.5)
    assert removed == ["b"]
    result = a.heartbeat()
    assert result is not None and flat(result.assignment) == {(t, 0), (t, 1)}
    assert b.heartbeat() is None  # fenced: the client learns it must rejoin


def test_static_member_steps_out_and_its_replacement_keeps_its_partitions() -> None:
    group, topics, timers, removed = make_group()
    topics.create("t", 4)
    a = Client(group, "a", ["t"], instance_id="instance-a")
    b = Client(group, "b", ["t"], instance_id="instance-b")
    for _ in range(3):
        a.heartbeat()
        b.heartbeat()
    assert group.state == "Stable"
    epoch, a_partitions, b_partitions = group.group_epoch, a.owned, b.owned

    left = b.leave(epoch=-2)
    assert (left.member_epoch, left.assignment) == (-2, None)
    assert group.group_epoch == epoch and removed == []
    again = a.heartbeat()
    assert again is not None and again.assignment is None and again.member_epoch == epoch

    with pytest.raises(errors.UnreleasedInstanceIdError):  # a has not left
        Client(group, "a2", ["t"], instance_id="instance-a").heartbeat()

    b2 = Client(group, "b2", ["t"], instance_id="instance-b")
    result = b2.heartbeat()
    assert result is not None and result.member_epoch == epoch
    assert b2.owned == b_partitions
    assert group.group_epoch == epoch and removed == ["b"]
    assert a.heartbeat().assignment is None and a.owned == a_partitions  # type: ignore[union-attr]
    assert group.state == "Stable"
    with pytest.raises(errors.FencedInstanceIdError):  # the old incarnation is fenced
        b.request(epoch=epoch, instance_id="instance-b")

    # A static member that steps out and never returns expires after its session timeout.
    b2.leave(epoch=-2)
    timers.advance(SESSION_MS / 1000 / 2)
    a.heartbeat()
    timers.advance(SESSION_MS / 1000 / 2 + 0.1)
    assert removed == ["b", "b2"] and group.group_epoch == epoch + 1
    a.heartbeat()
    assert len(flat(a.owned)) == 4


def test_a_timer_that_fires_after_being_replaced_does_nothing() -> None:
    group, topics, timers, removed = make_group()
    topics.create("t", 2)
    a, b = Client(group, "a", ["t"]), Client(group, "b", ["t"], rebalance_timeout_ms=1000)
    b.heartbeat()
    first_session = timers.scheduled[-1][1]
    a.heartbeat()
    b.heartbeat()  # b must revoke: a rebalance timer starts
    rebalance = next(timer for delay, timer in timers.scheduled if delay == 1.0)
    b.heartbeat()  # confirmed: that timer is cancelled
    assert first_session.cancelled and rebalance.cancelled
    first_session.callback()  # both fire late, after being replaced or cancelled
    rebalance.callback()
    a.heartbeat()
    assert removed == [] and group.state == "Stable"
    group._check()


def test_static_member_returning_with_the_same_member_id_keeps_its_partitions() -> None:
    group, topics, _, removed = make_group()
    topics.create("t", 3)
    a = Client(group, "a", ["t"], instance_id="i")
    a.heartbeat()
    epoch, partitions = group.group_epoch, a.owned
    a.leave(epoch=-2)
    a.epoch = 0
    result = a.heartbeat()
    assert result is not None and result.member_epoch == epoch and a.owned == partitions
    assert removed == [] and group.group_epoch == epoch and group.state == "Stable"


def test_fenced_and_unknown_epochs() -> None:
    group, topics, _, _ = make_group()
    t = topics.create("t", 2)
    a, b = Client(group, "a", ["t"]), Client(group, "b", ["t"])
    a.heartbeat()
    with pytest.raises(errors.FencedMemberEpochError):
        a.request(epoch=5)
    with pytest.raises(errors.UnknownMemberIdError):
        Client(group, "stranger", ["t"]).request(epoch=1)
    b.heartbeat()
    a.heartbeat()  # a: revoke one, epoch 1
    lost = a.request()  # a confirms; the response moving it to epoch 2 is lost
    assert lost.member_epoch == 2
    # Kafka forgives the previous epoch when the member owns no more than it has now, and
    # the answer repeats the assignment the lost response carried.
    retry = a.request(epoch=1)
    assert retry.member_epoch == 2 and retry.assignment == a.owned_list()
    with pytest.raises(errors.FencedMemberEpochError):  # unknown ownership: not forgiven
        a.request(epoch=1, owned_partitions=None)
    with pytest.raises(errors.FencedMemberEpochError):  # owns more than it has: fenced
        a.request(epoch=1, owned_partitions=[(t, [0, 1])])
    group._check()


def test_rejoin_with_epoch_zero_resets_a_known_member() -> None:
    group, topics, _, removed = make_group()
    t = topics.create("t", 2)
    a, b = Client(group, "a", ["t"]), Client(group, "b", ["t"])
    for _ in range(3):
        a.heartbeat()
        b.heartbeat()
    epoch = group.group_epoch
    target = flat(assigned(group, "a"))
    a.epoch, a.owned = 0, {}  # e.g. after FENCED_MEMBER_EPOCH the client starts over
    result = a.heartbeat()
    assert result is not None and result.member_epoch == epoch
    assert flat(result.assignment) == target  # its partitions come straight back
    assert group.group_epoch == epoch and removed == []
    assert group.state == "Stable" and t in a.owned


def test_topic_growth_deletion_and_regex_subscriptions_rebalance() -> None:
    group, topics, _, _ = make_group()
    t = topics.create("t", 2)
    a = Client(group, "a", ["t"])
    a.heartbeat()
    epoch = group.group_epoch
    topics.grow("t", 4)
    result = a.heartbeat()
    assert result is not None and result.member_epoch == epoch + 1
    assert result.assignment == [(t, [0, 1, 2, 3])]

    topics.delete("t")
    result = a.heartbeat()
    assert result is not None and result.assignment == [] and assigned(group, "a") == {}
    t_again = topics.create("t", 1)  # recreated: a new topic id
    result = a.heartbeat()
    assert result is not None and result.assignment == [(t_again, [0])]

    r1, r2 = topics.create("orders-1", 1), topics.create("orders-2", 1)
    topics.create("refunds", 1)
    topics.create("__consumer_offsets", 1)
    regex = Client(group, "r", regex=r"orders-\d+|__.*")
    result = regex.heartbeat()
    for _ in range(2):
        a.heartbeat()
        result = regex.heartbeat() or result
    assert flat(regex.owned) == {(r1, 0), (r2, 0)}
    assert group.subscribed_topics() == {"t", "orders-1", "orders-2"}
    r3 = topics.create("orders-3", 1)
    regex.heartbeat()
    assert (r3, 0) in flat(regex.owned)
    description = group.describe()
    member = next(m for m in description.members if m.member_id == "r")
    assert member.subscribed_topic_regex == r"orders-\d+|__.*"
    assert member.subscribed_topic_names == []
    group._check()


def test_subscription_change_rebalances() -> None:
    group, topics, _, _ = make_group()
    t, u = topics.create("t", 2), topics.create("u", 2)
    a = Client(group, "a", ["t"])
    a.heartbeat()
    epoch = group.group_epoch
    a.names, a.subscription_changed = ["u"], True
    revoke = a.heartbeat()  # t's partitions must go first
    assert revoke is not None and revoke.assignment == [] and revoke.member_epoch == epoch
    moved = a.heartbeat()
    assert moved is not None and moved.member_epoch == epoch + 1
    assert moved.assignment == [(u, [0, 1])]
    assert t not in a.owned


def test_assignors_are_chosen_by_the_members() -> None:
    group, topics, _, _ = make_group()
    topics.create("t", 3)
    with pytest.raises(errors.UnsupportedAssignorError, match="uniform, range"):
        Client(group, "a", ["t"], assignor="sticky").heartbeat()
    assert group.is_empty()
    Client(group, "a", ["t"]).heartbeat()
    assert group.describe().assignor_name == "uniform"
    epoch = group.group_epoch
    b = Client(group, "b", ["t"], assignor="range")
    b.heartbeat()
    description = group.describe()
    assert description.assignor_name == "range"
    assert description.group_epoch == description.assignment_epoch == epoch + 1


def test_max_size_refuses_new_members_only() -> None:
    group, topics, _, _ = make_group(max_size=2)
    topics.create("t", 2)
    a, b = Client(group, "a", ["t"]), Client(group, "b", ["t"])
    a.heartbeat()
    b.heartbeat()
    with pytest.raises(errors.GroupMaxSizeReachedError):
        Client(group, "c", ["t"]).heartbeat()
    a.epoch, a.owned = 0, {}
    assert a.heartbeat() is not None  # a known member may rejoin


def test_malformed_requests_are_value_errors() -> None:
    group, topics, _, _ = make_group()
    topics.create("t", 1)
    client = Client(group, "", ["t"])
    with pytest.raises(ValueError, match="MemberId"):
        client.request()  # v1 clients must generate their member id
    generated = client.request(version=0)  # v0: the coordinator generates one
    assert len(generated.member_id) == 22 and not generated.member_id.startswith("-")
    a = Client(group, "a", ["t"])
    for bad in (dict(subscribed_topic_names=None), dict(rebalance_timeout_ms=-1),
                dict(rebalance_timeout_ms=-5), dict(owned_partitions=None),
                dict(owned_partitions=[(topics.id("t"), [0])]), dict(epoch=-3),
                dict(instance_id=""), dict(rack_id=" "), dict(subscribed_topic_regex="(")):
        with pytest.raises(ValueError):
            a.request(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="InstanceId"):
        a.request(epoch=-2)
    assert [m.member_id for m in group.describe().members] == [generated.member_id]
    a.heartbeat()
    with pytest.raises(ValueError, match="RebalanceTimeoutMs"):
        a.request(rebalance_timeout_ms=-2)
    with pytest.raises(ValueError):
        a.request(member_id="")


def test_offset_commit_and_fetch_rules() -> None:
    group, topics, _, _ = make_group()
    topics.create("t", 1)
    group.validate_offset_commit("", None, -1, 9)  # empty group: admin commits allowed
    group.validate_offset_fetch(None, -1)
    a = Client(group, "a", ["t"])
    a.heartbeat()
    with pytest.raises(errors.UnknownMemberIdError):
        group.validate_offset_commit("", None, -1, 9)  # not while the group has members
    with pytest.raises(errors.UnknownMemberIdError):
        group.validate_offset_commit("nobody", None, 1, 9)
    group.validate_offset_commit("a", None, 1, 9)
    with pytest.raises(errors.StaleMemberEpochError):
        group.validate_offset_commit("a", None, 0, 9)
    with pytest.raises(errors.IllegalGenerationError):
        group.validate_offset_commit("a", None, 0, 8)
    group.validate_offset_fetch(None, -1)
    group.validate_offset_fetch("a", 1)
    with pytest.raises(errors.UnknownMemberIdError):
        group.validate_offset_fetch("nobody", 1)
    with pytest.raises(errors.StaleMemberEpochError):
        group.validate_offset_fetch("a", 2)


def test_describe_and_remove_all() -> None:
    group, topics, timers, removed = make_group()
    t = topics.create("t", 2)
    a = Client(group, "a", ["t"], instance_id="i", rack_id="rack-1")
    a.heartbeat()
    Client(group, "b", ["t"]).heartbeat()
    a.heartbeat()  # revoking: a rebalance timer is running too
    description = group.describe()
    assert description.state == "Reconciling" and description.group_id == "g"
    first = description.members[0]
    assert (first.member_id, first.instance_id, first.rack_id, first.client_id,
            first.client_host, first.subscribed_topic_names) == (
        "a", "i", "rack-1", "test-client", "/127.0.0.1", ["t"])
    assert len(first.target_assignment[t]) == 1 and len(first.assignment[t]) == 1
    assert group.subscribed_topics() == {"t"} and group.protocol_type == "consumer"
    assert timers.pending() == 3
    group.remove_all()
    assert timers.pending() == 0 and group.state == "Dead" and removed == []
    with pytest.raises(errors.CoordinatorNotAvailableError):
        a.heartbeat()
    timers.advance(SESSION_MS)
    group._check()


def test_settings_are_checked() -> None:
    with pytest.raises(errors.ConfigError):
        make_group(assignors=("sticky",))
    with pytest.raises(errors.InvalidGroupIdError):
        ConsumerGroup(" ", SETTINGS, FakeTopics(), ManualTimers(), threading.RLock())


# ---- the whole state machine under random operations --------------------------------------

TOPIC_NAMES = ("a", "b", "c")
SUBSCRIPTIONS = (["a"], ["b"], ["a", "b"], ["a", "b", "c"], [])


class ConsumerGroupModel(RuleBasedStateMachine):
    """Random joins, leaves, heartbeats (with and without owned partitions, lost responses,
    stale epochs), expiries, static restarts and topic changes, for up to six consumers.
    After every step: no partition has two owners, on the coordinator or among the live
    consumers, and each consumer owns no partition the coordinator has not given it. A
    ``converge`` step has everyone heartbeat until the group must be Stable with every
    subscribed partition owned exactly once."""

    def __init__(self) -> None:
        super().__init__()
        self.topics = FakeTopics()
        self.topics.create("a", 3)
        self.topics.create("b", 2)
        self.timers = ManualTimers()
        self.group = ConsumerGroup("g", SETTINGS, self.topics, self.timers, threading.RLock())
        self.clients: dict[str, Client] = {}
        self.away: dict[str, Client] = {}  # static members that stepped out
        self.numbers = itertools.count()

    def pick(self, data: st.DataObject, pool: dict[str, Client]) -> Client:
        return pool[data.draw(st.sampled_from(sorted(pool)))]

    @precondition(lambda self: len(self.clients) + len(self.away) < 6)
    @rule(names=st.sampled_from(SUBSCRIPTIONS), regex=st.sampled_from([None, None, "[ab]"]),
          static=st.booleans(), assignor=st.sampled_from([None, "uniform", "range"]))
    def join(self, names: list[str], regex: str | None, static: bool,
             assignor: str | None) -> None:
        number = next(self.numbers)
        client = Client(self.group, f"m{number}", None if regex else names, regex,
                        f"instance-{number}" if static else None, assignor)
        self.clients[client.member_id] = client
        assert client.heartbeat() is not None

    @precondition(lambda self: self.clients)
    @rule(data=st.data(), send_owned=st.booleans())
    def heartbeat(self, data: st.DataObject, send_owned: bool) -> None:
        self.pick(data, self.clients).heartbeat(send_owned=send_owned)

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def lost_response(self, data: st.DataObject) -> None:
        client = self.pick(data, self.clients)
        with contextlib.suppress(errors.UnknownMemberIdError, errors.FencedMemberEpochError):
            client.request()  # the coordinator acts on it; the answer never arrives
        client.send_full = True

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def stale_epoch(self, data: st.DataObject) -> None:
        client = self.pick(data, self.clients)
        if client.epoch > 0:
            with pytest.raises((errors.FencedMemberEpochError, errors.UnknownMemberIdError)):
                client.request(epoch=self.group.group_epoch + 1)
            client.epoch, client.owned = 0, {}

    @precondition(lambda self: self.clients)
    @rule(data=st.data(), names=st.sampled_from(SUBSCRIPTIONS))
    def resubscribe(self, data: st.DataObject, names: list[str]) -> None:
        client = self.pick(data, self.clients)
        if client.regex is None:
            client.names, client.subscription_changed = names, True
            client.heartbeat()

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        client = self.pick(data, self.clients)
        del self.clients[client.member_id]
        with contextlib.suppress(errors.UnknownMemberIdError):  # it may have expired
            client.leave()

    @precondition(lambda self: any(c.instance_id for c in self.clients.values()))
    @rule(data=st.data())
    def static_restart_begins(self, data: st.DataObject) -> None:
        client = self.pick(data, {k: c for k, c in self.clients.items() if c.instance_id})
        del self.clients[client.member_id]
        try:
            client.leave(epoch=-2)
            self.away[client.member_id] = client
        except errors.UnknownMemberIdError:
            pass

    @precondition(lambda self: self.away)
    @rule(data=st.data())
    def static_restart_ends(self, data: st.DataObject) -> None:
        self.restart(self.pick(data, self.away))

    def restart(self, old: Client) -> None:
        del self.away[old.member_id]
        client = Client(self.group, f"m{next(self.numbers)}", old.names, old.regex,
                        old.instance_id, old.assignor)
        self.clients[client.member_id] = client
        assert client.heartbeat() is not None

    @rule(seconds=st.sampled_from([0.5, 2.0, 4.5, 11.0]))
    def time_passes(self, seconds: float) -> None:
        self.timers.advance(seconds)

    @rule(name=st.sampled_from(TOPIC_NAMES), partitions=st.integers(1, 6))
    def topic_changes(self, name: str, partitions: int) -> None:
        current = self.topics.lookup(name)
        if current is None:
            self.topics.create(name, partitions)
        elif partitions > current[1]:
            self.topics.grow(name, partitions)
        elif partitions == 1:
            self.topics.delete(name)

    @invariant()
    def nothing_is_owned_twice(self) -> None:
        self.group._check()
        members = {m.member_id: m for m in self.group.describe().members}
        live_topics = {topic_id for topic_id, _ in self.topics.by_name.values()}
        held: set[tuple[bytes, int]] = set()
        for client in self.clients.values():
            member = self.group._members.get(client.member_id)
            if member is None or client.member_id not in members:
                continue  # expired or fenced: it learns so on its next heartbeat
            allowed = flat(member.assigned) | flat(member.pending_revocation)
            for key in flat(client.owned):
                if key[0] in live_topics:
                    assert key in allowed, f"{client.member_id} consumes {key} unassigned"
                    assert key not in held, f"{key} consumed twice"
                    held.add(key)

    @rule()
    def converge(self) -> None:
        for old in list(self.away.values()):
            self.restart(old)
        for _ in range(20):
            for client in list(self.clients.values()):
                client.heartbeat()
            if self.group.state == "Stable" and all(c.epoch for c in self.clients.values()):
                break
        if not self.clients:
            assert self.group.state == "Empty"
            return
        assert self.group.state == "Stable"
        description = self.group.describe()
        assert description.group_epoch == description.assignment_epoch
        owned: dict[tuple[bytes, int], str] = {}
        for client in self.clients.values():
            member = next(m for m in description.members if m.member_id == client.member_id)
            assert member.member_epoch == description.assignment_epoch
            assert flat(client.owned) == flat(member.assignment) == flat(
                member.target_assignment)
            for key in flat(client.owned):
                assert key not in owned
                owned[key] = client.member_id
        wanted = self.group.subscribed_topics()
        expected = {(topic_id, p) for name, (topic_id, count) in self.topics.by_name.items()
                    if name in wanted for p in range(count)}
        assert set(owned) == expected

    def teardown(self) -> None:
        self.converge()


# Each example runs up to 30 steps and a convergence of up to 20 heartbeat rounds.
ConsumerGroupModel.TestCase.settings = settings(
    max_examples=max(settings.default.max_examples // 4, 20), stateful_step_count=30,
    deadline=None)
TestConsumerGroupModel = ConsumerGroupModel.TestCase


# ---- server assignors ----------------------------------------------------------------------

TOPICS = ("t0", "t1", "t2")


def topic_specs(counts: dict[str, int]) -> dict[str, TopicSpec]:
    return {name: TopicSpec(hashlib.md5(name.encode()).digest(), count)
            for name, count in counts.items()}


# Strategies built once: building them inside the composite costs more than the tests.
_TOPIC_COUNTS = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 9), min_size=1)
_MEMBER_IDS = st.lists(st.sampled_from([f"m{i}" for i in range(8)]), min_size=1, max_size=6,
                       unique=True)
_SUBSCRIPTION = st.frozensets(st.sampled_from((*TOPICS, "missing")))
_INSTANCE = st.booleans()
_CURRENT = st.none() | st.dictionaries(st.sampled_from(TOPICS),
                                       st.frozensets(st.integers(0, 10), max_size=5), max_size=3)
# Each example is cheap to check but costs Hypothesis ~10 ms to draw: a quarter of the
# profile's examples keeps these properties at a few seconds (`make test-thorough` runs more).
ASSIGNOR_SETTINGS = settings(max_examples=max(settings.default.max_examples // 4, 10))


@st.composite
def assignor_inputs(draw: st.DrawFn, homogeneous: bool = False):  # type: ignore[no-untyped-def]
    """Members with subscriptions (some to missing topics) and instance ids, topics, and a
    current assignment that may be malformed: unknown members, partitions out of range or
    claimed twice."""
    counts = draw(_TOPIC_COUNTS)
    member_ids = draw(_MEMBER_IDS)
    common = draw(_SUBSCRIPTION)
    members = {m: MemberSpec(common if homogeneous else draw(_SUBSCRIPTION), None,
                             f"i-{m}" if draw(_INSTANCE) else None)
               for m in member_ids}
    current = {m: entry for m in [*member_ids, "gone"] if (entry := draw(_CURRENT)) is not None}
    return members, topic_specs(counts), current


def check_exactly_once(members: dict[str, MemberSpec], topics: dict[str, TopicSpec],
                       result: dict[str, dict[str, frozenset[int]]]) -> None:
    assert set(result) == set(members)
    owner: dict[tuple[str, int], str] = {}
    for member_id, by_topic in result.items():
        for topic, partitions in by_topic.items():
            assert partitions and topic in members[member_id].subscribed_topics
            for partition in partitions:
                assert 0 <= partition < topics[topic].partitions
                assert (topic, partition) not in owner
                owner[(topic, partition)] = member_id
    for topic, spec in topics.items():
        if any(topic in m.subscribed_topics for m in members.values()):
            assert all((topic, p) in owner for p in range(spec.partitions))


def sizes(result: dict[str, dict[str, frozenset[int]]]) -> dict[str, int]:
    return {m: sum(len(p) for p in by_topic.values()) for m, by_topic in result.items()}


def shuffled(mapping: dict, seed: int) -> dict:  # type: ignore[type-arg]
    items = list(mapping.items())
    random.Random(seed).shuffle(items)
    return dict(items)


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@ASSIGNOR_SETTINGS
@given(inputs=assignor_inputs(), seed=st.integers(0, 1000))
def test_assignors_give_each_partition_to_exactly_one_subscriber(name: str, inputs,  # type: ignore[no-untyped-def]
                                                                 seed: int) -> None:
    members, topics, current = inputs
    assignor = ASSIGNORS[name]
    result = assignor.assign(members, topics, current)
    check_exactly_once(members, topics, result)
    # deterministic, whatever order the members come in
    assert assignor.assign(shuffled(members, seed), shuffled(topics, seed), current) == result
    # sticky: an assignment that is already the target stays put
    assert assignor.assign(members, topics, result) == result


@ASSIGNOR_SETTINGS
@given(inputs=assignor_inputs(homogeneous=True))
def test_uniform_balances_equal_subscriptions_within_one(inputs) -> None:  # type: ignore[no-untyped-def]
    members, topics, current = inputs
    counts = sizes(UniformAssignor().assign(members, topics, current))
    assert max(counts.values()) - min(counts.values()) <= 1


def no_improving_chain(members: dict[str, MemberSpec],
                       result: dict[str, dict[str, frozenset[int]]]) -> bool:
    """No chain of subscribers moves a partition from a member with k to one with k - 2."""
    counts = sizes(result)
    for source in members:
        seen, queue = {source}, deque([source])
        while queue:
            giver = queue.popleft()
            for topic, partitions in result[giver].items():
                for receiver, spec in members.items():
                    if partitions and topic in spec.subscribed_topics and receiver not in seen:
                        if counts[receiver] <= counts[source] - 2:
                            return False
                        seen.add(receiver)
                        queue.append(receiver)
    return True


@ASSIGNOR_SETTINGS
@given(inputs=assignor_inputs())
def test_uniform_balances_unequal_subscriptions_as_far_as_they_allow(inputs) -> None:  # type: ignore[no-untyped-def]
    members, topics, current = inputs
    assert no_improving_chain(members, UniformAssignor().assign(members, topics, current))


@ASSIGNOR_SETTINGS
@given(inputs=assignor_inputs(homogeneous=True), newcomer=st.sampled_from(["a", "zz"]))
def test_uniform_moves_only_what_balance_needs(inputs, newcomer: str) -> None:  # type: ignore[no-untyped-def]
    members, topics, _ = inputs
    uniform = UniformAssignor()
    before = uniform.assign(members, topics, {})
    spec = next(iter(members.values()))
    # A member joins: the others only lose partitions.
    after = uniform.assign({**members, newcomer: spec}, topics, before)
    for member_id, by_topic in before.items():
        for topic, partitions in after[member_id].items():
            assert partitions <= by_topic.get(topic, frozenset())
    # A member leaves: the others keep everything they had.
    if len(members) > 1:
        gone = sorted(members)[0]
        rest = {m: s for m, s in members.items() if m != gone}
        after = uniform.assign(rest, topics, before)
        for member_id in rest:
            for topic, partitions in before[member_id].items():
                assert partitions <= after[member_id].get(topic, frozenset())


def test_uniform_spreads_a_topic_round_robin_and_keeps_partitions() -> None:
    topics = topic_specs({"t0": 4, "t1": 4})
    both = frozenset(topics)
    members = {"a": MemberSpec(both), "b": MemberSpec(both)}
    result = UniformAssignor().assign(members, topics, {})
    assert result == {"a": {"t0": frozenset({0, 2}), "t1": frozenset({0, 2})},
                      "b": {"t0": frozenset({1, 3}), "t1": frozenset({1, 3})}}
    # b gets the larger quota because it already holds more
    current = {"a": {"t0": frozenset({0})}, "b": {"t0": frozenset({1, 2, 3})}}
    odd = topic_specs({"t0": 5})
    result = UniformAssignor().assign({"a": MemberSpec(frozenset(odd)),
                                       "b": MemberSpec(frozenset(odd))}, odd, current)
    assert result == {"a": {"t0": frozenset({0, 4})}, "b": {"t0": frozenset({1, 2, 3})}}


@ASSIGNOR_SETTINGS
@given(inputs=assignor_inputs())
def test_range_gives_contiguous_ranges_in_member_order(inputs) -> None:  # type: ignore[no-untyped-def]
    members, topics, current = inputs
    result = RangeAssignor().assign(members, topics, current)
    order = sorted(members, key=lambda m: (members[m].instance_id is None,
                                           members[m].instance_id or "", m))
    for topic, spec in topics.items():
        subscribers = [m for m in order if topic in members[m].subscribed_topics]
        if not subscribers:
            continue
        ranges = [sorted(result[m].get(topic, ())) for m in subscribers]
        flat_ranges = [p for r in ranges for p in r]
        assert flat_ranges == list(range(spec.partitions))  # contiguous, in member order
        lengths = [len(r) for r in ranges]
        assert max(lengths) - min(lengths) <= 1


@ASSIGNOR_SETTINGS
@given(inputs=assignor_inputs(homogeneous=True))
def test_range_co_partitions_topics_of_equal_size(inputs) -> None:  # type: ignore[no-untyped-def]
    members, topics, current = inputs
    result = RangeAssignor().assign(members, topics, current)
    subscribed = sorted(t for t in next(iter(members.values())).subscribed_topics if t in topics)
    for member_id in members:
        by_count: dict[int, set[frozenset[int]]] = {}
        for topic in subscribed:
            by_count.setdefault(topics[topic].partitions, set()).add(
                result[member_id].get(topic, frozenset()))
        assert all(len(sets) == 1 for sets in by_count.values())


def test_range_is_kafkas_range_when_fresh_and_sticky_when_it_can_be() -> None:
    topics = topic_specs({"t0": 5})
    subscribed = frozenset(topics)
    two = {"a": MemberSpec(subscribed), "b": MemberSpec(subscribed)}
    fresh = RangeAssignor().assign(two, topics, {})
    assert fresh == {"a": {"t0": frozenset({0, 1, 2})}, "b": {"t0": frozenset({3, 4})}}
    # c joins: a keeps 0-1 and b keeps 3, rather than the shuffle a fixed placement makes
    three = {**two, "c": MemberSpec(subscribed)}
    assert RangeAssignor().assign(three, topics, fresh) == {
        "a": {"t0": frozenset({0, 1})}, "b": {"t0": frozenset({2, 3})},
        "c": {"t0": frozenset({4})}}
    # "0" sorts first: the larger range moves to b, which keeps both of its partitions
    four = topic_specs({"t0": 4})
    held = {"a": {"t0": frozenset({0, 1})}, "b": {"t0": frozenset({2, 3})}}
    joined = {"0": MemberSpec(subscribed), "a": MemberSpec(subscribed),
              "b": MemberSpec(subscribed)}
    assert RangeAssignor().assign(joined, four, held) == {
        "0": {"t0": frozenset({0})}, "a": {"t0": frozenset({1})},
        "b": {"t0": frozenset({2, 3})}}
    # static members come first, by instance id
    static = {"a": MemberSpec(subscribed, None, "z"), "b": MemberSpec(subscribed, None, "y")}
    assert RangeAssignor().assign(static, topics, {})["b"] == {"t0": frozenset({0, 1, 2})}


@settings(max_examples=10)
@given(st.integers(50, 120))
def test_assignors_handle_a_large_group_quickly(members: int) -> None:
    topics = topic_specs({"t0": 500, "t1": 300})
    specs = {f"member-{i:04d}": MemberSpec(frozenset(topics) if i % 3 else frozenset({"t0"}))
             for i in range(members)}
    for assignor in ASSIGNORS.values():
        first = assignor.assign(specs, topics, {})
        check_exactly_once(specs, topics, first)
        fewer = dict(list(specs.items())[1:])
        check_exactly_once(fewer, topics, assignor.assign(fewer, topics, first))
