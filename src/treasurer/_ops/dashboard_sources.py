"""Where the dashboard's figures come from, and the JSON it serves
(``/api/status``). Both sources use the public API only:

- :class:`LiveSource`, a budget open in this process: its snapshots,
  forecasts (if it was opened with ``forecast=``), and the events it emits
  while the dashboard runs (alerts, refusals, usage by model, the latter
  starting from its usage log if it has one);
- :class:`StoreSource`, a budget kept in a SQLite store, read without
  opening it: figures from the store; forecasts, models and derived alerts
  from its usage log (if given). A store keeps no refusals.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from .._core.axes import AXES
from .._core.events import (
    Event,
    ExhaustionForecast,
    RequestRefused,
    ThresholdCrossed,
    UsageRecorded,
    per_window,
    scope_words,
)
from .._core.values import Snapshot
from .._errors import InvalidOption, StoreUnavailable
from .._handles.budget import Budget
from .._runtime.subscription import Subscription
from .._stores.redis import RedisStore
from .._stores.sqlite import SqliteStore
from .forecast import Forecast, ForecastOptions, from_records
from .reports import usage_report
from .sqlite_log import read

RECENT: Final = 20  # alerts and refusals the page lists
log = logging.getLogger("treasurer.dashboard")


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    return value.isoformat() if isinstance(value, datetime) else value


def _event(event: Event) -> dict[str, object]:
    return {"at": _plain(event.at), "level": event.level, "message": event.message}


def status(
    name: str,
    figures: dict[str | None, Snapshot],
    forecasts: Sequence[Forecast],
    alerts: Iterable[dict[str, object]],
    refusals: dict[str, object],
    models: Iterable[dict[str, object]],
    now: datetime,
) -> dict[str, object]:
    """What ``/api/status`` answers: each scope's capped periods with their
    forecast, recent alerts and refusals, and the top models."""
    by_period = {(f.tenant, f.window, f.axis): f for f in forecasts}
    scopes = []
    for tenant, snap in figures.items():
        periods = []
        for period in snap.periods():
            for axis in AXES:
                limit = getattr(period.limits, axis)
                if limit is None:
                    continue
                forecast = by_period.get((tenant, period.name, axis))
                periods.append(
                    {
                        "period": period.name,
                        "axis": axis,
                        "used": _plain(getattr(period.used, axis)),
                        "limit": _plain(limit),
                        "remaining": _plain(getattr(period.remaining, axis)),
                        "resets_at": _plain(period.resets_at),
                        "forecast": None
                        if forecast is None
                        else {
                            "rate_per_hour": max(forecast.linear_rate, forecast.ewma_rate),
                            "exhausts_at": _plain(forecast.exhausts_at),
                            "runs_out": forecast.runs_out,
                        },
                    }
                )
        scopes.append(
            {"tenant": tenant, "open_reservations": snap.open_reservations, "periods": periods}
        )
    return {
        "budget": name,
        "at": _plain(now),
        "scopes": scopes,
        "alerts": list(alerts),
        "refusals": refusals,
        "models": list(models),
    }


def _top(models: Iterable[tuple[str | None, int, Decimal]]) -> list[dict[str, object]]:
    """The ten most expensive models (then by tokens)."""
    ranked = sorted(models, key=lambda m: (-m[2], -m[1], m[0] or ""))[:10]
    return [
        {"model": model or "(none)", "tokens": tokens, "usd": float(usd)}
        for model, tokens, usd in ranked
    ]


class Source(ABC):
    """Where the dashboard's figures come from."""

    name: str

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the budget while the dashboard runs (a task of its own, started
        before the dashboard answers its first request)."""
        task_status.started()

    @abstractmethod
    async def status(self) -> dict[str, object]:
        """The figures as of now."""


class LiveSource(Source):
    """A budget open in this process; events are followed from the start of
    :meth:`run` (call it on the budget's event loop)."""

    def __init__(self, budget: Budget) -> None:
        if not isinstance(budget, Budget):
            raise InvalidOption(f"the dashboard shows a treasurer.Budget, not {budget!r}")
        self.budget = budget
        self.name = budget.name
        self.alerts: deque[dict[str, object]] = deque(maxlen=RECENT)
        self.refused: deque[dict[str, object]] = deque(maxlen=RECENT)
        # usage by model: the usage log's when the dashboard started, then the events
        self.models: dict[str | None, tuple[int, Decimal]] = {}
        self.events: Subscription | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with self.budget.subscribe(buffer=1024) as events:
            self.events = events
            try:  # what the usage log holds from before; then the events add to it
                report = await self.budget.usage(group_by="model")
                self.models = {m: (u.tokens, u.usd) for m, u in report.groups.items()}
            except InvalidOption:  # no usage log: the models seen from now on
                pass
            except StoreUnavailable as exc:
                log.warning("the dashboard cannot read the usage log: %s", exc)
            task_status.started()
            async for event in events:
                self._take(event)

    def _take(self, event: Event) -> None:
        if isinstance(event, ThresholdCrossed | ExhaustionForecast):
            self.alerts.appendleft(_event(event))
        elif isinstance(event, RequestRefused):
            self.refused.appendleft(_event(event))
        elif isinstance(event, UsageRecorded):
            usage = event.usage
            tokens, usd = self.models.get(event.model, (0, Decimal(0)))
            self.models[event.model] = (tokens + usage.tokens, usd + usage.usd)

    async def status(self) -> dict[str, object]:
        # What the budget emitted up to now: an event handed straight to the
        # reader task is taken once it runs (it is ready before this one), the
        # rest is still in the subscription's buffer.
        await anyio.lowlevel.checkpoint()
        if self.events is not None:
            for event in self.events.pending():
                self._take(event)
        budget = self.budget
        figures: dict[str | None, Snapshot] = {None: budget.snapshot()}
        for name in budget.tenants():
            figures[name] = budget.tenant(name).snapshot()
        forecasts: list[Forecast] = []
        try:
            for tenant in figures:
                handle = budget if tenant is None else budget.tenant(tenant)
                forecasts += handle.forecast()
        except InvalidOption:
            pass  # the budget does not forecast
        models = [(m, tokens, usd) for m, (tokens, usd) in self.models.items()]
        stats = budget.statistics()
        refusals: dict[str, object] = {"count": stats.refusals, "recent": list(self.refused)}
        now = budget.snapshot().at or datetime.now(UTC)
        return status(self.name, figures, forecasts, self.alerts, refusals, _top(models), now)


class StoreSource(Source):
    """A budget kept in a store (a SQLite file by path, or a store object: SQLite
    or Redis), read without opening it; its usage log (optional) gives forecasts
    and models."""

    def __init__(
        self,
        store: str | Path | SqliteStore | RedisStore,
        *,
        budget: str | None = None,
        log: str | Path | None = None,
        forecast: ForecastOptions | None = None,
    ) -> None:
        self.store = store if isinstance(store, SqliteStore | RedisStore) else SqliteStore(store)
        names = self.store.names() if budget is None else [budget]
        if len(names) != 1:
            raise InvalidOption(
                f"the store holds {len(names)} budgets ({', '.join(names) or 'none'}): name one"
            )
        self.name = names[0]
        self.thresholds = tuple(self.store.options(self.name).get("thresholds", ()))
        self.log = None if log is None else Path(log)
        self.options = forecast or ForecastOptions()

    async def status(self) -> dict[str, object]:
        return await anyio.to_thread.run_sync(self._status)

    def _status(self) -> dict[str, object]:
        now = datetime.now(UTC)
        figures = self.store.read(self.name)
        forecasts: list[Forecast] = []
        models: list[dict[str, object]] = []
        if self.log is not None:
            lookback = max(self.options.span, 4 * self.options.half_life)
            recent = read(self.log, budget=self.name, since=now - lookback)
            for tenant, snap in figures.items():
                mine = [r for r in recent if tenant is None or r.tenant == tenant]
                forecasts += from_records(self.name, snap, mine, self.options, now)
            month = read(self.log, budget=self.name, since=now - timedelta(days=31))
            rows = usage_report(month, group_by=("model",))
            models = _top((row.group[0], row.tokens, row.usd) for row in rows)
        alerts = [*self._crossed(figures, now), *self._warnings(forecasts)]
        refusals: dict[str, object] = {"count": None, "recent": []}  # a store keeps none
        return status(self.name, figures, forecasts, alerts, refusals, models, now)

    def _crossed(
        self, figures: dict[str | None, Snapshot], now: datetime
    ) -> Iterable[dict[str, object]]:
        """The highest threshold each capped period has passed, as it stands now."""
        for tenant, snap in figures.items():
            scope = scope_words(self.name, tenant)
            for period in snap.periods():
                for axis in AXES:
                    limit = getattr(period.limits, axis)
                    if not limit:
                        continue
                    share = 100 * float(getattr(period.used, axis)) / float(limit)
                    passed = [t for t in self.thresholds if share >= t]
                    if passed:
                        where = per_window(period.name)
                        yield {
                            "at": _plain(now),
                            "level": "critical" if max(passed) >= 100 else "warning",
                            "message": f"{scope}: {axis} usage{where} is past {max(passed)}% "
                            f"of its cap ({getattr(period.used, axis)} of {limit})",
                        }

    def _warnings(self, forecasts: Iterable[Forecast]) -> Iterable[dict[str, object]]:
        for f in forecasts:
            if f.runs_out and f.resets_at is not None:
                yield _event(f.warning())
