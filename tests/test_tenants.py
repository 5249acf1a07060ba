"""Tenants: their own caps inside a shared total, made atomically on first use."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

import treasurer
import treasurer.sync
from api_support import BOTH_LOOPS_FAST, ON_TRIO_VIRTUAL_TIME, loop_clock
from treasurer import TenantCaps, Window
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


def FakeClock(start: datetime = START) -> ManualClock:
    return ManualClock(start)


async def wait_for_an_error(
    handle: treasurer.Budget, tokens: int, error: type[BaseException], into: list[BaseException]
) -> None:
    """Wait for room for ``tokens``; the wait must end with ``error``, kept in ``into``."""
    try:
        async with handle.reserve(tokens=tokens, wait=True):
            pytest.fail("must not be granted")  # pragma: no cover
    except error as exc:
        into.append(exc)


HOURLY = TenantCaps(windows=[Window.hour(tokens=100)])  # every tenant: 100 tokens an hour
NEXT_HOUR = datetime(2026, 11, 22, 11, 5, tzinfo=UTC)


async def move_on(budget: treasurer.Budget, clock: ManualClock, when: datetime) -> None:
    """Set the clock (which wakes the budget) and let one batch happen: the budget's
    time moves on, while tenants nobody used keep their windows as they were."""
    clock.set(when)
    await budget.check()


@asynccontextmanager
async def tenant_a(
    defaults: TenantCaps, *, start: datetime = START, **caps: Any
) -> AsyncIterator[tuple[ManualClock, treasurer.Budget, treasurer.Budget]]:
    """A budget on a hand-moved clock with ``defaults`` for tenants, and tenant "a"."""
    clock = FakeClock(start)
    async with treasurer.open_budget(clock=clock, tenant_defaults=defaults, **caps) as budget:
        yield clock, budget, budget.tenant("a")


class TestCaps:
    async def test_defaults_overrides_and_the_shared_total(self) -> None:
        """Unknown tenants get the defaults; configured ones their own; all share the total."""
        async with treasurer.open_budget(
            tokens=250,
            tenant_defaults=TenantCaps(tokens=100),
            tenants={"vip": TenantCaps(tokens=200)},
        ) as budget:
            alice, vip = budget.tenant("alice"), budget.tenant("vip")
            assert alice.caps.tokens == 100
            assert vip.caps.tokens == 200
            assert budget.caps.tokens == 250
            assert await alice.consume(100)
            assert not await alice.consume(1)  # alice's own cap
            with pytest.raises(treasurer.BudgetExceeded) as refused:
                await alice.record(tokens=1)
            assert (refused.value.tenant, refused.value.cap) == ("alice", "tokens")
            assert "tenant 'alice'" in str(refused.value)
            assert await vip.consume(150)  # vip may go beyond the defaults...
            with pytest.raises(treasurer.BudgetExceeded) as refused:
                await vip.record(tokens=1)  # ...but not beyond the shared total
            assert (refused.value.tenant, refused.value.limit) == (None, 250)
            assert budget.totals().tokens == 250
            assert alice.totals().tokens == 100
            assert vip.totals().tokens == 150
            assert alice.remaining == 0
            assert vip.remaining == 0

    async def test_no_tenant_caps_means_only_the_shared_total(self) -> None:
        """A tenant without caps of its own is bounded by the budget's only."""
        async with treasurer.open_budget(tokens=10) as budget:
            bob = budget.tenant("bob")
            assert bob.caps == treasurer.Caps()
            assert bob.remaining == 10
            assert await bob.consume(10)
            assert not await budget.tenant("carol").consume(1)
            assert budget.remaining == 0

    async def test_untenanted_calls_count_in_the_shared_total_only(self) -> None:
        """Calls on the budget's own handle count in the shared total, in no tenant."""
        async with treasurer.open_budget(
            tokens=100, tenant_defaults=TenantCaps(tokens=50)
        ) as budget:
            await budget.record(tokens=70)
            assert budget.tenant("t").remaining == 30  # shared: 30 left; own: 50
            assert budget.tenant("t").totals().tokens == 0

    async def test_per_request_caps_of_tenant_and_budget(self) -> None:
        """A tenant's per-request cap and the budget's both apply; the refusal says whose."""
        async with treasurer.open_budget(
            per_request={"tokens": 1000},
            tenant_defaults=TenantCaps(per_request={"tokens": 100}),
            tenants={"batch": TenantCaps()},
        ) as budget:
            with pytest.raises(treasurer.RequestTooLarge) as refused:
                await budget.tenant("a").record(tokens=101)
            assert (refused.value.window, refused.value.tenant) == ("request", "a")
            assert budget.tenant("a").per_request.tokens == 100
            await budget.tenant("batch").record(tokens=1000)
            with pytest.raises(treasurer.RequestTooLarge) as refused:
                await budget.tenant("batch").record(tokens=1001)
            assert refused.value.tenant is None  # the budget's per-request cap

    async def test_a_request_larger_than_the_shared_cap_never_waits(self) -> None:
        """A tenant's request larger than the shared cap raises at once, even with wait=True."""
        async with treasurer.open_budget(
            tokens=10, tenant_defaults=TenantCaps(tokens=100)
        ) as budget:
            with pytest.raises(treasurer.RequestTooLarge):
                async with budget.tenant("a").reserve(tokens=11, wait=True):
                    pass  # pragma: no cover


class TestFirstUse:
    @pytest.mark.parametrize("style", ["consume", "reserve"])
    async def test_a_thousand_concurrent_first_requests(self, style: str) -> None:
        """A new tenant hit by 1,000 concurrent first requests admits exactly its cap."""
        admitted: list[int] = []
        async with treasurer.open_budget(
            tokens=1_000_000, tenant_defaults=TenantCaps(tokens=250, requests=400)
        ) as budget:
            tenant = budget.tenant("new")

            async def one(i: int) -> None:
                if style == "consume":
                    if await tenant.consume(1):
                        admitted.append(i)
                    return
                try:
                    async with tenant.reserve(tokens=1) as r:
                        admitted.append(i)
                        await anyio.lowlevel.checkpoint()
                        r.commit(tokens=1)
                except treasurer.BudgetExceeded:
                    pass

            async with anyio.create_task_group() as tg:
                for i in range(1000):
                    tg.start_soon(one, i)
            assert len(admitted) == 250
            assert tenant.totals().tokens == 250 == budget.totals().tokens
            assert tenant.snapshot().tokens_reserved == 0

    async def test_a_handle_sends_nothing_and_reads_the_defaults(self) -> None:
        """Making a tenant's handle and reading it sends nothing; it shows the defaults."""
        clock = FakeClock()
        async with treasurer.open_budget(
            clock=clock, tenant_defaults=TenantCaps(windows=[Window.hour(tokens=10)])
        ) as budget:
            before = budget.statistics()
            unseen = budget.tenant("unseen")
            snapshot = unseen.snapshot()
            assert snapshot.tenant == "unseen"
            assert snapshot.calls == 0
            assert snapshot.window("hour").resets_at == datetime(2026, 11, 22, 11, tzinfo=UTC)
            assert unseen.totals().tokens == 0
            await wait_all_tasks_blocked()
            assert budget.statistics().messages_served == before.messages_served == 0


class TestTenantApi:
    async def test_everything_is_scoped(self) -> None:
        """Every call on a tenant's handle applies to that tenant (and the shared total)."""
        clock = FakeClock()
        async with treasurer.open_budget(
            usd=100, clock=clock, tenant_defaults=TenantCaps(tokens=1000, usd=10)
        ) as budget:
            t = budget.tenant("t")
            assert t.tenant_name == "t"
            assert budget.tenant_name is None
            async with t.reserve(tokens=300, usd=1) as r:
                assert r.tenant == "t"
                assert t.snapshot().tokens_reserved == 300
                assert budget.snapshot().tokens_reserved == 300
                check = await t.check(tokens=701)
                assert not check.fits
                assert check.refusal is not None
                assert check.refusal.tenant == "t"
                assert check.remaining.tokens == 700
                r.commit(tokens=250, usd=0.5, model="m")
            totals = await t.record(tokens=50, model="m")
            assert totals.tokens == 300
            assert (await t.charge(tokens=10)).tokens == 310
            assert await t.consume(10)
            await t.refund(0, 10)
            assert t.totals().tokens == 310
            report = await t.usage()
            assert report.tenant == "t"
            assert report.used.tokens == 310
            assert report.models["m"].tokens == 300
            assert report.percent_used["tokens"] == 31.0
            whole = await budget.usage()
            assert whole.tenant is None
            assert whole.used.tokens == 310
            await t.reset()
            assert t.totals().tokens == 0
            assert budget.totals().tokens == 310
            await budget.tenant("u").record(tokens=5)
            await budget.reset()
            assert budget.totals().tokens == 0
            assert budget.tenant("u").totals().tokens == 0
            assert "tenant 't'" in repr(t)
            assert "'t'" in repr(r)

    async def test_record_and_charge_take_a_tenant_keyword(self) -> None:
        """tenant= on the budget's handle names the tenant; on a tenant's, it must match."""
        async with treasurer.open_budget(tenant_defaults=TenantCaps(tokens=10)) as budget:
            await budget.record(tokens=4, tenant="a")
            await budget.charge(tokens=20, tenant="a")
            assert budget.tenant("a").totals().tokens == 24
            assert not await budget.tenant("a").consume(1)
            await budget.tenant("a").charge(tokens=0, tenant="a")  # the same tenant: fine
            with pytest.raises(treasurer.InvalidOption, match="tenant='b'"):
                await budget.tenant("a").record(tokens=1, tenant="b")
            async with budget.reserve(tokens=1) as r:
                with pytest.raises(treasurer.InvalidOption, match="tenant='a'"):
                    r.commit(tokens=1, tenant="a")
            async with budget.tenant("z").reserve(tokens=1) as r:
                r.commit(tokens=1, tenant="z")
            assert budget.tenant("z").totals().tokens == 1

    async def test_tenants_do_not_nest_and_names_are_checked(self) -> None:
        """A tenant has no tenants; bad tenant names raise typed errors, sending nothing."""
        async with treasurer.open_budget() as budget:
            with pytest.raises(treasurer.InvalidOption, match="tenants belong to the budget"):
                budget.tenant("a").tenant("b")
            for bad in ("", 5, None):
                with pytest.raises(treasurer.InvalidOption):
                    budget.tenant(bad)  # type: ignore[arg-type]
            with pytest.raises(treasurer.InvalidAmountType):
                await budget.record(tokens=1, tenant=5)  # type: ignore[typeddict-item]
            with pytest.raises(treasurer.InvalidOption):
                await budget.record(tokens=1, tenant="")
            with pytest.raises(treasurer.InvalidOption, match="no window"):
                await budget.tenant("a").reset("hour")
            assert budget.totals().calls == 0

    async def test_subscriptions_and_callbacks_see_tenants(self) -> None:
        """Events carry their tenant; a tenant's subscription gets only that tenant's."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(
            on_event=events.append, tenant_defaults=TenantCaps(tokens=100)
        ) as budget:
            async with budget.tenant("a").subscribe() as mine, budget.subscribe() as everyone:
                await budget.tenant("b").record(tokens=60)
                await budget.tenant("a").record(tokens=80)
                await budget.record(tokens=1)
                seen_a = mine.pending()
                seen_all = everyone.pending()
                assert mine.missed == 0
                assert everyone.missed == 0
        crossed = [e for e in events if isinstance(e, treasurer.ThresholdCrossed)]
        assert [(e.tenant, e.threshold) for e in crossed] == [("b", 50), ("a", 50), ("a", 75)]
        assert [(type(e).__name__, e.tenant) for e in seen_a] == [
            ("UsageRecorded", "a"),
            ("ThresholdCrossed", "a"),
            ("ThresholdCrossed", "a"),
        ]
        assert [e for e in seen_a if isinstance(e, treasurer.ThresholdCrossed)] == crossed[1:]
        assert seen_all == events
        used = [
            (e.tenant, e.usage.tokens) for e in events if isinstance(e, treasurer.UsageRecorded)
        ]
        assert used == [("b", 60), ("a", 80), (None, 1)]
        assert "tenant 'a'" in crossed[1].message

    async def test_overrides_per_tenant(self) -> None:
        """An override on a tenant raises that tenant's cap only, until it ends."""
        async with tenant_a(TenantCaps(tokens=100)) as (clock, budget, a):
            await a.record(tokens=100)
            override = await a.override(
                tokens=50, expires_at=START + timedelta(hours=1), reason="launch"
            )
            assert override.tenant == "a"
            assert a.snapshot().overrides == (override,)
            assert budget.snapshot().overrides == ()
            assert (await a.usage()).overrides == (override,)
            assert await a.consume(50)
            with pytest.raises(treasurer.RequestTooLarge):
                await budget.tenant("b").consume(101)  # others keep the defaults
            clock.set(START + timedelta(hours=1))
            assert (await a.check(tokens=0)).refusal.limit == 100  # type: ignore[union-attr]
            assert a.snapshot().limits.tokens == 100
            assert a.snapshot().overrides == ()
            with pytest.raises(treasurer.InvalidOption, match="no cap on usd"):
                await a.override(usd=1, expires_at=START + timedelta(hours=2))


class TestLogs:
    async def test_tenant_calls_are_logged_with_the_tenant(
        self, captured_logs: list[dict[str, object]]
    ) -> None:
        """Log events of a tenant's calls carry the tenant."""
        async with treasurer.open_budget(
            name="logged", tenant_defaults=TenantCaps(tokens=10)
        ) as budget:
            a = budget.tenant("a")
            await a.charge(tokens=5)
            holder = await a.reserve(tokens=5).__aenter__()

            async def waiter() -> None:
                async with a.reserve(tokens=5, wait=True):
                    pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await wait_all_tasks_blocked()
                holder.release()
            assert not await a.consume(6)
        by_event = {entry["event"]: entry for entry in captured_logs}
        for event in (
            "usage recorded",
            "threshold crossed",
            "reservation created",
            "reservation released",
            "request refused",
        ):
            assert by_event[event]["tenant"] == "a", event
        assert by_event["usage recorded"]["source"] == "charge"


class TestTime:
    async def test_tenant_windows_roll_over_lazily_and_exactly(self) -> None:
        """A tenant's hour rolls over at the exact instant, also after hours idle."""
        clock = FakeClock()
        async with treasurer.open_budget(
            clock=clock,
            windows=[Window.day(tokens=1000)],
            tenant_defaults=TenantCaps(windows=[Window.hour(tokens=100)]),
        ) as budget:
            a = budget.tenant("a")
            await a.record(tokens=100)
            assert not await a.consume(1)
            clock.set(datetime(2026, 11, 22, 10, 59, 59, tzinfo=UTC))
            assert not await a.consume(1)
            clock.set(datetime(2026, 11, 22, 14, tzinfo=UTC))  # idle for hours
            assert await a.consume(100)
            assert a.snapshot().window("hour").used.tokens == 100
            assert budget.snapshot().window("day").used.tokens == 200
            with pytest.raises(treasurer.BudgetExceeded) as refused:
                await a.record(tokens=1)
            assert refused.value.resets_at == datetime(2026, 11, 22, 15, tzinfo=UTC)
            assert (await a.usage("hour")).used.tokens == 100

    async def test_a_read_brings_an_idle_tenants_windows_up_to_date(self) -> None:
        """After its hour ended, an idle tenant's snapshot shows the new hour, empty."""
        clock = FakeClock()
        async with treasurer.open_budget(clock=clock, tenant_defaults=HOURLY) as budget:
            a = budget.tenant("a")
            await a.record(tokens=60)
            await move_on(budget, clock, NEXT_HOUR)
            hour = a.snapshot().window("hour")
            assert hour.used.tokens == 0
            assert hour.resets_at == datetime(2026, 11, 22, 12, tzinfo=UTC)

    async def test_a_commit_after_the_tenants_window_rolled_over(self) -> None:
        """Settling a tenant's reservation after its hour ended charges the new hour."""
        clock = FakeClock()
        async with treasurer.open_budget(clock=clock, tenant_defaults=HOURLY) as budget:
            a = budget.tenant("a")
            await a.record(tokens=50)
            async with a.reserve(tokens=40, ttl=timedelta(hours=1)) as r:
                await move_on(budget, clock, NEXT_HOUR)
                r.commit(tokens=30)
            assert a.snapshot().window("hour").used.tokens == 30
            assert a.totals().tokens == 80

    async def test_a_waiter_an_ended_override_makes_too_large_is_answered(self) -> None:
        """A waiter that fit only under an override is answered RequestTooLarge when it ends."""
        async with tenant_a(TenantCaps(tokens=10)) as (clock, budget, a):
            await a.override(tokens=10, expires_at=START + timedelta(minutes=5))
            holder = await a.reserve(tokens=10, ttl=timedelta(hours=1)).__aenter__()
            outcome: list[BaseException] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_an_error, a, 15, treasurer.RequestTooLarge, outcome)
                await wait_all_tasks_blocked()
                assert budget.statistics().reservations_waiting == 1
                clock.set(START + timedelta(minutes=5))  # wakes the budget: the override ends
            assert len(outcome) == 1
            assert outcome[0].tenant == "a"  # type: ignore[attr-defined]
            assert budget.statistics().reservations_waiting == 0
            holder.release()

    async def test_expiry_and_late_commit_of_a_tenants_reservation(self) -> None:
        """A tenant's reservation expires at its deadline; its late commit still counts."""
        async with tenant_a(TenantCaps(tokens=100), tokens=1000) as (clock, budget, a):
            async with a.reserve(tokens=80, ttl=timedelta(minutes=1)) as r:
                clock.set(START + timedelta(minutes=1))
                assert (await a.check(tokens=100)).fits  # expired: room is back
                assert a.snapshot().open_reservations == 0
                with pytest.raises(treasurer.ReservationExpired):
                    r.commit(tokens=30)
            assert a.totals().tokens == 30 == budget.totals().tokens


class Waiters:
    """Starts waiting reservations one at a time, so arrival order is exact. A granted
    waiter holds its reservation until :meth:`finish`, then commits or releases it."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self.tg = tg
        self.grants: list[tuple[int, str]] = []
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.done: dict[str, anyio.Event] = {}
        self.commit: dict[str, bool] = {}

    async def start(self, name: str, handle: treasurer.Budget, tokens: int) -> None:
        scope = self.scopes[name] = anyio.CancelScope()
        done = self.done[name] = anyio.Event()

        async def waiter() -> None:
            with scope:
                async with handle.reserve(tokens=tokens, wait=True) as r:
                    self.grants.append((r.id, name))
                    await done.wait()
                    if self.commit[name]:
                        r.commit()

        self.tg.start_soon(waiter)
        await wait_all_tasks_blocked()

    @property
    def granted(self) -> list[str]:
        """Names in grant order (ids are given out in that order)."""
        return [name for _, name in sorted(self.grants)]

    async def finish(self, name: str, *, commit: bool = True) -> None:
        """Let a granted waiter commit what it holds (or release it) and leave."""
        self.commit[name] = commit
        self.done[name].set()
        await wait_all_tasks_blocked()


class TestWaiting:
    async def test_a_tenant_at_its_cap_does_not_hold_up_others(self) -> None:
        """A waiter refused by its tenant's own cap holds up that tenant only."""
        async with treasurer.open_budget(
            tokens=100, tenant_defaults=TenantCaps(tokens=50)
        ) as budget:
            a, b = budget.tenant("a"), budget.tenant("b")
            async with anyio.create_task_group() as tg:
                w = Waiters(tg)
                await w.start("a1", a, 50)
                await w.start("a2", a, 10)  # a is full: waits
                await w.start("b1", b, 40)  # b has room: not held up by a2
                assert w.granted == ["a1", "b1"]
                assert budget.statistics().reservations_waiting == 1
                await w.finish("a1", commit=False)  # a's 50 come back
                assert w.granted == ["a1", "b1", "a2"]
                for name in ("b1", "a2"):
                    await w.finish(name)
            assert (a.totals().tokens, b.totals().tokens) == (10, 40)

    async def test_a_tenants_spent_cap_fails_its_waiter_at_once(self) -> None:
        """When a tenant's lifetime cap is filled by spent usage, its waiter fails at once
        with BudgetExceeded naming the tenant; other tenants go on."""
        async with treasurer.open_budget(
            tokens=100, tenant_defaults=TenantCaps(tokens=50)
        ) as budget:
            a, b = budget.tenant("a"), budget.tenant("b")
            outcome: list[BaseException] = []
            async with anyio.create_task_group() as tg:
                w = Waiters(tg)
                await w.start("a1", a, 50)
                tg.start_soon(wait_for_an_error, a, 10, treasurer.BudgetExceeded, outcome)
                await wait_all_tasks_blocked()
                assert budget.statistics().reservations_waiting == 1
                await w.finish("a1")  # a spent its 50 for good
                assert [getattr(e, "tenant", None) for e in outcome] == ["a"]
                assert budget.statistics().reservations_waiting == 0
                await w.start("b1", b, 50)
                assert w.granted == ["a1", "b1"]
                await w.finish("b1")
            assert budget.totals().tokens == 100

    async def test_the_shared_total_is_first_come_first_served(self) -> None:
        """A waiter held up by the shared total holds up every later waiter, any tenant."""
        async with treasurer.open_budget(
            tokens=100, tenant_defaults=TenantCaps(tokens=100)
        ) as budget:
            a, b, c = budget.tenant("a"), budget.tenant("b"), budget.tenant("c")
            async with anyio.create_task_group() as tg:
                w = Waiters(tg)
                await w.start("holder", a, 90)
                await w.start("b-big", b, 60)  # waits for the shared total
                await w.start("c-small", c, 5)  # fits, but must not overtake b-big
                await w.start("root", budget, 5)
                assert w.granted == ["holder"]
                assert budget.statistics().reservations_waiting == 3
                w.scopes["holder"].cancel()  # released: 100 free
                await wait_all_tasks_blocked()
                assert w.granted == ["holder", "b-big", "c-small", "root"]
                for name in ("b-big", "c-small", "root"):
                    await w.finish(name)
            assert budget.totals().tokens == 70

    async def test_a_cancelled_head_lets_its_tenant_move(self) -> None:
        """When a tenant's waiting head gives up, the waiter behind it is granted."""
        async with treasurer.open_budget(tenant_defaults=TenantCaps(tokens=10)) as budget:
            a = budget.tenant("a")
            async with anyio.create_task_group() as tg:
                w = Waiters(tg)
                await w.start("a1", a, 8)
                await w.start("a-big", a, 10)
                await w.start("a-small", a, 2)  # behind a-big in a's queue
                assert w.granted == ["a1"]
                w.scopes["a-big"].cancel()
                await wait_all_tasks_blocked()
                assert w.granted == ["a1", "a-small"]
                for name in ("a1", "a-small"):
                    await w.finish(name)
            assert budget.statistics().reservations_waiting == 0
            assert a.snapshot().tokens_reserved == 0

    async def test_a_tenants_window_reset_wakes_its_waiter(self) -> None:
        """A waiter held up by its tenant's hour is granted when the clock reaches the next
        hour, with nobody calling."""
        start = datetime(2026, 11, 22, 10, 59, tzinfo=UTC)
        async with tenant_a(TenantCaps(windows=[Window.hour(tokens=10)]), start=start) as (
            clock,
            _,
            a,
        ):
            await a.record(tokens=10)
            async with anyio.create_task_group() as tg:
                w = Waiters(tg)
                await w.start("a1", a, 5)
                assert w.granted == []
                clock.set(datetime(2026, 11, 22, 10, 59, 59, tzinfo=UTC))
                await wait_all_tasks_blocked()
                assert w.granted == []
                clock.set(datetime(2026, 11, 22, 11, tzinfo=UTC))  # wakes the budget
                await wait_all_tasks_blocked()
                assert w.granted == ["a1"]
                await w.finish("a1")

    @ON_TRIO_VIRTUAL_TIME
    async def test_the_timer_wakes_a_parked_tenant(self) -> None:
        """On trio's virtual clock: nobody calls, yet the tenant's hour rolls over and
        its waiter is granted."""
        clock = loop_clock(datetime(2026, 11, 22, 10, 59, tzinfo=UTC))
        async with treasurer.open_budget(clock=clock, tenant_defaults=HOURLY) as budget:
            await budget.tenant("a").record(tokens=100)
            async with budget.tenant("a").reserve(tokens=60, wait=True):
                now = clock()
            assert now == datetime(2026, 11, 22, 11, tzinfo=UTC)

    async def test_closing_answers_every_tenant_waiter(self) -> None:
        """Tenants' waiters still queued when the budget closes get BudgetClosed."""
        outcomes: list[BaseException] = []

        async with anyio.create_task_group() as tg:
            async with treasurer.open_budget(tenant_defaults=TenantCaps(tokens=1)) as budget:
                holders = [
                    await budget.tenant(name).reserve(tokens=1).__aenter__() for name in "ab"
                ]
                for name in ("a", "b", "a"):
                    tg.start_soon(
                        wait_for_an_error, budget.tenant(name), 1, treasurer.BudgetClosed, outcomes
                    )
                await wait_all_tasks_blocked()
                assert budget.statistics().reservations_waiting == 3
        assert len(outcomes) == 3
        for holder in holders:
            holder.release()


class TestChildren:
    async def test_a_tenants_child_is_carved_from_the_tenant(self) -> None:
        """A tenant's child holds its carve in the tenant; its spend counts there and in
        the budget; axes it does not cap are bounded by the tenant's caps."""
        async with treasurer.open_budget(
            tokens=1000, tenant_defaults=TenantCaps(tokens=100)
        ) as budget:
            a = budget.tenant("a")
            async with a.child(usd=1) as priced:  # tokens bounded by the tenant's 100
                assert await priced.consume(60, usd=0.5)
                assert not await priced.consume(41)
                with pytest.raises(treasurer.RequestTooLarge):
                    await priced.record(tokens=101)
                assert a.totals().tokens == 60
                await priced.refund(20, 60)
            assert a.totals().tokens == 20
            async with a.child(tokens=60) as sub:
                assert a.snapshot().tokens_reserved == 60
                assert not await a.consume(21)
                await sub.record(tokens=25)
                assert "/a/child-" in sub.name
                assert sub.snapshot().tenant == "a"
            assert a.totals().tokens == 45
            assert budget.totals().tokens == 45
            assert a.remaining == 55


class TestTenantCapsAtRunTime:
    async def test_caps_are_set_and_removed_while_the_budget_runs(self) -> None:
        """set_tenant_caps gives a tenant its own caps from the next call on; None puts it
        back on the defaults."""
        async with treasurer.open_budget(
            tokens=10_000, tenant_defaults=TenantCaps(tokens=100)
        ) as budget:
            vip = budget.tenant("vip")
            await vip.record(tokens=100)
            assert not await vip.consume(1)
            await budget.set_tenant_caps("vip", TenantCaps(tokens=1000))
            assert vip.caps.tokens == 1000
            assert await vip.consume(500)
            assert vip.remaining == 400
            await budget.set_tenant_caps("vip", None)
            assert vip.caps.tokens == 100
            assert not await vip.consume(1)
            assert vip.totals().tokens == 600
            await budget.set_tenant_caps("new", TenantCaps(usd=1))
            assert budget.tenant("new").caps == treasurer.Caps(usd=Decimal(1))
            assert await budget.tenant("new").consume(5_000)

    async def test_window_usage_carries_over_under_the_same_name(self) -> None:
        """A tenant's hour keeps its usage when its caps change and the hour stays."""
        async with tenant_a(HOURLY) as (_, budget, a):
            await a.record(tokens=80)
            await budget.set_tenant_caps("a", TenantCaps(windows=[Window.hour(tokens=90)]))
            assert a.snapshot().window("hour").used.tokens == 80
            with pytest.raises(treasurer.BudgetExceeded) as refused:
                await a.record(tokens=11)
            assert (refused.value.window, refused.value.limit) == ("hour", 90)
            await a.record(tokens=10)

    async def test_bad_calls_change_nothing(self) -> None:
        """Only the budget's handle sets tenant caps, to TenantCaps or None."""
        async with treasurer.open_budget(tenant_defaults=TenantCaps(tokens=10)) as budget:
            with pytest.raises(treasurer.InvalidOption):
                await budget.tenant("a").set_tenant_caps("a", TenantCaps(tokens=5))
            for caps in ({"tokens": 5}, 5):
                with pytest.raises(treasurer.InvalidOption):
                    await budget.set_tenant_caps("a", caps)  # type: ignore[arg-type]
            for name in ("", 5):
                with pytest.raises(treasurer.InvalidOption):
                    await budget.set_tenant_caps(name, TenantCaps())  # type: ignore[arg-type]
            assert budget.tenant("a").caps.tokens == 10

    def test_from_threads(self) -> None:
        """The sync facade sets tenant caps too."""
        with treasurer.sync.open_budget(tenant_defaults=TenantCaps(tokens=10)) as budget:
            budget.set_tenant_caps("a", TenantCaps(tokens=20))
            assert budget.tenant("a").consume(20)
            assert budget.tenant("b").consume(10)
            assert not budget.tenant("b").consume(1)


class TestReadYourWrites:
    @pytest.mark.parametrize("settle", ["commit", "release"])
    async def test_a_tenants_settlement_is_in_its_snapshot_at_once(self, settle: str) -> None:
        """Right after a tenant's reservation block ends, the tenant's snapshot, totals,
        remaining and available show the commit or the release."""
        async with treasurer.open_budget(tenant_defaults=TenantCaps(tokens=100)) as budget:
            a = budget.tenant("a")
            async with a.reserve(tokens=40) as r:
                assert a.snapshot().tokens_reserved == 40
                if settle == "commit":
                    r.commit(tokens=30)
            used = 30 if settle == "commit" else 0
            snap = a.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved, snap.open_reservations) == (used, 0, 0)
            assert a.totals().tokens == used
            assert a.remaining == 100 - used
            assert a.available.tokens == 100 - used
            assert (await a.refresh()) == snap


class TestEveryAxisHasARemainingFigure:
    async def test_a_tenant_capped_only_in_usd(self) -> None:
        """tenant.available.usd is what its USD cap leaves; uncapped axes say None."""
        async with treasurer.open_budget(tenant_defaults=TenantCaps(usd=5)) as budget:
            a = budget.tenant("a")
            assert a.available.usd == Decimal(5)
            await a.record(tokens=10, usd=Decimal("1.25"))
            assert a.available == treasurer.Caps(usd=Decimal("3.75"))
            assert a.snapshot().remaining.usd == Decimal("3.75")
            assert a.remaining is None  # the tokens figure: nothing caps tokens

    async def test_a_tenant_capped_only_by_a_window(self) -> None:
        """A tenant capped only per hour has as much available as its hour leaves."""
        async with treasurer.open_budget(tenant_defaults=HOURLY) as budget:
            a = budget.tenant("a")
            assert a.available.tokens == 100
            await a.record(tokens=30)
            assert a.available.tokens == 70
            assert a.snapshot().window("hour").remaining.tokens == 70

    async def test_the_least_of_the_tenant_and_the_budget(self) -> None:
        """A tenant's available is the least its own caps and the budget's leave."""
        async with treasurer.open_budget(
            usd=2, tokens=1000, tenant_defaults=TenantCaps(usd=5, tokens=100)
        ) as budget:
            await budget.record(usd=Decimal("1.5"))
            a = budget.tenant("a")
            assert a.available == treasurer.Caps(tokens=100, usd=Decimal("0.5"))


class TestIdleTenants:
    @BOTH_LOOPS_FAST
    async def test_idle_tenants_are_forgotten_and_memory_does_not_grow(self) -> None:
        """5,000 tenants each recording once under window caps only, then idle past the
        window: the memory they held is mostly given back (all but the most recent
        1,024 are forgotten), and a forgotten tenant starts again from zero."""
        clock = ManualClock(START)
        async with treasurer.open_budget(clock=clock, tenant_defaults=HOURLY) as budget:

            async def wave(prefix: str) -> tuple[int, int]:
                """Memory traced with the wave's tenants live, then once they are idle."""

                async def worker(first: int) -> None:
                    for n in range(first, 5_000, 50):
                        await budget.tenant(f"{prefix}{n}").record(tokens=1)

                async with anyio.create_task_group() as tg:
                    for first in range(50):
                        tg.start_soon(worker, first)
                gc.collect()
                live = tracemalloc.get_traced_memory()[0]
                clock.advance(hours=1)  # past every tenant's hour: all idle; wakes the budget
                await wait_all_tasks_blocked()
                await budget.check()
                gc.collect()
                return live, tracemalloc.get_traced_memory()[0]

            await wave("first-")  # the budget's own structures reach their size
            tracemalloc.start()
            try:
                live, idle = await wave("second-")
            finally:
                tracemalloc.stop()
            assert idle < live / 2
            forgotten = budget.tenant("first-0")
            assert forgotten.totals().tokens == 0
            await forgotten.record(tokens=100)
            assert forgotten.totals().tokens == 100
            assert not await forgotten.consume(1)
            assert budget.totals().tokens == 10_100

    async def test_a_tenant_in_use_is_kept(self) -> None:
        """A tenant with a lifetime cap and usage keeps its figures among thousands of
        others."""
        async with treasurer.open_budget(
            tenant_defaults=TenantCaps(tokens=100), windows=[Window.day(tokens=10**9)]
        ) as budget:
            await budget.tenant("keep").record(tokens=60)
            for n in range(2_000):
                await budget.tenant(f"t{n}").charge(tokens=0, requests=0)
            assert budget.tenant("keep").totals().tokens == 60
            assert not await budget.tenant("keep").consume(41)


class TestNoScans:
    def test_a_release_rechecks_its_own_tenants_waiter_only(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In the pure ledger, with 2,000 tenants each full and each with a waiting request,
        serving the waiters after one tenant's release checks that tenant's waiter, not
        all 2,000 (the cost of a call must not grow with the waiters elsewhere)."""
        from treasurer._core.axes import parse
        from treasurer._core.commands import Release, Reserve
        from treasurer._core.config import BudgetConfig, Limits
        from treasurer._core.ledger import Ledger
        from treasurer._core.outcomes import Granted
        from treasurer._core.scopes import tenant_path
        from treasurer._core.tree import ScopeTree

        config = BudgetConfig.build(
            "no-scans", Limits(), tenant_defaults=Limits.build({"tokens": 100})
        )
        ledger = Ledger(config, START)
        held = {}
        waiting = []
        for n in range(2_000):
            path = tenant_path(f"t{n}")
            granted = ledger.apply(Reserve(path, parse({"tokens": 100})), START).reply
            assert isinstance(granted, Granted)
            held[n] = granted.reservation
            waiting.append(Reserve(path, parse({"tokens": 10})))
        assert ledger.serve_waiting(waiting, 0) == []  # every tenant is full: all wait
        checks: list[object] = []
        original = ScopeTree.refusal

        def counting(tree: ScopeTree, scope: object, amount: object, **options: bool) -> object:
            checks.append(scope)
            return original(tree, scope, amount, **options)  # type: ignore[arg-type]

        monkeypatch.setattr(ScopeTree, "refusal", counting)
        ledger.apply(Release(tenant_path("t1999"), held[1_999]), START)
        answers = ledger.serve_waiting(waiting, len(waiting))
        assert [index for index, _ in answers] == [1_999]
        assert len(checks) <= 4


class TestSync:
    async def test_tenant_reads_from_any_thread(self) -> None:
        """A tenant's figures are published per batch: another thread reads them as is,
        or through the sync view."""
        async with treasurer.open_budget(tenant_defaults=TenantCaps(tokens=10)) as budget:
            a = budget.tenant("a")
            await a.record(tokens=3)
            snapshot = await anyio.to_thread.run_sync(a.snapshot)
            assert (snapshot.tenant, snapshot.tokens_used) == ("a", 3)
            view = budget.sync_view().tenant("a")
            totals = await anyio.to_thread.run_sync(view.totals)
            assert totals.tokens == 3
            assert (await anyio.to_thread.run_sync(lambda: view.remaining)) == 7
            assert (await anyio.to_thread.run_sync(view.snapshot)).tenant == "a"

    def test_the_thread_facade_has_tenants(self) -> None:
        """The sync facade's tenant handles work as the async ones."""
        with treasurer.sync.open_budget(
            tokens=100, tenant_defaults=TenantCaps(tokens=10)
        ) as budget:
            a = budget.tenant("a")
            assert a.consume(10)
            assert not a.consume(1)
            with a.reserve(tokens=0) as r:
                r.commit(tokens=0)
            assert a.totals().tokens == 10
            assert budget.totals().tokens == 10
            assert a.snapshot().tenant == "a"
            assert a.tenant_name == "a"
            assert budget.tenant_name is None
            a.close()  # a tenant view shares the budget's life: nothing to close
            assert budget.consume(5)


class TestBadInput:
    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"tenant_defaults": {"tokens": 5}}, treasurer.InvalidOption),
            ({"tenants": [("a", TenantCaps())]}, treasurer.InvalidOption),
            ({"tenants": {"": TenantCaps()}}, treasurer.InvalidOption),
            ({"tenants": {"a": {"tokens": 5}}}, treasurer.InvalidOption),
        ],
    )
    async def test_open_budget_refuses(self, kwargs: dict[str, object], error: type) -> None:
        """Tenant options that are no TenantCaps or no names are refused at open."""
        with pytest.raises(error):
            async with treasurer.open_budget(**kwargs):  # type: ignore[arg-type]
                pass  # pragma: no cover

    def test_tenant_caps_are_validated_when_made(self) -> None:
        """TenantCaps validates its caps where it is written; equal caps compare equal."""
        with pytest.raises(treasurer.InvalidAmount):
            TenantCaps(tokens=-1)
        with pytest.raises(treasurer.InvalidAmountType):
            TenantCaps(per_request=5)  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption):
            TenantCaps(windows=[Window.hour(tokens=1), Window.hour(tokens=2)])
        with pytest.raises(treasurer.InvalidOption):
            TenantCaps(windows="hour")  # type: ignore[arg-type]
        caps = TenantCaps(tokens=5, usd=Decimal("0.5"), windows=[Window.day(tokens=3)])
        assert caps.caps.tokens == 5
        assert caps.caps.usd == Decimal("0.5")
        assert caps == TenantCaps(tokens=5, usd=0.5, windows=[Window.day(tokens=3)])
        with pytest.raises(treasurer.UnknownAxis):
            TenantCaps(foo=1)  # type: ignore[call-arg]
