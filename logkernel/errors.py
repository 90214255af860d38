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

import errno


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
    """The file system is full (ENOSPC, or EDQUOT: the user's quota). Nothing was written;
    retry once space is freed: the engine (or broker) needs no restart. Kafka's
    KAFKA_STORAGE_ERROR, which clients retry.

    Raised as ``NoSpaceError(errno, what was being done, path)``; the message adds what
    the operator can do, since the one who reads it is usually deciding exactly that."""

    ADVICE = ("the file system is full and nothing was written; free space on it (delete "
              "other files, delete_records, or lower retention.ms / retention.bytes) and "
              "retry: no restart is needed")

    def __str__(self) -> str:
        return f"{super().__str__()}: {self.ADVICE}"


# errno values that mean "no space": a full file system, or the user's disk quota used up.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def no_space(exc: OSError, doing: str, path: str | None = None) -> OSError:
    """``exc`` as a NoSpaceError if it is one ("writing partition.checkpoint: No space
    left on device", naming ``path``), else ``exc`` itself: for the places that write with
    plain ``os`` calls, so a full disk reads the same everywhere."""
    if exc.errno in NO_SPACE_ERRNOS and not isinstance(exc, NoSpaceError):
        return NoSpaceError(exc.errno, f"{doing}: {exc.strerror}", path or exc.filename)
    return exc


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


class InvalidRecordError(LogkernelError, ValueError):
    """A record the topic does not accept, such as one without a key on a compacted topic.
    Nothing was written. Kafka's INVALID_RECORD."""


class CleanerError(LogkernelError):
    """The log cleaner could not clean a partition (a damaged batch, a full disk). The
    partition's data is untouched; the cleaner skips it until the next open or an explicit
    compact()."""


class DataDirLockedError(LogkernelError):
    """Another process (or another open engine in this one) has the data directory open."""


# ---- consumer groups --------------------------------------------------------------------
# One class per condition a group member can be told about; each is one Kafka error code
# (the broker maps them in broker/common.py), and the embedded consumer raises them as is.


class GroupError(LogkernelError):
    """A group request was refused; the subclass names why."""


class InvalidGroupIdError(GroupError, ValueError):
    """The group id is empty or otherwise unusable. Kafka's INVALID_GROUP_ID."""


class GroupIdNotFoundError(GroupError, LookupError):
    """No group of that id exists. Kafka's GROUP_ID_NOT_FOUND."""


class NonEmptyGroupError(GroupError):
    """The group still has members; stop them (or wait for their session timeout) first.
    Kafka's NON_EMPTY_GROUP."""


class GroupSubscribedToTopicError(GroupError):
    """A member of the group is subscribed to the topic whose offsets were to be deleted.
    Kafka's GROUP_SUBSCRIBED_TO_TOPIC."""


class InconsistentGroupProtocolError(GroupError):
    """The member's protocol type or protocols do not match the group's (or the group uses
    the other group protocol). Kafka's INCONSISTENT_GROUP_PROTOCOL."""


class InvalidSessionTimeoutError(GroupError, ValueError):
    """The session timeout is outside group.min/max.session.timeout.ms. Kafka's
    INVALID_SESSION_TIMEOUT."""


class GroupMaxSizeReachedError(GroupError):
    """The group has group.max.size members already. Kafka's GROUP_MAX_SIZE_REACHED."""


class UnsupportedAssignorError(GroupError, ValueError):
    """The requested server-side assignor does not exist. Kafka's UNSUPPORTED_ASSIGNOR."""


class MemberIdRequiredError(GroupError):
    """A first JoinGroup without a member id: rejoin with ``member_id`` (Kafka's
    MEMBER_ID_REQUIRED, JoinGroup v4+)."""

    def __init__(self, member_id: str) -> None:
        self.member_id = member_id
        super().__init__(f"rejoin with the member id {member_id!r} the group assigned")


class GroupFencedError(GroupError):
    """The caller is no longer the group's member for this work (it was removed, or a newer
    generation or epoch exists): its commits are refused. Rejoin the group. Kafka's
    consumers call this CommitFailedException."""


class UnknownMemberIdError(GroupFencedError):
    """The group does not know this member (expired, left, or never joined). Kafka's
    UNKNOWN_MEMBER_ID."""


class IllegalGenerationError(GroupFencedError):
    """The member's generation is not the group's current one. Kafka's ILLEGAL_GENERATION."""


class FencedInstanceIdError(GroupFencedError):
    """Another member has joined with this group.instance.id since. Kafka's
    FENCED_INSTANCE_ID."""


class FencedMemberEpochError(GroupFencedError):
    """The member's epoch is not the one the group holds for it (consumer protocol). Kafka's
    FENCED_MEMBER_EPOCH."""


class StaleMemberEpochError(GroupFencedError):
    """A commit carries an older member epoch than the group holds (consumer protocol,
    OffsetCommit v9+). Kafka's STALE_MEMBER_EPOCH."""


class RebalanceInProgressError(GroupError):
    """The group is rebalancing: rejoin, then retry. Kafka's REBALANCE_IN_PROGRESS."""


class UnreleasedInstanceIdError(GroupError):
    """The group.instance.id is still held by a member that has not left. Kafka's
    UNRELEASED_INSTANCE_ID."""


class CoordinatorNotAvailableError(GroupError):
    """The group coordinator is shutting down or not loaded. Kafka's
    COORDINATOR_NOT_AVAILABLE."""


# ---- idempotent producers and transactions ----------------------------------------------
# One class per condition a producer can be told about; each is one Kafka error code.


class ProducerError(LogkernelError):
    """A producer's write or transaction request was refused; the subclass names why."""


class OutOfOrderSequenceError(ProducerError):
    """A batch's sequence number does not follow the producer's last one in this partition
    (a gap, or a new epoch not starting at 0). Nothing was written. Kafka's
    OUT_OF_ORDER_SEQUENCE_NUMBER."""


class InvalidProducerEpochError(ProducerError):
    """A batch or request carries an older producer epoch than the partition or the
    transaction coordinator holds: a newer producer with the same id took over. Kafka's
    INVALID_PRODUCER_EPOCH."""


class ProducerFencedError(InvalidProducerEpochError):
    """A newer producer with the same transactional id has initialised (or the
    transaction timed out and was aborted with a bumped epoch); this one must close.
    Kafka's PRODUCER_FENCED (INVALID_PRODUCER_EPOCH for older request versions)."""


class InvalidTxnStateError(ProducerError):
    """The request does not fit the transaction's state (e.g. EndTxn with no transaction,
    a non-transactional write from a producer with an open transaction). Kafka's
    INVALID_TXN_STATE."""


class InvalidProducerIdMappingError(ProducerError):
    """The transactional id is unknown, or maps to another producer id: call
    init_transactions first. Kafka's INVALID_PRODUCER_ID_MAPPING."""


class InvalidTransactionTimeoutError(ProducerError, ValueError):
    """transaction.timeout.ms is above the engine's transaction.max.timeout.ms (or not
    positive). Kafka's INVALID_TRANSACTION_TIMEOUT."""


class ConcurrentTransactionsError(ProducerError):
    """The previous transaction of this transactional id is still completing; retry.
    Kafka's CONCURRENT_TRANSACTIONS."""


class TransactionCoordinatorFencedError(ProducerError):
    """A transaction marker carries an older coordinator epoch than the partition has
    seen. Kafka's TRANSACTION_COORDINATOR_FENCED."""
