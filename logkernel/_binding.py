"""The boundary between Python and the C core (native/logkernel.h).

This is the only module that imports the compiled extension. It owns three things:

1. turning C status codes into exceptions, in one place (``check``);
2. the lifetime of native handles (segments and their memory maps);
3. thin, typed wrappers that take Python buffers and return Python values.

Costs: every call into C costs ~0.15 us plus ~0.4 us per ``ffi.from_buffer``, so the
wrappers work per batch or per record set, never per record; the two per-record paths
(``Segment.append_record`` and the key hash) pass only scalars and bytes, which cffi hands
to C without a from_buffer.
"""

from __future__ import annotations

import functools
import os
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from logkernel import errors

# numpy is imported by the functions that build arrays (decode_batch, decode_records,
# decode_headers, decode_columns), not here: it costs 150-250 ms to import, and the
# engine and the broker use only the numpy-free parts of this module (segments, CRC,
# encoding, scanning, the *_raw decoders), so `logkernel serve` starts without it. After
# its first import an `import numpy` statement is a sys.modules lookup (~0.2 us), paid
# once per call, never per record.
if TYPE_CHECKING:
    import numpy as np

try:
    from logkernel._native import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "logkernel's native core (logkernel._native) is not built. Install the package with "
        "`pip install .` (or `make test` in a checkout), which compiles it; this needs a C "
        f"compiler and Python headers. Underlying error: {exc}"
    ) from exc

Buffer = Any  # bytes, bytearray, memoryview, mmap, numpy arrays: anything with the buffer protocol

# ---------------------------------------------------------------------------------------
# Status codes -> exceptions
# ---------------------------------------------------------------------------------------

_CORRUPT_CLASSES = {
    lib.LK_ERR_TRUNCATED: errors.TruncatedBatchError,
    lib.LK_ERR_BAD_LENGTH: errors.CorruptRecordError,
    lib.LK_ERR_BAD_MAGIC: errors.UnsupportedMagicError,
    lib.LK_ERR_CRC: errors.CrcMismatchError,
    lib.LK_ERR_CORRUPT_RECORD: errors.CorruptRecordError,
}


def _c_string(pointer: Any) -> str:
    return ffi.string(pointer).decode("utf-8", "replace") if pointer != ffi.NULL else ""


def check(rc: int, err: Any = None, *, context: str = "", path: str | None = None) -> None:
    """Raises the exception for status ``rc`` (no-op for LK_OK).

    ``err`` is the lk_error filled by the call, if it took one; ``context`` says what was being
    done and ``path`` which file, so the message tells the user what failed and where.
    """
    if rc != lib.LK_OK:
        raise _exception(rc, err, context=context, path=path)


def _exception(rc: int, err: Any = None, *, context: str = "", path: str | None = None
               ) -> Exception:
    """The exception ``check`` raises for a failed status ``rc`` (not raised here)."""
    what = _c_string(err.what) if err is not None and err.code == rc else ""
    what = what or _c_string(lib.lk_status_message(rc))
    prefix = f"{context}: " if context else ""
    if rc in _CORRUPT_CLASSES:
        position = int(err.position) if err is not None and err.code == rc else -1
        index = int(err.record_index) if err is not None and err.code == rc else -1
        return _CORRUPT_CLASSES[rc](prefix + what, position, index, rc)
    if rc in (lib.LK_ERR_IO, lib.LK_ERR_NO_SPACE):
        errno = ffi.errno
        cls = errors.NoSpaceError if rc == lib.LK_ERR_NO_SPACE else errors.StorageError
        return cls(errno, f"{prefix}{os.strerror(errno) if errno else what}", path)
    if rc == lib.LK_ERR_INDEX_CORRUPT:
        return errors.IndexCorruptError(
            f"{prefix}{what} ({path}): reopen with reset_indexes=True, then recover() or "
            "rebuild_indexes()")
    if rc == lib.LK_ERR_NEEDS_RECOVERY:
        return errors.NeedsRecoveryError(f"{prefix}{what} ({path})")
    if rc == lib.LK_ERR_SEGMENT_FULL:
        return errors.SegmentFullError(f"{prefix}{what} ({path})")
    if rc == lib.LK_ERR_OFFSET_ORDER:
        return errors.OffsetOrderError(f"{prefix}{what} ({path})")
    if rc == lib.LK_ERR_NOT_FOUND:
        return errors.OffsetOutOfRangeError(f"{prefix}{what}")
    if rc == lib.LK_ERR_CLOSED:
        return errors.ClosedError(f"{prefix}{what} ({path})")
    if rc == lib.LK_ERR_UNSUPPORTED:
        return errors.UnsupportedError(f"{prefix}{what}")
    if rc == lib.LK_ERR_NO_MEMORY:
        return MemoryError(f"{prefix}{what}")
    if rc == lib.LK_ERR_BUFFER_TOO_SMALL:
        return AssertionError(f"logkernel bug: {prefix}{what}")
    return ValueError(f"{prefix}{what}")


# ---------------------------------------------------------------------------------------
# CRC-32C
# ---------------------------------------------------------------------------------------

CRC32C_IMPLEMENTATIONS = {
    _c_string(lib.lk_crc32c_impl_name(i)): i for i in range(lib.LK_CRC32C_IMPL_COUNT)
}


def crc32c(data: Buffer, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``. O(n), ~20+ GB/s on 1 MiB."""
    return int(lib.lk_crc32c(crc, ffi.from_buffer(data), len(memoryview(data).cast("B"))))


def crc32c_with(implementation: str, data: Buffer, crc: int = 0) -> int:
    """CRC-32C computed by one named implementation (for tests and benchmarks)."""
    impl = CRC32C_IMPLEMENTATIONS.get(implementation)
    if impl is None:
        raise ValueError(
            f"unknown CRC-32C implementation {implementation!r}; "
            f"choose one of {sorted(CRC32C_IMPLEMENTATIONS)}"
        )
    out = ffi.new("uint32_t *")
    view = memoryview(data).cast("B")
    check(
        lib.lk_crc32c_with(impl, crc, ffi.from_buffer(view), len(view), out),
        context=f"CRC-32C implementation {implementation!r}",
    )
    return int(out[0])


def crc32c_available() -> list[str]:
    """Names of the CRC-32C implementations this CPU can run."""
    return [name for name, i in CRC32C_IMPLEMENTATIONS.items() if lib.lk_crc32c_impl_available(i)]


def crc32c_selected() -> str:
    """The implementation ``crc32c`` uses on this CPU."""
    return _c_string(lib.lk_crc32c_impl_name(lib.lk_crc32c_selected_impl()))


# ---------------------------------------------------------------------------------------
# Partitioning
# ---------------------------------------------------------------------------------------

_murmur2 = lib.lk_murmur2  # bound once: these run once per keyed send


def murmur2(key: bytes) -> int:
    """Kafka's ``Utils.murmur2`` of ``key``: the signed 32-bit hash the Java client (and
    every client following it) computes for the default partitioner. O(len), ~0.15 us.

    ``key`` is bytes; a bytearray or memoryview is copied to bytes first (cffi passes only
    bytes as ``const char *`` without a copy). Raises TypeError for anything else."""
    try:
        return int(_murmur2(key, len(key)))
    except TypeError:
        return int(_murmur2(_key_bytes(key), len(key)))


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a keyed record among ``partitions``:
    ``(murmur2(key) & 0x7fffffff) % partitions``. O(len). Raises ValueError when
    ``partitions`` < 1, TypeError for a key that is not bytes-like."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    try:
        return (_murmur2(key, len(key)) & 0x7FFFFFFF) % partitions
    except TypeError:
        return (_murmur2(_key_bytes(key), len(key)) & 0x7FFFFFFF) % partitions


def _key_bytes(key: Any) -> bytes:
    if isinstance(key, (bytearray, memoryview)):
        return bytes(memoryview(key).cast("B"))
    raise TypeError(f"keys are bytes, got {type(key).__name__} (encode strings first, e.g. "
                    "key.encode())")


# ---------------------------------------------------------------------------------------
# Record batches
# ---------------------------------------------------------------------------------------

BATCH_HEADER_SIZE = lib.LK_BATCH_HEADER_SIZE
LOG_OVERHEAD = lib.LK_LOG_OVERHEAD
VALIDATE_CRC = lib.LK_VALIDATE_CRC
VALIDATE_RECORDS = lib.LK_VALIDATE_RECORDS
VALIDATE_CONTIGUOUS = lib.LK_VALIDATE_CONTIGUOUS
SCAN_DENSE = lib.LK_SCAN_DENSE  # scan_log / Segment.recover: no gaps between batches
LK_OFF_ATTRIBUTES_LOW = 22  # low byte of the big-endian attributes: the compression bits


_HEADER_STRUCT = struct.Struct(">qiibIhiqqqhii")  # the 61-byte header, in field order


class BatchHeader(NamedTuple):
    """The 61-byte RecordBatch v2 header, decoded. Field names follow Kafka's.

    A tuple, read with one ``struct.unpack_from`` once C has validated the header: building
    it field by field from the C struct cost more than the whole record walk."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies: batchLength + 12."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & lib.LK_ATTR_COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & lib.LK_ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & lib.LK_ATTR_CONTROL)

    @property
    def timestamp_type_is_log_append(self) -> bool:
        return bool(self.attributes & lib.LK_ATTR_LOG_APPEND_TIME)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self.attributes & lib.LK_ATTR_DELETE_HORIZON)


def _header_at(view: Any) -> BatchHeader:
    """Header fields of a batch whose header C has already checked to be present."""
    return BatchHeader._make(_HEADER_STRUCT.unpack_from(view, 0))


@functools.cache
def _record_span_dtype() -> np.dtype:
    """numpy view of lk_record_span, laid out as the C compiler laid it out. Built on first
    use (it needs numpy); ``RECORD_SPAN_DTYPE`` is the same object."""
    import numpy as np

    fields = ["timestamp_delta", "offset_delta", "key_pos", "key_len", "value_pos",
              "value_len", "headers_pos", "headers_count", "headers_len", "attributes"]
    types = {"timestamp_delta": np.int64, "attributes": np.int8}
    return np.dtype({
        "names": fields,
        "formats": [types.get(f, np.int32) for f in fields],
        "offsets": [ffi.offsetof("lk_record_span", f) for f in fields],
        "itemsize": ffi.sizeof("lk_record_span"),
    })


if TYPE_CHECKING:
    RECORD_SPAN_DTYPE: np.dtype
else:
    # PEP 562: a module attribute that needs numpy is computed when first asked for, so
    # `_binding.RECORD_SPAN_DTYPE` keeps working without importing numpy with the module.
    # Hidden from type checkers, which would otherwise type every misspelt `_binding.x`
    # as this function's return type instead of reporting it.
    def __getattr__(name: str) -> Any:
        if name == "RECORD_SPAN_DTYPE":
            return _record_span_dtype()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_header(data: Buffer, max_batch_size: int = 0) -> BatchHeader:
    """Header of the batch at the start of ``data`` (lengths and magic checked, not CRC). O(1)."""
    err = ffi.new("lk_error *")
    view = memoryview(data).cast("B")
    check(lib.lk_batch_parse_header(ffi.from_buffer(view), len(view), max_batch_size, ffi.NULL,
                                    err), err, context="record batch header")
    return _header_at(view)


def validate_batch(data: Buffer, flags: int = VALIDATE_CRC | VALIDATE_RECORDS,
                   max_batch_size: int = 0) -> BatchHeader:
    """Validates the batch at the start of ``data``; returns its header. O(batch size)."""
    err = ffi.new("lk_error *")
    view = memoryview(data).cast("B")
    check(lib.lk_batch_validate(ffi.from_buffer(view), len(view), max_batch_size, flags,
                                ffi.NULL, err), err, context="record batch")
    return _header_at(view)


# Record and header spans come in two forms from the same C calls: numpy arrays
# (decode_batch, decode_records, decode_headers: fields by name, vectorised), and "raw"
# bytearrays of the C structs (the *_raw functions) that ``span_column`` reads through
# memoryview casts without numpy. records.RecordBatch uses the raw form: the engine
# decodes batches (committed offsets at open, ListOffsets by time), and that must not
# import numpy. Its records() is no slower for it: 2x faster for batches of 1-10 records
# (numpy's fixed cost per call dominates there), the same at 1,000.
SPAN_SIZE = ffi.sizeof("lk_record_span")
HEADER_SPAN_SIZE = ffi.sizeof("lk_header_span")
_SPAN_INT32S = SPAN_SIZE // 4
_SPAN_INT64S = SPAN_SIZE // 8
_SPAN_INT32_AT = {f: ffi.offsetof("lk_record_span", f) // 4 for f in (
    "offset_delta", "key_pos", "key_len", "value_pos", "value_len", "headers_pos",
    "headers_count", "headers_len")}
_SPAN_TIMESTAMP_AT = ffi.offsetof("lk_record_span", "timestamp_delta") // 8
assert SPAN_SIZE % 8 == 0 and ffi.offsetof("lk_record_span", "timestamp_delta") % 8 == 0


def span_column(spans: Buffer, field: str) -> list[int]:
    """One field of every span in ``spans`` (raw lk_record_span structs, from
    decode_batch_raw or decode_records_raw), as a list. O(spans), in C."""
    view = memoryview(spans)
    if field == "timestamp_delta":
        return view.cast("q")[_SPAN_TIMESTAMP_AT::_SPAN_INT64S].tolist()
    return view.cast("i")[_SPAN_INT32_AT[field]::_SPAN_INT32S].tolist()


def _numpy_spans(count: int) -> np.ndarray:
    import numpy as np

    return np.empty(count, dtype=_record_span_dtype())


def _raw_spans(count: int) -> bytearray:
    return bytearray(count * SPAN_SIZE)


def decode_batch(data: Buffer, max_batch_size: int = 0) -> tuple[BatchHeader, np.ndarray | None]:
    """Validates (CRC included) and decodes the batch at the start of ``data``.

    Returns the header and a numpy array of record spans (dtype ``RECORD_SPAN_DTYPE``,
    positions relative to ``data``), or None for spans when the batch is compressed: the
    caller decompresses ``data[61:size]`` and calls ``decode_records``. Copies no payload.
    O(batch size).
    """
    return _decode_batch(data, max_batch_size, _numpy_spans)


def decode_batch_raw(data: Buffer, max_batch_size: int = 0) -> tuple[BatchHeader, bytearray | None]:
    """``decode_batch`` with the spans as a bytearray of lk_record_span structs (read them
    with ``span_column``), for callers that must not import numpy."""
    return _decode_batch(data, max_batch_size, _raw_spans)


def _decode_batch(data: Buffer, max_batch_size: int, new_spans: Callable[[int], Any]
                  ) -> tuple[BatchHeader, Any]:
    view = data if type(data) is bytes else memoryview(data).cast("B")
    size = len(view)
    # One C call validates and decodes; the span array must exist before it, sized from
    # the untrusted recordsCount, bounded by the bytes present (a record takes at least
    # 7 bytes). The C side rejects a count the records cannot fill before writing spans.
    compressed = size > LK_OFF_ATTRIBUTES_LOW and view[LK_OFF_ATTRIBUTES_LOW] & 7
    if size < BATCH_HEADER_SIZE or compressed:
        count = 0
    else:
        # Bounded by this batch's own records section (batchLength - 49), not by the
        # buffer, which may hold a whole segment after it.
        section = int.from_bytes(view[8:12], "big", signed=True) - (BATCH_HEADER_SIZE - LOG_OVERHEAD)
        count = min(max(int.from_bytes(view[57:61], "big", signed=True), 0),
                    max(section, 0) // 7)
    spans = new_spans(count)
    out = ffi.new("lk_decode_scratch *")
    check(lib.lk_batch_decode(ffi.from_buffer(view), size, max_batch_size, ffi.NULL,
                              ffi.cast("lk_record_span *", ffi.from_buffer(spans)), count,
                              ffi.addressof(out, "decoded"), ffi.addressof(out, "err")),
          out.err, context="record batch")
    header = _header_at(view)
    return header, (None if compressed else spans)


def decode_records(records: Buffer, count: int, last_offset_delta: int = -1) -> np.ndarray:
    """Decodes a records section (e.g. a decompressed payload) of exactly ``count`` records."""
    return _decode_records(records, count, last_offset_delta, _numpy_spans)


def decode_records_raw(records: Buffer, count: int, last_offset_delta: int = -1) -> bytearray:
    """``decode_records`` with the spans as a bytearray of lk_record_span structs."""
    return _decode_records(records, count, last_offset_delta, _raw_spans)


def _decode_records(records: Buffer, count: int, last_offset_delta: int,
                    new_spans: Callable[[int], Any]) -> Any:
    view = memoryview(records).cast("B")
    if count < 0:
        raise errors.CorruptRecordError("recordsCount is negative", 57, -1, lib.LK_ERR_CORRUPT_RECORD)
    if count * 7 > len(view):
        raise errors.CorruptRecordError(
            f"recordsCount {count} is larger than the {len(view)}-byte records section can hold",
            57, -1, lib.LK_ERR_CORRUPT_RECORD)
    spans = new_spans(count)
    err = ffi.new("lk_error *")
    check(lib.lk_records_decode(ffi.from_buffer(view), len(view), count, last_offset_delta,
                                ffi.cast("lk_record_span *", ffi.from_buffer(spans)), count, err),
          err, context="records section")
    return spans


def decode_headers(data: Buffer, count: int) -> np.ndarray:
    """Spans of one record's headers: an (count, 4) int32 array of key_pos, key_len,
    value_pos, value_len relative to ``data``."""
    return _decode_headers(data, count, _numpy_header_spans)


def decode_headers_raw(data: Buffer, count: int) -> list[list[int]]:
    """``decode_headers(...).tolist()`` without numpy: [key_pos, key_len, value_pos,
    value_len] per header."""
    spans = _decode_headers(data, count, _raw_header_spans)
    if not count:
        return []  # memoryview cannot take a shape with a zero in it
    rows = memoryview(spans).cast("i", (count, 4))
    return cast("list[list[int]]", rows.tolist())  # typeshed types tolist() as 1-D


def _numpy_header_spans(count: int) -> np.ndarray:
    import numpy as np

    return np.empty((count, 4), dtype=np.int32)


def _raw_header_spans(count: int) -> bytearray:
    return bytearray(count * HEADER_SPAN_SIZE)


def _decode_headers(data: Buffer, count: int, new_spans: Callable[[int], Any]) -> Any:
    view = memoryview(data).cast("B")
    if count < 0 or count * 2 > len(view):
        raise errors.CorruptRecordError("header count is larger than the headers can hold",
                                        0, -1, lib.LK_ERR_CORRUPT_RECORD)
    out = new_spans(count)
    err = ffi.new("lk_error *")
    check(lib.lk_headers_decode(ffi.from_buffer(view), len(view), count,
                                ffi.cast("lk_header_span *", ffi.from_buffer(out)), count, err),
          err, context="record headers")
    return out


class RecordColumns:
    """Records to encode, as columns (see lk_records_in in logkernel.h).

    Holds the Python objects that own the memory the C struct points at, so they live as
    long as the struct. Build once, encode once.
    """

    __slots__ = ("_keep", "struct")

    def __init__(self, count: int, *, keys: bytes = b"", key_lengths: Any = None,
                 values: bytes = b"", value_lengths: Any = None, timestamps: Any = None,
                 offset_deltas: Any = None, header_counts: Any = None,
                 header_lengths: Any = None, header_data: bytes = b"") -> None:
        fields: dict[str, Any] = {"count": count, "keys_size": len(keys),
                                  "values_size": len(values),
                                  "header_data_size": len(header_data)}
        keep: list[Any] = []
        for name, obj, ctype, itemsize, per_record in (
                ("keys", keys, "uint8_t[]", 1, False),
                ("values", values, "uint8_t[]", 1, False),
                ("header_data", header_data, "uint8_t[]", 1, False),
                ("key_lengths", key_lengths, "int32_t[]", 4, True),
                ("value_lengths", value_lengths, "int32_t[]", 4, True),
                ("timestamps", timestamps, "int64_t[]", 8, True),
                ("offset_deltas", offset_deltas, "int32_t[]", 4, True),
                ("header_counts", header_counts, "int32_t[]", 4, True),
                ("header_lengths", header_lengths, "int32_t[]", 4, False)):
            if obj is None or (itemsize == 1 and not obj):
                continue  # NULL: the C side treats a missing column as documented
            view = memoryview(obj)
            if view.itemsize != itemsize:
                # The C side reads elements of this size: a narrower array would be read
                # past its end.
                raise TypeError(f"the {name} column needs {itemsize}-byte items, got "
                                f"{view.itemsize}-byte items")
            if per_record and len(view) != count:
                raise ValueError(f"{name} has {len(view)} entries for {count} records")
            cdata = ffi.from_buffer(ctype, obj)
            keep.append(cdata)
            fields[name] = cdata
        if header_lengths is not None:
            fields["header_lengths_count"] = len(header_lengths)
        s = ffi.new("lk_records_in *", fields)
        self.struct = s
        self._keep = (keep, keys, values, header_data)


def _params(base_offset: int, partition_leader_epoch: int, attributes: int, base_timestamp: int,
            producer_id: int, producer_epoch: int, base_sequence: int) -> Any:
    return ffi.new("lk_batch_params *", {
        "base_offset": base_offset, "partition_leader_epoch": partition_leader_epoch,
        "attributes": attributes, "base_timestamp": base_timestamp,
        "producer_id": producer_id, "producer_epoch": producer_epoch,
        "base_sequence": base_sequence,
    })


# Encoding writes into a per-thread scratch buffer, then copies the exact bytes out: a
# fresh worst-case-sized buffer per batch made glibc map and unmap ~128 KiB per call, and
# the page faults doubled the median encode time (measured: 97 -> 186 us per 1,000 x
# 100 B). Batches past SCRATCH_LIMIT get a buffer of their own so one huge batch does not
# pin its size in memory for the life of the thread.
SCRATCH_LIMIT = 4 * 1024 * 1024
_scratch_local = threading.local()


def _scratch(size: int) -> tuple[bytearray, Any]:
    """A writable buffer of at least ``size`` bytes and its C pointer."""
    if size > SCRATCH_LIMIT:
        buffer = bytearray(size)
        return buffer, ffi.from_buffer(buffer)
    cached = getattr(_scratch_local, "buffer", None)
    if cached is None or len(cached[0]) < size:
        buffer = bytearray(max(size, 64 * 1024))
        cached = (buffer, ffi.from_buffer(buffer))
        _scratch_local.buffer = cached
    return cached


def encode_batch(columns: RecordColumns, *, base_offset: int = 0, partition_leader_epoch: int = -1,
                 attributes: int = 0, base_timestamp: int = 0, producer_id: int = -1,
                 producer_epoch: int = -1, base_sequence: int = -1) -> memoryview:
    """One complete uncompressed batch (header, records, CRC). O(total bytes).

    Returns a view of this thread's scratch buffer, valid until the thread encodes again:
    copy it (``bytes(view)``) before that. Dropping the inputs before copying lets the
    allocator reuse their memory for the copy."""
    bound = lib.lk_batch_encoded_bound(columns.struct)
    if bound < 0:
        raise ValueError("record count must not be negative")
    out, pointer = _scratch(bound)
    out_len = ffi.new("size_t *")
    err = ffi.new("lk_error *")
    params = _params(base_offset, partition_leader_epoch, attributes, base_timestamp, producer_id,
                     producer_epoch, base_sequence)
    check(lib.lk_batch_encode(params, columns.struct, pointer, bound, out_len, err),
          err, context="encoding a record batch")
    return memoryview(out)[:out_len[0]]


def encode_records(columns: RecordColumns, base_timestamp: int) -> bytes:
    """Only the records section, for callers that compress it before framing."""
    bound = lib.lk_batch_encoded_bound(columns.struct)
    out = bytearray(bound)
    out_len = ffi.new("size_t *")
    err = ffi.new("lk_error *")
    check(lib.lk_records_encode(columns.struct, base_timestamp, ffi.from_buffer(out), bound,
                                out_len, err), err, context="encoding records")
    del out[out_len[0]:]
    return bytes(out)


def frame_batch(records: Buffer, record_count: int, last_offset_delta: int, max_timestamp: int, *,
                base_offset: int = 0, partition_leader_epoch: int = -1, attributes: int = 0,
                base_timestamp: int = 0, producer_id: int = -1, producer_epoch: int = -1,
                base_sequence: int = -1) -> bytes:
    """Wraps an encoded (possibly compressed) records section in a batch header + CRC."""
    view = memoryview(records).cast("B")
    out = bytearray(len(view) + BATCH_HEADER_SIZE)
    out_len = ffi.new("size_t *")
    err = ffi.new("lk_error *")
    params = _params(base_offset, partition_leader_epoch, attributes, base_timestamp, producer_id,
                     producer_epoch, base_sequence)
    check(lib.lk_batch_frame(params, record_count, last_offset_delta, max_timestamp,
                             ffi.from_buffer(view), len(view), ffi.from_buffer(out), len(out),
                             out_len, err), err, context="framing a record batch")
    return bytes(out)


def encode_control_batch(control_type: int, coordinator_epoch: int, timestamp: int, *,
                         base_offset: int = 0, partition_leader_epoch: int = -1,
                         producer_id: int = -1, producer_epoch: int = -1) -> bytes:
    """A transaction marker (COMMIT=1 / ABORT=0) as a control batch."""
    out = bytearray(lib.LK_CONTROL_BATCH_SIZE)
    out_len = ffi.new("size_t *")
    err = ffi.new("lk_error *")
    params = _params(base_offset, partition_leader_epoch, 0, timestamp, producer_id,
                     producer_epoch, -1)
    check(lib.lk_control_batch_encode(params, control_type, coordinator_epoch, timestamp,
                                      ffi.from_buffer(out), len(out), out_len, err),
          err, context="encoding a control batch")
    return bytes(out[: out_len[0]])


def parse_control_record(key: bytes | None, value: bytes | None) -> tuple[int, int]:
    """(control type, coordinator epoch or -1) of a control record."""
    control_type = ffi.new("int16_t *")
    epoch = ffi.new("int32_t *")
    err = ffi.new("lk_error *")
    k = b"" if key is None else key
    v = b"" if value is None else value
    check(lib.lk_control_record_parse(ffi.from_buffer(k), -1 if key is None else len(k),
                                      ffi.from_buffer(v), -1 if value is None else len(v),
                                      control_type, epoch, err), err, context="control record")
    return int(control_type[0]), int(epoch[0])


def update_crc(batch: bytearray | memoryview) -> None:
    """Recomputes the CRC of a batch whose CRC-covered fields the caller changed, in place."""
    err = ffi.new("lk_error *")
    view = memoryview(batch).cast("B")
    check(lib.lk_batch_update_crc(ffi.from_buffer(view, require_writable=True), len(view), err),
          err, context="updating a batch CRC")


def validate_record_set(data: Buffer, flags: int = VALIDATE_CRC) -> int:
    """Checks that ``data`` is whole batches, each valid (their base offsets are not
    compared: a producer's record set may carry several batches based at 0). Returns the
    number of batches; raises CorruptRecordError naming the batch and byte position."""
    view = memoryview(data).cast("B")
    position = batches = 0
    while position < len(view):
        try:
            header = validate_batch(view[position:], flags)
        except errors.CorruptRecordError as exc:
            raise exc.in_record_set(position) from exc
        position += header.size
        batches += 1
    return batches


# ---------------------------------------------------------------------------------------
# Headers for single-record appends, and columnar decoding
# ---------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """Zig-zag LEB128 of an int32, as Kafka writes lengths inside records."""
    z = (value << 1) ^ (value >> 31)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# Lengths below 64 (and -1) are one byte; most header keys and values are short, so those
# come from a table instead of the loop.
_SHORT_VARINTS = {n: _varint(n) for n in range(-1, 64)}


def encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> tuple[bytes, int]:
    """The headers section of a record (``Segment.append_record``'s ``headers``) and the
    number of headers in it: for each header, keyLength varint | key (UTF-8; bytes that are
    not valid UTF-8 round-trip through surrogate escapes, as ``records`` does) |
    valueLength varint (-1 for None) | value. O(total size), ~1 us per header.
    Raises TypeError for a key that is not str or a value that is not bytes-like/None."""
    parts: list[bytes] = []
    varint = _SHORT_VARINTS.get
    for key, value in headers:
        if not isinstance(key, str):
            raise TypeError(f"header keys are str, got {type(key).__name__}")
        k = key.encode("utf-8", "surrogateescape")
        parts.append(varint(len(k)) or _varint(len(k)))
        parts.append(k)
        if value is None:
            parts.append(b"\x01")  # -1, zig-zag
            continue
        if not isinstance(value, bytes):
            if not isinstance(value, (bytearray, memoryview)):
                raise TypeError(f"header values are bytes or None, got {type(value).__name__}")
            value = bytes(memoryview(value).cast("B"))
        parts.append(varint(len(value)) or _varint(len(value)))
        parts.append(value)
    return b"".join(parts), len(headers)


COLUMNS_STOP_NAMES = {
    lib.LK_COLUMNS_END: "end",
    lib.LK_COLUMNS_FULL: "full",
    lib.LK_COLUMNS_COMPRESSED: "compressed",
    lib.LK_COLUMNS_LIMIT: "limit",
    lib.LK_COLUMNS_TORN: "torn",
    lib.LK_COLUMNS_CORRUPT: "corrupt",
}
_STOP_NAMES = tuple(COLUMNS_STOP_NAMES[i] for i in range(len(COLUMNS_STOP_NAMES)))
_INT64_MAX = 2**63 - 1
# Without max_records the columns are sized from the buffer alone (a record takes at least 7
# bytes after a 61-byte batch header): free, but up to 6.3x the buffer of address space
# (only rows written are ever touched). Past this many rows (64 MiB of columns) the exact
# count from a pass over the batch headers is worth its cost (about one cache miss per
# batch) to keep huge reads from reserving gigabytes.
_UNSIZED_ROWS_LIMIT = (64 << 20) // lib.LK_COLUMNS_ROW_BYTES
_RESULT = struct.Struct("@qqqi")  # lk_columns_result: records, position, next_offset, stop
_columns_local = threading.local()


class Columns:
    """Records decoded by ``decode_columns``, one numpy array per field, ``count`` long.

    Positions (``*_offsets``) are byte offsets into the buffer that was decoded; lengths
    are -1 for null. The arrays are views of one block allocated for this call: they stay
    valid however long they are kept, and keep that block alive.

    ``stop`` says why decoding ended ("end", "full", "compressed", "limit", "torn",
    "corrupt"; see lk_columns_stop in native/logkernel.h), ``position`` where (the start of
    the batch concerned, or the buffer's length for "end"), and ``next_offset`` the offset
    to read next. ``error`` is the CorruptRecordError to raise for "corrupt" (the records
    before the bad batch are still here), else None."""

    __slots__ = ("count", "error", "headers_counts", "headers_lengths", "headers_offsets",
                 "key_lengths", "key_offsets", "next_offset", "offsets", "position", "stop",
                 "timestamps", "value_lengths", "value_offsets")

    offsets: np.ndarray          # int64: the record's offset
    timestamps: np.ndarray       # int64: CreateTime, or the batch's LogAppendTime
    key_offsets: np.ndarray      # int32 positions and lengths (-1: null) in the buffer
    key_lengths: np.ndarray
    value_offsets: np.ndarray
    value_lengths: np.ndarray
    headers_offsets: np.ndarray  # the record's encoded headers (decode_headers reads them)
    headers_lengths: np.ndarray
    headers_counts: np.ndarray
    count: int
    position: int
    next_offset: int
    stop: str
    error: errors.CorruptRecordError | None

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (f"Columns(count={self.count}, stop={self.stop!r}, position={self.position}, "
                f"next_offset={self.next_offset})")


_INT32_COLUMNS = ("key_offsets", "key_lengths", "value_offsets", "value_lengths",
                  "headers_offsets", "headers_lengths", "headers_counts")


def _columns_scratch() -> tuple[Any, Any, Any, Any, Any, Any]:
    """This thread's lk_columns_scratch (out-parameters, reused call after call; the arrays
    they point at are new each call) as the pointers the calls take, resolved once:
    (columns, result, err, result bytes, err struct)."""
    scratch = getattr(_columns_local, "scratch", None)
    if scratch is None:
        block = ffi.new("lk_columns_scratch *")
        result = ffi.addressof(block, "result")
        scratch = _columns_local.scratch = (ffi.addressof(block, "columns"), result,
                                            ffi.addressof(block, "err"), ffi.buffer(result),
                                            block.err, block)  # block owns the memory
    return scratch


def decode_columns(data: Buffer, min_offset: int = 0, max_offset: int = _INT64_MAX,
                   max_records: int | None = None, validate_crc: bool = True) -> Columns:
    """Decodes the records of the consecutive batches at the start of ``data`` into columns.

    Every batch is validated (CRC when ``validate_crc``, then every record) before any of
    its records is returned. Records below ``min_offset`` are skipped, a batch reaching
    ``max_offset`` (exclusive) ends decoding ("limit"), control batches are skipped, a
    compressed batch stops decoding ("compressed": decompress ``data[position:]``'s first
    batch and go on after it), and at most ``max_records`` records are returned ("full":
    call again with ``data[position:]`` and ``min_offset=next_offset``); None sizes the
    columns for every record ``data`` holds. A buffer cut inside a batch is not an error
    ("torn"). A damaged batch gives stop "corrupt" and ``error`` set, with the records
    before it returned: nothing raises for bad bytes.
    Cost: O(bytes) in C, no per-record Python work; a fixed cost per call of one
    allocation, four C calls and nine array views (~6 us on a 2-vCPU VM). Without
    ``max_records``, a buffer of more than ~10 MB is first walked header by header to size
    the columns (about as costly as decoding, for batches of one small record).
    Raises ValueError for a buffer of 2 GiB or more (positions are int32) or a negative
    ``max_records``; TypeError if ``data`` has no buffer interface."""
    import numpy as np

    view = data if type(data) is bytes else memoryview(data).cast("B")
    size = len(view)
    pointer = ffi.from_buffer(view)
    capacity = max(size - BATCH_HEADER_SIZE, 0) // 7
    if max_records is not None:
        if max_records < 0:
            raise ValueError(f"max_records must be >= 0, not {max_records}")
        capacity = min(capacity, max_records)
    elif capacity > _UNSIZED_ROWS_LIMIT:
        capacity = lib.lk_columns_bound(pointer, size)
    # One int64 block; the int32 columns are read through one int32 view of it.
    block = np.empty((capacity * lib.LK_COLUMNS_ROW_BYTES + 7) >> 3, dtype=np.int64)
    columns, result, err, result_bytes, err_struct, _ = _columns_scratch()
    lib.lk_columns_layout(columns, ffi.from_buffer(block), capacity)
    rc = lib.lk_decode_columns(pointer, size, min_offset, max_offset,
                               VALIDATE_CRC if validate_crc else 0, columns, result, err)
    out = Columns()
    n, out.position, out.next_offset, stop = _RESULT.unpack_from(result_bytes)
    out.count = n
    out.stop = _STOP_NAMES[stop]
    out.error = None
    if rc:
        if rc == lib.LK_ERR_ARGUMENT:
            raise ValueError(f"decode_columns: a {size}-byte buffer cannot be decoded into "
                             "columns (positions are int32: keep reads below 2 GiB)")
        error = _exception(rc, err_struct, context="record batch")
        if not isinstance(error, errors.CorruptRecordError):
            raise error  # not a verdict on the bytes: a bug, reported as such
        out.error = error
    out.offsets = block[:n]
    out.timestamps = block[capacity:capacity + n]
    int32s = block.view(np.int32)
    for i, name in enumerate(_INT32_COLUMNS):  # in lk_columns_layout's order
        at = (4 + i) * capacity
        setattr(out, name, int32s[at:at + n])
    return out


# ---------------------------------------------------------------------------------------
# Log scan and indexes
# ---------------------------------------------------------------------------------------

SCAN_STOP_NAMES = {
    lib.LK_SCAN_END: "end",
    lib.LK_SCAN_ZEROS: "zeros",
    lib.LK_SCAN_TORN: "torn",
    lib.LK_SCAN_CORRUPT: "corrupt",
    lib.LK_SCAN_OFFSET: "offset",
}


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Where the valid prefix of a run of batches ends, and why (see lk_scan_result)."""

    valid_bytes: int
    batches: int
    records: int
    first_offset: int
    next_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int
    stop_reason: str      # "end", "zeros", "torn", "corrupt" or "offset"
    stop_detail: str      # the validator's sentence for corrupt/torn stops, else ""
    stop_position: int    # absolute position of the problem inside the rejected batch, or -1


def _scan_from_c(r: Any) -> ScanResult:
    reason = SCAN_STOP_NAMES.get(r.stop_reason, "corrupt")
    detail = ""
    position = -1
    if r.stop_reason in (lib.LK_SCAN_CORRUPT, lib.LK_SCAN_TORN, lib.LK_SCAN_OFFSET):
        detail = _c_string(r.stop_error.what)
        position = int(r.stop_error.position)
    return ScanResult(int(r.valid_bytes), int(r.batches), int(r.records), int(r.first_offset),
                      int(r.next_offset), int(r.max_timestamp), int(r.offset_of_max_timestamp),
                      reason, detail, position)


def scan_log(data: Buffer, start: int = 0, min_offset: int = 0, *, flags: int = VALIDATE_CRC,
             max_batch_size: int = 0) -> ScanResult:
    """Walks consecutive batches in ``data`` from ``start``; never raises on bad bytes,
    which only end the valid prefix. O(bytes scanned)."""
    view = memoryview(data).cast("B")
    out = ffi.new("lk_scan_result *")
    check(lib.lk_log_scan(ffi.from_buffer(view), len(view), start, min_offset, max_batch_size,
                          flags, out), context="scanning a log")
    return _scan_from_c(out)


# ---------------------------------------------------------------------------------------
# Segments
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    base_offset: int
    size: int
    flushed_size: int
    next_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int
    index_entries: int
    time_index_entries: int
    log_capacity: int
    writable: bool
    needs_recovery: bool  # bytes after the last batch that are neither a batch nor zeros


_append_record = lib.lk_segment_append_record  # bound once: called once per produced record


_NULL = ffi.NULL
NULL = ffi.NULL  # a null pointer for record_appender's key, value or headers


def _record_bytes(data: Any, name: str) -> bytes | None:
    """A key, value or headers section as bytes or None (append_record's slow path: cffi
    takes only bytes for ``const char *``)."""
    if data is None or type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(memoryview(data).cast("B"))
    raise TypeError(f"a record's {name} is bytes or None, got {type(data).__name__}"
                    + (" (encode strings first)" if isinstance(data, str) else ""))


class Segment:
    """A memory-mapped segment: ``<base>.log`` with its ``.index`` and ``.timeindex``.

    Thread-safety: none; the partition log serialises calls under its lock.

    Reads return copies. A view into the map would fault (SIGBUS, killing the process) once
    recovery, truncation or another handle cut the file under it, and nothing in Python can
    pin a memoryview's pages; copying is the safe price. Zero-copy paths belong in C, under
    the partition's lock (scanning, index lookups), or in sendfile from the file itself.
    One process owns a segment's files at a time.
    """

    def __init__(self, log_path: str | os.PathLike[str], index_path: str | os.PathLike[str] | None,
                 time_index_path: str | os.PathLike[str] | None, *, base_offset: int,
                 writable: bool, create: bool = False, reset_indexes: bool = False,
                 log_capacity: int = 0,
                 index_capacity: int = 10 * 1024 * 1024, grow_step: int = 8 * 1024 * 1024,
                 index_interval_bytes: int = 4096, max_batch_size: int = 0) -> None:
        self.path = os.fspath(log_path)
        if writable and log_capacity <= 0:
            raise ValueError("a writable segment needs log_capacity > 0: the bytes of address "
                             "space to reserve (segment.bytes plus one maximum batch)")
        if writable and grow_step <= 0:
            raise ValueError("grow_step must be > 0")
        if (create or reset_indexes) and not writable:
            raise ValueError("create and reset_indexes need writable=True")
        if base_offset < 0:
            raise ValueError(f"base_offset must be >= 0, not {base_offset}")
        config = ffi.new("lk_segment_config *", {
            "base_offset": base_offset, "log_capacity": log_capacity,
            "index_capacity": index_capacity, "grow_step": grow_step,
            "index_interval_bytes": index_interval_bytes, "max_batch_size": max_batch_size,
            "flags": ((lib.LK_SEGMENT_WRITABLE if writable else 0)
                      | (lib.LK_SEGMENT_CREATE if create else 0)
                      | (lib.LK_SEGMENT_RESET_INDEXES if reset_indexes else 0)),
        })
        handle = ffi.new("lk_segment **")

        def c_path(p: str | os.PathLike[str] | None) -> Any:
            return ffi.NULL if p is None else os.fsencode(p)

        check(lib.lk_segment_open(c_path(log_path), c_path(index_path), c_path(time_index_path),
                                  config, handle), context="opening segment", path=self.path)
        self._handle = handle[0]

    def _live(self) -> Any:
        if self._handle is None:
            raise errors.ClosedError(f"segment {self.path} is closed")
        return self._handle

    def info(self) -> SegmentInfo:
        out = ffi.new("lk_segment_info *")
        check(lib.lk_segment_get_info(self._live(), out), path=self.path)
        return SegmentInfo(int(out.base_offset), int(out.size), int(out.flushed_size),
                           int(out.next_offset), int(out.max_timestamp),
                           int(out.offset_of_max_timestamp), int(out.index_entries),
                           int(out.time_index_entries), int(out.log_capacity), bool(out.writable),
                           bool(out.needs_recovery))

    def append(self, record_set: Buffer, base_offset: int, *, validated: bool = False
               ) -> tuple[int, int]:
        """Appends whole batches with offsets from ``base_offset``; returns (position,
        next_offset). Not durable until ``flush``. O(len).

        Every batch's CRC is checked first unless the caller already did (``validated``):
        one bad batch written and flushed would make the next recovery drop it and every
        good batch after it."""
        view = memoryview(record_set).cast("B")
        if not validated:
            validate_record_set(view)
        position = ffi.new("int64_t *")
        next_offset = ffi.new("int64_t *")
        rc = lib.lk_segment_append(self._live(), ffi.from_buffer(view), len(view), base_offset,
                                   position, next_offset)
        if rc == lib.LK_ERR_OFFSET_ORDER:
            info = self.info()
            raise errors.OffsetOrderError(
                f"cannot append at offset {base_offset} to {self.path}: its next offset is "
                f"{info.next_offset}, and a batch's offsets must stay within 2^31-1 of the "
                f"segment's base offset {info.base_offset}")
        check(rc, context="appending", path=self.path)
        return int(position[0]), int(next_offset[0])

    def append_record(self, offset: int, timestamp: int, attributes: int,
                      partition_leader_epoch: int, key: bytes | None, value: bytes | None,
                      headers: bytes | None = None, headers_count: int = 0,
                      producer: tuple[int, int, int] | None = None) -> int:
        """Appends one record as its own batch at ``offset`` and returns the segment's new
        size (the end of the batch); the producer's per-record path (see
        lk_segment_append_record).

        ``key``/``value``: bytes or None (null). ``headers``: the encoded headers section
        from ``encode_headers`` and its ``headers_count``. ``attributes``: 0, or 8 for
        LogAppendTime. The batch is encoded straight into the map, CRC included; not
        durable until ``flush``. O(record size): one C call, nothing allocated in Python
        (measured on a 2-vCPU VM: ~1.5 us a call for a 100-byte value, ~0.35 us of it in C,
        mostly the kernel faulting in the map's fresh pages).
        Raises SegmentFullError (roll), OffsetOrderError, CorruptRecordError (the batch
        is larger than max_batch_size), NoSpaceError/StorageError, NeedsRecoveryError,
        ClosedError, ValueError (attributes, lengths or headers the contract refuses),
        TypeError (key, value or headers not bytes). Nothing is written when it raises.

        ``producer``: (producer id, epoch, base sequence) of an idempotent producer, stamped
        on the batch (lk_segment_append_producer_record); ``attributes`` may then also have
        the transactional bit (16)."""
        handle = self._handle
        if handle is None:
            raise errors.ClosedError(f"segment {self.path} is closed")
        if producer is not None:
            key, value, headers = (_record_bytes(key, "key"), _record_bytes(value, "value"),
                                   _record_bytes(headers, "headers"))
            rc = lib.lk_segment_append_producer_record(
                handle, offset, timestamp, attributes, partition_leader_epoch, *producer,
                _NULL if key is None else key, -1 if key is None else len(key),
                _NULL if value is None else value, -1 if value is None else len(value),
                _NULL if headers is None else headers, headers_count,
                0 if headers is None else len(headers))
            if rc < 0:
                self._append_record_failed(int(rc), offset, attributes, headers_count)
            return rc
        try:
            rc = _append_record(
                handle, offset, timestamp, attributes, partition_leader_epoch,
                _NULL if key is None else key, -1 if key is None else len(key),
                _NULL if value is None else value, -1 if value is None else len(value),
                _NULL if headers is None else headers, headers_count,
                0 if headers is None else len(headers))
        except TypeError:
            key, value, headers = (_record_bytes(key, "key"), _record_bytes(value, "value"),
                                   _record_bytes(headers, "headers"))
            rc = _append_record(
                handle, offset, timestamp, attributes, partition_leader_epoch,
                _NULL if key is None else key, -1 if key is None else len(key),
                _NULL if value is None else value, -1 if value is None else len(value),
                _NULL if headers is None else headers, headers_count,
                0 if headers is None else len(headers))
        if rc < 0:
            self._append_record_failed(int(rc), offset, attributes, headers_count)
        return rc

    def record_appender(self) -> Callable[..., int]:
        """lk_segment_append_record bound to this segment, for the one loop hot enough to
        skip ``append_record``'s checks (the partition log's per-record path, ~0.5 us
        less per record). Called as ``f(offset, timestamp, attributes, epoch, key, key_len,
        value, value_len, headers, headers_count, headers_len)`` with bytes or ``NULL``;
        returns the new end or a negative status (then call ``append_record`` with the same
        record for the exception: a failed call wrote nothing). Valid only until this
        segment is closed: the caller must drop it first."""
        return functools.partial(_append_record, self._live())

    def _append_record_failed(self, rc: int, offset: int, attributes: int,
                              headers_count: int) -> None:
        if rc == lib.LK_ERR_OFFSET_ORDER:
            info = self.info()
            raise errors.OffsetOrderError(
                f"cannot append a record at offset {offset} to {self.path}: its next offset is "
                f"{info.next_offset}, and offsets must stay within 2^31-1 of the segment's "
                f"base offset {info.base_offset}")
        if rc == lib.LK_ERR_ARGUMENT:
            if attributes & ~lib.LK_ATTR_LOG_APPEND_TIME:
                why = (f"attributes {attributes:#x}: a single-record append takes only the "
                       "LogAppendTime bit (8); compressed or transactional batches go through "
                       "append()")
            else:
                why = (f"the headers section is not {headers_count} encoded headers (build "
                       "it with encode_headers), or a length is out of range")
            raise ValueError(f"appending a record to {self.path}: {why}")
        if rc == lib.LK_ERR_BAD_LENGTH:
            raise errors.CorruptRecordError(
                f"appending a record to {self.path}: its batch would be larger than the "
                "segment's max_batch_size; nothing was written", -1, -1, rc)
        check(rc, context="appending a record", path=self.path)

    def flush(self) -> None:
        """msync + fdatasync of everything appended. O(dirty bytes)."""
        check(lib.lk_segment_flush(self._live()), context="flushing", path=self.path)

    def recover(self, flags: int = VALIDATE_CRC) -> ScanResult:
        """Keeps exactly the valid prefix, truncates the rest, rebuilds the indexes."""
        out = ffi.new("lk_scan_result *")
        check(lib.lk_segment_recover(self._live(), flags, out), context="recovering",
              path=self.path)
        return _scan_from_c(out)

    def rebuild_indexes(self) -> None:
        check(lib.lk_segment_rebuild_indexes(self._live()), context="rebuilding indexes",
              path=self.path)

    def seal(self) -> None:
        check(lib.lk_segment_seal(self._live()), context="sealing", path=self.path)

    def truncate_to_offset(self, offset: int) -> None:
        check(lib.lk_segment_truncate_to_offset(self._live(), offset), context="truncating",
              path=self.path)

    def find_offset(self, target: int) -> tuple[int, int]:
        """(position, base offset) of the batch holding ``target``. O(log n) + <= 1 interval."""
        position = ffi.new("int64_t *")
        base = ffi.new("int64_t *")
        check(lib.lk_segment_find_offset(self._live(), target, position, base),
              context=f"offset {target}", path=self.path)
        return int(position[0]), int(base[0])

    def find_timestamp(self, timestamp: int) -> tuple[int, int]:
        """(position, base offset) of the first batch with maxTimestamp >= ``timestamp``."""
        position = ffi.new("int64_t *")
        base = ffi.new("int64_t *")
        check(lib.lk_segment_find_timestamp(self._live(), timestamp, position, base),
              context=f"timestamp {timestamp}", path=self.path)
        return int(position[0]), int(base[0])

    def read(self, position: int, size: int) -> bytes:
        """A copy of ``size`` bytes at ``position`` (clipped to the segment's end). O(size)."""
        handle = self._live()
        end = self.info().size
        if position < 0 or position > end:
            raise errors.OffsetOutOfRangeError(f"position {position} outside 0..{end} of {self.path}")
        n = min(end - position, max(size, 0))
        if n == 0:
            return b""
        return ffi.buffer(lib.lk_segment_data(handle) + position, n)[:]

    def close(self) -> None:
        """Flushes nothing (call ``flush`` for durability); seals a writable segment (trims
        its files) and releases the files and the map."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        check(lib.lk_segment_close(handle), context="closing", path=self.path)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None:
            lib.lk_segment_close(self._handle)
            self._handle = None


# ---------------------------------------------------------------------------------------
# Log cleaner: XXH64, the offset map and the two passes (native/cleaner.c)
# ---------------------------------------------------------------------------------------

OFFSET_MAP_ENTRY_BYTES = lib.LK_OFFSET_MAP_ENTRY_BYTES
CLEAN_END = lib.LK_CLEAN_END
CLEAN_COMPRESSED = lib.LK_CLEAN_COMPRESSED
CLEAN_FULL = lib.LK_CLEAN_FULL
CLEAN_LIMIT = lib.LK_CLEAN_LIMIT
INT64_MAX = 2**63 - 1


def xxh64(data: Buffer, seed: int = 0) -> int:
    """XXH64 of ``data`` (the hash the cleaner's offset map keys on)."""
    view = memoryview(data).cast("B")
    return int(lib.lk_xxh64(ffi.from_buffer(view), len(view), seed))


class OffsetMap:
    """The cleaner's key -> latest offset map, in one buffer of ``memory_bytes`` allocated
    here and reused by every pass (24 bytes a key). Its table starts small and doubles
    inside the buffer as keys arrive, so cleaning a log of few keys neither zeroes nor
    touches the whole buffer (untouched pages of the allocation never become resident)
    and its lookups stay in cache."""

    def __init__(self, memory_bytes: int, load_factor: float = 0.9) -> None:
        if memory_bytes < OFFSET_MAP_ENTRY_BYTES:
            raise errors.ConfigError(
                f"the cleaner's dedupe buffer of {memory_bytes} bytes cannot hold one key "
                f"({OFFSET_MAP_ENTRY_BYTES} bytes); raise log.cleaner.dedupe.buffer.size")
        self.memory_bytes = memory_bytes
        self.load_factor = load_factor
        self._memory = ffi.new("uint64_t[]", (memory_bytes + 7) // 8)  # calloc'd, 8-aligned
        self._map = ffi.new("lk_offset_map *")
        self.reset(0)

    def reset(self, keys: int | None) -> None:
        """Empties the map, its table sized for about ``keys`` keys (None: the whole
        buffer); it grows as keys arrive, within the buffer."""
        initial = self.memory_bytes if keys is None else max(keys, 0)
        check(lib.lk_offset_map_init(self._map, self._memory, self.memory_bytes,
                                     self.load_factor, initial),
              context="initialising the cleaner's offset map")

    @property
    def entries(self) -> int:
        return int(self._map.entries)

    @property
    def limit(self) -> int:
        """The most keys the map takes in its current size."""
        return int(self._map.limit)

    @property
    def capacity(self) -> int:
        """Slots of the table now."""
        return int(self._map.capacity)

    @property
    def grown(self) -> int:
        return int(self._map.grown)

    @property
    def whole(self) -> bool:
        """The table spans the whole buffer (it cannot take more keys than now)."""
        return int(self._map.capacity) == self.memory_bytes // OFFSET_MAP_ENTRY_BYTES

    def put(self, key: bytes, offset: int) -> bool:
        """Records ``offset`` as the latest of ``key``; False if the map is full."""
        rc = lib.lk_offset_map_put(self._map, key, len(key), offset)
        if rc == lib.LK_ERR_BUFFER_TOO_SMALL:
            return False
        check(rc, context="putting a key in the offset map")
        return True

    def get(self, key: bytes) -> int:
        """The latest offset recorded for ``key``, or -1."""
        return int(lib.lk_offset_map_get(self._map, key, len(key)))

    @property
    def c_map(self) -> Any:
        return self._map


@dataclass
class MapPass:
    """Where one call of the map pass stopped (see lk_map_result)."""

    position: int
    next_offset: int
    stop: int


def cleaner_map(offset_map: OffsetMap, data: Buffer, from_offset: int, stop_offset: int,
                result: Any, *, aborted: AbortedList | None = None, context: str = ""
                ) -> MapPass:
    """One call of the map pass over the whole batches in ``data`` (see lk_cleaner_map).
    ``result`` is an ``lk_map_result *`` from ``new_map_result()`` that accumulates the
    record count over calls. Batches of the ``aborted`` transactions put no key in the
    map."""
    view = memoryview(data).cast("B")
    err = ffi.new("lk_error *")
    aborted = aborted or NO_ABORTED
    check(lib.lk_cleaner_map(offset_map.c_map, ffi.from_buffer(view), len(view), from_offset,
                             stop_offset, aborted.pointer, aborted.count, result, err), err,
          context=context)
    return MapPass(int(result.position), int(result.next_offset), int(result.stop))


def cleaner_producers(producers: OffsetMap, segment: Segment, size: int, result: Any, *,
                      context: str = "") -> MapPass:
    """The producer pass (see lk_cleaner_producers) over the first ``size`` bytes of
    ``segment`` (whole batches), read in place from its map: no copy, batch headers only.
    ``result`` is an ``lk_map_result *`` from ``new_map_result()``; stop FULL means
    ``producers`` needs more memory (walk again with a bigger one)."""
    handle = segment._live()
    size = min(size, segment.info().size)
    err = ffi.new("lk_error *")
    check(lib.lk_cleaner_producers(producers.c_map, lib.lk_segment_data(handle), size, result,
                                   err), err, context=context, path=segment.path)
    return MapPass(int(result.position), int(result.next_offset), int(result.stop))


def producers_buffer(producers: OffsetMap, data: Buffer, result: Any) -> MapPass:
    """The producer pass over the whole batches of a buffer (tests, small logs)."""
    view = memoryview(data).cast("B")
    err = ffi.new("lk_error *")
    check(lib.lk_cleaner_producers(producers.c_map, ffi.from_buffer(view), len(view), result,
                                   err), err, context="walking producers' batches")
    return MapPass(int(result.position), int(result.next_offset), int(result.stop))


def new_map_result() -> Any:
    result = ffi.new("lk_map_result *")
    result.last_offset = -1
    return result


def new_clean_result() -> Any:
    result = ffi.new("lk_clean_result *")
    result.next_horizon_ms = INT64_MAX
    result.last_offset = -1
    return result


class FilterBuffers:
    """The filter pass's output and per-record scratch, grown when a batch needs more, and
    the transactions it applies (``set_transactions``)."""

    def __init__(self, out_bytes: int) -> None:
        self.out = bytearray(out_bytes)
        self.keep = bytearray(max(out_bytes // 8, 1024))
        self.params = ffi.new("lk_clean_params *")
        self.err = ffi.new("lk_error *")
        self._aborted: AbortedList = NO_ABORTED
        self._producers: OffsetMap | None = None

    def set_transactions(self, aborted: AbortedList | None = None,
                         producers: OffsetMap | None = None) -> None:
        """What the next filter calls apply: batches of the ``aborted`` transactions lose
        their records, and with ``producers`` (the producer pass's map of the range being
        cleaned) each producer's last batch is kept, empty if need be. Held until the next
        call: the C side points at both."""
        self._aborted = aborted or NO_ABORTED
        self._producers = producers
        self.params.aborted = self._aborted.pointer
        self.params.aborted_count = self._aborted.count
        self.params.producers = producers.c_map if producers is not None else ffi.NULL

    def grow_for(self, batch: Buffer) -> None:
        header = parse_header(batch)
        count = max(header.record_count, 0)
        self.out = bytearray(max(len(self.out), header.size + 10 * count))
        self.keep = bytearray(max(len(self.keep), count))


def cleaner_filter(offset_map: OffsetMap, data: Buffer, now_ms: int, new_horizon_ms: int,
                   buffers: FilterBuffers, result: Any, *, map_end: int = INT64_MAX,
                   context: str = "") -> tuple[int, int, int]:
    """One call of the filter pass (see lk_cleaner_filter): returns (input consumed, bytes
    written to ``buffers.out``, stop). Records at or past ``map_end`` are kept as they are.
    Grows the buffers if the first batch does not fit."""
    view = memoryview(data).cast("B")
    buffers.params.now_ms = now_ms
    buffers.params.new_horizon_ms = min(new_horizon_ms, INT64_MAX)
    buffers.params.map_end = map_end
    while True:
        rc = lib.lk_cleaner_filter(offset_map.c_map, ffi.from_buffer(view), len(view),
                                   buffers.params, ffi.from_buffer(buffers.out), len(buffers.out),
                                   ffi.from_buffer(buffers.keep), len(buffers.keep), result,
                                   buffers.err)
        if rc != lib.LK_ERR_BUFFER_TOO_SMALL:
            break
        buffers.grow_for(view)
    check(rc, buffers.err, context=context)
    return int(result.position), int(result.written), int(result.stop)


def _triple(aborted: Any) -> tuple[int, int, int]:
    if hasattr(aborted, "producer_id"):
        return int(aborted.producer_id), int(aborted.first_offset), int(aborted.last_offset)
    producer_id, first, last = aborted[:3]
    return int(producer_id), int(first), int(last)


class AbortedList:
    """Aborted transactions in the shape the C side wants them (lk_aborted_txns_check):
    sorted by (producer id, first offset), one producer's merged where they overlap (the
    same offsets are aborted either way). Takes (producer_id, first_offset, last_offset)
    triples, or objects with those attributes (the partition log's AbortedTxn). Build
    once, pass to many calls. O(n log n)."""

    def __init__(self, aborted: Iterable[Any]) -> None:
        merged: list[list[int]] = []
        for producer_id, first, last in sorted(_triple(a) for a in aborted):
            if first > last:
                raise ValueError(
                    f"aborted transaction of producer {producer_id}: first offset {first} is "
                    f"past its last offset {last}")
            if merged and merged[-1][0] == producer_id and first <= merged[-1][2]:
                merged[-1][2] = max(merged[-1][2], last)
            else:
                merged.append([producer_id, first, last])
        self.count = len(merged)
        self.triples = [tuple(m) for m in merged]
        self.pointer = ffi.new("lk_aborted_txn[]", merged) if merged else ffi.NULL
        check(lib.lk_aborted_txns_check(self.pointer, self.count),
              context="checking the aborted transactions")

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0


NO_ABORTED = AbortedList(())


def drop_aborted(buf: bytearray | memoryview, aborted: Sequence[Any] | AbortedList) -> int:
    """Removes, in place, the batches of aborted transactions from the batches in ``buf``
    (a bytearray, or a writable memoryview) and returns the new length: ``buf[:n]`` holds
    the batches kept, in order and unchanged; bytes past it are left over (``buf`` is not
    resized). ``aborted``: (producer_id, first_offset, last_offset) triples (or objects with
    those attributes), e.g. the aborted transactions of a read_committed fetch, in any
    order (sorted by first offset is what the log gives). A transactional data batch of a
    listed producer whose base offset lies in [first_offset, last_offset] is aborted;
    markers and other batches stay. Torn or damaged bytes stop the walk and are kept as
    they are, for the decoding that follows to report (see lk_drop_aborted).
    O(1) for an empty list; else O(n log n) to sort the list, a walk over batch headers in
    C, a binary search per transactional batch and one move of the bytes after the first
    batch dropped."""
    view = memoryview(buf).cast("B")
    if not aborted:
        return len(view)
    listed = aborted if isinstance(aborted, AbortedList) else AbortedList(aborted)
    n = lib.lk_drop_aborted(ffi.from_buffer(view, require_writable=True), len(view),
                            listed.pointer, listed.count)
    check(int(n) if n < 0 else lib.LK_OK, context="dropping aborted transactions")
    return int(n)


def first_keyless(data: Buffer) -> tuple[int, int]:
    """(batch position, record index) of the first data record without a key in the
    batches of ``data``; (-1, -1) if every record has one; index -2 when the batch at the
    position is compressed (decompress it and ask again)."""
    view = memoryview(data).cast("B")
    position = ffi.new("int64_t *")
    index = ffi.new("int32_t *")
    err = ffi.new("lk_error *")
    check(lib.lk_records_first_keyless(ffi.from_buffer(view), len(view), position, index, err),
          err, context="checking keys of records for a compacted topic")
    return int(position[0]), int(index[0])
