"""treasurer.compat and the calls it rests on: charge() and reset(window=...)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import treasurer
from treasurer import Window
from treasurer.compat import AlertLevel, Budget, BudgetManager, UsageRecord


def spend(cost: float) -> UsageRecord:
    return UsageRecord(
        model="gpt-4o",
        input_tokens=1000,
        output_tokens=500,
        cost_usd=cost,
        timestamp=datetime.now(),
    )


class TestBudgetManager:
    def test_the_reference_test_case(self) -> None:
        """The budget manager's own test case passes unchanged, with its exact figures."""
        budget = Budget(daily_limit=5.0, monthly_limit=50.0)
        alerts: list[tuple[AlertLevel, str]] = []
        with BudgetManager(budget, alert_handler=lambda *a: alerts.append(a)) as manager:
            assert manager.can_spend(0.01) == True  # noqa: E712 - as the reference writes it
            assert manager.can_spend(100.0) == False  # noqa: E712
            manager.record_spend(spend(0.05))
            status = manager.get_status()
            assert status["daily_spent"] == 0.05
            assert status["daily_remaining"] == 4.95
            assert status["monthly_spent"] == 0.05
            assert status["monthly_remaining"] == 49.95
            assert status["percent_used"] == 1.0
        assert alerts == []

    def test_alert_handler_gets_a_level_and_a_message(self) -> None:
        """Passing the alert threshold calls the handler once with WARNING; the limit, CRITICAL."""
        alerts: list[tuple[AlertLevel, str]] = []
        budget = Budget(daily_limit=5.0, monthly_limit=50.0, alert_threshold=0.8)
        with BudgetManager(budget, alert_handler=lambda *a: alerts.append(a)) as manager:
            for _ in range(7):
                manager.record_spend(spend(0.5))  # 3.5 of 5
            assert alerts == []
            manager.record_spend(spend(0.5))  # 4.0: 80 %
            manager.record_spend(spend(0.45))
            assert [level for level, _ in alerts] == [AlertLevel.WARNING]
            assert alerts[0][1] == (
                "budget 'budget-manager': usd usage per day reached 80% of its cap (4 of 5)"
            )
            manager.record_spend(spend(0.55))  # 5.0: 100 %
            assert [level for level, _ in alerts] == [AlertLevel.WARNING, AlertLevel.CRITICAL]

    def test_spend_is_never_dropped(self) -> None:
        """record_spend past the daily limit is recorded; can_spend then says no."""
        with BudgetManager(Budget(daily_limit=1.0, per_request_limit=0.5)) as manager:
            for _ in range(3):
                manager.record_spend(spend(0.45))
            status = manager.get_status()
            assert status["daily_spent"] == 1.35
            assert status["daily_remaining"] == 0.0
            assert not manager.can_spend(0.01)
            assert manager.treasurer_budget.totals().usd == Decimal("1.35")

    def test_per_request_limit(self) -> None:
        """can_spend refuses a single call above the per-request limit."""
        with BudgetManager(Budget(per_request_limit=0.5)) as manager:
            assert manager.can_spend(0.5)
            assert not manager.can_spend(0.51)

    def test_reset_daily_keeps_the_month(self) -> None:
        """reset_daily zeroes today's spend only."""
        with BudgetManager(Budget(daily_limit=5.0, monthly_limit=50.0)) as manager:
            manager.record_spend(spend(4.0))
            manager.reset_daily()
            status = manager.get_status()
            assert (status["daily_spent"], status["monthly_spent"]) == (0.0, 4.0)
            assert manager.can_spend(5.0) is False  # per-request limit is 0.50
            assert manager.can_spend(0.5)

    def test_days_roll_over_on_the_budgets_clock(self) -> None:
        """A new day starts with the daily limit free again; the month remembers."""
        now = [datetime(2026, 11, 22, 23, 0, tzinfo=UTC)]
        with BudgetManager(Budget(daily_limit=1.0), clock=lambda: now[0]) as manager:
            manager.record_spend(spend(1.0))
            assert not manager.can_spend(0.01)
            now[0] += timedelta(hours=1)
            assert manager.can_spend(0.5)
            status = manager.get_status()
            assert (status["daily_spent"], status["monthly_spent"]) == (0.0, 1.0)

    def test_bad_threshold(self) -> None:
        """An alert threshold outside (0, 1] is refused."""
        with pytest.raises(treasurer.InvalidOption):
            BudgetManager(Budget(alert_threshold=1.5))


@pytest.mark.anyio
class TestChargeAndWindowReset:
    async def test_charge_is_never_refused(self) -> None:
        """charge() records spend past every cap, returns totals and blocks later requests."""
        now = datetime(2026, 11, 22, 10, tzinfo=UTC)
        async with treasurer.open_budget(
            tokens=100, windows=[Window.hour(tokens=50)], clock=lambda: now
        ) as budget:
            totals = await budget.charge(tokens=80)
            assert (totals.tokens, totals.calls) == (80, 1)
            totals = await budget.charge(tokens=30)
            assert totals.tokens == 110
            assert budget.snapshot().window("hour").used.tokens == 110
            assert not await budget.consume(1)
            with pytest.raises(treasurer.InvalidAmount):
                await budget.charge(tokens=-1)

    async def test_reset_one_window(self) -> None:
        """reset(window=...) zeroes that window only; an unknown name is refused."""
        now = datetime(2026, 11, 22, 10, tzinfo=UTC)
        windows = [Window.hour(tokens=50), Window.day(tokens=500)]
        async with treasurer.open_budget(windows=windows, clock=lambda: now) as budget:
            await budget.record(tokens=50)
            await budget.reset(window="hour")
            snap = budget.snapshot()
            assert snap.window("hour").used.tokens == 0
            assert snap.window("day").used.tokens == 50
            assert snap.tokens_used == 50
            with pytest.raises(treasurer.InvalidOption, match="'week'"):
                await budget.reset(window="week")
