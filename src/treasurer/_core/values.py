"""Immutable values handed to users: caps, usage, totals, snapshots, reports.

Each has one field per axis (the names users write); they are built from the
internal vectors by looping over the axis registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import BudgetExceeded
from .axes import AXES, CapVector, Vector, to_public

if TYPE_CHECKING:
    from .events import Override


def _public(values: CapVector) -> dict[str, Any]:
    return {
        name: None if value is None else to_public(axis, value)
        for axis, name, value in zip(range(len(AXES)), AXES, values, strict=True)
    }


def remaining(limits: CapVector, used: Vector, reserved: Vector) -> CapVector:
    """What is left under each limit (``None`` where unbounded)."""
    return tuple(
        None if cap is None else cap - u - r
        for cap, u, r in zip(limits, used, reserved, strict=True)
    )


def least(bounds: Iterable[CapVector]) -> CapVector:
    """Per axis, the least of the bounds that cap it (``None`` if none does)."""
    result: list[int | None] = [None] * len(AXES)
    for bound in bounds:
        for axis, value in enumerate(bound):
            current = result[axis]
            if value is not None and (current is None or value < current):
                result[axis] = value
    return tuple(result)


@attrs.frozen
class Caps:
    """Caps on each axis; ``None`` means unbounded."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    tokens: int | None = None
    usd: Decimal | None = None
    requests: int | None = None

    @classmethod
    def of(cls, caps: CapVector) -> Caps:
        return cls(**_public(caps))


@attrs.frozen
class Usage:
    """An amount on every axis: what a reservation holds or a call used."""

    input_tokens: int
    output_tokens: int
    tokens: int
    usd: Decimal
    requests: int

    @classmethod
    def of(cls, amount: Vector) -> Usage:
        return cls(**_public(amount))

    def __str__(self) -> str:
        shown = [f"{name}={value}" for name, value in attrs.asdict(self).items() if value]
        return ", ".join(shown) or "nothing"


@attrs.frozen
class Totals:
    """Usage recorded so far (not counting open reservations), and the number of calls."""

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
    def of(cls, used: Vector, calls: int) -> Totals:
        return cls(**_public(used), calls=calls)


@attrs.frozen
class WindowUsage:
    """One time window in a snapshot: usage in its current period and what is left.

    ``remaining`` is limit - used - open reservations, per axis (``None``
    where the window has no cap); ``resets_at`` is when the window next frees
    usage (its period's end; for a rolling window, when its oldest charge leaves).
    """

    name: str
    kind: str
    caps: Caps
    used: Usage
    remaining: Caps
    resets_at: datetime | None
    limits: Caps
    """The caps in force now: ``caps`` plus active overrides of this window."""


@attrs.frozen
class Period:
    """One period of a snapshot: the lifetime (``name`` and ``kind``
    "lifetime", never resets) or a window's current period (``kind``: hour,
    day, week, month or rolling)."""

    name: str
    used: Usage
    limits: Caps
    remaining: Caps
    resets_at: datetime | None
    kind: str = "lifetime"


@attrs.frozen
class Snapshot:
    """A consistent view of one scope of the budget as of the actor's last batch.

    ``*_remaining`` is ``limit - used - reserved`` (``None`` when the axis has
    no cap). It goes negative only when spend that already happened passed the
    cap (a commit above its estimate, a late commit, a charge): that spend is
    never dropped. ``at`` is the budget's time of the batch it reflects.
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
    child: str | None = None
    """The child budget these figures belong to (``None``: not a child)."""
    at: datetime | None = attrs.field(default=None, eq=False)
    """The budget's time of the batch these figures are from (not compared by ``==``)."""

    def window(self, name: str) -> WindowUsage:
        """The time window called ``name`` ("hour", "day", ...)."""
        for window in self.windows:
            if window.name == name:
                return window
        raise KeyError(
            f"no window named {name!r}; this budget has {[w.name for w in self.windows]}"
        )

    @property
    def used(self) -> Usage:
        """The used amounts on every axis."""
        return Usage(**{name: getattr(self, f"{name}_used") for name in AXES})

    @property
    def reserved(self) -> Usage:
        """What open reservations hold on every axis."""
        return Usage(**{name: getattr(self, f"{name}_reserved") for name in AXES})

    @property
    def remaining(self) -> Caps:
        """What is left on every axis (``None`` where unbounded)."""
        return Caps(**{name: getattr(self, f"{name}_remaining") for name in AXES})

    def periods(self) -> list[Period]:
        """The lifetime, then each window: used, limits and remaining in each."""
        lifetime = Period("lifetime", self.used, self.limits, self.remaining, None)
        return [
            lifetime,
            *(
                Period(w.name, w.used, w.limits, w.remaining, w.resets_at, w.kind)
                for w in self.windows
            ),
        ]

    @property
    def totals(self) -> Totals:
        """The used amounts as :class:`Totals`."""
        return Totals(**attrs.asdict(self.used), calls=self.calls)


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
    events_dropped: int = 0
    """Events that callbacks never got because delivery fell too far behind."""
    refusals: int = 0
    """Requests refused by a cap since the budget opened (waiting ones included)."""


@attrs.frozen
class UsageReport:
    """Usage over one period ("lifetime" or a window's current period).

    ``percent_used`` has an entry per capped axis (used / limit x 100, the
    limit including overrides, which ``overrides`` lists). ``models`` and the
    ``top_models_*`` rankings come from the ``model`` of every settled call.
    ``groups`` is usage per value of the metadata named by ``group_by``, from
    the budget's usage records in the period; ``groups_complete`` is False if
    records of the period were dropped from the bounded in-memory log.
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
    group_by: str | None = None
    groups: dict[str | None, Usage] = attrs.field(factory=dict)
    groups_complete: bool = True


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
    def of(cls, refusal: BudgetExceeded | None, snapshot: Snapshot) -> Check:
        if refusal is None:
            return cls(True, None, snapshot.remaining, None, None, snapshot.windows)
        return cls(
            False, refusal, snapshot.remaining, refusal.cap, refusal.window, snapshot.windows
        )
