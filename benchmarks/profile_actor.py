"""Where treasurer's time goes: cProfile of the benchmark's treasurer case, and what-ifs.

Run with ``nox -s bench -- --profile``. Three parts, all printed and written to
``profile.txt`` in the output folder:

1. cProfile of the pairs workload (reserve + commit, tokens and USD) at N = 1
   and N = 100 on asyncio and trio, self time grouped by where the code lives,
   then the top functions. cProfile inflates the cost of every Python call, so
   read the shares, not the absolute times.
2. The cost in ns of the building blocks a reserve + commit goes through,
   timed without a profiler.
3. What-ifs: the same workload with the installed library patched in this
   process only (never in src/), to measure what a proposed change would gain.
   Each is compared with the unpatched library in the same process.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import timeit
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import structlog

import treasurer
import workloads
from designs import CHECKPOINT, DESIGNS, TREASURER, TREASURER_TOKENS

GROUPS = (
    ("treasurer/_amounts.py", "treasurer: parsing amounts and USD (Decimal)"),
    ("treasurer/_actor.py", "treasurer: actor (_serve, _apply, request, post)"),
    ("treasurer/_budget.py", "treasurer: Budget and Reservation handles"),
    ("treasurer/_ledger.py", "treasurer: ledger arithmetic"),
    ("treasurer/_slots.py", "treasurer: reply slots"),
    ("treasurer/_types.py", "treasurer: snapshot types"),
    ("structlog", "structlog (filtered debug calls)"),
    ("anyio/streams/memory.py", "anyio memory stream (mailbox)"),
    ("anyio", "anyio (other)"),
    ("asyncio", "asyncio event loop"),
    ("trio", "trio scheduler"),
    ("outcome", "trio scheduler"),
    ("decimal", "treasurer: parsing amounts and USD (Decimal)"),
    ("benchmarks", "benchmark harness"),
)


def _group(filename: str, function: str) -> str:
    if filename == "~":  # a builtin
        if "Decimal" in function or "decimal" in function:
            return "treasurer: parsing amounts and USD (Decimal)"
        return "builtins (other)"
    for needle, name in GROUPS:
        if needle in filename:
            return name
    return "other"


def profile(backend: str, n: int, pairs: int, out: list[str]) -> None:
    design = next(d for d in DESIGNS if d.key == TREASURER)
    profiler = cProfile.Profile()

    async def main() -> None:
        await workloads.pairs(design, 1, 100)  # warm up
        profiler.enable()
        await workloads.pairs(design, n, max(1, pairs // n))
        profiler.disable()

    anyio.run(main, **_backend(backend))
    stats = pstats.Stats(profiler)
    raw: Any = stats.stats  # type: ignore[attr-defined]
    by_group: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _, function), (_, _, tottime, _, _) in raw.items():
        by_group[_group(filename, function)] += tottime
        total += tottime
    out.append(f"\n## cProfile, {backend}, N = {n}, {pairs:,} reserve + commit pairs\n")
    out.append(f"total self time under the profiler: {total:.2f} s\n")
    for name, seconds in sorted(by_group.items(), key=lambda kv: -kv[1]):
        out.append(f"  {seconds / total:6.1%}  {name}")
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(18)
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    out.append("\n  top functions by self time:")
    out.extend(
        "  " + line.replace(str(Path(treasurer.__file__).parent.parent), "")
        for line in lines[start:]
    )


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
        ("proposed: usd_to_nanos by the float's repr digits", lambda: fast_usd_to_nanos(0.001)),
        (
            "_describe(amount)  [actor, every reserve and commit, even with debug off]",
            lambda: _actor._describe(vector),
        ),
        (
            "log.debug(event, **_describe(amount)) with debug filtered out",
            lambda: log.debug("reservation granted", reservation=1, **_actor._describe(vector)),
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

    for label, ns in anyio.run(loop_costs):
        out.append(f"  {ns:8,.0f}  {label}")
    out.append(
        f"  {anyio.run(minimal_actor_round_trip):8,.0f}  p50 of one call to a minimal actor "
        "(anyio mailbox, Future reply, nothing else), asyncio, N = 1"
    )


def fast_usd_to_nanos(value: object) -> int:
    """A proposed fast path for float USD, falling back to the exact Decimal path.

    ``round(value * 1e9)`` is the nano-dollar count of the float's shortest
    repr whenever dividing it back gives the same float (below a million USD the
    product's rounding error is far under half a nano-dollar). Agreed with
    ``usd_to_nanos`` on 300,000 random values when written; in the library it
    would want a Hypothesis test against the Decimal path.
    """
    if type(value) is float and 0.0 <= value < 1e6:
        nanos = round(value * 1e9)
        if nanos / 1e9 == value:
            return nanos
    from treasurer._amounts import usd_to_nanos

    return usd_to_nanos(value)


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


# -- what-ifs --------------------------------------------------------------------------------


@contextmanager
def quiet_debug_logging() -> Iterator[None]:
    """What-if: build debug log arguments only when debug is enabled."""
    from treasurer import _actor

    original = _actor._describe
    _actor._describe = lambda amount: {}
    try:
        yield
    finally:
        _actor._describe = original


@contextmanager
def fast_usd() -> Iterator[None]:
    """What-if: the float fast path in usd_to_nanos."""
    from treasurer import _amounts

    original = _amounts.usd_to_nanos

    def patched(value: object, name: str = "usd", *, round_up: bool = True) -> int:
        if round_up and type(value) is float:
            return fast_usd_to_nanos(value)
        return original(value, name, round_up=round_up)

    _amounts.usd_to_nanos = patched
    try:
        yield
    finally:
        _amounts.usd_to_nanos = original


@contextmanager
def no_settle_ack() -> Iterator[None]:
    """What-if: leaving a reservation block does not wait for the actor's ack.

    Changes a promise (a snapshot read right after the block may not show the
    commit yet), so it is measured, not proposed as is.
    """
    from treasurer import _budget

    cls: Any = _budget.Reservation
    original = cls.__aexit__

    async def patched(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and self._state == _budget._SETTLED:
            self._ack = None
            return
        await original(self, exc_type, exc, tb)

    cls.__aexit__ = patched
    try:
        yield
    finally:
        cls.__aexit__ = original


@contextmanager
def everything() -> Iterator[None]:
    with quiet_debug_logging(), fast_usd(), no_settle_ack():
        yield


@contextmanager
def _both() -> Iterator[None]:
    with quiet_debug_logging(), fast_usd():
        yield


@contextmanager
def nothing() -> Iterator[None]:
    yield


WHAT_IFS: tuple[tuple[str, Callable[[], Any]], ...] = (
    ("as installed", nothing),
    ("no debug log arguments built when debug is off", quiet_debug_logging),
    ("fast exact float -> nano-USD", fast_usd),
    ("both of the above", _both),
    ("no wait for the settle ack on a clean exit", no_settle_ack),
    ("all three", everything),
)


def what_ifs(
    backends: tuple[str, ...], ns: tuple[int, ...], pairs: int, reps: int, out: list[str]
) -> None:
    designs = {d.key: d for d in DESIGNS}
    out.append(
        f"\n## What-ifs: ops/s of the pairs workload ({pairs:,} pairs), median of {reps} "
        "interleaved rounds, the library patched in this process only\n"
    )
    for backend in backends:

        async def main(backend: str = backend) -> list[str]:
            lines = []
            for n in ns:
                k = max(1, pairs // n)
                rates: dict[tuple[str, str], list[float]] = defaultdict(list)
                for _ in range(reps):
                    run = await workloads.pairs(designs[CHECKPOINT], n, k)
                    rates["floor+checkpoint", ""].append(run.ops / run.seconds)
                    for label, patch in WHAT_IFS:
                        for key in (TREASURER, TREASURER_TOKENS):
                            with patch():
                                run = await workloads.pairs(designs[key], n, k)
                            # Without the ack, the last commits may not be applied yet
                            # when the run reads its final snapshot: only that may differ.
                            if patch not in (no_settle_ack, everything):
                                assert not run.violations, run.violations
                            rates[label, key].append(run.ops / run.seconds)
                floor_ckpt = statistics.median(rates["floor+checkpoint", ""])
                lines.append(f"  {backend} N={n:,}: floor+checkpoint {floor_ckpt:,.0f} ops/s")
                base = statistics.median(rates[WHAT_IFS[0][0], TREASURER])
                for label, _ in WHAT_IFS:
                    rate = statistics.median(rates[label, TREASURER])
                    tokens_rate = statistics.median(rates[label, TREASURER_TOKENS])
                    lines.append(
                        f"    {rate:9,.0f} ops/s  x{rate / base:4.2f}  "
                        f"{rate / floor_ckpt:4.0%} of floor+ckpt   "
                        f"(tokens only {tokens_rate:9,.0f})  {label}"
                    )
            return lines

        out.extend(anyio.run(main, **_backend(backend)))


def main(folder: Path) -> int:
    out: list[str] = [
        "# treasurer profile (generated by `nox -s bench -- --profile`)",
        "",
        "Workload: the benchmark's pairs case, `async with budget.reserve(tokens=100,"
        " usd=0.001) as r: r.commit(tokens=80, usd=0.0008)`.",
    ]
    for backend in ("asyncio", "trio"):
        for n in (1, 100):
            profile(backend, n, 4000, out)
    building_blocks(out)
    what_ifs(("asyncio", "trio"), (1, 100, 1000), 8000, 5, out)
    text = "\n".join(out) + "\n"
    print(text)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.txt").write_text(text, encoding="utf-8")
    print(f"Wrote {folder / 'profile.txt'}")
    return 0
