"""Child budgets: carved out of a parent, returning what they did not use."""

from __future__ import annotations

from decimal import Decimal

import anyio
import pytest

import treasurer

pytestmark = pytest.mark.anyio


class TestChildren:
    async def test_carves_and_returns_the_rest(self) -> None:
        """Opening a child holds its caps in the parent; closing commits only what it used."""
        async with treasurer.open_budget(tokens=100_000, usd=2) as parent:
            async with parent.child(tokens=20_000, usd=0.5, name="research") as sub:
                assert sub.name == "research"
                held = parent.snapshot()
                assert (held.tokens_reserved, held.usd_reserved) == (20_000, Decimal("0.5"))
                async with sub.reserve(tokens=5_000, usd=0.1) as r:
                    r.commit(tokens=4_000, usd=Decimal("0.08"))
                await sub.record(tokens=1_000, usd=0.02)
                with pytest.raises(treasurer.BudgetExceeded):
                    await sub.record(tokens=16_000)  # the child's own cap
            snap = parent.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved) == (5_000, 0)
            assert snap.usd_used == Decimal("0.1")
            assert snap.calls == 1
            assert sub.closed

    async def test_a_reservation_outliving_the_child_counts_as_spent(self) -> None:
        """A task that still holds a reservation (or a grandchild) when the child
        closes can no longer report its spend, so the parent counts it all."""
        async with treasurer.open_budget(tokens=1000) as parent:
            held = anyio.Event()
            leave = anyio.Event()
            outcome: list[BaseException] = []

            async def straggler(sub: treasurer.Budget) -> None:
                try:
                    async with sub.reserve(tokens=300) as r:
                        held.set()
                        await leave.wait()
                        r.commit(tokens=10)
                except treasurer.BudgetClosed as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                async with parent.child(tokens=500) as sub:
                    await sub.record(tokens=50)
                    tg.start_soon(straggler, sub)
                    await held.wait()
                assert parent.snapshot().tokens_used == 350
                assert parent.remaining == 650
                leave.set()
            assert len(outcome) == 1
            assert parent.totals().tokens == 350

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

    async def test_must_cap_what_the_parent_caps(self) -> None:
        """A child that leaves uncapped an axis its parent caps is refused."""
        async with treasurer.open_budget(tokens=100, usd=1) as parent:
            with pytest.raises(treasurer.InvalidOption, match="must cap usd"):
                async with parent.child(tokens=10):
                    pass  # pragma: no cover
            with pytest.raises(treasurer.InvalidOption):
                async with parent.child(tokens=10, usd=1, wait="yes"):  # type: ignore[arg-type]
                    pass  # pragma: no cover
            with pytest.raises(treasurer.InvalidAmount):
                async with parent.child(tokens=-1, usd=1):
                    pass  # pragma: no cover


class TestSyncChildren:
    def test_child_from_threads(self) -> None:
        """The sync facade opens children too; a view refuses with a clear error."""
        import threading

        import treasurer.sync

        with treasurer.sync.open_budget(tokens=1_000) as parent:
            spent: list[int] = []

            def worker(n: int) -> None:
                with parent.child(tokens=200, name=f"w{n}") as sub:
                    assert isinstance(sub, treasurer.sync.SyncBudget)
                    with sub.reserve(tokens=150) as r:
                        r.commit(tokens=100)
                    spent.append(100)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
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
