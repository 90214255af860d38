"""Property tests: the C codec against the pure-Python reference (tests/reference_codec.py).

- C encode == reference encode, byte for byte;
- decode(encode(x)) == x;
- any mutation or truncation of a valid batch is either rejected by both decoders or
  decoded identically by both, and never crashes.
"""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

import logkernel
import logkernel.compression
from logkernel import _binding
from logkernel.errors import CorruptRecordError
from tests import reference_codec as ref

INT64 = st.integers(-(2**63), 2**63 - 1)
small_bytes = st.binary(max_size=64)
nullable = st.none() | small_bytes
header = st.tuples(st.binary(max_size=12), nullable)


@st.composite
def batches(draw: st.DrawFn) -> ref.RefBatch:
    n = draw(st.integers(1, 30))
    base_ts = draw(st.integers(-(2**40), 2**42))
    # timestamp deltas must keep every timestamp inside int64
    ts = [base_ts + draw(st.integers(-(2**31), 2**31)) for _ in range(n)]
    ts[0] = base_ts
    gaps = draw(st.booleans())
    deltas = []
    d = -1
    for _ in range(n):
        d += draw(st.integers(1, 1000)) if gaps else 1
        deltas.append(d)
    records = [
        ref.RefRecord(deltas[i], ts[i] - base_ts, draw(nullable), draw(nullable),
                      draw(st.lists(header, max_size=3)))
        for i in range(n)
    ]
    return ref.RefBatch(
        base_offset=draw(st.integers(0, 2**62)),
        partition_leader_epoch=draw(st.integers(-1, 2**31 - 1)),
        attributes=draw(st.sampled_from([0, 0x10])),
        base_timestamp=base_ts,
        max_timestamp=max(ts),
        producer_id=draw(st.integers(-1, 2**62)),
        producer_epoch=draw(st.integers(-1, 2**15 - 1)),
        base_sequence=draw(st.integers(-1, 2**31 - 1)),
        records=records,
    )


def c_encode(b: ref.RefBatch, compression_type: str = "none") -> bytes:
    return logkernel.encode_batch(
        [r.value for r in b.records],
        keys=[r.key for r in b.records],
        timestamps=[b.base_timestamp + r.timestamp_delta for r in b.records],
        headers=[[(k.decode("utf-8", "surrogateescape"), v) for k, v in r.headers]
                 for r in b.records],
        offset_deltas=[r.offset_delta for r in b.records],
        base_offset=b.base_offset,
        partition_leader_epoch=b.partition_leader_epoch,
        transactional=bool(b.attributes & 0x10),
        producer_id=b.producer_id,
        producer_epoch=b.producer_epoch,
        base_sequence=b.base_sequence,
        compression_type=compression_type,
    )


def c_decode(data: bytes) -> ref.RefBatch:
    """The C decoder's view (header + record spans), in the reference's types."""
    header, spans = _binding.decode_batch(data)
    if spans is None:  # compressed: decompress as the records layer does
        payload = logkernel.decode_batch(data)._data
        spans = _binding.decode_records(payload, header.record_count, header.last_offset_delta)
        data = payload
    h = header

    def blob(pos: int, n: int) -> bytes | None:
        return None if n < 0 else data[pos:pos + n]

    records = []
    for s in spans.tolist():
        ts_delta, offset_delta, kp, kl, vp, vl, hp, hc, hl, attributes = s
        hdrs = _binding.decode_headers(data[hp:hp + hl], hc).tolist() if hc else []
        block = data[hp:hp + hl]
        records.append(ref.RefRecord(
            offset_delta, ts_delta, blob(kp, kl), blob(vp, vl),
            [(block[a:a + b], None if d < 0 else block[c:c + d]) for a, b, c, d in hdrs],
            attributes))
    return ref.RefBatch(h.base_offset, h.partition_leader_epoch, h.attributes, h.base_timestamp,
                        h.max_timestamp, h.producer_id, h.producer_epoch, h.base_sequence,
                        records, h.last_offset_delta)


@given(batches())
def test_encode_matches_reference_byte_for_byte(b: ref.RefBatch) -> None:
    assert c_encode(b) == ref.encode_batch(b)


@given(batches())
def test_round_trip(b: ref.RefBatch) -> None:
    data = c_encode(b)
    decoded = c_decode(data)
    b.last_offset_delta = b.records[-1].offset_delta
    assert decoded == b
    assert ref.decode_batch(data) == b


def _both(data: bytes) -> tuple[ref.RefBatch | None, ref.RefBatch | None]:
    try:
        theirs = ref.decode_batch(data)
    except ref.ReferenceError_:
        theirs = None
    try:
        ours = c_decode(data)
    except CorruptRecordError:
        ours = None
    return ours, theirs


@given(batches(), st.data())
def test_mutations_rejected_or_decoded_as_reference(b: ref.RefBatch, data: st.DataObject) -> None:
    good = bytearray(ref.encode_batch(b))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(good) - 1))
        good[at] = data.draw(st.integers(0, 255))
    # Sometimes fix the CRC so the record walker, not the CRC, must judge the damage.
    if data.draw(st.booleans()) and len(good) >= 61 and good[16] == 2 and \
            int.from_bytes(good[8:12], "big", signed=True) + 12 == len(good):
        _binding.update_crc(good)
    ours, theirs = _both(bytes(good))
    assert ours == theirs


@given(batches(), st.data())
def test_truncations_always_rejected(b: ref.RefBatch, data: st.DataObject) -> None:
    good = ref.encode_batch(b)
    cut = data.draw(st.integers(0, len(good) - 1))
    ours, theirs = _both(good[:cut])
    assert ours is None and theirs is None


@given(st.binary(max_size=200))
def test_garbage_never_crashes(data: bytes) -> None:
    assume(len(data) > 0)
    ours, theirs = _both(data)
    assert ours == theirs


@given(batches(), st.sampled_from(["gzip", "snappy", "lz4", "zstd"]))
def test_compressed_round_trip(b: ref.RefBatch, codec: str) -> None:
    decoded = c_decode(c_encode(b, codec))
    assert decoded.records == b.records
    assert decoded.attributes & 7 == logkernel.compression.codec_id(codec)


@given(batches(), st.sampled_from(["gzip", "snappy", "lz4", "zstd"]), st.data())
def test_compressed_mutations_are_rejected_or_decoded(b: ref.RefBatch, codec: str,
                                                      data: st.DataObject) -> None:
    good = bytearray(logkernel.encode_batch([r.value for r in b.records],
                                            compression_type=codec, timestamps=0))
    at = data.draw(st.integers(61, len(good) - 1))
    good[at] = data.draw(st.integers(0, 255))
    _binding.update_crc(good)  # past the CRC: the decompressor and walker must judge
    try:
        batch = logkernel.decode_batch(bytes(good))
    except CorruptRecordError:
        return
    assert len(batch.records()) == len(b.records)
