"""Committed offsets, stored in the internal compacted topic ``__consumer_offsets``.

Each commit is a record whose key names (group, topic, partition) and whose value holds
the offset, in Kafka's own schemas, so the store reads like Kafka's:

    key   (OffsetCommitKey v1):   version int16 = 1 | group string | topic string | partition int32
    value (OffsetCommitValue v3): version int16 = 3 | offset int64 | leader epoch int32 |
                                  metadata string | commit timestamp int64
    (string = int16 length + UTF-8 bytes.) A null value (tombstone) deletes the offset.

Classic groups' membership is stored beside them, as Kafka stores it, so a restarted engine
knows its groups' generations and members (they carry on without a rebalance):

    key   (GroupMetadataKey v2):   version int16 = 2 | group string
    value (GroupMetadataValue v3): version int16 = 3 | protocol type string | generation int32 |
                                   protocol nullable string | leader nullable string |
                                   state timestamp int64 | members int32 count, each:
                                   member id | instance id (nullable) | client id | client host |
                                   rebalance timeout int32 | session timeout int32 |
                                   subscription bytes | assignment bytes
    (bytes = int32 length + the bytes.) The value is opaque here; classic_group encodes it.

A group's commits go to partition ``abs(javaHashCode(group)) % partitions``, as in Kafka,
so one group's history is in one partition and in commit order. The latest value per key
wins; the whole topic is read once at open into a dict, so ``fetch`` is a dict lookup.
The log cleaner keeps the latest record per key, so opening reads little.

Offsets committed inside a transaction (TxnOffsetCommit) are written as a transactional
batch of the producer, as Kafka writes them, and stay pending until the transaction
coordinator's marker lands in the same partition: COMMIT makes them the group's offsets,
ABORT drops them. Loading follows the same rule, so a crash anywhere in between gives the
transaction's outcome and nothing else.
"""

from __future__ import annotations

import functools
import struct
import threading
import time
from dataclasses import dataclass

from logkernel import errors
from logkernel.log.partition import PartitionLog
from logkernel.log.producer_state import CONTROL_COMMIT
from logkernel.records import decode_batch, encode_batch

OFFSETS_TOPIC = "__consumer_offsets"
KEY_VERSION = 1
GROUP_KEY_VERSION = 2
VALUE_VERSION = 3
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_VALUE_HEAD = struct.Struct(">hqi")  # version, offset, leader epoch
_I64 = struct.Struct(">q")
# A commit record's read budget while loading: 1 MiB of batches per read.
LOAD_READ_BYTES = 1024 * 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


def java_string_hash(text: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_group(group_id: str, partitions: int) -> int:
    h = java_string_hash(group_id)
    # Kafka's Utils.abs maps Integer.MIN_VALUE to 0 rather than overflowing.
    return (0 if h == -(1 << 31) else abs(h)) % partitions


_partition_for_group = functools.lru_cache(maxsize=65536)(partition_for_group)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 32767:
        raise ValueError(f"string of {len(data)} bytes is too long (at most 32767)")
    return _I16.pack(len(data)) + data


def _read_string(data: bytes, position: int) -> tuple[str, int]:
    (n,) = _I16.unpack_from(data, position)
    position += 2
    if n < 0:
        return "", position
    if position + n > len(data):
        raise ValueError("string runs past the end of the record")
    return data[position:position + n].decode("utf-8"), position + n


@functools.lru_cache(maxsize=65536)  # a consumer commits the same partitions again and again
def encode_key(group: str, topic: str, partition: int) -> bytes:
    return _I16.pack(KEY_VERSION) + _string(group) + _string(topic) + _I32.pack(partition)


def decode_key(data: bytes) -> tuple[str, str, int] | None:
    """(group, topic, partition), or None for keys of other kinds (group metadata)."""
    (version,) = _I16.unpack_from(data, 0)
    if version not in (0, 1):
        return None
    group, position = _read_string(data, 2)
    topic, position = _read_string(data, position)
    (partition,) = _I32.unpack_from(data, position)
    return group, topic, partition


@dataclass(frozen=True)
class OffsetAndMetadata:
    offset: int
    metadata: str = ""
    leader_epoch: int = -1
    commit_timestamp_ms: int = -1


def encode_value(value: OffsetAndMetadata) -> bytes:
    return (_VALUE_HEAD.pack(VALUE_VERSION, value.offset, value.leader_epoch)
            + _string(value.metadata) + _I64.pack(value.commit_timestamp_ms))


def decode_value(data: bytes) -> OffsetAndMetadata:
    (version,) = _I16.unpack_from(data, 0)
    if version == 3:
        _, offset, epoch = _VALUE_HEAD.unpack_from(data, 0)
        metadata, position = _read_string(data, _VALUE_HEAD.size)
        (timestamp,) = _I64.unpack_from(data, position)
        return OffsetAndMetadata(offset, metadata, epoch, timestamp)
    if version in (0, 1):  # offset int64 | metadata | commit timestamp [| expire timestamp]
        (offset,) = _I64.unpack_from(data, 2)
        metadata, position = _read_string(data, 10)
        (timestamp,) = _I64.unpack_from(data, position)
        return OffsetAndMetadata(offset, metadata, -1, timestamp)
    raise ValueError(f"unknown offset commit value version {version}")


TopicPartitionKey = tuple[str, int]


class OffsetStore:
    """Committed offsets of every group, backed by the ``__consumer_offsets`` logs."""

    def __init__(self, logs: list[PartitionLog]) -> None:
        self._logs = logs
        self._lock = threading.Lock()
        self._offsets: dict[str, dict[TopicPartitionKey, OffsetAndMetadata]] = {}
        self._groups: dict[str, bytes] = {}   # group -> its latest GroupMetadataValue
        # producer id -> group -> offsets committed in its open transaction
        self._pending: dict[int, dict[str, dict[TopicPartitionKey, OffsetAndMetadata]]] = {}
        for partition_log in logs:
            self._load(partition_log)

    def _load(self, partition_log: PartitionLog) -> None:
        pending: dict[int, list[tuple[bytes, bytes | None]]] = {}
        start = partition_log.log_start_offset
        for raw in partition_log.whole_batches(LOAD_READ_BYTES):
            batch = decode_batch(raw)
            producer_id = batch.header.producer_id
            if batch.is_control:
                marker = batch.control_record()
                for key, value in pending.pop(producer_id, ()):
                    if marker.control_type == CONTROL_COMMIT:
                        self._apply(key, value)
                continue
            for record in batch.records():
                if record.key is None or record.offset < start:
                    continue
                if batch.header.is_transactional:
                    pending.setdefault(producer_id, []).append((record.key, record.value))
                else:
                    self._apply(record.key, record.value)
        for producer_id, records in pending.items():  # transactions still open
            for key, value in records:
                decoded = decode_key(key) if value is not None else None
                if decoded is not None:
                    group, topic, partition = decoded
                    self._pending.setdefault(producer_id, {}).setdefault(group, {})[
                        (topic, partition)] = decode_value(value)  # type: ignore[arg-type]

    def _apply(self, key: bytes, value: bytes | None) -> None:
        try:
            (version,) = _I16.unpack_from(key, 0)
            if version == GROUP_KEY_VERSION:
                group, _ = _read_string(key, 2)
                if value is None:
                    self._groups.pop(group, None)
                else:
                    self._groups[group] = bytes(value)
                return
            decoded = decode_key(key)
            if decoded is None:
                return
            group, topic, partition = decoded
            if value is None:
                self._offsets.get(group, {}).pop((topic, partition), None)
            else:
                self._offsets.setdefault(group, {})[(topic, partition)] = decode_value(value)
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            raise errors.StorageError(
                0, f"{OFFSETS_TOPIC} holds a record that is not an offset commit ({exc}); "
                "the topic is reserved for committed offsets", None) from exc

    def _log_for(self, group: str) -> PartitionLog:
        return self._logs[_partition_for_group(group, len(self._logs))]

    def commit(self, group: str, offsets: dict[TopicPartitionKey, OffsetAndMetadata]) -> None:
        """Stores the offsets of one group as one batch (all or none). Durable as the
        __consumer_offsets topic's flush settings say."""
        if not offsets:
            return
        keys = [encode_key(group, topic, partition) for topic, partition in offsets]
        values = [encode_value(v) for v in offsets.values()]
        with self._lock:
            partition_log = self._log_for(group)
            if len(keys) == 1:  # the usual commit: one record, encoded in C into the segment
                partition_log.append_record(keys[0], values[0], _now_ms())
            else:
                partition_log.append(encode_batch(values, keys=keys), validated=True)
            self._offsets.setdefault(group, {}).update(offsets)

    def commit_transactional(self, group: str, offsets: dict[TopicPartitionKey, OffsetAndMetadata],
                             producer_id: int, producer_epoch: int) -> None:
        """Writes offsets committed inside a producer's transaction (TxnOffsetCommit): they
        become the group's offsets when the transaction commits."""
        if not offsets:
            return
        keys = [encode_key(group, topic, partition) for topic, partition in offsets]
        values = [encode_value(v) for v in offsets.values()]
        batch = encode_batch(values, keys=keys, producer_id=producer_id,
                             producer_epoch=producer_epoch, transactional=True)
        with self._lock:
            self._log_for(group).append(batch, validated=True, coordinator=True)
            self._pending.setdefault(producer_id, {}).setdefault(group, {}).update(offsets)

    def partition_for(self, group: str) -> int:
        """The __consumer_offsets partition holding ``group``'s offsets."""
        return _partition_for_group(group, len(self._logs))

    def complete_transaction(self, producer_id: int, partition: int, commit: bool) -> None:
        """After the transaction's marker was written to __consumer_offsets-``partition``:
        its pending offsets for groups of that partition are applied (COMMIT) or dropped."""
        with self._lock:
            groups = self._pending.get(producer_id)
            if not groups:
                return
            for group in [g for g in groups if _partition_for_group(g, len(self._logs)) == partition]:
                offsets = groups.pop(group)
                if commit:
                    self._offsets.setdefault(group, {}).update(offsets)
            if not groups:
                del self._pending[producer_id]

    def has_pending(self, group: str, partitions: list[TopicPartitionKey] | None = None) -> bool:
        """Whether an open transaction has committed offsets for the group (for these
        partitions): OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT."""
        with self._lock:
            for groups in self._pending.values():
                pending = groups.get(group)
                if pending and (partitions is None or any(tp in pending for tp in partitions)):
                    return True
        return False

    def delete(self, group: str, partitions: list[TopicPartitionKey]) -> None:
        """Removes committed offsets (tombstones)."""
        if not partitions:
            return
        keys = [encode_key(group, topic, partition) for topic, partition in partitions]
        with self._lock:
            self._log_for(group).append(encode_batch([None] * len(keys), keys=keys), validated=True)
            stored = self._offsets.get(group, {})
            for tp in partitions:
                stored.pop(tp, None)

    def store_group(self, group: str, value: bytes | None) -> None:
        """Stores a classic group's membership record (None: the group is gone)."""
        if value is None and group not in self._groups:
            return
        key = _I16.pack(GROUP_KEY_VERSION) + _string(group)
        with self._lock:
            self._log_for(group).append_record(key, value, _now_ms())
            if value is None:
                self._groups.pop(group, None)
            else:
                self._groups[group] = value

    def stored_groups(self) -> dict[str, bytes]:
        """Every classic group's latest membership record, as loaded and stored since."""
        return dict(self._groups)

    def fetch(self, group: str, topic: str, partition: int) -> OffsetAndMetadata | None:
        return self._offsets.get(group, {}).get((topic, partition))

    def group_offsets(self, group: str) -> dict[TopicPartitionKey, OffsetAndMetadata]:
        return dict(self._offsets.get(group, {}))

    def groups(self) -> list[str]:
        return sorted(g for g, offsets in self._offsets.items() if offsets)

    def has_offsets(self, group: str) -> bool:
        return bool(self._offsets.get(group))

    def forget_topic(self, topic: str) -> None:
        """Drops the offsets of a deleted topic (tombstones, so they stay gone)."""
        for group in self.groups():
            doomed = [tp for tp in self._offsets[group] if tp[0] == topic]
            self.delete(group, doomed)
