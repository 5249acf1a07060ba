"""Overrides: temporary cap increases, counted at once, gone at their expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import pytest

import treasurer
import treasurer.sync
from api_support import ON_TRIO_VIRTUAL_TIME, loop_clock
from treasurer import Window
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 22, 10, tzinfo=UTC)


def Clock() -> ManualClock:
    return ManualClock(START)


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
            clock.set(START + timedelta(minutes=10))  # the override ends
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
            clock.set(START + timedelta(minutes=30))
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
            clock.set(START + timedelta(minutes=5))
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
    @ON_TRIO_VIRTUAL_TIME
    async def test_a_removed_override_does_not_wake_the_budget(self) -> None:
        """On trio's virtual clock: an override removed early never wakes the budget at
        its old expiry; the one left expires on time, unprompted."""
        events: list[treasurer.Event] = []
        clock = loop_clock(START)
        async with treasurer.open_budget(tokens=100, clock=clock, on_event=events.append) as b:
            early = await b.override(tokens=5, expires_at=START + timedelta(minutes=1))
            late = await b.override(tokens=5, expires_at=START + timedelta(minutes=2))
            await b.remove_override(early)
            batches = b.statistics().batches_served
            await anyio.sleep(90)
            assert b.statistics().batches_served == batches
            assert b.snapshot().overrides == (late,)
            await anyio.sleep(31)
            assert b.statistics().batches_served == batches + 1
            assert b.snapshot().overrides == ()
            assert b.snapshot().limits.tokens == 100
        ended = [(type(e).__name__, e.override.id) for e in events if hasattr(e, "override")]
        assert ended == [
            ("OverrideSet", early.id),
            ("OverrideSet", late.id),
            ("OverrideRemoved", early.id),
            ("OverrideExpired", late.id),
        ]


class TestWhoRemovesAnOverride:
    async def test_an_override_of_another_budget_is_refused(self) -> None:
        """B.remove_override(an override of A) raises InvalidOption and removes nothing,
        though both overrides have the same number."""
        clock = Clock()
        async with (
            treasurer.open_budget(tokens=100, clock=clock, name="A") as a,
            treasurer.open_budget(tokens=100, clock=clock, name="B") as b,
        ):
            of_a = await a.override(tokens=10, expires_at=START + timedelta(hours=1))
            of_b = await b.override(tokens=20, expires_at=START + timedelta(hours=1))
            assert of_a.id == of_b.id
            assert (of_a.budget, of_b.budget) == ("A", "B")
            with pytest.raises(treasurer.InvalidOption, match="'A'"):
                await b.remove_override(of_a)
            assert b.snapshot().overrides == (of_b,)
            assert a.snapshot().overrides == (of_a,)
            await b.remove_override(of_b)
            assert b.snapshot().limits.tokens == 100

    async def test_a_tenant_handle_cannot_remove_a_budget_wide_override(self) -> None:
        """An override set on the budget is removed only through the budget's handle."""
        clock = Clock()
        async with treasurer.open_budget(
            tokens=100, clock=clock, tenant_defaults=treasurer.TenantCaps(tokens=10)
        ) as budget:
            shared = await budget.override(tokens=50, expires_at=START + timedelta(hours=1))
            for attempt in (shared, shared.id):
                with pytest.raises(treasurer.InvalidOption):
                    await budget.tenant("t").remove_override(attempt)
            assert budget.snapshot().overrides == (shared,)
            assert budget.snapshot().limits.tokens == 150
            await budget.remove_override(shared)
            assert budget.snapshot().overrides == ()

    async def test_each_handle_removes_only_its_own(self) -> None:
        """A tenant's override is removed through that tenant's handle only: not the
        budget's, not another tenant's, not a child budget's."""
        clock = Clock()
        async with treasurer.open_budget(
            tokens=1000, clock=clock, tenant_defaults=treasurer.TenantCaps(tokens=100)
        ) as budget:
            t, u = budget.tenant("t"), budget.tenant("u")
            mine = await t.override(tokens=10, expires_at=START + timedelta(hours=1))
            theirs = await u.override(tokens=20, expires_at=START + timedelta(hours=1))
            async with budget.child(tokens=100) as child:
                childs = await child.override(tokens=5, expires_at=START + timedelta(hours=1))
                for handle, foreign in [
                    (budget, mine),
                    (u, mine),
                    (child, mine),
                    (t, theirs),
                    (t, childs),
                    (budget, childs),
                ]:
                    with pytest.raises(treasurer.InvalidOption):
                        await handle.remove_override(foreign)
                assert (t.snapshot().overrides, u.snapshot().overrides) == ((mine,), (theirs,))
                assert child.snapshot().overrides == (childs,)
                await child.remove_override(childs)
                assert child.snapshot().overrides == ()
            await t.remove_override(mine)
            await u.remove_override(theirs.id)
            assert (t.snapshot().overrides, u.snapshot().overrides) == ((), ())

    async def test_true_is_not_override_one(self) -> None:
        """remove_override(True) raises InvalidOption; override 1 stays."""
        clock = Clock()
        async with treasurer.open_budget(tokens=100, clock=clock) as budget:
            one = await budget.override(tokens=5, expires_at=START + timedelta(hours=1))
            assert one.id == 1
            with pytest.raises(treasurer.InvalidOption):
                await budget.remove_override(True)
            assert budget.snapshot().overrides == (one,)


async def test_an_override_of_a_window_a_tenant_lost_ends_quietly() -> None:
    """A tenant's override of its hour window ends with the window when the tenant's
    caps change to have none; its expiry later finds nothing to end and says nothing."""
    clock = ManualClock(datetime(2026, 12, 1, 9, tzinfo=UTC))
    events: list[treasurer.Event] = []
    hourly = treasurer.TenantCaps(tokens=1_000, windows=[Window.hour(tokens=100)])
    async with treasurer.open_budget(
        tenant_defaults=hourly, clock=clock, on_event=events.append
    ) as budget:
        acme = budget.tenant("acme")
        await acme.record(tokens=90)
        expires = clock.now + timedelta(minutes=30)
        await acme.override(tokens=50, window="hour", expires_at=expires)
        assert await acme.consume(40)  # 130 of the hour's 150
        await budget.set_tenant_caps("acme", treasurer.TenantCaps(tokens=1_000))
        assert acme.snapshot().windows == ()
        clock.advance(timedelta(hours=1))
        await budget.check()
        assert acme.snapshot().tokens_used == 130
    assert not [e for e in events if isinstance(e, treasurer.OverrideExpired)]
