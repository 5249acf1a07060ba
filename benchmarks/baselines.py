"""The floors: a bare check-and-deduct, with and without one checkpoint per op,
and token-budget-py (a threading.Lock pool from PyPI) as an outside reference.

The bare ledger counts tokens and nano-dollars with plain ints and no lock:
correct only because nothing awaits inside a check-and-deduct on one event
loop. It is the least any budget can cost; with one ``anyio`` checkpoint per
op it is the least an awaited budget call can cost.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import token_budget

from amounts import (
    RESERVE_NANOS,
    RESERVE_TOKENS,
    RESERVE_USD,
    USED_NANOS,
    USED_TOKENS,
    USED_USD,
    Caps,
    Refused,
    Workload,
    expect,
)


class BareLedger:
    __slots__ = ("cap_nanos", "cap_tokens", "held_nanos", "held_tokens", "nanos", "tokens")

    def __init__(self, caps: Caps) -> None:
        self.cap_tokens, self.cap_nanos = caps.tokens, caps.nanos
        self.tokens = self.nanos = self.held_tokens = self.held_nanos = 0

    def reserve(self, tokens: int, nanos: int) -> None:
        if (
            self.tokens + self.held_tokens + tokens > self.cap_tokens
            or self.nanos + self.held_nanos + nanos > self.cap_nanos
        ):
            raise Refused
        self.held_tokens += tokens
        self.held_nanos += nanos

    def commit(self, held_tokens: int, held_nanos: int, tokens: int, nanos: int) -> None:
        self.held_tokens -= held_tokens
        self.held_nanos -= held_nanos
        self.tokens += tokens
        self.nanos += nanos

    def consume(self, tokens: int) -> None:
        if self.tokens + self.held_tokens + tokens > self.cap_tokens:
            raise Refused
        self.tokens += tokens

    def refund(self, actual: int, estimated: int) -> None:
        self.tokens += actual - estimated


class Floor:
    """The bare ledger; with ``checkpoint``, one ``anyio.lowlevel.checkpoint()`` per op."""

    def __init__(self, caps: Caps, workload: Workload, *, checkpoint: bool) -> None:
        self.ledger = BareLedger(caps)
        self.workload = workload
        self.checkpoint = checkpoint

    async def pairs(self, k: int) -> None:
        ledger = self.ledger
        if self.checkpoint:
            checkpoint = anyio.lowlevel.checkpoint
            if self.workload == "reserve":
                for _ in range(k):
                    await checkpoint()
                    ledger.reserve(RESERVE_TOKENS, RESERVE_NANOS)
                    await checkpoint()
                    ledger.commit(RESERVE_TOKENS, RESERVE_NANOS, USED_TOKENS, USED_NANOS)
            else:
                for _ in range(k):
                    await checkpoint()
                    ledger.consume(RESERVE_TOKENS)
                    await checkpoint()
                    ledger.refund(USED_TOKENS, RESERVE_TOKENS)
        elif self.workload == "reserve":
            for _ in range(k):
                ledger.reserve(RESERVE_TOKENS, RESERVE_NANOS)
                ledger.commit(RESERVE_TOKENS, RESERVE_NANOS, USED_TOKENS, USED_NANOS)
        else:
            for _ in range(k):
                ledger.consume(RESERVE_TOKENS)
                ledger.refund(USED_TOKENS, RESERVE_TOKENS)

    async def call(self) -> None:
        if self.checkpoint:
            await anyio.lowlevel.checkpoint()
        self.ledger.reserve(RESERVE_TOKENS, RESERVE_NANOS)
        await anyio.lowlevel.checkpoint()  # the "LLM call": 0 ms
        if self.checkpoint:
            await anyio.lowlevel.checkpoint()
        self.ledger.commit(RESERVE_TOKENS, RESERVE_NANOS, USED_TOKENS, USED_NANOS)

    def problems(self, pairs: int) -> list[str]:
        ledger = self.ledger
        return expect(ledger.tokens, ledger.nanos, ledger.held_tokens, pairs, self.workload)


class TokenBudgetPy:
    """token-budget-py's ``BudgetPool``: reserve/commit under a threading.Lock, USD as floats."""

    def __init__(self, caps: Caps, workload: Workload) -> None:
        assert workload == "reserve"
        self.pool = token_budget.BudgetPool(token_cap=caps.tokens, usd_cap=float(caps.usd))

    async def pairs(self, k: int) -> None:
        pool = self.pool
        for _ in range(k):
            with pool.reserve(tokens=RESERVE_TOKENS, usd=RESERVE_USD) as r:
                r.commit(tokens=USED_TOKENS, usd=USED_USD)

    async def call(self) -> None:
        raise NotImplementedError

    def problems(self, pairs: int) -> list[str]:
        s = self.pool.snapshot()
        held = s.token_cap - s.tokens_used - s.tokens_remaining
        # USD is a float here: checked to the nano-dollar.
        return expect(s.tokens_used, round(s.usd_used * 1e9), held, pairs, "reserve")
