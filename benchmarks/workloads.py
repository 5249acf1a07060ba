"""Workloads: each runs one design once, inside a running event loop, and checks it.

Every run returns a :class:`Run` with its wall time, its op count and the list
of violations found when the design's final figures were checked (nothing left
reserved, ``used`` exactly what was committed, no cap passed). An op is one
reserve or one settle, as in PERF-NOTES.md.

Throughput runs time only the work: the N tasks are spawned first and park on a
gate; the clock starts when the gate opens and stops when the last task ends.
The fan-out times everything a user's ``create_task_group`` would, spawning
included.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.lowlevel

import treasurer
from designs import (
    COMMIT,
    FULL,
    RESERVE,
    AsyncInstance,
    Caps,
    Design,
    Final_,
    Instance,
    SyncInstance,
)


@dataclass
class Run:
    seconds: float
    ops: int
    violations: list[str] = field(default_factory=list)
    reserve_ns: list[int] | None = None
    settle_ns: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Findings that are not an overspend (so do not fail the run), e.g. a false refusal.
    notes: list[str] = field(default_factory=list)


class HasFinal(Protocol):
    charges_usd: bool

    def final(self) -> Final_: ...


def verify(inst: HasFinal, caps: Caps, *, pairs: int, actual: Any) -> list[str]:
    """Check a design's final state after ``pairs`` settled reservations of ``actual``."""
    f = inst.final()
    problems = []
    if f.reserved_tokens or f.reserved_nanos or f.open_reservations:
        problems.append(
            f"left reserved: {f.reserved_tokens} tokens, {f.reserved_nanos} nano-USD, "
            f"{f.open_reservations} open"
        )
    if f.used_tokens != pairs * actual.tokens:
        problems.append(f"used {f.used_tokens} tokens, expected {pairs * actual.tokens}")
    expected_nanos = pairs * actual.nanos if inst.charges_usd else 0
    if f.used_nanos != expected_nanos:
        problems.append(f"used {f.used_nanos} nano-USD, expected {expected_nanos}")
    if f.used_tokens > caps.tokens or f.used_nanos > caps.nanos:
        problems.append(f"overspent: {f} against {caps}")
    return problems


async def _gated(n: int, body: Callable[[], Awaitable[None]]) -> float:
    """Spawn ``n`` tasks parked on a gate, open it, and time until all have finished."""
    gate = anyio.Event()
    all_parked = anyio.Event()
    ready = 0

    async def task() -> None:
        nonlocal ready
        ready += 1
        if ready == n:
            all_parked.set()
        await gate.wait()
        await body()

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(task)
        await all_parked.wait()
        start = time.perf_counter()
        gate.set()
    return time.perf_counter() - start


def _pair_caps(pairs: int, n: int) -> Caps:
    # Exactly what the run needs at its worst moment: every settled pair's actual
    # use plus one open reservation per task. Nothing is refused, but the last
    # reservations land on the cap.
    return Caps(
        tokens=pairs * COMMIT.tokens + n * RESERVE.tokens,
        nanos=pairs * COMMIT.nanos + n * RESERVE.nanos,
    )


async def pairs(design: Design, n: int, k: int) -> Run:
    """``n`` tasks each doing ``k`` reserve + commit pairs with the design's own hot loop."""
    caps = _pair_caps(n * k, n)
    async with design.open(caps) as inst:
        gc.collect()
        seconds = await _gated(n, lambda: inst.pairs(k))
        problems = verify(inst, caps, pairs=n * k, actual=COMMIT)
    return Run(seconds, 2 * n * k, problems)


async def pairs_round(designs: Sequence[Design], n: int, k: int) -> list[Run]:
    """One round of the pairs workload: each design in turn, run by the same ``n`` tasks.

    As :func:`pairs`, but the tasks are spawned once per round, not once per
    design: spawning 10,000 anyio tasks costs more than most designs' whole
    run, and is not what is measured. Between designs the tasks park on the
    next design's gate.
    """
    caps = _pair_caps(n * k, n)
    gates = [anyio.Event() for _ in designs]
    done = [anyio.Event() for _ in designs]
    all_parked = anyio.Event()
    current: list[Instance] = []
    errors: list[list[BaseException]] = [[] for _ in designs]
    ready = 0
    remaining = 0

    async def worker() -> None:
        nonlocal ready, remaining
        ready += 1
        if ready == n:
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
            async with design.open(caps) as inst:
                current[:] = [inst]
                remaining = n
                gc.collect()
                start = time.perf_counter()
                gates[phase].set()
                await done[phase].wait()
                seconds = time.perf_counter() - start
                problems = [f"crashed: {e!r}" for e in errors[phase][:3]]
                problems += verify(inst, caps, pairs=n * k, actual=COMMIT)
            runs.append(Run(seconds, 2 * n * k, problems))
    return runs


async def pairs_timed(design: Design, n: int, k: int) -> Run:
    """As :func:`pairs`, timing every call (kept apart: the clock costs ~100 ns a call)."""
    caps = _pair_caps(n * k, n)
    reserve_ns: list[int] = []
    settle_ns: list[int] = []
    clock = time.perf_counter_ns
    async with design.open(caps) as inst:

        async def sync_body() -> None:
            assert isinstance(inst, SyncInstance)
            reserve, settle = inst.reserve, inst.settle
            for _ in range(k):
                t0 = clock()
                handle = reserve()
                t1 = clock()
                settle(handle, COMMIT)
                t2 = clock()
                reserve_ns.append(t1 - t0)
                settle_ns.append(t2 - t1)

        async def async_body() -> None:
            assert isinstance(inst, AsyncInstance)
            reserve, settle = inst.reserve, inst.settle
            for _ in range(k):
                t0 = clock()
                handle = await reserve()
                t1 = clock()
                await settle(handle, COMMIT)
                t2 = clock()
                reserve_ns.append(t1 - t0)
                settle_ns.append(t2 - t1)

        gc.collect()
        body = sync_body if inst.kind == "sync" else async_body
        seconds = await _gated(n, body)
        problems = verify(inst, caps, pairs=n * k, actual=COMMIT)
    return Run(seconds, 2 * n * k, problems, reserve_ns, settle_ns)


async def fanout(design: Design, n: int, delay: float) -> Run:
    """``n`` tasks started at once, each: reserve, await a simulated call, settle.

    The cap fits all ``n`` reservations exactly. A refusal is not an overspend,
    so it does not fail the run, but it is reported as a false refusal (a
    design that adds USD as floats can find that 1,000 x 0.001 > 1.0).
    """
    caps = Caps(tokens=n * RESERVE.tokens, nanos=n * RESERVE.nanos)
    sleep = anyio.sleep
    granted = 0
    async with design.open(caps) as inst:

        async def sync_call() -> None:
            nonlocal granted
            assert isinstance(inst, SyncInstance)
            handle = inst.reserve()
            if handle is None:
                return
            granted += 1
            await sleep(delay)
            inst.settle(handle, COMMIT)

        async def async_call() -> None:
            nonlocal granted
            assert isinstance(inst, AsyncInstance)
            handle = await inst.reserve()
            if handle is None:
                return
            granted += 1
            await sleep(delay)
            await inst.settle(handle, COMMIT)

        call = sync_call if inst.kind == "sync" else async_call
        gc.collect()
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(call)
        seconds = time.perf_counter() - start
        problems = verify(inst, caps, pairs=granted, actual=COMMIT)
    run = Run(seconds, 2 * n, problems)
    if granted != n:
        run.notes.append(
            f"false refusal: refused {n - granted} of {n} reservations that fit the cap exactly"
        )
    return run


async def tight(design: Design, n: int, k: int, grants: int) -> Run:
    """``n`` tasks make ``k`` attempts each; the cap admits exactly ``grants`` of them.

    A granted call uses all it reserved, so exactly ``grants`` reservations can
    ever be admitted, whatever the interleaving: fewer would be a false refusal,
    more an overspend. The callers also keep their own tally of what is held
    and committed; it must never pass the cap.
    """
    caps = Caps(tokens=grants * FULL.tokens, nanos=2 * grants * FULL.nanos)
    granted = 0
    held = 0
    peak = 0
    async with design.open(caps) as inst:

        async def sync_body() -> None:
            nonlocal granted, held, peak
            assert isinstance(inst, SyncInstance)
            reserve, settle = inst.reserve, inst.settle
            for _ in range(k):
                handle = reserve()
                if handle is None:
                    continue
                granted += 1
                held += FULL.tokens
                peak = max(peak, held)
                settle(handle, FULL)

        async def async_body() -> None:
            nonlocal granted, held, peak
            assert isinstance(inst, AsyncInstance)
            reserve, settle = inst.reserve, inst.settle
            for _ in range(k):
                handle = await reserve()
                if handle is None:
                    continue
                granted += 1
                held += FULL.tokens
                peak = max(peak, held)
                await settle(handle, FULL)

        gc.collect()
        body = sync_body if inst.kind == "sync" else async_body
        seconds = await _gated(n, body)
        problems = verify(inst, caps, pairs=granted, actual=FULL)
    if granted != grants:
        problems.append(f"granted {granted} reservations, the cap admits exactly {grants}")
    if peak > caps.tokens:
        problems.append(f"callers held {peak} tokens at once, cap {caps.tokens}")
    attempts = n * k
    return Run(
        seconds,
        attempts + granted,
        problems,
        extra={"attempts": attempts, "granted": granted, "refused": attempts - granted},
    )


# -- memory per pending request -------------------------------------------------------

MEMORY_MODES = (
    "anyio.Event",
    "asyncio.Lock",
    "anyio.Lock",
    "treasurer reserve",
    "treasurer consume",
)


async def memory(mode: str, n: int) -> float:
    """Bytes traced per task for ``n`` tasks all parked in ``mode``.

    ``anyio.Event``: waiting on one shared plain Event (the baseline: a task
    that waits on something). Locks: waiting for a lock held elsewhere.
    treasurer: waiting for the actor's reply to a reserve or a consume, measured
    from inside the actor at the moment it takes the batch of all ``n``
    requests, before it answers any.
    """
    tracemalloc.start()
    gc.collect()
    gc.disable()
    try:
        if mode.startswith("treasurer"):
            return await _memory_treasurer(mode, n)
        return await _memory_parked(mode, n)
    finally:
        gc.enable()
        tracemalloc.stop()


async def _memory_parked(mode: str, n: int) -> float:
    import asyncio

    ready = 0
    if mode == "anyio.Event":
        event = anyio.Event()
        wait: Callable[[], Awaitable[Any]] = event.wait
        release: Callable[[], None] = event.set
    else:
        lock: Any = asyncio.Lock() if mode == "asyncio.Lock" else anyio.Lock()
        await lock.acquire()
        release = lock.release

        async def wait() -> None:
            async with lock:
                pass

    all_parked = anyio.Event()

    async def task() -> None:
        nonlocal ready
        ready += 1
        if ready == n:
            all_parked.set()
        await wait()

    base = tracemalloc.get_traced_memory()[0]
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(task)
        await all_parked.wait()
        await anyio.lowlevel.checkpoint()
        now = tracemalloc.get_traced_memory()[0]
        release()
    return (now - base) / n


async def _memory_treasurer(mode: str, n: int) -> float:
    ready = 0
    measured: list[int] = []
    async with treasurer.open_budget(tokens=10**12, usd=10**6, mailbox_size=n + 16) as budget:
        core: Any = budget._core  # the actor's test seam, see treasurer/_actor.py
        # A pending request is one waiting for the actor's reply, so every request
        # goes through the mailbox here: the uncontended fast path would apply
        # the first one in its own task, which leaves nothing pending to measure.
        core.inline = False

        def before_batch(batch: list[Any]) -> None:
            if not measured and len(batch) >= n:
                measured.append(tracemalloc.get_traced_memory()[0])

        core._before_batch = before_batch
        await anyio.lowlevel.checkpoint()  # the actor is now parked on its mailbox

        if mode == "treasurer reserve":

            async def task() -> None:
                nonlocal ready
                ready += 1
                async with budget.reserve(tokens=RESERVE.tokens, usd=RESERVE.usd) as r:
                    r.commit(tokens=COMMIT.tokens, usd=COMMIT.usd)

        else:

            async def task() -> None:
                nonlocal ready
                ready += 1
                await budget.consume(RESERVE.tokens)

        base = tracemalloc.get_traced_memory()[0]
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(task)
        core._before_batch = None
    if not measured:
        raise RuntimeError("the actor never saw all requests in one batch; cannot measure")
    return (measured[0] - base) / n
