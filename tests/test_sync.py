"""The thread-safe facade: the same guarantees from threads, on either event loop."""

from __future__ import annotations

import _thread
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import pytest

import treasurer
import treasurer.sync
from store_probes import ProbeStore
from treasurer._core.commands import Commit, Reserve

THREADS = 1_000


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The event loop the facade runs its actor on."""
    return str(request.param)


def facade_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("treasurer ")]


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """The facade's event loop threads are all gone after the test."""
    assert facade_threads() == []
    yield
    assert facade_threads() == []


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` (read from another thread) until it holds, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


class TestFacade:
    def test_seed_examples(self, backend: str, no_thread_leak: None) -> None:
        """The pool examples give the same exact figures from synchronous code."""
        with treasurer.sync.open_budget(tokens=1_000_000, usd=10.0, backend=backend) as pool:
            totals = pool.record(tokens=1200, usd=0.0036)
            assert totals.tokens == 1200
            assert pool.snapshot().tokens_remaining == 998800
            assert pool.snapshot().usd_remaining == Decimal("9.9964")
            with pool.reserve(tokens=2000, usd=0.012) as r:
                assert pool.snapshot().tokens_reserved == 2000
                r.commit(tokens=1500, usd=0.01)
            assert r.settled
            assert pool.totals().tokens == 2700
            pool.reset()
            assert pool.totals().tokens == 0
            assert pool.statistics().open_reservations == 0
            assert pool.caps.tokens == 1_000_000
            assert "open" in repr(pool)
            assert pool.name.startswith("budget-")
        assert pool.closed
        assert "closed" in repr(pool)

    def test_five_threads_consume_300_of_1000(self, backend: str) -> None:
        """Five threads racing for 300 of 1000: exactly three win; refunds leave 550."""
        outcomes: list[bool] = []
        all_in_flight = threading.Barrier(5)  # as the calls' latency does in the async version
        with treasurer.sync.open_budget(max_tokens=1000, backend=backend) as budget:

            def call() -> None:
                ok = budget.consume(300)
                outcomes.append(ok)
                all_in_flight.wait()
                if ok:
                    budget.refund(150, 300)

            threads = [threading.Thread(target=call) for _ in range(5)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(outcomes) == [False, False, True, True, True]
            assert budget.remaining == 550

    def test_errors_cross_threads_typed(self, backend: str) -> None:
        """Refusals and bad input raise the same typed errors in the calling thread."""
        with treasurer.sync.open_budget(input_tokens=10_000, usd=1.0, backend=backend) as pool:
            pool.record(input_tokens=1000, usd=0.05)
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                pool.record(input_tokens=9_500)
            assert caught.value.cap == "input_tokens"
            with pytest.raises(treasurer.InvalidAmount):
                pool.reserve(tokens=-1)  # validated in this thread, before any hop
            with pytest.raises(treasurer.UnknownAxis):
                pool.consume(tokenz=1)  # type: ignore[call-arg]
            with pool.reserve(input_tokens=10) as r:
                r.commit(input_tokens=5)
                with pytest.raises(treasurer.AlreadySettled):
                    r.commit(input_tokens=5)
                with pytest.raises(treasurer.AlreadySettled):
                    r.release()
            assert pool.totals().input_tokens == 1005

    def test_released_when_the_block_raises(self, backend: str) -> None:
        """An exception in a reservation block releases it and propagates."""
        with treasurer.sync.open_budget(tokens=100, backend=backend) as budget:
            with pytest.raises(ZeroDivisionError), budget.reserve(tokens=80) as r:
                assert r.amount.tokens == 80
                assert "SyncReservation" in repr(r)
                _ = 1 / 0
            assert budget.snapshot().tokens_reserved == 0
            with budget.reserve(tokens=80) as r:
                r.release()
            assert budget.remaining == 100


class TestManyThreads:
    def test_a_thousand_threads_never_overspend(self, backend: str, no_thread_leak: None) -> None:
        """1,000 threads reserving, committing, releasing and failing: no overspend, no leak."""
        store = ProbeStore()  # checks after every batch that no cap is passed
        committed: list[int] = []
        refused: list[int] = []
        start = threading.Barrier(THREADS)
        with treasurer.sync.open_budget(
            tokens=20_000, requests=1_500, backend=backend, store=store
        ) as budget:

            def worker(seed: int) -> None:
                rng = random.Random(seed)
                start.wait()
                for _ in range(3):
                    estimate = rng.randint(1, 60)
                    try:
                        with budget.reserve(tokens=estimate) as r:
                            fate = rng.random()
                            if fate < 0.15:
                                raise LookupError("provider error")
                            if fate < 0.3:
                                continue  # leave without commit: released
                            actual = rng.randint(0, estimate)
                            r.commit(tokens=actual)
                            committed.append(actual)
                    except treasurer.BudgetExceeded:
                        refused.append(estimate)
                    except LookupError:
                        pass

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            snap = budget.snapshot()
        assert store.violations == []
        assert len(store.batches) > 1
        assert snap.open_reservations == 0
        assert snap.tokens_reserved == 0
        assert snap.tokens_used == sum(committed)
        assert snap.requests_used == len(committed)
        assert refused, "the caps were meant to refuse some requests"

    def test_thread_pool_runs_ten_thousand_calls(self, backend: str) -> None:
        """A ThreadPoolExecutor runs 10,000 simulated calls; the books balance exactly."""
        with treasurer.sync.open_budget(tokens=400_000, usd=2, backend=backend) as budget:

            def call(i: int) -> tuple[bool, int, Decimal]:
                estimate = 20 + i % 50
                try:
                    with budget.reserve(tokens=estimate, usd=Decimal(estimate) / 100_000) as r:
                        actual = estimate - i % 7
                        cost = Decimal(actual) / 100_000
                        r.commit(tokens=actual, usd=cost)
                        return True, actual, cost
                except treasurer.BudgetExceeded:
                    return False, 0, Decimal(0)

            with ThreadPoolExecutor(max_workers=32) as pool:
                results = list(pool.map(call, range(10_000)))
            snap = budget.snapshot()
        admitted = [r for r in results if r[0]]
        assert snap.open_reservations == 0
        assert snap.tokens_used == sum(r[1] for r in admitted)
        assert snap.usd_used == sum(r[2] for r in admitted)
        assert snap.calls == len(admitted)
        assert snap.tokens_used <= 400_000
        assert snap.usd_used <= 2


class TestLifecycle:
    def test_use_after_close(self, backend: str) -> None:
        """After close every call raises BudgetClosed at once; reads still work."""
        budget = treasurer.sync.open_budget(tokens=100, backend=backend)
        budget.record(tokens=10)
        reservation = budget.reserve(tokens=5)
        budget.close()
        budget.close()  # idempotent
        for call in (
            lambda: budget.consume(1),
            lambda: budget.record(tokens=1),
            lambda: budget.refund(1, 2),
            budget.reset,
            reservation.__enter__,
        ):
            with pytest.raises(treasurer.BudgetClosed):
                call()
        assert budget.remaining == 90
        assert budget.closed

    def test_reservation_open_at_close(self, backend: str) -> None:
        """A reservation still open when the budget closes exits quietly; a commit
        that can no longer be recorded says so."""
        with treasurer.sync.open_budget(tokens=100, backend=backend) as budget:
            reservation = budget.reserve(tokens=5).__enter__()
            committed = budget.reserve(tokens=5).__enter__()
            committed.commit(tokens=4)  # held until its block ends, which is too late
        with pytest.raises(treasurer.BudgetClosed):
            reservation.commit(tokens=1)
        reservation.__exit__(None, None, None)
        with pytest.raises(treasurer.BudgetClosed):
            reservation.commit(tokens=1)
        with pytest.raises(treasurer.BudgetClosed):  # its usage could not be recorded
            committed.__exit__(None, None, None)

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"tokens": -1}, treasurer.InvalidAmount),
            ({"usd": "1"}, treasurer.InvalidAmountType),
            ({"token": 1}, treasurer.UnknownAxis),
            ({"backend": "curio"}, treasurer.InvalidOption),
        ],
        ids=repr,
    )
    def test_bad_arguments_raise_in_the_caller(
        self, kwargs: dict[str, object], error: type[Exception], no_thread_leak: None
    ) -> None:
        """Bad caps or options raise a typed error here and leave no thread behind."""
        with pytest.raises(error):
            treasurer.sync.open_budget(**kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize("other_loop", ["asyncio", "trio"])
    def test_calling_from_a_thread_running_an_event_loop_raises(
        self, backend: str, other_loop: str
    ) -> None:
        """A blocking call from a thread that runs an event loop (any loop, not only
        the budget's) raises at once: it would freeze that loop."""
        with treasurer.sync.open_budget(tokens=100, backend=backend) as budget:
            errors: list[BaseException] = []

            async def blocking_call_in_a_loop() -> None:
                for call in (lambda: budget.consume(1), budget.close):
                    try:
                        call()
                    except treasurer.LoopThreadError as exc:
                        errors.append(exc)

            thread = threading.Thread(
                target=anyio.run, args=(blocking_call_in_a_loop,), kwargs={"backend": other_loop}
            )
            thread.start()
            thread.join(30)
            assert len(errors) == 2
            assert all(isinstance(e, RuntimeError) for e in errors)
            assert budget.remaining == 100
            assert not budget.closed

    def test_close_answers_a_thread_waiting_for_room(
        self, backend: str, no_thread_leak: None
    ) -> None:
        """close() while another thread waits for room: that thread gets BudgetClosed
        and close() returns (the budget closes before the calls are drained)."""
        budget = treasurer.sync.open_budget(tokens=100, backend=backend)
        holder = budget.reserve(tokens=100).__enter__()
        outcome: list[BaseException] = []

        def wait_for_room() -> None:
            try:
                budget.reserve(tokens=50, wait=True).__enter__()
            except BaseException as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=wait_for_room)
        waiter.start()
        wait_until(lambda: budget.statistics().reservations_waiting == 1)
        closer = threading.Thread(target=budget.close)
        closer.start()
        closer.join(10)
        waiter.join(10)
        assert not closer.is_alive()
        assert not waiter.is_alive()
        assert [type(exc) for exc in outcome] == [treasurer.BudgetClosed]
        holder.__exit__(None, None, None)

    def test_an_interrupted_call_is_cancelled(self, backend: str) -> None:
        """KeyboardInterrupt while a thread waits for its call cancels the call on
        the loop: a waiting reservation leaves the queue and takes nothing."""
        main = threading.main_thread()
        assert threading.current_thread() is main
        # A process started in the background by a non-interactive shell (as some
        # CI runners start it) inherits SIGINT ignored: raise KeyboardInterrupt anyway.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with treasurer.sync.open_budget(tokens=100, backend=backend) as budget:
                holder = budget.reserve(tokens=100).__enter__()

                failures: list[BaseException] = []

                def interrupt_when_queued() -> None:
                    try:
                        wait_until(lambda: budget.statistics().reservations_waiting == 1)
                        assert main.ident is not None
                        signal.pthread_kill(main.ident, signal.SIGINT)
                    except BaseException as exc:  # seen by the test, not lost in a thread
                        failures.append(exc)

                interrupter = threading.Thread(target=interrupt_when_queued)
                interrupter.start()
                # The timeout turns an interrupt that never lands into a failure, not a hang.
                with pytest.raises(KeyboardInterrupt):
                    budget.reserve(tokens=50, wait=True, timeout=60).__enter__()
                interrupter.join()
                assert failures == []
                wait_until(lambda: budget.statistics().reservations_waiting == 0)
                holder.__exit__(None, None, None)
                assert budget.consume(100)
                snap = budget.snapshot()
                used = (snap.tokens_used, snap.tokens_reserved, snap.open_reservations)
                assert used == (100, 0, 0)
        finally:
            signal.signal(signal.SIGINT, previous)

    @pytest.mark.parametrize("backend_name", ["asyncio", "trio"])
    def test_interpreter_exit_without_close(self, backend_name: str) -> None:
        """A program that never closes its budget still exits promptly and cleanly."""
        program = textwrap.dedent(
            f"""
            import logging, structlog, treasurer.sync
            structlog.configure(
                wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
            budget = treasurer.sync.open_budget(tokens=100, backend={backend_name!r})
            assert budget.consume(40)
            held = budget.reserve(tokens=10).__enter__()  # even a reservation left open
            print("remaining", budget.remaining)
            """
        )
        done = subprocess.run(
            [sys.executable, "-X", "dev", "-c", program],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "remaining 50"
        assert "Traceback" not in done.stderr

    @pytest.mark.parametrize("backend_name", ["asyncio", "trio"])
    def test_exit_with_a_thread_waiting_for_room(self, backend_name: str) -> None:
        """A non-daemon thread blocked in reserve(wait=True) for room that never comes
        does not keep the program from exiting: the budget closes, the wait ends."""
        program = textwrap.dedent(
            f"""
            import threading, treasurer, treasurer.sync
            budget = treasurer.sync.open_budget(tokens=100, backend={backend_name!r})
            held = budget.reserve(tokens=100).__enter__()
            outcome = []
            def wait_for_room():
                try:
                    budget.reserve(tokens=50, wait=True).__enter__()
                except treasurer.BudgetClosed:
                    outcome.append("closed")
            waiter = threading.Thread(target=wait_for_room)  # not a daemon
            waiter.start()
            while budget.statistics().reservations_waiting != 1:
                pass
            print("waiting")
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "waiting"
        assert "Traceback" not in done.stderr

    def test_interrupts_anywhere_leave_nothing_open(self, backend: str) -> None:
        """Ctrl-C landing at any moment of reservations' enter, commit and exit
        leaves no reservation open and nothing reserved."""
        rng = random.Random(7)
        interrupted = 0
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with treasurer.sync.open_budget(tokens=10**9, backend=backend) as budget:
                for _ in range(150):
                    timer = threading.Timer(rng.uniform(0, 0.003), _thread.interrupt_main)
                    try:
                        timer.start()
                        for _ in range(30):
                            with budget.reserve(tokens=2) as r:
                                r.commit(tokens=1)
                        timer.join()
                        for _ in range(1_000):  # a pending interrupt lands in here
                            pass
                    except KeyboardInterrupt:
                        interrupted += 1
                        timer.join()
                wait_until(lambda: budget.snapshot().open_reservations == 0)
                snap = budget.snapshot()
                assert (snap.tokens_reserved, snap.open_reservations) == (0, 0)
                assert snap.tokens_used > 0
        finally:
            signal.signal(signal.SIGINT, previous)
        assert interrupted >= 140


class TestSyncView:
    @pytest.mark.anyio
    async def test_threads_and_tasks_share_one_actor(self) -> None:
        """Threads through a sync view and tasks on the loop draw on one budget, exactly."""
        spent: list[int] = []
        store = ProbeStore()
        async with treasurer.open_budget(tokens=30_000, store=store) as budget:
            view = budget.sync_view()

            def thread_worker(seed: int) -> None:
                rng = random.Random(seed)
                for _ in range(20):
                    try:
                        with view.reserve(tokens=rng.randint(1, 100)) as r:
                            actual = rng.randint(0, r.amount.tokens)
                            r.commit(tokens=actual)
                            spent.append(actual)
                    except treasurer.BudgetExceeded:
                        pass

            async def task_worker(seed: int) -> None:
                rng = random.Random(seed)
                for _ in range(20):
                    if await budget.consume(n := rng.randint(1, 100)):
                        spent.append(n)

            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(anyio.to_thread.run_sync, thread_worker, i)
                    tg.start_soon(task_worker, 1000 + i)
            snap = budget.snapshot()
            with pytest.raises(treasurer.LoopThreadError):
                view.consume(1)  # from the loop's own thread
            view.close()
            with pytest.raises(treasurer.BudgetClosed):
                await anyio.to_thread.run_sync(view.consume, 1)
        assert store.violations == []
        assert snap.open_reservations == 0
        assert snap.tokens_used == sum(spent)

    @pytest.mark.anyio
    async def test_view_after_the_loop_finished(self) -> None:
        """A view used after its budget closed raises BudgetClosed."""
        async with treasurer.open_budget(tokens=10) as budget:
            view = budget.sync_view()
        with pytest.raises(treasurer.BudgetClosed):
            await anyio.to_thread.run_sync(view.consume, 1)

    def test_view_needs_the_loop(self) -> None:
        """sync_view() from a thread other than the budget's loop is a clear error."""
        box: list[treasurer.Budget] = []
        opened, done = threading.Event(), threading.Event()

        async def keep() -> None:
            async with treasurer.open_budget(tokens=10) as budget:
                box.append(budget)
                opened.set()
                await anyio.to_thread.run_sync(done.wait)

        thread = threading.Thread(target=anyio.run, args=(keep,))
        thread.start()
        try:
            assert opened.wait(30)
            with pytest.raises(treasurer.LoopThreadError, match="event loop"):
                box[0].sync_view()
        finally:
            done.set()
            thread.join(30)


class TestCompat:
    def test_budget_pool_is_the_sync_facade(self, no_thread_leak: None) -> None:
        """compat.BudgetPool opens a SyncBudget with the pool's caps and the pool's API."""
        import treasurer.compat

        with treasurer.compat.BudgetPool(token_cap=1_000_000, usd_cap=10.0) as pool:
            assert isinstance(pool, treasurer.sync.SyncBudget)
            assert pool.caps == treasurer.Caps(tokens=1_000_000, usd=Decimal(10))
            pool.record(tokens=1200, usd=0.0036)
            assert pool.snapshot().tokens_remaining == 998800
            with pytest.raises(treasurer.compat.BudgetExceeded):
                pool.record(tokens=2_000_000)
        unbounded = treasurer.compat.BudgetPool()
        assert unbounded.caps == treasurer.Caps()
        unbounded.close()
        assert {"BudgetExceeded", "BudgetPool", "BudgetManager"} <= set(treasurer.compat.__all__)


class TestSyncCheckAndPerRequest:
    def test_check_and_per_request(self, backend: str) -> None:
        """check() and per-request caps work the same from threads."""
        with treasurer.sync.open_budget(
            tokens=100, per_request={"tokens": 50}, backend=backend
        ) as budget:
            assert budget.per_request.tokens == 50
            assert budget.check(tokens=50).fits
            result = budget.check(tokens=60)
            assert (result.fits, result.cap, result.window) == (False, "tokens", "request")
            with pytest.raises(treasurer.RequestTooLarge):
                budget.record(tokens=60)
        with pytest.raises(treasurer.UnknownAxis):
            treasurer.sync.open_budget(per_request={"token": 1})


class TestSyncCommit:
    """A commit is validated at once and sent with the block's end, in one hop."""

    def test_a_reservation_takes_two_batches(self, backend: str) -> None:
        """A reservation costs two trips to the actor: the reserve, and the commit
        sent with the block's end; the thread then reads its own writes."""
        store = ProbeStore()
        with treasurer.sync.open_budget(tokens=100, backend=backend, store=store) as budget:
            with budget.reserve(tokens=50) as r:
                r.commit(tokens=30)
                assert r.settled
            applied = [[type(c) for c in batch] for batch in store.batches if batch]
            assert applied == [[Reserve], [Commit]]
            assert budget.snapshot().tokens_used == 30  # read-your-writes once the block ends
            assert budget.snapshot().tokens_reserved == 0

    def test_a_thread_reads_its_own_settlements(self, backend: str) -> None:
        """Every settlement has been applied when the call that made it returns, so
        the thread's next read (which does not go to the actor) includes it."""
        with treasurer.sync.open_budget(tokens=100, backend=backend) as budget:
            with budget.reserve(tokens=50) as r:
                r.commit(tokens=30)
            assert (budget.snapshot().tokens_used, budget.snapshot().tokens_reserved) == (30, 0)
            with budget.reserve(tokens=50):
                pass
            assert budget.snapshot().tokens_reserved == 0
            r = budget.reserve(tokens=10).__enter__()
            r.release()
            assert budget.remaining == 70
            assert budget.consume(20)
            budget.refund(5, 20)
            assert budget.remaining == 65

    def test_bad_input_raises_at_once_and_changes_nothing(self, backend: str) -> None:
        with treasurer.sync.open_budget(tokens=100, backend=backend) as budget:
            with budget.reserve(tokens=50) as r:
                with pytest.raises(treasurer.InvalidAmount):
                    r.commit(tokens=-1)
                assert not r.settled
                r.commit(tokens=20)  # a valid commit after the refused one
                with pytest.raises(treasurer.AlreadySettled):
                    r.release()
            assert budget.totals().tokens == 20
            with budget.reserve(tokens=50) as r:
                with pytest.raises(treasurer.UnknownAxis):
                    r.commit(tokenz=1)  # type: ignore[call-arg]
            assert budget.snapshot().tokens_reserved == 0  # released, as nothing was committed
            assert budget.totals().tokens == 20

    def test_a_late_commit_raises_when_the_block_ends(self, backend: str) -> None:
        now = [datetime(2026, 11, 22, 10, tzinfo=UTC)]
        with treasurer.sync.open_budget(
            tokens=100, clock=lambda: now[0], reservation_ttl=timedelta(minutes=1), backend=backend
        ) as budget:
            with pytest.raises(treasurer.ReservationExpired), budget.reserve(tokens=50) as r:
                now[0] += timedelta(minutes=2)
                r.commit(tokens=30)  # validated; the deadline is judged with the commit
            assert budget.totals().tokens == 30  # recorded all the same
            assert budget.snapshot().tokens_reserved == 0

    def test_an_error_after_the_commit_keeps_it(self, backend: str) -> None:
        with treasurer.sync.open_budget(tokens=100, backend=backend) as budget:
            with pytest.raises(ZeroDivisionError), budget.reserve(tokens=50) as r:
                r.commit(tokens=30)
                _ = 1 / 0
            assert budget.totals().tokens == 30
            assert budget.snapshot().tokens_reserved == 0

    @pytest.mark.anyio
    async def test_commit_and_release_through_a_view(self) -> None:
        """The same two hops through a sync_view() of a budget on this loop."""
        async with treasurer.open_budget(tokens=100) as budget:
            view = budget.sync_view()

            def in_a_thread() -> None:
                with view.reserve(tokens=40) as r:
                    r.commit(tokens=25)
                with view.reserve(tokens=40) as r:
                    r.release()
                    with pytest.raises(treasurer.AlreadySettled):
                        r.commit(tokens=1)

            await anyio.to_thread.run_sync(in_a_thread)
            assert budget.totals().tokens == 25
            assert budget.snapshot().tokens_reserved == 0


class TestFacadeEdges:
    def test_refresh_health_and_events_after_close(self, backend: str) -> None:
        """refresh() and health() answer from threads; a subscription still hands
        out what it received after its budget closed."""
        budget = treasurer.sync.open_budget(tokens=100, backend=backend)
        with budget.subscribe() as events:
            budget.record(tokens=60, model="m")
            assert budget.refresh().tokens_used == 60
            health = budget.health()
            assert health
            assert health.store == "memory"
            budget.close()
            kinds = {type(e).__name__ for e in events.pending()}
            assert "UsageRecorded" in kinds
            assert events.pending() == []

    def test_opening_from_a_thread_running_an_event_loop(self) -> None:
        errors: list[BaseException] = []

        async def in_a_loop() -> None:
            try:
                treasurer.sync.open_budget(tokens=1)
            except treasurer.LoopThreadError as exc:
                errors.append(exc)

        anyio.run(in_a_loop)
        assert len(errors) == 1

    def test_a_store_that_fails_to_open(self, backend: str, no_thread_leak: None) -> None:
        """The store's error reaches the caller, and the budget's thread is gone."""

        class Unreachable(treasurer.MemoryStore):
            async def open(self, config: object, clock: object) -> object:  # type: ignore[override]
                raise treasurer.InvalidOption("no such store")

        with pytest.raises(treasurer.InvalidOption, match="no such store"):
            treasurer.sync.open_budget(tokens=1, backend=backend, store=Unreachable())


class TestDeferredInterrupts:
    """The hold-off of Ctrl-C that sync reservations use, with the handlers a
    program may have installed."""

    def test_a_held_interrupt_reaches_the_programs_own_handler_once(self) -> None:
        from treasurer._sync.interrupts import DeferredInterrupts

        calls: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
        try:
            with DeferredInterrupts() as held:
                _thread.interrupt_main()
                for _ in range(1_000):  # the interrupt is noted here, not delivered
                    pass
                assert held.pending
                assert calls == []
            assert calls == [signal.SIGINT]
        finally:
            signal.signal(signal.SIGINT, previous)

    def test_an_ignored_interrupt_stays_ignored(self) -> None:
        from treasurer._sync.interrupts import DeferredInterrupts

        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with DeferredInterrupts() as held:
                _thread.interrupt_main()
                for _ in range(1_000):
                    pass
                assert held.pending
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        finally:
            signal.signal(signal.SIGINT, previous)

    def test_a_held_interrupt_under_the_default_action_raises_keyboard_interrupt(
        self,
    ) -> None:
        """With SIGINT at its default action (no Python handler), the interrupt held
        off is raised as KeyboardInterrupt when the hold ends, and the action is
        restored."""
        from treasurer._sync.interrupts import DeferredInterrupts

        previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            with pytest.raises(KeyboardInterrupt), DeferredInterrupts() as held:
                _thread.interrupt_main()
                for _ in range(1_000):
                    pass
                assert held.pending
            assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
        finally:
            signal.signal(signal.SIGINT, previous)

    def test_budgets_left_open_are_closed_before_the_interpreter_exits(self) -> None:
        """The hook run before the interpreter joins its threads closes every sync
        budget the program forgot to close (else its loop thread would keep the
        process alive)."""
        from treasurer._sync.owned import _close_forgotten_budgets

        forgotten = treasurer.sync.open_budget(tokens=10)
        forgotten.consume(3)
        _close_forgotten_budgets()
        assert forgotten.closed
        with pytest.raises(treasurer.BudgetClosed):
            forgotten.consume(1)

    def test_threads_other_than_the_main_one_hold_nothing(self) -> None:
        from treasurer._sync.interrupts import DeferredInterrupts

        seen: list[bool] = []

        def other() -> None:
            with DeferredInterrupts() as held, held.allowed():
                seen.append(held.pending)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen == [False]
