"""Handlers of committed offsets: OffsetCommit and OffsetFetch, over the engine's group
coordinator (offsets in ``__consumer_offsets``, shared with embedded consumers).

A commit names its committer: a group member (member id plus generation, or member epoch for
consumer-protocol groups from v9), which the coordinator checks as Kafka does (unknown
member, stale generation or epoch, rebalance in progress); or nobody (empty member id,
generation -1), which is accepted while the group has no members (consumers that assign
their own partitions, admin tools).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from logkernel import errors
from logkernel.broker.common import error_code_for
from logkernel.engine import OffsetAndMetadata
from logkernel.protocol import error_codes, hot, schema
from logkernel.protocol.apis import OFFSET_FETCH
from logkernel.protocol.frames import RequestHeader

log = logging.getLogger("logkernel.broker")


def handle_offset_commit(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = hot.decode_offset_commit_request(body, version)  # consumers commit often
    engine = server.engine
    now = int(time.time() * 1000)
    limit = engine.config["offset.metadata.max.bytes"]
    accepted: dict[tuple[str, int], OffsetAndMetadata] = {}
    codes: dict[tuple[str, int], int] = {}
    for topic in request.topics:
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            codes[key] = _check_commit(engine, topic.name, p, limit)
            if not codes[key]:
                accepted[key] = OffsetAndMetadata(p.committed_offset, p.committed_metadata or "",
                                                  p.committed_leader_epoch, now)
    try:
        engine.groups.commit_offsets(
            request.group_id, accepted, member_id=request.member_id,
            instance_id=request.group_instance_id,
            generation=request.generation_id_or_member_epoch, api_version=version)
    except errors.LogkernelError as exc:
        code = error_code_for(exc)
        log.debug("OffsetCommit for group %r from %r refused (error %d): %s",
                  request.group_id, header.client_id, code, exc)
        # A refused committer: every partition says why; a failed store: the stored ones.
        for key in codes if isinstance(exc, errors.GroupError) else accepted:
            codes[key] = code
    return [hot.encode_offset_commit_response(version, [
        (t.name, [(p.partition_index, codes[(t.name, p.partition_index)]) for p in t.partitions])
        for t in request.topics])]


def _check_commit(engine: Any, topic: str, partition: Any, metadata_limit: int) -> int:
    try:
        engine.partition_log(topic, partition.partition_index, create=False)
    except errors.LogkernelError as exc:
        return error_code_for(exc)
    if partition.committed_offset < 0:
        return error_codes.INVALID_REQUEST
    if len((partition.committed_metadata or "").encode()) > metadata_limit:
        return error_codes.OFFSET_METADATA_TOO_LARGE
    return error_codes.NONE


def handle_offset_fetch(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(OFFSET_FETCH, version, body)
    stable = getattr(request, "require_stable", False)
    if version >= 8:
        groups = [_fetch_group(server, g.group_id, g.topics, version,
                               getattr(g, "member_id", None), getattr(g, "member_epoch", -1),
                               stable)
                  for g in request.groups]
        return [schema.encode_response(OFFSET_FETCH, version, {"groups": groups})]
    answer = _fetch_group(server, request.group_id, request.topics, version, require_stable=stable)
    return [schema.encode_response(OFFSET_FETCH, version, {
        "topics": answer["topics"], "error_code": answer["error_code"]})]


def _fetch_group(server: Any, group_id: str, topics: Any, version: int,
                 member_id: str | None = None, member_epoch: int = -1,
                 require_stable: bool = False) -> dict[str, Any]:
    """One group's committed offsets. With ``require_stable`` (v7+, read_committed
    consumers) a partition whose offset an open transaction has committed answers
    UNSTABLE_OFFSET_COMMIT: the client retries once the transaction ends."""
    try:
        committed = server.engine.groups.fetch_offsets(group_id, member_id=member_id,
                                                       member_epoch=member_epoch)
    except errors.LogkernelError as exc:
        return {"group_id": group_id, "topics": [], "error_code": error_code_for(exc)}
    if topics is None:  # every committed offset of the group (v2+)
        wanted: dict[str, list[int]] = {}
        for topic, partition in sorted(committed):
            wanted.setdefault(topic, []).append(partition)
    else:
        wanted = {t.name: list(t.partition_indexes) for t in topics}
    out = []
    offsets = server.engine.offsets
    unstable = require_stable and offsets.has_pending(group_id)
    for topic, partitions in wanted.items():
        parts = []
        for partition in partitions:
            stored = committed.get((topic, partition))
            code = error_codes.NONE
            if unstable and offsets.has_pending(group_id, [(topic, partition)]):
                code = error_codes.UNSTABLE_OFFSET_COMMIT
            parts.append({
                "partition_index": partition,
                "committed_offset": stored.offset if stored else -1,
                "committed_leader_epoch": stored.leader_epoch if stored else -1,
                "metadata": stored.metadata if stored else "",
                "error_code": code})
        out.append({"name": topic, "partitions": parts})
    return {"group_id": group_id, "topics": out, "error_code": error_codes.NONE}
