"""The engine: one data directory, its topics and partitions, and the background tasks.

``logkernel.open(path)`` returns an ``Engine``. It is the one entry point both front doors
use: the embedded Producer/Consumer here, and (later) the broker.

Data directory::

    .lock                       held (flock) while an engine has the directory open
    .clean-shutdown             written by close() after every log was flushed; removed at open
    cluster.id                  this directory's cluster id (Kafka's form: a UUID, base64url)
    producer-ids                the end of the last block of producer ids handed out
    topics/<topic id>.json      topic metadata: name, partitions, config overrides (named by
                                the id: a 249-character topic name plus ".json.tmp" would
                                not fit the file system's 255-byte file names)
    <topic>-<partition>/        one partition log (log/partition.py)

Topic metadata is written with temp + fsync + rename. Creating a topic writes its metadata
last, so a crash leaves either no topic or a whole one (stray empty partition directories
are harmless and reused). Deleting marks the metadata "deleting" (on a full disk: renames
it to ``<id>.json.deleting``), removes the partition directories, then removes the
metadata: a crash in between is finished at the next open.

A full disk: writes fail with NoSpaceError (nothing written, retry once space is freed);
what frees space needs none (delete_records, retention, delete_topic); close completes
(skipping what only saves the next open time); open needs space only to repair a crash.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logkernel import errors
from logkernel.config import EngineConfig, TopicConfig, validate_topic_name
from logkernel.coordinator.group_coordinator import GroupCoordinator
from logkernel.coordinator.offsets import OFFSETS_TOPIC, OffsetAndMetadata, OffsetStore
from logkernel.coordinator.transactions import TRANSACTION_STATE_TOPIC, TransactionCoordinator
from logkernel.log.checkpoint import fsync_directory, write_atomically
from logkernel.log.cleaner import CleanerStats, CleanResult, LogCleaner
from logkernel.log.partition import LEADER_EPOCH as LEADER_EPOCH  # re-exported for the broker
from logkernel.log.partition import AppendNotifier, PartitionLog, RecoveryReport

log = logging.getLogger("logkernel.engine")

LOCK_FILE = ".lock"
CLUSTER_ID_FILE = "cluster.id"
PRODUCER_IDS_FILE = "producer-ids"
# Producer ids are reserved in blocks, as Kafka's controller hands them out: one durable
# write per 1,000 ids instead of one per producer. A crash forfeits the rest of a block.
PRODUCER_ID_BLOCK = 1000
CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
TOPICS_DIR = "topics"
# A topic's metadata renamed with this suffix is a topic being deleted (the full-disk
# form of state "deleting": see Engine._mark_deleting).
DELETING_SUFFIX = ".deleting"
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC})
# Largest partition count of one topic: each partition is a directory and an open segment
# (a file descriptor and an address-space reservation of segment.bytes).
MAX_PARTITIONS = 10_000


@dataclass
class Topic:
    name: str
    topic_id: str
    config: TopicConfig
    partitions: list[PartitionLog]
    internal: bool = False


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    recovery_point: int
    segments: int
    size_bytes: int


@dataclass(frozen=True)
class TopicDescription:
    name: str
    topic_id: str
    internal: bool
    partitions: list[PartitionDescription]
    config: dict[str, Any]        # every effective setting
    overrides: dict[str, Any] = field(default_factory=dict)  # only those set on the topic


@dataclass(frozen=True)
class GroupMemberInfo:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    partitions: list[tuple[str, int]]     # what the member is assigned now


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None     # None: the group has never committed here
    log_end_offset: int
    lag: int | None           # log end minus committed (None without a commit)
    owner: str | None         # member id of the member assigned the partition, if any


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    group_type: str           # "classic" or "consumer" (KIP-848)
    state: str                # Empty, PreparingRebalance, CompletingRebalance, Stable, ...
    protocol_type: str
    protocol: str             # the assignor in use
    generation: int           # generation (classic) or group epoch (consumer protocol)
    members: list[GroupMemberInfo]
    lag: list[PartitionLag]   # every partition with a commit or an owner, by topic and partition

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.lag if p.lag is not None)


class Engine:
    """An open data directory. Thread-safe; close it (or use ``with``) to shut down cleanly."""

    def __init__(self, path: str | os.PathLike[str], config: Mapping[str, Any] | None = None) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.config = EngineConfig(config)
        os.makedirs(os.path.join(self.path, TOPICS_DIR), exist_ok=True)
        self._lock_fd = self._acquire_lock()
        self._closed = False
        self._meta_lock = threading.RLock()
        self.notifier = AppendNotifier()
        self._topics: dict[str, Topic] = {}
        self.generation = 0  # bumped on every topic or partition change (consumers refresh)
        self.recovery: dict[str, RecoveryReport] = {}
        self._next_producer_id = 0
        self._producer_id_block_end = 0
        try:
            self.cluster_id = self._load_cluster_id()
            marker = os.path.join(self.path, CLEAN_SHUTDOWN_FILE)
            self._clean_shutdown = os.path.exists(marker)
            if self._clean_shutdown:
                os.unlink(marker)
                fsync_directory(self.path)
            self._load_topics()
            if OFFSETS_TOPIC not in self._topics:
                self._create_topic(OFFSETS_TOPIC, self.config["offsets.topic.num.partitions"], {
                    "cleanup.policy": "compact",
                    "segment.bytes": self.config["offsets.topic.segment.bytes"]}, internal=True)
            self.offsets = OffsetStore(self._topics[OFFSETS_TOPIC].partitions)
            self.groups = GroupCoordinator(self.offsets, self.config, _EngineTopics(self))
            self.transactions = TransactionCoordinator(
                self.config, state_logs=self._transaction_state_logs,
                partition_log=self.partition_log_or_none, offsets=self.offsets,
                allocate_producer_id=self.allocate_producer_id,
                validate_group_commit=self.groups.validate_commit)
            self.transactions.close_dangling(self._all_logs())
            self.cleaner = LogCleaner(
                self._all_logs, enabled=self.config["log.cleaner.enable"],
                threads=self.config["log.cleaner.threads"],
                backoff_ms=self.config["log.cleaner.backoff.ms"],
                dedupe_buffer_bytes=self.config["log.cleaner.dedupe.buffer.size"],
                io_buffer_bytes=self.config["log.cleaner.io.buffer.size"],
                load_factor=self.config["log.cleaner.io.buffer.load.factor"],
                max_bytes_per_second=self.config["log.cleaner.io.max.bytes.per.second"])
        except BaseException:
            self._release_everything()
            raise
        self._stop = threading.Event()
        self._background = threading.Thread(target=self._background_loop,
                                             name=f"logkernel-background {self.path}", daemon=True)
        self._background.start()
        self.cleaner.start()

    # ---- the directory lock --------------------------------------------------------

    def _acquire_lock(self) -> int:
        path = os.path.join(self.path, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise errors.DataDirLockedError(
                    f"{self.path} is open in another engine (process {holder or 'unknown'}); "
                    "one engine owns a data directory at a time. Close it, or connect to that "
                    "process's broker instead.") from None
            raise
        # The holder's pid, for the message above. Written over the old one, then cut, so the
        # file keeps its block: truncating first would free it, and a full disk could then
        # refuse the write. The pid only helps that message, so a full disk skips it.
        pid = f"{os.getpid()}\n".encode()
        try:
            os.pwrite(fd, pid, 0)
            os.ftruncate(fd, len(pid))
        except OSError as exc:
            if exc.errno not in errors.NO_SPACE_ERRNOS:
                os.close(fd)
                raise
        return fd

    # ---- topics --------------------------------------------------------------------

    def _metadata_path(self, topic_id: str) -> str:
        return os.path.join(self.path, TOPICS_DIR, f"{topic_id}.json")

    def _partition_dir(self, name: str, partition: int) -> str:
        return os.path.join(self.path, f"{name}-{partition}")

    def _write_metadata(self, topic: Topic, state: str = "live") -> None:
        document = {"name": topic.name, "topic_id": topic.topic_id,
                    "partitions": len(topic.partitions), "internal": topic.internal,
                    "config": {k: str(v) for k, v in topic.config.overrides.items()},
                    "state": state}
        write_atomically(self._metadata_path(topic.topic_id),
                         json.dumps(document, indent=1, sort_keys=True).encode())

    def _load_topics(self) -> None:
        directory = os.path.join(self.path, TOPICS_DIR)
        for entry in sorted(os.listdir(directory)):
            path = os.path.join(directory, entry)
            if entry.endswith(".tmp"):
                os.unlink(path)
                continue
            deleting = entry.endswith(".json" + DELETING_SUFFIX)
            if not entry.endswith(".json") and not deleting:
                continue
            try:
                document = json.loads(Path(path).read_bytes())
                name = validate_topic_name(document["name"])
                count = int(document["partitions"])
                overrides = dict(document.get("config", {}))
                state = document.get("state", "live")
                topic_id = str(document["topic_id"])
                internal = bool(document.get("internal", False))
            except (ValueError, KeyError, TypeError, errors.ConfigError) as exc:
                raise errors.StorageError(
                    0, f"topic metadata {path} is unreadable ({exc}); fix or remove it (the "
                    "partition directories stay untouched)", path) from exc
            if state == "deleting" or deleting:
                self._remove_partition_dirs(name, count)
                os.unlink(path)
                fsync_directory(directory)
                log.warning("finished deleting topic %s (interrupted by a crash)", name)
                continue
            config = TopicConfig(self.config.topic_defaults, overrides)
            logs = [self._open_partition(name, p, config) for p in range(count)]
            self._topics[name] = Topic(name, topic_id, config, logs, internal)

    def _open_partition(self, name: str, partition: int, config: TopicConfig) -> PartitionLog:
        partition_log = PartitionLog(self._partition_dir(name, partition), name, partition, config,
                                     clean_shutdown=self._clean_shutdown, notifier=self.notifier)
        if not partition_log.recovery.clean:
            self.recovery[partition_log.name] = partition_log.recovery
        return partition_log

    def _remove_partition_dirs(self, name: str, count: int, start: int = 0) -> None:
        for p in range(start, count):
            directory = self._partition_dir(name, p)
            if os.path.isdir(directory):
                shutil.rmtree(directory)
        fsync_directory(self.path)

    def _live(self) -> None:
        if self._closed:
            raise errors.ClosedError(f"the engine for {self.path} is closed")

    def _create_topic(self, name: str, partitions: int, config: Mapping[str, Any] | None, *,
                      internal: bool = False) -> Topic:
        topic_config = TopicConfig(self.config.topic_defaults, config)
        logs: list[PartitionLog] = []
        try:
            for p in range(partitions):
                directory = self._partition_dir(name, p)
                if os.path.isdir(directory) and os.listdir(directory):
                    # Left by a crash during an earlier create or delete: not a topic's data
                    # (no metadata names it), so start it empty.
                    shutil.rmtree(directory)
                logs.append(PartitionLog(directory, name, p, topic_config, clean_shutdown=True,
                                         notifier=self.notifier))
            topic = Topic(name, uuid.uuid4().hex, topic_config, logs, internal)
            self._write_metadata(topic)
        except BaseException as exc:
            for partition_log in logs:
                partition_log.close(flush=False)
            self._remove_partition_dirs(name, partitions)
            converted = _out_of_descriptors(exc, name, partitions)
            if converted is exc:
                raise
            raise converted from exc
        self._topics[name] = topic
        self.generation += 1
        return topic

    def create_topic(self, name: str, partitions: int = 1,
                     config: Mapping[str, Any] | None = None) -> None:
        """Creates a topic with ``partitions`` partitions and config overrides (Kafka's names,
        values as strings or numbers). Durable on return. Raises TopicExistsError,
        ConfigError for a bad name, count or config (naming the key and value)."""
        validate_topic_name(name)
        if name in INTERNAL_TOPICS or name.startswith("__"):
            raise errors.ConfigError(f"topic names starting with '__' are reserved for internal "
                                     f"topics; {name!r} cannot be created")
        if isinstance(partitions, bool) or not isinstance(partitions, int) or not (
                1 <= partitions <= MAX_PARTITIONS):
            raise errors.ConfigError(f"partitions must be an integer from 1 to {MAX_PARTITIONS}, "
                                     f"got {partitions!r}")
        with self._meta_lock:
            self._live()
            if name in self._topics:
                raise errors.TopicExistsError(f"topic {name!r} already exists")
            clash = name.replace(".", "_")
            for existing in self._topics:
                if existing.replace(".", "_") == clash:
                    raise errors.ConfigError(
                        f"topic {name!r} collides with existing topic {existing!r}: Kafka treats "
                        "'.' and '_' as the same in metric names, so it refuses both")
            self._create_topic(name, partitions, config)

    def delete_topic(self, name: str) -> None:
        """Deletes a topic, its data and its committed offsets. Durable on return."""
        with self._meta_lock:
            self._live()
            topic = self._topic(name)
            if topic.internal:
                raise errors.ConfigError(f"{name!r} is an internal topic and cannot be deleted")
            self._mark_deleting(topic)
            del self._topics[name]
            self.generation += 1
            with self.cleaner.paused(topic.partitions):
                for partition_log in topic.partitions:
                    partition_log.close(flush=False)
                self._remove_partition_dirs(name, len(topic.partitions))
            for path in (self._metadata_path(topic.topic_id),
                         self._metadata_path(topic.topic_id) + DELETING_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            fsync_directory(os.path.join(self.path, TOPICS_DIR))
            self.groups.forget_topic(name)

    def _mark_deleting(self, topic: Topic) -> None:
        """Records that the topic is being deleted, so a crash midway is finished at the
        next open: its metadata rewritten with state "deleting", or, when the disk is too
        full for a new file (and deleting a topic is how an operator frees it), renamed to
        ``<id>.json.deleting``, which needs no free block."""
        try:
            self._write_metadata(topic, state="deleting")
        except errors.NoSpaceError:
            path = self._metadata_path(topic.topic_id)
            os.replace(path, path + DELETING_SUFFIX)
            fsync_directory(os.path.dirname(path))

    def create_partitions(self, name: str, total: int) -> None:
        """Grows a topic to ``total`` partitions (Kafka's CreatePartitions: never shrinks).
        Keyed records then map to different partitions, as in Kafka."""
        with self._meta_lock:
            self._live()
            topic = self._topic(name)
            current = len(topic.partitions)
            if isinstance(total, bool) or not isinstance(total, int) or total <= current \
                    or total > MAX_PARTITIONS:
                raise errors.ConfigError(
                    f"topic {name!r} has {current} partitions; the new count must be an integer "
                    f"above that and at most {MAX_PARTITIONS}, got {total!r}")
            added: list[PartitionLog] = []
            try:
                for p in range(current, total):
                    added.append(self._open_partition(name, p, topic.config))
                partitions = topic.partitions + added
                self._write_metadata(Topic(name, topic.topic_id, topic.config, partitions,
                                           topic.internal))
            except BaseException as exc:
                for partition_log in added:  # nothing of the attempt stays open or on disk
                    partition_log.close(flush=False)
                self._remove_partition_dirs(name, total, start=current)
                converted = _out_of_descriptors(exc, name, total)
                if converted is exc:
                    raise
                raise converted from exc
            topic.partitions = partitions
            self.generation += 1

    def alter_topic_config(self, name: str, changes: Mapping[str, Any | None]) -> None:
        """Sets (or, with value None, removes) topic config overrides. Takes effect at once
        (segment sizes from the next roll). Durable on return."""
        with self._meta_lock:
            self._live()
            topic = self._topic(name)
            new = topic.config.with_changes(self.config.topic_defaults, changes)
            self._write_metadata(Topic(name, topic.topic_id, new, topic.partitions, topic.internal))
            topic.config = new
            for partition_log in topic.partitions:
                partition_log.update_config(new)
        self.cleaner.wake()  # a new policy or ratio may make logs cleanable now

    def _topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise errors.UnknownTopicError(
                f"unknown topic {name!r}; create it with create_topic({name!r}) (existing: "
                f"{', '.join(sorted(t for t in self._topics if t not in INTERNAL_TOPICS)) or 'none'})")
        return topic

    def topic(self, name: str) -> Topic:
        """The topic, creating it if auto.create.topics.enable is set. For the clients."""
        topic = self._topics.get(name)
        if topic is not None:
            return topic
        if self.config["auto.create.topics.enable"] and name not in INTERNAL_TOPICS:
            with self._meta_lock:
                self._live()
                topic = self._topics.get(name)
                if topic is None:
                    validate_topic_name(name)
                    topic = self._create_topic(name, self.config["num.partitions"], None)
                return topic
        self._live()
        return self._topic(name)

    def partition_log(self, name: str, partition: int, *, create: bool = True) -> PartitionLog:
        """The partition's log. With ``create`` (the default) an unknown topic is created if
        auto.create.topics.enable is set; readers pass False. Raises UnknownTopicError."""
        topic = self.topic(name) if create else self.get_topic(name)
        if isinstance(partition, bool) or not isinstance(partition, int) or not (
                0 <= partition < len(topic.partitions)):
            raise errors.UnknownTopicError(
                f"topic {name!r} has partitions 0..{len(topic.partitions) - 1}; there is no "
                f"partition {partition!r}")
        return topic.partitions[partition]

    def partition_log_or_none(self, name: str, partition: int) -> PartitionLog | None:
        """The partition's log, or None if the topic or partition does not exist."""
        try:
            return self.partition_log(name, partition, create=False)
        except errors.LogkernelError:
            return None

    def _transaction_state_logs(self, create: bool) -> list[PartitionLog]:
        """__transaction_state's logs, the topic created on first use when ``create``."""
        with self._meta_lock:
            topic = self._topics.get(TRANSACTION_STATE_TOPIC)
            if topic is None:
                if not create:
                    return []
                topic = self._create_topic(
                    TRANSACTION_STATE_TOPIC, self.config["transaction.state.log.num.partitions"],
                    {"cleanup.policy": "compact",
                     "segment.bytes": self.config["transaction.state.log.segment.bytes"]},
                    internal=True)
            return topic.partitions

    def get_topic(self, name: str) -> Topic:
        """The topic; raises UnknownTopicError (never creates one)."""
        self._live()
        return self._topic(name)

    def topic_by_id(self, topic_id: str) -> Topic | None:
        """The topic with this id (32 hex digits), or None. O(topics)."""
        for topic in list(self._topics.values()):
            if topic.topic_id == topic_id:
                return topic
        return None

    def topics(self, *, internal: bool = False) -> list[str]:
        """Topic names, sorted; internal topics (``__consumer_offsets``) only if asked."""
        return sorted(n for n, t in self._topics.items() if internal or not t.internal)

    def describe_topic(self, name: str) -> TopicDescription:
        topic = self._topic(name)
        partitions = []
        for p in topic.partitions:  # sizes are tracked: no segment is opened to describe it
            partitions.append(PartitionDescription(
                p.partition, p.log_start_offset, p.log_end_offset, p.high_watermark,
                p.recovery_point, p.segment_count, p.size_bytes()))
        return TopicDescription(name, topic.topic_id, topic.internal, partitions,
                                dict(topic.config.values), dict(topic.config.overrides))

    # ---- records -------------------------------------------------------------------

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Advances the partition's log start offset to ``before_offset`` (-1: the high
        watermark), deleting whole segments below it; returns the new log start offset.
        Kafka's DeleteRecords. Durable on return."""
        return self.partition_log(topic, partition).delete_records(before_offset)

    def beginning_offset(self, topic: str, partition: int) -> int:
        return self.partition_log(topic, partition).log_start_offset

    def end_offset(self, topic: str, partition: int) -> int:
        return self.partition_log(topic, partition).high_watermark

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= timestamp_ms, or None."""
        return self.partition_log(topic, partition).offset_for_timestamp(timestamp_ms)

    def producer(self, **options: Any) -> Any:
        """An embedded producer (see logkernel.producer.Producer for the options)."""
        from logkernel.producer import Producer
        return Producer(self, **options)

    def consumer(self, *topics: str, **options: Any) -> Any:
        """An embedded consumer (see logkernel.consumer.Consumer for the options)."""
        from logkernel.consumer import Consumer
        return Consumer(self, *topics, **options)

    def commit_offsets(self, group_id: str,
                       offsets: Mapping[tuple[str, int], int | OffsetAndMetadata], *,
                       member_id: str = "", instance_id: str | None = None,
                       generation: int = -1) -> None:
        """Stores committed offsets for a group (what a consumer's commit() does). Outside
        group membership (the defaults) this is allowed while the group has no members; a
        member passes its member id and generation, and a fenced one gets a
        GroupFencedError subclass. Raises UnknownTopicError for a partition that does not
        exist and ValueError for a negative offset or metadata over
        offset.metadata.max.bytes."""
        self._live()
        normalized: dict[tuple[str, int], OffsetAndMetadata] = {}
        now = int(time.time() * 1000)
        limit = self.config["offset.metadata.max.bytes"]
        for (topic, partition), value in offsets.items():
            self.partition_log(topic, partition, create=False)
            if isinstance(value, int):
                value = OffsetAndMetadata(value, "", -1, now)
            if value.offset < 0:
                raise ValueError(f"cannot commit negative offset {value.offset} for {topic}-{partition}")
            if len(value.metadata.encode()) > limit:
                raise ValueError(f"commit metadata for {topic}-{partition} is over "
                                 f"offset.metadata.max.bytes ({limit})")
            normalized[(topic, partition)] = value
        self.groups.commit_offsets(group_id, normalized, member_id=member_id,
                                   instance_id=instance_id, generation=generation)

    def committed_offsets(self, group_id: str) -> dict[tuple[str, int], OffsetAndMetadata]:
        """Every committed offset of a group, with its metadata string and leader epoch."""
        return dict(self.offsets.group_offsets(group_id))

    def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        stored = self.offsets.fetch(group_id, topic, partition)
        return None if stored is None else stored.offset

    # ---- consumer groups (what `logkernel groups` shows) -----------------------------

    def list_groups(self, states: Iterable[str] | None = None) -> list[Any]:
        """Every group (with members or committed offsets): GroupListing(group_id,
        protocol_type, state, group_type), optionally only those in ``states``."""
        self._live()
        return self.groups.list_groups(states=states)

    def describe_group(self, group_id: str) -> GroupDescription:
        """A group's state, members with their partitions, and its lag per partition.
        Raises GroupIdNotFoundError for a group with neither members nor offsets."""
        self._live()
        from logkernel.coordinator.assignors import decode_assignment
        members: list[GroupMemberInfo] = []
        group_type, protocol, generation = "classic", "", -1
        listing = self.groups.listing(group_id)
        if listing is None:
            raise errors.GroupIdNotFoundError(f"group {group_id!r} has no members and no "
                                              "committed offsets")
        if listing.group_type == "consumer":
            described = self.groups.describe_consumer_group(group_id)
            group_type, protocol, generation = "consumer", described.assignor_name, \
                described.group_epoch
            for m in described.members:
                owned: list[tuple[str, int]] = []
                for topic_id, partitions in m.assignment.items():
                    found = self.topic_by_id(topic_id.hex())
                    if found is not None:
                        owned.extend((found.name, p) for p in sorted(partitions))
                members.append(GroupMemberInfo(m.member_id, m.instance_id, m.client_id,
                                               m.client_host, sorted(owned)))
        else:
            classic = self.groups.describe_group(group_id)
            protocol, generation = classic.protocol_name, classic.generation_id
            for m in classic.members:
                parts: list[tuple[str, int]] = []
                if classic.protocol_type == "consumer" and m.assignment:
                    with contextlib.suppress(ValueError):
                        parts = sorted(decode_assignment(m.assignment).partitions)
                members.append(GroupMemberInfo(m.member_id, m.instance_id, m.client_id,
                                               m.client_host, parts))
        owners = {tp: m.member_id for m in members for tp in m.partitions}
        committed = self.committed_offsets(group_id)
        lag = []
        for topic, partition in sorted(set(committed) | set(owners)):
            found = self._topics.get(topic)
            if found is None or partition >= len(found.partitions):
                continue
            end = found.partitions[partition].high_watermark
            stored = committed.get((topic, partition))
            offset = stored.offset if stored is not None else None
            lag.append(PartitionLag(topic, partition, offset, end,
                                    None if offset is None else max(end - offset, 0),
                                    owners.get((topic, partition))))
        return GroupDescription(group_id, group_type, listing.state, listing.protocol_type,
                                protocol, generation, members, lag)

    def delete_group(self, group_id: str) -> None:
        """Deletes a group with no members and its committed offsets (NonEmptyGroupError
        while it has members, GroupIdNotFoundError if there is no such group)."""
        self._live()
        self.groups.delete_group(group_id)

    # ---- identities ----------------------------------------------------------------

    def _load_cluster_id(self) -> str:
        path = os.path.join(self.path, CLUSTER_ID_FILE)
        with contextlib.suppress(FileNotFoundError):
            value = Path(path).read_text().strip()
            if value:
                return value
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        write_atomically(path, value.encode() + b"\n")
        return value

    def expire_producer_ids(self, now_ms: int | None = None) -> int:
        """Drops producer state idle past producer.id.expiration.ms in every partition."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        expiration = self.config["producer.id.expiration.ms"]
        return sum(partition_log.expire_producers(now, expiration)
                   for partition_log in self._all_logs())

    def allocate_producer_id(self) -> int:
        """A producer id never handed out before by this data directory (Kafka's
        InitProducerId without a transactional id). Durable: ids survive restarts unused."""
        with self._meta_lock:
            self._live()
            if self._next_producer_id >= self._producer_id_block_end:
                path = os.path.join(self.path, PRODUCER_IDS_FILE)
                try:
                    start = int(Path(path).read_text().strip())
                except (FileNotFoundError, ValueError, UnicodeDecodeError) as exc:
                    # Missing (a new directory) or damaged: never hand out an id the
                    # partitions still track, or its sequence state would be taken over.
                    start = 1 + max((state.producer_id for partition_log in self._all_logs()
                                     for state in partition_log.producer_states()),
                                    default=-1)
                    if start or not isinstance(exc, FileNotFoundError):
                        log.warning("%s is %s; handing out producer ids from %d, past every "
                                    "id the partitions track", path,
                                    "missing" if isinstance(exc, FileNotFoundError)
                                    else "unreadable", start)
                write_atomically(path, f"{start + PRODUCER_ID_BLOCK}\n".encode())
                self._next_producer_id = start
                self._producer_id_block_end = start + PRODUCER_ID_BLOCK
            self._next_producer_id += 1
            return self._next_producer_id - 1

    # ---- compaction ----------------------------------------------------------------

    def compact(self, topic: str, partition: int | None = None, *, roll: bool = False,
                progress: Callable[[int, int], None] | None = None) -> list[CleanResult]:
        """Cleans a compacted topic's partitions (or one) now, whatever their dirty ratio,
        and returns what each cleaning did. The active segment is never cleaned; with
        ``roll`` it is rolled first, so every record older than min.compaction.lag.ms is
        compacted. ``progress(bytes done, bytes planned)`` is called as the cleaner reads.
        Raises ConfigError if the topic is not compacted."""
        self._live()
        t = self._topic(topic)
        if not t.config.compacts:
            raise errors.ConfigError(
                f"topic {topic!r} has cleanup.policy={t.config.cleanup_policy}; only compacted "
                "topics are cleaned. Set cleanup.policy=compact (or compact,delete) first.")
        if partition is None:
            logs = list(t.partitions)
        else:
            if not 0 <= partition < len(t.partitions):
                raise errors.UnknownTopicError(
                    f"topic {topic!r} has partitions 0..{len(t.partitions) - 1}, not {partition}")
            logs = [t.partitions[partition]]
        results: list[CleanResult] = []
        for partition_log in logs:
            if roll:
                partition_log.roll()
            results.extend(self.cleaner.clean_now(partition_log, progress=progress))
        return results

    def cleaner_stats(self, topic: str | None = None) -> CleanerStats:
        """The log cleaner's totals since open, and each compacted partition's dirty
        ratio, last cleaning and state (of one topic, if named)."""
        self._live()
        logs = None if topic is None else list(self._topic(topic).partitions)
        return self.cleaner.stats(logs)

    # ---- background tasks ----------------------------------------------------------

    def _all_logs(self) -> Iterable[PartitionLog]:
        return [p for topic in list(self._topics.values()) for p in topic.partitions]

    def run_retention(self, now_ms: int | None = None) -> int:
        """Applies retention to every partition now; returns segments deleted."""
        deleted = 0
        for partition_log in self._all_logs():
            with contextlib.suppress(errors.ClosedError):  # its topic was deleted meanwhile
                deleted += partition_log.apply_retention(now_ms)
        return deleted

    def flush(self) -> None:
        """fsyncs every partition and writes the checkpoints."""
        for partition_log in self._all_logs():
            try:
                partition_log.flush()
                partition_log.checkpoint()
            except errors.ClosedError:
                pass

    def _background_loop(self) -> None:
        flush_every = self.config["log.flush.scheduler.interval.ms"] / 1000
        retention_every = self.config["log.retention.check.interval.ms"] / 1000
        checkpoint_every = self.config["log.flush.offset.checkpoint.interval.ms"] / 1000
        now = time.monotonic()
        next_retention = now + retention_every
        next_checkpoint = now + checkpoint_every
        next_flush = now + flush_every
        offsets_expiry_every = self.config["offsets.retention.check.interval.ms"] / 1000
        next_offsets_expiry = now + offsets_expiry_every
        # Transactions: (interval s, next due, task), each run on its own schedule.
        txn_tasks = [
            [self.config["transaction.abort.timed.out.transaction.cleanup.interval.ms"] / 1000,
             now, self.transactions.abort_timed_out],
            [self.config["transaction.remove.expired.transaction.cleanup.interval.ms"] / 1000,
             now, self.transactions.expire_transactional_ids],
            [self.config["producer.id.expiration.check.interval.ms"] / 1000, now,
             self.expire_producer_ids]]
        for task in txn_tasks:
            task[1] = now + task[0]
        while not self._stop.wait(max(0.0, min(next_retention, next_checkpoint, next_flush,
                                               next_offsets_expiry, *(t[1] for t in txn_tasks))
                                      - time.monotonic())):
            now = time.monotonic()
            try:
                for task in txn_tasks:
                    if now >= task[1]:
                        task[1] = now + task[0]
                        task[2]()
                if now >= next_flush:
                    next_flush = now + flush_every
                    wall = int(time.time() * 1000)
                    for partition_log in self._all_logs():
                        partition_log.flush_if_due(wall)
                if now >= next_retention:
                    next_retention = now + retention_every
                    self.run_retention()
                if now >= next_offsets_expiry:
                    next_offsets_expiry = now + offsets_expiry_every
                    self.groups.expire_offsets()
                if now >= next_checkpoint:
                    next_checkpoint = now + checkpoint_every
                    for partition_log in self._all_logs():
                        partition_log.checkpoint()
            except errors.ClosedError:
                continue
            except Exception:  # keep the task alive; the next round retries
                log.exception("background task failed in %s", self.path)

    # ---- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Stops the background task, flushes and checkpoints every partition, marks the
        shutdown clean (so the next open skips recovery) and releases the directory."""
        with self._meta_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._background.join()
        self.cleaner.stop()
        self.transactions.close()
        self.groups.close()
        try:
            for partition_log in self._all_logs():
                partition_log.close(flush=True)
            try:
                write_atomically(os.path.join(self.path, CLEAN_SHUTDOWN_FILE), b"")
            except errors.NoSpaceError as exc:
                # Everything is flushed; the next open just re-validates what a crash
                # could have torn, as after one. Nothing to raise about.
                log.warning("closing %s: no room for the clean-shutdown marker (%s); the "
                            "next open will check the logs' tails", self.path, exc.strerror)
        finally:
            self._release_everything()
        with self.notifier.condition:
            self.notifier.condition.notify_all()

    def _release_everything(self) -> None:
        for partition_log in self._all_logs():
            partition_log.close(flush=False)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<logkernel.Engine {self.path!r} topics={len(self._topics)}>"


class _EngineTopics:
    """The engine's topics as the group coordinator sees them (ids and partition counts)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def lookup(self, name: str) -> tuple[bytes, int] | None:
        topic = self._engine._topics.get(name)
        return None if topic is None else (bytes.fromhex(topic.topic_id), len(topic.partitions))

    def name_for(self, topic_id: bytes) -> str | None:
        topic = self._engine.topic_by_id(topic_id.hex())
        return None if topic is None else topic.name

    def names(self) -> list[str]:
        return self._engine.topics()


def _out_of_descriptors(exc: BaseException, topic: str, partitions: int) -> BaseException:
    """EMFILE while opening partitions as a StorageError that says what to do, a full disk
    (a directory or file that could not be created) as a NoSpaceError; any other exception
    unchanged. Each open partition holds ~6 descriptors (its active segment's log and two
    indexes, and their durable copies for fsync)."""
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return errors.StorageError(
            exc.errno, f"opening {partitions} partitions of topic {topic!r} ran out of file "
            "descriptors (each open partition holds about 6); raise the limit (ulimit -n) or "
            "use fewer partitions. Nothing of this request was kept.", exc.filename)
    if isinstance(exc, OSError):
        return errors.no_space(exc, f"creating the partitions of topic {topic!r}")
    return exc


def open(path: str | os.PathLike[str], config: Mapping[str, Any] | None = None) -> Engine:
    """Opens (creating if needed) the data directory at ``path``; see ``Engine``."""
    return Engine(path, config)
