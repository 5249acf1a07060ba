"""A run's output: results.json (raw figures and verdicts), RESULTS.md (the run log), plots."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import plots
import targets
from designs import (
    ANYIO_LOCK,
    ASYNCIO_LOCK,
    BY_KEY,
    CHECKPOINT,
    DESIGNS,
    FLOOR,
    NULL,
    TREASURER,
)
from host import command, cpu_model, versions
from memory import BASELINE

PACKAGES = ("anyio", "trio", "uvloop", "structlog", "attrs", "token-budget-py", "treasurer")
RATIOS = (
    (TREASURER, ANYIO_LOCK),
    (TREASURER, ASYNCIO_LOCK),
    (TREASURER, CHECKPOINT),
    (NULL, CHECKPOINT),
    (FLOOR, CHECKPOINT),
)


def machine() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    git = ("git", "-C", str(root))
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "versions": versions(PACKAGES),
        "commit": command(*git, "rev-parse", "--short", "HEAD") or None,
        "src_modified": bool(command(*git, "status", "--porcelain", "--", "src")),
    }


def medians(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int, str], float]:
    """Median ops/s per (backend, workload, N, design)."""
    rates: dict[tuple[str, str, int, str], list[float]] = defaultdict(list)
    for row in rows:
        key = (row["backend"], row.get("workload", "reserve"), row["n"], row["design"])
        rates[key].append(row.get("ops", 1) / row["seconds"])
    return {key: statistics.median(values) for key, values in rates.items()}


def _rate(value: float) -> str:
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def throughput_section(data: dict[str, Any]) -> list[str]:
    plan = data["meta"]["plan"]
    ns = plan["ns"]
    rates = medians(data["throughput"])
    lines = [
        "## Throughput (ops/s, median over rounds)",
        "",
        "An op is one reserve, commit, consume or refund; a pair is two.",
        "",
    ]
    for workload in ("reserve", "consume"):
        for backend in plan["backends"]:
            designs = [d.key for d in DESIGNS if (backend, workload, ns[0], d.key) in rates]
            if not designs:
                continue
            lines.append(f"### {workload} pairs on {backend}")
            lines.append("")
            rows = [[d] + [_rate(rates[backend, workload, n, d]) for n in ns] for d in designs]
            for fast, slow in RATIOS:
                ratios = targets.speed_ratios(data["throughput"], fast, slow)
                if (backend, workload, ns[0]) in ratios:
                    rows.append(
                        [f"*{fast} / {slow}*"]
                        + [f"{ratios[backend, workload, n]:.2f}x" for n in ns]
                    )
            per_pair = [2e6 / rates[backend, workload, n, TREASURER] for n in ns]
            rows.append(["*treasurer, us of wall time per pair*", *(f"{t:.0f}" for t in per_pair)])
            lines += _table(["design", *(f"N = {n:,}" for n in ns)], rows)
    return lines


def fanout_section(data: dict[str, Any]) -> list[str]:
    rows = []
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in data["fanout"]:
        seconds[row["backend"], row["design"]].append(row["seconds"])
    for backend in data["meta"]["plan"]["backends"]:
        floor = statistics.median(seconds[backend, FLOOR])
        for design in BY_KEY:
            if (backend, design) in seconds:
                median = statistics.median(seconds[backend, design])
                rows.append([backend, design, f"{median:.3f} s", f"{median / floor:.2f}x"])
    n = data["meta"]["plan"]["fanout_n"]
    title = f"## Fan-out: {n:,} tasks, each reserve, a 0 ms call, commit (median wall time)"
    return [title, "", *_table(["loop", "design", "time", "/ floor"], rows)]


def memory_section(data: dict[str, Any]) -> list[str]:
    baseline = {r["backend"]: r["bytes_per_task"] for r in data["memory"] if r["mode"] == BASELINE}
    rows = [
        [
            r["backend"],
            r["mode"],
            f"{r['bytes_per_task']:,.0f}",
            "" if r["mode"] == BASELINE else f"{r['bytes_per_task'] - baseline[r['backend']]:,.0f}",
        ]
        for r in data["memory"]
    ]
    n = data["memory"][0]["n"] if data["memory"] else 0
    return [
        f"## Memory: {n:,} blocked tasks (bytes per task, tracemalloc, median)",
        "",
        *_table(["loop", "blocked in", "per task", "beyond the task"], rows),
    ]


def ceiling_section(data: dict[str, Any]) -> list[str]:
    """The null actor's speed beside treasurer's, both over the floor + checkpoint."""
    ns = data["meta"]["plan"]["ns"]
    null = targets.speed_ratios(data["throughput"], NULL, CHECKPOINT)
    real = targets.speed_ratios(data["throughput"], TREASURER, CHECKPOINT)
    rows = [
        [backend, workload]
        + [f"{null[backend, workload, n]:.2f}x / {real[backend, workload, n]:.2f}x" for n in ns]
        for workload in ("reserve", "consume")
        for backend in data["meta"]["plan"]["backends"]
        if (backend, workload, ns[0]) in null
    ]
    return [
        "## The ceiling: null actor / treasurer, each over the floor + checkpoint",
        "",
        "The null actor is treasurer's runtime on a store that does no work: no",
        "ledger inside this runtime can pass it.",
        "",
        *_table(["loop", "pairs", *(f"N = {n:,}" for n in ns)], rows),
    ]


def targets_section(verdicts: list[targets.Target]) -> list[str]:
    rows = []
    for t in verdicts:
        status = "met" if t.met else "MISSED"
        rows.append([t.name, t.limit, _figure(t, t.worst), f"**{status}**"])
    lines = ["## Targets (worst case shown)", "", *_table(["target", "limit", "worst", ""], rows)]
    for t in verdicts:
        cases = "; ".join(f"{case} {_figure(t, value)}" for case, value in t.cases.items())
        lines.append(f"- {t.name}: {cases}")
    return [*lines, ""]


def _figure(target: targets.Target, value: float) -> str:
    if target.limit.endswith("KB"):
        return f"{value:,.0f} B"
    if target.limit.endswith("%"):
        return f"{value * 100:+.0f} %"
    return f"{value:.2f}x"


def results_md(data: dict[str, Any], verdicts: list[targets.Target]) -> str:
    meta, m = data["meta"], data["meta"]["machine"]
    plan, load = meta["plan"], meta["load_average"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [
        "# Benchmark run log",
        "",
        "Written by `benchmarks/run.py` (`nox -s bench`); the user page is docs/performance.md.",
        "",
        f"- Run: {meta['started']}, {meta['duration_s'] / 60:.1f} min"
        + f" ({'--quick' if plan['quick'] else 'full'}), {meta['cpu_s'] / 60:.1f} min of CPU.",
        f"- Machine: {m['cpus']} CPUs, {m['cpu_model']}; {m['platform']}; {m['python']}.",
        f"- Packages: {versions}.",
        f"- treasurer at commit {m['commit']}"
        + (" with local changes in src/" if m["src_modified"] else "")
        + ".",
        "- Load average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.2f}" for x in load["before"])
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in load["after"])
        + " (other work shares the machine).",
        f"- Plan: {plan['rounds']} rounds of {plan['pairs']:,} pairs per throughput case"
        f" (at least one per task), designs interleaved; fan-out {plan['fanout_rounds']} rounds;"
        f" memory {plan['memory_rounds']} rounds of {plan['memory_n']:,} tasks.",
        "- Books checked after every run: "
        + ("all right." if not data["problems"] else f"{len(data['problems'])} problems:"),
        *(f"  - {p}" for p in data["problems"]),
        "",
        *targets_section(verdicts),
        *ceiling_section(data),
        *throughput_section(data),
        *fanout_section(data),
        *memory_section(data),
        "## Designs",
        "",
        *(f"- `{d.key}`: {d.label}" for d in DESIGNS),
        "",
    ]
    return "\n".join(lines)


def write(data: dict[str, Any], log_dir: Path, plot_dir: Path) -> None:
    data["meta"].setdefault("machine", machine())  # kept when a run is rendered again
    verdicts = targets.judge(data)
    data["targets"] = [
        {"name": t.name, "limit": t.limit, "met": t.met, "worst": t.worst, "cases": t.cases}
        for t in verdicts
    ]
    data["null_actor_ceiling"] = {
        f"{b} {w} N={n}": r
        for (b, w, n), r in targets.speed_ratios(data["throughput"], NULL, CHECKPOINT).items()
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    plot_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "results.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (log_dir / "RESULTS.md").write_text(results_md(data, verdicts), encoding="utf-8")
    plots.throughput(data, medians(data["throughput"]), plot_dir / "throughput.png")
    plots.fanout(data, plot_dir / "fanout.png")
    print()
    for t in verdicts:
        status = "met   " if t.met else "MISSED"
        print(f"{status} {t.name} ({t.limit}): worst {_figure(t, t.worst)}")
    print(f"\nWrote {log_dir / 'RESULTS.md'}, results.json; plots in {plot_dir}")
