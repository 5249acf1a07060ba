"""Where the state lives: reserve+commit pairs per second through each store.

One process: N tasks (1, 10, 100) share one budget, each making reserve+commit
pairs, through the memory store (the reference, same process, same round) and
the SQLite store (a fresh file per run). Many processes: P worker processes of
100 tasks each share one budget in one SQLite file; they start together (a
barrier file) and the aggregate rate is every pair made over the time from
the start to the last worker's end. "Transactions per pair" is the actor's
batches (one store call, so one SQLite write transaction, each) over pairs.
Every run checks the books: the budget's spend equals what was committed.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

import host
import treasurer

PAIR_TOKENS = (10, 7)  # reserved, then committed
WORKER = Path(__file__).resolve()


def new_store(kind: str, folder: Path) -> treasurer.Store:
    """A store with no budget in it yet (for SQLite, a new file)."""
    if kind == "memory":
        return treasurer.MemoryStore()
    handle, name = tempfile.mkstemp(suffix=".sqlite", dir=folder)
    os.close(handle)
    return treasurer.SqliteStore(name)


async def pairs(budget: treasurer.Budget, n: int, k: int) -> None:
    reserve, commit = PAIR_TOKENS

    async def task() -> None:
        for _ in range(k):
            async with budget.reserve(tokens=reserve) as r:
                r.commit(tokens=commit)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(task)


async def one_process(store: treasurer.Store, n: int, k: int) -> dict[str, Any]:
    async with treasurer.open_budget(name="bench", tokens=10**12, store=store) as budget:
        started = time.perf_counter()
        await pairs(budget, n, k)
        seconds = time.perf_counter() - started
        stats = budget.statistics()
        used = (await budget.refresh()).tokens_used
    made = n * k
    return {
        "pairs": made,
        "seconds": seconds,
        "pairs_per_s": made / seconds,
        "transactions_per_pair": stats.batches_served / made,
        "books_ok": used == made * PAIR_TOKENS[1],
    }


async def worker(path: Path, n: int, k: int) -> None:
    """One process of the many-process run: open, say ready, start on "go" (stdin)."""
    async with treasurer.open_budget(
        name="bench", tokens=10**12, store=treasurer.SqliteStore(path, timeout=30)
    ) as budget:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        await pairs(budget, n, k)
        ended = time.time()
        stats = budget.statistics()
    print(json.dumps({"ended": ended, "batches": stats.batches_served, "pairs": n * k}), flush=True)


def many_processes(folder: Path, processes: int, n: int, k: int, backend: str) -> dict[str, Any]:
    path = Path(tempfile.mkdtemp(dir=folder)) / "shared.sqlite"
    args = [str(path), str(n), str(k), backend]
    workers = host.start_workers(WORKER, args, processes)
    try:
        started = time.time()
        host.release(workers, "go")
        reports = host.reports(workers, timeout=600)
    finally:
        host.stop(workers)
    seconds = max(report["ended"] for report in reports) - started
    made = sum(report["pairs"] for report in reports)

    async def books() -> int:
        async with treasurer.open_budget(
            name="bench", tokens=10**12, store=treasurer.SqliteStore(path)
        ) as budget:
            return budget.snapshot().tokens_used

    used = anyio.run(books)
    return {
        "pairs": made,
        "seconds": seconds,
        "pairs_per_s": made / seconds,
        "transactions_per_pair": sum(report["batches"] for report in reports) / made,
        "books_ok": used == made * PAIR_TOKENS[1],
    }


def run(backends: tuple[str, ...], quick: bool, log: Callable[[str, float], None]) -> list[dict]:
    """Every store measurement, as rows for results.json."""
    rows: list[dict[str, Any]] = []
    rounds = 2 if quick else 5
    total = 1_000 if quick else 4_000  # pairs per one-process run
    with tempfile.TemporaryDirectory(prefix="treasurer-bench-") as name:
        folder = Path(name)
        for backend in backends:
            options = {"backend": "trio"} if backend == "trio" else {"backend": "asyncio"}
            for n in (1, 10, 100):
                started = time.perf_counter()
                for round_ in range(rounds):
                    for kind in ("memory", "sqlite"):
                        store = new_store(kind, folder)
                        figures = anyio.run(one_process, store, n, total // n, **options)
                        rows.append(
                            {"backend": backend, "store": kind, "processes": 1, "n": n}
                            | {"round": round_}
                            | figures
                        )
                log(f"{backend} stores N={n}", started)
            started = time.perf_counter()
            for round_ in range(rounds):
                k = 10 if quick else 25
                figures = many_processes(folder, 4, 100, k, backend)
                rows.append(
                    {"backend": backend, "store": "sqlite", "processes": 4, "n": 100}
                    | {"round": round_}
                    | figures
                )
            log(f"{backend} stores 4 processes x 100", started)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median pairs/s and transactions per pair for each (backend, store, processes, n)."""
    groups: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["backend"], row["store"], row["processes"], row["n"])
        groups.setdefault(key, []).append(row)
    return [
        {
            "backend": backend,
            "store": store,
            "processes": processes,
            "n": n,
            "pairs_per_s": statistics.median(r["pairs_per_s"] for r in group),
            "transactions_per_pair": statistics.median(r["transactions_per_pair"] for r in group),
            "books_ok": all(r["books_ok"] for r in group),
        }
        for (backend, store, processes, n), group in sorted(groups.items())
    ]


TARGET = 10_000  # aggregate pairs/s of 4 processes x 100 tasks on one SQLite file


def write(rows: list[dict[str, Any]], meta: dict[str, Any], folder: Path) -> list[str]:
    """stores.json (every round) and STORES.md (medians, the target); the problems."""
    medians = summary(rows)
    problems = [
        f"stores {m['backend']} {m['store']} {m['processes']}x{m['n']}: books do not balance"
        for m in medians
        if not m["books_ok"]
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stores.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "problems": problems}, indent=1) + "\n",
        encoding="utf-8",
    )
    memory = {(m["backend"], m["n"]): m["pairs_per_s"] for m in medians if m["store"] == "memory"}
    lines = [
        "# Stores: reserve+commit pairs per second",
        "",
        f"Run {meta['started']}, {meta['duration_s']} s, load average before "
        f"{meta['load_average'][0]:.2f}; medians of {meta['rounds']} rounds. "
        "Generated by `nox -s bench` (`-- --stores` runs only this section); see stores.py.",
        "",
        "| loop | store | processes x tasks | pairs/s | vs memory | transactions per pair |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for m in medians:
        reference = memory.get((m["backend"], m["n"])) if m["processes"] == 1 else None
        ratio = f"{m['pairs_per_s'] / reference:.2f}x" if reference else ""
        lines.append(
            f"| {m['backend']} | {m['store']} | {m['processes']} x {m['n']} | "
            f"{m['pairs_per_s']:,.0f} | {ratio} | {m['transactions_per_pair']:.3f} |"
        )
    shared = [m["pairs_per_s"] for m in medians if m["processes"] > 1]
    if shared:
        worst = min(shared)
        verdict = "met" if worst >= TARGET else "missed"
        lines += [
            "",
            f"Target: 4 processes x 100 tasks on one SQLite file >= {TARGET:,} pairs/s "
            f"aggregate: **{verdict}**, worst loop {worst:,.0f} pairs/s.",
        ]
    if problems:
        lines += ["", "Problems:", *[f"- {problem}" for problem in problems]]
    (folder / "STORES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return problems


def measure(backends: tuple[str, ...], quick: bool, folder: Path) -> list[str]:
    """Run the section and write its files; the problems found."""
    backends = tuple(b for b in backends if b != "uvloop") or ("asyncio",)
    print(f"treasurer bench, stores ({'quick' if quick else 'full'}): {', '.join(backends)}")
    load = os.getloadavg()[0]
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()

    def log(what: str, since: float) -> None:
        print(f"  {what:<40} {time.perf_counter() - since:5.1f} s", flush=True)

    rows = run(backends, quick, log)
    meta = {
        "started": started,
        "duration_s": round(time.perf_counter() - clock, 1),
        "load_average": [load, os.getloadavg()[0]],
        "rounds": 2 if quick else 5,
        "quick": quick,
    }
    return write(rows, meta, folder)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _path, _n, _k, _backend = sys.argv[2:6]
    anyio.run(worker, Path(_path), int(_n), int(_k), backend=_backend)
    os._exit(0)
