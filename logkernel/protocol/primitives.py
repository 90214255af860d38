"""Kafka's primitive encodings that the hand-written codecs share.

Unsigned varints (LEB128, as Kafka's ``UNSIGNED_VARINT``) carry compact lengths (length + 1,
0 meaning null) and tagged-field headers in flexible versions. Readers take a buffer and a
position and return (value, new position); they raise ``MalformedMessage`` on a short or
absurd buffer instead of IndexError, so a bad request becomes a clean error.
"""

from __future__ import annotations

import struct

from logkernel.errors import LogkernelError


class MalformedMessage(LogkernelError, ValueError):
    """A request's bytes do not parse as the message its header names (the client's fault)."""


INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")
UINT32 = struct.Struct(">I")


def read_uvarint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """An unsigned varint of at most 5 bytes (Kafka never writes longer ones for lengths)."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise MalformedMessage("the message ends inside a varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 28:
            raise MalformedMessage("a varint is longer than 5 bytes")


def write_uvarint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return SMALL_UVARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


SMALL_UVARINTS = [bytes((i,)) for i in range(0x80)]  # one-byte uvarints, prebuilt


def skip_tagged_fields(buf: bytes | memoryview, pos: int) -> int:
    """Skips a tagged-field section (count, then tag, size, bytes each); returns the position
    after it. Unknown tags are ignored, as Kafka does."""
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
        if pos > len(buf):
            raise MalformedMessage("a tagged field runs past the end of the message")
    return pos


# Writers for the length-prefixed types. Non-flexible versions use Kafka's legacy forms (int16
# length for strings, int32 count for arrays, -1 meaning null); flexible versions use compact
# forms (unsigned varint of length + 1, 0 meaning null). Each returns the bytes to append.

_NULL_LEGACY_STRING = INT16.pack(-1)
_NULL_COMPACT = b"\x00"  # compact length 0: null string, bytes or array


def write_string(value: str, flexible: bool) -> bytes:
    """A non-null STRING (int16 length) or COMPACT_STRING (uvarint length + 1), UTF-8.
    Raises struct.error if a legacy string exceeds 32,767 bytes (the caller's bug)."""
    data = value.encode()
    if flexible:
        return write_uvarint(len(data) + 1) + data
    return INT16.pack(len(data)) + data


def write_nullable_string(value: str | None, flexible: bool) -> bytes:
    """NULLABLE_STRING / COMPACT_NULLABLE_STRING: as ``write_string``, None as -1 / 0."""
    if value is None:
        return _NULL_COMPACT if flexible else _NULL_LEGACY_STRING
    return write_string(value, flexible)


def write_array_length(count: int, flexible: bool) -> bytes:
    """The count that starts a non-null ARRAY (int32) or COMPACT_ARRAY (uvarint count + 1)."""
    if flexible:
        return write_uvarint(count + 1)
    return INT32.pack(count)
