"""The embedded consumer: reads records from the engine's partition logs in this process.

A consumer either ``subscribe``s to topics or is ``assign``ed partitions. Subscribed with a
``group_id``, it is a member of that consumer group (see ``logkernel.group_member``): the
group's partitions are split between its members, embedded or remote, and move when members
come and go, with the rebalance listener told on the polling thread. Subscribed without a
group it reads every partition of the topics. Its position in each partition starts at the group's
committed offset when there is one, else per ``auto_offset_reset`` ("earliest", "latest",
or "none" to raise OffsetOutOfRangeError), and the same reset applies when the position
falls below the log start offset (retention or delete_records removed the records).

Reading copies whole batches out of the segment under the partition's lock (at most
``max_partition_fetch_bytes`` per partition per call, but always one whole batch), then
decodes them in one C call into columns: every batch's CRC is checked, so a damaged record
is never returned, and control batches are skipped. ``poll`` turns the columns into
``Record`` tuples; ``poll_batch`` hands the columns over as numpy arrays, with no Python
object per record.

A consumer waiting in poll sleeps on the engine's condition variable and wakes on the
next append to any partition. One consumer is used by one thread at a time, as in Kafka.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from logkernel import _binding, errors
from logkernel.records import Header, decompressed_batch, headers_column, slice_spans

if TYPE_CHECKING:
    # numpy only for annotations: the arrays are made by _binding.decode_columns, which
    # imports numpy on its first call, so importing this module (as `import logkernel`
    # does) does not.
    import numpy as np

    from logkernel.engine import Engine
    from logkernel.group_member import GroupMember
    from logkernel.log.partition import PartitionLog

log = logging.getLogger("logkernel.consumer")

# Kafka's consumer defaults.
DEFAULT_MAX_POLL_RECORDS = 500
DEFAULT_MAX_PARTITION_FETCH_BYTES = 1024 * 1024
DEFAULT_AUTO_COMMIT_INTERVAL_MS = 5000
DEFAULT_ASSIGNORS = ("range", "cooperative-sticky")   # the Java client's default list
DEFAULT_SESSION_TIMEOUT_MS = 45_000
DEFAULT_HEARTBEAT_INTERVAL_MS = 3000
DEFAULT_MAX_POLL_INTERVAL_MS = 300_000
_RESETS = ("earliest", "latest", "none")


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class Record(NamedTuple):
    """One record as a consumer sees it. Header keys are str, header values bytes or None."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


# Builds a Record from a 7-tuple without Record._make's Python-level call (3x slower).
_make_record = functools.partial(tuple.__new__, Record)


@dataclass(frozen=True, slots=True)
class ColumnBatch:
    """Records of one partition as columns: ``buffer[value_offsets[i]:value_offsets[i] +
    value_lengths[i]]`` is record i's value (length -1: null), likewise keys and headers
    (the encoded headers section). The arrays are numpy; ``buffer`` is bytes."""

    topic: str
    partition: int
    buffer: bytes
    offsets: np.ndarray
    timestamps: np.ndarray
    key_offsets: np.ndarray
    key_lengths: np.ndarray
    value_offsets: np.ndarray
    value_lengths: np.ndarray
    headers_offsets: np.ndarray
    headers_lengths: np.ndarray
    headers_counts: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def values(self) -> list[bytes | None]:
        return slice_spans(self.buffer, self.value_offsets, self.value_lengths)

    def keys(self) -> list[bytes | None]:
        return slice_spans(self.buffer, self.key_offsets, self.key_lengths)

    def records(self) -> list[Record]:
        """The same records as ``Record`` tuples. O(records)."""
        n = len(self.offsets)
        headers = headers_column(self.buffer, self.headers_offsets, self.headers_lengths,
                                 self.headers_counts)
        return list(map(_make_record, zip(
            itertools.repeat(self.topic, n), itertools.repeat(self.partition, n),
            self.offsets.tolist(), self.timestamps.tolist(), self.keys(), self.values(), headers,
            strict=False)))


def _topic_partition(tp: tuple[str, int] | str, partition: int | None = None) -> TopicPartition:
    """(topic, partition) from a pair, or from a topic name and a partition."""
    if isinstance(tp, str):
        if partition is None:
            raise TypeError(f"give a partition with the topic name {tp!r}, or a (topic, partition) pair")
        return TopicPartition(tp, partition)
    return TopicPartition(*tp)


class ConsumerGroupMetadata(NamedTuple):
    """What a transactional producer needs to commit offsets for this consumer's group."""

    group_id: str | None
    generation_id: int
    member_id: str
    group_instance_id: str | None


def _next_offset_after(data: bytes) -> int:
    """The offset after the last whole batch in ``data`` (-1 if none is whole)."""
    position = 0
    next_offset = -1
    while position + 61 <= len(data):
        size = int.from_bytes(data[position + 8:position + 12], "big", signed=True) + 12
        if size < 61 or position + size > len(data):
            break
        next_offset = (int.from_bytes(data[position:position + 8], "big", signed=True)
                       + int.from_bytes(data[position + 23:position + 27], "big", signed=True) + 1)
        position += size
    return next_offset


def _columns_batch(topic: str, partition: int, buffer: bytes, c: Any, start: int = 0) -> ColumnBatch:
    """Columns decoded from ``buffer[start:]``, with positions made relative to ``buffer``."""
    if start:
        c.key_offsets += start
        c.value_offsets += start
        c.headers_offsets += start
    return ColumnBatch(topic, partition, buffer, c.offsets, c.timestamps, c.key_offsets,
                       c.key_lengths, c.value_offsets, c.value_lengths, c.headers_offsets,
                       c.headers_lengths, c.headers_counts)


class Consumer:
    """Reads records from topics of one engine; see the module docstring."""

    def __init__(self, engine: Engine, *topics: str, group_id: str | None = None,
                 auto_offset_reset: str = "latest", enable_auto_commit: bool | None = None,
                 auto_commit_interval_ms: int = DEFAULT_AUTO_COMMIT_INTERVAL_MS,
                 max_poll_records: int = DEFAULT_MAX_POLL_RECORDS,
                 max_partition_fetch_bytes: int = DEFAULT_MAX_PARTITION_FETCH_BYTES,
                 check_crcs: bool = True, client_id: str = "logkernel-consumer",
                 isolation_level: str = "read_uncommitted",
                 partition_assignment_strategy: Sequence[str] = DEFAULT_ASSIGNORS,
                 session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
                 heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS,
                 max_poll_interval_ms: int = DEFAULT_MAX_POLL_INTERVAL_MS,
                 group_instance_id: str | None = None) -> None:
        if auto_offset_reset not in _RESETS:
            raise errors.ConfigError(f"invalid value {auto_offset_reset!r} for auto_offset_reset: "
                                     f"expected one of {', '.join(_RESETS)}")
        if group_id is not None and (not isinstance(group_id, str) or not group_id):
            raise errors.ConfigError(f"invalid value {group_id!r} for group_id: a non-empty string")
        if enable_auto_commit and group_id is None:
            raise errors.ConfigError("enable_auto_commit needs a group_id to commit for")
        if isolation_level not in ("read_uncommitted", "read_committed"):
            raise errors.ConfigError(f"invalid value {isolation_level!r} for isolation_level")
        for name, value in (("max_poll_records", max_poll_records),
                            ("max_partition_fetch_bytes", max_partition_fetch_bytes),
                            ("auto_commit_interval_ms", auto_commit_interval_ms),
                            ("session_timeout_ms", session_timeout_ms),
                            ("heartbeat_interval_ms", heartbeat_interval_ms),
                            ("max_poll_interval_ms", max_poll_interval_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise errors.ConfigError(f"invalid value {value!r} for {name}: a positive integer")
        self._engine = engine
        self.group_id = group_id
        self.client_id = client_id
        self._reset = auto_offset_reset
        self._auto_commit = group_id is not None if enable_auto_commit is None else enable_auto_commit
        self._auto_commit_interval = auto_commit_interval_ms / 1000
        self._next_auto_commit = time.monotonic() + self._auto_commit_interval
        self._max_poll_records = max_poll_records
        self._fetch_bytes = max_partition_fetch_bytes
        self._check_crcs = check_crcs
        self._committed = isolation_level == "read_committed"
        self._subscription: tuple[str, ...] = ()
        self._generation = -1
        self._logs: dict[TopicPartition, PartitionLog] = {}
        self._positions: dict[TopicPartition, int | None] = {}
        self._pending_error: dict[TopicPartition, Exception] = {}
        # per partition: (bytes read, where decoding stopped in them, the offset there)
        self._buffered: dict[TopicPartition, tuple[bytes, int, int]] = {}
        self._round_robin = 0
        self._iterator_buffer: list[Record] = []
        self._closed = False
        if group_instance_id is not None and (group_id is None or not group_instance_id):
            raise errors.ConfigError("group_instance_id needs a group_id and a non-empty value")
        if isinstance(partition_assignment_strategy, str):
            partition_assignment_strategy = (partition_assignment_strategy,)
        self._strategies = tuple(partition_assignment_strategy)
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._max_poll_interval_ms = max_poll_interval_ms
        self._group_instance_id = group_instance_id
        if group_id is not None:  # refuse an unknown assignor now, not at the first poll
            from logkernel.coordinator.assignors import assignor_for
            for name in self._strategies:
                assignor_for(name)
        self._member: GroupMember | None = None
        self._listener: Any = None
        if topics:
            self.subscribe(topics)

    # ---- assignment ----------------------------------------------------------------

    def subscribe(self, topics: Sequence[str] | str, listener: Any = None) -> None:
        """Subscribes to these topics (replacing earlier subscriptions or assignments).

        With a group_id the consumer joins the group at the next poll and reads the
        partitions the group assigns it; ``listener`` (any object with some of
        on_partitions_revoked / on_partitions_assigned / on_partitions_lost, each taking a
        set of (topic, partition)) is called on the polling thread as they change. Without
        one it reads every partition; partitions added later are picked up at the next poll.
        Raises UnknownTopicError for a topic that does not exist (unless auto-created)."""
        names = (topics,) if isinstance(topics, str) else tuple(topics)
        for name in names:
            self._engine.topic(name)
        self._subscription = names
        self._listener = listener
        self._generation = -1
        if self.group_id is not None:
            if self._member is None:
                from logkernel.group_member import GroupMember
                self._member = GroupMember(
                    self._engine, self.group_id, client_id=self.client_id,
                    strategies=self._strategies, session_timeout_ms=self._session_timeout_ms,
                    heartbeat_interval_ms=self._heartbeat_interval_ms,
                    max_poll_interval_ms=self._max_poll_interval_ms,
                    group_instance_id=self._group_instance_id, wake=self._wake)
            self._member.subscribe(names)
            return
        self._refresh()

    def _wake(self) -> None:
        with self._engine.notifier.condition:
            self._engine.notifier.condition.notify_all()

    def _coordinate(self, deadline: float) -> None:
        """Group membership work of a poll: join, sync, rebalance callbacks."""
        member = self._member
        if member is None or not self._subscription:
            return
        change = member.poll(deadline, self._listener, self._commit_before_revoke)
        if change is None:
            return
        revoked, assigned = change
        wanted = {tp: log for tp, log in self._logs.items() if tp not in revoked}
        for topic, partition in assigned:
            key = TopicPartition(topic, partition)
            try:
                wanted[key] = self._engine.partition_log(topic, partition, create=False)
            except errors.UnknownTopicError:
                continue  # deleted since the assignment was made
        for topic, partition in revoked:
            self._positions.pop(TopicPartition(topic, partition), None)
        self._set_assignment(wanted)

    def _commit_before_revoke(self, partitions: set[tuple[str, int]]) -> None:
        if not self._auto_commit:
            return
        offsets: dict[tuple[str, int], int] = {
            tp: p for tp, p in self._positions.items()
            if p is not None and (tp.topic, tp.partition) in partitions}
        try:
            self.commit(offsets)
        except errors.GroupError as exc:
            log.info("group %r: commit before revocation refused (%s); the next owner "
                     "resumes from the last committed offsets", self.group_id, exc)

    def _refresh(self) -> None:
        if not self._subscription or self._generation == self._engine.generation \
                or self._member is not None:
            return
        self._generation = self._engine.generation
        wanted: dict[TopicPartition, PartitionLog] = {}
        for name in self._subscription:
            topic = self._engine._topics.get(name)
            if topic is None:
                continue  # deleted since subscribe
            for p, partition_log in enumerate(topic.partitions):
                wanted[TopicPartition(name, p)] = partition_log
        self._set_assignment(wanted)

    def _set_assignment(self, wanted: dict[TopicPartition, PartitionLog]) -> None:
        self._positions = {tp: self._positions.get(tp) for tp in wanted}
        self._logs = wanted
        self._pending_error = {tp: e for tp, e in self._pending_error.items() if tp in wanted}
        self._buffered = {tp: b for tp, b in self._buffered.items() if tp in wanted}

    def assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Reads exactly these (topic, partition) pairs (replacing any subscription)."""
        wanted: dict[TopicPartition, PartitionLog] = {}
        for topic, partition in partitions:
            wanted[TopicPartition(topic, partition)] = self._engine.partition_log(topic, partition)
        self._leave_group()
        self._subscription = ()
        self._set_assignment(wanted)

    def assignment(self) -> set[TopicPartition]:
        self._refresh()
        return set(self._logs)

    def unsubscribe(self) -> None:
        self._leave_group()
        self._subscription = ()
        self._set_assignment({})

    def _leave_group(self, commit: bool = True) -> None:
        """Leaves the group: the listener hears the partitions revoked (after the auto
        commit, if on and ``commit``), then the member leaves."""
        if self._member is not None:
            before_revoke = self._commit_before_revoke if commit else (lambda _gone: None)
            try:
                self._member.leave(self._listener, before_revoke)  # commits as the member
            finally:
                self._member = None

    def _tp(self, tp: tuple[str, int] | str, partition: int | None = None) -> TopicPartition:
        key = _topic_partition(tp, partition)
        if key not in self._logs:
            self._refresh()
            if key not in self._logs:
                raise errors.UnknownTopicError(
                    f"{key.topic}-{key.partition} is not assigned to this consumer; assign or "
                    "subscribe first")
        return key

    # ---- positions -----------------------------------------------------------------

    def seek(self, tp: tuple[str, int], offset: int) -> None:
        """The next poll reads ``tp`` from ``offset``. A position outside the log is reset
        per auto_offset_reset when it is read."""
        key = self._tp(tp)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative int, got {offset!r}")
        self._positions[key] = offset
        self._pending_error.pop(key, None)

    def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        for key in [self._tp(tp) for tp in partitions] or list(self._logs):
            self._positions[key] = self._logs[key].log_start_offset

    def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        for key in [self._tp(tp) for tp in partitions] or list(self._logs):
            self._positions[key] = self._end(self._logs[key])

    def _end(self, partition_log: PartitionLog) -> int:
        """Where this consumer's reading ends: the last stable offset for read_committed
        (records of open transactions wait there), else the high watermark."""
        return partition_log.last_stable_offset if self._committed else partition_log.high_watermark

    def position(self, tp: tuple[str, int] | str, partition: int | None = None) -> int:
        """The offset the next poll reads from in this partition."""
        key = self._tp(tp, partition)
        return self._resolve(key)

    def _resolve_all(self) -> None:
        """Gives every assigned partition a position before a fetch, as Kafka's consumer
        does, so what commit() stores does not depend on which partition a poll read first."""
        for key, position in list(self._positions.items()):
            if position is None:
                self._resolve(key)

    def _resolve(self, key: TopicPartition) -> int:
        position = self._positions.get(key)
        if position is None:
            committed = (self._engine.committed(self.group_id, *key)
                         if self.group_id is not None else None)
            position = committed if committed is not None else self._reset_position(key, None)
            self._positions[key] = position
        return position

    def _reset_position(self, key: TopicPartition, bad: int | None) -> int:
        partition_log = self._logs[key]
        if self._reset == "earliest":
            return partition_log.log_start_offset
        if self._reset == "latest":
            return self._end(partition_log)
        where = "has no committed offset" if bad is None else f"position {bad} is out of range"
        raise errors.OffsetOutOfRangeError(
            f"{key.topic}-{key.partition} {where} (log holds {partition_log.log_start_offset}.."
            f"{partition_log.high_watermark}) and auto_offset_reset is 'none'; seek to an offset")

    def beginning_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[TopicPartition, int]:
        return {TopicPartition(*tp): self._engine.beginning_offset(*tp) for tp in partitions}

    def end_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[TopicPartition, int]:
        """The end of each partition for this consumer: the last stable offset with
        isolation_level read_committed, else the high watermark."""
        return {TopicPartition(*tp): self._end(self._engine.partition_log(*tp, create=False))
                for tp in partitions}

    def offsets_for_times(self, timestamps: dict[tuple[str, int], int]
                          ) -> dict[TopicPartition, tuple[int, int] | None]:
        """For each partition, (offset, timestamp) of the first record at or after the
        timestamp, or None."""
        return {TopicPartition(*tp): self._engine.offset_for_time(*tp, ts)
                for tp, ts in timestamps.items()}

    # ---- committing ----------------------------------------------------------------

    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Stores the group's committed offsets: the given ones, or the current position of
        every assigned partition. Durable as __consumer_offsets' flush settings say."""
        self._live()
        if self.group_id is None:
            raise errors.ConfigError("commit needs a consumer created with a group_id")
        if offsets is None:
            offsets = {tp: p for tp, p in self._positions.items() if p is not None}
        if not offsets:
            return
        member_id, instance_id, generation = "", None, -1
        if self._member is not None:
            member_id, instance_id, generation = self._member.commit_identity()
        try:
            self._engine.commit_offsets(
                self.group_id, {_topic_partition(tp): o for tp, o in offsets.items()},
                member_id=member_id, instance_id=instance_id, generation=generation)
        except (errors.GroupFencedError, errors.RebalanceInProgressError) as exc:
            if self._member is not None:
                self._member.fenced(exc)
            raise

    def committed(self, tp: tuple[str, int] | str, partition: int | None = None) -> int | None:
        """The group's committed offset for a partition, or None."""
        if self.group_id is None:
            raise errors.ConfigError("committed needs a consumer created with a group_id")
        key = _topic_partition(tp, partition)
        return self._engine.committed(self.group_id, key.topic, key.partition)

    def _maybe_auto_commit(self) -> None:
        if self._auto_commit and time.monotonic() >= self._next_auto_commit:
            self._next_auto_commit = time.monotonic() + self._auto_commit_interval
            try:
                self.commit()
            except errors.GroupError as exc:  # as Kafka's clients do: log, rejoin, go on
                log.info("group %r: auto commit refused (%s)", self.group_id, exc)

    # ---- reading -------------------------------------------------------------------

    def _live(self) -> None:
        if self._closed:
            raise errors.ClosedError("this consumer is closed")
        if self._engine.closed:
            raise errors.ClosedError(f"the engine for {self._engine.path} is closed")

    def group_metadata(self) -> ConsumerGroupMetadata:
        """The group, generation and member of this consumer, for a transactional
        producer's ``send_offsets_to_transaction`` (the commit is then refused if this
        member has been fenced meanwhile)."""
        member = self._member
        return ConsumerGroupMetadata(
            self.group_id, member.generation if member is not None else -1,
            member.member_id if member is not None else "", self._group_instance_id)

    def _fetch(self, key: TopicPartition, max_records: int, single: bool) -> list[ColumnBatch]:
        """Decodes up to ``max_records`` of one partition (reading about
        max_partition_fetch_bytes, across segments), advancing its position. ``single``:
        stop after the first run of columns (poll_batch returns one buffer).

        What one read brought in but this call did not return stays buffered (as Kafka's
        fetcher keeps a completed fetch), so small polls do not copy the same bytes again."""
        error = self._pending_error.pop(key, None)
        if error is not None:
            raise error
        partition_log = self._logs[key]
        position = self._resolve(key)
        out: list[ColumnBatch] = []
        fetched = 0
        while max_records > 0:
            buffered = self._buffered.pop(key, None)
            if buffered is not None and buffered[2] == position:
                data, start = buffered[0], buffered[1]
            else:
                if fetched >= self._fetch_bytes:
                    break
                try:
                    data, end = self._read(partition_log, position, self._fetch_bytes - fetched)
                except errors.OffsetOutOfRangeError:
                    if out:
                        break  # return what was read; the reset happens on the next call
                    position = self._positions[key] = self._reset_position(key, position)
                    data, end = self._read(partition_log, position, self._fetch_bytes - fetched)
                if not data:
                    # Compaction can leave a gap at the end of the log: no record lies in
                    # [position, end), so move past it (else position < high watermark
                    # would look like data forever).
                    if position < end:
                        position = self._positions[key] = end
                    break
                fetched += len(data)
                start = 0
            before = position
            while start < len(data) and max_records > 0:
                view = memoryview(data)[start:] if start else data
                c = _binding.decode_columns(view, min_offset=position, max_records=max_records,
                                            validate_crc=self._check_crcs)
                if c.count:
                    out.append(_columns_batch(key.topic, key.partition, data, c, start))
                    max_records -= c.count
                position = self._positions[key] = max(position, c.next_offset)
                if c.error is not None:
                    error = errors.CorruptRecordError(
                        f"{key.topic}-{key.partition}: the batch at offset {position} is damaged "
                        f"({c.error}); it was not returned. Seek past it, or run recovery",
                        c.error.position, c.error.record_index, c.error.code)
                    if out:
                        self._pending_error[key] = error
                        return out
                    raise error
                if c.stop == "full" or (c.stop == "compressed" and single and out):
                    self._buffered[key] = (data, start + c.position, position)
                    return out
                if c.stop != "compressed":
                    break
                # A compressed batch: decompress it (CRC checked first) and decode the
                # records of the equivalent plain batch; then go on after it.
                batch = view[c.position:]
                plain = decompressed_batch(batch)
                pc = _binding.decode_columns(plain, min_offset=position, max_records=max_records,
                                             validate_crc=False)
                if pc.count:
                    out.append(_columns_batch(key.topic, key.partition, plain, pc))
                    max_records -= pc.count
                if pc.stop == "full":
                    position = self._positions[key] = max(position, pc.next_offset)
                    return out
                position = self._positions[key] = max(
                    position, _binding.parse_header(plain).next_offset)
                start += c.position + _binding.parse_header(batch).size
                if single and out:
                    if start < len(data):
                        self._buffered[key] = (data, start, position)
                    return out
            if (single and out) or position == before:
                break
        return out

    def _read(self, partition_log: PartitionLog, position: int, max_bytes: int
              ) -> tuple[bytes, int]:
        """Bytes from ``position`` and the offset a reader may move to when they are empty.
        read_committed: whole batches below the last stable offset, with the batches of
        aborted transactions taken out in C (the empty answer then moves the reader past
        what was dropped, or to where the log has no record)."""
        if not self._committed:
            return partition_log.read_from(position, max_bytes)
        data, stable, aborted = partition_log.read_committed(position, max_bytes)
        if not aborted:
            return data, stable
        buffer = bytearray(data)
        kept = bytes(memoryview(buffer)[:_binding.drop_aborted(buffer, aborted)])
        if _next_offset_after(kept) < 0:
            # Every whole batch read was aborted (what is left, if anything, is the part
            # of a batch the byte limit cut): move past them.
            return b"", _next_offset_after(data)
        return kept, stable

    def _has_data(self) -> bool:
        return any(p is None or p < self._end(self._logs[tp]) or tp in self._pending_error
                   for tp, p in self._positions.items())

    def _poll_columns(self, timeout_ms: float, max_records: int, one_partition: bool
                      ) -> list[ColumnBatch]:
        self._live()
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        self._coordinate(deadline)
        self._refresh()
        self._maybe_auto_commit()
        notifier = self._engine.notifier
        while True:
            self._resolve_all()
            out: list[ColumnBatch] = []
            keys = list(self._logs)
            budget = max_records
            for i in range(len(keys)):
                key = keys[(self._round_robin + i) % len(keys)]
                got = self._fetch(key, budget, one_partition)
                if got:
                    out.extend(got)
                    budget -= sum(len(b) for b in got)
                    if one_partition or budget <= 0:
                        self._round_robin = (self._round_robin + i + 1) % max(len(keys), 1)
                        return out
            if out:
                self._round_robin = (self._round_robin + 1) % max(len(keys), 1)
                return out
            with notifier.condition:
                notifier.waiting += 1
                try:
                    if self._has_data():
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    notifier.condition.wait(remaining)
                finally:
                    notifier.waiting -= 1
            self._live()
            if self._member is not None and self._member.needs_rejoin():
                self._coordinate(deadline)
            self._refresh()

    def _poll_as_member(self, timeout_ms: float, max_records: int, one_partition: bool
                        ) -> list[ColumnBatch]:
        member = self._member
        if member is None:
            return self._poll_columns(timeout_ms, max_records, one_partition)
        member.poll_started()
        try:
            return self._poll_columns(timeout_ms, max_records, one_partition)
        finally:
            member.poll_finished()

    def poll(self, timeout_ms: float = 0, max_records: int | None = None) -> list[Record]:
        """Up to ``max_records`` records (default max_poll_records) from the assigned
        partitions, round robin. Waits up to ``timeout_ms`` for the first record (0: return
        at once). Advances the positions past what it returns."""
        limit = self._max_poll_records if max_records is None else max_records
        out: list[Record] = []
        for batch in self._poll_as_member(timeout_ms, limit, one_partition=False):
            out.extend(batch.records())
        return out

    def poll_batch(self, timeout_ms: float = 0, max_records: int | None = None) -> ColumnBatch | None:
        """Up to ``max_records`` records of one partition as columns (see ColumnBatch), built
        in C with no per-record Python objects; None if nothing arrived within timeout_ms."""
        limit = self._max_poll_records if max_records is None else max_records
        batches = self._poll_as_member(timeout_ms, limit, one_partition=True)
        if not batches:
            return None
        return batches[0]

    def __iter__(self) -> Iterator[Record]:
        """Blocks for records forever (until the consumer or engine is closed)."""
        while not self._closed:
            if not self._iterator_buffer:
                try:
                    self._iterator_buffer = self.poll(timeout_ms=1000)
                except errors.ClosedError:
                    return
                self._iterator_buffer.reverse()
                continue
            yield self._iterator_buffer.pop()

    def close(self, *, autocommit: bool = True) -> None:
        """Commits positions (if auto commit is on) and stops the consumer."""
        if self._closed:
            return
        commit = autocommit and self._auto_commit and not self._engine.closed
        try:
            if self._member is not None and not self._engine.closed:
                self._leave_group(commit)  # a member commits before its revoke callback
            elif commit:
                self.commit()
        except errors.GroupError as exc:
            log.info("group %r: final commit refused (%s)", self.group_id, exc)
        finally:
            if self._member is not None:  # the engine closed first: just stop heartbeats
                self._member.stop()
                self._member = None
            self._closed = True

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
