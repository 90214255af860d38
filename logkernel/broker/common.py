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
    (errors.OffsetOutOfRangeError, error_codes.OFFSET_OUT_OF_RANGE),
    (errors.StorageError, error_codes.KAFKA_STORAGE_ERROR),
    (errors.ClosedError, error_codes.UNKNOWN_TOPIC_OR_PARTITION),  # deleted while the request ran
    (errors.ConfigError, error_codes.INVALID_CONFIG),
)


def error_code_for(exc: BaseException) -> int:
    """The Kafka error code a client should see for an engine exception."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return error_codes.UNKNOWN_SERVER_ERROR
