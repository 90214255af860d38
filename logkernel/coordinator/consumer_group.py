"""One consumer-protocol group (KIP-848): members, target assignment, reconciliation.

The coordinator, not a group leader, decides who consumes what. Three epochs drive it:

- the **group epoch** rises whenever the group's inputs change: a member joins or leaves (or
  is fenced, or its session expires), a subscription changes, a subscribed topic appears,
  disappears or gains partitions (checked on every heartbeat through ``TopicView``), or the
  group's server assignor changes;
- the **assignment epoch** is the group epoch the target assignment was computed for. This
  class computes the target at once, under the caller's lock, whenever the group epoch
  rises, so the two are always equal and the group is never seen "Assigning";
- each **member epoch** is the assignment epoch the member has caught up with.

A member moves to its target by heartbeats (``CurrentAssignmentBuilder`` in Kafka):

1. partitions it has that its target lacks are *pending revocation*: it is told its smaller
   assignment and keeps its epoch ("unrevoked_partitions") until a heartbeat's
   ``owned_partitions`` no longer lists them. A member that does not get there within its
   rebalance timeout is fenced (removed from the group);
2. it then advances to the target epoch and receives the partitions of its target that no
   other member holds (as assigned *or* pending revocation). Those still held elsewhere are
   given on a later heartbeat, once released ("unreleased_partitions").

Invariants (``_check`` asserts them; the state-machine test calls it after every step):

1. ``_owners`` maps each partition to the one member that has it assigned or pending
   revocation, and is exactly the union of those sets: no partition has two owners.
2. A member's assigned and pending-revocation partitions are disjoint.
3. Target assignments are disjoint, name only existing partitions of topics the member
   subscribes to, and cover every partition of every subscribed topic.
4. ``_static`` maps each instance id to the member holding it, and back.
5. The assignment epoch equals the group epoch; member epochs never exceed it (a static
   member that left temporarily has epoch -2).

Costs: a heartbeat looks up each subscribed topic in ``TopicView`` (and lists every topic
name when some member subscribes by regular expression), O(subscribed topics + topics x
regexes), plus reconciliation O(the member's partitions). Recomputing the target (when the
group epoch rises) is the assignor's cost, O(partitions + members log members) for a
homogeneous uniform group.

Static members (KIP-345 over KIP-848): a heartbeat with epoch -2 steps the member out but
keeps its partitions reserved for one session timeout; a member joining with the same
instance id then takes them over under its new member id without a new group epoch. A
different member joining with an instance id whose holder has not left is refused.

All public methods must be called with ``lock`` held. Timer callbacks take it themselves
and do nothing unless their timer is still the member's current one (a timer may fire just
after it was cancelled). ``on_member_removed(member_id)`` is called, with the lock held, for
every member that leaves, expires, is fenced or is taken over by a static successor; not
by ``remove_all``. ``TopicView`` is also called from the timer thread (a removal recomputes
the target), so it must be safe to call from any thread.
"""

from __future__ import annotations

import base64
import itertools
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from logkernel import errors
from logkernel.coordinator.server_assignors import ASSIGNORS, MemberSpec, TopicSpec

__all__ = [
    "ConsumerGroup",
    "ConsumerGroupDescription",
    "ConsumerGroupMemberDescription",
    "ConsumerGroupSettings",
    "HeartbeatResult",
    "TopicView",
]

log = logging.getLogger("logkernel.coordinator")

# Member epochs with a meaning of their own in ConsumerGroupHeartbeat.
JOIN_EPOCH = 0
LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2  # a static member leaves for now; its partitions wait for it
# rebalance_timeout_ms and friends use -1 for "unchanged since the last heartbeat".
UNCHANGED = -1
# Topics a regular expression never matches: the coordinator's own state, not data. Kafka's
# classic pattern subscriptions skip them too (exclude.internal.topics).
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})

# Member reconciliation states (Kafka's MemberState).
STABLE = "stable"
UNREVOKED = "unrevoked_partitions"
UNRELEASED = "unreleased_partitions"

PartitionMap = dict[bytes, frozenset[int]]  # topic id -> partitions


@dataclass(frozen=True)
class ConsumerGroupSettings:
    session_timeout_ms: int  # group.consumer.session.timeout.ms (45000)
    heartbeat_interval_ms: int  # group.consumer.heartbeat.interval.ms (5000)
    max_size: int  # group.consumer.max.size
    assignors: tuple[str, ...]  # e.g. ("uniform", "range"); the first is the default


class TopicView(Protocol):
    """The engine's topics, read-only."""

    def lookup(self, name: str) -> tuple[bytes, int] | None: ...  # (topic id, partition count)

    def name_for(self, topic_id: bytes) -> str | None: ...

    def names(self) -> list[str]: ...  # for regex subscriptions


@dataclass
class HeartbeatResult:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    # None: unchanged since the last response to this member (Kafka sends null then).
    assignment: list[tuple[bytes, list[int]]] | None


@dataclass(frozen=True)
class ConsumerGroupMemberDescription:
    member_id: str
    instance_id: str | None
    rack_id: str | None
    member_epoch: int
    client_id: str
    client_host: str
    subscribed_topic_names: list[str]
    subscribed_topic_regex: str | None
    assignment: dict[bytes, list[int]]  # what the member may consume now
    target_assignment: dict[bytes, list[int]]  # where it is going


@dataclass(frozen=True)
class ConsumerGroupDescription:
    group_id: str
    group_epoch: int
    assignment_epoch: int
    assignor_name: str
    state: str
    members: list[ConsumerGroupMemberDescription]


@dataclass(eq=False)
class _Member:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = 0
    subscribed_topic_names: frozenset[str] = frozenset()
    subscribed_topic_regex: str | None = None  # None or "": no regex
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: str = STABLE
    assigned: PartitionMap = field(default_factory=dict)
    pending_revocation: PartitionMap = field(default_factory=dict)
    last_sent: PartitionMap | None = None  # assignment in the last response; None: never
    session_token: int = 0
    session_timer: Any = None
    rebalance_token: int = 0
    rebalance_timer: Any = None


def new_member_id() -> str:
    """A member id as Kafka's ``Uuid.toString`` spells one: 22 characters of URL-safe base64,
    never starting with '-' (Kafka redraws those, as a leading '-' reads like an option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def _to_map(partitions: Iterable[tuple[bytes, Iterable[int]]]) -> dict[bytes, set[int]]:
    result: dict[bytes, set[int]] = {}
    for topic_id, numbers in partitions:
        result.setdefault(bytes(topic_id), set()).update(numbers)
    return result


def _pairs(assignment: PartitionMap) -> Iterable[tuple[bytes, int]]:
    for topic_id, partitions in assignment.items():
        for partition in partitions:
            yield topic_id, partition


def _wire(assignment: PartitionMap) -> list[tuple[bytes, list[int]]]:
    return [(topic_id, sorted(assignment[topic_id])) for topic_id in sorted(assignment)]


class ConsumerGroup:
    """One consumer-protocol group's state machine. See the module docstring."""

    protocol_type = "consumer"

    def __init__(self, group_id: str, settings: ConsumerGroupSettings, topics: TopicView,
                 timers: Any, lock: threading.RLock,
                 on_member_removed: Callable[[str], None] | None = None) -> None:
        if not group_id or not group_id.strip():
            raise errors.InvalidGroupIdError("the group id is empty; give the consumer a group.id")
        unknown = [name for name in settings.assignors if name not in ASSIGNORS]
        if not settings.assignors or unknown:
            raise errors.ConfigError(
                f"group.consumer.assignors={','.join(settings.assignors)!r}: "
                f"each must be one of {', '.join(ASSIGNORS)}")
        self.group_id = group_id
        self._settings = settings
        self._topics = topics
        self._timers = timers
        self._lock = lock
        self._on_member_removed = on_member_removed
        self._members: dict[str, _Member] = {}
        self._static: dict[str, str] = {}  # instance id -> member id
        self._group_epoch = 0
        self._assignment_epoch = 0
        self._assignor_name = settings.assignors[0]
        self._target: dict[str, PartitionMap] = {}  # member id -> target
        self._owners: dict[tuple[bytes, int], str] = {}  # partition -> member holding it
        # Subscribed topic name -> (topic id, partition count), existing topics only.
        self._metadata: dict[str, tuple[bytes, int]] = {}
        self._name_counts: Counter[str] = Counter()  # explicit subscriptions
        self._regex_counts: Counter[str] = Counter()
        self._regex_matches: dict[str, frozenset[str]] = {}
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._tokens = itertools.count(1)
        self._dead = False

    # ---- queries ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """"Empty", "Assigning", "Reconciling", "Stable" or "Dead". O(members)."""
        if self._dead:
            return "Dead"
        if not self._members:
            return "Empty"
        if self._group_epoch > self._assignment_epoch:
            return "Assigning"
        if any(m.state != STABLE or m.member_epoch != self._assignment_epoch
               for m in self._members.values()):
            return "Reconciling"
        return "Stable"

    @property
    def group_epoch(self) -> int:
        return self._group_epoch

    def is_empty(self) -> bool:
        return not self._members

    def subscribed_topics(self) -> set[str]:
        """Topic names some member subscribes to, by name or through a regular expression
        (as resolved at the last heartbeat)."""
        names = set(self._name_counts)
        for regex in self._regex_counts:
            names |= self._regex_matches.get(regex, frozenset())
        return names

    def describe(self) -> ConsumerGroupDescription:
        members = [
            ConsumerGroupMemberDescription(
                member_id=m.member_id, instance_id=m.instance_id, rack_id=m.rack_id,
                member_epoch=m.member_epoch, client_id=m.client_id, client_host=m.client_host,
                subscribed_topic_names=sorted(m.subscribed_topic_names),
                subscribed_topic_regex=m.subscribed_topic_regex or None,
                assignment={t: sorted(p) for t, p in m.assigned.items()},
                target_assignment={t: sorted(p)
                                   for t, p in self._target.get(m.member_id, {}).items()})
            for m in sorted(self._members.values(), key=lambda m: m.member_id)]
        return ConsumerGroupDescription(
            group_id=self.group_id, group_epoch=self._group_epoch,
            assignment_epoch=self._assignment_epoch, assignor_name=self._assignor_name,
            state=self.state, members=members)

    # ---- offsets ------------------------------------------------------------------------

    def validate_offset_commit(self, member_id: str, instance_id: str | None, member_epoch: int,
                               api_version: int) -> None:
        """Whether an OffsetCommit may go ahead. A negative epoch (an admin client, or a
        consumer outside group management) may commit only while the group has no members.
        ``instance_id`` is not checked: the member id and epoch already identify the member
        (Kafka's consumer groups ignore it too)."""
        if member_epoch < 0 and not self._members:
            return
        member = self._members.get(member_id)
        if member is None:
            raise errors.UnknownMemberIdError(
                f"{member_id!r} is not a member of group {self.group_id!r}"
                + (" (a commit without a member id needs an empty group)" if not member_id
                   else "; rejoin the group before committing"))
        if member_epoch != member.member_epoch:
            message = (f"member {member_id!r} committed with epoch {member_epoch}, the group has "
                       f"{member.member_epoch}: heartbeat to learn the current epoch and retry")
            if api_version >= 9:
                raise errors.StaleMemberEpochError(message)
            raise errors.IllegalGenerationError(message)

    def validate_offset_fetch(self, member_id: str | None, member_epoch: int) -> None:
        """Whether an OffsetFetch may go ahead. Without a member id or with a negative epoch
        (admin clients, classic-mode consumers) nothing is checked."""
        if not member_id or member_epoch < 0:
            return
        member = self._members.get(member_id)
        if member is None:
            raise errors.UnknownMemberIdError(
                f"{member_id!r} is not a member of group {self.group_id!r}; rejoin the group")
        if member_epoch != member.member_epoch:
            raise errors.StaleMemberEpochError(
                f"member {member_id!r} fetched with epoch {member_epoch}, the group has "
                f"{member.member_epoch}: heartbeat to learn the current epoch and retry")

    # ---- heartbeat ----------------------------------------------------------------------

    def heartbeat(self, *, version: int, member_id: str, member_epoch: int,
                  instance_id: str | None, rack_id: str | None, rebalance_timeout_ms: int,
                  subscribed_topic_names: list[str] | None, subscribed_topic_regex: str | None,
                  server_assignor: str | None,
                  owned_partitions: list[tuple[bytes, list[int]]] | None,
                  client_id: str, client_host: str) -> HeartbeatResult:
        """One ConsumerGroupHeartbeat (epoch 0 joins, -1 leaves, -2 steps a static member
        out, anything else is a regular heartbeat). Raises the group errors of
        ``logkernel.errors`` (each one Kafka error code) and ValueError for a malformed
        request (INVALID_REQUEST); a refused request changes nothing. Cost: see the module
        docstring."""
        if self._dead:
            raise errors.CoordinatorNotAvailableError(
                f"group {self.group_id!r} was deleted or its coordinator is closing; retry")
        self._validate_request(version, member_id, member_epoch, instance_id, rack_id,
                               rebalance_timeout_ms, subscribed_topic_names,
                               subscribed_topic_regex, server_assignor, owned_partitions)
        if member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            return self._leave(member_id, member_epoch, instance_id)
        owned = None if owned_partitions is None else _to_map(owned_partitions)

        # 1. Find, create, reset or take over the member. Checks first: nothing has changed
        #    if one of them raises.
        if member_epoch == JOIN_EPOCH:
            if not member_id.strip():
                member_id = new_member_id()  # v0 only: v1 clients bring their own
            member, created = self._join(member_id, instance_id)
        else:
            member = self._existing(member_id, member_epoch, instance_id, owned)
            created = False

        # 2. Update it; a new subscription (or member) means a new group epoch.
        bump = created
        if instance_id is not None and instance_id != member.instance_id:
            # _join and _existing made sure no other member holds it.
            if member.instance_id is not None:
                del self._static[member.instance_id]
            member.instance_id = instance_id
            self._static[instance_id] = member.member_id
        if rack_id is not None:
            member.rack_id = rack_id
        if rebalance_timeout_ms != UNCHANGED:
            member.rebalance_timeout_ms = rebalance_timeout_ms
        if server_assignor is not None:
            member.server_assignor = server_assignor
        member.client_id = client_id
        member.client_host = client_host
        names = (member.subscribed_topic_names if subscribed_topic_names is None
                 else frozenset(subscribed_topic_names))
        regex = (member.subscribed_topic_regex if subscribed_topic_regex is None
                 else subscribed_topic_regex or None)
        if names != member.subscribed_topic_names or regex != member.subscribed_topic_regex:
            self._unsubscribe(member)
            member.subscribed_topic_names = names
            member.subscribed_topic_regex = regex
            self._subscribe(member)
            bump = True

        # 3. The topics may have changed under the group; then so must the target.
        bump |= self._refresh_metadata()
        assignor = self._preferred_assignor()
        if assignor != self._assignor_name:
            self._assignor_name = assignor
            bump = True
        self._prune(member)
        if bump:
            self._new_target()

        # 4. Move the member towards its target; then answer. The assignment goes out when
        #    it changed since the last response, on a full request (a join, or a client
        #    recovering from an error), and when the member comes back with its previous
        #    epoch: the last response evidently did not reach it.
        missed_response = member_epoch != JOIN_EPOCH and member_epoch != member.member_epoch
        self._reconcile(member, owned)
        self._schedule_session(member)
        full_request = member_epoch == JOIN_EPOCH or (
            rebalance_timeout_ms != UNCHANGED and owned is not None
            and (subscribed_topic_names is not None or subscribed_topic_regex is not None))
        assignment = None
        if full_request or missed_response or member.last_sent != member.assigned:
            assignment = _wire(member.assigned)
            member.last_sent = member.assigned
        return HeartbeatResult(member.member_id, member.member_epoch,
                               self._settings.heartbeat_interval_ms, assignment)

    def _validate_request(self, version: int, member_id: str, member_epoch: int,
                          instance_id: str | None, rack_id: str | None,
                          rebalance_timeout_ms: int, subscribed_topic_names: list[str] | None,
                          subscribed_topic_regex: str | None, server_assignor: str | None,
                          owned_partitions: list[tuple[bytes, list[int]]] | None) -> None:
        if not member_id.strip() and (version >= 1 or member_epoch != JOIN_EPOCH):
            raise ValueError("MemberId can't be empty: ConsumerGroupHeartbeat v1 clients "
                             "generate their own (KIP-1082), and only a v0 join may omit it")
        if instance_id is not None and not instance_id.strip():
            raise ValueError("InstanceId can't be empty: send null for a dynamic member")
        if rack_id is not None and not rack_id.strip():
            raise ValueError("RackId can't be empty: send null when the rack is unknown")
        if member_epoch < STATIC_LEAVE_EPOCH:
            raise ValueError(f"MemberEpoch {member_epoch} is invalid: use 0 to join, -1 to "
                             "leave, -2 for a static member's temporary leave, or the epoch "
                             "of the last response")
        if member_epoch == STATIC_LEAVE_EPOCH and instance_id is None:
            raise ValueError("InstanceId can't be null when leaving with epoch -2: only "
                             "static members leave temporarily")
        if rebalance_timeout_ms < UNCHANGED:
            raise ValueError(f"RebalanceTimeoutMs {rebalance_timeout_ms} is negative; send "
                             "-1 when unchanged")
        if member_epoch == JOIN_EPOCH:
            if rebalance_timeout_ms == UNCHANGED:
                raise ValueError("RebalanceTimeoutMs must be provided in the first request")
            if owned_partitions is None or any(parts for _, parts in owned_partitions):
                raise ValueError("TopicPartitions must be empty when (re-)joining")
            if subscribed_topic_names is None and subscribed_topic_regex is None:
                raise ValueError("Either SubscribedTopicNames or SubscribedTopicRegex must be "
                                 "non-null when (re-)joining")
        if subscribed_topic_regex:
            self._pattern(subscribed_topic_regex)
        if server_assignor is not None and server_assignor not in self._settings.assignors:
            raise errors.UnsupportedAssignorError(
                f"ServerAssignor {server_assignor!r} is not supported; this broker offers "
                f"{', '.join(self._settings.assignors)} (group.remote.assignor)")

    def _pattern(self, regex: str) -> re.Pattern[str]:
        pattern = self._patterns.get(regex)
        if pattern is None:
            try:
                pattern = re.compile(regex)
            except re.error as exc:
                raise ValueError(
                    f"SubscribedTopicRegex {regex!r} is not a valid regular expression: "
                    f"{exc}") from exc
            self._patterns[regex] = pattern
        return pattern

    def _join(self, member_id: str, instance_id: str | None) -> tuple[_Member, bool]:
        """The member an epoch-0 heartbeat speaks for, and whether it is new. A known member
        is reset (it has dropped its partitions to rejoin); a static member that left with
        -2 is taken over by the joining member id, keeping its partitions."""
        known = self._members.get(member_id)
        holder_id = self._static.get(instance_id) if instance_id is not None else None
        if holder_id is not None:
            holder = self._members[holder_id]
            if holder.member_epoch == STATIC_LEAVE_EPOCH:
                if known is not None and known is not holder:
                    raise ValueError(f"member id {member_id!r} already belongs to another "
                                     f"member than instance {instance_id!r}; generate a new "
                                     "member id")
                return self._take_over(holder, member_id), False
            if holder_id != member_id:
                raise errors.UnreleasedInstanceIdError(
                    f"instance id {instance_id!r} is held by member {holder_id!r}, which has "
                    "not left: stop that consumer (or wait for its session timeout) first")
        if known is not None:
            if known.instance_id is not None and instance_id is not None \
                    and known.instance_id != instance_id:
                raise ValueError(f"member {member_id!r} holds instance id "
                                 f"{known.instance_id!r}, not {instance_id!r}")
            self._reset(known)
            return known, False
        if len(self._members) >= self._settings.max_size:
            raise errors.GroupMaxSizeReachedError(
                f"group {self.group_id!r} has group.consumer.max.size="
                f"{self._settings.max_size} members already")
        member = _Member(member_id)
        self._members[member_id] = member
        return member, True

    def _existing(self, member_id: str, member_epoch: int, instance_id: str | None,
                  owned: Mapping[bytes, set[int]] | None) -> _Member:
        """The member a regular heartbeat (epoch > 0) speaks for, after checking its epoch."""
        if instance_id is not None:
            holder_id = self._static.get(instance_id)
            if holder_id is None:
                raise errors.UnknownMemberIdError(
                    f"instance id {instance_id!r} is unknown to group {self.group_id!r}: "
                    "rejoin with member epoch 0")
            if holder_id != member_id:
                raise errors.FencedInstanceIdError(
                    f"instance id {instance_id!r} now belongs to member {holder_id!r}; "
                    f"{member_id!r} was replaced: stop this consumer")
        member = self._members.get(member_id)
        if member is None:
            raise errors.UnknownMemberIdError(
                f"{member_id!r} is not a member of group {self.group_id!r} (it left, expired "
                "or was fenced): rejoin with member epoch 0")
        if member_epoch != member.member_epoch and not (
                member_epoch == member.previous_member_epoch
                and member_epoch < member.member_epoch
                and owned is not None and _within(owned, member.assigned)):
            # The previous epoch is forgiven when the member owns no more than it has now:
            # the response that moved it on was lost.
            raise errors.FencedMemberEpochError(
                f"member {member_id!r} sent epoch {member_epoch}, the group has "
                f"{member.member_epoch}: abandon all partitions and rejoin with epoch 0")
        return member

    def _leave(self, member_id: str, member_epoch: int,
               instance_id: str | None) -> HeartbeatResult:
        if instance_id is not None:
            holder_id = self._static.get(instance_id)
            if holder_id is None:
                raise errors.UnknownMemberIdError(
                    f"instance id {instance_id!r} is unknown to group {self.group_id!r}")
            if holder_id != member_id:
                raise errors.FencedInstanceIdError(
                    f"instance id {instance_id!r} belongs to member {holder_id!r}, not "
                    f"{member_id!r}")
        member = self._members.get(member_id)
        if member is None:
            raise errors.UnknownMemberIdError(
                f"{member_id!r} is not a member of group {self.group_id!r}; nothing to leave")
        if member_epoch == LEAVE_EPOCH:
            log.info("group %s: member %s left", self.group_id, member_id)
            self._remove(member)
        else:
            # A static member steps out (a rolling restart): its partitions stay reserved for
            # the instance for one session timeout from now; those it was revoking are free.
            log.info("group %s: static member %s (instance %s) left for now", self.group_id,
                     member_id, member.instance_id)
            self._update_partitions(member, member.assigned, {})
            member.previous_member_epoch = member.member_epoch
            member.member_epoch = STATIC_LEAVE_EPOCH
            member.state = STABLE  # nothing left to revoke; a take-over reconciles afresh
            self._cancel_rebalance_timer(member)
            self._schedule_session(member)
        return HeartbeatResult(member_id, member_epoch, self._settings.heartbeat_interval_ms,
                               None)

    # ---- membership changes -------------------------------------------------------------

    def _reset(self, member: _Member) -> None:
        """A known member rejoins (epoch 0): it has given up its partitions."""
        self._update_partitions(member, {}, {})
        self._cancel_rebalance_timer(member)
        member.member_epoch = member.previous_member_epoch = 0
        member.state = STABLE
        member.last_sent = None

    def _take_over(self, holder: _Member, member_id: str) -> _Member:
        """A static member rejoins under a new member id: the new member inherits the old
        one's subscription, partitions and target, so nobody else rebalances."""
        log.info("group %s: member %s takes over instance %s from %s", self.group_id,
                 member_id, holder.instance_id, holder.member_id)
        self._cancel_timers(holder)
        for key, owner in self._owners.items():
            if owner == holder.member_id:
                self._owners[key] = member_id
        del self._members[holder.member_id]
        member = _Member(
            member_id, instance_id=holder.instance_id, rack_id=holder.rack_id,
            rebalance_timeout_ms=holder.rebalance_timeout_ms,
            subscribed_topic_names=holder.subscribed_topic_names,
            subscribed_topic_regex=holder.subscribed_topic_regex,
            server_assignor=holder.server_assignor, assigned=holder.assigned)
        self._members[member_id] = member
        assert holder.instance_id is not None
        self._static[holder.instance_id] = member_id
        self._target[member_id] = self._target.pop(holder.member_id, {})
        if self._on_member_removed is not None and holder.member_id != member_id:
            self._on_member_removed(holder.member_id)
        return member

    def _remove(self, member: _Member) -> None:
        """Take a member out (left, expired, fenced): its partitions are free, the group
        epoch rises and the target is recomputed without it."""
        self._cancel_timers(member)
        self._update_partitions(member, {}, {})
        self._unsubscribe(member)
        del self._members[member.member_id]
        if member.instance_id is not None and self._static.get(member.instance_id) \
                == member.member_id:
            del self._static[member.instance_id]
        self._target.pop(member.member_id, None)
        self._refresh_metadata()
        self._assignor_name = self._preferred_assignor()
        self._new_target()
        if self._on_member_removed is not None:
            self._on_member_removed(member.member_id)

    def remove_all(self) -> None:
        """DeleteGroups or shutdown: drop every member and cancel every timer. The group is
        "Dead" after; ``on_member_removed`` is not called (the whole group goes)."""
        for member in self._members.values():
            self._cancel_timers(member)
        self._members.clear()
        self._static.clear()
        self._target.clear()
        self._owners.clear()
        self._name_counts.clear()
        self._regex_counts.clear()
        self._dead = True

    # ---- subscriptions and the target assignment ----------------------------------------

    def _subscribe(self, member: _Member) -> None:
        self._name_counts.update(member.subscribed_topic_names)
        if member.subscribed_topic_regex:
            self._regex_counts[member.subscribed_topic_regex] += 1

    def _unsubscribe(self, member: _Member) -> None:
        self._name_counts.subtract(member.subscribed_topic_names)
        for name in member.subscribed_topic_names:
            if self._name_counts[name] <= 0:
                del self._name_counts[name]
        regex = member.subscribed_topic_regex
        if regex:
            self._regex_counts[regex] -= 1
            if self._regex_counts[regex] <= 0:
                del self._regex_counts[regex]
                self._regex_matches.pop(regex, None)

    def _refresh_metadata(self) -> bool:
        """Look the subscribed topics up again; True if anything changed (a topic appeared,
        went, was recreated or gained partitions). Partitions of topics that are gone leave
        every member at once: nobody can consume them and nobody else can be given them."""
        if self._regex_counts:
            names = [n for n in self._topics.names() if n not in INTERNAL_TOPICS]
            for regex in self._regex_counts:
                pattern = self._pattern(regex)
                self._regex_matches[regex] = frozenset(n for n in names if pattern.fullmatch(n))
        metadata: dict[str, tuple[bytes, int]] = {}
        for name in self.subscribed_topics():
            found = self._topics.lookup(name)
            if found is not None:
                metadata[name] = (bytes(found[0]), found[1])
        if metadata == self._metadata:
            return False
        now = dict(metadata.values())
        shrunk = any(now.get(topic_id, 0) < count for topic_id, count in self._metadata.values())
        self._metadata = metadata
        if shrunk:  # a topic went (or was recreated under a new id)
            for member in self._members.values():
                self._prune(member)
        return True

    def _prune(self, member: _Member) -> None:
        """Drop from the member's partitions those that no longer exist in the engine."""
        known = {topic_id: count for topic_id, count in self._metadata.values()}
        cache: dict[bytes, int] = {}

        def count_of(topic_id: bytes) -> int:
            if topic_id in known:
                return known[topic_id]
            if topic_id not in cache:
                name = self._topics.name_for(topic_id)
                found = self._topics.lookup(name) if name is not None else None
                cache[topic_id] = found[1] if found is not None and found[0] == topic_id else 0
            return cache[topic_id]

        def alive(assignment: PartitionMap) -> PartitionMap:
            result = {}
            for topic_id, partitions in assignment.items():
                count = count_of(topic_id)
                kept = frozenset(p for p in partitions if p < count)
                if kept:
                    result[topic_id] = kept
            return result

        assigned, pending = alive(member.assigned), alive(member.pending_revocation)
        if assigned != member.assigned or pending != member.pending_revocation:
            self._update_partitions(member, assigned, pending)

    def _preferred_assignor(self) -> str:
        """The server assignor most members ask for (ties: the earlier in the broker's
        list), else the broker's default, the first of its list."""
        votes = Counter(m.server_assignor for m in self._members.values()
                        if m.server_assignor is not None)
        if not votes:
            return self._settings.assignors[0]
        return max(self._settings.assignors,
                   key=lambda n: (votes[n], -self._settings.assignors.index(n)))

    def _new_target(self) -> None:
        """A new group epoch and its target assignment (the previous target is the
        assignor's "current", what its stickiness keeps)."""
        self._group_epoch += 1
        topics = {name: TopicSpec(topic_id, count)
                  for name, (topic_id, count) in self._metadata.items()}
        name_of = {spec.topic_id: name for name, spec in topics.items()}
        specs: dict[str, MemberSpec] = {}
        current: dict[str, dict[str, frozenset[int]]] = {}
        for member_id, member in self._members.items():
            subscribed = set(member.subscribed_topic_names)
            if member.subscribed_topic_regex:
                subscribed |= self._regex_matches.get(member.subscribed_topic_regex, frozenset())
            specs[member_id] = MemberSpec(frozenset(subscribed), member.rack_id,
                                          member.instance_id)
            current[member_id] = {name_of[t]: p for t, p in self._target.get(member_id, {}).items()
                                  if t in name_of}
        result = ASSIGNORS[self._assignor_name].assign(specs, topics, current)
        self._target = {
            member_id: {topics[name].topic_id: frozenset(p)
                        for name, p in result.get(member_id, {}).items() if p}
            for member_id in self._members}
        self._assignment_epoch = self._group_epoch
        log.debug("group %s: epoch %d, target computed by %s", self.group_id,
                  self._group_epoch, self._assignor_name)

    # ---- reconciliation -----------------------------------------------------------------

    def _reconcile(self, member: _Member, owned: Mapping[bytes, set[int]] | None) -> None:
        """One step of the member towards its target (Kafka's CurrentAssignmentBuilder)."""
        epoch = self._assignment_epoch
        if member.state == STABLE and member.member_epoch == epoch:
            return
        if member.state == UNREVOKED:
            if _owns_any(owned, member.pending_revocation):
                return  # still revoking
            self._next_assignment(member, member.member_epoch + 1, owned)
        else:
            self._next_assignment(member, member.member_epoch, owned)

    def _next_assignment(self, member: _Member, next_epoch: int,
                         owned: Mapping[bytes, set[int]] | None) -> None:
        target = self._target.get(member.member_id, {})
        assigned: PartitionMap = {}
        revoking: PartitionMap = {}
        adding: dict[bytes, set[int]] = {}
        unreleased = False
        for topic_id in set(target) | set(member.assigned):
            wanted = target.get(topic_id, frozenset())
            have = member.assigned.get(topic_id, frozenset())
            if have & wanted:
                assigned[topic_id] = have & wanted
            if have - wanted:
                revoking[topic_id] = have - wanted
            for partition in wanted - have:
                owner = self._owners.get((topic_id, partition))
                if owner is None or owner == member.member_id:
                    adding.setdefault(topic_id, set()).add(partition)
                else:
                    unreleased = True
        if revoking and _owns_any(owned, revoking):
            # Give up first: the member keeps its epoch until it confirms the revocation.
            state, epoch = UNREVOKED, next_epoch
        else:
            revoking = {}
            for topic_id, partitions in adding.items():
                assigned[topic_id] = assigned.get(topic_id, frozenset()) | partitions
            state = UNRELEASED if unreleased else STABLE
            epoch = self._assignment_epoch
        if (epoch, state, assigned, revoking) == (member.member_epoch, member.state,
                                                  member.assigned, member.pending_revocation):
            return
        self._update_partitions(member, assigned, revoking)
        member.previous_member_epoch = member.member_epoch
        member.member_epoch = epoch
        member.state = state
        if state == UNREVOKED:
            self._schedule_rebalance_timer(member)
        else:
            self._cancel_rebalance_timer(member)

    def _update_partitions(self, member: _Member, assigned: PartitionMap,
                           pending_revocation: PartitionMap) -> None:
        """Replace the member's partitions, keeping ``_owners`` in step (invariant 1)."""
        for key in itertools.chain(_pairs(member.assigned), _pairs(member.pending_revocation)):
            if self._owners.get(key) == member.member_id:
                del self._owners[key]
        for key in itertools.chain(_pairs(assigned), _pairs(pending_revocation)):
            owner = self._owners.setdefault(key, member.member_id)
            assert owner == member.member_id, f"partition {key} given to two members"
        member.assigned = assigned
        member.pending_revocation = pending_revocation

    # ---- timers -------------------------------------------------------------------------

    def _schedule_session(self, member: _Member) -> None:
        if member.session_timer is not None:
            member.session_timer.cancel()
        token = member.session_token = next(self._tokens)
        member_id = member.member_id
        member.session_timer = self._timers.schedule(
            self._settings.session_timeout_ms / 1000,
            lambda: self._on_session_expired(member_id, token))

    def _on_session_expired(self, member_id: str, token: int) -> None:
        with self._lock:
            member = self._members.get(member_id)
            if self._dead or member is None or member.session_token != token:
                return
            log.info("group %s: member %s's session expired", self.group_id, member_id)
            self._remove(member)

    def _schedule_rebalance_timer(self, member: _Member) -> None:
        self._cancel_rebalance_timer(member)
        token = member.rebalance_token = next(self._tokens)
        member_id, epoch = member.member_id, member.member_epoch
        member.rebalance_timer = self._timers.schedule(
            member.rebalance_timeout_ms / 1000,
            lambda: self._on_rebalance_timeout(member_id, epoch, token))

    def _cancel_rebalance_timer(self, member: _Member) -> None:
        if member.rebalance_timer is not None:
            member.rebalance_timer.cancel()
            member.rebalance_timer = None
        member.rebalance_token = 0

    def _on_rebalance_timeout(self, member_id: str, epoch: int, token: int) -> None:
        with self._lock:
            member = self._members.get(member_id)
            if (self._dead or member is None or member.rebalance_token != token
                    or member.member_epoch != epoch or member.state != UNREVOKED):
                return
            log.info("group %s: member %s fenced: it did not revoke its partitions within "
                     "%d ms", self.group_id, member_id, member.rebalance_timeout_ms)
            self._remove(member)

    def _cancel_timers(self, member: _Member) -> None:
        if member.session_timer is not None:
            member.session_timer.cancel()
            member.session_timer = None
        member.session_token = 0
        self._cancel_rebalance_timer(member)

    # ---- self-check ---------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the invariants of the module docstring. O(members x partitions)."""
        owners: dict[tuple[bytes, int], str] = {}
        for member_id, member in self._members.items():
            assert member.member_id == member_id
            for topic_id, partitions in member.assigned.items():
                assert partitions, "empty topic entries are dropped"
                assert not partitions & member.pending_revocation.get(topic_id, frozenset())
            for key in itertools.chain(_pairs(member.assigned),
                                       _pairs(member.pending_revocation)):
                assert key not in owners, f"{key} held by {owners.get(key)} and {member_id}"
                owners[key] = member_id
            assert member.member_epoch <= self._assignment_epoch
            assert member.member_epoch >= 0 or member.member_epoch == STATIC_LEAVE_EPOCH
            if member.state != UNREVOKED:  # (pruning a deleted topic may empty it there)
                assert not member.pending_revocation
            if member.instance_id is not None:
                assert self._static.get(member.instance_id) == member_id
        assert owners == self._owners
        assert all(self._members[m].instance_id == i for i, m in self._static.items())
        if self._dead:
            return
        assert self._assignment_epoch == self._group_epoch
        assert set(self._target) == set(self._members)
        targeted: dict[tuple[bytes, int], str] = {}
        counts = {topic_id: count for topic_id, count in self._metadata.values()}
        name_of = {topic_id: name for name, (topic_id, _) in self._metadata.items()}
        for member_id, target in self._target.items():
            member = self._members[member_id]
            subscribed = set(member.subscribed_topic_names)
            if member.subscribed_topic_regex:
                subscribed |= self._regex_matches.get(member.subscribed_topic_regex, frozenset())
            for key in _pairs(target):
                assert key not in targeted, f"{key} targeted twice"
                targeted[key] = member_id
                assert key[0] in counts and key[1] < counts[key[0]]
                assert name_of[key[0]] in subscribed
        subscribed_by_someone = self.subscribed_topics()
        for name, (topic_id, count) in self._metadata.items():
            if self._members and name in subscribed_by_someone:
                assert all((topic_id, p) in targeted for p in range(count)), name


def _owns_any(owned: Mapping[bytes, set[int]] | None, partitions: PartitionMap) -> bool:
    """Whether the member's reported partitions include any of ``partitions``. Not knowing
    (``owned`` null: unchanged since the last heartbeat) counts as yes, as in Kafka."""
    if owned is None:
        return True
    return any(owned.get(topic_id, set()) & numbers for topic_id, numbers in partitions.items())


def _within(owned: Mapping[bytes, set[int]], assigned: PartitionMap) -> bool:
    return all(numbers <= assigned.get(topic_id, frozenset())
               for topic_id, numbers in owned.items())
