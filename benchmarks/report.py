"""Turn raw runs into cases, ratios, targets, tables (terminal and Markdown) and plots."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from designs import (
    ANYIO_LOCK,
    ANYIO_LOCK_FAST,
    ASYNCIO_LOCK,
    BASELINES,
    CHECKPOINT,
    DESIGNS,
    FLOOR,
    LEDGER_CHECKPOINT,
    THREADING_LOCK,
    TOKEN_BUDGET,
    TREASURER,
    TREASURER_TENANTS,
    TREASURER_WINDOWS,
)

BACKENDS = ("asyncio", "uvloop", "trio")
_SORT = {"asyncio": 0, "uvloop": 1, "trio": 2, "threads": 3}
LABELS = {d.key: d.label for d in DESIGNS}
ORDER = {d.key: i for i, d in enumerate(DESIGNS)}

# 1.5 KB, read as KiB.
MEMORY_LIMIT_BYTES = 1536


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(values: Iterable[int]) -> dict[str, int]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 0.50),
        "p99": percentile(ordered, 0.99),
        "count": len(ordered),
    }


def latency_over_rounds(rounds: Sequence[Sequence[int]]) -> dict[str, Any]:
    """The median of each round's p50 and p99: one slow round (this machine is
    shared) moves neither. Each round's own figures are kept beside them."""
    each = [latency_summary(values) for values in rounds]
    return {
        "p50": round(statistics.median(r["p50"] for r in each)),
        "p99": round(statistics.median(r["p99"] for r in each)),
        "count": sum(r["count"] for r in each),
        "rounds": each,
    }


@dataclass
class Case:
    backend: str
    workload: str
    n: int
    design: str
    rates: list[float]
    seconds: list[float]
    violations: list[str]
    extra: dict[str, Any]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    def as_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "workload": self.workload,
            "n": self.n,
            "design": self.design,
            "ops_per_s": {
                "median": self.median,
                "min": min(self.rates),
                "max": max(self.rates),
                "reps": self.rates,
            },
            "seconds": {
                "median": self.median_seconds,
                "min": min(self.seconds),
                "max": max(self.seconds),
                "reps": self.seconds,
            },
            "violations": self.violations,
            **({"extra": self.extra} if self.extra else {}),
        }


def build_cases(runs: list[dict[str, Any]]) -> list[Case]:
    grouped: dict[tuple[str, str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[run["backend"], run["workload"], run["n"], run["design"]].append(run)
    cases = []
    for (backend, workload, n, design), items in grouped.items():
        extra: dict[str, Any] = {}
        for item in items:
            for key, value in item.get("extra", {}).items():
                extra.setdefault(key, []).append(value)
        cases.append(
            Case(
                backend,
                workload,
                n,
                design,
                [i["ops"] / i["seconds"] for i in items],
                [i["seconds"] for i in items],
                [v for i in items for v in i["violations"]],
                extra,
            )
        )
    cases.sort(key=lambda c: (_SORT[c.backend], c.workload, c.n, ORDER.get(c.design, 99), c.design))
    return cases


def ratios(cases: list[Case]) -> dict[tuple[str, str, int], dict[str, dict[str, float]]]:
    """For each (backend, workload, n): design -> baseline -> ratio of median ops/s."""
    table: dict[tuple[str, str, int], dict[str, dict[str, float]]] = {}
    by_key: dict[tuple[str, str, int], dict[str, Case]] = defaultdict(dict)
    for case in cases:
        by_key[case.backend, case.workload, case.n][case.design] = case
    for key, row in by_key.items():
        table[key] = {
            design: {base: case.median / row[base].median for base in BASELINES if base in row}
            for design, case in row.items()
        }
    return table


# -- targets ------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    status: str  # PASS, MISS or NOT MEASURABLE
    measured: str
    detail: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "measured": self.measured,
            "detail": self.detail,
        }


def _status(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def evaluate_targets(
    cases: list[Case],
    latency: list[dict[str, Any]],
    memory: list[dict[str, Any]],
    fanout_n: int,
    not_measured: dict[str, str],
) -> list[Target]:
    by = {(c.backend, c.workload, c.n, c.design): c for c in cases}
    targets: list[Target] = []

    def ratio_target(name: str, base: str, limit: float, ns: Iterable[int]) -> None:
        figures = []
        detail = []
        for backend in ("asyncio", "trio"):
            for n in ns:
                ours = by.get((backend, "pairs", n, TREASURER))
                theirs = by.get((backend, "pairs", n, base))
                if ours is None or theirs is None:
                    continue
                r = ours.median / theirs.median
                figures.append(r)
                line = f"{backend} N={n}: {r:.2f}x ({ours.median:,.0f} vs {theirs.median:,.0f})"
                bound = by.get((backend, "pairs", n, LEDGER_CHECKPOINT))
                if bound is not None:
                    line += f"; its ledger with no actor: {bound.median / theirs.median:.2f}x"
                detail.append(line)
        if not figures:
            targets.append(Target(name, "NOT MEASURED", "-", []))
            return
        worst = min(figures)
        best = max(figures)
        targets.append(
            Target(name, _status(worst >= limit), f"{worst:.2f}x to {best:.2f}x", detail)
        )

    ratio_target(
        "treasurer >= 80 % of floor + one checkpoint (asyncio, trio; N = 10 to 10,000)",
        CHECKPOINT,
        0.8,
        (10, 100, 1000, 10000),
    )
    ratio_target(
        "treasurer >= 1.5x anyio.Lock (asyncio, trio; N >= 10)",
        ANYIO_LOCK,
        1.5,
        (10, 100, 1000, 10000),
    )

    # Fan-out: time relative to the floor's.
    figures = []
    detail = []
    for backend in BACKENDS:
        for workload in ("fanout-0ms", "fanout-1ms"):
            ours = by.get((backend, workload, fanout_n, TREASURER))
            floor = by.get((backend, workload, fanout_n, FLOOR))
            if ours is None or floor is None:
                continue
            r = ours.median_seconds / floor.median_seconds
            figures.append(r)
            detail.append(
                f"{backend} {workload}: {r:.2f}x the floor's time "
                f"({ours.median_seconds * 1e3:,.0f} vs {floor.median_seconds * 1e3:,.0f} ms)"
            )
    if figures:
        targets.append(
            Target(
                f"{fanout_n:,}-task fan-out within 1.6x of the floor's time",
                _status(max(figures) <= 1.6),
                f"{min(figures):.2f}x to {max(figures):.2f}x",
                detail,
            )
        )

    # Memory per pending request, beyond a task parked on a plain Event.
    figures = []
    detail = []
    mem = {(m["backend"], m["mode"]): m["bytes_per_task"] for m in memory}
    for backend in BACKENDS:
        ours = mem.get((backend, "treasurer reserve"))
        base = mem.get((backend, "anyio.Event"))
        if ours is None or base is None:
            continue
        extra = ours - base
        figures.append(extra)
        detail.append(
            f"{backend}: {extra:,.0f} B ({ours:,.0f} B per task waiting for a reserve's reply, "
            f"{base:,.0f} B per task waiting on an anyio.Event)"
        )
    if figures:
        targets.append(
            Target(
                f"<= 1.5 KB ({MEMORY_LIMIT_BYTES:,} B) per pending request beyond the task",
                _status(max(figures) <= MEMORY_LIMIT_BYTES),
                f"{max(figures):,.0f} B at most",
                detail,
            )
        )

    # Uncontended reserve latency on asyncio.
    uncontended = {e["design"]: e for e in latency if e["backend"] == "asyncio" and e["n"] == 1}
    bound = uncontended.get(LEDGER_CHECKPOINT)
    for entry in latency:
        if entry["backend"] == "asyncio" and entry["n"] == 1 and entry["design"] == TREASURER:
            p50 = entry["reserve"]["p50"] / 1000
            bound_line = (
                []
                if bound is None
                else [
                    f"treasurer's ledger with no actor (ledger+checkpoint): reserve p50 "
                    f"{bound['reserve']['p50'] / 1000:.1f} us"
                ]
            )
            targets.append(
                Target(
                    "p50 latency of an uncontended reserve < 10 us on asyncio",
                    _status(p50 < 10),
                    f"{p50:.1f} us",
                    [
                        f"N = 1: reserve p50 {p50:.1f} us, p99 {entry['reserve']['p99'] / 1000:.1f}"
                        f" us; settle p50 {entry['settle']['p50'] / 1000:.1f} us",
                        *bound_line,
                    ],
                )
            )
    # The full policy (windows and 1,000 tenants) against the plain budget; windows
    # alone for information.
    figures = []
    detail = []
    for backend in BACKENDS:
        for n in (10, 100, 1000, 10000):
            plain = by.get((backend, "pairs", n, TREASURER))
            full = by.get((backend, "pairs", n, TREASURER_TENANTS))
            windows = by.get((backend, "pairs", n, TREASURER_WINDOWS))
            if plain is None or full is None:
                continue
            slower = plain.median / full.median - 1
            figures.append(slower)
            line = (
                f"{backend} N={n}: {slower:+.0%} time per op with windows and 1,000 tenants "
                f"({full.median:,.0f} vs {plain.median:,.0f} ops/s)"
            )
            if windows is not None:
                line += f"; windows alone {plain.median / windows.median - 1:+.0%}"
            detail.append(line)
    if figures:
        targets.append(
            Target(
                "with windows and 1,000 tenants, <= 25 % slower than the plain budget",
                _status(max(figures) <= 0.25),
                f"{min(figures):+.0%} to {max(figures):+.0%}",
                ["time per op against the plain budget, medians:", *detail],
            )
        )
    for name, why in not_measured.items():
        targets.append(Target(name, "NOT MEASURABLE", "-", [why]))
    return targets


# -- formatting ---------------------------------------------------------------------------


def si(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return (
                f"{value / scale:.3g}{unit}"
                if value < 100 * scale
                else f"{value / scale:.0f}{unit}"
            )
    return f"{value:.3g}"


def us(ns: float) -> str:
    return f"{ns / 1000:.1f}" if ns < 100_000 else f"{ns / 1000:,.0f}"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


def tables(
    cases: list[Case],
    latency: list[dict[str, Any]],
    memory: list[dict[str, Any]],
    ns: Sequence[int],
    backends: Sequence[str],
) -> list[Table]:
    by = {(c.backend, c.workload, c.n, c.design): c for c in cases}
    lat = {(e["backend"], e["n"], e["design"]): e for e in latency}
    ratio = ratios(cases)
    out: list[Table] = []
    designs = [d.key for d in DESIGNS]

    for backend in backends:
        rows = []
        for design in designs:
            cells = []
            for n in ns:
                case = by.get((backend, "pairs", n, design))
                cells.append(
                    "-"
                    if case is None
                    else f"{si(case.median)} ({si(min(case.rates))}-{si(max(case.rates))})"
                )
            if any(cell != "-" for cell in cells):
                rows.append([design, *cells])
        out.append(
            Table(
                f"{backend}: reserve + settle pairs, ops/s, median (min-max)",
                ["design", *[f"N={n:,}" for n in ns]],
                rows,
            )
        )

    bases = [FLOOR, CHECKPOINT, LEDGER_CHECKPOINT, ASYNCIO_LOCK, ANYIO_LOCK, ANYIO_LOCK_FAST]
    bases += [THREADING_LOCK, TOKEN_BUDGET]
    rows = []
    for backend in backends:
        for n in ns:
            row = ratio.get((backend, "pairs", n), {}).get(TREASURER)
            if row is None:
                continue
            rows.append([backend, f"{n:,}", *[f"{row[b]:.2f}" if b in row else "-" for b in bases]])
    out.append(
        Table(
            "treasurer (reserve/commit, tokens + USD) as a multiple of each design's "
            "throughput, same process run",
            ["backend", "N", *bases],
            rows,
            "Ratios for every pair of designs are in results.json.",
        )
    )

    rows = []
    for backend in backends:
        for n in (1, 100, max(ns)):
            if n not in ns:
                continue
            for design in designs:
                e = lat.get((backend, n, design))
                if e is None:
                    continue
                rows.append(
                    [
                        backend,
                        f"{n:,}",
                        design,
                        us(e["reserve"]["p50"]),
                        us(e["reserve"]["p99"]),
                        us(e["settle"]["p50"]),
                        us(e["settle"]["p99"]),
                    ]
                )
    rounds = max((len(e["reserve"].get("rounds", ())) for e in latency), default=0)
    out.append(
        Table(
            "Latency per call (us), from runs with every call timed"
            + (f": the median of {rounds} runs' percentiles" if rounds > 1 else ""),
            ["backend", "N", "design", "reserve p50", "reserve p99", "settle p50", "settle p99"],
            rows,
            "Under contention an awaited call waits its turn: p50 is about N / throughput.",
        )
    )

    fan_rows = []
    fanouts = sorted({(c.workload, c.n) for c in cases if c.workload.startswith("fanout")})
    for backend in backends:
        for workload, n in fanouts:
            floor = by.get((backend, workload, n, FLOOR))
            for design in designs:
                case = by.get((backend, workload, n, design))
                if case is None or floor is None:
                    continue
                fan_rows.append(
                    [
                        backend,
                        workload.removeprefix("fanout-"),
                        design,
                        f"{case.median_seconds * 1e3:,.0f}",
                        f"{min(case.seconds) * 1e3:,.0f}-{max(case.seconds) * 1e3:,.0f}",
                        f"{case.median_seconds / floor.median_seconds:.2f}",
                    ]
                )
    if fanouts:
        n = fanouts[0][1]
        out.append(
            Table(
                f"Fan-out: {n:,} tasks, each reserve, await a simulated call, settle",
                ["backend", "call", "design", "ms (median)", "ms (min-max)", "x floor's time"],
                fan_rows,
                "Timed from the first start_soon to the end of the task group, spawning included.",
            )
        )

    tight_rows = []
    for backend in backends:
        for case in cases:
            if case.backend != backend or case.workload != "tight":
                continue
            floor = by.get((backend, "tight", case.n, FLOOR))
            refused = case.extra.get("refused", [0])[0]
            attempts = case.extra.get("attempts", [1])[0]
            tight_rows.append(
                [
                    backend,
                    case.design,
                    f"{si(case.median)} ({si(min(case.rates))}-{si(max(case.rates))})",
                    "-" if floor is None else f"{case.median / floor.median:.2f}",
                    f"{refused / attempts:.0%}",
                ]
            )
    if tight_rows:
        n = next(c.n for c in cases if c.workload == "tight")
        out.append(
            Table(
                f"Tight budget: {n} tasks, most requests refused",
                ["backend", "design", "ops/s median (min-max)", "x floor", "refused"],
                tight_rows,
                "An op is one attempt or one settle.",
            )
        )

    thread_cases = [c for c in cases if c.workload == "threads"]
    if thread_cases:
        counts = sorted({c.n for c in thread_cases})
        names = list(dict.fromkeys(c.design for c in thread_cases))
        tby = {(c.design, c.n): c for c in thread_cases}
        rows = []
        for name in names:
            cells = []
            for count in counts:
                case = tby.get((name, count))
                lock = tby.get((THREADING_LOCK, count))
                if case is None:
                    cells.append("-")
                    continue
                ratio_text = "" if lock is None else f", {case.median / lock.median:.3f}x lock"
                cells.append(
                    f"{si(case.median)} ({si(min(case.rates))}-{si(max(case.rates))}){ratio_text}"
                )
            rows.append([name, *cells])
        out.append(
            Table(
                "Threads: T threads share one budget, reserve + commit pairs, ops/s median "
                "(min-max), and as a multiple of threading.Lock",
                ["design", *[f"T={count}" for count in counts]],
                rows,
                "treasurer.sync hops to the actor's event loop thread and back on every call.",
            )
        )

    mem_rows = []
    base = {m["backend"]: m["bytes_per_task"] for m in memory if m["mode"] == "anyio.Event"}
    for m in memory:
        extra = m["bytes_per_task"] - base.get(m["backend"], 0)
        mem_rows.append(
            [
                m["backend"],
                m["mode"],
                f"{m['bytes_per_task']:,.0f}",
                "-" if m["mode"] == "anyio.Event" else f"{extra:+,.0f}",
            ]
        )
    if memory:
        out.append(
            Table(
                f"Memory per waiting task (tracemalloc, {memory[0]['n']:,} tasks, median of "
                f"{len(memory[0]['reps'])})",
                ["backend", "task waiting on", "bytes per task", "beyond anyio.Event"],
                mem_rows,
                "A task parked on one shared anyio.Event is the baseline: the task itself.",
            )
        )
    return out


def markdown_table(table: Table) -> str:
    lines = [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in table.rows)
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"


def markdown_targets(targets: list[Target]) -> str:
    lines = ["| target | result | measured |", "|---|---|---|"]
    for t in targets:
        lines.append(f"| {t.name} | **{t.status}** | {t.measured} |")
    lines.append("")
    for t in targets:
        lines.append(f"- {t.name}: **{t.status}**")
        lines.extend(f"  - {d}" for d in t.detail)
    return "\n".join(lines) + "\n"


# -- plots --------------------------------------------------------------------------------


def plot_throughput(cases: list[Case], backends: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(backends), figsize=(5.2 * len(backends), 5.6), sharey=True)
    if len(backends) == 1:
        axes = [axes]
    tab20 = plt.get_cmap("tab20")
    # tab20's dark shades first, then its light ones: a colour per design.
    colours = [tab20(i) for i in range(0, 20, 2)] + [tab20(i) for i in range(1, 20, 2)]
    handles: dict[str, Any] = {}
    for ax, backend in zip(axes, backends, strict=True):
        for index, design in enumerate(DESIGNS):
            series = sorted(
                (
                    c
                    for c in cases
                    if c.backend == backend and c.workload == "pairs" and c.design == design.key
                ),
                key=lambda c: c.n,
            )
            if not series:
                continue
            style: dict[str, Any] = {"color": colours[index % len(colours)]}
            if design.key == TREASURER:
                style = {"color": "black", "linewidth": 3}
            handles[design.key] = ax.errorbar(
                [c.n for c in series],
                [c.median for c in series],
                yerr=[
                    [c.median - min(c.rates) for c in series],
                    [max(c.rates) - c.median for c in series],
                ],
                marker="o",
                markersize=3,
                capsize=2,
                linestyle="-" if design.reference else "--",
                **style,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(backend)
        ax.set_xlabel("concurrent tasks N")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ops/s (reserve or settle): median, bars min-max")
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=5, fontsize=9)
    fig.suptitle("reserve + settle pairs: treasurer (dashed, black) against lock-based designs")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fanout(cases: list[Case], backends: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fanouts = sorted({(c.workload, c.n) for c in cases if c.workload.startswith("fanout")})
    if not fanouts:
        return
    by = {(c.backend, c.workload, c.n, c.design): c for c in cases}
    designs = [d.key for d in DESIGNS]
    fig, axes = plt.subplots(1, len(fanouts), figsize=(7 * len(fanouts), 5), sharey=True)
    if len(fanouts) == 1:
        axes = [axes]
    width = 0.8 / len(backends)
    for ax, (workload, n) in zip(axes, fanouts, strict=True):
        for i, backend in enumerate(backends):
            floor = by.get((backend, workload, n, FLOOR))
            xs, ys = [], []
            for j, design in enumerate(designs):
                case = by.get((backend, workload, n, design))
                if case is None or floor is None:
                    continue
                xs.append(j + i * width)
                ys.append(case.median_seconds / floor.median_seconds)
            ax.bar(xs, ys, width=width, label=backend)
        ax.axhline(1.6, color="red", linestyle="--", linewidth=1, label="target 1.6x")
        ax.set_xticks([j + width for j in range(len(designs))])
        ax.set_xticklabels(designs, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{n:,} tasks, simulated call of {workload.removeprefix('fanout-')}")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("time / the floor's time (median)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Fan-out: reserve, await the call, settle")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
