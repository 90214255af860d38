"""Framing and headers: a byte stream in, requests out; responses' headers.

Every Kafka request and response is a frame: a 4-byte big-endian size, then that many bytes.
A request frame starts with the request header::

    v1 (non-flexible requests)         v2 (flexible requests)
    int16  api_key                     int16  api_key
    int16  api_version                 int16  api_version
    int32  correlation_id              int32  correlation_id
    int16  client_id length, -1: null  int16  client_id length, -1: null (never compact)
    bytes  client_id                   bytes  client_id
                                       tagged fields

A response frame starts with the response header: v0 is the correlation id alone, v1 adds
an (empty) tagged-field section. Flexible responses use v1, except ApiVersions, whose
response header is always v0 so a client can read it before versions are agreed.

``FrameReader`` is fed whatever the socket delivered and hands back whole frames; it keeps
at most one partial frame. A size above the limit (socket.request.max.bytes) or below the
smallest header is unrecoverable: the stream cannot be re-synchronised, so the connection
must be closed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from logkernel.errors import LogkernelError
from logkernel.protocol.apis import API_VERSIONS, NEVER, OFFERED
from logkernel.protocol.primitives import MalformedMessage, skip_tagged_fields

_SIZE = struct.Struct(">i")
_HEADER_START = struct.Struct(">hhih")  # api_key, api_version, correlation_id, client_id length
_CORRELATION = struct.Struct(">i")
_CORRELATION_TAGGED = struct.Struct(">iB")
# The smallest request: a v1 header with a null client id (2+2+4+2 bytes).
MIN_REQUEST_SIZE = _HEADER_START.size


class FrameError(LogkernelError):
    """The byte stream is unreadable as frames (bad size): close the connection."""


@dataclass(slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_offset: int   # where the request body starts in the frame
    flexible: bool


class FrameReader:
    """Splits a stream into frames. ``feed(data)`` returns the frames completed by ``data``
    (memoryviews of buffers the reader no longer touches) and raises FrameError on a size
    that is negative, too small for a header, or over ``max_frame_bytes``."""

    __slots__ = ("_buffer", "_max", "_need")

    def __init__(self, max_frame_bytes: int) -> None:
        self._max = max_frame_bytes
        self._buffer = bytearray()
        self._need = -1  # size of the frame being assembled, -1 until its prefix is read

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[memoryview]:
        frames: list[memoryview] = []
        if not self._buffer:
            # Fast path: whole frames in one read, sliced without copying.
            view = memoryview(data)
            pos = 0
            end = len(data)
            while end - pos >= 4:
                size = self._check(_SIZE.unpack_from(data, pos)[0])
                if end - pos - 4 < size:
                    break
                frames.append(view[pos + 4:pos + 4 + size])
                pos += 4 + size
            if pos < end:
                self._buffer += view[pos:]
            return frames
        self._buffer += data
        buf = self._buffer
        pos = 0
        while len(buf) - pos >= 4:
            size = self._check(_SIZE.unpack_from(buf, pos)[0])
            if len(buf) - pos - 4 < size:
                break
            frames.append(memoryview(bytes(buf[pos + 4:pos + 4 + size])))
            pos += 4 + size
        del buf[:pos]
        return frames

    def _check(self, size: int) -> int:
        if size < MIN_REQUEST_SIZE:
            raise FrameError(f"frame size {size} is below the smallest request header "
                             f"({MIN_REQUEST_SIZE} bytes): not a Kafka client, or the stream is "
                             "out of step")
        if size > self._max:
            raise FrameError(f"frame size {size} exceeds socket.request.max.bytes={self._max}; "
                             "raise it on the broker or send smaller requests")
        return size


def request_is_flexible(api_key: int, api_version: int) -> bool:
    api = OFFERED.get(api_key)
    first = api.first_flexible if api is not None else NEVER
    return api_version >= first


def parse_request_header(frame: memoryview) -> RequestHeader:
    """Reads the request header (v1, or v2 for flexible versions of offered APIs). For an
    API we do not offer the header is read as v1, which is enough to answer it."""
    if len(frame) < MIN_REQUEST_SIZE:
        raise MalformedMessage(f"a request of {len(frame)} bytes is shorter than a header")
    api_key, api_version, correlation_id, length = _HEADER_START.unpack_from(frame, 0)
    pos = MIN_REQUEST_SIZE
    client_id: str | None = None
    if length >= 0:
        if pos + length > len(frame):
            raise MalformedMessage("the client id runs past the end of the request")
        try:
            client_id = bytes(frame[pos:pos + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage("the client id is not UTF-8") from None
        pos += length
    elif length != -1:
        raise MalformedMessage(f"client id length {length} is invalid")
    flexible = request_is_flexible(api_key, api_version)
    if flexible:
        pos = skip_tagged_fields(frame, pos)
    return RequestHeader(api_key, api_version, correlation_id, client_id, pos, flexible)


def response_header(correlation_id: int, api_key: int, flexible: bool) -> bytes:
    """Header v1 for flexible responses, v0 otherwise and always for ApiVersions."""
    if flexible and api_key != API_VERSIONS:
        return _CORRELATION_TAGGED.pack(correlation_id, 0)
    return _CORRELATION.pack(correlation_id)


def frame_size(size: int) -> bytes:
    return _SIZE.pack(size)
