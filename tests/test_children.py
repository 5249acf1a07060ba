"""Child budgets: carved out of a parent, bounded by every ancestor, returning what they did
not use, and losing nothing that settles while they close."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import anyio
import anyio.lowlevel
import pytest

import treasurer
from api_support import BOTH_LOOPS_FAST
from treasurer import TenantCaps, Window
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 22, 10, tzinfo=UTC)


class TestChildren:
    async def test_carves_and_returns_the_rest(self) -> None:
        """Opening a child holds its caps in the parent; its spend counts in the parent as
        it happens; closing gives back what it did not use."""
        async with treasurer.open_budget(tokens=100_000, usd=2) as parent:
            async with parent.child(tokens=20_000, usd=0.5, name="research") as sub:
                assert sub.name == "research"
                held = parent.snapshot()
                assert (held.tokens_reserved, held.usd_reserved) == (20_000, Decimal("0.5"))
                async with sub.reserve(tokens=5_000, usd=0.1) as r:
                    r.commit(tokens=4_000, usd=Decimal("0.08"))
                during = parent.snapshot()
                assert (during.tokens_used, during.tokens_reserved, during.calls) == (
                    4_000,
                    16_000,
                    1,
                )
                await sub.record(tokens=1_000, usd=0.02)
                with pytest.raises(treasurer.BudgetExceeded) as refused:
                    await sub.record(tokens=16_000)  # the child's own cap
                assert (refused.value.child, refused.value.limit) == ("research", 20_000)
            snap = parent.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved) == (5_000, 0)
            assert snap.usd_used == Decimal("0.1")
            assert snap.calls == 2  # each call in the child is a call of the parent
            assert sub.closed

    @pytest.mark.parametrize("settle", ["commit", "release"])
    async def test_a_childs_settlement_is_in_its_snapshot_at_once(self, settle: str) -> None:
        """Right after a reservation block in a child ends, the child's snapshot and the
        parent's show the commit or the release."""
        async with treasurer.open_budget(tokens=1000) as parent:
            async with parent.child(tokens=100) as sub:
                async with sub.reserve(tokens=40) as r:
                    if settle == "commit":
                        r.commit(tokens=30)
                used = 30 if settle == "commit" else 0
                mine = sub.snapshot()
                assert (mine.tokens_used, mine.tokens_reserved, mine.open_reservations) == (
                    used,
                    0,
                    0,
                )
                assert sub.remaining == 100 - used
                theirs = parent.snapshot()
                assert (theirs.tokens_used, theirs.tokens_reserved) == (used, 100 - used)

    async def test_a_closed_child_shows_its_final_figures_and_refuses_calls(self) -> None:
        """After its block, a child's snapshot keeps its final figures; calls raise
        BudgetClosed naming the child."""
        async with treasurer.open_budget(tokens=1000, name="parent") as parent:
            async with parent.child(tokens=100, name="research") as sub:
                await sub.record(tokens=30)
            assert parent.totals().tokens == 30
            final = sub.snapshot()
            assert (final.child, final.tokens_used, final.calls) == ("research", 30, 1)
            assert sub.totals().tokens == 30
            assert not parent.closed
            with pytest.raises(treasurer.BudgetClosed, match="research"):
                await sub.record(tokens=1)
            with pytest.raises(treasurer.BudgetClosed):
                await sub.consume(1)
            with pytest.raises(treasurer.BudgetClosed):
                await sub.check(tokens=1)
            with pytest.raises(treasurer.BudgetClosed):
                async with sub.reserve(tokens=1):
                    pass  # pragma: no cover
            with pytest.raises(treasurer.BudgetClosed):
                async with sub.child(tokens=1):
                    pass  # pragma: no cover
            assert parent.totals().tokens == 30

    async def test_a_reservation_outliving_the_child_keeps_holding_and_settles(self) -> None:
        """A task that still holds a reservation when the child closes keeps it held in
        the parent; its commit reaches the parent's books when it comes."""
        async with treasurer.open_budget(tokens=1000) as parent:
            held = anyio.Event()
            leave = anyio.Event()

            async def straggler(sub: treasurer.Budget) -> None:
                async with sub.reserve(tokens=300) as r:
                    held.set()
                    await leave.wait()
                    r.commit(tokens=10)

            async with anyio.create_task_group() as tg:
                async with parent.child(tokens=500) as sub:
                    await sub.record(tokens=50)
                    tg.start_soon(straggler, sub)
                    await held.wait()
                after_close = parent.snapshot()
                assert (after_close.tokens_used, after_close.tokens_reserved) == (50, 300)
                assert parent.remaining == 650
                leave.set()
            snap = parent.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved, snap.open_reservations) == (60, 0, 0)
            assert parent.remaining == 940

    async def test_refused_when_the_parent_cannot_carve(self) -> None:
        """A child larger than what the parent has left is refused at once."""
        async with treasurer.open_budget(tokens=100) as parent:
            await parent.record(tokens=90)
            with pytest.raises(treasurer.BudgetExceeded):
                async with parent.child(tokens=20):
                    pass  # pragma: no cover
            assert parent.snapshot().tokens_reserved == 0

    async def test_children_nest_and_never_overspend(self) -> None:
        """Grandchildren carve from children; sibling subtrees can never pass the root's cap."""
        async with treasurer.open_budget(tokens=1_000) as root:

            async def team(spend: int) -> None:
                async with root.child(tokens=400) as sub, sub.child(tokens=300) as leaf:
                    await leaf.record(tokens=spend)

            async with anyio.create_task_group() as tg:
                tg.start_soon(team, 250)
                tg.start_soon(team, 300)
            with pytest.raises(treasurer.BudgetExceeded):
                async with root.child(tokens=451), root.child(tokens=1):
                    pass  # pragma: no cover
            assert root.totals().tokens == 550
            assert root.snapshot().tokens_reserved == 0

    async def test_failure_inside_still_commits_the_spend(self) -> None:
        """If the child's block fails, what it spent is still charged to the parent."""
        async with treasurer.open_budget(tokens=100) as parent:
            with pytest.raises(LookupError):
                async with parent.child(tokens=50) as sub:
                    await sub.record(tokens=30)
                    raise LookupError("agent crashed")
            assert parent.totals().tokens == 30
            assert parent.snapshot().tokens_reserved == 0

    async def test_overrun_in_the_child_reaches_the_parent(self) -> None:
        """A commit above its estimate inside the child is recorded in the parent too."""
        async with treasurer.open_budget(tokens=100) as parent:
            async with parent.child(tokens=50) as sub:
                async with sub.reserve(tokens=50) as r:
                    r.commit(tokens=70)
            assert parent.totals().tokens == 70
            assert parent.remaining == 30

    async def test_waits_for_room(self) -> None:
        """child(wait=True) waits until the parent can carve it."""
        async with treasurer.open_budget(tokens=100) as parent:
            first = await parent.reserve(tokens=80).__aenter__()
            opened = anyio.Event()

            async def run_child() -> None:
                async with parent.child(tokens=50, wait=True):
                    opened.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(run_child)
                await anyio.wait_all_tasks_blocked()
                assert not opened.is_set()
                first.release()
            assert opened.is_set()

    async def test_names_and_what_a_child_cannot_do(self) -> None:
        """A child is named after its parent unless named; it has no tenants and no reset."""
        async with treasurer.open_budget(tokens=100, name="root") as parent:
            async with parent.child() as first, first.child() as nested:
                assert first.name.startswith("root/child-")
                assert nested.name.startswith(f"{first.name}/child-")
                with pytest.raises(treasurer.InvalidOption):
                    first.tenant("a")
                with pytest.raises(treasurer.InvalidOption):
                    await first.reset()
            for bad in ("", 5):
                with pytest.raises(treasurer.InvalidOption):
                    async with parent.child(name=bad):  # type: ignore[arg-type]
                        pass  # pragma: no cover
            with pytest.raises(treasurer.InvalidOption):
                async with parent.child(tokens=10, wait="yes"):  # type: ignore[arg-type]
                    pass  # pragma: no cover
            with pytest.raises(treasurer.InvalidAmount):
                async with parent.child(tokens=-1):
                    pass  # pragma: no cover
            with pytest.raises(treasurer.UnknownAxis):
                async with parent.child(tokenz=1):  # type: ignore[call-arg]
                    pass  # pragma: no cover
            assert parent.snapshot().tokens_reserved == 0


class TestTheParentBoundsTheRest:
    async def test_a_child_names_only_the_caps_it_wants(self) -> None:
        """A child capping tokens only opens under a parent that also caps USD; its USD
        spend is bounded by the parent's USD cap."""
        async with treasurer.open_budget(tokens=1000, usd=1) as parent:
            async with parent.child(tokens=100) as sub:
                assert sub.caps == treasurer.Caps(tokens=100)
                assert parent.snapshot().usd_reserved == 0
                await sub.record(tokens=10, usd=0.75)
                with pytest.raises(treasurer.BudgetExceeded) as refused:
                    await sub.record(tokens=10, usd=0.5)
                assert (refused.value.cap, refused.value.child) == ("usd", None)
                assert sub.available == treasurer.Caps(tokens=90, usd=Decimal("0.25"))
            assert (parent.totals().tokens, parent.totals().usd) == (10, Decimal("0.75"))

    async def test_an_uncapped_child_cannot_overspend_a_parents_day_window(self) -> None:
        """A parent capped only by $1 a day: 250 records of $1 through an uncapped child
        admit $1 in all (not $250)."""
        clock = ManualClock(START)
        async with treasurer.open_budget(windows=[Window.day(usd=1)], clock=clock) as parent:
            async with parent.child() as sub:
                refusals: list[treasurer.BudgetExceeded] = []
                for _ in range(250):
                    try:
                        await sub.record(usd=1)
                    except treasurer.BudgetExceeded as refused:
                        refusals.append(refused)
                assert len(refusals) == 249
                assert {(e.window, e.cap) for e in refusals} == {("day", "usd")}
                assert not await sub.consume(usd=Decimal("0.01"))
                with pytest.raises(treasurer.BudgetExceeded):
                    async with sub.reserve(usd=Decimal("0.01")):
                        pass  # pragma: no cover
            day = parent.snapshot().window("day")
            assert day.used.usd == Decimal(1)
            clock.advance(days=1)
            await parent.record(usd=1)

    async def test_an_uncapped_child_of_a_tenant_cannot_pass_its_hourly_cap(self) -> None:
        """A tenant capped at 500 tokens an hour: 200 attempts of 100 tokens through an
        uncapped child of the tenant admit 500 (not 20,000)."""
        clock = ManualClock(START)
        async with treasurer.open_budget(
            clock=clock, tenant_defaults=TenantCaps(windows=[Window.hour(tokens=500)])
        ) as budget:
            tenant = budget.tenant("a")
            async with tenant.child() as sub:
                admitted = 0
                for _ in range(200):
                    if await sub.consume(100):
                        admitted += 100
                assert admitted == 500
                with pytest.raises(treasurer.BudgetExceeded) as refused:
                    await sub.record(tokens=1)
                assert (refused.value.tenant, refused.value.window) == ("a", "hour")
            assert tenant.snapshot().window("hour").used.tokens == 500
            assert budget.totals().tokens == 500

    async def test_a_childs_requests_must_fit_its_parents_caps(self) -> None:
        """Concurrent tasks in two uncapped children never pass the parent's cap."""
        async with treasurer.open_budget(tokens=1000) as parent:
            admitted: list[int] = []

            async def worker(sub: treasurer.Budget) -> None:
                for _ in range(50):
                    if await sub.consume(30):
                        admitted.append(30)
                    await anyio.lowlevel.checkpoint()

            async with parent.child() as a, parent.child() as b:
                async with anyio.create_task_group() as tg:
                    for sub in (a, b, a, b):
                        tg.start_soon(worker, sub)
            assert sum(admitted) == parent.totals().tokens == 990


class TestEvents:
    async def test_events_name_the_child_they_happened_in(self) -> None:
        """The parent's listeners get the child's events with ``child`` set to its name."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(
            tokens=10_000, thresholds=[50], on_event=events.append
        ) as parent:
            async with parent.subscribe() as subscription:
                async with parent.child(tokens=100, name="research") as sub:
                    async with sub.reserve(tokens=60, model="m") as r:
                        r.commit()
                seen = subscription.pending()
        assert [(type(e).__name__, e.child) for e in seen] == [
            ("ReservationCreated", "research"),
            ("UsageRecorded", "research"),
            ("ThresholdCrossed", "research"),
            ("ReservationCommitted", "research"),
        ]
        assert [(type(e).__name__, e.child) for e in events] == [
            (type(e).__name__, e.child) for e in seen
        ]
        crossed = next(e for e in seen if isinstance(e, treasurer.ThresholdCrossed))
        assert "child 'research'" in crossed.message

    async def test_a_childs_subscription_gets_only_its_own_events(self) -> None:
        """A subscription on a child budget sees that child's events only."""
        async with treasurer.open_budget(tokens=1000) as parent:
            async with parent.child(name="a") as a, parent.child(name="b") as b:
                async with a.subscribe() as mine:
                    await a.record(tokens=1)
                    await b.record(tokens=2)
                    await parent.record(tokens=3)
                    seen = mine.pending()
        assert [(type(e).__name__, e.child) for e in seen] == [("UsageRecorded", "a")]


class CancelledChildren:
    """Runs trials of a child (or grandchild) budget cancelled from outside while its
    task holds a reservation, and adds up what the tasks committed."""

    def __init__(self, parent: treasurer.Budget, *, grandchild: bool, spend: int) -> None:
        self.parent = parent
        self.grandchild = grandchild
        self.spend = spend
        self.committed = 0
        self.cut_mid_call = 0

    async def trial(self, scope: anyio.CancelScope) -> None:
        with scope:
            async with self.parent.child(tokens=1_000) as child:
                if self.grandchild:
                    async with child.child(tokens=500) as leaf:
                        await self.call(leaf)
                else:
                    await self.call(child)

    async def call(self, budget: treasurer.Budget) -> None:
        async with budget.reserve(tokens=100) as r:
            try:
                await anyio.sleep(1)  # the LLM call, cut off
            finally:
                self.cut_mid_call += 1
                if self.spend:
                    r.commit(tokens=self.spend)
                    self.committed += self.spend

    async def after_ms(self) -> None:
        """``move_on_after(0.01)`` around the child, as a sub-agent's timeout would."""
        scope = anyio.move_on_after(0.01)
        await self.trial(scope)

    async def after_checkpoints(self, checkpoints: int) -> None:
        """Cancelled from another task after ``checkpoints`` turns of the event loop, so
        trials land at every await point of opening, reserving and calling."""
        scope = anyio.CancelScope()

        async def canceller() -> None:
            for _ in range(checkpoints):
                await anyio.lowlevel.checkpoint()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(canceller)
            await self.trial(scope)


@BOTH_LOOPS_FAST
class TestCancelledFromOutside:
    @pytest.mark.parametrize("grandchild", [False, True], ids=["child", "grandchild"])
    @pytest.mark.parametrize("spend", [0, 150], ids=["released", "committed-above-estimate"])
    async def test_a_timed_out_child_loses_nothing(self, grandchild: bool, spend: int) -> None:
        """200 times: a child of 1,000 under a 10,000 parent, its task reserving 100 and
        cut off (mid-call, mostly) by move_on_after(0.01). The release of the block, or
        the commit made in a ``finally``, reaches the parent's books every time."""
        trials = 200
        async with treasurer.open_budget(tokens=10_000 + trials * spend) as parent:
            runs = CancelledChildren(parent, grandchild=grandchild, spend=spend)
            for _ in range(trials):
                await runs.after_ms()
            # Most trials reach the call before the timeout (a stalled machine can cut
            # a few earlier, which is also a case whose books must balance).
            assert runs.cut_mid_call >= trials // 2
            snap = parent.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved) == (runs.committed, 0)
            assert snap.open_reservations == 0
            assert snap.calls == (runs.cut_mid_call if spend else 0)

    @pytest.mark.parametrize("grandchild", [False, True], ids=["child", "grandchild"])
    async def test_cancelled_at_every_await_point_loses_nothing(self, grandchild: bool) -> None:
        """Cancelled after 0, 1, 2, ... turns of the event loop, 200 trials in all: whatever
        was committed is in the parent's books, and nothing stays reserved."""
        async with treasurer.open_budget(tokens=10**6) as parent:
            runs = CancelledChildren(parent, grandchild=grandchild, spend=150)
            for trial in range(200):
                await runs.after_checkpoints(trial % 40)
            assert 0 < runs.cut_mid_call < 200  # some were cut before the call began
            snap = parent.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved) == (runs.committed, 0)
            assert snap.open_reservations == 0


class TestSyncChildren:
    def test_child_from_threads(self) -> None:
        """The sync facade opens children too, from many threads at once."""
        import threading

        import treasurer.sync

        with treasurer.sync.open_budget(tokens=1_000) as parent:
            spent: list[int] = []

            def worker(n: int) -> None:
                with parent.child(tokens=200, name=f"w{n}") as sub:
                    assert isinstance(sub, treasurer.sync.SyncBudget)
                    assert sub.name == f"w{n}"
                    with sub.reserve(tokens=150) as r:
                        r.commit(tokens=100)
                    spent.append(100)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert spent == [100] * 4
            assert parent.totals().tokens == 400
            assert parent.snapshot().tokens_reserved == 0
            with pytest.raises(treasurer.BudgetExceeded), parent.child(tokens=601):
                pass  # pragma: no cover

    async def test_not_on_a_view(self) -> None:
        """A sync_view cannot open children (it has no task to hold them open)."""
        async with treasurer.open_budget(tokens=100) as budget:
            view = budget.sync_view()

            def open_child() -> None:
                with view.child(tokens=10):
                    pass  # pragma: no cover

            with pytest.raises(treasurer.TreasurerError, match="sync_view"):
                await anyio.to_thread.run_sync(open_child)
