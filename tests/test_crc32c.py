"""CRC-32C: known answers, every implementation against the pure-Python reference."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

import logkernel
from logkernel import _binding
from logkernel.errors import UnsupportedError
from tests import reference_codec as ref

AVAILABLE = _binding.crc32c_available()


def test_known_answer() -> None:
    assert logkernel.crc32c(b"123456789") == 0xE3069283
    assert ref.crc32c(b"123456789") == 0xE3069283


def test_empty_and_chaining() -> None:
    assert logkernel.crc32c(b"") == 0
    data = os.urandom(10_000)
    assert logkernel.crc32c(data[5000:], logkernel.crc32c(data[:5000])) == logkernel.crc32c(data)


@pytest.mark.parametrize("impl", AVAILABLE)
def test_each_implementation_known_answer(impl: str) -> None:
    assert _binding.crc32c_with(impl, b"123456789") == 0xE3069283


def test_table_is_always_available_and_best_is_selected() -> None:
    assert "table" in AVAILABLE
    assert _binding.crc32c_selected() in AVAILABLE


@pytest.mark.parametrize("impl", AVAILABLE)
@pytest.mark.parametrize("size", [0, 1, 7, 8, 15, 16, 31, 63, 64, 127, 128, 255, 256, 257, 1023,
                                  4096, 4097, 65536 + 3, 1 << 20])
def test_implementations_agree_on_sizes(impl: str, size: int) -> None:
    data = os.urandom(size + 64)
    for start in (0, 1, 3, 8, 13):
        chunk = data[start:start + size]
        assert _binding.crc32c_with(impl, chunk, 0x12345678) == _binding.crc32c_with(
            "table", chunk, 0x12345678)


@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1))
def test_matches_reference(data: bytes, crc: int) -> None:
    expected = ref.crc32c(data, crc)
    for impl in AVAILABLE:
        assert _binding.crc32c_with(impl, data, crc) == expected


def test_unavailable_implementation_is_a_clear_error() -> None:
    missing = [name for name in _binding.CRC32C_IMPLEMENTATIONS if name not in AVAILABLE]
    for name in missing:
        with pytest.raises(UnsupportedError):
            _binding.crc32c_with(name, b"x")
    with pytest.raises(ValueError, match="unknown CRC-32C implementation"):
        _binding.crc32c_with("nope", b"x")


def test_accepts_any_buffer() -> None:
    data = os.urandom(1000)
    expected = logkernel.crc32c(data)
    assert logkernel.crc32c(bytearray(data)) == expected
    assert logkernel.crc32c(memoryview(data)) == expected
    import numpy as np
    assert logkernel.crc32c(np.frombuffer(data, dtype=np.uint8)) == expected
