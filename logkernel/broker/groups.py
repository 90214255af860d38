"""Handlers of consumer groups: the classic protocol (JoinGroup, SyncGroup, Heartbeat,
LeaveGroup), KIP-848's ConsumerGroupHeartbeat and ConsumerGroupDescribe, and the group admin
APIs (ListGroups, DescribeGroups, DeleteGroups, OffsetDelete).

Each translates the request into a call on the engine's group coordinator, which the
embedded consumer uses too. JoinGroup and SyncGroup may wait for other members: the
coordinator answers them through a callback, which this module turns into an asyncio future
of the event loop, so the loop never blocks on a rebalance.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

from logkernel import errors
from logkernel.broker.common import error_code_for
from logkernel.protocol import error_codes, schema
from logkernel.protocol.apis import (
    CONSUMER_GROUP_DESCRIBE,
    CONSUMER_GROUP_HEARTBEAT,
    DELETE_GROUPS,
    DESCRIBE_GROUPS,
    HEARTBEAT,
    JOIN_GROUP,
    LEAVE_GROUP,
    LIST_GROUPS,
    OFFSET_DELETE,
    SYNC_GROUP,
)
from logkernel.protocol.frames import RequestHeader

log = logging.getLogger("logkernel.broker")

# JoinGroup v4+: a member without an id is given one and must rejoin with it (KIP-394).
FIRST_JOIN_REQUIRING_MEMBER_ID = 4
# JoinGroup v9+: a restarted static leader is told to skip the assignment.
FIRST_JOIN_WITH_SKIP_ASSIGNMENT = 9
# LeaveGroup v3+ removes a batch of members, each with its own error code.
FIRST_BATCHED_LEAVE = 3


def _ms(value: Any) -> int:
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    return int(value)


def _code(exc: BaseException) -> int:
    if isinstance(exc, errors.GroupError | errors.LogkernelError):
        return error_code_for(exc)
    if isinstance(exc, ValueError):
        return error_codes.INVALID_REQUEST
    raise exc


def _parked(server: Any) -> tuple[asyncio.Future[Any], Callable[[Any], None]]:
    """A future of the event loop and a thread-safe callback that completes it."""
    loop = server.loop
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any) -> None:
        if not future.done():
            future.set_result(result)

    def answer(result: Any) -> None:
        loop.call_soon_threadsafe(settle, result)

    return future, answer


def _peer_host(server: Any) -> str:
    peer = getattr(server, "current_peer", "") or ""
    return "/" + peer.rpartition(":")[0] if peer else ""


# ---- the classic protocol ----------------------------------------------------------------


def handle_join_group(server: Any, header: RequestHeader, body: memoryview) -> Any:
    version = header.api_version
    request = schema.decode_request(JOIN_GROUP, version, body)
    future, answer = _parked(server)
    try:
        server.engine.groups.join_group(
            request.group_id, member_id=request.member_id,
            instance_id=getattr(request, "group_instance_id", None),
            client_id=header.client_id or "", client_host=_peer_host(server),
            session_timeout_ms=_ms(request.session_timeout),
            rebalance_timeout_ms=_ms(getattr(request, "rebalance_timeout", -1)),
            protocol_type=request.protocol_type,
            protocols=[(p.name, bytes(p.metadata)) for p in request.protocols],
            require_known_member_id=version >= FIRST_JOIN_REQUIRING_MEMBER_ID, answer=answer)
    except errors.MemberIdRequiredError as exc:
        return [_join_error(version, error_codes.MEMBER_ID_REQUIRED, exc.member_id)]
    except (errors.LogkernelError, ValueError) as exc:
        log.debug("JoinGroup of %r refused: %s", request.group_id, exc)
        return [_join_error(version, _code(exc), request.member_id)]
    return _join_answer(future, version, request.member_id)


async def _join_answer(future: asyncio.Future[Any], version: int, member_id: str) -> list[Any]:
    result = await future
    if isinstance(result, BaseException):
        return [_join_error(version, _code(result), member_id)]
    return [schema.encode_response(JOIN_GROUP, version, {
        "error_code": error_codes.NONE, "generation_id": result.generation_id,
        "protocol_type": result.protocol_type, "protocol_name": result.protocol_name,
        "leader": result.leader, "member_id": result.member_id,
        "skip_assignment": result.skip_assignment and version >= FIRST_JOIN_WITH_SKIP_ASSIGNMENT,
        "members": [{"member_id": m, "group_instance_id": i, "metadata": meta}
                    for m, i, meta in result.members]})]


def _join_error(version: int, code: int, member_id: str) -> bytes:
    return schema.encode_response(JOIN_GROUP, version, {
        "error_code": code, "generation_id": -1, "protocol_type": None, "protocol_name": None
        if version >= 7 else "", "leader": "", "member_id": member_id, "members": []})


def handle_sync_group(server: Any, header: RequestHeader, body: memoryview) -> Any:
    version = header.api_version
    request = schema.decode_request(SYNC_GROUP, version, body)
    future, answer = _parked(server)
    try:
        server.engine.groups.sync_group(
            request.group_id, member_id=request.member_id,
            instance_id=getattr(request, "group_instance_id", None),
            generation=request.generation_id,
            protocol_type=getattr(request, "protocol_type", None),
            protocol_name=getattr(request, "protocol_name", None),
            assignments={a.member_id: bytes(a.assignment) for a in request.assignments},
            answer=answer)
    except (errors.LogkernelError, ValueError) as exc:
        return [_sync_response(version, _code(exc), None)]
    return _sync_answer(future, version)


async def _sync_answer(future: asyncio.Future[Any], version: int) -> list[Any]:
    result = await future
    if isinstance(result, BaseException):
        return [_sync_response(version, _code(result), None)]
    return [_sync_response(version, error_codes.NONE, result)]


def _sync_response(version: int, code: int, result: Any) -> bytes:
    return schema.encode_response(SYNC_GROUP, version, {
        "error_code": code,
        "protocol_type": result.protocol_type if result else None,
        "protocol_name": result.protocol_name if result else None,
        "assignment": result.assignment if result else b""})


def handle_heartbeat(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(HEARTBEAT, header.api_version, body)
    code = error_codes.NONE
    try:
        server.engine.groups.heartbeat(
            request.group_id, member_id=request.member_id,
            instance_id=getattr(request, "group_instance_id", None),
            generation=request.generation_id)
    except (errors.LogkernelError, ValueError) as exc:
        code = _code(exc)
    return [schema.encode_response(HEARTBEAT, header.api_version, {"error_code": code})]


def handle_leave_group(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(LEAVE_GROUP, version, body)
    if version >= FIRST_BATCHED_LEAVE:
        members = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        members = [(request.member_id, None)]
    try:
        outcomes = server.engine.groups.leave_group(request.group_id, members)
    except (errors.LogkernelError, ValueError) as exc:
        return [schema.encode_response(LEAVE_GROUP, version, {"error_code": _code(exc)})]
    codes = [error_codes.NONE if o is None else _code(o) for o in outcomes]
    if version < FIRST_BATCHED_LEAVE:
        return [schema.encode_response(LEAVE_GROUP, version, {"error_code": codes[0]})]
    return [schema.encode_response(LEAVE_GROUP, version, {
        "error_code": error_codes.NONE,
        "members": [{"member_id": m, "group_instance_id": i, "error_code": c}
                    for (m, i), c in zip(members, codes, strict=True)]})]


# ---- KIP-848 --------------------------------------------------------------------------------


def handle_consumer_group_heartbeat(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(CONSUMER_GROUP_HEARTBEAT, version, body)
    owned = None
    if request.topic_partitions is not None:
        owned = [(t.topic_id.bytes, list(t.partitions)) for t in request.topic_partitions]
    try:
        result = server.engine.groups.consumer_group_heartbeat(
            request.group_id, version=version, member_id=request.member_id,
            member_epoch=request.member_epoch, instance_id=request.instance_id,
            rack_id=request.rack_id, rebalance_timeout_ms=_ms(request.rebalance_timeout),
            subscribed_topic_names=(None if request.subscribed_topic_names is None
                                    else list(request.subscribed_topic_names)),
            subscribed_topic_regex=getattr(request, "subscribed_topic_regex", None),
            server_assignor=request.server_assignor, owned_partitions=owned,
            client_id=header.client_id or "", client_host=_peer_host(server))
    except (errors.LogkernelError, ValueError) as exc:
        code = _code(exc)
        log.debug("ConsumerGroupHeartbeat of %r refused (%d): %s", request.group_id, code, exc)
        return [schema.encode_response(CONSUMER_GROUP_HEARTBEAT, version, {
            "error_code": code, "error_message": str(exc), "member_id": request.member_id or None,
            "member_epoch": -1, "heartbeat_interval": 0, "assignment": None})]
    assignment = None
    if result.assignment is not None:
        assignment = {"topic_partitions": [{"topic_id": topic_id, "partitions": partitions}
                                           for topic_id, partitions in result.assignment]}
    return [schema.encode_response(CONSUMER_GROUP_HEARTBEAT, version, {
        "error_code": error_codes.NONE, "error_message": None, "member_id": result.member_id,
        "member_epoch": result.member_epoch, "heartbeat_interval": result.heartbeat_interval_ms,
        "assignment": assignment})]


def handle_consumer_group_describe(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(CONSUMER_GROUP_DESCRIBE, version, body)
    engine = server.engine
    groups = []
    for group_id in request.group_ids:
        try:
            d = engine.groups.describe_consumer_group(group_id)
        except (errors.LogkernelError, ValueError) as exc:
            groups.append({"error_code": _code(exc), "error_message": str(exc),
                           "group_id": group_id, "group_state": "Dead", "group_epoch": -1,
                           "assignment_epoch": -1, "assignor_name": "", "members": []})
            continue
        groups.append({
            "error_code": error_codes.NONE, "error_message": None, "group_id": group_id,
            "group_state": d.state, "group_epoch": d.group_epoch,
            "assignment_epoch": d.assignment_epoch, "assignor_name": d.assignor_name,
            "authorized_operations": -2147483648,
            "members": [{
                "member_id": m.member_id, "instance_id": m.instance_id, "rack_id": m.rack_id,
                "member_epoch": m.member_epoch, "client_id": m.client_id,
                "client_host": m.client_host,
                "subscribed_topic_names": list(m.subscribed_topic_names),
                "subscribed_topic_regex": m.subscribed_topic_regex,
                "assignment": _described_assignment(engine, m.assignment),
                "target_assignment": _described_assignment(engine, m.target_assignment)}
                for m in d.members]})
    return [schema.encode_response(CONSUMER_GROUP_DESCRIBE, version, {"groups": groups})]


def _described_assignment(engine: Any, assignment: dict[bytes, Any]) -> dict[str, Any]:
    out = []
    for topic_id, partitions in assignment.items():
        topic = engine.topic_by_id(topic_id.hex())
        out.append({"topic_id": topic_id, "topic_name": topic.name if topic else "",
                    "partitions": sorted(partitions)})
    return {"topic_partitions": out}


# ---- admin --------------------------------------------------------------------------------


def handle_list_groups(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(LIST_GROUPS, version, body)
    listings = server.engine.groups.list_groups(
        states=getattr(request, "states_filter", None) or None,
        types=getattr(request, "types_filter", None) or None)
    return [schema.encode_response(LIST_GROUPS, version, {
        "error_code": error_codes.NONE,
        "groups": [{"group_id": g.group_id, "protocol_type": g.protocol_type,
                    "group_state": g.state, "group_type": g.group_type} for g in listings]})]


def handle_describe_groups(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(DESCRIBE_GROUPS, version, body)
    groups = []
    for group_id in request.groups:
        try:
            d = server.engine.groups.describe_group(group_id)
        except (errors.LogkernelError, ValueError) as exc:
            groups.append({"error_code": _code(exc), "group_id": group_id, "group_state": "",
                           "protocol_type": "", "protocol_data": "", "members": []})
            continue
        groups.append({
            "error_code": error_codes.NONE, "group_id": group_id, "group_state": d.state,
            "protocol_type": d.protocol_type, "protocol_data": d.protocol_name,
            "authorized_operations": -2147483648,
            "members": [{"member_id": m.member_id, "group_instance_id": m.instance_id,
                         "client_id": m.client_id, "client_host": m.client_host,
                         "member_metadata": m.metadata, "member_assignment": m.assignment}
                        for m in d.members]})
    return [schema.encode_response(DESCRIBE_GROUPS, version, {"groups": groups})]


def handle_delete_groups(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(DELETE_GROUPS, version, body)
    results = []
    for group_id in request.groups_names:
        code = error_codes.NONE
        try:
            server.engine.groups.delete_group(group_id)
        except (errors.LogkernelError, ValueError) as exc:
            code = _code(exc)
        results.append({"group_id": group_id, "error_code": code})
    return [schema.encode_response(DELETE_GROUPS, version, {"results": results})]


def handle_offset_delete(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(OFFSET_DELETE, version, body)
    wanted = [(t.name, p.partition_index) for t in request.topics for p in t.partitions]
    try:
        outcome = server.engine.groups.delete_offsets(request.group_id, wanted)
    except (errors.LogkernelError, ValueError) as exc:
        return [schema.encode_response(OFFSET_DELETE, version, {
            "error_code": _code(exc), "topics": []})]
    topics: dict[str, list[dict[str, int]]] = {}
    known = set(server.engine.topics())
    for (topic, partition), problem in outcome.items():
        code = error_codes.NONE if problem is None else _code(problem)
        if problem is None and topic not in known:
            code = error_codes.UNKNOWN_TOPIC_OR_PARTITION
        topics.setdefault(topic, []).append({"partition_index": partition, "error_code": code})
    return [schema.encode_response(OFFSET_DELETE, version, {
        "error_code": error_codes.NONE,
        "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()]})]
