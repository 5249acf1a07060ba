"""Prometheus metrics (what a scrape of a real exposition server shows) and
OpenTelemetry metrics (what the SDK collects)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import treasurer
import treasurer.sync
from treasurer.metrics import BudgetCollector, OpenTelemetryMetrics

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return found[(name, tuple(sorted(labels.items())))]  # type: ignore[no-any-return]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


class TestCollector:
    async def test_budget_tenants_and_windows(self, registry: CollectorRegistry) -> None:
        async with treasurer.open_budget(
            name="api",
            tokens=1_000,
            usd=5,
            windows=[treasurer.Window.hour(tokens=300)],
            tenant_defaults=treasurer.TenantCaps(tokens=100),
        ) as budget:
            registry.register(BudgetCollector(budget))
            await budget.tenant("acme").record(tokens=60, usd=0.25)
            async with budget.reserve(tokens=200):
                assert not await budget.tenant("acme").consume(50)  # over its 100
                found = samples(generate_latest(registry).decode())
        api = {"budget": "api", "tenant": ""}
        acme = {"budget": "api", "tenant": "acme"}
        assert value(found, "treasurer_used", **api, period="lifetime", axis="tokens") == 60
        assert value(found, "treasurer_used", **api, period="lifetime", axis="usd") == 0.25
        assert value(found, "treasurer_limit", **api, period="hour", axis="tokens") == 300
        assert value(found, "treasurer_remaining", **api, period="hour", axis="tokens") == 40
        assert value(found, "treasurer_remaining", **acme, period="lifetime", axis="tokens") == 40
        assert value(found, "treasurer_reserved", **api, axis="tokens") == 200
        assert value(found, "treasurer_open_reservations", **api) == 1
        assert value(found, "treasurer_refusals_total", budget="api") == 1
        assert value(found, "treasurer_waiting_requests", budget="api") == 0
        assert (
            "treasurer_limit",
            tuple(sorted({**api, "period": "lifetime", "axis": "requests"}.items())),
        ) not in found  # no cap, no limit

    async def test_without_tenants_and_bad_arguments(self, registry: CollectorRegistry) -> None:
        async with treasurer.open_budget(name="api") as budget:
            await budget.tenant("acme").record(tokens=1)
            assert budget.tenants() == ["acme"]
            registry.register(BudgetCollector(budget, tenants=False, prefix="llm"))
            found = samples(generate_latest(registry).decode())
            with pytest.raises(treasurer.InvalidOption, match="own handle"):
                budget.tenant("acme").tenants()
        assert {labels for name, labels in found if name == "llm_used"} == {
            (("axis", axis), ("budget", "api"), ("period", "lifetime"), ("tenant", ""))
            for axis in treasurer.AXES
        }
        with pytest.raises(treasurer.InvalidOption, match="prefix"):
            BudgetCollector(budget, prefix="no spaces")
        with pytest.raises(treasurer.InvalidOption, match="budget"):
            BudgetCollector(object())  # type: ignore[arg-type]


@pytest.fixture
def served(registry: CollectorRegistry) -> Iterator[str]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_real_scrape_of_a_sync_budget(registry: CollectorRegistry, served: str) -> None:
    with treasurer.sync.open_budget(name="worker", requests=10) as budget:
        registry.register(BudgetCollector(budget))
        for _ in range(3):
            budget.record(requests=1)
        with urllib.request.urlopen(served, timeout=5) as response:
            found = samples(response.read().decode())
    labels = {"budget": "worker", "tenant": "", "period": "lifetime", "axis": "requests"}
    assert value(found, "treasurer_used", **labels) == 3
    assert value(found, "treasurer_remaining", **labels) == 7


async def test_waiting_requests_are_counted(registry: CollectorRegistry) -> None:
    async with treasurer.open_budget(name="api", tokens=10) as budget:
        registry.register(BudgetCollector(budget))
        holder = budget.reserve(tokens=10)
        await holder.__aenter__()
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                async with budget.reserve(tokens=5, wait=True):
                    pass

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            found = samples(generate_latest(registry).decode())
            assert value(found, "treasurer_waiting_requests", budget="api") == 1
            await holder.__aexit__(None, None, None)


def otel_points(
    reader: InMemoryMetricReader,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every data point the SDK collected: (metric name, sorted attributes) -> value."""
    data = reader.get_metrics_data()
    found = {}
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = tuple(sorted((k, str(v)) for k, v in point.attributes.items()))
                    found[(metric.name, attributes)] = point.value
    return found


class TestOpenTelemetry:
    """The instruments on the real OpenTelemetry SDK, collected by its in-memory reader."""

    async def test_the_figures_of_a_budget_and_its_tenants(self) -> None:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        async with treasurer.open_budget(
            name="api",
            usd=5,
            windows=[treasurer.Window.day(tokens=1_000)],
            tenant_defaults=treasurer.TenantCaps(tokens=100),
        ) as budget:
            OpenTelemetryMetrics(budget, meter_provider=provider)
            await budget.tenant("acme").record(tokens=60, usd=0.25)
            assert not await budget.tenant("acme").consume(50)
            async with budget.reserve(tokens=20):
                found = otel_points(reader)
        api = {"budget": "api", "tenant": ""}
        acme = {"budget": "api", "tenant": "acme"}
        assert value(found, "treasurer.used", **api, period="day", axis="tokens") == 60
        assert value(found, "treasurer.limit", **api, period="lifetime", axis="usd") == 5
        assert value(found, "treasurer.remaining", **api, period="lifetime", axis="usd") == 4.75
        assert value(found, "treasurer.remaining", **api, period="day", axis="tokens") == 920
        assert value(found, "treasurer.remaining", **acme, period="lifetime", axis="tokens") == 40
        assert value(found, "treasurer.reserved", **api, axis="tokens") == 20
        assert value(found, "treasurer.open_reservations", **api) == 1
        assert value(found, "treasurer.refusals", budget="api") == 1
        assert value(found, "treasurer.waiting_requests", budget="api") == 0
        assert value(found, "treasurer.events_dropped", budget="api") == 0
        assert value(found, "treasurer.mailbox_depth", budget="api") == 0
        assert otel_points(reader) == {}  # the budget closed: nothing more to report

    def test_a_sync_budget_without_tenants_on_its_own_prefix(self) -> None:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        with treasurer.sync.open_budget(name="jobs", tokens=10) as budget:
            budget.tenant("t").record(tokens=3)
            OpenTelemetryMetrics(
                budget, meter_provider=provider, tenants=False, prefix="llm.budget"
            )
            found = otel_points(reader)
        assert (
            value(
                found, "llm.budget.used", budget="jobs", tenant="", period="lifetime", axis="tokens"
            )
            == 3
        )
        assert not [key for key in found if ("tenant", "t") in key[1]]
        with pytest.raises(treasurer.InvalidOption, match="prefix"):
            OpenTelemetryMetrics(budget, prefix="no spaces")
        with pytest.raises(treasurer.InvalidOption, match="budget"):
            OpenTelemetryMetrics(object())  # type: ignore[arg-type]


class Counting:
    """A budget whose snapshots are counted (the instruments read it through the
    public API only)."""

    def __init__(self, budget: treasurer.sync.SyncBudget) -> None:
        self.budget = budget
        self.name = budget.name
        self.snapshots = 0
        self.closed = False

    def snapshot(self) -> treasurer.Snapshot:
        self.snapshots += 1
        return self.budget.snapshot()

    def statistics(self) -> treasurer.Statistics:
        return self.budget.statistics()

    def tenants(self) -> list[str]:
        return self.budget.tenants()

    def tenant(self, name: str) -> object:
        return self.budget.tenant(name)


def test_one_reading_per_collection() -> None:
    """Every instrument of a collection reports the same reading of the budget."""
    reader = InMemoryMetricReader()
    with treasurer.sync.open_budget(name="once", tokens=10) as budget:
        counting = Counting(budget)
        OpenTelemetryMetrics(counting, meter_provider=MeterProvider(metric_readers=[reader]))
        made = counting.snapshots  # the instruments were made from one reading
        reader.get_metrics_data()
        reader.get_metrics_data()
    assert counting.snapshots - made == 2
