"""Admin handlers: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
AlterConfigs, IncrementalAlterConfigs.

Each topic or resource in a request succeeds or fails on its own, with Kafka's error code
and a message saying what to change. Topic configs use Kafka's names; changes go through
the engine (``alter_topic_config``) and take effect at once. Broker configs are read-only
here: they are set at start (``logkernel serve --set``), so altering one is refused with a
message that says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from logkernel import errors
from logkernel.broker.common import error_code_for
from logkernel.config import (
    BROKER_CONFIGS,
    ENGINE_CONFIGS,
    INT_MAX,
    TOPIC_CONFIGS,
    parse_topic_overrides,
    validate_topic_name,
)
from logkernel.engine import MAX_PARTITIONS
from logkernel.protocol import error_codes, schema
from logkernel.protocol.apis import (
    ALTER_CONFIGS,
    CREATE_PARTITIONS,
    CREATE_TOPICS,
    DELETE_TOPICS,
    DESCRIBE_CONFIGS,
    INCREMENTAL_ALTER_CONFIGS,
)
from logkernel.protocol.frames import RequestHeader

log = logging.getLogger("logkernel.broker")

# DescribeConfigs resource types and config sources (Kafka's ConfigResource.Type and
# DescribeConfigsResponse.ConfigSource numbers).
TOPIC_RESOURCE = 2
BROKER_RESOURCE = 4
SOURCE_TOPIC = 1          # DYNAMIC_TOPIC_CONFIG: an override set on the topic
SOURCE_STATIC_BROKER = 4  # STATIC_BROKER_CONFIG: set at start (--set)
SOURCE_DEFAULT = 5        # DEFAULT_CONFIG
# Kafka's ConfigType numbers (DescribeConfigs v3+).
TYPE_BOOLEAN, TYPE_STRING, TYPE_INT, TYPE_LONG, TYPE_DOUBLE, TYPE_LIST = 1, 2, 3, 5, 6, 7
LIST_CONFIGS = frozenset({"cleanup.policy", "log.cleanup.policy"})
# IncrementalAlterConfigs operations.
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3

# The engine setting each topic config defaults to (e.g. segment.bytes <- log.segment.bytes).
BROKER_SYNONYM = {key.topic: name for name, key in ENGINE_CONFIGS.items() if key.topic}


def config_string(value: Any) -> str:
    """A config value as Kafka prints it (booleans lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == float("inf"):  # "no limit": Kafka's Double.MAX_VALUE default
        return "1.7976931348623157E308"
    return str(value)


def _config_type(name: str, value: Any) -> int:
    if isinstance(value, bool):
        return TYPE_BOOLEAN
    if isinstance(value, int):
        return TYPE_LONG if name.endswith(".ms") or value > INT_MAX else TYPE_INT
    if isinstance(value, float):
        return TYPE_DOUBLE
    return TYPE_LIST if name in LIST_CONFIGS else TYPE_STRING


# ---- topics ------------------------------------------------------------------------------

def handle_create_topics(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(CREATE_TOPICS, version, body)
    engine = server.engine
    results = []
    for topic in request.topics:
        code, message, partitions = _create_one(server, topic, request.validate_only)
        result: dict[str, Any] = {"name": topic.name, "error_code": code, "error_message": message,
                                  "num_partitions": -1, "replication_factor": -1, "configs": None}
        if code == error_codes.NONE:
            result["num_partitions"] = partitions
            result["replication_factor"] = 1
            if not request.validate_only:
                created = engine.get_topic(topic.name)
                result["topic_id"] = bytes.fromhex(created.topic_id)
                result["configs"] = [
                    {"name": c["name"], "value": c["value"], "read_only": False,
                     "config_source": c["config_source"], "is_sensitive": False}
                    for c in _topic_configs(server, created.config.values, created.config.overrides)]
        else:
            log.info("CreateTopics %r from %r: %s", topic.name, header.client_id, message)
        results.append(result)
    return [schema.encode_response(CREATE_TOPICS, version, {"topics": results})]


def _create_one(server: Any, topic: Any, validate_only: bool) -> tuple[int, str | None, int]:
    engine = server.engine
    name = topic.name
    try:
        validate_topic_name(name)
    except errors.ConfigError as exc:
        return error_codes.INVALID_TOPIC_EXCEPTION, str(exc), -1
    if name.startswith("__"):
        return (error_codes.INVALID_TOPIC_EXCEPTION,
                f"topic names starting with '__' are reserved for internal topics; {name!r} "
                "cannot be created", -1)
    if name in engine.topics(internal=True):
        return error_codes.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists", -1
    partitions = topic.num_partitions
    if topic.assignments:
        if partitions != -1:
            return (error_codes.INVALID_REQUEST, "give either num_partitions or replica "
                    "assignments, not both", -1)
        partitions = len(topic.assignments)
        for assignment in topic.assignments:
            if list(assignment.broker_ids) != [server.node_id]:
                return (error_codes.INVALID_REPLICATION_FACTOR,
                        f"partition {assignment.partition_index} is assigned to brokers "
                        f"{list(assignment.broker_ids)}; this cluster has only broker "
                        f"{server.node_id}", -1)
    if partitions == -1:
        partitions = server.config["num.partitions"]
    if not 1 <= partitions <= MAX_PARTITIONS:
        return (error_codes.INVALID_PARTITIONS,
                f"the partition count must be from 1 to {MAX_PARTITIONS}, got {partitions}", -1)
    if topic.replication_factor not in (-1, 1) and not topic.assignments:
        return (error_codes.INVALID_REPLICATION_FACTOR,
                f"replication factor {topic.replication_factor} is larger than the number of "
                "brokers (1): a local broker keeps one copy; use -1 or 1", -1)
    configs = {c.name: c.value for c in topic.configs if c.value is not None}
    try:
        parse_topic_overrides(configs)
    except errors.ConfigError as exc:
        return error_codes.INVALID_CONFIG, str(exc), -1
    if validate_only:
        return error_codes.NONE, None, partitions
    try:
        engine.create_topic(name, partitions, configs)
    except errors.LogkernelError as exc:
        return error_code_for(exc), str(exc), -1
    log.info("created topic %s with %d partition(s)%s", name, partitions,
             f" and config {configs}" if configs else "")
    return error_codes.NONE, None, partitions


def handle_delete_topics(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(DELETE_TOPICS, version, body)
    engine = server.engine
    if version >= 6:
        wanted = [(t.name, t.topic_id) for t in request.topics]
    else:
        wanted = [(name, None) for name in request.topic_names]
    responses = []
    for name, topic_id in wanted:
        response: dict[str, Any] = {"name": name, "topic_id": topic_id or bytes(16),
                                    "error_code": error_codes.NONE, "error_message": None}
        if name is None and topic_id is not None:
            found = engine.topic_by_id(topic_id.hex)
            if found is None:
                response.update(error_code=error_codes.UNKNOWN_TOPIC_ID,
                                error_message=f"no topic has id {topic_id}")
                responses.append(response)
                continue
            name = response["name"] = found.name
        try:
            found = engine.get_topic(name)
            response["topic_id"] = bytes.fromhex(found.topic_id)
            engine.delete_topic(name)
            log.info("deleted topic %s (requested by %r)", name, header.client_id)
        except errors.ConfigError as exc:  # internal topics
            response.update(error_code=error_codes.INVALID_REQUEST, error_message=str(exc))
        except errors.LogkernelError as exc:
            response.update(error_code=error_code_for(exc), error_message=str(exc))
        responses.append(response)
    return [schema.encode_response(DELETE_TOPICS, version, {"responses": responses})]


def handle_create_partitions(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(CREATE_PARTITIONS, version, body)
    engine = server.engine
    results = []
    for topic in request.topics:
        result = {"name": topic.name, "error_code": error_codes.NONE, "error_message": None}
        try:
            current = len(engine.get_topic(topic.name).partitions)
            if topic.count <= current or topic.count > MAX_PARTITIONS:
                result.update(error_code=error_codes.INVALID_PARTITIONS, error_message=(
                    f"topic {topic.name!r} has {current} partitions; the new count must be "
                    f"above that and at most {MAX_PARTITIONS}, got {topic.count}"))
            elif topic.assignments and any(list(a.broker_ids) != [server.node_id]
                                           for a in topic.assignments):
                result.update(error_code=error_codes.INVALID_REPLICATION_FACTOR,
                              error_message=f"this cluster has only broker {server.node_id}")
            elif not request.validate_only:
                engine.create_partitions(topic.name, topic.count)
        except errors.LogkernelError as exc:
            result.update(error_code=error_code_for(exc), error_message=str(exc))
        results.append(result)
    return [schema.encode_response(CREATE_PARTITIONS, version, {"results": results})]


# ---- configs -----------------------------------------------------------------------------

def _topic_configs(server: Any, values: Mapping[str, Any], overrides: Mapping[str, Any],
                   *, synonyms: bool = False, documentation: bool = False,
                   keys: Any = None) -> list[dict[str, Any]]:
    explicit = server.config.explicit
    out = []
    for name in TOPIC_CONFIGS:
        if keys is not None and name not in keys:
            continue
        value = values[name]
        broker_name = BROKER_SYNONYM.get(name)
        chain = []
        if name in overrides:
            chain.append({"name": name, "value": config_string(overrides[name]),
                          "source": SOURCE_TOPIC})
        if broker_name is not None and broker_name in explicit:
            chain.append({"name": broker_name, "value": config_string(server.config[broker_name]),
                          "source": SOURCE_STATIC_BROKER})
        default = ENGINE_CONFIGS[broker_name].default if broker_name else TOPIC_CONFIGS[name].default
        chain.append({"name": broker_name or name, "value": config_string(default),
                      "source": SOURCE_DEFAULT})
        out.append({"name": name, "value": config_string(value), "read_only": False,
                    "config_source": chain[0]["source"], "is_sensitive": False,
                    "synonyms": chain if synonyms else [],
                    "config_type": _config_type(name, value),
                    "documentation": TOPIC_CONFIGS[name].doc if documentation else None})
    return out


def _broker_configs(server: Any, *, synonyms: bool, documentation: bool,
                    keys: Any) -> list[dict[str, Any]]:
    explicit = server.config.explicit
    out = []
    for name, value in server.config.items():
        if keys is not None and name not in keys:
            continue
        key = ENGINE_CONFIGS.get(name) or BROKER_CONFIGS[name]
        source = SOURCE_STATIC_BROKER if name in explicit else SOURCE_DEFAULT
        chain = [{"name": name, "value": config_string(value), "source": source}]
        out.append({"name": name, "value": config_string(value), "read_only": True,
                    "config_source": source, "is_sensitive": False,
                    "synonyms": chain if synonyms else [],
                    "config_type": _config_type(name, value),
                    "documentation": key.doc if documentation else None})
    return out


def handle_describe_configs(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(DESCRIBE_CONFIGS, version, body)
    synonyms = getattr(request, "include_synonyms", False)
    documentation = getattr(request, "include_documentation", False)
    results = []
    for resource in request.resources:
        keys = None if resource.configuration_keys is None else set(resource.configuration_keys)
        result: dict[str, Any] = {"error_code": error_codes.NONE, "error_message": None,
                                  "resource_type": resource.resource_type,
                                  "resource_name": resource.resource_name, "configs": []}
        if resource.resource_type == TOPIC_RESOURCE:
            try:
                topic = server.engine.get_topic(resource.resource_name)
                result["configs"] = _topic_configs(server, topic.config.values, topic.config.overrides,
                                                   synonyms=synonyms, documentation=documentation,
                                                   keys=keys)
            except errors.LogkernelError as exc:
                result.update(error_code=error_code_for(exc), error_message=str(exc))
        elif resource.resource_type == BROKER_RESOURCE:
            if resource.resource_name not in ("", str(server.node_id)):
                result.update(error_code=error_codes.RESOURCE_NOT_FOUND,
                              error_message=f"broker {resource.resource_name!r} does not exist; "
                              f"this cluster is broker {server.node_id}")
            else:
                result["configs"] = _broker_configs(server, synonyms=synonyms,
                                                    documentation=documentation, keys=keys)
        else:
            result.update(error_code=error_codes.INVALID_REQUEST,
                          error_message=f"resource type {resource.resource_type} is not supported "
                          "(topics: 2, brokers: 4)")
        results.append(result)
    return [schema.encode_response(DESCRIBE_CONFIGS, version, {"results": results})]


def _alter(server: Any, resource: Any, changes: Mapping[str, Any], validate_only: bool
           ) -> dict[str, Any]:
    response = {"error_code": error_codes.NONE, "error_message": None,
                "resource_type": resource.resource_type, "resource_name": resource.resource_name}
    if resource.resource_type == BROKER_RESOURCE:
        response.update(error_code=error_codes.INVALID_REQUEST, error_message=(
            "broker configs are static on this broker: restart it with "
            "`logkernel serve --set name=value`"))
        return response
    if resource.resource_type != TOPIC_RESOURCE:
        response.update(error_code=error_codes.INVALID_REQUEST,
                        error_message=f"resource type {resource.resource_type} cannot be altered")
        return response
    engine = server.engine
    try:
        topic = engine.get_topic(resource.resource_name)
        topic.config.with_changes(engine.config.topic_defaults, changes)  # validates
        if not validate_only:
            engine.alter_topic_config(resource.resource_name, changes)
            log.info("altered config of topic %s: %s", resource.resource_name, dict(changes))
    except errors.LogkernelError as exc:
        response.update(error_code=error_code_for(exc), error_message=str(exc))
    return response


def handle_alter_configs(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    """AlterConfigs replaces a topic's whole set of overrides: what is not listed reverts to
    its default (Kafka's semantics; IncrementalAlterConfigs changes single keys)."""
    version = header.api_version
    request = schema.decode_request(ALTER_CONFIGS, version, body)
    responses = []
    for resource in request.resources:
        wanted = {c.name: c.value for c in resource.configs}
        changes: dict[str, Any] = dict(wanted)
        if resource.resource_type == TOPIC_RESOURCE:
            try:
                current = server.engine.get_topic(resource.resource_name).config.overrides
                for name in current:
                    if name not in wanted:
                        changes[name] = None
            except errors.LogkernelError:
                pass  # reported by _alter
        responses.append(_alter(server, resource, changes, request.validate_only))
    return [schema.encode_response(ALTER_CONFIGS, version, {"responses": responses})]


def handle_incremental_alter_configs(server: Any, header: RequestHeader, body: memoryview) -> list[Any]:
    version = header.api_version
    request = schema.decode_request(INCREMENTAL_ALTER_CONFIGS, version, body)
    responses = []
    for resource in request.resources:
        try:
            changes = _incremental_changes(server, resource)
        except errors.ConfigError as exc:
            responses.append({"error_code": error_codes.INVALID_CONFIG, "error_message": str(exc),
                              "resource_type": resource.resource_type,
                              "resource_name": resource.resource_name})
            continue
        responses.append(_alter(server, resource, changes, request.validate_only))
    return [schema.encode_response(INCREMENTAL_ALTER_CONFIGS, version, {"responses": responses})]


def _incremental_changes(server: Any, resource: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for c in resource.configs:
        if c.config_operation == OP_SET:
            changes[c.name] = c.value
        elif c.config_operation == OP_DELETE:
            changes[c.name] = None
        elif c.config_operation in (OP_APPEND, OP_SUBTRACT):
            if c.name not in LIST_CONFIGS:
                raise errors.ConfigError(f"{c.name!r} is not a list config; APPEND and SUBTRACT "
                                         "apply to list configs such as cleanup.policy")
            try:
                current = server.engine.get_topic(resource.resource_name).config[c.name]
            except errors.LogkernelError:
                current = ""
            items = [x for x in str(current).split(",") if x]
            given = [x.strip() for x in (c.value or "").split(",") if x.strip()]
            if c.config_operation == OP_APPEND:
                items += [x for x in given if x not in items]
            else:
                items = [x for x in items if x not in given]
            changes[c.name] = ",".join(items)
        else:
            raise errors.ConfigError(f"unknown config operation {c.config_operation} for "
                                     f"{c.name!r} (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT)")
    return changes
