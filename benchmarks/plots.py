"""The two plots docs/performance.md shows: throughput against N, and the fan-out."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from designs import BY_KEY, DESIGNS, NULL, TOKEN_BUDGET, TREASURER

STYLE: dict[str, dict[str, Any]] = {
    TREASURER: {"color": "black", "linewidth": 2.5},
    NULL: {"color": "grey", "linestyle": "--"},
    TOKEN_BUDGET: {"color": "C8"},
}


def throughput(
    data: dict[str, Any], rates: dict[tuple[str, str, int, str], float], path: Path
) -> None:
    """Reserve + commit pairs: median ops/s against N, one panel per loop."""
    backends = data["meta"]["plan"]["backends"]
    ns = data["meta"]["plan"]["ns"]
    fig, axes = plt.subplots(1, len(backends), figsize=(4.6 * len(backends), 4.6), sharey=True)
    axes = [axes] if len(backends) == 1 else list(axes)
    for ax, backend in zip(axes, backends, strict=True):
        for index, design in enumerate(DESIGNS):
            ys = [rates.get((backend, "reserve", n, design.key)) for n in ns]
            if None in ys:
                continue
            style = STYLE.get(design.key, {"color": f"C{index}"})  # one colour per design
            ax.plot(ns, ys, marker="o", markersize=3, label=design.key, **style)
        ax.set(xscale="log", yscale="log", title=backend, xlabel="concurrent tasks N")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ops/s (one reserve or one commit)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("reserve + commit pairs: treasurer against the same ledger behind a lock")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fanout(data: dict[str, Any], path: Path) -> None:
    """Fan-out wall time (median), per design and loop."""
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in data["fanout"]:
        seconds[row["backend"], row["design"]].append(row["seconds"])
    backends = data["meta"]["plan"]["backends"]
    designs = [key for key in BY_KEY if any((b, key) in seconds for b in backends)]
    width = 0.8 / len(backends)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, backend in enumerate(backends):
        shown = [(j, d) for j, d in enumerate(designs) if (backend, d) in seconds]
        xs = [j + i * width for j, _ in shown]
        ys = [statistics.median(seconds[backend, d]) for _, d in shown]
        ax.bar(xs, ys, width=width, label=backend)
    ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(designs))])
    ax.set_xticklabels(designs, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("wall time (s), spawning included")
    n = data["meta"]["plan"]["fanout_n"]
    ax.set_title(f"{n:,} tasks at once, each: reserve, a 0 ms call, commit")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
