"""The designs under test, by key: what each is, where it runs, what it measures in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Final

import anyio

import actors
from amounts import WORKLOADS, Caps, Instance, Workload
from baselines import Floor, TokenBudgetPy
from locked import LockedLedger

Opener = Callable[[Caps, Workload], AbstractAsyncContextManager[Instance]]

ASYNCIO: Final = frozenset({"asyncio", "uvloop"})
ALL: Final = frozenset({"asyncio", "uvloop", "trio"})

FLOOR: Final = "floor"
CHECKPOINT: Final = "floor+checkpoint"
ASYNCIO_LOCK: Final = "ledger+asyncio.Lock"
ANYIO_LOCK: Final = "ledger+anyio.Lock"
TREASURER: Final = "treasurer"
NULL: Final = "null actor"
TENANTS: Final = "treasurer+windows+tenants"
TOKEN_BUDGET: Final = "token-budget-py"


@dataclass(frozen=True)
class Design:
    key: str
    label: str
    open: Opener
    backends: frozenset[str] = ALL
    workloads: tuple[Workload, ...] = WORKLOADS
    fanout: bool = True


def _plain(make: Callable[[Caps, Workload], Instance]) -> Opener:
    @asynccontextmanager
    async def open_(caps: Caps, workload: Workload) -> AsyncIterator[Instance]:
        yield make(caps, workload)

    return open_


DESIGNS: Final = (
    Design(
        FLOOR,
        "bare check-and-deduct, no await (the floor)",
        _plain(lambda caps, w: Floor(caps, w, checkpoint=False)),
    ),
    Design(
        CHECKPOINT,
        "bare check-and-deduct + one anyio checkpoint per op",
        _plain(lambda caps, w: Floor(caps, w, checkpoint=True)),
    ),
    Design(
        ASYNCIO_LOCK,
        "treasurer's ledger behind an asyncio.Lock",
        _plain(lambda caps, w: LockedLedger(caps, w, asyncio.Lock)),
        backends=ASYNCIO,
    ),
    Design(
        ANYIO_LOCK,
        "treasurer's ledger behind an anyio.Lock",
        _plain(lambda caps, w: LockedLedger(caps, w, anyio.Lock)),
    ),
    Design(TREASURER, "treasurer, default configuration", actors.default),
    Design(NULL, "treasurer's runtime on a store that does no work", actors.null),
    Design(
        TENANTS,
        "treasurer, 2 windows, pairs spread over 1,000 tenants",
        actors.windows_and_tenants,
        workloads=("reserve",),
        fanout=False,
    ),
    Design(
        TOKEN_BUDGET,
        "token-budget-py BudgetPool (threading.Lock, USD as float)",
        _plain(TokenBudgetPy),
        workloads=("reserve",),
        fanout=False,
    ),
)
BY_KEY: Final = {design.key: design for design in DESIGNS}


def throughput_designs(backend: str, workload: Workload) -> list[Design]:
    return [d for d in DESIGNS if backend in d.backends and workload in d.workloads]


def fanout_designs(backend: str) -> list[Design]:
    return [d for d in DESIGNS if backend in d.backends and d.fanout]
