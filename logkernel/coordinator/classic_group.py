"""One classic consumer group: the JoinGroup / SyncGroup / Heartbeat / LeaveGroup protocol.

States, as Kafka names them::

    Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
      ▲                  ▲        ▲                                   │ leader's SyncGroup
      │ last member      │        └──── member joins, leaves, ────────┤
      │ leaves/expires   │              changes protocols,            ▼
      └──────────────────┴──────────── leader rejoins ───────────── Stable

A rebalance collects JoinGroup requests: each is answered only when the rebalance completes,
either because every known member has rejoined or because the longest rebalance timeout
passed (members that did not rejoin are then dropped, static ones excepted). The first
rebalance of an empty group waits ``group.initial.rebalance.delay.ms`` (extended while new
members keep arriving, up to the rebalance timeout) so that a fleet starting together gets one
rebalance rather than one per member. Completion bumps the generation, picks the protocol
every member supports that most members prefer, and hands the leader every member's metadata;
the leader's SyncGroup carries everyone's assignment, which answers the waiting SyncGroups.

Fencing: a member is known by member id; a request with an unknown one gets
UnknownMemberIdError, a stale generation IllegalGenerationError, and a static member
(``group.instance.id``) whose id was taken over by a newer join FencedInstanceIdError. A
static member that rejoins with an empty member id replaces its old self and, in a Stable
group, gets the current generation and its old assignment back with no rebalance.

Liveness: each member has a session deadline, moved by every request it sends; a timer
removes a member whose deadline passes (members waiting for their JoinGroup or SyncGroup
answer are kept). Members that do not SyncGroup within the rebalance timeout after a join
completes are removed too, so a crashed leader cannot stall the group.

Every method is called with the coordinator's lock held; the callbacks that answer a parked
JoinGroup or SyncGroup are called under it as well and must not block.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from logkernel import errors
from logkernel.coordinator.assignors import decode_subscription
from logkernel.coordinator.timers import Timer, Timers

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
GROUP_VALUE_VERSION = 3


def _string(text: str) -> bytes:
    data = text.encode()
    return _I16.pack(len(data)) + data


def _nullable(text: str | None) -> bytes:
    return _I16.pack(-1) if text is None else _string(text)


class _Reader:
    """Reads a stored group record; running past its end is a ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise ValueError(f"group record ends early at byte {self.pos}")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def i16(self) -> int:
        return int(_I16.unpack(self._take(2))[0])

    def i32(self) -> int:
        return int(_I32.unpack(self._take(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self._take(8))[0])

    def count(self) -> int:
        n = self.i32()
        if n < 0 or n > len(self.data):
            raise ValueError(f"group record has a member count of {n}")
        return n

    def nullable(self) -> str | None:
        n = self.i16()
        return None if n < 0 else self._take(n).decode()

    def string(self) -> str:
        return self.nullable() or ""

    def blob(self) -> bytes:
        n = self.i32()
        return b"" if n < 0 else self._take(n)


EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"


@dataclass(frozen=True)
class ClassicGroupSettings:
    initial_rebalance_delay_ms: int
    min_session_timeout_ms: int
    max_session_timeout_ms: int
    max_size: int


@dataclass(frozen=True)
class JoinResult:
    member_id: str
    generation_id: int
    protocol_type: str | None
    protocol_name: str | None
    leader: str
    # (member id, group instance id, metadata of the chosen protocol): only for the leader.
    members: list[tuple[str, str | None, bytes]]
    skip_assignment: bool = False


@dataclass(frozen=True)
class SyncResult:
    protocol_type: str | None
    protocol_name: str | None
    assignment: bytes


Answer = Callable[[Any], None]   # called with a JoinResult/SyncResult or a GroupError


@dataclass
class ClassicMember:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_answer: Answer | None = None
    sync_answer: Answer | None = None
    session_deadline: float = 0.0
    session_timer: Timer | None = None

    def metadata(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise AssertionError(f"member {self.member_id} does not support {protocol}")


@dataclass
class MemberDescription:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass
class ClassicGroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol_name: str
    generation_id: int
    leader: str | None
    members: list[MemberDescription] = field(default_factory=list)


class ClassicGroup:
    """See the module docstring."""

    def __init__(self, group_id: str, settings: ClassicGroupSettings, timers: Timers,
                 lock: threading.RLock,
                 persist: Callable[[str, bytes | None], None] | None = None) -> None:
        self.group_id = group_id
        self._persist = persist
        self.settings = settings
        self._timers = timers
        self._lock = lock
        self.state = EMPTY
        self.state_since_ms = int(time.time() * 1000)
        self.generation = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader: str | None = None
        self.members: dict[str, ClassicMember] = {}
        self._static: dict[str, str] = {}          # group.instance.id -> member id
        self._pending: dict[str, Timer] = {}        # member ids handed out with MEMBER_ID_REQUIRED
        self._awaiting_sync: set[str] = set()
        # Bumped by every rebalance, so a timer of an earlier one knows it is stale.
        self._round = 0
        self._new_member_in_delay = False
        self._delay_round: int | None = None   # the rebalance whose initial delay runs
        self._subscribed: set[str] | None = None

    # ---- queries ---------------------------------------------------------------------

    def is_empty(self) -> bool:
        return not self.members

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_since_ms = int(time.time() * 1000)

    def subscribed_topics(self) -> set[str] | None:
        """Topics the members of the last completed generation subscribed to (consumer
        protocol, as Kafka reads them), or None when unknown (another protocol type, or
        metadata that does not parse)."""
        return self._subscribed

    def _read_subscriptions(self) -> set[str] | None:
        if self.protocol_type != "consumer" or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for member in self.members.values():
            try:
                topics.update(decode_subscription(member.metadata(self.protocol_name)).topics)
            except ValueError:
                return None
        return topics

    def describe(self) -> ClassicGroupDescription:
        stable = self.state == STABLE
        return ClassicGroupDescription(
            self.group_id, self.state, self.protocol_type or "",
            (self.protocol_name or "") if stable else "", self.generation, self.leader,
            [MemberDescription(m.member_id, m.instance_id, m.client_id, m.client_host,
                               m.metadata(self.protocol_name) if stable and self.protocol_name
                               else b"", m.assignment if stable else b"")
             for m in self.members.values()])

    # ---- JoinGroup -------------------------------------------------------------------

    def join(self, *, member_id: str, instance_id: str | None, client_id: str, client_host: str,
             session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
             protocols: list[tuple[str, bytes]], require_known_member_id: bool,
             answer: Answer) -> None:
        """Answers through ``answer`` when the join completes; raises at once for a refusal."""
        s = self.settings
        if not s.min_session_timeout_ms <= session_timeout_ms <= s.max_session_timeout_ms:
            raise errors.InvalidSessionTimeoutError(
                f"session timeout {session_timeout_ms} ms is outside "
                f"group.min.session.timeout.ms..group.max.session.timeout.ms "
                f"({s.min_session_timeout_ms}..{s.max_session_timeout_ms})")
        if rebalance_timeout_ms < 0:  # JoinGroup v0 has none: the session timeout is used
            rebalance_timeout_ms = session_timeout_ms
        self._check_live()
        if not protocol_type or not protocols:
            raise errors.InconsistentGroupProtocolError(
                "a JoinGroup needs a protocol type and at least one protocol")
        if not self._accepts(member_id, protocol_type, protocols):
            raise errors.InconsistentGroupProtocolError(
                f"group {self.group_id!r} uses protocol type {self.protocol_type!r} with "
                f"protocols no member supports in common with {[p for p, _ in protocols]}")
        fields = dict(client_id=client_id, client_host=client_host,
                      session_timeout_ms=session_timeout_ms,
                      rebalance_timeout_ms=rebalance_timeout_ms, protocols=list(protocols),
                      protocol_type=protocol_type)
        if not member_id:
            self._join_new(instance_id, require_known_member_id, answer, fields)
        else:
            self._join_known(member_id, instance_id, answer, fields)

    def _accepts(self, member_id: str, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        if self.state == EMPTY or not self.members:
            return True
        if protocol_type != self.protocol_type:
            return False
        names = {name for name, _ in protocols}
        for other in self.members.values():
            if other.member_id != member_id:
                names &= {name for name, _ in other.protocols}
        return bool(names)

    def _full(self) -> bool:
        return len(self.members) + len(self._pending) >= self.settings.max_size

    def _new_member_id(self, prefix: str) -> str:
        return f"{prefix or 'member'}-{uuid.uuid4()}"

    def _join_new(self, instance_id: str | None, require_known: bool, answer: Answer,
                  fields: dict[str, Any]) -> None:
        if instance_id is not None:
            old = self._static.get(instance_id)
            if old is not None:
                self._replace_static(old, self._new_member_id(instance_id), answer, fields)
                return
        if self._full():
            raise errors.GroupMaxSizeReachedError(
                f"group {self.group_id!r} has group.max.size={self.settings.max_size} members")
        member_id = self._new_member_id(instance_id or fields["client_id"])
        if instance_id is None and require_known:
            # JoinGroup v4+: the member must come back with this id before it counts, so a
            # client that times out mid-join does not leave a ghost behind.
            timeout = fields["session_timeout_ms"] / 1000
            self._pending[member_id] = self._timers.schedule(
                timeout, lambda: self._expire_pending(member_id))
            raise errors.MemberIdRequiredError(member_id)
        self._add(member_id, instance_id, answer, fields)

    def _join_known(self, member_id: str, instance_id: str | None, answer: Answer,
                    fields: dict[str, Any]) -> None:
        pending = self._pending.pop(member_id, None)
        if pending is not None:
            pending.cancel()
            if len(self.members) >= self.settings.max_size:
                raise errors.GroupMaxSizeReachedError(
                    f"group {self.group_id!r} has group.max.size={self.settings.max_size} members")
            self._add(member_id, instance_id, answer, fields)
            return
        member = self._member(member_id, instance_id)
        changed = member.protocols != fields["protocols"]
        self._refresh(member)
        if self.state == PREPARING_REBALANCE:
            self._update(member, answer, fields)
            self._try_complete_join()
        elif self.state == COMPLETING_REBALANCE and not changed:
            # The member lost our answer: tell it again.
            answer(self._join_result(member.member_id))
        elif self.state == STABLE and not changed and member_id != self.leader:
            answer(self._join_result(member.member_id))
        else:  # new protocols, or the leader asks for a new assignment
            self._update(member, answer, fields)
            self._prepare_rebalance()

    def _add(self, member_id: str, instance_id: str | None, answer: Answer,
             fields: dict[str, Any]) -> None:
        if not self.members:
            self.protocol_type = fields.pop("protocol_type")
        else:
            fields.pop("protocol_type")
        member = ClassicMember(member_id, instance_id, **fields)
        member.join_answer = answer
        self.members[member_id] = member
        if instance_id is not None:
            self._static[instance_id] = member_id
        if self.leader is None:
            self.leader = member_id
        self._refresh(member)
        if self.state == PREPARING_REBALANCE:
            self._new_member_in_delay = True
            self._try_complete_join()
        else:
            self._prepare_rebalance()

    def _update(self, member: ClassicMember, answer: Answer, fields: dict[str, Any]) -> None:
        if member.join_answer is not None and member.join_answer is not answer:
            member.join_answer(errors.UnknownMemberIdError(
                "a newer JoinGroup from the same member replaced this one"))
        member.join_answer = answer
        member.protocols = fields["protocols"]
        member.session_timeout_ms = fields["session_timeout_ms"]
        member.rebalance_timeout_ms = fields["rebalance_timeout_ms"]
        member.client_id = fields["client_id"]
        member.client_host = fields["client_host"]

    def _replace_static(self, old_id: str, new_id: str, answer: Answer,
                        fields: dict[str, Any]) -> None:
        """A static member restarted: it takes over its old self (which is fenced)."""
        member = self.members.pop(old_id)
        fenced = errors.FencedInstanceIdError(
            f"group.instance.id {member.instance_id!r} was taken over by a newer member")
        for parked in (member.join_answer, member.sync_answer):
            if parked is not None:
                parked(fenced)
        member.join_answer = member.sync_answer = None
        old_leader = self.leader
        member.member_id = new_id
        self.members[new_id] = member
        assert member.instance_id is not None
        self._static[member.instance_id] = new_id
        if old_id in self._awaiting_sync:
            self._awaiting_sync.discard(old_id)
            self._awaiting_sync.add(new_id)
        if self.leader == old_id:
            self.leader = new_id
        self._update(member, answer, fields)
        self._refresh(member)
        # Kafka rebalances for a restarted static member only if the protocol the group
        # would choose changes; new subscription bytes of the same protocol do not count.
        if self.state == STABLE and self._select_protocol() == self.protocol_name:
            # Same generation, same assignment: no one else notices the restart. The
            # answer names the old leader id so a restarted leader does not reassign.
            member.join_answer = None
            self._store()
            answer(JoinResult(new_id, self.generation, self.protocol_type, self.protocol_name,
                              old_leader or new_id, [], skip_assignment=False))
        elif self.state == PREPARING_REBALANCE:
            self._try_complete_join()
        else:
            self._prepare_rebalance()

    def _check_live(self) -> None:
        if self.state == DEAD:
            raise errors.CoordinatorNotAvailableError(
                f"group {self.group_id!r} is being deleted; find the coordinator again")

    def _member_at(self, member_id: str, instance_id: str | None, generation: int) -> ClassicMember:
        """The member, if it speaks for the current generation (else it was fenced)."""
        member = self._member(member_id, instance_id)
        if generation != self.generation:
            raise errors.IllegalGenerationError(
                f"generation {generation} is not group {self.group_id!r}'s current "
                f"{self.generation}: this member was fenced by a rebalance; rejoin")
        return member

    def _member(self, member_id: str, instance_id: str | None) -> ClassicMember:
        if instance_id is not None:
            current = self._static.get(instance_id)
            if current is not None and current != member_id:
                raise errors.FencedInstanceIdError(
                    f"group.instance.id {instance_id!r} belongs to a newer member of group "
                    f"{self.group_id!r}; this one was replaced")
        member = self.members.get(member_id)
        if member is None:
            raise errors.UnknownMemberIdError(
                f"group {self.group_id!r} has no member {member_id!r} (it left, expired, or "
                "the group was rebuilt); rejoin with an empty member id")
        if instance_id is not None and member.instance_id != instance_id:
            raise errors.FencedInstanceIdError(
                f"member {member_id!r} joined with group.instance.id {member.instance_id!r}, "
                f"not {instance_id!r}")
        return member

    # ---- rebalancing -------------------------------------------------------------------

    def _rebalance_timeout(self) -> float:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0) / 1000

    def _prepare_rebalance(self) -> None:
        if self.state == COMPLETING_REBALANCE:
            retry = errors.RebalanceInProgressError(
                f"group {self.group_id!r} started another rebalance; rejoin")
            for member in self.members.values():
                if member.sync_answer is not None:
                    member.sync_answer(retry)
                    member.sync_answer = None
        for member in self.members.values():
            member.assignment = b""
        self._awaiting_sync.clear()
        was_empty = self.state == EMPTY
        self._set_state(PREPARING_REBALANCE)
        self._round += 1
        round_ = self._round
        delay = self.settings.initial_rebalance_delay_ms / 1000
        if was_empty and delay > 0:
            self._new_member_in_delay = False
            self._delay_round = round_
            remaining = max(self._rebalance_timeout() - delay, 0.0)
            self._timers.schedule(delay, lambda: self._initial_delay_over(round_, delay, remaining))
            return
        self._timers.schedule(self._rebalance_timeout(), lambda: self._join_deadline(round_))
        self._try_complete_join()

    def _initial_delay_over(self, round_: int, delay: float, remaining: float) -> None:
        with self._lock:
            if round_ != self._round or self.state != PREPARING_REBALANCE:
                return
            if self._new_member_in_delay and remaining > 0:
                self._new_member_in_delay = False
                step = min(delay, remaining)
                self._timers.schedule(
                    step, lambda: self._initial_delay_over(round_, delay, remaining - step))
                return
            self._complete_join()

    def _join_deadline(self, round_: int) -> None:
        with self._lock:
            if round_ == self._round and self.state == PREPARING_REBALANCE:
                self._complete_join()

    def _try_complete_join(self) -> None:
        if self.state != PREPARING_REBALANCE or self._pending:
            return
        if all(m.join_answer is not None for m in self.members.values()) and \
                not self._delaying():
            self._complete_join()

    def _delaying(self) -> bool:
        """Whether the initial delay of an empty group's first rebalance still runs."""
        return self._delay_round == self._round

    def _complete_join(self) -> None:
        for member in list(self.members.values()):
            if member.join_answer is None and member.instance_id is None:
                self._remove(member, errors.UnknownMemberIdError(
                    f"member {member.member_id!r} did not rejoin within the rebalance timeout"))
        self._round += 1  # stale deadline timers of this rebalance now do nothing
        self.generation += 1
        if not self.members:
            self.protocol_name = None
            self.leader = None
            self._subscribed = None
            self._set_state(EMPTY)
            self._store()
            return
        self.protocol_name = self._select_protocol()
        self._subscribed = self._read_subscriptions()
        joined = [m for m in self.members.values() if m.join_answer is not None]
        leader = self.members.get(self.leader or "")
        if leader is None or leader.join_answer is None:
            self.leader = joined[0].member_id if joined else next(iter(self.members))
        self._set_state(COMPLETING_REBALANCE)
        self._awaiting_sync = set(self.members)
        for member in joined:
            answer, member.join_answer = member.join_answer, None
            self._refresh(member)
            assert answer is not None
            answer(self._join_result(member.member_id))
        round_ = self._round
        self._timers.schedule(self._rebalance_timeout(), lambda: self._sync_deadline(round_))

    def _select_protocol(self) -> str:
        members = list(self.members.values())
        common = {name for name, _ in members[0].protocols}
        for member in members[1:]:
            common &= {name for name, _ in member.protocols}
        votes: dict[str, int] = {}
        for member in members:
            first = next(name for name, _ in member.protocols if name in common)
            votes[first] = votes.get(first, 0) + 1
        order = [name for name, _ in members[0].protocols if name in common]
        return max(order, key=lambda name: (votes.get(name, 0), -order.index(name)))

    def _join_result(self, member_id: str) -> JoinResult:
        assert self.protocol_name is not None and self.leader is not None
        members = []
        if member_id == self.leader:
            members = [(m.member_id, m.instance_id, m.metadata(self.protocol_name))
                       for m in self.members.values()]
        return JoinResult(member_id, self.generation, self.protocol_type, self.protocol_name,
                          self.leader, members)

    def _sync_deadline(self, round_: int) -> None:
        with self._lock:
            if round_ != self._round or self.state not in (COMPLETING_REBALANCE, STABLE):
                return
            removed = False
            for member_id in list(self._awaiting_sync):
                member = self.members.get(member_id)
                if member is not None:
                    self._remove(member, errors.UnknownMemberIdError(
                        f"member {member_id!r} did not SyncGroup within the rebalance timeout"))
                    removed = True
            if removed:
                self._after_removal()

    # ---- SyncGroup, Heartbeat, LeaveGroup ------------------------------------------------

    def sync(self, *, member_id: str, instance_id: str | None, generation: int,
             protocol_type: str | None, protocol_name: str | None,
             assignments: dict[str, bytes], answer: Answer) -> None:
        self._check_live()
        member = self._member_at(member_id, instance_id, generation)
        if (protocol_type is not None and protocol_type != self.protocol_type) or \
                (protocol_name is not None and protocol_name != self.protocol_name):
            raise errors.InconsistentGroupProtocolError(
                f"group {self.group_id!r} runs {self.protocol_type}/{self.protocol_name}, not "
                f"{protocol_type}/{protocol_name}")
        if self.state == PREPARING_REBALANCE:
            raise errors.RebalanceInProgressError(
                f"group {self.group_id!r} is rebalancing; rejoin")
        self._refresh(member)
        self._awaiting_sync.discard(member_id)
        if self.state == STABLE:
            answer(SyncResult(self.protocol_type, self.protocol_name, member.assignment))
            return
        member.sync_answer = answer
        if member_id != self.leader:
            return
        for other in self.members.values():
            other.assignment = bytes(assignments.get(other.member_id, b""))
        self._set_state(STABLE)
        self._store()
        for other in self.members.values():
            if other.sync_answer is not None:
                parked, other.sync_answer = other.sync_answer, None
                parked(SyncResult(self.protocol_type, self.protocol_name, other.assignment))

    def heartbeat(self, *, member_id: str, instance_id: str | None, generation: int) -> None:
        self._check_live()
        member = self._member_at(member_id, instance_id, generation)
        self._refresh(member)
        if self.state == PREPARING_REBALANCE:
            raise errors.RebalanceInProgressError(
                f"group {self.group_id!r} is rebalancing; rejoin")

    def leave(self, members: list[tuple[str, str | None]]) -> list[errors.GroupError | None]:
        """Removes members ((member id, instance id) each); one outcome per member."""
        outcomes: list[errors.GroupError | None] = []
        removed = False
        for member_id, instance_id in members:
            try:
                if instance_id is None and member_id in self._pending:
                    self._pending.pop(member_id).cancel()
                    outcomes.append(None)
                    removed = True
                    continue
                if instance_id is not None and not member_id:
                    current = self._static.get(instance_id)  # an admin removing a static member
                    if current is None:
                        raise errors.UnknownMemberIdError(
                            f"group {self.group_id!r} has no member with group.instance.id "
                            f"{instance_id!r}")
                    member_id = current
                member = self._member(member_id, instance_id)
                self._remove(member, errors.UnknownMemberIdError(
                    f"member {member_id!r} left group {self.group_id!r}"))
                outcomes.append(None)
                removed = True
            except errors.GroupError as exc:
                outcomes.append(exc)
        if removed:
            self._after_removal()
        return outcomes

    # ---- membership bookkeeping --------------------------------------------------------

    def _remove(self, member: ClassicMember, why: errors.GroupError) -> None:
        for parked in (member.join_answer, member.sync_answer):
            if parked is not None:
                parked(why)
        member.join_answer = member.sync_answer = None
        if member.session_timer is not None:
            member.session_timer.cancel()
        del self.members[member.member_id]
        if member.instance_id is not None and self._static.get(member.instance_id) == member.member_id:
            del self._static[member.instance_id]
        self._awaiting_sync.discard(member.member_id)
        if self.leader == member.member_id:
            self.leader = next(iter(self.members), None)

    def _after_removal(self) -> None:
        if self.state in (STABLE, COMPLETING_REBALANCE):
            self._prepare_rebalance()
        elif self.state == PREPARING_REBALANCE:
            self._try_complete_join()

    def _refresh(self, member: ClassicMember) -> None:
        """Moves the member's session deadline; one timer per member chases it."""
        member.session_deadline = self._timers.clock() + member.session_timeout_ms / 1000
        if member.session_timer is None:
            member.session_timer = self._timers.schedule(
                member.session_timeout_ms / 1000, lambda: self._session_check(member))

    def _session_check(self, member: ClassicMember) -> None:
        with self._lock:
            if self.members.get(member.member_id) is not member:
                return
            now = self._timers.clock()
            waiting = member.join_answer is not None or member.sync_answer is not None
            if member.session_deadline > now or waiting:
                delay = max(member.session_deadline - now, 0.05) if not waiting else \
                    member.session_timeout_ms / 1000
                member.session_timer = self._timers.schedule(
                    delay, lambda: self._session_check(member))
                return
            member.session_timer = None
            self._remove(member, errors.UnknownMemberIdError(
                f"member {member.member_id!r} missed its session timeout"))
            self._after_removal()

    def _expire_pending(self, member_id: str) -> None:
        with self._lock:
            if self._pending.pop(member_id, None) is not None:
                self._try_complete_join()

    # ---- the stored record (kept in __consumer_offsets, read back at open) ------------

    def _store(self) -> None:
        if self._persist is not None:
            self._persist(self.group_id, self.encode())

    def encode(self) -> bytes:
        """Kafka's GroupMetadataValue v3 for this group (see coordinator/offsets.py)."""
        out = [_I16.pack(GROUP_VALUE_VERSION), _string(self.protocol_type or ""),
               _I32.pack(self.generation), _nullable(self.protocol_name),
               _nullable(self.leader), _I64.pack(self.state_since_ms),
               _I32.pack(len(self.members))]
        for m in self.members.values():
            subscription = m.metadata(self.protocol_name) if self.protocol_name else b""
            out += [_string(m.member_id), _nullable(m.instance_id), _string(m.client_id),
                    _string(m.client_host), _I32.pack(m.rebalance_timeout_ms),
                    _I32.pack(m.session_timeout_ms), _I32.pack(len(subscription)),
                    subscription, _I32.pack(len(m.assignment)), m.assignment]
        return b"".join(out)

    def restore(self, data: bytes) -> None:
        """Takes the stored membership back after a restart: a group with members is Stable
        at its generation, and every member gets a full session timeout to show up (as
        Kafka does on loading a group). Raises ValueError for a record it cannot read."""
        reader = _Reader(data)
        version = reader.i16()
        if version not in (1, 2, 3):
            raise ValueError(f"group metadata version {version} is not understood")
        self.protocol_type = reader.string() or None
        self.generation = reader.i32()
        self.protocol_name = reader.nullable()
        self.leader = reader.nullable()
        if version >= 2:
            self.state_since_ms = reader.i64()
        for _ in range(reader.count()):
            member_id = reader.string()
            instance_id = reader.nullable() if version >= 3 else None
            client_id, client_host = reader.string(), reader.string()
            rebalance_timeout, session_timeout = reader.i32(), reader.i32()
            subscription, assignment = reader.blob(), reader.blob()
            member = ClassicMember(member_id, instance_id, client_id, client_host,
                                   session_timeout, rebalance_timeout,
                                   [(self.protocol_name or "", subscription)], assignment)
            self.members[member_id] = member
            if instance_id is not None:
                self._static[instance_id] = member_id
            self._refresh(member)
        if self.members and self.protocol_name is not None:
            self.state = STABLE
            self._subscribed = self._read_subscriptions()
        else:
            self.members.clear()
            self._static.clear()
            self.leader = None
            self.state = EMPTY

    # ---- offsets and deletion ----------------------------------------------------------

    def validate_offset_commit(self, member_id: str, instance_id: str | None,
                               generation: int) -> None:
        """Raises unless this commit may be stored (Kafka's rules for classic groups)."""
        self._check_live()
        if generation < 0 and self.state == EMPTY:
            return  # a consumer outside group membership, or an admin tool
        if generation >= 0 or member_id or instance_id is not None:
            member = self._member_at(member_id, instance_id, generation)
            if self.state == COMPLETING_REBALANCE:
                raise errors.RebalanceInProgressError(
                    f"group {self.group_id!r} is completing a rebalance; retry after SyncGroup")
            self._refresh(member)
        else:
            raise errors.UnknownMemberIdError(
                f"group {self.group_id!r} has members; a commit without a member id and "
                "generation is refused while it does")

    def close(self) -> None:
        """The group is deleted or the coordinator stops: answer every parked request."""
        gone = errors.CoordinatorNotAvailableError(
            f"group {self.group_id!r} is no longer served here")
        for member in self.members.values():
            for parked in (member.join_answer, member.sync_answer):
                if parked is not None:
                    parked(gone)
            member.join_answer = member.sync_answer = None
            if member.session_timer is not None:
                member.session_timer.cancel()
        for timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
        self.members.clear()
        self._round += 1
        self._set_state(DEAD)
