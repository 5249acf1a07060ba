"""Budget operations beyond spending: subscriptions, overrides, tenant caps,
usage reports, child budgets, and reading the store. A base of :class:`Budget`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Self, Unpack

import anyio
import attrs

from .._core import config
from .._core.axes import count, parse, parse_caps
from .._core.commands import (
    CloseChild,
    Command,
    OpenChild,
    ReadUsage,
    RemoveOverride,
    SetOverride,
    SetTenantCaps,
)
from .._core.events import Override
from .._core.options import Amounts, CapOptions
from .._core.outcomes import ChildOpened, Refusal, Rejected, Reply, ScopeView, UsageFigures
from .._core.scopes import ROOT, ScopePath, tenant_of
from .._core.values import Snapshot, UsageReport
from .._errors import BudgetClosed, InvalidAmount, InvalidOption
from .._runtime.actor import Actor
from .._runtime.subscription import Subscription
from .._stores.base import Health
from .settings import TenantCaps

if TYPE_CHECKING:
    from .core import BudgetCore


def raise_if_refused(reply: Reply) -> Reply:
    """The reply, or the error it stands for."""
    if isinstance(reply, Refusal | Rejected):
        raise reply.error()
    return reply


class Operations:
    """What :class:`Budget` does besides spending and reading; see there."""

    __slots__ = ("_child", "_core", "_last", "_scope")

    def __init__(self, core: BudgetCore, scope: ScopePath = ROOT, child: str | None = None) -> None:
        self._core = core
        self._scope = scope
        self._child = child
        self._last: ScopeView | None = None  # a child's figures when it closed

    async def refresh(self) -> Snapshot:
        """This scope's figures as the store holds them now (for the memory store,
        the same as :meth:`snapshot` after the last batch)."""
        self._core.actor.check_caller()
        view = await self._core.actor.store.refresh(self._scope)
        return self._core.snapshot(self._scope, self._last) if view is None else view.snapshot()

    async def health(self) -> Health:
        """Whether the store answers, and how fast; truthy when healthy."""
        self._core.actor.check_caller()
        return await self._core.actor.store.health()

    # -- everything else -----------------------------------------------------------

    @asynccontextmanager
    async def subscribe(self, buffer: int = 256) -> AsyncIterator[Subscription]:
        """Receive the events of this scope: ``async with budget.subscribe() as events:``.

        At most ``buffer`` events wait unread; beyond that new ones are dropped
        and counted in ``events.missed``, so a slow subscriber never slows the
        budget. Iteration ends when the block or the budget ends.
        """
        subscription = self.add_subscriber(buffer)
        try:
            yield subscription
        finally:
            self.remove_subscriber(subscription)

    def add_subscriber(self, buffer: int) -> Subscription:
        """A new subscription to this scope's events (on the budget's event loop)."""
        if count(buffer, "buffer") < 1:
            raise InvalidAmount("buffer must be >= 1")
        actor = self._core.actor
        actor.check_caller()
        subscription = Subscription(buffer, tenant_of(self._scope), self._child)
        actor.subscribers.add(subscription)
        return subscription

    def remove_subscriber(self, subscription: Subscription) -> None:
        self._core.actor.subscribers.discard(subscription)
        subscription.close()

    async def override(
        self,
        *,
        expires_at: datetime,
        window: str = "lifetime",
        reason: str = "",
        created_by: str = "",
        **increase: Unpack[Amounts],
    ) -> Override:
        """Raise caps until ``expires_at`` (on the budget's clock), e.g.
        ``await budget.override(tokens=50_000, window="hour", expires_at=...)``.

        Applies to this handle's scope only, to the lifetime or one window,
        and only to axes that scope caps; :meth:`remove_override` ends it early.
        """
        if not isinstance(expires_at, datetime) or expires_at.utcoffset() is None:
            raise InvalidOption(f"expires_at must be an aware datetime, not {expires_at!r}")
        for what, value in (("window", window), ("reason", reason), ("created_by", created_by)):
            if not isinstance(value, str):
                raise InvalidOption(f"{what} must be a str, not {value!r}")
        amount = parse(increase, per_call=False)
        command = SetOverride(self._scope, window, amount, expires_at, reason, created_by)
        reply = raise_if_refused(await self._request(command))
        assert isinstance(reply, Override)
        return reply

    async def remove_override(self, override: Override | int) -> None:
        """End an override set through this same handle before its expiry (also after
        a child budget's block ended: it is a clean-up, like settling a reservation)."""
        if isinstance(override, Override):
            if override.budget != self._core.name:
                raise InvalidOption(
                    f"{override!r} belongs to budget {override.budget!r}, not {self._core.name!r}"
                )
            override = override.id
        elif isinstance(override, bool) or not isinstance(override, int):
            raise InvalidOption(f"remove_override() takes an Override or its id, not {override!r}")
        command = RemoveOverride(self._scope, override)
        raise_if_refused(await self._core.actor.request(command))

    async def set_tenant_caps(self, tenant: str, caps: TenantCaps | None) -> None:
        """Give ``tenant`` its own caps from now on (``None``: back to ``tenant_defaults``).

        Usage it has in a window kept under the same name carries over.
        """
        if self._scope != ROOT:
            raise InvalidOption("set_tenant_caps() is called on the budget's own handle")
        config.name(tenant, "a tenant's name")
        if caps is not None and not isinstance(caps, TenantCaps):
            raise InvalidOption(f"caps must be a treasurer.TenantCaps or None, not {caps!r}")
        limits = None if caps is None else caps.limits
        raise_if_refused(await self._request(SetTenantCaps(tenant, limits)))
        if limits is None:
            self._core.tenant_limits.pop(tenant, None)
        else:
            self._core.tenant_limits[tenant] = limits

    async def usage(
        self, period: str = "lifetime", *, top: int = 5, group_by: str | None = None
    ) -> UsageReport:
        """Usage over ``period`` ("lifetime" or a time window's name, e.g. "day").

        Used, reserved, limits, remaining and percent used per axis, open
        reservations, and the ``top`` models by tokens and by USD. With
        ``group_by`` ("model", "tenant", "child", "request_id", "session_id"
        or "tag:<name>"), also usage per value of that metadata, from the
        budget's usage log.
        """
        if not isinstance(period, str):
            raise InvalidOption(f"period must be a window's name or 'lifetime', not {period!r}")
        if count(top, "top") < 1:
            raise InvalidAmount("top must be >= 1")
        reply = raise_if_refused(await self._request(ReadUsage(self._scope, period)))
        assert isinstance(reply, UsageFigures)
        report = reply.report(top)
        if group_by is None:
            return report
        usage_log = self._core.settings.usage_log
        if usage_log is None:
            raise InvalidOption(
                "usage(group_by=...) reads the budget's usage records: open it with "
                "usage_log=treasurer.MemoryUsageLog() (or a SqliteUsageLog)"
            )
        groups, complete = await usage_log.groups(
            group_by,
            budget=self._core.name,
            since=reply.start,
            tenant=tenant_of(self._scope),
            child=self._child,
        )
        return attrs.evolve(report, group_by=group_by, groups=groups, groups_complete=complete)

    @asynccontextmanager
    async def child(
        self, *, name: str | None = None, wait: bool = False, **caps: Unpack[CapOptions]
    ) -> AsyncIterator[Self]:
        """A sub-budget for part of a run (a sub-agent, a batch): ``async with budget.child(...)``.

        Its caps are reserved in this budget when it opens (raising
        :class:`BudgetExceeded`, or waiting with ``wait=True``, if they do not
        fit) and held until the block ends. Name only the caps you want; this
        budget bounds the rest, and every request in the child must fit this
        budget's caps too (windows and tenants included). Its spend counts
        here as it happens; when the block ends, what is left of its caps
        comes back. What settles in it after the block ends still counts.
        """
        limits = parse_caps(caps)
        if not isinstance(wait, bool):
            raise InvalidOption(f"wait must be True or False, not {wait!r}")
        if name is not None:
            config.name(name, "a child budget's name")
        actor = self._core.actor
        if self._last is not None:
            raise self._child_closed()
        reply = raise_if_refused(
            await actor.request(OpenChild(self._scope, name, limits), wait=wait)
        )
        assert isinstance(reply, ChildOpened)
        child = type(self)(self._core, reply.path, reply.name)
        try:
            yield child
        finally:
            final = await _close(actor, CloseChild(reply.path))
            child._last = final if isinstance(final, ScopeView) else self._core.view(reply.path)

    async def _request(self, command: Command) -> Reply:
        if self._last is not None:
            raise self._child_closed()
        return await self._core.actor.request(command)

    def _child_closed(self) -> BudgetClosed:
        return BudgetClosed(f"child budget {self._child!r} of {self._core.name!r} is closed")


async def _close(actor: Actor, command: CloseChild) -> Reply:
    """Close a child budget, even from a cancelled scope: posted first, then awaited
    (shielded: the actor answers at once, and the child's final figures are needed)."""
    slot = actor.post_awaitable(command)
    with anyio.CancelScope(shield=True):
        reply = await actor.settled(slot)
    return reply  # noqa: RET504 - after the scope, which a type checker thinks may swallow
