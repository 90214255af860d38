"""Apache Kafka's own log cleaner, run on a copy of a logkernel partition directory: the peer
for logkernel's compaction benchmark.

logkernel's segments are Kafka's bytes in Kafka's file layout, so Kafka's storage code can
open the directory as a ``UnifiedLog`` and clean it with its real ``Cleaner`` (Kafka 4.1+,
``org.apache.kafka.storage.internals.log``). The Java harness lives in ``bench/kafka_peer/``
(``KafkaCleanerPeer.java``); it is built once and cached under ``bench/kafka_peer/target/``:

1. ``mvn -q package`` (``pom.xml``: kafka-storage from Maven Central, shaded jar), or, where
   Maven cannot reach Maven Central,
2. ``build_from_source.sh`` with ``KAFKA_SOURCE`` naming a Kafka source tree or git
   directory: javac compiles the harness and the Kafka classes it reaches from that source.

What is timed (by the harness, in the JVM): the ``Cleaner.doClean`` calls only, i.e. building
the offset map and rewriting the segments, as a broker's cleaner thread does once it has picked
the log. Not timed: JVM start-up, opening the log, allocating the dedupe buffer. The cold number
is the first cleaning in a fresh JVM; ``seconds_warm`` cleans a second copy in the same JVM.

    from bench import kafka_peer
    if kafka_peer.available() is None:
        result = kafka_peer.clean_with_kafka(Path("data/t-0"), Path("/tmp/work"))
        print(result["seconds"], result["records_retained"])

``python -m bench.kafka_peer`` writes a data set with logkernel and runs the peer on it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

PEER_DIR = Path(__file__).resolve().parent / "kafka_peer"
TARGET = PEER_DIR / "target"
CLASSPATH_FILE = TARGET / "peer.classpath"  # written by whichever build succeeded
MAVEN_JAR = TARGET / "kafka-cleaner-peer.jar"
MAIN_CLASS = "logkernel.bench.KafkaCleanerPeer"
BUILD_TIMEOUT = 1800

_build_error: str | None = None
_built = False


def _newest_source_mtime() -> float:
    files = [PEER_DIR / "pom.xml", PEER_DIR / "build_from_source.sh"]
    for sub in ("src", "shims"):
        files += [p for p in (PEER_DIR / sub).rglob("*") if p.is_file()]
    return max(p.stat().st_mtime for p in files if p.exists())


def _classpath() -> str | None:
    """The cached build's classpath, if it exists, is complete and newer than the sources."""
    try:
        cp = CLASSPATH_FILE.read_text().strip()
        if CLASSPATH_FILE.stat().st_mtime < _newest_source_mtime():
            return None
    except OSError:
        return None
    return cp if cp and all(Path(p).exists() for p in cp.split(os.pathsep)) else None


def _tail(text: str, lines: int = 5) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    errors = [line for line in text.splitlines() if "[ERROR]" in line and line.strip() != "[ERROR]"]
    picked = errors[:1] if errors else text.strip().splitlines()[-lines:]
    return " | ".join(line.strip()[:400] for line in picked)


def build() -> str | None:
    """Builds the harness once (cached); returns None when it is ready, else why not."""
    global _build_error, _built
    if _built or _classpath() is not None:
        _built = True
        return None
    if _build_error is not None:
        return _build_error
    reasons = []
    if shutil.which("mvn"):
        proc = subprocess.run(["mvn", "-q", "-B", "package", "-f", str(PEER_DIR / "pom.xml")],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if proc.returncode == 0 and MAVEN_JAR.exists():
            CLASSPATH_FILE.write_text(str(MAVEN_JAR) + "\n")
            _built = True
            return None
        reasons.append(f"mvn package failed: {_tail(proc.stdout + proc.stderr, 2)}")
    else:
        reasons.append("no mvn")
    if os.environ.get("KAFKA_SOURCE"):
        proc = subprocess.run(["bash", str(PEER_DIR / "build_from_source.sh")],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if proc.returncode == 0 and _classpath() is not None:
            _built = True
            return None
        reasons.append(f"build_from_source.sh failed: {_tail(proc.stdout + proc.stderr)}")
    else:
        reasons.append("KAFKA_SOURCE is not set (a Kafka 4.1+ source tree or git dir, "
                       "for bench/kafka_peer/build_from_source.sh)")
    _build_error = "; ".join(reasons)
    return _build_error


def available() -> str | None:
    """None if Kafka's cleaner can be run here, else the reason (no java, build failed)."""
    if not shutil.which("java"):
        return "no java on PATH"
    if _classpath() is None and not shutil.which("javac"):
        return "no javac on PATH (a JDK 17+ is needed to build the harness)"
    return build()


def infer_segment_bytes(partition_dir: Path) -> int:
    """segment.bytes is not stored per partition: take the largest non-active segment,
    rounded up to a whole MiB (a segment rolls before a batch would overflow it)."""
    logs = sorted(partition_dir.glob("*.log"))
    sizes = [p.stat().st_size for p in logs[:-1]]
    if not sizes:
        return 1 << 30  # Kafka's default
    mib = 1 << 20
    return max(mib, -(-max(sizes) // mib) * mib)


def clean_with_kafka(partition_dir: Path, work_dir: Path, dedupe_buffer_bytes: int = 128 << 20,
                     *, io_buffer_bytes: int = 512 << 10,
                     delete_retention_ms: int = 24 * 3600 * 1000,
                     segment_bytes: int | None = None, warm: bool = True,
                     timeout: float = 3600) -> dict[str, Any]:
    """Copies ``partition_dir`` (a ``topic-N`` directory, left untouched) into ``work_dir``,
    cleans the copy once with Kafka's cleaner (everything below the active segment) and
    returns the harness's JSON: seconds, bytes_read, bytes_written, records_read,
    records_retained, kafka_version, seconds_warm (a second copy, same JVM; None if
    ``warm=False``) and more (see KafkaCleanerPeer.java). The cleaned copy stays at
    ``result["cleaned_dir"]``. Raises RuntimeError when Kafka cannot be run or fails."""
    reason = available()
    if reason is not None:
        raise RuntimeError(f"Kafka's cleaner is not available: {reason}")
    partition_dir, work_dir = Path(partition_dir), Path(work_dir)
    if not any(partition_dir.glob("*.log")):
        raise ValueError(f"{partition_dir} has no .log segments")
    copies = [work_dir / "kafka-cold" / partition_dir.name]
    if warm:
        copies.append(work_dir / "kafka-warm" / partition_dir.name)
    for copy in copies:  # the directory name (topic-N) must survive: Kafka parses it
        shutil.rmtree(copy.parent, ignore_errors=True)
        shutil.copytree(partition_dir, copy)
    os.sync()  # write the copies back now, not during the timed cleaning (which fsyncs)
    if segment_bytes is None:
        segment_bytes = infer_segment_bytes(partition_dir)
    heap_mib = max(1024, (dedupe_buffer_bytes + 2 * io_buffer_bytes) // (1 << 20) + 512)
    cmd = ["java", f"-Xmx{heap_mib}m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
           "-cp", _classpath() or "", MAIN_CLASS,
           "--dedupe-buffer-bytes", str(dedupe_buffer_bytes),
           "--io-buffer-bytes", str(io_buffer_bytes),
           "--delete-retention-ms", str(delete_retention_ms),
           "--segment-bytes", str(segment_bytes),
           *map(str, copies)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"Kafka's cleaner failed (exit {proc.returncode}): "
                           f"{_tail(proc.stderr, 10)}")
    result = json.loads(lines[-1])
    result["cleaned_dir"] = str(copies[0])
    return result


def check_cleaned(original: Path, cleaned: Path, first_uncleanable: int) -> dict[str, Any]:
    """Independent check of a cleaning (uncompressed v2 batches): below first_uncleanable
    the cleaned log must hold exactly the latest record of each key of the original."""
    import struct

    def varint(b: bytes, p: int) -> tuple[int, int]:
        shift = v = 0
        while True:
            c = b[p]
            p += 1
            v |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                return (v >> 1) ^ -(v & 1), p

    def records(d: Path):
        for f in sorted(d.glob("*.log")):
            b, pos = f.read_bytes(), 0
            while pos < len(b):
                base, length = struct.unpack_from(">qi", b, pos)
                attributes, = struct.unpack_from(">h", b, pos + 21)
                if attributes & 0x07:
                    raise ValueError("check_cleaned reads uncompressed batches only")
                count, = struct.unpack_from(">i", b, pos + 57)
                p = pos + 61
                for _ in range(count):
                    size, p = varint(b, p)
                    end = p + size
                    _, p = varint(b, p + 1)  # attributes byte, timestamp delta
                    delta, p = varint(b, p)
                    key_len, p = varint(b, p)
                    yield base + delta, b[p:p + key_len]
                    p = end
                pos += 12 + length

    latest: dict[bytes, int] = {}
    for offset, key in records(original):
        if offset < first_uncleanable:
            latest[key] = offset
    kept = [(o, k) for o, k in records(cleaned) if o < first_uncleanable]
    return {"distinct_keys": len(latest), "kept": len(kept),
            "exact": len(kept) == len(latest) and set(kept) == {(o, k) for k, o in latest.items()}}


def _make_dataset(root: Path, segment_bytes: int, full_segments: int, batch: int,
                  live_fraction: float = 0.1) -> Path:
    """A compacted topic "t" written by logkernel: 100-byte records (10-byte key, 90-byte
    value), uniformly random keys over live_fraction * records, until full_segments
    segments are full (the active one then holds a few batches). logkernel's own cleaner is
    off, so the log stays as written."""
    import random

    import logkernel

    shutil.rmtree(root, ignore_errors=True)
    lk = logkernel.open(root, config={"log.segment.bytes": segment_bytes,
                                      "log.cleaner.enable": False})
    lk.create_topic("t", partitions=1, config={"cleanup.policy": "compact"})
    producer = lk.producer()
    partition = root / "t-0"
    per_segment = segment_bytes // 110  # ~110 bytes a record on disk
    keys = max(1, int(per_segment * full_segments * live_fraction))
    rng, value, sent = random.Random(42), b"v" * 90, 0
    while True:
        producer.send_batch("t", [value] * batch, partition=0,
                            keys=[b"k%09d" % rng.randrange(keys) for _ in range(batch)])
        sent += batch
        if sent % (batch * 20) == 0 and len(list(partition.glob("*.log"))) > full_segments:
            break
    lk.close()
    return partition


def main() -> None:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segment-mib", type=int, default=64)
    ap.add_argument("--segments", type=int, default=5, help="full segments to write (cleanable)")
    ap.add_argument("--batch", type=int, default=500, help="records per producer batch")
    ap.add_argument("--dedupe-mib", type=int, default=128)
    ap.add_argument("--work", type=Path, default=None, help="kept afterwards if given")
    ap.add_argument("--verify", action="store_true", help="check Kafka's output record by record")
    args = ap.parse_args()

    reason = available()
    if reason is not None:
        raise SystemExit(f"Kafka's cleaner is not available: {reason}")
    work = args.work or Path(tempfile.mkdtemp(prefix="kafka-peer-"))
    try:
        partition = _make_dataset(work / "data", args.segment_mib << 20, args.segments, args.batch)
        result = clean_with_kafka(partition, work, args.dedupe_mib << 20,
                                  segment_bytes=args.segment_mib << 20)
        print(json.dumps(result))
        print(f"Kafka {result['kafka_version']}: {result['input_bytes'] / 1e6:.0f} MB of "
              f"{result['records_read']:,} records -> {result['records_retained']:,} kept; "
              f"cold {result['seconds']:.2f} s ({result['mb_per_s']:.1f} MB/s), "
              f"warm {result['seconds_warm']:.2f} s ({result['mb_per_s_warm']:.1f} MB/s)")
        if args.verify:
            print(check_cleaned(partition, Path(result["cleaned_dir"]),
                                result["first_uncleanable_offset"]))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
