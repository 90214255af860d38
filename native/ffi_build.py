"""Builds logkernel's native core as the cffi extension ``logkernel._native`` (API mode).

setup.py names this file in ``cffi_modules``; pip runs it at install time. The cdef is
native/logkernel.h itself (the contract), minus its preprocessor lines, so the header and
what Python sees can never drift apart.
"""

from __future__ import annotations

import pathlib

from cffi import FFI

NATIVE_DIR = pathlib.Path(__file__).resolve().parent
# Paths handed to setuptools must be relative to the project root (setup.py's directory).
# Every .c file of native/ is the core (the Makefile's strict build globs them the same
# way), sorted so that the build does not depend on directory order.
SOURCES = sorted(f"native/{path.name}" for path in NATIVE_DIR.glob("*.c"))
# -O3: the codec and CRC loops benefit from unrolling; -D_GNU_SOURCE for fallocate and
# MAP_NORESERVE. No -Werror here: a new compiler's new warning must not break a user's
# install. `make native-check` builds our sources with -Werror in CI instead.
# (-fvisibility=hidden was tried: it moved the encoder's hot loop to an unlucky alignment
# and halved its speed here, measured with bench/bench_codec.py; the symbols it would hide
# are harmless.)
COMPILE_ARGS = ["-O3", "-std=gnu11", "-D_GNU_SOURCE", "-Wall", "-Wextra"]


def contract_cdef() -> str:
    """logkernel.h without #include/#ifndef/#define/#endif lines, for ffi.cdef."""
    text = (NATIVE_DIR / "logkernel.h").read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef(contract_cdef())
ffibuilder.set_source(
    "logkernel._native",
    '#include "logkernel.h"',
    sources=SOURCES,
    include_dirs=["native"],
    extra_compile_args=COMPILE_ARGS,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
