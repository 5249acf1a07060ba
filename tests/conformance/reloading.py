"""A store that writes its whole state out as JSON after every batch and reads it
back before the next: what a durable store (SQLite, Redis) does when another
process wrote in between. Run through the conformance suite, it proves that
:mod:`treasurer._core.state` keeps everything the semantics depend on, and that
a ledger rebuilt from records (no memo of waiters, no cached reads) behaves
exactly as one that lived in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from treasurer import InvalidOption
from treasurer._core import state
from treasurer._core.commands import Command, OpenChild, Reserve
from treasurer._core.config import BudgetConfig
from treasurer._core.ledger import Ledger
from treasurer._core.outcomes import ScopeView
from treasurer._core.reads import view
from treasurer._core.scopes import ScopePath
from treasurer._stores.base import BatchResult, Clock, Health, run_batch


class ReloadingStore:
    """Keeps a budget only as JSON text; every batch runs on a ledger rebuilt from it."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple[str, str]] = {}  # name -> (config, state), both JSON
        self._config: BudgetConfig | None = None
        self._clock: Clock | None = None
        self.loads = 0

    async def open(
        self, config: BudgetConfig, clock: Clock, *, reconfigure: bool = False
    ) -> ScopeView:
        known = self.saved.get(config.name)
        config_text = json.dumps(state.dump_config(config), sort_keys=True)
        if known is not None and known[0] != config_text:
            raise InvalidOption(f"budget {config.name!r} exists with another configuration")
        self._config, self._clock = config, clock
        ledger = self._load(clock()) if known is not None else Ledger(config, clock())
        self._save(ledger)
        return view(ledger.root, ledger.now)

    def _load(self, now: Any) -> Ledger:
        assert self._config is not None
        self.loads += 1
        return state.load_ledger(self._config, json.loads(self.saved[self._config.name][1]), now)

    def _save(self, ledger: Ledger) -> None:
        assert self._config is not None
        config_text = json.dumps(state.dump_config(self._config), sort_keys=True)
        self.saved[self._config.name] = (config_text, json.dumps(state.dump_ledger(ledger)))

    async def apply(
        self,
        batch: Sequence[Command],
        waiting: Sequence[Reserve | OpenChild] = (),
        *,
        new_from: int = 0,
        verbose: bool = True,
    ) -> BatchResult:
        if self._clock is None:
            raise InvalidOption("the store serves no budget: open one first")
        now = self._clock()
        ledger = self._load(now)
        result = run_batch(ledger, now, batch, waiting, new_from=new_from, verbose=verbose)
        self._save(ledger)
        return result

    async def refresh(self, scope: ScopePath) -> ScopeView | None:
        assert self._clock is not None
        ledger = self._load(self._clock())
        found = ledger.tree.scopes.get(scope)
        return None if found is None else view(found, ledger.now)

    async def health(self) -> Health:
        start = time.perf_counter()
        return Health(
            self._config is not None, "reloading", timedelta(seconds=time.perf_counter() - start)
        )

    async def close(self) -> None:
        self._config = self._clock = None
