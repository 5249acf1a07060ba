"""Immutable values handed to users: caps, totals, snapshots, statistics."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs

from ._amounts import AXES, NO_CAPS, REQUESTS, TOKENS, USD, CapVector, Vector, nanos_to_usd
from ._errors import BudgetExceeded

if TYPE_CHECKING:
    from ._events import Override
    from ._ledger import UsageView, WindowsView
    from ._windows import Window


def _remaining(cap: int | None, used: int, reserved: int) -> int | None:
    return None if cap is None else cap - used - reserved


def _usd_or_none(nanos: int | None) -> Decimal | None:
    return None if nanos is None else nanos_to_usd(nanos)


def _remaining_caps(limits: CapVector, used: Vector, reserved: Vector) -> Caps:
    """What is left under each limit (``None`` where unbounded), in public units."""
    left = [_remaining(limits[i], used[i], reserved[i]) for i in range(len(limits))]
    return Caps._from_vector((left[0], left[1], left[2], left[3], left[4]))


@attrs.frozen
class Caps:
    """The budget's caps; ``None`` means unbounded."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    tokens: int | None = None
    usd: Decimal | None = None
    requests: int | None = None

    @classmethod
    def _from_vector(cls, caps: CapVector) -> Caps:
        return cls(caps[0], caps[1], caps[2], _usd_or_none(caps[3]), caps[4])


@attrs.frozen
class Usage:
    """An amount on every axis: what a reservation holds or a call used."""

    input_tokens: int
    output_tokens: int
    tokens: int
    usd: Decimal
    requests: int

    @classmethod
    def _from_vector(cls, amount: Vector) -> Usage:
        return cls(amount[0], amount[1], amount[2], nanos_to_usd(amount[3]), amount[4])


@attrs.frozen
class Totals:
    """Usage recorded so far (not counting open reservations)."""

    input_tokens: int
    output_tokens: int
    tokens: int
    usd: Decimal
    requests: int
    calls: int

    @property
    def total_tokens(self) -> int:
        """Alias of ``tokens``, the name other pools use."""
        return self.tokens

    @classmethod
    def _from_vector(cls, used: Vector, calls: int) -> Totals:
        return cls(used[0], used[1], used[2], nanos_to_usd(used[3]), used[4], calls)


@attrs.frozen
class Snapshot:
    """A consistent view of the budget, published by its actor after each batch.

    ``*_remaining`` is ``cap - used - reserved`` (``None`` when the axis has no
    cap). It goes negative only when actual usage committed above an estimate
    overran the cap: that spend happened and is never dropped.
    """

    caps: Caps
    calls: int
    open_reservations: int
    input_tokens_used: int
    input_tokens_reserved: int
    input_tokens_remaining: int | None
    output_tokens_used: int
    output_tokens_reserved: int
    output_tokens_remaining: int | None
    tokens_used: int
    tokens_reserved: int
    tokens_remaining: int | None
    usd_used: Decimal
    usd_reserved: Decimal
    usd_remaining: Decimal | None
    requests_used: int
    requests_reserved: int
    requests_remaining: int | None
    per_request: Caps = Caps()
    windows: tuple[WindowUsage, ...] = ()
    limits: Caps = Caps()
    """The caps in force now: ``caps`` plus active lifetime overrides."""
    overrides: tuple[Override, ...] = ()
    tenant: str | None = None
    """The tenant these figures belong to (``None``: the whole budget)."""

    def window(self, name: str) -> WindowUsage:
        """The time window called ``name`` ("hour", "day", ...)."""
        for window in self.windows:
            if window.name == name:
                return window
        raise KeyError(
            f"no window named {name!r}; this budget has {[w.name for w in self.windows]}"
        )

    @classmethod
    def _build(
        cls,
        caps: CapVector,
        used: Vector,
        reserved: Vector,
        calls: int,
        open_reservations: int,
        per_request: CapVector = NO_CAPS,
        windows: WindowsView = (),
        limits: CapVector | None = None,
        overrides: tuple[Override, ...] = (),
        tenant: str | None = None,
    ) -> Snapshot:
        limits = caps if limits is None else limits
        remaining = [_remaining(limits[i], used[i], reserved[i]) for i in range(len(caps))]
        return cls(
            Caps._from_vector(caps),
            calls,
            open_reservations,
            used[0],
            reserved[0],
            remaining[0],
            used[1],
            reserved[1],
            remaining[1],
            used[TOKENS],
            reserved[TOKENS],
            remaining[TOKENS],
            nanos_to_usd(used[USD]),
            nanos_to_usd(reserved[USD]),
            _usd_or_none(remaining[USD]),
            used[REQUESTS],
            reserved[REQUESTS],
            remaining[REQUESTS],
            Caps._from_vector(per_request),
            tuple(WindowUsage._build(*window, used, reserved) for window in windows),
            Caps._from_vector(limits),
            overrides,
            tenant,
        )

    @property
    def totals(self) -> Totals:
        """The used amounts as :class:`Totals`."""
        return Totals(
            self.input_tokens_used,
            self.output_tokens_used,
            self.tokens_used,
            self.usd_used,
            self.requests_used,
            self.calls,
        )


@attrs.frozen
class WindowUsage:
    """One time window in a snapshot: usage in its current period and what is left.

    ``remaining`` is cap - used - open reservations, per axis (``None`` where
    the window has no cap); ``resets_at`` is when the window next frees usage
    (its period's end; for a rolling window, when its oldest charge leaves).
    """

    name: str
    kind: str
    caps: Caps
    used: Usage
    remaining: Caps
    resets_at: datetime | None
    limits: Caps
    """The caps in force now: ``caps`` plus active overrides of this window."""

    @classmethod
    def _build(
        cls,
        window: Window,
        base: Vector,
        resets_at: datetime | None,
        limits: CapVector,
        lifetime: Vector,
        reserved: Vector,
    ) -> WindowUsage:
        used = (lifetime[0] - base[0], lifetime[1] - base[1], lifetime[2] - base[2],
                lifetime[3] - base[3], lifetime[4] - base[4])  # fmt: skip
        return cls(
            window.name,
            window.kind,
            Caps._from_vector(window.caps),
            Usage._from_vector(used),
            _remaining_caps(limits, used, reserved),
            resets_at,
            Caps._from_vector(limits),
        )


@attrs.frozen
class Statistics:
    """Live figures about the budget's actor, for monitoring and tuning."""

    mailbox_depth: int
    mailbox_size: int
    messages_served: int
    batches_served: int
    peak_batch_size: int
    open_reservations: int
    tasks_waiting: int
    reservations_waiting: int = 0
    """Reservations queued with ``wait=True`` until they fit."""


@attrs.frozen
class Check:
    """The answer of a pre-flight :meth:`~treasurer.Budget.check`; nothing was reserved.

    ``remaining`` is what is left on each axis before this request (``None``
    where the axis is unbounded); ``refusal`` is the error the request would
    raise now, or ``None`` if it fits.
    """

    fits: bool
    refusal: BudgetExceeded | None = attrs.field(eq=False)
    remaining: Caps
    cap: str | None
    window: str | None
    windows: tuple[WindowUsage, ...] = ()

    @classmethod
    def _build(cls, refusal: BudgetExceeded | None, snapshot: Snapshot) -> Check:
        remaining = Caps(
            snapshot.input_tokens_remaining,
            snapshot.output_tokens_remaining,
            snapshot.tokens_remaining,
            snapshot.usd_remaining,
            snapshot.requests_remaining,
        )
        if refusal is None:
            return cls(True, None, remaining, None, None, snapshot.windows)
        return cls(False, refusal, remaining, refusal.cap, refusal.window, snapshot.windows)


@attrs.frozen
class UsageReport:
    """Usage over one period ("lifetime" or a window's current period).

    ``percent_used`` has an entry per capped axis (used / limit x 100, the
    limit including overrides, which ``overrides`` lists). ``top_models_by_tokens``
    and ``top_models_by_usd`` rank the models named in usage records, largest first.
    """

    period: str
    used: Usage
    reserved: Usage
    limits: Caps
    remaining: Caps
    percent_used: dict[str, float]
    open_reservations: int
    resets_at: datetime | None
    top_models_by_tokens: tuple[tuple[str, int], ...]
    top_models_by_usd: tuple[tuple[str, Decimal], ...]
    models: dict[str, Usage]
    overrides: tuple[Override, ...] = ()
    tenant: str | None = None

    @classmethod
    def _build(
        cls, period: str, view: UsageView, top: int, tenant: str | None = None
    ) -> UsageReport:
        used, limits, reserved, open_reservations, by_model, resets_at, overrides = view
        percent = {
            AXES[i]: (used[i] * 100 / limit if limit else 100.0)
            for i, limit in enumerate(limits)
            if limit is not None
        }
        models = {model: Usage._from_vector(amount) for model, amount in by_model.items()}
        by_tokens = sorted(models.items(), key=lambda item: (-item[1].tokens, item[0]))
        by_usd = sorted(models.items(), key=lambda item: (-item[1].usd, item[0]))
        return cls(
            period,
            Usage._from_vector(used),
            Usage._from_vector(reserved),
            Caps._from_vector(limits),
            _remaining_caps(limits, used, reserved),
            percent,
            open_reservations,
            resets_at,
            tuple((model, usage.tokens) for model, usage in by_tokens[:top]),
            tuple((model, usage.usd) for model, usage in by_usd[:top]),
            models,
            overrides,
            tenant,
        )
