"""``treasurer.sync.open_budget``: a budget on an event loop thread of its own."""

from __future__ import annotations

import atexit
import threading
import weakref
from contextlib import AbstractContextManager
from typing import Any, Final, Literal, Unpack

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._errors import InvalidOption, LoopThreadError
from .._handles.budget import Budget
from .._handles.open import run_budget
from .._handles.settings import BudgetOptions, Settings
from .calls import PortalCaller, running_event_loop
from .facade import SyncBudget

Backend = Literal["asyncio", "trio"]
_open: Final[weakref.WeakSet[OwnedSyncBudget]] = weakref.WeakSet()


class OwnedSyncBudget(SyncBudget):
    """A SyncBudget that runs its budget on an event loop in a thread of its own,
    through an anyio blocking portal."""

    def __init__(self, settings: Settings, backend: Backend, options: dict[str, Any]) -> None:
        self._lock = threading.Lock()  # only for close(), never on a call's path
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(
            backend, options, name=f"treasurer {settings.config.name}"
        )
        portal = self._portal_cm.__enter__()
        self._budget_cm: AbstractContextManager[Budget] = portal.wrap_async_context_manager(
            run_budget(settings)
        )
        try:
            budget = self._budget_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        super().__init__(budget, PortalCaller(settings.config.name, portal))
        _open.add(self)

    def close(self) -> None:
        """Close the budget (settlements still queued are applied) and stop its thread."""
        with self._lock:
            if self._caller.closed:
                return
            self._caller.check("close()")
            self._caller.closed = True
        try:
            self._budget_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)
            _open.discard(self)


def open_budget(
    *,
    backend: Backend = "asyncio",
    backend_options: dict[str, Any] | None = None,
    **options: Unpack[BudgetOptions],
) -> SyncBudget:
    """Open a budget for synchronous code: ``with open_budget(tokens=...) as budget:``.

    The budget's actor runs on an event loop (``backend``: asyncio by default,
    or trio) in a thread of its own. The options are those of
    :func:`treasurer.open_budget`; ``on_event`` runs on that thread, so a
    synchronous callback must not call this budget's blocking methods. Close
    it, or leave the ``with`` block, to stop the thread; a budget still open
    when the interpreter exits is closed first, so threads blocked in it are
    answered and the process can end.
    """
    settings = Settings.build(options)  # bad input raises here, before any thread starts
    if str(backend) not in ("asyncio", "trio"):
        raise InvalidOption(f"backend must be 'asyncio' or 'trio', not {backend!r}")
    loop = running_event_loop()
    if loop is not None:
        raise LoopThreadError(
            f"treasurer.sync.open_budget() blocks, and this thread runs an {loop} event loop; "
            "use treasurer.open_budget in async code (or open it from a worker thread)"
        )
    return OwnedSyncBudget(settings, backend, dict(backend_options or {}))


def _close_forgotten_budgets() -> None:
    for budget in list(_open):
        budget.close()


# Before the interpreter joins non-daemon threads (a thread blocked in a wait
# on a budget would keep it from exiting otherwise), and before
# concurrent.futures joins the portal's thread. atexit runs too late for both.
_register = getattr(threading, "_register_atexit", atexit.register)
_register(_close_forgotten_budgets)
