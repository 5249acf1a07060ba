"""reserve(wait=True): first come, first served, cancellable, never leaking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest
import trio.testing
from anyio import wait_all_tasks_blocked

import treasurer
import treasurer.sync
from treasurer import Window

pytestmark = pytest.mark.anyio


class Queue:
    """Starts waiting reservations one by one, so their arrival order is exact."""

    def __init__(self, budget: treasurer.Budget, tg: anyio.abc.TaskGroup) -> None:
        self.budget = budget
        self.tg = tg
        self._granted: list[tuple[int, str]] = []
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.release: dict[str, anyio.Event] = {}

    @property
    def granted(self) -> list[str]:
        """Names in grant order (reservation ids are given out in that order; tasks
        granted in one batch may resume in any order)."""
        return [name for _, name in sorted(self._granted)]

    async def reset(self) -> None:
        """Zero the budget's usage and let every waiter that now fits run."""
        await self.budget.reset()
        await wait_all_tasks_blocked()

    def release_all(self) -> None:
        """Let every granted waiter commit and leave."""
        for event in self.release.values():
            event.set()

    async def start(self, name: str, tokens: int) -> None:
        scope = self.scopes[name] = anyio.CancelScope()
        done = self.release[name] = anyio.Event()

        async def waiter() -> None:
            with scope:
                async with self.budget.reserve(tokens=tokens, wait=True) as r:
                    self._granted.append((r.id, name))
                    await done.wait()
                    r.commit(tokens=tokens)

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
                with pytest.raises(treasurer.RequestTooLarge):
                    async with budget.reserve(tokens=150, wait=True):
                        pass  # pragma: no cover
                await queue.start("c", 50)
                assert budget.statistics().reservations_waiting == 2
                queue.scopes["holder"].cancel()
                await wait_all_tasks_blocked()
                assert queue.granted == ["holder", "b", "c"]
                queue.release_all()

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
                queue.release["holder"].set()  # commits 100: nothing freed
                await wait_all_tasks_blocked()
                assert queue.granted == ["holder"]
                await budget.reset()  # usage zeroed: 100 free
                await wait_all_tasks_blocked()
                assert queue.granted == ["holder", "b", "c"]  # 90; d (50) waits
                queue.release["b"].set()
                await wait_all_tasks_blocked()
                assert queue.granted == ["holder", "b", "c"]  # b committed 60: still full
                await queue.reset()
                assert queue.granted == ["holder", "b", "c", "d"]
                queue.release_all()
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
                await queue.reset()
                assert queue.granted == ["holder"]
                queue.release["holder"].set()  # commit 60 then reset: 100 free
                await wait_all_tasks_blocked()
                await queue.reset()
                assert queue.granted == ["holder", "large", "small"]
                queue.release_all()

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
                await budget.reset()
                queue.release["holder"].set()
                await wait_all_tasks_blocked()
                await queue.reset()
                assert queue.granted == ["holder", "b", "d"]
                queue.release_all()
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
                queue.release_all()

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
        """A reservation that expires makes room for a waiter."""
        now = [datetime(2026, 11, 22, 10, tzinfo=UTC)]
        async with treasurer.open_budget(tokens=10, clock=lambda: now[0]) as budget:
            holder = await budget.reserve(tokens=10, ttl=timedelta(seconds=30)).__aenter__()
            granted = anyio.Event()

            async def waiter() -> None:
                async with budget.reserve(tokens=10, wait=True) as r:
                    granted.set()
                    r.commit(tokens=1)

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await wait_all_tasks_blocked()
                now[0] += timedelta(seconds=30)
                await budget.check()  # any call lets the actor see the time
                with anyio.fail_after(1):
                    await granted.wait()
            holder.release()

    @pytest.mark.parametrize(
        "anyio_backend",
        [
            pytest.param(
                ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio"
            )
        ],
    )
    async def test_window_rollover_wakes_waiters(self) -> None:
        """On trio's virtual clock: a waiter is granted when the hour rolls over, unprompted."""
        base = datetime(2026, 11, 22, 10, 59, tzinfo=UTC) - timedelta(seconds=anyio.current_time())
        clock = lambda: base + timedelta(seconds=anyio.current_time())  # noqa: E731
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

            import threading

            thread = threading.Thread(target=waiter)
            thread.start()
            thread.join(0.05)
            assert got == []
            holder.__exit__(None, None, None)
            thread.join(5)
            assert got == [10]
