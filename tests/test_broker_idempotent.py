"""Idempotent produce against a ``logkernel serve`` process over TCP: a batch the broker stored
but whose answer never reached the producer is sent again, and must be answered, not written
twice. The rules are Kafka's (ProducerStateManager / ProducerAppendInfo):

- a batch with the same producer id, epoch and sequence range as one of that producer's last
  5 batches on the partition is a duplicate: answered with its ORIGINAL base offset, not
  written again;
- otherwise, at the producer's current epoch, the base sequence must be the last one + 1,
  wrapping from 2^31-1 to 0; anything else (a gap, or a duplicate older than the last 5) is
  OUT_OF_ORDER_SEQUENCE_NUMBER (45);
- an epoch below the producer's is INVALID_PRODUCER_EPOCH (47); a new epoch starts at 0;
- a producer the partition has no state for (never seen, or expired after
  producer.id.expiration.ms of silence) may start at any sequence;
- InitProducerId v3+ naming a transactional id's current producer id and epoch bumps the
  epoch (same id, epoch + 1); naming the epoch before the last bump is a retry, answered
  with the current epoch (KIP-360); anything else is fenced.

What is tested:

1. Real clients (confluent-kafka with enable.idempotence, kafka-python 3 with its defaults)
   send thousands of records through a proxy (``CuttingProxy``) that drops the connection
   right after the broker answered chosen Produce requests, so the client never hears of
   batches the broker stored and must send them again. The broker advertises the proxy's
   address, so every connection goes through it. Afterwards the log on disk holds every
   record exactly once, in send order per partition, at the offset the client was told.
2. The rules above, request by request, with batches built by tests/reference_codec.py;
   also two partitions of one request judged apart, and the same batch arriving on two
   connections at once (written once, both answered with its offset).
3. The producer state survives a clean stop (SIGTERM) and a crash (SIGKILL, with
   log.flush.interval.messages=1 so what was acknowledged is on disk), also when the log
   rolled several times (state from a snapshot plus a scan): the last batch is still a
   duplicate with its original offset (after a crash with no snapshot, each of the last 5,
   as Kafka's scan rebuilds them), a gap and the old epoch are still refused. A batch torn
   by the crash is not counted as written; batches the broker re-compresses
   (compression.type) keep their producer fields.
4. producer.id.expiration.ms: an idle producer's state is dropped, so it may start again at
   any sequence.

Every wait is bounded (tests/broker_support.py's constants); nothing here measures time.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest

import logkernel
from logkernel.protocol import apis, schema
from tests import broker_support as support
from tests.broker_support import (
    CLIENT_TIMEOUT_MS,
    CLIENT_TIMEOUT_S,
    CONSUME_TIMEOUT_S,
    ServeProcess,
    now_ms,
    topic_name,
    wait_until,
)
from tests.reference_codec import RefBatch, RefRecord, encode_batch
from tests.test_broker_protocol import RawClient, decode_response, metadata
from tests.test_broker_protocol import request as raw_request

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", support.KAFKA_PYTHON_IMPORT_WARNING, DeprecationWarning)
    import kafka
    import kafka.errors

# Kafka's error codes (Errors.java) that these tests expect.
NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
PRODUCER_FENCED = 90
# What a transaction coordinator may answer while it starts (the client retries these).
COORDINATOR_RETRIABLE = {14, 15, 51}  # COORDINATOR_LOAD_IN_PROGRESS, _NOT_AVAILABLE, CONCURRENT_TRANSACTIONS

SEQUENCE_MAX = 2**31 - 1
ZSTD = 4  # a batch's compression codec (attributes & 7)
# Kafka keeps the sequence ranges of a producer's last 5 batches per partition
# (ProducerStateEntry.NUM_BATCHES_TO_RETAIN): a client has at most 5 requests in flight.
BATCHES_RETAINED = 5
# Produce v9 (Kafka 2.8, flexible) and InitProducerId v4 (the broker's highest); v3 is the
# first InitProducerId that carries a producer id and epoch to bump.
PRODUCE_VERSION = 9
INIT_PRODUCER_ID_VERSION = 4
FETCH_VERSION = 12
# A transactional id's timeout, well below Kafka's transaction.max.timeout.ms (15 min).
TRANSACTION_TIMEOUT_MS = 60_000

# ---- the cut-connection runs ----------------------------------------------------------------
# 3 partitions x 1,000 records: thousands of records, interleaved across partitions, in a
# few seconds per client on this 2-core machine.
PARTITIONS = 3
RECORDS_PER_PARTITION = 1000
VALUE_PADDING = b"." * 40
# The Produce requests (counted from 1, over all connections) after whose answer the proxy
# drops the connection. Small batches (20 records for librdkafka, ~1 KB for kafka-python)
# make well over 45 requests for 3,000 records, so all five cuts happen mid-run, each while
# up to 5 requests are in flight.
CUT_AFTER = (3, 9, 18, 30, 45)
# A producer given this long to deliver everything, retries included, before the test fails.
DELIVERY_TIMEOUT_S = 60.0

# ---- producer expiry ------------------------------------------------------------------------
# A producer silent for 1 s loses its state; the broker looks every 200 ms.
EXPIRATION_MS = 1000
EXPIRATION_CHECK_MS = 200


# ---- raw protocol -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Batch:
    """An encoded batch and the values it carries."""

    data: bytes
    values: tuple[bytes, ...]
    producer_id: int
    epoch: int
    base_sequence: int


def make_batch(producer_id: int, epoch: int, base_sequence: int, count: int, tag: str = "") -> Batch:
    """``count`` records from (producer_id, epoch), sequences from ``base_sequence``;
    timestamps are now (Kafka expires a producer by its last batch's timestamp)."""
    values = tuple(f"{tag}p{producer_id}/e{epoch}/s{base_sequence}+{i}".encode() for i in range(count))
    now = now_ms()
    data = encode_batch(RefBatch(
        base_timestamp=now, max_timestamp=now, producer_id=producer_id, producer_epoch=epoch,
        base_sequence=base_sequence,
        records=[RefRecord(offset_delta=i, timestamp_delta=0, key=None, value=v)
                 for i, v in enumerate(values)]))
    return Batch(data, values, producer_id, epoch, base_sequence)


def produce_request(topic: str, batches: Mapping[int, Batch]) -> bytes:
    """The body of a Produce v9, acks=-1, one batch per partition."""
    return schema.encode_entity(raw_request(
        apis.PRODUCE, PRODUCE_VERSION, transactional_id=None, acks=-1, timeout=CLIENT_TIMEOUT_MS,
        topic_data=[{"name": topic, "partition_data": [
            {"index": partition, "records": batch.data} for partition, batch in batches.items()]}]))


def produce_answers(response: Any) -> dict[int, tuple[int, int]]:
    """partition -> (error code, base offset) of a Produce response for one topic."""
    [topic_response] = response.responses
    return {int(a.index): (int(a.error_code), int(a.base_offset))
            for a in topic_response.partition_responses}


def produce_many(client: RawClient, topic: str, batches: Mapping[int, Batch]) -> dict[int, tuple[int, int]]:
    correlation = client.send(apis.PRODUCE, PRODUCE_VERSION, produce_request(topic, batches))
    response = decode_response(apis.PRODUCE, PRODUCE_VERSION, client.receive(), correlation)
    answers = produce_answers(response)
    assert set(answers) == set(batches), answers
    return answers


def produce(client: RawClient, topic: str, batch: Batch, partition: int = 0) -> tuple[int, int]:
    """(error code, base offset) of a Produce v9, acks=-1, one batch."""
    return produce_many(client, topic, {partition: batch})[partition]


def init_producer_id(client: RawClient, *, transactional_id: str | None = None,
                     producer_id: int = -1, epoch: int = -1,
                     version: int = INIT_PRODUCER_ID_VERSION) -> tuple[int, int, int]:
    """(error code, producer id, epoch); retries what a starting coordinator answers."""
    def ask() -> Any:
        response = client.call(apis.INIT_PRODUCER_ID, version, raw_request(
            apis.INIT_PRODUCER_ID, version, transactional_id=transactional_id,
            transaction_timeout=TRANSACTION_TIMEOUT_MS, producer_id=producer_id,
            producer_epoch=epoch))
        return None if int(response.error_code) in COORDINATOR_RETRIABLE else response

    response = wait_until(ask, CLIENT_TIMEOUT_S, "InitProducerId past the coordinator's start",
                          interval_s=0.05)
    return int(response.error_code), int(response.producer_id), int(response.producer_epoch)


def new_producer(client: RawClient) -> tuple[int, int]:
    error, producer_id, epoch = init_producer_id(client)
    assert error == NONE and producer_id >= 0 and epoch >= 0, (error, producer_id, epoch)
    return producer_id, epoch


def create_topic(client: RawClient, topic: str) -> None:
    """Auto-creates ``topic`` (the broker's num.partitions) through Metadata."""
    def created() -> bool:
        [answer] = metadata(client, [topic]).topics
        return int(answer.error_code) == NONE and len(answer.partitions) > 0

    wait_until(created, CLIENT_TIMEOUT_S, f"topic {topic} to exist", interval_s=0.05)


@dataclass(frozen=True)
class Stored:
    """A batch as a Fetch returned it."""

    base_offset: int
    producer_id: int
    epoch: int
    base_sequence: int
    values: tuple[bytes | None, ...]
    compression: int


def fetch_body(topic: str, partition: int, offset: int) -> bytes:
    """A Fetch v12 of one partition from ``offset``, up to 1 MiB, answered at once."""
    return schema.encode_entity(raw_request(
        apis.FETCH, FETCH_VERSION, replica_id=-1, max_wait=0, min_bytes=1, max_bytes=1 << 20,
        isolation_level=0, session_id=0, session_epoch=-1,
        topics=[{"topic": topic, "partitions": [{
            "partition": partition, "current_leader_epoch": -1, "fetch_offset": offset,
            "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
        forgotten_topics_data=[], rack_id=""))


def read_partition(client: RawClient, topic: str, partition: int) -> list[Stored]:
    """Every batch of the partition, through Fetch v12 from offset 0 to the high watermark."""
    out: list[Stored] = []
    offset = 0
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    while True:
        correlation = client.send(apis.FETCH, FETCH_VERSION, fetch_body(topic, partition, offset))
        response = decode_response(apis.FETCH, FETCH_VERSION, client.receive(), correlation)
        [answer] = response.responses[0].partitions
        assert int(answer.error_code) == NONE, answer
        for batch in logkernel.iter_batches(answer.records or b""):
            h = batch.header
            if h.last_offset < offset:
                continue
            assert not batch.is_control, h
            out.append(Stored(h.base_offset, h.producer_id, h.producer_epoch, h.base_sequence,
                              tuple(batch.values()), h.compression))
            offset = h.last_offset + 1
        if offset >= answer.high_watermark:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"read {offset} of {answer.high_watermark} records of {topic}")


class Partition:
    """One partition driven by raw requests, with the log it must hold: what each accepted
    batch added, in order. ``check()`` reads the partition back and compares."""

    def __init__(self, client: RawClient, topic: str, index: int = 0) -> None:
        self.client = client
        self.topic = topic
        self.index = index
        self.expected: list[Batch] = []
        self.offsets: dict[Batch, int] = {}
        self.log_end = 0

    def append(self, batch: Batch) -> int:
        """Sends a new batch that must be written at the log end; returns its offset."""
        return self.written(batch, *produce(self.client, self.topic, batch, self.index))

    def written(self, batch: Batch, error: int, offset: int) -> int:
        """The answer to a new batch, however it was sent: written at the log end."""
        assert error == NONE, (f"a batch of producer {batch.producer_id} epoch {batch.epoch} at "
                               f"sequence {batch.base_sequence} was refused with error {error}")
        assert offset == self.log_end, (
            f"a new batch got offset {offset}, the log end is {self.log_end}: something was "
            "written that should not have been, or this batch was taken for a duplicate")
        self.expected.append(batch)
        self.offsets[batch] = offset
        self.log_end += len(batch.values)
        return offset

    def duplicate(self, batch: Batch) -> None:
        """Sends ``batch`` again: it must be answered with its original offset."""
        error, offset = produce(self.client, self.topic, batch, self.index)
        assert (error, offset) == (NONE, self.offsets[batch]), (
            f"a retry of the batch at sequence {batch.base_sequence} (first written at offset "
            f"{self.offsets[batch]}) got error {error}, offset {offset}")

    def refused(self, batch: Batch, error: int) -> None:
        got, offset = produce(self.client, self.topic, batch, self.index)
        assert got == error, (f"the batch of producer {batch.producer_id} epoch {batch.epoch} at "
                              f"sequence {batch.base_sequence} got error {got} (offset {offset}), "
                              f"expected {error}")

    def check(self) -> None:
        stored = read_partition(self.client, self.topic, self.index)
        got = [(s.base_offset, s.producer_id, s.epoch, s.base_sequence, s.values) for s in stored]
        want = [(self.offsets[b], b.producer_id, b.epoch, b.base_sequence, b.values)
                for b in self.expected]
        assert got == want, f"the log holds {got}, expected {want}"


# ---- the broker for the raw tests -------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One broker for the request-by-request tests; each test has its own topic and ids."""
    base = tmp_path_factory.mktemp("idempotent")
    with ServeProcess(base / "data", base / "serve.log", settings=["num.partitions=2"]) as running:
        yield running
        assert running.terminate() == 0, running.log_tail()


@pytest.fixture
def partition(served: ServeProcess, request: pytest.FixtureRequest) -> Iterator[Partition]:
    client = RawClient(served.bootstrap)
    try:
        topic = topic_name(request.node.name)
        create_topic(client, topic)
        yield Partition(client, topic)
    finally:
        client.close()


# ---- 2. the rules, request by request ---------------------------------------------------------

def test_a_retry_of_each_of_the_last_five_batches_gets_its_original_offset(
        partition: Partition) -> None:
    producer_id, epoch = new_producer(partition.client)
    batches = [make_batch(producer_id, epoch, 3 * i, 3) for i in range(BATCHES_RETAINED + 2)]
    for batch in batches:
        partition.append(batch)
    retained = batches[-BATCHES_RETAINED:]
    for batch in [*reversed(retained), *retained]:
        partition.duplicate(batch)
    # Older than the last 5: not a duplicate the broker can answer, and not the next
    # sequence (Kafka's ProducerAppendInfo.checkSequence: 45).
    for batch in batches[:-BATCHES_RETAINED]:
        partition.refused(batch, OUT_OF_ORDER_SEQUENCE_NUMBER)
    # The producer goes on where it was: the retries wrote nothing.
    partition.append(make_batch(producer_id, epoch, 3 * len(batches), 3))
    partition.check()


def test_same_base_sequence_with_another_record_count_is_out_of_order(partition: Partition) -> None:
    """A duplicate is the same sequence RANGE (Kafka's batchWithSequenceRange): a batch that
    starts at a retained base sequence but ends elsewhere is neither a duplicate nor next."""
    producer_id, epoch = new_producer(partition.client)
    partition.append(make_batch(producer_id, epoch, 0, 4))
    partition.refused(make_batch(producer_id, epoch, 0, 2), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.refused(make_batch(producer_id, epoch, 0, 5), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.append(make_batch(producer_id, epoch, 4, 1))
    partition.check()


def test_a_sequence_gap_is_refused_and_the_producer_can_go_on(partition: Partition) -> None:
    producer_id, epoch = new_producer(partition.client)
    partition.append(make_batch(producer_id, epoch, 0, 5))
    partition.refused(make_batch(producer_id, epoch, 6, 2), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.refused(make_batch(producer_id, epoch, 100, 1), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.append(make_batch(producer_id, epoch, 5, 2))
    partition.refused(make_batch(producer_id, epoch, 8, 2), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.append(make_batch(producer_id, epoch, 7, 2))
    partition.check()


def test_an_older_epoch_is_refused_and_a_new_epoch_starts_at_zero(partition: Partition) -> None:
    producer_id, epoch = new_producer(partition.client)
    partition.append(make_batch(producer_id, epoch, 0, 3))
    # A new epoch must start at sequence 0 (KIP-360: the client bumps its own epoch).
    partition.refused(make_batch(producer_id, epoch + 1, 3, 1), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.refused(make_batch(producer_id, epoch + 1, 1, 1), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.append(make_batch(producer_id, epoch + 1, 0, 2))
    # The old epoch, even at what would have been its next sequence, or as a retry of its
    # last batch, is a zombie now.
    partition.refused(make_batch(producer_id, epoch, 3, 1), INVALID_PRODUCER_EPOCH)
    partition.refused(make_batch(producer_id, epoch, 0, 3), INVALID_PRODUCER_EPOCH)
    partition.append(make_batch(producer_id, epoch + 1, 2, 1))
    # A retry at the current epoch is still a duplicate: an epoch check did not disturb it.
    partition.duplicate(partition.expected[-1])
    partition.check()


def test_sequences_wrap_from_2_31_minus_1_to_0(partition: Partition) -> None:
    # A producer the partition has not seen may start anywhere: right below the wrap.
    producer_id, epoch = new_producer(partition.client)
    partition.append(make_batch(producer_id, epoch, SEQUENCE_MAX - 2, 2))
    partition.append(make_batch(producer_id, epoch, SEQUENCE_MAX, 1))
    partition.refused(make_batch(producer_id, epoch, 1, 1), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.append(make_batch(producer_id, epoch, 0, 1))
    partition.append(make_batch(producer_id, epoch, 1, 2))
    partition.duplicate(partition.expected[1])  # the batch at 2^31-1 is still one of the last 5
    # A batch whose records cross the wrap: base 2^31-2, 3 records, last sequence 0.
    other_id, other_epoch = new_producer(partition.client)
    partition.append(make_batch(other_id, other_epoch, SEQUENCE_MAX - 1, 3))
    partition.duplicate(partition.expected[-1])
    partition.refused(make_batch(other_id, other_epoch, 2, 1), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.append(make_batch(other_id, other_epoch, 1, 1))
    partition.check()


def test_an_unknown_producers_first_batch_is_accepted_at_any_sequence(partition: Partition) -> None:
    """Kafka's rule: no state for the producer id on this partition (never seen, or expired,
    or its batches deleted), so there is nothing to check the sequence against."""
    producer_id, epoch = new_producer(partition.client)
    partition.append(make_batch(producer_id, epoch, 1234, 2))
    partition.refused(make_batch(producer_id, epoch, 1237, 1), OUT_OF_ORDER_SEQUENCE_NUMBER)
    partition.append(make_batch(producer_id, epoch, 1236, 1))
    # An id this broker never handed out, at a non-zero epoch: the partition leader does not
    # ask where ids come from (Kafka's neither).
    stranger = 2**40 + producer_id
    partition.append(make_batch(stranger, 3, 77, 1))
    partition.append(make_batch(stranger, 3, 78, 1))
    partition.refused(make_batch(stranger, 2, 0, 1), INVALID_PRODUCER_EPOCH)
    partition.check()


def test_each_partition_of_a_request_is_judged_by_its_own_state(partition: Partition) -> None:
    """One Produce request, two partitions (num.partitions=2 on this broker): a producer's
    sequences are per partition, and a duplicate or a gap on one partition does not change
    the answer for the other."""
    first, second = partition, Partition(partition.client, partition.topic, index=1)
    producer_id, epoch = new_producer(first.client)
    batch_0 = make_batch(producer_id, epoch, 0, 3, tag="first/")
    first.append(batch_0)
    batch_1 = make_batch(producer_id, epoch, 0, 2, tag="second/")
    answers = produce_many(first.client, first.topic, {0: batch_0, 1: batch_1})
    assert answers[0] == (NONE, first.offsets[batch_0]), answers  # the duplicate
    second.written(batch_1, *answers[1])
    gap = make_batch(producer_id, epoch, 4, 1, tag="first/")
    next_1 = make_batch(producer_id, epoch, 2, 2, tag="second/")
    answers = produce_many(first.client, first.topic, {0: gap, 1: next_1})
    assert answers[0][0] == OUT_OF_ORDER_SEQUENCE_NUMBER, answers
    second.written(next_1, *answers[1])
    first.append(make_batch(producer_id, epoch, 3, 1, tag="first/"))
    first.check()
    second.check()


def test_the_same_batch_on_two_connections_at_once_is_written_once(
        served: ServeProcess, partition: Partition) -> None:
    """A client that lost a connection sends its batch again on a new one while the broker
    may still be reading the first copy from the old one. Both copies are in flight at
    once here, 100 times: exactly one is written, and both are answered with its offset."""
    other = RawClient(served.bootstrap)
    try:
        producer_id, epoch = new_producer(partition.client)
        for i in range(100):
            batch = make_batch(producer_id, epoch, 2 * i, 2)
            body = produce_request(partition.topic, {0: batch})
            sent = [(client, client.send(apis.PRODUCE, PRODUCE_VERSION, body))
                    for client in (partition.client, other)]
            answers = [produce_answers(decode_response(apis.PRODUCE, PRODUCE_VERSION,
                                                       client.receive(), correlation))[0]
                       for client, correlation in sent]
            assert answers[0] == answers[1], (
                f"batch {i}: the two copies were answered {answers}: the second copy must be "
                "a duplicate of the first (same offset), whichever the broker read first")
            partition.written(batch, *answers[0])
        partition.check()
    finally:
        other.close()


def bump_epoch(client: RawClient, transactional_id: str, producer_id: int, epoch: int,
               version: int = INIT_PRODUCER_ID_VERSION) -> tuple[int, int, int]:
    """InitProducerId v3+ for ``transactional_id`` naming (producer_id, epoch) as current."""
    return init_producer_id(client, transactional_id=transactional_id, producer_id=producer_id,
                            epoch=epoch, version=version)


@pytest.mark.parametrize("version", [3, 4])
def test_init_producer_id_bumps_a_transactional_producers_epoch(
        partition: Partition, version: int, request: pytest.FixtureRequest) -> None:
    """InitProducerId v3+ with a transactional id and its current (id, epoch): the same id at
    epoch + 1 (Kafka's TransactionCoordinator, KIP-360); the old epoch is refused on a
    partition once the new one wrote there. An (id, epoch) that is neither the current one
    nor the one just before the last bump is fenced: PRODUCER_FENCED from v4 (KIP-588),
    INVALID_PRODUCER_EPOCH before."""
    transactional_id = f"bump-{request.node.name}"
    error, producer_id, epoch = init_producer_id(partition.client, transactional_id=transactional_id,
                                                 version=version)
    assert error == NONE and producer_id >= 0 and epoch >= 0, (error, producer_id, epoch)
    partition.append(make_batch(producer_id, epoch, 0, 2))
    client = partition.client
    assert bump_epoch(client, transactional_id, producer_id, epoch, version) == (
        NONE, producer_id, epoch + 1)
    partition.append(make_batch(producer_id, epoch + 1, 0, 2))
    partition.refused(make_batch(producer_id, epoch, 2, 1), INVALID_PRODUCER_EPOCH)
    assert bump_epoch(client, transactional_id, producer_id, epoch + 1, version) == (
        NONE, producer_id, epoch + 2)
    fenced = PRODUCER_FENCED if version >= 4 else INVALID_PRODUCER_EPOCH
    stale = bump_epoch(client, transactional_id, producer_id, epoch, version)
    assert stale[0] == fenced, f"InitProducerId v{version} from two epochs back answered {stale}"
    wrong = bump_epoch(client, transactional_id, producer_id + 1_000_000, epoch + 2, version)
    assert wrong[0] == fenced, f"InitProducerId v{version} naming another producer id answered {wrong}"
    partition.append(make_batch(producer_id, epoch + 2, 0, 1))
    partition.refused(make_batch(producer_id, epoch + 1, 2, 1), INVALID_PRODUCER_EPOCH)
    partition.check()


def test_a_retried_epoch_bump_answers_the_epoch_it_gave(
        partition: Partition, request: pytest.FixtureRequest) -> None:
    """A client whose InitProducerId answer was lost sends it again, still naming the epoch
    it had. Kafka (TransactionMetadata.prepareIncrementProducerEpoch) recognises the
    previous epoch as such a retry and answers with the current epoch, unchanged (KIP-360:
    "provided epoch matches last epoch: the current epoch will be returned")."""
    transactional_id = f"retry-{request.node.name}"
    error, producer_id, epoch = init_producer_id(partition.client, transactional_id=transactional_id)
    assert error == NONE, error
    client = partition.client
    assert bump_epoch(client, transactional_id, producer_id, epoch) == (NONE, producer_id, epoch + 1)
    retried = bump_epoch(client, transactional_id, producer_id, epoch)
    assert retried == (NONE, producer_id, epoch + 1), (
        f"a retry of the bump from epoch {epoch} answered {retried}, not epoch {epoch + 1} again")


def test_init_producer_id_with_a_known_idempotent_producer(partition: Partition) -> None:
    """InitProducerId v3+ without a transactional id but with the producer's (id, epoch),
    as librdkafka sends to bump an idempotent producer's epoch. Kafka answers with a fresh
    id at epoch 0; the same id at epoch + 1 serves the client as well. Either way the answer
    is a producer that starts at sequence 0, and the old (id, epoch) is a zombie wherever the
    new epoch of the same id wrote."""
    producer_id, epoch = new_producer(partition.client)
    partition.append(make_batch(producer_id, epoch, 0, 2))
    error, new_id, new_epoch = init_producer_id(partition.client, producer_id=producer_id,
                                                epoch=epoch)
    assert error == NONE, error
    assert (new_id, new_epoch) == (producer_id, epoch + 1) or (new_id != producer_id and new_epoch == 0), (
        f"InitProducerId for ({producer_id}, {epoch}) answered ({new_id}, {new_epoch})")
    partition.append(make_batch(new_id, new_epoch, 0, 2))
    if new_id == producer_id:
        partition.refused(make_batch(producer_id, epoch, 2, 1), INVALID_PRODUCER_EPOCH)
    partition.check()


# ---- 3. state across restarts -----------------------------------------------------------------

# With log.segment.bytes=1024 the 25 batches below (~150 bytes each) fill 4 segments and
# start a fifth: the state at the restart comes from the snapshot taken at the last roll plus
# a scan of the active segment. Without it, everything is in one segment: the state comes
# from the snapshot taken at a clean stop, or, after SIGKILL, from scanning the whole log.
ROLLED_SEGMENT_BYTES = 1024


@pytest.mark.parametrize("rolled", [False, True], ids=["one-segment", "rolled"])
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_producer_state_survives_a_restart(tmp_path: Path, stop: str, rolled: bool) -> None:
    data_dir = tmp_path / "data"
    settings = ["num.partitions=1", "log.flush.interval.messages=1"]
    if rolled:
        settings.append(f"log.segment.bytes={ROLLED_SEGMENT_BYTES}")
    topic = "restart"
    with ServeProcess(data_dir, tmp_path / "serve.log", settings=settings) as served:
        client = RawClient(served.bootstrap)
        try:
            create_topic(client, topic)
            log = Partition(client, topic)
            producer_id, epoch = new_producer(client)
            for i in range(20):
                log.append(make_batch(producer_id, epoch, 4 * i, 4))
            # A newer epoch wrote the last 5 batches: the restarted broker must know both the
            # epoch and this epoch's sequences.
            for i in range(BATCHES_RETAINED):
                log.append(make_batch(producer_id, epoch + 1, 4 * i, 4))
        finally:
            client.close()
        if stop == "sigterm":
            assert served.terminate() == 0, served.log_tail()
        else:
            served.kill()
    partition_dir = data_dir / f"{topic}-0"
    segments = sorted(partition_dir.glob("*.log"))
    assert len(segments) >= (4 if rolled else 1), [s.name for s in segments]
    with ServeProcess(data_dir, tmp_path / "serve.log", settings=settings) as served:
        client = RawClient(served.bootstrap)
        try:
            log.client = client
            if stop == "sigkill" and not rolled:
                # No snapshot was ever taken (no roll, no clean stop): the state is rebuilt by
                # scanning the log, which remembers the last 5 batches as Kafka's does. A
                # client that had 5 requests in flight when the broker died sends them all
                # again, oldest first: each one is a duplicate.
                for batch in log.expected[-BATCHES_RETAINED:]:
                    log.duplicate(batch)
            else:
                # A snapshot (Kafka's layout) keeps each producer's last batch only.
                log.duplicate(log.expected[-1])
            log.refused(make_batch(producer_id, epoch + 1, 21, 1), OUT_OF_ORDER_SEQUENCE_NUMBER)
            log.refused(make_batch(producer_id, epoch, 80, 4), INVALID_PRODUCER_EPOCH)
            log.append(make_batch(producer_id, epoch + 1, 4 * BATCHES_RETAINED, 4))
            log.duplicate(log.expected[-1])
            log.check()
        finally:
            client.close()
        assert served.terminate() == 0, served.log_tail()


@pytest.mark.parametrize("rolled", [False, True], ids=["one-segment", "rolled"])
def test_a_torn_batch_is_not_taken_for_a_written_one(tmp_path: Path, rolled: bool) -> None:
    """The broker dies while writing the next batch: its header reached the file, its last
    bytes did not, and the client never heard back. Opening the log truncates the torn
    batch (its CRC fails), so the producer state must not count it: the client's retry is
    written as new, at the offset the torn batch had. Were the state built from batch
    headers before recovery cut the log, the retry would be answered as a duplicate at an
    offset that no longer exists, and the records would be lost."""
    data_dir = tmp_path / "data"
    settings = ["num.partitions=1", "log.flush.interval.messages=1"]
    if rolled:
        settings.append(f"log.segment.bytes={ROLLED_SEGMENT_BYTES}")
    topic = "torn"
    with ServeProcess(data_dir, tmp_path / "serve.log", settings=settings) as served:
        client = RawClient(served.bootstrap)
        try:
            create_topic(client, topic)
            log = Partition(client, topic)
            producer_id, epoch = new_producer(client)
            for i in range(24 if rolled else 6):
                log.append(make_batch(producer_id, epoch, 4 * i, 4))
        finally:
            client.close()
        served.kill()
    torn = make_batch(producer_id, epoch, 4 * len(log.expected), 4)
    placed = bytearray(torn.data)
    placed[:8] = struct.pack(">q", log.log_end)  # the base offset the broker would have given
    active = max((data_dir / f"{topic}-0").glob("*.log"))
    with open(active, "r+b") as segment:
        # The active segment may be preallocated (zeros past its data): write right after
        # its last batch, which the batches' lengths lead to.
        data = segment.read()
        end = 0
        while end + 12 <= len(data) and struct.unpack_from(">i", data, end + 8)[0] > 0:
            end += 12 + struct.unpack_from(">i", data, end + 8)[0]
        segment.seek(end)
        segment.write(bytes(placed[:-5]) + b"\0" * 5)  # the last bytes never reached the disk
    with ServeProcess(data_dir, tmp_path / "serve.log", settings=settings) as served:
        client = RawClient(served.bootstrap)
        try:
            log.client = client
            log.append(torn)
            log.duplicate(torn)
            log.duplicate(log.expected[-2])
            log.check()
        finally:
            client.close()
        assert served.terminate() == 0, served.log_tail()


def test_recompressed_batches_keep_their_producer_state(tmp_path: Path) -> None:
    """compression.type=zstd: the broker stores every batch re-compressed (Kafka does the
    same), with the producer id, epoch and base sequence of the batch the client sent. The
    duplicates are recognised before and after a crash, whose state comes from scanning the
    re-compressed batches."""
    data_dir = tmp_path / "data"
    settings = ["num.partitions=1", "log.flush.interval.messages=1", "compression.type=zstd"]
    topic = "recompressed"
    with ServeProcess(data_dir, tmp_path / "serve.log", settings=settings) as served:
        client = RawClient(served.bootstrap)
        try:
            create_topic(client, topic)
            log = Partition(client, topic)
            producer_id, epoch = new_producer(client)
            for i in range(BATCHES_RETAINED + 1):
                log.append(make_batch(producer_id, epoch, 5 * i, 5))
            log.duplicate(log.expected[-2])
            codecs = {s.compression for s in read_partition(client, topic, 0)}
            assert codecs == {ZSTD}, f"the broker stored batches with codecs {codecs}, not zstd"
        finally:
            client.close()
        served.kill()
    with ServeProcess(data_dir, tmp_path / "serve.log", settings=settings) as served:
        client = RawClient(served.bootstrap)
        try:
            log.client = client
            for batch in log.expected[-BATCHES_RETAINED:]:
                log.duplicate(batch)
            log.refused(make_batch(producer_id, epoch, 5 * len(log.expected) + 1, 1),
                        OUT_OF_ORDER_SEQUENCE_NUMBER)
            log.append(make_batch(producer_id, epoch, 5 * len(log.expected), 1))
            log.check()
        finally:
            client.close()
        assert served.terminate() == 0, served.log_tail()


# ---- 4. producer expiry -----------------------------------------------------------------------

def test_an_idle_producers_state_expires(tmp_path: Path) -> None:
    settings = ["num.partitions=1", f"producer.id.expiration.ms={EXPIRATION_MS}",
                f"producer.id.expiration.check.interval.ms={EXPIRATION_CHECK_MS}"]
    with ServeProcess(tmp_path / "data", tmp_path / "serve.log", settings=settings) as served:
        client = RawClient(served.bootstrap)
        try:
            topic = "expiry"
            create_topic(client, topic)
            log = Partition(client, topic)
            producer_id, epoch = new_producer(client)
            written = time.monotonic()
            log.append(make_batch(producer_id, epoch, 0, 5))
            error, offset = produce(client, topic, make_batch(producer_id, epoch, 50, 1))
            if time.monotonic() - written < EXPIRATION_MS / 1000:
                # Still within its expiration time, the producer's state holds: a gap.
                assert error == OUT_OF_ORDER_SEQUENCE_NUMBER, error
            assert error in (NONE, OUT_OF_ORDER_SEQUENCE_NUMBER), error
            if error == NONE:  # the machine stalled past the expiry: the gap was written
                log.written(make_batch(producer_id, epoch, 50, 1), error, offset)
            # Silence past the expiration and a few checks, then the state is gone: a batch
            # at an arbitrary sequence starts the producer afresh.
            time.sleep((EXPIRATION_MS + 3 * EXPIRATION_CHECK_MS) / 1000)
            restart = make_batch(producer_id, epoch, 7777, 2)

            def accepted() -> tuple[int, int] | None:
                error, offset = produce(client, topic, restart)
                assert error in (NONE, OUT_OF_ORDER_SEQUENCE_NUMBER), error
                return (error, offset) if error == NONE else None

            answer = wait_until(accepted, 10 * EXPIRATION_MS / 1000,
                                "the idle producer's state to expire",
                                interval_s=EXPIRATION_CHECK_MS / 1000)
            log.written(restart, *answer)
            # From there the state is the new one: next sequence, duplicate, gap.
            log.duplicate(restart)
            log.refused(make_batch(producer_id, epoch, 7780, 1), OUT_OF_ORDER_SEQUENCE_NUMBER)
            log.append(make_batch(producer_id, epoch, 7779, 1))
            log.check()
        finally:
            client.close()
        assert served.terminate() == 0, served.log_tail()


# ---- 1. real clients through a proxy that cuts connections ------------------------------------

def _read_frame(sock: socket.socket) -> bytes | None:
    """One whole frame (size prefix included), or None once the peer closed."""
    def exactly(n: int) -> bytes | None:
        chunks = []
        while n:
            try:
                chunk = sock.recv(min(n, 1 << 20))
            except OSError:
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    prefix = exactly(4)
    if prefix is None:
        return None
    body = exactly(struct.unpack(">i", prefix)[0])
    return None if body is None else prefix + body


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of the broker. It counts the Produce requests it
    forwards (over all connections) and, for the ones numbered in ``cut_after``, waits for
    the broker's answer and then drops both sides of the connection instead of passing the
    answer on: the broker stored the batch, the client never learns it and must retry,
    along with whatever else it had in flight on that connection.

    A context manager: leaving it closes every socket and joins every thread (bounded)."""

    def __init__(self, cut_after: Sequence[int]) -> None:
        self._cut_after = set(cut_after)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._upstream: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.produce_requests = 0
        self.connections = 0
        self.cuts = 0
        self.errors: list[str] = []

    def forward_to(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._upstream is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                broker = socket.create_connection(self._upstream, timeout=CLIENT_TIMEOUT_S)
            except OSError as error:
                self.errors.append(f"connecting to the broker: {error!r}")
                _close(client)
                continue
            broker.settimeout(None)
            for sock in (client, broker):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cut: set[int] = set()  # correlation ids whose answers end this connection
            with self._lock:
                self.connections += 1
                self._sockets += [client, broker]
            self._spawn(self._requests, client, broker, cut)
            self._spawn(self._responses, broker, client, cut)

    def _requests(self, client: socket.socket, broker: socket.socket, cut: set[int]) -> None:
        while (frame := _read_frame(client)) is not None:
            api_key, _version, correlation = struct.unpack_from(">hhi", frame, 4)
            if api_key == apis.PRODUCE:
                with self._lock:
                    self.produce_requests += 1
                    if self.produce_requests in self._cut_after:
                        cut.add(correlation)
            try:
                broker.sendall(frame)
            except OSError:
                break
        _close(client, broker)

    def _responses(self, broker: socket.socket, client: socket.socket, cut: set[int]) -> None:
        while (frame := _read_frame(broker)) is not None:
            (correlation,) = struct.unpack_from(">i", frame, 4)
            if correlation in cut:
                with self._lock:
                    self.cuts += 1
                break
            try:
                client.sendall(frame)
            except OSError:
                break
        _close(client, broker)

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        _close(*sockets)
        for thread in threads:
            thread.join(CLIENT_TIMEOUT_S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _values(partitions: int, per_partition: int) -> dict[int, list[bytes]]:
    return {p: [b"%d-%06d-" % (p, i) + VALUE_PADDING for i in range(per_partition)]
            for p in range(partitions)}


Acked = dict[int, list[int]]  # partition -> the offset the producer was told, per record


def produce_confluent(bootstrap: str, topic: str, values: Mapping[int, list[bytes]]) -> Acked:
    acked: Acked = {p: [-1] * len(vs) for p, vs in values.items()}
    failures: list[str] = []
    fatal: list[str] = []

    def delivered(partition: int, i: int, error: Any, message: Any) -> None:
        if error is not None:
            failures.append(f"partition {partition} record {i}: {error}")
        else:
            acked[partition][i] = message.offset()

    def on_error(error: Any) -> None:
        if error.fatal():
            fatal.append(str(error))

    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        # Small batches, so 3,000 records make many Produce requests and up to 5 are in
        # flight when a connection drops.
        "linger.ms": 5, "batch.num.messages": 20,
        "socket.timeout.ms": CLIENT_TIMEOUT_MS, "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
        "retry.backoff.ms": 20, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
        "error_cb": on_error})
    for i in range(max(len(vs) for vs in values.values())):
        for partition, vs in values.items():
            producer.produce(topic, vs[i], partition=partition,
                             on_delivery=lambda e, m, p=partition, i=i: delivered(p, i, e, m))
            producer.poll(0)
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while producer.flush(1.0) and time.monotonic() < deadline:
        pass
    undelivered = len(producer)
    assert undelivered == 0, f"confluent-kafka: {undelivered} records undelivered"
    assert not fatal, f"confluent-kafka: fatal errors {fatal}"
    assert not failures, f"confluent-kafka: {len(failures)} deliveries failed, e.g. {failures[:3]}"
    return acked


def produce_kafka_python(bootstrap: str, topic: str, values: Mapping[int, list[bytes]]) -> Acked:
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, batch_size=1024,
        request_timeout_ms=CLIENT_TIMEOUT_MS, max_block_ms=CLIENT_TIMEOUT_MS,
        delivery_timeout_ms=int(DELIVERY_TIMEOUT_S * 1000),
        retry_backoff_ms=20, reconnect_backoff_ms=20, reconnect_backoff_max_ms=200)
    try:
        # kafka-python 3 is idempotent unless told otherwise (KIP-679's default).
        assert producer.config["enable_idempotence"], "kafka-python turned idempotence off"
        futures: dict[int, list[Any]] = {p: [] for p in values}
        for i in range(max(len(vs) for vs in values.values())):
            for partition, vs in values.items():
                futures[partition].append(producer.send(topic, value=vs[i], partition=partition))
        producer.flush(timeout=DELIVERY_TIMEOUT_S)
        acked: Acked = {}
        failures = []
        for partition, sent in futures.items():
            acked[partition] = []
            for i, future in enumerate(sent):
                try:
                    acked[partition].append(future.get(timeout=CLIENT_TIMEOUT_S).offset)
                except kafka.errors.KafkaError as error:
                    failures.append(f"partition {partition} record {i}: {error!r}")
                    acked[partition].append(-1)
        assert not failures, f"kafka-python: {len(failures)} sends failed, e.g. {failures[:3]}"
        return acked
    finally:
        producer.close(timeout=CLIENT_TIMEOUT_S)


PRODUCERS = {"confluent-kafka": produce_confluent, "kafka-python": produce_kafka_python}


def read_log_on_disk(data_dir: Path, topic: str, partitions: int) -> dict[int, list[bytes | None]]:
    """Every record of every partition, read with logkernel.open (the broker stopped)."""
    engine = logkernel.open(str(data_dir))
    try:
        out: dict[int, list[bytes | None]] = {}
        for partition in range(partitions):
            end = engine.end_offset(topic, partition)
            consumer = engine.consumer(auto_offset_reset="earliest")
            try:
                consumer.assign([(topic, partition)])
                consumer.seek((topic, partition), 0)
                records: list[Any] = []
                deadline = time.monotonic() + CONSUME_TIMEOUT_S
                while len(records) < end and time.monotonic() < deadline:
                    records += consumer.poll(timeout_ms=200, max_records=10_000)
            finally:
                consumer.close(autocommit=False)
            assert [r.offset for r in records] == list(range(end)), (
                f"partition {partition}: offsets {[r.offset for r in records][:10]}... of {end}")
            out[partition] = [r.value for r in records]
        return out
    finally:
        engine.close()


@pytest.mark.parametrize("client", list(PRODUCERS))
def test_retries_after_cut_connections_are_written_once(tmp_path: Path, client: str) -> None:
    topic = "cut-connections"
    values = _values(PARTITIONS, RECORDS_PER_PARTITION)
    data_dir = tmp_path / "data"
    with CuttingProxy(CUT_AFTER) as proxy:
        listen = f"127.0.0.1:{_free_port()}"
        with ServeProcess(data_dir, tmp_path / "serve.log", listen=listen,
                          advertised=proxy.address,
                          settings=[f"num.partitions={PARTITIONS}"]) as served:
            assert served.bootstrap == proxy.address  # clients are sent to the proxy
            proxy.forward_to(listen)
            direct = RawClient(listen)
            try:
                create_topic(direct, topic)
            finally:
                direct.close()
            try:
                acked = PRODUCERS[client](proxy.address, topic, values)
            except AssertionError as error:
                raise AssertionError(f"{error}\nproxy: {proxy.cuts} cuts, {proxy.connections} "
                                     f"connections, {proxy.errors}\nbroker log:\n"
                                     f"{served.log_tail()}") from None
            assert proxy.cuts == len(CUT_AFTER), (
                f"the proxy cut {proxy.cuts} of {len(CUT_AFTER)} connections planned "
                f"({proxy.produce_requests} Produce requests): the run did not test retries")
            assert not proxy.errors, proxy.errors
            assert served.terminate() == 0, served.log_tail()
    on_disk = read_log_on_disk(data_dir, topic, PARTITIONS)
    for partition, sent in values.items():
        got = on_disk[partition]
        index = {v: i for i, v in enumerate(sent)}
        assert len(got) == len(set(got)), (
            f"partition {partition}: {len(got) - len(set(got))} records written twice, "
            f"e.g. {next(v for v in got if got.count(v) > 1)!r}")
        missing = [v for v in sent if v not in set(got)]
        assert not missing, f"partition {partition}: {len(missing)} records missing, e.g. {missing[:3]}"
        assert got == sent, (f"partition {partition}: records out of send order, first at offset "
                             f"{next(o for o, v in enumerate(got) if index[v] != o)}")
        assert acked[partition] == list(range(len(sent))), (
            f"partition {partition}: the producer was told offsets "
            f"{[(i, o) for i, o in enumerate(acked[partition]) if o != i][:5]} (record, offset) "
            "where the log has them elsewhere: a retry was answered with the wrong offset")
