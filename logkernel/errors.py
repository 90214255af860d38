"""Exceptions raised by logkernel.

Who is at fault decides the class:

- ``CorruptRecordError`` and its subclasses: the *bytes* are bad (a client sent a malformed
  batch, or a file was damaged). The message names what was wrong and the byte position.
- ``StorageError`` and its subclasses: the *file system* failed or a file is damaged in a way
  that needs recovery; the message names the file.
- ``ConfigError`` / ``ValueError``: the caller passed something invalid.
- A bug in logkernel itself is an ``AssertionError``; please report it.
"""

from __future__ import annotations


class LogkernelError(Exception):
    """Base class of every error logkernel raises on purpose."""


class CorruptRecordError(LogkernelError, ValueError):
    """A record batch (or record inside one) is malformed.

    Attributes:
        reason: what was wrong, as one sentence.
        position: byte offset, relative to the buffer that was decoded, where it was found.
        record_index: index of the record in its batch, or -1 for batch-level problems.
        code: the native status code (see native/logkernel.h).
    """

    def __init__(self, reason: str, position: int = -1, record_index: int = -1, code: int = 0):
        self.reason = reason
        self.position = position
        self.record_index = record_index
        self.code = code
        where = f" at byte {position}" if position >= 0 else ""
        which = f" (record {record_index})" if record_index >= 0 else ""
        super().__init__(f"{reason}{where}{which}")

    def in_record_set(self, batch_position: int) -> CorruptRecordError:
        """The same error for a batch found at ``batch_position`` of a larger buffer (a
        record set or segment): the message names the batch, positions become absolute."""
        return type(self)(f"batch at byte {batch_position}: {self.reason}",
                          batch_position + max(self.position, 0), self.record_index, self.code)


class TruncatedBatchError(CorruptRecordError):
    """The bytes end before the batch does: a torn write, or a short read."""


class CrcMismatchError(CorruptRecordError):
    """The batch's CRC-32C does not match its contents: the bytes were damaged."""


class UnsupportedMagicError(CorruptRecordError):
    """The batch is not RecordBatch v2 (magic 2); older message formats are not stored."""


class StorageError(LogkernelError, OSError):
    """A file-system operation on a log file failed. Kafka's KAFKA_STORAGE_ERROR."""


class NoSpaceError(StorageError):
    """The file system is full. Nothing was appended; retry once space is freed."""


class IndexCorruptError(StorageError):
    """An offset or time index file is not a valid index; it must be rebuilt from the log."""


class NeedsRecoveryError(StorageError):
    """The segment holds unrecognised bytes after its last batch (an unclean shutdown):
    call ``recover()`` before writing to it."""


class SegmentFullError(LogkernelError):
    """The append does not fit the segment's capacity: roll to a new segment."""


class OffsetOrderError(LogkernelError, ValueError):
    """An append would make offsets go backwards or leave the segment's range."""


class OffsetOutOfRangeError(LogkernelError, LookupError):
    """The requested offset or timestamp lies outside the log (or segment)."""


class ClosedError(LogkernelError):
    """The object was closed or sealed read-only and cannot do this any more."""


class UnsupportedError(LogkernelError):
    """This machine or build lacks the feature (e.g. a CRC instruction set)."""


class ConfigError(LogkernelError, ValueError):
    """A configuration key or value is invalid. The message names the key and value."""


class UnknownTopicError(LogkernelError, LookupError):
    """No such topic (or partition). Kafka's UNKNOWN_TOPIC_OR_PARTITION."""


class TopicExistsError(LogkernelError):
    """A topic of that name exists already. Kafka's TOPIC_ALREADY_EXISTS."""


class RecordTooLargeError(LogkernelError, ValueError):
    """A record batch is larger than the topic's max.message.bytes. Nothing was written."""


class DataDirLockedError(LogkernelError):
    """Another process (or another open engine in this one) has the data directory open."""


class GroupFencedError(LogkernelError):
    """A commit came from a consumer that is no longer the group's member for that work."""
