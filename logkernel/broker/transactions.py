"""Handlers of idempotent producers and transactions: InitProducerId, AddPartitionsToTxn,
AddOffsetsToTxn, EndTxn, TxnOffsetCommit, and the admin APIs ListTransactions,
DescribeTransactions and DescribeProducers. Every decision is the engine's transaction
coordinator's (coordinator/transactions.py); these only translate requests and errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from logkernel import errors
from logkernel.broker.common import error_code_for
from logkernel.engine import OffsetAndMetadata
from logkernel.protocol import error_codes, schema
from logkernel.protocol.apis import (
    ADD_OFFSETS_TO_TXN,
    ADD_PARTITIONS_TO_TXN,
    DESCRIBE_PRODUCERS,
    DESCRIBE_TRANSACTIONS,
    END_TXN,
    INIT_PRODUCER_ID,
    LIST_TRANSACTIONS,
    TXN_OFFSET_COMMIT,
    api_name,
)
from logkernel.protocol.frames import RequestHeader

log = logging.getLogger("logkernel.broker")

# Below these versions a fenced producer is told INVALID_PRODUCER_EPOCH: PRODUCER_FENCED
# (KIP-588) is unknown to the clients that send them.
_FENCED_SINCE = {INIT_PRODUCER_ID: 4, ADD_PARTITIONS_TO_TXN: 2, ADD_OFFSETS_TO_TXN: 2,
                 END_TXN: 2, TXN_OFFSET_COMMIT: 2}


def _code(exc: BaseException, header: RequestHeader) -> int:
    code = error_code_for(exc)
    if code == error_codes.PRODUCER_FENCED and \
            header.api_version < _FENCED_SINCE.get(header.api_key, 0):
        return error_codes.INVALID_PRODUCER_EPOCH
    return code


def _refused(header: RequestHeader, exc: BaseException) -> int:
    if isinstance(exc, errors.ClosedError):
        return error_codes.COORDINATOR_NOT_AVAILABLE
    code = _code(exc, header)
    log.info("%s v%d from %r refused (%s): %s", api_name(header.api_key), header.api_version,
             header.client_id, type(exc).__name__, exc)
    return code


def handle_init_producer_id(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    """A producer id and epoch: fresh for an idempotent producer, or the transactional
    id's producer at its next epoch (aborting and fencing what its predecessor left open)."""
    request = schema.decode_request(INIT_PRODUCER_ID, header.api_version, body)
    answer = {"producer_id": -1, "producer_epoch": -1, "error_code": error_codes.NONE}
    try:
        producer_id, epoch = server.engine.transactions.init_producer_id(
            request.transactional_id, int(request.transaction_timeout.total_seconds() * 1000),
            getattr(request, "producer_id", -1), getattr(request, "producer_epoch", -1))
        answer.update(producer_id=producer_id, producer_epoch=epoch)
    except errors.LogkernelError as exc:
        answer["error_code"] = _refused(header, exc)
    return [schema.encode_response(INIT_PRODUCER_ID, header.api_version, answer)]


def handle_add_partitions_to_txn(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    """Partitions join the transaction; unknown ones are refused with the others not
    attempted, as Kafka answers."""
    request = schema.decode_request(ADD_PARTITIONS_TO_TXN, header.api_version, body)
    engine = server.engine
    wanted = [(t.name, p) for t in request.v3_and_below_topics for p in t.partitions]
    codes: dict[tuple[str, int], int] = {}
    for topic, partition in wanted:
        if engine.partition_log_or_none(topic, partition) is None:
            codes[(topic, partition)] = error_codes.UNKNOWN_TOPIC_OR_PARTITION
    if codes:
        for tp in wanted:
            codes.setdefault(tp, error_codes.OPERATION_NOT_ATTEMPTED)
    else:
        try:
            engine.transactions.add_partitions(
                request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
                request.v3_and_below_producer_epoch, wanted)
            code = error_codes.NONE
        except errors.LogkernelError as exc:
            code = _refused(header, exc)
        codes = dict.fromkeys(wanted, code)
    by_topic: dict[str, list[dict[str, int]]] = {}
    for (topic, partition), code in codes.items():
        by_topic.setdefault(topic, []).append({"partition_index": partition,
                                               "partition_error_code": code})
    return [schema.encode_response(ADD_PARTITIONS_TO_TXN, header.api_version, {
        "results_by_topic_v3_and_below": [{"name": topic, "results_by_partition": results}
                                          for topic, results in by_topic.items()]})]


def handle_add_offsets_to_txn(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(ADD_OFFSETS_TO_TXN, header.api_version, body)
    return _error_code_answer(header, lambda: server.engine.transactions.add_offsets(
        request.transactional_id, request.producer_id, request.producer_epoch, request.group_id))


def handle_end_txn(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(END_TXN, header.api_version, body)
    return _error_code_answer(header, lambda: server.engine.transactions.end_txn(
        request.transactional_id, request.producer_id, request.producer_epoch, request.committed))


def _error_code_answer(header: RequestHeader, call: Callable[[], None]) -> list[Any]:
    """The response of an API whose only field is an error code: NONE if ``call`` went
    through, else the code of its refusal."""
    code = error_codes.NONE
    try:
        call()
    except errors.LogkernelError as exc:
        code = _refused(header, exc)
    return [schema.encode_response(header.api_key, header.api_version, {"error_code": code})]


def handle_txn_offset_commit(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(TXN_OFFSET_COMMIT, header.api_version, body)
    engine = server.engine
    offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
    codes: dict[tuple[str, int], int] = {}
    limit = engine.groups.metadata_max_bytes
    for topic in request.topics:
        for p in topic.partitions:
            tp = (topic.name, p.partition_index)
            metadata = p.committed_metadata or ""
            if engine.partition_log_or_none(*tp) is None:
                codes[tp] = error_codes.UNKNOWN_TOPIC_OR_PARTITION
            elif len(metadata.encode()) > limit:
                codes[tp] = error_codes.OFFSET_METADATA_TOO_LARGE
            else:
                offsets[tp] = OffsetAndMetadata(p.committed_offset, metadata,
                                                getattr(p, "committed_leader_epoch", -1))
    if offsets:
        try:
            engine.transactions.txn_offset_commit(
                request.transactional_id, request.group_id, request.producer_id,
                request.producer_epoch, offsets,
                member_id=getattr(request, "member_id", ""),
                instance_id=getattr(request, "group_instance_id", None),
                generation=getattr(request, "generation_id", -1))
            code = error_codes.NONE
        except errors.LogkernelError as exc:
            code = _refused(header, exc)
        codes.update(dict.fromkeys(offsets, code))
    by_topic: dict[str, list[dict[str, int]]] = {}
    for (topic, partition), code in codes.items():
        by_topic.setdefault(topic, []).append({"partition_index": partition, "error_code": code})
    return [schema.encode_response(TXN_OFFSET_COMMIT, header.api_version, {
        "topics": [{"name": t, "partitions": parts} for t, parts in by_topic.items()]})]


# ---- admin --------------------------------------------------------------------------------

def handle_list_transactions(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(LIST_TRANSACTIONS, header.api_version, body)
    states = list(request.state_filters)
    known = {"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit",
             "CompleteAbort", "Dead", "PrepareEpochFence"}
    listings = server.engine.transactions.list_transactions(
        [s for s in states if s in known] or ([] if not states else ["(none)"]),
        list(request.producer_id_filters))
    duration = getattr(request, "duration_filter", -1)
    if duration >= 0:
        listings = [t for t in listings if server.engine.transactions.running_ms(
            t.transactional_id) > duration]
    return [schema.encode_response(LIST_TRANSACTIONS, header.api_version, {
        "unknown_state_filters": [s for s in states if s not in known],
        "transaction_states": [{"transactional_id": t.transactional_id,
                                "producer_id": t.producer_id, "transaction_state": t.state}
                               for t in listings]})]


def handle_describe_transactions(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(DESCRIBE_TRANSACTIONS, header.api_version, body)
    out = []
    for txn_id in request.transactional_ids:
        meta = server.engine.transactions.describe(txn_id)
        if meta is None:
            out.append({"error_code": error_codes.TRANSACTIONAL_ID_NOT_FOUND,
                        "transactional_id": txn_id, "transaction_state": "",
                        "transaction_timeout": 0, "transaction_start_time": -1,
                        "producer_id": -1, "producer_epoch": -1, "topics": []})
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(meta.open_partitions):
            by_topic.setdefault(topic, []).append(partition)
        out.append({"error_code": error_codes.NONE, "transactional_id": txn_id,
                    "transaction_state": meta.state_name, "transaction_timeout": meta.timeout_ms,
                    "transaction_start_time": meta.start_ms, "producer_id": meta.producer_id,
                    "producer_epoch": meta.producer_epoch,
                    "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]})
    return [schema.encode_response(DESCRIBE_TRANSACTIONS, header.api_version,
                                   {"transaction_states": out})]


def handle_describe_producers(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(DESCRIBE_PRODUCERS, header.api_version, body)
    topics = []
    for topic in request.topics:
        parts = []
        for partition in topic.partition_indexes:
            partition_log = server.engine.partition_log_or_none(topic.name, partition)
            if partition_log is None:
                parts.append({"partition_index": partition,
                              "error_code": error_codes.UNKNOWN_TOPIC_OR_PARTITION,
                              "error_message": f"{topic.name}-{partition} does not exist",
                              "active_producers": []})
                continue
            parts.append({"partition_index": partition, "error_code": error_codes.NONE,
                          "active_producers": [
                              {"producer_id": e.producer_id, "producer_epoch": e.epoch,
                               "last_sequence": e.last_seq, "last_timestamp": e.last_timestamp,
                               "coordinator_epoch": e.coordinator_epoch,
                               "current_txn_start_offset": e.current_txn_first_offset}
                              for e in partition_log.producer_states()]})
        topics.append({"name": topic.name, "partitions": parts})
    return [schema.encode_response(DESCRIBE_PRODUCERS, header.api_version, {"topics": topics})]
