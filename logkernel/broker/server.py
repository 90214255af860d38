"""The broker's network side: listener, connections, request dispatch, shutdown.

One asyncio event loop runs the listener and every connection. A connection reads frames
(``protocol.frames.FrameReader``), reads each request's header and hands the body to the
handler registered for its API key (``handlers``). A handler returns the response body as
a list of buffers, ``None`` for no response (Produce with acks=0), or an awaitable of
those (a Fetch waiting for data). Responses go out in request order whatever order the
handlers finish in: Kafka clients match them by correlation id but librdkafka and
kafka-python expect them in order, as Kafka sends them.

Memory per connection is bounded: at most ``MAX_IN_FLIGHT`` requests are pending before
the connection stops reading, and reading also stops while the socket's send buffer is
above asyncio's high-water mark (a consumer that does not read its responses).

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
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from logkernel.protocol import error_codes, schema
from logkernel.protocol.apis import API_VERSIONS, OFFERED, api_name
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
# Response pieces below this size are joined before writing (one send for a response's
# headers); bigger ones, record data, go to the socket without another copy. 16 KiB: a
# join of that much costs about what one extra send call does.
COALESCE_BYTES = 16 * 1024


class Connection(asyncio.Protocol):
    """One client connection. Lives on the event loop thread only."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.reader = FrameReader(server.config["socket.request.max.bytes"])
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.client_id: str | None = None
        self.pending: collections.deque[list[Any]] = collections.deque()  # [header, reply, done]
        self.paused_for_backlog = False
        self.paused_for_writes = False
        self.last_activity = time.monotonic()
        self.closed = False
        # While the frames of one read are handled: their small responses, written as one.
        self.corked: list[bytes] | None = None

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
                reply.cancel()
        self.pending.clear()

    def pause_writing(self) -> None:
        self.paused_for_writes = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.paused_for_writes = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        try:
            frames = self.reader.feed(data)
        except FrameError as exc:
            self.fail(f"unreadable frame: {exc}")
            return
        # Responses to the frames of one read go out in one write: a pipelining client
        # (64 small OffsetCommits in flight) would otherwise cost a send call per answer.
        self.corked = []
        try:
            for frame in frames:
                if self.closed:
                    return
                self.handle_frame(frame)
        finally:
            corked, self.corked = self.corked, None
            if corked and not self.closed and self.transport is not None:
                self.transport.write(b"".join(corked))
        self._update_reading()

    # ---- requests ------------------------------------------------------------------

    def handle_frame(self, frame: memoryview) -> None:
        try:
            header = parse_request_header(frame)
        except MalformedMessage as exc:
            self.fail(f"unreadable request header: {exc}")
            return
        self.client_id = header.client_id
        body = frame[header.body_offset:]
        api = OFFERED.get(header.api_key)
        if api is None or not api.serves(header.api_version):
            reply: Reply = self.unsupported(header, body)
        else:
            handler = self.server.handlers[header.api_key]
            self.server.current_peer = self.peer  # handlers run one at a time on the loop
            try:
                reply = handler(self.server, header, body)
            except MalformedMessage as exc:
                reply = self.malformed(header, body, exc)
            except Exception:
                log.exception("%s v%d from %s (%s) failed inside the broker; answering "
                              "UNKNOWN_SERVER_ERROR", api.name, header.api_version,
                              self.client_id, self.peer)
                reply = self.error_reply(header, error_codes.UNKNOWN_SERVER_ERROR,
                                         "the broker failed on this request; see its log")
                if reply is None:  # no field for the error: the client must not wait forever
                    self.fail(f"{api.name} failed inside the broker and its response has no "
                              "error field")
                    return
            if reply is not None and not isinstance(reply, list):
                reply = asyncio.ensure_future(reply)
        if self.closed:
            return
        if isinstance(reply, asyncio.Future):
            entry = [header, reply, False]
            self.pending.append(entry)
            reply.add_done_callback(lambda _f: self._send_ready())
            return
        if reply is None and not self.pending:
            return  # acks=0: no response, nothing queued ahead
        if not self.pending:
            assert isinstance(reply, list)
            self.send(header, reply)
        else:
            self.pending.append([header, reply, True])

    def _send_ready(self) -> None:
        while self.pending and not self.closed:
            header, reply, done = self.pending[0]
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
            if reply_body is not None:
                self.send(header, reply_body)
        self._update_reading()

    def send(self, header: RequestHeader, body: Body) -> None:
        """Writes one response. Small pieces are joined; big ones (record data) are handed
        to the transport as they are: Python 3.11's ``writelines`` would join the whole
        response into one new bytes, a second copy of every fetched byte into fresh pages
        (which cost 2-6 us per 4 KiB on first touch here)."""
        if self.closed or self.transport is None:
            return
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
                return
            write(b"".join(corked))  # keep the order: what is corked goes first
            corked.clear()
        for piece in body:
            if len(piece) < COALESCE_BYTES:
                small.append(piece)
                continue
            write(b"".join(small))
            small.clear()
            write(piece)
        if small:
            write(b"".join(small))

    def _update_reading(self) -> None:
        if self.transport is None or self.closed:
            return
        backlog = len(self.pending) >= MAX_IN_FLIGHT
        if backlog or self.paused_for_writes:
            if not self.paused_for_backlog:
                self.paused_for_backlog = True
                self.transport.pause_reading()
        elif self.paused_for_backlog:
            self.paused_for_backlog = False
            self.transport.resume_reading()

    # ---- bad requests --------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Closes the connection over a stream-level problem, with one log line."""
        log.warning("closing connection from %s (client %r): %s", self.peer, self.client_id, reason)
        self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
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
            if not connection.pending and now - connection.last_activity > idle:
                log.info("closing connection from %s (client %r): idle for more than "
                         "connections.max.idle.ms=%d", connection.peer, connection.client_id,
                         self.config["connections.max.idle.ms"])
                connection.close()
        self._schedule_idle_check()
