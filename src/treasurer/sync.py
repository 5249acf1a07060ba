"""The budget for threads and plain synchronous code.

``with treasurer.sync.open_budget(tokens=100_000, usd=5) as budget:`` runs the
budget's actor on an event loop in a thread of its own and gives back a
:class:`SyncBudget`, safe to share between any number of threads.
"""

from __future__ import annotations

from ._sync.facade import SyncBudget as SyncBudget
from ._sync.owned import open_budget as open_budget
from ._sync.reservation import SyncReservation as SyncReservation
from ._sync.subscription import SyncSubscription as SyncSubscription

__all__ = ("SyncBudget", "SyncReservation", "SyncSubscription", "open_budget")
