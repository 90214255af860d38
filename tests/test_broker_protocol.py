"""The broker at the byte level: a raw TCP client sends hand-built frames (bodies encoded from
Kafka's schemas through kio) and checks what comes back: headers, error codes for bad
input, closed connections for unreadable frames, pipelining order, long-poll wake-ups, and
that nothing stored is damaged. The real-client suites are in test_broker_clients*.py."""

from __future__ import annotations

import io
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kio.serial import entity_reader, entity_writer

import logkernel
from logkernel.protocol import apis, schema
from logkernel.protocol.frames import FrameError, FrameReader, parse_request_header

TIMEOUT = 10.0


# ---- a raw client ----------------------------------------------------------------------

class RawClient:
    def __init__(self, bootstrap: str, *, receive_buffer: int | None = None) -> None:
        """``receive_buffer``: SO_RCVBUF, set before connecting (shrinking it on a
        connected socket makes the kernel drop segments already in flight, and TCP then
        stalls for seconds on retransmissions)."""
        host, port = bootstrap.rsplit(":", 1)
        if receive_buffer is None:
            self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect((host, int(port)))
        self.correlation = 0

    def close(self) -> None:
        self.sock.close()

    def frame(self, api_key: int, version: int, body: bytes, *, client_id: str | None = "raw",
              correlation: int | None = None) -> bytes:
        if correlation is None:
            self.correlation += 1
            correlation = self.correlation
        cid = b"\xff\xff" if client_id is None else struct.pack(">h", len(client_id)) + client_id.encode()
        header = struct.pack(">hhi", api_key, version, correlation) + cid
        if version >= apis.OFFERED[api_key].first_flexible if api_key in apis.OFFERED else False:
            header += b"\x00"
        payload = header + body
        return struct.pack(">i", len(payload)) + payload

    def send(self, api_key: int, version: int, body: bytes, **kw: Any) -> int:
        self.sock.sendall(self.frame(api_key, version, body, **kw))
        return self.correlation

    def receive(self) -> bytes:
        size = struct.unpack(">i", self._exactly(4))[0]
        return self._exactly(size)

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            out += chunk
        return out

    def closed_by_broker(self) -> bool:
        ready, _, _ = select.select([self.sock], [], [], TIMEOUT)
        if not ready:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def call(self, api_key: int, version: int, request: Any) -> Any:
        """Sends a kio request entity, returns the decoded response entity."""
        buffer = io.BytesIO()
        entity_writer(type(request))(buffer, request)
        correlation = self.send(api_key, version, buffer.getvalue())
        return decode_response(api_key, version, self.receive(), correlation)


def decode_response(api_key: int, version: int, frame: bytes, correlation: int) -> Any:
    assert struct.unpack_from(">i", frame)[0] == correlation
    flexible = version >= apis.OFFERED[api_key].first_flexible and api_key != apis.API_VERSIONS
    offset = 5 if flexible else 4
    cls = schema.response_type(api_key, version)
    entity, consumed = entity_reader(cls)(frame, offset)
    assert offset + consumed == len(frame), "trailing bytes after the response"
    return entity


def request(api_key: int, version: int, **fields: Any) -> Any:
    return schema.build(schema.request_type(api_key, version), fields)


def metadata(client: RawClient, topics: list[str], version: int = 12) -> Any:
    return client.call(apis.METADATA, version, request(
        apis.METADATA, version, topics=[{"name": t} for t in topics],
        allow_auto_topic_creation=True))


def produce(client: RawClient, topic: str, records: bytes, version: int = 9, acks: int = -1) -> Any:
    return client.call(apis.PRODUCE, version, request(
        apis.PRODUCE, version, acks=acks, timeout=5000,
        topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": records}]}]))


def fetch_request(topic: str, offset: int, *, max_wait_ms: int = 0, min_bytes: int = 1,
                  version: int = 12) -> bytes:
    entity = request(apis.FETCH, version, replica_id=-1, max_wait=max_wait_ms, min_bytes=min_bytes,
                     max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                     topics=[{"topic": topic, "partitions": [{
                         "partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
                         "last_fetched_epoch": -1, "log_start_offset": -1,
                         "partition_max_bytes": 1 << 20}]}],
                     forgotten_topics_data=[], rack_id="")
    return schema.encode_entity(entity)


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with logkernel.Broker(str(tmp_path / "data"), config={"socket.request.max.bytes": 65536,
                                                         "num.partitions": 1}) as running:
        yield running


@pytest.fixture
def client(broker: Any) -> Any:
    c = RawClient(broker.bootstrap)
    yield c
    c.close()


def still_serves(broker: Any) -> None:
    """Another connection gets a correct answer: one bad client does not stop the broker."""
    other = RawClient(broker.bootstrap)
    try:
        response = other.call(apis.API_VERSIONS, 3, request(
            apis.API_VERSIONS, 3, client_software_name="t", client_software_version="1"))
        assert response.error_code == 0
    finally:
        other.close()


def find_connection(broker: Any, client: RawClient) -> Any:
    """The broker's side of ``client``'s connection. The broker's thread changes the set of
    connections while this reads it, so take a copy, and retry if it changed meanwhile."""
    port = f":{client.sock.getsockname()[1]}"
    for _ in range(100):
        try:
            connections = list(broker.server.connections)
        except RuntimeError:  # "set changed size during iteration"
            continue
        return next(c for c in connections if c.peer.endswith(port))
    raise AssertionError("could not read the broker's connections")


# ---- frames and headers, sans I/O --------------------------------------------------------

def test_frame_reader_splits_any_chunking() -> None:
    frames = [struct.pack(">hhih", 18, 0, i, -1) + bytes(i) for i in range(20)]
    stream = b"".join(struct.pack(">i", len(f)) + f for f in frames)
    for step in (1, 3, 7, 64, len(stream)):
        reader = FrameReader(1 << 20)
        got = []
        for pos in range(0, len(stream), step):
            got += [bytes(f) for f in reader.feed(stream[pos:pos + step])]
        assert got == frames
        assert reader.buffered == 0


@pytest.mark.parametrize("size", [-1, -(2**31), 0, 9, 2**31 - 1, 1025])
def test_frame_reader_refuses_sizes_it_cannot_trust(size: int) -> None:
    with pytest.raises(FrameError):
        FrameReader(1024).feed(struct.pack(">i", size) + bytes(16))


def test_request_header_with_null_client_id_and_tagged_fields() -> None:
    # Metadata v12 is flexible: header v2, with a tagged field the broker must skip.
    frame = struct.pack(">hhih", 3, 12, 77, -1) + b"\x01\x05\x02ab" + b"BODY"
    header = parse_request_header(memoryview(frame))
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == \
        (3, 12, 77, None)
    assert bytes(memoryview(frame)[header.body_offset:]) == b"BODY"


# ---- ApiVersions ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", range(0, 5))
def test_api_versions_every_version_lists_what_is_offered(client: RawClient, version: int) -> None:
    response = client.call(apis.API_VERSIONS, version, request(
        apis.API_VERSIONS, version, client_software_name="raw", client_software_version="1"))
    assert response.error_code == 0
    listed = [(k.api_key, k.min_version, k.max_version) for k in response.api_keys]
    assert listed == apis.ADVERTISED
    assert (0, 0, 10) in listed  # Produce advertised from 0 (librdkafka needs it)


def test_api_versions_unknown_version_gets_error_35_with_our_row(client: RawClient) -> None:
    correlation = client.send(apis.API_VERSIONS, 9, b"\x00whatever")
    frame = client.receive()
    # KIP-511: answered in v0's layout, header v0.
    response = decode_response(apis.API_VERSIONS, 0, frame, correlation)
    assert response.error_code == 35
    assert (18, 0, 4) in [(k.api_key, k.min_version, k.max_version) for k in response.api_keys]


# ---- bad input -----------------------------------------------------------------------------

def test_oversized_frame_closes_that_connection_only(broker: Any, client: RawClient,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    client.sock.sendall(struct.pack(">i", 65537) + bytes(100))
    assert client.closed_by_broker()
    assert "socket.request.max.bytes" in caplog.text
    still_serves(broker)


def test_negative_frame_size_closes_the_connection(broker: Any, client: RawClient) -> None:
    client.sock.sendall(struct.pack(">i", -5) + bytes(20))
    assert client.closed_by_broker()
    still_serves(broker)


def test_unknown_api_key_closes_the_connection(broker: Any, client: RawClient,
                                               caplog: pytest.LogCaptureFixture) -> None:
    client.send(4242, 0, b"")
    assert client.closed_by_broker()
    assert "4242" in caplog.text and "raw" in caplog.text  # what, and who
    still_serves(broker)


def test_unsupported_version_gets_error_35(client: RawClient) -> None:
    # DescribeCluster v2 is beyond what we offer; its response has a top-level error code.
    correlation = client.send(apis.DESCRIBE_CLUSTER, 2, schema.encode_entity(
        request(apis.DESCRIBE_CLUSTER, 2, include_cluster_authorized_operations=False,
                endpoint_type=1, include_fenced_brokers=False)))
    frame = client.receive()
    assert struct.unpack_from(">i", frame)[0] == correlation
    cls = schema.response_type(apis.DESCRIBE_CLUSTER, 2)
    entity, _ = entity_reader(cls)(frame, 5)
    assert entity.error_code == 35


def test_garbage_body_is_refused_and_the_broker_carries_on(broker: Any, client: RawClient,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # DescribeCluster has an error field: INVALID_REQUEST comes back.
    correlation = client.send(apis.DESCRIBE_CLUSTER, 1, b"\x07")
    frame = client.receive()
    assert decode_response(apis.DESCRIBE_CLUSTER, 1, frame, correlation).error_code == 42
    # Metadata has none: the connection is closed, with a log line naming the client.
    client.send(apis.METADATA, 12, b"\xff\xff\xff")
    assert client.closed_by_broker()
    assert "Metadata v12 did not parse" in caplog.text
    still_serves(broker)


def test_bad_crc_is_corrupt_message_and_nothing_is_stored(broker: Any, client: RawClient) -> None:
    good = logkernel.encode_batch([b"one", b"two"])
    assert produce(client, "crc", good).responses[0].partition_responses[0].error_code == 0
    bad = bytearray(good)
    bad[-1] ^= 0x55
    response = produce(client, "crc", bytes(bad))
    assert response.responses[0].partition_responses[0].error_code == 2  # CORRUPT_MESSAGE
    truncated = good[:-3]
    response = produce(client, "crc", truncated)
    assert response.responses[0].partition_responses[0].error_code == 2
    assert broker.engine.end_offset("crc", 0) == 2
    records = [r.value for r in broker.engine.consumer("crc", auto_offset_reset="earliest").poll(1000)]
    assert records == [b"one", b"two"]


def test_produce_v2_is_unsupported_per_partition(client: RawClient) -> None:
    # v0-2 are advertised (librdkafka) but refused, as Kafka 4 does.
    body = struct.pack(">hi", 1, 5000) + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t" \
        + struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", 0)
    correlation = client.send(apis.PRODUCE, 2, body)
    frame = client.receive()
    assert struct.unpack_from(">i", frame)[0] == correlation
    # v2 response: [topic, [partition, error, base_offset, log_append_time]], throttle
    (count,) = struct.unpack_from(">i", frame, 4)
    assert count == 1
    (error,) = struct.unpack_from(">h", frame, 4 + 4 + 2 + 1 + 4 + 4)
    assert error == 35


def test_batch_over_max_message_bytes_is_message_too_large(broker: Any, client: RawClient) -> None:
    broker.engine.create_topic("small", 1, {"max.message.bytes": 200})
    response = produce(client, "small", logkernel.encode_batch([bytes(500)]))
    assert response.responses[0].partition_responses[0].error_code == 10
    assert broker.engine.end_offset("small", 0) == 0


def test_acks_zero_gets_no_response_but_is_stored(broker: Any, client: RawClient) -> None:
    buffer = io.BytesIO()
    entity = request(apis.PRODUCE, 9, acks=0, timeout=5000, topic_data=[
        {"name": "fire", "partition_data": [{"index": 0, "records": logkernel.encode_batch([b"x"])}]}])
    entity_writer(type(entity))(buffer, entity)
    client.send(apis.PRODUCE, 9, buffer.getvalue())
    # The next request's answer is the next frame: nothing was sent for acks=0.
    response = metadata(client, ["fire"])
    assert response.topics[0].name == "fire"
    assert broker.engine.end_offset("fire", 0) == 1


# ---- fetch ---------------------------------------------------------------------------------

def test_fetch_inside_a_batch_returns_the_whole_batch(broker: Any, client: RawClient) -> None:
    produce(client, "mid", logkernel.encode_batch([b"a", b"b", b"c", b"d"]))
    correlation = client.send(apis.FETCH, 12, fetch_request("mid", 2))
    response = decode_response(apis.FETCH, 12, client.receive(), correlation)
    part = response.responses[0].partitions[0]
    assert part.error_code == 0 and part.high_watermark == 4
    decoded = logkernel.decode_batch(part.records)
    assert decoded.base_offset == 0 and [r.value for r in decoded.records()] == [b"a", b"b", b"c", b"d"]


@pytest.mark.parametrize("version", [4, 11, 12])
def test_fetch_of_an_empty_partition_has_empty_not_null_records(client: RawClient, version: int) -> None:
    metadata(client, ["empty"])
    correlation = client.send(apis.FETCH, version, fetch_request("empty", 0, version=version))
    response = decode_response(apis.FETCH, version, client.receive(), correlation)
    assert response.responses[0].partitions[0].records == b""


def test_fetch_out_of_range(client: RawClient) -> None:
    produce(client, "range", logkernel.encode_batch([b"a"]))
    correlation = client.send(apis.FETCH, 12, fetch_request("range", 5))
    response = decode_response(apis.FETCH, 12, client.receive(), correlation)
    assert response.responses[0].partitions[0].error_code == 1


def test_waiting_fetch_is_answered_when_data_arrives(broker: Any, client: RawClient) -> None:
    metadata(client, ["wait"])
    started = time.monotonic()
    correlation = client.send(apis.FETCH, 12, fetch_request("wait", 0, max_wait_ms=8000))
    time.sleep(0.2)
    broker.engine.producer().send("wait", b"hello")
    response = decode_response(apis.FETCH, 12, client.receive(), correlation)
    waited = time.monotonic() - started
    assert [r.value for r in logkernel.decode_batch(response.responses[0].partitions[0].records)
            .records()] == [b"hello"]
    assert waited < 4.0, "the fetch should be answered on arrival, not at max_wait_ms (8 s)"


def test_waiting_fetch_times_out_empty(client: RawClient) -> None:
    metadata(client, ["quiet"])
    started = time.monotonic()
    correlation = client.send(apis.FETCH, 12, fetch_request("quiet", 0, max_wait_ms=300))
    response = decode_response(apis.FETCH, 12, client.receive(), correlation)
    assert time.monotonic() - started >= 0.25
    assert response.responses[0].partitions[0].records == b""


def test_pipelined_requests_are_answered_in_order(broker: Any, client: RawClient) -> None:
    metadata(client, ["pipe"])
    waiting = client.frame(apis.FETCH, 12, fetch_request("pipe", 0, max_wait_ms=400))
    quick = client.frame(apis.API_VERSIONS, 3, schema.encode_entity(request(
        apis.API_VERSIONS, 3, client_software_name="t", client_software_version="1")))
    client.sock.sendall(waiting + quick)
    first, second = client.receive(), client.receive()
    assert struct.unpack_from(">i", first)[0] == client.correlation - 1  # the fetch, though slower
    assert struct.unpack_from(">i", second)[0] == client.correlation


# ---- list offsets and metadata ---------------------------------------------------------------

def test_list_offsets_earliest_latest_time_and_max_timestamp(broker: Any, client: RawClient) -> None:
    producer = broker.engine.producer()
    base = 1_700_000_000_000
    for i, ts in enumerate([base + 10, base + 50, base + 20]):
        producer.send("times", b"v%d" % i, timestamp_ms=ts)
    asked = {-2: (0, -1), -1: (3, -1), base + 15: (1, base + 50), -3: (1, base + 50),
             base + 99: (-1, -1)}
    for version in (1, 4, 7):
        response = client.call(apis.LIST_OFFSETS, version, request(
            apis.LIST_OFFSETS, version, replica_id=-1, topics=[{"name": "times", "partitions": [
                {"partition_index": 0, "timestamp": t, "current_leader_epoch": -1}
                for t in asked if t != -3 or version >= 7]}]))
        got = {t: (p.offset, p.timestamp) for t, p in zip(
            [t for t in asked if t != -3 or version >= 7], response.topics[0].partitions, strict=True)}
        for t, expected in got.items():
            assert expected == asked[t], (version, t)


def test_metadata_has_topic_ids_and_auto_creates(broker: Any, client: RawClient) -> None:
    response = metadata(client, ["auto-1"])
    topic = response.topics[0]
    assert topic.error_code == 0 and topic.topic_id != uuid.UUID(int=0)
    assert topic.partitions[0].leader_id == 0
    assert response.cluster_id == broker.engine.cluster_id
    assert "auto-1" in broker.engine.topics()
    bad = metadata(client, ["no/slashes"])
    assert bad.topics[0].error_code == 17


def test_metadata_without_auto_create(tmp_path: Path) -> None:
    with logkernel.Broker(str(tmp_path / "d"), config={"auto.create.topics.enable": "false"}) as b:
        c = RawClient(b.bootstrap)
        try:
            assert metadata(c, ["nope"]).topics[0].error_code == 3
            assert "nope" not in b.engine.topics()
        finally:
            c.close()


# ---- the command -----------------------------------------------------------------------------

def _serve(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "logkernel", "serve", "--data-dir", str(tmp_path / "data"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serve_prints_ready_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    process = _serve(tmp_path, "--listen", "127.0.0.1:0", "--set", "num.partitions=3")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("logkernel ready bootstrap=127.0.0.1:"), line
        bootstrap = line.split()[2].split("=", 1)[1]
        assert line.split()[3] == f"data_dir={tmp_path / 'data'}"
        client = RawClient(bootstrap)
        assert len(metadata(client, ["three"]).topics[0].partitions) == 3
        client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert (tmp_path / "data" / ".clean-shutdown").exists()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)  # reaps it and closes the pipes


@pytest.mark.parametrize("setting, message", [
    ("no.such.key=1", "unknown broker config 'no.such.key'"),
    ("num.partitions=zero", "invalid value 'zero' for config 'num.partitions'"),
    ("novalue", "--set takes key=value"),
])
def test_serve_refuses_bad_settings_at_start(tmp_path: Path, setting: str, message: str) -> None:
    process = _serve(tmp_path, "--listen", "127.0.0.1:0", "--set", setting)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert message in err


def test_serve_refuses_a_locked_data_dir(tmp_path: Path) -> None:
    with logkernel.open(str(tmp_path / "data")):
        process = _serve(tmp_path, "--listen", "127.0.0.1:0")
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"process {os.getpid()}" in err


def test_acks_all_with_flush_messages_one_answers_after_fsync(broker: Any, client: RawClient) -> None:
    broker.engine.create_topic("durable", 1, {"flush.messages": 1})
    partition_log = broker.engine.partition_log("durable", 0)
    for i in range(5):
        response = produce(client, "durable", logkernel.encode_batch([b"r%d" % i]))
        assert response.responses[0].partition_responses[0].error_code == 0
        # The fsync ran on a worker thread; the answer came only after it.
        assert partition_log.recovery_point == i + 1


@pytest.mark.parametrize("version", range(0, 7))
def test_find_coordinator_names_this_broker_for_groups(broker: Any, client: RawClient,
                                                       version: int) -> None:
    fields: dict[str, Any] = {"key": "g", "key_type": 0, "coordinator_keys": ["g", "h"]}
    response = client.call(apis.FIND_COORDINATOR, version, request(apis.FIND_COORDINATOR, version,
                                                                   **fields))
    answers = response.coordinators if version >= 4 else [response]
    assert len(answers) == (2 if version >= 4 else 1)
    host, port = broker.bootstrap.rsplit(":", 1)
    for answer in answers:
        assert (answer.error_code, answer.node_id, answer.host, answer.port) == (0, 0, host, int(port))
    if version >= 1:  # transactional ids: this broker too
        fields["key_type"] = 1
        response = client.call(apis.FIND_COORDINATOR, version, request(
            apis.FIND_COORDINATOR, version, **fields))
        answer = response.coordinators[0] if version >= 4 else response
        assert (answer.error_code, answer.node_id, answer.port) == (0, 0, int(port))
    if version >= 3:  # share groups (key type 2) have none: a clear, final refusal
        fields["key_type"] = 2
        response = client.call(apis.FIND_COORDINATOR, version, request(
            apis.FIND_COORDINATOR, version, **fields))
        answer = response.coordinators[0] if version >= 4 else response
        assert answer.error_code == 42 and "share-group" in answer.error_message


def test_a_client_that_does_not_read_cannot_grow_the_brokers_buffers(broker: Any) -> None:
    """Backpressure: once responses back up, the broker stops reading that connection, so
    what it holds stays bounded however much the client sends."""
    greedy = RawClient(broker.bootstrap, receive_buffer=4096)
    try:
        _fill_until_paused(broker, greedy)
    finally:
        greedy.close()


def _fill_until_paused(broker: Any, greedy: RawClient) -> None:
    metadata_request = schema.encode_entity(request(apis.METADATA, 12, topics=None,
                                                    allow_auto_topic_creation=False))
    chunk = b"".join(greedy.frame(apis.METADATA, 12, metadata_request) for _ in range(20_000))
    still_serves(broker)  # by now the broker has accepted the greedy connection too
    connection = find_connection(broker, greedy)
    greedy.sock.setblocking(False)
    deadline = time.monotonic() + 20
    # Keep sending (the kernel's socket buffers absorb megabytes first) until the broker
    # stops reading this connection.
    while connection.transport.is_reading() and time.monotonic() < deadline:
        try:
            greedy.sock.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
    assert not connection.transport.is_reading(), "the broker kept reading"
    # At most one read's worth of requests (asyncio reads 256 KiB at a time) is answered
    # after the pause: a few MiB at most, however much was sent.
    assert connection.transport.get_write_buffer_size() < 4 << 20
    assert connection.reader.buffered <= 65536 + 4
    still_serves(broker)


def test_idle_connections_are_closed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="logkernel.broker")
    with logkernel.Broker(str(tmp_path / "d"), config={"connections.max.idle.ms": 200}) as b:
        idle = RawClient(b.bootstrap)
        started = time.monotonic()
        assert idle.closed_by_broker()
        assert time.monotonic() - started >= 0.15
        assert "connections.max.idle.ms=200" in caplog.text
        idle.close()
        still_serves(b)


def test_a_bug_in_a_handler_is_logged_and_answered(broker: Any, client: RawClient,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_args: Any) -> Any:
        raise RuntimeError("injected")

    # A response with an error field carries UNKNOWN_SERVER_ERROR ...
    broker.server.handlers = {**broker.server.handlers, apis.DESCRIBE_CLUSTER: broken,
                              apis.METADATA: broken}
    correlation = client.send(apis.DESCRIBE_CLUSTER, 1, schema.encode_entity(request(
        apis.DESCRIBE_CLUSTER, 1, include_cluster_authorized_operations=False, endpoint_type=1)))
    assert decode_response(apis.DESCRIBE_CLUSTER, 1, client.receive(), correlation).error_code == -1
    assert "injected" in caplog.text
    # ... one without closes the connection rather than leave the client waiting.
    client.send(apis.METADATA, 12, schema.encode_entity(request(apis.METADATA, 12, topics=None)))
    assert client.closed_by_broker()


def test_metadata_by_unknown_topic_id_has_a_null_name(broker: Any, client: RawClient) -> None:
    known = metadata(client, ["by-id"]).topics[0].topic_id
    response = client.call(apis.METADATA, 12, request(
        apis.METADATA, 12, topics=[{"name": None, "topic_id": known},
                                   {"name": None, "topic_id": uuid.uuid4()}],
        allow_auto_topic_creation=False))
    found, unknown = response.topics
    assert (found.error_code, found.name, found.topic_id) == (0, "by-id", known)
    assert (unknown.error_code, unknown.name) == (100, None)


@pytest.mark.parametrize("topic_codec, stored", [("zstd", 4), ("uncompressed", 0), ("producer", 1)])
def test_topic_compression_type_recompresses_what_clients_send(
        broker: Any, client: RawClient, topic_codec: str, stored: int) -> None:
    broker.engine.create_topic("squeeze", 1, {"compression.type": topic_codec})
    sent = logkernel.encode_batch([b"v" * 300, None, b"w"], keys=[b"k", None, b"k2"],
                                  headers=[[("h", b"1")], None, None], timestamps=[5, 9, 7],
                                  compression_type="gzip", producer_id=11, producer_epoch=2,
                                  base_sequence=40)
    assert produce(client, "squeeze", sent).responses[0].partition_responses[0].error_code == 0
    correlation = client.send(apis.FETCH, 12, fetch_request("squeeze", 0))
    records = decode_response(apis.FETCH, 12, client.receive(), correlation) \
        .responses[0].partitions[0].records
    (batch,) = logkernel.iter_batches(records)
    original = logkernel.decode_batch(sent)
    assert batch.header.compression == stored
    assert (batch.header.producer_id, batch.header.producer_epoch, batch.header.base_sequence,
            batch.header.max_timestamp) == (11, 2, 40, 9)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in batch.records()] == \
        [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in original.records()]


def test_hostile_counts_and_nulls_never_reach_the_decoder(tmp_path: Path) -> None:
    """Found by fuzzing: kio's native decoder sized an array from a hostile count and the
    failed allocation aborted the process. Run as a separate process, so an abort would
    show as a dead broker rather than a dead test run."""
    process = _serve(tmp_path, "--listen", "127.0.0.1:0")
    try:
        assert process.stdout is not None
        bootstrap = process.stdout.readline().split()[2].split("=", 1)[1]
        client = RawClient(bootstrap)
        # FindCoordinator v6 (the fuzzer's case): key type 0, then a count of ~3.5e9 keys.
        client.send(apis.FIND_COORDINATOR, 6, bytes.fromhex("00b2ffd79a675e"))
        assert client.closed_by_broker()  # no error field in v6: closed, with a log line
        client.close()
        client = RawClient(bootstrap)
        # Fetch v12 (flexible): replica_id .. session_epoch, then a topic count of ~2^30.
        head = struct.pack(">iiiiibii", -1, 500, 1, 1 << 20, 0, 0, 0, -1)
        correlation = client.send(apis.FETCH, 12, head + b"\xb3\xa6\xcc\x99\x04" + bytes(8))
        assert decode_response(apis.FETCH, 12, client.receive(), correlation).error_code == 42
        # ListOffsets v7 with a null topics array (not nullable): no error field, so closed.
        client.send(apis.LIST_OFFSETS, 7, struct.pack(">ib", -1, 0) + b"\x00\x00")
        assert client.closed_by_broker()
        client.close()
        assert process.poll() is None, "the broker died"
        other = RawClient(bootstrap)
        assert metadata(other, ["alive"]).topics[0].error_code == 0
        other.close()
    finally:
        process.kill()
        process.communicate(timeout=10)


def test_serve_lifts_the_open_files_limit(tmp_path: Path) -> None:
    # Started with a low soft limit (and a higher hard one), the broker raises it to the hard.
    import resource
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to lift")
    process = subprocess.Popen(
        ["bash", "-c", f"ulimit -S -n 256 && exec {sys.executable} -m logkernel serve "
                       f"--data-dir {tmp_path / 'data'} --listen 127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("logkernel ready")
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert int(line.split()[3]) > 256, line
    finally:
        process.kill()
        process.communicate(timeout=10)
