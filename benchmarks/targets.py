"""The targets of issue 15, judged from one run's raw figures.

A ratio compares two designs measured in the same round (one after the other
on the same tasks); the figure reported is the median over the rounds. The
targets hold on asyncio and trio; uvloop is shown, not judged.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from designs import ANYIO_LOCK, CHECKPOINT, FLOOR, TENANTS, TREASURER
from memory import BASELINE

JUDGED: Final = ("asyncio", "trio")
MEMORY_LIMIT: Final = 1536  # 1.5 KB
Key = tuple[str, str, int]  # backend, workload, N


@dataclass
class Target:
    name: str
    limit: str
    cases: dict[str, float] = field(default_factory=dict)  # case -> measured figure
    higher_is_better: bool = True
    bound: float = 0.0

    def ok(self, value: float) -> bool:
        return value >= self.bound if self.higher_is_better else value <= self.bound

    @property
    def worst(self) -> float:
        pick = min if self.higher_is_better else max
        return pick(self.cases.values())

    @property
    def met(self) -> bool:
        return bool(self.cases) and all(self.ok(v) for v in self.cases.values())


def speed_ratios(rows: Iterable[dict[str, Any]], fast: str, slow: str) -> dict[Key, float]:
    """Per case: the median over rounds of ``fast``'s speed over ``slow``'s."""
    seconds: dict[tuple[str, str, int, int], dict[str, float]] = defaultdict(dict)
    for row in rows:
        where = (row["backend"], row.get("workload", "reserve"), row["n"], row["round"])
        seconds[where][row["design"]] = row["seconds"]
    ratios: dict[Key, list[float]] = defaultdict(list)
    for (backend, workload, n, _), by in seconds.items():
        if fast in by and slow in by:
            ratios[backend, workload, n].append(by[slow] / by[fast])
    return {key: statistics.median(values) for key, values in ratios.items()}


def judge(data: dict[str, Any]) -> list[Target]:
    rows, fanout = data["throughput"], data["fanout"]

    def cases(ratios: dict[Key, float], ns: tuple[int, ...]) -> dict[str, float]:
        return {
            f"{b} {w} N={n:,}": r
            for (b, w, n), r in sorted(ratios.items())
            if b in JUDGED and n in ns
        }

    lock = Target("actor vs ledger+anyio.Lock (equal work), N >= 100", ">= 1.0x", bound=1.0)
    lock.cases = cases(speed_ratios(rows, TREASURER, ANYIO_LOCK), (100, 1000))
    floor = Target("default configuration vs floor + checkpoint", ">= 0.35x", bound=0.35)
    floor.cases = cases(speed_ratios(rows, TREASURER, CHECKPOINT), (10, 100, 1000))
    fan = Target("fan-out vs the bare floor", "<= 1.6x", higher_is_better=False, bound=1.6)
    fan.cases = {
        f"{b} {n:,} tasks": 1 / r
        for (b, _, n), r in speed_ratios(fanout, TREASURER, FLOOR).items()
        if b in JUDGED
    }
    policy = Target(
        "2 windows + 1,000 tenants vs plain", "<= +30 %", higher_is_better=False, bound=0.30
    )
    policy.cases = {
        key: value - 1
        for key, value in cases(speed_ratios(rows, TREASURER, TENANTS), (10, 100, 1000)).items()
    }
    mem = Target(
        "memory per pending request", "<= 1.5 KB", higher_is_better=False, bound=MEMORY_LIMIT
    )
    by_backend: dict[str, dict[str, float]] = defaultdict(dict)
    for row in data["memory"]:
        by_backend[row["backend"]][row["mode"]] = row["bytes_per_task"]
    for backend, modes in by_backend.items():
        if backend in JUDGED:
            for mode, value in modes.items():
                if mode.startswith("treasurer"):
                    mem.cases[f"{backend} {mode.removeprefix('treasurer ')}"] = (
                        value - modes[BASELINE]
                    )
    return [lock, floor, fan, mem, policy]
