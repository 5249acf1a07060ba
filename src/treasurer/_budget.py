"""What users hold: ``open_budget``, the ``Budget`` handle and ``Reservation``."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar, Unpack

import anyio

from ._actor import (
    ADJUST,
    CHARGE,
    CHECK,
    COMMIT,
    DEFAULT_MAILBOX_SIZE,
    OVERRIDE,
    RECORD,
    RELEASE,
    REMOVE_OVERRIDE,
    RESERVE,
    RESERVE_WAIT,
    RESET,
    USAGE,
    BudgetCore,
    tenant_op,
)
from ._amounts import (
    AXES,
    NO_CAPS,
    REQUESTS,
    TOKENS,
    Amounts,
    CapVector,
    Money,
    UsageInfo,
    Vector,
    count,
    parse,
    parse_caps,
    split_metadata,
)
from ._errors import (
    AlreadySettled,
    BudgetExceeded,
    InvalidAmount,
    InvalidAmountType,
    InvalidOption,
    RequestTooLarge,
    ReservationError,
    ReservationExpired,
    UnknownAxis,
)
from ._events import DEFAULT_THRESHOLDS, Event, Override, Subscription
from ._ledger import NO_TENANT_CAPS, State
from ._tenants import TenantCaps, validated_tenants, validated_window_list
from ._types import Caps, Check, Snapshot, Statistics, Totals, Usage, UsageReport
from ._windows import Window, utc_now

if TYPE_CHECKING:
    from ._sync import SyncBudget

Clock = Callable[[], datetime]
DEFAULT_RESERVATION_TTL: Final = timedelta(minutes=15)

_NEW: Final = 0
_OPEN: Final = 1
_SETTLED: Final = 2


class Reservation:
    """Budget held for one call: commit what it really used, or it is released.

    Use it as ``async with budget.reserve(...) as r:``. Entering waits for the
    actor and raises :class:`BudgetExceeded` at once if the request does not
    fit. Leaving the block without :meth:`commit` (normally, by an exception,
    or by cancellation) releases it. It settles exactly once.
    """

    __slots__ = (
        "_amount",
        "_core",
        "_deadline",
        "_id",
        "_state",
        "_tenant",
        "_ttl",
        "_wait",
    )

    def __init__(
        self,
        core: BudgetCore,
        amount: Vector,
        ttl: timedelta | None = None,
        wait: bool = False,
        tenant: str | None = None,
    ) -> None:
        self._core = core
        self._tenant = tenant
        self._amount = amount
        self._ttl = ttl
        self._wait = wait
        self._id = 0
        self._deadline: datetime | None = None
        self._state = _NEW

    @property
    def deadline(self) -> datetime | None:
        """When the budget releases it if still unsettled (``None``: never), on its clock."""
        return self._deadline

    @property
    def id(self) -> int:
        """The actor's number for this reservation (0 until granted)."""
        return self._id

    @property
    def amount(self) -> Usage:
        """What the reservation holds."""
        return Usage._from_vector(self._amount)

    @property
    def settled(self) -> bool:
        """Whether it was committed or released."""
        return self._state == _SETTLED

    @property
    def tenant(self) -> str | None:
        """The tenant it was made for (``None``: the budget itself)."""
        return self._tenant

    async def __aenter__(self) -> Reservation:
        if self._state != _NEW:
            raise ReservationError("a reservation can be entered only once")
        op, amount = tenant_op(RESERVE_WAIT if self._wait else RESERVE, self._tenant, self._amount)
        self._id, self._deadline = await self._core.request(op, amount, self._ttl)
        self._state = _OPEN
        return self

    def commit(self, **actual: Unpack[UsageInfo]) -> None:
        """Record what the call really used; it may be below or above the estimate.

        Omitted axes count as zero, except ``requests``, which defaults to what
        was reserved. Spend above the estimate is recorded even past a cap:
        it happened. Synchronous and never blocks, so it works anywhere,
        including in a cancelled scope.

        Past the reservation's :attr:`deadline` the budget has released it:
        the usage is recorded all the same, and :class:`ReservationExpired` is
        raised here, if the budget has expired it already or its clock, read
        here, has passed the deadline. The commit is applied after this
        returns (a read on the loop's thread applies it first); should the
        budget's next batch read its clock past the deadline when this call
        read it just before, the usage is recorded as that of an expired
        reservation (a ``ReservationExpired`` event, no exception).
        """
        self._settle_with(self._usage_of(actual))

    def _usage_of(self, actual: Mapping[str, object]) -> object:
        """Validate commit() keywords into what the actor applies; changes nothing."""
        self._check_open()
        amounts, meta = split_metadata(actual)
        if meta is not None and _same_tenant(self._tenant, meta) != self._tenant:
            raise InvalidOption(
                f"reservation {self._id} belongs to the budget, not to a tenant; "
                "reserve through budget.tenant(...) to charge one"
            )
        usage = parse(amounts, default_requests=self._amount[REQUESTS])
        return usage if meta is None else (usage, meta)

    def _settle_with(self, payload: object) -> None:
        """Post a validated commit; raise ReservationExpired if it came too late."""
        core = self._core
        deadline = self._deadline
        # Late if the budget has expired it already, or if its clock says so now.
        expired = deadline is not None and not core.holds(self._id)
        op, reservation = tenant_op(COMMIT, self._tenant, self._id)
        core.post(op, reservation, payload)
        self._state = _SETTLED
        if deadline is None:
            return
        if not expired:
            # Applied at once (no longer held), its batch has just read the clock.
            applied = core.uses_time and not core.holds(self._id)
            expired = (core.ledger.now if applied else core.clock()) >= deadline
        if expired:
            raise ReservationExpired(
                f"reservation {self._id} expired at {deadline.isoformat()} before it was "
                "committed; its usage was recorded all the same"
            )

    def release(self) -> None:
        """Give the whole reservation back without recording usage."""
        self._check_open()
        self._release_quietly()

    def _check_open(self) -> None:
        if self._state == _SETTLED:
            raise AlreadySettled(f"reservation {self._id} was already settled")
        if self._state == _NEW:
            raise ReservationError("the reservation was not granted; use it with `async with`")

    def _release_quietly(self) -> None:
        self._state = _SETTLED
        if not self._core.closed:  # a closed budget has nothing left to leak
            self._core.post(RELEASE, self._id)

    def _forget(self) -> None:
        """Mark settled without telling the actor: only once the budget has closed."""
        self._state = _SETTLED

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Nothing to wait for: the settlement is posted, applies whatever happens
        # next, and a read on the loop's thread applies it first (read-your-writes).
        if self._state == _OPEN:
            self._release_quietly()

    def __del__(self) -> None:
        if self._state == _OPEN:
            warnings.warn(
                f"reservation {self._id} of budget {self._core.name!r} was never settled",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    def __repr__(self) -> str:
        state = ("new", "open", "settled")[self._state]
        of = f"{self._core.name!r}" + ("" if self._tenant is None else f" ({self._tenant!r})")
        return f"<Reservation {self._id} {state} of {of}: {self.amount}>"


def _same_tenant(tenant: str | None, meta: dict[str, object] | None) -> str | None:
    """The tenant a usage record is for: the handle's, or the ``tenant`` it names.

    Naming another tenant than the handle's (or the reservation's) is refused
    rather than guessed at.
    """
    if meta is None or "tenant" not in meta:
        return tenant
    named = meta.pop("tenant")
    assert isinstance(named, str)
    if tenant is not None and named != tenant:
        raise InvalidOption(f"tenant={named!r} given for usage of tenant {tenant!r}")
    if tenant is None and named is not None:
        _check_tenant_name(named)
    return named


def _check_tenant_name(tenant: object) -> str:
    if not isinstance(tenant, str) or not tenant:
        raise InvalidOption(f"a tenant is named by a non-empty str, not {tenant!r}")
    return tenant


class Budget:
    """A handle on a budget; cheap to pass to every task.

    Every method talks to the budget's actor, so concurrent calls never
    interleave inside a check-and-deduct. Reads (:attr:`remaining`,
    :meth:`snapshot`, :meth:`totals`) never block: they return the state the
    actor published after its last batch.
    """

    __slots__ = ("_core", "_tenant")

    def __init__(self, core: BudgetCore, tenant: str | None = None) -> None:
        self._core = core
        self._tenant = tenant

    @property
    def name(self) -> str:
        """The name bound to every log event of this budget."""
        return self._core.name

    @property
    def tenant_name(self) -> str | None:
        """The tenant this handle is scoped to (``None``: the whole budget)."""
        return self._tenant

    def tenant(self, name: str) -> Budget:
        """A handle scoped to one tenant, with this same API: ``budget.tenant("user-42")``.

        A tenant's requests must fit its own caps (configured in
        ``open_budget(tenants=...)``, else ``tenant_defaults``) and the
        budget's, which are the shared total over all tenants; its usage
        counts in both. A tenant comes into being at its first request, in
        the actor, so concurrent first requests cannot get past its caps.
        Making a handle sends nothing and is cheap.
        """
        if self._tenant is not None:
            raise InvalidOption(
                f"{self!r} is already a tenant's handle; tenants do not nest "
                "(use child() for a sub-budget)"
            )
        return Budget(self._core, _check_tenant_name(name))

    @property
    def caps(self) -> Caps:
        """The caps the budget was opened with (a tenant handle: the tenant's own)."""
        return Caps._from_vector(self._caps_vector())

    def _caps_vector(self) -> CapVector:
        if self._tenant is None:
            return self._core.caps
        return self._core.ledger.tenant_spec(self._tenant)[0]

    @property
    def closed(self) -> bool:
        """Whether the budget has stopped serving calls."""
        return self._core.closed

    # -- the TokenBudget style: consume and refund ---------------------------------

    async def consume(self, tokens: int | None = None, /, **amounts: Unpack[Amounts]) -> bool:
        """Atomically check and deduct; ``False`` (and no change) if it does not fit.

        ``consume(300)`` takes 300 from the ``tokens`` axis; keywords work as
        in :meth:`record`. A request larger than a cap itself raises
        :class:`RequestTooLarge`, since it could never succeed.
        """
        values: dict[str, object] = dict(amounts)
        if tokens is not None:
            if "tokens" in values:
                raise InvalidAmountType("tokens given both positionally and by keyword")
            values["tokens"] = tokens
        try:
            await self._core.request(*tenant_op(RECORD, self._tenant, parse(values)))
        except RequestTooLarge:
            raise
        except BudgetExceeded:
            return False
        return True

    async def refund(self, actual_used: int, estimated: int) -> None:
        """Return ``estimated - actual_used`` tokens after a call made with consume.

        If the call used more than estimated, the difference is charged, even
        past the cap: that spend happened. It cannot be refused, so it is
        posted without waiting, and applies whatever happens to the caller;
        reads on the loop's thread include it at once.
        """
        actual = count(actual_used, "actual_used")
        estimate = count(estimated, "estimated")
        credit = [0, 0, 0, 0, 0]
        credit[TOKENS] = estimate - actual
        self._core.post(*tenant_op(ADJUST, self._tenant, tuple(credit)))

    @property
    def remaining(self) -> int | None:
        """Tokens left: the ``tokens`` cap minus used and reserved (``None`` if uncapped).

        For a tenant, the smaller of what its own cap and the budget's shared
        cap leave.
        """
        left = _tokens_left(self._core.caps[TOKENS], self._core.state)
        if self._tenant is None:
            return left
        own = _tokens_left(self._caps_vector()[TOKENS], self._scoped_state())
        if own is None or left is None:
            return left if own is None else own
        return min(own, left)

    def _scoped_state(self) -> State:
        if self._tenant is None:
            return self._core.state
        return self._core.tenant_view(self._tenant).state

    # -- the pool style: record, reserve, snapshot, reset --------------------------

    async def record(self, **usage: Unpack[UsageInfo]) -> Totals:
        """Charge usage at once if it fits every cap, and return the new totals.

        Raises :class:`BudgetExceeded` (changing nothing) if it does not fit.
        Besides the amounts it takes ``model``, ``request_id``, ``session_id``
        and ``tags`` (a dict of str): the model feeds :meth:`usage`'s per-model
        figures; all of them are logged with the record.
        """
        amounts, meta = split_metadata(usage)
        tenant = _same_tenant(self._tenant, meta)
        state: State = await self._core.request(*tenant_op(RECORD, tenant, parse(amounts)), meta)
        return Totals._from_vector(state[0], state[2])

    def reserve(
        self, *, ttl: timedelta | None = None, wait: bool = False, **amounts: Unpack[Amounts]
    ) -> Reservation:
        """Hold an estimate for one call; use as ``async with budget.reserve(...) as r``.

        ``ttl`` overrides the budget's reservation time-to-live for this one.
        With ``wait=True``, a request that does not fit yet waits, first come
        first served, until releases or a window rolling over make room
        (bound the wait with ``anyio.fail_after``); one larger than a cap
        still raises at once. The amounts are validated here, so bad input
        raises before anything is sent.
        """
        if ttl is not None:
            _check_ttl(ttl, "ttl")
            self._core.uses_time = True
        if not isinstance(wait, bool):
            raise InvalidOption(f"wait must be True or False, not {wait!r}")
        return Reservation(self._core, parse(amounts), ttl, wait, self._tenant)

    async def check(self, **amounts: Unpack[Amounts]) -> Check:
        """Would this request fit now? Reserves nothing and changes nothing.

        Answered by the actor in order with every other call, so it is exact
        at that instant; another task may of course take the room right after.
        """
        message = tenant_op(CHECK, self._tenant, parse(amounts))
        refusal, published = await self._core.request(*message)
        return Check._build(refusal, self._core.build_snapshot(published, self._tenant))

    @asynccontextmanager
    async def subscribe(self, buffer: int = 256) -> AsyncIterator[Subscription]:
        """Receive the budget's events: ``async with budget.subscribe() as events:``.

        At most ``buffer`` events wait unread; beyond that new ones are dropped
        and counted in ``events.missed``, so a slow subscriber never slows the
        budget. Iteration ends when the block or the budget ends.
        """
        if count(buffer, "buffer") < 1:
            raise InvalidAmount("buffer must be >= 1")
        if self._core.closed:
            raise self._core.closed_error()
        subscription = Subscription(buffer, self._tenant)
        self._core.subscribe(subscription)
        try:
            yield subscription
        finally:
            self._core.unsubscribe(subscription)
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
        """Raise caps temporarily: ``await budget.override(tokens=50_000, window="hour", ...)``.

        The increase counts in every check at once and stops at ``expires_at``
        (on the budget's clock); :meth:`remove_override` ends it early. It
        applies to the budget's whole life (``window="lifetime"``) or to one
        time window, and only to axes that scope caps. Listed in snapshots.
        """
        if not isinstance(expires_at, datetime) or expires_at.utcoffset() is None:
            raise InvalidOption(f"expires_at must be an aware datetime, not {expires_at!r}")
        amount = parse(dict(increase), default_requests=0)
        self._core.uses_time = True
        message = (window, amount, expires_at, str(reason), str(created_by))
        override: Override = await self._core.request(*tenant_op(OVERRIDE, self._tenant, message))
        return override

    async def remove_override(self, override: Override | int) -> None:
        """End an override before its expiry."""
        override_id = override.id if isinstance(override, Override) else override
        await self._core.request(REMOVE_OVERRIDE, override_id)

    @asynccontextmanager
    async def child(
        self,
        *,
        name: str | None = None,
        wait: bool = False,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        tokens: int | None = None,
        usd: Money | None = None,
        requests: int | None = None,
    ) -> AsyncIterator[Budget]:
        """Carve a sub-budget out of this one for part of a run: ``async with budget.child(...)``.

        The child's caps are reserved from this budget when it opens (raising
        :class:`BudgetExceeded`, or waiting with ``wait=True``, if they do not
        fit) and held until the block ends; then what the child used is
        committed here and the rest comes back. The child is a full
        :class:`Budget` with its own actor; children nest. It must cap every
        axis this budget caps, so its subtree can never spend more than this
        budget allows.
        """
        caps = validated_caps(input_tokens, output_tokens, tokens, usd, requests, None)
        shared, own = self._core.caps, self._caps_vector()
        uncapped = [
            AXES[axis]
            for axis, cap in enumerate(caps)
            if cap is None and (shared[axis] is not None or own[axis] is not None)
        ]
        if uncapped:
            raise InvalidOption(
                f"a child of budget {self.name!r} must cap {', '.join(uncapped)}, "
                "as its parent does"
            )
        if not isinstance(wait, bool):
            raise InvalidOption(f"wait must be True or False, not {wait!r}")
        carve = (caps[0] or 0, caps[1] or 0, caps[2] or 0, caps[3] or 0, caps[4] or 0)
        held = Reservation(self._core, carve, timedelta.max, wait, self._tenant)
        async with held:
            child: Budget | None = None
            try:
                prefix = self.name if self._tenant is None else f"{self.name}/{self._tenant}"
                async with open_budget(
                    name=name or f"{prefix}/child-{held.id}",
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    tokens=tokens,
                    usd=usd,
                    requests=requests,
                    clock=self._core.clock,
                ) as child:
                    yield child
            finally:
                if child is not None:
                    # The child has closed, so its figures are final: what the
                    # subtree spent, committed here even if the block failed.
                    # Reservations still open in it (held by a task that
                    # outlived the block, or by a grandchild) count as spent:
                    # their holders can no longer report what they use.
                    final = child.snapshot()
                    held.commit(
                        input_tokens=final.input_tokens_used + final.input_tokens_reserved,
                        output_tokens=final.output_tokens_used + final.output_tokens_reserved,
                        tokens=final.tokens_used + final.tokens_reserved,
                        usd=final.usd_used + final.usd_reserved,
                        requests=final.requests_used + final.requests_reserved,
                    )

    async def usage(self, period: str = "lifetime", *, top: int = 5) -> UsageReport:
        """Usage over ``period`` ("lifetime" or a time window's name, e.g. "day").

        Used, reserved, limits, remaining and percent used per axis, open
        reservations, the input/output breakdown, and the ``top`` models by
        tokens and by USD (from the ``model`` of records and commits).
        """
        if not isinstance(period, str):
            raise InvalidOption(f"period must be a window's name or 'lifetime', not {period!r}")
        if count(top, "top") < 1:
            raise InvalidAmount("top must be >= 1")
        view = await self._core.request(*tenant_op(USAGE, self._tenant, period))
        return UsageReport._build(period, view, top, self._tenant)

    @property
    def per_request(self) -> Caps:
        """The per-request caps (``None`` where a request may be any size).

        A tenant's own; the budget's per-request caps apply to tenants too.
        """
        if self._tenant is None:
            return Caps._from_vector(self._core.per_request)
        return Caps._from_vector(self._core.ledger.tenant_spec(self._tenant)[1])

    async def charge(self, **usage: Unpack[UsageInfo]) -> Totals:
        """Record usage that already happened, even past a cap, and return the totals.

        Unlike :meth:`record` it is never refused: use it for spend reported
        after the fact (a provider's bill, a call made outside the budget).
        It counts toward alerts and makes later requests fail like any spend.
        Applied even if the caller is cancelled while waiting.
        """
        amounts, meta = split_metadata(usage)
        tenant = _same_tenant(self._tenant, meta)
        ack = self._core.post(*tenant_op(CHARGE, tenant, parse(amounts)), meta, ack=True)
        assert ack is not None
        state = await ack.wait()
        if isinstance(state, BaseException):
            raise state
        return Totals._from_vector(state[0], state[2])  # type: ignore[index]

    async def reset(self, window: str | None = None) -> None:
        """Zero all usage. Open reservations stay reserved, so settling them
        later can never push the budget past its caps.

        With ``window`` (a time window's name, e.g. ``"day"``), zero only that
        window's current usage. On the whole budget it zeroes every tenant's
        usage too; on a tenant's handle, only that tenant's (the shared total
        keeps counting what the tenant spent).
        """
        if window is not None:
            if self._tenant is None:
                specs = [state.window for state in self._core.ledger.windows]
            else:
                specs = list(self._core.ledger.tenant_spec(self._tenant)[2])
            names = [spec.name for spec in specs]  # fixed at open
            if window not in names:
                raise InvalidOption(f"no window named {window!r}; this budget has {names}")
        await self._core.request(*tenant_op(RESET, self._tenant, window))

    def snapshot(self) -> Snapshot:
        """Everything at once, consistent as of the actor's last batch.

        For a tenant: the tenant's own figures (``snapshot().tenant`` names it).
        """
        if self._tenant is None:
            return self._core.snapshot()
        return self._core.tenant_snapshot(self._tenant)

    def totals(self) -> Totals:
        """Usage recorded so far and the number of calls."""
        state = self._scoped_state()
        return Totals._from_vector(state[0], state[2])

    def statistics(self) -> Statistics:
        """Mailbox depth, batches served, open reservations, tasks waiting."""
        return self._core.statistics()

    def sync_view(self) -> SyncBudget:
        """A blocking view of this budget for worker threads; call it on the budget's loop.

        Threads and tasks then share one actor. Calling the view from the
        loop's own thread raises :class:`LoopThreadError` instead of deadlocking.
        """
        from ._sync import sync_view

        return sync_view(self)

    def __repr__(self) -> str:
        if self._tenant is not None:
            return f"<Budget {self.name!r} tenant {self._tenant!r}>"
        return f"<Budget {self.name!r} {self._core.ledger!r}>"


def _tokens_left(cap: int | None, state: State) -> int | None:
    if cap is None:
        return None
    used, reserved, _, _ = state  # one read: one consistent batch
    return cap - used[TOKENS] - reserved[TOKENS]


def validated_per_request(per_request: Mapping[str, object] | None) -> CapVector:
    """The per-request caps of :func:`open_budget`, validated."""
    if per_request is None:
        return NO_CAPS
    if not isinstance(per_request, Mapping):
        raise InvalidAmountType(
            f"per_request must be a mapping of axis to cap, not {per_request!r}"
        )
    return parse_caps(dict(per_request))


def validated_caps(
    input_tokens: object,
    output_tokens: object,
    tokens: object,
    usd: object,
    requests: object,
    max_tokens: object,
) -> CapVector:
    """The caps of :func:`open_budget`, validated; raises before anything starts."""
    if max_tokens is not None:
        if tokens is not None:
            raise InvalidAmount("give either tokens or its alias max_tokens, not both")
        tokens = max_tokens
    return parse_caps(
        {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "tokens": tokens,
            "usd": usd,
            "requests": requests,
        }
    )


def validated_windows(windows: object, clock: object) -> tuple[tuple[Window, ...], Clock]:
    """The windows and clock of :func:`open_budget`, validated."""
    window_specs = validated_window_list(windows)
    if clock is None:
        return window_specs, utc_now
    if not callable(clock):
        raise InvalidOption(f"clock must be a callable returning an aware datetime, not {clock!r}")
    now = clock()
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise InvalidOption(f"clock must return an aware datetime, got {now!r}")
    return window_specs, clock


def validated_thresholds(thresholds: object, on_event: object) -> tuple[int, ...]:
    """Alert thresholds (percent of a cap) and the event callback, validated."""
    if on_event is not None and not callable(on_event):
        raise InvalidOption(f"on_event must be callable, not {on_event!r}")
    if not isinstance(thresholds, Sequence) or isinstance(thresholds, str):
        raise InvalidOption(f"thresholds must be a sequence of percentages, not {thresholds!r}")
    values = tuple(count(value, "threshold") for value in thresholds)
    if any(value == 0 for value in values) or len(set(values)) != len(values):
        raise InvalidOption(f"thresholds must be distinct percentages above 0, got {values}")
    return tuple(sorted(values))


def _check_ttl(ttl: object, name: str) -> None:
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise InvalidOption(f"{name} must be a positive timedelta, not {ttl!r}")


def validated_ttl(reservation_ttl: object) -> timedelta | None:
    """The default reservation time-to-live of :func:`open_budget`, validated."""
    if reservation_ttl is not None:
        _check_ttl(reservation_ttl, "reservation_ttl")
    return reservation_ttl  # type: ignore[return-value]


def validate_mailbox_size(mailbox_size: object) -> None:
    if count(mailbox_size, "mailbox_size") < 1:
        raise InvalidAmount("mailbox_size must be >= 1")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _typed_keyword_errors(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Keep the explicit, type-checked signature, but report an unknown keyword
    with a treasurer error (still a TypeError) that lists the valid ones."""
    accepted = tuple(inspect.signature(func).parameters)

    @functools.wraps(func)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        for keyword in kwargs:
            if keyword not in accepted:
                raise UnknownAxis(
                    f"{func.__name__}() got an unknown keyword {keyword!r}; "
                    f"expected one of {', '.join(accepted)}"
                )
        return func(*args, **kwargs)

    return checked


@_typed_keyword_errors
@asynccontextmanager
async def open_budget(
    *,
    name: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    tokens: int | None = None,
    usd: Money | None = None,
    requests: int | None = None,
    max_tokens: int | None = None,
    per_request: Mapping[str, int | Money | None] | None = None,
    windows: Sequence[Window] = (),
    clock: Clock | None = None,
    thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
    on_event: Callable[[Event], object] | None = None,
    reservation_ttl: timedelta | None = DEFAULT_RESERVATION_TTL,
    tenant_defaults: TenantCaps | None = None,
    tenants: Mapping[str, TenantCaps] | None = None,
    mailbox_size: int = DEFAULT_MAILBOX_SIZE,
) -> AsyncIterator[Budget]:
    """Open a budget whose actor lives as long as the ``async with`` block.

    Each cap is optional (omitted means unbounded). ``tokens`` caps input plus
    output tokens; ``max_tokens`` is an alias of it for code coming from a
    ``TokenBudget(max_tokens=...)``. ``per_request`` caps any single request,
    e.g. ``{"usd": 0.5, "tokens": 8000}``; a larger one raises
    :class:`RequestTooLarge`. ``windows`` adds caps per period of time
    (:class:`Window`); every request must fit all of them. ``clock`` (a
    callable returning an aware ``datetime``) replaces the system clock, for
    tests. ``thresholds`` are the percentages of each cap at which a
    :class:`ThresholdCrossed` event fires; ``on_event`` (a function or an
    async function) receives every event. A reservation left unsettled for
    ``reservation_ttl`` (15 minutes unless given; ``None`` for never) is
    released by the budget at its deadline. ``budget.tenant(name)`` scopes
    calls to a tenant, whose own caps are ``tenants[name]`` or else
    ``tenant_defaults`` (:class:`TenantCaps`; without either, a tenant has
    only the budget's caps, which are a total shared by all tenants). After
    the block, every call raises :class:`BudgetClosed`.
    """
    caps = validated_caps(input_tokens, output_tokens, tokens, usd, requests, max_tokens)
    per_request_caps = validated_per_request(per_request)
    window_specs, clock_function = validated_windows(windows, clock)
    threshold_values = validated_thresholds(thresholds, on_event)
    ttl = validated_ttl(reservation_ttl)
    tenant_default, tenant_specs = validated_tenants(tenant_defaults, tenants)
    validate_mailbox_size(mailbox_size)
    core = BudgetCore(
        caps,
        name=name,
        mailbox_size=mailbox_size,
        per_request=per_request_caps,
        windows=window_specs,
        clock=clock_function,
        thresholds=threshold_values,
        on_event=on_event,
        reservation_ttl=ttl,
        tenant_default=tenant_default or NO_TENANT_CAPS,
        tenant_specs=tenant_specs,
    )
    body_error: BaseException | None = None
    async with anyio.create_task_group() as task_group:
        core.spawn = task_group.start_soon
        task_group.start_soon(core.run, name=f"treasurer actor {core.name}")
        task_group.start_soon(core.run_timer, name=f"treasurer timer {core.name}")
        core.log_opened()
        try:
            yield Budget(core)
        except anyio.get_cancelled_exc_class():
            raise  # belongs to a cancel scope; the task group must see it
        except BaseException as exc:
            # Raised after the task group, so the block's own error reaches the
            # caller as itself, not wrapped in an ExceptionGroup.
            body_error = exc
        finally:
            core.close()
    if body_error is not None:
        raise body_error
