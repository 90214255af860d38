"""Build glue: compiles the C core through cffi (see native/ffi_build.py).

Project metadata lives in pyproject.toml; this file exists only because cffi's
``cffi_modules`` hook is a setup() keyword.
"""

from __future__ import annotations

import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

MISSING_COMPILER = """
logkernel: cannot build the native core: {reason}

logkernel compiles a small C library (CRC-32C, the Kafka record-batch codec and
memory-mapped segment I/O) when it is installed, so it needs a C compiler and the
Python development headers:

    Debian/Ubuntu:  apt-get install build-essential python3-dev
    Fedora/RHEL:    dnf install gcc python3-devel
    macOS:          xcode-select --install

Then run the install again.
"""


class BuildNative(build_ext):
    """build_ext that says plainly what is missing when the C core cannot compile."""

    def run(self) -> None:
        compiler = os.environ.get("CC", "cc").split()[0]
        if sys.platform != "win32" and shutil.which(compiler) is None:
            raise SystemExit(MISSING_COMPILER.format(reason=f"no C compiler found ({compiler!r})"))
        try:
            super().run()
        except Exception as exc:  # CompileError, LinkError, DistutilsExecError, ...
            if type(exc).__name__ in {"CompileError", "LinkError", "DistutilsExecError",
                                      "CCompilerError", "DistutilsPlatformError"}:
                raise SystemExit(MISSING_COMPILER.format(reason=str(exc))) from exc
            raise


setup(
    cffi_modules=["native/ffi_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildNative},
)
