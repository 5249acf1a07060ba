"""What the ledger answers, as plain data: replies, refusals, rejections, views.

Nothing here is an exception or holds a reference into live state, so an
outcome can cross a thread, a process or a Redis reply unchanged; the
caller's handle turns a refusal or rejection into the exception it raises.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final, NamedTuple

import attrs

from .. import _errors
from .axes import AXES, CapVector, Vector, to_public
from .events import Event, Override
from .scopes import ScopePath
from .values import Caps, Snapshot, Totals, Usage, UsageReport, WindowUsage, least, remaining


@attrs.frozen
class Refusal:
    """Why a request does not fit (see :class:`treasurer.BudgetExceeded` for the fields).

    ``too_large``: the request exceeds the cap itself, so it never fits;
    ``final``: usage already spent leaves no room under a lifetime cap, so
    waiting cannot help; ``scope``: the scope whose cap refused.
    """

    scope: ScopePath
    budget: str
    tenant: str | None
    child: str | None
    cap: str
    window: str
    limit: int | Decimal
    requested: int | Decimal
    used: int | Decimal
    reserved: int | Decimal
    available: int | Decimal
    resets_at: datetime | None = None
    too_large: bool = False
    final: bool = False

    @classmethod
    def build(
        cls,
        scope: ScopePath,
        names: tuple[str, str | None, str | None],
        axis: int,
        window: str,
        *,
        limit: int,
        requested: int,
        used: int,
        reserved: int,
        resets_at: datetime | None = None,
        too_large: bool = False,
        final: bool = False,
    ) -> Refusal:
        budget, tenant, child = names
        return cls(
            scope,
            budget,
            tenant,
            child,
            AXES[axis],
            window,
            to_public(axis, limit),
            to_public(axis, requested),
            to_public(axis, used),
            to_public(axis, reserved),
            to_public(axis, max(limit - used - reserved, 0)),
            resets_at,
            too_large,
            final or too_large,
        )

    @property
    def attempted(self) -> int | Decimal:
        return self.used + self.reserved + self.requested

    def error(self) -> _errors.BudgetExceeded:
        kind = _errors.RequestTooLarge if self.too_large else _errors.BudgetExceeded
        return kind(
            budget=self.budget,
            tenant=self.tenant,
            child=self.child,
            cap=self.cap,
            window=self.window,
            resets_at=self.resets_at,
            limit=self.limit,
            requested=self.requested,
            used=self.used,
            reserved=self.reserved,
            attempted=self.attempted,
            available=self.available,
        )


_REJECTIONS: Final = {
    "invalid_option": _errors.InvalidOption,
    "reservation": _errors.ReservationError,
    "refund": _errors.InvalidRefund,
    "closed": _errors.BudgetClosed,
}


@attrs.frozen
class Rejected:
    """A command the ledger would not apply (an unknown window, a refund that
    matches no consume...); it changed nothing."""

    kind: str
    message: str

    def error(self) -> _errors.TreasurerError:
        return _REJECTIONS[self.kind](self.message)


class Granted(NamedTuple):
    """A reservation was made; its settler names it by id and ``token``."""

    reservation: int
    deadline: datetime | None
    token: int = 0


class Settled(NamedTuple):
    """A reservation ended; ``expired`` if it had expired before this settled it."""

    reservation: int
    expired: bool = False


class Charged(NamedTuple):
    """Usage was charged; the scope's lifetime totals after it."""

    used: Vector
    calls: int
    at: datetime
    resets: int = 0  # the ledger's resets so far: a take-back after another gives nothing

    def totals(self) -> Totals:
        return Totals.of(self.used, self.calls)


@attrs.frozen
class WindowView:
    name: str
    kind: str
    caps: CapVector
    limits: CapVector
    used: Vector
    resets_at: datetime | None


@attrs.frozen
class ScopeView:
    """One scope's figures as of a batch: what snapshots are built from."""

    path: ScopePath
    caps: CapVector
    per_request: CapVector
    limits: CapVector
    used: Vector
    reserved: Vector
    calls: int
    open: int
    windows: tuple[WindowView, ...]
    overrides: tuple[Override, ...]
    tenant: str | None
    child: str | None
    at: datetime

    def snapshot(self) -> Snapshot:
        left = remaining(self.limits, self.used, self.reserved)
        axes: dict[str, object] = {}
        for axis, name in enumerate(AXES):
            axes[f"{name}_used"] = to_public(axis, self.used[axis])
            axes[f"{name}_reserved"] = to_public(axis, self.reserved[axis])
            cap = left[axis]
            axes[f"{name}_remaining"] = None if cap is None else to_public(axis, cap)
        return Snapshot(
            caps=Caps.of(self.caps),
            calls=self.calls,
            open_reservations=self.open,
            per_request=Caps.of(self.per_request),
            windows=tuple(self.window_usage(window) for window in self.windows),
            limits=Caps.of(self.limits),
            overrides=self.overrides,
            tenant=self.tenant,
            child=self.child,
            at=self.at,
            **axes,  # type: ignore[arg-type]
        )

    def window_usage(self, window: WindowView) -> WindowUsage:
        return WindowUsage(
            window.name,
            window.kind,
            Caps.of(window.caps),
            Usage.of(window.used),
            Caps.of(remaining(window.limits, window.used, self.reserved)),
            window.resets_at,
            Caps.of(window.limits),
        )

    def room(self) -> CapVector:
        """What one request could take now on each axis: the least that the lifetime
        caps, every window (open reservations count in each) and the per-request
        caps leave; ``None`` where nothing caps the axis."""
        bounds = [remaining(self.limits, self.used, self.reserved), self.per_request]
        bounds.extend(remaining(w.limits, w.used, self.reserved) for w in self.windows)
        return least(bounds)

    def tokens_left(self) -> int | None:
        """The tokens cap minus used and reserved (``None`` if uncapped)."""
        axis = AXES.index("tokens")
        cap = self.limits[axis]
        return None if cap is None else cap - self.used[axis] - self.reserved[axis]


@attrs.frozen
class Verdict:
    """The answer to a :class:`~.commands.Probe`: why it would be refused, if it would."""

    refusal: Refusal | None
    view: ScopeView


@attrs.frozen
class UsageFigures:
    """Raw figures of one period of a scope, for a usage report."""

    period: str
    used: Vector
    reserved: Vector
    limits: CapVector
    open: int
    by_model: tuple[tuple[str, Vector], ...]
    resets_at: datetime | None
    overrides: tuple[Override, ...]
    tenant: str | None
    start: datetime | None
    """When the period began (``None``: the budget's whole life)."""

    def report(self, top: int) -> UsageReport:
        percent = {
            AXES[axis]: (self.used[axis] * 100 / limit if limit else 100.0)
            for axis, limit in enumerate(self.limits)
            if limit is not None
        }
        models = {model: Usage.of(amount) for model, amount in self.by_model}
        by_tokens = sorted(models.items(), key=lambda item: (-item[1].tokens, item[0]))
        by_usd = sorted(models.items(), key=lambda item: (-item[1].usd, item[0]))
        return UsageReport(
            self.period,
            Usage.of(self.used),
            Usage.of(self.reserved),
            Caps.of(self.limits),
            Caps.of(remaining(self.limits, self.used, self.reserved)),
            percent,
            self.open,
            self.resets_at,
            tuple((model, usage.tokens) for model, usage in by_tokens[:top]),
            tuple((model, usage.usd) for model, usage in by_usd[:top]),
            models,
            self.overrides,
            self.tenant,
        )


@attrs.frozen
class ChildOpened:
    path: ScopePath
    name: str


Reply = (
    Granted
    | Settled
    | Charged
    | Refusal
    | Rejected
    | Override
    | Verdict
    | UsageFigures
    | ChildOpened
    | ScopeView
    | None
)


class Outcome(NamedTuple):
    """A command's reply and the events applying it produced."""

    reply: Reply
    events: tuple[Event, ...] = ()
