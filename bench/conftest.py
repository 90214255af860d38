"""Benchmark plumbing: after the run, print each group's throughput beside its peers as
ratios, so every headline number in the README comes straight from this output.

Each benchmark records ``extra_info["items"]`` (bytes or records per call) and
``extra_info["unit"]``; the group's reference is the first benchmark marked
``extra_info["peer"] = True`` (what a user would otherwise pick).
"""

from __future__ import annotations

from typing import Any


def _rate(bench: Any) -> float:
    return bench.extra_info["items"] / bench.stats.median


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, list[Any]] = {}
    for bench in session.benchmarks:
        if bench.stats is None or "items" not in bench.extra_info:
            continue
        groups.setdefault(bench.group or bench.name, []).append(bench)
    write = terminalreporter.write_line
    write("")
    write("logkernel benchmarks: throughput (median) and ratio to the best peer in the group")
    for group, benches in groups.items():
        peers = [b for b in benches if b.extra_info.get("peer")]
        best_peer = max(peers, key=_rate) if peers else None
        write(f"[{group}]")
        for b in sorted(benches, key=_rate, reverse=True):
            unit = b.extra_info["unit"]
            rate = _rate(b)
            shown = f"{rate / 1e9:8.2f} G{unit}/s" if unit == "B" else f"{rate / 1e6:8.2f} M{unit}/s"
            ratio = f"{rate / _rate(best_peer):6.2f}x best peer" if best_peer else ""
            tag = "peer" if b.extra_info.get("peer") else "ours"
            write(f"  {b.name:<48} {tag:<4} {shown}  {ratio}")
