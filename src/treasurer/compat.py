"""Drop-in names for code moving to treasurer from other budget libraries.

``BudgetPool(token_cap=..., usd_cap=...)`` opens a thread-safe
:class:`treasurer.sync.SyncBudget` whose methods already match the
token-budget-py pool (``record``, ``reserve`` / ``commit``, ``snapshot``,
``reset``). See docs/coming-from.md for the other mappings.
"""

from __future__ import annotations

from ._amounts import Money
from ._errors import BudgetExceeded as BudgetExceeded
from ._sync import SyncBudget
from ._sync import open_budget as _open_sync_budget

__all__ = ("BudgetExceeded", "BudgetPool")


def BudgetPool(token_cap: int | None = None, usd_cap: Money | None = None) -> SyncBudget:
    """A pool with an optional token cap and USD cap, shared by any number of threads.

    Unlike token-budget-py's pool it runs an actor thread: close it (or use it
    as a context manager) when done; one left open is closed at exit.
    """
    return _open_sync_budget(tokens=token_cap, usd=usd_cap, name="pool")
