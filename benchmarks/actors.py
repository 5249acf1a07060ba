"""treasurer itself, as a user writes it, and the same runtime on a store that does nothing.

* ``treasurer``: ``open_budget`` in its default configuration (only caps given;
  no logging, listener or usage log configured), used as
  ``async with budget.reserve(...) as r: r.commit(...)`` or
  ``await budget.consume(n)`` then ``await budget.refund(actual, n)``.
* ``null actor``: the same handles, mailbox, actor and replies, on a store
  whose ``apply`` grants every reservation and does nothing else. No ledger
  can be faster inside this runtime: the ceiling any ledger work leaves.
* ``windows + tenants``: the default configuration plus an hourly and a daily
  window, and every pair made by the next of 1,000 tenants (each with the
  default tenant caps).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

import treasurer
from amounts import (
    NANOS_PER_USD,
    RESERVE_TOKENS,
    RESERVE_USD,
    USED_TOKENS,
    USED_USD,
    Caps,
    Refused,
    Workload,
    expect,
)
from treasurer._core.commands import Command, OpenChild, Reserve
from treasurer._core.config import BudgetConfig
from treasurer._core.outcomes import Granted, ScopeView

TENANTS = 1000


class BudgetCalls:
    """A workload's pairs through a budget's handle, or through its tenants' in turn."""

    def __init__(
        self, budget: treasurer.Budget, workload: Workload, tenants: Sequence[treasurer.Budget] = ()
    ) -> None:
        self.budget = budget
        self.workload = workload
        self.tenants = tenants
        self.turn = 0

    async def pairs(self, k: int) -> None:
        handles = self.tenants
        if handles:
            for _ in range(k):
                self.turn += 1
                async with handles[self.turn % TENANTS].reserve(
                    tokens=RESERVE_TOKENS, usd=RESERVE_USD
                ) as r:
                    r.commit(tokens=USED_TOKENS, usd=USED_USD)
        elif self.workload == "reserve":
            budget = self.budget
            for _ in range(k):
                async with budget.reserve(tokens=RESERVE_TOKENS, usd=RESERVE_USD) as r:
                    r.commit(tokens=USED_TOKENS, usd=USED_USD)
        else:
            budget = self.budget
            for _ in range(k):
                if not await budget.consume(RESERVE_TOKENS):
                    raise Refused
                await budget.refund(USED_TOKENS, RESERVE_TOKENS)

    async def call(self) -> None:
        async with self.budget.reserve(tokens=RESERVE_TOKENS, usd=RESERVE_USD) as r:
            await anyio.lowlevel.checkpoint()  # the "LLM call": 0 ms
            r.commit(tokens=USED_TOKENS, usd=USED_USD)

    def problems(self, pairs: int) -> list[str]:
        s = self.budget.snapshot()
        nanos = int(s.usd_used * NANOS_PER_USD)
        return expect(s.tokens_used, nanos, s.tokens_reserved, pairs, self.workload)


@asynccontextmanager
async def default(caps: Caps, workload: Workload) -> AsyncIterator[BudgetCalls]:
    async with treasurer.open_budget(tokens=caps.tokens, usd=caps.usd) as budget:
        yield BudgetCalls(budget, workload)


@asynccontextmanager
async def windows_and_tenants(caps: Caps, workload: Workload) -> AsyncIterator[BudgetCalls]:
    async with treasurer.open_budget(
        tokens=caps.tokens,
        usd=caps.usd,
        windows=[treasurer.Window.hour(tokens=caps.tokens), treasurer.Window.day(usd=caps.usd)],
        tenant_defaults=treasurer.TenantCaps(tokens=caps.tokens, usd=caps.usd),
    ) as budget:
        handles = [budget.tenant(f"tenant-{i}") for i in range(TENANTS)]
        for handle in handles:  # every tenant exists before the clock starts
            await handle.check(tokens=1)
        yield BudgetCalls(budget, workload, handles)


class NullStore:
    """A :class:`treasurer.Store` whose ``apply`` does no work: every reservation is
    granted (as number 1, never expiring), every other command answered ``None``."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    async def open(self, config: BudgetConfig, clock: Any) -> ScopeView:
        self.now = clock()
        return await treasurer.MemoryStore().open(config, clock)  # the figures at open

    async def apply(
        self,
        batch: Sequence[Command],
        waiting: Sequence[Reserve | OpenChild] = (),
        *,
        new_from: int = 0,
        verbose: bool = True,
    ) -> treasurer.BatchResult:
        replies = [_GRANTED if type(command) is Reserve else None for command in batch]
        return treasurer.BatchResult(replies, (), (), {}, self.now, None)

    async def refresh(self, scope: object) -> None:
        return None

    async def health(self) -> treasurer.Health:
        raise NotImplementedError

    async def close(self) -> None:
        pass


_GRANTED = Granted(1, None)


class NullCalls(BudgetCalls):
    def problems(self, pairs: int) -> list[str]:
        return []  # nothing is counted


@asynccontextmanager
async def null(caps: Caps, workload: Workload) -> AsyncIterator[BudgetCalls]:
    async with treasurer.open_budget(tokens=caps.tokens, usd=caps.usd, store=NullStore()) as b:
        yield NullCalls(b, workload)
