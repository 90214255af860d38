"""Configuration: topic configs and engine (broker) configs, under Kafka's names.

Values arrive as strings (as they travel on the wire, in AlterConfigs or a command line)
or as Python values; both are parsed by the same rules Kafka applies, and an unknown key
or bad value raises ``ConfigError`` naming the key and the value.

Two tables:

- ``TOPIC_CONFIGS``: per-topic settings (``segment.bytes``, ``retention.ms``, ...). A topic
  stores only the keys set on it; everything else comes from the engine's defaults.
- ``ENGINE_CONFIGS``: settings of one engine (one data directory), named as Kafka's broker
  configs. Those with a ``topic`` field are the defaults of that topic config
  (``log.segment.bytes`` is the default of ``segment.bytes``), exactly as in Kafka.

Defaults are Kafka's, so an application sees the behaviour it will see on a cluster,
except where a line says otherwise and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from logkernel.errors import ConfigError

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


# ---------------------------------------------------------------------------------------
# Parsers: string-or-value -> value. Each raises ValueError with a sentence; ConfigKey.parse
# turns that into a ConfigError naming the key.
# ---------------------------------------------------------------------------------------


def _integer(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected an integer, not a boolean")
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text)
            except ValueError:
                raise ValueError("expected an integer") from None
        elif isinstance(value, float):
            if not value.is_integer():
                raise ValueError("expected an integer")
            value = int(value)
        elif not isinstance(value, int):
            raise ValueError(f"expected an integer, got {type(value).__name__}")
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _double(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean")
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
        if not lo <= number <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return number

    return parse


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("expected true or false")


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip() not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value.strip()

    return parse


def _cleanup_policy(value: Any) -> str:
    items = value.split(",") if isinstance(value, str) else list(value)
    policies = sorted({str(item).strip() for item in items})
    if not policies or any(p not in ("compact", "delete") for p in policies):
        raise ValueError("expected delete, compact, or compact,delete")
    return ",".join(policies)


# Kafka's compression.type for topics: "producer" keeps what the producer sent.
COMPRESSION_TYPES = ("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")


@dataclass(frozen=True)
class ConfigKey:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    topic: str | None = None  # engine keys only: the topic config this is the default of

    def value(self, raw: Any) -> Any:
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid value {raw!r} for config {self.name!r}: {exc}") from None


def _keys(*keys: ConfigKey) -> dict[str, ConfigKey]:
    return {k.name: k for k in keys}


# The smallest segment.bytes: one batch header plus a small record. Kafka's floor is 14
# bytes (a legacy record's overhead); ours is one RecordBatch v2 header, since anything
# smaller could not hold a batch and would roll on every append.
MIN_SEGMENT_BYTES = 128

TOPIC_CONFIGS: dict[str, ConfigKey] = _keys(
    ConfigKey("cleanup.policy", _cleanup_policy, "delete",
              "delete: retention removes old segments. compact: the log cleaner keeps the "
              "latest record per key (every record needs a key). compact,delete: both."),
    ConfigKey("retention.ms", _integer(-1, LONG_MAX), 7 * 24 * 3600 * 1000,
              "Delete a segment once its newest record is older than this (ms); -1: never."),
    ConfigKey("retention.bytes", _integer(-1, LONG_MAX), -1,
              "Delete oldest segments while the partition is larger than this; -1: no limit."),
    ConfigKey("segment.bytes", _integer(MIN_SEGMENT_BYTES, INT_MAX), 1024 * 1024 * 1024,
              "Roll to a new segment file at this size."),
    ConfigKey("segment.ms", _integer(1, LONG_MAX), 7 * 24 * 3600 * 1000,
              "Roll to a new segment once the active one's first record is this old (ms)."),
    ConfigKey("segment.index.bytes", _integer(64, INT_MAX), 10 * 1024 * 1024,
              "Bytes reserved for each segment's offset index."),
    ConfigKey("index.interval.bytes", _integer(0, INT_MAX), 4096,
              "Add an offset-index entry after this many log bytes."),
    ConfigKey("max.message.bytes", _integer(0, INT_MAX), 1024 * 1024 + 12,
              "Largest record batch accepted (bytes, header included)."),
    ConfigKey("message.timestamp.type", _choice(*TIMESTAMP_TYPES), "CreateTime",
              "CreateTime keeps the producer's timestamps; LogAppendTime stamps append time."),
    ConfigKey("compression.type", _choice(*COMPRESSION_TYPES), "producer",
              "Compression of stored batches; producer keeps what the producer sent."),
    ConfigKey("flush.messages", _integer(1, LONG_MAX), LONG_MAX,
              "fsync after this many appended records; 1: every send returns after fsync."),
    ConfigKey("flush.ms", _integer(0, LONG_MAX), LONG_MAX,
              "fsync once unflushed data is this old (ms), by a background task."),
    # Compaction settings, read by the log cleaner (log/cleaner.py) at each cleaning.
    ConfigKey("min.cleanable.dirty.ratio", _double(0.0, 1.0), 0.5,
              "Clean a compacted log once this fraction of it is dirty."),
    ConfigKey("delete.retention.ms", _integer(0, LONG_MAX), 24 * 3600 * 1000,
              "How long tombstones survive after cleaning (ms)."),
    ConfigKey("min.compaction.lag.ms", _integer(0, LONG_MAX), 0,
              "Records younger than this are never compacted (ms)."),
    ConfigKey("max.compaction.lag.ms", _integer(1, LONG_MAX), LONG_MAX,
              "A dirty record older than this forces cleaning (ms)."),
)

def _assignor_list(value: Any) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",")) if isinstance(value, str) else tuple(value)
    known = ("uniform", "range")
    if not names or any(n not in known for n in names):
        raise ValueError(f"expected a comma-separated list of {', '.join(known)}")
    return names


ENGINE_CONFIGS: dict[str, ConfigKey] = _keys(
    ConfigKey("log.cleanup.policy", _cleanup_policy, "delete", "Default cleanup.policy.",
              "cleanup.policy"),
    ConfigKey("log.retention.ms", _integer(-1, LONG_MAX), 7 * 24 * 3600 * 1000,
              "Default retention.ms.", "retention.ms"),
    ConfigKey("log.retention.bytes", _integer(-1, LONG_MAX), -1, "Default retention.bytes.",
              "retention.bytes"),
    ConfigKey("log.segment.bytes", _integer(MIN_SEGMENT_BYTES, INT_MAX), 1024 * 1024 * 1024,
              "Default segment.bytes.", "segment.bytes"),
    ConfigKey("log.roll.ms", _integer(1, LONG_MAX), 7 * 24 * 3600 * 1000,
              "Default segment.ms.", "segment.ms"),
    ConfigKey("log.index.size.max.bytes", _integer(64, INT_MAX), 10 * 1024 * 1024,
              "Default segment.index.bytes.", "segment.index.bytes"),
    ConfigKey("log.index.interval.bytes", _integer(0, INT_MAX), 4096,
              "Default index.interval.bytes.", "index.interval.bytes"),
    ConfigKey("message.max.bytes", _integer(0, INT_MAX), 1024 * 1024 + 12,
              "Default max.message.bytes.", "max.message.bytes"),
    ConfigKey("log.message.timestamp.type", _choice(*TIMESTAMP_TYPES), "CreateTime",
              "Default message.timestamp.type.", "message.timestamp.type"),
    ConfigKey("compression.type", _choice(*COMPRESSION_TYPES), "producer",
              "Default compression.type.", "compression.type"),
    ConfigKey("log.flush.interval.messages", _integer(1, LONG_MAX), LONG_MAX,
              "Default flush.messages.", "flush.messages"),
    ConfigKey("log.flush.interval.ms", _integer(0, LONG_MAX), LONG_MAX,
              "Default flush.ms.", "flush.ms"),
    ConfigKey("log.cleaner.min.cleanable.ratio", _double(0.0, 1.0), 0.5,
              "Default min.cleanable.dirty.ratio.", "min.cleanable.dirty.ratio"),
    ConfigKey("log.cleaner.delete.retention.ms", _integer(0, LONG_MAX), 24 * 3600 * 1000,
              "Default delete.retention.ms.", "delete.retention.ms"),
    ConfigKey("log.cleaner.min.compaction.lag.ms", _integer(0, LONG_MAX), 0,
              "Default min.compaction.lag.ms.", "min.compaction.lag.ms"),
    ConfigKey("log.cleaner.max.compaction.lag.ms", _integer(1, LONG_MAX), LONG_MAX,
              "Default max.compaction.lag.ms.", "max.compaction.lag.ms"),
    # The log cleaner (log/cleaner.py), with Kafka's names and defaults.
    ConfigKey("log.cleaner.enable", _boolean, True,
              "Run the log cleaner's background threads (compact() works either way)."),
    ConfigKey("log.cleaner.threads", _integer(1, 64), 1,
              "Background threads cleaning compacted partitions."),
    ConfigKey("log.cleaner.backoff.ms", _integer(1, LONG_MAX), 15_000,
              "How long an idle cleaner thread sleeps before looking for dirty logs (ms)."),
    ConfigKey("log.cleaner.dedupe.buffer.size", _integer(1024, LONG_MAX), 128 * 1024 * 1024,
              "Memory for the cleaners' key maps, split over the threads: 24 bytes a key; "
              "a log with more dirty keys is cleaned in several passes."),
    ConfigKey("log.cleaner.io.buffer.size", _integer(1024, INT_MAX), 512 * 1024,
              "Bytes a cleaner reads (and buffers for writing) at a time."),
    ConfigKey("log.cleaner.io.buffer.load.factor", _double(0.1, 0.95), 0.9,
              "How full a cleaner's key map may get."),
    ConfigKey("log.cleaner.io.max.bytes.per.second", _double(1.0, float("inf")), float("inf"),
              "Most bytes a second each cleaning reads plus writes (no limit by default)."),
    # Engine-only settings.
    ConfigKey("num.partitions", _integer(1, 1_000_000), 1,
              "Partitions of a topic created without a count (auto-created topics)."),
    # Kafka's default is true; an embedded program that sends to a misspelt topic is
    # better served by UnknownTopicError than by a silently created topic.
    ConfigKey("auto.create.topics.enable", _boolean, False,
              "Create a topic on the first send to it (Kafka's broker default is true)."),
    ConfigKey("log.retention.check.interval.ms", _integer(1, LONG_MAX), 300_000,
              "How often the background task applies retention (ms)."),
    ConfigKey("log.flush.offset.checkpoint.interval.ms", _integer(1, INT_MAX), 60_000,
              "How often recovery points and log start offsets are checkpointed (ms)."),
    # How often the background task looks for logs whose flush.ms has passed. Kafka's
    # log.flush.scheduler.interval.ms defaults to never; we check each second so a
    # configured flush.ms is honoured to within a second without a per-append timer.
    ConfigKey("log.flush.scheduler.interval.ms", _integer(1, LONG_MAX), 1000,
              "How often flush.ms deadlines are checked (ms)."),
    # Kafka uses 50 partitions; an embedded engine with one process has no load to
    # spread, and each partition costs a directory and an open segment.
    ConfigKey("offsets.topic.num.partitions", _integer(1, 1000), 1,
              "Partitions of __consumer_offsets (Kafka: 50)."),
    ConfigKey("offsets.topic.segment.bytes", _integer(MIN_SEGMENT_BYTES, INT_MAX), 100 * 1024 * 1024,
              "segment.bytes of __consumer_offsets."),
    # Consumer groups, with Kafka's names and defaults.
    ConfigKey("offsets.retention.minutes", _integer(1, INT_MAX), 7 * 24 * 60,
              "Committed offsets of a group with no members are dropped this long after it "
              "became empty (after their commit, for groups that never had members)."),
    ConfigKey("offsets.retention.check.interval.ms", _integer(1, LONG_MAX), 600_000,
              "How often expired committed offsets are looked for (ms)."),
    ConfigKey("offset.metadata.max.bytes", _integer(0, INT_MAX), 4096,
              "Longest metadata string a commit may carry (bytes)."),
    ConfigKey("group.initial.rebalance.delay.ms", _integer(0, INT_MAX), 3000,
              "How long the first rebalance of an empty classic group waits for more members "
              "(ms); 0 for tests."),
    ConfigKey("group.min.session.timeout.ms", _integer(1, INT_MAX), 6000,
              "Shortest session timeout a classic group member may ask for (ms)."),
    ConfigKey("group.max.session.timeout.ms", _integer(1, INT_MAX), 1_800_000,
              "Longest session timeout a classic group member may ask for (ms)."),
    ConfigKey("group.max.size", _integer(1, INT_MAX), INT_MAX,
              "Most members a classic group may have."),
    ConfigKey("group.consumer.session.timeout.ms", _integer(1, INT_MAX), 45_000,
              "Session timeout of consumer-protocol (KIP-848) group members (ms)."),
    ConfigKey("group.consumer.heartbeat.interval.ms", _integer(1, INT_MAX), 5000,
              "Heartbeat interval told to consumer-protocol group members (ms)."),
    ConfigKey("group.consumer.max.size", _integer(1, INT_MAX), INT_MAX,
              "Most members a consumer-protocol group may have."),
    ConfigKey("group.consumer.assignors", _assignor_list, ("uniform", "range"),
              "Server-side assignors of consumer-protocol groups; the first is the default."),
    # Idempotent producers and transactions, with Kafka's names and defaults.
    ConfigKey("producer.id.expiration.ms", _integer(1, INT_MAX), 86_400_000,
              "A producer id's state in a partition is dropped after this long without a "
              "write (and no open transaction); its next batch may start at any sequence."),
    ConfigKey("producer.id.expiration.check.interval.ms", _integer(1, INT_MAX), 600_000,
              "How often expired producer ids are looked for (ms)."),
    ConfigKey("transaction.max.timeout.ms", _integer(1, INT_MAX), 900_000,
              "Largest transaction.timeout.ms a transactional producer may ask for (ms)."),
    ConfigKey("transactional.id.expiration.ms", _integer(1, INT_MAX), 604_800_000,
              "A transactional id with no transaction open is forgotten after this long "
              "unused (ms)."),
    ConfigKey("transaction.abort.timed.out.transaction.cleanup.interval.ms",
              _integer(1, INT_MAX), 10_000,
              "How often transactions open past their timeout are looked for and aborted (ms)."),
    ConfigKey("transaction.remove.expired.transaction.cleanup.interval.ms",
              _integer(1, INT_MAX), 3_600_000,
              "How often expired transactional ids are looked for (ms)."),
    # Kafka uses 50 partitions; see offsets.topic.num.partitions.
    ConfigKey("transaction.state.log.num.partitions", _integer(1, 1000), 1,
              "Partitions of __transaction_state (Kafka: 50)."),
    ConfigKey("transaction.state.log.segment.bytes", _integer(MIN_SEGMENT_BYTES, INT_MAX),
              100 * 1024 * 1024, "segment.bytes of __transaction_state."),
)


def _check_key(table: Mapping[str, ConfigKey], name: Any, what: str) -> ConfigKey:
    if not isinstance(name, str):
        raise ConfigError(f"{what} names are strings, got {name!r}")
    key = table.get(name)
    if key is None:
        close = [k for k in table if name.split(".")[-1] in k]
        hint = f" (did you mean {', '.join(sorted(close)[:3])}?)" if close else ""
        raise ConfigError(f"unknown {what} {name!r}{hint}; known: {', '.join(sorted(table))}")
    return key


def parse_topic_overrides(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validates topic config overrides, returning parsed values. Raises ConfigError."""
    parsed: dict[str, Any] = {}
    for name, value in (raw or {}).items():
        parsed[name] = _check_key(TOPIC_CONFIGS, name, "topic config").value(value)
    return parsed


class EngineConfig:
    """The parsed engine settings: ``config["log.segment.bytes"]`` and the topic defaults."""

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        values = {name: key.default for name, key in ENGINE_CONFIGS.items()}
        for name, value in (raw or {}).items():
            values[name] = _check_key(ENGINE_CONFIGS, name, "engine config").value(value)
        self._values = values
        self.topic_defaults: dict[str, Any] = {key.name: key.default for key in TOPIC_CONFIGS.values()}
        for key in ENGINE_CONFIGS.values():
            if key.topic is not None:
                self.topic_defaults[key.topic] = values[key.name]

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def items(self) -> Iterable[tuple[str, Any]]:
        return self._values.items()


class TopicConfig:
    """The effective settings of one topic: its overrides over the engine's defaults.

    Attributes are the hot names the partition log reads on every append (an attribute
    read is cheaper than a dict lookup with a dotted string)."""

    __slots__ = ("cleanup_policy", "compression_type", "flush_messages", "flush_ms",
                 "index_interval_bytes", "log_append_time", "max_message_bytes", "overrides",
                 "retention_bytes", "retention_ms", "segment_bytes", "segment_index_bytes",
                 "segment_ms", "values")

    def __init__(self, defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> None:
        self.overrides = parse_topic_overrides(overrides)
        self.values: dict[str, Any] = {**defaults, **self.overrides}
        v = self.values
        self.cleanup_policy: str = v["cleanup.policy"]
        self.retention_ms: int = v["retention.ms"]
        self.retention_bytes: int = v["retention.bytes"]
        self.segment_bytes: int = v["segment.bytes"]
        # Kafka's maxSegmentMs: a compacted topic also rolls its active segment once it is
        # max.compaction.lag.ms old, since the cleaner never touches the active segment.
        self.segment_ms: int = (min(v["segment.ms"], v["max.compaction.lag.ms"])
                                if "compact" in self.cleanup_policy else v["segment.ms"])
        self.segment_index_bytes: int = v["segment.index.bytes"]
        self.index_interval_bytes: int = v["index.interval.bytes"]
        self.max_message_bytes: int = v["max.message.bytes"]
        self.log_append_time: bool = v["message.timestamp.type"] == "LogAppendTime"
        self.compression_type: str = v["compression.type"]
        self.flush_messages: int = v["flush.messages"]
        self.flush_ms: int = v["flush.ms"]

    @property
    def deletes(self) -> bool:
        """True when retention deletes old segments (cleanup.policy includes delete)."""
        return "delete" in self.cleanup_policy.split(",")

    @property
    def compacts(self) -> bool:
        """True when the log cleaner keeps the latest record per key (cleanup.policy
        includes compact); such a topic accepts only records with keys."""
        return "compact" in self.cleanup_policy.split(",")

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def with_changes(self, defaults: Mapping[str, Any], changes: Mapping[str, Any | None]) -> TopicConfig:
        """A new config with ``changes`` applied (a value of None removes an override)."""
        overrides = dict(self.overrides)
        for name, value in changes.items():
            _check_key(TOPIC_CONFIGS, name, "topic config")
            if value is None:
                overrides.pop(name, None)
            else:
                overrides[name] = value
        return TopicConfig(defaults, overrides)


# Kafka's topic name rules (Topic.java): legal characters, at most 249 characters.
MAX_TOPIC_NAME_LENGTH = 249
_LEGAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def validate_topic_name(name: Any) -> str:
    """Returns ``name`` if Kafka would accept it as a topic name, else raises ConfigError."""
    if not isinstance(name, str):
        raise ConfigError(f"topic names are strings, got {type(name).__name__} {name!r}")
    if not name:
        raise ConfigError("a topic name must not be empty")
    if name in (".", ".."):
        raise ConfigError(f"topic name {name!r} is not allowed (it names a directory)")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise ConfigError(f"topic name is {len(name)} characters; at most "
                          f"{MAX_TOPIC_NAME_LENGTH} are allowed")
    bad = sorted(set(name) - _LEGAL)
    if bad:
        raise ConfigError(f"topic name {name!r} contains {''.join(bad)!r}; only ASCII letters, "
                          "digits, '.', '_' and '-' are allowed")
    return name


# ---- the broker's own settings ------------------------------------------------------------

BROKER_CONFIGS: dict[str, ConfigKey] = _keys(
    # Kafka's default (100 MiB): the largest request frame read; a bigger size prefix closes
    # the connection, since the stream cannot be re-synchronised after it.
    ConfigKey("socket.request.max.bytes", _integer(1024, INT_MAX), 100 * 1024 * 1024,
              "Largest request frame accepted (bytes)."),
    # Kafka's default (10 minutes): a connection with no request for this long is closed.
    ConfigKey("connections.max.idle.ms", _integer(1, LONG_MAX), 10 * 60 * 1000,
              "Close connections idle for this long (ms)."),
    # Kafka's fetch.max.bytes default (55 MiB): a cap on one fetch response, whatever the
    # client asks for, so a fetch of many partitions cannot hold the whole log in memory.
    ConfigKey("fetch.max.bytes", _integer(1024, INT_MAX), 55 * 1024 * 1024,
              "Largest fetch response (bytes)."),
    ConfigKey("node.id", _integer(0, INT_MAX), 0, "This broker's node id in metadata."),
)

# A local broker should be convenient: Kafka's own default, unlike the embedded engine's.
BROKER_ENGINE_DEFAULTS = {"auto.create.topics.enable": True}


class BrokerConfig:
    """Settings of ``logkernel serve``: Kafka broker config names. Engine settings
    (log.segment.bytes, num.partitions, ...) and broker ones (socket.request.max.bytes, ...)
    share one namespace, as in Kafka's server.properties. Raises ConfigError for an unknown
    name or a bad value, naming both."""

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        engine_raw: dict[str, Any] = dict(BROKER_ENGINE_DEFAULTS)
        values = {name: key.default for name, key in BROKER_CONFIGS.items()}
        self.explicit = frozenset(raw or ())  # names set by the operator (DescribeConfigs' source)
        known = {**ENGINE_CONFIGS, **BROKER_CONFIGS}
        for name, value in (raw or {}).items():
            key = _check_key(known, name, "broker config")
            if name in BROKER_CONFIGS:
                values[name] = key.value(value)
            else:
                engine_raw[name] = value
        self.engine = EngineConfig(engine_raw)
        self._values = values

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        return self.engine[name]

    def items(self) -> Iterable[tuple[str, Any]]:
        yield from self.engine.items()
        yield from self._values.items()

    def engine_settings(self) -> dict[str, Any]:
        return dict(self.engine.items())
