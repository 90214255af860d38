"""The partition log against a plain list, driven by Hypothesis: append (one record or a
batch), roll, read from any offset, reopen (clean or after an unflushed close), truncate
the tail, delete records; tiny segments and indexes so every step crosses file edges."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logkernel.config import EngineConfig, TopicConfig
from logkernel.log.partition import PartitionLog
from logkernel.records import encode_batch, iter_batches

TINY = {"segment.bytes": 400, "index.interval.bytes": 60, "segment.index.bytes": 64,
        "max.message.bytes": 2000}

values = st.binary(max_size=80) | st.none()


def read_from(partition_log: PartitionLog, offset: int) -> list[tuple[int, bytes | None]]:
    out: list[tuple[int, bytes | None]] = []
    while offset < partition_log.log_end_offset:
        data = partition_log.read(offset, 1 << 20)
        assert data, f"no data at {offset} below the end {partition_log.log_end_offset}"
        for batch in iter_batches(data):
            for record in batch.records():
                if record.offset >= offset:
                    out.append((record.offset, record.value))
            offset = max(offset, batch.header.base_offset + batch.header.last_offset_delta + 1)
    return out


class PartitionLogModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="lk-model-")
        self.config = TopicConfig(EngineConfig().topic_defaults, TINY)
        self.log = PartitionLog(self.dir, "t", 0, self.config)
        self.model: list[tuple[int, bytes | None]] = []  # (offset, value) of live records
        self.start = 0
        self.end = 0

    def teardown(self) -> None:
        self.log.close(flush=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(value=values, key=st.binary(max_size=10) | st.none())
    def append_record(self, value: bytes | None, key: bytes | None) -> None:
        offset, _ = self.log.append_record(key, value, 1000 + self.end)
        assert offset == self.end
        self.model.append((offset, value))
        self.end += 1

    @rule(batch=st.lists(values, min_size=1, max_size=12))
    def append_batch(self, batch: list[bytes | None]) -> None:
        first, next_offset, _ = self.log.append(encode_batch(batch, timestamps=1000 + self.end),
                                                validated=True)
        assert (first, next_offset) == (self.end, self.end + len(batch))
        self.model.extend((self.end + i, v) for i, v in enumerate(batch))
        self.end += len(batch)

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        if self.end == self.start:
            assert self.log.read(self.start, 100) == b""
            return
        offset = data.draw(st.integers(self.start, self.end - 1))
        assert read_from(self.log, offset) == [r for r in self.model if r[0] >= offset]

    @rule(clean=st.booleans())
    def reopen(self, clean: bool) -> None:
        self.log.close(flush=clean)
        self.log = PartitionLog(self.dir, "t", 0, self.config, clean_shutdown=clean)
        # closing without a flush loses nothing in a live process: the page cache has it
        assert self.log.log_end_offset == self.end

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.start, self.end - 1))
        new_end = self.log.truncate_to(offset)
        assert new_end <= offset  # whole batches: a batch straddling the cut goes too
        self.model = [r for r in self.model if r[0] < new_end]
        self.end = new_end
        self.start = min(self.start, new_end)

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data())
    def delete_records(self, data: st.DataObject) -> None:
        before = data.draw(st.integers(self.start, self.end))
        assert self.log.delete_records(before) == before
        self.start = before
        self.model = [r for r in self.model if r[0] >= before]

    @invariant()
    def offsets_agree(self) -> None:
        assert self.log.log_start_offset == self.start
        assert self.log.log_end_offset == self.log.high_watermark == self.end
        self.log.check()


# Each step touches files (and some fsync), so fewer, longer runs than the codec's
# properties; `make test-thorough` multiplies them.
PartitionLogModel.TestCase.settings = settings(
    max_examples=settings.default.max_examples // 4, stateful_step_count=40, deadline=None)
TestPartitionLog = PartitionLogModel.TestCase


def test_produced_records_are_checked_inside_compressed_batches(tmp_path: Path) -> None:
    """A compressed batch with a right CRC whose records section does not parse once
    decompressed is refused whole, as an uncompressed one is; a compression bomb past
    PRODUCE_MAX_DECOMPRESSED is refused as too large without being held whole."""
    import pytest
    import zstandard

    from logkernel import _binding, errors
    from logkernel.log import partition

    config = TopicConfig(EngineConfig().topic_defaults, {"max.message.bytes": 1 << 20})
    log = PartitionLog(str(tmp_path), "t", 0, config)
    try:
        good = encode_batch([b"a" * 100, b"b" * 100], compression_type="zstd")
        assert log.append(good)[:2] == (0, 2)

        def zstd_batch(section: bytes, count: int) -> bytes:
            return _binding.frame_batch(zstandard.ZstdCompressor().compress(section), count,
                                        count - 1, 0, attributes=4)

        with pytest.raises(errors.CorruptRecordError):
            log.append(zstd_batch(b"\x01" * 40, 2))  # two records promised, bytes that are none
        with pytest.raises(errors.RecordTooLargeError):
            log.append(zstd_batch(bytes(partition.PRODUCE_MAX_DECOMPRESSED + 1), 1))
        assert log.log_end_offset == 2
    finally:
        log.close(flush=False)
