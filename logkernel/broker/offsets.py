"""Handlers of committed offsets: OffsetCommit and OffsetFetch, over the engine's offset
store (``__consumer_offsets``, shared with embedded consumers).

Commits are accepted from consumers outside group membership: generation -1 and an empty
member id, which is what a consumer that assigns its own partitions sends (Kafka accepts
these for a group with no members). Every group here has no members yet, since the group
protocol (JoinGroup, SyncGroup) is not offered, so a commit that names a member or a
generation is refused with the error Kafka gives for an unknown member or generation.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from logkernel import errors
from logkernel.broker.common import error_code_for
from logkernel.engine import OffsetAndMetadata
from logkernel.protocol import error_codes, schema
from logkernel.protocol.apis import OFFSET_COMMIT, OFFSET_FETCH
from logkernel.protocol.frames import RequestHeader

log = logging.getLogger("logkernel.broker")

# Kafka's offset.metadata.max.bytes default: a longer commit metadata string is refused.
OFFSET_METADATA_MAX_BYTES = 4096
NO_GENERATION = -1


def handle_offset_commit(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(OFFSET_COMMIT, version, body)
    engine = server.engine
    group_error = error_codes.NONE
    if not request.group_id:
        group_error = error_codes.INVALID_GROUP_ID
    elif request.member_id:
        group_error = error_codes.UNKNOWN_MEMBER_ID
    elif request.generation_id_or_member_epoch != NO_GENERATION:
        group_error = error_codes.ILLEGAL_GENERATION
    if group_error:
        log.info("OffsetCommit for group %r from %r refused (error %d): only commits outside "
                 "group membership are accepted until the group protocol exists",
                 request.group_id, header.client_id, group_error)
    now = int(time.time() * 1000)
    accepted: dict[tuple[str, int], Any] = {}
    topics = []
    for topic in request.topics:
        parts = []
        for p in topic.partitions:
            code = group_error
            if not code:
                code = _check_commit(engine, topic.name, p)
            if not code:
                accepted[(topic.name, p.partition_index)] = (
                    p.committed_offset, p.committed_metadata or "",
                    getattr(p, "committed_leader_epoch", -1), now)
            parts.append({"partition_index": p.partition_index, "error_code": code})
        topics.append({"name": topic.name, "partitions": parts})
    if accepted:
        try:
            engine.commit_offsets(request.group_id, {
                key: OffsetAndMetadata(*value) for key, value in accepted.items()})
        except errors.LogkernelError as exc:
            code = error_code_for(exc)
            for t in topics:
                for part in t["partitions"]:
                    if (t["name"], part["partition_index"]) in accepted:
                        part["error_code"] = code
    return [schema.encode_response(OFFSET_COMMIT, version, {"topics": topics})]


def _check_commit(engine: Any, topic: str, partition: Any) -> int:
    try:
        engine.partition_log(topic, partition.partition_index, create=False)
    except errors.LogkernelError as exc:
        return error_code_for(exc)
    if partition.committed_offset < 0:
        return error_codes.INVALID_REQUEST
    if len((partition.committed_metadata or "").encode()) > OFFSET_METADATA_MAX_BYTES:
        return error_codes.OFFSET_METADATA_TOO_LARGE
    return error_codes.NONE


def handle_offset_fetch(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(OFFSET_FETCH, version, body)
    if version >= 8:
        groups = [_fetch_group(server, g.group_id, g.topics, version) for g in request.groups]
        return [schema.encode_response(OFFSET_FETCH, version, {"groups": groups})]
    answer = _fetch_group(server, request.group_id, request.topics, version)
    return [schema.encode_response(OFFSET_FETCH, version, {
        "topics": answer["topics"], "error_code": answer["error_code"]})]


def _fetch_group(server: Any, group_id: str, topics: Any, version: int) -> dict[str, Any]:
    if not group_id:
        return {"group_id": group_id, "topics": [], "error_code": error_codes.INVALID_GROUP_ID}
    committed = server.engine.committed_offsets(group_id)
    if topics is None:  # every committed offset of the group (v2+)
        wanted: dict[str, list[int]] = {}
        for topic, partition in sorted(committed):
            wanted.setdefault(topic, []).append(partition)
    else:
        wanted = {t.name: list(t.partition_indexes) for t in topics}
    out = []
    for topic, partitions in wanted.items():
        parts = []
        for partition in partitions:
            stored = committed.get((topic, partition))
            parts.append({
                "partition_index": partition,
                "committed_offset": stored.offset if stored else -1,
                "committed_leader_epoch": stored.leader_epoch if stored else -1,
                "metadata": stored.metadata if stored else "",
                "error_code": error_codes.NONE})
        out.append({"name": topic, "partitions": parts})
    return {"group_id": group_id, "topics": out, "error_code": error_codes.NONE}
