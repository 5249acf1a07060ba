"""Forecasts: burn rates (linear over a span, and EWMA), when each cap runs out at
them, and the ExhaustionForecast warning, on a clock moved by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import anyio.lowlevel
import pytest

import treasurer
import treasurer.alerts
import treasurer.sync
from treasurer import Window
from treasurer._core.axes import AXES
from treasurer._ops.forecast import Burn
from treasurer.forecast import ExhaustionForecast, Forecast, ForecastOptions, from_records
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 1, tzinfo=UTC)
TOKENS = AXES.index("tokens")
OPTIONS = ForecastOptions(
    span=timedelta(hours=1), half_life=timedelta(minutes=15), warmup=timedelta(minutes=5)
)


def vector(tokens: int) -> tuple[int, ...]:
    return tuple(tokens if axis == TOKENS else 0 for axis in range(len(AXES)))


def hourly(burn: Burn, now: datetime) -> tuple[float, float]:
    linear, ewma = burn.rates(now)
    return linear[TOKENS] * 3600, ewma[TOKENS] * 3600


class TestBurnRates:
    def test_a_steady_rate_is_what_both_rates_say(self) -> None:
        """100 tokens a minute for two hours: 6,000 an hour, linear and EWMA alike."""
        burn = Burn(OPTIONS, START)
        for minute in range(1, 121):
            burn.add(START + timedelta(minutes=minute), vector(100 * minute))
        linear, ewma = hourly(burn, START + timedelta(minutes=120))
        assert linear == pytest.approx(6000)
        assert ewma == pytest.approx(6000, rel=0.05)

    def test_the_linear_rate_counts_only_the_span(self) -> None:
        """A burst two hours ago is outside the span; the hour's usage alone counts."""
        burn = Burn(OPTIONS, START)
        burn.add(START + timedelta(minutes=1), vector(50_000))
        burn.add(START + timedelta(minutes=150), vector(50_600))
        linear, _ = hourly(burn, START + timedelta(minutes=180))
        assert linear == pytest.approx(600)

    def test_the_ewma_halves_each_half_life_without_spending(self) -> None:
        """After spending stops, the EWMA rate halves every half-life; the linear one
        keeps the span's usage until it leaves the span."""
        burn = Burn(OPTIONS, START)
        for minute in range(1, 121):
            burn.add(START + timedelta(minutes=minute), vector(100 * minute))
        _, at_stop = hourly(burn, START + timedelta(minutes=120))
        linear, later = hourly(burn, START + timedelta(minutes=135))
        assert later == pytest.approx(at_stop / 2, rel=0.01)
        assert linear == pytest.approx(100 * 45)  # minutes 76 to 120 lie in the span
        linear, _ = hourly(burn, START + timedelta(minutes=190))
        assert linear == 0

    def test_a_short_observation_counts_over_the_warmup_at_least(self) -> None:
        """One call a second after the start is not a rate of 3,600 calls an hour:
        rates are over the warmup at least."""
        burn = Burn(OPTIONS, START)
        burn.add(START + timedelta(seconds=1), vector(100))
        linear, ewma = hourly(burn, START + timedelta(seconds=1))
        assert linear == pytest.approx(100 * 12)  # 100 per five minutes
        assert ewma < 100 * 3600 / 60

    def test_the_samples_kept_are_bounded(self) -> None:
        """A sample per batch for an hour would be millions; a few per 120th of
        the span are kept, and the rate is still the span's."""
        burn = Burn(OPTIONS, START)
        for second in range(1, 3 * 3600, 2):
            burn.add(START + timedelta(seconds=second), vector(second))
        assert len(burn._samples) <= 2 * 120 + 2  # two per bucket at most
        linear, _ = hourly(burn, START + timedelta(seconds=3 * 3600 - 1))
        assert linear == pytest.approx(3600, rel=0.01)

    def test_samples_out_of_order_or_unchanged_are_ignored(self) -> None:
        burn = Burn(OPTIONS, START)
        burn.add(START + timedelta(minutes=10), vector(600))
        burn.add(START + timedelta(minutes=5), vector(10_000))  # from the past: ignored
        burn.add(START + timedelta(minutes=20), vector(600))  # nothing new
        linear, _ = hourly(burn, START + timedelta(minutes=10))
        assert linear == pytest.approx(3600)

    def test_usage_given_back_lowers_the_rate(self) -> None:
        burn = Burn(OPTIONS, START)
        burn.add(START + timedelta(minutes=30), vector(1000))
        burn.add(START + timedelta(minutes=40), vector(400))
        linear, ewma = hourly(burn, START + timedelta(minutes=60))
        assert linear == pytest.approx(400)
        assert ewma < hourly(burn, START + timedelta(minutes=30))[1]


class TestOptions:
    @pytest.mark.parametrize(
        "options",
        [
            {"span": timedelta(0)},
            {"half_life": timedelta(seconds=-1)},
            {"warmup": 5},
            {"horizon": None},
            {"warn": "yes"},
        ],
    )
    def test_bad_options_are_refused(self, options: dict[str, object]) -> None:
        with pytest.raises(treasurer.InvalidOption) as info:
            ForecastOptions(**options)  # type: ignore[arg-type]
        assert isinstance(info.value, ValueError)

    async def test_forecast_takes_true_or_options(self) -> None:
        with pytest.raises(treasurer.InvalidOption, match="forecast must be True"):
            async with treasurer.open_budget(tokens=10, forecast="daily"):  # type: ignore[typeddict-item]
                pass

    async def test_a_budget_that_does_not_forecast_says_how_to(self) -> None:
        async with treasurer.open_budget(tokens=10, forecast=False) as budget:
            with pytest.raises(treasurer.InvalidOption, match="forecast=True"):
                budget.forecast()


def daily_budget(clock: ManualClock, events: list[treasurer.Event], **options: object) -> object:
    return treasurer.open_budget(
        name="api",
        tokens=1_000_000,
        windows=[Window.day(tokens=10_000)],
        forecast=OPTIONS,
        clock=clock,
        on_event=events.append,
        **options,  # type: ignore[arg-type]
    )


async def spend_per_minute(
    budget: treasurer.Budget, clock: ManualClock, tokens: int, n: int
) -> None:
    for _ in range(n):
        clock.advance(minutes=1)
        await budget.record(tokens=tokens)


async def delivered() -> None:
    for _ in range(20):  # events reach on_event from the delivery task
        await anyio.lowlevel.checkpoint()


class TestLiveForecasts:
    async def test_the_budget_forecasts_each_capped_period(self) -> None:
        clock = ManualClock(START)
        events: list[treasurer.Event] = []
        async with daily_budget(clock, events) as budget:  # type: ignore[attr-defined]
            await spend_per_minute(budget, clock, 100, 30)
            forecasts = {(f.window, f.axis): f for f in budget.forecast()}
        assert set(forecasts) == {("lifetime", "tokens"), ("day", "tokens")}
        day = forecasts["day", "tokens"]
        assert isinstance(day, Forecast)
        assert (day.budget, day.tenant, day.used, day.limit) == ("api", None, 3000, 10_000)
        assert day.remaining == 7000
        assert day.linear_rate == pytest.approx(6000)
        assert day.ewma_rate == pytest.approx(6000, rel=0.1)
        hours = 7000 / max(day.linear_rate, day.ewma_rate)
        assert day.exhausts_at == START + timedelta(minutes=30, hours=hours)
        assert day.resets_at == START + timedelta(days=1)
        assert day.runs_out
        assert forecasts["lifetime", "tokens"].runs_out  # the lifetime never resets

    async def test_a_window_projected_to_run_out_warns_once(self) -> None:
        """The warning fires after the warmup, names when the cap runs out, and
        is not repeated in the same period."""
        clock = ManualClock(START)
        events: list[treasurer.Event] = []
        async with daily_budget(clock, events) as budget:  # type: ignore[attr-defined]
            await spend_per_minute(budget, clock, 100, 4)
            await delivered()
            assert not [e for e in events if isinstance(e, ExhaustionForecast)]
            await spend_per_minute(budget, clock, 100, 30)
            await delivered()
        warnings = [e for e in events if isinstance(e, ExhaustionForecast)]
        assert len(warnings) == 1
        warning = warnings[0]
        assert (warning.window, warning.cap, warning.level) == ("day", "tokens", "warning")
        assert warning.at == START + timedelta(minutes=5)
        assert warning.exhausts_at < warning.resets_at == START + timedelta(days=1)  # type: ignore[operator]
        assert warning.rate == pytest.approx(6000, rel=0.1)
        assert "at this rate the tokens cap per day (10000) runs out at 2026-01-01 0" in (
            warning.message
        )

    async def test_a_slow_burn_does_not_warn(self) -> None:
        """10 tokens a minute leaves the daily cap unspent when the day ends."""
        clock = ManualClock(START)
        events: list[treasurer.Event] = []
        async with daily_budget(clock, events) as budget:  # type: ignore[attr-defined]
            await spend_per_minute(budget, clock, 5, 60)
            await delivered()
            (day,) = [f for f in budget.forecast() if f.window == "day"]
        assert not [e for e in events if isinstance(e, ExhaustionForecast)]
        assert not day.runs_out
        assert day.exhausts_at is not None
        assert day.exhausts_at > day.resets_at

    async def test_the_warning_rearms_when_the_window_rolls_over(self) -> None:
        clock = ManualClock(START + timedelta(hours=23))
        events: list[treasurer.Event] = []
        async with daily_budget(clock, events) as budget:  # type: ignore[attr-defined]
            await spend_per_minute(budget, clock, 400, 20)  # 24,000 an hour: out by 23:45
            clock.set(START + timedelta(days=1, hours=1))
            await spend_per_minute(budget, clock, 400, 20)
            await delivered()
        warnings = [e for e in events if isinstance(e, ExhaustionForecast) and e.window == "day"]
        assert [w.resets_at for w in warnings] == [
            START + timedelta(days=1),
            START + timedelta(days=2),
        ]

    async def test_a_lifetime_cap_warns_within_the_horizon_only(self) -> None:
        clock = ManualClock(START)
        events: list[treasurer.Event] = []
        options = ForecastOptions(warmup=timedelta(minutes=5), horizon=timedelta(hours=2))
        async with treasurer.open_budget(
            usd=100, forecast=options, clock=clock, on_event=events.append
        ) as budget:
            await spend_per_minute(budget, clock, 0, 0)
            for _ in range(10):  # $0.25 a minute: $15 an hour, out in more than 6 hours
                clock.advance(minutes=1)
                await budget.record(usd=Decimal("0.25"))
            await delivered()
            assert not [e for e in events if isinstance(e, ExhaustionForecast)]
            for _ in range(10):  # then $5 a minute: out within the hour
                clock.advance(minutes=1)
                await budget.record(usd=5)
            await delivered()
        (warning,) = [e for e in events if isinstance(e, ExhaustionForecast)]
        assert (warning.window, warning.cap, warning.resets_at) == ("lifetime", "usd", None)
        assert isinstance(warning.limit, Decimal)

    async def test_a_rolling_window_warns_once_while_it_runs_out(self) -> None:
        """A rolling window's reset moves with every use; it warns once, and again
        only after a check found it no longer runs out."""
        clock = ManualClock(START)
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(
            windows=[Window.rolling(timedelta(minutes=10), usd=5)],
            forecast=OPTIONS,
            clock=clock,
            on_event=events.append,
        ) as budget:
            for _ in range(60):  # $0.49 a minute: out within the window, all along
                clock.advance(minutes=1)
                await budget.record(usd=Decimal("0.49"))
            await delivered()
            assert len([e for e in events if isinstance(e, ExhaustionForecast)]) == 1
            clock.advance(hours=3)  # nothing spent for a while: no longer runs out
            await budget.record(usd=Decimal("0.01"))
            for _ in range(10):  # then fast again: a second warning
                clock.advance(minutes=1)
                await budget.record(usd=Decimal("0.49"))
            await delivered()
        warnings = [e for e in events if isinstance(e, ExhaustionForecast)]
        assert len(warnings) == 2
        assert warnings[0].window == "rolling 600s"

    async def test_a_new_tenants_first_spend_counts(self) -> None:
        """The spend that brings a tenant into the budget is part of its rate (the
        budget's and the tenant's rates agree when it is the only spender)."""
        clock = ManualClock(START)
        async with treasurer.open_budget(
            usd=100,
            tenant_defaults=treasurer.TenantCaps(usd=10),
            forecast=OPTIONS,
            clock=clock,
        ) as budget:
            for _ in range(2):
                clock.advance(minutes=1)
                await budget.tenant("acme").record(usd=3)
            clock.advance(minutes=1)
            (own,) = budget.forecast()
            (acme,) = budget.tenant("acme").forecast()
        assert acme.linear_rate == own.linear_rate == pytest.approx(72)

    async def test_scopes_new_in_one_batch_each_count_their_spend(self) -> None:
        """Two tenants that first spend in the same batch (beside a reservation,
        whose event is no usage) each start from nothing."""

        async def held(budget: treasurer.Budget) -> None:
            async with budget.reserve(tokens=1):
                pass

        clock = ManualClock(START)
        async with treasurer.open_budget(
            tenant_defaults=treasurer.TenantCaps(tokens=10_000), forecast=OPTIONS, clock=clock
        ) as budget:
            clock.advance(minutes=1)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(lambda: budget.tenant("a").record(tokens=100))
                tasks.start_soon(lambda: budget.tenant("b").record(tokens=300))
                tasks.start_soon(held, budget)
            (a,) = budget.tenant("a").forecast()
            (b,) = budget.tenant("b").forecast()
        assert (a.linear_rate, b.linear_rate) == (pytest.approx(1200), pytest.approx(3600))

    async def test_tenants_are_forecast_apart(self) -> None:
        clock = ManualClock(START)
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(
            tenant_defaults=treasurer.TenantCaps(windows=[Window.hour(tokens=1000)]),
            forecast=OPTIONS,
            clock=clock,
            on_event=events.append,
        ) as budget:
            await spend_per_minute(budget.tenant("acme"), clock, 100, 6)
            await spend_per_minute(budget.tenant("quiet"), clock, 1, 6)
            await delivered()
            (acme,) = budget.tenant("acme").forecast()
            (quiet,) = budget.tenant("quiet").forecast()
        assert (acme.tenant, acme.window, acme.runs_out) == ("acme", "hour", True)
        assert (quiet.tenant, quiet.runs_out) == ("quiet", False)
        warnings = [e for e in events if isinstance(e, ExhaustionForecast)]
        assert [(w.tenant, w.window) for w in warnings] == [("acme", "hour")]

    async def test_a_child_budget_opened_again_is_forecast_afresh(self) -> None:
        """A child budget's rates end with it: one opened again under the same name
        starts from nothing (not from the first one's usage)."""
        clock = ManualClock(START)
        events: list[treasurer.Event] = []
        async with daily_budget(clock, events) as budget:  # type: ignore[attr-defined]
            async with budget.child(name="agent", tokens=5_000) as agent:
                await spend_per_minute(agent, clock, 400, 10)
                (first,) = agent.forecast()
            async with budget.child(name="agent", tokens=5_000) as agent:
                clock.advance(minutes=10)
                (again,) = agent.forecast()
            await delivered()
        assert first.linear_rate == pytest.approx(24_000)
        assert (again.used, again.linear_rate, again.exhausts_at) == (0, 0, None)
        warned = [(e.child, e.window) for e in events if isinstance(e, ExhaustionForecast)]
        assert sorted(warned, key=str) == [("agent", "lifetime"), (None, "day")]

    async def test_an_exhausted_cap_runs_out_now(self) -> None:
        clock = ManualClock(START)
        async with treasurer.open_budget(tokens=100, forecast=True, clock=clock) as budget:
            await budget.charge(tokens=150)
            (lifetime,) = budget.forecast()
        assert lifetime.exhausts_at == START
        assert lifetime.remaining == -50

    async def test_nothing_spent_means_no_exhaustion(self) -> None:
        clock = ManualClock(START)
        async with treasurer.open_budget(tokens=100, forecast=True, clock=clock) as budget:
            clock.advance(hours=1)
            (lifetime,) = budget.forecast()
        assert (lifetime.exhausts_at, lifetime.linear_rate, lifetime.ewma_rate) == (None, 0, 0)
        assert not lifetime.runs_out
        with pytest.raises(ValueError, match="warns of nothing"):
            lifetime.warning()

    async def test_warnings_reach_alert_channels(self) -> None:
        """A channel gets the forecast warning beside the threshold crossings."""

        class Collect(treasurer.alerts.Channel):
            def __init__(self) -> None:
                super().__init__()
                self.alerts: list[treasurer.alerts.Alert] = []

            async def send(self, alert: treasurer.alerts.Alert) -> None:
                self.alerts.append(alert)

        channel = Collect()
        clock = ManualClock(START)
        async with daily_budget(clock, [], alerts=[channel]) as budget:  # type: ignore[attr-defined]
            await spend_per_minute(budget, clock, 100, 10)
        forecasts = [a for a in channel.alerts if isinstance(a, ExhaustionForecast)]
        assert len(forecasts) == 1
        body = treasurer.alerts.payload(forecasts[0])
        assert body["type"] == "exhaustion_forecast"
        assert body["window"] == "day"
        assert body["resets_at"] == "2026-01-02T00:00:00+00:00"
        assert body["exhausts_at"].startswith("2026-01-01T")
        assert math.isclose(body["rate_per_hour"], 6000, rel_tol=0.1)


class TestFromRecords:
    async def test_records_give_the_rates_the_budget_saw(self) -> None:
        """A usage log's records forecast what the live budget forecast."""
        clock = ManualClock(START)
        log = treasurer.MemoryUsageLog()
        async with daily_budget(clock, [], usage_log=log) as budget:  # type: ignore[attr-defined]
            await spend_per_minute(budget, clock, 100, 90)
            live = {(f.window, f.axis): f for f in budget.forecast()}
            snapshot = budget.snapshot()
        records = log.records()
        offline = {
            (f.window, f.axis): f for f in from_records("api", snapshot, records, OPTIONS, clock())
        }
        assert set(offline) == set(live)
        for key, forecast in live.items():
            assert offline[key].linear_rate == pytest.approx(forecast.linear_rate)
            assert offline[key].ewma_rate == pytest.approx(forecast.ewma_rate, rel=0.01)
            assert offline[key].remaining == forecast.remaining

    def test_no_records_no_rate(self) -> None:
        snapshot = treasurer.Snapshot(
            caps=treasurer.Caps(tokens=10),
            calls=0,
            open_reservations=0,
            **{f"{a}_{k}": 0 for a in AXES for k in ("used", "reserved")},  # type: ignore[arg-type]
            **{f"{a}_remaining": (10 if a == "tokens" else None) for a in AXES},  # type: ignore[arg-type]
            limits=treasurer.Caps(tokens=10),
        )
        (forecast,) = from_records("b", snapshot, [], OPTIONS, START)
        assert forecast.exhausts_at is None
        assert forecast.remaining == 10


class TestSync:
    def test_a_sync_budget_forecasts(self) -> None:
        clock = ManualClock(START)
        with treasurer.sync.open_budget(tokens=1000, forecast=True, clock=clock) as budget:
            for _ in range(10):
                clock.advance(minutes=1)
                budget.record(tokens=10)
            (lifetime,) = budget.forecast()
        assert lifetime.linear_rate == pytest.approx(600)
        assert lifetime.remaining == 900


class TestPeriods:
    async def test_a_snapshot_lists_the_lifetime_then_each_window(self) -> None:
        async with treasurer.open_budget(
            tokens=100, windows=[Window.hour(usd=1), Window.day(requests=5)]
        ) as budget:
            await budget.record(tokens=10, usd=Decimal("0.5"))
            periods = budget.snapshot().periods()
        assert [p.name for p in periods] == ["lifetime", "hour", "day"]
        assert periods[0].remaining.tokens == 90
        assert periods[0].resets_at is None
        assert periods[1].used.usd == Decimal("0.5")
        assert periods[1].limits.usd == 1
        assert periods[2].remaining.requests == 4
        assert periods[2].resets_at is not None
