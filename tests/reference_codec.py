"""A small, slow, obviously-correct pure-Python RecordBatch v2 codec and CRC-32C.

Used only by tests, as the oracle the C core is checked against. Written for clarity:
one function per structure, straight from the byte layout in native/logkernel.h and
Kafka's DefaultRecordBatch/DefaultRecord. Decoding raises ReferenceError_ on anything
Kafka's reader would reject.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

CASTAGNOLI_REFLECTED = 0x82F63B78


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ CASTAGNOLI_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class ReferenceError_(ValueError):
    """The reference decoder rejects the input."""


# --- varints (zig-zag LEB128, as Kafka's ByteUtils) ------------------------------------

def write_varint(value: int) -> bytes:
    z = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def read_varint(data: bytes, pos: int, end: int, max_bytes: int) -> tuple[int, int]:
    """Kafka's readVarint (max_bytes=5) / readVarlong (max_bytes=10): overflow bits of the
    last byte are dropped, more continuation bytes are an error."""
    bits = 32 if max_bytes == 5 else 64
    value = 0
    for i in range(max_bytes):
        if pos >= end:
            raise ReferenceError_("varint runs past the end")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            value &= (1 << bits) - 1
            return (value >> 1) ^ -(value & 1), pos
    raise ReferenceError_("varint too long")


# --- records ----------------------------------------------------------------------------

@dataclass
class RefRecord:
    offset_delta: int
    timestamp_delta: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    attributes: int = 0


def _nullable(b: bytes | None) -> bytes:
    return write_varint(-1) if b is None else write_varint(len(b)) + b


def encode_record(r: RefRecord) -> bytes:
    body = bytes([r.attributes & 0xFF]) + write_varint(r.timestamp_delta) + write_varint(r.offset_delta)
    body += _nullable(r.key) + _nullable(r.value) + write_varint(len(r.headers))
    for hk, hv in r.headers:
        body += write_varint(len(hk)) + hk + _nullable(hv)
    return write_varint(len(body)) + body


def decode_records(data: bytes, start: int, end: int, count: int) -> list[RefRecord]:
    if count < 0:
        raise ReferenceError_("negative count")
    records = []
    pos = start
    previous = -1
    for _ in range(count):
        length, pos = read_varint(data, pos, end, 5)
        if length < 0 or pos + length > end:
            raise ReferenceError_("record length")
        rend = pos + length
        if pos >= rend:
            raise ReferenceError_("empty record")
        attributes = data[pos]
        pos += 1
        ts_delta, pos = read_varint(data, pos, rend, 10)
        offset_delta, pos = read_varint(data, pos, rend, 5)
        if offset_delta <= previous:
            raise ReferenceError_("offset delta not increasing")
        previous = offset_delta

        def nullable(pos: int, allow_null: bool = True, rend: int = rend) -> tuple[bytes | None, int]:
            n, pos = read_varint(data, pos, rend, 5)
            # Kafka: any negative key/value/header-value length is null; header keys >= 0
            if (n < 0 and not allow_null) or pos + max(n, 0) > rend:
                raise ReferenceError_("bad length")
            if n < 0:
                return None, pos
            return bytes(data[pos:pos + n]), pos + n

        key, pos = nullable(pos)
        value, pos = nullable(pos)
        hcount, pos = read_varint(data, pos, rend, 5)
        if hcount < 0:
            raise ReferenceError_("negative header count")
        headers = []
        for _ in range(hcount):
            hk, pos = nullable(pos, allow_null=False)
            hv, pos = nullable(pos)
            assert hk is not None
            headers.append((hk, hv))
        if pos != rend:
            raise ReferenceError_("record length mismatch")
        signed_attr = attributes - 256 if attributes >= 128 else attributes
        records.append(RefRecord(offset_delta, ts_delta, key, value, headers, signed_attr))
    if pos != end:
        raise ReferenceError_("bytes left over")
    return records


# --- batches ----------------------------------------------------------------------------

HEADER = struct.Struct(">qiibIhiqqqhii")  # 61 bytes
assert HEADER.size == 61


@dataclass
class RefBatch:
    base_offset: int = 0
    partition_leader_epoch: int = -1
    attributes: int = 0
    base_timestamp: int = 0
    max_timestamp: int = 0
    producer_id: int = -1
    producer_epoch: int = -1
    base_sequence: int = -1
    records: list[RefRecord] = field(default_factory=list)
    last_offset_delta: int | None = None


def encode_batch(b: RefBatch) -> bytes:
    """Uncompressed batch. last_offset_delta defaults to the last record's delta."""
    body = b"".join(encode_record(r) for r in b.records)
    last = b.last_offset_delta
    if last is None:
        last = b.records[-1].offset_delta if b.records else 0
    crc_covered = struct.pack(">hiqqqhii", b.attributes, last, b.base_timestamp, b.max_timestamp,
                              b.producer_id, b.producer_epoch, b.base_sequence,
                              len(b.records)) + body
    crc = crc32c(crc_covered)
    batch_length = 4 + 1 + 4 + len(crc_covered)
    return struct.pack(">qiibI", b.base_offset, batch_length, b.partition_leader_epoch, 2,
                       crc) + crc_covered


def decode_batch(data: bytes) -> RefBatch:
    """Validates like lk_batch_validate(CRC | RECORDS) and decodes an uncompressed batch."""
    if len(data) < 12:
        raise ReferenceError_("truncated")
    (batch_length,) = struct.unpack_from(">i", data, 8)
    if batch_length < 49:
        raise ReferenceError_("bad length")
    if len(data) > 16 and data[16] != 2:
        raise ReferenceError_("bad magic")
    if len(data) < 61 or batch_length + 12 > len(data):
        raise ReferenceError_("truncated")
    (base_offset, _, leader_epoch, _, crc, attributes, last_delta, base_ts, max_ts, pid, epoch,
     base_seq, count) = HEADER.unpack_from(data, 0)
    end = batch_length + 12
    if crc32c(data[21:end]) != crc:
        raise ReferenceError_("crc")
    if count < 0:
        raise ReferenceError_("negative count")
    if count > 0 and last_delta < count - 1:
        raise ReferenceError_("last offset delta too small")
    if attributes & 0x20 and count != 1:
        raise ReferenceError_("control batch count")
    if attributes & 0x07:
        raise ReferenceError_("compressed: the reference handles uncompressed batches only")
    records = decode_records(data, 61, end, count)
    # A compacted batch keeps lastOffsetDelta after losing its last records (Kafka's
    # cleaner does), so a last record below it is fine; past it is not.
    if count and records[-1].offset_delta > last_delta:
        raise ReferenceError_("a record's offset delta is past lastOffsetDelta")
    return RefBatch(base_offset, leader_epoch, attributes, base_ts, max_ts, pid, epoch, base_seq,
                    records, last_delta)
