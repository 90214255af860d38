"""Architecture rules that code review alone would let slip (see ARCHITECTURE.md):
only logkernel/_binding.py imports the compiled module; nothing imports upward."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "logkernel"

# module (a file, or a package directory) -> modules of the package it must not import
UPPER = {"engine", "producer", "consumer", "cli", "broker"}
EVERYTHING = {"_binding", "records", "compression", "config", "log", "coordinator"} | UPPER
FORBIDDEN = {
    "errors": EVERYTHING | {"protocol"},
    "config": EVERYTHING - {"config"} | {"protocol"},
    "compression": {"_binding", "records", "log", "coordinator", "protocol"} | UPPER,
    "_binding": {"records", "compression", "config", "log", "coordinator", "protocol"} | UPPER,
    "records": {"log", "coordinator", "protocol"} | UPPER,
    "log": {"coordinator", "protocol"} | UPPER,
    "coordinator": UPPER | {"protocol"},
    "engine": {"cli", "broker", "protocol"},
    "producer": {"cli", "consumer", "broker", "protocol"},
    "consumer": {"cli", "producer", "broker", "protocol"},
    # The wire format knows nothing but bytes: no engine, no storage, no compiled module.
    "protocol": EVERYTHING,
    # The broker reaches storage only through the engine's public API.
    "broker": {"_binding", "records", "compression", "log", "coordinator", "cli", "producer",
               "consumer"},
}

# Only the broker opens sockets or runs an event loop.
NETWORK_MODULES = {"socket", "asyncio", "selectors", "ssl"}


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


def test_only_the_broker_does_network_io() -> None:
    offenders = []
    for file in PACKAGE.rglob("*.py"):
        relative = file.relative_to(PACKAGE)
        if relative.parts[0] in ("broker", "cli.py"):
            continue
        used = {i.split(".")[0] for i in imports_of(file)} & NETWORK_MODULES
        if used:
            offenders.append(f"{relative} imports {sorted(used)}")
    assert offenders == []
