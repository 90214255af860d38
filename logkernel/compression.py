"""Compression codecs for the records section of a RecordBatch, as Kafka frames them.

| id | name   | frame written                      | library               | read                      |
|----|--------|------------------------------------|-----------------------|---------------------------|
| 0  | none   | -                                  | -                     | -                         |
| 1  | gzip   | gzip member (RFC 1952)             | zlib (stdlib)         | gzip/zlib, concatenated   |
| 2  | snappy | xerial blocks, as Java's Kafka     | cramjam (raw snappy)  | xerial or raw snappy      |
| 3  | lz4    | LZ4 frame, independent blocks      | lz4 (lz4.frame)       | LZ4 frame                 |
| 4  | zstd   | zstd frame                         | zstandard             | zstd frame(s)             |

Snappy: Java producers and brokers wrap snappy in the xerial "SNAPPY" stream (magic,
version 1, compat 1, then blocks of int32 length + raw snappy), librdkafka writes raw
snappy; we write xerial (what every Kafka consumer reads) and read both.
LZ4: Kafka reads LZ4 frames with independent blocks (kafka-python and librdkafka write
them so); linked blocks are written by some libraries' defaults and are avoided here.

Every decoder bounds its output (``max_size``) so a small hostile payload cannot expand
into gigabytes; exceeding it, or any malformed input, raises CorruptRecordError.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import cramjam
import lz4.frame
import zstandard

from logkernel.errors import ConfigError, CorruptRecordError

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
CODECS = {"none": NONE, "gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}
CODEC_NAMES = {v: k for k, v in CODECS.items()}

# Largest decompressed records section accepted: Kafka's default max.message.bytes is
# ~1 MiB *compressed*; 256 MiB leaves room for very compressible batches while keeping a
# decompression bomb from exhausting memory. Callers with bigger batches pass max_size.
DEFAULT_MAX_DECOMPRESSED = 256 * 1024 * 1024

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
# Uncompressed bytes per xerial block: 32 KiB is the xerial library's default block size.
_XERIAL_BLOCK = 32 * 1024


def topic_codec(compression_type: str) -> int | None:
    """The codec a topic's compression.type stores batches in; None for "producer" (keep
    what the producer sent). "uncompressed" is Kafka's name for no codec."""
    if compression_type == "producer":
        return None
    return NONE if compression_type == "uncompressed" else CODECS[compression_type]


def codec_id(name: str | int) -> int:
    """Kafka's compression id for a name (``compression.type`` values) or an id."""
    if isinstance(name, int) and name in CODEC_NAMES:
        return name
    if isinstance(name, str) and name.lower() in CODECS:
        return CODECS[name.lower()]
    raise ConfigError(
        f"compression.type={name!r} is not supported; use one of {', '.join(CODECS)}"
    )


def _gzip_compress(data: bytes, level: int | None) -> bytes:
    compressor = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _gzip_decompress(data: bytes, max_size: int) -> bytes:
    out = []
    total = 0
    while data:
        d = zlib.decompressobj(47)  # 32 + 15: accept gzip or zlib headers
        chunk = d.decompress(data, max_size - total + 1)
        total += len(chunk)
        if total > max_size:
            raise _too_big(max_size)
        if not d.eof:
            raise CorruptRecordError("gzip records section is truncated")
        out.append(chunk)
        data = d.unused_data  # Kafka readers accept concatenated gzip members
    return b"".join(out)


def _snappy_compress(data: bytes, level: int | None) -> bytes:
    parts = [_XERIAL_HEADER]
    view = memoryview(data)
    for start in range(0, len(view), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(view[start:start + _XERIAL_BLOCK]))
        parts.append(struct.pack(">i", len(block)))
        parts.append(block)
    return b"".join(parts)


def _snappy_raw(block: bytes | memoryview, max_size: int) -> bytes:
    if cramjam.snappy.decompress_raw_len(block) > max_size:
        raise _too_big(max_size)
    return bytes(cramjam.snappy.decompress_raw(block))


def _snappy_decompress(data: bytes, max_size: int) -> bytes:
    if not data.startswith(_XERIAL_MAGIC):
        return _snappy_raw(data, max_size)
    view = memoryview(data)
    position = len(_XERIAL_HEADER)
    if len(view) < position:
        raise CorruptRecordError("xerial snappy header is truncated")
    out = []
    total = 0
    while position < len(view):
        if position + 4 > len(view):
            raise CorruptRecordError("xerial snappy block length is truncated", position)
        (length,) = struct.unpack_from(">i", view, position)
        position += 4
        if length < 0 or position + length > len(view):
            raise CorruptRecordError("xerial snappy block runs past the payload", position)
        chunk = _snappy_raw(view[position:position + length], max_size - total)
        total += len(chunk)
        out.append(chunk)
        position += length
    return b"".join(out)


def _lz4_compress(data: bytes, level: int | None) -> bytes:
    return lz4.frame.compress(data, compression_level=level or 0, block_linked=False,
                              content_checksum=False)


def _lz4_decompress(data: bytes, max_size: int) -> bytes:
    # LZ4 cannot expand input more than 255 times, so an input that small cannot pass
    # max_size and needs no output bound. The bound costs: max_length is allocated up
    # front (113 us a 50 KB batch with 256 MiB, 30 us without; measured).
    d = lz4.frame.LZ4FrameDecompressor()
    if len(data) * _LZ4_MAX_RATIO <= max_size:
        out = d.decompress(data)
    else:
        out = d.decompress(data, max_length=max_size + 1)
    if len(out) > max_size:
        raise _too_big(max_size)
    if not d.eof:
        raise CorruptRecordError("lz4 records section is truncated")
    return out


def _zstd_compress(data: bytes, level: int | None) -> bytes:
    return zstandard.ZstdCompressor(level=3 if level is None else level).compress(data)


# zstd's stream reader allocates each read's full size up front: asking for max_size (256
# MiB) at a time cost ~250 us a 50 KB batch in allocation alone; reads of 256 KiB cost
# ~70 us (measured).
_DECOMPRESS_STEP = 256 * 1024
# LZ4's format cannot expand data more than 255 times (a match of 255+ bytes costs at
# least one byte); 256 leaves room for frame headers.
_LZ4_MAX_RATIO = 256


def _zstd_decompress(data: bytes, max_size: int) -> bytes:
    # A stream reader bounds the output whether or not frames declare their content size,
    # and reads across concatenated frames as Kafka's readers do.
    chunks = []
    total = 0
    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
        while chunk := reader.read(min(max_size + 1 - total, _DECOMPRESS_STEP)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_size:
                raise _too_big(max_size)
    return b"".join(chunks)


def _too_big(max_size: int) -> CorruptRecordError:
    return CorruptRecordError(
        f"decompressed records section is larger than {max_size} bytes; "
        "raise the decompression limit if batches this large are expected"
    )


_COMPRESS: dict[int, Callable[[bytes, int | None], bytes]] = {
    GZIP: _gzip_compress, SNAPPY: _snappy_compress, LZ4: _lz4_compress, ZSTD: _zstd_compress,
}
_DECOMPRESS: dict[int, Callable[[bytes, int], bytes]] = {
    GZIP: _gzip_decompress, SNAPPY: _snappy_decompress, LZ4: _lz4_decompress,
    ZSTD: _zstd_decompress,
}


def compress(codec: int, data: bytes, level: int | None = None) -> bytes:
    """Compresses a records section with Kafka codec ``codec`` (1-4)."""
    try:
        return _COMPRESS[codec](data, level)
    except KeyError:
        raise ConfigError(f"compression codec id {codec} is not one of 1-4") from None


def decompress(codec: int, data: bytes | memoryview,
               max_size: int = DEFAULT_MAX_DECOMPRESSED) -> bytes:
    """Decompresses a records section; CorruptRecordError on bad or oversized input."""
    fn = _DECOMPRESS.get(codec)
    if fn is None:
        raise CorruptRecordError(f"unknown compression codec id {codec} in batch attributes", 21)
    try:
        return fn(bytes(data), max_size)
    except CorruptRecordError:
        raise
    except Exception as exc:  # each library raises its own error types for bad input
        raise CorruptRecordError(
            f"{CODEC_NAMES[codec]} records section does not decompress: {exc}"
        ) from exc
