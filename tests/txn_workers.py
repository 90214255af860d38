"""A consume-transform-produce worker in its own process, for tests/test_broker_txn.py.

    python tests/txn_workers.py --bootstrap 127.0.0.1:9092 --group g --input in --output out \
        --transactional-id tid --log worker.jsonl --stop worker.stop

It is the exactly-once loop of Kafka's transactions, with confluent-kafka (librdkafka):

1. ``init_transactions()`` first, with the same transactional id every incarnation uses:
   it fences a previous incarnation (a SIGKILLed one) and waits until the coordinator has
   aborted its open transaction, or finished the commit it began, before this one reads
   any committed offset.
2. A consumer in the group ``--group`` (isolation.level=read_committed, auto commit off)
   subscribes to ``--input``.
3. For each input record, one output record goes to the same partition of ``--output``,
   inside a transaction: key unchanged, value ``"<partition>:<offset>:<input value>"``, so
   the test can tell which input record each output record stands for.
4. Every ``--commit-every`` records (and whenever the input runs dry), the consumer's
   positions go into the transaction (``send_offsets_to_transaction`` with the consumer's
   group metadata) and the transaction commits. A revocation aborts the open transaction:
   the consumer then resumes from the group's committed offsets.

The log is the test's evidence: JSON lines, each written whole by one write() (a worker
killed with SIGKILL leaves no torn line), each with ``t`` (time.monotonic_ns()). Events:

    start         pid
    initialized   init_transactions() returned
    assigned      partitions
    revoked       partitions, aborted (whether an open transaction was aborted)
    sent          pending (records in the open transaction), first and last (partition,
                  offset) of this batch; logged after flush(), so the records are in the log
    committed     offsets {partition: next offset}, records (how many the transaction held)
    error         error          a consume error the client reported
    closed                       after a clean stop; then exit 0
    crashed       error          the worker failed (then a traceback on stderr)

The worker stops when the file ``--stop`` exists: it commits what it holds, closes the
consumer and exits 0.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import confluent_kafka

# A poll's upper bound: short, so the worker notices its stop file and a dry input quickly.
POLL_TIMEOUT_S = 0.2
# Records per poll: small, so a transaction spans several polls and a kill can land between
# them, with records of the open transaction already in the output log.
MAX_BATCH = 20
# "Processing" a batch takes this long: it widens the window in which a transaction is open
# and holds records, the window the test kills the worker in.
PROCESS_S = 0.02
# A request to a local broker takes milliseconds; beyond this the broker is stuck, and the
# worker fails with the client's error instead of hanging.
REQUEST_TIMEOUT_S = 10.0


class Log:
    """The worker's JSON-lines log, one write() per line (O_APPEND, unbuffered)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": time.monotonic_ns(), "event": event, **fields}) + "\n"
        os.write(self._fd, line.encode())

    def close(self) -> None:
        os.close(self._fd)


def run(args: argparse.Namespace, log: Log) -> None:
    common = {"bootstrap.servers": args.bootstrap, "socket.timeout.ms": int(REQUEST_TIMEOUT_S * 1000)}
    producer = confluent_kafka.Producer({
        **common, "transactional.id": args.transactional_id, "client.id": "txn-worker-producer",
        "transaction.timeout.ms": args.transaction_timeout_ms, "linger.ms": 5})
    producer.init_transactions(REQUEST_TIMEOUT_S * 3)
    log("initialized")
    consumer = confluent_kafka.Consumer({
        **common, "group.id": args.group, "client.id": "txn-worker-consumer",
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": args.heartbeat_ms, "fetch.wait.max.ms": 100,
        "enable.partition.eof": False})
    state = {"open": False, "pending": 0}

    def commit() -> None:
        assignment = consumer.assignment()
        positions = [tp for tp in consumer.position(assignment) if tp.offset >= 0]
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(),
                                             REQUEST_TIMEOUT_S)
        producer.commit_transaction(REQUEST_TIMEOUT_S)
        log("committed", offsets={tp.partition: tp.offset for tp in positions},
            records=state["pending"])
        state["open"], state["pending"] = False, 0

    def on_assign(_consumer: Any, partitions: Any) -> None:
        log("assigned", partitions=sorted(tp.partition for tp in partitions))

    def on_revoke(_consumer: Any, partitions: Any) -> None:
        # The positions of the revoked partitions are past records whose output is in the
        # open transaction; committing offsets for partitions no longer ours would be
        # refused, so the transaction is aborted and the next owner redoes those records.
        aborted = state["open"]
        if aborted:
            producer.abort_transaction(REQUEST_TIMEOUT_S)
            state["open"], state["pending"] = False, 0
        log("revoked", partitions=sorted(tp.partition for tp in partitions), aborted=aborted)

    consumer.subscribe([args.input], on_assign=on_assign, on_revoke=on_revoke)
    try:
        while not os.path.exists(args.stop):
            messages = consumer.consume(num_messages=MAX_BATCH, timeout=POLL_TIMEOUT_S)
            good = []
            for message in messages:
                if message.error() is not None:
                    log("error", error=str(message.error()))
                else:
                    good.append(message)
            if good:
                if not state["open"]:
                    producer.begin_transaction()
                    state["open"] = True
                for message in good:
                    value = b"%d:%d:" % (message.partition(), message.offset()) + (message.value() or b"")
                    producer.produce(args.output, key=message.key(), value=value,
                                     partition=message.partition())
                remaining = producer.flush(REQUEST_TIMEOUT_S)
                assert remaining == 0, f"{remaining} output records undelivered"
                state["pending"] += len(good)
                log("sent", pending=state["pending"],
                    first=[good[0].partition(), good[0].offset()],
                    last=[good[-1].partition(), good[-1].offset()])
                time.sleep(PROCESS_S)
            if state["open"] and (state["pending"] >= args.commit_every or not good):
                commit()
        if state["open"]:
            commit()
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--transactional-id", required=True)
    parser.add_argument("--log", required=True, help="the JSON-lines log to append to")
    parser.add_argument("--stop", required=True, help="stop once this file exists")
    parser.add_argument("--commit-every", type=int, default=100)
    parser.add_argument("--transaction-timeout-ms", type=int, default=30_000)
    parser.add_argument("--session-timeout-ms", type=int, default=3000)
    parser.add_argument("--heartbeat-ms", type=int, default=500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # SIGUSR1 prints every thread's stack to stderr: what a test does to a worker that hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    log = Log(args.log)
    log("start", pid=os.getpid())
    try:
        run(args, log)
    except BaseException as exc:
        log("crashed", error=repr(exc))
        raise
    log("closed")
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
