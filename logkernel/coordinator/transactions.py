"""The transaction coordinator: transactional ids, their producer ids and epochs, and the
transactions they run, stored in the compacted internal topic ``__transaction_state``.

One coordinator serves the embedded producers and the broker's clients alike. Its states
are Kafka's (TransactionState ids)::

    Empty -> Ongoing (AddPartitionsToTxn / AddOffsetsToTxn)
    Ongoing -> PrepareCommit | PrepareAbort (EndTxn, a timeout, a fencing InitProducerId)
    Prepare* -> Complete* once every partition of the transaction has its marker
    Complete* -> Ongoing (the next transaction) | Empty (InitProducerId)

One node writes every marker itself, synchronously, so the Prepare states last only while
the markers are appended, unless a marker (or the Complete record) meets a full disk: then
the transaction stays decided in Prepare*, and an EndTxn retry, an InitProducerId of the
id, the background task or the next open writes the markers still missing (Kafka's
coordinator retries its markers the same way). Each state change is one record (Kafka's TransactionLogKey v0 /
TransactionLogValue v0) appended to the id's partition before the change is visible:

    key   version int16 (0) | transactional id string
    value version int16 (0) | producer id int64 | producer epoch int16 | timeout ms int32 |
          state int8 | partitions (nullable array: topic string, partitions int32 array) |
          last update ms int64 | start ms int64

Unlike Kafka, Complete records keep the transaction's partitions: opening after a crash
compares them with the partitions' producer state, and writes any marker that did not
reach the disk, so no partition is left with a transaction nobody will close.

Fencing: every InitProducerId of a transactional id bumps its epoch; a transaction still
open is aborted first with a bumped epoch on its markers, so a zombie's late writes fail
the partitions' epoch check. A transaction open longer than its timeout is aborted the
same way by ``abort_timed_out`` (the engine's background task).
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from logkernel import errors
from logkernel.config import EngineConfig
from logkernel.coordinator.offsets import OFFSETS_TOPIC, OffsetStore, java_string_hash
from logkernel.log.partition import PartitionLog
from logkernel.records import decode_batch

log = logging.getLogger("logkernel.transactions")

TRANSACTION_STATE_TOPIC = "__transaction_state"

EMPTY = 0
ONGOING = 1
PREPARE_COMMIT = 2
PREPARE_ABORT = 3
COMPLETE_COMMIT = 4
COMPLETE_ABORT = 5
DEAD = 6
PREPARE_EPOCH_FENCE = 7
STATE_NAMES = {EMPTY: "Empty", ONGOING: "Ongoing", PREPARE_COMMIT: "PrepareCommit",
               PREPARE_ABORT: "PrepareAbort", COMPLETE_COMMIT: "CompleteCommit",
               COMPLETE_ABORT: "CompleteAbort", DEAD: "Dead",
               PREPARE_EPOCH_FENCE: "PrepareEpochFence"}

# Kafka's producer epochs are int16; the last usable one leaves room for a fencing bump.
MAX_EPOCH = 32767 - 1
COORDINATOR_EPOCH = 0   # one coordinator, never moved
LOAD_READ_BYTES = 1024 * 1024

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_VALUE_HEAD = struct.Struct(">hqhib")
_TIMES = struct.Struct(">qq")

TopicPartition = tuple[str, int]


@dataclass
class TransactionMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: int = EMPTY
    partitions: set[TopicPartition] = field(default_factory=set)
    start_ms: int = -1
    update_ms: int = -1
    # The epoch before the last bump that its producer asked for itself (InitProducerId
    # naming its id and epoch, KIP-360): the same request again is a retry whose answer was
    # lost, and gets the current epoch unchanged. -1 after a fresh instance or a fencing
    # bump (Kafka's lastProducerEpoch). Kept in memory only (Kafka's v0 value has no field).
    last_producer_epoch: int = -1

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, "Unknown")

    @property
    def open_partitions(self) -> set[TopicPartition]:
        """The partitions of the transaction in progress (none once it is complete; the
        stored record keeps them for recovery only)."""
        return self.partitions if self.state in (ONGOING, PREPARE_COMMIT, PREPARE_ABORT) else set()


@dataclass(frozen=True)
class TransactionListing:
    transactional_id: str
    producer_id: int
    state: str


def _now_ms() -> int:
    return int(time.time() * 1000)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _I16.pack(len(data)) + data


def _read_string(data: bytes, position: int) -> tuple[str, int]:
    (length,) = _I16.unpack_from(data, position)
    position += 2
    if length < 0 or position + length > len(data):
        raise ValueError("string length out of range")
    return data[position:position + length].decode("utf-8"), position + length


def encode_key(transactional_id: str) -> bytes:
    return _I16.pack(0) + _string(transactional_id)


def decode_key(data: bytes) -> str:
    (version,) = _I16.unpack_from(data, 0)
    if version != 0:
        raise ValueError(f"unknown transaction log key version {version}")
    return _read_string(data, 2)[0]


def encode_value(meta: TransactionMetadata) -> bytes:
    out = bytearray(_VALUE_HEAD.pack(0, meta.producer_id, meta.producer_epoch, meta.timeout_ms,
                                     meta.state))
    if not meta.partitions:
        out += _I32.pack(-1)
    else:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(meta.partitions):
            by_topic.setdefault(topic, []).append(partition)
        out += _I32.pack(len(by_topic))
        for topic, partitions in by_topic.items():
            out += _string(topic) + _I32.pack(len(partitions))
            out += b"".join(_I32.pack(p) for p in partitions)
    out += _TIMES.pack(meta.update_ms, meta.start_ms)
    return bytes(out)


def decode_value(transactional_id: str, data: bytes) -> TransactionMetadata:
    version, producer_id, epoch, timeout_ms, state = _VALUE_HEAD.unpack_from(data, 0)
    if version not in (0, 1):
        raise ValueError(f"unknown transaction log value version {version}")
    position = _VALUE_HEAD.size
    partitions: set[TopicPartition] = set()
    (count,) = _I32.unpack_from(data, position)
    position += 4
    for _ in range(max(count, 0)):
        topic, position = _read_string(data, position)
        (n,) = _I32.unpack_from(data, position)
        position += 4
        for i in range(n):
            partitions.add((topic, _I32.unpack_from(data, position + 4 * i)[0]))
        position += 4 * n
    update_ms, start_ms = _TIMES.unpack_from(data, position)
    return TransactionMetadata(transactional_id, producer_id, epoch, timeout_ms, state,
                               partitions, start_ms, update_ms)


class TransactionCoordinator:
    """See the module docstring. Thread safe: one lock serialises every request, the
    markers they write included."""

    def __init__(self, config: EngineConfig, *, state_logs: Callable[[bool], list[PartitionLog]],
                 partition_log: Callable[[str, int], PartitionLog | None],
                 offsets: OffsetStore, allocate_producer_id: Callable[[], int],
                 validate_group_commit: Callable[..., None] | None = None) -> None:
        self._state_logs = state_logs
        self._partition_log = partition_log
        self._offsets = offsets
        self._allocate_producer_id = allocate_producer_id
        self._validate_group_commit = validate_group_commit
        self.max_timeout_ms = config["transaction.max.timeout.ms"]
        self.id_expiration_ms = config["transactional.id.expiration.ms"]
        self.lock = threading.RLock()
        self._txns: dict[str, TransactionMetadata] = {}
        self._by_producer: dict[int, str] = {}
        self._closed = False
        for state_log in state_logs(False):
            self._load(state_log)
        for meta in list(self._txns.values()):
            if meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
                log.warning("transaction of %r was completing when the engine stopped; "
                            "finishing it", meta.transactional_id)
                try:
                    self._finish(meta)
                except errors.StorageError as exc:  # the background task tries again
                    log.warning("transaction of %r cannot be completed yet: %s",
                                meta.transactional_id, exc)

    # ---- the log -------------------------------------------------------------------

    def _load(self, partition_log: PartitionLog) -> None:
        for raw in partition_log.whole_batches(LOAD_READ_BYTES):
            batch = decode_batch(raw)
            if batch.is_control:
                continue
            for record in batch.records():
                if record.key is None:
                    continue
                try:
                    txn_id = decode_key(record.key)
                    if record.value is None:
                        self._forget(txn_id)
                    else:
                        self._remember(decode_value(txn_id, record.value))
                except (ValueError, struct.error, UnicodeDecodeError) as exc:
                    raise errors.StorageError(
                        0, f"{TRANSACTION_STATE_TOPIC} holds a record that is not transaction "
                        f"state ({exc}); the topic is reserved for it", None) from exc

    def _remember(self, meta: TransactionMetadata) -> None:
        old = self._txns.get(meta.transactional_id)
        if old is not None and self._by_producer.get(old.producer_id) == meta.transactional_id:
            del self._by_producer[old.producer_id]
        self._txns[meta.transactional_id] = meta
        self._by_producer[meta.producer_id] = meta.transactional_id

    def _forget(self, transactional_id: str) -> None:
        old = self._txns.pop(transactional_id, None)
        if old is not None:
            self._by_producer.pop(old.producer_id, None)

    def _state_log(self, transactional_id: str) -> PartitionLog:
        logs = self._state_logs(True)
        h = java_string_hash(transactional_id)
        return logs[(0 if h == -(1 << 31) else abs(h)) % len(logs)]

    def _store(self, meta: TransactionMetadata) -> None:
        """Appends the new state; it is visible only once stored."""
        self._state_log(meta.transactional_id).append_record(
            encode_key(meta.transactional_id), encode_value(meta), _now_ms())
        self._remember(meta)

    # ---- checks --------------------------------------------------------------------

    def _live(self) -> None:
        if self._closed:
            raise errors.ClosedError("the transaction coordinator is closed")

    @staticmethod
    def _check_id(transactional_id: Any) -> str:
        if not isinstance(transactional_id, str) or not transactional_id:
            raise errors.InvalidProducerIdMappingError(
                "a transactional id must be a non-empty string")
        return transactional_id

    def _current(self, transactional_id: str, producer_id: int, epoch: int) -> TransactionMetadata:
        """The id's metadata if (producer_id, epoch) is its current producer."""
        meta = self._txns.get(self._check_id(transactional_id))
        if meta is None or meta.state == DEAD:
            raise errors.InvalidProducerIdMappingError(
                f"transactional id {transactional_id!r} is unknown (never initialised, or "
                "expired): call init_transactions first")
        if meta.producer_id != producer_id:
            raise errors.InvalidProducerIdMappingError(
                f"transactional id {transactional_id!r} belongs to producer id "
                f"{meta.producer_id}, not {producer_id}: call init_transactions again")
        if meta.producer_epoch != epoch:
            raise errors.ProducerFencedError(
                f"producer {producer_id} of {transactional_id!r} is at epoch "
                f"{meta.producer_epoch}, this request carries {epoch}: a newer producer "
                "with this transactional id took over (or the transaction timed out and was "
                "aborted). Close this producer.")
        if meta.state in (PREPARE_COMMIT, PREPARE_ABORT, PREPARE_EPOCH_FENCE):
            raise errors.ConcurrentTransactionsError(
                f"the previous transaction of {transactional_id!r} is still completing; retry")
        return meta

    # ---- requests ------------------------------------------------------------------

    def init_producer_id(self, transactional_id: str | None, timeout_ms: int,
                         producer_id: int = -1, producer_epoch: int = -1) -> tuple[int, int]:
        """InitProducerId: (producer id, epoch). Without a transactional id, a fresh id at
        epoch 0 (or, given one, the same id at the next epoch). With one: the id's producer
        at its next epoch, after aborting a transaction it left open (fencing the old
        producer). ``producer_id``/``producer_epoch`` (KIP-360) must then name the current
        producer (bumped) or the epoch it bumped from (a retry: the current epoch, unchanged);
        anything else is fenced. As in Kafka, a producer whose transaction timed out was
        fenced by the abort's epoch bump and stays fenced."""
        if transactional_id is None:
            if producer_id >= 0 and 0 <= producer_epoch < MAX_EPOCH:
                return producer_id, producer_epoch + 1
            return self._allocate_producer_id(), 0
        self._check_id(transactional_id)
        if not 0 < timeout_ms <= self.max_timeout_ms:
            raise errors.InvalidTransactionTimeoutError(
                f"transaction timeout {timeout_ms} ms is not in 1..{self.max_timeout_ms} "
                "(transaction.max.timeout.ms); lower transaction.timeout.ms")
        now = _now_ms()
        with self.lock:
            self._live()
            meta = self._txns.get(transactional_id)
            if meta is None or meta.state == DEAD:
                if producer_id >= 0:
                    raise errors.InvalidProducerIdMappingError(
                        f"transactional id {transactional_id!r} is unknown; initialise "
                        "without a producer id")
                meta = TransactionMetadata(transactional_id, self._allocate_producer_id(), 0,
                                           timeout_ms, EMPTY, set(), -1, now)
                self._store(meta)
                log.info("transactional id %r: producer id %d, epoch 0", transactional_id,
                         meta.producer_id)
                return meta.producer_id, 0
            if producer_id >= 0:
                if producer_id == meta.producer_id and producer_epoch == meta.last_producer_epoch \
                        and meta.state not in (ONGOING, PREPARE_COMMIT, PREPARE_ABORT):
                    return meta.producer_id, meta.producer_epoch  # a retry of that bump
                if producer_id != meta.producer_id or producer_epoch != meta.producer_epoch:
                    raise errors.ProducerFencedError(
                        f"producer {producer_id} epoch {producer_epoch} of {transactional_id!r} "
                        f"was fenced: the id is now at producer {meta.producer_id} epoch "
                        f"{meta.producer_epoch}")
            if meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
                self._finish(meta)  # its markers met a full disk; raises while it still is
                meta = self._txns[transactional_id]
            if meta.state == PREPARE_EPOCH_FENCE:
                raise errors.ConcurrentTransactionsError(
                    f"the previous transaction of {transactional_id!r} is still completing; retry")
            if meta.state == ONGOING:
                log.info("transactional id %r re-initialised with a transaction open: "
                         "aborting it and fencing producer %d epoch %d", transactional_id,
                         meta.producer_id, meta.producer_epoch)
                self._abort_fencing(meta, now)
                meta = self._txns[transactional_id]
            # A fresh instance (no producer id given) fences every earlier one for good.
            new = dataclasses.replace(meta, timeout_ms=timeout_ms, state=EMPTY, partitions=set(),
                                      start_ms=-1, update_ms=now,
                                      last_producer_epoch=meta.producer_epoch
                                      if producer_id >= 0 else -1)
            if meta.producer_epoch >= MAX_EPOCH:
                new.producer_id, new.producer_epoch = self._allocate_producer_id(), 0
            else:
                new.producer_epoch = meta.producer_epoch + 1
            self._store(new)
            return new.producer_id, new.producer_epoch

    def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                       partitions: Iterable[TopicPartition]) -> None:
        """AddPartitionsToTxn: the partitions join the transaction (starting it). Unknown
        partitions must be refused by the caller first (UNKNOWN_TOPIC_OR_PARTITION)."""
        wanted = set(partitions)
        with self.lock:
            self._live()
            meta = self._current(transactional_id, producer_id, producer_epoch)
            if meta.state == ONGOING and wanted <= meta.partitions:
                return
            now = _now_ms()
            new = dataclasses.replace(meta, partitions=meta.partitions | wanted, update_ms=now)
            if meta.state != ONGOING:
                new.state = ONGOING
                new.start_ms = now
                new.partitions = wanted
            self._store(new)

    def add_offsets(self, transactional_id: str, producer_id: int, producer_epoch: int,
                    group_id: str) -> None:
        """AddOffsetsToTxn: the group's __consumer_offsets partition joins the transaction."""
        self.add_partitions(transactional_id, producer_id, producer_epoch,
                            [(OFFSETS_TOPIC, self._offsets.partition_for(group_id))])

    def txn_offset_commit(self, transactional_id: str, group_id: str, producer_id: int,
                          producer_epoch: int, offsets: dict[TopicPartition, Any], *,
                          member_id: str = "", instance_id: str | None = None,
                          generation: int = -1) -> None:
        """TxnOffsetCommit: offsets that become the group's when the transaction commits.
        The group must have been added (AddOffsetsToTxn) to this producer's transaction."""
        with self.lock:
            self._live()
            meta = self._current(transactional_id, producer_id, producer_epoch)
            offsets_partition = (OFFSETS_TOPIC, self._offsets.partition_for(group_id))
            if meta.state != ONGOING or offsets_partition not in meta.partitions:
                raise errors.InvalidTxnStateError(
                    f"group {group_id!r} is not part of the open transaction of "
                    f"{transactional_id!r}: call send_offsets_to_transaction "
                    "(AddOffsetsToTxn) first")
            if self._validate_group_commit is not None and (generation >= 0 or member_id):
                self._validate_group_commit(group_id, member_id=member_id,
                                            instance_id=instance_id, generation=generation)
            self._offsets.commit_transactional(group_id, offsets, producer_id, producer_epoch)

    def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int,
                commit: bool) -> None:
        """EndTxn: commits or aborts the open transaction, markers written to every
        partition before this returns. A retry of a finished EndTxn with the same outcome
        succeeds; a retry of one whose markers could not all be written (a full disk)
        writes the missing ones, then completes it."""
        with self.lock:
            self._live()
            meta = self._txns.get(self._check_id(transactional_id))
            if meta is not None and meta.state in (PREPARE_COMMIT, PREPARE_ABORT) and \
                    meta.producer_id == producer_id and meta.producer_epoch == producer_epoch:
                if (meta.state == PREPARE_COMMIT) != commit:
                    raise errors.InvalidTxnStateError(
                        f"cannot {'commit' if commit else 'abort'}: the transaction of "
                        f"{transactional_id!r} is already decided ({meta.state_name})")
                self._finish(meta)
                return
            meta = self._current(transactional_id, producer_id, producer_epoch)
            if meta.state == ONGOING:
                self._complete(meta, commit, _now_ms())
                return
            if (meta.state == COMPLETE_COMMIT and commit) or (meta.state == COMPLETE_ABORT
                                                              and not commit):
                return  # a retry
            what = "commit" if commit else "abort"
            raise errors.InvalidTxnStateError(
                f"cannot {what}: transactional id {transactional_id!r} has no open "
                f"transaction (state {meta.state_name})")

    def verify(self, producer_id: int, producer_epoch: int, topic: str, partition: int) -> None:
        """Raises unless (topic, partition) is in the producer's open transaction at that
        epoch: transactional writes elsewhere would open a transaction nobody closes."""
        with self.lock:
            txn_id = self._by_producer.get(producer_id)
            meta = self._txns.get(txn_id) if txn_id is not None else None
            if meta is None:
                raise errors.InvalidProducerIdMappingError(
                    f"producer id {producer_id} has no transactional id here; initialise "
                    "the transactional producer first")
            if producer_epoch < meta.producer_epoch:
                raise errors.InvalidProducerEpochError(
                    f"producer {producer_id} epoch {producer_epoch} is fenced (now epoch "
                    f"{meta.producer_epoch})")
            if meta.state != ONGOING or (topic, partition) not in meta.partitions:
                raise errors.InvalidTxnStateError(
                    f"{topic}-{partition} is not part of producer {producer_id}'s open "
                    "transaction; add it (AddPartitionsToTxn) before writing")

    # ---- completion ----------------------------------------------------------------

    def _complete(self, meta: TransactionMetadata, commit: bool, now: int,
                  epoch: int | None = None) -> None:
        """Prepare, markers to every partition, Complete: each step stored before the
        next. ``epoch`` is the (bumped) epoch to stamp on the markers."""
        epoch = meta.producer_epoch if epoch is None else epoch
        prepared = dataclasses.replace(meta, producer_epoch=epoch, update_ms=now,
                                       state=PREPARE_COMMIT if commit else PREPARE_ABORT)
        if epoch != meta.producer_epoch:
            prepared.last_producer_epoch = -1  # fenced for good
        self._store(prepared)
        self._write_markers(prepared, retry=False)
        self._store_complete(prepared)

    def _finish(self, prepared: TransactionMetadata) -> None:
        """Completes a decided transaction whose markers were not all written (a marker or
        the Complete record met a full disk): the partitions still holding it open get
        their marker, then Complete is stored. Raises as ``_complete`` does, the state left
        at Prepare* for the next try (an EndTxn retry, the background task, or open)."""
        self._write_markers(prepared, retry=True)
        self._store_complete(prepared)

    def _store_complete(self, prepared: TransactionMetadata) -> None:
        done = dataclasses.replace(prepared, update_ms=_now_ms(),
                                   state=COMPLETE_COMMIT if prepared.state == PREPARE_COMMIT
                                   else COMPLETE_ABORT)
        self._store(done)

    def _write_markers(self, prepared: TransactionMetadata, *, retry: bool) -> None:
        """The transaction's marker to each of its partitions, at the prepared epoch. On a
        retry only partitions that still hold the transaction open get one: the others
        have theirs (a second marker would be harmless, but is a record nobody needs)."""
        commit = prepared.state == PREPARE_COMMIT
        producer_id = prepared.producer_id
        for topic, partition in sorted(prepared.partitions):
            partition_log = self._partition_log(topic, partition)
            if partition_log is None:
                continue  # the topic was deleted: nothing to close there
            try:
                if retry and producer_id not in partition_log.open_transactions():
                    continue
                partition_log.append_marker(producer_id, prepared.producer_epoch, commit,
                                            COORDINATOR_EPOCH)
            except errors.ClosedError:
                continue
            if topic == OFFSETS_TOPIC:
                self._offsets.complete_transaction(producer_id, partition, commit)

    def _abort_fencing(self, meta: TransactionMetadata, now: int) -> None:
        """Aborts an open transaction with the epoch bumped, fencing its producer."""
        self._complete(meta, False, now, epoch=min(meta.producer_epoch + 1, MAX_EPOCH + 1))

    def abort_timed_out(self, now_ms: int | None = None) -> int:
        """Aborts transactions open longer than their timeout (fencing their producers), and
        finishes decided ones whose markers a full disk refused. Returns how many it
        aborted."""
        now = _now_ms() if now_ms is None else now_ms
        count = 0
        with self.lock:
            if self._closed:
                return 0
            for meta in list(self._txns.values()):
                if meta.state in (PREPARE_COMMIT, PREPARE_ABORT):
                    try:
                        self._finish(meta)
                    except errors.StorageError as exc:
                        log.warning("transaction of %r (%s) still cannot be completed: %s",
                                    meta.transactional_id, meta.state_name, exc)
                    continue
                if meta.state == ONGOING and now - meta.start_ms > meta.timeout_ms:
                    log.warning("transaction of %r (producer %d epoch %d) timed out after %d "
                                "ms; aborting it", meta.transactional_id, meta.producer_id,
                                meta.producer_epoch, meta.timeout_ms)
                    self._abort_fencing(meta, now)
                    count += 1
        return count

    def expire_transactional_ids(self, now_ms: int | None = None) -> int:
        """Forgets ids with no transaction open that were not used for
        transactional.id.expiration.ms (a tombstone each)."""
        now = _now_ms() if now_ms is None else now_ms
        count = 0
        with self.lock:
            if self._closed:
                return 0
            for meta in list(self._txns.values()):
                if meta.state in (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT) and \
                        now - meta.update_ms >= self.id_expiration_ms:
                    self._state_log(meta.transactional_id).append_record(
                        encode_key(meta.transactional_id), None, now)
                    self._forget(meta.transactional_id)
                    log.info("transactional id %r expired", meta.transactional_id)
                    count += 1
        return count

    def close_dangling(self, logs: Iterable[PartitionLog]) -> int:
        """At open: closes transactions that partitions hold open but the coordinator has
        finished (a crash lost their markers) or never knew. Returns markers written."""
        written = 0
        with self.lock:
            for partition_log in logs:
                for producer_id, first in partition_log.open_transactions().items():
                    txn_id = self._by_producer.get(producer_id)
                    meta = self._txns.get(txn_id) if txn_id is not None else None
                    key = (partition_log.topic, partition_log.partition)
                    if meta is not None and meta.state == ONGOING and key in meta.partitions:
                        continue
                    commit = meta is not None and meta.state == COMPLETE_COMMIT and \
                        key in meta.partitions
                    epoch = meta.producer_epoch if meta is not None else -1
                    states = {e.producer_id: e.epoch for e in partition_log.producer_states()}
                    epoch = max(epoch, states.get(producer_id, 0))
                    log.warning("%s: transaction of producer %d open since offset %d had no "
                                "marker; writing %s", partition_log.name, producer_id, first,
                                "COMMIT" if commit else "ABORT")
                    partition_log.append_marker(producer_id, epoch, commit, COORDINATOR_EPOCH)
                    if partition_log.topic == OFFSETS_TOPIC:
                        self._offsets.complete_transaction(producer_id, partition_log.partition,
                                                           commit)
                    written += 1
        return written

    # ---- admin ---------------------------------------------------------------------

    def list_transactions(self, states: Iterable[str] = (), producer_ids: Iterable[int] = ()
                          ) -> list[TransactionListing]:
        state_filter = set(states)
        pid_filter = set(producer_ids)
        with self.lock:
            return [TransactionListing(m.transactional_id, m.producer_id, m.state_name)
                    for m in sorted(self._txns.values(), key=lambda m: m.transactional_id)
                    if (not state_filter or m.state_name in state_filter)
                    and (not pid_filter or m.producer_id in pid_filter)]

    def running_ms(self, transactional_id: str, now_ms: int | None = None) -> int:
        """How long the id's open transaction has run (-1 when none is open)."""
        with self.lock:
            meta = self._txns.get(transactional_id)
            if meta is None or meta.state != ONGOING:
                return -1
            return (_now_ms() if now_ms is None else now_ms) - meta.start_ms

    def describe(self, transactional_id: str) -> TransactionMetadata | None:
        with self.lock:
            meta = self._txns.get(transactional_id)
            return dataclasses.replace(meta, partitions=set(meta.partitions)) if meta else None

    def close(self) -> None:
        with self.lock:
            self._closed = True
