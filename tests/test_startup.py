"""Start-up cost: importing logkernel, the engine and the broker does not import numpy.

numpy takes 150-250 ms to import on a small machine, and the broker's serving path never
needs it, so it loads only when something that returns arrays is first called (the
embedded consumer's columns, send_batch's results, _binding's numpy span arrays); decoding
a batch into Record tuples does without it. The import checks run in a fresh interpreter:
in this one, other tests have imported numpy already.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import logkernel
from logkernel import _binding


def run_python(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_importing_the_engine_and_broker_does_not_import_numpy() -> None:
    out = run_python("""
        import sys
        import logkernel
        import logkernel.engine
        import logkernel.broker
        assert logkernel.Broker is logkernel.broker.Broker
        print("numpy" in sys.modules)
    """)
    assert out.split() == ["False"]


def test_the_engine_serving_path_does_not_import_numpy(tmp_path: Path) -> None:
    # What a broker does: open a data directory (loading committed offsets, which decodes
    # __consumer_offsets batches), append records one at a time, commit, answer ListOffsets
    # by timestamp (decodes a batch). None of it needs arrays.
    code = """
        import sys
        import logkernel
        with logkernel.open(sys.argv[1]) as lk:
            if "t" not in lk.topics():
                lk.create_topic("t")
            producer = lk.producer()
            producer.send("t", b"v", key=b"k", headers=[("h", b"1")], timestamp_ms=1000)
            producer.send("t", b"w", timestamp_ms=2000)
            lk.commit_offsets("g", {("t", 0): 1})
            assert lk.committed("g", "t", 0) == 1
            assert lk.offset_for_time("t", 0, 1500)[1] == 2000
        print("numpy" in sys.modules)
    """
    assert run_python(code, str(tmp_path)).split() == ["False"]
    # Again, now that there are committed offsets to load at open.
    assert run_python(code, str(tmp_path)).split() == ["False"]


def test_numpy_is_loaded_on_demand(tmp_path: Path) -> None:
    out = run_python("""
        import sys
        import logkernel
        from logkernel import _binding
        assert "numpy" not in sys.modules
        with logkernel.open(sys.argv[1]) as lk:
            lk.create_topic("t", partitions=2)
            sent = lk.producer().send_batch("t", [b"a", b"b", b"c"], keys=[b"1", b"2", b"3"])
            assert "numpy" in sys.modules
            import numpy as np
            assert isinstance(sent.offsets, np.ndarray) and sent.offsets.dtype == np.int64
            assert isinstance(sent.partitions, np.ndarray) and sent.partitions.dtype == np.int32
            got = {(m.partition, m.offset) for m in sent}

            consumer = lk.consumer("t", auto_offset_reset="earliest")
            values = []
            while (batch := consumer.poll_batch(max_records=10)) is not None:
                assert isinstance(batch.offsets, np.ndarray)
                values.extend(batch.values())
                got -= {(batch.partition, o) for o in batch.offsets.tolist()}
            assert sorted(values) == [b"a", b"b", b"c"], values
            assert not got, got

            consumer.seek_to_beginning()
            assert sorted(r.value for r in consumer.poll()) == [b"a", b"b", b"c"]

        # The span dtype is still a module attribute, computed once.
        assert _binding.RECORD_SPAN_DTYPE is _binding.RECORD_SPAN_DTYPE
        header, spans = _binding.decode_batch(logkernel.encode_batch([b"x", None]))
        assert spans.dtype == _binding.RECORD_SPAN_DTYPE and spans["value_len"].tolist() == [1, -1]
        print("ok")
    """, str(tmp_path))
    assert out.split() == ["ok"]


def test_decoding_a_batch_into_records_does_not_import_numpy() -> None:
    out = run_python("""
        import sys
        import logkernel
        for codec in ("none", "gzip"):
            batch = logkernel.encode_batch([b"a", None], keys=[None, b"k"], timestamps=[5, 7],
                                           headers=[[("h", b"1"), ("n", None)], None],
                                           base_offset=10, compression_type=codec)
            decoded = logkernel.decode_batch(batch)
            assert len(decoded) == 2 and decoded.values() == [b"a", None]
            assert [tuple(r) for r in decoded.records()] == [
                (10, 5, None, b"a", (("h", b"1"), ("n", None))), (11, 7, b"k", None, ())]
        print("numpy" in sys.modules)
    """)
    assert out.split() == ["False"]


def test_numpy_free_decoding_gives_the_records_encoded_and_the_numpy_spans() -> None:
    rng = random.Random(7)

    def blob() -> bytes | None:
        return None if rng.random() < 0.3 else rng.randbytes(rng.randrange(0, 40))

    for _ in range(300):
        n = rng.randrange(1, 40)
        values = [blob() for _ in range(n)]
        keys = [blob() for _ in range(n)] if rng.random() < 0.5 else None
        headers = ([[(f"h{j}", blob()) for j in range(rng.randrange(0, 3))] for _ in range(n)]
                   if rng.random() < 0.5 else None)
        timestamps: int | list[int] = (rng.randrange(0, 2**41) if rng.random() < 0.3 else
                                       [rng.randrange(0, 2**41) for _ in range(n)])
        deltas = sorted(rng.sample(range(3 * n), n)) if rng.random() < 0.3 else None
        log_append_time = rng.random() < 0.2
        data = logkernel.encode_batch(
            values, keys=keys, headers=headers, timestamps=timestamps, offset_deltas=deltas,
            base_offset=rng.randrange(0, 2**40), log_append_time=log_append_time,
            compression_type=rng.choice(["none", "none", "gzip", "zstd"]))
        batch = logkernel.decode_batch(data)
        h = batch.header
        assert len(batch) == n
        assert batch.values() == values
        offsets = [h.base_offset + d for d in (deltas or range(n))]
        expected_times = ([h.max_timestamp] * n if log_append_time else
                          [timestamps] * n if isinstance(timestamps, int) else timestamps)
        assert [tuple(r) for r in batch.records()] == [
            (o, t, None if keys is None else keys[i], values[i],
             tuple(headers[i]) if headers else ())
            for i, (o, t) in enumerate(zip(offsets, expected_times, strict=True))]
        # The raw spans hold what the numpy spans hold, field by field.
        _, spans = _binding.decode_batch(data)
        raw: bytearray | None
        if spans is None:
            payload = batch._data
            spans = _binding.decode_records(payload, h.record_count, h.last_offset_delta)
            raw = _binding.decode_records_raw(payload, h.record_count, h.last_offset_delta)
        else:
            _, raw = _binding.decode_batch_raw(data)
        assert raw is not None and len(raw) == spans.nbytes  # bytes differ in the padding
        for field in ("timestamp_delta", "offset_delta", "key_pos", "key_len", "value_pos",
                      "value_len", "headers_pos", "headers_count", "headers_len"):
            assert _binding.span_column(raw, field) == spans[field].tolist(), field
