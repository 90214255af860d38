"""What every handler module shares: exceptions to Kafka error codes."""

from __future__ import annotations

from logkernel import errors
from logkernel.protocol import error_codes


def error_code_for(exc: BaseException) -> int:
    """The Kafka error code a client should see for an engine exception."""
    if isinstance(exc, errors.UnknownTopicError):
        return error_codes.UNKNOWN_TOPIC_OR_PARTITION
    if isinstance(exc, errors.TopicExistsError):
        return error_codes.TOPIC_ALREADY_EXISTS
    if isinstance(exc, errors.RecordTooLargeError):
        return error_codes.MESSAGE_TOO_LARGE
    if isinstance(exc, errors.CorruptRecordError):
        return error_codes.CORRUPT_MESSAGE
    if isinstance(exc, errors.OffsetOutOfRangeError):
        return error_codes.OFFSET_OUT_OF_RANGE
    if isinstance(exc, errors.StorageError):
        return error_codes.KAFKA_STORAGE_ERROR
    if isinstance(exc, errors.ClosedError):
        return error_codes.UNKNOWN_TOPIC_OR_PARTITION  # deleted while the request ran
    if isinstance(exc, errors.ConfigError):
        return error_codes.INVALID_CONFIG
    return error_codes.UNKNOWN_SERVER_ERROR
