"""The `logkernel` command as a user runs it: a real process, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logkernel", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_demo_appends_and_reads_back_across_runs(tmp_path: Path) -> None:
    first = run("demo", "--data-dir", str(tmp_path), "--records", "2500")
    assert first.returncode == 0, first.stderr
    assert "appended 2501 records to topic 'demo'" in first.stdout
    assert "read back 2501 records" in first.stdout
    second = run("demo", "--data-dir", str(tmp_path), "--records", "100")
    assert second.returncode == 0, second.stderr
    assert "read back 101 records" in second.stdout
    ends = [line.split("..")[1].split(",")[0] for line in second.stdout.splitlines()
            if line.strip().startswith("partition ")]
    assert sum(int(e) + 1 for e in ends) == 2602  # both runs' records are stored
    assert (tmp_path / "demo-0" / ("0" * 20 + ".log")).exists()
    assert len(list((tmp_path / "topics").glob("*.json"))) == 2  # demo, __consumer_offsets


def test_info_names_the_crc_implementation() -> None:
    out = run("info")
    assert out.returncode == 0
    assert "CRC-32C: using" in out.stdout


def test_bad_arguments_are_refused() -> None:
    out = run("demo", "--records", "0")
    assert out.returncode != 0
    assert "--records must be at least 1" in out.stderr
