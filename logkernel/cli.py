"""The ``logkernel`` command.

    logkernel serve [--data-dir DIR] [--listen HOST:PORT] [--advertised HOST:PORT]
                    [--set key=value]...             run a Kafka-protocol broker
    logkernel demo [--data-dir DIR] [--records N]   produce records to a topic, consume them back
    logkernel info                                   version and native-core facts
    logkernel groups list|describe|reset-offsets|delete [--data-dir DIR] ...
                                                     consumer groups, as kafka-consumer-groups.sh
    logkernel compact TOPIC [--partition P] [--roll] [--data-dir DIR] [--set key=value]...
                                                     clean a compacted topic now (progress bar)
    logkernel cleaner [--topic T] [--data-dir DIR]   dirty ratio of each compacted partition
    logkernel verify DATA_DIR [--topic T] [--repair] [--json] [--progress]
                                                     check every segment, index and checkpoint

``make run`` runs ``logkernel serve`` on 127.0.0.1:9092 with data in ./logkernel-data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import logkernel
from logkernel import __version__, _binding
from logkernel.engine import LOCK_FILE
from logkernel.log import verify as verification

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


# ---- logkernel groups: Kafka's kafka-consumer-groups.sh over a data directory ------------

# Every state a group can report: the classic protocol's five, then the consumer
# protocol's (KIP-848) two more. --state accepts them in any case, as Kafka's tool does.
GROUP_STATES = ("Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead",
                "Assigning", "Reconciling")
# States in which Kafka lets offsets be reset: nobody is consuming, so nobody overwrites them.
INACTIVE_GROUP_STATES = ("Empty", "Dead")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def format_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, as Kafka's tools print them; None is "-"."""
    cells = [list(header)] + [["-" if v is None or v == "" else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in cells)


def parse_group_state(text: str) -> str:
    """A --state value, matched case-insensitively to its canonical spelling."""
    for state in GROUP_STATES:
        if state.lower() == text.lower():
            return state
    raise argparse.ArgumentTypeError(f"unknown group state {text!r} (one of: {', '.join(GROUP_STATES)})")


def parse_topic_partitions(text: str) -> tuple[str, tuple[int, ...] | None]:
    """``--topic T`` (every partition) or ``--topic T:0,2`` as (topic, partitions or None).
    Kafka topic names cannot contain ':', so the first one separates the partitions."""
    topic, sep, listed = text.partition(":")
    if not topic:
        raise argparse.ArgumentTypeError(f"--topic takes TOPIC or TOPIC:P,P..., got {text!r}")
    if not sep:
        return topic, None
    try:
        partitions = tuple(int(p) for p in listed.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--topic {text!r}: partitions are numbers separated by commas, e.g. {topic}:0,2") from None
    if any(p < 0 for p in partitions):
        raise argparse.ArgumentTypeError(f"--topic {text!r}: partitions are not negative")
    return topic, partitions


def parse_datetime_ms(text: str) -> int:
    """An ISO 8601 date-time (2026-11-29T10:00:00, with an optional .fff, Z or +hh:mm) as
    milliseconds since the epoch; a time without a zone is UTC (not the local zone, so a
    command means the same on every machine)."""
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text  # Python 3.10 lacks 'Z'
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--to-datetime takes an ISO 8601 date-time such as 2026-11-29T10:00:00 (UTC), "
            f"2026-11-29T10:00:00.000+01:00 or 2026-11-29T09:00:00Z; got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)


def groups_list(lk: logkernel.Engine, args: argparse.Namespace) -> int:
    listings = lk.list_groups(states=args.state)
    if not listings:
        wanted = f" in state {' or '.join(args.state)}" if args.state else ""
        print(f"no groups{wanted} (a group exists once it has members or committed offsets)",
              file=sys.stderr)
        return 0
    print(format_table(("GROUP", "TYPE", "PROTOCOL-TYPE", "STATE"),
                       ((g.group_id, g.group_type, g.protocol_type, g.state) for g in listings)))
    return 0


def groups_describe(lk: logkernel.Engine, args: argparse.Namespace) -> int:
    group = lk.describe_group(args.group)
    print(format_table(("GROUP", "TYPE", "STATE", "PROTOCOL-TYPE", "ASSIGNOR", "GENERATION", "MEMBERS"),
                       [(group.group_id, group.group_type, group.state, group.protocol_type,
                         group.protocol, group.generation, len(group.members))]))
    print()
    if group.lag:
        print(format_table(
            ("TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER"),
            ((p.topic, p.partition, p.committed, p.log_end_offset, p.lag, p.owner) for p in group.lag)))
    else:
        print("no committed offsets and no assigned partitions")
    print(f"total lag: {group.total_lag}")
    if args.members:
        print()
        if group.members:
            print(format_table(
                ("MEMBER", "INSTANCE", "CLIENT-ID", "HOST", "PARTITIONS"),
                ((m.member_id, m.instance_id, m.client_id, m.client_host,
                  describe_partitions(m.partitions)) for m in group.members)))
        else:
            print(f"group {group.group_id!r} has no active members")
    return 0


def describe_partitions(partitions: Sequence[tuple[str, int]]) -> str:
    """[("a", 0), ("a", 1), ("b", 2)] as "a(0,1) b(2)", Kafka's --members --verbose form."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    return " ".join(f"{t}({','.join(map(str, sorted(ps)))})" for t, ps in sorted(by_topic.items()))


class ResetRefused(Exception):
    """A reset-offsets request that cannot be planned; the message says what to do."""


def partitions_to_reset(lk: logkernel.Engine, args: argparse.Namespace,
                        committed: Mapping[tuple[str, int], object]) -> list[tuple[str, int]]:
    """The partitions --topic or --all-topics names, sorted, each existing. O(partitions)."""
    existing = {name: len(lk.describe_topic(name).partitions) for name in lk.topics(internal=True)}
    if args.all_topics:
        chosen = []
        for topic, partition in sorted(committed):
            if partition < existing.get(topic, 0):
                chosen.append((topic, partition))
            else:
                print(f"skipping {topic}-{partition}: the group has an offset there but the "
                      "partition no longer exists", file=sys.stderr)
        if not chosen:
            raise ResetRefused(f"group {args.group!r} has no committed offsets on existing "
                               "partitions; name the topics to reset with --topic")
        return chosen
    wanted: set[tuple[str, int]] = set()
    for topic, partitions in args.topic:
        count = existing.get(topic)
        if count is None:
            known = ", ".join(lk.topics()) or "none"
            raise ResetRefused(f"topic {topic!r} does not exist (topics: {known})")
        for partition in partitions if partitions is not None else range(count):
            if partition >= count:
                raise ResetRefused(f"topic {topic!r} has partitions 0..{count - 1}; there is no "
                                   f"partition {partition}")
            wanted.add((topic, partition))
    return sorted(wanted)


def new_offset(lk: logkernel.Engine, args: argparse.Namespace, topic: str, partition: int,
               current: int | None) -> int:
    """Where the mode puts the partition: always within [log start offset, log end offset],
    the offsets a consumer can resume from (Kafka's tool clamps the same way)."""
    start, end = lk.beginning_offset(topic, partition), lk.end_offset(topic, partition)
    if args.to_earliest:
        return start
    if args.to_latest:
        return end
    if args.to_datetime is not None:
        # Kafka reads negative timestamps as "earliest"/"latest"; before 1970 is the start.
        found = lk.offset_for_time(topic, partition, max(args.to_datetime, 0))
        target = end if found is None else found[0]  # nothing that new: the log end, as Kafka
    elif args.shift_by is not None:
        if current is None:
            raise ResetRefused(f"cannot shift {topic}-{partition}: the group has no committed "
                               "offset there (use --to-earliest, --to-latest or --to-offset)")
        target = current + args.shift_by
    else:
        target = args.to_offset
    return min(max(target, start), end)


def groups_reset_offsets(lk: logkernel.Engine, args: argparse.Namespace) -> int:
    """Plans new committed offsets and, with --execute, commits them in one request (one
    batch appended to __consumer_offsets, fsynced when the engine closes)."""
    try:
        group = lk.describe_group(args.group)
    except logkernel.errors.GroupIdNotFoundError:
        group = None  # a new group: resetting creates its offsets, as in Kafka
    if group is not None and (group.members or group.state not in INACTIVE_GROUP_STATES):
        print(f"logkernel groups reset-offsets: group {args.group!r} is {group.state} with "
              f"{len(group.members)} member(s); offsets can only be reset while it is inactive. "
              "Stop its consumers (or wait for their session timeout), then retry.", file=sys.stderr)
        return 1
    committed = lk.committed_offsets(args.group)
    try:
        plan = []
        for topic, partition in partitions_to_reset(lk, args, committed):
            stored = committed.get((topic, partition))
            current = None if stored is None else stored.offset
            plan.append((topic, partition, current, new_offset(lk, args, topic, partition, current)))
    except ResetRefused as exc:
        print(f"logkernel groups reset-offsets: {exc}", file=sys.stderr)
        return 1
    print(format_table(("TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"), plan))
    if not args.execute:
        print(f"dry run: group {args.group!r} is unchanged; rerun with --execute to commit these "
              "offsets", file=sys.stderr)
        return 0
    lk.commit_offsets(args.group, {(topic, partition): offset for topic, partition, _, offset in plan})
    print(f"committed {len(plan)} offset(s) for group {args.group!r}", file=sys.stderr)
    return 0


def groups_delete(lk: logkernel.Engine, args: argparse.Namespace) -> int:
    offsets = len(lk.committed_offsets(args.group))
    lk.delete_group(args.group)
    print(f"deleted group {args.group!r} and its {offsets} committed offset(s)")
    return 0


GROUP_COMMANDS: dict[str, Callable[[logkernel.Engine, argparse.Namespace], int]] = {
    "list": groups_list, "describe": groups_describe, "reset-offsets": groups_reset_offsets,
    "delete": groups_delete}


def groups(args: argparse.Namespace) -> int:
    """Runs one ``logkernel groups`` command on an engine it opens (and closes: commits are
    fsynced before it exits). The engine locks the directory, so a running broker's must be
    administered through the broker."""
    return with_engine(f"logkernel groups {args.groups_command}", args.data_dir, {},
                       lambda lk: GROUP_COMMANDS[args.groups_command](lk, args))


def with_engine(command: str, data_dir: str, config: Mapping[str, str],
                run: Callable[[logkernel.Engine], int]) -> int:
    """Opens the data directory, runs the command, closes it; every way that can fail is
    one line on stderr and exit status 1."""
    if not os.path.isdir(data_dir):
        print(f"{command}: there is no data directory at {data_dir} (pass --data-dir)",
              file=sys.stderr)
        return 1
    try:
        with logkernel.open(data_dir, config) as lk:
            return run(lk)
    except logkernel.errors.DataDirLockedError:
        holder = ""
        with contextlib.suppress(OSError):
            pid = Path(data_dir, LOCK_FILE).read_text().strip()
            holder = f" (process {pid})" if pid else ""
        print(f"{command}: {data_dir} is in use by another process{holder}, most likely a "
              "running `logkernel serve`. Stop it and retry, or use a Kafka admin tool against "
              "that broker (e.g. kafka-consumer-groups.sh --bootstrap-server HOST:PORT ...).",
              file=sys.stderr)
        return 1
    except logkernel.errors.LogkernelError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{command}: cannot open the data directory {data_dir}: {exc}", file=sys.stderr)
        return 1


# ---- compaction -----------------------------------------------------------------------

class ProgressBar:
    """``[#####.....]  45%  123/270 MB  310 MB/s`` on stderr, redrawn at most ten times a
    second; nothing when stderr is not a terminal (the summary line says it all)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.began = time.perf_counter()
        self._drawn = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self._drawn < 0.1:
            return
        self._drawn = now
        fraction = done / total if total else 1.0
        filled = int(fraction * 30)
        rate = done / 1e6 / max(now - self.began, 1e-9)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                          f"{fraction * 100:3.0f}%  {done / 1e6:.1f}/{total / 1e6:.1f} MB  "
                          f"{rate:.0f} MB/s")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")


def compact(args: argparse.Namespace, settings: dict[str, str]) -> int:
    """Cleans a compacted topic now (with the background cleaner off, so it does not
    compete), then prints what each partition's cleaning did."""
    config = {"log.cleaner.enable": "false", **settings}

    def run(lk: logkernel.Engine) -> int:
        partitions = ([args.partition] if args.partition is not None
                      else range(len(lk.describe_topic(args.topic).partitions)))
        rows: list[tuple[object, ...]] = []
        for partition in partitions:
            bar = ProgressBar(f"{args.topic}-{partition}")
            try:
                results = lk.compact(args.topic, partition, roll=args.roll, progress=bar)
            finally:
                bar.finish()
            if not results:
                rows.append((args.topic, partition, 0, "-", "-", "-", "-", "-",
                             "nothing to clean" + ("" if args.roll else
                                                   " (the active segment is not cleaned "
                                                   "without --roll)")))
                continue
            read = sum(r.bytes_read for r in results)
            seconds = sum(r.seconds for r in results)
            # The last pass reads every record below the end of the cleaned section.
            rows.append((args.topic, partition, len(results), results[-1].records_read,
                         results[-1].records_kept, f"{read / 1e6:.1f}",
                         f"{sum(r.bytes_written for r in results) / 1e6:.1f}",
                         f"{seconds:.2f}", f"{read / 1e6 / seconds:.0f} MB/s" if seconds else "-"))
        print(format_table(("TOPIC", "PARTITION", "PASSES", "RECORDS-READ", "RECORDS-KEPT",
                            "MB-READ", "MB-WRITTEN", "SECONDS", "RATE"), rows))
        return 0

    return with_engine("logkernel compact", args.data_dir, config, run)


def cleaner(args: argparse.Namespace) -> int:
    """Prints how dirty each compacted partition is and whether the cleaner would clean it."""

    def run(lk: logkernel.Engine) -> int:
        stats = lk.cleaner_stats(args.topic)
        if not stats.partitions:
            print("no compacted partitions" + (f" in topic {args.topic!r}" if args.topic else ""))
            return 0
        print(format_table(
            ("TOPIC", "PARTITION", "DIRTY-RATIO", "CLEAN-BYTES", "DIRTY-BYTES", "UNCLEANABLE-BYTES",
             "FIRST-DIRTY", "DUE"),
            ((p.topic, p.partition, f"{p.state.dirty_ratio:.2f}", p.state.clean_bytes,
              p.state.dirty_bytes, p.state.uncleanable_bytes, p.state.first_dirty,
              p.state.due or "no") for p in stats.partitions)))
        return 0

    return with_engine("logkernel cleaner", args.data_dir, {"log.cleaner.enable": "false"}, run)


# ---- transactions ---------------------------------------------------------------------

def transactions(args: argparse.Namespace) -> int:
    """Every transactional id: its producer, state and open transaction (Kafka's
    kafka-transactions.sh list + describe)."""

    def run(lk: logkernel.Engine) -> int:
        listings = lk.transactions.list_transactions(args.state or ())
        if not listings:
            print("no transactional ids" + (f" in state {', '.join(args.state)}" if args.state
                                            else ""))
            return 0
        rows = []
        for listing in listings:
            meta = lk.transactions.describe(listing.transactional_id)
            if meta is None:
                continue
            started = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(meta.start_ms / 1000))
                       if meta.start_ms >= 0 else "-")
            rows.append((meta.transactional_id, meta.producer_id, meta.producer_epoch,
                         meta.state_name, meta.timeout_ms, started,
                         describe_partitions(sorted(meta.open_partitions)) or "-"))
        print(format_table(("TRANSACTIONAL-ID", "PRODUCER-ID", "EPOCH", "STATE", "TIMEOUT-MS",
                            "STARTED", "PARTITIONS"), rows))
        return 0

    return with_engine("logkernel transactions", args.data_dir, {}, run)


def producers(args: argparse.Namespace) -> int:
    """Each partition's high watermark, last stable offset and active producers (Kafka's
    kafka-transactions.sh describe-producers)."""

    def run(lk: logkernel.Engine) -> int:
        topic = lk.get_topic(args.topic)
        wanted = range(len(topic.partitions)) if args.partition is None else [args.partition]
        rows: list[tuple[object, ...]] = []
        for partition in wanted:
            partition_log = lk.partition_log(args.topic, partition, create=False)
            head = (partition, partition_log.high_watermark, partition_log.last_stable_offset)
            states = partition_log.producer_states()
            for e in sorted(states, key=lambda e: e.producer_id):
                rows.append((*head, e.producer_id, e.epoch, e.last_seq, e.last_timestamp,
                             e.current_txn_first_offset if e.current_txn_first_offset >= 0 else "-"))
            if not states:
                rows.append((*head, "-", "-", "-", "-", "-"))
        print(format_table(("PARTITION", "HIGH-WATERMARK", "LAST-STABLE", "PRODUCER-ID", "EPOCH",
                            "LAST-SEQUENCE", "LAST-TIMESTAMP", "OPEN-TXN-FROM"), rows))
        return 0

    return with_engine("logkernel producers", args.data_dir, {}, run)


# ---- verify ---------------------------------------------------------------------------

# Exit statuses of `logkernel verify`: scripts tell "damage found" from "could not check".
VERIFY_CLEAN = 0
VERIFY_PROBLEMS = 1
VERIFY_CANNOT = 2
# Problems no repair can fix: the engine cannot open the directory while they last.
UNOPENABLE = ("metadata-corrupt", "metadata-missing")


def print_verify_report(report: verification.Report, out: TextIO) -> None:
    """One block per problem (what, where, what a repair drops), the notes, a summary."""
    for p in report.problems:
        where = p.path or report.data_dir
        if p.position >= 0:
            where += f" byte {p.position}"
        if p.offset >= 0:
            where += f" (offset {p.offset})"
        print(f"{p.severity.upper():<8} {where}: {p.what}", file=out)
        if p.dropped:
            print(f"{'':<8} {p.dropped}", file=out)
    for note in report.notes:
        print(f"{'note':<8} {note}", file=out)
    for item in report.unrepairable:
        print(f"{'manual':<8} {item}", file=out)
    s = report.summary()
    verdict = ("clean" if report.clean else
               f"{s['errors']} error(s), {s['warnings']} warning(s)")
    size = s["bytes"]
    shown = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
    print(f"checked {s['partitions']} partition(s), {s['segments']} segment(s), "
          f"{s['batches']} batch(es) holding {s['records']} record(s), "
          f"{shown} in {s['seconds']:.2f} s: {verdict}", file=out)


def run_verify(data_dir: str, topic: str | None, progress: bool) -> verification.Report:
    bar = ProgressBar("verify")
    bar.enabled = bar.enabled or progress
    try:
        return verification.verify(data_dir, topic, progress=bar)
    finally:
        bar.finish()


def repair_directory(args: argparse.Namespace, report: verification.Report,
                     out: TextIO) -> tuple[int, dict[str, object]]:
    """Cuts the damaged logs and removes the unusable files the report names (holding the
    directory lock), then opens the directory with recovery forced and closes it, so the
    engine's own recovery rebuilds indexes, checkpoints and producer state; verifies
    again. Returns the exit status and what it did (for --json)."""
    done: dict[str, object] = {"actions": [], "recovery": {}, "after": None}
    unopenable = [p for p in report.problems if p.kind in UNOPENABLE]
    if unopenable:
        print(f"logkernel verify: cannot repair {args.data_dir}: {unopenable[0].path} must be "
              "fixed or removed by hand first (the engine cannot open the directory)",
              file=sys.stderr)
        return VERIFY_PROBLEMS, done
    actions = verification.plan_repair(report)
    done["actions"] = [dataclasses.asdict(a) for a in actions]
    verbs = {"truncate": "truncate", "remove": "remove", "recovery-point": "set the recovery "
             "point of", "force-recovery": "remove"}
    print("repair:", file=out)
    for a in actions:
        target = os.path.relpath(a.path, report.data_dir)
        size = (f" to {a.size} bytes" if a.action == "truncate" else
                f" to {a.size}" if a.action == "recovery-point" else "")
        print(f"  {verbs[a.action]} {target}{size} ({a.why})", file=out)
    try:
        with verification.hold_lock(args.data_dir):
            verification.apply_repair(report, actions)
        print("  open the directory (the engine recovers what the steps above left to it)",
              file=out)
        with logkernel.open(args.data_dir, {"log.cleaner.enable": False}) as lk:
            recovery = {name: dataclasses.asdict(r) for name, r in lk.recovery.items()}
        done["recovery"] = recovery
        for name, r in sorted(recovery.items()):
            for kind in ("truncated", "deleted", "rebuilt_indexes"):
                for line in r[kind]:
                    print(f"  {name}: {kind.replace('_', ' ')}: {line}", file=out)
    except logkernel.errors.DataDirLockedError as exc:
        print(f"logkernel verify: {exc}", file=sys.stderr)
        return VERIFY_CANNOT, done
    except (logkernel.errors.LogkernelError, OSError) as exc:
        print(f"logkernel verify: the repair failed: {exc}", file=sys.stderr)
        return VERIFY_PROBLEMS, done
    after = run_verify(args.data_dir, args.topic, args.progress)
    done["after"] = after.to_json()
    print("after the repair:", file=out)
    print_verify_report(after, out)
    return (VERIFY_CLEAN if after.clean else VERIFY_PROBLEMS), done


def verify_command(args: argparse.Namespace) -> int:
    """``logkernel verify``: the report, and with --repair the repair and a second report.
    Exit 0 clean, 1 problems found (or left after a repair), 2 could not check or repair."""
    if not os.path.isdir(args.data_dir):
        print(f"logkernel verify: there is no data directory at {args.data_dir}", file=sys.stderr)
        return VERIFY_CANNOT
    if args.repair:
        holder = verification.lock_holder(args.data_dir)
        if holder is not None:
            print(f"logkernel verify: refusing to repair {args.data_dir}: it is open in a running "
                  f"engine or broker ({holder}). Stop it first (it recovers what it can when it "
                  "opens); verify without --repair checks a live directory.", file=sys.stderr)
            return VERIFY_CANNOT
    try:
        report = run_verify(args.data_dir, args.topic, args.progress)
    except logkernel.errors.UnknownTopicError as exc:
        print(f"logkernel verify: {exc}", file=sys.stderr)
        return VERIFY_CANNOT
    # With --json the human text goes nowhere: stdout is one JSON document.
    out: TextIO = open(os.devnull, "w") if args.json else sys.stdout  # noqa: SIM115
    try:
        if not args.json:
            print(f"logkernel verify: {os.path.abspath(args.data_dir)}", file=out)
        print_verify_report(report, out)
        status = VERIFY_CLEAN if report.clean else VERIFY_PROBLEMS
        document = report.to_json()
        if args.repair and not report.clean:
            status, document["repair"] = repair_directory(args, report, out)
        elif args.repair:
            print("nothing to repair", file=out)
    finally:
        if args.json:
            out.close()
    if args.json:
        print(json.dumps(document, indent=1))
    return status


def add_verify_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p_verify = commands.add_parser(
        "verify", help="check every segment, index and checkpoint of a data directory",
        description="Checks every batch's CRC-32C and structure, the offsets within and across "
        "segments, the offset, time and aborted-transaction indexes, producer snapshots and "
        "checkpoints against each other, and reports each problem (file, byte position, offset, "
        "what is wrong, what a repair drops). Changes nothing unless --repair. Exit status 0: "
        "clean; 1: problems found (or left after --repair); 2: could not check or repair.")
    p_verify.add_argument("data_dir", metavar="DATA_DIR")
    p_verify.add_argument("--topic", default=None, help="only this topic's partitions")
    p_verify.add_argument("--repair", action="store_true",
                          help="cut each damaged log to its valid prefix (removing the "
                          "segments after it), remove unusable indexes, snapshots and "
                          "checkpoints, then open the directory with recovery forced so the "
                          "engine rebuilds them; refused while an engine holds the directory")
    p_verify.add_argument("--json", action="store_true", help="print one JSON document")
    p_verify.add_argument("--progress", action="store_true",
                          help="a progress bar on stderr even when it is not a terminal")


def add_transaction_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p_txns = commands.add_parser(
        "transactions", help="transactional ids, their producers and open transactions",
        description="Every transactional id in a data directory: producer id and epoch, state, "
        "timeout, and the partitions of its open transaction. Works on a data directory no "
        "broker has open.")
    p_txns.add_argument("--state", action="append", default=[],
                        choices=["Empty", "Ongoing", "PrepareCommit", "PrepareAbort",
                                 "CompleteCommit", "CompleteAbort"], help="only ids in this state")
    p_txns.add_argument("--data-dir", default="./logkernel-data")
    p_producers = commands.add_parser(
        "producers", help="the idempotent and transactional producers of a topic's partitions",
        description="Per partition: high watermark, last stable offset, and each producer's "
        "epoch, last sequence, last write and open transaction.")
    p_producers.add_argument("topic")
    p_producers.add_argument("--partition", type=int, default=None, help="only this partition")
    p_producers.add_argument("--data-dir", default="./logkernel-data")


def add_compaction_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p_compact = commands.add_parser(
        "compact", help="clean a compacted topic now, with a progress bar",
        description="Runs the log cleaner on a compacted topic now, whatever its dirty ratio, in "
        "as many passes as its key map needs. The active segment is never cleaned; --roll rolls "
        "it first so every record older than min.compaction.lag.ms is compacted. Works on a data "
        "directory no broker has open.")
    p_compact.add_argument("topic")
    p_compact.add_argument("--partition", type=int, default=None, help="only this partition")
    p_compact.add_argument("--roll", action="store_true",
                           help="roll the active segment first so its records are cleaned too")
    p_compact.add_argument("--data-dir", default="./logkernel-data")
    p_compact.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="an engine config, e.g. log.cleaner.dedupe.buffer.size=1048576")
    p_cleaner = commands.add_parser(
        "cleaner", help="dirty ratio of each compacted partition",
        description="How dirty each compacted partition is (cleanable bytes over cleaned plus "
        "cleanable bytes) and why the cleaner would clean it now, if it would.")
    p_cleaner.add_argument("--topic", default=None, help="only this topic")
    p_cleaner.add_argument("--data-dir", default="./logkernel-data")


def add_groups_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p_groups = commands.add_parser(
        "groups", help="list, describe, reset the offsets of, or delete consumer groups",
        description="Consumer groups in a data directory, as Kafka's kafka-consumer-groups.sh shows "
        "them. Works on a directory no broker has open; for a running broker, stop it or point a "
        "Kafka admin tool at it.")
    actions = p_groups.add_subparsers(dest="groups_command", required=True)
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", default="./logkernel-data")

    p_list = actions.add_parser("list", parents=[data_dir], help="every group: type, protocol type, state")
    p_list.add_argument("--state", nargs="+", type=parse_group_state, metavar="STATE",
                        help=f"only groups in these states ({', '.join(GROUP_STATES)})")

    p_describe = actions.add_parser("describe", parents=[data_dir],
                                    help="a group's state and its offsets and lag per partition")
    p_describe.add_argument("group")
    p_describe.add_argument("--members", action="store_true",
                            help="also list the members and the partitions assigned to each")

    p_reset = actions.add_parser(
        "reset-offsets", parents=[data_dir], help="move a group's committed offsets",
        description="Plans new committed offsets for an inactive group and prints them; commits "
        "them only with --execute. New offsets are clamped into [log start, log end].")
    p_reset.add_argument("group")
    which = p_reset.add_mutually_exclusive_group(required=True)
    which.add_argument("--topic", action="append", type=parse_topic_partitions,
                       metavar="TOPIC[:P,P...]",
                       help="a topic (all its partitions, or those listed); repeatable")
    which.add_argument("--all-topics", action="store_true",
                       help="every partition the group has committed offsets for")
    mode = p_reset.add_mutually_exclusive_group(required=True)
    mode.add_argument("--to-earliest", action="store_true", help="the log start offset")
    mode.add_argument("--to-latest", action="store_true", help="the log end offset")
    mode.add_argument("--to-datetime", type=parse_datetime_ms, metavar="ISO8601",
                      help="the first record at or after this time, e.g. 2026-11-29T10:00:00 "
                      "(no zone means UTC), 2026-11-29T10:00:00+01:00 or ...Z; the log end if "
                      "there is none")
    mode.add_argument("--shift-by", type=int, metavar="N",
                      help="the committed offset plus N (negative: back)")
    mode.add_argument("--to-offset", type=int, metavar="N", help="offset N")
    run = p_reset.add_mutually_exclusive_group()
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan and change nothing (the default)")
    run.add_argument("--execute", action="store_true", help="commit the planned offsets")

    p_delete = actions.add_parser("delete", parents=[data_dir],
                                  help="delete a group with no members, and its committed offsets")
    p_delete.add_argument("group")


def build_parser() -> argparse.ArgumentParser:
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
    add_groups_parser(commands)
    add_compaction_parsers(commands)
    add_transaction_parsers(commands)
    add_verify_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
    if args.command == "groups":
        return groups(args)
    if args.command == "compact":
        try:
            settings = parse_settings(args.set)
        except ValueError as exc:
            parser.error(str(exc))
        return compact(args, settings)
    if args.command == "cleaner":
        return cleaner(args)
    if args.command == "transactions":
        return transactions(args)
    if args.command == "producers":
        return producers(args)
    if args.command == "verify":
        return verify_command(args)
    return info()


if __name__ == "__main__":
    sys.exit(main())
