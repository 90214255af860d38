"""Hand-specialised codecs for the messages on the broker's data path.

Why hand-written: the generic codec (kio, generated from Kafka's JSON message schemas) is
correct for every API and version, and its Rust decoder is fast, but its pure-Python encoder
costs 6-40x more than specialised ``struct`` code (a fixed ~13 us per message plus ~9 us per
partition; 3.3 ms for a 50-topic Metadata response) and copies every record payload into a
BytesIO, and its decoder copies record data out of the request buffer. The broker's hot path is
decode-Produce, encode-Produce-response, encode-Fetch-response, encode-Metadata (clients poll
it), plus ListOffsets and ApiVersions on every connection, and OffsetCommit (consumers commit
after every batch: decode-OffsetCommit and encode-OffsetCommit-response). Here:

* every fixed-size run of fields is one precompiled ``struct.Struct`` (one call per partition,
  nothing per record: record batches are opaque bytes to this layer);
* ``decode_produce_request`` returns each partition's records as a ``memoryview`` slice of the
  request buffer (no copy); the broker validates and stores those bytes as they are;
* ``encode_fetch_response`` returns a list of buffers whose concatenation is the body; each
  non-empty records object (bytes or a memoryview of a segment) is an element as-is, so the
  transport can ``writelines``/``sendmsg`` it without building one large bytes object.

Every encoder is checked byte for byte against kio for every version listed
(tests/test_protocol_hot.py); kio is not imported here. Bodies only: the caller writes the size
prefix and the request/response header (response header v0 for non-flexible versions and for
every ApiVersions response, v1 for flexible ones).

Wire notation in the layout tables below (Kafka's names, from the message JSON schemas):
``int16/int32/int64`` big-endian; ``string`` int16 length + UTF-8 (-1 null when nullable);
``bytes`` int32 length (-1 null); ``[x]`` int32 count then the items (-1 null when nullable);
flexible versions replace these by compact forms, a uvarint of length/count + 1 (0 null), and
end every struct (message, topic, partition, array entry) with a tagged-field section ``tags``:
a uvarint count of tagged fields followed by the fields. We never write tagged fields, so our
``tags`` is the single byte 0x00; the decoder skips whatever tagged fields a client sends.

Errors: a request whose bytes do not parse raises ``MalformedMessage`` (the client's fault:
answer with an error / close the connection). A version outside a function's range, or a value
that does not fit its field (e.g. a 40,000-byte legacy string, a topic id that is not 16 bytes),
raises ValueError / struct.error: the caller's bug, since the broker only offers versions in
these ranges (``*_VERSIONS`` below) and builds responses from its own state.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from logkernel.protocol import apis
from logkernel.protocol.primitives import (
    INT16,
    INT32,
    INT64,
    SMALL_UVARINTS,
    MalformedMessage,
    read_uvarint,
    skip_tagged_fields,
    write_array_length,
    write_nullable_string,
    write_string,
    write_uvarint,
)

# Versions each codec handles: the ranges the broker offers. Later versions change the wire
# (Fetch 13 and Produce 13 name topics by id, Metadata 13 adds a top-level error code) or the
# meaning (Produce 11-12: KIP-890 transactions; ListOffsets 8+: tiered-storage timestamp
# queries), which the broker does not implement. ApiVersions 4 is the newest. Produce 0-2
# requests are decoded although Kafka 4 rejects them, so the broker can answer them with a
# proper error (librdkafka needs Produce min 0 advertised, KAFKA-18659).
# Both come from the table of offered APIs (protocol/apis.py), the one place they are set.


def _versions(key: int) -> range:
    return range(apis.OFFERED[key].min_version, apis.OFFERED[key].max_version + 1)


PRODUCE_VERSIONS = _versions(apis.PRODUCE)
FETCH_VERSIONS = _versions(apis.FETCH)
METADATA_VERSIONS = _versions(apis.METADATA)
LIST_OFFSETS_VERSIONS = _versions(apis.LIST_OFFSETS)
API_VERSIONS_VERSIONS = _versions(apis.API_VERSIONS)
OFFSET_COMMIT_VERSIONS = _versions(apis.OFFSET_COMMIT)

# First flexible version of each message (Kafka's "flexibleVersions"; the reference notes §1.7).
PRODUCE_FIRST_FLEXIBLE = apis.OFFERED[apis.PRODUCE].first_flexible
FETCH_FIRST_FLEXIBLE = apis.OFFERED[apis.FETCH].first_flexible
METADATA_FIRST_FLEXIBLE = apis.OFFERED[apis.METADATA].first_flexible
LIST_OFFSETS_FIRST_FLEXIBLE = apis.OFFERED[apis.LIST_OFFSETS].first_flexible
API_VERSIONS_FIRST_FLEXIBLE = apis.OFFERED[apis.API_VERSIONS].first_flexible
OFFSET_COMMIT_FIRST_FLEXIBLE = apis.OFFERED[apis.OFFSET_COMMIT].first_flexible

_EMPTY_TAGS = b"\x00"  # a tagged-field section holding no fields (uvarint count 0)
_NO_TAGGED_FIELDS = 0  # the same count, as a "B" field of a Struct that ends a flexible struct
_NULL_ARRAY = -1  # int32 count of a null array (non-flexible)
_NULL_COMPACT_ARRAY = 0  # uvarint count of a null compact array (flexible), as a "B" field
_NO_AUTHORIZED_OPERATIONS = -2147483648  # INT32_MIN: Kafka's "authorized operations not requested"
_NO_PREFERRED_READ_REPLICA = -1  # fetch from the leader (we are the only replica)
_NO_LEADER_EPOCH = -1  # ListOffsets v4+: "unknown", clients then skip epoch validation


def _check_version(api: str, version: int, versions: range) -> None:
    if version not in versions:
        raise ValueError(
            f"{api} v{version} is outside what this codec handles (v{versions[0]}-v{versions[-1]}); "
            f"the broker must answer UNSUPPORTED_VERSION before calling it"
        )


# --------------------------------------------------------------------------------------------
# Produce request (api key 0), decoded
#
#   v0-2    acks int16 | timeout_ms int32 | topics [name string | partitions [index int32 |
#           records bytes (nullable)]]
#   v3-8    transactional_id string (nullable) | then as v0-2
#   v9-10   flexible: transactional_id compact nullable string | acks int16 | timeout_ms int32 |
#           topics compact [name compact string | partitions compact [index int32 |
#           records compact nullable bytes | tags] | tags] | tags
#
# ProduceRequest.json: v1-2 are v0; v3 adds transactional_id (and record format v2); v4-8 add
# no request field (v4 KAFKA_STORAGE_ERROR, v7 zstd, v8 record errors in the response); v10 is
# v9 for clients that understand KIP-951 leader hints. Arrays and names are not nullable: a
# -1 (legacy) or 0 (compact) length there is malformed, as in Kafka's generated readers.


@dataclass(slots=True)
class ProducePartition:
    partition: int
    records: memoryview | None  # a view into the request buffer, not a copy


@dataclass(slots=True)
class ProduceRequest:
    transactional_id: str | None  # absent (None) before v3
    acks: int
    timeout_ms: int
    topics: list[tuple[str, list[ProducePartition]]]


_ACKS_TIMEOUT_COUNT = struct.Struct(">hii")  # acks, timeout_ms, topic count (non-flexible)
_ACKS_TIMEOUT = struct.Struct(">hi")  # acks, timeout_ms (flexible: the count is a uvarint)
_INDEX_LENGTH = struct.Struct(">ii")  # partition index, records length (non-flexible)

# The smallest encoding of one array item, to reject absurd counts before looping: a topic is
# at least a name length and a partition count (2 + 4 bytes; flexible 1 + 1 + tags 1); a
# partition at least its index and a records length (4 + 4; flexible 4 + 1 + tags 1).
_MIN_TOPIC = 6
_MIN_TOPIC_FLEXIBLE = 3
_MIN_PARTITION = 8
_MIN_PARTITION_FLEXIBLE = 6


def decode_produce_request(body: memoryview, version: int) -> ProduceRequest:
    """Decodes a Produce request body (versions 0-10, after the request header).

    Each partition's ``records`` is a slice of ``body`` (a bytes-like input is wrapped in a
    memoryview first): nothing is copied, so the caller must keep the buffer alive and unchanged
    while it uses them. Trailing bytes after the body are ignored.

    Cost: one ``unpack_from`` per topic and per partition plus one UTF-8 decode per name;
    independent of the size of the record data. Raises ``MalformedMessage`` (naming the field
    and byte position) if the bytes end early, a length is negative or runs past the end, an
    array count cannot fit in the remaining bytes, or a name is not UTF-8.
    """
    _check_version("Produce", version, PRODUCE_VERSIONS)
    view = body if isinstance(body, memoryview) else memoryview(body)
    try:
        if version >= PRODUCE_FIRST_FLEXIBLE:
            return _decode_produce_flexible(view, version)
        return _decode_produce_legacy(view, version)
    except MalformedMessage as error:
        if str(error).startswith("Produce v"):
            raise
        # from primitives (a varint or tagged-field section): add what was being decoded
        raise MalformedMessage(f"Produce v{version} request: {error}") from None
    except (struct.error, IndexError):
        raise MalformedMessage(
            f"Produce v{version} request body ({len(view)} bytes) ends inside a field: "
            f"the request is truncated or was encoded for another version"
        ) from None
    except UnicodeDecodeError as error:
        raise MalformedMessage(
            f"Produce v{version} request: a transactional id or topic name is not valid UTF-8 "
            f"({error.reason})"
        ) from None


def _malformed(version: int, what: str, pos: int, detail: str) -> MalformedMessage:
    return MalformedMessage(f"Produce v{version} request: {what} at byte {pos} {detail}")


def _check_count(version: int, what: str, count: int, pos: int, remaining: int, item: int) -> None:
    if count < 0:
        raise _malformed(version, what, pos, f"has count {count}; the array is not nullable")
    if count * item > remaining:
        raise _malformed(version, what, pos,
                         f"claims {count} items but only {remaining} bytes remain")


def _decode_produce_legacy(body: memoryview, version: int) -> ProduceRequest:
    size = len(body)
    pos = 0
    transactional_id: str | None = None
    if version >= 3:
        (length,) = INT16.unpack_from(body, 0)
        pos = 2
        if length >= 0:
            end = pos + length
            if end > size:
                raise _malformed(version, "transactional_id", 0, f"has length {length}, past the end")
            transactional_id = body[pos:end].tobytes().decode()
            pos = end
        elif length != -1:
            raise _malformed(version, "transactional_id", 0, f"has negative length {length}")
    acks, timeout_ms, topic_count = _ACKS_TIMEOUT_COUNT.unpack_from(body, pos)
    _check_count(version, "the topic array", topic_count, pos + 6, size - pos - 10, _MIN_TOPIC)
    pos += 10
    unpack_index_length = _INDEX_LENGTH.unpack_from
    topics: list[tuple[str, list[ProducePartition]]] = []
    for _ in range(topic_count):
        (length,) = INT16.unpack_from(body, pos)
        if length < 0:
            raise _malformed(version, "a topic name", pos, f"has length {length}; names are not nullable")
        start = pos + 2
        pos = start + length
        if pos > size:
            raise _malformed(version, "a topic name", start - 2, f"has length {length}, past the end")
        name = body[start:pos].tobytes().decode()
        (partition_count,) = INT32.unpack_from(body, pos)
        _check_count(version, "a partition array", partition_count, pos, size - pos - 4, _MIN_PARTITION)
        pos += 4
        partitions: list[ProducePartition] = []
        for _ in range(partition_count):
            index, length = unpack_index_length(body, pos)
            pos += 8
            if length >= 0:
                end = pos + length
                if end > size:
                    raise _malformed(version, "a records field", pos - 4,
                                     f"has length {length} but only {size - pos} bytes remain")
                partitions.append(ProducePartition(index, body[pos:end]))
                pos = end
            elif length == -1:
                partitions.append(ProducePartition(index, None))
            else:
                raise _malformed(version, "a records field", pos - 4, f"has negative length {length}")
        topics.append((name, partitions))
    return ProduceRequest(transactional_id, acks, timeout_ms, topics)


def _decode_produce_flexible(body: memoryview, version: int) -> ProduceRequest:
    # Compact lengths and counts below 127 take one byte; those are read inline (a call to
    # read_uvarint costs more than the rest of the field), longer ones through read_uvarint.
    size = len(body)
    # transactional_id: compact nullable string (uvarint length + 1, 0 = null)
    length = body[0]
    pos = 1
    if length > 0x7F:
        length, pos = read_uvarint(body, 0)
    transactional_id: str | None = None
    if length:
        end = pos + length - 1
        if end > size:
            raise _malformed(version, "transactional_id", 0, f"has length {length - 1}, past the end")
        transactional_id = body[pos:end].tobytes().decode()
        pos = end
    acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(body, pos)
    start = pos + 6
    topic_count = body[start]
    pos = start + 1
    if topic_count > 0x7F:
        topic_count, pos = read_uvarint(body, start)
    _check_count(version, "the topic array", topic_count - 1, start, size - pos, _MIN_TOPIC_FLEXIBLE)
    unpack_index = INT32.unpack_from
    topics: list[tuple[str, list[ProducePartition]]] = []
    for _ in range(topic_count - 1):
        start = pos
        length = body[pos]
        pos += 1
        if length > 0x7F:
            length, pos = read_uvarint(body, start)
        if not length:
            raise _malformed(version, "a topic name", start, "is null; names are not nullable")
        end = pos + length - 1
        if end > size:
            raise _malformed(version, "a topic name", start, f"has length {length - 1}, past the end")
        name = body[pos:end].tobytes().decode()
        partition_count = body[end]
        pos = end + 1
        if partition_count > 0x7F:
            partition_count, pos = read_uvarint(body, end)
        _check_count(version, "a partition array", partition_count - 1, end, size - pos,
                     _MIN_PARTITION_FLEXIBLE)
        partitions: list[ProducePartition] = []
        for _ in range(partition_count - 1):
            (index,) = unpack_index(body, pos)
            start = pos + 4
            length, pos = read_uvarint(body, start)  # records: usually > 127 bytes
            if length:
                end = pos + length - 1
                if end > size:
                    raise _malformed(version, "a records field", start,
                                     f"has length {length - 1} but only {size - pos} bytes remain")
                partitions.append(ProducePartition(index, body[pos:end]))
                pos = end
            else:
                partitions.append(ProducePartition(index, None))
            # partition tags: nearly always empty, so test the one byte before calling
            pos = pos + 1 if body[pos] == 0 else skip_tagged_fields(body, pos)
        topics.append((name, partitions))
        pos = pos + 1 if body[pos] == 0 else skip_tagged_fields(body, pos)
    if body[pos]:  # request-level tags: checked for shape, none understood
        skip_tagged_fields(body, pos)
    return ProduceRequest(transactional_id, acks, timeout_ms, topics)


# --------------------------------------------------------------------------------------------
# Produce response (api key 0), encoded
#
#   per partition                                                     versions
#     index int32 | error_code int16 | base_offset int64              0+
#     log_append_time_ms int64 (-1 unless the topic uses LogAppendTime) 2+
#     log_start_offset int64                                          5+
#     record_errors [] (always empty) | error_message string (null)  8+
#     tags                                                            9+ (tag 0 current_leader
#                                                                      in v10: never written)
#   body: responses [name string | partitions [...] | tags(9+)] | throttle_time_ms int32 (1+)
#         | tags (9+; tag 0 node_endpoints in v10: never written)
#
# kio starts at v3 (Kafka 4 removed v0-2 from its schemas); v0-2 follow ProduceResponse.json
# as of Kafka 3.x ("Version 3 is the same as version 2") and are tested against bytes built by
# hand. v4 (KAFKA_STORAGE_ERROR) and v6-7 add no field.

_PRODUCE_PARTITION_V0 = struct.Struct(">ihq")
_PRODUCE_PARTITION_V2 = struct.Struct(">ihqq")
_PRODUCE_PARTITION_V5 = struct.Struct(">ihqqq")
# record_errors empty + error_message null: int32 0 + int16 -1, or compact 0+1 + compact null 0
# followed by the partition's empty tags.
_PRODUCE_NO_RECORD_ERRORS = INT32.pack(0) + INT16.pack(-1)
_PRODUCE_NO_RECORD_ERRORS_FLEXIBLE = b"\x01\x00" + _EMPTY_TAGS


def encode_produce_response(version: int, topics: list[tuple[str, list[tuple[int, int, int, int, int]]]],
                            throttle_ms: int = 0) -> bytes:
    """Encodes a Produce response body (versions 0-10). Each partition is (partition,
    error_code, base_offset, log_append_time_ms, log_start_offset); fields a version lacks are
    dropped. O(topics + partitions), one ``pack`` per partition."""
    _check_version("Produce", version, PRODUCE_VERSIONS)
    flexible = version >= PRODUCE_FIRST_FLEXIBLE
    if flexible:
        suffix = _PRODUCE_NO_RECORD_ERRORS_FLEXIBLE
    elif version >= 8:
        suffix = _PRODUCE_NO_RECORD_ERRORS
    else:
        suffix = b""
    out = [write_array_length(len(topics), flexible)]
    append = out.append
    for name, partitions in topics:
        append(write_string(name, flexible))
        append(write_array_length(len(partitions), flexible))
        for partition, error_code, base_offset, log_append_time_ms, log_start_offset in partitions:
            if version >= 5:
                append(_PRODUCE_PARTITION_V5.pack(partition, error_code, base_offset,
                                                  log_append_time_ms, log_start_offset))
            elif version >= 2:
                append(_PRODUCE_PARTITION_V2.pack(partition, error_code, base_offset, log_append_time_ms))
            else:
                append(_PRODUCE_PARTITION_V0.pack(partition, error_code, base_offset))
            if suffix:
                append(suffix)
        if flexible:
            append(_EMPTY_TAGS)
    if version >= 1:
        append(INT32.pack(throttle_ms))
    if flexible:
        append(_EMPTY_TAGS)
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# Fetch response (api key 1), encoded
#
#   body                                                              versions
#     throttle_time_ms int32                                          4+ (1+ in Kafka)
#     error_code int16 | session_id int32                             7+
#     responses [topic string | partitions [...] | tags(12+)] | tags(12+)
#   per partition
#     index int32 | error_code int16 | high_watermark int64 | last_stable_offset int64   4+
#     log_start_offset int64                                                              5+
#     aborted_transactions [producer_id int64 | first_offset int64 | tags(12+)] (nullable) 4+
#     preferred_read_replica int32 (-1)                                                   11+
#     records bytes (nullable; we always send bytes, b"" when empty: kafka-python crashes
#       on null)                                                                          4+
#     tags (12+: diverging_epoch, current_leader, snapshot_id tags are never written)
#
# v6 and v8-10 add no response field (v9 adds the leader epoch to the request, v10 allows zstd).

_FETCH_TOP_V7 = struct.Struct(">ihi")  # throttle_time_ms, error_code, session_id
_FETCH_PARTITION_V4 = struct.Struct(">ihqq")  # index .. last_stable_offset
_FETCH_PARTITION_V5 = struct.Struct(">ihqqq")  # index .. log_start_offset
# Whole partition headers when aborted_transactions is null (the common case), one pack each:
#   v4: .. last_stable_offset | aborted -1 | records length
#   v5-10: .. log_start_offset | aborted -1 | records length
#   v11: .. log_start_offset | aborted -1 | preferred -1 | records length
#   v12: .. log_start_offset | aborted compact null 0 | preferred -1 (then uvarint length + 1)
_FETCH_PARTITION_V4_NULL = struct.Struct(">ihqqii")
_FETCH_PARTITION_V5_NULL = struct.Struct(">ihqqqii")
_FETCH_PARTITION_V11_NULL = struct.Struct(">ihqqqiii")
_FETCH_PARTITION_V12_NULL = struct.Struct(">ihqqqBi")
_ABORTED_TRANSACTION = struct.Struct(">qq")  # producer_id, first_offset
_ABORTED_TRANSACTION_FLEXIBLE = struct.Struct(">qqB")  # + empty tags (0)


def _compact_length(length: int) -> bytes:
    """uvarint(length + 1), the compact length of a non-null field. The 2- and 3-byte forms
    (lengths below 2 MiB, which covers a partition's records under the default 1 MiB
    max.partition.fetch.bytes) are built directly: 2-3x faster than write_uvarint's loop."""
    value = length + 1
    if value < 0x80:
        return SMALL_UVARINTS[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, (value >> 7) & 0x7F | 0x80, value >> 14))
    return write_uvarint(value)


@dataclass(slots=True)
class FetchPartitionData:
    partition: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: bytes | memoryview  # never null on the wire: b"" when there is no data
    aborted_transactions: list[tuple[int, int]] | None = None  # (producer_id, first_offset)


def encode_fetch_response(version: int, topics: list[tuple[str, list[FetchPartitionData]]], *,
                          throttle_ms: int = 0, error_code: int = 0,
                          session_id: int = 0) -> list[bytes | memoryview]:
    """Encodes a Fetch response body (versions 4-12) as a list of buffers to send in order.

    Every non-empty ``records`` object is an element of the list as-is (the same object: no
    copy, no join); between them are small ``bytes`` holding the headers. Empty records add no
    element. ``records`` memoryviews must be byte-format (``format == "B"``, contiguous), as
    slices of bytes, bytearray or mmap are. Cost: one ``pack`` per partition (two plus one per
    aborted transaction when the partition has any) and one short bytes copy per non-empty
    records object; never proportional to the record data.
    """
    _check_version("Fetch", version, FETCH_VERSIONS)
    flexible = version >= FETCH_FIRST_FLEXIBLE
    pieces: list[bytes | memoryview] = []
    head = bytearray(_FETCH_TOP_V7.pack(throttle_ms, error_code, session_id) if version >= 7
                     else INT32.pack(throttle_ms))
    head += write_array_length(len(topics), flexible)
    small_uvarints = SMALL_UVARINTS
    for name, partitions in topics:
        head += write_string(name, flexible)
        head += write_array_length(len(partitions), flexible)
        for data in partitions:
            records = data.records
            size = len(records)
            aborted = data.aborted_transactions
            if aborted is None:
                if flexible:
                    head += _FETCH_PARTITION_V12_NULL.pack(
                        data.partition, data.error_code, data.high_watermark, data.last_stable_offset,
                        data.log_start_offset, _NULL_COMPACT_ARRAY, _NO_PREFERRED_READ_REPLICA)
                    head += small_uvarints[size + 1] if size < 0x7F else _compact_length(size)
                elif version >= 11:
                    head += _FETCH_PARTITION_V11_NULL.pack(
                        data.partition, data.error_code, data.high_watermark, data.last_stable_offset,
                        data.log_start_offset, _NULL_ARRAY, _NO_PREFERRED_READ_REPLICA, size)
                elif version >= 5:
                    head += _FETCH_PARTITION_V5_NULL.pack(
                        data.partition, data.error_code, data.high_watermark, data.last_stable_offset,
                        data.log_start_offset, _NULL_ARRAY, size)
                else:
                    head += _FETCH_PARTITION_V4_NULL.pack(
                        data.partition, data.error_code, data.high_watermark, data.last_stable_offset,
                        _NULL_ARRAY, size)
            else:
                if version >= 5:
                    head += _FETCH_PARTITION_V5.pack(
                        data.partition, data.error_code, data.high_watermark, data.last_stable_offset,
                        data.log_start_offset)
                else:
                    head += _FETCH_PARTITION_V4.pack(
                        data.partition, data.error_code, data.high_watermark, data.last_stable_offset)
                head += write_array_length(len(aborted), flexible)
                if flexible:
                    for producer_id, first_offset in aborted:
                        head += _ABORTED_TRANSACTION_FLEXIBLE.pack(producer_id, first_offset,
                                                                   _NO_TAGGED_FIELDS)
                    head += INT32.pack(_NO_PREFERRED_READ_REPLICA)
                    head += _compact_length(size)
                else:
                    for producer_id, first_offset in aborted:
                        head += _ABORTED_TRANSACTION.pack(producer_id, first_offset)
                    if version >= 11:
                        head += INT32.pack(_NO_PREFERRED_READ_REPLICA)
                    head += INT32.pack(size)
            if size:
                pieces.append(bytes(head))
                pieces.append(records)
                head = bytearray()
            if flexible:
                head += _EMPTY_TAGS  # partition
        if flexible:
            head += _EMPTY_TAGS  # topic
    if flexible:
        head += _EMPTY_TAGS  # response
    if head:  # empty when a non-flexible body ends with records
        pieces.append(bytes(head))
    return pieces


# --------------------------------------------------------------------------------------------
# Metadata response (api key 3), encoded
#
#   body                                                              versions
#     throttle_time_ms int32                                          3+
#     brokers [node_id int32 | host string | port int32 | rack string (nullable) 1+ | tags 9+]
#     cluster_id string (nullable)                                    2+
#     controller_id int32                                             1+
#     topics [...]
#     cluster_authorized_operations int32                             8-10 (moved to
#                                                                     DescribeCluster in 11)
#     tags                                                            9+
#   per topic
#     error_code int16 | name string (nullable in 12+; we always have a name)   0+
#     topic_id uuid (16 bytes)                                        10+
#     is_internal bool (1 byte)                                       1+
#     partitions [...]
#     topic_authorized_operations int32                               8+
#     tags                                                            9+
#   per partition
#     error_code int16 | index int32 | leader_id int32                0+
#     leader_epoch int32                                              7+
#     replica_nodes [int32] | isr_nodes [int32]                       0+
#     offline_replicas [int32]                                        5+
#     tags                                                            9+
#
# v4 (allow_auto_topic_creation in the request only) and v6 (no field change) add nothing here.


@dataclass(slots=True)
class MetadataPartition:
    error_code: int
    partition: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline: list[int]


@dataclass(slots=True)
class MetadataTopic:
    error_code: int
    name: str | None             # None only for an unknown topic id (v12+)
    topic_id: bytes  # 16 bytes (a UUID's bytes)
    is_internal: bool
    partitions: list[MetadataPartition]
    authorized_operations: int = _NO_AUTHORIZED_OPERATIONS


_METADATA_PARTITION_V0 = struct.Struct(">hii")  # error_code, index, leader_id
_METADATA_PARTITION_V7 = struct.Struct(">hiii")  # + leader_epoch
_BOOLEAN = (b"\x00", b"\x01")
# Replica lists up to 16 long get a whole-partition Struct per shape (version and the three list
# lengths), so a partition is one pack call: replication factors above 16 do not occur in
# practice (they cannot exceed the broker count and are typically 3), which also bounds the cache
# to the few shapes a cluster has (13 versions x 17^3 at the very worst). Longer lists take the
# general path, a pack per list with a format built per call. A flexible count (length + 1 <= 17)
# is one uvarint byte, so "B".
_MAX_PACKED_REPLICAS = 16
_METADATA_PARTITION_PACKERS: dict[tuple[int, int, int, int], struct.Struct] = {}


def _metadata_partition_packer(version: int, replicas: int, isr: int, offline: int) -> struct.Struct | None:
    if max(replicas, isr, offline) > _MAX_PACKED_REPLICAS:
        return None
    count = "B" if version >= METADATA_FIRST_FLEXIBLE else "i"
    layout = ">hii" + ("i" if version >= 7 else "") + f"{count}{replicas}i{count}{isr}i"
    if version >= 5:
        layout += f"{count}{offline}i"
    if version >= METADATA_FIRST_FLEXIBLE:
        layout += "B"  # empty tags
    packer = _METADATA_PARTITION_PACKERS[(version, replicas, isr, offline)] = struct.Struct(layout)
    return packer


def _int32_array(values: list[int], flexible: bool) -> bytes:
    n = len(values)
    count = write_uvarint(n + 1) if flexible else INT32.pack(n)
    return count + struct.pack(f">{n}i", *values)


def _metadata_partition(version: int, p: MetadataPartition) -> bytes:
    """The general path: one partition with any replica list lengths."""
    flexible = version >= METADATA_FIRST_FLEXIBLE
    if version >= 7:
        out = _METADATA_PARTITION_V7.pack(p.error_code, p.partition, p.leader, p.leader_epoch)
    else:
        out = _METADATA_PARTITION_V0.pack(p.error_code, p.partition, p.leader)
    out += _int32_array(p.replicas, flexible) + _int32_array(p.isr, flexible)
    if version >= 5:
        out += _int32_array(p.offline, flexible)
    return out + _EMPTY_TAGS if flexible else out


def encode_metadata_response(version: int, *, brokers: list[tuple[int, str, int, str | None]],
                             cluster_id: str | None, controller_id: int, topics: list[MetadataTopic],
                             throttle_ms: int = 0,
                             cluster_authorized_operations: int = _NO_AUTHORIZED_OPERATIONS) -> bytes:
    """Encodes a Metadata response body (versions 0-12); brokers are (node_id, host, port,
    rack). Fields a version lacks are dropped. O(brokers + topics + partitions + replicas):
    one ``pack`` per partition (replica lists up to 16 long), a few per topic and broker."""
    _check_version("Metadata", version, METADATA_VERSIONS)
    flexible = version >= METADATA_FIRST_FLEXIBLE
    out: list[bytes] = []
    append = out.append
    if version >= 3:
        append(INT32.pack(throttle_ms))
    append(write_array_length(len(brokers), flexible))
    for node_id, host, port, rack in brokers:
        append(INT32.pack(node_id))
        append(write_string(host, flexible))
        append(INT32.pack(port))
        if version >= 1:
            append(write_nullable_string(rack, flexible))
        if flexible:
            append(_EMPTY_TAGS)
    if version >= 2:
        append(write_nullable_string(cluster_id, flexible))
    if version >= 1:
        append(INT32.pack(controller_id))
    append(write_array_length(len(topics), flexible))
    packers = _METADATA_PARTITION_PACKERS
    for topic in topics:
        append(INT16.pack(topic.error_code))
        # Null names exist from v12 (a topic asked for by an id that is unknown).
        append(write_nullable_string(topic.name, flexible) if version >= 12
               else write_string(topic.name or "", flexible))
        if version >= 10:
            if len(topic.topic_id) != 16:
                raise ValueError(f"topic {topic.name!r}: topic_id must be 16 bytes, got "
                                 f"{len(topic.topic_id)}")
            append(topic.topic_id)
        if version >= 1:
            append(_BOOLEAN[topic.is_internal])
        append(write_array_length(len(topic.partitions), flexible))
        for p in topic.partitions:
            replicas, isr, offline = p.replicas, p.isr, p.offline
            shape = (version, len(replicas), len(isr), len(offline))
            packer = packers.get(shape) or _metadata_partition_packer(*shape)
            if packer is None:
                append(_metadata_partition(version, p))
            elif flexible:  # counts are length + 1; then the partition's empty tags
                append(packer.pack(p.error_code, p.partition, p.leader, p.leader_epoch,
                                   shape[1] + 1, *replicas, shape[2] + 1, *isr, shape[3] + 1, *offline,
                                   _NO_TAGGED_FIELDS))
            elif version >= 7:
                append(packer.pack(p.error_code, p.partition, p.leader, p.leader_epoch,
                                   shape[1], *replicas, shape[2], *isr, shape[3], *offline))
            elif version >= 5:
                append(packer.pack(p.error_code, p.partition, p.leader,
                                   shape[1], *replicas, shape[2], *isr, shape[3], *offline))
            else:
                append(packer.pack(p.error_code, p.partition, p.leader, shape[1], *replicas, shape[2], *isr))
        if version >= 8:
            append(INT32.pack(topic.authorized_operations))
        if flexible:
            append(_EMPTY_TAGS)
    if 8 <= version <= 10:
        append(INT32.pack(cluster_authorized_operations))
    if flexible:
        append(_EMPTY_TAGS)
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# ListOffsets response (api key 2), encoded
#
#   body: throttle_time_ms int32 (2+) | topics [name string | partitions [...] | tags(6+)]
#         | tags(6+)
#   per partition: index int32 | error_code int16 | timestamp int64 | offset int64 (1+)
#                  | leader_epoch int32 (4+; always -1) | tags (6+)
#
# v0 (old_style_offsets array) is not served; v3 (isolation level) and v5, v7 (new error
# codes / max-timestamp query) change only the request.

_LIST_OFFSETS_PARTITION_V1 = struct.Struct(">ihqq")
_LIST_OFFSETS_PARTITION_V4 = struct.Struct(">ihqqi")  # + leader_epoch
_LIST_OFFSETS_PARTITION_V6 = struct.Struct(">ihqqiB")  # + empty tags (0)


def encode_list_offsets_response(version: int, topics: list[tuple[str, list[tuple[int, int, int, int]]]],
                                 throttle_ms: int = 0) -> bytes:
    """Encodes a ListOffsets response body (versions 1-7); per partition (partition,
    error_code, timestamp, offset). One ``pack`` per partition."""
    _check_version("ListOffsets", version, LIST_OFFSETS_VERSIONS)
    flexible = version >= LIST_OFFSETS_FIRST_FLEXIBLE
    out: list[bytes] = []
    append = out.append
    if version >= 2:
        append(INT32.pack(throttle_ms))
    append(write_array_length(len(topics), flexible))
    for name, partitions in topics:
        append(write_string(name, flexible))
        append(write_array_length(len(partitions), flexible))
        for partition, error_code, timestamp, offset in partitions:
            if flexible:
                append(_LIST_OFFSETS_PARTITION_V6.pack(partition, error_code, timestamp, offset,
                                                       _NO_LEADER_EPOCH, _NO_TAGGED_FIELDS))
            elif version >= 4:
                append(_LIST_OFFSETS_PARTITION_V4.pack(partition, error_code, timestamp, offset,
                                                       _NO_LEADER_EPOCH))
            else:
                append(_LIST_OFFSETS_PARTITION_V1.pack(partition, error_code, timestamp, offset))
        if flexible:
            append(_EMPTY_TAGS)
    if flexible:
        append(_EMPTY_TAGS)
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# ApiVersions response (api key 18), encoded
#
#   body: error_code int16 | api_keys [api_key int16 | min_version int16 | max_version int16
#         | tags(3+)] | throttle_time_ms int32 (1+) | tags (3+)
#
# v3+ body is flexible but the response header stays v0 (ApiVersionsResponse.json), so a
# client can read the error before it knows which versions the broker speaks. The v3+ tagged
# fields (supported_features, finalized_features, ...) are never written: no features.

_API_VERSION = struct.Struct(">hhh")
_API_VERSION_FLEXIBLE = struct.Struct(">hhhB")  # + empty tags (0)


def encode_api_versions_response(version: int, error_code: int, api_keys: list[tuple[int, int, int]],
                                 throttle_ms: int = 0) -> bytes:
    """Encodes an ApiVersions response body (versions 0-4); api_keys are (api_key,
    min_version, max_version). One ``pack`` per API."""
    _check_version("ApiVersions", version, API_VERSIONS_VERSIONS)
    flexible = version >= API_VERSIONS_FIRST_FLEXIBLE
    out = [INT16.pack(error_code), write_array_length(len(api_keys), flexible)]
    if flexible:
        out.extend(_API_VERSION_FLEXIBLE.pack(key, low, high, _NO_TAGGED_FIELDS)
                   for key, low, high in api_keys)
    else:
        out.extend(_API_VERSION.pack(key, low, high) for key, low, high in api_keys)
    if version >= 1:
        out.append(INT32.pack(throttle_ms))
    if flexible:
        out.append(_EMPTY_TAGS)
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# OffsetCommit request (api key 8), decoded
#
#   body                                                              versions
#     group_id string                                                 0+
#     generation_id_or_member_epoch int32 | member_id string          1+
#     group_instance_id string (nullable)                             7+
#     retention_time_ms int64                                         2-4
#     topics [name string | partitions [...] | tags(8+)]
#     tags                                                            8+
#   per partition
#     partition_index int32 | committed_offset int64                  0+
#     committed_leader_epoch int32                                    6+
#     committed_metadata string (nullable)                            0+
#     tags                                                            8+
#
# OffsetCommitRequest.json: v3-4 are v2; v5 drops retention_time_ms (retention is the broker's
# offsets.retention.minutes only); v9 is v8 on the wire (the generation field carries a KIP-848
# member epoch for consumer-protocol groups); v10 names topics by id (not offered). No tagged
# fields are defined: any a client sends are skipped. group_id, member_id, topic names and the
# arrays are not nullable (null is malformed, as in Kafka's generated readers).
#
# Two walkers, legacy (v2-7) and flexible (v8-9), each one inlined function (a helper call per
# string costs ~40% more in all: this is the code a consumer runs after every batch). They work
# on a bytes copy of the body: OffsetCommit requests are small (~100 bytes), and slicing and
# decoding bytes is cheaper than memoryview slices, more than paying for the copy. Each keeps
# ``what`` and ``start``, the field it is reading and its byte position, so a body that ends
# early (IndexError / struct.error inside the walker) raises MalformedMessage naming them;
# lengths and counts are checked before use. Messages from the helpers lack the "OffsetCommit
# vN request:" prefix, which decode_offset_commit_request adds.


@dataclass(slots=True)
class OffsetCommitPartition:
    partition_index: int
    committed_offset: int
    committed_leader_epoch: int  # -1 ("unknown", kio's default) before v6
    committed_metadata: str | None


@dataclass(slots=True)
class OffsetCommitTopic:
    name: str
    partitions: list[OffsetCommitPartition]


@dataclass(slots=True)
class OffsetCommitRequest:
    """Attribute names are kio's, so a handler reads either (except retention: kio's
    ``retention_time`` is a timedelta, ours ``retention_time_ms`` an int)."""

    group_id: str
    generation_id_or_member_epoch: int
    member_id: str
    group_instance_id: str | None  # None before v7 (and when the client sends null)
    retention_time_ms: int  # -1 (the broker's retention) outside v2-4, as kio's default
    topics: list[OffsetCommitTopic]


_COMMIT_PARTITION_V2 = struct.Struct(">iq")  # partition_index, committed_offset
_COMMIT_PARTITION_V6 = struct.Struct(">iqi")  # + committed_leader_epoch

# The smallest encoding of one array item, to reject absurd counts before looping (a count
# never sizes an allocation here, but a 2**31 count must not make the broker spin either): a
# topic is at least a name length and a partition count (2 + 4; flexible 1 + 1 + tags 1); a
# partition at least its index, offset and a metadata length (4 + 8 + 2; flexible 4 + 8 +
# epoch 4 + 1 + tags 1), plus the 4-byte leader epoch from v6.
_MIN_COMMIT_TOPIC = 6
_MIN_COMMIT_TOPIC_FLEXIBLE = 3
_MIN_COMMIT_PARTITION = 14
_MIN_COMMIT_PARTITION_FLEXIBLE = 18


def decode_offset_commit_request(body: memoryview, version: int) -> OffsetCommitRequest:
    """Decodes an OffsetCommit request body (versions 2-9, after the request header).

    The body is copied once (``bytes(body)``, ~100 bytes) and nothing returned refers to it, so
    the caller may reuse the buffer. Trailing bytes after the body are ignored. Cost: one
    ``unpack_from`` and one metadata decode per partition, one decode per topic name, a few
    reads for the group fields (~4 us for a one-partition request, a third of
    ``schema.decode_request``).
    Raises ``MalformedMessage`` (naming the field and byte position) if the bytes end early, a
    non-nullable length or count is null or negative, a length runs past the end, an array
    count cannot fit in the remaining bytes, a tagged-field section is broken, or a string is
    not UTF-8.
    """
    _check_version("OffsetCommit", version, OFFSET_COMMIT_VERSIONS)
    raw = bytes(body)  # no copy when body is already bytes
    try:
        if version >= OFFSET_COMMIT_FIRST_FLEXIBLE:
            return _decode_offset_commit_flexible(raw)
        return _decode_offset_commit_legacy(raw, version)
    except MalformedMessage as error:
        raise MalformedMessage(f"OffsetCommit v{version} request: {error}") from None


def _cut_off(what: str, pos: int, size: int) -> MalformedMessage:
    return MalformedMessage(f"{what} at byte {pos}: the body ends at byte {size} (truncated, or "
                            f"encoded for another version)")


def _bad_length(what: str, pos: int, length: int, remaining: int) -> MalformedMessage:
    """A length that is null (-1; callers pass compact lengths minus 1) where the field is not
    nullable, negative, or longer than what remains."""
    if length == -1:
        return MalformedMessage(f"{what} at byte {pos} is null; the field is not nullable")
    if length < 0:
        return MalformedMessage(f"{what} at byte {pos} has negative length {length}")
    return MalformedMessage(f"{what} at byte {pos} has length {length} but only {remaining} bytes "
                            f"remain")


def _check_commit_count(what: str, pos: int, count: int, remaining: int, item: int) -> None:
    if count < 0:
        raise MalformedMessage(f"{what} at byte {pos} has count {count}; the array is not nullable")
    if count * item > remaining:
        raise MalformedMessage(f"{what} at byte {pos} claims {count} items (at least {item} bytes "
                               f"each) but only {remaining} bytes remain")


def _read_compact(raw: bytes, pos: int, what: str) -> tuple[int, int]:
    """The uvarint at ``pos`` (a compact length or count, + 1): (value, position after). The
    walkers read one-byte values inline and call this for longer ones."""
    try:
        return read_uvarint(raw, pos)
    except MalformedMessage as error:
        raise MalformedMessage(f"{what} at byte {pos}: {error}") from None


def _skip_tags(raw: bytes, pos: int, what: str) -> int:
    """Skips a non-empty tagged-field section at ``pos`` (the walkers step over the usual empty
    one, a single 0 byte, inline); returns the position after it."""
    try:
        return skip_tagged_fields(raw, pos)
    except MalformedMessage as error:
        raise MalformedMessage(f"{what} at byte {pos}: {error}") from None


def _decode_offset_commit_legacy(raw: bytes, version: int) -> OffsetCommitRequest:
    size = len(raw)
    what, start = "group_id", 0
    try:
        (length,) = INT16.unpack_from(raw, 0)
        end = 2 + length
        if length < 0 or end > size:
            raise _bad_length(what, start, length, size - 2)
        group_id = raw[2:end].decode()
        what, start = "generation_id_or_member_epoch", end
        (generation,) = INT32.unpack_from(raw, start)
        what, start = "member_id", start + 4
        (length,) = INT16.unpack_from(raw, start)
        pos = start + 2
        end = pos + length
        if length < 0 or end > size:
            raise _bad_length(what, start, length, size - pos)
        member_id = raw[pos:end].decode()
        pos = end
        group_instance_id = None
        if version >= 7:
            what, start = "group_instance_id", pos
            (length,) = INT16.unpack_from(raw, start)
            pos = start + 2
            if length != -1:  # -1: null
                end = pos + length
                if length < 0 or end > size:
                    raise _bad_length(what, start, length, size - pos)
                group_instance_id = raw[pos:end].decode()
                pos = end
        retention_time_ms = -1
        if version <= 4:
            what, start = "retention_time_ms", pos
            (retention_time_ms,) = INT64.unpack_from(raw, pos)
            pos += 8
        what, start = "the topic array", pos
        (topic_count,) = INT32.unpack_from(raw, pos)
        pos += 4
        _check_commit_count(what, start, topic_count, size - pos, _MIN_COMMIT_TOPIC)
        with_epoch = version >= 6
        partition_fields = _COMMIT_PARTITION_V6 if with_epoch else _COMMIT_PARTITION_V2
        unpack_partition = partition_fields.unpack_from
        fixed = partition_fields.size
        min_partition = _MIN_COMMIT_PARTITION + (4 if with_epoch else 0)
        epoch = _NO_LEADER_EPOCH
        topics: list[OffsetCommitTopic] = []
        for _ in range(topic_count):
            what, start = "a topic name", pos
            (length,) = INT16.unpack_from(raw, start)
            pos = start + 2
            end = pos + length
            if length < 0 or end > size:
                raise _bad_length(what, start, length, size - pos)
            name = raw[pos:end].decode()
            what, start = "a partition array", end
            (partition_count,) = INT32.unpack_from(raw, start)
            pos = start + 4
            _check_commit_count(what, start, partition_count, size - pos, min_partition)
            partitions: list[OffsetCommitPartition] = []
            for _ in range(partition_count):
                what, start = "a partition's index and offset", pos
                if with_epoch:
                    index, offset, epoch = unpack_partition(raw, pos)
                else:
                    index, offset = unpack_partition(raw, pos)
                what, start = "committed_metadata", pos + fixed
                (length,) = INT16.unpack_from(raw, start)
                pos = start + 2
                metadata = None
                if length != -1:  # -1: null
                    end = pos + length
                    if length < 0 or end > size:
                        raise _bad_length(what, start, length, size - pos)
                    metadata = raw[pos:end].decode()
                    pos = end
                partitions.append(OffsetCommitPartition(index, offset, epoch, metadata))
            topics.append(OffsetCommitTopic(name, partitions))
    except (IndexError, struct.error):
        raise _cut_off(what, start, size) from None
    except UnicodeDecodeError as error:
        raise MalformedMessage(f"{what} at byte {start} is not valid UTF-8 ({error.reason})") from None
    return OffsetCommitRequest(group_id, generation, member_id, group_instance_id, retention_time_ms,
                               topics)


def _decode_offset_commit_flexible(raw: bytes) -> OffsetCommitRequest:
    # A compact length or count (uvarint of value + 1, 0 = null) below 127 is one byte, read
    # inline; longer ones go through _read_compact. Tagged-field sections are nearly always
    # the single byte 0, tested inline before calling _skip_tags.
    size = len(raw)
    what, start = "group_id", 0
    try:
        length = raw[0]
        pos = 1
        if length > 0x7F:
            length, pos = _read_compact(raw, 0, what)
        end = pos + length - 1
        if not length or end > size:
            raise _bad_length(what, start, length - 1, size - pos)
        group_id = raw[pos:end].decode()
        what, start = "generation_id_or_member_epoch", end
        (generation,) = INT32.unpack_from(raw, start)
        what, start = "member_id", start + 4
        length = raw[start]
        pos = start + 1
        if length > 0x7F:
            length, pos = _read_compact(raw, start, what)
        end = pos + length - 1
        if not length or end > size:
            raise _bad_length(what, start, length - 1, size - pos)
        member_id = raw[pos:end].decode()
        what, start = "group_instance_id", end
        length = raw[start]
        pos = start + 1
        if length > 0x7F:
            length, pos = _read_compact(raw, start, what)
        group_instance_id = None
        if length:  # 0: null
            end = pos + length - 1
            if end > size:
                raise _bad_length(what, start, length - 1, size - pos)
            group_instance_id = raw[pos:end].decode()
            pos = end
        what, start = "the topic array", pos
        topic_count = raw[start]
        pos = start + 1
        if topic_count > 0x7F:
            topic_count, pos = _read_compact(raw, start, what)
        _check_commit_count(what, start, topic_count - 1, size - pos, _MIN_COMMIT_TOPIC_FLEXIBLE)
        unpack_partition = _COMMIT_PARTITION_V6.unpack_from
        fixed = _COMMIT_PARTITION_V6.size
        topics: list[OffsetCommitTopic] = []
        for _ in range(topic_count - 1):
            what, start = "a topic name", pos
            length = raw[start]
            pos = start + 1
            if length > 0x7F:
                length, pos = _read_compact(raw, start, what)
            end = pos + length - 1
            if not length or end > size:
                raise _bad_length(what, start, length - 1, size - pos)
            name = raw[pos:end].decode()
            what, start = "a partition array", end
            partition_count = raw[start]
            pos = start + 1
            if partition_count > 0x7F:
                partition_count, pos = _read_compact(raw, start, what)
            _check_commit_count(what, start, partition_count - 1, size - pos,
                                _MIN_COMMIT_PARTITION_FLEXIBLE)
            partitions: list[OffsetCommitPartition] = []
            for _ in range(partition_count - 1):
                what, start = "a partition's index, offset and leader epoch", pos
                index, offset, epoch = unpack_partition(raw, pos)
                what, start = "committed_metadata", pos + fixed
                length = raw[start]
                pos = start + 1
                if length > 0x7F:
                    length, pos = _read_compact(raw, start, what)
                metadata = None
                if length:  # 0: null
                    end = pos + length - 1
                    if end > size:
                        raise _bad_length(what, start, length - 1, size - pos)
                    metadata = raw[pos:end].decode()
                    pos = end
                what, start = "a partition's tagged fields", pos
                pos = pos + 1 if raw[pos] == 0 else _skip_tags(raw, pos, what)
                partitions.append(OffsetCommitPartition(index, offset, epoch, metadata))
            what, start = "a topic's tagged fields", pos
            pos = pos + 1 if raw[pos] == 0 else _skip_tags(raw, pos, what)
            topics.append(OffsetCommitTopic(name, partitions))
        what, start = "the request's tagged fields", pos
        if raw[pos]:
            _skip_tags(raw, pos, what)
    except (IndexError, struct.error):
        raise _cut_off(what, start, size) from None
    except UnicodeDecodeError as error:
        raise MalformedMessage(f"{what} at byte {start} is not valid UTF-8 ({error.reason})") from None
    return OffsetCommitRequest(group_id, generation, member_id, group_instance_id, -1, topics)


# --------------------------------------------------------------------------------------------
# OffsetCommit response (api key 8), encoded
#
#   body: throttle_time_ms int32 (3+) | topics [name string | partitions [partition_index int32
#         | error_code int16 | tags(8+)] | tags(8+)] | tags(8+)
#
# OffsetCommitResponse.json: v4 (responses sent before throttling) to v7 and v9 add no field.
# The usual response (one topic, one partition: a consumer committing what it just consumed)
# is three pieces joined: a pack of what precedes the name, the name, a pack of the rest.

_COMMIT_RESULT = struct.Struct(">ih")  # partition_index, error_code
_COMMIT_RESULT_FLEXIBLE = struct.Struct(">ihB")  # + empty tags (0)
# one topic, one partition: throttle_time_ms | topic count (1; flexible 1 + 1) before the name;
# partition count | index | error_code (| partition, topic, response tags: 0, 0, 0) after it
_ONE_TOPIC_V3 = struct.Struct(">ii")
_ONE_TOPIC_FLEXIBLE = struct.Struct(">iB")
_ONE_RESULT = struct.Struct(">iih")
_ONE_RESULT_FLEXIBLE = struct.Struct(">BihBBB")
_ONE_TOPIC_V2 = INT32.pack(1)  # v2 has no throttle_time_ms: the topic count alone


def encode_offset_commit_response(version: int, topics: list[tuple[str, list[tuple[int, int]]]],
                                  throttle_time_ms: int = 0) -> bytes:
    """Encodes an OffsetCommit response body (versions 2-9); topics are (name,
    [(partition_index, error_code), ...]). One ``pack`` per partition; a one-topic
    one-partition response is two packs and a name encode (~1 us)."""
    _check_version("OffsetCommit", version, OFFSET_COMMIT_VERSIONS)
    flexible = version >= OFFSET_COMMIT_FIRST_FLEXIBLE
    if len(topics) == 1 and len(topics[0][1]) == 1:
        name, ((index, error_code),) = topics[0]
        if flexible:
            return b"".join((_ONE_TOPIC_FLEXIBLE.pack(throttle_time_ms, 2), write_string(name, True),
                             _ONE_RESULT_FLEXIBLE.pack(2, index, error_code, _NO_TAGGED_FIELDS,
                                                       _NO_TAGGED_FIELDS, _NO_TAGGED_FIELDS)))
        head = _ONE_TOPIC_V3.pack(throttle_time_ms, 1) if version >= 3 else _ONE_TOPIC_V2
        return b"".join((head, write_string(name, False), _ONE_RESULT.pack(1, index, error_code)))
    out: list[bytes] = []
    append = out.append
    if version >= 3:
        append(INT32.pack(throttle_time_ms))
    append(write_array_length(len(topics), flexible))
    for name, partitions in topics:
        append(write_string(name, flexible))
        append(write_array_length(len(partitions), flexible))
        if flexible:
            out.extend(_COMMIT_RESULT_FLEXIBLE.pack(index, error_code, _NO_TAGGED_FIELDS)
                       for index, error_code in partitions)
            append(_EMPTY_TAGS)
        else:
            out.extend(_COMMIT_RESULT.pack(index, error_code) for index, error_code in partitions)
    if flexible:
        append(_EMPTY_TAGS)
    return b"".join(out)
