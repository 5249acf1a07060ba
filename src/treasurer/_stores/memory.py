"""The embedded store: the budget's state in this process's memory, the default."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta

from .._core import state
from .._core.commands import Command, OpenChild, Reserve
from .._core.config import BudgetConfig
from .._core.ledger import Ledger
from .._core.outcomes import ScopeView
from .._core.reads import view
from .._core.scopes import ScopePath
from .._errors import InvalidOption
from .base import BatchResult, Clock, Health, run_batch


class MemoryStore:
    """Keeps each budget's :class:`~treasurer._core.ledger.Ledger` in memory.

    Nothing to install and nothing to run. A budget lives as long as the
    store object: budgets opened one after the other on the same store, with
    the same name and configuration, continue where the last one stopped.
    """

    def __init__(self) -> None:
        self._ledgers: dict[str, tuple[Ledger, Clock]] = {}
        self._ledger: Ledger | None = None
        self._clock: Clock | None = None

    async def open(
        self, config: BudgetConfig, clock: Clock, *, reconfigure: bool = False
    ) -> ScopeView:
        if self._ledger is not None:
            raise InvalidOption("a MemoryStore serves one open budget at a time")
        known = self._ledgers.get(config.name)
        if known is None:
            known = self._ledgers[config.name] = (Ledger(config, clock()), clock)
        elif known[0].config != config:
            stored, given = state.dump_config(known[0].config), state.dump_config(config)
            if not reconfigure:
                raise state.other_configuration(config.name, "this store", stored, given)
            record = state.dump_ledger(known[0])
            ledger = state.reconfigured(config, known[0].config.tenants, record, clock())
            known = self._ledgers[config.name] = (ledger, clock)
        self._ledger, self._clock = known
        return view(self._ledger.root, self._clock())

    def _open(self) -> tuple[Ledger, Clock]:
        if self._ledger is None or self._clock is None:
            raise InvalidOption("the store serves no budget: open one first")
        return self._ledger, self._clock

    async def apply(
        self,
        batch: Sequence[Command],
        waiting: Sequence[Reserve | OpenChild] = (),
        *,
        new_from: int = 0,
        verbose: bool = True,
    ) -> BatchResult:
        ledger, clock = self._open()
        return run_batch(ledger, clock(), batch, waiting, new_from=new_from, verbose=verbose)

    async def refresh(self, scope: ScopePath) -> ScopeView | None:
        ledger, _ = self._open()
        found = ledger.tree.scopes.get(scope)
        return None if found is None else view(found, ledger.now)

    async def health(self) -> Health:
        start = time.perf_counter()
        ok = self._ledger is not None
        return Health(ok, "memory", timedelta(seconds=time.perf_counter() - start))

    async def close(self) -> None:
        self._ledger = self._clock = None
