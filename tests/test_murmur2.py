"""Kafka's key hash (lk_murmur2 through ``_binding.murmur2``) and the default partitioner's
choice (``partition_for_key``): known answers from Kafka's own UtilsTest, then kafka-python's
pure-Python port of the Java method as the reference over random keys."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logkernel._binding import murmur2, partition_for_key

with warnings.catch_warnings():
    # kafka.partitioner imports kafka-python's protocol package, which calls the deprecated
    # importlib.resources.read_text at import time; pytest turns that warning into an error.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: the Java client's values.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def reference(key: bytes) -> int:
    """kafka-python's murmur2 returns the 32 bits unsigned; Java (and we) return them signed."""
    h = kafka_python_murmur2(key)
    return h - (1 << 32) if h >= 1 << 31 else h


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS.items())
def test_kafka_known_answers(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected
    assert reference(key) == expected  # the reference agrees with Kafka too


def test_empty_key_and_every_tail_length() -> None:
    for length in range(0, 9):
        key = bytes(range(0xF8, 0xF8 + length))  # high bytes: Java's signed byte must not leak
        assert murmur2(key) == reference(key), length


@given(st.binary(min_size=0, max_size=100))
def test_matches_kafka_python(key: bytes) -> None:
    assert murmur2(key) == reference(key)


@given(st.binary(min_size=0, max_size=3))
def test_tails_alone(key: bytes) -> None:
    assert murmur2(key) == reference(key)


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=10_000))
def test_partition_for_key_is_the_default_partitioners(key: bytes, partitions: int) -> None:
    expected = (reference(key) & 0x7FFFFFFF) % partitions
    assert partition_for_key(key, partitions) == expected
    assert 0 <= expected < partitions


def test_partition_for_key_known_answer() -> None:
    # toPositive(-790332482) = 1357151166; 1357151166 % 10 = 6 (any Kafka client agrees)
    assert partition_for_key(b"foobar", 10) == 6


def test_bytes_like_keys_and_type_errors() -> None:
    assert murmur2(bytearray(b"foobar")) == KAFKA_VECTORS[b"foobar"]  # type: ignore[arg-type]
    assert murmur2(memoryview(b"foobar")) == KAFKA_VECTORS[b"foobar"]  # type: ignore[arg-type]
    assert partition_for_key(bytearray(b"foobar"), 10) == 6  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="encode strings first"):
        murmur2("foobar")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        partition_for_key(None, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for_key(b"k", 0)
