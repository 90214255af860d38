"""What every handler module shares: exceptions to Kafka error codes."""

from __future__ import annotations

from logkernel import errors
from logkernel.protocol import error_codes

# First match wins, so subclasses come before their bases.
_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.UnknownTopicError, error_codes.UNKNOWN_TOPIC_OR_PARTITION),
    (errors.TopicExistsError, error_codes.TOPIC_ALREADY_EXISTS),
    (errors.RecordTooLargeError, error_codes.MESSAGE_TOO_LARGE),
    (errors.CorruptRecordError, error_codes.CORRUPT_MESSAGE),
    (errors.InvalidRecordError, error_codes.INVALID_RECORD),
    (errors.OffsetOutOfRangeError, error_codes.OFFSET_OUT_OF_RANGE),
    (errors.StorageError, error_codes.KAFKA_STORAGE_ERROR),
    (errors.ClosedError, error_codes.UNKNOWN_TOPIC_OR_PARTITION),  # deleted while the request ran
    (errors.ConfigError, error_codes.INVALID_CONFIG),
    (errors.InvalidGroupIdError, error_codes.INVALID_GROUP_ID),
    (errors.GroupIdNotFoundError, error_codes.GROUP_ID_NOT_FOUND),
    (errors.NonEmptyGroupError, error_codes.NON_EMPTY_GROUP),
    (errors.GroupSubscribedToTopicError, error_codes.GROUP_SUBSCRIBED_TO_TOPIC),
    (errors.InconsistentGroupProtocolError, error_codes.INCONSISTENT_GROUP_PROTOCOL),
    (errors.InvalidSessionTimeoutError, error_codes.INVALID_SESSION_TIMEOUT),
    (errors.GroupMaxSizeReachedError, error_codes.GROUP_MAX_SIZE_REACHED),
    (errors.UnsupportedAssignorError, error_codes.UNSUPPORTED_ASSIGNOR),
    (errors.MemberIdRequiredError, error_codes.MEMBER_ID_REQUIRED),
    (errors.UnknownMemberIdError, error_codes.UNKNOWN_MEMBER_ID),
    (errors.IllegalGenerationError, error_codes.ILLEGAL_GENERATION),
    (errors.FencedInstanceIdError, error_codes.FENCED_INSTANCE_ID),
    (errors.FencedMemberEpochError, error_codes.FENCED_MEMBER_EPOCH),
    (errors.StaleMemberEpochError, error_codes.STALE_MEMBER_EPOCH),
    (errors.RebalanceInProgressError, error_codes.REBALANCE_IN_PROGRESS),
    (errors.UnreleasedInstanceIdError, error_codes.UNRELEASED_INSTANCE_ID),
    (errors.CoordinatorNotAvailableError, error_codes.COORDINATOR_NOT_AVAILABLE),
    (errors.OutOfOrderSequenceError, error_codes.OUT_OF_ORDER_SEQUENCE_NUMBER),
    (errors.ProducerFencedError, error_codes.PRODUCER_FENCED),
    (errors.InvalidProducerEpochError, error_codes.INVALID_PRODUCER_EPOCH),
    (errors.InvalidTxnStateError, error_codes.INVALID_TXN_STATE),
    (errors.InvalidProducerIdMappingError, error_codes.INVALID_PRODUCER_ID_MAPPING),
    (errors.InvalidTransactionTimeoutError, error_codes.INVALID_TRANSACTION_TIMEOUT),
    (errors.ConcurrentTransactionsError, error_codes.CONCURRENT_TRANSACTIONS),
    (errors.TransactionCoordinatorFencedError, error_codes.TRANSACTION_COORDINATOR_FENCED),
)


def error_code_for(exc: BaseException) -> int:
    """The Kafka error code a client should see for an engine exception."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return error_codes.UNKNOWN_SERVER_ERROR
