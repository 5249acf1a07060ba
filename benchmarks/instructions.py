"""Machine instructions per reserve + settle pair and per fan-out task, counted by valgrind.

Run with ``nox -s bench -- --instructions`` (valgrind must be on PATH; it is
not a Python package). Timings on a shared virtual machine move from run to
run; an instruction count does not, so two designs' counts compare the work
each does per pair exactly. Instructions are not time (a cache miss or a
system call costs far more than one add), so this complements the timed
suite and replaces none of it.

For each backend and design, two child processes run the pairs workload
under ``valgrind --tool=callgrind``, with N tasks doing 1 and then 1 + K pairs
each; the difference divided by K x N is one pair, startup and imports
excluded. For the fan-out target, the same with the fan-out workload (0 ms
calls) of 5,000 and then 10,000 tasks: the difference over 5,000 is one
task's spawn, reserve, call and settle at the timed case's scale. The children run two
at a time (one per core).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import anyio

BACKENDS: Final = ("asyncio", "trio")
DESIGN_KEYS: Final = (
    "floor+checkpoint",
    "ledger+checkpoint",
    "anyio.Lock",
    "treasurer",
    "treasurer+windows+tenants",
)
TASKS: Final = 100
EXTRA_PAIRS: Final = 20  # per task, on top of the one both runs do
FANOUT_KEYS: Final = ("floor", "floor+checkpoint", "treasurer")
# 5,000 then 10,000 tasks: both fit treasurer's bench mailbox (16,384), as in
# the timed 10,000-task case, so no task waits for room in it.
FANOUT_TASKS: Final = 5_000
_COLLECTED: Final = re.compile(r"Collected : (\d+)")


def _child(backend: str, key: str, tasks: int, pairs: int) -> None:
    """Run the pairs workload once, or with ``pairs`` 0 the fan-out of ``tasks``
    tasks (inside valgrind)."""
    import logging

    import structlog

    import workloads
    from designs import DESIGNS

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    design = next(d for d in DESIGNS if d.key == key)
    if backend == "trio":
        _seed_trio_scheduler()

    async def run() -> None:
        if pairs:
            result = await workloads.pairs(design, tasks, pairs)
        else:
            result = await workloads.fanout(design, tasks, 0.0)
        if result.violations:
            raise SystemExit(f"{key}: {result.violations}")

    anyio.run(run, backend=backend)


def _seed_trio_scheduler() -> None:
    """Make trio's scheduling the same in every child.

    trio runs each batch of ready tasks forwards or, on a coin toss, backwards
    (to shake out code that relies on an order). The order changes how much
    work a run does: a 10,000-task fan-out of one build counted 372,305 and
    then 388,606 instructions per task. A fixed seed for that coin makes the
    count repeat; any fixed order is as valid as another. The generator is
    trio's private ``_core._run._r``; if it moves, counts are simply not seeded.
    """
    import random

    from trio._core import _run

    coin = getattr(_run, "_r", None)
    if isinstance(coin, random.Random):
        coin.seed(0)


def _count(backend: str, key: str, pairs: int, tasks: int = TASKS) -> int:
    """Instructions one child process executes, from start to exit."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        backend,
        key,
        str(tasks),
        str(pairs),
    ]
    # A fixed hash seed: the same dict and set layouts in every child.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run of {key} on {backend} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


Counts = dict[tuple[str, str], int]


def measure() -> tuple[Counts, Counts]:
    """Instructions per pair and per fan-out task, per (backend, design)."""
    pair_cases = [(backend, key) for backend in BACKENDS for key in DESIGN_KEYS]
    fanout_cases = [(backend, key) for backend in BACKENDS for key in FANOUT_KEYS]
    # (backend, key, pairs per task, tasks); pairs 0 is the fan-out.
    # The long fan-out runs first, so the two workers finish together.
    jobs = [(b, k, 0, tasks) for b, k in fanout_cases for tasks in (FANOUT_TASKS, 2 * FANOUT_TASKS)]
    jobs += [(b, k, pairs, TASKS) for b, k in pair_cases for pairs in (1, 1 + EXTRA_PAIRS)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: _count(*job), jobs), strict=True))
    per_pair = {
        (b, k): round(
            (counts[b, k, 1 + EXTRA_PAIRS, TASKS] - counts[b, k, 1, TASKS]) / (EXTRA_PAIRS * TASKS)
        )
        for b, k in pair_cases
    }
    per_task = {
        (b, k): round(
            (counts[b, k, 0, 2 * FANOUT_TASKS] - counts[b, k, 0, FANOUT_TASKS]) / FANOUT_TASKS
        )
        for b, k in fanout_cases
    }
    return per_pair, per_task


def report(per_pair: Counts, per_task: Counts, measured: str) -> str:
    lines = [
        "# Instructions per reserve + settle pair and per fan-out task "
        "(generated by `nox -s bench -- --instructions`)",
        "",
        f"{measured}; valgrind (callgrind), N = {TASKS} tasks, {EXTRA_PAIRS} pairs "
        "each beyond a first one; startup and imports excluded.",
        "",
        "| backend | design | instructions per pair | treasurer as a multiple, by instructions |",
        "|---|---|---|---|",
    ]
    lines += _rows(per_pair, DESIGN_KEYS, "treasurer")
    lines += [
        "",
        "The last column is this design's count over treasurer's: what treasurer's",
        "throughput would be as a multiple of this design's if time followed",
        "instructions (the timed ratio tables' terms).",
        "",
        f"## Instructions per fan-out task ({FANOUT_TASKS:,} then {2 * FANOUT_TASKS:,} tasks, "
        "0 ms calls)",
        "",
        "Each task is spawned, reserves, awaits `anyio.sleep(0)` and settles; the "
        f"difference between the two runs over {FANOUT_TASKS:,}.",
        "",
        "| backend | design | instructions per task | as a multiple of the floor's "
        "(the target: at most 1.6x) |",
        "|---|---|---|---|",
    ]
    lines += _rows(per_task, FANOUT_KEYS, "floor")
    return "\n".join(lines) + "\n"


def _rows(counts: Counts, keys: tuple[str, ...], base: str) -> list[str]:
    """A table row per backend and design: its count, and that over ``base``'s."""
    rows = []
    for backend in BACKENDS:
        for key in keys:
            count = counts[backend, key]
            rows.append(f"| {backend} | {key} | {count:,} | {count / counts[backend, base]:.2f}x |")
    return rows


def main(out: Path, measured: str) -> int:
    """Measure, print, and write ``instructions.md`` to ``out``; ``measured``
    names the build."""
    if shutil.which("valgrind") is None:
        print(
            "--instructions needs valgrind on PATH (e.g. apt install valgrind); "
            "nothing was measured.",
            file=sys.stderr,
        )
        return 2
    text = report(*measure(), measured)
    out.mkdir(parents=True, exist_ok=True)
    (out / "instructions.md").write_text(text)
    print(text)
    print(f"Wrote {out / 'instructions.md'}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit("run through benchmarks/run.py --instructions")
