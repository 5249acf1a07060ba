"""Timing: one round of every design on the same N tasks, and one fan-out.

Throughput times only the work. The N tasks are spawned once per round and
park on a gate; for each design in turn the clock starts when its gate opens
and stops when the last task has done its ``k`` pairs. Spawning 1,000 tasks
costs more than some designs' whole run, and it is not what is measured.

The fan-out times what a user's ``create_task_group`` does: spawning 10,000
tasks, each reserving, awaiting a 0 ms call and committing.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from amounts import Caps, Instance, Workload
from designs import Design


@dataclass
class Run:
    design: str
    seconds: float
    problems: list[str] = field(default_factory=list)


async def throughput_round(
    designs: Sequence[Design], workload: Workload, n: int, k: int
) -> list[Run]:
    """Each design once, in the order given, run by the same ``n`` tasks doing ``k`` pairs."""
    caps = Caps.for_run(n * k, n)
    gates = [anyio.Event() for _ in designs]
    done = [anyio.Event() for _ in designs]
    all_parked = anyio.Event()
    current: list[Instance] = []
    errors: list[list[BaseException]] = [[] for _ in designs]
    parked = remaining = 0

    async def worker() -> None:
        nonlocal parked, remaining
        parked += 1
        if parked == n:
            all_parked.set()
        for phase in range(len(designs)):
            await gates[phase].wait()
            try:
                await current[0].pairs(k)
            except Exception as exc:
                errors[phase].append(exc)
            remaining -= 1
            if remaining == 0:
                done[phase].set()

    runs = []
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(worker)
        await all_parked.wait()
        for phase, design in enumerate(designs):
            async with design.open(caps, workload) as instance:
                current[:] = [instance]
                remaining = n
                gc.collect()
                start = time.perf_counter()
                gates[phase].set()
                await done[phase].wait()
                seconds = time.perf_counter() - start
                problems = [f"raised {exc!r}" for exc in errors[phase][:3]]
                problems += instance.problems(n * k) if not problems else []
            runs.append(Run(design.key, seconds, problems))
    return runs


async def fanout(design: Design, n: int) -> Run:
    """``n`` tasks started at once, each making one call; timed spawning included."""
    caps = Caps.for_run(n, n)
    async with design.open(caps, "reserve") as instance:
        gc.collect()
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(instance.call)
        seconds = time.perf_counter() - start
        problems = instance.problems(n)
    return Run(design.key, seconds, problems)
