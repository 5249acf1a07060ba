"""The designs under test: reference budgets built on locks, and treasurer itself.

Every design holds a budget on two axes (tokens and USD), admits a reservation
only if ``used + reserved + amount <= cap`` on both, and settles it by moving
the reserved amount to ``used`` at its actual size: the same semantics as
treasurer's ``reserve``/``commit`` (and, for a floor, ``consume``/``refund``,
which is the same check-and-deduct followed by a credit).

The reference designs live here, not in the library. Each one keeps its own
figures, so the harness can check after every run that nothing is left
reserved, that ``used`` is exactly what the run committed, and that no cap was
passed.

Two kinds of design:

* ``sync``: reserve and settle are plain function calls that never yield to the
  event loop (the floor, ``threading.Lock``, token-budget-py);
* ``async``: reserve and settle are awaited (a checkpoint, an asyncio or anyio
  lock, treasurer's actor).

Each design also has a native hot loop, ``pairs(k)``, written as a user of that
design would write it; throughput runs use it. Latency, fan-out and
tight-budget runs use the separate ``reserve``/``settle`` calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final, Literal

import anyio
import anyio.lowlevel
import token_budget

import treasurer
from treasurer._amounts import TOKENS, USD, parse, parse_caps
from treasurer._budget import DEFAULT_RESERVATION_TTL
from treasurer._ledger import Ledger as _TreasurerLedger
from treasurer._windows import utc_now

Kind = Literal["sync", "async"]

NANOS_PER_USD: Final = 10**9


@dataclass(frozen=True, slots=True)
class Amount:
    """One request's size: tokens, and USD both as a float and as exact nano-dollars."""

    tokens: int
    usd: float
    nanos: int


# What every call reserves, and what it really uses (most calls use less).
RESERVE: Final = Amount(100, 0.001, 1_000_000)
COMMIT: Final = Amount(80, 0.0008, 800_000)
# Used by the tight-budget workload: a call uses all it reserved.
FULL: Final = RESERVE


@dataclass(frozen=True, slots=True)
class Caps:
    tokens: int
    nanos: int

    @property
    def usd(self) -> float:
        return self.nanos / NANOS_PER_USD


@dataclass(frozen=True, slots=True)
class Final_:
    """A design's figures after a run, read once every task has finished."""

    used_tokens: int
    used_nanos: int
    reserved_tokens: int
    reserved_nanos: int
    open_reservations: int


class Instance:
    """A budget of one design, open for one run."""

    kind: Kind = "async"
    # Whether reservations carry USD (treasurer's tokens-only and consume rows do not).
    charges_usd: bool = True

    async def pairs(self, k: int) -> None:
        """``k`` reserve + commit pairs, each committing ``COMMIT``."""
        raise NotImplementedError

    def final(self) -> Final_:
        raise NotImplementedError


class SyncInstance(Instance):
    kind: Kind = "sync"

    def reserve(self) -> object | None:
        """Reserve ``RESERVE``; ``None`` if it does not fit."""
        raise NotImplementedError

    def settle(self, handle: Any, actual: Amount) -> None:
        raise NotImplementedError


class AsyncInstance(Instance):
    kind: Kind = "async"

    async def reserve(self) -> object | None:
        raise NotImplementedError

    async def settle(self, handle: Any, actual: Amount) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Design:
    """A named way to build a budget; ``open`` is an async context manager."""

    key: str
    label: str
    open: Callable[[Caps], AbstractAsyncContextManager[Instance]]
    backends: frozenset[str] = frozenset({"asyncio", "uvloop", "trio"})
    reference: bool = True
    # The workloads it runs (None: all of them).
    workloads: frozenset[str] | None = None


# -- the floor: a bare synchronous check-and-deduct -------------------------------------


class Ledger:
    """Two-axis check-and-deduct with no lock: correct only on one event loop."""

    __slots__ = (
        "cap_nanos",
        "cap_tokens",
        "open",
        "reserved_nanos",
        "reserved_tokens",
        "used_nanos",
        "used_tokens",
    )

    def __init__(self, caps: Caps) -> None:
        self.cap_tokens = caps.tokens
        self.cap_nanos = caps.nanos
        self.used_tokens = self.used_nanos = 0
        self.reserved_tokens = self.reserved_nanos = 0
        self.open = 0

    def reserve(self, tokens: int, nanos: int) -> tuple[int, int] | None:
        if (
            self.used_tokens + self.reserved_tokens + tokens > self.cap_tokens
            or self.used_nanos + self.reserved_nanos + nanos > self.cap_nanos
        ):
            return None
        self.reserved_tokens += tokens
        self.reserved_nanos += nanos
        self.open += 1
        return (tokens, nanos)

    def commit(self, held: tuple[int, int], tokens: int, nanos: int) -> None:
        self.reserved_tokens -= held[0]
        self.reserved_nanos -= held[1]
        self.used_tokens += tokens
        self.used_nanos += nanos
        self.open -= 1

    def final(self) -> Final_:
        return Final_(
            self.used_tokens,
            self.used_nanos,
            self.reserved_tokens,
            self.reserved_nanos,
            self.open,
        )


class FloorInstance(SyncInstance):
    def __init__(self, caps: Caps) -> None:
        self.ledger = Ledger(caps)

    async def pairs(self, k: int) -> None:
        reserve, commit = self.ledger.reserve, self.ledger.commit
        rt, rn, ct, cn = RESERVE.tokens, RESERVE.nanos, COMMIT.tokens, COMMIT.nanos
        for _ in range(k):
            held = reserve(rt, rn)
            assert held is not None
            commit(held, ct, cn)

    def reserve(self) -> object | None:
        return self.ledger.reserve(RESERVE.tokens, RESERVE.nanos)

    def settle(self, handle: Any, actual: Amount) -> None:
        self.ledger.commit(handle, actual.tokens, actual.nanos)

    def final(self) -> Final_:
        return self.ledger.final()


class CheckpointInstance(AsyncInstance):
    """The floor plus one checkpoint per call: the least a trio-style async call costs."""

    def __init__(self, caps: Caps) -> None:
        self.ledger = Ledger(caps)
        # What one call does after its checkpoint (bound once, so the loop pays no
        # extra call), and the money the design takes: nano-dollars here.
        self.check_and_hold: Callable[[int, Any], Any] = self.ledger.reserve
        self.settle_held: Callable[[Any, int, Any], None] = self.ledger.commit

    @staticmethod
    def money(amount: Amount) -> Any:
        return amount.nanos

    async def pairs(self, k: int) -> None:
        reserve, commit = self.check_and_hold, self.settle_held
        checkpoint = anyio.lowlevel.checkpoint
        rt, rm, ct, cm = RESERVE.tokens, self.money(RESERVE), COMMIT.tokens, self.money(COMMIT)
        for _ in range(k):
            await checkpoint()
            held = reserve(rt, rm)
            assert held is not None
            await checkpoint()
            commit(held, ct, cm)

    async def reserve(self) -> object | None:
        await anyio.lowlevel.checkpoint()
        return self.check_and_hold(RESERVE.tokens, self.money(RESERVE))

    async def settle(self, handle: Any, actual: Amount) -> None:
        await anyio.lowlevel.checkpoint()
        self.settle_held(handle, actual.tokens, self.money(actual))

    def final(self) -> Final_:
        return self.ledger.final()


# -- locks --------------------------------------------------------------------------------


class AsyncLockInstance(AsyncInstance):
    """The floor's ledger behind an ``asyncio.Lock`` or an ``anyio.Lock``."""

    def __init__(self, caps: Caps, lock: asyncio.Lock | anyio.Lock) -> None:
        self.ledger = Ledger(caps)
        self.lock = lock

    async def pairs(self, k: int) -> None:
        lock = self.lock
        reserve, commit = self.ledger.reserve, self.ledger.commit
        rt, rn, ct, cn = RESERVE.tokens, RESERVE.nanos, COMMIT.tokens, COMMIT.nanos
        for _ in range(k):
            async with lock:
                held = reserve(rt, rn)
            assert held is not None
            async with lock:
                commit(held, ct, cn)

    async def reserve(self) -> object | None:
        async with self.lock:
            return self.ledger.reserve(RESERVE.tokens, RESERVE.nanos)

    async def settle(self, handle: Any, actual: Amount) -> None:
        async with self.lock:
            self.ledger.commit(handle, actual.tokens, actual.nanos)

    def final(self) -> Final_:
        return self.ledger.final()


class ThreadLockInstance(SyncInstance):
    """The floor's ledger behind a ``threading.Lock`` (what a thread-safe pool does)."""

    def __init__(self, caps: Caps) -> None:
        self.ledger = Ledger(caps)
        self.lock = threading.Lock()

    async def pairs(self, k: int) -> None:
        lock = self.lock
        reserve, commit = self.ledger.reserve, self.ledger.commit
        rt, rn, ct, cn = RESERVE.tokens, RESERVE.nanos, COMMIT.tokens, COMMIT.nanos
        for _ in range(k):
            with lock:
                held = reserve(rt, rn)
            assert held is not None
            with lock:
                commit(held, ct, cn)

    def reserve(self) -> object | None:
        with self.lock:
            return self.ledger.reserve(RESERVE.tokens, RESERVE.nanos)

    def settle(self, handle: Any, actual: Amount) -> None:
        with self.lock:
            self.ledger.commit(handle, actual.tokens, actual.nanos)

    def final(self) -> Final_:
        return self.ledger.final()


# -- token-budget-py (PyPI): a threading.Lock pool with reserve/commit --------------------


class TokenBudgetInstance(SyncInstance):
    def __init__(self, caps: Caps) -> None:
        self.pool = token_budget.BudgetPool(token_cap=caps.tokens, usd_cap=caps.usd)
        self.caps = caps
        self.open = 0

    async def pairs(self, k: int) -> None:
        pool = self.pool
        rt, ru, ct, cu = RESERVE.tokens, RESERVE.usd, COMMIT.tokens, COMMIT.usd
        for _ in range(k):
            with pool.reserve(tokens=rt, usd=ru) as r:
                r.commit(tokens=ct, usd=cu)

    def reserve(self) -> object | None:
        try:
            handle: object = self.pool.try_reserve(tokens=RESERVE.tokens, usd=RESERVE.usd)
        except token_budget.BudgetExceeded:
            return None
        self.open += 1
        return handle

    def settle(self, handle: Any, actual: Amount) -> None:
        handle.commit(tokens=actual.tokens, usd=actual.usd)
        self.open -= 1

    def final(self) -> Final_:
        # The pool keeps USD as a float; round it to nano-dollars to compare.
        pool: Any = self.pool
        return Final_(
            pool._tokens,
            round(pool._usd * NANOS_PER_USD),
            pool._tokens_reserved,
            round(pool._usd_reserved * NANOS_PER_USD),
            self.open,
        )


# -- treasurer ----------------------------------------------------------------------------


def _treasurer_final(budget: treasurer.Budget) -> Final_:
    snap = budget.snapshot()
    return Final_(
        snap.tokens_used,
        int(snap.usd_used * NANOS_PER_USD),
        snap.tokens_reserved,
        int(snap.usd_reserved * NANOS_PER_USD),
        snap.open_reservations,
    )


class LedgerCheckpointInstance(CheckpointInstance):
    """treasurer's own work per call with no actor: the bound for any design on its ledger.

    Each call takes one checkpoint, parses its keywords as ``budget.reserve``
    and ``commit`` do, tells the ledger the time (reservations carry
    ``open_budget``'s default deadline) and runs the library's ``Ledger``
    directly. No handle, no reply, no published snapshot, no events: correct
    only on one event loop, like the floor. What treasurer costs beyond this
    row is the actor and its handles; a target this row misses, no actor on
    this ledger can meet.
    """

    def __init__(self, caps: Caps) -> None:
        usd_cap = Decimal(caps.nanos) / NANOS_PER_USD
        self.treasurer_ledger = _TreasurerLedger(
            parse_caps({"tokens": caps.tokens, "usd": usd_cap}),
            default_ttl=DEFAULT_RESERVATION_TTL,
            now=utc_now(),
        )
        self.check_and_hold = self._reserve
        self.settle_held = self._commit

    @staticmethod
    def money(amount: Amount) -> Any:
        return amount.usd  # what users pass to treasurer

    def _reserve(self, tokens: int, usd: float) -> int | None:
        ledger = self.treasurer_ledger
        amount = parse({"tokens": tokens, "usd": usd})
        ledger.advance(utc_now())
        granted = ledger.reserve(amount)
        return None if isinstance(granted, treasurer.BudgetExceeded) else granted

    def _commit(self, reservation: int, tokens: int, usd: float) -> None:
        ledger = self.treasurer_ledger
        actual = parse({"tokens": tokens, "usd": usd}, default_requests=1)
        ledger.advance(utc_now())
        assert ledger.commit(reservation, actual, expired_ok=True) is None

    def final(self) -> Final_:
        ledger = self.treasurer_ledger
        used, reserved, open_ = ledger.used, ledger.reserved, ledger.open_reservations()
        return Final_(used[TOKENS], used[USD], reserved[TOKENS], reserved[USD], open_)


class TreasurerReserveInstance(AsyncInstance):
    """``async with budget.reserve(tokens=..., usd=...) as r: r.commit(...)``."""

    def __init__(self, budget: treasurer.Budget, *, usd: bool) -> None:
        self.budget = budget
        self.usd = usd
        self.charges_usd = usd

    async def pairs(self, k: int) -> None:
        budget = self.budget
        rt, ru, ct, cu = RESERVE.tokens, RESERVE.usd, COMMIT.tokens, COMMIT.usd
        if self.usd:
            for _ in range(k):
                async with budget.reserve(tokens=rt, usd=ru) as r:
                    r.commit(tokens=ct, usd=cu)
        else:
            for _ in range(k):
                async with budget.reserve(tokens=rt) as r:
                    r.commit(tokens=ct)

    async def reserve(self) -> object | None:
        if self.usd:
            r = self.budget.reserve(tokens=RESERVE.tokens, usd=RESERVE.usd)
        else:
            r = self.budget.reserve(tokens=RESERVE.tokens)
        try:
            await r.__aenter__()
        except treasurer.BudgetExceeded:
            return None
        return r

    async def settle(self, handle: Any, actual: Amount) -> None:
        # What `async with` does on leaving the block after a commit.
        if self.usd:
            handle.commit(tokens=actual.tokens, usd=actual.usd)
        else:
            handle.commit(tokens=actual.tokens)
        await handle.__aexit__(None, None, None)

    def final(self) -> Final_:
        return _treasurer_final(self.budget)


class TreasurerTenantsInstance(TreasurerReserveInstance):
    """Reserve/commit as above, each task as the next of 1,000 tenants in turn."""

    def __init__(self, budget: treasurer.Budget, tenants: int) -> None:
        super().__init__(budget, usd=True)
        self.handles = [budget.tenant(f"tenant-{i}") for i in range(tenants)]
        self.turn = 0

    async def pairs(self, k: int) -> None:
        budget = self.handles[self.turn % len(self.handles)]
        self.turn += 1
        rt, ru, ct, cu = RESERVE.tokens, RESERVE.usd, COMMIT.tokens, COMMIT.usd
        for _ in range(k):
            async with budget.reserve(tokens=rt, usd=ru) as r:
                r.commit(tokens=ct, usd=cu)


class TreasurerConsumeInstance(AsyncInstance):
    """``if await budget.consume(n): ...; await budget.refund(actual, n)`` (tokens only)."""

    charges_usd = False

    def __init__(self, budget: treasurer.Budget) -> None:
        self.budget = budget
        self.open = 0

    async def pairs(self, k: int) -> None:
        budget = self.budget
        rt, ct = RESERVE.tokens, COMMIT.tokens
        for _ in range(k):
            ok = await budget.consume(rt)
            assert ok
            await budget.refund(ct, rt)

    async def reserve(self) -> object | None:
        if not await self.budget.consume(RESERVE.tokens):
            return None
        self.open += 1
        return RESERVE.tokens

    async def settle(self, handle: Any, actual: Amount) -> None:
        await self.budget.refund(actual.tokens, handle)
        self.open -= 1

    def final(self) -> Final_:
        f = _treasurer_final(self.budget)
        # consume charges tokens as used at once, so "open" is tracked here.
        return Final_(f.used_tokens, f.used_nanos, f.reserved_tokens, f.reserved_nanos, self.open)


# -- the registry -------------------------------------------------------------------------


def _simple(factory: Callable[[Caps], Instance]) -> Callable[[Caps], AsyncIterator[Instance]]:
    async def open_(caps: Caps) -> AsyncIterator[Instance]:
        yield factory(caps)

    return open_


def _windows(caps: Caps) -> list[Any]:
    """An hourly, a daily and a rolling one-hour window, each as large as the budget."""
    window: Any = vars(treasurer)["Window"]  # not in every build yet
    usd_cap = Decimal(caps.nanos) / NANOS_PER_USD
    return [
        window.hour(tokens=caps.tokens),
        window.day(usd=usd_cap),
        window.rolling(timedelta(hours=1), tokens=caps.tokens, usd=usd_cap),
    ]


HAS_WINDOWS: Final = hasattr(treasurer, "Window")
HAS_TENANTS: Final = hasattr(treasurer, "TenantCaps")
TENANTS: Final = 1000


@asynccontextmanager
async def _open_treasurer(caps: Caps, kind: str) -> AsyncIterator[Instance]:
    usd_cap = Decimal(caps.nanos) / NANOS_PER_USD
    options: dict[str, Any] = {}
    if kind in ("windows", "tenants"):
        options["windows"] = _windows(caps)
    if kind == "tenants":
        # Every tenant has caps and an hourly window of its own (as large as the
        # budget, so none refuses): the full policy on every request.
        tenant_caps: Any = vars(treasurer)["TenantCaps"]
        hourly = vars(treasurer)["Window"].hour(tokens=caps.tokens)
        options["tenant_defaults"] = tenant_caps(tokens=caps.tokens, usd=usd_cap, windows=[hourly])
    # Mailbox as large as the largest fan-out, so callers never wait on a full one.
    async with treasurer.open_budget(
        tokens=caps.tokens, usd=usd_cap, mailbox_size=16384, **options
    ) as b:
        if kind == "consume":
            yield TreasurerConsumeInstance(b)
        elif kind == "tenants":
            instance = TreasurerTenantsInstance(b, TENANTS)
            for handle in instance.handles:  # all 1,000 exist before the clock starts
                await handle.charge()
            yield instance
        else:
            yield TreasurerReserveInstance(b, usd=kind != "tokens")


def _open(factory: Callable[[Caps], Instance]) -> Callable[[Caps], Any]:
    return asynccontextmanager(_simple(factory))


FLOOR: Final = "floor"
CHECKPOINT: Final = "floor+checkpoint"
LEDGER_CHECKPOINT: Final = "ledger+checkpoint"
ASYNCIO_LOCK: Final = "asyncio.Lock"
ANYIO_LOCK: Final = "anyio.Lock"
ANYIO_LOCK_FAST: Final = "anyio.Lock(fast)"
THREADING_LOCK: Final = "threading.Lock"
TOKEN_BUDGET: Final = "token-budget-py"
TREASURER: Final = "treasurer"
TREASURER_TOKENS: Final = "treasurer(tokens)"
TREASURER_CONSUME: Final = "treasurer consume"
TREASURER_WINDOWS: Final = "treasurer+windows"
TREASURER_TENANTS: Final = "treasurer+windows+tenants"


def _policy_design(key: str, description: str, kind: str, *, available: bool) -> list[Design]:
    """A treasurer variant with more of the ledger's policy on (pairs only), if the
    measured build has it."""
    if not available:
        return []
    return [
        Design(
            key,
            description,
            lambda caps: _open_treasurer(caps, kind),
            reference=False,
            workloads=frozenset({"pairs"}),
        )
    ]


DESIGNS: Final = (
    Design(FLOOR, "floor: bare check-and-deduct, no await", _open(FloorInstance)),
    Design(CHECKPOINT, "floor + one anyio checkpoint per call", _open(CheckpointInstance)),
    Design(
        LEDGER_CHECKPOINT,
        "treasurer's ledger, parsing and clock with one checkpoint per call, no actor",
        _open(LedgerCheckpointInstance),
        workloads=frozenset({"pairs"}),
    ),
    Design(
        ASYNCIO_LOCK,
        "asyncio.Lock",
        _open(lambda caps: AsyncLockInstance(caps, asyncio.Lock())),
        backends=frozenset({"asyncio", "uvloop"}),
    ),
    Design(ANYIO_LOCK, "anyio.Lock", _open(lambda caps: AsyncLockInstance(caps, anyio.Lock()))),
    Design(
        ANYIO_LOCK_FAST,
        "anyio.Lock(fast_acquire=True)",
        _open(lambda caps: AsyncLockInstance(caps, anyio.Lock(fast_acquire=True))),
    ),
    Design(THREADING_LOCK, "threading.Lock", _open(ThreadLockInstance)),
    Design(
        TOKEN_BUDGET,
        "token-budget-py BudgetPool reserve()/commit",
        _open(TokenBudgetInstance),
    ),
    Design(
        TREASURER,
        "treasurer reserve/commit, tokens + USD",
        lambda caps: _open_treasurer(caps, "reserve"),
        reference=False,
    ),
    Design(
        TREASURER_TOKENS,
        "treasurer reserve/commit, tokens only",
        lambda caps: _open_treasurer(caps, "tokens"),
        reference=False,
        workloads=frozenset({"pairs", "tight"}),
    ),
    Design(
        TREASURER_CONSUME,
        "treasurer consume/refund (tokens)",
        lambda caps: _open_treasurer(caps, "consume"),
        reference=False,
        workloads=frozenset({"pairs", "tight"}),
    ),
    *_policy_design(
        TREASURER_WINDOWS,
        "treasurer reserve/commit, tokens + USD, with an hourly, a daily and a "
        "rolling one-hour window",
        "windows",
        available=HAS_WINDOWS,
    ),
    *_policy_design(
        TREASURER_TENANTS,
        "treasurer reserve/commit, tokens + USD, the three windows above, and "
        "1,000 tenants with caps and an hourly window each (tasks take turns)",
        "tenants",
        available=HAS_TENANTS,
    ),
)

LOCKS: Final = (ASYNCIO_LOCK, ANYIO_LOCK, ANYIO_LOCK_FAST, THREADING_LOCK)
BASELINES: Final = (FLOOR, CHECKPOINT, LEDGER_CHECKPOINT, *LOCKS, TOKEN_BUDGET)


def designs_for(backend: str, workload: str, keys: set[str] | None = None) -> list[Design]:
    return [
        d
        for d in DESIGNS
        if backend in d.backends
        and (d.workloads is None or workload in d.workloads)
        and (keys is None or d.key in keys)
    ]
