"""Handlers that describe the cluster: ApiVersions, Metadata, DescribeCluster,
FindCoordinator.

The cluster is this one broker: node ``node.id`` is every partition's leader, its only
replica and its whole in-sync set, at leader epoch 0. Metadata responses are cached per
(version, requested topics) until a topic or partition count changes (the engine's
``generation``): clients ask for metadata often, and a response of many topics costs
milliseconds to build.
"""

from __future__ import annotations

import logging
from typing import Any

from logkernel import errors
from logkernel.broker.common import error_code_for
from logkernel.config import validate_topic_name
from logkernel.engine import LEADER_EPOCH
from logkernel.protocol import error_codes, hot, schema
from logkernel.protocol.apis import DESCRIBE_CLUSTER, FIND_COORDINATOR, METADATA
from logkernel.protocol.frames import RequestHeader

log = logging.getLogger("logkernel.broker")

# "Authorized operations not requested", Kafka's sentinel (Integer.MIN_VALUE).
OPERATIONS_NOT_REQUESTED = -2147483648
NULL_TOPIC_ID = bytes(16)


def handle_api_versions(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    # The request body (client software name and version, v3+) is informational only.
    return [hot.encode_api_versions_response(header.api_version, error_codes.NONE,
                                             server.api_versions)]


def handle_metadata(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(METADATA, version, body)
    requested = request.topics
    if version == 0 and not requested:
        requested = None  # v0: an empty list means every topic
    # Before v4 there is no flag: requesting a topic could always create it.
    allow_create = getattr(request, "allow_auto_topic_creation", True)
    names = None if requested is None else tuple(
        (t.name, getattr(t, "topic_id", None)) for t in requested)
    key = (METADATA, version, names, allow_create)
    cached = server.cached(key)
    if cached is not None:
        return [cached]
    engine = server.engine
    topics: list[hot.MetadataTopic] = []
    if names is None:
        for name in engine.topics(internal=True):
            topics.append(_describe(server, name))
    else:
        for name, topic_id in names:
            topics.append(_lookup(server, name, topic_id, allow_create))
    encoded = hot.encode_metadata_response(
        version, brokers=[(server.node_id, server.advertised_host, server.advertised_port, None)],
        cluster_id=engine.cluster_id, controller_id=server.node_id, topics=topics)
    # A topic created just now bumped the generation: cache under the new one.
    server.remember(key, encoded)
    return [encoded]


def _lookup(server: Any, name: str | None, topic_id: Any, allow_create: bool) -> hot.MetadataTopic:
    engine = server.engine
    if name is None:  # v10+: by topic id
        topic = engine.topic_by_id(topic_id.hex) if topic_id is not None else None
        if topic is None:
            return hot.MetadataTopic(error_codes.UNKNOWN_TOPIC_ID, None, topic_id.bytes
                                     if topic_id is not None else NULL_TOPIC_ID, False, [])
        return _describe(server, topic.name)
    try:
        validate_topic_name(name)
    except errors.ConfigError:
        return hot.MetadataTopic(error_codes.INVALID_TOPIC_EXCEPTION, name, NULL_TOPIC_ID, False, [])
    try:
        if allow_create:
            engine.topic(name)  # creates it if auto.create.topics.enable
        return _describe(server, name)
    except errors.LogkernelError as exc:
        return hot.MetadataTopic(error_code_for(exc), name, NULL_TOPIC_ID, False, [])


def _describe(server: Any, name: str) -> hot.MetadataTopic:
    engine = server.engine
    try:
        topic = engine.get_topic(name)
    except errors.LogkernelError as exc:
        return hot.MetadataTopic(error_code_for(exc), name, NULL_TOPIC_ID, False, [])
    node = server.node_id
    partitions = [hot.MetadataPartition(error_codes.NONE, p, node, LEADER_EPOCH, [node], [node], [])
                  for p in range(len(topic.partitions))]
    return hot.MetadataTopic(error_codes.NONE, name, bytes.fromhex(topic.topic_id), topic.internal,
                             partitions)


def handle_describe_cluster(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    request = schema.decode_request(DESCRIBE_CLUSTER, header.api_version, body)
    if getattr(request, "endpoint_type", 1) != 1:  # 2: controllers, which we do not expose
        return [schema.encode_response(DESCRIBE_CLUSTER, header.api_version, {
            "error_code": error_codes.UNSUPPORTED_VERSION, "endpoint_type": request.endpoint_type,
            "error_message": "this broker has no separate controller endpoints",
            "cluster_id": server.engine.cluster_id, "controller_id": -1})]
    return [schema.encode_response(DESCRIBE_CLUSTER, header.api_version, {
        "endpoint_type": 1,
        "cluster_id": server.engine.cluster_id,
        "controller_id": server.node_id,
        "brokers": [{"broker_id": server.node_id, "host": server.advertised_host,
                     "port": server.advertised_port, "rack": None}],
        "cluster_authorized_operations": OPERATIONS_NOT_REQUESTED,
    })]


GROUP_KEY = 0
TRANSACTION_KEY = 1


def handle_find_coordinator(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    """This broker coordinates every group and every transactional id (the engine holds
    both coordinators). Other key types (share groups) get a non-retriable error that says
    so, rather than COORDINATOR_NOT_AVAILABLE, which clients would retry until they time
    out."""
    version = header.api_version
    request = schema.decode_request(FIND_COORDINATOR, version, body)
    key_type = getattr(request, "key_type", GROUP_KEY)
    keys = list(request.coordinator_keys) if version >= 4 else [request.key]
    answers = []
    for key in keys:
        if key_type in (GROUP_KEY, TRANSACTION_KEY):
            answers.append({"key": key, "node_id": server.node_id, "host": server.advertised_host,
                            "port": server.advertised_port, "error_code": error_codes.NONE,
                            "error_message": None})
        else:
            log.warning("FindCoordinator for key type %d (%r) from %r: only consumer groups "
                        "and transactions have a coordinator on this broker", key_type, key,
                        header.client_id)
            answers.append({"key": key, "node_id": -1, "host": "", "port": -1,
                            "error_code": error_codes.INVALID_REQUEST,
                            "error_message": "this broker has no share-group coordinator"})
    if version >= 4:
        return [schema.encode_response(FIND_COORDINATOR, version, {"coordinators": answers})]
    return [schema.encode_response(FIND_COORDINATOR, version, answers[0])]
