"""The group coordinator: every consumer group of one engine, and their committed offsets.

Both doors use it: the broker's group handlers and the embedded consumer call the same
methods, so an embedded consumer and a remote one can be members of one group. A group is
either *classic* (JoinGroup/SyncGroup; the group leader assigns partitions) or *consumer*
(KIP-848's ConsumerGroupHeartbeat; the coordinator assigns). A group that only has
committed offsets is listed as an Empty classic group, as Kafka does.

Calls that may wait (JoinGroup, SyncGroup) take an ``answer`` callback instead of blocking:
it is called once with the result or a ``GroupError``, possibly from the timer thread, and
must not block (the broker hands it to its event loop; the embedded consumer sets an event).

One lock guards every group; group work is small and the lock is never held across I/O
other than the append of a commit to ``__consumer_offsets`` (which the offset store does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from logkernel import errors
from logkernel.config import EngineConfig
from logkernel.coordinator.classic_group import (
    EMPTY,
    ClassicGroup,
    ClassicGroupDescription,
    ClassicGroupSettings,
)
from logkernel.coordinator.consumer_group import ConsumerGroup, ConsumerGroupSettings, TopicView
from logkernel.coordinator.offsets import OffsetAndMetadata, OffsetStore, TopicPartitionKey
from logkernel.coordinator.timers import Timers

log = logging.getLogger("logkernel.coordinator")

Group = ClassicGroup | ConsumerGroup


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str
    group_type: str     # "classic" or "consumer"


class GroupCoordinator:
    """See the module docstring."""

    def __init__(self, offsets: OffsetStore, config: EngineConfig, topics: TopicView) -> None:
        self.offsets = offsets
        self.lock = threading.RLock()
        self.timers = Timers()
        self._topics = topics
        self._classic_settings = ClassicGroupSettings(
            config["group.initial.rebalance.delay.ms"], config["group.min.session.timeout.ms"],
            config["group.max.session.timeout.ms"], config["group.max.size"])
        self._config = config
        self.metadata_max_bytes = config["offset.metadata.max.bytes"]
        self.retention_ms = config["offsets.retention.minutes"] * 60_000
        self._groups: dict[str, Group] = {}
        self._closed = False
        for group_id, record in offsets.stored_groups().items():
            group = self._new_classic(group_id)
            try:
                group.restore(record)
            except (ValueError, UnicodeDecodeError) as exc:
                log.warning("group %r: its stored membership is unreadable (%s); members "
                            "rejoin as new ones", group_id, exc)
                group = self._new_classic(group_id)
            self._groups[group_id] = group
            if group.members:
                log.info("group %r: generation %d with %d members restored", group_id,
                         group.generation, len(group.members))

    def _new_classic(self, group_id: str) -> ClassicGroup:
        return ClassicGroup(group_id, self._classic_settings, self.timers, self.lock,
                            persist=self.offsets.store_group)

    # ---- the registry ------------------------------------------------------------------

    @staticmethod
    def _check_id(group_id: Any) -> str:
        if not isinstance(group_id, str) or not group_id:
            raise errors.InvalidGroupIdError(f"a group id is a non-empty string, got {group_id!r}")
        return group_id

    def _live(self) -> None:
        if self._closed:
            raise errors.CoordinatorNotAvailableError("the engine is closing")

    def _classic(self, group_id: str, create: bool) -> ClassicGroup:
        group = self._groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            if not group.is_empty():
                raise errors.InconsistentGroupProtocolError(
                    f"group {group_id!r} is a consumer-protocol (KIP-848) group with members; "
                    "a classic member cannot join it (use group.protocol=consumer)")
            group.remove_all()
            group = None
        if group is None:
            if not create:
                raise errors.UnknownMemberIdError(f"group {group_id!r} has no members")
            group = self._new_classic(group_id)
            self._groups[group_id] = group
        return group

    def _consumer(self, group_id: str) -> ConsumerGroup:
        group = self._groups.get(group_id)
        if isinstance(group, ClassicGroup):
            if not group.is_empty():
                raise errors.InconsistentGroupProtocolError(
                    f"group {group_id!r} is a classic group with members; a consumer-protocol "
                    "member cannot join it until they leave (or use the classic protocol)")
            group.close()
            group = None
        if group is None:
            config = self._config
            settings = ConsumerGroupSettings(
                config["group.consumer.session.timeout.ms"],
                config["group.consumer.heartbeat.interval.ms"],
                config["group.consumer.max.size"], tuple(config["group.consumer.assignors"]))
            group = ConsumerGroup(group_id, settings, self._topics, self.timers, self.lock)
            self._groups[group_id] = group
        return group

    # ---- the classic protocol ----------------------------------------------------------

    def join_group(self, group_id: str, *, member_id: str, instance_id: str | None,
                   client_id: str, client_host: str, session_timeout_ms: int,
                   rebalance_timeout_ms: int, protocol_type: str,
                   protocols: list[tuple[str, bytes]], require_known_member_id: bool,
                   answer: Callable[[Any], None]) -> None:
        """JoinGroup: ``answer`` gets a JoinResult when the rebalance completes; refusals
        (MemberIdRequiredError among them) raise at once."""
        self._check_id(group_id)
        with self.lock:
            self._live()
            # Only a member without an id creates a group, as in Kafka: a stale member id
            # (say, after a restart) gets UnknownMemberIdError and leaves nothing behind.
            self._classic(group_id, create=not member_id).join(
                member_id=member_id, instance_id=instance_id, client_id=client_id,
                client_host=client_host, session_timeout_ms=session_timeout_ms,
                rebalance_timeout_ms=rebalance_timeout_ms, protocol_type=protocol_type,
                protocols=protocols, require_known_member_id=require_known_member_id,
                answer=answer)

    def sync_group(self, group_id: str, *, member_id: str, instance_id: str | None,
                   generation: int, protocol_type: str | None, protocol_name: str | None,
                   assignments: dict[str, bytes], answer: Callable[[Any], None]) -> None:
        self._check_id(group_id)
        with self.lock:
            self._live()
            self._existing_classic(group_id).sync(
                member_id=member_id, instance_id=instance_id, generation=generation,
                protocol_type=protocol_type, protocol_name=protocol_name,
                assignments=assignments, answer=answer)

    def heartbeat(self, group_id: str, *, member_id: str, instance_id: str | None,
                  generation: int) -> None:
        self._check_id(group_id)
        with self.lock:
            self._live()
            self._existing_classic(group_id).heartbeat(
                member_id=member_id, instance_id=instance_id, generation=generation)

    def leave_group(self, group_id: str, members: list[tuple[str, str | None]]
                    ) -> list[errors.GroupError | None]:
        self._check_id(group_id)
        with self.lock:
            self._live()
            group = self._groups.get(group_id)
            if not isinstance(group, ClassicGroup):
                return [errors.UnknownMemberIdError(f"group {group_id!r} has no classic members")
                        for _ in members]
            return group.leave(members)

    def _existing_classic(self, group_id: str) -> ClassicGroup:
        group = self._groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            raise errors.InconsistentGroupProtocolError(
                f"group {group_id!r} uses the consumer protocol (KIP-848), not JoinGroup")
        if group is None:
            raise errors.UnknownMemberIdError(
                f"group {group_id!r} has no members; join it first")
        return group

    # ---- the consumer protocol (KIP-848) ----------------------------------------------

    def consumer_group_heartbeat(self, group_id: str, **request: Any) -> Any:
        self._check_id(group_id)
        with self.lock:
            self._live()
            if request.get("member_epoch", 0) != 0 and not isinstance(
                    self._groups.get(group_id), ConsumerGroup):
                raise errors.UnknownMemberIdError(
                    f"group {group_id!r} has no consumer-protocol members; join with epoch 0")
            return self._consumer(group_id).heartbeat(**request)

    def describe_consumer_group(self, group_id: str) -> Any:
        self._check_id(group_id)
        with self.lock:
            group = self._groups.get(group_id)
            if not isinstance(group, ConsumerGroup):
                raise errors.GroupIdNotFoundError(
                    f"group {group_id!r} is not a consumer-protocol group")
            return group.describe()

    # ---- offsets -------------------------------------------------------------------------

    def commit_offsets(self, group_id: str, offsets: dict[TopicPartitionKey, OffsetAndMetadata],
                       *, member_id: str = "", instance_id: str | None = None,
                       generation: int = -1, api_version: int = 9) -> None:
        """Stores the offsets after Kafka's membership checks; raises a GroupError if the
        committer is not (or no longer) entitled to commit for the group."""
        with self.lock:
            self.validate_commit(group_id, member_id=member_id, instance_id=instance_id,
                                 generation=generation, api_version=api_version)
            self.offsets.commit(group_id, offsets)

    def validate_commit(self, group_id: str, *, member_id: str = "",
                        instance_id: str | None = None, generation: int = -1,
                        api_version: int = 9) -> None:
        """Raises the GroupError a commit by this member at this generation gets (also
        for commits inside a transaction, TxnOffsetCommit v3)."""
        self._check_id(group_id)
        with self.lock:
            self._live()
            group = self._groups.get(group_id)
            if isinstance(group, ConsumerGroup):
                group.validate_offset_commit(member_id, instance_id, generation, api_version)
            elif group is not None:
                group.validate_offset_commit(member_id, instance_id, generation)
            elif generation >= 0:  # Kafka's answer to a generation of a group it lacks
                if api_version >= 9:
                    raise errors.GroupIdNotFoundError(
                        f"group {group_id!r} does not exist; rejoin it before committing")
                raise errors.IllegalGenerationError(
                    f"group {group_id!r} has no generation {generation} (it has no members); "
                    "rejoin it before committing")

    def fetch_offsets(self, group_id: str, *, member_id: str | None = None,
                      member_epoch: int = -1) -> dict[TopicPartitionKey, OffsetAndMetadata]:
        self._check_id(group_id)
        with self.lock:
            group = self._groups.get(group_id)
            if isinstance(group, ConsumerGroup):
                group.validate_offset_fetch(member_id, member_epoch)
            elif member_epoch >= 0 and member_id:
                raise errors.UnknownMemberIdError(
                    f"group {group_id!r} is not a consumer-protocol group with member {member_id!r}")
        return self.offsets.group_offsets(group_id)

    def delete_offsets(self, group_id: str, partitions: list[TopicPartitionKey]
                       ) -> dict[TopicPartitionKey, errors.GroupError | None]:
        """OffsetDelete: drops committed offsets of topics no member is subscribed to."""
        self._check_id(group_id)
        with self.lock:
            group = self._groups.get(group_id)
            if group is None and not self.offsets.has_offsets(group_id):
                raise errors.GroupIdNotFoundError(f"group {group_id!r} does not exist")
            subscribed: set[str] = set()
            if group is not None and not group.is_empty():
                topics = group.subscribed_topics()
                if topics is None:  # members whose subscriptions we cannot read
                    raise errors.NonEmptyGroupError(
                        f"group {group_id!r} has members of protocol type "
                        f"{getattr(group, 'protocol_type', None)!r}; stop them first")
                subscribed = topics
            outcome: dict[TopicPartitionKey, errors.GroupError | None] = {}
            doomed = []
            for tp in partitions:
                if tp[0] in subscribed:
                    outcome[tp] = errors.GroupSubscribedToTopicError(
                        f"a member of group {group_id!r} is subscribed to {tp[0]!r}")
                else:
                    outcome[tp] = None
                    doomed.append(tp)
            self.offsets.delete(group_id, doomed)
            return outcome

    # ---- admin -------------------------------------------------------------------------

    def list_groups(self, states: Iterable[str] | None = None,
                    types: Iterable[str] | None = None) -> list[GroupListing]:
        wanted_states = {s.lower() for s in states} if states else None
        wanted_types = {t.lower() for t in types} if types else None
        with self.lock:
            listings = [self.listing(g) for g in sorted(set(self.offsets.groups()) | set(self._groups))]
        return [g for g in listings if g is not None
                and (wanted_states is None or g.state.lower() in wanted_states)
                and (wanted_types is None or g.group_type in wanted_types)]

    def listing(self, group_id: str) -> GroupListing | None:
        """How ListGroups shows one group, or None if it would not list it."""
        with self.lock:
            group = self._groups.get(group_id)
            if isinstance(group, ConsumerGroup):
                return GroupListing(group_id, "consumer", group.state, "consumer")
            if group is not None and (group.members or group.protocol_type):  # had members
                return GroupListing(group_id, group.protocol_type or "", group.state, "classic")
            if self.offsets.has_offsets(group_id):
                return GroupListing(group_id, "", EMPTY, "classic")
            return None

    def describe_group(self, group_id: str) -> ClassicGroupDescription:
        """A classic view of any group (Kafka's DescribeGroups); unknown groups are Dead."""
        self._check_id(group_id)
        with self.lock:
            group = self._groups.get(group_id)
            if isinstance(group, ClassicGroup):
                return group.describe()
            if isinstance(group, ConsumerGroup):
                return ClassicGroupDescription(group_id, group.state, "consumer", "", -1, None, [])
            if self.offsets.has_offsets(group_id):
                return ClassicGroupDescription(group_id, EMPTY, "", "", 0, None, [])
            return ClassicGroupDescription(group_id, "Dead", "", "", -1, None, [])

    def delete_group(self, group_id: str) -> None:
        """DeleteGroups: the group must have no members; its offsets go with it."""
        self._check_id(group_id)
        with self.lock:
            group = self._groups.get(group_id)
            offsets = self.offsets.group_offsets(group_id)
            if group is None and not offsets:
                raise errors.GroupIdNotFoundError(f"group {group_id!r} does not exist")
            if group is not None and not group.is_empty():
                raise errors.NonEmptyGroupError(
                    f"group {group_id!r} still has members; stop them (or wait for their "
                    "session timeout) before deleting it")
            if group is not None:
                self._drop(group_id, group)
            self.offsets.delete(group_id, list(offsets))

    def _drop(self, group_id: str, group: Group) -> None:
        if isinstance(group, ClassicGroup):
            group.close()
        else:
            group.remove_all()
        del self._groups[group_id]
        self.offsets.store_group(group_id, None)

    def expire_offsets(self, now_ms: int | None = None) -> int:
        """Drops committed offsets as Kafka does: all of a group that has had no members for
        offsets.retention.minutes; for groups never seen with members, those whose commit is
        that old; for groups with members, those of topics no member subscribes to any
        more whose commit is that old (KIP-496). Returns how many offsets were dropped."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        dropped = 0
        with self.lock:
            for group_id in self.offsets.groups():
                group = self._groups.get(group_id)
                stored = self.offsets.group_offsets(group_id)
                if group is not None and not group.is_empty():
                    # KIP-496: a group with members keeps the offsets of the topics it
                    # subscribes to; those of topics it dropped age out by commit time.
                    subscribed = group.subscribed_topics()
                    if subscribed is None:
                        continue
                    expired = [tp for tp, v in stored.items() if tp[0] not in subscribed
                               and 0 <= v.commit_timestamp_ms <= now - self.retention_ms]
                elif isinstance(group, ClassicGroup) and group.protocol_type:
                    expired = list(stored) if now - group.state_since_ms >= self.retention_ms \
                        else []
                else:
                    expired = [tp for tp, v in stored.items()
                               if v.commit_timestamp_ms >= 0
                               and now - v.commit_timestamp_ms >= self.retention_ms]
                if expired:
                    self.offsets.delete(group_id, expired)
                    dropped += len(expired)
                    log.info("expired %d committed offsets of group %r "
                             "(offsets.retention.minutes)", len(expired), group_id)
                if group is not None and group.is_empty() and \
                        not self.offsets.has_offsets(group_id):
                    self._drop(group_id, group)
        return dropped

    def forget_topic(self, topic: str) -> None:
        with self.lock:
            self.offsets.forget_topic(topic)

    def close(self) -> None:
        with self.lock:  # groups stay stored: a reopened engine takes them back
            self._closed = True
            for group in self._groups.values():
                if isinstance(group, ClassicGroup):
                    group.close()
                else:
                    group.remove_all()
            self._groups.clear()
        self.timers.stop()
