"""Prometheus metrics of budgets: ``pip install 'treasurer[metrics]'``.

``prometheus_client.REGISTRY.register(treasurer.metrics.BudgetCollector(budget))``
exports, at each scrape, the budget's figures as it last published them (read
without blocking, from the scraping thread): per budget, tenant, period
(``lifetime`` or a window's name) and axis, what is used, the limit in force
and what remains; what is reserved; open reservations, waiting requests,
refusals and dropped events. Built on the public API only (``snapshot()``,
``statistics()``, ``tenants()``); works with :mod:`treasurer.sync` budgets too.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ._core.axes import AXES
from ._core.values import Snapshot, Statistics
from ._errors import InvalidOption

__all__ = ["BudgetCollector"]


class _Readable(Protocol):
    name: str

    def snapshot(self) -> Snapshot: ...
    def statistics(self) -> Statistics: ...
    def tenants(self) -> list[str]: ...
    def tenant(self, name: str) -> Any: ...


def _number(value: int | Decimal | None) -> float | None:
    return None if value is None else float(value)


class BudgetCollector(Collector):
    """A Prometheus collector of one budget (a :class:`treasurer.Budget` or a
    :class:`treasurer.sync.SyncBudget`), its tenants included unless ``tenants=False``.
    Metric names start with ``prefix``."""

    def __init__(
        self, budget: _Readable, *, tenants: bool = True, prefix: str = "treasurer"
    ) -> None:
        if not all(hasattr(budget, name) for name in ("snapshot", "statistics", "tenants")):
            raise InvalidOption(f"BudgetCollector reads a treasurer budget, not {budget!r}")
        if not isinstance(prefix, str) or not prefix.isidentifier():
            raise InvalidOption(f"prefix must be a metric name prefix, not {prefix!r}")
        self.budget = budget
        self.tenants = bool(tenants)
        self.prefix = prefix

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        p, name = self.prefix, self.budget.name
        scope_labels = ["budget", "tenant"]
        period_labels = [*scope_labels, "period", "axis"]
        used = GaugeMetricFamily(
            f"{p}_used", "Usage in the period (USD in dollars).", labels=period_labels
        )
        limit = GaugeMetricFamily(
            f"{p}_limit",
            "The cap in force in the period, overrides included.",
            labels=period_labels,
        )
        remaining = GaugeMetricFamily(
            f"{p}_remaining",
            "What the period's cap leaves after usage and reservations.",
            labels=period_labels,
        )
        reserved = GaugeMetricFamily(
            f"{p}_reserved", "Held by open reservations.", labels=[*scope_labels, "axis"]
        )
        open_reservations = GaugeMetricFamily(
            f"{p}_open_reservations", "Reservations not settled yet.", labels=scope_labels
        )
        snapshots = [("", self.budget.snapshot())]
        if self.tenants:
            snapshots += [(t, self.budget.tenant(t).snapshot()) for t in self.budget.tenants()]
        for tenant, snap in snapshots:
            scope = [name, tenant]
            for period in snap.periods():
                for axis in AXES:
                    labels = [*scope, period.name, axis]
                    used.add_metric(labels, float(getattr(period.used, axis)))
                    cap = _number(getattr(period.limits, axis))
                    if cap is not None:
                        limit.add_metric(labels, cap)
                        left = _number(getattr(period.remaining, axis))
                        remaining.add_metric(labels, left if left is not None else cap)
            for axis in AXES:
                reserved.add_metric([*scope, axis], float(getattr(snap.reserved, axis)))
            open_reservations.add_metric(scope, snap.open_reservations)
        stats = self.budget.statistics()
        yield from (used, limit, remaining, reserved, open_reservations)
        waiting = GaugeMetricFamily(
            f"{p}_waiting_requests", "Requests waiting for room.", labels=["budget"]
        )
        waiting.add_metric([name], stats.reservations_waiting)
        refusals = CounterMetricFamily(
            f"{p}_refusals", "Requests refused by a cap.", labels=["budget"]
        )
        refusals.add_metric([name], stats.refusals)
        dropped = CounterMetricFamily(
            f"{p}_events_dropped",
            "Events the callback never got (delivery fell behind).",
            labels=["budget"],
        )
        dropped.add_metric([name], stats.events_dropped)
        mailbox = GaugeMetricFamily(
            f"{p}_mailbox_depth", "Calls waiting for the actor.", labels=["budget"]
        )
        mailbox.add_metric([name], stats.mailbox_depth)
        yield from (waiting, refusals, dropped, mailbox)
