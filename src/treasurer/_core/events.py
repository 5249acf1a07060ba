"""Events a budget emits: threshold alerts, usage, refusals, reservations, rollovers.

Frozen values made by the pure ledger and handed out by the actor after each
batch, so a slow listener never holds up the budget.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import attrs

from .values import Usage

Level = Literal["info", "warning", "critical"]


@attrs.frozen(kw_only=True)
class Event:
    """Base class of every event: which budget, tenant and child budget, when
    (the budget's clock), how serious. ``tenant`` and ``child`` are ``None``
    for the budget's own scope; ``child`` is the name of the child budget it
    happened in."""

    budget: str
    at: datetime
    level: Level = "info"
    tenant: str | None = None
    child: str | None = None

    @property
    def message(self) -> str:
        """One plain sentence about what happened."""
        return f"{type(self).__name__} in {self.scope}"

    @property
    def scope(self) -> str:
        """Which budget, and which tenant or child if any, in words."""
        return scope_words(self.budget, self.tenant, self.child)


def scope_words(budget: str, tenant: str | None = None, child: str | None = None) -> str:
    """``budget 'api', tenant 'acme'``: a scope as messages name it."""
    parts = [f"budget {budget!r}"]
    if tenant is not None:
        parts.append(f"tenant {tenant!r}")
    if child is not None:
        parts.append(f"child {child!r}")
    return ", ".join(parts)


def per_window(window: str) -> str:
    """`` per day`` for a window, nothing for the lifetime: how messages name a period."""
    return "" if window == "lifetime" else f" per {window}"


@attrs.frozen(kw_only=True)
class ThresholdCrossed(Event):
    """Usage on one axis of one period passed a percentage of its cap.

    Fires once per threshold per period (the lifetime counts as one period,
    re-armed by ``reset()``); a window's thresholds re-arm when it rolls over.
    Level: critical at 100 % and above, warning from 75 %, else info.
    """

    cap: str
    window: str
    threshold: int
    used: int | Decimal
    limit: int | Decimal
    resets_at: datetime | None = None

    @property
    def message(self) -> str:
        return (
            f"{self.scope}: {self.cap} usage{per_window(self.window)} reached {self.threshold}% "
            f"of its cap ({self.used} of {self.limit})"
        )


@attrs.frozen(kw_only=True)
class ExhaustionForecast(Event):
    """At the rate the budget has been spending lately, a window's cap runs out
    before the window resets, or a lifetime cap (``window`` "lifetime",
    ``resets_at`` ``None``) within the forecast's horizon.

    ``rate`` is per hour in the cap's unit (USD in dollars). Fires once per cap
    per period: a window's warning re-arms when it rolls over. Made by a budget
    opened with ``forecast=`` (see :mod:`treasurer.forecast`); level: warning.
    """

    cap: str
    window: str
    exhausts_at: datetime
    resets_at: datetime | None
    used: int | Decimal
    limit: int | Decimal
    rate: float
    level: Level = "warning"

    @property
    def message(self) -> str:
        return (
            f"{self.scope}: at this rate the {self.cap} cap{per_window(self.window)} "
            f"({self.limit}) "
            f"runs out at {self.exhausts_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        )


@attrs.frozen(kw_only=True)
class UsageRecorded(Event):
    """Usage was settled: a commit, a record, a charge or a consume.

    Carries the call's metadata; ``source`` says which call, ``reservation``
    its reservation for a commit. A commit after its reservation expired is
    ``"late_commit"``. Usage given back is a record with a negative amount:
    a refund's credit (``"refund"``) and a call taken back because its caller
    was cancelled after it was applied (``"take_back"``), so the records of a
    period add up to what it used.
    """

    amount: tuple[int, ...] = attrs.field(repr=False)
    source: Literal["commit", "late_commit", "record", "charge", "consume", "refund", "take_back"]
    reservation: int | None = None
    model: str | None = None
    request_id: str | None = None
    session_id: str | None = None
    tags: dict[str, str] = attrs.field(factory=dict)

    @property
    def usage(self) -> Usage:
        """What was used, on every axis (made when asked: most records are never read)."""
        return Usage.of(self.amount)

    @property
    def message(self) -> str:
        return f"{self.scope}: {self.source} of {self.usage}"


@attrs.frozen(kw_only=True)
class RequestRefused(Event):
    """A request did not fit; ``error`` is the BudgetExceeded its caller got."""

    cap: str
    window: str
    error: str

    @property
    def message(self) -> str:
        return self.error


@attrs.frozen(kw_only=True)
class ReservationCreated(Event):
    reservation: int
    amount: Usage
    model: str | None = None


@attrs.frozen(kw_only=True)
class ReservationCommitted(Event):
    reservation: int
    actual: Usage


@attrs.frozen(kw_only=True)
class ReservationReleased(Event):
    reservation: int


@attrs.frozen(kw_only=True)
class ReservationExpiredEvent(Event):
    """A reservation reached its deadline unsettled and was released.

    (Not to be confused with the exception :class:`treasurer.ReservationExpired`,
    which a commit made after that raises.)
    """

    reservation: int
    amount: Usage
    deadline: datetime

    @property
    def message(self) -> str:
        return (
            f"{self.scope}: reservation {self.reservation} expired unsettled "
            f"at {self.deadline.isoformat()} and was released"
        )


@attrs.frozen(kw_only=True)
class Override:
    """A temporary increase of the caps of one period ("lifetime" or a window's
    name) of the budget, of one tenant, or of one child budget."""

    id: int
    window: str
    increase: Usage
    created_at: datetime
    expires_at: datetime
    reason: str = ""
    created_by: str = ""
    tenant: str | None = None
    budget: str = ""
    child: str | None = None


@attrs.frozen(kw_only=True)
class OverrideSet(Event):
    override: Override


@attrs.frozen(kw_only=True)
class OverrideExpired(Event):
    override: Override


@attrs.frozen(kw_only=True)
class OverrideRemoved(Event):
    override: Override


@attrs.frozen(kw_only=True)
class WindowRolledOver(Event):
    """A calendar window began a new period."""

    window: str
    resets_at: datetime | None


def threshold_level(threshold: int) -> Level:
    if threshold >= 100:
        return "critical"
    return "warning" if threshold >= 75 else "info"
