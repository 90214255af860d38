"""Segments through the Python binding: appends, index lookups, reads, and recovery after
the files are broken the ways a crash breaks them (torn tail, garbled byte, zero-filled
preallocation, lost index), and after a writer process is killed with SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import logkernel
from logkernel import Segment
from logkernel.errors import ClosedError, OffsetOrderError, OffsetOutOfRangeError, SegmentFullError

CAPACITY = 64 * 1024 * 1024


def paths(directory: Path, base: int = 0) -> tuple[Path, Path, Path]:
    stem = directory / f"{base:020d}"
    return stem.with_suffix(".log"), stem.with_suffix(".index"), stem.with_suffix(".timeindex")


def open_segment(directory: Path, *, writable: bool = True, base: int = 0, **kw: int) -> Segment:
    log, index, timeindex = paths(directory, base)
    if writable:
        kw.setdefault("log_capacity", CAPACITY)
        kw.setdefault("grow_step", 1 << 20)
        kw.setdefault("index_capacity", 1 << 20)
    return Segment(log, index, timeindex, base_offset=base, writable=writable, **kw)


def fill(segment: Segment, batches: int, per_batch: int, start: int = 0, ts: int = 1000) -> list[bytes]:
    """Appends batches of distinct values; returns every value in offset order."""
    values = []
    offset = start
    for _ in range(batches):
        vals = [b"value-%d" % (offset + i) for i in range(per_batch)]
        batch = logkernel.encode_batch(vals, timestamps=[ts + offset + i for i in range(per_batch)])
        _, offset = segment.append(batch, offset)
        values += vals
    return values


def read_all(segment: Segment, start_offset: int | None = None) -> list[logkernel.records.Record]:
    info = segment.info()
    position = 0
    if start_offset is not None:
        position, _ = segment.find_offset(start_offset)
    data = segment.read(position, info.size - position)
    return [r for batch in logkernel.iter_batches(data) for r in batch]


def test_append_find_and_read(tmp_path: Path) -> None:
    with open_segment(tmp_path, index_interval_bytes=64) as seg:
        values = fill(seg, batches=200, per_batch=5)
        info = seg.info()
        assert info.next_offset == 1000
        assert info.index_entries > 50
        assert info.max_timestamp == 1000 + 999
        for target in range(0, 1000, 7):
            records = read_all(seg, target)
            assert records[0].offset <= target < records[0].offset + 5
            assert [r.value for r in records if r.offset >= target] == values[target:]
        with pytest.raises(OffsetOutOfRangeError):
            seg.find_offset(1000)
        _position, base = seg.find_timestamp(1000 + 503)
        assert base == 500
        seg.flush()
    # Reopen read-only: same answers from the indexes on disk.
    with open_segment(tmp_path, writable=False) as ro:
        assert ro.info().next_offset == 1000
        assert [r.value for r in read_all(ro, 333)][3:] == values[333:]


def test_offsets_must_not_go_backwards(tmp_path: Path) -> None:
    with open_segment(tmp_path, base=100) as seg:
        seg.append(logkernel.encode_batch([b"a", b"b"]), 100)
        with pytest.raises(OffsetOrderError, match="next offset is 102"):
            seg.append(logkernel.encode_batch([b"c"]), 101)
        assert seg.info().next_offset == 102


def test_segment_full_writes_nothing(tmp_path: Path) -> None:
    with open_segment(tmp_path, log_capacity=1 << 20, grow_step=1 << 16) as seg:
        batch = logkernel.encode_batch([b"x" * 1000] * 100)
        offset = 0
        with pytest.raises(SegmentFullError):
            while True:
                _, offset = seg.append(batch, offset)
        size = seg.info().size
        assert size + len(batch) > 1 << 20
        assert len(read_all(seg)) == offset


def test_sealed_segment_refuses_appends_and_trims_files(tmp_path: Path) -> None:
    seg = open_segment(tmp_path)
    fill(seg, 10, 10)
    seg.seal()
    seg.seal()
    with pytest.raises(ClosedError):
        seg.append(logkernel.encode_batch([b"late"]), 100)
    size = seg.info().size
    seg.close()
    log, index, timeindex = paths(tmp_path)
    assert log.stat().st_size == size
    assert index.stat().st_size % 8 == 0 and timeindex.stat().st_size % 12 == 0


def test_reads_are_copies_that_outlive_close(tmp_path: Path) -> None:
    seg = open_segment(tmp_path)
    fill(seg, 3, 3)
    data = seg.read(0, seg.info().size)
    seg.close()
    assert isinstance(data, bytes)
    assert len(list(logkernel.iter_batches(data))) == 3
    with pytest.raises(ClosedError):
        seg.read(0, 1)


def _damage_and_recover(tmp_path: Path, damage) -> tuple[logkernel.ScanResult, list, list]:  # type: ignore[no-untyped-def]
    with open_segment(tmp_path, index_interval_bytes=128) as seg:
        values = fill(seg, 50, 4)
        seg.flush()
    log = paths(tmp_path)[0]
    damage(log)
    with open_segment(tmp_path) as seg:
        result = seg.recover()
        records = read_all(seg)
        # every remaining offset is findable through the rebuilt index
        for r in records:
            assert seg.find_offset(r.offset)[1] <= r.offset
        # and the segment accepts appends after the valid prefix
        seg.append(logkernel.encode_batch([b"after"]), result.next_offset)
        assert read_all(seg)[-1].value == b"after"
    return result, records, values


def test_recover_torn_tail(tmp_path: Path) -> None:
    def tear(log: Path) -> None:
        with open(log, "r+b") as f:
            f.truncate(log.stat().st_size - 30)
    result, records, values = _damage_and_recover(tmp_path, tear)
    assert result.stop_reason == "torn"
    assert [r.value for r in records] == values[:49 * 4]


def test_recover_garbled_byte(tmp_path: Path) -> None:
    batch_start = {}

    def garble(log: Path) -> None:
        # the 21st batch (offsets 80..83) starts where the first 20 end
        data = log.read_bytes()
        position = 0
        for _ in range(20):
            position += logkernel._binding.parse_header(data[position:]).size
        batch_start["at"] = position
        with open(log, "r+b") as f:
            f.seek(position + 70)  # inside the first record: CRC-covered
            byte = f.read(1)
            f.seek(position + 70)
            f.write(bytes([byte[0] ^ 0x40]))
    result, records, values = _damage_and_recover(tmp_path, garble)
    assert result.stop_reason == "corrupt"
    assert result.stop_position > 0
    assert "CRC" in result.stop_detail
    assert result.valid_bytes == batch_start["at"]
    assert [r.value for r in records] == values[:80]


def test_recover_zero_filled_tail(tmp_path: Path) -> None:
    def preallocate(log: Path) -> None:
        with open(log, "ab") as f:
            f.write(b"\x00" * 100_000)
    result, records, values = _damage_and_recover(tmp_path, preallocate)
    assert result.stop_reason == "zeros"
    assert [r.value for r in records] == values


@pytest.mark.parametrize("how", ["delete", "garble", "truncate"])
def test_lost_or_damaged_index_is_rebuilt(tmp_path: Path, how: str) -> None:
    with open_segment(tmp_path, index_interval_bytes=100) as seg:
        values = fill(seg, 100, 3)
        seg.flush()
    _, index, timeindex = paths(tmp_path)
    for f in (index, timeindex):
        if how == "delete":
            f.unlink()
        elif how == "garble":
            data = bytearray(f.read_bytes())
            random.Random(1).shuffle(data)
            f.write_bytes(bytes(data))
        else:
            f.write_bytes(f.read_bytes()[:13])
    try:
        seg = open_segment(tmp_path, index_interval_bytes=100)
    except logkernel.errors.IndexCorruptError:
        seg = None
    if seg is None:
        # The documented path: reopen emptying the indexes, then rebuild.
        seg = open_segment(tmp_path, index_interval_bytes=100, reset_indexes=True)
    with seg:
        seg.rebuild_indexes()
        assert seg.info().index_entries > 10
        for target in range(0, 300, 11):
            assert [r.value for r in read_all(seg, target) if r.offset >= target] == values[target:]


def test_truncate_to_offset(tmp_path: Path) -> None:
    with open_segment(tmp_path, index_interval_bytes=64) as seg:
        values = fill(seg, 20, 5)
        seg.truncate_to_offset(52)  # drops whole batches: keeps offsets < 50
        assert seg.info().next_offset == 50
        assert [r.value for r in read_all(seg)] == values[:50]
        fill(seg, 1, 5, start=50)
        assert len(read_all(seg)) == 55


WRITER = textwrap.dedent("""
    import sys, logkernel
    from logkernel import Segment
    d = sys.argv[1]
    stem = d + "/" + "0" * 20
    seg = Segment(stem + ".log", stem + ".index", stem + ".timeindex", base_offset=0,
                  writable=True, log_capacity=256 << 20, grow_step=1 << 20,
                  index_interval_bytes=256)
    offset = seg.recover().next_offset
    while True:
        batch = logkernel.encode_batch([b"%d" % (offset + i) for i in range(10)], timestamps=0)
        _, offset = seg.append(batch, offset)
        if offset % 100 == 0:
            seg.flush()
            print(offset, flush=True)
""")


def test_sigkill_during_appends_keeps_every_flushed_record(tmp_path: Path) -> None:
    rng = random.Random(7)
    flushed = 0
    for _round in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        target = rng.randrange(3, 40)
        for _ in range(target):
            line = proc.stdout.readline()
            flushed = max(flushed, int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with open_segment(tmp_path) as seg:
            result = seg.recover()
            assert result.stop_reason in ("end", "zeros", "torn")
            records = read_all(seg)
            assert [r.offset for r in records] == list(range(len(records)))
            assert [r.value for r in records] == [b"%d" % i for i in range(len(records))]
            assert len(records) >= flushed


def test_open_flags_a_garbage_tail_for_recovery(tmp_path: Path) -> None:
    with open_segment(tmp_path) as seg:
        values = fill(seg, 5, 5)
    log = paths(tmp_path)[0]
    with open(log, "ab") as f:
        f.write(b"\x01garbage after the last batch")
    with open_segment(tmp_path) as seg:
        assert seg.info().needs_recovery
        result = seg.recover()
        assert result.stop_reason in ("torn", "corrupt")
        assert not seg.info().needs_recovery
        assert [r.value for r in read_all(seg)] == values


def test_reset_indexes_needs_a_writable_segment(tmp_path: Path) -> None:
    with open_segment(tmp_path) as seg:
        fill(seg, 2, 2)
    with pytest.raises(ValueError):
        open_segment(tmp_path, writable=False, reset_indexes=True)


def test_append_refuses_a_segment_that_needs_recovery(tmp_path: Path) -> None:
    with open_segment(tmp_path) as seg:
        fill(seg, 1, 1)
    with open(paths(tmp_path)[0], "ab") as f:
        f.write(b"\xffgarbage")
    with open_segment(tmp_path) as seg:
        with pytest.raises(logkernel.errors.NeedsRecoveryError, match="recover"):
            seg.append(logkernel.encode_batch([b"lost?"]), 1)
        with pytest.raises(logkernel.errors.NeedsRecoveryError):
            seg.truncate_to_offset(0)
        seg.recover()
        seg.append(logkernel.encode_batch([b"kept"]), 1)
        seg.flush()
    with open_segment(tmp_path) as seg:
        assert seg.recover().next_offset == 2
        assert [r.value for r in read_all(seg)] == [b"value-0", b"kept"]


def test_append_validates_unless_told_otherwise(tmp_path: Path) -> None:
    good = logkernel.encode_batch([b"a"])
    bad = bytearray(logkernel.encode_batch([b"b"]))
    bad[-1] ^= 1
    with open_segment(tmp_path) as seg:
        with pytest.raises(logkernel.errors.CrcMismatchError, match=f"batch at byte {len(good)}"):
            seg.append(good + bytes(bad), 0)
        assert seg.info().size == 0
        # a producer's record set: several batches, all based at offset 0
        _, next_offset = seg.append(good + logkernel.encode_batch([b"c", b"d"]), 0)
        assert next_offset == 3
        assert [r.offset for r in read_all(seg)] == [0, 1, 2]


VIEW_ACROSS_TRUNCATION = textwrap.dedent("""
    import sys, logkernel
    from logkernel import Segment
    stem = sys.argv[1] + "/" + "0" * 20
    seg = Segment(stem + ".log", stem + ".index", stem + ".timeindex", base_offset=0,
                  writable=True, log_capacity=1 << 24, grow_step=1 << 16)
    first = logkernel.encode_batch([b"x" * 20000])
    _, n = seg.append(first, 0)
    seg.append(logkernel.encode_batch([b"y" * 20000] * 3), n)
    view = seg.read(0, seg.info().size)
    seg.truncate_to_offset(1)
    seg.close()
    data = bytes(view)   # a view into the map would be SIGBUS here: the file was cut
    # (not a count of b"x": a header's timestamp or CRC bytes may hold 0x78 too)
    assert b"x" * 20000 in data[:len(first)]
    print("ok", len(data))
""")


def test_reads_survive_truncation_and_close(tmp_path: Path) -> None:
    # In a child process: the failure this guards against is a SIGBUS, not an exception.
    out = subprocess.run([sys.executable, "-c", VIEW_ACROSS_TRUNCATION, str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
    # The file was cut, so a reopen sees exactly the one batch.
    assert paths(tmp_path)[0].stat().st_size == len(logkernel.encode_batch([b"x" * 20000]))
    with open_segment(tmp_path) as seg:
        assert [r.offset for r in read_all(seg)] == [0]


def test_recover_rebuilds_a_time_index_cut_short(tmp_path: Path) -> None:
    timestamps = [10, 20, 30, 40, 999, 50, 60, 70, 80, 90]
    with open_segment(tmp_path, index_interval_bytes=1) as seg:
        for i, ts in enumerate(timestamps):
            seg.append(logkernel.encode_batch([b"v%d" % i], timestamps=ts), i)
        seg.flush()
    timeindex = paths(tmp_path)[2]
    timeindex.write_bytes(timeindex.read_bytes()[:24])  # a crash left only two entries
    with open_segment(tmp_path, index_interval_bytes=1) as seg:
        seg.recover()  # what the log does after any unclean shutdown
        info = seg.info()
        assert (info.max_timestamp, info.offset_of_max_timestamp) == (999, 4)
        assert seg.find_timestamp(500)[1] == 4
        assert seg.find_timestamp(85)[1] == 4


def test_index_files_are_kafkas_layout(tmp_path: Path) -> None:
    """.index: big-endian (int32 relative offset, int32 position) pairs, each pointing at
    the start of a batch whose last offset is base + relative; .timeindex: (int64
    timestamp, int32 relative offset), the running max timestamp and the first offset
    that carries it."""
    import struct
    base = 1000
    with open_segment(tmp_path, base=base, index_interval_bytes=200) as seg:
        fill(seg, 60, 3, start=base, ts=50_000)
        seg.seal()
    log, index, timeindex = paths(tmp_path, base)
    data = log.read_bytes()
    raw = index.read_bytes()
    assert len(raw) % 8 == 0 and len(raw) >= 8 * 10
    entries = list(struct.iter_unpack(">ii", raw))
    assert [p for _, p in entries] == sorted({p for _, p in entries})
    for relative, position in entries:
        header = logkernel._binding.parse_header(data[position:])
        assert header.last_offset == base + relative
    times = list(struct.iter_unpack(">qi", timeindex.read_bytes()))
    assert times, "a sealed segment has at least its final time entry"
    batches = {b.header.base_offset: b.header for b in logkernel.iter_batches(data)}
    for timestamp, relative in times:
        holder = max(o for o in batches if o <= base + relative)
        assert batches[holder].max_timestamp == timestamp
    assert times[-1][0] == max(h.max_timestamp for h in batches.values())


@pytest.fixture
def small_filesystem(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MiB tmpfs mounted for the test (needs root, as CI and the dev machines run);
    skipped where mounting is not allowed."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def test_full_disk_is_a_clean_error_and_writes_resume_after_space_is_freed(
        small_filesystem: Path) -> None:
    filler = small_filesystem / "filler"
    filler.write_bytes(bytes(1_200_000))
    with open_segment(small_filesystem, grow_step=256 * 1024) as seg:
        batch = logkernel.encode_batch([os.urandom(1000) for _ in range(50)], timestamps=0)
        offset = 0
        with pytest.raises(logkernel.errors.NoSpaceError):
            for _ in range(1000):
                _, offset = seg.append(batch, offset)
        size_at_failure = seg.info().size
        assert seg.info().next_offset == offset  # nothing half-appended
        seg.flush()
        assert len(read_all(seg)) == offset
        filler.unlink()  # space comes back: the same handle writes again
        _, after = seg.append(batch, offset)
        assert after == offset + 50
        assert seg.info().size == size_at_failure + len(batch)
        seg.flush()
    with open_segment(small_filesystem) as seg:
        assert seg.recover().stop_reason in ("end", "zeros")
        assert [r.offset for r in read_all(seg)] == list(range(offset + 50))
