"""treasurer's own ledger behind a lock: the actor's work, without the actor.

Each op parses the caller's keywords as treasurer's handles do, takes the
lock, reads the clock once, tells the ledger the time (so reservations expire)
and applies one command (``Reserve``, ``Commit``, ``Consume`` or ``Refund``)
at that instant: the same pure ``treasurer._core.ledger.Ledger``, configured
as ``open_budget`` configures it by default (thresholds, a 15-minute
reservation TTL, routine events off as when nobody listens). What separates
this from treasurer is only the concurrency design: a lock instead of one
task applying batches from a mailbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import anyio.lowlevel

from amounts import (
    RESERVE_TOKENS,
    RESERVE_USD,
    USED_TOKENS,
    USED_USD,
    Caps,
    Refused,
    Workload,
    expect,
)
from treasurer._core.axes import AXES, parse
from treasurer._core.commands import Command, Commit, Consume, Refund, Reserve
from treasurer._core.config import BudgetConfig, Limits
from treasurer._core.ledger import Ledger
from treasurer._core.outcomes import Granted, Refusal, Rejected, Reply
from treasurer._core.scopes import ROOT

TOKENS, USD = AXES.index("tokens"), AXES.index("usd")


def utc_now() -> datetime:
    return datetime.now(UTC)


class LockedLedger:
    """A budget whose calls apply commands to a ``Ledger`` while holding ``lock``."""

    def __init__(
        self, caps: Caps, workload: Workload, lock: Callable[[], asyncio.Lock | anyio.Lock]
    ) -> None:
        config = BudgetConfig.build("bench", Limits.build({"tokens": caps.tokens, "usd": caps.usd}))
        self.clock = utc_now
        self.ledger = Ledger(config, self.clock())
        self.ledger.verbose = False
        self.lock = lock()
        self.workload = workload

    async def _apply(self, command: Command) -> Reply:
        async with self.lock:
            now = self.clock()
            self.ledger.advance(now)
            reply = self.ledger.apply(command, now).reply
        if isinstance(reply, Refusal | Rejected):
            raise Refused(reply)
        return reply

    async def reserve(self, **amounts: object) -> int:
        reply = await self._apply(Reserve(ROOT, parse(amounts)))
        assert isinstance(reply, Granted)
        return reply.reservation

    async def commit(self, reservation: int, **actual: object) -> None:
        await self._apply(Commit(ROOT, reservation, parse(actual)))

    async def consume(self, tokens: int) -> None:
        await self._apply(Consume(ROOT, parse({"tokens": tokens})))

    async def refund(self, actual: int, estimated: int) -> None:
        await self._apply(Refund(ROOT, actual, estimated))

    async def pairs(self, k: int) -> None:
        if self.workload == "reserve":
            reserve, commit = self.reserve, self.commit
            for _ in range(k):
                reservation = await reserve(tokens=RESERVE_TOKENS, usd=RESERVE_USD)
                await commit(reservation, tokens=USED_TOKENS, usd=USED_USD)
        else:
            consume, refund = self.consume, self.refund
            for _ in range(k):
                await consume(RESERVE_TOKENS)
                await refund(USED_TOKENS, RESERVE_TOKENS)

    async def call(self) -> None:
        reservation = await self.reserve(tokens=RESERVE_TOKENS, usd=RESERVE_USD)
        await anyio.lowlevel.checkpoint()  # the "LLM call": 0 ms
        await self.commit(reservation, tokens=USED_TOKENS, usd=USED_USD)

    def problems(self, pairs: int) -> list[str]:
        root = self.ledger.root
        return expect(
            root.used[TOKENS], root.used[USD], root.reserved[TOKENS], pairs, self.workload
        )
