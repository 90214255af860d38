"""Architecture rules that code review alone would let slip (see ARCHITECTURE.md):
only logkernel/_binding.py imports the compiled module; nothing imports upward."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "logkernel"

# module (a file, or a package directory) -> modules of the package it must not import
UPPER = {"engine", "producer", "consumer", "cli"}
FORBIDDEN = {
    "errors": {"_binding", "records", "compression", "config", "log", "coordinator"} | UPPER,
    "config": {"_binding", "records", "compression", "log", "coordinator"} | UPPER,
    "compression": {"_binding", "records", "log", "coordinator"} | UPPER,
    "_binding": {"records", "compression", "config", "log", "coordinator"} | UPPER,
    "records": {"log", "coordinator"} | UPPER,
    "log": {"coordinator"} | UPPER,
    "coordinator": UPPER,
    "engine": {"cli"},
    "producer": {"cli", "consumer"},
    "consumer": {"cli", "producer"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # `from . import x` / `from .x import y` name modules of this package too
            module = node.module or ""
            if node.level:
                module = "logkernel" + (f".{module}" if module else "")
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_only_binding_imports_the_native_module() -> None:
    offenders = [p.name for p in PACKAGE.rglob("*.py")
                 if p.name != "_binding.py" and any("_native" in i for i in imports_of(p))]
    assert offenders == []


def test_layers_point_down() -> None:
    for module, banned in FORBIDDEN.items():
        path = PACKAGE / module
        files = sorted(path.rglob("*.py")) if path.is_dir() else [PACKAGE / f"{module}.py"]
        assert files, module
        for file in files:
            imported = imports_of(file)
            bad = {b for b in banned for i in imported
                   if i == f"logkernel.{b}" or i.startswith(f"logkernel.{b}.")}
            assert not bad, f"{file.relative_to(PACKAGE)} imports {bad}"
