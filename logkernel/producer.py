"""The embedded producer: appends records to the engine's partition logs in this process.

Sends are synchronous: when ``send`` returns, the record is in the log at the offset it
reports and readable by consumers. It is durable (fsynced) on return only if the topic's
flush.messages says so (flush.messages=1: every send returns after fsync; concurrent sends
share one fsync). ``acks`` is accepted for compatibility with Kafka producers' settings;
with one replica in-process every value means "appended before send returns".

Partitioning is the Java client's: a keyed record goes to
``(murmur2(key) & 0x7fffffff) % partitions``, so keys keep their partitions when the
application moves to an Apache Kafka cluster with the same partition count. Keyless
records stick to one partition for ``batch_size`` bytes, then move to the next (Kafka's
sticky partitioner, round robin instead of random so tests are repeatable).

Costs: ``send`` is one C call that encodes the record as its own batch straight into the
segment's map, plus the Python around it (~1 us). ``send_batch`` encodes one batch per
partition in C and appends it in one call: use it when records come in groups.

Idempotence and transactions, as Kafka's producer has them:

- ``enable_idempotence=True``: the producer gets a producer id, and its batches carry it
  with an epoch and per-partition sequence numbers, checked by the partition (a record set
  is never written twice, and a second instance of the id fences this one).
- ``transactional_id="..."`` (implies idempotence): ``init_transactions()`` once, then
  ``begin_transaction()``, sends (to any topics), optionally
  ``send_offsets_to_transaction(offsets, consumer.group_metadata())``, and
  ``commit_transaction()`` or ``abort_transaction()``. read_committed consumers see a
  transaction's records only once it commits, never an aborted one. Another producer
  initialising the same transactional id fences this one (ProducerFencedError), aborting
  its open transaction; a transaction open past ``transaction_timeout_ms`` is aborted by
  the engine. An idempotent ``send`` is still one C call, after a check of the
  partition's producer state in Python.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from logkernel import _binding, compression, errors
from logkernel.records import Header, encode_batch

if TYPE_CHECKING:
    # numpy only for annotations: send_batch imports it when called, so importing the
    # producer (which `import logkernel` does) costs no numpy import, and send, which
    # returns no arrays, never needs it.
    import numpy as np

    from logkernel.engine import Engine, Topic

# Kafka's producer default batch.size: how many bytes of keyless records go to one
# partition before the sticky partitioner moves on.
DEFAULT_BATCH_SIZE = 16384
_ACKS = (0, 1, -1, "0", "1", "-1", "all")
# Kafka's producer default transaction.timeout.ms.
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000
SEQUENCE_MODULUS = 2**31  # sequence numbers wrap from 2^31-1 to 0


class RecordMetadata(NamedTuple):
    """Where a record was stored."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


_make_metadata = functools.partial(tuple.__new__, RecordMetadata)


class BatchMetadata:
    """Where ``send_batch`` stored its records, as columns: record i went to
    ``partitions[i]`` at ``offsets[i]`` (numpy arrays, input order). Indexing or iterating
    gives RecordMetadata; the arrays avoid building one object per record."""

    __slots__ = ("offsets", "partitions", "timestamp_ms", "topic")

    def __init__(self, topic: str, partitions: np.ndarray, offsets: np.ndarray,
                 timestamp_ms: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self.offsets = offsets
        self.timestamp_ms = timestamp_ms

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> RecordMetadata:
        return _make_metadata((self.topic, int(self.partitions[i]), int(self.offsets[i]),
                               self.timestamp_ms))

    def __iter__(self) -> Iterator[RecordMetadata]:
        return map(_make_metadata, zip(itertools.repeat(self.topic), self.partitions.tolist(),
                                       self.offsets.tolist(), itertools.repeat(self.timestamp_ms)))

    def __repr__(self) -> str:
        return f"BatchMetadata(topic={self.topic!r}, records={len(self)})"


class Producer:
    """Appends records to topics of one engine. Thread-safe: many threads may share one."""

    def __init__(self, engine: Engine, *, acks: int | str = 1,
                 compression_type: str | None = None, linger_ms: int = 0,
                 batch_size: int = DEFAULT_BATCH_SIZE, client_id: str = "logkernel-producer",
                 compression_level: int | None = None, enable_idempotence: bool | None = None,
                 transactional_id: str | None = None,
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS) -> None:
        if acks not in _ACKS:
            raise errors.ConfigError(f"invalid value {acks!r} for acks: expected 0, 1, -1 or 'all'")
        if compression_type not in (None, "none", "gzip", "snappy", "lz4", "zstd"):
            raise errors.ConfigError(f"invalid value {compression_type!r} for compression_type: "
                                     "expected None, 'gzip', 'snappy', 'lz4' or 'zstd'")
        if isinstance(linger_ms, bool) or not isinstance(linger_ms, int) or linger_ms != 0:
            raise errors.ConfigError(
                f"invalid value {linger_ms!r} for linger_ms: embedded sends append synchronously, "
                "so only 0 is meaningful; to batch records, use send_batch")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise errors.ConfigError(f"invalid value {batch_size!r} for batch_size: expected a "
                                     "positive integer")
        self._engine = engine
        self.client_id = client_id
        self._codec = compression.codec_id(compression_type or "none")
        self._level = compression_level
        self._batch_size = batch_size
        self._closed = False
        self._sticky: dict[str, list[int]] = {}  # topic -> [partition, bytes sent to it]
        if transactional_id is not None and (not isinstance(transactional_id, str)
                                             or not transactional_id):
            raise errors.ConfigError(f"invalid value {transactional_id!r} for transactional_id: "
                                     "a non-empty string")
        if transactional_id is not None and enable_idempotence is False:
            raise errors.ConfigError("a transactional producer is idempotent: leave "
                                     "enable_idempotence unset (or True) with transactional_id")
        if isinstance(transaction_timeout_ms, bool) or not isinstance(transaction_timeout_ms, int) \
                or transaction_timeout_ms < 1:
            raise errors.ConfigError(f"invalid value {transaction_timeout_ms!r} for "
                                     "transaction_timeout_ms: a positive integer")
        self.transactional_id = transactional_id
        self._idempotent = bool(enable_idempotence) or transactional_id is not None
        self._transaction_timeout_ms = transaction_timeout_ms
        self._lock = threading.Lock()  # sequence numbers follow the order of appends
        self._producer_id = -1
        self._epoch = -1
        self._sequences: dict[tuple[str, int], int] = {}
        # "uninitialized" -> "ready" <-> "in_transaction"; "fenced" is final
        self._txn_state = "uninitialized"
        self._txn_partitions: set[tuple[str, int]] = set()
        self._txn_offsets_sent = False
        if self._idempotent and transactional_id is None:
            self._producer_id, self._epoch = engine.transactions.init_producer_id(None, 0)

    # ---- partitioning --------------------------------------------------------------

    def _sticky_partition(self, topic: str, partitions: int, size: int) -> int:
        state = self._sticky.get(topic)
        if state is None:
            state = self._sticky[topic] = [0, 0]
        if state[1] >= self._batch_size or state[0] >= partitions:
            state[0] = (state[0] + 1) % partitions
            state[1] = 0
        state[1] += size
        return state[0]

    # ---- sending -------------------------------------------------------------------

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
             headers: Sequence[Header] | None = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> RecordMetadata:
        """Appends one record; returns its RecordMetadata once appended (and fsynced, if the
        topic's flush.messages asks). Raises UnknownTopicError, RecordTooLargeError,
        TypeError for keys/values that are not bytes, ClosedError after close."""
        if self._closed:
            raise errors.ClosedError("this producer is closed")
        t = self._engine._topics.get(topic) or self._engine.topic(topic)
        logs = t.partitions
        if partition is None:
            if key is not None:
                partition = _binding.partition_for_key(key, len(logs))
            else:
                partition = self._sticky_partition(topic, len(logs),
                                                   len(value) if value is not None else 0)
        elif not (type(partition) is int and 0 <= partition < len(logs)):
            raise errors.UnknownTopicError(
                f"topic {topic!r} has partitions 0..{len(logs) - 1}; there is no partition "
                f"{partition!r}")
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        elif type(timestamp_ms) is not int or timestamp_ms < 0:
            raise ValueError(f"timestamp_ms must be a non-negative int, got {timestamp_ms!r}")
        if self._codec or t.config.compression_type not in ("producer", "uncompressed"):
            first, stored = self._append_batch(t, partition, [value], [key], [headers], timestamp_ms)
            return _make_metadata((topic, partition, first, stored))
        if self._idempotent:
            offset, stored = self._send_idempotent(t, partition, key, value, headers, timestamp_ms)
            return _make_metadata((topic, partition, offset, stored))
        if headers:
            blob, count = _binding.encode_headers(headers)
        else:
            blob, count = None, 0
        try:
            offset, stored = logs[partition].append_record(key, value, timestamp_ms, blob, count)
        except TypeError:
            key, value = _as_bytes(key, "key"), _as_bytes(value, "value")
            offset, stored = logs[partition].append_record(key, value, timestamp_ms, blob, count)
        except errors.ClosedError:
            self._engine._live()
            raise errors.UnknownTopicError(f"topic {topic!r} was deleted") from None
        return _make_metadata((topic, partition, offset, stored))

    def send_batch(self, topic: str, values: Sequence[bytes | None],
                   keys: Sequence[bytes | None] | None = None, partition: int | None = None,
                   headers: Sequence[Sequence[Header] | None] | None = None,
                   timestamp_ms: int | None = None) -> BatchMetadata:
        """Appends many records, one batch per partition they go to (keyed records by key,
        keyless ones to one sticky partition, or all to ``partition``), and returns where
        they went (BatchMetadata: offsets and partitions in input order). Each batch is
        all-or-nothing and must fit max.message.bytes (1 MiB by default: about 9,000
        records of 100 bytes). O(total bytes)."""
        import numpy as np  # once per call (~0.2 us once loaded), for the result columns

        if self._closed:
            raise errors.ClosedError("this producer is closed")
        count = len(values)
        if keys is not None and len(keys) != count:
            raise ValueError(f"keys has {len(keys)} entries for {count} values")
        if headers is not None and len(headers) != count:
            raise ValueError(f"headers has {len(headers)} entries for {count} values")
        t = self._engine._topics.get(topic) or self._engine.topic(topic)
        n = len(t.partitions)
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        if count == 0:
            return BatchMetadata(topic, np.empty(0, np.int32), np.empty(0, np.int64), timestamp_ms)
        if partition is not None:
            if not (type(partition) is int and 0 <= partition < n):
                raise errors.UnknownTopicError(
                    f"topic {topic!r} has partitions 0..{n - 1}; there is no partition {partition!r}")
            target = partition
        elif keys is None or n == 1:
            target = self._sticky_partition(topic, n, 0) if keys is None else 0
            self._sticky_partition(topic, n, self._batch_size)  # the next batch moves on
        else:
            target = -1
        if target >= 0:
            first, stored = self._append_batch(t, target, values, keys, headers, timestamp_ms)
            return BatchMetadata(topic, np.full(count, target, np.int32),
                                 np.arange(first, first + count, dtype=np.int64), stored)
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):  # type: ignore[arg-type]
            p = (_binding.partition_for_key(key, n) if key is not None
                 else self._sticky_partition(topic, n, 0))
            groups.setdefault(p, []).append(i)
        partitions = np.empty(count, np.int32)
        offsets = np.empty(count, np.int64)
        stored = timestamp_ms
        for p, indexes in groups.items():
            first, stored = self._append_batch(
                t, p, [values[i] for i in indexes], [keys[i] for i in indexes],  # type: ignore[index]
                None if headers is None else [headers[i] for i in indexes], timestamp_ms)
            partitions[indexes] = p
            offsets[indexes] = np.arange(first, first + len(indexes), dtype=np.int64)
        return BatchMetadata(topic, partitions, offsets, stored)

    def _append_batch(self, t: Topic, partition: int, values: Sequence[bytes | None],
                      keys: Sequence[bytes | None] | None,
                      headers: Sequence[Sequence[Header] | None] | None,
                      timestamp_ms: int) -> tuple[int, int]:
        """Encodes and appends one batch; returns (first offset, timestamp stored)."""
        topic_codec = compression.topic_codec(t.config.compression_type)
        codec = self._codec if topic_codec is None else topic_codec
        if self._idempotent:
            return self._append_idempotent(t, partition, values, keys, headers, timestamp_ms,
                                           codec)
        batch = encode_batch(values, keys=keys, headers=headers, timestamps=timestamp_ms,
                             compression_type=codec, compression_level=self._level)
        try:
            first, _, append_time = t.partitions[partition].append(batch, validated=True,
                                                                   max_timestamp=timestamp_ms)
        except errors.ClosedError:
            self._engine._live()
            raise errors.UnknownTopicError(f"topic {t.name!r} was deleted") from None
        return first, append_time if append_time >= 0 else timestamp_ms

    def _append_idempotent(self, t: Topic, partition: int, values: Sequence[bytes | None],
                           keys: Sequence[bytes | None] | None,
                           headers: Sequence[Sequence[Header] | None] | None, timestamp_ms: int,
                           codec: int) -> tuple[int, int]:
        """One batch with this producer's id, epoch and the partition's next sequence."""

        def append(sequence: int) -> tuple[int, int]:
            batch = encode_batch(values, keys=keys, headers=headers, timestamps=timestamp_ms,
                                 compression_type=codec, compression_level=self._level,
                                 producer_id=self._producer_id, producer_epoch=self._epoch,
                                 base_sequence=sequence,
                                 transactional=self.transactional_id is not None)
            first, _, append_time = t.partitions[partition].append(
                batch, validated=True, max_timestamp=timestamp_ms)
            return first, append_time if append_time >= 0 else timestamp_ms

        return self._in_sequence(t, partition, len(values), append)

    def _send_idempotent(self, t: Topic, partition: int, key: bytes | None, value: bytes | None,
                         headers: Sequence[Header] | None, timestamp_ms: int) -> tuple[int, int]:
        """One record with this producer's id, epoch and the partition's next sequence,
        encoded in C straight into the segment (as ``send``'s plain path)."""
        blob, count = _binding.encode_headers(headers) if headers else (None, 0)
        key, value = _as_bytes(key, "key"), _as_bytes(value, "value")
        return self._in_sequence(t, partition, 1, lambda sequence: t.partitions[partition].append_record(
            key, value, timestamp_ms, blob, count,
            producer=(self._producer_id, self._epoch, sequence),
            transactional=self.transactional_id is not None))

    def _in_sequence(self, t: Topic, partition: int, records: int,
                     append: Callable[[int], tuple[int, int]]) -> tuple[int, int]:
        """Calls ``append(sequence)`` with the partition's next sequence (in a transaction,
        after adding the partition to it) and moves the sequence past ``records``. The lock
        keeps sequences in append order."""
        tp = (t.name, partition)
        with self._lock:
            self._join_transaction(tp)
            sequence = self._sequences.get(tp, 0)
            try:
                result: tuple[int, int] = self._call(append, sequence)
            except errors.ClosedError:
                self._engine._live()
                raise errors.UnknownTopicError(f"topic {t.name!r} was deleted") from None
            self._sequences[tp] = (sequence + records) % SEQUENCE_MODULUS
        return result

    def _join_transaction(self, tp: tuple[str, int]) -> None:
        """In a transaction, adds the partition to it before the first write there."""
        if self.transactional_id is None:
            return
        self._require_state("in_transaction", "send")
        if tp not in self._txn_partitions:
            self._call(self._engine.transactions.add_partitions, self.transactional_id,
                       self._producer_id, self._epoch, [tp])
            self._txn_partitions.add(tp)

    # ---- transactions --------------------------------------------------------------

    @property
    def producer_id(self) -> int:
        return self._producer_id

    @property
    def producer_epoch(self) -> int:
        return self._epoch

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Calls the engine; a fencing answer makes this producer unusable, as in Kafka."""
        try:
            return function(*args, **kwargs)
        except errors.InvalidProducerEpochError as exc:
            self._txn_state = "fenced"
            if isinstance(exc, errors.ProducerFencedError):
                raise
            raise errors.ProducerFencedError(
                f"{exc} This producer is fenced: close it and create a new one.") from exc

    def _require_state(self, state: str, what: str) -> None:
        if self.transactional_id is None:
            raise errors.InvalidTxnStateError(
                f"{what}: this producer has no transactional_id; create it with "
                "engine.producer(transactional_id=...)")
        if self._txn_state == "fenced":
            raise errors.ProducerFencedError(
                f"{what}: this producer was fenced (another producer initialised "
                f"transactional id {self.transactional_id!r}, or its transaction timed out "
                "and was aborted); close it and create a new one")
        if self._txn_state != state:
            hint = {"uninitialized": "call init_transactions() first",
                    "ready": "call begin_transaction() first",
                    "in_transaction": "commit or abort the open transaction first"}
            raise errors.InvalidTxnStateError(f"{what}: {hint[self._txn_state]}")

    def init_transactions(self) -> None:
        """Registers the transactional id: gets its producer id at a new epoch, fencing
        any earlier producer with the id and aborting the transaction it left open. Called
        again, it bumps this producer's epoch; once this producer has been fenced (another
        producer took the id, or its transaction timed out and was aborted, as in Kafka) it
        raises ProducerFencedError: close it and create a new one."""
        if self._closed:
            raise errors.ClosedError("this producer is closed")
        if self.transactional_id is None:
            raise errors.InvalidTxnStateError(
                "init_transactions: this producer has no transactional_id")
        with self._lock:
            if self._txn_state == "in_transaction":
                raise errors.InvalidTxnStateError(
                    "init_transactions: commit or abort the open transaction first")
            # Called again, it names this producer's id and epoch (KIP-360): the coordinator
            # bumps the epoch, or refuses if this producer has been fenced meanwhile.
            self._producer_id, self._epoch = self._call(
                self._engine.transactions.init_producer_id, self.transactional_id,
                self._transaction_timeout_ms, self._producer_id, self._epoch)
            self._sequences.clear()
            self._txn_state = "ready"

    def begin_transaction(self) -> None:
        with self._lock:
            self._require_state("ready", "begin_transaction")
            self._txn_partitions = set()
            self._txn_offsets_sent = False
            self._txn_state = "in_transaction"

    def send_offsets_to_transaction(self, offsets: Mapping[tuple[str, int], int],
                                    group_metadata: Any) -> None:
        """Commits a consumer group's offsets as part of the open transaction: they become
        the group's committed offsets only if it commits. ``offsets`` maps (topic,
        partition) to the next offset to read; ``group_metadata`` is the consumer's
        ``group_metadata()`` (or a group id string, for a consumer outside the group
        protocol). Raises the group's error if the member has been fenced."""
        if isinstance(group_metadata, str):
            group_id, generation, member_id, instance_id = group_metadata, -1, "", None
        else:
            group_id = group_metadata.group_id
            generation = group_metadata.generation_id
            member_id = group_metadata.member_id
            instance_id = group_metadata.group_instance_id
        if not group_id:
            raise errors.InvalidGroupIdError("send_offsets_to_transaction needs a group id")
        from logkernel.coordinator.offsets import OffsetAndMetadata
        commits = {(str(tp[0]), int(tp[1])): OffsetAndMetadata(int(offset), "", -1)
                   for tp, offset in offsets.items()}
        with self._lock:
            self._require_state("in_transaction", "send_offsets_to_transaction")
            transactions = self._engine.transactions
            self._call(transactions.add_offsets, self.transactional_id, self._producer_id,
                       self._epoch, group_id)
            self._txn_offsets_sent = True
            self._call(transactions.txn_offset_commit, self.transactional_id, group_id,
                       self._producer_id, self._epoch, commits, member_id=member_id,
                       instance_id=instance_id, generation=generation)

    def commit_transaction(self) -> None:
        """Commits the open transaction: its records become visible to read_committed
        consumers, and its offsets the group's. Durable as the topics' flush settings say."""
        self._end(True)

    def abort_transaction(self) -> None:
        """Aborts the open transaction: read_committed consumers never see its records."""
        self._end(False)

    def _end(self, commit: bool) -> None:
        with self._lock:
            self._require_state("in_transaction", "commit_transaction" if commit
                                else "abort_transaction")
            if self._txn_partitions or self._txn_offsets_sent:  # else it ends here, as in Kafka
                self._call(self._engine.transactions.end_txn, self.transactional_id,
                           self._producer_id, self._epoch, commit)
            self._txn_state = "ready"
            self._txn_partitions = set()

    def flush(self) -> None:
        """Returns once every record this process appended is fsynced (all partitions)."""
        self._engine.flush()

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_bytes(item: Any, name: str) -> bytes | None:
    if item is None or isinstance(item, bytes):
        return item
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"record {name}s are bytes or None, got {type(item).__name__}; encode "
                    f"strings first (e.g. {name}.encode())")
