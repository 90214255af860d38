"""logkernel: an embedded, durable, Kafka-compatible event log for Python.

Segments hold Apache Kafka's RecordBatch v2 bytes; the hot paths (CRC-32C, the batch
codec, memory-mapped segment I/O, index search) are C compiled with cffi.

``logkernel.open(path)`` opens a data directory and returns the ``Engine``: topics,
partitions, an embedded ``Producer`` and ``Consumer``, committed offsets, retention and
recovery. ``logkernel.Broker`` serves a data directory to Kafka clients over the wire
protocol (``logkernel serve`` is the same as a command). The codec (``encode_batch`` /
``decode_batch``) and ``Segment`` are the layers under it, public for tools and tests.
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
from logkernel.consumer import ColumnBatch, Consumer, Record, TopicPartition
from logkernel.engine import Engine, PartitionDescription, TopicDescription, open
from logkernel.producer import BatchMetadata, Producer, RecordMetadata
from logkernel.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    ControlRecord,
    RecordBatch,
    decode_batch,
    encode_batch,
    encode_control_batch,
    iter_batches,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The broker (asyncio, the protocol schemas) loads only when asked for: an embedded
    # program that never serves Kafka clients does not pay for importing it.
    if name == "Broker":
        from logkernel.broker import Broker
        return Broker
    raise AttributeError(f"module 'logkernel' has no attribute {name!r}")


__all__ = [
    "CONTROL_ABORT",
    "CONTROL_COMMIT",
    "BatchHeader",
    "BatchMetadata",
    "Broker",
    "ColumnBatch",
    "Consumer",
    "ControlRecord",
    "Engine",
    "PartitionDescription",
    "Producer",
    "Record",
    "RecordBatch",
    "RecordMetadata",
    "ScanResult",
    "Segment",
    "SegmentInfo",
    "TopicDescription",
    "TopicPartition",
    "crc32c",
    "crc32c_available",
    "crc32c_selected",
    "decode_batch",
    "encode_batch",
    "encode_control_batch",
    "errors",
    "iter_batches",
    "open",
    "scan_log",
]
