"""logkernel: an embedded, durable, Kafka-compatible event log for Python.

Segments hold Apache Kafka's RecordBatch v2 bytes; the hot paths (CRC-32C, the batch
codec, memory-mapped segment I/O, index search) are C compiled with cffi.

This release provides the native core: ``crc32c``, ``encode_batch`` / ``decode_batch``,
and ``Segment`` (one memory-mapped segment with Kafka's offset and time indexes).
"""

from logkernel import errors
from logkernel._binding import (
    BatchHeader,
    ScanResult,
    Segment,
    SegmentInfo,
    crc32c,
    crc32c_available,
    crc32c_selected,
    scan_log,
)
from logkernel.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    ControlRecord,
    Record,
    RecordBatch,
    decode_batch,
    encode_batch,
    encode_control_batch,
    iter_batches,
)

__version__ = "0.1.0"

__all__ = [
    "CONTROL_ABORT",
    "CONTROL_COMMIT",
    "BatchHeader",
    "ControlRecord",
    "Record",
    "RecordBatch",
    "ScanResult",
    "Segment",
    "SegmentInfo",
    "crc32c",
    "crc32c_available",
    "crc32c_selected",
    "decode_batch",
    "encode_batch",
    "encode_control_batch",
    "errors",
    "iter_batches",
    "scan_log",
]
