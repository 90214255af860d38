"""An embedded consumer's membership of a classic consumer group.

The embedded consumer joins through the engine's group coordinator exactly as a remote
client does over the wire (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), with protocol type
"consumer" and Kafka's subscription and assignment bytes, so it can share a group with
kafka-python or librdkafka consumers: whichever member leads runs its assignor for all.

Work is split the way Kafka's Java consumer splits it:

- the *application thread* (inside ``poll``) joins, syncs, runs the assignor when leader,
  and calls the rebalance listener (revoked / assigned / lost), so listener code runs on the
  thread that polls, between polls;
- a *heartbeat thread* keeps the session alive, notices a rebalance (or being fenced) and
  flags it for the next poll, and leaves the group when ``max_poll_interval_ms`` passes
  without a poll, so a stuck application does not hold partitions forever.

Eager assignors ("range", "roundrobin") revoke everything before rejoining; the
"cooperative-sticky" assignor keeps its partitions through the rebalance, gives up only the
ones that move, and rejoins once more so they reach their new owner.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from logkernel import errors
from logkernel.coordinator.assignors import Assignment as EncodedAssignment
from logkernel.coordinator.assignors import (
    Member,
    Subscription,
    assignor_for,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)

if TYPE_CHECKING:
    from logkernel.engine import Engine

log = logging.getLogger("logkernel.consumer")

PROTOCOL_TYPE = "consumer"
# Why a member was fenced: removed from the group, a newer generation exists, or it
# stopped polling. Only the generation case keeps the member id for the rejoin.
UNKNOWN, GENERATION, STALLED = "unknown member", "stale generation", "stalled"
TopicPartitionKey = tuple[str, int]


class RebalanceListener(Protocol):
    """Called on the polling thread around rebalances (Kafka's ConsumerRebalanceListener).
    Define any of the three; a missing one is skipped (lost falls back to revoked)."""

    def on_partitions_revoked(self, revoked: set[TopicPartitionKey]) -> None: ...
    def on_partitions_assigned(self, assigned: set[TopicPartitionKey]) -> None: ...
    def on_partitions_lost(self, lost: set[TopicPartitionKey]) -> None: ...


class _Waiter:
    """A one-shot answer from the coordinator (it calls back, maybe from another thread)."""

    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: Any = None

    def __call__(self, result: Any) -> None:
        self.result = result
        self.event.set()


class GroupMember:
    """See the module docstring. Used by one Consumer; not thread-safe beyond its own
    heartbeat thread."""

    def __init__(self, engine: Engine, group_id: str, *, client_id: str,
                 strategies: Sequence[str], session_timeout_ms: int,
                 heartbeat_interval_ms: int, max_poll_interval_ms: int,
                 group_instance_id: str | None, wake: Callable[[], None]) -> None:
        self._engine = engine
        self._coordinator = engine.groups
        self.group_id = group_id
        self.client_id = client_id
        self.assignors = [assignor_for(name) for name in strategies]
        if not self.assignors:
            raise errors.ConfigError("partition_assignment_strategy needs at least one assignor")
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval = heartbeat_interval_ms / 1000
        self.max_poll_interval = max_poll_interval_ms / 1000
        self.instance_id = group_instance_id
        self._wake = wake
        self.member_id = ""
        self.generation = -1
        self.protocol: str | None = None
        self.leader = False
        self.owned: set[TopicPartitionKey] = set()
        self._subscription: tuple[str, ...] = ()
        self._partition_counts: dict[str, int] = {}
        self._join: _Waiter | None = None
        self._sync: _Waiter | None = None
        self._rejoin = True
        # Why the group fenced us (partitions lost, rejoin at the next poll), or None.
        self._fenced: str | None = None
        self._last_poll = time.monotonic()
        self._in_poll = False
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._heartbeats = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                            name=f"logkernel-heartbeat {group_id}")
        self._heartbeats.start()

    # ---- the application thread ----------------------------------------------------------

    @property
    def rebalance_protocol(self) -> str:
        if self.protocol is not None:
            return assignor_for(self.protocol).rebalance_protocol
        # Before the first join: cooperative only if every offered assignor is.
        protocols = {a.rebalance_protocol for a in self.assignors}
        return "COOPERATIVE" if protocols == {"COOPERATIVE"} else "EAGER"

    def subscribe(self, topics: tuple[str, ...]) -> None:
        if topics != self._subscription:
            self._subscription = topics
            self._rejoin = True

    def needs_rejoin(self) -> bool:
        # The leader also reassigns when subscribed topics gain partitions.
        return self._rejoin or self._fenced is not None or (
            self.leader and self._partition_counts != self._counts())

    def _counts(self) -> dict[str, int]:
        counts = {}
        for name in self._subscription:
            found = self._engine._topics.get(name)
            if found is not None:
                counts[name] = len(found.partitions)
        return counts

    def poll_started(self) -> None:
        """The application is inside poll: it is alive however long poll waits."""
        self._last_poll = time.monotonic()
        self._in_poll = True

    def poll_finished(self) -> None:
        self._last_poll = time.monotonic()
        self._in_poll = False

    def poll(self, deadline: float, listener: Any, before_revoke: Callable[[set[TopicPartitionKey]], None]
             ) -> tuple[set[TopicPartitionKey], set[TopicPartitionKey]] | None:
        """Advances membership until the member is stable or ``deadline`` passes. Returns
        (revoked, assigned) partitions when the assignment changed, else None. Listener
        callbacks are called here; ``before_revoke`` lets the consumer commit first."""
        if not self.needs_rejoin() and self._join is None and self._sync is None:
            return None
        revoked: set[TopicPartitionKey] = set()
        while True:
            if self._fenced is not None:
                revoked |= self._lose(listener)
            if self._join is None and self._sync is None:
                if self.rebalance_protocol == "EAGER" and self.owned:
                    before_revoke(set(self.owned))
                    gone, self.owned = set(self.owned), set()
                    _call(listener, "on_partitions_revoked", gone)
                    revoked |= gone
                try:
                    self._start_join()
                except errors.GroupError as exc:
                    self._on_error(exc)
                    if time.monotonic() >= deadline:
                        return (revoked, set()) if revoked else None
                    continue
            if self._join is not None:
                if not self._join.event.wait(max(deadline - time.monotonic(), 0)):
                    return (revoked, set()) if revoked else None
                result, self._join = self._join.result, None
                if isinstance(result, BaseException):
                    self._on_error(result)
                    continue
                try:
                    self._start_sync(result)
                except errors.GroupError as exc:
                    self._on_error(exc)
                    continue
            assert self._sync is not None
            if not self._sync.event.wait(max(deadline - time.monotonic(), 0)):
                return (revoked, set()) if revoked else None
            result, self._sync = self._sync.result, None
            if isinstance(result, BaseException):
                self._on_error(result)
                continue
            new = set(decode_assignment(result.assignment).partitions)
            gone = self.owned - new
            if gone:  # cooperative: give these up, then rejoin so they can move
                before_revoke(gone)
                _call(listener, "on_partitions_revoked", gone)
                revoked |= gone
                self._rejoin = True
            added = new - self.owned
            self.owned = new
            if not gone:
                self._rejoin = False
            _call(listener, "on_partitions_assigned", added)
            return revoked, added

    def _lose(self, listener: Any) -> set[TopicPartitionKey]:
        """The group fenced this member: its partitions are someone else's now, so they go
        without a commit (on_partitions_lost), and the member rejoins."""
        why, self._fenced = self._fenced, None
        with self._lock:
            if why != GENERATION:  # removed from the group: join as a new member
                self.member_id = ""
            self.generation = -1
        self._rejoin = True
        lost, self.owned = set(self.owned), set()
        if lost:
            _call(listener, "on_partitions_lost", lost, fallback="on_partitions_revoked")
        return lost

    def _start_join(self) -> None:
        owned = sorted(self.owned)
        metadata = [(a.name, encode_subscription(Subscription(
            list(self._subscription), None, owned, self.generation))) for a in self.assignors]
        waiter = _Waiter()
        self._rejoin = False
        for _ in range(2):  # a first join is told its member id and comes straight back
            try:
                self._coordinator.join_group(
                    self.group_id, member_id=self.member_id, instance_id=self.instance_id,
                    client_id=self.client_id, client_host="embedded",
                    session_timeout_ms=self.session_timeout_ms,
                    rebalance_timeout_ms=int(self.max_poll_interval * 1000),
                    protocol_type=PROTOCOL_TYPE, protocols=metadata,
                    require_known_member_id=True, answer=waiter)
                break
            except errors.MemberIdRequiredError as exc:
                with self._lock:
                    self.member_id = exc.member_id
        self._join = waiter

    def _start_sync(self, joined: Any) -> None:
        with self._lock:
            self.member_id = joined.member_id
            self.generation = joined.generation_id
        self.protocol = joined.protocol_name
        self.leader = joined.leader == joined.member_id and bool(joined.members)
        assignments: dict[str, bytes] = {}
        if self.leader:
            assignments = self._assign(joined.protocol_name, joined.members)
        waiter = _Waiter()
        self._coordinator.sync_group(
            self.group_id, member_id=self.member_id, instance_id=self.instance_id,
            generation=self.generation, protocol_type=PROTOCOL_TYPE,
            protocol_name=self.protocol, assignments=assignments, answer=waiter)
        self._sync = waiter

    def _assign(self, protocol: str, members: list[tuple[str, str | None, bytes]]
                ) -> dict[str, bytes]:
        assignor = assignor_for(protocol)
        subscriptions = {}
        topics: set[str] = set()
        for member_id, instance_id, metadata in members:
            try:
                subscription = decode_subscription(metadata)
            except ValueError as exc:
                log.warning("group %r: member %r sent unreadable subscription metadata (%s); "
                            "it gets no partitions", self.group_id, member_id, exc)
                subscription = Subscription([])
            subscriptions[member_id] = Member(member_id, subscription, instance_id)
            topics.update(subscription.topics)
        counts = {}
        for name in topics:
            found = self._engine._topics.get(name)
            if found is not None:
                counts[name] = len(found.partitions)
        self._partition_counts = {t: counts[t] for t in self._subscription if t in counts}
        plan = assignor.assign(subscriptions, counts)
        return {member_id: encode_assignment(EncodedAssignment(sorted(partitions)))
                for member_id, partitions in plan.items()}

    def _on_error(self, exc: BaseException) -> None:
        """A join or sync was refused: decide how to rejoin (or give up, for the fatal)."""
        if isinstance(exc, errors.FencedInstanceIdError):
            raise exc  # another process took our group.instance.id: fatal, as in Kafka
        if isinstance(exc, errors.UnknownMemberIdError):
            self._fenced = UNKNOWN
        elif isinstance(exc, errors.IllegalGenerationError):
            self._fenced = GENERATION
        elif isinstance(exc, errors.CoordinatorNotAvailableError) and self._engine.closed:
            raise errors.ClosedError(f"the engine for {self._engine.path} is closed") from exc
        elif not isinstance(exc, errors.RebalanceInProgressError | errors.CoordinatorNotAvailableError):
            raise exc
        self._rejoin = True

    def commit_identity(self) -> tuple[str, str | None, int]:
        with self._lock:
            return self.member_id, self.instance_id, self.generation

    def fenced(self, exc: errors.GroupError) -> None:
        """A commit was refused: the member rejoins at the next poll."""
        if isinstance(exc, errors.UnknownMemberIdError):
            self._fenced = UNKNOWN
        elif isinstance(exc, errors.IllegalGenerationError):
            self._fenced = GENERATION
        self._rejoin = True

    def leave(self, listener: Any, before_revoke: Callable[[set[TopicPartitionKey]], None]) -> None:
        """Gives up the partitions (on_partitions_revoked, after ``before_revoke``; lost if
        the group had fenced us), stops heartbeating and leaves the group. A static member
        does not send LeaveGroup: it is expected back, and its session timeout reassigns
        its partitions if it is not."""
        if self._fenced is not None:
            self._lose(listener)
        elif self.owned:
            gone, self.owned = set(self.owned), set()
            try:
                before_revoke(gone)
            finally:
                _call(listener, "on_partitions_revoked", gone)
        self._closed.set()
        self._heartbeats.join(timeout=5)
        with self._lock:
            member_id = self.member_id
        if member_id and self.instance_id is None and not self._engine.closed:
            with contextlib.suppress(errors.LogkernelError):  # the session timeout removes us
                self._coordinator.leave_group(self.group_id, [(member_id, None)])

    def stop(self) -> None:
        """Stops heartbeating without a word to the group (the engine is closed)."""
        self._closed.set()

    # ---- the heartbeat thread ------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(self.heartbeat_interval):
            with self._lock:
                member_id, generation = self.member_id, self.generation
            if self._engine.closed:
                return
            if not member_id or generation < 0 or self._join is not None:
                continue
            if not self._in_poll and time.monotonic() - self._last_poll > self.max_poll_interval:
                self._stalled(member_id)
                continue
            try:
                self._coordinator.heartbeat(self.group_id, member_id=member_id,
                                            instance_id=self.instance_id, generation=generation)
            except errors.LogkernelError as exc:
                with self._lock:
                    if (self.member_id, self.generation) != (member_id, generation):
                        continue  # an answer about a generation we have left since
                if isinstance(exc, errors.RebalanceInProgressError):
                    self._rejoin = True
                elif isinstance(exc, errors.UnknownMemberIdError | errors.FencedInstanceIdError):
                    self._fenced = UNKNOWN
                elif isinstance(exc, errors.IllegalGenerationError):
                    self._fenced = GENERATION
                else:
                    log.warning("group %r: heartbeat failed: %s", self.group_id, exc)
                    self._rejoin = True
                self._wake()

    def _stalled(self, member_id: str) -> None:
        """No poll for max_poll_interval_ms: give the partitions to live members (a dynamic
        member leaves; a static one just stops heartbeating, as Kafka's clients do)."""
        log.warning("group %r: no poll for max_poll_interval_ms (%d ms); leaving the group so "
                    "its partitions move to live members", self.group_id,
                    int(self.max_poll_interval * 1000))
        if self.instance_id is None:
            with contextlib.suppress(errors.LogkernelError):
                self._coordinator.leave_group(self.group_id, [(member_id, None)])
        with self._lock:
            self.member_id, self.generation = "", -1   # no more heartbeats, no repeat
        self._fenced = STALLED
        self._wake()


def _call(listener: Any, name: str, partitions: set[TopicPartitionKey], fallback: str = "") -> None:
    if listener is None:
        return
    method = getattr(listener, name, None) or (getattr(listener, fallback, None) if fallback else None)
    if method is not None:
        method(set(partitions))
