"""``SyncBudget`` and ``SyncReservation``: the async API, blocking, for threads."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar, Unpack

import anyio
import anyio.lowlevel

from .._core.events import Override
from .._core.options import Amounts, CapOptions, UsageInfo
from .._core.values import Caps, Check, Snapshot, Statistics, Totals, UsageReport
from .._errors import (
    BudgetClosed,
    InvalidOption,
    TreasurerError,
)
from .._handles.budget import Budget
from .._handles.settings import TenantCaps
from .._ops.forecast import Forecast
from .._runtime.subscription import Subscription
from .._stores.base import Health
from .calls import Caller, PortalCaller, TokenCaller
from .reservation import SyncReservation
from .subscription import SyncSubscription

T = TypeVar("T")


class SyncBudget:
    """A budget for threads: the methods of :class:`treasurer.Budget`, blocking.

    Safe to share between any number of threads. Get one from
    :func:`treasurer.sync.open_budget` (which owns the budget and the event
    loop thread it runs on) or from :meth:`treasurer.Budget.sync_view` (a
    view of a budget in your own event loop). Reads (``snapshot``,
    ``totals``, ``remaining``, ``statistics``) never block.
    """

    def __init__(self, budget: Budget, caller: Caller) -> None:
        self._budget = budget
        self._caller = caller

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        return self._caller.call(functools.partial(func, *args, **kwargs), what=what)

    @property
    def name(self) -> str:
        return self._budget.name

    @property
    def caps(self) -> Caps:
        return self._budget.caps

    @property
    def per_request(self) -> Caps:
        return self._budget.per_request

    @property
    def closed(self) -> bool:
        return self._caller.closed or self._budget.closed

    @property
    def tenant_name(self) -> str | None:
        """The tenant this handle is scoped to (``None``: the whole budget)."""
        return self._budget.tenant_name

    def tenant(self, name: str) -> SyncBudget:
        """A blocking handle scoped to one tenant; see :meth:`treasurer.Budget.tenant`."""
        return _Borrowed(self._budget.tenant(name), self._caller)

    def consume(self, tokens: int | None = None, /, **amounts: Unpack[Amounts]) -> bool:
        """Atomically check and deduct; see :meth:`treasurer.Budget.consume`."""
        return bool(self._call("consume()", self._budget.consume, tokens, **amounts))

    def refund(self, actual_used: int, estimated: int) -> None:
        """Correct an earlier consume; see :meth:`treasurer.Budget.refund`."""
        self._call("refund()", self._budget.refund, actual_used, estimated)

    def record(self, **usage: Unpack[UsageInfo]) -> Totals:
        """Charge usage if it fits; see :meth:`treasurer.Budget.record`."""
        totals: Totals = self._call("record()", self._budget.record, **usage)
        return totals

    def charge(self, **usage: Unpack[UsageInfo]) -> Totals:
        """Record usage that already happened; never refused. See ``Budget.charge``."""
        totals: Totals = self._call("charge()", self._budget.charge, **usage)
        return totals

    def reserve(
        self,
        *,
        ttl: timedelta | None = None,
        wait: bool = False,
        timeout: float | None = None,
        **usage: Unpack[UsageInfo],
    ) -> SyncReservation:
        """Hold an estimate for one call: ``with budget.reserve(...) as r: ...``.

        See :meth:`treasurer.Budget.reserve`. With ``wait=True`` the thread
        blocks until it fits, or for at most ``timeout`` seconds (then
        ``TimeoutError``). Validated here, in the calling thread.
        """
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise InvalidOption(f"timeout must be a positive number of seconds, not {timeout!r}")
        reservation = self._budget.reserve(ttl=ttl, wait=wait, **usage)
        return SyncReservation(self._caller, reservation, timeout)

    def settle(
        self, reservation: int, *, release: bool = False, **usage: Unpack[UsageInfo]
    ) -> None:
        """Settle an open reservation by id; see :meth:`treasurer.Budget.settle`."""
        self._call("settle()", self._budget.settle, reservation, release=release, **usage)

    def check(self, **amounts: Unpack[Amounts]) -> Check:
        """Would this request fit now? See :meth:`treasurer.Budget.check`."""
        result: Check = self._call("check()", self._budget.check, **amounts)
        return result

    def usage(
        self, period: str = "lifetime", *, top: int = 5, group_by: str | None = None
    ) -> UsageReport:
        """Usage over a period; see :meth:`treasurer.Budget.usage`."""
        report: UsageReport = self._call(
            "usage()", self._budget.usage, period, top=top, group_by=group_by
        )
        return report

    def override(
        self,
        *,
        expires_at: datetime,
        window: str = "lifetime",
        reason: str = "",
        created_by: str = "",
        **increase: Unpack[Amounts],
    ) -> Override:
        """Raise caps until ``expires_at``; see :meth:`treasurer.Budget.override`."""
        override: Override = self._call(
            "override()",
            self._budget.override,
            expires_at=expires_at,
            window=window,
            reason=reason,
            created_by=created_by,
            **increase,
        )
        return override

    def remove_override(self, override: Override | int) -> None:
        """End an override early."""
        self._call("remove_override()", self._budget.remove_override, override)

    def set_tenant_caps(self, tenant: str, caps: TenantCaps | None) -> None:
        """Give a tenant its own caps from now on; see ``Budget.set_tenant_caps``."""
        self._call("set_tenant_caps()", self._budget.set_tenant_caps, tenant, caps)

    def reset(self, window: str | None = None) -> None:
        """Zero usage (or one window's); open reservations stay reserved."""
        self._call("reset()", self._budget.reset, window)

    def refresh(self) -> Snapshot:
        """The figures as the store holds them now; see ``Budget.refresh``."""
        snapshot: Snapshot = self._call("refresh()", self._budget.refresh)
        return snapshot

    def health(self) -> Health:
        """Whether the store answers; see ``Budget.health``."""
        health: Health = self._call("health()", self._budget.health)
        return health

    @contextmanager
    def subscribe(self, buffer: int = 256) -> Iterator[SyncSubscription]:
        """Events as a blocking iterator: ``with budget.subscribe() as events: for e in events``.

        Same rules as :meth:`treasurer.Budget.subscribe`; iteration ends when
        the block or the budget ends.
        """
        subscription: Subscription = self._call("subscribe()", self._budget.add_subscriber, buffer)
        try:
            yield SyncSubscription(self._caller, subscription)
        finally:
            try:
                self._caller.call(self._budget.remove_subscriber, subscription, what="subscribe()")
            except BudgetClosed:
                subscription.close()  # the budget has ended: nothing runs on its loop now

    @contextmanager
    def child(
        self, *, name: str | None = None, wait: bool = False, **caps: Unpack[CapOptions]
    ) -> Iterator[SyncBudget]:
        """A sub-budget: ``with budget.child(tokens=...) as sub:``; see ``Budget.child``.

        On budgets opened with :func:`open_budget`; a :meth:`~treasurer.Budget.sync_view`
        has no task of its own to hold the child open, so open children in async code there.
        """
        caller = self._caller
        if not isinstance(caller, PortalCaller):
            raise TreasurerError(
                "child() is not available on a sync_view(); open the child with "
                "`async with budget.child(...)` in async code and take its sync_view()"
            )
        caller.check("child()")
        opening = self._budget.child(name=name, wait=wait, **caps)
        # The child's block must be entered and left in one task: the portal runs it whole.
        with caller.portal.wrap_async_context_manager(opening) as sub:
            yield _Borrowed(sub, caller)

    @property
    def remaining(self) -> int | None:
        """Tokens left (``None`` if uncapped); never blocks."""
        return self._budget.remaining

    def snapshot(self) -> Snapshot:
        """The figures as of the actor's last batch; never blocks."""
        return self._budget.snapshot()

    def totals(self) -> Totals:
        """Usage so far; never blocks."""
        return self._budget.totals()

    def statistics(self) -> Statistics:
        """The actor's figures; never blocks."""
        return self._budget.statistics()

    def forecast(self) -> list[Forecast]:
        """See :meth:`treasurer.Budget.forecast` (computed on the budget's loop)."""
        forecasts: list[Forecast] = self._call("forecast()", self._budget.forecast)
        return forecasts

    def tenants(self) -> list[str]:
        """See :meth:`treasurer.Budget.tenants`; never blocks."""
        return self._budget.tenants()

    def close(self) -> None:
        """Stop using the budget from here; later calls raise BudgetClosed.

        For a budget opened by :func:`open_budget` this closes the budget and
        stops its thread; for a view it only detaches the view.
        """
        self._caller.closed = True

    def __enter__(self) -> SyncBudget:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncBudget {self.name!r} {'closed' if self.closed else 'open'}>"


class _Borrowed(SyncBudget):
    """A tenant's or child budget's handle: it lives as long as its budget."""

    def close(self) -> None:
        """Nothing to close: this handle shares its budget's life."""


def sync_view(budget: Budget) -> SyncBudget:
    """A blocking view of ``budget`` for other threads (made on the budget's loop)."""
    return SyncBudget(budget, TokenCaller(budget.name, anyio.lowlevel.current_token()))
