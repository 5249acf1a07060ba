"""Forecasts: how fast a budget has been spending, and when each cap runs out
at that rate.

Two burn rates per axis, from the scope's lifetime usage sampled over time:
``linear`` (what was used over the last ``span``, per hour) and ``ewma`` (an
exponentially weighted rate: a use ``half_life`` ago counts half as much as
one now, so it reacts to a burst sooner and forgets it sooner). A cap's
projected exhaustion is what remains of it (after usage and reservations)
divided by the higher of the two rates: a forecast that warns early rather
than late. Rates are over the span, or over the time observed if that is
shorter, never less than ``warmup``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

import attrs

from .._core.axes import AXES, ZERO, Vector, add, sub, to_public
from .._core.events import Event, ExhaustionForecast, UsageRecorded
from .._core.outcomes import ScopeView
from .._core.scopes import ScopePath
from .._core.values import Snapshot
from .._errors import InvalidOption

_UNIT: Final = tuple(float(to_public(axis, 1)) for axis in range(len(AXES)))
HOUR: Final = 3600.0
BUCKETS: Final = 120  # samples kept per span, at most (and one before it)


def _duration(value: object, name: str) -> timedelta:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidOption(f"{name} must be a positive timedelta, not {value!r}")
    return value


@attrs.frozen
class ForecastOptions:
    """How a budget forecasts (``open_budget(..., forecast=ForecastOptions(...))``;
    ``forecast=True`` takes these defaults). ``warn`` makes the budget emit an
    :class:`~treasurer.ExhaustionForecast` when a window's cap is projected to
    run out before the window resets, or a lifetime cap within ``horizon``:
    once per cap and period, and not before it has observed the budget for
    ``warmup``."""

    span: timedelta = attrs.field(default=timedelta(hours=1))
    half_life: timedelta = attrs.field(default=timedelta(minutes=15))
    warmup: timedelta = attrs.field(default=timedelta(minutes=5))
    horizon: timedelta = attrs.field(default=timedelta(days=1))
    warn: bool = True

    def __attrs_post_init__(self) -> None:
        _duration(self.span, "span")
        _duration(self.half_life, "half_life")
        _duration(self.warmup, "warmup")
        _duration(self.horizon, "horizon")
        if not isinstance(self.warn, bool):
            raise InvalidOption(f"warn must be True or False, not {self.warn!r}")

    @classmethod
    def of(cls, value: object) -> ForecastOptions | None:
        """``open_budget``'s ``forecast``, checked."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        raise InvalidOption(f"forecast must be True or a ForecastOptions, not {value!r}")


@attrs.frozen
class Forecast:
    """One capped axis of one period ("lifetime" or a window's name) of a scope.

    ``linear_rate`` and ``ewma_rate`` are per hour in the axis's unit (USD in
    dollars); ``exhausts_at`` is when the cap runs out at the higher of them
    (``None``: nothing is being spent); ``runs_out`` says whether that is
    before the period resets (for the lifetime, which never resets: whether
    it is at all).
    """

    budget: str
    tenant: str | None
    child: str | None
    window: str
    axis: str
    at: datetime
    used: int | Decimal
    limit: int | Decimal
    remaining: int | Decimal
    linear_rate: float
    ewma_rate: float
    exhausts_at: datetime | None
    resets_at: datetime | None
    kind: str = "lifetime"
    """The period's kind: "lifetime", or the window's (hour, day, week, month, rolling)."""

    def warning(self) -> ExhaustionForecast:
        """This forecast as the event that warns of it (it must run out)."""
        if self.exhausts_at is None:
            raise ValueError("a forecast that never runs out warns of nothing")
        return ExhaustionForecast(
            budget=self.budget,
            at=self.at,
            tenant=self.tenant,
            child=self.child,
            cap=self.axis,
            window=self.window,
            exhausts_at=self.exhausts_at,
            resets_at=self.resets_at,
            used=self.used,
            limit=self.limit,
            rate=max(self.linear_rate, self.ewma_rate),
        )

    @property
    def runs_out(self) -> bool:
        """Whether the cap runs out, at this rate, before the period resets."""
        if self.exhausts_at is None:
            return False
        return self.resets_at is None or self.exhausts_at < self.resets_at


class Burn:
    """The burn rates of one scope, from its cumulative usage sampled over time."""

    __slots__ = ("_bucket", "_ewma", "_last", "_samples", "_tau", "since", "span", "warmup")

    def __init__(self, options: ForecastOptions, since: datetime, used: Vector = ZERO) -> None:
        self.span = options.span.total_seconds()
        self.warmup = options.warmup.total_seconds()
        self._tau = options.half_life.total_seconds() / math.log(2)
        self._bucket = self.span / BUCKETS
        self.since = since
        # (seconds since `since`, cumulative usage): the span's samples, and one before it
        self._samples: deque[tuple[float, Vector]] = deque([(0.0, used)])
        self._last: tuple[float, Vector] = (0.0, used)
        self._ewma = [0.0] * len(AXES)

    def add(self, at: datetime, used: Vector) -> None:
        """The scope's cumulative usage as of ``at`` (samples come in time order)."""
        t = (at - self.since).total_seconds()
        last_t, last_used = self._last
        if t < last_t or used == last_used:
            return
        decay = math.exp(-(t - last_t) / self._tau)
        for axis, value in enumerate(used):
            self._ewma[axis] = self._ewma[axis] * decay + (value - last_used[axis]) / self._tau
        self._last = (t, used)
        # One sample per bucket of the span at most: the latest replaces the one
        # taken less than a bucket after the sample before it.
        samples = self._samples
        if len(samples) > 1 and t - samples[-2][0] < self._bucket:
            samples[-1] = self._last
        else:
            samples.append(self._last)
        while len(samples) > 2 and samples[1][0] <= t - self.span:
            samples.popleft()

    def observed(self, now: datetime) -> float:
        """Seconds observed so far."""
        return (now - self.since).total_seconds()

    def rates(self, now: datetime) -> tuple[list[float], list[float]]:
        """Per second, per axis: the linear rate over the span and the EWMA rate."""
        t = self.observed(now)
        last_t, last_used = self._last
        base_used = self._samples[0][1]
        for sample_t, sample_used in self._samples:
            if sample_t > t - self.span:
                break
            base_used = sample_used
        over = max(min(self.span, t), self.warmup)
        linear = [(last - base) / over for last, base in zip(last_used, base_used, strict=True)]
        # The sum decays since the last sample; dividing by the weight observed so
        # far removes the start-up bias (an estimator that began at zero).
        decay = math.exp(-max(t - last_t, 0.0) / self._tau)
        weight = 1.0 - math.exp(-max(t, self.warmup) / self._tau)
        ewma = [value * decay / weight for value in self._ewma]
        return linear, ewma


def forecasts(budget: str, snapshot: Snapshot, burn: Burn, now: datetime) -> list[Forecast]:
    """A forecast for each capped axis of each period of one scope."""
    linear, ewma = burn.rates(now)
    result = []
    for period in snapshot.periods():
        for axis, name in enumerate(AXES):
            limit = getattr(period.limits, name)
            if limit is None:
                continue
            left = getattr(period.remaining, name)
            hourly = HOUR * _UNIT[axis]
            rate = max(linear[axis], ewma[axis]) * _UNIT[axis]  # per second
            exhausts_at = None
            if left <= 0:
                exhausts_at = now
            elif rate > 0:
                exhausts_at = now + timedelta(seconds=min(float(left) / rate, 1e11))
            result.append(
                Forecast(
                    budget=budget,
                    tenant=snapshot.tenant,
                    child=snapshot.child,
                    window=period.name,
                    axis=name,
                    at=now,
                    used=getattr(period.used, name),
                    limit=limit,
                    remaining=left,
                    linear_rate=linear[axis] * hourly,
                    ewma_rate=ewma[axis] * hourly,
                    exhausts_at=exhausts_at,
                    resets_at=period.resets_at,
                    kind=period.kind,
                )
            )
    return result


def from_records(
    budget: str,
    snapshot: Snapshot,
    records: Iterable[UsageRecorded],
    options: ForecastOptions,
    now: datetime,
) -> list[Forecast]:
    """Forecasts of one scope from usage records (a usage log's, say) instead of
    samples: the rates count the records from ``span`` (or four half-lives, if
    longer) before ``now``, or from the first of them if that is later."""
    lookback = max(options.span, 4 * options.half_life)
    recent = sorted((r for r in records if now - lookback <= r.at <= now), key=lambda r: r.at)
    burn = Burn(options, recent[0].at if recent else now - lookback)
    total = ZERO
    for record in recent:
        total = tuple(a + b for a, b in zip(total, record.amount, strict=True))
        burn.add(record.at, total)
    return forecasts(budget, snapshot, burn, now)


def _spent(events: Sequence[Event]) -> dict[tuple[str | None, str | None], Vector]:
    """The usage the events record, per (tenant, child)."""
    spent: dict[tuple[str | None, str | None], Vector] = {}
    for event in events:
        if isinstance(event, UsageRecorded):
            key = (event.tenant, event.child)
            spent[key] = add(spent.get(key, ZERO), event.amount)
    return spent


class ForecastWatch:
    """A budget's burn rates, fed by the actor with every view it publishes,
    and the warnings they give rise to."""

    def __init__(self, options: ForecastOptions, budget: str) -> None:
        self.options: Final = options
        self.budget: Final = budget
        self.burns: dict[ScopePath, Burn] = {}
        # scope -> (period, axis) -> the end of the period last warned about
        self._warned: dict[ScopePath, dict[tuple[str, str], datetime | None]] = {}

    def observe(
        self,
        views: Mapping[ScopePath, ScopeView | None],
        now: datetime,
        events: Sequence[Event] = (),
    ) -> list[ExhaustionForecast]:
        """Sample the views a batch published (``events``: the batch's); the
        warnings that are new."""
        warnings: list[ExhaustionForecast] = []
        spent: dict[tuple[str | None, str | None], Vector] | None = None
        for path, view in views.items():
            if view is None:  # the scope is gone (a child budget closed, a tenant forgotten)
                self.burns.pop(path, None)
                self._warned.pop(path, None)
                continue
            burn = self.burns.get(path)
            if burn is None:
                # A scope seen for the first time starts from its usage before this
                # batch, so the spend that brought it here counts.
                if spent is None:
                    spent = _spent(events)
                before = sub(view.used, spent.get((view.tenant, view.child), ZERO))
                burn = self.burns[path] = Burn(self.options, view.at, before)
            burn.add(view.at, view.used)
            if self.options.warn and burn.observed(now) >= burn.warmup:
                warnings += self._warnings(path, view, burn, now)
        return warnings

    def forecast(self, view: ScopeView, now: datetime) -> list[Forecast]:
        burn = self.burns.get(view.path) or Burn(self.options, view.at, view.used)
        return forecasts(self.budget, view.snapshot(), burn, now)

    def _warnings(
        self, path: ScopePath, view: ScopeView, burn: Burn, now: datetime
    ) -> Iterator[ExhaustionForecast]:
        horizon = now + self.options.horizon
        warned = self._warned.get(path, {})
        for forecast in forecasts(self.budget, view.snapshot(), burn, now):
            key = (forecast.window, forecast.axis)
            deadline = horizon if forecast.resets_at is None else forecast.resets_at
            exhausts_at = forecast.exhausts_at
            rolling = forecast.kind == "rolling"
            if exhausts_at is None or exhausts_at >= deadline:
                if rolling:  # a rolling window re-arms once it no longer runs out
                    warned.pop(key, None)
                continue
            # Once per period: a calendar window's ends when it resets; a rolling
            # window's "reset" moves with every use, so it counts as one period.
            period = None if rolling else forecast.resets_at
            if key in warned and warned[key] == period:
                continue
            warned[key] = period
            self._warned[path] = warned
            yield forecast.warning()
