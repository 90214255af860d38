"""The classic group protocol through the engine's GroupCoordinator (``engine.groups``).

JoinGroup / SyncGroup / Heartbeat / LeaveGroup, commits checked against membership, and the
admin calls, compared with what Apache Kafka's coordinator does (GroupMetadataManager and
ClassicGroup in Kafka's group-coordinator module). Tests that need a deadline to pass use
the real timer thread with short timeouts for the member that should go and long ones for
those that should stay; the Hypothesis state machine swaps in a clock it moves by hand, so
every interleaving it finds replays exactly.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import logkernel
from logkernel import errors
from logkernel.coordinator.assignors import Subscription, encode_subscription
from logkernel.coordinator.classic_group import JoinResult, SyncResult
from logkernel.coordinator.group_coordinator import GroupCoordinator
from logkernel.coordinator.offsets import OffsetAndMetadata
from logkernel.coordinator.timers import Timer

GROUP = "g"
RANGE = [("range", b"range-metadata")]
# Long enough that no member of a test expires by accident on a slow machine.
LONG_MS = 10_000
# Kafka's own group.initial.rebalance.delay.ms is 3 s; tests that do not study it use 0 so
# a lone member's join completes at once.
ENGINE_CONFIG = {"group.initial.rebalance.delay.ms": 0, "group.min.session.timeout.ms": 100}


@pytest.fixture
def lk(tmp_path: Path):
    engine = logkernel.open(tmp_path / "data", ENGINE_CONFIG)
    yield engine
    engine.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Polls ``predicate`` until it is truthy; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


class Answer:
    """The one answer a parked JoinGroup or SyncGroup gets (maybe from the timer thread)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.results: list[Any] = []
        self.at: float | None = None

    def __call__(self, result: Any) -> None:
        self.results.append(result)
        self.at = time.monotonic()
        self._event.set()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def get(self, timeout: float = 10.0) -> Any:
        assert self._event.wait(timeout), "the coordinator never answered"
        assert len(self.results) == 1, f"answered more than once: {self.results}"
        return self.results[0]

    def value(self, timeout: float = 10.0) -> Any:
        result = self.get(timeout)
        if isinstance(result, BaseException):
            raise result
        return result


class Client:
    """One member's side of the protocol, talking straight to a GroupCoordinator."""

    def __init__(self, coordinator: GroupCoordinator, group: str = GROUP, *,
                 instance_id: str | None = None, protocols: list[tuple[str, bytes]] | None = None,
                 protocol_type: str = "consumer", session_ms: int = LONG_MS,
                 rebalance_ms: int = LONG_MS, client_id: str = "client") -> None:
        self.coordinator = coordinator
        self.group = group
        self.instance_id = instance_id
        self.protocols = list(RANGE if protocols is None else protocols)
        self.protocol_type = protocol_type
        self.session_ms = session_ms
        self.rebalance_ms = rebalance_ms
        self.client_id = client_id
        self.member_id = ""
        self.generation = -1
        self.protocol_name: str | None = None

    def join(self, *, require_known: bool = False) -> Answer:
        """Sends one JoinGroup; refusals raise here, the result comes through the Answer."""
        answer = Answer()
        self.coordinator.join_group(
            self.group, member_id=self.member_id, instance_id=self.instance_id,
            client_id=self.client_id, client_host="localhost", session_timeout_ms=self.session_ms,
            rebalance_timeout_ms=self.rebalance_ms, protocol_type=self.protocol_type,
            protocols=self.protocols, require_known_member_id=require_known, answer=answer)
        return answer

    def join_v4(self) -> Answer:
        """JoinGroup v4+: the MEMBER_ID_REQUIRED round trip, then the real join."""
        if not self.member_id:
            with pytest.raises(errors.MemberIdRequiredError) as refused:
                self.join(require_known=True)
            self.member_id = refused.value.member_id
        return self.join(require_known=True)

    def joined(self, answer: Answer, timeout: float = 10.0) -> JoinResult:
        result = answer.value(timeout)
        assert isinstance(result, JoinResult)
        self.member_id = result.member_id
        self.generation = result.generation_id
        self.protocol_name = result.protocol_name
        return result

    def sync(self, assignments: dict[str, bytes] | None = None) -> Answer:
        answer = Answer()
        self.coordinator.sync_group(
            self.group, member_id=self.member_id, instance_id=self.instance_id,
            generation=self.generation, protocol_type=self.protocol_type,
            protocol_name=self.protocol_name, assignments=assignments or {}, answer=answer)
        return answer

    def heartbeat(self) -> None:
        self.coordinator.heartbeat(self.group, member_id=self.member_id,
                                   instance_id=self.instance_id, generation=self.generation)

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        now = int(time.time() * 1000)
        self.coordinator.commit_offsets(
            self.group, {tp: OffsetAndMetadata(o, "", -1, now) for tp, o in offsets.items()},
            member_id=self.member_id, instance_id=self.instance_id, generation=self.generation)

    def leave(self) -> errors.GroupError | None:
        return self.coordinator.leave_group(self.group, [(self.member_id, self.instance_id)])[0]


def stable_pair(coordinator: GroupCoordinator, **options: Any) -> tuple[Client, Client]:
    """Two members in a Stable group (a leads), each synced: generation 2."""
    a, b = Client(coordinator, client_id="a", **options), Client(coordinator, client_id="b", **options)
    a.joined(a.join())
    a.sync({a.member_id: b"a-1"}).value()
    b_join = b.join()
    a_join = a.join()
    ra, rb = a.joined(a_join), b.joined(b_join)
    assert ra.generation_id == rb.generation_id == 2
    assignments = {a.member_id: b"a-2", b.member_id: b"b-2"}
    b_sync = b.sync()
    assert a.sync(assignments).value().assignment == b"a-2"
    assert b_sync.value().assignment == b"b-2"
    return a, b


def join_all(clients: list[Client]) -> list[JoinResult]:
    """Brings every client into one generation. With no initial delay the first JoinGroup of
    an empty group completes at once; the joins after it start a rebalance, and whoever was
    answered early rejoins it, as a real member does when its heartbeat says so."""
    answers = [client.join() for client in clients]
    for client, answer in zip(clients, answers, strict=True):
        if answer.done:
            client.joined(answer)
    answers = [client.join() if client.member_id else answer
               for client, answer in zip(clients, answers, strict=True)]
    results = [client.joined(answer) for client, answer in zip(clients, answers, strict=True)]
    assert len({r.generation_id for r in results}) == 1
    return results


def state(coordinator: GroupCoordinator, group: str = GROUP) -> str:
    return coordinator.describe_group(group).state


# ---- JoinGroup: member ids ------------------------------------------------------------------


def test_v4_join_is_told_its_member_id_and_then_admitted(lk: logkernel.Engine) -> None:
    client = Client(lk.groups, client_id="app")
    with pytest.raises(errors.MemberIdRequiredError) as refused:
        client.join(require_known=True)
    member_id = refused.value.member_id
    assert member_id.startswith("app-")
    # A pending id is not a member yet: the group has nobody to describe.
    assert lk.groups.describe_group(GROUP).members == []
    client.member_id = member_id
    result = client.joined(client.join(require_known=True))
    assert result.member_id == member_id
    assert result.generation_id == 1
    assert result.leader == member_id


def test_pending_member_id_that_never_returns_expires(lk: logkernel.Engine) -> None:
    ghost = Client(lk.groups, session_ms=300, client_id="ghost")
    with pytest.raises(errors.MemberIdRequiredError) as refused:
        ghost.join(require_known=True)
    # Kafka waits for pending members before completing a join, so a real member's join
    # waits until the ghost's id expires (its session timeout), then completes without it.
    real = Client(lk.groups, client_id="real")
    answer = real.join()
    result = real.joined(answer)
    assert [m[0] for m in result.members] == [real.member_id]
    ghost.member_id = refused.value.member_id
    with pytest.raises(errors.UnknownMemberIdError):
        ghost.join(require_known=True)


def test_v0_to_v3_join_goes_straight_in(lk: logkernel.Engine) -> None:
    client = Client(lk.groups)
    result = client.joined(client.join(require_known=False))
    assert result.member_id.startswith("client-")
    assert result.generation_id == 1


# ---- one member, two members ------------------------------------------------------------


def test_single_member_joins_syncs_and_heartbeats(lk: logkernel.Engine) -> None:
    client = Client(lk.groups)
    result = client.joined(client.join_v4())
    assert result.generation_id == 1
    assert result.leader == client.member_id
    assert result.protocol_type == "consumer"
    assert result.protocol_name == "range"
    assert result.members == [(client.member_id, None, b"range-metadata")]
    assert state(lk.groups) == "CompletingRebalance"
    synced = client.sync({client.member_id: b"everything"}).value()
    assert isinstance(synced, SyncResult)
    assert synced.assignment == b"everything"
    assert synced.protocol_name == "range"
    assert state(lk.groups) == "Stable"
    client.heartbeat()
    # The leader rejoining a Stable group asks for a new assignment: a rebalance (as Kafka).
    again = client.joined(client.join())
    assert again.generation_id == 2


def test_second_member_starts_a_rebalance_that_the_leader_completes(lk: logkernel.Engine) -> None:
    a, b = Client(lk.groups, client_id="a"), Client(lk.groups, client_id="b")
    a.joined(a.join_v4())
    a.sync({a.member_id: b"all"}).value()

    b_join = b.join_v4()
    assert not b_join.done
    assert state(lk.groups) == "PreparingRebalance"
    with pytest.raises(errors.RebalanceInProgressError):
        a.heartbeat()
    a_join = a.join()
    ra, rb = a.joined(a_join), b.joined(b_join)
    assert ra.generation_id == rb.generation_id == 2
    assert ra.leader == rb.leader == a.member_id
    assert sorted(m[0] for m in ra.members) == sorted([a.member_id, b.member_id])
    assert rb.members == []  # only the leader sees everyone's metadata

    b_sync = b.sync()
    time.sleep(0.05)
    assert not b_sync.done, "a follower's SyncGroup waits for the leader's"
    b.heartbeat()  # heartbeats are fine while the group completes the rebalance
    a_sync = a.sync({a.member_id: b"first half", b.member_id: b"second half"})
    assert a_sync.value().assignment == b"first half"
    assert b_sync.value().assignment == b"second half"
    assert state(lk.groups) == "Stable"
    a.heartbeat()
    b.heartbeat()
    # A follower whose JoinGroup answer got lost asks again: same generation, no rebalance.
    again = b.joined(b.join())
    assert (again.generation_id, again.members) == (2, [])
    assert state(lk.groups) == "Stable"


def test_initial_delay_gathers_a_fleet_into_one_generation(tmp_path: Path) -> None:
    config = dict(ENGINE_CONFIG, **{"group.initial.rebalance.delay.ms": 300})
    with logkernel.open(tmp_path / "data", config) as lk:
        clients = [Client(lk.groups, client_id=f"c{i}") for i in range(3)]
        started = time.monotonic()
        answers = []
        for client in clients:
            answers.append(client.join())
            time.sleep(0.03)
        results = [client.joined(answer) for client, answer in zip(clients, answers, strict=True)]
        assert {r.generation_id for r in results} == {1}
        assert len({r.leader for r in results}) == 1
        leader = next(r for r in results if r.members)
        assert sorted(m[0] for m in leader.members) == sorted(c.member_id for c in clients)
        # Not a timing assertion on the upper side: the delay only postpones.
        assert min(a.at for a in answers if a.at is not None) - started >= 0.25


# ---- fencing ----------------------------------------------------------------------------


def test_stale_generation_is_illegal(lk: logkernel.Engine) -> None:
    a, _ = stable_pair(lk.groups)
    stale = a.generation - 1
    fresh = a.generation
    a.generation = stale
    with pytest.raises(errors.IllegalGenerationError):
        a.heartbeat()
    with pytest.raises(errors.IllegalGenerationError):
        a.sync()
    with pytest.raises(errors.IllegalGenerationError):
        a.commit({("t", 0): 5})
    a.generation = fresh
    a.heartbeat()
    a.commit({("t", 0): 5})
    assert lk.groups.offsets.fetch(GROUP, "t", 0).offset == 5


def test_unknown_member_is_refused(lk: logkernel.Engine) -> None:
    a, _ = stable_pair(lk.groups)
    stranger = Client(lk.groups)
    stranger.member_id, stranger.generation = "nobody", a.generation
    with pytest.raises(errors.UnknownMemberIdError):
        stranger.heartbeat()
    with pytest.raises(errors.UnknownMemberIdError):
        stranger.sync()
    with pytest.raises(errors.UnknownMemberIdError):
        stranger.commit({("t", 0): 1})
    with pytest.raises(errors.UnknownMemberIdError):
        stranger.join()


def test_commit_without_membership_only_while_the_group_is_empty(lk: logkernel.Engine) -> None:
    outsider = Client(lk.groups)  # member id "" and generation -1: an admin tool
    outsider.commit({("t", 0): 1})  # no group at all
    member = Client(lk.groups)
    member.joined(member.join())
    member.sync({member.member_id: b""}).value()
    with pytest.raises(errors.UnknownMemberIdError):
        outsider.commit({("t", 0): 2})
    assert member.leave() is None
    assert state(lk.groups) == "Empty"
    outsider.commit({("t", 0): 3})
    assert lk.groups.offsets.fetch(GROUP, "t", 0).offset == 3


def test_commit_during_completing_rebalance_is_retried_later(lk: logkernel.Engine) -> None:
    a, b = stable_pair(lk.groups)
    c = Client(lk.groups, client_id="c")
    c_join = c.join()
    # PreparingRebalance: a member of the current generation may still commit (Kafka lets
    # the revoke callback commit before rejoining).
    a.commit({("t", 0): 10})
    a_join, b_join = a.join(), b.join()
    for client, answer in ((a, a_join), (b, b_join), (c, c_join)):
        client.joined(answer)
    assert state(lk.groups) == "CompletingRebalance"
    with pytest.raises(errors.RebalanceInProgressError):
        b.commit({("t", 0): 11})
    c_sync, b_sync = c.sync(), b.sync()
    a.sync({}).value()
    c_sync.value()
    b_sync.value()
    b.commit({("t", 0): 12})
    assert lk.groups.offsets.fetch(GROUP, "t", 0).offset == 12


# ---- liveness ---------------------------------------------------------------------------


def test_session_timeout_evicts_a_silent_member(lk: logkernel.Engine) -> None:
    survivor = Client(lk.groups, client_id="survivor")
    silent = Client(lk.groups, client_id="silent", session_ms=300)
    survivor.joined(survivor.join())
    survivor.sync({}).value()
    silent_join, survivor_join = silent.join(), survivor.join()
    survivor.joined(survivor_join)
    silent.joined(silent_join)
    silent_sync = silent.sync()
    survivor.sync({}).value()
    silent_sync.value()
    assert state(lk.groups) == "Stable"

    def told_to_rebalance() -> bool:
        try:
            survivor.heartbeat()
        except errors.RebalanceInProgressError:
            return True
        return False

    wait_until(told_to_rebalance, what="the silent member's session to expire")
    with pytest.raises(errors.UnknownMemberIdError):
        silent.heartbeat()
    alone = survivor.joined(survivor.join())
    assert [m[0] for m in alone.members] == [survivor.member_id]
    assert alone.generation_id == 3


def test_member_that_does_not_rejoin_is_dropped_after_the_rebalance_timeout(
        lk: logkernel.Engine) -> None:
    a, b = stable_pair(lk.groups, rebalance_ms=1000)
    c = Client(lk.groups, client_id="c", rebalance_ms=1000)
    c_join = c.join()
    a_join = a.join()
    assert not a_join.done  # b has not rejoined yet (and the deadline is a second away)
    ra, rc = a.joined(a_join), c.joined(c_join)  # b never does
    assert ra.generation_id == rc.generation_id == 3
    assert sorted(m[0] for m in ra.members) == sorted([a.member_id, c.member_id])
    with pytest.raises(errors.UnknownMemberIdError):
        b.heartbeat()


def test_leader_that_never_syncs_is_removed_after_the_rebalance_timeout(
        lk: logkernel.Engine) -> None:
    a, b = stable_pair(lk.groups, rebalance_ms=300)
    a_join, b_join = a.join(), b.join()  # the leader asks for a new assignment
    a.joined(a_join)
    b.joined(b_join)
    b_sync = b.sync()
    # The leader crashed before its SyncGroup: the waiting follower is told to rejoin.
    assert isinstance(b_sync.get(), errors.RebalanceInProgressError)
    with pytest.raises(errors.UnknownMemberIdError):
        a.heartbeat()
    result = b.joined(b.join())
    assert result.leader == b.member_id
    assert [m[0] for m in result.members] == [b.member_id]


def test_follower_that_never_syncs_is_removed_after_the_rebalance_timeout(
        lk: logkernel.Engine) -> None:
    """Kafka removes every member still missing its SyncGroup when the rebalance timeout
    after the join passes, in CompletingRebalance *and in Stable* (the leader may have
    synced already): GroupMetadataManager.expirePendingSync. A member that heartbeats but
    never syncs would otherwise hold its place (and its assignment) forever."""
    a, b = stable_pair(lk.groups, rebalance_ms=300)
    a_join, b_join = a.join(), b.join()
    a.joined(a_join)
    b.joined(b_join)
    a.sync({a.member_id: b"a", b.member_id: b"b"}).value()
    assert state(lk.groups) == "Stable"
    deadline = time.monotonic() + 1.5  # five rebalance timeouts; b heartbeats, never syncs
    removed = False
    while time.monotonic() < deadline and not removed:
        try:
            b.heartbeat()
        except errors.UnknownMemberIdError:
            removed = True
        time.sleep(0.05)
    assert removed, "a member that never sent SyncGroup is still in the group"


# ---- LeaveGroup -------------------------------------------------------------------------


def test_leave_group_batch_reports_each_member(lk: logkernel.Engine) -> None:
    clients = [Client(lk.groups, client_id=f"c{i}") for i in range(3)]
    join_all(clients)
    outcomes = lk.groups.leave_group(GROUP, [(clients[0].member_id, None), ("nobody", None),
                                             (clients[1].member_id, None)])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], errors.UnknownMemberIdError)
    members = [m.member_id for m in lk.groups.describe_group(GROUP).members]
    assert members == [clients[2].member_id]
    # The rest of the group rebalances without them.
    result = clients[2].joined(clients[2].join())
    assert [m[0] for m in result.members] == [clients[2].member_id]
    assert isinstance(lk.groups.leave_group("no-such-group", [("x", None)])[0],
                      errors.UnknownMemberIdError)


def test_leave_by_group_instance_id_without_member_id(lk: logkernel.Engine) -> None:
    static = Client(lk.groups, instance_id="host-1")
    static.joined(static.join())
    outcomes = lk.groups.leave_group(GROUP, [("", "host-1"), ("", "host-2")])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], errors.UnknownMemberIdError)
    assert lk.groups.describe_group(GROUP).members == []
    assert state(lk.groups) == "Empty"


def test_leave_with_the_wrong_member_id_for_an_instance_is_fenced(lk: logkernel.Engine) -> None:
    static = Client(lk.groups, instance_id="host-1")
    static.joined(static.join())
    (outcome,) = lk.groups.leave_group(GROUP, [("someone-else", "host-1")])
    assert isinstance(outcome, errors.FencedInstanceIdError)
    assert [m.member_id for m in lk.groups.describe_group(GROUP).members] == [static.member_id]


# ---- static membership ------------------------------------------------------------------


def static_pair(lk: logkernel.Engine) -> tuple[Client, Client]:
    a = Client(lk.groups, instance_id="host-a", client_id="a")
    b = Client(lk.groups, instance_id="host-b", client_id="b")
    join_all([a, b])
    leader, follower = (a, b) if a.member_id == b.coordinator.describe_group(GROUP).leader else (b, a)
    follower_sync = follower.sync()
    leader.sync({a.member_id: b"for a", b.member_id: b"for b"}).value()
    follower_sync.value()
    assert state(lk.groups) == "Stable"
    return a, b


def test_static_member_restart_keeps_generation_and_assignment(lk: logkernel.Engine) -> None:
    a, b = static_pair(lk)
    generation = a.generation
    restarted = Client(lk.groups, instance_id="host-b", client_id="b")
    # A static member is never told MEMBER_ID_REQUIRED: its instance id already names it.
    result = restarted.joined(restarted.join(require_known=True))
    assert result.member_id != b.member_id
    assert result.generation_id == generation
    assert result.members == []  # the restarted member does not reassign
    assert state(lk.groups) == "Stable"
    assert restarted.sync().value().assignment == b"for b"
    with pytest.raises(errors.FencedInstanceIdError):
        b.heartbeat()
    with pytest.raises(errors.FencedInstanceIdError):
        b.commit({("t", 0): 1})
    a.heartbeat()  # no rebalance for anyone else
    restarted.heartbeat()
    assert lk.groups.describe_group(GROUP).generation_id == generation


def test_static_member_restart_with_new_metadata_of_the_same_protocol(lk: logkernel.Engine) -> None:
    """Kafka rebalances a Stable group on a static member's return only when the protocol
    the group would select changes (GroupMetadataManager.updateStaticMemberThenRebalance-
    OrCompleteJoin), not when the metadata bytes differ: a restarted consumer always sends
    different bytes (its owned partitions and generation are gone), and a rebalance on every
    restart is what static membership (KIP-345) exists to avoid."""
    a, _ = static_pair(lk)
    generation = a.generation
    restarted = Client(lk.groups, instance_id="host-b", client_id="b",
                       protocols=[("range", b"range-metadata after a restart")])
    answer = restarted.join()
    assert state(lk.groups) == "Stable", "the restart started a rebalance"
    assert answer.done
    assert restarted.joined(answer).generation_id == generation
    assert restarted.sync().value().assignment == b"for b"
    a.heartbeat()


def test_static_member_restart_during_a_rebalance_fences_the_old_join(lk: logkernel.Engine) -> None:
    a, b = static_pair(lk)
    newcomer = Client(lk.groups, client_id="c")
    c_join = newcomer.join()
    b_join = b.join()
    restarted = Client(lk.groups, instance_id="host-b", client_id="b")
    restarted_join = restarted.join()
    assert isinstance(b_join.get(), errors.FencedInstanceIdError)
    a_join = a.join()
    results = [client.joined(answer) for client, answer in
               ((a, a_join), (restarted, restarted_join), (newcomer, c_join))]
    assert {r.generation_id for r in results} == {a.generation}
    leader = next(r for r in results if r.members)
    assert sorted(m[0] for m in leader.members) == sorted(
        [a.member_id, restarted.member_id, newcomer.member_id])
    assert ("host-b" in {m[1] for m in leader.members})


# ---- protocols and limits ---------------------------------------------------------------


def test_the_protocol_most_members_prefer_among_common_ones_wins(lk: logkernel.Engine) -> None:
    lists = [
        [("range", b"r-a"), ("roundrobin", b"rr-a"), ("sticky", b"s-a")],
        [("roundrobin", b"rr-b"), ("range", b"r-b")],
        [("roundrobin", b"rr-c"), ("range", b"r-c")],
    ]
    clients = [Client(lk.groups, protocols=p, client_id=f"c{i}") for i, p in enumerate(lists)]
    results = join_all(clients)
    assert {r.protocol_name for r in results} == {"roundrobin"}
    leader = next(r for r in results if r.members)
    assert sorted(m[2] for m in leader.members) == [b"rr-a", b"rr-b", b"rr-c"]


def test_member_with_no_common_protocol_is_refused(lk: logkernel.Engine) -> None:
    a = Client(lk.groups, protocols=[("range", b""), ("roundrobin", b"")])
    a.joined(a.join())
    odd = Client(lk.groups, protocols=[("cooperative-sticky", b"")])
    with pytest.raises(errors.InconsistentGroupProtocolError):
        odd.join()
    other_type = Client(lk.groups, protocol_type="connect", protocols=[("range", b"")])
    with pytest.raises(errors.InconsistentGroupProtocolError):
        other_type.join()
    with pytest.raises(errors.InconsistentGroupProtocolError):
        Client(lk.groups, protocols=[]).join()
    # The sole member may change its own protocols freely.
    a.protocols = [("cooperative-sticky", b"")]
    assert a.joined(a.join()).protocol_name == "cooperative-sticky"


def test_session_timeout_outside_the_configured_range(lk: logkernel.Engine) -> None:
    with pytest.raises(errors.InvalidSessionTimeoutError):
        Client(lk.groups, session_ms=99).join()
    with pytest.raises(errors.InvalidSessionTimeoutError):
        Client(lk.groups, session_ms=1_800_001).join()
    Client(lk.groups, session_ms=100).join().value()


def test_group_max_size(tmp_path: Path) -> None:
    with logkernel.open(tmp_path / "data", dict(ENGINE_CONFIG, **{"group.max.size": 2})) as lk:
        a, b = Client(lk.groups, client_id="a"), Client(lk.groups, client_id="b")
        a.joined(a.join_v4())
        with pytest.raises(errors.MemberIdRequiredError):  # b's pending id takes the 2nd place
            b.join(require_known=True)
        with pytest.raises(errors.GroupMaxSizeReachedError):
            Client(lk.groups).join(require_known=True)
        with pytest.raises(errors.GroupMaxSizeReachedError):
            Client(lk.groups).join(require_known=False)


def test_phantom_join_does_not_create_a_group(lk: logkernel.Engine) -> None:
    """A JoinGroup that names a member id for a group that does not exist gets
    UNKNOWN_MEMBER_ID and creates nothing (Kafka: getOrMaybeCreateClassicGroup(groupId,
    createIfNotExists=isUnknownMember)); the group must not show up in ListGroups."""
    ghost = Client(lk.groups, "ghost")
    ghost.member_id = "left-over-from-before-a-restart"
    with pytest.raises(errors.UnknownMemberIdError):
        ghost.join()
    assert [g.group_id for g in lk.groups.list_groups()] == []
    assert lk.groups.describe_group("ghost").state == "Dead"


# ---- admin ------------------------------------------------------------------------------


def consumer_protocols(*topics: str) -> list[tuple[str, bytes]]:
    return [("range", encode_subscription(Subscription(list(topics))))]


def test_list_and_describe_groups(lk: logkernel.Engine) -> None:
    stable = Client(lk.groups, "stable", client_id="s")
    stable.joined(stable.join())
    stable.sync({stable.member_id: b"s-assignment"}).value()
    completing = Client(lk.groups, "completing")
    completing.joined(completing.join())
    lk.groups.commit_offsets("offsets-only", {("t", 0): OffsetAndMetadata(3)})

    listed = {g.group_id: g for g in lk.groups.list_groups()}
    assert {gid: (g.state, g.protocol_type, g.group_type) for gid, g in listed.items()} == {
        "completing": ("CompletingRebalance", "consumer", "classic"),
        "offsets-only": ("Empty", "", "classic"),
        "stable": ("Stable", "consumer", "classic"),
    }
    assert [g.group_id for g in lk.groups.list_groups(states=["stable"])] == ["stable"]
    assert [g.group_id for g in lk.groups.list_groups(states=["Empty", "CompletingRebalance"])] == [
        "completing", "offsets-only"]

    described = lk.groups.describe_group("stable")
    assert (described.state, described.protocol_type, described.protocol_name) == (
        "Stable", "consumer", "range")
    assert described.generation_id == 1 and described.leader == stable.member_id
    (member,) = described.members
    assert (member.member_id, member.client_id, member.client_host) == (
        stable.member_id, "s", "localhost")
    assert (member.metadata, member.assignment) == (b"range-metadata", b"s-assignment")
    # Not Stable: no protocol name, metadata or assignment to show (as Kafka's summary).
    busy = lk.groups.describe_group("completing")
    assert busy.protocol_name == "" and busy.members[0].assignment == b""
    assert lk.groups.describe_group("offsets-only").state == "Empty"
    assert lk.groups.describe_group("unknown").state == "Dead"


def test_delete_group(lk: logkernel.Engine) -> None:
    lk.create_topic("t", 2)
    member = Client(lk.groups)
    member.joined(member.join())
    member.sync({}).value()
    member.commit({("t", 0): 7, ("t", 1): 8})
    with pytest.raises(errors.NonEmptyGroupError):
        lk.groups.delete_group(GROUP)
    assert member.leave() is None
    lk.groups.delete_group(GROUP)
    assert lk.groups.offsets.group_offsets(GROUP) == {}
    assert lk.committed(GROUP, "t", 0) is None
    assert lk.groups.list_groups() == []
    with pytest.raises(errors.GroupIdNotFoundError):
        lk.groups.delete_group(GROUP)
    with pytest.raises(errors.GroupIdNotFoundError):
        lk.groups.delete_group("never-existed")
    # The id is free again: a new member starts at generation 1.
    again = Client(lk.groups)
    assert again.joined(again.join()).generation_id == 1


def test_delete_offsets_refuses_subscribed_topics(lk: logkernel.Engine) -> None:
    member = Client(lk.groups, protocols=consumer_protocols("orders"))
    member.joined(member.join())
    member.sync({}).value()
    member.commit({("orders", 0): 1, ("audit", 0): 2})
    outcome = lk.groups.delete_offsets(GROUP, [("orders", 0), ("audit", 0)])
    assert isinstance(outcome[("orders", 0)], errors.GroupSubscribedToTopicError)
    assert outcome[("audit", 0)] is None
    assert set(lk.groups.offsets.group_offsets(GROUP)) == {("orders", 0)}
    with pytest.raises(errors.GroupIdNotFoundError):
        lk.groups.delete_offsets("never-existed", [("orders", 0)])
    member.leave()
    assert lk.groups.delete_offsets(GROUP, [("orders", 0)]) == {("orders", 0): None}
    assert lk.groups.offsets.group_offsets(GROUP) == {}


def test_delete_offsets_with_unreadable_metadata_is_non_empty(lk: logkernel.Engine) -> None:
    member = Client(lk.groups, protocol_type="connect", protocols=[("default", b"\xff")])
    member.joined(member.join())
    member.sync({}).value()
    member.commit({("t", 0): 1})
    with pytest.raises(errors.NonEmptyGroupError):
        lk.groups.delete_offsets(GROUP, [("t", 0)])


def test_delete_offsets_while_a_member_changes_protocols(lk: logkernel.Engine) -> None:
    """Kafka keeps the subscribed topics of the last completed generation
    (ClassicGroup.subscribedTopics, computed in initNextGeneration), so OffsetDelete works
    whatever members are rejoining with meanwhile."""
    both = [("range", encode_subscription(Subscription(["orders"]))),
            ("roundrobin", encode_subscription(Subscription(["orders"])))]
    a = Client(lk.groups, protocols=both, client_id="a")
    b = Client(lk.groups, protocols=both, client_id="b")
    join_all([a, b])
    b_sync = b.sync()
    a.sync({}).value()
    b_sync.value()
    a.commit({("orders", 0): 1})
    # a rejoins offering only roundrobin (b supports it too): the group rebalances, and until
    # it completes, a no longer offers the "range" protocol the group runs.
    a.protocols = [both[1]]
    a.join()
    assert state(lk.groups) == "PreparingRebalance"
    outcome = lk.groups.delete_offsets(GROUP, [("orders", 0)])
    assert isinstance(outcome[("orders", 0)], errors.GroupSubscribedToTopicError)


def test_expire_offsets(lk: logkernel.Engine) -> None:
    retention_ms = lk.config["offsets.retention.minutes"] * 60_000
    far_future = int(time.time() * 1000) + retention_ms + 60_000
    now = int(time.time() * 1000)
    active = Client(lk.groups, "active", protocols=consumer_protocols("t"))
    active.joined(active.join())
    active.sync({}).value()
    active.commit({("t", 0): 1})
    emptied = Client(lk.groups, "emptied")
    emptied.joined(emptied.join())
    emptied.sync({}).value()
    emptied.commit({("t", 0): 2})
    emptied.leave()
    lk.groups.commit_offsets("standalone", {("t", 0): OffsetAndMetadata(3, "", -1, now)})

    assert lk.groups.expire_offsets(now_ms=now) == 0
    assert lk.groups.expire_offsets(now_ms=far_future) == 2
    assert set(lk.groups.offsets.groups()) == {"active"}
    assert lk.groups.offsets.fetch("active", "t", 0).offset == 1
    assert {g.group_id for g in lk.groups.list_groups()} == {"active"}


def test_expire_offsets_of_topics_a_stable_group_no_longer_subscribes_to(
        lk: logkernel.Engine) -> None:
    """KIP-496 (Kafka 2.5+): in a Stable consumer-protocol group, offsets of topics no member
    subscribes to expire offsets.retention.minutes after their commit
    (ClassicGroup.offsetExpirationCondition, OffsetMetadataManager.cleanupExpiredOffsets).
    Those of subscribed topics stay."""
    retention_ms = lk.config["offsets.retention.minutes"] * 60_000
    member = Client(lk.groups, protocols=consumer_protocols("current"))
    member.joined(member.join())
    member.sync({}).value()
    member.commit({("current", 0): 1, ("former", 0): 2})
    far_future = int(time.time() * 1000) + retention_ms + 60_000
    assert lk.groups.expire_offsets(now_ms=far_future) == 1
    assert set(lk.groups.offsets.group_offsets(GROUP)) == {("current", 0)}


# ---- a state machine over random interleavings -------------------------------------------


class ManualTimers:
    """Timers (logkernel.coordinator.timers) on a clock the test moves: ``advance`` runs the
    due callbacks on the calling thread, in deadline order, with the clock at each deadline."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()

    def clock(self) -> float:
        return self.now

    def schedule(self, delay_seconds: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + max(delay_seconds, 0.0), callback)
        heapq.heappush(self._heap, (timer.deadline, next(self._sequence), timer))
        return timer

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._heap and self._heap[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self.now = max(self.now, deadline)
            timer.callback()
        self.now = target

    def stop(self) -> None:
        self._heap.clear()


PARTITIONS = 6
# Members 0-2 have sessions shorter than the rebalance timeout, 3-4 longer ones, so both a
# session expiry and a rebalance (or sync) timeout can be what removes a member.
SESSION_MS = (1000, 1000, 1000, 5000, 5000)
REBALANCE_MS = 2000


def encode_partitions(partitions: list[int]) -> bytes:
    return ",".join(map(str, partitions)).encode()


def decode_partitions(data: bytes) -> list[int]:
    return [int(p) for p in data.decode().split(",")] if data else []


class SimulatedMember:
    def __init__(self, index: int) -> None:
        self.index = index
        self.member_id = ""
        self.generation = -1
        self.join: Answer | None = None
        self.sync: Answer | None = None
        self.joined: JoinResult | None = None     # a join result not yet synced
        self.sync_generation = -1

    def __repr__(self) -> str:
        return f"member {self.index} ({self.member_id or 'no id'}, generation {self.generation})"


class ClassicGroupMachine(RuleBasedStateMachine):
    """Random joins, rejoins, syncs (the leader assigns round robin), heartbeats, leaves and
    clock moves over up to five members of one group; invariants after every step."""

    engine: logkernel.Engine

    def __init__(self) -> None:
        super().__init__()
        self.coordinator = GroupCoordinator(self.engine.offsets, self.engine.config, None)
        self.coordinator.timers.stop()
        self.timers = ManualTimers()
        self.coordinator.timers = self.timers  # type: ignore[assignment]
        self.members = [SimulatedMember(i) for i in range(5)]
        self.sent: dict[int, dict[str, bytes]] = {}     # generation -> the leader's SyncGroup
        self.leaders: dict[int, str] = {}                # generation -> leader named in answers
        self.last_generation = 0

    def teardown(self) -> None:
        self.coordinator.close()
        # The group's membership record stays in the shared offsets store (a reopened engine
        # restores it); the next example starts from no group.
        self.engine.offsets.store_group(GROUP, None)

    # -- talking to the coordinator --

    def _collect(self) -> None:
        """Takes in every answer delivered so far (they come from calls and clock moves)."""
        for m in self.members:
            if m.sync is not None and m.sync.done:
                result, m.sync = m.sync.get(), None
                if isinstance(result, SyncResult):
                    sent = self.sent.get(m.sync_generation)
                    assert sent is not None, "a SyncGroup answered before the leader's"
                    assert result.assignment == sent.get(m.member_id, b"")
                elif isinstance(result, errors.UnknownMemberIdError):
                    self._forget(m)
                else:
                    assert isinstance(result, errors.RebalanceInProgressError), result
            if m.join is not None and m.join.done:
                result, m.join = m.join.get(), None
                if isinstance(result, JoinResult):
                    self._check_join_result(result)
                    m.member_id, m.generation, m.joined = (
                        result.member_id, result.generation_id, result)
                else:
                    # Removed, or this join was replaced by a newer one of the same member
                    # (whose answer then brings the member id back).
                    assert isinstance(result, errors.UnknownMemberIdError), result
                    self._forget(m)

    def _check_join_result(self, result: JoinResult) -> None:
        leader = self.leaders.setdefault(result.generation_id, result.leader)
        assert result.leader == leader, "two leaders named for one generation"
        if result.member_id == result.leader:
            assert result.member_id in {mid for mid, _, _ in result.members}
        else:
            assert result.members == []

    @staticmethod
    def _forget(m: SimulatedMember) -> None:
        m.member_id, m.generation, m.joined = "", -1, None

    def _call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        finally:
            self._collect()

    # -- rules --

    @rule(i=st.integers(0, 4), require_known=st.booleans())
    def join(self, i: int, require_known: bool) -> None:
        m = self.members[i]
        answer = Answer()
        try:
            self._call(lambda: self.coordinator.join_group(
                GROUP, member_id=m.member_id, instance_id=None, client_id=f"m{i}",
                client_host="sim", session_timeout_ms=SESSION_MS[i], rebalance_timeout_ms=REBALANCE_MS,
                protocol_type="consumer", protocols=RANGE, require_known_member_id=require_known,
                answer=answer))
        except errors.MemberIdRequiredError as exc:
            m.member_id = exc.member_id
            return
        except errors.UnknownMemberIdError:
            self._forget(m)
            return
        m.joined = None
        m.join = answer
        self._collect()

    @precondition(lambda self: any(m.joined is not None for m in self.members))
    @rule(data=st.data())
    def sync(self, data: st.DataObject) -> None:
        self._sync(data.draw(st.sampled_from([m for m in self.members if m.joined is not None])))

    def _sync(self, m: SimulatedMember) -> None:
        joined, m.joined = m.joined, None
        assert joined is not None
        assignments: dict[str, bytes] = {}
        if joined.members:
            ids = sorted(mid for mid, _, _ in joined.members)
            plan: dict[str, list[int]] = {mid: [] for mid in ids}
            for p in range(PARTITIONS):
                plan[ids[p % len(ids)]].append(p)
            assignments = {mid: encode_partitions(ps) for mid, ps in plan.items()}
        answer = Answer()
        before = self.coordinator.describe_group(GROUP)
        # The leader's SyncGroup in CompletingRebalance is the one the group takes; it answers
        # the parked ones during the call, so record it first.
        decides = bool(joined.members) and before.state == "CompletingRebalance" \
            and before.generation_id == m.generation
        if decides:
            assert m.generation not in self.sent
            self.sent[m.generation] = assignments
        try:
            self._call(lambda: self.coordinator.sync_group(
                GROUP, member_id=m.member_id, instance_id=None, generation=m.generation,
                protocol_type="consumer", protocol_name="range", assignments=assignments,
                answer=answer))
        except errors.UnknownMemberIdError:
            assert not decides
            self._forget(m)
            return
        except (errors.IllegalGenerationError, errors.RebalanceInProgressError):
            assert not decides
            return
        m.sync, m.sync_generation = answer, m.generation
        self._collect()

    @precondition(lambda self: any(m.member_id and m.generation >= 0 for m in self.members))
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from([m for m in self.members if m.member_id and m.generation >= 0]))
        try:
            self._call(lambda: self.coordinator.heartbeat(
                GROUP, member_id=m.member_id, instance_id=None, generation=m.generation))
        except errors.UnknownMemberIdError:
            self._forget(m)
        except (errors.IllegalGenerationError, errors.RebalanceInProgressError):
            pass

    @precondition(lambda self: any(m.member_id and m.generation >= 0 for m in self.members))
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from([m for m in self.members if m.member_id and m.generation >= 0]))
        before = self.coordinator.describe_group(GROUP)
        try:
            self._call(lambda: self.coordinator.commit_offsets(
                GROUP, {("t", 0): OffsetAndMetadata(1)}, member_id=m.member_id,
                generation=m.generation))
        except errors.UnknownMemberIdError:
            assert m.member_id not in {x.member_id for x in before.members}
            self._forget(m)
            return
        except errors.IllegalGenerationError:
            assert m.generation != before.generation_id
            return
        except errors.RebalanceInProgressError:
            assert before.state == "CompletingRebalance"
            return
        assert m.member_id in {x.member_id for x in before.members}
        assert m.generation == before.generation_id
        assert before.state in ("Stable", "PreparingRebalance")

    @precondition(lambda self: any(m.member_id for m in self.members))
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from([m for m in self.members if m.member_id]))
        self._call(lambda: self.coordinator.leave_group(GROUP, [(m.member_id, None)]))
        self._forget(m)
        m.join = m.sync = None

    @precondition(lambda self: any(m.member_id for m in self.members))
    @rule()
    def everyone_catches_up(self) -> None:
        """What a healthy fleet does: members not already waiting rejoin, then sync
        (followers first, so the leader's SyncGroup answers them)."""
        for m in self.members:
            if m.member_id and m.join is None:
                self.join(m.index, require_known=False)
        joined = [m for m in self.members if m.joined is not None]
        for m in sorted(joined, key=lambda m: bool(m.joined and m.joined.members)):
            if m.joined is not None:
                self._sync(m)

    @rule(seconds=st.sampled_from([0.05, 0.3, 0.9, 1.5, 2.5]))
    def advance_clock(self, seconds: float) -> None:
        self._call(lambda: self.timers.advance(seconds))

    # -- invariants --

    @invariant()
    def group_is_consistent(self) -> None:
        described = self.coordinator.describe_group(GROUP)
        if described.state == "Dead":  # nobody has joined yet
            return
        assert described.generation_id >= self.last_generation, "generation went back"
        self.last_generation = described.generation_id
        member_ids = [m.member_id for m in described.members]
        event(f"{described.state} with {min(len(member_ids), 3)}+ members")
        assert len(set(member_ids)) == len(member_ids)
        if described.leader is not None:
            assert described.leader in member_ids, "the leader is not a member"
        else:
            assert member_ids == [], "members but no leader"
        if described.state == "Empty":
            assert member_ids == []
        if described.state == "Stable":
            sent = self.sent.get(described.generation_id)
            assert sent is not None, "Stable before the leader's SyncGroup"
            held: set[int] = set()
            for member in described.members:
                assert member.assignment == sent.get(member.member_id, b"")
                partitions = set(decode_partitions(member.assignment))
                assert not (partitions & held), "a partition is held by two members"
                held |= partitions


def test_classic_group_state_machine(tmp_path: Path) -> None:
    with logkernel.open(tmp_path / "data", ENGINE_CONFIG) as engine:
        ClassicGroupMachine.engine = engine
        run_state_machine_as_test(
            ClassicGroupMachine,
            settings=settings(max_examples=150, stateful_step_count=40, deadline=None))


# ---- membership kept across a restart ----------------------------------------------------------


def test_a_stable_group_is_restored_by_the_next_open(tmp_path: Path) -> None:
    """Kafka keeps each group's generation and members in __consumer_offsets; so does the
    engine: after a restart members carry on (heartbeat, commit, rejoin) with no rebalance."""
    path = tmp_path / "data"
    lk = logkernel.open(path, ENGINE_CONFIG)
    lk.create_topic("t", 2)
    a, b = stable_pair(lk.groups, instance_id=None)
    lk.close()
    lk = logkernel.open(path, ENGINE_CONFIG)
    try:
        for client in (a, b):
            client.coordinator = lk.groups
        described = lk.groups.describe_group(GROUP)
        assert (described.state, described.generation_id) == ("Stable", 2)
        assert {m.member_id: m.assignment for m in described.members} == {
            a.member_id: b"a-2", b.member_id: b"b-2"}
        a.heartbeat()
        b.heartbeat()
        b.commit({("t", 0): 5})
        assert lk.committed(GROUP, "t", 0) == 5
        # A follower that rejoins with the same metadata is told the same generation.
        assert b.joined(b.join()).generation_id == 2
    finally:
        lk.close()


def test_a_deleted_group_stays_deleted_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "data"
    lk = logkernel.open(path, ENGINE_CONFIG)
    a = Client(lk.groups)
    a.joined(a.join())
    a.sync({a.member_id: b"x"}).value()
    assert a.leave() is None
    wait_until(lambda: state(lk.groups) == "Empty", what="the group to empty")
    lk.groups.delete_group(GROUP)
    lk.close()
    lk = logkernel.open(path, ENGINE_CONFIG)
    try:
        assert lk.groups.list_groups() == []
        assert state(lk.groups) == "Dead"
    finally:
        lk.close()


def test_restored_members_that_never_return_expire(tmp_path: Path) -> None:
    path = tmp_path / "data"
    lk = logkernel.open(path, ENGINE_CONFIG)
    a = Client(lk.groups, session_ms=300)
    a.joined(a.join())
    a.sync({a.member_id: b"x"}).value()
    lk.close()
    lk = logkernel.open(path, ENGINE_CONFIG)
    try:
        assert state(lk.groups) == "Stable"
        wait_until(lambda: state(lk.groups) == "Empty", what="the restored member to expire")
    finally:
        lk.close()
