"""The ``logkernel`` command.

    logkernel serve [--data-dir DIR] [--listen HOST:PORT] [--advertised HOST:PORT]
                    [--set key=value]...             run a Kafka-protocol broker
    logkernel demo [--data-dir DIR] [--records N]   produce records to a topic, consume them back
    logkernel info                                   version and native-core facts

``make run`` runs ``logkernel serve`` on 127.0.0.1:9092 with data in ./logkernel-data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import signal
import sys
import time
from collections.abc import Sequence

import logkernel
from logkernel import __version__, _binding

DEMO_TOPIC = "demo"
DEMO_BATCH = 1000


def demo(data_dir: str, records: int) -> int:
    began = time.perf_counter()
    with logkernel.open(data_dir) as lk:
        opened = time.perf_counter() - began
        print(f"logkernel {__version__} demo: data in {lk.path} (opened in {opened * 1000:.1f} ms)")
        print(f"  CRC-32C implementation: {_binding.crc32c_selected()}")
        for name, report in lk.recovery.items():
            print(f"  recovered {name}: {len(report.truncated)} segment(s) truncated, "
                  f"{len(report.deleted)} deleted, {len(report.rebuilt_indexes)} index rebuild(s)")
        if DEMO_TOPIC not in lk.topics():
            lk.create_topic(DEMO_TOPIC, partitions=3)
        start = {p.partition: p.log_end_offset for p in lk.describe_topic(DEMO_TOPIC).partitions}
        producer = lk.producer()

        began = time.perf_counter()
        sent = 0
        while sent < records:
            n = min(DEMO_BATCH, records - sent)
            values = [b"event %d: action=click" % i for i in range(sent, sent + n)]
            keys = [b"user-%d" % (i % 97) for i in range(sent, sent + n)]
            producer.send_batch(DEMO_TOPIC, values, keys=keys)
            sent += n
        last = producer.send(DEMO_TOPIC, b"the last one", key=b"user-1")
        lk.flush()
        elapsed = time.perf_counter() - began
        print(f"  appended {records + 1} records to topic {DEMO_TOPIC!r} (3 partitions, keyed) in "
              f"{elapsed * 1000:.1f} ms, then fsynced; the last went to partition "
              f"{last.partition} at offset {last.offset}")

        began = time.perf_counter()
        consumer = lk.consumer(DEMO_TOPIC, auto_offset_reset="earliest")
        for partition, offset in start.items():
            consumer.seek((DEMO_TOPIC, partition), offset)
        read_back = 0
        newest = None
        while batch := consumer.poll(max_records=10_000):
            read_back += len(batch)
            newest = batch[-1]
        elapsed = time.perf_counter() - began
        print(f"  read back {read_back} records in {elapsed * 1000:.1f} ms (every batch CRC-checked)")
        if newest is not None:
            print(f"  e.g. {newest.topic}-{newest.partition} offset {newest.offset}: "
                  f"key={newest.key!r} value={newest.value!r}")
        for p in lk.describe_topic(DEMO_TOPIC).partitions:
            print(f"  partition {p.partition}: offsets {p.log_start_offset}..{p.log_end_offset - 1}, "
                  f"{p.segments} segment(s), {p.size_bytes} bytes")
    if read_back != records + 1:
        print(f"  ERROR: expected {records + 1} records, read {read_back}", file=sys.stderr)
        return 1
    return 0


def parse_settings(pairs: Sequence[str]) -> dict[str, str]:
    """``--set key=value`` arguments as a dict; ValueError names a malformed one."""
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes key=value (a Kafka broker config), got {pair!r}")
        settings[key.strip()] = value.strip()
    return settings


def raise_descriptor_limit() -> None:
    """Lifts the soft limit on open files to the hard one, as servers do: every open
    partition holds about 6 descriptors and every connection one, and the usual soft limit
    (1,024) would cap a broker at ~150 partitions. Only the serve command does this; a
    program embedding the engine keeps the limits it chose."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(data_dir: str, listen: str, advertised: str | None, settings: dict[str, str],
          log_level: str) -> int:
    """Runs the broker until SIGTERM or SIGINT: then stops accepting, finishes in-flight
    requests, flushes, and exits 0."""
    # kio, which the broker's protocol layer uses, imports hypothesis at import time when it
    # is installed (to register test strategies); that alone costs ~0.3 s, more than the
    # whole start-up budget. The serving process never uses hypothesis, so hide it while
    # kio loads, and only if nothing imported it yet.
    hide_hypothesis = "hypothesis" not in sys.modules
    if hide_hypothesis:
        sys.modules["hypothesis"] = None  # type: ignore[assignment]
    try:
        from logkernel import broker
        from logkernel.config import BrokerConfig
    finally:
        if hide_hypothesis:
            del sys.modules["hypothesis"]

    logging.basicConfig(level=getattr(logging, log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        BrokerConfig(settings)
        broker.parse_address(listen, "--listen")
        if advertised:
            broker.parse_address(advertised, "--advertised")
    except ValueError as exc:
        print(f"logkernel serve: {exc}", file=sys.stderr)
        return 2

    raise_descriptor_limit()

    def ready(bootstrap: str, path: str) -> None:
        print(f"logkernel ready bootstrap={bootstrap} data_dir={path}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await broker.serve_forever(data_dir, listen, settings, advertised, ready, stop)

    try:
        asyncio.run(main())
    except logkernel.errors.LogkernelError as exc:
        print(f"logkernel serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"logkernel serve: cannot listen on {listen}: {exc}", file=sys.stderr)
        return 1
    return 0


def info() -> int:
    print(f"logkernel {__version__}")
    print(f"CRC-32C: using {_binding.crc32c_selected()}; "
          f"available: {', '.join(_binding.crc32c_available())}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="logkernel", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_serve = commands.add_parser("serve", help="run a Kafka-protocol broker over a data directory")
    p_serve.add_argument("--data-dir", default="./logkernel-data")
    p_serve.add_argument("--listen", default="127.0.0.1:9092",
                         help="HOST:PORT to listen on (port 0: pick a free one)")
    p_serve.add_argument("--advertised", default=None,
                         help="HOST:PORT clients are told to connect to (default: the listener)")
    p_serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="a Kafka broker config, e.g. num.partitions=3 (repeatable)")
    p_serve.add_argument("--log-level", default="warning",
                         choices=["debug", "info", "warning", "error"])
    p_demo = commands.add_parser("demo", help="produce records to a topic and consume them back")
    p_demo.add_argument("--data-dir", default="./logkernel-data")
    p_demo.add_argument("--records", type=int, default=100_000)
    commands.add_parser("info", help="version and native-core facts")
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            settings = parse_settings(args.set)
        except ValueError as exc:
            parser.error(str(exc))
        return serve(args.data_dir, args.listen, args.advertised, settings, args.log_level)
    if args.command == "demo":
        if args.records < 1:
            parser.error("--records must be at least 1")
        return demo(args.data_dir, args.records)
    return info()


if __name__ == "__main__":
    sys.exit(main())
