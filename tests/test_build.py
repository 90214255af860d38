"""Installing without a C compiler says what is missing instead of a compiler traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_missing_compiler_gives_a_clear_message(tmp_path: Path) -> None:
    work = tmp_path / "src"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.so", "*.egg-info", "logkernel-data", ".pytest_cache"))
    env = dict(os.environ, CC="/nonexistent/cc")
    out = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-temp",
                          str(tmp_path / "tmp"), "--build-lib", str(tmp_path / "lib")],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode != 0
    assert "needs a C compiler" in out.stderr + out.stdout
    assert "build-essential" in out.stderr + out.stdout
