"""Hostile bytes (issue 8, deliverable 4): mutated frames at every API and version the
broker advertises, from many connections at once, against a ``logkernel serve`` process.

What must hold, whatever arrives:

1. the broker never dies (the process is alive throughout and afterwards);
2. it never fails inside: no ERROR line, no traceback, no "failed inside the broker" in its
   log (each would be a bug of ours, not the client's);
3. every request it answers is answered in order, in the layout of the API and version
   its header names (the response parses, with nothing left over), and the only requests
   it may leave unanswered on a connection it keeps open are Produce requests (acks=0);
4. its memory stays bounded: RSS under ``RSS_CEILING_MB`` and no growth trend over the
   second half of the run;
5. afterwards a normal client (confluent-kafka) produces and consumes correctly.

Seeds are (a) the requests kafka-python, confluent-kafka and aiokafka really send, captured
through a recording proxy (``fuzz_capture.py``, stored in ``fuzz_seeds/clients.frames``),
and (b) one request per offered API and version built from Kafka's schemas
(tests/test_broker_fuzz.py's ``seed_requests``, plus the partition-creating APIs and the
Produce versions kio has no schema for). Mutations are structure-aware where a seed parses
(integers and lengths and counts set to extremes, strings replaced by telling ones, tagged
fields added, record batches edited with their CRC fixed so the damage reaches the record
decoder) and blind everywhere (bit flips, truncation, insertion, deletion, duplication),
plus header damage (API key, version, client id length and bytes, tagged fields), splices
of two requests, frame-size lies, many frames in one write and frames split across writes.

Accounting: a frame counts as fuzzed once the broker has read it: it was answered, or a
later answer on its connection passed it, or it is the frame the broker closed the
connection on. Frames written after a refused one are lost, and not counted.

Sizes: ``make test`` fuzzes for 15 s from one sender (~15,000-30,000 frames);
``make test-reliability`` until the broker has read 1,050,000 frames (the issue's target is
1,000,000), from two sender processes: 6-9 minutes on this machine.

The end of the file holds the regressions for what the fuzz found.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import queue
import random
import re
import socket
import statistics
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import confluent_kafka
import confluent_kafka.admin
import pytest
from kio.serial import entity_reader

import logkernel
from logkernel.protocol import apis, schema
from logkernel.protocol.frames import parse_request_header
from logkernel.protocol.primitives import (
    MalformedMessage,
    read_uvarint,
    skip_tagged_fields,
    write_uvarint,
)
from tests import broker_support as support
from tests.reliability import fuzz_capture
from tests.reliability.conftest import FULL, Figures, scale
from tests.test_broker_fuzz import seed_requests

# ---- the size of a run ----------------------------------------------------------------------

# Frames the broker must read (see the accounting above). The full run passes the issue's
# target (1,000,000 fuzzed frames) with room for the unmutated ones among them; the short
# run is bounded by its time instead.
FRAMES = scale(40_000, 1_050_000)
# Wall-time bound of the fuzzing itself: the short run stops here whatever it sent; the full
# run reaches FRAMES in 6-9 minutes on this 2-core machine when others' tests share it
# (~2,000 frames a second: the broker and the senders each spend ~0.2 ms of CPU a frame),
# and this bound only stops a run on a machine too busy to make the target.
FUZZ_SECONDS = scale(15, 720)
SENDER_PROCESSES = scale(1, 2)
CONNECTIONS_PER_SENDER = 32
SEED = 20261129

# ---- the broker under fuzz ------------------------------------------------------------------

# A small request limit: mutated frames are at most a few KiB, and a frame-size lie above
# it must close the connection (a bigger limit would only make the broker wait for bytes).
MAX_REQUEST_BYTES = 1 << 20
BROKER_SETTINGS = [
    f"socket.request.max.bytes={MAX_REQUEST_BYTES}",
    # Metadata requests with mutated topic names would otherwise create a topic each.
    "auto.create.topics.enable=false",
    "group.initial.rebalance.delay.ms=0",
]
# The topics seeds name: schema seeds use "t", captured ones fuzz_capture.TOPICS. A watcher
# re-creates them every RECREATE_SECONDS, since fuzzed DeleteTopics requests delete them.
SEED_TOPICS = {"t": 2, **fuzz_capture.TOPICS}
RECREATE_SECONDS = 3.0
# A mutated partition count is often valid; honouring 10,000 partitions is correct but takes
# the broker tens of seconds (a directory and files each). Such frames are not sent: the
# partition limit is tested in test_engine.py. Frames asking for more are counted as skipped.
MOST_PARTITIONS_SENT = 16

# ---- bounds the checks use ------------------------------------------------------------------

# The broker's RSS ceiling under fuzz. It starts at ~35 MB and peaks near 55 MB in a full run
# (topics, groups, producer state, per-connection buffers of up to 1 MiB frames and 64
# requests in flight). 400 MB is far above what a healthy run needs and far below what a
# leak of a few hundred bytes per frame reaches over a million frames.
RSS_CEILING_MB = 400
# Over the second half of the run the RSS may drift by this much (allocator noise, caches
# that fill once: full runs drift by ~1.5 MB); a leak grows it steadily and passes this. At
# full size (500,000 frames in the second half) that is any leak of more than ~32 bytes a
# frame; the short run catches only leaks of kilobytes a frame (a 4 KiB one did).
RSS_DRIFT_MB = 16
RSS_SAMPLE_SECONDS = 0.25
# A connection whose burst gets no answer for this long is closed by the fuzzer and
# reopened: a long-poll Fetch or a JoinGroup waiting for a rebalance holds the answers
# after it. The broker answering late is not a failure; this only keeps the senders busy.
SILENCE_SECONDS = 2.0
# Internal failures: what the broker logs when a handler raises (server.py) and what any
# uncaught exception or asyncio callback failure prints.
INTERNAL_FAILURE = re.compile(r" (ERROR|CRITICAL) |Traceback|failed inside the broker")


# ---- seeds ----------------------------------------------------------------------------------

@dataclasses.dataclass
class FuzzSeed:
    """A well-formed request: its header (without the size prefix; bytes 4-8 hold the
    correlation id, replaced per frame) and body. ``spots`` are the places in the body
    worth aiming at, found by walking the body with the schema (empty if it does not
    parse)."""

    api_key: int
    version: int
    header: bytes
    body: bytes
    origin: str
    spots: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)


def header_bytes(api_key: int, version: int, client_id: str | None = "fuzz") -> bytes:
    cid = b"\xff\xff" if client_id is None else struct.pack(">h", len(client_id)) + client_id.encode()
    header = struct.pack(">hhi", api_key, version, 0) + cid
    if api_key in apis.OFFERED and version >= apis.OFFERED[api_key].first_flexible:
        header += b"\x00"
    return header


def produce_v0_to_2_body() -> bytes:
    """A Produce v0-2 body (kio has no schema for them: Kafka 4 dropped them, though the
    broker advertises them for librdkafka's sake and answers UNSUPPORTED_VERSION)."""
    records = logkernel.encode_batch([b"x"])
    return (struct.pack(">hi", 1, 1000) + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"
            + struct.pack(">i", 1) + struct.pack(">ii", 0, len(records)) + records)


def partition_creating_seeds() -> list[tuple[int, int, bytes]]:
    """CreateTopics and CreatePartitions, which test_broker_fuzz.py leaves out (its run is
    too short to afford honouring them); here they are sent, capped (MOST_PARTITIONS_SENT)."""
    seeds = []
    for api_key, fields in (
            (apis.CREATE_TOPICS, {"topics": [{"name": "made-by-fuzz", "num_partitions": 1,
                                              "replication_factor": 1, "assignments": [],
                                              "configs": [{"name": "retention.ms",
                                                           "value": "60000"}]}],
                                  "timeout": 1000}),
            (apis.CREATE_PARTITIONS, {"topics": [{"name": "made-by-fuzz", "count": 2,
                                                  "assignments": None}],
                                      "timeout": 1000})):
        api = apis.OFFERED[api_key]
        for version in range(api.min_version, api.max_version + 1):
            entity = schema.build(schema.request_type(api_key, version), fields)
            seeds.append((api_key, version, schema.encode_entity(entity)))
    return seeds


def all_seeds(captured: Sequence[fuzz_capture.Seed]) -> list[FuzzSeed]:
    seeds = [FuzzSeed(s.api_key, s.version, s.header, s.body, "client:" + fuzz_capture.client_of(s))
             for s in captured]
    for api_key, version, body in seed_requests() + partition_creating_seeds():
        seeds.append(FuzzSeed(api_key, version, header_bytes(api_key, version), body, "schema"))
    for version in range(0, 3):
        seeds.append(FuzzSeed(apis.PRODUCE, version, header_bytes(apis.PRODUCE, version),
                              produce_v0_to_2_body(), "hand-built"))
    for seed in seeds:
        seed.spots = field_spots(seed.api_key, seed.version, seed.body)
    return seeds


def advertised_kinds() -> set[tuple[int, int]]:
    return {(api.key, v) for api in apis.OFFERED.values()
            for v in range(api.min_version, api.max_version + 1)}


# ---- where to aim: a walk over a body with the schema ----------------------------------------
#
# Spots: ("length", position, width) for string/bytes lengths and array counts (width 2 or
# 4, or 0 for a compact uvarint), ("string", position, width) for strings (at their length),
# ("int", position, size) for fixed-size integers,
# ("records", position, size) for a records field's bytes, and ("tags", position, 0) for
# the tagged-field sections of flexible versions.

_FIXED = {"int8": 1, "bool": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
          "timedelta_i32": 4, "int64": 8, "timedelta_i64": 8, "datetime_i64": 8,
          "float64": 8, "error_code": 2, "uuid": 16}


def field_spots(api_key: int, version: int, body: bytes) -> list[tuple[str, int, int]]:
    spots: list[tuple[str, int, int]] = []
    if not schema.has_schema(api_key, version):
        return spots
    with contextlib.suppress(MalformedMessage, IndexError, ValueError):
        _spots(schema.request_type(api_key, version), memoryview(body), 0, spots)
    return spots


def _spots(cls: Any, buf: memoryview, pos: int, out: list[tuple[str, int, int]]) -> int:
    flexible = bool(getattr(cls, "__flexible__", False))
    for _name, kind, item, item_kind, _nullable in schema.field_layout(cls):
        if kind == "tagged":
            continue
        if kind == "array":
            count, pos = _length(buf, pos, flexible, 4, out)
            for _ in range(max(count, 0)):
                pos = _spots(item, buf, pos, out) if item_kind == "struct" else \
                    _value(item_kind, buf, pos, flexible, out)
        elif kind == "struct":
            pos = _spots(item, buf, pos, out)
        else:
            pos = _value(kind, buf, pos, flexible, out)
    if flexible:
        out.append(("tags", pos, 0))
        pos = skip_tagged_fields(buf, pos)
    return pos


def _value(kind: str, buf: memoryview, pos: int, flexible: bool, out: list[tuple[str, int, int]]) -> int:
    size = _FIXED.get(kind)
    if size is not None:
        if kind != "uuid":
            out.append(("int", pos, size))
        return pos + size
    if kind == "string":
        out.append(("string", pos, 0 if flexible else 2))
    size, pos = _length(buf, pos, flexible, 2 if kind == "string" else 4, out)
    if kind == "records" and size > 0:
        out.append(("records", pos, size))
    return pos + max(size, 0)


def _length(buf: memoryview, pos: int, flexible: bool, width: int,
            out: list[tuple[str, int, int]]) -> tuple[int, int]:
    if flexible:
        out.append(("length", pos, 0))
        raw, after = read_uvarint(buf, pos)
        return raw - 1, after
    out.append(("length", pos, width))
    if pos + width > len(buf):
        raise MalformedMessage("short")
    return int.from_bytes(buf[pos:pos + width], "big", signed=True), pos + width


# ---- mutations --------------------------------------------------------------------------------

INT_EXTREMES = {
    1: [0, 1, 2, 0x7F, 0x80, 0xFF],
    2: [0, 1, -1, -2, 0x7FFF, -0x8000, 0x100, 0xFF],
    4: [0, 1, -1, -2, 0x7FFFFFFF, -0x80000000, 0x33333333, 0x10000, 0x7FFF],
    8: [0, 1, -1, -2, 0x7FFFFFFFFFFFFFFF, -0x8000000000000000, 1 << 32, 1 << 53],
}
UVARINT_EXTREMES = [b"\x00", b"\x01", b"\x02", b"\x7f", b"\xff\xff\xff\xff\x0f",
                    b"\x80\x80\x80\x80\x08", b"\xff\xff\xff\xff\xff\x01", b"\x80", b"\xff\x7f"]
TAGGED_JUNK = [b"\x01\x00\x00", b"\x01\x07\x02ab", b"\x01\x00\x7f", b"\x02\x00\x00\x00\x00",
               b"\x7f", b"\xff\xff\xff\xff\x0f", b"\x01\xff\xff\xff\xff\x0f\x00"]
# Strings worth putting where a request has a name, an id or a config: internal topics, the
# seed topics and groups, names at and past Kafka's limits, paths, config keys and values
# (tiny segments, retention 0, compaction), and null.
STRINGS: list[str | None] = [
    "", "t", "seed-a", "seed-b", "__consumer_offsets", "__transaction_state", ".", "..",
    "../t", "a" * 249, "a" * 250, "ü" * 100, "t\x00", "g", "seed-kp-group", "seed-cf-txn",
    "*", "retention.ms", "segment.bytes", "cleanup.policy", "max.message.bytes",
    "compression.type", "message.timestamp.type", "min.cleanable.dirty.ratio", "compact",
    "compact,delete", "delete", "LogAppendTime", "zstd", "0", "1", "-1", "14", "1048576",
    "9223372036854775807", "NaN", "1e400", "range", "cooperative-sticky", None]
# Record batch header fields (offset, size) a mutation may set to an extreme: base offset,
# batchLength, leader epoch, magic, attributes, lastOffsetDelta, timestamps, producer id,
# epoch, base sequence, recordsCount.
BATCH_FIELDS = [(0, 8), (8, 4), (12, 4), (16, 1), (21, 2), (23, 4), (27, 8), (35, 8),
                (43, 8), (51, 2), (53, 4), (57, 4)]


def _pack_int(value: int, size: int) -> bytes:
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "big")


def _fix_crcs(data: bytearray, start: int, end: int) -> None:
    """Recomputes the CRC of every batch laid out in data[start:end] as far as the
    batch lengths can be followed: a mutation inside a batch then reaches the record
    decoder instead of stopping at the CRC check."""
    pos = start
    while pos + 61 <= end:
        length = int.from_bytes(data[pos + 8:pos + 12], "big", signed=True)
        stop = pos + 12 + length
        if length < 49 or stop > end:
            return
        data[pos + 17:pos + 21] = logkernel.crc32c(bytes(data[pos + 21:stop])).to_bytes(4, "big")
        pos = stop


def mutate_records(rng: random.Random, data: bytearray, start: int, size: int) -> None:
    end = start + size
    if size >= 61 and rng.random() < 0.5:
        offset, width = rng.choice(BATCH_FIELDS)
        if width == 1:
            data[start + offset] = rng.choice([0, 1, 2, 3, 0xFF])
        else:
            data[start + offset:start + offset + width] = _pack_int(
                rng.choice(INT_EXTREMES.get(width, [0])), width)
    else:
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(start + min(61, size - 1), end) if size > 61 else rng.randrange(start, end)
            data[at] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    if rng.random() < 0.8:
        _fix_crcs(data, start, end)


def _spot(rng: random.Random, seed: FuzzSeed, kinds: tuple[str, ...]) -> tuple[str, int, int] | None:
    """A spot of one of ``kinds``; record batches are picked first half the time (there is
    one records field among dozens of others, and it is the richest)."""
    spots = [s for s in seed.spots if s[0] in kinds]
    if not spots:
        return None
    records = [s for s in spots if s[0] == "records"]
    return rng.choice(records if records and rng.random() < 0.5 else spots)


def mutate_values(rng: random.Random, seed: FuzzSeed) -> bytes:
    """Values changed, layout kept: integers set to extremes, strings replaced by telling
    ones (internal topics, names at and past their limits, config keys and values), record
    batches edited (CRC fixed). Such a request usually parses, so it reaches the handler."""
    data = bytearray(seed.body)
    for _ in range(rng.choice([1, 1, 1, 2])):
        spot = _spot(rng, seed, ("int", "string", "records"))
        if spot is None:
            return blind_edits(rng, data, 1)
        kind, pos, width = spot
        if kind == "records":
            mutate_records(rng, data, pos, width)
        elif kind == "int":
            data[pos:pos + width] = _pack_int(rng.choice(INT_EXTREMES[width]), width)
        else:
            replace_string(rng, data, pos, width)
            break  # positions after it have moved
    return bytes(data)


def replace_string(rng: random.Random, data: bytearray, pos: int, width: int) -> None:
    if width == 0:
        length, after = read_uvarint(data, pos)
        length -= 1
    else:
        length, after = int.from_bytes(data[pos:pos + width], "big", signed=True), pos + width
    new = rng.choice(STRINGS)
    if new is None:
        encoded = b"\x00" if width == 0 else b"\xff\xff"
    else:
        raw = new.encode()
        encoded = (write_uvarint(len(raw) + 1) if width == 0 else struct.pack(">h", len(raw))) + raw
    data[pos:after + max(length, 0)] = encoded


def mutate_structure(rng: random.Random, seed: FuzzSeed) -> bytes:
    """A length, count or tagged-field section set to an extreme: the walk over the request
    must notice before it reads or allocates anything."""
    data = bytearray(seed.body)
    spot = _spot(rng, seed, ("length", "tags"))
    if spot is None:
        return blind_edits(rng, data, 1)
    kind, pos, width = spot
    if kind == "tags":  # unknown tagged fields, lying sizes, absurd counts
        count, after = read_uvarint(data, pos)
        if count == 0:
            data[pos:after] = rng.choice(TAGGED_JUNK)
    elif width == 0:
        _, after = read_uvarint(data, pos)
        data[pos:after] = rng.choice(UVARINT_EXTREMES)
    else:
        current = int.from_bytes(data[pos:pos + width], "big", signed=True)
        choices = INT_EXTREMES[width] + [current + 1, current - 1, current * 2 + 1]
        data[pos:pos + width] = _pack_int(rng.choice(choices), width)
    return bytes(data)


def blind_edits(rng: random.Random, data: bytearray, count: int) -> bytes:
    """Edits that know nothing of the layout."""
    for _ in range(count):
        choice = rng.random()
        if choice < 0.3 and data:  # byte set / bit flip
            at = rng.randrange(len(data))
            data[at] = data[at] ^ (1 << rng.randrange(8)) if rng.random() < 0.5 else rng.randrange(256)
        elif choice < 0.45 and data:  # truncation
            del data[rng.randrange(len(data)):]
        elif choice < 0.6:  # insertion
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 16)) if rng.random() < 0.7 else \
                rng.choice([b"\xff" * 4, b"\x00" * 4, b"\x7f\xff\xff\xff", b"\x80" * 5])
        elif choice < 0.7 and data:  # deletion
            at = rng.randrange(len(data))
            del data[at:at + rng.randint(1, 16)]
        elif choice < 0.8 and data:  # duplication of a run (repeated structs)
            at = rng.randrange(len(data))
            run = data[at:at + rng.randint(1, 64)]
            data[at:at] = run * rng.randint(1, 4)
        elif data:  # blind extremes: any 2/4/8 bytes may be a length or a count
            width = rng.choice([2, 4, 4, 8])
            at = rng.randrange(len(data))
            data[at:at + width] = _pack_int(rng.choice(INT_EXTREMES[width]), width)
    return bytes(data)


def mutate_header(rng: random.Random, seed: FuzzSeed) -> bytes:
    header = bytearray(seed.header)
    choice = rng.random()
    if choice < 0.25:  # another API's key: the body is then read as that API's
        key = rng.choice([*apis.OFFERED, *apis.OFFERED, -1, 7, 17, 27, 50, 1000, 32767, -32768])
        header[0:2] = _pack_int(key, 2)
    elif choice < 0.5:  # a version outside (or at the edges of) the range
        api = apis.OFFERED.get(seed.api_key)
        top = api.max_version if api else 0
        version = rng.choice([-1, -32768, 32767, top + 1, top + 2, 0, rng.randint(0, top + 3)])
        header[2:4] = _pack_int(version, 2)
    elif choice < 0.75:  # the client id length
        length = rng.choice([-2, -1, -32768, 32767, 0, len(header) + 100,
                             int.from_bytes(header[8:10], "big", signed=True) + 1])
        header[8:10] = _pack_int(length, 2)
    elif choice < 0.85:  # client id bytes that are not UTF-8
        header[10:10] = b"\xff\xfe\xc0"
        length = int.from_bytes(header[8:10], "big", signed=True)
        header[8:10] = _pack_int(max(length, 0) + 3, 2)
    else:  # tagged fields after the client id (flexible headers), or junk there
        header += rng.choice([b"\x01\x00\x00", b"\x01\x05\x02ab", b"\xff\xff\xff\xff\x0f",
                              b"\x02\x00\x7f", rng.randbytes(3)])
    return bytes(header)


@dataclasses.dataclass
class Planned:
    """One frame to send: its payload (header + body, no size prefix), the size prefix to
    write (the truth, or a lie), and whether it is an unmutated seed."""

    payload: bytes
    size: int
    pristine: bool
    api_key: int
    version: int
    family: str  # the kind of mutation: "values", "structure", "blind", "header", ...


def plan_frame(rng: random.Random, seeds: Sequence[FuzzSeed], correlation: int, *,
               keep_layout: bool = False) -> Planned:
    """One frame: a seed, usually mutated. With ``keep_layout``, only unmutated seeds and
    edits of values (which keep the request parseable, so it reaches its handler); else
    any mutation: values, lengths and counts, blind edits, the header, splices, framing."""
    seed = rng.choice(seeds)
    header, body = seed.header, seed.body
    pristine = rng.random() < (0.1 if keep_layout else 0.01)
    family = "pristine"
    if not pristine:
        choice = 0.0 if keep_layout else rng.random()
        if choice < 0.30:
            family, body = "values", mutate_values(rng, seed)
        elif choice < 0.52:
            family, body = "structure", mutate_structure(rng, seed)
        elif choice < 0.77:
            family, body = "blind", blind_edits(rng, bytearray(seed.body), rng.randint(1, 4))
        elif choice < 0.88:
            family, header = "header", mutate_header(rng, seed)
            if rng.random() < 0.3:
                body = mutate_values(rng, seed)
        elif choice < 0.97:  # splices: a head of one request, the tail of another
            family = "splice"
            other = rng.choice(seeds)
            if rng.random() < 0.5:
                body = other.body  # this header, that body
            else:
                body = seed.body[:rng.randint(0, len(seed.body))] + \
                    other.body[rng.randint(0, len(other.body)):]
        else:  # the header alone, or nothing after the correlation id
            family, body = "empty", b""
            if rng.random() < 0.5:
                header = header[:rng.randint(0, len(header))]
    if len(header) >= 8:
        header = header[:4] + struct.pack(">i", correlation) + header[8:]
    payload = header + body
    size = len(payload)
    if not pristine and not keep_layout and rng.random() < 0.02:  # a frame-size lie
        family = "size lie"
        size = rng.choice([0, -1, 3, size - 1, size + 1, size + 1000, MAX_REQUEST_BYTES + 1,
                           0x7FFFFFFF, -0x80000000])
    api_key, version = struct.unpack_from(">hh", payload) if len(payload) >= 4 else (-1, -1)
    return Planned(payload, size, pristine, api_key, version, family)


# Requests that change the topics or their configs and parse. Each one honoured costs the
# broker milliseconds of directory work and fsyncs on its event loop; unthrottled, a full
# run created and deleted 4,000 topics (the clients' captured admin calls, replayed) and
# spent a fifth of its time on it. One in SEND_ONE_IN of them is sent: still thousands.
TOPIC_CHANGING = {apis.CREATE_TOPICS, apis.DELETE_TOPICS, apis.CREATE_PARTITIONS,
                  apis.ALTER_CONFIGS, apis.INCREMENTAL_ALTER_CONFIGS, apis.DELETE_RECORDS}
SEND_ONE_IN = 4


def too_costly(rng: random.Random, planned: Planned) -> bool:
    """True for a frame not to send: one that parses and would create more than
    MOST_PARTITIONS_SENT partitions, or a topic-changing request beyond one in SEND_ONE_IN
    (see the comments of both). Decoded here with the broker's own decoder: a frame that
    does not parse is always sent (the broker refuses it cheaply)."""
    if planned.api_key not in TOPIC_CHANGING or \
            not apis.OFFERED[planned.api_key].serves(planned.version):
        return False
    try:
        header = parse_request_header(memoryview(planned.payload))
        request = schema.decode_request(planned.api_key, planned.version,
                                        memoryview(planned.payload)[header.body_offset:])
    except Exception:  # does not parse: the broker refuses it, cheaply
        return False
    if rng.randrange(SEND_ONE_IN):
        return True
    if planned.api_key == apis.CREATE_TOPICS:
        default = sum(1 for t in request.topics if t.num_partitions == -1 and not t.assignments)
        asked = sum(max(t.num_partitions, len(t.assignments)) for t in request.topics)
        return asked + default > MOST_PARTITIONS_SENT
    if planned.api_key == apis.CREATE_PARTITIONS:
        return sum(max(t.count, 0) for t in request.topics) > MOST_PARTITIONS_SENT
    return False


# ---- responses ----------------------------------------------------------------------------------

def response_problem(api_key: int, version: int, frame: bytes) -> str | None:
    """Why ``frame`` (a response without its size prefix) is not a well-formed answer to
    an (api_key, version) request, or None. Versions kio has no schema for are not checked."""
    api = apis.OFFERED.get(api_key)
    if api is None:
        return f"an answer to api key {api_key}, which the broker does not offer"
    layout = version
    if api_key == apis.API_VERSIONS and not api.serves(version):
        layout = 0  # KIP-511: answered in v0's layout
    flexible = layout >= api.first_flexible and api_key != apis.API_VERSIONS
    try:
        cls = schema.response_type(api_key, layout)
    except Exception:  # no schema (Produce v0-2): nothing to check against
        return None
    try:
        pos = skip_tagged_fields(frame, 4) if flexible else 4
        _entity, consumed = entity_reader(cls)(frame, pos)
    except Exception as exc:  # any failure to parse is the finding
        if "negative timestamp" in str(exc):
            # kio refuses -1 in a timestamp field, which Kafka itself sends for "none"
            # (DescribeTransactions' start time of an unknown or empty transaction).
            return None
        return f"{apis.api_name(api_key)} v{version}: the answer does not parse: {exc!r}"
    if pos + consumed != len(frame):
        return (f"{apis.api_name(api_key)} v{version}: {len(frame) - pos - consumed} bytes "
                "after the answer")
    return None


# ---- the senders ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Tally:
    frames: int = 0
    read: int = 0          # frames the broker read (see run_connection's accounting)
    mutated: int = 0
    pristine: int = 0
    answered: int = 0
    pristine_answered: int = 0
    closed_by_broker: int = 0
    silent_closes: int = 0
    connections: int = 0
    skipped_costly: int = 0
    split_writes: int = 0
    sentinels: int = 0
    bursts: int = 0
    kinds_sent: Counter[tuple[int, int]] = dataclasses.field(default_factory=Counter)
    families: Counter[str] = dataclasses.field(default_factory=Counter)  # frames read, by mutation
    refused: Counter[str] = dataclasses.field(default_factory=Counter)   # ... that closed the connection
    kinds_answered: Counter[tuple[int, int]] = dataclasses.field(default_factory=Counter)
    problems: list[str] = dataclasses.field(default_factory=list)

    def merge(self, other: Tally) -> None:
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if isinstance(mine, int):
                setattr(self, field.name, mine + theirs)
            elif isinstance(mine, Counter):
                mine.update(theirs)
            else:
                mine.extend(theirs[:50 - len(mine)])

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


@dataclasses.dataclass
class SenderPlan:
    bootstrap: str
    seed: int
    frames: int        # this sender's share
    deadline: float    # time.monotonic() value (system-wide on Linux)
    connections: int


# A burst of fuzzed frames that ends with a Produce (which acks=0 leaves unanswered) gets this
# request after it (ApiVersions v0: an empty body, the cheapest request there is). The
# broker answers in order, so its answer says that every frame before it was read and
# handled; a connection closed before it says one of them was refused (the first one
# without an answer).
SENTINEL_API = (apis.API_VERSIONS, 0)


class Connection:
    """One fuzzing connection: writes bursts of planned frames, reads answers, and checks
    them against what it sent while the stream is in step (until a frame-size lie)."""

    def __init__(self, tally: Tally, resolved: int) -> None:
        self.tally = tally
        # In flight: (correlation id, api key, version, pristine, frame number, sentinel);
        # a sentinel carries the number of the last frame before it.
        self.expected: deque[tuple[int, int, int, bool, int, bool]] = deque()
        self.lied = False          # a frame-size lie was sent: answers after it are noise
        self.in_step = True
        self.resolved = resolved   # the highest frame number answered or passed over
        self.progress = asyncio.Event()
        self.closed = False

    async def read(self, reader: asyncio.StreamReader) -> None:
        tally = self.tally
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                if size < 4 or size > 64 << 20:
                    tally.problem(f"an answer with frame size {size}")
                    return
                frame = await reader.readexactly(size)
                if self.in_step:
                    self.match(frame)
                self.progress.set()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            if not self.closed:
                tally.closed_by_broker += 1
        finally:
            self.closed = True
            self.progress.set()

    def match(self, frame: bytes) -> None:
        (correlation,) = struct.unpack_from(">i", frame)
        skipped = []
        while self.expected and self.expected[0][0] != correlation:
            skipped.append(self.expected.popleft())
        if not self.expected:
            self.in_step = False
            if not self.lied:
                self.tally.problem(f"an answer with correlation id {correlation}, which no "
                                   f"request in flight carries (before it: {skipped[:5]})")
            return
        _, api_key, version, pristine, number, sentinel = self.expected.popleft()
        self.resolved = number
        for _, key, v, _, _, _ in skipped:
            if key != apis.PRODUCE:
                self.tally.problem(f"{apis.api_name(key)} v{v} got no answer, yet the request "
                                   f"after it did ({apis.api_name(api_key)} v{version})")
        if sentinel:
            return
        self.tally.answered += 1
        self.tally.kinds_answered[(api_key, version)] += 1
        if pristine:
            self.tally.pristine_answered += 1
        problem = response_problem(api_key, version, frame)
        if problem is not None:
            self.tally.problem(problem)


async def run_connection(plan: SenderPlan, rng: random.Random, seeds: Sequence[FuzzSeed],
                         tally: Tally, budget: list[int]) -> None:
    host, port = plan.bootstrap.rsplit(":", 1)
    correlation = rng.randrange(1 << 20)
    number = 0  # frames planned on this sender task, numbered for the accounting
    sentinel_header = header_bytes(*SENTINEL_API)
    while budget[0] > 0 and time.monotonic() < plan.deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            tally.problem(f"could not connect to the broker: {exc!r}")
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tally.connections += 1
        conn = Connection(tally, number)
        reading = asyncio.create_task(conn.read(reader))
        try:
            # A connection lives for a random number of bursts unless the broker closes it
            # first, so both fresh and long-lived connections (state built up over many
            # requests) are fuzzed.
            bursts = rng.choice([1, 4, 30, 300])
            while bursts > 0 and budget[0] > 0 and not conn.closed and \
                    time.monotonic() < plan.deadline:
                bursts -= 1
                chunks: list[bytes] = []
                numbers: list[tuple[int, str]] = []  # frame number, mutation family
                planned_burst = []
                # A burst is either one frame of any mutation, or many frames that keep their
                # layout in one write. A refused frame closes the connection (and the broker
                # drops the answers to the frames before it in the same read), so frames likely
                # to be refused travel alone; the bursts of parseable ones are the pipelining.
                # Bursts are 15% of the writes and ~60% of the frames: a new connection costs
                # the broker as much as a dozen frames, and a third of the lone frames end
                # one, so this mix is what lets a run reach a million frames in minutes
                # (~100,000 of them refused, each ending its connection).
                keep_layout = rng.random() < 0.15
                for _ in range(min(rng.choice([4, 8, 12, 16]) if keep_layout else 1, budget[0])):
                    correlation = (correlation + 1) & 0x7FFFFFFF
                    planned = plan_frame(rng, seeds, correlation, keep_layout=keep_layout)
                    if too_costly(rng, planned):
                        tally.skipped_costly += 1
                    else:
                        planned_burst.append(planned)
                for planned in planned_burst:
                    number += 1
                    numbers.append((number, planned.family))
                    chunks.append(struct.pack(">i", planned.size) + planned.payload)
                    tally.frames += 1
                    tally.kinds_sent[(planned.api_key, planned.version)] += 1
                    if planned.pristine:
                        tally.pristine += 1
                    else:
                        tally.mutated += 1
                    if planned.size != len(planned.payload):
                        conn.lied = True
                        break  # nothing after a lie is read as sent: it ends the burst
                    if len(planned.payload) >= 8:
                        conn.expected.append((struct.unpack_from(">i", planned.payload, 4)[0],
                                              planned.api_key, planned.version, planned.pristine,
                                              number, False))
                if not numbers:
                    continue
                last = numbers[-1][0]
                if not conn.lied and planned_burst[-1].api_key == apis.PRODUCE:
                    # An acks=0 Produce is not answered: a sentinel after it says when it was read.
                    correlation = (correlation + 1) & 0x7FFFFFFF
                    sentinel = sentinel_header[:4] + struct.pack(">i", correlation) + sentinel_header[8:]
                    chunks.append(struct.pack(">i", len(sentinel)) + sentinel)
                    conn.expected.append((correlation, *SENTINEL_API, True, last, True))
                    tally.sentinels += 1
                try:
                    await write_chunks(rng, writer, conn, chunks, tally)
                except asyncio.TimeoutError:  # the broker stopped reading us: let it be
                    tally.silent_closes += 1
                    break
                # Wait for the answer to the burst's last request (all were read, since answers
                # come in order), the broker closing the connection (it refused one), or
                # silence (a request in the burst waits: a long poll, a rebalance).
                silence_deadline = time.monotonic() + (0.02 if conn.lied else SILENCE_SECONDS)
                while conn.resolved < last and not conn.closed:
                    conn.progress.clear()
                    try:
                        await asyncio.wait_for(conn.progress.wait(),
                                               max(silence_deadline - time.monotonic(), 0))
                    except asyncio.TimeoutError:
                        break
                if conn.closed and conn.resolved < last and not conn.lied:
                    # Read up to the first frame not answered, which the broker refused. This
                    # undercounts, never over: the broker drops the answers to the frames it
                    # handled in the same read before the refused one (see
                    # test_answers_before_a_refused_frame_are_sent), and a close with frames
                    # of ours unread resets the connection, which may lose answers in flight.
                    if len(numbers) == 1:
                        tally.refused[numbers[0][1]] += 1
                    numbers = [(n, f) for n, f in numbers if n <= conn.resolved + 1]
                tally.read += len(numbers)
                tally.families.update(f for _, f in numbers)
                budget[0] -= len(numbers)  # the budget is of frames the broker read
                if conn.lied:
                    break
                if not conn.closed and conn.resolved < last:
                    tally.silent_closes += 1
                    break
        except (ConnectionError, OSError):
            pass  # the broker closed it while we wrote: counted by the reader
        finally:
            conn.closed = True
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading


async def write_chunks(rng: random.Random, writer: asyncio.StreamWriter, conn: Connection,
                       chunks: list[bytes], tally: Tally) -> None:
    """Many frames in one write, or each frame cut into pieces written separately (the
    broker must reassemble frames from any chunking). asyncio.TimeoutError if the broker
    stops reading for SILENCE_SECONDS * 5."""
    if len(chunks) > 2 and rng.random() < 0.6:
        tally.bursts += 1
        writer.write(b"".join(chunks))
    else:
        for chunk in chunks:
            if conn.closed or writer.is_closing():
                return
            if len(chunk) > 2 and rng.random() < 0.15:
                tally.split_writes += 1
                cuts = sorted(rng.sample(range(1, len(chunk)), min(3, len(chunk) - 1)))
                for a, b in zip([0, *cuts], [*cuts, len(chunk)], strict=True):
                    if conn.closed or writer.is_closing():
                        return
                    writer.write(chunk[a:b])
                    await asyncio.wait_for(writer.drain(), SILENCE_SECONDS * 5)
                    if rng.random() < 0.1:
                        await asyncio.sleep(0.002)  # let the broker read the piece alone
            else:
                writer.write(chunk)
    await asyncio.wait_for(writer.drain(), SILENCE_SECONDS * 5)


def run_sender(plan: SenderPlan) -> Tally:
    """One sender: ``plan.connections`` connections fuzzing concurrently until the frame
    budget or the deadline is reached."""
    seeds = all_seeds(fuzz_capture.load_seeds())
    tally = Tally()
    budget = [plan.frames]

    async def main() -> None:
        rngs = [random.Random(plan.seed * 1000 + i) for i in range(plan.connections)]
        await asyncio.gather(*(run_connection(plan, rng, seeds, tally, budget) for rng in rngs))

    asyncio.run(main())
    return tally


def _sender_process(plan: SenderPlan, results: Any) -> None:
    try:
        results.put(run_sender(plan))
    except BaseException as exc:  # reported to the test
        tally = Tally()
        tally.problem(f"the sender failed: {exc!r}")
        results.put(tally)


def run_senders(bootstrap: str, frames: int, seconds: float, processes: int) -> Tally:
    """The senders, in this process (one) or in ``processes`` processes (each is one core
    of Python at most; the broker is another). Bounded: a process still running past the
    deadline plus a minute is killed."""
    deadline = time.monotonic() + seconds
    plans = [SenderPlan(bootstrap, SEED + i, frames // processes, deadline, CONNECTIONS_PER_SENDER)
             for i in range(processes)]
    if processes == 1:
        return run_sender(plans[0])
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_sender_process, args=(plan, results), daemon=True)
               for plan in plans]
    total = Tally()
    try:
        for worker in workers:
            worker.start()
        for _ in workers:
            try:
                total.merge(results.get(timeout=max(deadline - time.monotonic(), 0) + 60))
            except queue.Empty:
                codes = [worker.exitcode for worker in workers]
                raise AssertionError(f"a sender process did not report (exit codes {codes})") \
                    from None
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=10)
    return total


# ---- watching the broker ---------------------------------------------------------------------

def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, amount, _unit = line.split()
                values[name] = int(amount) / 1024
    return values["VmRSS:"], values["VmHWM:"]


class Watcher:
    """A thread that samples the broker's memory every RSS_SAMPLE_SECONDS and, every
    RECREATE_SECONDS, re-creates the seed topics the fuzz may have deleted (the way an
    operator would), so fuzzed requests keep reaching real partitions."""

    def __init__(self, serve: support.ServeProcess) -> None:
        self.serve = serve
        self.samples: list[tuple[float, float]] = []  # (monotonic time, RSS MB)
        self.peak_hwm = 0.0
        self.alive = True
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        next_create = 0.0
        while not self._stop.is_set():
            if self.serve.process.poll() is not None:
                self.alive = False
                return
            try:
                rss, hwm = memory_mb(self.serve.process.pid)
            except (OSError, KeyError):
                self.alive = False
                return
            self.samples.append((time.monotonic(), rss))
            self.peak_hwm = max(self.peak_hwm, hwm)
            if time.monotonic() >= next_create:
                next_create = time.monotonic() + RECREATE_SECONDS
                try:
                    create_topics(self.serve.bootstrap, SEED_TOPICS)
                except Exception as exc:  # reported at the end
                    self.errors.append(f"re-creating the seed topics: {exc!r}")
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def second_half_growth_mb(self) -> float:
        """The RSS trend over the second half of the run, as MB gained across that half: the
        second half is cut in eight slices, each summed up by its median (so a brief spike,
        such as one big request being decoded, is not taken for a trend), and a line is
        fitted through the eight. A leak of b bytes a frame shows as about b x frames / 2."""
        samples = self.samples[len(self.samples) // 2:]
        if len(samples) < 16:
            return 0.0
        size = len(samples) // 8
        slices = [samples[i * size:(i + 1) * size] for i in range(8)]
        times = [statistics.median(t for t, _ in piece) for piece in slices]
        medians = [statistics.median(r for _, r in piece) for piece in slices]
        slope, _ = statistics.linear_regression(times, medians)
        return slope * (samples[-1][0] - samples[0][0])


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """CreateTopics over a raw connection (no client library threads in the watcher);
    TOPIC_ALREADY_EXISTS is the usual answer."""
    from tests.test_broker_protocol import RawClient, request
    client = RawClient(bootstrap)
    try:
        version = 5
        response = client.call(apis.CREATE_TOPICS, version, request(
            apis.CREATE_TOPICS, version, timeout_ms=5000, validate_only=False,
            topics=[{"name": name, "num_partitions": n, "replication_factor": 1,
                     "assignments": [], "configs": []} for name, n in topics.items()]))
        for topic in response.topics:
            assert topic.error_code in (0, 36), (topic.name, topic.error_code, topic.error_message)
    finally:
        client.close()


def internal_failures(log_path: Path) -> list[str]:
    found = []
    with open(log_path, errors="replace") as log:
        for line in log:
            if INTERNAL_FAILURE.search(line):
                found.append(line.rstrip())
                if len(found) >= 20:
                    break
    return found


def served_correctly(bootstrap: str, topic: str) -> None:
    """confluent-kafka creates a topic, produces records and reads every one back."""
    admin = confluent_kafka.admin.AdminClient(support.Confluent.base_config(bootstrap))
    [future] = admin.create_topics([confluent_kafka.admin.NewTopic(topic, 2, 1)],
                                   request_timeout=support.CLIENT_TIMEOUT_S).values()
    future.result(timeout=support.CLIENT_TIMEOUT_S)
    client = support.Confluent()
    records = support.sample_records(200)
    acked = client.produce(bootstrap, topic, records)
    got = client.consume(bootstrap, topic, 2, len(records))
    support.check_round_trip(records, got, 2, acked=acked)


# ---- the tests ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeds() -> list[FuzzSeed]:
    return all_seeds(fuzz_capture.load_seeds())


def test_seeds_cover_every_advertised_api_and_version(seeds: list[FuzzSeed],
                                                     figures: Figures) -> None:
    """Every API and version the broker advertises has a seed, and every captured client
    is represented; the schema walk finds aim points in every seed that parses."""
    kinds = {(s.api_key, s.version) for s in seeds}
    missing = sorted(advertised_kinds() - kinds)
    assert not missing, f"no seed for {[(apis.api_name(k), v) for k, v in missing]}"
    clients = {s.origin for s in seeds if s.origin.startswith("client:")}
    assert clients == {f"client:{name}" for name in fuzz_capture.CLIENT_NAMES}, clients
    unaimed = [(apis.api_name(s.api_key), s.version, s.origin) for s in seeds
               if not s.spots and s.body and schema.has_schema(s.api_key, s.version)]
    assert not unaimed, f"the schema walk found nothing to aim at in {unaimed[:10]}"
    figures.peak("fuzz: APIs x versions covered", len(advertised_kinds() & kinds))
    figures.peak("fuzz: seeds from real clients", len([s for s in seeds if s.origin != "schema"]))


@pytest.mark.skipif(not FULL, reason="captures with three clients (~10 s): the full run's")
def test_stored_seeds_hold_what_the_clients_send_now(tmp_path: Path) -> None:
    """The stored capture (fuzz_seeds/clients.frames) still holds every kind of request
    (API and version) the installed clients send: after a client upgrade this fails and
    says to capture again (python -m tests.reliability.fuzz_capture)."""
    fresh, failures = fuzz_capture.capture(tmp_path)
    assert failures == [], failures
    stored = {(fuzz_capture.client_of(s), s.api_key, s.version) for s in fuzz_capture.load_seeds()}
    now = {(fuzz_capture.client_of(s), s.api_key, s.version) for s in fresh}
    new = sorted(now - stored)
    assert not new, (f"the clients now send {[(c, apis.api_name(k), v) for c, k, v in new]}, "
                     "which the stored seeds lack: run python -m tests.reliability.fuzz_capture")


def test_pristine_seeds_are_answered(tmp_path: Path, seeds: list[FuzzSeed]) -> None:
    """Each seed, unmutated, is a request the broker answers in the right layout (but a
    Produce with acks=0, which it handles without an answer): the fuzz starts from
    requests that reach the handlers, not from noise. Each seed goes on its own connection
    followed by a sentinel request, whose answer closes the exchange."""
    from logkernel.protocol.hot import decode_produce_request
    from tests.test_broker_protocol import RawClient
    sentinel_header = header_bytes(*SENTINEL_API)
    with support.ServeProcess(tmp_path / "data", tmp_path / "serve.log",
                              settings=BROKER_SETTINGS) as serve:
        create_topics(serve.bootstrap, SEED_TOPICS)
        problems = []
        for i, seed in enumerate(seeds):
            silent = seed.api_key == apis.PRODUCE and \
                decode_produce_request(memoryview(seed.body), seed.version).acks == 0
            header = seed.header[:4] + struct.pack(">i", i) + seed.header[8:]
            sentinel = sentinel_header[:4] + struct.pack(">i", -1 - i) + sentinel_header[8:]
            client = RawClient(serve.bootstrap)
            try:
                client.sock.sendall(struct.pack(">i", len(header) + len(seed.body)) + header +
                                    seed.body + struct.pack(">i", len(sentinel)) + sentinel)
                answers = [client.receive() for _ in range(1 if silent else 2)]
            except OSError as exc:  # closed, or no answer within RawClient's 10 s
                problems.append(f"{apis.api_name(seed.api_key)} v{seed.version} ({seed.origin}): "
                                f"{exc}")
                continue
            finally:
                client.close()
            correlations = [struct.unpack_from(">i", a)[0] for a in answers]
            assert correlations == ([] if silent else [i]) + [-1 - i], (seed, correlations)
            problem = None if silent else response_problem(seed.api_key, seed.version, answers[0])
            if problem:
                problems.append(f"{problem} ({seed.origin})")
        assert not problems, problems
        assert serve.terminate() == 0
        assert internal_failures(tmp_path / "serve.log") == []


def test_broker_survives_hostile_frames(tmp_path: Path, figures: Figures) -> None:
    log_path = tmp_path / "serve.log"
    with support.ServeProcess(tmp_path / "data", log_path, settings=BROKER_SETTINGS) as serve:
        create_topics(serve.bootstrap, SEED_TOPICS)
        began = time.monotonic()
        with Watcher(serve) as watcher:
            tally = run_senders(serve.bootstrap, FRAMES, FUZZ_SECONDS, SENDER_PROCESSES)
        elapsed = time.monotonic() - began
        alive = serve.process.poll() is None
        figures.add("fuzz: frames sent", tally.frames)
        figures.add("fuzz: frames read by the broker", tally.read)
        figures.add("fuzz: mutated frames sent", tally.mutated)
        figures.add("fuzz: answered", tally.answered)
        figures.add("fuzz: connections closed by the broker", tally.closed_by_broker)
        figures.add("fuzz: connections opened", tally.connections)
        figures.add("fuzz: broker crashes", 0 if alive else 1)
        figures.peak("fuzz: broker peak RSS (MB)", watcher.peak_hwm)
        figures.peak("fuzz: frames per second", tally.frames / max(elapsed, 1e-9))
        internal = internal_failures(log_path)
        figures.add("fuzz: internal errors", len(internal))
        growth = watcher.second_half_growth_mb()
        figures.peak("fuzz: broker RSS growth over the second half (MB)", max(growth, 0))
        summary = (f"{tally.frames:,} frames ({tally.mutated:,} mutated, {tally.read:,} read by the "
                   f"broker) in {elapsed:.0f} s over "
                   f"{tally.connections:,} connections; {tally.answered:,} answered, "
                   f"{tally.closed_by_broker:,} connections closed by the broker, "
                   f"{tally.silent_closes:,} closed after silence, {tally.skipped_costly:,} "
                   f"costly frames skipped; RSS peak {watcher.peak_hwm:.0f} MB, {growth:+.1f} MB "
                   f"over the second half; by mutation "
                   f"(read/refused): " + ", ".join(f"{f} {n:,}/{tally.refused[f]:,}"
                                                   for f, n in tally.families.most_common()))
        print(summary)
        assert alive, f"the broker died under fuzz: {summary}\n{serve.log_tail()}"
        assert watcher.alive
        assert internal == [], "the broker failed inside:\n" + "\n".join(internal)
        assert tally.problems == [], "\n".join(tally.problems)
        assert watcher.errors == [], watcher.errors
        # The run did what it says: enough frames, both outcomes, every kind of request.
        assert tally.read >= (1_000_000 if FULL else 5_000), summary
        assert tally.answered > tally.frames // 10 and tally.closed_by_broker > 0, summary
        kinds = advertised_kinds()
        unsent = sorted(kinds - set(tally.kinds_sent))
        assert not unsent, f"never sent: {unsent}"
        # Memory: under the ceiling, and no trend over the second half.
        assert watcher.peak_hwm < RSS_CEILING_MB, summary
        assert growth < RSS_DRIFT_MB, f"RSS grew {growth:.1f} MB over the second half: {summary}"
        # And a normal client is served.
        served_correctly(serve.bootstrap, "after-the-fuzz")
        assert serve.terminate() == 0, serve.log_tail()
    assert internal_failures(log_path) == []


# ---- the C decoders -----------------------------------------------------------------------------

# Seconds of the C fuzz target's run in the full suite (make test-asan runs it for 3 s; make
# fuzz-native for FUZZ_SECONDS, 300 by default). Built with gcc under ASan + UBSan.
C_FUZZ_SECONDS = 60


@pytest.mark.skipif(not FULL, reason="make test-asan runs the C fuzz target for 3 s; the full "
                    "run gives it a minute")
def test_c_decoders_under_the_sanitizers(tmp_path: Path, figures: Figures) -> None:
    """native/fuzz/fuzz_decoders.c (every C function that reads untrusted bytes, checked
    against the contract and against each other) under ASan + UBSan: the replayed inputs
    that once failed, then a minute of mutants. Any report or broken oracle fails it."""
    import subprocess
    root = Path(__file__).parents[2]
    binary = root / "native" / "tests" / "bin" / "fuzz_decoders-asan"
    built = subprocess.run(["make", "-s", str(binary.relative_to(root))], cwd=root,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1",
           "FUZZ_FAILURE_DIR": str(tmp_path), "TMPDIR": str(tmp_path)}
    regressions = sorted(str(p) for p in (root / "native" / "fuzz" / "regressions").iterdir())
    replay = subprocess.run([str(binary), "-q", *regressions], env=env, capture_output=True,
                            text=True, timeout=300)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    run = subprocess.run([str(binary), "-t", str(C_FUZZ_SECONDS), "-n", "1000000000"], env=env,
                         capture_output=True, text=True, timeout=C_FUZZ_SECONDS + 300)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    match = re.search(r"(\d+) inputs run", run.stdout)
    assert match, run.stdout
    inputs = int(match.group(1)) + len(regressions)
    figures.add("fuzz: C decoder inputs run", inputs)
    assert inputs > C_FUZZ_SECONDS * 100, run.stdout  # it ran, at a sane rate


# ---- what the fuzz found: regressions ---------------------------------------------------------

@pytest.fixture
def broker(tmp_path: Path) -> Iterator[logkernel.Broker]:
    config = {"socket.request.max.bytes": MAX_REQUEST_BYTES, "auto.create.topics.enable": "false"}
    with logkernel.Broker(str(tmp_path / "data"), config=config) as running:
        assert running.engine is not None
        running.engine.create_topic("t", 2)
        yield running


def test_a_boolean_byte_other_than_one_is_true(broker: logkernel.Broker) -> None:
    """Kafka reads a boolean as ``byte != 0``; kio accepts only 0 and 1, so the broker
    closed the connection of a client that wrote 2 for true (found by the fuzz:
    ``Invalid boolean value`` for Metadata's allow_auto_topic_creation)."""
    from tests.test_broker_protocol import RawClient, decode_response, request
    body = bytearray(schema.encode_entity(request(
        apis.METADATA, 12, topics=[{"name": "t"}], allow_auto_topic_creation=False,
        include_topic_authorized_operations=False)))
    # The two booleans are the last bytes before the closing tagged-field section.
    assert body[-3:] == b"\x00\x00\x00"
    body[-3] = 0x02
    decoded = schema.decode_request(apis.METADATA, 12, bytes(body))
    assert decoded.allow_auto_topic_creation is True
    client = RawClient(broker.bootstrap)
    try:
        correlation = client.send(apis.METADATA, 12, bytes(body))
        response = decode_response(apis.METADATA, 12, client.receive(), correlation)
        assert [t.name for t in response.topics] == ["t"]
        assert response.topics[0].error_code == 0
    finally:
        client.close()


def test_answers_before_a_refused_frame_are_sent(broker: logkernel.Broker) -> None:
    """Two requests in one write: a good one, then one the broker refuses by closing the
    connection (it does not parse and its response has no error field). The first was
    handled, so its answer must reach the client before the close, as Kafka sends it: a
    request that took effect (a Produce, an OffsetCommit) must not look lost. Found by the
    fuzz: the broker corked the answers of one read and dropped them when a later frame
    closed the connection (fixed in 171615c)."""
    from tests.test_broker_protocol import RawClient, request
    client = RawClient(broker.bootstrap)
    try:
        good = client.frame(apis.API_VERSIONS, 3, schema.encode_entity(request(
            apis.API_VERSIONS, 3, client_software_name="t", client_software_version="1")))
        refused = client.frame(apis.METADATA, 12, b"\xff\xff\xff")
        client.sock.sendall(good + refused)
        answer = client.receive()  # ConnectionError: closed with no answer
        assert struct.unpack_from(">i", answer)[0] == 1
        assert client.closed_by_broker()
    finally:
        client.close()


def _batch_with_records_that_do_not_parse() -> bytes:
    """A batch whose CRC is right but whose recordsCount (3) is more than its records (2):
    what a fuzzed Produce carries when the CRC is fixed after the damage."""
    batch = bytearray(logkernel.encode_batch([b"aaaa", b"bbbb"]))
    struct.pack_into(">i", batch, 57, 3)  # recordsCount
    struct.pack_into(">i", batch, 23, 2)  # lastOffsetDelta, so the header alone is consistent
    batch[17:21] = logkernel.crc32c(bytes(batch[21:])).to_bytes(4, "big")
    return bytes(batch)


def test_produce_refuses_records_that_do_not_parse(broker: logkernel.Broker) -> None:
    """Kafka walks every record of a produced batch and refuses a batch whose records do
    not parse (CORRUPT_MESSAGE / INVALID_RECORD). Found by the fuzz: the broker checked the
    CRC and the header only, so such a batch was stored, and every consumer of the
    partition then failed at its offset: one hostile producer poisoned the partition for
    all readers (fixed in 5b5f513)."""
    from tests.test_broker_protocol import RawClient, produce
    client = RawClient(broker.bootstrap)
    try:
        answer = produce(client, "t", _batch_with_records_that_do_not_parse())
    finally:
        client.close()
    code = answer.responses[0].partition_responses[0].error_code
    assert broker.engine is not None
    stored = broker.engine.end_offset("t", 0)
    assert (code, stored) in ((2, 0), (87, 0)), f"error code {code}, {stored} offsets stored"


def _header_only_batch() -> bytes:
    """A 61-byte batch that says it holds one record and holds none (CRC right)."""
    batch = bytearray(logkernel.encode_batch([b"a"]))[:61]
    struct.pack_into(">i", batch, 8, 49)  # batchLength: the header alone
    batch[17:21] = logkernel.crc32c(bytes(batch[21:])).to_bytes(4, "big")
    return bytes(batch)


def test_columns_refuse_a_batch_too_short_for_its_records() -> None:
    """Found by the C fuzz target (native/fuzz): with the columns sized for what the bytes
    can hold (none here), lk_decode_columns answered FULL, so a caller made room and called
    again, for ever. The batch cannot hold the record it declares: CORRUPT, as when the
    same batch is followed by more bytes (fixed in d0b24ad)."""
    from logkernel import _binding
    alone = _binding.decode_columns(_header_only_batch(), min_offset=0, max_records=500)
    followed = _binding.decode_columns(_header_only_batch() * 2, min_offset=0, max_records=500)
    assert followed.stop == "corrupt"
    assert alone.stop == "corrupt", f"stop {alone.stop!r} with {alone.count} rows"


def test_a_consumer_poll_returns_on_a_batch_too_short_for_its_records(tmp_path: Path) -> None:
    """The user-visible end of the two bugs above: a header-only batch that declares one
    record, once stored, made ``consumer.poll(timeout_ms=300)`` spin for ever instead of
    raising CorruptRecordError. Produce refuses such a batch now, so it is stored here the
    way older data or a damaged write would have put it there (an append that skips
    validation). Run in a child process, so that a spin cannot hold this one."""
    import subprocess
    import sys
    script = f"""
import faulthandler
import logkernel
with logkernel.open({str(tmp_path / "data")!r}) as engine:
    engine.create_topic("p", 1)
    engine.partition_log("p", 0).append({_header_only_batch()!r}, validated=True)
    consumer = engine.consumer(auto_offset_reset="earliest")
    consumer.assign([("p", 0)])
    consumer.seek(("p", 0), 0)
    faulthandler.dump_traceback_later(5, exit=True)  # a spinning poll ends the child here
    try:
        consumer.poll(timeout_ms=300)
    except logkernel.errors.CorruptRecordError:
        print("reported")
    faulthandler.cancel_dump_traceback_later()
    consumer.close(autocommit=False)
"""
    child = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate(timeout=20)
        raise AssertionError("the child did not finish within 60 s") from None
    assert child.returncode == 0, f"consumer.poll(timeout_ms=300) did not return in 5 s:\n{err}"
    assert out.strip() == "reported", (out, err)


def test_acks0_produce_behind_a_waiting_fetch(broker: logkernel.Broker,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Found by the fuzz (in a working copy of server.py, fixed before 171615c): an acks=0
    Produce, which gets no answer, arriving while a request before it on the connection
    still waits (a long-poll Fetch) must be handled in turn, without an answer, and the
    answers after it must come in order. The broker failed inside instead
    ("protocol.data_received() call failed")."""
    import logging

    from tests.test_broker_protocol import RawClient, fetch_request, request
    caplog.set_level(logging.WARNING)
    client = RawClient(broker.bootstrap)
    try:
        waiting = client.send(apis.FETCH, 12, fetch_request("t", 0, max_wait_ms=3000, min_bytes=1))
        produce_body = schema.encode_entity(request(
            apis.PRODUCE, 9, acks=0, timeout=1000, transactional_id=None,
            topic_data=[{"name": "t", "partition_data": [
                {"index": 0, "records": logkernel.encode_batch([b"wakes the fetch"])}]}]))
        client.send(apis.PRODUCE, 9, produce_body)
        after = client.send(apis.API_VERSIONS, 3, schema.encode_entity(request(
            apis.API_VERSIONS, 3, client_software_name="t", client_software_version="1")))
        answers = [struct.unpack_from(">i", client.receive())[0] for _ in range(2)]
        assert answers == [waiting, after]
    finally:
        client.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def _compression_bomb(decompressed_mib: int) -> bytes:
    """A zstd batch of one record whose value is ``decompressed_mib`` MiB of zeros: ~6 KB
    on the wire (CRC right, records valid once decompressed)."""
    import zstandard

    def varint(n: int) -> bytes:
        n = (n << 1) ^ (n >> 63)
        out = bytearray()
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    value_size = decompressed_mib << 20
    body = (b"\x00" + varint(0) + varint(0) + varint(-1) + varint(value_size) + bytes(value_size)
            + varint(0))
    section = zstandard.ZstdCompressor(level=19).compress(varint(len(body)) + body)
    header = bytearray(61)
    struct.pack_into(">qiiB", header, 0, 0, 49 + len(section), 0, 2)
    struct.pack_into(">hiqqqhii", header, 21, 4, 0, 1, 1, -1, -1, -1, 1)  # zstd, one record
    batch = bytearray(header + section)
    batch[17:21] = logkernel.crc32c(bytes(batch[21:])).to_bytes(4, "big")
    return bytes(batch)


def test_a_compression_bomb_does_not_blow_up_the_broker(tmp_path: Path) -> None:
    """One Produce of ~6 KB whose zstd batch decompresses to 200 MiB, then one just under
    the produce limit (60 MiB): the broker validates produced records inside compressed
    batches (5b5f513), and doing so took its peak RSS from ~35 MB to ~630 MB (three copies
    of up to 256 MiB; bounded to 64 MiB and one copy in 7ec0e0c). The issue bounds the
    broker's RSS at 500 MB under a thousand connections; one small request must not pass
    that on its own."""
    from tests.test_broker_protocol import RawClient, produce
    with support.ServeProcess(tmp_path / "data", tmp_path / "serve.log",
                              settings=BROKER_SETTINGS) as serve:
        create_topics(serve.bootstrap, {"bombed": 1})
        client = RawClient(serve.bootstrap)
        try:
            refused = produce(client, "bombed", _compression_bomb(200))
            taken = produce(client, "bombed", _compression_bomb(60))
        finally:
            client.close()
        _rss, peak = memory_mb(serve.process.pid)
        assert serve.terminate() == 0
    assert refused.responses[0].partition_responses[0].error_code == 10  # MESSAGE_TOO_LARGE
    assert taken.responses[0].partition_responses[0].error_code == 0
    assert peak < 500, f"one ~6 KB request took the broker's peak RSS to {peak:.0f} MB"
