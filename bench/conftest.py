"""Benchmark plumbing: after the run, print each group's throughput beside its peers as
ratios, so every headline number in the README comes straight from this output.

Each benchmark records ``extra_info["items"]`` (bytes or records per call) and
``extra_info["unit"]``; the group's reference is the best benchmark marked
``extra_info["peer"] = True`` (what a user would otherwise pick). An optional
``extra_info["tag"]`` replaces the "peer"/"ours" label, for groups whose reference is one
of ours (e.g. "ref" for 1 thread beside 8 threads, "peer" for the alternatives beside it).

Two rates per benchmark: from the fastest round (``best``: the machine at its quietest,
what timeit reports) and from the median round (what a typical call costs here, with
this 2-vCPU VM's noise and the allocator's moods). Ratios use the same statistic on both
sides.
"""

from __future__ import annotations

from typing import Any


def _rate(bench: Any, stat: str) -> float:
    return float(bench.extra_info["items"] / getattr(bench.stats, stat))


def _shown(rate: float, unit: str) -> str:
    if unit != "B" and rate < 1e4:  # fsync-bound rates would print as 0.00 M/s
        return f"{rate / 1e3:6.2f} k{unit}/s"
    return f"{rate / 1e9:6.2f} G{unit}/s" if unit == "B" else f"{rate / 1e6:6.2f} M{unit}/s"


def _paired_summary(write: Any) -> None:
    try:
        from bench.bench_paired import PAIRED_RESULTS
    except ImportError:  # run from another root, or module not collected
        return
    if not PAIRED_RESULTS:
        return
    write("")
    write("paired (ours and peer timed in alternation): median rate, ratio of medians; best rate, ratio")
    for r in PAIRED_RESULTS:
        unit = r["unit"]
        write(f"  {r['name']:<28} vs {r['peer']:<24} median {_shown(r['ours_median'], unit)} vs "
              f"{_shown(r['peer_median'], unit)} = {r['ours_median'] / r['peer_median']:6.2f}x | best "
              f"{_shown(r['ours_best'], unit)} vs {_shown(r['peer_best'], unit)} = "
              f"{r['ours_best'] / r['peer_best']:6.2f}x")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    _paired_summary(terminalreporter.write_line)
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, list[Any]] = {}
    for bench in session.benchmarks:
        if bench.stats is None or not bench.stats.data or "items" not in bench.extra_info:
            continue  # not a throughput benchmark, or it failed before a round finished
        groups.setdefault(bench.group or bench.name, []).append(bench)
    write = terminalreporter.write_line
    write("")
    write("logkernel benchmarks: throughput and ratio to the best peer (best round | median round)")
    for group, benches in groups.items():
        peers = [b for b in benches if b.extra_info.get("peer")]
        write(f"[{group}]")
        for b in sorted(benches, key=lambda b: _rate(b, "median"), reverse=True):
            unit = b.extra_info["unit"]
            cells = []
            for stat in ("min", "median"):
                rate = _rate(b, stat)
                ratio = ""
                if peers:
                    best_peer = max(_rate(p, stat) for p in peers)
                    ratio = f" {rate / best_peer:6.2f}x"
                cells.append(f"{_shown(rate, unit)}{ratio}")
            tag = b.extra_info.get("tag") or ("peer" if b.extra_info.get("peer") else "ours")
            write(f"  {b.name:<42} {tag:<4} best {cells[0]}  | median {cells[1]}")
