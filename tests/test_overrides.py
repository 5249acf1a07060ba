"""Overrides: temporary cap increases, counted at once, gone at their expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import treasurer
import treasurer.sync
from treasurer import Window

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 22, 10, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class TestOverrides:
    @pytest.mark.parametrize("window", ["lifetime", "hour"])
    @pytest.mark.parametrize("tenant", [None, "a"])
    async def test_an_ended_override_takes_its_room_back(
        self, window: str, tenant: str | None
    ) -> None:
        """With usage between the lower and the raised cap, once the override ends
        nothing more fits, and a request larger than the lower cap can never fit."""
        clock = Clock()
        caps = {"tokens": 100} if window == "lifetime" else {}
        windows = [Window.hour(tokens=100)] if window == "hour" else []
        if tenant is None:
            opened = treasurer.open_budget(clock=clock, windows=windows, **caps)
        else:
            defaults = treasurer.TenantCaps(windows=windows, **caps)
            opened = treasurer.open_budget(clock=clock, tenant_defaults=defaults)
        async with opened as budget:
            scope = budget if tenant is None else budget.tenant(tenant)
            await scope.override(tokens=50, window=window, expires_at=START + timedelta(minutes=10))
            await scope.record(tokens=120)  # 30 left under the raised cap
            assert (await scope.check(tokens=30)).fits
            raised = (await scope.check(tokens=101)).refusal  # no room now, but not too large
            assert type(raised) is treasurer.BudgetExceeded
            clock.now = START + timedelta(minutes=10)  # the override ends
            with pytest.raises(treasurer.BudgetExceeded) as refused:
                await scope.record(tokens=10)
            assert type(refused.value) is treasurer.BudgetExceeded
            assert refused.value.limit == 100
            with pytest.raises(treasurer.RequestTooLarge):
                await scope.record(tokens=101)
            assert scope.totals().tokens == 120

    async def test_counts_at_once_and_stops_at_expiry(self) -> None:
        """An hourly override lets more through at once, and stops counting at its expiry."""
        clock, events = Clock(), []
        async with treasurer.open_budget(
            windows=[Window.hour(tokens=100)], clock=clock, on_event=events.append
        ) as budget:
            await budget.record(tokens=100)
            override = await budget.override(
                tokens=50,
                window="hour",
                expires_at=START + timedelta(minutes=30),
                reason="incident 42",
                created_by="oncall",
            )
            assert (override.window, override.increase.tokens) == ("hour", 50)
            assert (override.reason, override.created_by, override.created_at) == (
                "incident 42",
                "oncall",
                START,
            )
            await budget.record(tokens=50)
            hour = budget.snapshot().window("hour")
            assert (hour.caps.tokens, hour.limits.tokens, hour.remaining.tokens) == (100, 150, 0)
            assert budget.snapshot().overrides == (override,)
            clock.now = START + timedelta(minutes=30)
            answer = await budget.check(tokens=1)
            assert (answer.fits, answer.window) == (False, "hour")
            assert budget.snapshot().window("hour").limits.tokens == 100
            assert budget.snapshot().overrides == ()
        kinds = [type(e).__name__ for e in events if "Override" in type(e).__name__]
        assert kinds == ["OverrideSet", "OverrideExpired"]

    async def test_lifetime_override_and_early_removal(self) -> None:
        """A lifetime override raises the budget's own caps; removing it ends it early."""
        clock = Clock()
        async with treasurer.open_budget(tokens=100, usd=1, clock=clock) as budget:
            override = await budget.override(usd=0.5, expires_at=START + timedelta(days=1))
            await budget.record(usd=1.4)
            assert budget.snapshot().limits.usd == Decimal("1.5")
            assert budget.snapshot().usd_remaining == Decimal("0.1")
            await budget.remove_override(override)
            assert not (await budget.check(usd=0.01)).fits
            with pytest.raises(treasurer.InvalidOption, match="no active override"):
                await budget.remove_override(override.id)

    async def test_several_overrides_add_up(self) -> None:
        """Two overrides on one scope add; each ends on its own."""
        clock = Clock()
        async with treasurer.open_budget(tokens=100, clock=clock) as budget:
            await budget.override(tokens=10, expires_at=START + timedelta(minutes=5))
            await budget.override(tokens=20, expires_at=START + timedelta(minutes=10))
            assert budget.snapshot().limits.tokens == 130
            clock.now = START + timedelta(minutes=5)
            await budget.check()
            assert budget.snapshot().limits.tokens == 120

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"tokens": 5, "window": "week"}, treasurer.InvalidOption, "no window named"),
            ({"usd": 1}, treasurer.InvalidOption, "no cap on usd"),
            ({}, treasurer.InvalidOption, "at least one cap"),
            ({"tokens": -5}, treasurer.InvalidAmount, "tokens"),
            ({"tokens": 5, "expires_at": START}, treasurer.InvalidOption, "not in the future"),
            ({"tokens": 5, "expires_at": datetime(2027, 1, 1)}, treasurer.InvalidOption, "aware"),
        ],
        ids=repr,
    )
    async def test_bad_overrides(self, kwargs: dict[str, object], error: type, match: str) -> None:
        """An override that cannot apply is refused and changes nothing."""
        clock = Clock()
        async with treasurer.open_budget(tokens=100, clock=clock) as budget:
            before = budget.snapshot()
            arguments = {"expires_at": START + timedelta(hours=1), **kwargs}
            with pytest.raises(error, match=match):
                await budget.override(**arguments)  # type: ignore[arg-type]
            assert budget.snapshot() == before

    def test_from_threads(self) -> None:
        """The sync facade sets and removes overrides too."""
        clock = Clock()
        with treasurer.sync.open_budget(tokens=10, clock=clock) as budget:
            override = budget.override(tokens=5, expires_at=START + timedelta(minutes=1))
            budget.record(tokens=15)
            budget.remove_override(override)
            assert budget.snapshot().limits.tokens == 10


class TestOverrideDeadlines:
    async def test_removed_override_no_longer_schedules_the_timer(self) -> None:
        """An override removed early drops out of the timer's schedule; one that expires
        before any reservation deadline is what the timer wakes for."""
        clock = Clock()
        async with treasurer.open_budget(tokens=100, clock=clock) as budget:
            early = await budget.override(tokens=5, expires_at=START + timedelta(minutes=1))
            await budget.override(tokens=5, expires_at=START + timedelta(minutes=2))
            async with budget.reserve(tokens=1):
                core = budget._core
                assert core.next_deadline == START + timedelta(minutes=1)
                await budget.remove_override(early)
                assert core.ledger.next_deadline() == START + timedelta(minutes=2)

    def test_ledger_refuses_an_unknown_window_reset(self) -> None:
        """The pure ledger answers a reset of an unknown window with InvalidOption."""
        from treasurer._ledger import Ledger

        ledger = Ledger((None, None, 10, None, None), windows=[Window.hour(tokens=5)], now=START)
        assert isinstance(ledger.reset("day"), treasurer.InvalidOption)
        assert ledger.reset("hour") is None
