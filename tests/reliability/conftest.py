"""The reliability suite: crashes, power loss, full disks, hostile bytes and load.

Every test here runs in two sizes. ``make test`` collects this folder like any other and
runs the short size (seconds per test, so the ordinary suite stays fast); ``make
test-reliability`` sets ``LK_RELIABILITY=full`` and runs the sizes the figures in
docs/reliability.md come from. ``scale(short, full)`` picks the size.

Tests report what they did through the ``figures`` fixture ("broker kills survived",
"records verified", "peak RSS (MB)" ...). The figures are printed at the end of the run
and written to ``reliability-figures.json`` in the run's base directory, the source of
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FULL = os.environ.get("LK_RELIABILITY", "short") == "full"
FIGURES_FILE = "reliability-figures.json"


def scale(short: int, full: int) -> int:
    """``full`` under ``make test-reliability``, else ``short``."""
    return full if FULL else short


class Figures:
    """Named numbers a reliability test measured, summed across tests (counts) or kept
    at their maximum (peaks: names ending in "(peak)" or "(MB)")."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, name: str, amount: float = 1) -> None:
        with self.lock:
            self.values[name] = self.values.get(name, 0) + amount

    def peak(self, name: str, value: float) -> None:
        with self.lock:
            self.values[name] = max(self.values.get(name, value), value)


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    yield _FIGURES


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not _FIGURES.values:
        return
    size = "full" if FULL else "short"
    terminalreporter.section(f"reliability figures ({size} run)")
    for name, value in sorted(_FIGURES.values.items()):
        shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
        terminalreporter.write_line(f"{name:<60} {shown:>14}")
    path = Path(str(config.rootpath)) / FIGURES_FILE
    path.write_text(json.dumps({"size": size, "figures": _FIGURES.values}, indent=1,
                               sort_keys=True) + "\n")
