"""Tenants: their own caps inside a shared total, made atomically on first use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio.testing
from anyio import wait_all_tasks_blocked

import treasurer
import treasurer.sync
from treasurer import TenantCaps, Window
from treasurer._actor import BudgetCore
from treasurer._amounts import NO_CAPS
from treasurer._ledger import Ledger, Scope

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def core_of(budget: treasurer.Budget) -> BudgetCore:
    return budget._core


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


async def move_on(budget: treasurer.Budget, clock: FakeClock, when: datetime) -> None:
    """Set the clock, then make one batch happen: the budget's time moves on,
    while tenants nobody used keep their windows as they were."""
    clock.now = when
    await budget.check()


@asynccontextmanager
async def tenant_a(
    defaults: TenantCaps, *, start: datetime = START, **caps: Any
) -> AsyncIterator[tuple[FakeClock, treasurer.Budget, treasurer.Budget]]:
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
        async with treasurer.open_budget(tokens=10) as budget:
            bob = budget.tenant("bob")
            assert bob.caps == treasurer.Caps()
            assert bob.remaining == 10
            assert await bob.consume(10)
            assert not await budget.tenant("carol").consume(1)
            assert budget.remaining == 0

    async def test_untenanted_calls_count_in_the_shared_total_only(self) -> None:
        async with treasurer.open_budget(
            tokens=100, tenant_defaults=TenantCaps(tokens=50)
        ) as budget:
            await budget.record(tokens=70)
            assert budget.tenant("t").remaining == 30  # shared: 30 left; own: 50
            assert budget.tenant("t").totals().tokens == 0

    async def test_per_request_caps_of_tenant_and_budget(self) -> None:
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
            assert len(core_of(budget).ledger.tenants) == 1

    async def test_a_handle_sends_nothing_and_reads_the_defaults(self) -> None:
        clock = FakeClock()
        async with treasurer.open_budget(
            clock=clock, tenant_defaults=TenantCaps(windows=[Window.hour(tokens=10)])
        ) as budget:
            snapshot = budget.tenant("unseen").snapshot()
            assert snapshot.tenant == "unseen"
            assert snapshot.calls == 0
            assert snapshot.window("hour").resets_at == datetime(2026, 11, 22, 11, tzinfo=UTC)
            assert core_of(budget).ledger.tenants == {}


class TestTenantApi:
    async def test_everything_is_scoped(self) -> None:
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
            await t.refund(0, 10)
            assert t.totals().tokens == 300
            report = await t.usage()
            assert report.tenant == "t"
            assert report.used.tokens == 300
            assert report.models["m"].tokens == 300
            assert report.percent_used["tokens"] == 30.0
            whole = await budget.usage()
            assert whole.tenant is None
            assert whole.used.tokens == 300
            await t.reset()
            assert t.totals().tokens == 0
            assert budget.totals().tokens == 300
            await budget.tenant("u").record(tokens=5)
            await budget.reset()
            assert budget.totals().tokens == 0
            assert budget.tenant("u").totals().tokens == 0
            assert "tenant 't'" in repr(t)
            assert "'t'" in repr(r)

    async def test_record_and_charge_take_a_tenant_keyword(self) -> None:
        async with treasurer.open_budget(tenant_defaults=TenantCaps(tokens=10)) as budget:
            await budget.record(tokens=4, tenant="a")
            await budget.charge(tokens=20, tenant="a")
            assert budget.tenant("a").totals().tokens == 24
            assert not await budget.tenant("a").consume(1)
            await budget.tenant("a").charge(tokens=0, tenant="a")  # the same tenant: fine
            with pytest.raises(treasurer.InvalidOption, match="tenant='b'"):
                await budget.tenant("a").record(tokens=1, tenant="b")
            async with budget.reserve(tokens=1) as r:
                with pytest.raises(treasurer.InvalidOption, match=r"budget\.tenant"):
                    r.commit(tokens=1, tenant="a")
            async with budget.tenant("z").reserve(tokens=1) as r:
                r.commit(tokens=1, tenant="z")
            assert budget.tenant("z").totals().tokens == 1

    async def test_tenants_do_not_nest_and_names_are_checked(self) -> None:
        async with treasurer.open_budget() as budget:
            with pytest.raises(treasurer.InvalidOption, match="do not nest"):
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
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(
            on_event=events.append, tenant_defaults=TenantCaps(tokens=100)
        ) as budget:
            async with budget.tenant("a").subscribe() as mine, budget.subscribe() as everyone:
                await budget.tenant("b").record(tokens=60)
                await budget.tenant("a").record(tokens=80)
                await budget.record(tokens=1)
                seen_a = [await anext(mine) for _ in range(2)]
                seen_all = [await anext(everyone) for _ in range(3)]
                assert mine.missed == 0
                assert everyone.missed == 0
        crossed = [e for e in events if isinstance(e, treasurer.ThresholdCrossed)]
        assert [(e.tenant, e.threshold) for e in crossed] == [("b", 50), ("a", 50), ("a", 75)]
        assert seen_a == crossed[1:]
        assert seen_all == crossed
        assert "tenant 'a'" in crossed[1].message

    async def test_overrides_per_tenant(self) -> None:
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
            clock.now = START + timedelta(hours=1)
            assert (await a.check(tokens=0)).refusal.limit == 100  # type: ignore[union-attr]
            assert a.snapshot().limits.tokens == 100
            assert a.snapshot().overrides == ()
            with pytest.raises(treasurer.InvalidOption, match="no cap on usd"):
                await a.override(usd=1, expires_at=START + timedelta(hours=2))


class TestLogs:
    async def test_tenant_calls_are_logged_with_the_tenant(
        self, captured_logs: list[dict[str, object]]
    ) -> None:
        async with treasurer.open_budget(
            name="logged", tenant_defaults=TenantCaps(tokens=10)
        ) as budget:
            a = budget.tenant("a")
            await a.charge(tokens=10)

            async def waiter() -> None:
                async with a.reserve(tokens=5, wait=True):
                    pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await wait_all_tasks_blocked()
                await a.reset()
        by_event = {entry["event"]: entry for entry in captured_logs}
        assert by_event["usage charged"]["tenant"] == "a"
        assert by_event["reservation waiting"]["tenant"] == "a"
        assert "waiting reservation answered" in by_event
        assert by_event["threshold crossed"]["tenant"] == "a"


class TestTime:
    async def test_tenant_windows_roll_over_lazily_and_exactly(self) -> None:
        clock = FakeClock()
        async with treasurer.open_budget(
            clock=clock,
            windows=[Window.day(tokens=1000)],
            tenant_defaults=TenantCaps(windows=[Window.hour(tokens=100)]),
        ) as budget:
            a = budget.tenant("a")
            await a.record(tokens=100)
            assert not await a.consume(1)
            clock.now = datetime(2026, 11, 22, 10, 59, 59, tzinfo=UTC)
            assert not await a.consume(1)
            clock.now = datetime(2026, 11, 22, 14, tzinfo=UTC)  # idle for hours
            assert await a.consume(100)
            assert a.snapshot().window("hour").used.tokens == 100
            assert budget.snapshot().window("day").used.tokens == 200
            with pytest.raises(treasurer.BudgetExceeded) as refused:
                await a.record(tokens=1)
            assert refused.value.resets_at == datetime(2026, 11, 22, 15, tzinfo=UTC)
            assert (await a.usage("hour")).used.tokens == 100

    async def test_a_read_brings_an_idle_tenants_windows_up_to_date(self) -> None:
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
        async with tenant_a(TenantCaps(tokens=10)) as (clock, budget, a):
            await a.override(tokens=10, expires_at=START + timedelta(minutes=5))
            await a.record(tokens=10)
            outcome: list[BaseException] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_an_error, a, 15, treasurer.RequestTooLarge, outcome)
                await wait_all_tasks_blocked()
                assert budget.statistics().reservations_waiting == 1
                clock.now = START + timedelta(minutes=5)
                await budget.check()
            assert len(outcome) == 1
            assert outcome[0].tenant == "a"  # type: ignore[attr-defined]
            assert budget.statistics().reservations_waiting == 0

    async def test_expiry_and_late_commit_of_a_tenants_reservation(self) -> None:
        async with tenant_a(TenantCaps(tokens=100), tokens=1000) as (clock, budget, a):
            async with a.reserve(tokens=80, ttl=timedelta(minutes=1)) as r:
                clock.now = START + timedelta(minutes=1)
                assert (await a.check(tokens=100)).fits  # expired: room is back
                assert a.snapshot().open_reservations == 0
                with pytest.raises(treasurer.ReservationExpired):
                    r.commit(tokens=30)
            assert a.totals().tokens == 30 == budget.totals().tokens


class Waiters:
    """Starts waiting reservations one at a time, so arrival order is exact."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self.tg = tg
        self._granted: list[tuple[int, str]] = []
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.done: dict[str, anyio.Event] = {}

    async def start(self, name: str, handle: treasurer.Budget, tokens: int) -> None:
        scope = self.scopes[name] = anyio.CancelScope()
        done = self.done[name] = anyio.Event()

        async def waiter() -> None:
            with scope:
                async with handle.reserve(tokens=tokens, wait=True) as r:
                    self._granted.append((r.id, name))
                    await done.wait()
                    r.commit(tokens=tokens)

        self.tg.start_soon(waiter)
        await wait_all_tasks_blocked()

    @property
    def granted(self) -> list[str]:
        """Names in grant order (ids are given out in that order)."""
        return [name for _, name in sorted(self._granted)]

    async def finish(self, name: str) -> None:
        self.done[name].set()
        await wait_all_tasks_blocked()


class TestWaiting:
    async def test_a_tenant_at_its_cap_does_not_hold_up_others(self) -> None:
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
                await w.finish("a1")  # a's usage is 50 for good: a2 never fits
                assert w.granted == ["a1", "b1"]
                await budget.tenant("a").reset()
                await wait_all_tasks_blocked()
                assert w.granted == ["a1", "b1", "a2"]
                for name in ("b1", "a2"):
                    await w.finish(name)

    async def test_the_shared_total_is_first_come_first_served(self) -> None:
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
        start = datetime(2026, 11, 22, 10, 59, tzinfo=UTC)
        async with tenant_a(TenantCaps(windows=[Window.hour(tokens=10)]), start=start) as (
            clock,
            budget,
            a,
        ):
            await a.record(tokens=10)
            async with anyio.create_task_group() as tg:
                w = Waiters(tg)
                await w.start("a1", a, 5)
                assert w.granted == []
                assert core_of(budget).next_deadline == datetime(2026, 11, 22, 11, tzinfo=UTC)
                clock.now = datetime(2026, 11, 22, 11, tzinfo=UTC)
                await budget.tenant("other").check(tokens=0)  # any batch sees the time
                await wait_all_tasks_blocked()
                assert w.granted == ["a1"]
                await w.finish("a1")

    async def test_closing_answers_every_tenant_waiter(self) -> None:
        outcomes: list[BaseException] = []

        async with anyio.create_task_group() as tg:
            async with treasurer.open_budget(tenant_defaults=TenantCaps(tokens=1)) as budget:
                await budget.tenant("a").record(tokens=1)
                await budget.tenant("b").record(tokens=1)
                for name in ("a", "b", "a"):
                    tg.start_soon(
                        wait_for_an_error, budget.tenant(name), 1, treasurer.BudgetClosed, outcomes
                    )
                await wait_all_tasks_blocked()
                assert budget.statistics().reservations_waiting == 3
        assert len(outcomes) == 3


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio")],
)
async def test_the_timer_wakes_a_parked_tenant() -> None:
    """On trio's virtual clock: nobody calls, yet the tenant's hour rolls over and
    its waiter is granted."""
    base = datetime(2026, 11, 22, 10, 59, tzinfo=UTC) - timedelta(seconds=anyio.current_time())
    clock = lambda: base + timedelta(seconds=anyio.current_time())  # noqa: E731
    async with treasurer.open_budget(clock=clock, tenant_defaults=HOURLY) as budget:
        await budget.tenant("a").record(tokens=100)
        async with budget.tenant("a").reserve(tokens=60, wait=True):
            now = clock()
        assert now == datetime(2026, 11, 22, 11, tzinfo=UTC)


class TestChildren:
    async def test_a_tenants_child_is_carved_from_the_tenant(self) -> None:
        async with treasurer.open_budget(
            tokens=1000, tenant_defaults=TenantCaps(tokens=100)
        ) as budget:
            a = budget.tenant("a")
            with pytest.raises(treasurer.InvalidOption, match="must cap tokens"):
                async with a.child(usd=1):
                    pass  # pragma: no cover
            async with a.child(tokens=60) as sub:
                assert a.snapshot().tokens_reserved == 60
                assert not await a.consume(41)
                await sub.record(tokens=25)
                assert "/a/child-" in sub.name
            assert a.totals().tokens == 25
            assert budget.totals().tokens == 25
            assert a.remaining == 75


class TestNoScans:
    def test_a_settlement_looks_at_its_own_tenant_only(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With 2,000 parked tenants and 100,000 open reservations, serving the
        waiters after one release checks one tenant, not all of them."""
        ledger = Ledger(
            (None,) * 5, tenant_default=((None, None, 100, None, None), (None,) * 5, ())
        )

        class Ticket:
            abandoned = False

        for t in range(2000):
            for _ in range(50):
                assert isinstance(ledger.reserve((0, 0, 2, 0, 1), tenant=f"t{t}"), int)
            ledger.wait(Ticket(), (0, 0, 1, 0, 1), None, f"t{t}")
        assert ledger.serve_waiters() == []  # each parks once
        assert len(ledger.reservations) == 100_000
        assert ledger.waiting == 2000
        checks: list[Scope] = []
        original = Scope.no_room

        def counting(scope: Scope, amount: tuple[int, ...]) -> object:
            checks.append(scope)
            return original(scope, amount)  # type: ignore[arg-type]

        monkeypatch.setattr(Scope, "no_room", counting)
        reservation = next(iter(ledger._scope_of))
        assert ledger.release(reservation) is None
        (answer,) = ledger.serve_waiters()
        assert isinstance(answer[1], tuple)
        assert len(checks) <= 2  # the woken tenant's caps and the shared ones
        checks.clear()
        assert ledger.reserve((0, 0, 1, 0, 1), tenant="t1999") is not None
        assert len(checks) <= 2


class TestLedger:
    """Ledger paths the handles reach only in rare interleavings."""

    def test_unrecord_takes_back_a_tenants_record(self) -> None:
        ledger = Ledger((None,) * 5, tenant_default=((None, None, 10, None, None), NO_CAPS, ()))
        assert ledger.record((0, 0, 6, 0, 1), tenant="a") is None
        ledger.unrecord((0, 0, 6, 0, 1), tenant="a")
        assert ledger.scope("a").state() == ((0,) * 5, (0,) * 5, 0, 0)
        assert ledger.state()[2] == 0
        assert ledger.record((0, 0, 10, 0, 1), tenant="a") is None

    def test_a_parked_tenant_woken_early_leaves_no_timer_behind(self) -> None:
        start = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
        hourly = (NO_CAPS, NO_CAPS, (Window.hour(tokens=10),))
        ledger = Ledger((None,) * 5, now=start, tenant_default=hourly)

        class Ticket:
            abandoned = False

        held = ledger.reserve((0, 0, 10, 0, 1), tenant="a")
        assert isinstance(held, int)
        ledger.wait(Ticket(), (0, 0, 5, 0, 1), None, "a")
        assert ledger.serve_waiters() == []  # parked until 11:00, or a release
        assert ledger.next_deadline() == datetime(2026, 11, 22, 11, tzinfo=UTC)
        assert ledger.release(held) is None
        ((_, answer),) = ledger.serve_waiters()
        assert isinstance(answer, tuple)
        assert ledger.next_deadline() is None  # the parked tenant's wake-up is gone


class TestSync:
    async def test_tenant_reads_belong_to_the_loop_thread(self) -> None:
        """Tenants' figures are read from the ledger on the loop's thread; another
        thread gets a clear error, or goes through the sync view."""
        async with treasurer.open_budget(tenant_defaults=TenantCaps(tokens=10)) as budget:
            a = budget.tenant("a")
            await a.record(tokens=3)
            with pytest.raises(treasurer.LoopThreadError, match=r"treasurer\.sync"):
                await anyio.to_thread.run_sync(a.snapshot)
            view = budget.sync_view().tenant("a")
            totals = await anyio.to_thread.run_sync(view.totals)
            assert totals.tokens == 3
            assert (await anyio.to_thread.run_sync(lambda: view.remaining)) == 7
            assert (await anyio.to_thread.run_sync(view.snapshot)).tenant == "a"

    def test_the_thread_facade_has_tenants(self) -> None:
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
        with pytest.raises(error):
            async with treasurer.open_budget(**kwargs):  # type: ignore[arg-type]
                pass  # pragma: no cover

    def test_tenant_caps_are_validated_when_made(self) -> None:
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
