"""Records and record batches: Kafka's RecordBatch v2, built and read through the C codec.

Building (``encode_batch``) takes columns (values, keys, timestamps, headers) rather than
record objects, because turning a thousand Python objects into C structures one by one
would cost more than the encoding itself. Reading (``decode_batch``) validates the CRC and
every record boundary in C, then materialises ``Record`` objects only when asked.

Costs (1,000 records of 100 bytes, bench/bench_codec.py): encode and decode each run in
tens of microseconds, dominated by the Python side of preparing columns and building
objects; the C part is CRC-32C plus one pass over the bytes.
"""

from __future__ import annotations

import functools
import itertools
import operator
import struct
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from logkernel import _binding, compression
from logkernel._binding import BATCH_HEADER_SIZE, BatchHeader
from logkernel.errors import CorruptRecordError

# numpy is imported inside the functions that use it (once per call, not per record), and
# RecordBatch does without it: the engine imports this module for encoding and decoding
# batches, and importing numpy with it would add 150-250 ms to every process start,
# `logkernel serve` included. The consumer's columns (slice_spans, headers_column) are
# numpy arrays.
if TYPE_CHECKING:
    import numpy as np

Header = tuple[str, "bytes | None"]

CONTROL_ABORT = 0
CONTROL_COMMIT = 1


class Record(NamedTuple):
    """One record as an application sees it. Header keys are UTF-8 strings (bytes that are
    not valid UTF-8 round-trip through surrogate escapes); header values are bytes or None.
    A named tuple: cheap to build by the thousand, immutable, unpackable."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


# Builds a Record from a 5-tuple without a Python-level __new__ call per record.
_make_record = functools.partial(tuple.__new__, Record)


@dataclass(frozen=True, slots=True)
class ControlRecord:
    """The marker inside a control batch: COMMIT (1) or ABORT (0) of a transaction."""

    offset: int
    timestamp: int
    control_type: int
    coordinator_epoch: int


class RecordBatch:
    """A decoded, validated batch. ``header`` is available at once; ``records()``
    builds Record objects on demand from the spans the C decoder found."""

    __slots__ = ("_data", "_spans", "header")

    def __init__(self, header: BatchHeader, data: bytes, spans: bytearray) -> None:
        self.header = header
        self._data = data            # bytes the span positions refer to
        self._spans = spans          # raw lk_record_span structs (_binding.span_column)

    def __len__(self) -> int:
        return len(self._spans) // _binding.SPAN_SIZE

    @property
    def base_offset(self) -> int:
        return self.header.base_offset

    @property
    def is_control(self) -> bool:
        return self.header.is_control

    def records(self) -> list[Record]:
        """Every record, with absolute offsets and timestamps. O(records); built column by
        column so the per-record work stays in C-implemented builtins. Needs no numpy
        (the engine decodes batches: committed offsets at open, ListOffsets by time)."""
        h = self.header
        spans = self._spans
        n = len(spans) // _binding.SPAN_SIZE
        offsets: Iterable[int]
        if h.last_offset_delta == n - 1:
            # C checked the deltas increase from >= 0 and end at lastOffsetDelta: 0..n-1.
            offsets = range(h.base_offset, h.base_offset + n)
        else:
            offsets = map(h.base_offset.__add__, _binding.span_column(spans, "offset_delta"))
        timestamps: Iterable[int]
        if h.timestamp_type_is_log_append:
            timestamps = itertools.repeat(h.max_timestamp, n)
        else:
            deltas = _binding.span_column(spans, "timestamp_delta")
            timestamps = (map(h.base_timestamp.__add__, deltas) if any(deltas)
                          else itertools.repeat(h.base_timestamp, n))
        keys = _slices(self._data, spans, "key_pos", "key_len")
        values = _slices(self._data, spans, "value_pos", "value_len")
        counts = _binding.span_column(spans, "headers_count")
        headers: Iterable[tuple[Header, ...]]
        if any(counts):
            headers = _record_headers(self._data, _binding.span_column(spans, "headers_pos"),
                                      _binding.span_column(spans, "headers_len"), counts)
        else:
            headers = itertools.repeat((), n)
        # not strict: only the lists among these know their length
        return list(map(_make_record, zip(offsets, timestamps, keys, values, headers,
                                           strict=False)))

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def values(self) -> list[bytes | None]:
        """Just the values, the cheapest way to read a batch's payloads. O(records)."""
        return _slices(self._data, self._spans, "value_pos", "value_len")

    def control_record(self) -> ControlRecord:
        """The marker of a control batch (raises ValueError for a data batch)."""
        if not self.header.is_control:
            raise ValueError("not a control batch")
        (record,) = self.records()
        control_type, epoch = _binding.parse_control_record(record.key, record.value)
        return ControlRecord(record.offset, record.timestamp, control_type, epoch)


def _slices(data: bytes, spans: bytearray, position_field: str, length_field: str
            ) -> list[bytes | None]:
    """data[p:p+n] for one (position, length) field pair of raw spans, None where n is -1
    (null): ``slice_spans`` without numpy."""
    lengths = _binding.span_column(spans, length_field)
    if -1 not in lengths:  # no nulls: every slice made by C-implemented builtins
        positions = _binding.span_column(spans, position_field)
        ends = map(operator.add, positions, lengths)
        return list(map(data.__getitem__, map(slice, positions, ends)))
    if lengths.count(-1) == len(lengths):
        return [None] * len(lengths)
    positions = _binding.span_column(spans, position_field)
    return [data[p:p + n] if n >= 0 else None for p, n in zip(positions, lengths, strict=True)]


def slice_spans(data: bytes, positions: np.ndarray, lengths: np.ndarray) -> list[bytes | None]:
    """data[p:p+n] for each span, None where n is -1 (null)."""
    import numpy as np

    nulls = np.flatnonzero(lengths < 0)
    if len(nulls) == len(lengths):
        return [None] * len(lengths)
    starts = positions.tolist()
    ends = (positions + np.maximum(lengths, 0)).tolist()
    out: list[bytes | None] = list(map(data.__getitem__, map(slice, starts, ends)))
    for i in nulls.tolist():
        out[i] = None
    return out


def headers_column(data: bytes, positions: np.ndarray, lengths: np.ndarray,
                   counts: np.ndarray) -> Any:
    """Each record's headers as a tuple of (key, value) pairs, for records whose encoded
    headers sections are the given spans of ``data``: a list, or a repeat of () when no
    record has headers (the common case, kept free of per-record work)."""
    if not counts.any():
        return itertools.repeat((), len(counts))
    return _record_headers(data, positions.tolist(), lengths.tolist(), counts.tolist())


def _record_headers(data: bytes, positions: list[int], lengths: list[int], counts: list[int]
                    ) -> list[tuple[Header, ...]]:
    return [decode_record_headers(data, p, length, c) if c else ()
            for p, length, c in zip(positions, lengths, counts, strict=True)]


def decode_record_headers(data: bytes, position: int, length: int, count: int) -> tuple[Header, ...]:
    block = data[position:position + length]
    return tuple(
        (block[kp:kp + kl].decode("utf-8", "surrogateescape"),
         block[vp:vp + vl] if vl >= 0 else None)
        for kp, kl, vp, vl in _binding.decode_headers_raw(block, count)
    )


def decode_batch(data: bytes | bytearray | memoryview,
                 max_decompressed: int = compression.DEFAULT_MAX_DECOMPRESSED) -> RecordBatch:
    """Validates (CRC, lengths, every record) and decodes the batch at the start of ``data``.

    Raises CorruptRecordError (or a subclass naming the problem and byte position) for any
    malformed input; never returns a record that failed its CRC. O(batch size)."""
    if not isinstance(data, bytes):
        data = memoryview(data).cast("B")
    header, spans = _binding.decode_batch_raw(data)
    if spans is not None:
        if not isinstance(data, bytes):
            # Records are sliced out as bytes: copy this batch (only), once.
            data = bytes(data[:header.size])
        return RecordBatch(header, data, spans)
    payload = compression.decompress(header.compression, memoryview(data)[BATCH_HEADER_SIZE:header.size],
                                     max_decompressed)
    spans = _binding.decode_records_raw(payload, header.record_count, header.last_offset_delta)
    return RecordBatch(header, payload, spans)


def iter_batches(data: bytes | bytearray | memoryview) -> Iterator[RecordBatch]:
    """Decodes every batch of a record set (consecutive batches). A torn or corrupt batch
    raises CorruptRecordError with its position in ``data``."""
    view = memoryview(data).cast("B")
    position = 0
    while position < len(view):
        try:
            batch = decode_batch(view[position:])
        except CorruptRecordError as exc:
            raise exc.in_record_set(position) from exc
        yield batch
        position += batch.header.size


def _column(items: Sequence[bytes | None] | None, count: int, name: str) -> tuple[bytes, Any]:
    """(concatenated bytes, int32 lengths with -1 for None) of a bytes column."""
    if items is None:
        return b"", None
    if len(items) != count:
        raise ValueError(f"{name} has {len(items)} entries for {count} records")
    try:
        # Fast path: no None, all bytes-like. join and map(len) run in C; array() from a
        # list is a C loop, from an iterator it is not (measured 45 vs 67 us per 1,000).
        return b"".join(items), array("i", list(map(len, items)))  # type: ignore[arg-type]
    except TypeError:
        pass
    lengths = array("i")
    parts = []
    for i, item in enumerate(items):
        if item is None:
            lengths.append(-1)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            b = bytes(item)
            parts.append(b)
            lengths.append(len(b))
        else:
            raise TypeError(
                f"{name}[{i}] is {type(item).__name__}; records hold bytes or None "
                "(encode strings first, e.g. value.encode())"
            )
    return b"".join(parts), lengths


def _header_columns(headers: Sequence[Sequence[Header] | None], count: int) -> dict[str, Any]:
    if len(headers) != count:
        raise ValueError(f"headers has {len(headers)} entries for {count} records")
    counts = array("i")
    lengths = array("i")
    parts: list[bytes] = []
    for i, record_headers in enumerate(headers):
        record_headers = record_headers or ()
        counts.append(len(record_headers))
        for key, value in record_headers:
            if not isinstance(key, str):
                raise TypeError(f"headers[{i}]: header keys are str, got {type(key).__name__}")
            k = key.encode("utf-8", "surrogateescape")
            parts.append(k)
            lengths.append(len(k))
            if value is None:
                lengths.append(-1)
            else:
                v = bytes(value)
                parts.append(v)
                lengths.append(len(v))
    return {"header_counts": counts, "header_lengths": lengths, "header_data": b"".join(parts)}


def encode_batch(
    values: Sequence[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    timestamps: int | Sequence[int] | None = None,
    headers: Sequence[Sequence[Header] | None] | None = None,
    offset_deltas: Sequence[int] | None = None,
    base_offset: int = 0,
    compression_type: str | int = "none",
    compression_level: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    log_append_time: bool = False,
    partition_leader_epoch: int = -1,
) -> bytes:
    """Builds one RecordBatch v2 holding ``values`` (with optional keys, headers, ...).

    ``timestamps``: None (now, in ms, for every record), one int for all, or one per record.
    ``offset_deltas``: None for 0..n-1 (what producers send); increasing gaps for rewritten
    (compacted) batches. O(total bytes); CRC and framing in C.
    """
    count = len(values)
    if count < 1:
        raise ValueError("a batch needs at least one record")
    codec = compression.codec_id(compression_type)
    value_data, value_lengths = _column(values, count, "values")
    key_data, key_lengths = _column(keys, count, "keys")
    if timestamps is None or isinstance(timestamps, int):
        base_ts = int(time.time() * 1000) if timestamps is None else timestamps
        ts_column = None
        max_ts = base_ts
    else:
        if len(timestamps) != count:
            raise ValueError(f"timestamps has {len(timestamps)} entries for {count} records")
        ts_column = array("q", timestamps)
        base_ts = ts_column[0]
        max_ts = max(ts_column)
    extra = _header_columns(headers, count) if headers is not None else {}
    deltas = array("i", offset_deltas) if offset_deltas is not None else None
    columns = _binding.RecordColumns(
        count, keys=key_data, key_lengths=key_lengths, values=value_data,
        value_lengths=value_lengths, timestamps=ts_column, offset_deltas=deltas, **extra)
    attributes = codec | (0x10 if transactional else 0) | (0x08 if log_append_time else 0)
    if codec == compression.NONE:
        view = _binding.encode_batch(
            columns, base_offset=base_offset, partition_leader_epoch=partition_leader_epoch,
            attributes=attributes, base_timestamp=base_ts, producer_id=producer_id,
            producer_epoch=producer_epoch, base_sequence=base_sequence)
        # Free the concatenated inputs before allocating the result, so the allocator can
        # hand their memory straight back instead of trimming and re-faulting the heap.
        del columns, value_data, key_data, extra
        return bytes(view)
    section = _binding.encode_records(columns, base_ts)
    last_delta = deltas[-1] if deltas is not None else count - 1
    return _binding.frame_batch(
        compression.compress(codec, section, compression_level), count, last_delta, max_ts,
        base_offset=base_offset, partition_leader_epoch=partition_leader_epoch,
        attributes=attributes, base_timestamp=base_ts, producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence)


def encode_control_batch(control_type: int, *, producer_id: int, producer_epoch: int,
                         coordinator_epoch: int = 0, timestamp: int | None = None,
                         base_offset: int = 0, partition_leader_epoch: int = -1) -> bytes:
    """A transaction marker batch: ``CONTROL_COMMIT`` or ``CONTROL_ABORT``."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    return _binding.encode_control_batch(
        control_type, coordinator_epoch, ts, base_offset=base_offset,
        partition_leader_epoch=partition_leader_epoch, producer_id=producer_id,
        producer_epoch=producer_epoch)


def batch_sizes(record_set: bytes | bytearray | memoryview) -> list[int]:
    """Sizes of the consecutive batches of a record set (headers only; no CRC check)."""
    view = memoryview(record_set).cast("B")
    sizes = []
    position = 0
    while position < len(view):
        size = _binding.parse_header(view[position:]).size
        sizes.append(size)
        position += size
    return sizes


# Where LogAppendTime stamping writes, in each batch header (see logkernel.h).
_ATTRIBUTES_AT = 21
_MAX_TIMESTAMP_AT = 35
_LOG_APPEND_TIME = 0x08
_COMPRESSION_BITS = 0x07


def stamp_log_append_time(record_set: bytes | bytearray | memoryview, now_ms: int) -> bytearray:
    """A copy of the record set with every batch marked LogAppendTime and its max
    timestamp set to ``now_ms`` (what a topic with message.timestamp.type=LogAppendTime
    stores), CRCs recomputed. O(bytes)."""
    out = bytearray(record_set)
    view = memoryview(out)
    position = 0
    for size in batch_sizes(out):
        (attributes,) = struct.unpack_from(">h", out, position + _ATTRIBUTES_AT)
        struct.pack_into(">h", out, position + _ATTRIBUTES_AT, attributes | _LOG_APPEND_TIME)
        struct.pack_into(">q", out, position + _MAX_TIMESTAMP_AT, now_ms)
        _binding.update_crc(view[position:position + size])
        position += size
    return out


def recompressed_record_set(record_set: bytes | bytearray | memoryview, codec: int) -> bytes | None:
    """The record set with every data batch's records section in ``codec`` (0: none), as a
    topic whose compression.type names a codec stores it (Kafka's broker re-compresses
    too): the same records, offsets, timestamps and producer fields, CRCs recomputed;
    control batches are left alone. None when every batch already uses ``codec``. The
    batches must have been validated. O(bytes), one section at a time: no per-record work."""
    view = memoryview(record_set).cast("B")
    pieces: list[bytes | memoryview] = []
    changed = False
    position = 0
    for size in batch_sizes(view):
        batch = view[position:position + size]
        position += size
        header = _binding.parse_header(batch)
        if header.compression == codec or header.is_control:
            pieces.append(batch)
            continue
        section = batch[BATCH_HEADER_SIZE:]
        payload = bytes(section) if header.compression == 0 else compression.decompress(
            header.compression, section)
        if codec:
            payload = compression.compress(codec, payload)
        pieces.append(_binding.frame_batch(
            payload, header.record_count, header.last_offset_delta, header.max_timestamp,
            base_offset=header.base_offset, partition_leader_epoch=header.partition_leader_epoch,
            attributes=(header.attributes & ~_COMPRESSION_BITS) | codec,
            base_timestamp=header.base_timestamp, producer_id=header.producer_id,
            producer_epoch=header.producer_epoch, base_sequence=header.base_sequence))
        changed = True
    return b"".join(pieces) if changed else None


def decompressed_batch(data: bytes | bytearray | memoryview) -> bytes:
    """The batch at the start of ``data`` with its records section decompressed and the
    compression bits cleared: the same records, offsets and timestamps, as an
    uncompressed batch (CRC recomputed). Validates the original first. O(batch size)."""
    view = memoryview(data).cast("B")
    header, _ = _binding.decode_batch_raw(view)
    payload = compression.decompress(header.compression, view[BATCH_HEADER_SIZE:header.size])
    return _binding.frame_batch(
        payload, header.record_count, header.last_offset_delta, header.max_timestamp,
        base_offset=header.base_offset, partition_leader_epoch=header.partition_leader_epoch,
        attributes=header.attributes & ~_COMPRESSION_BITS, base_timestamp=header.base_timestamp,
        producer_id=header.producer_id, producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence)

