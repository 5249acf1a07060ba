"""Memory per pending request, traced with tracemalloc.

``n`` tasks are spawned and left blocked; the memory traced since just
before spawning them, divided by ``n``, is what each costs. A task blocked on
a plain ``anyio.Event`` is the task itself; a request costs what a blocked
treasurer call takes beyond that. Three ways to be blocked in treasurer:

* ``reserve, waiting``: inside ``reserve(..., wait=True)``, queued by the actor
  behind a reservation that holds the whole cap;
* ``reserve, in the mailbox`` and ``consume, in the mailbox``: sent, not yet
  answered (the actor is held inside its store's ``apply`` meanwhile).

``ledger+anyio.Lock`` (a task waiting for the lock) is there for comparison.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any, Final

import anyio

import treasurer
from amounts import Caps
from locked import LockedLedger

MODES: Final = (
    "task on an anyio.Event",
    "ledger+anyio.Lock",
    "treasurer reserve, waiting",
    "treasurer reserve, in the mailbox",
    "treasurer consume, in the mailbox",
)
BASELINE: Final = MODES[0]


class HeldStore(treasurer.MemoryStore):
    """A memory store whose ``apply`` waits for ``gate`` (so requests stay pending)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()

    async def apply(self, *args: object, **options: object) -> treasurer.BatchResult:
        await self.gate.wait()
        return await super().apply(*args, **options)  # type: ignore[arg-type]


async def _traced(n: int, block: Callable[[], Coroutine[Any, Any, object]]) -> float:
    """Bytes per task for ``n`` tasks running ``block`` until all are blocked."""
    async with anyio.create_task_group() as tg:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            tg.start_soon(block)
        await anyio.wait_all_tasks_blocked()
        used = tracemalloc.get_traced_memory()[0] - base
        tg.cancel_scope.cancel()
    return used / n


async def bytes_per_task(mode: str, n: int) -> float:
    tracemalloc.start()
    try:
        return await _measure(mode, n)
    finally:
        tracemalloc.stop()


async def _measure(mode: str, n: int) -> float:
    if mode == BASELINE:
        return await _traced(n, anyio.Event().wait)
    if mode == "ledger+anyio.Lock":
        locked = LockedLedger(Caps.for_run(n, n), "consume", anyio.Lock)
        async with locked.lock:  # held, so every consume waits for it
            return await _traced(n, lambda: locked.consume(1))
    if mode == "treasurer reserve, waiting":
        async with treasurer.open_budget(tokens=100) as budget, budget.reserve(tokens=100):

            async def waits() -> None:
                async with budget.reserve(tokens=100, wait=True):
                    pass

            return await _traced(n, waits)
    store = HeldStore()
    async with (
        treasurer.open_budget(tokens=10**9, store=store) as budget,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(budget.consume, 1)  # the actor is now held in apply()
        await anyio.wait_all_tasks_blocked()
        if mode == "treasurer reserve, in the mailbox":

            async def pending() -> None:
                async with budget.reserve(tokens=100):
                    pass

            per_task = await _traced(n, pending)
        else:
            per_task = await _traced(n, lambda: budget.consume(100))
        store.gate.set()
    return per_task
