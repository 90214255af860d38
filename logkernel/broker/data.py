"""Handlers of the data path: Produce, Fetch, ListOffsets, OffsetForLeaderEpoch,
DeleteRecords.

Produce: the request is decoded with record sets left as views of the receive buffer; each
set goes to the partition log's ``append``, which validates every batch in C (CRC,
structure, max.message.bytes) and copies it into the segment with only the base offset
patched. Python never looks at a record.

Fetch: each partition's bytes come from ``PartitionLog.read``, one copy out of the segment
map made in C under the partition lock (a Python view into a map could outlive a truncation
and fault), and go out as one buffer of the response's scatter list, never joined. A fetch
that starts inside a batch gets the whole batch (clients skip the offsets they did not ask
for). With too little data the fetch waits, without polling: it is parked with the server
and re-checked when an append notifies, or answered with what there is at max_wait_ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from logkernel import errors
from logkernel.broker.common import error_code_for
from logkernel.engine import LEADER_EPOCH
from logkernel.protocol import error_codes, hot, schema
from logkernel.protocol.apis import (
    DELETE_RECORDS,
    FETCH,
    LIST_OFFSETS,
    OFFSET_FOR_LEADER_EPOCH,
)
from logkernel.protocol.frames import RequestHeader

log = logging.getLogger("logkernel.broker")

EARLIEST = -2
LATEST = -1
MAX_TIMESTAMP = -3
READ_UNCOMMITTED = 0
READ_COMMITTED = 1

# A full disk refuses every produce to a partition until space is freed, and clients retry
# several times a second: one line per partition per this many seconds says so (with how
# many refusals it stands for) without flooding the log, which may live on that very disk.
STORAGE_FAILURE_LOG_INTERVAL_S = 10.0
# (topic, partition) -> [monotonic time of the last line, refusals since]. Event loop only.
_storage_failures: dict[tuple[str, int], list[float]] = {}


# ---- Produce ----------------------------------------------------------------------------

def handle_produce(server: Any, header: RequestHeader, body: memoryview) -> Any:
    """Appends on the event loop (fast, and in request order); if a topic's flush.messages
    calls for an fsync, that runs on a worker thread and the response waits for it, so other
    connections are served meanwhile and concurrent producers share fsyncs."""
    request = hot.decode_produce_request(body, header.api_version)
    engine = server.engine
    results = []
    to_sync: list[tuple[Any, int]] = []
    for topic, partitions in request.topics:
        out = []
        for part in partitions:
            if request.acks not in (0, 1, -1):
                out.append((part.partition, error_codes.INVALID_REQUIRED_ACKS, -1, -1, -1))
                continue
            out.append(_append(server, header, engine, topic, part, to_sync))
        results.append((topic, out))
    version = header.api_version
    if to_sync:
        done = asyncio.get_running_loop().run_in_executor(None, _flush_all, to_sync)
        if request.acks == 0:
            done.add_done_callback(_report_flush_failure)  # nobody awaits it: say if it fails
            return None
        return _after_flush(done, version, results)
    if request.acks == 0:
        return None
    return [hot.encode_produce_response(version, results)]


def _flush_all(to_sync: list[tuple[Any, int]]) -> None:
    for partition_log, offset in to_sync:
        with contextlib.suppress(errors.ClosedError):  # deleted meanwhile
            partition_log.flush_to(offset)


def _report_flush_failure(done: Any) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("fsync after an acks=0 produce failed: %s", done.exception())


async def _after_flush(done: Any, version: int,
                       results: list[tuple[str, list[tuple[int, int, int, int, int]]]]) -> list[Any]:
    try:
        await done
    except errors.StorageError as exc:
        # The records are in the log but not known to be on disk: the client must not take
        # them as acknowledged. KAFKA_STORAGE_ERROR is retriable.
        log.error("fsync after a produce failed: %s", exc)
        results = [(topic, [(p[0], error_codes.KAFKA_STORAGE_ERROR, -1, -1, -1) for p in parts])
                   for topic, parts in results]
    return [hot.encode_produce_response(version, results)]


def _append(server: Any, header: RequestHeader, engine: Any, topic: str,
            part: hot.ProducePartition, to_sync: list[tuple[Any, int]]
            ) -> tuple[int, int, int, int, int]:
    partition = part.partition
    try:
        partition_log = engine.partition_log(topic, partition)
    except errors.ConfigError:
        return (partition, error_codes.INVALID_TOPIC_EXCEPTION, -1, -1, -1)
    except errors.LogkernelError as exc:
        return (partition, error_code_for(exc), -1, -1, -1)
    if not part.records:
        log.warning("Produce to %s-%d from %r carried no records; answering INVALID_RECORD",
                    topic, partition, header.client_id)
        return (partition, error_codes.INVALID_RECORD, -1, -1, -1)
    try:
        transactional = _transactional_producer(part.records)
        if transactional is not None:
            # Only partitions added to the producer's open transaction may take its
            # writes: elsewhere they would open a transaction no marker ever closes.
            engine.transactions.verify(*transactional, topic, partition)
        first, next_offset, append_time = partition_log.append(part.records, sync=False)
        if partition_log.sync_due:
            to_sync.append((partition_log, next_offset))
    except errors.StorageError as exc:  # ours: the disk failed
        _storage_failure(topic, partition, exc)
        return (partition, error_code_for(exc), -1, -1, -1)
    except (errors.CorruptRecordError, errors.RecordTooLargeError,
            errors.InvalidRecordError, errors.ProducerError) as exc:  # the client's
        log.warning("Produce to %s-%d from %r refused: %s", topic, partition, header.client_id, exc)
        return (partition, error_code_for(exc), -1, -1, -1)
    except errors.LogkernelError as exc:
        return (partition, error_code_for(exc), -1, -1, -1)
    if _storage_failures and (topic, partition) in _storage_failures:
        refused = int(_storage_failures.pop((topic, partition))[1])
        log.warning("Produce to %s-%d is accepted again (%d more refusals since the last "
                    "report)", topic, partition, refused)
    return (partition, error_codes.NONE, first, append_time, partition_log.log_start_offset)


def _storage_failure(topic: str, partition: int, exc: errors.StorageError) -> None:
    """Logs a produce the disk refused: the first of a spell at once, then at most one
    line per STORAGE_FAILURE_LOG_INTERVAL_S for the partition."""
    now = time.monotonic()
    spell = _storage_failures.get((topic, partition))
    if spell is not None and now - spell[0] < STORAGE_FAILURE_LOG_INTERVAL_S:
        spell[1] += 1
        return
    more = f" ({int(spell[1])} more refusals since the last report)" if spell else ""
    log.error("Produce to %s-%d failed in storage (KAFKA_STORAGE_ERROR, which clients "
              "retry): %s%s", topic, partition, exc, more)
    _storage_failures[(topic, partition)] = [now, 0]


def _transactional_producer(records: memoryview) -> tuple[int, int] | None:
    """(producer id, epoch) when the first batch is a transactional data batch."""
    if len(records) < 61:
        return None
    attributes = int.from_bytes(records[21:23], "big")
    if attributes & 0x30 != 0x10:  # transactional, not control
        return None
    return (int.from_bytes(records[43:51], "big", signed=True),
            int.from_bytes(records[51:53], "big", signed=True))


def produce_error_answer(server: Any, header: RequestHeader, body: memoryview, code: int,
                         message: str) -> list[Any]:
    """Every partition of the request answered with ``code`` (e.g. Produce v0-2)."""
    request = hot.decode_produce_request(body, header.api_version)
    results = [(topic, [(p.partition, code, -1, -1, -1) for p in parts])
               for topic, parts in request.topics]
    return [hot.encode_produce_response(header.api_version, results)]


# ---- Fetch ------------------------------------------------------------------------------

def handle_fetch(server: Any, header: RequestHeader, body: memoryview) -> Any:
    request = schema.decode_request(FETCH, header.api_version, body)
    wanted = [(t.topic, [(p.partition, p.fetch_offset, p.partition_max_bytes) for p in t.partitions])
              for t in request.topics]
    max_bytes = min(request.max_bytes, server.config["fetch.max.bytes"])
    committed = getattr(request, "isolation_level", READ_UNCOMMITTED) == READ_COMMITTED
    topics, size = _read(server, wanted, max_bytes, committed)
    max_wait_ms = int(request.max_wait.total_seconds() * 1000)
    if size >= request.min_bytes or max_wait_ms <= 0 or (size == 0 and _any_error(topics)):
        return [*hot.encode_fetch_response(header.api_version, topics)]
    future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    _FetchWait(server, header.api_version, wanted, max_bytes, request.min_bytes, max_wait_ms,
               committed, future)
    return future


def _any_error(topics: list[tuple[str, list[hot.FetchPartitionData]]]) -> bool:
    return any(p.error_code for _, parts in topics for p in parts)


def _read(server: Any, wanted: list[tuple[str, list[tuple[int, int, int]]]], max_bytes: int,
          committed: bool = False) -> tuple[list[tuple[str, list[hot.FetchPartitionData]]], int]:
    """Reads every requested partition: (response topics, total bytes). ``committed``
    (isolation_level read_committed) reads below the last stable offset only and names
    the aborted transactions in what was read, for the client to drop."""
    engine = server.engine
    remaining = max_bytes
    total = 0
    out = []
    for topic, partitions in wanted:
        parts = []
        for partition, offset, partition_max in partitions:
            try:
                partition_log = engine.partition_log(topic, partition, create=False)
            except errors.LogkernelError as exc:
                parts.append(hot.FetchPartitionData(partition, error_code_for(exc), -1, -1, -1, b""))
                continue
            stable = partition_log.last_stable_offset
            high_watermark = partition_log.high_watermark
            log_start = partition_log.log_start_offset
            data: bytes = b""
            aborted: list[tuple[int, int]] | None = [] if committed else None
            code = error_codes.NONE
            if offset < log_start or offset > high_watermark:
                code = error_codes.OFFSET_OUT_OF_RANGE
            elif offset < (stable if committed else high_watermark) and remaining > 0:
                try:
                    if committed:
                        data, stable, found = partition_log.read_committed(
                            offset, min(partition_max, remaining))
                        aborted = [(a.producer_id, a.first_offset) for a in found]
                    else:
                        data = partition_log.read(offset, min(partition_max, remaining))
                    # Never a batch with a bad CRC (damage on disk): CORRUPT_MESSAGE, as
                    # Kafka answers, at the first bad batch; the ones before it are sent.
                    data = partition_log.servable(data, offset)
                except errors.LogkernelError as exc:  # retention moved the start meanwhile
                    code = error_code_for(exc)
                remaining -= len(data)
                total += len(data)
            parts.append(hot.FetchPartitionData(partition, code, high_watermark, stable,
                                                log_start, data, aborted))
        out.append((topic, parts))
    return out, total


class _FetchWait:
    """A fetch parked until min_bytes are there or max_wait_ms passes."""

    __slots__ = ("committed", "future", "max_bytes", "min_bytes", "offsets", "server", "timer",
                 "version", "wanted")

    def __init__(self, server: Any, version: int, wanted: list[tuple[str, list[tuple[int, int, int]]]],
                 max_bytes: int, min_bytes: int, max_wait_ms: int, committed: bool,
                 future: asyncio.Future[Any]) -> None:
        self.server = server
        self.committed = committed
        self.version = version
        self.wanted = wanted
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes
        self.future = future
        self.offsets = [(topic, partition, offset) for topic, parts in wanted
                        for partition, offset, _ in parts]
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(max_wait_ms / 1000, self.finish)
        future.add_done_callback(self._done)
        server.park(self)
        self.poke()  # data may have arrived between the first read and parking

    def poke(self) -> None:
        """After an append: answer if enough data is there now. Cheap when nothing of ours
        moved (one high-watermark read per partition)."""
        if self.future.done():
            return
        engine = self.server.engine
        for topic, partition, offset in self.offsets:
            try:
                partition_log = engine.partition_log(topic, partition, create=False)
                readable = (partition_log.last_stable_offset if self.committed
                            else partition_log.high_watermark)
                moved = readable > offset
            except errors.LogkernelError:
                moved = True  # deleted: answer with the error now
            if moved:
                break
        else:
            return
        topics, size = _read(self.server, self.wanted, self.max_bytes, self.committed)
        if size >= self.min_bytes or _any_error(topics):
            self.future.set_result([*hot.encode_fetch_response(self.version, topics)])

    def finish(self) -> None:
        if not self.future.done():
            topics, _ = _read(self.server, self.wanted, self.max_bytes, self.committed)
            self.future.set_result([*hot.encode_fetch_response(self.version, topics)])

    def _done(self, _future: Any) -> None:
        self.timer.cancel()
        self.server.unpark(self)


# ---- ListOffsets --------------------------------------------------------------------------

def handle_list_offsets(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(LIST_OFFSETS, header.api_version, body)
    engine = server.engine
    committed = getattr(request, "isolation_level", READ_UNCOMMITTED) == READ_COMMITTED
    out = []
    for topic in request.topics:
        parts = []
        for p in topic.partitions:
            parts.append(_list_offset(engine, topic.name, p.partition_index, p.timestamp,
                                      committed))
        out.append((topic.name, parts))
    return [hot.encode_list_offsets_response(header.api_version, out)]


def _list_offset(engine: Any, topic: str, partition: int, timestamp: int,
                 committed: bool = False) -> tuple[int, int, int, int]:
    try:
        partition_log = engine.partition_log(topic, partition, create=False)
        if timestamp == LATEST:  # read_committed consumers end at the last stable offset
            return (partition, error_codes.NONE, -1,
                    partition_log.last_stable_offset if committed else partition_log.high_watermark)
        if timestamp == EARLIEST:
            return (partition, error_codes.NONE, -1, partition_log.log_start_offset)
        if timestamp == MAX_TIMESTAMP:
            found = partition_log.max_timestamp()
        elif timestamp < 0:
            return (partition, error_codes.INVALID_REQUEST, -1, -1)
        else:
            found = partition_log.offset_for_timestamp(timestamp)
    except errors.LogkernelError as exc:
        return (partition, error_code_for(exc), -1, -1)
    if found is None:
        return (partition, error_codes.NONE, -1, -1)
    offset, found_timestamp = found
    return (partition, error_codes.NONE, found_timestamp, offset)


# ---- OffsetForLeaderEpoch ------------------------------------------------------------------

def handle_offset_for_leader_epoch(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    """One leader epoch (0) ever: its end offset is the log end offset. A client asking
    about a later epoch is told the largest epoch at or below it, as Kafka answers."""
    request = schema.decode_request(OFFSET_FOR_LEADER_EPOCH, header.api_version, body)
    engine = server.engine
    topics = []
    for topic in request.topics:
        parts = []
        for p in topic.partitions:
            entry = {"partition": p.partition, "error_code": error_codes.NONE,
                     "leader_epoch": LEADER_EPOCH, "end_offset": -1}
            try:
                partition_log = engine.partition_log(topic.topic, p.partition, create=False)
                if p.leader_epoch < LEADER_EPOCH:
                    entry["leader_epoch"] = -1
                else:
                    entry["end_offset"] = partition_log.log_end_offset
            except errors.LogkernelError as exc:
                entry["error_code"] = error_code_for(exc)
                entry["leader_epoch"] = -1
            parts.append(entry)
        topics.append({"topic": topic.topic, "partitions": parts})
    return [schema.encode_response(OFFSET_FOR_LEADER_EPOCH, header.api_version, {"topics": topics})]


# ---- DeleteRecords ---------------------------------------------------------------------------

def handle_delete_records(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(DELETE_RECORDS, header.api_version, body)
    engine = server.engine
    topics = []
    for topic in request.topics:
        parts = []
        for p in topic.partitions:
            entry = {"partition_index": p.partition_index, "low_watermark": -1,
                     "error_code": error_codes.NONE}
            try:
                entry["low_watermark"] = engine.partition_log(topic.name, p.partition_index,
                                                              create=False).delete_records(p.offset)
            except errors.LogkernelError as exc:
                entry["error_code"] = error_code_for(exc)
            except ValueError:
                entry["error_code"] = error_codes.OFFSET_OUT_OF_RANGE
            parts.append(entry)
        topics.append({"name": topic.name, "partitions": parts})
    return [schema.encode_response(DELETE_RECORDS, header.api_version, {"topics": topics})]
