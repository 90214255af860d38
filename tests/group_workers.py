"""A consumer-group member in its own process, for tests/test_broker_groups.py.

    python tests/group_workers.py --library kafka-python --bootstrap 127.0.0.1:9092 \
        --group g --topic t --log worker-0.jsonl --stop stop-0

One worker kind per client library (``kafka-python``, ``confluent-kafka``). Each subscribes
to one topic in one group with auto commit off and works commit-after-process: poll a
batch, log every record of it, commit the batch's offsets synchronously, log the commit.

The log is the test's evidence. It is JSON lines, each written whole by one write() and
flushed at once (so a worker killed with SIGKILL leaves every line it logged, none
torn), every line carrying ``t``: time.monotonic_ns(), CLOCK_MONOTONIC, one clock for all
processes of the machine, so the test can order events of different workers and its own
(a kill) on one time line. Events:

    start      pid, library, instance_id
    assigned   partitions, generation, member_id   logged on entering the assign callback
    revoked    partitions, generation, member_id   logged on leaving the revoke callback
    lost       partitions, generation, member_id   logged on leaving the lost callback
    record     p, o, k, v                          one processed record
    committed  offsets {partition: next offset}    after the broker acknowledged the commit
    commit_failed  offsets, error
    error      error                               a consume error the client reported
    closed                                         after close() returned; then exit 0
    crashed    error                               the worker failed (then a traceback on stderr)

``assigned`` on entry and ``revoked`` / ``lost`` on exit make each ownership interval as wide
as it can honestly be: the partition is the worker's from the moment the client tells it so
until the moment it has finished giving it up. ``generation`` is the group generation where
the client exposes it (kafka-python), else null (librdkafka keeps it to itself); the
callbacks' partition sets are those the client passes: the whole assignment under an eager
protocol, the change under an incremental one.

The worker stops when the file ``--stop`` exists: it closes its consumer (leaving the group,
unless it is a static member), logs ``closed`` and exits 0.
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
import warnings
from typing import Any

# A poll's upper bound: short, so the worker notices its stop file quickly.
POLL_TIMEOUT_S = 0.2
# Records per poll: small batches, so a SIGKILL lands between a batch's processing and its
# commit often enough to matter, and rebalances find work in flight.
MAX_BATCH = 50
# "Processing" a batch takes this long: the window in which a batch is done but not yet
# committed, the window a kill exposes.
PROCESS_S = 0.01
# A request (commit, metadata) answered by a local broker takes milliseconds; beyond this the
# broker is stuck, and the worker says so in its log instead of hanging.
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


def decode(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


# ---- kafka-python ----------------------------------------------------------------------------

def run_kafka_python(args: argparse.Namespace, log: Log) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka
        import kafka.errors
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

    assignors = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
                 "cooperative-sticky": CooperativeStickyAssignor}
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=args.bootstrap, group_id=args.group, client_id=args.name,
        group_instance_id=args.instance_id, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=MAX_BATCH,
        partition_assignment_strategy=[assignors[a] for a in args.assignor.split(",")],
        session_timeout_ms=args.session_timeout_ms, heartbeat_interval_ms=args.heartbeat_ms,
        request_timeout_ms=max(int(REQUEST_TIMEOUT_S * 1000), args.session_timeout_ms + 5000),
        fetch_max_wait_ms=200)

    def identity() -> dict[str, Any]:
        metadata = consumer.group_metadata()
        return {"generation": metadata.generation_id, "member_id": metadata.member_id}

    class Listener(kafka.ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned: Any) -> None:
            log("assigned", partitions=sorted(tp.partition for tp in assigned), **identity())

        def on_partitions_revoked(self, revoked: Any) -> None:
            log("revoked", partitions=sorted(tp.partition for tp in revoked), **identity())

        def on_partitions_lost(self, lost: Any) -> None:
            log("lost", partitions=sorted(tp.partition for tp in lost), **identity())

    consumer.subscribe([args.topic], listener=Listener())
    # Works around a kafka-python 3.0.12 bug: a leader that assigned before it had the
    # topic's metadata rejoins once the metadata arrives, and if that rejoin's SyncGroup
    # answer comes after a poll() has timed out, the consumer never applies it (its
    # need_rejoin() is already false), stops heartbeating and is expired for good. Fetching
    # the metadata after subscribing and before the first poll keeps that rejoin from
    # happening. (The broker answers the SyncGroup at once; the client drops it.)
    consumer.topics()
    try:
        while not os.path.exists(args.stop):
            batches = consumer.poll(timeout_ms=int(POLL_TIMEOUT_S * 1000))
            if not batches:
                continue
            offsets = {}
            for tp, records in batches.items():
                for record in records:
                    log("record", p=tp.partition, o=record.offset, k=decode(record.key),
                        v=decode(record.value))
                offsets[tp] = kafka.OffsetAndMetadata(records[-1].offset + 1, "", -1)
            time.sleep(PROCESS_S)
            committed = {tp.partition: o.offset for tp, o in offsets.items()}
            try:
                consumer.commit(offsets)
            except kafka.errors.KafkaError as exc:
                log("commit_failed", offsets=committed, error=repr(exc))
            else:
                log("committed", offsets=committed)
    finally:
        consumer.close(autocommit=False, timeout_ms=int(REQUEST_TIMEOUT_S * 1000))


# ---- confluent-kafka (librdkafka) ------------------------------------------------------------

def run_confluent(args: argparse.Namespace, log: Log) -> None:
    import confluent_kafka

    config: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap, "group.id": args.group, "client.id": args.name,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "socket.timeout.ms": int(REQUEST_TIMEOUT_S * 1000), "fetch.wait.max.ms": 200,
        "enable.partition.eof": False,
    }
    if args.protocol == "consumer":
        # KIP-848: the broker assigns and sets the timeouts; librdkafka refuses the classic
        # protocol's session, heartbeat and assignor settings here.
        config["group.protocol"] = "consumer"
    else:
        config.update({"session.timeout.ms": args.session_timeout_ms,
                       "heartbeat.interval.ms": args.heartbeat_ms,
                       "partition.assignment.strategy": args.assignor})
    if args.instance_id is not None:
        config["group.instance.id"] = args.instance_id
    if args.debug:
        config["debug"] = "cgrp,consumer"

    def identity(consumer: Any) -> dict[str, Any]:
        return {"generation": None, "member_id": consumer.memberid()}

    def on_assign(consumer: Any, partitions: Any) -> None:
        log("assigned", partitions=sorted(tp.partition for tp in partitions), **identity(consumer))

    def on_revoke(consumer: Any, partitions: Any) -> None:
        log("revoked", partitions=sorted(tp.partition for tp in partitions), **identity(consumer))

    def on_lost(consumer: Any, partitions: Any) -> None:
        log("lost", partitions=sorted(tp.partition for tp in partitions), **identity(consumer))

    consumer = confluent_kafka.Consumer(config)
    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    try:
        while not os.path.exists(args.stop):
            messages = consumer.consume(num_messages=MAX_BATCH, timeout=POLL_TIMEOUT_S)
            offsets: dict[int, int] = {}
            for message in messages:
                if message.error() is not None:
                    log("error", error=str(message.error()))
                    continue
                log("record", p=message.partition(), o=message.offset(), k=decode(message.key()),
                    v=decode(message.value()))
                offsets[message.partition()] = message.offset() + 1
            if not offsets:
                continue
            time.sleep(PROCESS_S)
            try:
                consumer.commit(offsets=[confluent_kafka.TopicPartition(args.topic, p, o)
                                         for p, o in offsets.items()], asynchronous=False)
            except confluent_kafka.KafkaException as exc:
                log("commit_failed", offsets=offsets, error=str(exc))
            else:
                log("committed", offsets=offsets)
    finally:
        consumer.close()


WORKERS = {"kafka-python": run_kafka_python, "confluent-kafka": run_confluent}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", choices=sorted(WORKERS), required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--log", required=True, help="the JSON-lines log to append to")
    parser.add_argument("--stop", required=True, help="stop once this file exists")
    parser.add_argument("--name", default="group-worker", help="the client id")
    parser.add_argument("--instance-id", default=None, help="group.instance.id (static member)")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--heartbeat-ms", type=int, default=1000)
    parser.add_argument("--assignor", default="range",
                        help="partition.assignment.strategy, comma-separated")
    parser.add_argument("--protocol", choices=("classic", "consumer"), default="classic",
                        help="group.protocol (consumer: KIP-848, confluent-kafka only)")
    args = parser.parse_args(argv)
    # The clients' own account of the group (joins, syncs) goes to stderr, which the test
    # shows when it fails. LOGKERNEL_WORKER_DEBUG=1 adds kafka-python's coordinator at debug
    # level (every group request and response) and librdkafka's cgrp debug log.
    debug = os.environ.get("LOGKERNEL_WORKER_DEBUG") == "1"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if debug:
        logging.getLogger("kafka.coordinator").setLevel(logging.DEBUG)
    args.debug = debug
    # SIGUSR1 prints every thread's stack to stderr: what a test does to a worker that hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    log = Log(args.log)
    log("start", pid=os.getpid(), library=args.library, instance_id=args.instance_id)
    try:
        WORKERS[args.library](args, log)
    except BaseException as exc:
        log("crashed", error=repr(exc))
        raise
    log("closed")
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
