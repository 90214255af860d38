"""What idempotence and transactions cost a producer: logkernel beside tansu and librdkafka's
mock cluster, same run, same client (confluent-kafka, i.e. librdkafka), same machine, over
loopback. The brokers, their start-up, the client log and the CPU readings are
bench/bench_broker.py's; bench/conftest.py prints the summary: rates and broker CPU, the
idempotent/plain ratio per broker, transactions per second, and ratios to tansu. The mock
(C, in memory, in its own process) costs the client next to nothing on the broker side, so
its numbers are what the client alone allows on this machine: a ceiling, not a peer.

- Produce, idempotent vs plain: N messages of 100 bytes (``LOGKERNEL_BENCH_TXN_MESSAGES``,
  default 200,000; bench_broker's values), acks=all, linger.ms=5, into a fresh
  1-partition topic per run; ``enable.idempotence`` true or false, nothing else changes.
  Each round runs both, back to back, in alternating order (a paired comparison: see the
  test's docstring). Timed as bench_broker's produce: ``produce()`` + ``poll(0)`` per
  message, then ``flush()``. Before the clock: the producer is connected, has the topic's
  metadata and, when idempotent, its producer id (one message delivered). Checked: every
  message acknowledged. Target: idempotent >= 0.9x plain on logkernel (ratio of medians).
- Transactions: one transactional producer (``transactional.id``, linger.ms=5) commits T
  transactions of 100 messages of 100 bytes each (``LOGKERNEL_BENCH_TXN_TRANSACTIONS``,
  default 1,000) into a fresh 1-partition topic per round: ``begin_transaction()``, 100 x
  ``produce()``, ``commit_transaction()``. Each transaction costs the client
  AddPartitionsToTxn, Produce and EndTxn, and the broker a commit marker. Before the clock:
  ``init_transactions()`` and one committed warm-up transaction. Checked: every message
  acknowledged, every commit returned, and a read_committed consumer reads exactly the
  committed messages (so the markers were written and the last stable offset moved past
  them; not on the mock, which keeps only a partition's most recent messages). Rate = T /
  time. Target: >= 1,000 committed transactions per second on logkernel.

A peer that refuses idempotence or transactions (a fatal client error, init_transactions
failing) is skipped with the reason, which the summary repeats; logkernel is never
skipped that way: its failure fails the benchmark. Timings are never asserted.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import pytest

from bench.bench_broker import (
    _VALUE_MASK,
    BROKERS,
    STALL_TIMEOUT_S,
    VALUE_SIZE,
    VALUES,
    Broker,
    Brokers,
    ClientLog,
    Round,
    _check_delivered,
    _flush,
    _mark,
    _produce_all,
    brokers,  # noqa: F401 - the fixture, shared with bench_broker
    kafka,
)

N = int(os.environ.get("LOGKERNEL_BENCH_TXN_MESSAGES", "200000"))
TRANSACTIONS = int(os.environ.get("LOGKERNEL_BENCH_TXN_TRANSACTIONS", "1000"))
RECORDS_PER_TRANSACTION = 100

# A produce round is a plain and an idempotent run of ~1 s each: 5 give a median that one
# slow round does not move. A transaction round is 1,000 transactions, 1 to 3 s here: 3 give
# a best and a median. The file takes about a minute and a half.
PRODUCE_ROUNDS = 5
TRANSACTION_ROUNDS = 3

# Why a peer was skipped, by (broker, benchmark): the summary prints these.
UNSUPPORTED: dict[tuple[str, str], str] = {}


def _unsupported(broker: Broker, what: str, reason: str, client_log: ClientLog) -> None:
    """A peer that cannot do ``what`` is skipped (and noted for the summary); logkernel
    failing is a failure."""
    if broker.name == "logkernel":
        raise AssertionError(f"{what}: {reason}{broker.diagnosis(client_log)}")
    UNSUPPORTED[(broker.name, what)] = reason
    pytest.skip(f"{broker.name} does not support {what}: {reason}")


def _fatal_errors(client_log: ClientLog) -> list[str]:
    return [line for line in client_log.lines if line.startswith("error_cb:") and "fatal" in line.lower()]


# ---- produce: idempotent vs plain -------------------------------------------------------------

MODES = ("plain", "idempotent")


@pytest.mark.parametrize("broker_name", BROKERS)
def test_produce_idempotent_and_plain(benchmark: Any, brokers: Brokers,  # noqa: F811
                                      broker_name: str) -> None:
    """Each round times a plain and an idempotent run back to back (their order alternating
    from round to round), so both see the same machine: this VM's speed drifts over
    minutes, which would skew the ratio of two benchmarks timed one after the other. The
    rates and the ratio come from the per-mode times in extra_info; pytest-benchmark's own
    statistics are those of the pair."""
    broker = brokers.start(broker_name)
    client_log = ClientLog()
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu_seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    benchmark.group = (f"produce {N:,} x {VALUE_SIZE} B, acks=all, 1 partition: plain and "
                       "idempotent in alternation")
    benchmark.extra_info.update(txn_bench="produce", broker=broker_name, messages=N,
                                seconds=seconds, broker_cpu_s=cpu_seconds,
                                loadavg=list(os.getloadavg()))
    rounds = iter(range(PRODUCE_ROUNDS))

    def ready_producer(mode: str, number: int) -> Round:
        """A producer that is connected, has the topic's metadata and, when idempotent, its
        producer id (one message delivered), so the clock sees only the N messages."""
        topic = f"produce-{mode}-{number}"
        broker.create_topic(topic, 1, client_log)
        config = client_log.producer_config(broker.bootstrap, "all")
        config["enable.idempotence"] = mode == "idempotent"
        producer = kafka.Producer(config)
        producer.produce(topic, VALUES[0], partition=0)
        _flush(producer)
        if _fatal_errors(client_log):
            with contextlib.suppress(Exception):
                producer.close()
            _unsupported(broker, f"{mode} produce", "; ".join(_fatal_errors(client_log)), client_log)
        return Round(producer, topic, 0.0)

    def setup() -> Any:
        number = next(rounds)
        order = MODES if number % 2 == 0 else MODES[::-1]
        return ([(mode, ready_producer(mode, number)) for mode in order],), {}

    def produce_pair(pair: list[tuple[str, Round]]) -> None:
        for mode, round_ in pair:
            cpu_before = broker.cpu_seconds()
            began = time.perf_counter()
            try:
                _produce_all(round_.client, round_.topic, 0, N)
            except Exception as error:
                raise AssertionError(f"{mode} produce failed: {error!r}"
                                     f"{broker.diagnosis(client_log)}") from error
            seconds[mode].append(time.perf_counter() - began)
            cpu_seconds[mode].append(broker.cpu_seconds() - cpu_before)

    def teardown(pair: list[tuple[str, Round]]) -> None:
        for _, round_ in pair:
            round_.client.close()
        _check_delivered(broker, 2 * (N + 1), client_log)
        fatal = _fatal_errors(client_log)
        if fatal:
            raise AssertionError(f"fatal producer errors: {fatal[:3]}{broker.diagnosis(client_log)}")

    benchmark.pedantic(produce_pair, setup=setup, teardown=teardown, rounds=PRODUCE_ROUNDS,
                       iterations=1, warmup_rounds=0)


# ---- transactions -----------------------------------------------------------------------------

def _transaction(producer: Any, topic: str, count: int) -> None:
    producer.begin_transaction()
    for i in range(count):
        producer.produce(topic, VALUES[i & _VALUE_MASK], partition=0)
    producer.commit_transaction(STALL_TIMEOUT_S)


def _count_committed(broker: Broker, topic: str, expected: int, client_log: ClientLog) -> int:
    """Messages a read_committed consumer reads from ``topic``: stops at ``expected``, or
    after a second with nothing new once it has that many (to see any extra), or when
    nothing comes for STALL_TIMEOUT_S."""
    consumer = kafka.Consumer(client_log.config(
        broker.bootstrap, group_id="bench-txn-check", enable_auto_commit=False,
        isolation_level="read_committed", auto_offset_reset="earliest"))
    try:
        consumer.assign([kafka.TopicPartition(topic, 0, 0)])
        consumed = 0
        last_progress = time.monotonic()
        while time.monotonic() - last_progress < (1.0 if consumed >= expected else STALL_TIMEOUT_S):
            messages = consumer.consume(10_000, 0.2)
            for message in messages:
                if message.error() is not None:
                    raise AssertionError(f"read_committed consumer: {message.error()}"
                                         f"{broker.diagnosis(client_log)}")
            if messages:
                consumed += len(messages)
                last_progress = time.monotonic()
        return consumed
    finally:
        consumer.close()


@pytest.mark.parametrize("broker_name", BROKERS)
def test_transactions(benchmark: Any, brokers: Brokers, broker_name: str) -> None:  # noqa: F811
    broker = brokers.start(broker_name)
    client_log = ClientLog()
    cpu_seconds: list[float] = []
    messages = TRANSACTIONS * RECORDS_PER_TRANSACTION
    _mark(benchmark, f"transactions: {TRANSACTIONS:,} x {RECORDS_PER_TRANSACTION} x {VALUE_SIZE} B, "
          "one transactional producer, 1 partition", broker_name, "throughput", messages=messages,
          broker_cpu_s=cpu_seconds, txn_bench="transactions", transactions=TRANSACTIONS)
    rounds = iter(range(TRANSACTION_ROUNDS))

    def setup() -> Any:
        number = next(rounds)
        topic = f"transactions-{number}"
        broker.create_topic(topic, 1, client_log)
        config = client_log.config(broker.bootstrap, transactional_id=f"bench-txn-{number}",
                                   linger_ms=5, delivery_report_only_error=True)
        config["on_delivery"] = client_log.delivery_failed
        producer = kafka.Producer(config)
        try:
            producer.init_transactions(STALL_TIMEOUT_S)
            _transaction(producer, topic, 1)  # warm-up: coordinator, partition, connection
        except kafka.KafkaException as error:
            with contextlib.suppress(Exception):  # a producer in a fatal state may fail to close
                producer.close()
            _unsupported(broker, "transactions", f"{error.args[0]}", client_log)
        return (Round(producer, topic, broker.cpu_seconds()),), {}

    def transact(round_: Round) -> None:
        try:
            for _ in range(TRANSACTIONS):
                _transaction(round_.client, round_.topic, RECORDS_PER_TRANSACTION)
        except Exception as error:
            raise AssertionError(f"transactions failed: {error!r}{broker.diagnosis(client_log)}") from error

    def teardown(round_: Round) -> None:
        round_.client.close()
        cpu_seconds.append(broker.cpu_seconds() - round_.cpu_before)
        _check_delivered(broker, messages + 1, client_log)
        if broker.name == "mock":
            return  # it keeps only a partition's most recent messages: nothing to count
        committed = _count_committed(broker, round_.topic, messages + 1, client_log)
        if committed != messages + 1:
            raise AssertionError(f"a read_committed consumer read {committed} messages, "
                                 f"{messages + 1} were committed{broker.diagnosis(client_log)}")

    benchmark.pedantic(transact, setup=setup, teardown=teardown, rounds=TRANSACTION_ROUNDS,
                       iterations=1, warmup_rounds=0)
