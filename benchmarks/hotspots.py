"""Where treasurer's time goes: ``nox -s bench -- --profile``.

Runs, at N = 100 under cProfile on asyncio and trio: treasurer's
reserve/commit and consume/refund in the default configuration, the null
actor's reserve/commit (the runtime alone) and reserve/commit with windows and
1,000 tenants. Prints the self time grouped by module (treasurer's modules
one by one; anyio, the event loop and the rest as a whole) and the functions
with the most self time.
cProfile slows small functions most, so read shares, not absolute times;
a change is judged by the timed suite, not here.
"""

from __future__ import annotations

import cProfile
import pstats
from collections import defaultdict
from pathlib import Path

import anyio

from amounts import Caps, Workload
from designs import BY_KEY, NULL, TENANTS, TREASURER

N, PAIRS = 100, 20_000
CASES: tuple[tuple[str, Workload], ...] = (
    (TREASURER, "reserve"),
    (TREASURER, "consume"),
    (NULL, "reserve"),
    (TENANTS, "reserve"),
)


def _group(filename: str) -> str:
    if "/treasurer/" in filename:
        return "treasurer/" + filename.rsplit("/treasurer/", 1)[1]
    for name in ("benchmarks", "anyio", "trio", "asyncio", "outcome", "sniffio", "attrs"):
        if f"/{name}/" in filename:
            return name
    return "builtins" if filename == "~" else "other"


async def _profiled(design: str, workload: Workload) -> pstats.Stats:
    k = PAIRS // N
    profiler = cProfile.Profile()
    async with BY_KEY[design].open(Caps.for_run(N * k, N), workload) as instance:
        profiler.enable()
        async with anyio.create_task_group() as tg:
            for _ in range(N):
                tg.start_soon(instance.pairs, k)
        profiler.disable()
    return pstats.Stats(profiler)


def summary(stats: pstats.Stats, title: str) -> list[str]:
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    by_group: dict[str, float] = defaultdict(float)
    for (filename, _, _), entry in raw.items():
        by_group[_group(filename)] += entry[2]
    lines = [f"## {title}: self time {total:.2f} s under cProfile", "", "by module:"]
    for group, spent in sorted(by_group.items(), key=lambda item: -item[1])[:14]:
        lines.append(f"  {spent / total:6.1%}  {group}")
    lines.append("top functions by self time:")
    top = sorted(raw.items(), key=lambda item: -item[1][2])[:15]
    for (filename, line, function), entry in top:
        where = f"{_group(filename)}:{line} {function}"
        lines.append(f"  {entry[2] / total:6.1%}  {where}  ({entry[1]:,} calls)")
    return [*lines, ""]


def main(out: Path) -> int:
    lines = []
    for backend in ("asyncio", "trio"):
        for design, workload in CASES:
            stats = anyio.run(_profiled, design, workload, backend=backend)
            lines += summary(stats, f"{design}, {workload} pairs, {backend}, N = {N}")
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.txt").write_text(text + "\n", encoding="utf-8")
    return 0
