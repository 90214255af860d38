"""The broker's network side: listener, connections, request dispatch, shutdown.

One asyncio event loop runs the listener and every connection. A connection reads frames
(``protocol.frames.FrameReader``), reads each request's header and hands the body to the
handler registered for its API key (``handlers``). A handler returns the response body as
a list of buffers, ``None`` for no response (Produce with acks=0), or an awaitable of
those (a Fetch waiting for data). Responses go out in request order whatever order the
handlers finish in: Kafka clients match them by correlation id but librdkafka and
kafka-python expect them in order, as Kafka sends them.

Memory per connection is bounded. Frames are handled one at a time, and handling stops
(and so does reading) while the connection is backed up: ``MAX_IN_FLIGHT`` requests
pending, ``MAX_QUEUED_BYTES`` of answers waiting behind an unfinished request, or the
socket's send buffer above asyncio's high-water mark (a client that does not read its
responses). The frames of a read not yet handled wait in ``unhandled`` (at most one read,
256 KiB). A Fetch, whose answer can be 55 MiB, also waits (deferred, its place in the
answers kept) while another fetch of the connection waits for data. So a client that
pipelines a thousand 50 MiB fetches, or a thousand long polls, and never reads makes the
broker hold about one answer, not a thousand.

Idle connections (``connections.max.idle.ms``, Kafka's) are closed. What counts as
activity is a complete request frame, a response written, or the client taking response
bytes (the broker's buffer and the kernel's send queue shrinking: a consumer still
reading a big fetch). Bytes of an unfinished frame do not, so a client that trickles a
frame a byte at a time (slowloris), or sends half a frame and stalls, is closed like one
that sends nothing: a frame must arrive whole within connections.max.idle.ms of the
connection's last activity (10 minutes by default: a 100 MiB request at 170 KiB/s). A
connection with requests pending (a fetch waiting for data, a produce waiting for its
fsync) is not idle. An idle connection is aborted, not closed: a client that stopped
reading would never take what is still buffered for it, and a close waits for that.

Who is at fault decides what happens to a bad request (STYLE.md rule 6): an unreadable
frame size closes the connection (the stream cannot be re-synchronised); a body that does
not parse, or an API or version we do not serve, is answered with Kafka's error code where
the message has a place for one, else the connection is closed; either way one log line
names the client, the address and the reason, and every other connection carries on. A
failure inside a handler is our bug: logged with its traceback, the client gets
UNKNOWN_SERVER_ERROR where possible.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import functools
import logging
import struct
import termios
import time
from collections.abc import Awaitable, Callable
from typing import Any

from logkernel.protocol import error_codes, schema
from logkernel.protocol.apis import API_VERSIONS, FETCH, OFFERED, api_name
from logkernel.protocol.frames import (
    FrameError,
    FrameReader,
    RequestHeader,
    frame_size,
    parse_request_header,
    response_header,
)
from logkernel.protocol.hot import encode_api_versions_response
from logkernel.protocol.primitives import MalformedMessage

log = logging.getLogger("logkernel.broker")

Body = list[Any]  # buffers (bytes, bytearray, memoryview) whose concatenation is the body
Reply = Body | None | Awaitable[Body | None]
Handler = Callable[[Any, RequestHeader, memoryview], Reply]

# Requests one connection may have pending before it stops reading. Kafka reads one
# request per connection at a time; clients pipeline up to 5 (librdkafka's and the Java
# client's max.in.flight default), so 64 never throttles a well-behaved client while
# capping what one connection can make the broker hold.
MAX_IN_FLIGHT = 64
# Fetches one connection may have waiting for data; a later Fetch is deferred until that
# one is answered (requests of other kinds go on meanwhile). A waiting fetch answers with
# up to fetch.max.bytes (55 MiB) read at the moment it is answered, so 64 of them waking
# together (a client that pipelines long polls) would hold 64 such answers at once; with
# one, a connection holds one. Every client we know keeps one fetch per connection in
# flight, and a deferred fetch's answer loses no time: it goes out after the earlier
# fetch's anyway (answers keep request order).
MAX_WAITING_FETCHES = 1
# Bytes of answers that may wait in a connection's queue behind an earlier, unfinished
# request (a JoinGroup waiting for a rebalance, a produce waiting for its fsync) before
# the connection takes no more work: 1 MiB of small answers, or one fetch's. Without it,
# 63 fetches pipelined behind a slow request would each hold up to 55 MiB.
MAX_QUEUED_BYTES = 1 << 20
# Response pieces below this size are joined before writing (one send for a response's
# headers); bigger ones, record data, go to the socket without another copy. 16 KiB: a
# join of that much costs about what one extra send call does.
COALESCE_BYTES = 16 * 1024
# Small responses held back to go out in one write (``Connection.corked``) are written
# once they reach this much, so the transport sees the backlog and pauses the connection
# when the client is not reading. Without a cap, one 256 KiB read of tiny requests with
# 16 KiB answers could cork 100+ MiB. 256 KiB, asyncio's read size, keeps one write per
# read for ordinary pipelining. At 64 KiB, test_broker_protocol's client that pipelines
# Metadata requests without reading (its receive buffer shrunk below one loopback
# segment after connecting) stalled in TCP in 5 runs of 30, none of 30 at 256 KiB: the
# smaller writes all fitted the kernel's send buffer, so the connection never paused,
# while the client dropped the segments that carried the acknowledgements it needed.
CORK_BYTES = 256 * 1024
# The ioctl that reads how many bytes a socket's kernel send queue holds, where there is one.
_SEND_QUEUE_IOCTL: int | None = getattr(termios, "TIOCOUTQ", None)


def body_size(body: Body | None) -> int:
    return 0 if body is None else sum(len(piece) for piece in body)


def _settle(placeholder: asyncio.Future[Any], future: asyncio.Future[Any]) -> None:
    """Passes a deferred fetch's outcome to the future that holds its place."""
    if placeholder.done():
        return
    if future.cancelled():
        placeholder.cancel()
    elif future.exception() is not None:
        placeholder.set_exception(future.exception())  # type: ignore[arg-type]
    else:
        placeholder.set_result(future.result())


def _cancel_with(future: asyncio.Future[Any], placeholder: asyncio.Future[Any]) -> None:
    """A deferred fetch's place was given up (the connection went): so is the fetch."""
    if placeholder.cancelled():
        future.cancel()


class Connection(asyncio.Protocol):
    """One client connection. Lives on the event loop thread only."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.reader = FrameReader(server.config["socket.request.max.bytes"])
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.client_id: str | None = None
        # Requests answered or being answered, in request order: [header, reply, done,
        # bytes counted in queued_bytes (-1 once sent)]; reply is a body (done) or a
        # future of one.
        self.pending: collections.deque[list[Any]] = collections.deque()
        self.queued_bytes = 0  # bodies in pending that are ready but not yet sent
        # Frames read but not handled yet: the connection backed up partway through a read.
        self.unhandled: collections.deque[memoryview] = collections.deque()
        # Fetches whose turn has not come (see fetch_may_run): header, body, and the
        # future holding their place in pending.
        self.deferred: collections.deque[tuple[RequestHeader, memoryview, Any]] = \
            collections.deque()
        self.waiting_fetches = 0  # fetches parked until data comes or max_wait_ms passes
        self.paused_for_backlog = False  # reading paused (by _update_reading)
        self.paused_for_writes = False   # the transport's send buffer is above high water
        self.last_activity = time.monotonic()
        self.unsent_at_idle_check = 0  # unsent_bytes() at the last idle check
        self.closed = False
        # While frames are handled: their small responses, written as one (up to CORK_BYTES).
        self.corked: list[bytes] | None = None
        self.corked_bytes = 0

    # ---- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for entry in self.pending:
            reply = entry[1]
            if isinstance(reply, asyncio.Future) and not reply.done():
                reply.cancel()  # a deferred fetch's placeholder cancels its fetch too
        self.pending.clear()
        self.queued_bytes = 0
        self.unhandled.clear()
        self.deferred.clear()

    def pause_writing(self) -> None:
        self.paused_for_writes = True
        self._update_reading()

    def resume_writing(self) -> None:
        # The client drained its responses below the low-water mark: it is alive and
        # reading, even if it sent nothing new (a consumer working through a big fetch).
        self.paused_for_writes = False
        self.last_activity = time.monotonic()
        self.handle_unhandled()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FrameError as exc:
            self.fail(f"unreadable frame: {exc}")
            return
        if frames:  # part of a frame is not activity (see the module docstring)
            self.last_activity = time.monotonic()
            self.unhandled.extend(frames)
        self.handle_unhandled()

    # ---- requests ------------------------------------------------------------------

    def backed_up(self) -> bool:
        """True while this connection must not take on more work: too many requests
        pending, answers queued behind an unfinished one, or responses the client has
        not read."""
        return (self.paused_for_writes or len(self.pending) >= MAX_IN_FLIGHT
                or self.queued_bytes >= MAX_QUEUED_BYTES)

    def fetch_may_run(self) -> bool:
        """A Fetch is handled only when its answer (up to fetch.max.bytes, read when it is
        answered) would not join others held in memory: no other fetch waiting for data,
        nothing big queued, the client reading."""
        return (self.waiting_fetches < MAX_WAITING_FETCHES and not self.paused_for_writes
                and self.queued_bytes < MAX_QUEUED_BYTES)

    def handle_unhandled(self) -> None:
        """Handles the fetches deferred so far, then the frames read so far, in order,
        until none is left or the connection backs up; then reading is paused or resumed
        to match. Called after each read and whenever something that backs a connection
        up clears."""
        # Responses to the frames of one read go out in one write: a pipelining client
        # (64 small OffsetCommits in flight) would otherwise cost a send call per answer.
        self.corked = []
        try:
            self._run_deferred_fetches()
            while self.unhandled and not self.closed and not self.backed_up():
                self.handle_frame(self.unhandled.popleft())
        finally:
            self._uncork()
            self.corked = None
        self._update_reading()

    def handle_frame(self, frame: memoryview) -> None:
        try:
            header = parse_request_header(frame)
        except MalformedMessage as exc:
            self.fail(f"unreadable request header: {exc}")
            return
        self.client_id = header.client_id
        body = frame[header.body_offset:]
        api = OFFERED.get(header.api_key)
        reply: Reply
        if api is None or not api.serves(header.api_version):
            reply = self.unsupported(header, body)
        elif header.api_key == FETCH and (self.deferred or not self.fetch_may_run()):
            # Its place in the answers is kept; it runs when fetch_may_run() (requests
            # behind it go on meanwhile, so a client is never stuck behind a long poll).
            assert self.server.loop is not None
            placeholder: asyncio.Future[Body | None] = self.server.loop.create_future()
            self.deferred.append((header, body, placeholder))
            reply = placeholder
        else:
            reply = self.call_handler(header, body)
        if self.closed:
            return
        if isinstance(reply, asyncio.Future):
            entry = [header, reply, False, 0]
            self.pending.append(entry)
            reply.add_done_callback(functools.partial(self._count_queued, entry))
            reply.add_done_callback(lambda _f: self._send_ready())
            return
        if reply is None:
            return  # acks=0: handled, and no response to keep a place for
        assert isinstance(reply, list)
        if not self.pending:
            self.send(header, reply)
        else:
            size = body_size(reply)
            self.queued_bytes += size
            self.pending.append([header, reply, True, size])

    def call_handler(self, header: RequestHeader, body: memoryview) -> Reply:
        """Runs the handler of an offered API: its reply (a future if it waits), an error
        reply, or None with the connection closed."""
        api = OFFERED[header.api_key]
        handler = self.server.handlers[header.api_key]
        self.server.current_peer = self.peer  # handlers run one at a time on the loop
        try:
            reply = handler(self.server, header, body)
        except MalformedMessage as exc:
            return self.malformed(header, body, exc)
        except Exception:
            log.exception("%s v%d from %s (%s) failed inside the broker; answering "
                          "UNKNOWN_SERVER_ERROR", api.name, header.api_version,
                          self.client_id, self.peer)
            reply = self.error_reply(header, error_codes.UNKNOWN_SERVER_ERROR,
                                     "the broker failed on this request; see its log")
            if reply is None:  # no field for the error: the client must not wait forever
                self.fail(f"{api.name} failed inside the broker and its response has no "
                          "error field")
            return reply
        if reply is not None and not isinstance(reply, list):
            reply = asyncio.ensure_future(reply)
            if header.api_key == FETCH:
                self.waiting_fetches += 1
                reply.add_done_callback(self._fetch_answered)
        return reply

    def _run_deferred_fetches(self) -> None:
        while self.deferred and not self.closed and self.fetch_may_run():
            header, body, placeholder = self.deferred.popleft()
            if placeholder.done():  # cancelled: the connection went
                continue
            reply = self.call_handler(header, body)
            if self.closed:
                return
            if isinstance(reply, asyncio.Future):
                reply.add_done_callback(functools.partial(_settle, placeholder))
                placeholder.add_done_callback(functools.partial(_cancel_with, reply))
            else:
                placeholder.set_result(reply)

    def _fetch_answered(self, _future: Any) -> None:
        self.waiting_fetches -= 1

    def _count_queued(self, entry: list[Any], reply: asyncio.Future[Any]) -> None:
        """A pending reply is ready: its size counts as queued until it is sent (unless
        it went out already, sent by an earlier answer's callback before this one ran)."""
        if entry[3] < 0:
            return
        if not reply.cancelled() and reply.exception() is None and reply.result() is not None:
            entry[3] = body_size(reply.result())
            self.queued_bytes += entry[3]

    def _send_ready(self) -> None:
        while self.pending and not self.closed:
            entry = self.pending[0]
            header, reply, done, _ = entry
            if not done:
                if not reply.done():
                    break
                if reply.cancelled():
                    self.pending.popleft()
                    continue
                exc = reply.exception()
                if exc is not None:
                    log.error("%s v%d from %s (%s) failed inside the broker",
                              api_name(header.api_key), header.api_version, self.client_id,
                              self.peer, exc_info=exc)
                    reply_body = self.error_reply(header, error_codes.UNKNOWN_SERVER_ERROR,
                                                  "the broker failed on this request")
                    if reply_body is None:
                        self.fail(f"{api_name(header.api_key)} failed inside the broker and "
                                  "its response has no error field")
                        return
                else:
                    reply_body = reply.result()
            else:
                reply_body = reply
            self.pending.popleft()
            self.queued_bytes -= entry[3]
            entry[3] = -1  # sent: _count_queued must not count it any more
            if reply_body is not None:
                self.send(header, reply_body)
        self.handle_unhandled()  # what waited behind these answers may go on now

    def send(self, header: RequestHeader, body: Body) -> None:
        """Writes one response. Small pieces are joined; big ones (record data) are handed
        to the transport as they are: Python 3.11's ``writelines`` would join the whole
        response into one new bytes, a second copy of every fetched byte into fresh pages
        (which cost 2-6 us per 4 KiB on first touch here)."""
        if self.closed or self.transport is None:
            return
        self.last_activity = time.monotonic()
        head = response_header(header.correlation_id, header.api_key, header.flexible)
        size = len(head)
        for piece in body:
            size += len(piece)
        small: list[Any] = [frame_size(size), head]
        write = self.transport.write
        corked = self.corked
        if corked is not None:
            if size < COALESCE_BYTES:
                corked.append(b"".join(small + body))
                self.corked_bytes += size + 4
                if self.corked_bytes >= CORK_BYTES:
                    self._uncork()  # the transport sees it now, and may back us up
                return
            self._uncork()  # keep the order: what is corked goes first
        for piece in body:
            if len(piece) < COALESCE_BYTES:
                small.append(piece)
                continue
            write(b"".join(small))
            small.clear()
            write(piece)
        if small:
            write(b"".join(small))

    def _uncork(self) -> None:
        corked = self.corked
        if corked:
            if not self.closed and self.transport is not None:
                self.transport.write(b"".join(corked))
            corked.clear()
        self.corked_bytes = 0

    def idle_for(self, now: float) -> float:
        """Seconds since this connection's last activity; 0 while requests are pending.
        Response bytes having left since the last look count as activity: the client is
        reading (asyncio tells of write progress only through pause/resume, and nothing
        of what the kernel still holds). One ioctl: the idle check's cost per connection."""
        if self.pending and not self.closed:
            return 0.0
        unsent = self.unsent_bytes()
        if unsent < self.unsent_at_idle_check:
            self.last_activity = now
        self.unsent_at_idle_check = unsent
        return now - self.last_activity

    def unsent_bytes(self) -> int:
        """Response bytes the client has not taken: asyncio's buffer, plus the kernel's
        send queue where the platform can tell (Linux's SIOCOUTQ, alias TIOCOUTQ)."""
        transport = self.transport
        if transport is None:
            return 0
        unsent = transport.get_write_buffer_size()
        sock = transport.get_extra_info("socket")
        if _SEND_QUEUE_IOCTL is not None and sock is not None:
            with contextlib.suppress(OSError, ValueError):  # closed meanwhile; no support
                queued = fcntl.ioctl(sock.fileno(), _SEND_QUEUE_IOCTL, b"\0\0\0\0")
                unsent += struct.unpack("i", queued)[0]
        return unsent

    def _update_reading(self) -> None:
        """Reads only while every frame read so far has been handled and the connection
        is not backed up: what is not read stays in the kernel's socket buffers, which
        fill, and TCP then stops the client's sends."""
        if self.transport is None or self.closed:
            return
        if self.unhandled or self.backed_up():
            if not self.paused_for_backlog:
                self.paused_for_backlog = True
                self.transport.pause_reading()
        elif self.paused_for_backlog:
            self.paused_for_backlog = False
            self.transport.resume_reading()

    # ---- bad requests --------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Closes the connection over a stream-level problem, with one log line. Answers
        to the requests before the bad one go out first (a close still sends what was
        written): those requests took effect, and must not look lost."""
        log.warning("closing connection from %s (client %r): %s", self.peer, self.client_id, reason)
        self._uncork()
        self.close()

    def close(self, abort: bool = False) -> None:
        """Closes the connection; what is already written still goes out first, unless
        ``abort`` (the client is not reading: it would never go, and the transport, with
        its buffer, would stay until the client went away)."""
        if self.transport is None:
            return
        if abort:
            self.closed = True
            self.transport.abort()
        elif not self.closed:
            self.closed = True
            self.transport.close()

    def unsupported(self, header: RequestHeader, body: memoryview) -> Body | None:
        api = OFFERED.get(header.api_key)
        if header.api_key == API_VERSIONS:
            # KIP-511: an ApiVersions version we do not know is answered in v0's layout
            # with our table, so the client can retry with a version we have.
            log.info("ApiVersions v%d from %s (%s): answering UNSUPPORTED_VERSION with our "
                     "versions", header.api_version, self.client_id, self.peer)
            header.flexible = False
            return [encode_api_versions_response(0, error_codes.UNSUPPORTED_VERSION,
                                                 self.server.api_versions)]
        if api is None:
            self.fail(f"api key {header.api_key} (v{header.api_version}) is not offered by this "
                      "broker (see ApiVersions for what is)")
            return None
        reason = (f"{api.name} v{header.api_version} is not supported: this broker serves "
                  f"v{max(api.min_version, api.served_from)}-{api.max_version}")
        log.warning("%s from %s (%s)", reason, self.client_id, self.peer)
        reply = self.error_reply(header, error_codes.UNSUPPORTED_VERSION, reason, body)
        if reply is None:
            self.fail(reason + ", and the response has no field for the error")
        return reply

    def malformed(self, header: RequestHeader, body: memoryview, exc: Exception) -> Body | None:
        reason = (f"{api_name(header.api_key)} v{header.api_version} did not parse: {exc}")
        log.warning("%s (client %r, %s)", reason, self.client_id, self.peer)
        reply = self.error_reply(header, error_codes.INVALID_REQUEST, reason, body)
        if reply is None:
            self.fail(reason)
        return reply

    def error_reply(self, header: RequestHeader, code: int, message: str,
                    body: memoryview | None = None) -> Body | None:
        """A response carrying ``code``: the handler's own error answer if it has one,
        else a response whose top-level error_code is set, else None."""
        error_answer = self.server.error_answers.get(header.api_key)
        if error_answer is not None and body is not None:
            try:
                return error_answer(self.server, header, body, code, message)
            except Exception:
                pass
        try:
            cls = schema.response_type(header.api_key, header.api_version)
        except Exception:
            return None
        fields = getattr(cls, "__dataclass_fields__", {})
        if "error_code" not in fields:
            return None
        data = {"error_code": code, "error_message": message}
        return [schema.encode_response(header.api_key, header.api_version, data)]


class BrokerServer:
    """The listener and what every handler needs: the engine, the settings, the advertised
    address, and the registry of fetches waiting for data. Event-loop thread only, except
    ``_on_append`` (any appending thread)."""

    def __init__(self, engine: Any, config: Any, handlers: dict[int, Handler],
                 error_answers: dict[int, Callable[..., Body]],
                 api_versions: list[tuple[int, int, int]]) -> None:
        self.engine = engine
        self.config = config
        self.node_id: int = config["node.id"]
        self.handlers = handlers
        self.error_answers = error_answers
        self.api_versions = api_versions
        self.connections: set[Connection] = set()
        self.host = ""
        self.port = 0
        self.advertised_host = ""
        self.advertised_port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.current_peer = ""  # "host:port" of the request a handler is running for
        self.cache: dict[Any, Any] = {}  # encoded responses, valid for one engine generation
        self.cache_generation = -1
        self._server: asyncio.base_events.Server | None = None
        self._parked: set[Any] = set()
        self._wake_scheduled = False
        self._idle_timer: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int, advertised: tuple[str, int] | None) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(lambda: Connection(self), host, port,
                                                     reuse_address=True)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        if advertised is not None:
            self.advertised_host, self.advertised_port = advertised
        elif self.host in ("0.0.0.0", "::"):
            # Clients cannot connect to a wildcard address; loopback is right for the local
            # use this broker is for. Other machines need --advertised.
            self.advertised_host, self.advertised_port = "127.0.0.1", self.port
            log.warning("listening on all interfaces but advertising 127.0.0.1:%d; clients on "
                        "other machines need --advertised HOST:PORT", self.port)
        else:
            self.advertised_host, self.advertised_port = self.host, self.port
        self.engine.notifier.listeners.append(self._on_append)
        self._schedule_idle_check()

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stops accepting, answers waiting fetches with what they have, lets in-flight
        requests finish (up to ``grace_seconds``), then closes every connection."""
        # How many clients a stop cuts off; also how a test sees that closed connections
        # leave nothing behind (0 after every client has gone).
        log.info("stopping: %d connections open, %d fetches waiting", len(self.connections),
                 len(self._parked))
        if self._server is not None:
            self._server.close()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for waiter in list(self._parked):
            waiter.finish()
        deadline = time.monotonic() + grace_seconds
        while any(c.pending for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.close()
        with self.engine.notifier.condition:
            if self._on_append in self.engine.notifier.listeners:
                self.engine.notifier.listeners.remove(self._on_append)
        await asyncio.sleep(0)

    # ---- caches --------------------------------------------------------------------

    def cached(self, key: Any) -> Any:
        """A cached encoded response, if the topics have not changed since it was made."""
        self._drop_stale_cache()
        return self.cache.get(key)

    def remember(self, key: Any, value: Any) -> None:
        """Caches a response built from the topics as they are now (building it may have
        created topics, which moved the generation)."""
        self._drop_stale_cache()
        self.cache[key] = value

    def _drop_stale_cache(self) -> None:
        if self.cache_generation != self.engine.generation:
            self.cache.clear()
            self.cache_generation = self.engine.generation

    # ---- fetches waiting for data ----------------------------------------------------

    def park(self, waiter: Any) -> None:
        """Registers a waiting fetch; its ``poke()`` runs after appends, its ``finish()``
        at shutdown. The engine's notifier calls ``_on_append`` only while ``waiting`` is
        set, so a broker with no waiting fetch costs appends nothing."""
        notifier = self.engine.notifier
        if not self._parked:
            with notifier.condition:
                notifier.waiting += 1
        self._parked.add(waiter)

    def unpark(self, waiter: Any) -> None:
        if waiter in self._parked:
            self._parked.discard(waiter)
            if not self._parked:
                notifier = self.engine.notifier
                with notifier.condition:
                    notifier.waiting -= 1

    def _on_append(self) -> None:
        # Any thread. One wake-up per loop iteration however many appends happen.
        if self._parked and not self._wake_scheduled and self.loop is not None:
            self._wake_scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_scheduled = False
        for waiter in list(self._parked):
            waiter.poke()

    # ---- idle connections ----------------------------------------------------------

    def _schedule_idle_check(self) -> None:
        assert self.loop is not None
        idle = self.config["connections.max.idle.ms"] / 1000
        self._idle_timer = self.loop.call_later(min(max(idle / 4, 0.05), 30.0), self._close_idle)

    def _close_idle(self) -> None:
        idle = self.config["connections.max.idle.ms"] / 1000
        now = time.monotonic()
        for connection in list(self.connections):
            if connection.idle_for(now) <= idle:
                continue
            if not connection.closed:
                log.info("closing connection from %s (client %r): idle for more than "
                         "connections.max.idle.ms=%d", connection.peer, connection.client_id,
                         self.config["connections.max.idle.ms"])
            # else closed earlier (a bad frame), its last bytes never taken: abort it too
            connection.close(abort=True)
        self._schedule_idle_check()
