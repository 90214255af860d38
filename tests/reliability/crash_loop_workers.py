"""The embedded writer of tests/reliability/test_crash_loop.py, a process of its own so the
test can SIGKILL it::

    python tests/reliability/crash_loop_workers.py writer DATA_DIR TOPIC FIRST_SEQUENCES SEED

It opens the engine on DATA_DIR (recovering whatever the previous, killed, writer left),
prints "ready", then appends numbered records to TOPIC (made by the test, with
flush.messages=1, so a send returns only after its records are fsynced) from one thread per
stream, for ever: it is only ever stopped by SIGKILL. FIRST_SEQUENCES is one number per
stream, comma separated: where each stream's numbering resumes.

Streams 0..PLAIN_STREAMS-1 use plain producers; the last stream an idempotent one. Each send
is a single record (``send``, partitioned by its key) or, one time in BATCH_ONE_IN, a batch
of 2..MAX_BATCH consecutive numbers to one partition (``send_batch``). Once a send has
returned, every record of it is reported on stdout as one line

    ack STREAM SEQUENCE PARTITION OFFSET

and all lines of one send go out in one write() (well under PIPE_BUF, so atomic on a pipe):
a kill leaves either all of a send's lines or none. What the test read on stdout is
exactly what the writer was told is stored.

The engine is never closed: every exit is a crash, and every open a recovery.
"""

from __future__ import annotations

import os
import random
import re
import sys
import threading
from typing import Any

PLAIN_STREAMS = 3
STREAMS = PLAIN_STREAMS + 1  # the last one idempotent
# One send in four is a batch: batches and single-record sends take different append paths
# (send_batch encodes a batch in C; send stamps one record straight into the map).
BATCH_ONE_IN = 4
MAX_BATCH = 4
# Keys cycle over this many per stream, so every stream's records spread over the partitions.
KEYS_PER_STREAM = 7

VALUE = re.compile(rb"s(\d+) n(\d+) (\.*)\Z")


def value(stream: int, sequence: int) -> bytes:
    """The record for (stream, sequence): both numbers, then padding of a length drawn from
    the sequence, so batches and records have varied sizes and a torn write can land
    anywhere in a record."""
    return b"s%d n%09d " % (stream, sequence) + b"." * (sequence % 40)


def key(stream: int, sequence: int) -> bytes:
    return b"s%d-k%d" % (stream, sequence % KEYS_PER_STREAM)


def parse(raw: bytes | None) -> tuple[int, int] | None:
    """(stream, sequence) of a value ``value()`` made; None for anything else."""
    if raw is None:
        return None
    match = VALUE.match(raw)
    if match is None:
        return None
    stream, sequence = int(match.group(1)), int(match.group(2))
    return (stream, sequence) if raw == value(stream, sequence) else None


def write_whole(data: bytes) -> None:
    """One write() of ``data`` to stdout (a pipe): os.write may write less only when
    interrupted, which a SIGKILL ends anyway."""
    written = os.write(1, data)
    assert written == len(data), (written, len(data))


def run_stream(lk: Any, topic: str, stream: int, first: int, seed: int,
               failures: list[BaseException]) -> None:
    try:
        producer = lk.producer(enable_idempotence=stream == STREAMS - 1)
        partitions = len(lk.get_topic(topic).partitions)
        rng = random.Random(seed * STREAMS + stream)
        sequence = first
        while True:  # stopped by SIGKILL only
            if rng.randrange(BATCH_ONE_IN) == 0:
                count = rng.randint(2, MAX_BATCH)
                numbers = range(sequence, sequence + count)
                metadata = producer.send_batch(topic, [value(stream, n) for n in numbers],
                                               keys=[key(stream, n) for n in numbers],
                                               partition=sequence % partitions)
                placed = [(int(p), int(o))
                          for p, o in zip(metadata.partitions, metadata.offsets, strict=True)]
            else:
                count = 1
                sent = producer.send(topic, value(stream, sequence), key=key(stream, sequence))
                placed = [(sent.partition, sent.offset)]
            write_whole(b"".join(b"ack %d %d %d %d\n" % (stream, sequence + i, p, o)
                                 for i, (p, o) in enumerate(placed)))
            sequence += count
    except BaseException as exc:  # reported by the main thread, which exits non-zero
        failures.append(exc)


def writer(data_dir: str, topic: str, first_sequences: str, seed: int) -> int:
    import logkernel

    firsts = [int(x) for x in first_sequences.split(",")]
    assert len(firsts) == STREAMS, firsts
    lk = logkernel.open(data_dir)
    write_whole(b"ready\n")
    failures: list[BaseException] = []
    threads = [threading.Thread(target=run_stream, args=(lk, topic, s, firsts[s], seed, failures),
                                daemon=True) for s in range(STREAMS)]
    for thread in threads:
        thread.start()
    # A writer runs until it is killed. A stream that fails (a refused append: a bug) ends
    # the process with the error on stderr, which the test reports.
    while not failures:
        threads[0].join(timeout=0.05)
    print(f"writer stream failed: {failures[0]!r}", file=sys.stderr, flush=True)
    raise failures[0]


def main(argv: list[str]) -> int:
    if argv[:1] == ["writer"] and len(argv) == 5:
        return writer(argv[1], argv[2], argv[3], int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
