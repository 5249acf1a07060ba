"""reserve(wait=True): first come, first served, cancellable, never leaking."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import anyio
import anyio.abc
import anyio.from_thread
import pytest
from anyio import wait_all_tasks_blocked

import treasurer
import treasurer.sync
import treasurer.testing
from api_support import ON_TRIO_VIRTUAL_TIME, loop_clock
from treasurer import Window

pytestmark = pytest.mark.anyio


class Queue:
    """Starts waiting reservations one by one, so their arrival order is exact.

    A granted waiter holds its reservation until :meth:`leave` lets it go: it
    leaves without committing, so its room comes back (usage that was spent
    would not: it would make a waiter that cannot fit under the lifetime cap
    fail at once).
    """

    def __init__(self, budget: treasurer.Budget, tg: anyio.abc.TaskGroup) -> None:
        self.budget = budget
        self.tg = tg
        self.grants: list[tuple[int, str]] = []
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.done: dict[str, anyio.Event] = {}

    @property
    def granted(self) -> list[str]:
        """Names in grant order (reservation ids are given out in that order; tasks
        granted in one batch may resume in any order)."""
        return [name for _, name in sorted(self.grants)]

    async def leave(self, *names: str) -> None:
        """Let granted waiters release their reservations, and the queue move."""
        for name in names:
            self.done[name].set()
        await wait_all_tasks_blocked()

    def leave_all(self) -> None:
        for event in self.done.values():
            event.set()

    async def start(self, name: str, tokens: int) -> None:
        scope = self.scopes[name] = anyio.CancelScope()
        done = self.done[name] = anyio.Event()

        async def waiter() -> None:
            with scope:
                async with self.budget.reserve(tokens=tokens, wait=True) as r:
                    self.grants.append((r.id, name))
                    await done.wait()

        self.tg.start_soon(waiter)
        await wait_all_tasks_blocked()


class TestFirstComeFirstServed:
    async def test_too_large_behind_other_waiters_raises_at_once(self) -> None:
        """A request that can never fit is answered at once, even with a queue, and
        does not block the waiters behind it."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with anyio.create_task_group() as tg:
                queue = Queue(budget, tg)
                await queue.start("holder", 100)
                await queue.start("b", 50)
                with anyio.fail_after(5), pytest.raises(treasurer.RequestTooLarge):
                    async with budget.reserve(tokens=150, wait=True):
                        pass  # pragma: no cover
                await queue.start("c", 50)
                assert budget.statistics().reservations_waiting == 2
                queue.scopes["holder"].cancel()
                await wait_all_tasks_blocked()
                assert queue.granted == ["holder", "b", "c"]
                queue.leave_all()

    async def test_waiters_are_granted_in_arrival_order(self) -> None:
        """Released room goes to waiters in the order they came, as far as it reaches."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with anyio.create_task_group() as tg:
                queue = Queue(budget, tg)
                await queue.start("holder", 100)
                for name, tokens in [("b", 60), ("c", 30), ("d", 50)]:
                    await queue.start(name, tokens)
                assert queue.granted == ["holder"]
                assert budget.statistics().reservations_waiting == 3
                await queue.leave("holder")  # 100 free
                assert queue.granted == ["holder", "b", "c"]  # 90; d (50) waits
                assert budget.statistics().reservations_waiting == 1
                await queue.leave("c")  # 40 free: d still waits
                assert queue.granted == ["holder", "b", "c"]
                await queue.leave("b")
                assert queue.granted == ["holder", "b", "c", "d"]
                queue.leave_all()
            assert budget.statistics().reservations_waiting == 0
            assert budget.snapshot().open_reservations == 0

    async def test_a_large_head_is_not_overtaken(self) -> None:
        """Small waiters behind a large one wait with it, so it is never starved."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with anyio.create_task_group() as tg:
                queue = Queue(budget, tg)
                await queue.start("holder", 60)
                await queue.start("large", 80)
                await queue.start("small", 10)  # would fit now, but arrived later
                assert queue.granted == ["holder"]
                await budget.record(tokens=0)  # another batch: still nothing for small
                await wait_all_tasks_blocked()
                assert queue.granted == ["holder"]
                await queue.leave("holder")  # 100 free
                assert queue.granted == ["holder", "large", "small"]
                queue.leave_all()

    async def test_fits_at_once(self) -> None:
        """A waiting reservation that fits is granted at once."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with budget.reserve(tokens=100, wait=True) as r:
                assert r.amount.tokens == 100

    async def test_never_fits_raises_at_once(self) -> None:
        """A request larger than a cap raises instead of waiting forever."""
        async with treasurer.open_budget(tokens=100, per_request={"usd": 1}) as budget:
            with anyio.fail_after(1):
                with pytest.raises(treasurer.RequestTooLarge):
                    async with budget.reserve(tokens=101, wait=True):
                        pass  # pragma: no cover
                with pytest.raises(treasurer.RequestTooLarge, match="per-request"):
                    async with budget.reserve(usd=2, wait=True):
                        pass  # pragma: no cover
            with pytest.raises(treasurer.InvalidOption):
                budget.reserve(tokens=1, wait=1)  # type: ignore[arg-type]


class TestSpentUsage:
    async def test_a_request_spent_usage_leaves_no_room_for_fails_at_once(self) -> None:
        """With 95 of a 100-token lifetime cap spent, reserve(tokens=10, wait=True)
        raises BudgetExceeded (not RequestTooLarge) at once: no release can make room."""
        async with treasurer.open_budget(tokens=100) as budget:
            await budget.record(tokens=95)
            with anyio.fail_after(5), pytest.raises(treasurer.BudgetExceeded) as caught:
                async with budget.reserve(tokens=10, wait=True):
                    pass  # pragma: no cover
            assert type(caught.value) is treasurer.BudgetExceeded
            assert (caught.value.cap, caught.value.used, caught.value.available) == (
                "tokens",
                95,
                5,
            )
            assert budget.statistics().reservations_waiting == 0
            async with budget.reserve(tokens=5, wait=True) as r:
                r.commit()

    async def test_a_waiter_is_answered_once_spent_usage_leaves_it_no_room(self) -> None:
        """A waiter queued behind a holder fails at once with BudgetExceeded when the
        holder commits what it held: the room it waited for was spent."""
        async with treasurer.open_budget(tokens=100) as budget:
            holder = await budget.reserve(tokens=100).__aenter__()
            outcome: list[BaseException] = []

            async def waiter() -> None:
                try:
                    async with budget.reserve(tokens=10, wait=True):
                        pytest.fail("must not be granted")  # pragma: no cover
                except treasurer.BudgetExceeded as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await wait_all_tasks_blocked()
                assert budget.statistics().reservations_waiting == 1
                holder.commit()  # its 100 tokens are spent for good
                await wait_all_tasks_blocked()
            assert [type(e) for e in outcome] == [treasurer.BudgetExceeded]
            assert budget.statistics().reservations_waiting == 0

    async def test_spending_while_held_up_is_seen_when_the_waiter_reaches_the_head(
        self,
    ) -> None:
        """Usage spent while a waiter was held up behind another can leave it no room
        for good; when the one ahead gives up, it fails at once instead of waiting on.
        (Found by the conformance machine: serving skipped a waiter whose scope had
        not freed room since it was last looked at, though its spent usage had grown.)"""
        async with treasurer.open_budget(tokens=8) as budget:
            await budget.record(tokens=4)
            holder = await budget.reserve(tokens=3).__aenter__()
            outcome: list[BaseException] = []

            async def waiter() -> None:
                try:
                    async with budget.reserve(tokens=3, wait=True):
                        pytest.fail("must not be granted")  # pragma: no cover
                except treasurer.BudgetExceeded as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                queue = Queue(budget, tg)
                await queue.start("head", 2)  # 4 + 3 + 2 > 8: waits
                tg.start_soon(waiter)  # held up behind the head
                await wait_all_tasks_blocked()
                await budget.charge(tokens=2)  # 6 spent: 6 + 3 > 8 for good
                await wait_all_tasks_blocked()
                assert budget.statistics().reservations_waiting == 2
                queue.scopes["head"].cancel()
                await wait_all_tasks_blocked()
                assert [type(e) for e in outcome] == [treasurer.BudgetExceeded]
                assert budget.statistics().reservations_waiting == 0
                holder.release()


class TestCancellation:
    async def test_cancel_a_waiter_in_the_middle(self) -> None:
        """A waiter cancelled mid-queue is removed; the others keep their order; nothing leaks."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with anyio.create_task_group() as tg:
                queue = Queue(budget, tg)
                await queue.start("holder", 100)
                for name in "bcd":
                    await queue.start(name, 40)
                queue.scopes["c"].cancel()
                await wait_all_tasks_blocked()
                assert budget.statistics().tasks_waiting == 2
                assert budget.statistics().reservations_waiting == 2
                await queue.leave("holder")
                assert queue.granted == ["holder", "b", "d"]
                queue.leave_all()
            assert queue.scopes["c"].cancelled_caught
            snap = budget.snapshot()
            assert (snap.open_reservations, snap.tokens_reserved) == (0, 0)
            assert budget.statistics().reservations_waiting == 0

    async def test_a_cancelled_head_lets_the_queue_move(self) -> None:
        """When the head gives up, a waiter behind it that fits is granted at once."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with anyio.create_task_group() as tg:
                queue = Queue(budget, tg)
                await queue.start("holder", 50)
                await queue.start("large", 80)
                await queue.start("small", 40)
                queue.scopes["large"].cancel()
                await wait_all_tasks_blocked()
                assert queue.granted == ["holder", "small"]
                queue.leave_all()

    async def test_timeout(self) -> None:
        """fail_after bounds the wait; the timed-out waiter leaves nothing behind."""
        async with treasurer.open_budget(tokens=10) as budget:
            async with budget.reserve(tokens=10):
                with pytest.raises(TimeoutError):
                    with anyio.fail_after(0.01):
                        async with budget.reserve(tokens=5, wait=True):
                            pass  # pragma: no cover
                await wait_all_tasks_blocked()
                assert budget.snapshot().tokens_reserved == 10
                assert budget.statistics().reservations_waiting == 0
                assert budget.statistics().tasks_waiting == 0

    async def test_closing_fails_every_waiter(self) -> None:
        """Waiters still queued when the budget closes get BudgetClosed at once."""
        errors: list[BaseException] = []
        async with anyio.create_task_group() as outer:
            async with treasurer.open_budget(tokens=10) as budget:
                holder = await budget.reserve(tokens=10).__aenter__()

                async def waiter() -> None:
                    try:
                        async with budget.reserve(tokens=5, wait=True):
                            pass  # pragma: no cover
                    except treasurer.BudgetClosed as exc:
                        errors.append(exc)

                for _ in range(3):
                    outer.start_soon(waiter)
                await wait_all_tasks_blocked()
                assert budget.statistics().reservations_waiting == 3
        assert len(errors) == 3
        holder.release()


class TestWaitingForTime:
    async def test_expiry_of_a_holder_frees_room(self) -> None:
        """A reservation that expires makes room for a waiter, with nobody calling."""
        clock = treasurer.testing.ManualClock(datetime(2026, 11, 22, 10, tzinfo=UTC))
        async with treasurer.open_budget(tokens=10, clock=clock) as budget:
            holder = await budget.reserve(tokens=10, ttl=timedelta(seconds=30)).__aenter__()
            granted = anyio.Event()

            async def waiter() -> None:
                async with budget.reserve(tokens=10, wait=True) as r:
                    granted.set()
                    r.commit(tokens=1)

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await wait_all_tasks_blocked()
                clock.advance(seconds=29)
                await wait_all_tasks_blocked()
                assert not granted.is_set()
                clock.advance(seconds=1)  # wakes the budget: the holder expires
                with anyio.fail_after(1):
                    await granted.wait()
            with pytest.raises(treasurer.ReservationExpired):
                holder.commit(tokens=0)

    @ON_TRIO_VIRTUAL_TIME
    async def test_window_rollover_wakes_waiters(self) -> None:
        """On trio's virtual clock: a waiter is granted when the hour rolls over, unprompted."""
        clock = loop_clock(datetime(2026, 11, 22, 10, 59, tzinfo=UTC))
        async with treasurer.open_budget(windows=[Window.hour(tokens=100)], clock=clock) as budget:
            await budget.record(tokens=100)
            async with budget.reserve(tokens=60, wait=True):
                now = clock()
            assert now == datetime(2026, 11, 22, 11, tzinfo=UTC)


class TestSyncWaiting:
    def test_a_thread_waits_for_room(self) -> None:
        """From a thread, wait=True blocks until another thread releases."""
        with treasurer.sync.open_budget(tokens=10) as budget:
            holder = budget.reserve(tokens=10).__enter__()
            got: list[int] = []

            def waiter() -> None:
                with budget.reserve(tokens=10, wait=True) as r:
                    got.append(r.amount.tokens)

            thread = threading.Thread(target=waiter)
            thread.start()
            with anyio.from_thread.start_blocking_portal() as portal:
                portal.call(wait_for_a_waiter, budget)
            assert got == []
            holder.__exit__(None, None, None)
            thread.join(5)
            assert got == [10]

    def test_a_thread_waits_at_most_its_timeout(self) -> None:
        """reserve(wait=True, timeout=...) raises TimeoutError and leaves nothing waiting."""
        with treasurer.sync.open_budget(tokens=10) as budget:
            with budget.reserve(tokens=10):
                with pytest.raises(TimeoutError):
                    with budget.reserve(tokens=5, wait=True, timeout=0.05):
                        pass  # pragma: no cover
                assert budget.snapshot().tokens_reserved == 10
            assert budget.snapshot().open_reservations == 0
            with pytest.raises(treasurer.InvalidOption):
                budget.reserve(tokens=1, wait=True, timeout=0)


async def wait_for_a_waiter(budget: treasurer.sync.SyncBudget) -> None:
    """Until the budget has one reservation queued (the thread is blocked in it)."""
    with anyio.fail_after(5):
        # The thread's request reaches the budget's own loop; nothing here can signal it.
        while budget.statistics().reservations_waiting != 1:  # noqa: ASYNC110
            await anyio.sleep(0.001)
