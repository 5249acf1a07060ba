"""Metrics of budgets for Prometheus and OpenTelemetry.

Prometheus (``pip install 'treasurer[metrics]'``):
``prometheus_client.REGISTRY.register(treasurer.metrics.BudgetCollector(budget))``.
OpenTelemetry (``pip install 'treasurer[otel]'``, the API; the application
brings the SDK and its exporter): ``treasurer.metrics.OpenTelemetryMetrics(budget)``.

Both export, at each collection, the budget's figures as it last published
them (read without blocking, from the collecting thread): per budget, tenant,
period (``lifetime`` or a window's name) and axis, what is used, the limit in
force and what remains; what is reserved; open reservations, waiting
requests, refusals and dropped events. Built on the public API only
(``snapshot()``, ``statistics()``, ``tenants()``); works with
:mod:`treasurer.sync` budgets too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs

from ._core.axes import AXES
from ._core.values import Snapshot, Statistics
from ._errors import InvalidOption

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["BudgetCollector", "Metric", "OpenTelemetryMetrics", "readings"]


class _Readable(Protocol):
    name: str

    def snapshot(self) -> Snapshot: ...
    def statistics(self) -> Statistics: ...
    def tenants(self) -> list[str]: ...
    def tenant(self, name: str) -> Any: ...


@attrs.frozen
class Metric:
    """One metric of a budget at one moment: its samples as (labels, value)."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]]


SCOPE = ("budget", "tenant")
PERIOD = (*SCOPE, "period", "axis")


def _number(value: int | Decimal | None) -> float | None:
    return None if value is None else float(value)


def _check(budget: object, prefix: object, separator: str) -> None:
    if not all(hasattr(budget, name) for name in ("snapshot", "statistics", "tenants")):
        raise InvalidOption(f"metrics read a treasurer budget, not {budget!r}")
    if not isinstance(prefix, str) or not prefix.replace(separator, "_").isidentifier():
        raise InvalidOption(f"prefix must be a metric name prefix, not {prefix!r}")


def readings(budget: _Readable, *, tenants: bool = True) -> list[Metric]:
    """The figures both exporters publish (names without a prefix; USD in dollars)."""
    used: list[tuple[tuple[str, ...], float]] = []
    limit: list[tuple[tuple[str, ...], float]] = []
    remaining: list[tuple[tuple[str, ...], float]] = []
    reserved: list[tuple[tuple[str, ...], float]] = []
    open_reservations: list[tuple[tuple[str, ...], float]] = []
    snapshots = [("", budget.snapshot())]
    if tenants:
        snapshots += [(t, budget.tenant(t).snapshot()) for t in budget.tenants()]
    for tenant, snap in snapshots:
        scope = (budget.name, tenant)
        for period in snap.periods():
            for axis in AXES:
                labels = (*scope, period.name, axis)
                used.append((labels, float(getattr(period.used, axis))))
                cap = _number(getattr(period.limits, axis))
                if cap is not None:
                    limit.append((labels, cap))
                    left = _number(getattr(period.remaining, axis))
                    remaining.append((labels, left if left is not None else cap))
        for axis in AXES:
            reserved.append(((*scope, axis), float(getattr(snap.reserved, axis))))
        open_reservations.append((scope, snap.open_reservations))
    stats = budget.statistics()
    own = (budget.name,)
    return [
        Metric("used", "gauge", "Usage in the period (USD in dollars).", PERIOD, used),
        Metric(
            "limit", "gauge", "The cap in force in the period, overrides included.", PERIOD, limit
        ),
        Metric(
            "remaining",
            "gauge",
            "What the period's cap leaves after usage and reservations.",
            PERIOD,
            remaining,
        ),
        Metric("reserved", "gauge", "Held by open reservations.", (*SCOPE, "axis"), reserved),
        Metric(
            "open_reservations", "gauge", "Reservations not settled yet.", SCOPE, open_reservations
        ),
        Metric(
            "waiting_requests",
            "gauge",
            "Requests waiting for room.",
            ("budget",),
            [(own, stats.reservations_waiting)],
        ),
        Metric(
            "refusals",
            "counter",
            "Requests refused by a cap.",
            ("budget",),
            [(own, stats.refusals)],
        ),
        Metric(
            "events_dropped",
            "counter",
            "Events the callback never got (delivery fell behind).",
            ("budget",),
            [(own, stats.events_dropped)],
        ),
        Metric(
            "mailbox_depth",
            "gauge",
            "Calls waiting for the actor.",
            ("budget",),
            [(own, stats.mailbox_depth)],
        ),
    ]


class BudgetCollector:
    """A Prometheus collector of one budget (a :class:`treasurer.Budget` or a
    :class:`treasurer.sync.SyncBudget`), its tenants included unless ``tenants=False``.
    Metric names start with ``prefix`` and an underscore. (A collector is any
    object with ``collect()``; prometheus-client is imported when it collects.)"""

    def __init__(
        self, budget: _Readable, *, tenants: bool = True, prefix: str = "treasurer"
    ) -> None:
        _check(budget, prefix, "_")
        self.budget = budget
        self.tenants = bool(tenants)
        self.prefix = prefix

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for metric in readings(self.budget, tenants=self.tenants):
            kind = GaugeMetricFamily if metric.kind == "gauge" else CounterMetricFamily
            family = kind(f"{self.prefix}_{metric.name}", metric.help, labels=list(metric.labels))
            for labels, value in metric.samples:
                family.add_metric(list(labels), value)
            yield family


class OpenTelemetryMetrics:
    """Observable instruments for one budget (and its tenants unless
    ``tenants=False``) on ``meter_provider`` (the global one unless given):
    gauges ``<prefix>.used``, ``.limit``, ``.remaining``, ``.reserved``,
    ``.open_reservations``, ``.waiting_requests``, ``.mailbox_depth`` and
    counters ``.refusals``, ``.events_dropped``, with the attributes
    ``budget``, ``tenant`` and, where they apply, ``period`` and ``axis``.
    Once the budget is closed they report nothing (OpenTelemetry cannot
    remove an instrument)."""

    def __init__(
        self,
        budget: _Readable,
        *,
        meter_provider: MeterProvider | None = None,
        tenants: bool = True,
        prefix: str = "treasurer",
    ) -> None:
        from opentelemetry import metrics

        _check(budget, prefix, ".")
        self.budget = budget
        self.tenants = bool(tenants)
        self.prefix = prefix
        self._reading: dict[str, Metric] = {}
        self._served: set[str] = set()
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("treasurer")
        for metric in readings(budget, tenants=False):  # the names and kinds
            create = (
                meter.create_observable_gauge
                if metric.kind == "gauge"
                else meter.create_observable_counter
            )
            create(
                f"{prefix}.{metric.name}",
                callbacks=[self._callback(metric.name)],
                description=metric.help,
                unit="1",
            )

    def _callback(self, name: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            from opentelemetry.metrics import Observation

            if getattr(self.budget, "closed", False):
                return []
            # One reading per collection, so the instruments agree: an instrument
            # asked again means a new collection began.
            if name in self._served or not self._reading:
                self._reading = {m.name: m for m in readings(self.budget, tenants=self.tenants)}
                self._served.clear()
            self._served.add(name)
            metric = self._reading[name]
            return [
                Observation(value, dict(zip(metric.labels, labels, strict=True)))
                for labels, value in metric.samples
            ]

        return observe
