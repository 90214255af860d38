"""The ``logkernel`` command.

    logkernel demo [--data-dir DIR] [--records N]   append records to a segment, read them back
    logkernel info                                   version and native-core facts

``make run`` runs ``logkernel demo --data-dir ./logkernel-data`` until the broker exists.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from logkernel import __version__, _binding
from logkernel.records import encode_batch, iter_batches

# The demo's segment reserves this much address space (not disk): Kafka's default
# segment.bytes (1 GiB) plus room for one maximum-size batch.
DEMO_LOG_CAPACITY = 1024 * 1024 * 1024 + 1024 * 1024
DEMO_BATCH = 1000


def _segment_paths(partition_dir: str, base_offset: int) -> tuple[str, str, str]:
    stem = os.path.join(partition_dir, f"{base_offset:020d}")
    return stem + ".log", stem + ".index", stem + ".timeindex"


def demo(data_dir: str, records: int) -> int:
    partition_dir = os.path.join(data_dir, "demo-0")
    os.makedirs(partition_dir, exist_ok=True)
    log_path, index_path, time_index_path = _segment_paths(partition_dir, 0)
    print(f"logkernel {__version__} demo: data in {os.path.abspath(partition_dir)}")
    print(f"  CRC-32C implementation: {_binding.crc32c_selected()}")

    segment = _binding.Segment(log_path, index_path, time_index_path, base_offset=0,
                               writable=True, log_capacity=DEMO_LOG_CAPACITY)
    recovered = segment.recover()
    start = recovered.next_offset
    print(f"  opened {os.path.basename(log_path)}: {recovered.batches} batches, "
          f"{recovered.records} records already stored (valid prefix {recovered.valid_bytes} bytes, "
          f"stop: {recovered.stop_reason})")

    began = time.perf_counter()
    offset = start
    now = int(time.time() * 1000)
    while offset < start + records:
        n = min(DEMO_BATCH, start + records - offset)
        values = [b"event %d: user=%d action=click" % (i, i % 97) for i in range(offset, offset + n)]
        keys = [b"user-%d" % (i % 97) for i in range(offset, offset + n)]
        batch = encode_batch(values, keys=keys, timestamps=now, compression_type="none")
        _, offset = segment.append(batch, offset)
    segment.flush()
    elapsed = time.perf_counter() - began
    info = segment.info()
    segment.close()
    print(f"  appended {records} records (offsets {start}..{offset - 1}) in {elapsed * 1000:.1f} ms, "
          f"fsynced; segment is {info.size} bytes with {info.index_entries} index entries")

    began = time.perf_counter()
    reader = _binding.Segment(log_path, index_path, time_index_path, base_offset=0, writable=False)
    size = reader.info().size
    position, _ = reader.find_offset(start)
    data = reader.read(position, size - position)
    read_back = 0
    first = last = None
    for decoded in iter_batches(data):
        for record in decoded.records():
            if record.offset >= start:
                read_back += 1
                first = first or record
                last = record
    elapsed = time.perf_counter() - began
    reader.close()
    print(f"  read back {read_back} records from offset {start} in {elapsed * 1000:.1f} ms "
          f"(every batch CRC-checked)")
    if first is not None and last is not None:
        print(f"  first: offset {first.offset} key={first.key!r} value={first.value!r}")
        print(f"  last:  offset {last.offset} key={last.key!r} value={last.value!r}")
    if read_back != records:
        print(f"  ERROR: expected {records} records, read {read_back}", file=sys.stderr)
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
    p_demo = commands.add_parser("demo", help="append records to a segment and read them back")
    p_demo.add_argument("--data-dir", default="./logkernel-data")
    p_demo.add_argument("--records", type=int, default=100_000)
    commands.add_parser("info", help="version and native-core facts")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.records < 1:
            parser.error("--records must be at least 1")
        return demo(args.data_dir, args.records)
    return info()


if __name__ == "__main__":
    sys.exit(main())
