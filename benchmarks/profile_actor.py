"""Where treasurer's time goes: a sampling profile of the benchmark's treasurer case.

Run with ``nox -s bench -- --profile``. Two parts, both printed and written to
``profile.txt`` in the output folder:

1. py-spy (a sampling profiler, from another process) on the pairs workload
   (reserve + commit, tokens and USD) at N = 1 and N = 100 on asyncio and
   trio, and with windows and 1,000 tenants: self time grouped by where the
   code lives, the top functions, and the inclusive share of the functions a
   pair goes through.
2. The cost in ns of the building blocks a reserve + commit goes through,
   timed without a profiler.

What a proposed change would gain is measured by A/B runs of the benchmark
itself, not here.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import timeit
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
import structlog

import treasurer
import workloads
from designs import (
    DESIGNS,
    HAS_TENANTS,
    TREASURER,
    TREASURER_TENANTS,
)

GROUPS = (
    ("treasurer/_amounts.py", "treasurer: parsing and validating amounts"),
    ("treasurer/_actor.py", "treasurer: actor (request, post, _serve, _apply)"),
    ("treasurer/_budget.py", "treasurer: Budget and Reservation handles"),
    ("treasurer/_ledger.py", "treasurer: ledger arithmetic"),
    ("treasurer/_windows.py", "treasurer: ledger arithmetic"),
    ("treasurer/_slots.py", "treasurer: reply slots"),
    ("treasurer/", "treasurer: other"),
    ("structlog/", "structlog (filtered log calls)"),
    ("anyio/streams/memory.py", "anyio memory stream (mailbox)"),
    ("anyio/", "anyio (other)"),
    ("asyncio/", "event loop (asyncio)"),
    ("selectors.py", "event loop (asyncio)"),
    ("trio/", "event loop (trio)"),
    ("outcome/", "event loop (trio)"),
    ("methods trio.", "event loop (trio)"),  # attrs-generated __init__s
    ("methods outcome.", "event loop (trio)"),
    ("designs.py", "benchmark harness"),
    ("workloads.py", "benchmark harness"),
)
# The functions a reserve + commit pair goes through, for the inclusive shares.
INCLUSIVE = (
    "Budget.reserve",
    "Reservation.__aenter__",
    "Reservation.commit",
    "Reservation.__aexit__",
    "BudgetCore._serve_batch",
    "Ledger.reserve",
    "Ledger.commit",
    "parse",
)
SAMPLE_RATE = 1000  # per second


def _group(filename: str) -> str:
    for needle, name in GROUPS:
        if needle in filename:
            return name
    return "other"


def _frame(text: str) -> tuple[str, str]:
    """``function (file:line)`` as py-spy writes it -> (function, file)."""
    function, _, where = text.rpartition(" (")
    return function, where.rstrip(")").rpartition(":")[0]


def _in_workload(frames: list[tuple[str, str]]) -> bool:
    """Whether a sample is of the workload: its tasks, the actor, or the event
    loop between them; not imports, start-up or the harness's ``gc.collect()``."""
    functions = [function for function, _ in frames]
    files = [file for _, file in frames]
    if any("importlib" in file for file in files):
        return False
    if any("_gated" in f or f in ("BudgetCore.run", "BudgetCore.run_timer") for f in functions):
        return True  # the timed tasks, the actor, its timer (not the budget's set-up)
    in_loop = any("anyio/_core/_eventloop.py" in file for file in files)
    harness = any(_group(file) == "benchmark harness" for file in files)
    return in_loop and not harness and _group(files[-1]).startswith(("event loop", "anyio"))


def profile(backend: str, n: int, pairs: int, out: list[str], key: str = TREASURER) -> None:
    """Sample the pairs workload with py-spy, from outside the process.

    A sampling profiler in another process adds nothing to the measured one
    (pyinstrument's hook slowed this workload 4 to 5x here, cProfile about 7x), so
    the shares are those of a normal run. Only samples inside ``anyio.run``
    count: imports and start-up are left out.
    """
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "stacks.txt"
        command = [sys.executable, __file__, backend, str(n), str(pairs), key]
        result = subprocess.run(
            [
                SPY,
                "record",
                "--rate",
                str(SAMPLE_RATE),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--",
                *command,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy failed: {result.stderr.strip()[-500:]}")
        lines = raw.read_text(encoding="utf-8").splitlines()
    by_group: dict[str, int] = defaultdict(int)
    by_function: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        frames = [_frame(f) for f in stack.split(";")]
        if not _in_workload(frames):
            continue
        count = int(count_text)
        function, file = frames[-1]
        total += count
        by_group[_group(file)] += count
        by_function[f"{function}  {file}"] += count
        for name in {f for f, _ in frames} & set(INCLUSIVE):
            inclusive[name] += count
    out.append(f"\n## py-spy, {key}, {backend}, N = {n}, {pairs:,} pairs\n")
    out.append(f"{total:,} samples at {SAMPLE_RATE}/s of the workload\n")
    out.append("  self time, by where the code lives:")
    for name, count in sorted(by_group.items(), key=lambda kv: -kv[1]):
        out.append(f"  {count / total:6.1%}  {name}")
    out.append("\n  top functions by self time:")
    for name, count in sorted(by_function.items(), key=lambda kv: -kv[1])[:15]:
        out.append(f"  {count / total:6.1%}  {name}")
    out.append("\n  inclusive (the function and all it calls):")
    for name in INCLUSIVE:
        out.append(f"  {inclusive[name] / total:6.1%}  {name}")


def target(backend: str, n: int, pairs: int, key: str) -> None:
    """What py-spy watches: the workload alone, in a process of its own."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    design = next(d for d in DESIGNS if d.key == key)

    async def main() -> None:
        await workloads.pairs(design, 1, 100)  # warm up
        await workloads.pairs(design, n, max(1, pairs // n))

    anyio.run(main, **_backend(backend))


def _backend(backend: str) -> dict[str, Any]:
    if backend == "uvloop":
        return {"backend": "asyncio", "backend_options": {"use_uvloop": True}}
    return {"backend": backend}


# -- building blocks ------------------------------------------------------------------------


def _ns(stmt: Callable[[], object], number: int = 20000) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=5))
    return best / number * 1e9


def building_blocks(out: list[str]) -> None:
    from treasurer import _actor, _amounts

    log = structlog.get_logger("treasurer").bind(budget="b")
    vector = _amounts.parse({"tokens": 100, "usd": 0.001})
    out.append("\n## Building blocks (ns per call, best of 5, no profiler)\n")
    rows = [
        (
            "parse(tokens=100, usd=0.001)  [caller, every reserve and commit]",
            lambda: _amounts.parse({"tokens": 100, "usd": 0.001}),
        ),
        ("parse(tokens=100)", lambda: _amounts.parse({"tokens": 100})),
        ("usd_to_nanos(0.001)", lambda: _amounts.usd_to_nanos(0.001)),
        (
            "_describe(amount)  [only when debug logging is on]",
            lambda: _actor._describe(vector),
        ),
        (
            "log.debug(event, reservation=1) with debug filtered out",
            lambda: log.debug("reservation granted", reservation=1),
        ),
    ]
    for label, stmt in rows:
        out.append(f"  {_ns(stmt):8,.0f}  {label}")

    async def loop_costs() -> list[tuple[str, float]]:
        import asyncio
        import time

        results = []
        makers: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = (
            ("await asyncio.sleep(0) (one trip round the loop)", lambda: asyncio.sleep(0)),
            ("await anyio.lowlevel.checkpoint()", anyio.lowlevel.checkpoint),
        )
        for label, make in makers:
            samples = []
            for _ in range(5):
                start = time.perf_counter_ns()
                for _ in range(5000):
                    await make()
                samples.append((time.perf_counter_ns() - start) / 5000)
            results.append((label, min(samples)))
        return results

    async def budget_costs() -> list[tuple[str, float]]:
        # On an open budget with the bench's defaults (a reservation TTL, so
        # every batch reads the clock), between calls, on the loop's thread.
        async with treasurer.open_budget(tokens=10**12, usd=10**6) as budget:
            core: Any = budget._core
            return [
                (
                    "budget.reserve(tokens=100, usd=0.001)  [the handle, before the await]",
                    _ns(lambda: budget.reserve(tokens=100, usd=0.001)),
                ),
                (
                    "an empty batch: the actor's fixed cost per wake-up",
                    _ns(lambda: core._serve([])),
                ),
                ("  of which: publish the figures for snapshot()", _ns(core.publish)),
                ("  of which: read the budget's clock", _ns(core.clock)),
            ]

    for label, ns in anyio.run(budget_costs):
        out.append(f"  {ns:8,.0f}  {label}")
    for label, ns in anyio.run(loop_costs):
        out.append(f"  {ns:8,.0f}  {label}")
    out.append(
        f"  {anyio.run(minimal_actor_round_trip):8,.0f}  p50 of one call to a minimal actor "
        "(anyio mailbox, Future reply, nothing else), asyncio, N = 1"
    )


async def minimal_actor_round_trip(calls: int = 5000) -> int:
    """p50 ns of one call to the cheapest actor: an anyio mailbox and a bare Future reply.

    No parsing, no ledger, no logging: the floor for any actor round trip on
    asyncio on this machine.
    """
    import asyncio
    import time

    send, receive = anyio.create_memory_object_stream[tuple[asyncio.Future[int], int]](4096)
    loop = asyncio.get_running_loop()

    async def actor() -> None:
        async with receive:
            async for future, value in receive:
                batch = [(future, value)]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                for f, v in batch:
                    f.set_result(v)

    samples = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(actor)
        await anyio.lowlevel.checkpoint()
        for i in range(calls):
            start = time.perf_counter_ns()
            future = loop.create_future()
            send.send_nowait((future, i))
            await future
            samples.append(time.perf_counter_ns() - start)
        send.close()
    samples.sort()
    return samples[len(samples) // 2]


def main(folder: Path) -> int:
    out: list[str] = [
        "# treasurer profile (generated by `nox -s bench -- --profile`)",
        "",
        "Workload: the benchmark's pairs case, `async with budget.reserve(tokens=100,"
        " usd=0.001) as r: r.commit(tokens=80, usd=0.0008)`.",
    ]
    for backend in ("asyncio", "trio"):
        for n in (1, 100):
            profile(backend, n, 60000, out)
    if HAS_TENANTS:
        profile("asyncio", 100, 60000, out, TREASURER_TENANTS)
    building_blocks(out)
    text = "\n".join(out) + "\n"
    print(text)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.txt").write_text(text, encoding="utf-8")
    print(f"Wrote {folder / 'profile.txt'}")
    return 0


SPY: Final = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

if __name__ == "__main__":  # the profiled child process
    target(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
