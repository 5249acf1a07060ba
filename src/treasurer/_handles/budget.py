"""``Budget``: the handle every task holds. It sends commands and reads snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Unpack

from .._core import config
from .._core.axes import count, parse
from .._core.commands import (
    Charge,
    Commit,
    Consume,
    Meta,
    Probe,
    Record,
    Refund,
    Release,
    Reset,
    split_usage,
)
from .._core.options import Amounts, UsageInfo
from .._core.outcomes import (
    Charged,
    Refusal,
    ScopeView,
    Settled,
    Verdict,
)
from .._core.scopes import ROOT, ScopePath, tenant_of, tenant_path
from .._core.values import Caps, Check, Snapshot, Statistics, Totals, least
from .._errors import InvalidAmountType, InvalidOption, ReservationExpired
from .operations import Operations, raise_if_refused
from .reservation import Reservation

if TYPE_CHECKING:
    from .._ops.forecast import Forecast
    from ..sync import SyncBudget


class Budget(Operations):
    """A handle on a budget; cheap to pass to every task.

    Every call that changes the budget is a command to its actor, so
    concurrent calls never interleave inside a check-and-deduct. Reads
    (:attr:`remaining`, :meth:`snapshot`, :meth:`totals`) never block and
    never change anything: they return the figures the actor published after
    its last batch, which include every call this task has awaited.
    """

    __slots__ = ()

    # -- identity ------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The budget's name (a child budget's own name), in events and errors."""
        return self._child if self._child is not None else self._core.name

    @property
    def tenant_name(self) -> str | None:
        """The tenant this handle is scoped to (``None``: the whole budget)."""
        return tenant_of(self._scope)

    @property
    def closed(self) -> bool:
        """Whether the budget (or this child budget) has stopped serving calls."""
        return self._core.actor.closing or self._last is not None

    def tenant(self, name: str) -> Budget:
        """A handle scoped to one tenant, with this same API: ``budget.tenant("user-42")``.

        A tenant's requests must fit its own caps (``open_budget(tenants=...)``
        or :meth:`set_tenant_caps`, else ``tenant_defaults``) and the budget's,
        which are the total shared by all tenants. Making a handle sends nothing.
        """
        if self._scope != ROOT:
            raise InvalidOption(
                f"{self!r} is not the budget's own handle; tenants belong to the budget "
                "(use child() for a sub-budget)"
            )
        return Budget(self._core, tenant_path(config.name(name, "a tenant's name")))

    @property
    def caps(self) -> Caps:
        """The caps this handle's scope was given (a tenant's or a child's own)."""
        return self.snapshot().caps

    @property
    def per_request(self) -> Caps:
        """The per-request caps of this scope (the budget's apply to tenants too)."""
        return self.snapshot().per_request

    # -- the TokenBudget style: consume and refund ---------------------------------

    async def consume(self, tokens: int | None = None, /, **amounts: Unpack[Amounts]) -> bool:
        """Atomically check and deduct; ``False`` (and no change) if it does not fit.

        ``consume(300)`` takes 300 tokens; keywords work as in :meth:`record`.
        A request larger than a cap itself raises :class:`RequestTooLarge`,
        since it could never succeed.
        """
        if tokens is not None:
            if "tokens" in amounts:
                raise InvalidAmountType("tokens given both positionally and by keyword")
            amounts["tokens"] = tokens
        reply = await self._request(Consume(self._scope, parse(amounts)))
        if isinstance(reply, Refusal):
            if reply.too_large:
                raise reply.error()
            return False
        raise_if_refused(reply)
        return True

    async def refund(self, actual_used: int, estimated: int) -> None:
        """Correct an earlier ``consume(estimated)`` to what the call really used.

        Gives back ``estimated - actual_used`` tokens (or charges the excess,
        even past a cap: that spend happened). It must match a consume of
        ``estimated`` tokens through this handle that was not refunded yet;
        otherwise :class:`InvalidRefund` is raised and nothing changes. Applied
        even if the caller is cancelled while it waits.
        """
        command = Refund(
            self._scope, count(actual_used, "actual_used"), count(estimated, "estimated")
        )
        raise_if_refused(await self._core.actor.settle(command))

    @property
    def remaining(self) -> int | None:
        """Tokens left: the ``tokens`` limit minus used and reserved (``None`` if uncapped).

        For a tenant or a child budget, the least that any scope it must fit leaves.
        """
        lefts = [left for view in self._chain_views() if (left := view.tokens_left()) is not None]
        return min(lefts, default=None)

    @property
    def available(self) -> Caps:
        """What a request could still take on every axis now: the least that any
        scope it must fit leaves (a tenant's or child's own caps and the
        budget's), ``None`` where nothing caps the axis. Never blocks."""
        return Caps.of(least(view.room() for view in self._chain_views()))

    def _chain_views(self) -> list[ScopeView]:
        return [
            self._core.view(self._scope[:depth], self._last)
            for depth in range(len(self._scope), -1, -1)
        ]

    # -- the pool style: record, reserve, snapshot, reset --------------------------

    async def record(self, **usage: Unpack[UsageInfo]) -> Totals:
        """Charge usage at once if it fits every cap, and return this scope's new totals.

        Raises :class:`BudgetExceeded` (changing nothing) if it does not fit.
        Besides the amounts it takes ``model``, ``request_id``, ``session_id``
        and ``tags`` (a dict of str), carried by its :class:`UsageRecorded`
        event and grouped by :meth:`usage`.
        """
        amounts, meta, scope = self._split(usage)
        reply = raise_if_refused(await self._request(Record(scope, parse(amounts), meta)))
        assert isinstance(reply, Charged)
        return reply.totals()

    async def charge(self, **usage: Unpack[UsageInfo]) -> Totals:
        """Record usage that already happened, even past a cap, and return the totals.

        Unlike :meth:`record` it is never refused: use it for spend reported
        after the fact (a provider's bill, a call made outside the budget).
        Applied even if the caller is cancelled while it waits.
        """
        amounts, meta, scope = self._split(usage)
        self._core.actor.check_caller()
        if self._last is not None:
            raise self._child_closed()
        reply = raise_if_refused(await self._core.actor.settle(Charge(scope, parse(amounts), meta)))
        assert isinstance(reply, Charged)
        return reply.totals()

    def _split(
        self, usage: Mapping[str, object]
    ) -> tuple[dict[str, object], Meta | None, ScopePath]:
        """Amounts, metadata, and the scope: ``tenant=`` on the budget's handle names one."""
        amounts, meta, tenant = split_usage(usage)
        if tenant is None or tenant == self.tenant_name:
            return amounts, meta, self._scope
        if self._scope != ROOT:
            raise InvalidOption(f"tenant={tenant!r} given for usage of {self!r}")
        return amounts, meta, tenant_path(config.name(tenant, "a tenant's name"))

    def reserve(
        self, *, ttl: timedelta | None = None, wait: bool = False, **usage: Unpack[UsageInfo]
    ) -> Reservation:
        """Hold an estimate for one call: ``async with budget.reserve(...) as r``.

        Takes the amounts and the metadata of :meth:`record` (the model is
        known before the call). ``ttl`` overrides the budget's reservation
        time-to-live for this one. With ``wait=True``, a request that does not
        fit yet waits, first come first served, until releases or a window
        rolling over make room (bound the wait with ``anyio.fail_after``); one
        that can never fit still raises at once. Validated here, so bad input
        raises before anything is sent.
        """
        if ttl is not None:
            config.ttl(ttl)
        if not isinstance(wait, bool):
            raise InvalidOption(f"wait must be True or False, not {wait!r}")
        amounts, meta, scope = self._split(usage)
        return Reservation(self._core, scope, parse(amounts), meta, ttl, wait)

    async def settle(
        self, reservation: int, *, release: bool = False, **usage: Unpack[UsageInfo]
    ) -> None:
        """Settle an open reservation by its id (:meth:`Reservation.detach`), made
        in this process or in another that shares the budget's store.

        Commits what was used (amounts and metadata as for :meth:`record`; none:
        what it holds; omitted ``requests`` counts 1), or with ``release=True``
        gives it all back. A reservation past its deadline was released: the
        amounts a commit gives are recorded all the same, in this handle's scope
        (settle a tenant's through ``budget.tenant(name)``; with no amounts
        nothing is recorded), and :class:`ReservationExpired` is raised; an id
        the budget never issued raises :class:`ReservationError`.
        Each id is settled once: a second commit would count as a late one.
        """
        if isinstance(reservation, bool) or not isinstance(reservation, int) or reservation < 1:
            raise InvalidOption(
                f"reservation must be a reservation's id (an int >= 1), not {reservation!r}"
            )
        if not isinstance(release, bool):
            raise InvalidOption(f"release must be True or False, not {release!r}")
        command: Commit | Release
        if release:
            if usage:
                raise InvalidOption("release=True records no usage: give no amounts")
            command = Release(self._scope, reservation)
        else:
            amounts, meta, scope = self._split(usage)
            if amounts and "requests" not in amounts:
                amounts["requests"] = 1
            command = Commit(scope, reservation, parse(amounts) if amounts else None, meta)
        reply = raise_if_refused(await self._core.actor.settle(command))
        if isinstance(reply, Settled) and reply.expired and not release:
            raise ReservationExpired(
                f"reservation {reservation} expired before it was committed"
                + ("; its usage was recorded all the same" if usage else "")
            )

    async def check(self, **amounts: Unpack[Amounts]) -> Check:
        """Would this request fit now? Reserves nothing and changes nothing.

        Answered by the actor in order with every other call, so it is exact
        at that instant; another task may of course take the room right after.
        """
        reply = raise_if_refused(await self._request(Probe(self._scope, parse(amounts))))
        assert isinstance(reply, Verdict)
        refusal = None if reply.refusal is None else reply.refusal.error()
        return Check.of(refusal, reply.view.snapshot())

    async def reset(self, window: str | None = None) -> None:
        """Zero usage; open reservations stay reserved, so settling them later can
        never push the budget past its caps.

        With ``window`` (a window's name), only that window's current period.
        On the budget's handle it zeroes every tenant's usage too; on a
        tenant's, only that tenant's (the shared total keeps counting it).
        """
        if window is not None and not isinstance(window, str):
            raise InvalidOption(f"window must be a window's name, not {window!r}")
        raise_if_refused(await self._request(Reset(self._scope, window)))

    def snapshot(self) -> Snapshot:
        """This scope's figures, consistent as of the actor's last batch; never blocks."""
        return self._core.snapshot(self._scope, self._last)

    def totals(self) -> Totals:
        """Usage recorded so far in this scope and the number of calls; never blocks."""
        view = self._core.view(self._scope, self._last)
        return Totals.of(view.used, view.calls)

    def statistics(self) -> Statistics:
        """Mailbox depth, batches served, open reservations, tasks waiting; never blocks."""
        actor = self._core.actor
        return Statistics(
            mailbox_depth=actor.mailbox_depth(),
            mailbox_size=actor.mailbox_size,
            messages_served=actor.messages_served,
            batches_served=actor.batches_served,
            peak_batch_size=actor.peak_batch,
            open_reservations=self._core.view(ROOT).open,
            tasks_waiting=actor.tasks_waiting,
            reservations_waiting=len(actor.waiting),
            events_dropped=actor.delivery.dropped,
            refusals=actor.refusals,
        )

    def tenants(self) -> list[str]:
        """The tenants this budget holds figures for now (those used since it
        opened and not forgotten while idle), by name; never blocks, any thread."""
        if self._scope != ROOT:
            raise InvalidOption("tenants() is called on the budget's own handle")
        paths = list(self._core.actor.views)  # one step: safe while the actor writes
        return sorted(name for p in paths if len(p) == 1 and (name := tenant_of(p)) is not None)

    def forecast(self) -> list[Forecast]:
        """This scope's burn rates and, for each capped axis of each period, when
        it runs out at that rate (as of now); a budget opened with ``forecast=``.
        Call it on the budget's loop (a sync budget's ``forecast()`` does)."""
        actor = self._core.actor
        if actor.forecast is None:
            raise InvalidOption(
                f"budget {self._core.name!r} does not forecast: open it with forecast=True "
                "(or forecast=treasurer.forecast.ForecastOptions(...))"
            )
        actor.check_caller()
        view = self._core.view(self._scope, self._last)
        return actor.forecast.forecast(view, max(actor.clock(), view.at))

    def sync_view(self) -> SyncBudget:
        """A blocking view of this budget for worker threads; call it on the budget's loop.

        Threads and tasks then share one actor. A blocking call from a thread
        that runs an event loop raises :class:`LoopThreadError` instead of
        freezing that loop.
        """
        self._core.actor.check_caller()
        from .._sync.facade import sync_view  # the facade builds on this module

        return sync_view(self)

    def __repr__(self) -> str:
        if self._child is not None:
            return f"<Budget {self._core.name!r} child {self._child!r}>"
        if self.tenant_name is not None:
            return f"<Budget {self._core.name!r} tenant {self.tenant_name!r}>"
        return f"<Budget {self._core.name!r}>"
