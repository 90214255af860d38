"""CRC-32C throughput on 1 MiB buffers: logkernel beside the `crc32c` and `google-crc32c`
packages (what a Python user would otherwise pick), in the same run."""

from __future__ import annotations

import os

import pytest

from logkernel import _binding, crc32c

SIZE = 1 << 20
DATA = os.urandom(SIZE)
EXPECTED = crc32c(DATA)


def _run(benchmark, fn, peer: bool) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "crc32c 1 MiB"
    benchmark.extra_info.update(items=SIZE, unit="B", peer=peer)
    result = benchmark(fn, DATA)
    assert result == EXPECTED


def test_logkernel_crc32c(benchmark) -> None:  # type: ignore[no-untyped-def]
    _run(benchmark, crc32c, peer=False)


@pytest.mark.parametrize("impl", _binding.crc32c_available())
def test_logkernel_crc32c_impl(benchmark, impl: str) -> None:  # type: ignore[no-untyped-def]
    _run(benchmark, lambda d: _binding.crc32c_with(impl, d), peer=False)


def test_crc32c_package(benchmark) -> None:  # type: ignore[no-untyped-def]
    crc32c_pkg = pytest.importorskip("crc32c")
    _run(benchmark, crc32c_pkg.crc32c, peer=True)


def test_google_crc32c_package(benchmark) -> None:  # type: ignore[no-untyped-def]
    google_crc32c = pytest.importorskip("google_crc32c")
    _run(benchmark, google_crc32c.value, peer=True)
