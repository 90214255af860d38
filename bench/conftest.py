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

import os
from typing import Any


def _rate(bench: Any, stat: str) -> float:
    return float(bench.extra_info["items"] / getattr(bench.stats, stat))


def _shown(rate: float, unit: str) -> str:
    if unit != "B" and rate < 1e6:  # fsync-bound or per-request rates: in thousands
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


def _cleaner_summary(write: Any) -> None:
    try:
        from bench.bench_cleaner import CLEANER_RESULTS
    except ImportError:
        return
    if not CLEANER_RESULTS:
        return
    write("")
    write("compaction (bench_cleaner.py): MB of input cleaned per second, median | best round")
    for kind in dict.fromkeys(r["kind"] for r in CLEANER_RESULTS):
        rows = [r for r in CLEANER_RESULTS if r["kind"] == kind]
        write(f"  [{kind}]")
        ours = next((r for r in rows if r["name"] == "logkernel"), None)
        for r in rows:
            if "mb_s" in r:
                median, best = _median(r["mb_s"]), max(r["mb_s"])
                ratio = ""
                if r.get("peer") and ours is not None:
                    ratio = (f"  (logkernel: {_median(ours['mb_s']) / median:5.2f}x median, "
                             f"{max(ours['mb_s']) / best:5.2f}x best)")
                write(f"    {r['name']:<28} {median:7.1f} | {best:7.1f} MB/s, {r['keys']:,} "
                      f"keys{ratio}")
            else:
                write(f"    {r['name']:<28} peak anonymous memory growth "
                      f"{r['peak_growth_mb']:6.1f} MB with a {r['buffer_mb']:.1f} MB dedupe "
                      f"buffer, {r['passes']} pass(es), {r['seconds']:.1f} s")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _broker_cpu_per_million(bench: Any) -> float | None:
    """Median over rounds of the broker's CPU seconds, per million messages."""
    cpu = bench.extra_info.get("broker_cpu_s")
    return _median(cpu) / bench.extra_info["messages"] * 1e6 if cpu else None


def _broker_line(bench: Any, reference: Any) -> str:
    info = bench.extra_info
    if info["broker_bench"] == "throughput":
        cells = []
        for stat, label in (("min", "best"), ("median", "median")):
            rate = info["messages"] / getattr(bench.stats, stat)
            ratio = ""
            if reference is not None:
                ratio = f" {rate / (info['messages'] / getattr(reference.stats, stat)):5.2f}x"
            cells.append(f"{label} {_shown(rate, 'msg')}{ratio}")
        cpu = _broker_cpu_per_million(bench)
        peer_cpu = _broker_cpu_per_million(reference) if reference is not None else None
        cells.append("broker CPU n/a" if cpu is None else f"broker CPU {cpu:6.2f} s/M msgs"
                     + (f" {cpu / peer_cpu:5.2f}x" if peer_cpu else ""))
        return " | ".join(cells)
    if info["broker_bench"] == "latency":
        return (f"p50 {info['p50_ms']:8.2f} ms  p99 {info['p99_ms']:8.2f} ms  max {info['max_ms']:8.2f} ms"
                f"  mean {info['mean_ms']:8.2f} ms ({info['messages']:,} messages; produce to ack: p50 "
                f"{info['ack_p50_ms']:.2f} ms, p99 {info['ack_p99_ms']:.2f} ms)")
    ready_ms = sorted(1e3 * s for s in info["ready_s"])
    return (f"median {_median(ready_ms):7.1f} ms  min {ready_ms[0]:7.1f}  max {ready_ms[-1]:7.1f}"
            f" ({len(ready_ms)} starts; {info['measured']})")


def _broker_summary(write: Any, session: Any) -> None:
    """bench/bench_broker.py: messages/s and broker CPU per million messages, with ratios
    to tansu (same statistic on both sides); latency percentiles; start-up times. Each
    line ends with the 1-minute load average when that benchmark started."""
    benches = [b for b in session.benchmarks if "broker_bench" in b.extra_info
               and b.stats is not None and b.stats.data]
    if not benches:
        return
    write("")
    write("broker benchmarks (same client, same run; ratios to tansu; load = 1-min load average "
          "at the benchmark's start)")
    groups: dict[str, dict[str, Any]] = {}
    for bench in benches:
        groups.setdefault(bench.group or bench.name, {})[bench.extra_info["broker"]] = bench
    for group, by_broker in groups.items():
        write(f"[{group}]")
        for broker, bench in by_broker.items():
            write(f"  {broker:<10} {_broker_line(bench, by_broker.get('tansu'))} | "
                  f"load {bench.extra_info['loadavg'][0]:.1f}")
    # The CPU figure: a million messages produced (acks=1) and consumed, per
    # partition count ("1 partition(s)" is the group name's second field).
    totals: dict[tuple[str, str], float] = {}
    for group, by_broker in groups.items():
        if not group.startswith("consume "):
            continue
        partitions = group.split(", ")[1]
        produced = groups.get(next((g for g in groups if g.startswith("produce ")
                                    and g.endswith(f"acks=1, {partitions}")), ""), {})
        for broker, bench in by_broker.items():
            consumed = _broker_cpu_per_million(bench)
            produced_cpu = _broker_cpu_per_million(produced[broker]) if broker in produced else None
            if consumed is not None and produced_cpu is not None:
                totals[(partitions, broker)] = produced_cpu + consumed
    if totals:
        write("[broker CPU seconds per 1M messages produced (acks=1) and consumed]")
        for (partitions, broker), total in totals.items():
            peer = totals.get((partitions, "tansu"))
            ratio = f" {total / peer:5.2f}x" if peer else ""
            write(f"  {broker:<10} {partitions:<14} {total:6.2f} s{ratio}")
    write("load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    _paired_summary(terminalreporter.write_line)
    broker_session = getattr(config, "_benchmarksession", None)
    if broker_session is not None:
        _broker_summary(terminalreporter.write_line, broker_session)
    _cleaner_summary(terminalreporter.write_line)
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


# bench/bench_txn.py's summary: its own hook (pluggy's specname), after the others (trylast).
import sys  # noqa: E402 - needed only by the hook below

import pytest  # noqa: E402


@pytest.hookimpl(specname="pytest_terminal_summary", trylast=True)
def pytest_terminal_summary_transactions(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """bench/bench_txn.py: per broker, produce rates idempotent and plain and the ratio
    (target >= 0.9x), the broker's CPU per million messages for each; committed
    transactions per second (target >= 1,000/s) with ratios to tansu and to librdkafka's
    mock (the client's ceiling). Median round, then best. Peers skipped for lack of
    support are named."""
    session = getattr(config, "_benchmarksession", None)
    benches = [] if session is None else [
        b for b in session.benchmarks
        if "txn_bench" in b.extra_info and b.stats is not None and b.stats.data]
    # Only if collected: importing it here would skip (importorskip) where a client is missing.
    unsupported = getattr(sys.modules.get("bench.bench_txn"), "UNSUPPORTED", {})
    if not benches and not unsupported:
        return
    write = terminalreporter.write_line
    write("")
    write("idempotence and transactions (bench_txn.py; same client, same run; mock = librdkafka's "
          "mock cluster, the client's ceiling): median round | best round")

    def cpu(bench: Any) -> str:
        per_million = _broker_cpu_per_million(bench)
        return "" if per_million is None else f", broker CPU {per_million:5.2f} s/M msgs"

    produce = {b.extra_info["broker"]: b.extra_info for b in benches
               if b.extra_info["txn_bench"] == "produce"}
    if produce:
        info = next(iter(produce.values()))
        write(f"[produce {info['messages']:,} x 100 B, acks=all, 1 partition; a plain and an "
              f"idempotent run in each of {len(info['seconds']['plain'])} rounds]")
        for broker, info in produce.items():
            seconds = info["seconds"]
            if not (seconds["plain"] and seconds["idempotent"]):
                continue  # failed before a pair was timed
            for mode in ("plain", "idempotent"):
                cpu_s = _median(info["broker_cpu_s"][mode]) / info["messages"] * 1e6
                write(f"  {broker:<10} {mode:<10} {_shown(info['messages'] / _median(seconds[mode]), 'msg')}"
                      f" | {_shown(info['messages'] / min(seconds[mode]), 'msg')}, broker CPU "
                      f"{cpu_s:5.2f} s/M msgs")
            ratio_median = _median(seconds["plain"]) / _median(seconds["idempotent"])
            ratio_best = min(seconds["plain"]) / min(seconds["idempotent"])
            write(f"  {broker:<10} idempotent/plain {ratio_median:5.2f}x median | {ratio_best:5.2f}x best"
                  + (" (target >= 0.90x)" if broker == "logkernel" else "")
                  + f" | load {info['loadavg'][0]:.1f}")
    transactions = {b.extra_info["broker"]: b for b in benches
                    if b.extra_info["txn_bench"] == "transactions"}
    if transactions:
        count = next(iter(transactions.values())).extra_info["transactions"]
        write(f"[committed transactions of 100 x 100 B, one transactional producer, {count:,} per round]")
        for broker, bench in transactions.items():
            count = bench.extra_info["transactions"]
            ratios = []
            for other in ("tansu", "mock"):
                reference = transactions.get(other)
                if reference is not None and reference is not bench:
                    ratios.append(f"vs {other} {reference.stats.median / bench.stats.median:4.2f}x median, "
                                  f"{reference.stats.min / bench.stats.min:4.2f}x best")
            target = " (target >= 1,000/s)" if broker == "logkernel" else ""
            write(f"  {broker:<10} {count / bench.stats.median:7,.0f} | {count / bench.stats.min:7,.0f} "
                  f"transactions/s{target}{cpu(bench)}" + (f"; {'; '.join(ratios)}" if ratios else "")
                  + f" | load {bench.extra_info['loadavg'][0]:.1f}")
    for (broker, what), reason in unsupported.items():
        write(f"  {broker}: not measured, it does not support {what}: {reason}")
