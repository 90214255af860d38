"""The hand-written data-path codecs (logkernel/protocol/hot.py) against kio, byte for byte.

kio's types are generated from Kafka's JSON message schemas and serve as the oracle: for every
version each codec handles, build the same message as a kio dataclass, encode it with kio and
compare bytes (Hypothesis varies the content; fixed examples pin the usual shapes). Produce
v0-2, which kio (like Kafka 4) no longer has, are checked against bytes built by hand from
ProduceResponse.json / ProduceRequest.json as of Kafka 3.x. The Produce request decoder is also
fed truncated, mutated and absurd bodies: it must raise MalformedMessage and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import struct
import sys
import tracemalloc
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_writer
from kio.static.primitive import i32Timedelta

from logkernel.protocol import apis, hot, schema
from logkernel.protocol.hot import (
    FetchPartitionData,
    MetadataPartition,
    MetadataTopic,
    ProducePartition,
    decode_offset_commit_request,
    decode_produce_request,
    encode_api_versions_response,
    encode_fetch_response,
    encode_list_offsets_response,
    encode_metadata_response,
    encode_offset_commit_response,
    encode_produce_response,
)
from logkernel.protocol.primitives import MalformedMessage, write_uvarint

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS = 0, 1, 2, 3, 18
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

# --- kio as the oracle -----------------------------------------------------------------------


def kio_encode(entity: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


def build(cls: type, **values: Any) -> Any:
    """A kio entity from the values this version has: fields the version lacks are dropped,
    a field it has but that is not given fails (dataclass TypeError), so nothing is missed."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in values.items() if name in names})


def nested(top: type, name: str) -> type:
    """The nested struct class ``name`` of the same message version as ``top``."""
    cls: type = getattr(sys.modules[top.__module__], name)
    return cls


def throttle(ms: int) -> i32Timedelta:
    return i32Timedelta.parse(datetime.timedelta(milliseconds=ms))


# --- strategies ------------------------------------------------------------------------------

INT16 = st.integers(-(2**15), 2**15 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
ERROR_CODES = st.integers(-1, 133)  # kio's ErrorCode covers -1..133 contiguously
OFFSETS = st.sampled_from([-1, 0, 1, 2**31, 2**63 - 1]) | INT64
NAMES = st.text(max_size=12) | st.sampled_from(["orders", "tópico-ü", "日本語", "emoji-🦀", ""])
RECORDS = st.binary(max_size=300)  # > 127 bytes gives two-byte compact lengths
LOG_APPEND_TIMES = st.just(-1) | st.integers(0, 2**42)  # kio maps -1 to None, else a datetime
# Drawing nested messages and encoding them with kio's pure-Python encoder costs ~7 ms an example,
# so the oracle tests run a quarter of the profile's examples (50 per message by default, so the
# file takes a few seconds; 1,250 under HYPOTHESIS_PROFILE=thorough). Fixed examples cover every
# version in addition.
ORACLE = settings(max_examples=max(10, settings().max_examples // 4))
MAX_TOPICS = 3  # and brokers: small, so Hypothesis spends its time on variety, not on size
MAX_PARTITIONS = 4


# --- Produce request -------------------------------------------------------------------------


def kio_produce_request(version: int, transactional_id: str | None, acks: int, timeout_ms: int,
                        topics: list[tuple[str, list[tuple[int, bytes | None]]]]) -> bytes:
    cls: Any = load_request_schema(PRODUCE, version)
    partition_cls = nested(cls, "PartitionProduceData")
    topic_cls = nested(cls, "TopicProduceData")
    return kio_encode(cls(
        transactional_id=transactional_id, acks=acks, timeout=throttle(timeout_ms),
        topic_data=tuple(
            topic_cls(name=name, partition_data=tuple(partition_cls(index=index, records=records)
                                                      for index, records in partitions))
            for name, partitions in topics)))


def produce_request_body(version: int, transactional_id: str | None, acks: int, timeout_ms: int,
                         topics: list[tuple[str, list[tuple[int, bytes | None]]]]) -> bytes:
    """kio's bytes; for v0-2 those of v3 without transactional_id, the only field v3 added
    (ProduceRequest.json: "Version 3 adds the transactional ID")."""
    if version >= 3:
        return kio_produce_request(version, transactional_id, acks, timeout_ms, topics)
    body = kio_produce_request(3, None, acks, timeout_ms, topics)
    assert body[:2] == b"\xff\xff"  # null legacy string
    return body[2:]


def assert_decoded(request: hot.ProduceRequest, version: int, transactional_id: str | None, acks: int,
                   timeout_ms: int, topics: list[tuple[str, list[tuple[int, bytes | None]]]]) -> None:
    assert request.transactional_id == (transactional_id if version >= 3 else None)
    assert (request.acks, request.timeout_ms) == (acks, timeout_ms)
    assert [name for name, _ in request.topics] == [name for name, _ in topics]
    for (_, got), (_, expected) in zip(request.topics, topics, strict=True):
        assert [p.partition for p in got] == [index for index, _ in expected]
        for partition, (_, records) in zip(got, expected, strict=True):
            if records is None:
                assert partition.records is None
            else:
                assert isinstance(partition.records, memoryview)
                assert partition.records == records


produce_partitions = st.lists(st.tuples(INT32, st.none() | RECORDS), max_size=MAX_PARTITIONS)
produce_topics = st.lists(st.tuples(NAMES, produce_partitions), max_size=MAX_TOPICS)


@ORACLE
@given(version=st.sampled_from(hot.PRODUCE_VERSIONS), transactional_id=st.none() | NAMES,
       acks=st.sampled_from([-1, 0, 1]) | INT16, timeout_ms=INT32, topics=produce_topics)
def test_decode_produce_request_matches_kio(version: int, transactional_id: str | None, acks: int,
                                            timeout_ms: int,
                                            topics: list[tuple[str, list[tuple[int, bytes | None]]]]) -> None:
    body = produce_request_body(version, transactional_id, acks, timeout_ms, topics)
    request = decode_produce_request(memoryview(body), version)
    assert_decoded(request, version, transactional_id, acks, timeout_ms, topics)


ProduceTopics = list[tuple[str, list[tuple[int, "bytes | None"]]]]
FIXED_PRODUCE: tuple[str, int, int, ProduceTopics] = ("txn-1", -1, 30_000,
                 [("orders", [(0, b"\x00" * 15_000), (1, None), (2, b"")]), ("ü", [(7, b"batch")])])


@pytest.mark.parametrize("version", hot.PRODUCE_VERSIONS)
def test_decode_produce_request_fixed(version: int) -> None:
    body = produce_request_body(version, *FIXED_PRODUCE)
    assert_decoded(decode_produce_request(memoryview(body), version), version, *FIXED_PRODUCE)
    # bytes are accepted too, and trailing bytes after the body are ignored
    assert_decoded(decode_produce_request(body + b"junk", version),  # type: ignore[arg-type]
                   version, *FIXED_PRODUCE)


@pytest.mark.parametrize("version", hot.PRODUCE_VERSIONS)
def test_produce_records_are_views_into_the_request(version: int) -> None:
    buffer = bytearray(produce_request_body(version, *FIXED_PRODUCE))
    request = decode_produce_request(memoryview(buffer), version)
    records = request.topics[1][1][0].records
    assert records is not None and records.obj is buffer
    where = bytes(buffer).index(b"batch")
    buffer[where] = ord("B")  # a copy would not see this
    assert records == b"Batch"


# A v9 body written by hand, to put non-empty tagged-field sections where kio never writes them.
TAGS = b"\x02" + b"\x00\x03abc" + b"\x05" + write_uvarint(200) + b"t" * 200  # tags 0 and 5


def flexible_produce_body(tagged: str = "", records: bytes = b"\x01" * 130) -> bytes:
    def tags(level: str) -> bytes:
        return TAGS if level in tagged else b"\x00"

    return (b"\x03tx" + struct.pack(">hi", 1, 1500) + b"\x02"  # id, acks, timeout, 1 topic
            + b"\x07orders" + b"\x02"  # name, 1 partition
            + struct.pack(">i", 3) + write_uvarint(len(records) + 1) + records + tags("partition")
            + tags("topic") + tags("request"))


def test_hand_written_flexible_body_is_what_kio_writes() -> None:
    expected = kio_produce_request(9, "tx", 1, 1500, [("orders", [(3, b"\x01" * 130)])])
    assert flexible_produce_body() == expected


@pytest.mark.parametrize("tagged", ["partition", "topic", "request", "partition topic request"])
@pytest.mark.parametrize("version", [9, 10])
def test_decoder_skips_tagged_fields(tagged: str, version: int) -> None:
    request = decode_produce_request(memoryview(flexible_produce_body(tagged)), version)
    assert request == decode_produce_request(memoryview(flexible_produce_body()), version)
    assert request.topics[0][1][0].records == b"\x01" * 130


@pytest.mark.parametrize("tagged", ["partition", "topic", "request"])
def test_truncated_tagged_fields_are_malformed(tagged: str) -> None:
    body = flexible_produce_body(tagged)
    end = body.index(b"abc") + 10  # inside the 200-byte tagged field
    with pytest.raises(MalformedMessage):
        decode_produce_request(memoryview(body[:end]), 9)


@pytest.mark.parametrize("version", hot.PRODUCE_VERSIONS)
def test_every_truncation_is_malformed(version: int) -> None:
    body = produce_request_body(version, "t", 1, 100, [("a", [(0, b"xy"), (1, None)]), ("b", [])])
    decode_produce_request(memoryview(body), version)
    for length in range(len(body)):
        with pytest.raises(MalformedMessage):
            decode_produce_request(memoryview(body[:length]), version)


def legacy_body(topic_count: bytes = b"\x00\x00\x00\x01", name: bytes = b"\x00\x01a",
                partition_count: bytes = b"\x00\x00\x00\x01", records: bytes = b"\x00\x00\x00\x02xy",
                transactional_id: bytes = b"\xff\xff") -> bytes:
    return (transactional_id + struct.pack(">hi", 1, 100) + topic_count + name + partition_count
            + b"\x00\x00\x00\x00" + records)


ABSURD_LEGACY = {
    "transactional_id length -2": {"transactional_id": b"\xff\xfe"},
    "transactional_id past the end": {"transactional_id": b"\x7f\xff"},
    "topic count -1 (not nullable)": {"topic_count": b"\xff\xff\xff\xff"},
    "topic count -7": {"topic_count": b"\xff\xff\xff\xf9"},
    "topic count 2**31-1": {"topic_count": b"\x7f\xff\xff\xff"},
    "name length -1 (not nullable)": {"name": b"\xff\xff"},
    "name length past the end": {"name": b"\x7f\x00a"},
    "name not UTF-8": {"name": b"\x00\x02\xc3\x28"},
    "partition count -1": {"partition_count": b"\xff\xff\xff\xff"},
    "partition count huge": {"partition_count": b"\x10\x00\x00\x00"},
    "records length -2": {"records": b"\xff\xff\xff\xfe"},
    "records length past the end": {"records": b"\x00\x00\x00\x03xy"},
    "records length 2**31-1": {"records": b"\x7f\xff\xff\xffxy"},
}


def test_legacy_helper_body_is_valid() -> None:
    request = decode_produce_request(memoryview(legacy_body()), 3)
    assert request.topics == [("a", [ProducePartition(0, memoryview(b"xy"))])]


@pytest.mark.parametrize("case", ABSURD_LEGACY)
def test_absurd_legacy_lengths_are_malformed(case: str) -> None:
    with pytest.raises(MalformedMessage):
        decode_produce_request(memoryview(legacy_body(**ABSURD_LEGACY[case])), 3)


ABSURD_FLEXIBLE = {
    "transactional_id past the end": b"\x7f",
    "six-byte varint": b"\x80\x80\x80\x80\x80\x01",
    "topic array null": b"\x00" + b"\x00\x01\x00\x00\x00\x64" + b"\x00\x00",
    "topic count 2**28": b"\x00" + b"\x00\x01\x00\x00\x00\x64" + b"\x81\x80\x80\x80\x01",
    "null topic name": b"\x00" + b"\x00\x01\x00\x00\x00\x64" + b"\x02\x00\x01\x00\x00",
    "name past the end": b"\x00" + b"\x00\x01\x00\x00\x00\x64" + b"\x02\x50ab\x01\x00\x00",
    "partition array null": b"\x00" + b"\x00\x01\x00\x00\x00\x64" + b"\x02\x02a\x00\x00\x00\x00",
    "records past the end": (b"\x00" + b"\x00\x01\x00\x00\x00\x64" + b"\x02\x02a\x02"
                             + b"\x00\x00\x00\x00" + b"\x10xy\x00\x00\x00"),
    "tagged field past the end": (b"\x00" + b"\x00\x01\x00\x00\x00\x64" + b"\x02\x02a\x02"
                                  + b"\x00\x00\x00\x00" + b"\x03xy" + b"\x01\x00\x7fz\x00\x00"),
}


@pytest.mark.parametrize("case", ABSURD_FLEXIBLE)
def test_absurd_flexible_lengths_are_malformed(case: str) -> None:
    with pytest.raises(MalformedMessage):
        decode_produce_request(memoryview(ABSURD_FLEXIBLE[case]), 9)


def test_malformed_message_names_the_problem() -> None:
    with pytest.raises(MalformedMessage, match=r"records field at byte \d+ has length 3 but only 2"):
        decode_produce_request(memoryview(legacy_body(records=b"\x00\x00\x00\x03xy")), 3)
    with pytest.raises(MalformedMessage, match=r"Produce v9 request body .* ends inside a field"):
        decode_produce_request(memoryview(flexible_produce_body()[:5]), 9)
    with pytest.raises(MalformedMessage, match="Produce v9 request: a varint is longer than 5 bytes"):
        decode_produce_request(memoryview(ABSURD_FLEXIBLE["six-byte varint"]), 9)


@given(version=st.sampled_from(hot.PRODUCE_VERSIONS), data=st.binary(max_size=80))
def test_random_bytes_parse_or_are_malformed(version: int, data: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        decode_produce_request(memoryview(data), version)


@given(version=st.sampled_from(hot.PRODUCE_VERSIONS), position=st.integers(0, 10**6),
       value=st.integers(0, 255))
def test_mutated_bodies_parse_or_are_malformed(version: int, position: int, value: int) -> None:
    body = bytearray(produce_request_body(version, "t", 1, 100, [("a", [(0, b"xyz"), (1, None)])]))
    body[position % len(body)] = value
    with contextlib.suppress(MalformedMessage):
        decode_produce_request(memoryview(body), version)


# --- Produce response ------------------------------------------------------------------------

ProducePartitionResult = tuple[int, int, int, int, int]


def kio_produce_response(version: int, topics: list[tuple[str, list[ProducePartitionResult]]],
                         throttle_ms: int) -> bytes:
    cls = load_response_schema(PRODUCE, version)
    partition_cls = nested(cls, "PartitionProduceResponse")
    topic_cls = nested(cls, "TopicProduceResponse")
    return kio_encode(build(
        cls, throttle_time=throttle(throttle_ms),
        responses=tuple(topic_cls(name=name, partition_responses=tuple(
            build(partition_cls, index=index, error_code=ErrorCode(error), base_offset=base,
                  log_append_time=None if append_time == -1
                  else EPOCH + datetime.timedelta(milliseconds=append_time),
                  log_start_offset=log_start, record_errors=(), error_message=None)
            for index, error, base, append_time, log_start in partitions))
            for name, partitions in topics)))


def hand_produce_response_v0_2(version: int, topics: list[tuple[str, list[ProducePartitionResult]]],
                               throttle_ms: int) -> bytes:
    """ProduceResponse.json (Kafka 3.x): v0 responses [name string, partition_responses [index
    int32, error_code int16, base_offset int64]]; v1 adds throttle_time_ms int32 after the
    array; v2 adds log_append_time_ms int64 after base_offset."""
    out = struct.pack(">i", len(topics))
    for name, partitions in topics:
        encoded = name.encode()
        out += struct.pack(">h", len(encoded)) + encoded + struct.pack(">i", len(partitions))
        for index, error, base, append_time, _log_start in partitions:
            out += struct.pack(">ihq", index, error, base)
            if version >= 2:
                out += struct.pack(">q", append_time)
    if version >= 1:
        out += struct.pack(">i", throttle_ms)
    return out


def expected_produce_response(version: int, topics: list[tuple[str, list[ProducePartitionResult]]],
                              throttle_ms: int) -> bytes:
    if version >= 3:
        return kio_produce_response(version, topics, throttle_ms)
    return hand_produce_response_v0_2(version, topics, throttle_ms)


produce_results = st.lists(st.tuples(NAMES, st.lists(
    st.tuples(INT32, ERROR_CODES, OFFSETS, LOG_APPEND_TIMES, OFFSETS), max_size=MAX_PARTITIONS)),
    max_size=MAX_TOPICS)


@ORACLE
@given(version=st.sampled_from(hot.PRODUCE_VERSIONS), topics=produce_results, throttle_ms=INT32)
def test_produce_response_matches_kio(version: int, topics: list[tuple[str, list[ProducePartitionResult]]],
                                      throttle_ms: int) -> None:
    expected = expected_produce_response(version, topics, throttle_ms)
    assert encode_produce_response(version, topics, throttle_ms) == expected


FIXED_PRODUCE_RESULTS = [("orders", [(0, 0, 41, -1, 0), (1, 6, -1, -1, -1)]), ("ü", []),
                         ("x", [(2, 0, 7, 1_700_000_000_000, 3)])]


@pytest.mark.parametrize("version", hot.PRODUCE_VERSIONS)
def test_produce_response_fixed(version: int) -> None:
    expected = expected_produce_response(version, FIXED_PRODUCE_RESULTS, 5)
    assert encode_produce_response(version, FIXED_PRODUCE_RESULTS, 5) == expected
    assert encode_produce_response(version, [], 0) == expected_produce_response(version, [], 0)


def test_produce_response_v0_2_known_answers() -> None:
    topics = [("t", [(0, 0, 5, 99, 1)])]
    v0 = bytes.fromhex("00000001" "0001" "74" "00000001" "00000000" "0000" "0000000000000005")
    assert encode_produce_response(0, topics) == v0
    assert encode_produce_response(1, topics, throttle_ms=7) == v0 + bytes.fromhex("00000007")
    v2 = v0 + bytes.fromhex("0000000000000063") + bytes.fromhex("00000007")
    assert encode_produce_response(2, topics, throttle_ms=7) == v2
    # v2 and v3 responses share one layout (v3 only changed the request): kio agrees
    assert v2 == kio_produce_response(3, topics, 7)


# --- Fetch response --------------------------------------------------------------------------


def kio_fetch_response(version: int, topics: list[tuple[str, list[FetchPartitionData]]], throttle_ms: int,
                       error_code: int, session_id: int) -> bytes:
    cls = load_response_schema(FETCH, version)
    partition_cls = nested(cls, "PartitionData")
    topic_cls = nested(cls, "FetchableTopicResponse")
    aborted_cls = nested(cls, "AbortedTransaction")
    return kio_encode(build(
        cls, throttle_time=throttle(throttle_ms), error_code=ErrorCode(error_code), session_id=session_id,
        responses=tuple(topic_cls(topic=name, partitions=tuple(
            build(partition_cls, partition_index=p.partition, error_code=ErrorCode(p.error_code),
                  high_watermark=p.high_watermark, last_stable_offset=p.last_stable_offset,
                  log_start_offset=p.log_start_offset, preferred_read_replica=-1,
                  aborted_transactions=None if p.aborted_transactions is None else tuple(
                      aborted_cls(producer_id=producer_id, first_offset=first_offset)
                      for producer_id, first_offset in p.aborted_transactions),
                  records=bytes(p.records))
            for p in partitions))
            for name, partitions in topics)))


def check_fetch(version: int, topics: list[tuple[str, list[FetchPartitionData]]], throttle_ms: int = 0,
                error_code: int = 0, session_id: int = 0) -> None:
    pieces = encode_fetch_response(version, topics, throttle_ms=throttle_ms, error_code=error_code,
                                   session_id=session_id)
    assert b"".join(pieces) == kio_fetch_response(version, topics, throttle_ms, error_code, session_id)
    # every non-empty records object is in the list itself, not a copy; the rest is small headers
    records = [p.records for _, partitions in topics for p in partitions if len(p.records)]
    assert [piece for piece in pieces if any(piece is r for r in records)] == records
    assert all(isinstance(piece, bytes) for piece in pieces if not any(piece is r for r in records))


fetch_partitions = st.builds(
    FetchPartitionData, partition=INT32, error_code=ERROR_CODES, high_watermark=OFFSETS,
    last_stable_offset=OFFSETS, log_start_offset=OFFSETS,
    records=RECORDS | RECORDS.map(lambda data: memoryview(data)),
    aborted_transactions=st.none() | st.lists(st.tuples(INT64, OFFSETS), max_size=3))


@ORACLE
@given(version=st.sampled_from(hot.FETCH_VERSIONS),
       topics=st.lists(st.tuples(NAMES, st.lists(fetch_partitions, max_size=MAX_PARTITIONS)),
                       max_size=MAX_TOPICS),
       throttle_ms=INT32, error_code=ERROR_CODES, session_id=INT32)
def test_fetch_response_matches_kio(version: int, topics: list[tuple[str, list[FetchPartitionData]]],
                                    throttle_ms: int, error_code: int, session_id: int) -> None:
    check_fetch(version, topics, throttle_ms, error_code, session_id)


@pytest.mark.parametrize("version", hot.FETCH_VERSIONS)
def test_fetch_response_fixed(version: int) -> None:
    segment = memoryview(bytearray(b"\x07" * 70_000))
    topics = [
        ("orders", [FetchPartitionData(0, 0, 100, 100, 0, segment[:65_536]),
                    FetchPartitionData(1, 0, 5, 3, 0, b"", [(1000, 2), (1001, 4)]),
                    FetchPartitionData(2, 1, -1, -1, -1, b"")]),
        ("ü", [FetchPartitionData(3, 0, 10, 10, 0, b"tiny", [])]),
        ("empty", []),
    ]
    check_fetch(version, topics, throttle_ms=3, error_code=0, session_id=12)
    check_fetch(version, [])


def test_fetch_response_with_no_data_is_one_piece() -> None:
    pieces = encode_fetch_response(12, [("t", [FetchPartitionData(0, 0, 0, 0, 0, b"")] * 3)])
    assert len(pieces) == 1


@pytest.mark.parametrize("length", [0, 1, 126, 127, 128, 0x3FFE, 0x3FFF, 0x4000, 0x1FFFFE, 0x1FFFFF, 2**28])
def test_compact_length_matches_write_uvarint(length: int) -> None:
    assert hot._compact_length(length) == write_uvarint(length + 1)


# --- Metadata response -----------------------------------------------------------------------

Broker = tuple[int, str, int, "str | None"]


def kio_metadata_response(version: int, brokers: list[Broker], cluster_id: str | None, controller_id: int,
                          topics: list[MetadataTopic], throttle_ms: int, cluster_operations: int) -> bytes:
    cls = load_response_schema(METADATA, version)
    broker_cls = nested(cls, "MetadataResponseBroker")
    topic_cls = nested(cls, "MetadataResponseTopic")
    partition_cls = nested(cls, "MetadataResponsePartition")
    return kio_encode(build(
        cls, throttle_time=throttle(throttle_ms), cluster_id=cluster_id, controller_id=controller_id,
        cluster_authorized_operations=cluster_operations,
        brokers=tuple(build(broker_cls, node_id=node_id, host=host, port=port, rack=rack)
                      for node_id, host, port, rack in brokers),
        topics=tuple(build(
            topic_cls, error_code=ErrorCode(t.error_code), name=t.name, topic_id=uuid.UUID(bytes=t.topic_id),
            is_internal=t.is_internal, topic_authorized_operations=t.authorized_operations,
            partitions=tuple(build(
                partition_cls, error_code=ErrorCode(p.error_code), partition_index=p.partition,
                leader_id=p.leader, leader_epoch=p.leader_epoch, replica_nodes=tuple(p.replicas),
                isr_nodes=tuple(p.isr), offline_replicas=tuple(p.offline))
                for p in t.partitions))
            for t in topics)))


node_lists = st.lists(INT32, max_size=3)
metadata_partitions = st.builds(MetadataPartition, error_code=ERROR_CODES, partition=INT32, leader=INT32,
                                leader_epoch=INT32, replicas=node_lists, isr=node_lists, offline=node_lists)
metadata_topics = st.builds(MetadataTopic, error_code=ERROR_CODES, name=NAMES,
                            topic_id=st.binary(min_size=16, max_size=16), is_internal=st.booleans(),
                            partitions=st.lists(metadata_partitions, max_size=MAX_PARTITIONS),
                            authorized_operations=INT32)
brokers = st.lists(st.tuples(INT32, NAMES, INT32, st.none() | NAMES), max_size=MAX_TOPICS)


@ORACLE
@given(version=st.sampled_from(hot.METADATA_VERSIONS), brokers=brokers, cluster_id=st.none() | NAMES,
       controller_id=INT32, topics=st.lists(metadata_topics, max_size=MAX_TOPICS), throttle_ms=INT32,
       cluster_operations=INT32)
def test_metadata_response_matches_kio(version: int, brokers: list[Broker], cluster_id: str | None,
                                       controller_id: int, topics: list[MetadataTopic], throttle_ms: int,
                                       cluster_operations: int) -> None:
    ours = encode_metadata_response(version, brokers=brokers, cluster_id=cluster_id,
                                    controller_id=controller_id, topics=topics, throttle_ms=throttle_ms,
                                    cluster_authorized_operations=cluster_operations)
    assert ours == kio_metadata_response(version, brokers, cluster_id, controller_id, topics, throttle_ms,
                                         cluster_operations)


def fixed_metadata_topics(count: int, partitions: int) -> list[MetadataTopic]:
    return [MetadataTopic(0, f"topic-{t}", uuid.UUID(int=t + 1).bytes, False,
                          [MetadataPartition(0, p, 1, 0, [1, 2, 3], [1, 2], []) for p in range(partitions)])
            for t in range(count)]


def test_metadata_response_long_replica_lists() -> None:
    # past the per-shape packers (hot._MAX_PACKED_REPLICAS): the general path, one list long or all
    nodes = list(range(1, 21))
    partitions = [MetadataPartition(0, 0, 1, 0, nodes, nodes[:17], nodes),
                  MetadataPartition(0, 1, 1, 0, nodes[:2], nodes[:2], nodes[:17]),
                  MetadataPartition(0, 2, 1, 0, nodes[:16], nodes[:16], nodes[:16])]
    topics = [MetadataTopic(0, "wide", bytes(16), False, partitions)]
    for version in hot.METADATA_VERSIONS:
        ours = encode_metadata_response(version, brokers=[], cluster_id="c", controller_id=1, topics=topics)
        assert ours == kio_metadata_response(version, [], "c", 1, topics, 0, -(2**31))


@pytest.mark.parametrize("version", hot.METADATA_VERSIONS)
def test_metadata_response_fixed(version: int) -> None:
    brokers: list[Broker] = [(1, "localhost", 9092, None), (2, "b2.example", 9093, "rack-ü")]
    topics = [*fixed_metadata_topics(3, 4), MetadataTopic(3, "missing", bytes(16), False, []),
              MetadataTopic(0, "__consumer_offsets", uuid.uuid4().bytes, True,
                            [MetadataPartition(0, 0, 1, 5, [1], [1], [2])], authorized_operations=0xFFF)]
    for cluster_id in (None, "lk-cluster"):
        ours = encode_metadata_response(version, brokers=brokers, cluster_id=cluster_id, controller_id=1,
                                        topics=topics, throttle_ms=0)
        assert ours == kio_metadata_response(version, brokers, cluster_id, 1, topics, 0, -(2**31))
    empty = encode_metadata_response(version, brokers=[], cluster_id=None, controller_id=-1, topics=[])
    assert empty == kio_metadata_response(version, [], None, -1, [], 0, -(2**31))


def test_metadata_topic_id_must_be_16_bytes() -> None:
    topic = MetadataTopic(0, "t", b"short", False, [])
    with pytest.raises(ValueError, match="16 bytes"):
        encode_metadata_response(10, brokers=[], cluster_id=None, controller_id=1, topics=[topic])
    encode_metadata_response(9, brokers=[], cluster_id=None, controller_id=1, topics=[topic])  # unused


# --- ListOffsets response --------------------------------------------------------------------

OffsetResult = tuple[int, int, int, int]


def kio_list_offsets_response(version: int, topics: list[tuple[str, list[OffsetResult]]],
                              throttle_ms: int) -> bytes:
    cls = load_response_schema(LIST_OFFSETS, version)
    topic_cls = nested(cls, "ListOffsetsTopicResponse")
    partition_cls = nested(cls, "ListOffsetsPartitionResponse")
    return kio_encode(build(
        cls, throttle_time=throttle(throttle_ms),
        topics=tuple(topic_cls(name=name, partitions=tuple(
            build(partition_cls, partition_index=index, error_code=ErrorCode(error), timestamp=timestamp,
                  offset=offset, leader_epoch=-1)
            for index, error, timestamp, offset in partitions))
            for name, partitions in topics)))


@ORACLE
@given(version=st.sampled_from(hot.LIST_OFFSETS_VERSIONS), throttle_ms=INT32,
       topics=st.lists(st.tuples(NAMES, st.lists(st.tuples(INT32, ERROR_CODES, OFFSETS, OFFSETS),
                                                 max_size=MAX_PARTITIONS)), max_size=MAX_TOPICS))
def test_list_offsets_response_matches_kio(version: int, topics: list[tuple[str, list[OffsetResult]]],
                                           throttle_ms: int) -> None:
    expected = kio_list_offsets_response(version, topics, throttle_ms)
    assert encode_list_offsets_response(version, topics, throttle_ms) == expected


@pytest.mark.parametrize("version", hot.LIST_OFFSETS_VERSIONS)
def test_list_offsets_response_fixed(version: int) -> None:
    topics = [("orders", [(0, 0, -1, 42), (1, 0, 1_700_000_000_000, 7)]), ("gone", [(0, 3, -1, -1)])]
    assert encode_list_offsets_response(version, topics, 0) == kio_list_offsets_response(version, topics, 0)


# --- ApiVersions response --------------------------------------------------------------------


def kio_api_versions_response(version: int, error_code: int, api_keys: list[tuple[int, int, int]],
                              throttle_ms: int) -> bytes:
    cls = load_response_schema(API_VERSIONS, version)
    api_cls = nested(cls, "ApiVersion")
    return kio_encode(build(
        cls, error_code=ErrorCode(error_code), throttle_time=throttle(throttle_ms),
        api_keys=tuple(api_cls(api_key=key, min_version=low, max_version=high)
                       for key, low, high in api_keys)))


@ORACLE
@given(version=st.sampled_from(hot.API_VERSIONS_VERSIONS), error_code=ERROR_CODES,
       api_keys=st.lists(st.tuples(INT16, INT16, INT16), max_size=70), throttle_ms=INT32)
def test_api_versions_response_matches_kio(version: int, error_code: int,
                                           api_keys: list[tuple[int, int, int]], throttle_ms: int) -> None:
    expected = kio_api_versions_response(version, error_code, api_keys, throttle_ms)
    assert encode_api_versions_response(version, error_code, api_keys, throttle_ms) == expected


@pytest.mark.parametrize("version", hot.API_VERSIONS_VERSIONS)
def test_api_versions_response_fixed(version: int) -> None:
    api_keys = [(0, 0, 10), (1, 4, 12), (3, 0, 12), (18, 0, 4)]
    expected = kio_api_versions_response(version, 0, api_keys, 0)
    assert encode_api_versions_response(version, 0, api_keys) == expected


def test_api_versions_v3_known_answer() -> None:
    # error 0 | compact array of 1 (0x02) | key 18, 0..4, no tags | throttle 0 | no tags
    expected = bytes.fromhex("0000" "02" "0012" "0000" "0004" "00" "00000000" "00")
    assert encode_api_versions_response(3, 0, [(18, 0, 4)]) == expected


# --- OffsetCommit request --------------------------------------------------------------------
#
# Requests are built as kio entities from plain values (schema.build, as the broker tests'
# request() helper does: fields a version lacks are dropped), encoded by kio, and decoded both by
# hot.decode_offset_commit_request and by kio's decoder (schema.decode_request); both must give
# the values put in.

CommitPartition = tuple[int, int, int, "str | None"]  # index, offset, leader epoch, metadata
CommitTopics = list[tuple[str, list[CommitPartition]]]
CommitValues = tuple[str, int, str, "str | None", int, CommitTopics]


def offset_commit_body(version: int, group_id: str, generation: int, member_id: str,
                       instance_id: str | None, retention_ms: int, topics: CommitTopics) -> bytes:
    cls = schema.request_type(apis.OFFSET_COMMIT, version)
    return schema.encode_entity(schema.build(cls, {
        "group_id": group_id, "generation_id_or_member_epoch": generation, "member_id": member_id,
        "group_instance_id": instance_id, "retention_time": retention_ms,
        "topics": [{"name": name, "partitions": [
            {"partition_index": index, "committed_offset": offset, "committed_leader_epoch": epoch,
             "committed_metadata": metadata} for index, offset, epoch, metadata in partitions]}
            for name, partitions in topics]}))


def expected_commit(version: int, values: CommitValues) -> CommitValues:
    """What a version carries of ``values``: absent fields read as kio's defaults."""
    group_id, generation, member_id, instance_id, retention_ms, topics = values
    return (group_id, generation, member_id, instance_id if version >= 7 else None,
            retention_ms if version <= 4 else -1,
            [(name, [(index, offset, epoch if version >= 6 else -1, metadata)
                     for index, offset, epoch, metadata in partitions]) for name, partitions in topics])


def hot_commit_values(request: hot.OffsetCommitRequest) -> CommitValues:
    return (request.group_id, request.generation_id_or_member_epoch, request.member_id,
            request.group_instance_id, request.retention_time_ms,
            [(t.name, [(p.partition_index, p.committed_offset, p.committed_leader_epoch,
                        p.committed_metadata) for p in t.partitions]) for t in request.topics])


def kio_commit_values(request: Any) -> CommitValues:
    """kio's decoded entity, read the way the broker's handler reads it (getattr defaults for
    fields a version lacks)."""
    retention = getattr(request, "retention_time", None)
    return (request.group_id, request.generation_id_or_member_epoch, request.member_id,
            getattr(request, "group_instance_id", None),
            -1 if retention is None else retention // datetime.timedelta(milliseconds=1),
            [(t.name, [(p.partition_index, p.committed_offset, getattr(p, "committed_leader_epoch", -1),
                        p.committed_metadata) for p in t.partitions]) for t in request.topics])


def check_offset_commit(version: int, values: CommitValues) -> bytes:
    body = offset_commit_body(version, *values)
    decoded = hot_commit_values(decode_offset_commit_request(memoryview(body), version))
    assert decoded == expected_commit(version, values)
    assert decoded == kio_commit_values(schema.decode_request(apis.OFFSET_COMMIT, version, body))
    return body


# > 127 bytes gives two-byte compact lengths; "" is what Java consumers send as metadata
COMMIT_STRINGS = NAMES | st.sampled_from(["m" * 200, "consumer-1-5f0c1e2a-8d3b-4c7e-9a61-2b4f8e0d3c19"])
RETENTIONS = st.just(-1) | st.integers(-(10**15), 10**15)  # within what kio's timedelta holds
commit_partitions = st.lists(st.tuples(INT32, OFFSETS, INT32, st.none() | COMMIT_STRINGS),
                             max_size=MAX_PARTITIONS)


@ORACLE
@given(version=st.sampled_from(hot.OFFSET_COMMIT_VERSIONS), group_id=COMMIT_STRINGS, generation=INT32,
       member_id=COMMIT_STRINGS, instance_id=st.none() | NAMES, retention_ms=RETENTIONS,
       topics=st.lists(st.tuples(COMMIT_STRINGS, commit_partitions), max_size=MAX_TOPICS))
def test_decode_offset_commit_request_matches_kio(version: int, group_id: str, generation: int,
                                                  member_id: str, instance_id: str | None,
                                                  retention_ms: int, topics: CommitTopics) -> None:
    check_offset_commit(version, (group_id, generation, member_id, instance_id, retention_ms, topics))


FIXED_COMMIT: CommitValues = (
    "my-group", 7, "consumer-1-5f0c1e2a", "instance-ü", 86_400_000,
    [("orders", [(0, 1_234_567, 5, ""), (1, 0, -1, None), (2, 2**63 - 1, 0, "m" * 300)]),
     ("日本語", []), ("t" * 150, [(-1, 42, 3, "meta")])])


@pytest.mark.parametrize("version", hot.OFFSET_COMMIT_VERSIONS)
def test_decode_offset_commit_request_fixed(version: int) -> None:
    body = check_offset_commit(version, FIXED_COMMIT)
    check_offset_commit(version, ("", -1, "", None, -1, []))  # an admin tool's empty commit
    # bytes are accepted too, and trailing bytes after the body are ignored
    request = decode_offset_commit_request(body + b"junk", version)  # type: ignore[arg-type]
    assert hot_commit_values(request) == expected_commit(version, FIXED_COMMIT)


@pytest.mark.parametrize("version", hot.OFFSET_COMMIT_VERSIONS)
def test_offset_commit_request_does_not_hold_the_buffer(version: int) -> None:
    buffer = bytearray(offset_commit_body(version, *FIXED_COMMIT))
    request = decode_offset_commit_request(memoryview(buffer), version)
    buffer[:] = bytes(len(buffer))  # the connection reuses its buffer
    assert hot_commit_values(request) == expected_commit(version, FIXED_COMMIT)


def flexible_commit_body(tagged: str = "", metadata: bytes = b"m" * 130) -> bytes:
    """A v8 body written by hand, to put non-empty tagged-field sections where kio never
    writes them (TAGS: tags 0 and 5, the second 200 bytes long)."""
    def tags(level: str) -> bytes:
        return TAGS if level in tagged else b"\x00"

    return (b"\x04grp" + struct.pack(">i", 4) + b"\x04mem" + b"\x00"  # group, generation, member, null
            + b"\x02" + b"\x07orders" + b"\x02"  # 1 topic: name, 1 partition
            + struct.pack(">iqi", 3, 99, 2) + write_uvarint(len(metadata) + 1) + metadata + tags("partition")
            + tags("topic") + tags("request"))


def test_hand_written_flexible_commit_body_is_what_kio_writes() -> None:
    values: CommitValues = ("grp", 4, "mem", None, -1, [("orders", [(3, 99, 2, "m" * 130)])])
    assert flexible_commit_body() == offset_commit_body(8, *values)


@pytest.mark.parametrize("tagged", ["partition", "topic", "request", "partition topic request"])
@pytest.mark.parametrize("version", [8, 9])
def test_offset_commit_decoder_skips_tagged_fields(tagged: str, version: int) -> None:
    request = decode_offset_commit_request(memoryview(flexible_commit_body(tagged)), version)
    assert request == decode_offset_commit_request(memoryview(flexible_commit_body()), version)
    assert request.topics[0].partitions[0].committed_metadata == "m" * 130


@pytest.mark.parametrize("tagged", ["partition", "topic", "request"])
def test_offset_commit_truncated_tagged_fields_are_malformed(tagged: str) -> None:
    body = flexible_commit_body(tagged)
    end = body.index(b"abc") + 10  # inside the 200-byte tagged field
    with pytest.raises(MalformedMessage, match=r"tagged fields at byte \d+"):
        decode_offset_commit_request(memoryview(body[:end]), 8)


@pytest.mark.parametrize("version", hot.OFFSET_COMMIT_VERSIONS)
def test_every_offset_commit_truncation_is_malformed(version: int) -> None:
    values: CommitValues = ("g", 1, "m", "i", 5, [("a", [(0, 10, 1, "md"), (1, 11, 1, None)]), ("b", [])])
    body = offset_commit_body(version, *values)
    decode_offset_commit_request(memoryview(body), version)
    for length in range(len(body)):
        with pytest.raises(MalformedMessage, match=rf"^OffsetCommit v{version} request: .* at byte \d+ "):
            decode_offset_commit_request(memoryview(body[:length]), version)


def legacy_commit_body(group_id: bytes = b"\x00\x01g", member_id: bytes = b"\x00\x01m",
                       instance_id: bytes = b"\xff\xff", topic_count: bytes = b"\x00\x00\x00\x01",
                       name: bytes = b"\x00\x01a", partition_count: bytes = b"\x00\x00\x00\x01",
                       metadata: bytes = b"\x00\x02md") -> bytes:
    """A v7 body: group_id, generation 1, member_id, group_instance_id, topics [name,
    partitions [index 0, offset 5, leader epoch 2, metadata]]."""
    return (group_id + struct.pack(">i", 1) + member_id + instance_id + topic_count + name
            + partition_count + struct.pack(">iqi", 0, 5, 2) + metadata)


def test_legacy_commit_helper_body_is_what_kio_writes() -> None:
    assert legacy_commit_body() == offset_commit_body(7, "g", 1, "m", None, -1, [("a", [(0, 5, 2, "md")])])


ABSURD_LEGACY_COMMIT = {
    "group_id null": ({"group_id": b"\xff\xff"}, r"group_id at byte 0 is null"),
    "group_id length -2": ({"group_id": b"\xff\xfe"}, r"group_id at byte 0 has negative length -2"),
    "group_id past the end": ({"group_id": b"\x7f\xffg"}, r"group_id at byte 0 has length 32767 but"),
    "group_id not UTF-8": ({"group_id": b"\x00\x02\xc3\x28"}, r"group_id at byte 0 is not valid UTF-8"),
    "member_id null": ({"member_id": b"\xff\xff"}, r"member_id at byte 7 is null"),
    "instance_id length -3": ({"instance_id": b"\xff\xfd"}, r"group_instance_id at byte 10 has negative"),
    "instance_id not UTF-8": ({"instance_id": b"\x00\x01\xff"}, r"group_instance_id .* not valid UTF-8"),
    "topic count -1 (not nullable)": ({"topic_count": b"\xff\xff\xff\xff"}, r"count -1; the array is not"),
    "topic count 2**31-1": ({"topic_count": b"\x7f\xff\xff\xff"}, r"array at byte 12 claims 2147483647"),
    "name null": ({"name": b"\xff\xff"}, r"a topic name at byte 16 is null"),
    "name not UTF-8": ({"name": b"\x00\x01\x80"}, r"a topic name at byte 16 is not valid UTF-8"),
    "partition count -5": ({"partition_count": b"\xff\xff\xff\xfb"}, r"partition array at byte 19 has count"),
    "partition count huge": ({"partition_count": b"\x10\x00\x00\x00"}, r"array at byte 19 claims 268435456"),
    "metadata length -2": ({"metadata": b"\xff\xfe"}, r"committed_metadata at byte 39 has negative"),
    "metadata past the end": ({"metadata": b"\x00\x03md"}, r"metadata at byte 39 has length 3 but only 2"),
    "metadata not UTF-8": ({"metadata": b"\x00\x02\xed\xa0"}, r"committed_metadata .* not valid UTF-8"),
}


@pytest.mark.parametrize("case", ABSURD_LEGACY_COMMIT)
def test_absurd_legacy_offset_commit_is_malformed(case: str) -> None:
    fields, message = ABSURD_LEGACY_COMMIT[case]
    with pytest.raises(MalformedMessage, match=rf"^OffsetCommit v7 request: .*{message}"):
        decode_offset_commit_request(memoryview(legacy_commit_body(**fields)), 7)


FLEXIBLE_COMMIT_HEAD = b"\x02g" + struct.pack(">i", 1) + b"\x02m" + b"\x00"  # group, generation, member, null
ABSURD_FLEXIBLE_COMMIT = {
    "group_id null": (b"\x00" + bytes(20), r"group_id at byte 0 is null"),
    "group_id six-byte varint": (b"\x80\x80\x80\x80\x80\x01", r"group_id at byte 0: a varint is longer"),
    "group_id past the end": (b"\x7fabc", r"group_id at byte 0 has length 126 but only 3"),
    "member_id null": (b"\x02g" + struct.pack(">i", 1) + b"\x00" + bytes(10), r"member_id at byte 6 is null"),
    "instance_id past the end": (b"\x02g" + struct.pack(">i", 1) + b"\x02m" + b"\x05ab",
                                 r"group_instance_id at byte 8 has length 4 but only 2"),
    "topic array null": (FLEXIBLE_COMMIT_HEAD + b"\x00\x00", r"topic array at byte 9 has count -1"),
    "topic count 2**28": (FLEXIBLE_COMMIT_HEAD + b"\x81\x80\x80\x80\x01\x00",
                          r"topic array at byte 9 claims 268435456 items"),
    "null topic name": (FLEXIBLE_COMMIT_HEAD + b"\x02\x00\x01\x00\x00", r"a topic name at byte 10 is null"),
    "name not UTF-8": (FLEXIBLE_COMMIT_HEAD + b"\x02\x02\xfe\x01\x00\x00", r"topic name .* not valid UTF-8"),
    "partition array null": (FLEXIBLE_COMMIT_HEAD + b"\x02\x02a\x00\x00\x00",
                             r"a partition array at byte 12 has count -1"),
    "partition count 2**21": (FLEXIBLE_COMMIT_HEAD + b"\x02\x02a\x81\x80\x80\x01" + bytes(30),
                              r"a partition array at byte 12 claims 2097152 items"),
    "metadata past the end": (FLEXIBLE_COMMIT_HEAD + b"\x02\x02a\x02" + bytes(16) + b"\x10md\x00\x00\x00",
                              r"committed_metadata at byte 29 has length 15 but only 5"),
    "tagged field past the end": (FLEXIBLE_COMMIT_HEAD + b"\x02\x02a\x02" + bytes(16) + b"\x00"
                                  + b"\x01\x00\x7fz\x00\x00", r"partition's tagged fields at byte 30"),
}


@pytest.mark.parametrize("case", ABSURD_FLEXIBLE_COMMIT)
def test_absurd_flexible_offset_commit_is_malformed(case: str) -> None:
    body, message = ABSURD_FLEXIBLE_COMMIT[case]
    with pytest.raises(MalformedMessage, match=rf"^OffsetCommit v9 request: .*{message}"):
        decode_offset_commit_request(memoryview(body), 9)


@pytest.mark.parametrize(("version", "body"), [
    (7, legacy_commit_body(topic_count=b"\x7f\xff\xff\xff")),
    (7, legacy_commit_body(partition_count=b"\x7f\xff\xff\xff")),
    (9, FLEXIBLE_COMMIT_HEAD + b"\x8f\xff\xff\xff\x0f"),  # 2**32 - 1 topics
    (9, FLEXIBLE_COMMIT_HEAD + b"\x02\x02a\x8f\xff\xff\xff\x0f"),
])
def test_huge_offset_commit_count_is_refused_without_allocating(version: int, body: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(MalformedMessage, match="claims"):
            decode_offset_commit_request(memoryview(body), version)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # the error message and traceback, nothing sized by the count


@given(version=st.sampled_from(hot.OFFSET_COMMIT_VERSIONS), data=st.binary(max_size=80))
def test_random_bytes_parse_or_are_malformed_offset_commit(version: int, data: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        decode_offset_commit_request(memoryview(data), version)


MUTATED_COMMIT: CommitValues = ("grp", 3, "mem", "in", 5, [("t", [(0, 1, 2, "md"), (1, 1, 2, None)]),
                                                            ("u", [])])


@given(version=st.sampled_from(hot.OFFSET_COMMIT_VERSIONS),
       mutations=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([0, 1, 0x7F, 0x80, 0xFF])
                                    | st.integers(0, 255)), min_size=1, max_size=3))
def test_mutated_offset_commit_parses_or_is_malformed(version: int, mutations: list[tuple[int, int]]) -> None:
    """Never anything but MalformedMessage; and whatever kio's decoder accepts, ours accepts with
    the same values. (Ours also accepts what kio refuses for its own reasons: unknown tagged
    fields, which Kafka skips, and retention times beyond Python's timedelta.)"""
    body = bytearray(offset_commit_body(version, *MUTATED_COMMIT))
    for position, value in mutations:
        body[position % len(body)] = value
    try:
        ours: CommitValues | None = hot_commit_values(decode_offset_commit_request(memoryview(body), version))
    except MalformedMessage:
        ours = None
    try:
        theirs = kio_commit_values(schema.decode_request(apis.OFFSET_COMMIT, version, bytes(body)))
    except MalformedMessage:
        return
    assert ours == theirs


# --- OffsetCommit response -------------------------------------------------------------------

CommitResults = list[tuple[str, list[tuple[int, int]]]]


def schema_offset_commit_response(version: int, topics: CommitResults, throttle_ms: int) -> bytes:
    return schema.encode_response(apis.OFFSET_COMMIT, version, {
        "throttle_time": throttle_ms,
        "topics": [{"name": name, "partitions": [{"partition_index": index, "error_code": error}
                                                 for index, error in partitions]}
                   for name, partitions in topics]})


@ORACLE
@given(version=st.sampled_from(hot.OFFSET_COMMIT_VERSIONS), throttle_ms=INT32,
       topics=st.lists(st.tuples(COMMIT_STRINGS, st.lists(st.tuples(INT32, ERROR_CODES),
                                                          max_size=MAX_PARTITIONS)), max_size=MAX_TOPICS))
def test_offset_commit_response_matches_kio(version: int, topics: CommitResults, throttle_ms: int) -> None:
    expected = schema_offset_commit_response(version, topics, throttle_ms)
    assert encode_offset_commit_response(version, topics, throttle_ms) == expected


@ORACLE
@given(version=st.sampled_from(hot.OFFSET_COMMIT_VERSIONS), throttle_ms=INT32, name=COMMIT_STRINGS,
       index=INT32, error_code=ERROR_CODES)
def test_offset_commit_one_partition_response_matches_kio(version: int, throttle_ms: int, name: str,
                                                          index: int, error_code: int) -> None:
    topics = [(name, [(index, error_code)])]  # the single-pack fast path
    expected = schema_offset_commit_response(version, topics, throttle_ms)
    assert encode_offset_commit_response(version, topics, throttle_ms) == expected


@pytest.mark.parametrize("version", hot.OFFSET_COMMIT_VERSIONS)
def test_offset_commit_response_fixed(version: int) -> None:
    for topics in ([("orders", [(0, 0)])], [("t" * 200, [(7, 25)])],
                   [("orders", [(0, 0), (1, 3)]), ("ü", []), ("x", [(2, 22)])], [("empty", [])], []):
        expected = schema_offset_commit_response(version, topics, 5)
        assert encode_offset_commit_response(version, topics, 5) == expected
    assert encode_offset_commit_response(version, [("a", [(1, 0)])]) == schema_offset_commit_response(
        version, [("a", [(1, 0)])], 0)


def test_offset_commit_response_known_answers() -> None:
    # v2: topics [1 | "a" | partitions [1 | index 3 | error 0]]
    assert encode_offset_commit_response(2, [("a", [(3, 0)])]) == bytes.fromhex(
        "00000001" "000161" "00000001" "00000003" "0000")
    # v8: throttle 9 | compact [1] | "a" | compact [1] | index 3 | error 25 | tags x3
    assert encode_offset_commit_response(8, [("a", [(3, 25)])], 9) == bytes.fromhex(
        "00000009" "02" "0261" "02" "00000003" "0019" "00" "00" "00")


# --- versions outside the ranges -------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: decode_produce_request(memoryview(b""), 11),
    lambda: encode_produce_response(-1, []),
    lambda: encode_fetch_response(3, []),
    lambda: encode_fetch_response(13, []),
    lambda: encode_metadata_response(13, brokers=[], cluster_id=None, controller_id=0, topics=[]),
    lambda: encode_list_offsets_response(0, []),
    lambda: encode_api_versions_response(5, 0, []),
    lambda: decode_offset_commit_request(memoryview(b""), 1),
    lambda: decode_offset_commit_request(memoryview(b""), 10),
    lambda: encode_offset_commit_response(1, []),
    lambda: encode_offset_commit_response(10, []),
])
def test_versions_outside_the_range_are_refused(call: Any) -> None:
    with pytest.raises(ValueError, match="UNSUPPORTED_VERSION"):
        call()
