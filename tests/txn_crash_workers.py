"""Child processes for tests/test_txn_crash.py, run through a fork server::

    python tests/txn_crash_workers.py server
        imports logkernel once, then for each line "OUTFILE MODE ARGS..." on stdin forks a
        child that runs ``main([MODE, *ARGS])`` with its output in OUTFILE, prints
        "pid N" at once (so the test can SIGKILL it), waits for it and prints "status S"
        (os.waitpid's status). This process has no threads, so forking it is safe, and a
        child costs milliseconds instead of an interpreter start.

Modes (each opens the engine itself, and never closes it unless it says so):

    ctp DIR SEED KILL_AT
        the exactly-once loop: a consumer in group "g" (static member, read_committed, no
        auto commit) polls "in"; per poll, one transaction sends one record to the same
        partition of "out" per input record (value "<partition>:<offset>:<input value>"),
        the consumer's positions (send_offsets_to_transaction) and commits. Prints
        "ready", "committed N" after each commit (N: inputs committed by this process)
        and "done" (then closes the engine) once every input is consumed. KILL_AT is
        "T/PHASE" (see CtpKill): SIGKILL in this process's T-th transaction at PHASE; "0":
        never.

    endtxn DIR PARTITIONS KILL_AT
        one transaction over "many" (PARTITIONS partitions) with offsets for group "g",
        then commit_transaction, KILL_AT counting the writes of the commit (the Prepare
        record, each marker, the Complete record). Prints "sent" and each write of the
        commit as "write <method> <partition>".

    open DIR
        begins a transaction over "t" (3 partitions) with offsets for group "g", prints
        "open" and SIGKILLs itself.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# Every write is fsynced (flush.messages=1 on every topic, the internal ones included), so
# what a child was told is written is durable, as a producer acknowledged with acks=all
# expects; groups form without waiting for more members.
ENGINE_CONFIG = {"log.flush.interval.messages": 1, "group.initial.rebalance.delay.ms": 0,
                 "group.min.session.timeout.ms": 100, "log.cleaner.enable": False}
INPUT_PARTITIONS = 3
INPUTS_PER_PARTITION = 150
# "Processing" a poll's records takes this long inside the transaction: it widens the
# window in which a kill finds a transaction open with records written.
PROCESSING_S = 0.002
# Long enough never to expire by accident: a killed child's transaction is aborted by the
# next incarnation's init_transactions (fencing), not by its timeout.
CTP_TIMEOUT_MS = 60_000
OPEN_TIMEOUT_MS = 500


def input_value(partition: int, offset: int) -> bytes:
    return b"in-%d-%d-" % (partition, offset) + b"x" * ((partition * 7 + offset) % 40)


def output_value(partition: int, offset: int) -> bytes:
    return b"%d:%d:" % (partition, offset) + input_value(partition, offset)


def say(*words: object) -> None:
    print(*words, flush=True)


def install_kill(kill_at: str, on_write: Callable[[str], None] | None = None) -> None:
    """SIGKILLs this process just before a write to a partition log made on this thread.
    ``kill_at`` is "METHOD/TOPIC/N": the N-th call of PartitionLog.METHOD (append,
    append_record or append_marker; "any" for all three) on a partition of TOPIC ("any"
    for all); "0": never."""
    from logkernel.log.partition import PartitionLog

    main = threading.get_ident()
    method, topic, nth = kill_at.split("/") if kill_at != "0" else ("", "", "0")
    count = [0]

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: PartitionLog, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == main:
                what = f"{name} {self.name}"
                if method in (name, "any") and topic in (self.topic, "any"):
                    count[0] += 1
                    if count[0] == int(nth):
                        say("kill", what)
                        os.kill(os.getpid(), signal.SIGKILL)
                if on_write is not None:
                    on_write(what)
            return fn(self, *args, **kwargs)
        return wrapper

    for name in ("append", "append_record", "append_marker"):
        setattr(PartitionLog, name, wrap(name, getattr(PartitionLog, name)))


class CtpKill:
    """Where a ctp child SIGKILLs itself, in its ``txn``-th transaction: before its first
    or last send ("send:first", "send:last"), before send_offsets_to_transaction
    ("offsets"), before commit_transaction ("commit"), or inside the commit before the
    Prepare record ("prepare"), the k-th marker ("marker:k", __consumer_offsets first) or
    the Complete record ("complete")."""

    PHASES = ("send:first", "send:last", "offsets", "commit", "prepare", "marker:1",
              "marker:2", "complete")

    def __init__(self, spec: str) -> None:
        txn, _, phase = spec.partition("/")
        self.txn, self.phase = int(txn), phase
        self.current = 0
        self.committing = False
        self.state_writes = 0
        self.markers = 0

    def at(self, phase: str) -> None:
        if self.current == self.txn and phase == self.phase:
            say("kill", phase)
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        from logkernel.log.partition import PartitionLog

        main = threading.get_ident()

        def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(pl: PartitionLog, *args: Any, **kwargs: Any) -> Any:
                if self.committing and threading.get_ident() == main:
                    if name == "append_marker":
                        self.markers += 1
                        self.at(f"marker:{self.markers}")
                    elif name == "append_record" and pl.topic == "__transaction_state":
                        self.at("prepare" if self.state_writes == 0 else "complete")
                        self.state_writes += 1
                return fn(pl, *args, **kwargs)
            return wrapper

        for name in ("append_record", "append_marker"):
            setattr(PartitionLog, name, wrap(name, getattr(PartitionLog, name)))

    def commit(self, producer: Any) -> None:
        self.at("commit")
        self.committing, self.state_writes, self.markers = True, 0, 0
        try:
            producer.commit_transaction()
        finally:
            self.committing = False


def ctp(directory: str, seed: int, kill_at: str) -> None:
    import logkernel

    lk = logkernel.open(directory, ENGINE_CONFIG)
    producer = lk.producer(transactional_id="ctp", transaction_timeout_ms=CTP_TIMEOUT_MS)
    producer.init_transactions()  # fences the last incarnation, aborting what it left open
    consumer = lk.consumer("in", group_id="g", group_instance_id="worker",
                           isolation_level="read_committed", enable_auto_commit=False,
                           auto_offset_reset="earliest", session_timeout_ms=10_000,
                           heartbeat_interval_ms=50)
    rng = random.Random(seed)
    kill = CtpKill(kill_at if kill_at != "0" else "0/")
    kill.install()
    say("ready")
    committed = 0
    while True:
        records = consumer.poll(timeout_ms=100, max_records=rng.randint(1, 6))
        if not records:
            assigned = consumer.assignment()
            if len(assigned) == INPUT_PARTITIONS and all(
                    consumer.position(tp) >= lk.end_offset(*tp) for tp in assigned):
                break
            continue
        kill.current += 1
        producer.begin_transaction()
        positions: dict[tuple[str, int], int] = {}
        time.sleep(PROCESSING_S)
        for i, r in enumerate(records):
            if i == 0:
                kill.at("send:first")
            if i == len(records) - 1:
                kill.at("send:last")
            producer.send("out", output_value(r.partition, r.offset), key=r.key,
                          partition=r.partition)
            positions[(r.topic, r.partition)] = r.offset + 1
        kill.at("offsets")
        producer.send_offsets_to_transaction(positions, consumer.group_metadata())
        kill.commit(producer)
        committed += len(records)
        say("committed", committed)
    say("done")
    consumer.close()
    lk.close()


def endtxn(directory: str, partitions: int, kill_at: str) -> None:
    import logkernel

    lk = logkernel.open(directory, ENGINE_CONFIG)
    if "many" not in lk.topics():
        lk.create_topic("many", partitions)
    producer = lk.producer(transactional_id="wide", transaction_timeout_ms=10_000)
    producer.init_transactions()
    producer.begin_transaction()
    for p in range(partitions):
        producer.send("many", b"txn-%d" % p, partition=p)
    producer.send_offsets_to_transaction({("many", 0): 1}, "g")
    say("sent")
    install_kill(kill_at, on_write=lambda what: say("write", what))
    producer.commit_transaction()
    say("committed")


def open_transaction(directory: str) -> None:
    import logkernel

    lk = logkernel.open(directory, ENGINE_CONFIG)
    if "t" not in lk.topics():
        lk.create_topic("t", 3)
    plain = lk.producer()
    for p in range(3):
        plain.send("t", b"before-%d" % p, partition=p)
    producer = lk.producer(transactional_id="opened", transaction_timeout_ms=OPEN_TIMEOUT_MS)
    producer.init_transactions()
    producer.begin_transaction()
    for p in range(3):
        producer.send("t", b"open-%d" % p, partition=p)
    producer.send_offsets_to_transaction({("t", 0): 1}, "g")
    for p in range(3):
        plain.send("t", b"after-%d" % p, partition=p)
    say("open")
    os.kill(os.getpid(), signal.SIGKILL)


def server() -> None:
    import logkernel  # noqa: F401  (imported once, before any fork)

    for line in sys.stdin:
        outfile, *args = line.split()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                fd = os.open(outfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.stdout = os.fdopen(1, "w", closefd=False)
                sys.stderr = os.fdopen(2, "w", closefd=False)
                main(args)
                code = 0
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"status {status}", flush=True)


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "server":
        server()
    elif mode == "ctp":
        ctp(argv[1], int(argv[2]), argv[3])
    elif mode == "endtxn":
        endtxn(argv[1], int(argv[2]), argv[3])
    elif mode == "open":
        open_transaction(argv[1])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
