"""treasurer's benchmark suite: ``nox -s bench`` (full) or ``nox -s bench -- --quick``.

Every design runs in this one process, on asyncio, asyncio with uvloop, and
trio; every ratio compares designs measured in the same round. The full run
writes benchmarks/results.json, benchmarks/RESULTS.md and the plots in
docs/bench/; ``--quick`` (a smoke run) writes all of it to build/bench/.
Exits with status 1 if a design's books were wrong after any run; a missed
target is reported, never a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

import harness
import memory
import report
import stores
from amounts import WORKLOADS
from designs import fanout_designs, throughput_designs

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("asyncio", "uvloop", "trio")


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    backends: tuple[str, ...] = BACKENDS
    ns: tuple[int, ...] = (1, 10, 100, 1000)
    pairs: int = 10_000  # per throughput run, spread over the N tasks
    rounds: int = 7
    fanout_n: int = 10_000
    fanout_rounds: int = 5
    memory_n: int = 2000
    memory_rounds: int = 3

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls()
        return cls(True, pairs=2000, rounds=3, fanout_n=2000, fanout_rounds=2, memory_n=500)


class Bench:
    """Runs every section on one backend and keeps the raw figures."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.throughput: list[dict[str, Any]] = []
        self.fanout: list[dict[str, Any]] = []
        self.memory: list[dict[str, Any]] = []
        self.problems: list[str] = []

    def log(self, what: str, started: float) -> None:
        print(f"  {what:<40} {time.perf_counter() - started:5.1f} s", flush=True)

    def check(self, where: str, run: harness.Run) -> None:
        self.problems += [f"{where} {run.design}: {problem}" for problem in run.problems]

    async def backend(self, backend: str) -> None:
        plan = self.plan
        for workload in WORKLOADS:
            designs = throughput_designs(backend, workload)
            for n in plan.ns:
                started = time.perf_counter()
                k = max(1, plan.pairs // n)
                for round_ in range(plan.rounds):
                    shift = round_ % len(designs)  # each design takes its turn first
                    order = designs[shift:] + designs[:shift]
                    for run in await harness.throughput_round(order, workload, n, k):
                        self.check(f"{backend} {workload} N={n}", run)
                        self.throughput.append(
                            {
                                "backend": backend,
                                "workload": workload,
                                "n": n,
                                "round": round_,
                                "design": run.design,
                                "ops": 2 * n * k,
                                "seconds": run.seconds,
                            }
                        )
                self.log(f"{backend} {workload} N={n:,}", started)
        started = time.perf_counter()
        designs = fanout_designs(backend)
        for round_ in range(plan.fanout_rounds):
            shift = round_ % len(designs)
            for design in designs[shift:] + designs[:shift]:
                run = await harness.fanout(design, plan.fanout_n)
                self.check(f"{backend} fan-out", run)
                self.fanout.append(
                    {
                        "backend": backend,
                        "n": plan.fanout_n,
                        "round": round_,
                        "design": design.key,
                        "seconds": run.seconds,
                    }
                )
        self.log(f"{backend} fan-out of {plan.fanout_n:,}", started)
        started = time.perf_counter()
        for mode in memory.MODES:
            figures = [
                await memory.bytes_per_task(mode, plan.memory_n) for _ in range(plan.memory_rounds)
            ]
            self.memory.append(
                {
                    "backend": backend,
                    "mode": mode,
                    "n": plan.memory_n,
                    "bytes_per_task": statistics.median(figures),
                    "rounds": figures,
                }
            )
        self.log(f"{backend} memory", started)


def backend_options(backend: str) -> dict[str, Any]:
    if backend == "uvloop":
        return {"backend": "asyncio", "backend_options": {"use_uvloop": True}}
    return {"backend": backend}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (under 2 minutes)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, help="only these loops")
    parser.add_argument("--out", type=Path, help="write everything to this folder instead")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile treasurer's reserve/commit at N = 100 (cProfile), then exit",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="write RESULTS.md and the plots again from a results.json, then exit",
    )
    parser.add_argument(
        "--stores",
        action="store_true",
        help="only the stores section: memory and SQLite, one process and four",
    )
    args = parser.parse_args(argv)
    quick_out = ROOT / "build" / "bench"
    if args.profile:
        import hotspots

        return hotspots.main(args.out or quick_out)
    if args.render:
        data = json.loads(args.render.read_text(encoding="utf-8"))
        quick = data["meta"]["plan"]["quick"]
        log_dir = args.out or args.render.parent
        plot_dir = args.out or (quick_out if quick else ROOT / "docs" / "bench")
        report.write(data, log_dir, plot_dir)
        return 1 if data["problems"] else 0

    plan = Plan.make(args.quick)
    if args.backends:
        plan = replace(plan, backends=tuple(args.backends))
    if args.out:
        log_dir = plot_dir = args.out
    elif plan.quick:
        log_dir = plot_dir = quick_out
    else:
        log_dir, plot_dir = ROOT / "benchmarks", ROOT / "docs" / "bench"

    if args.stores:
        return 1 if stores.measure(plan.backends, plan.quick, log_dir) else 0
    print(f"treasurer bench ({'quick' if plan.quick else 'full'}): {', '.join(plan.backends)}")
    bench = Bench(plan)
    load_before = os.getloadavg()
    started, clock, cpu = datetime.now(UTC), time.perf_counter(), time.process_time()
    for backend in plan.backends:
        anyio.run(bench.backend, backend, **backend_options(backend))
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - clock, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "plan": asdict(plan),
    }
    data = {
        "meta": meta,
        "throughput": bench.throughput,
        "fanout": bench.fanout,
        "memory": bench.memory,
        "problems": bench.problems,
    }
    report.write(data, log_dir, plot_dir)
    store_problems = stores.measure(plan.backends, plan.quick, log_dir)
    return 1 if bench.problems or store_problems else 0


if __name__ == "__main__":
    sys.exit(main())
