"""Threads: T threads share one budget, each doing reserve + commit pairs.

Run outside any event loop, the way synchronous code uses a budget. The
designs are a ``threading.Lock`` around the floor's ledger, token-budget-py,
and treasurer's synchronous facade (``treasurer.sync``), whose actor runs on
an event loop in a thread of its own, asyncio or trio: every call hops to that
thread and blocks until the actor answered.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from designs import (
    COMMIT,
    NANOS_PER_USD,
    RESERVE,
    THREADING_LOCK,
    TOKEN_BUDGET,
    Caps,
    Final_,
    ThreadLockInstance,
    TokenBudgetInstance,
)
from workloads import Run, verify


class SyncFacadeInstance:
    """``with budget.reserve(tokens=..., usd=...) as r: r.commit(...)`` on a SyncBudget."""

    charges_usd = True

    def __init__(self, budget: Any) -> None:
        self.budget = budget

    def pairs(self, k: int) -> None:
        budget = self.budget
        rt, ru, ct, cu = RESERVE.tokens, RESERVE.usd, COMMIT.tokens, COMMIT.usd
        for _ in range(k):
            with budget.reserve(tokens=rt, usd=ru) as r:
                r.commit(tokens=ct, usd=cu)

    def final(self) -> Final_:
        snap = self.budget.snapshot()
        return Final_(
            snap.tokens_used,
            int(snap.usd_used * NANOS_PER_USD),
            snap.tokens_reserved,
            int(snap.usd_reserved * NANOS_PER_USD),
            snap.open_reservations,
        )


class _LoopPairs:
    """Gives a lock-based design from designs.py a synchronous hot loop."""

    def __init__(self, inst: ThreadLockInstance | TokenBudgetInstance) -> None:
        self.inst = inst
        self.charges_usd = inst.charges_usd

    def pairs(self, k: int) -> None:
        reserve, settle = self.inst.reserve, self.inst.settle
        for _ in range(k):
            handle = reserve()
            assert handle is not None
            settle(handle, COMMIT)

    def final(self) -> Final_:
        return self.inst.final()


@contextmanager
def _simple(factory: Callable[[Caps], Any], caps: Caps) -> Iterator[Any]:
    yield _LoopPairs(factory(caps))


@contextmanager
def _facade(caps: Caps, backend: Literal["asyncio", "trio"]) -> Iterator[Any]:
    import treasurer.sync

    usd = Decimal(caps.nanos) / NANOS_PER_USD
    with treasurer.sync.open_budget(tokens=caps.tokens, usd=usd, backend=backend) as budget:
        yield SyncFacadeInstance(budget)


@dataclass(frozen=True)
class ThreadDesign:
    key: str
    open: Callable[[Caps], AbstractContextManager[Any]]


def thread_designs() -> list[ThreadDesign]:
    designs = [
        ThreadDesign(THREADING_LOCK, lambda caps: _simple(ThreadLockInstance, caps)),
        ThreadDesign(TOKEN_BUDGET, lambda caps: _simple(TokenBudgetInstance, caps)),
    ]
    try:
        import treasurer.sync  # noqa: F401
    except ImportError:
        return designs
    designs += [
        ThreadDesign("treasurer.sync (asyncio)", lambda caps: _facade(caps, "asyncio")),
        ThreadDesign("treasurer.sync (trio)", lambda caps: _facade(caps, "trio")),
    ]
    return designs


def run_threads(design: ThreadDesign, threads: int, k: int) -> Run:
    """``threads`` threads, each doing ``k`` pairs, released together by a barrier."""
    pairs = threads * k
    caps = Caps(
        tokens=pairs * COMMIT.tokens + threads * RESERVE.tokens,
        nanos=pairs * COMMIT.nanos + threads * RESERVE.nanos,
    )
    errors: list[BaseException] = []
    with design.open(caps) as inst:
        barrier = threading.Barrier(threads + 1)

        def work() -> None:
            barrier.wait()
            try:
                inst.pairs(k)
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        gc.collect()
        barrier.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - start
        problems = [f"crashed: {e!r}" for e in errors]
        problems += verify(inst, caps, pairs=pairs, actual=COMMIT)
    return Run(seconds, 2 * pairs, problems)
