"""logkernel: an embedded, durable, Kafka-compatible event log for Python.

Segments hold Apache Kafka's RecordBatch v2 bytes; the hot paths (CRC-32C, the batch
codec, memory-mapped segment I/O, index search) are C compiled with cffi.

``logkernel.open(path)`` opens a data directory and returns the ``Engine``: topics,
partitions, an embedded ``Producer`` and ``Consumer``, committed offsets, retention and
recovery. ``logkernel.Broker`` serves a data directory to Kafka clients over the wire
protocol (``logkernel serve`` is the same as a command). The codec (``encode_batch`` /
``decode_batch``) and ``Segment`` are the layers under it, public for tools and tests.
"""

import importlib
from typing import TYPE_CHECKING

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
from logkernel.engine import Engine, PartitionDescription, TopicDescription, open
from logkernel.log.cleaner import CleanerStats, CleanResult, DirtyState, PartitionCleaning
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

if TYPE_CHECKING:
    from logkernel.broker import Broker
    from logkernel.consumer import ColumnBatch, Consumer, Record, TopicPartition
    from logkernel.producer import BatchMetadata, Producer, RecordMetadata

__version__ = "0.1.0"

# Loaded on first use: the broker (asyncio, the protocol schemas) is not needed by an
# embedded program, and the embedded clients are not needed by `logkernel serve`, whose
# start-up time is a target (ready within 300 ms).
_LAZY = {
    "Broker": "logkernel.broker",
    "ColumnBatch": "logkernel.consumer", "Consumer": "logkernel.consumer",
    "Record": "logkernel.consumer", "TopicPartition": "logkernel.consumer",
    "BatchMetadata": "logkernel.producer", "Producer": "logkernel.producer",
    "RecordMetadata": "logkernel.producer",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'logkernel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = [
    "CONTROL_ABORT",
    "CONTROL_COMMIT",
    "BatchHeader",
    "BatchMetadata",
    "Broker",
    "CleanResult",
    "CleanerStats",
    "ColumnBatch",
    "Consumer",
    "ControlRecord",
    "DirtyState",
    "Engine",
    "PartitionCleaning",
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
