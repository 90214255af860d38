"""Scratch directories on tmpfs, for tests that make and damage many short-lived data
directories: the engine fsyncs at every open and close, and on the shared disk those
fsyncs cost most of such a test while proving nothing it checks (the files are the same,
byte for byte)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

SHM = Path("/dev/shm")


@contextlib.contextmanager
def memory_directory(prefix: str, fallback: Path) -> Iterator[Path]:
    """A fresh directory in /dev/shm, removed afterwards, when there is one with 1 GiB
    free; else ``fallback``."""
    if SHM.is_dir() and os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free > 1 << 30:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=SHM))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield fallback
