"""Child processes for tests/test_cleaner_crash.py, run as a script::

    python tests/cleaner_workers.py loop DIR SEED START
        writes rounds START, START+1, ... of the data set (one send_batch each), flushes
        and prints "round N" after each, compacting (and the background cleaner running)
        in between, until it is killed.

    python tests/cleaner_workers.py clean DIR MAP_BYTES NOW_MS KILL_AT [open]
        opens DIR, then counts the file operations of a cleaning to the end
        (clean_partition pass after pass, replaced files removed on this thread):
        os.replace, os.unlink, os.fsync and fsync_directory (patched where they are looked
        up). Prints "op N <what>" for each, SIGKILLs itself just before op KILL_AT (0:
        never), and prints "total N" at the end. With "open", counting starts before the
        engine opens instead (to kill the completion of an interrupted swap).

    python tests/cleaner_workers.py server
        a fork server, so hundreds of kill points cost milliseconds each rather than an
        interpreter start: imports logkernel once, then for each line "OUTFILE ARGS..." on
        stdin forks a child that runs ``main(ARGS)`` with its output in OUTFILE, waits
        for it and prints "status N" (N: os.waitpid's status). This process has no
        threads, so forking it is safe.

The data set is a function of the seed only, so the parent knows what was written."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

TOPIC = "t"
PARTITION_DIR = f"{TOPIC}-0"
HOUR = 3_600_000
# Engine settings of every open in these tests: the cleaner only when asked, and one
# partition of __consumer_offsets (50 would make every open and every count of file
# operations 50 partitions bigger).
ENGINE_CONFIG = {"log.cleaner.enable": False, "offsets.topic.num.partitions": 1}
TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.bytes": 700,
                "delete.retention.ms": HOUR, "index.interval.bytes": 128}


def data_rounds(seed: int, count: int, keys: int = 40) -> list[list[tuple[bytes, bytes | None]]]:
    """``count`` rounds of (key, value or None for a tombstone); each is written as one
    batch, so it is in the log whole or not at all."""
    rng = random.Random(seed)
    out = []
    for r in range(count):
        items = []
        for i in range(rng.randint(1, 12)):
            key = b"k%03d" % rng.randrange(keys)
            value = None if rng.random() < 0.15 else (b"%d.%d." % (r, i)
                                                      + b"x" * rng.randrange(40))
            items.append((key, value))
        out.append(items)
    return out


def codec_of_round(r: int) -> str | None:
    return (None, None, "gzip", None, "lz4")[r % 5]


def write_rounds(lk: Any, rounds: list[list[tuple[bytes, bytes | None]]], start: int,
                 stop: int, after: Callable[[int], None] | None = None) -> None:
    producers = {c: lk.producer(compression_type=c) for c in (None, "gzip", "lz4")}
    for r in range(start, stop):
        items = rounds[r]
        producers[codec_of_round(r)].send_batch(TOPIC, [v for _, v in items],
                                                keys=[k for k, _ in items], partition=0)
        if after is not None:
            after(r)


def read_log(pl: Any) -> tuple[list[Any], int]:
    """Every record (records.Record) of a PartitionLog from its start, read with
    PartitionLog.read (not the consumer, which spins on a gap at the log's end: see
    test_cleaner_model.py::test_consumer_poll_returns_on_a_gap_at_the_log_end), and the
    position after the last batch. Asserts that offsets strictly increase."""
    from logkernel.records import decode_batch

    out: list[Any] = []
    position = pl.log_start_offset
    while data := pl.read(position, 1 << 16):
        view = memoryview(data)
        at = 0
        advanced = False
        while len(view) - at >= 12:
            size = int.from_bytes(view[at + 8:at + 12], "big") + 12
            if size > len(view) - at:
                break
            batch = decode_batch(view[at:at + size])
            h = batch.header
            for record in batch.records():
                if record.offset >= position:
                    assert not out or record.offset > out[-1].offset, (out[-1], record)
                    out.append(record)
            nxt = h.base_offset + h.last_offset_delta + 1
            assert nxt > position or not batch.records(), (position, h)
            position = max(position, nxt)
            advanced = True
            at += size
        assert advanced, f"read({position}) returned no whole batch"
    return out, position


def loop(directory: str, seed: int, start: int) -> None:
    import logkernel

    lk = logkernel.open(directory, config={
        **ENGINE_CONFIG, "log.cleaner.enable": True, "log.cleaner.backoff.ms": 5,
        "log.cleaner.dedupe.buffer.size": 1024, "log.cleaner.io.buffer.size": 1024,
        "log.cleaner.min.cleanable.ratio": 0.01})
    if TOPIC not in lk.topics():
        lk.create_topic(TOPIC, partitions=1, config=TOPIC_CONFIG)
    rounds = data_rounds(seed, start + 5000)  # more than a child lives to write

    def after(r: int) -> None:
        lk.flush()
        print(f"round {r}", flush=True)
        if r % 3 == 0:
            lk.compact(TOPIC, roll=r % 2 == 0)

    print("ready", flush=True)
    write_rounds(lk, rounds, start, len(rounds), after)


_counted: list[Callable[[], int]] = []


def install_hooks(kill_at: int) -> None:
    """Counts (and prints) the file operations the main thread makes in the topic's
    partition directory; SIGKILLs this process just before operation ``kill_at``."""
    from logkernel.log import checkpoint, cleaner, partition

    main = threading.get_ident()
    state = {"calls": 0, "inside": False}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if state["inside"] or threading.get_ident() != main:
                return fn(*args, **kwargs)
            paths = [a if isinstance(a, str) else os.readlink(f"/proc/self/fd/{a}")
                     for a in args]
            if not any(os.path.basename(p) == PARTITION_DIR
                       or os.path.basename(os.path.dirname(p)) == PARTITION_DIR for p in paths):
                return fn(*args, **kwargs)
            state["calls"] += 1
            what = " ".join(os.path.basename(p) if isinstance(a, str) else
                            f"fd:{os.path.basename(p)}" for a, p in zip(args, paths, strict=True))
            if state["calls"] == kill_at:
                print(f"kill {state['calls']} {name} {what}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            print(f"op {state['calls']} {name} {what}", flush=True)
            state["inside"] = True  # fsync_directory calls os.fsync: one operation
            try:
                return fn(*args, **kwargs)
            finally:
                state["inside"] = False
        return wrapper

    os.replace = wrap("replace", os.replace)  # type: ignore[assignment]
    os.unlink = wrap("unlink", os.unlink)  # type: ignore[assignment]
    os.fsync = wrap("fsync", os.fsync)  # type: ignore[assignment]
    fsync_directory = wrap("fsync_directory", checkpoint.fsync_directory)
    checkpoint.fsync_directory = fsync_directory  # type: ignore[assignment]
    partition.fsync_directory = fsync_directory  # type: ignore[assignment]
    cleaner.fsync_directory = fsync_directory  # type: ignore[assignment]
    _counted.append(lambda: state["calls"])


def clean(directory: str, map_bytes: int, now_ms: int, kill_at: int, from_open: bool) -> None:
    import logkernel
    from logkernel import _binding
    from logkernel.log.cleaner import clean_partition, remove_files

    if from_open:
        install_hooks(kill_at)
    lk = logkernel.open(directory, config=ENGINE_CONFIG)
    pl = lk.partition_log(TOPIC, 0)
    print(f"opened {_counted[0]()}" if from_open else "opened", flush=True)
    if not from_open:
        install_hooks(kill_at)
    offset_map = _binding.OffsetMap(map_bytes, 0.9)
    buffers = _binding.FilterBuffers(1024)
    while True:
        result = clean_partition(pl, offset_map, buffers, now_ms=now_ms, chunk_bytes=1024,
                                 remove=remove_files)
        print(f"pass {result}", flush=True)
        if result is None or not result.map_full:
            break
    print(f"total {_counted[0]()}", flush=True)
    sys.stdout.flush()
    os._exit(0)  # no close: the parent opens the directory as a crash left it


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
                main(["worker", *args])
                code = 0
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(f"status {status}", flush=True)


def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode == "server":
        server()
    elif mode == "loop":
        loop(argv[2], int(argv[3]), int(argv[4]))
    elif mode == "clean":
        clean(argv[2], int(argv[3]), int(argv[4]), int(argv[5]),
              len(argv) > 6 and argv[6] == "open")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
