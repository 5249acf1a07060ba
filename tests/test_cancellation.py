"""Cancellation at every await point, closing, and actor failure leave nothing behind.

Exact interleavings come from the actor's test seams (called with each batch
before it is applied and after its replies are delivered) and from
``wait_all_tasks_blocked``, never from sleeping.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

import treasurer
from treasurer import TenantCaps
from treasurer._actor import ADJUST, CHARGE, RECORD, RESERVE, BudgetCore, Message, tenant_op
from treasurer._slots import Answered, slot_factory

pytestmark = pytest.mark.anyio

MARK = 7  # the victim's token count, to find its message in a batch


def core_of(budget: treasurer.Budget) -> BudgetCore:
    return budget._core


@pytest.fixture(autouse=True)
def _through_the_mailbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests reach into the mailbox's interleavings, so every message goes
    through it; the uncontended fast path is tested in TestFastPath."""
    monkeypatch.setattr(treasurer._actor, "inline_by_default", False)


def when_batch_holds(op: int, action: Callable[[], None]) -> Callable[[list[Message]], None]:
    """A hook that runs ``action`` once, on the first batch holding the victim's message."""
    done = False

    def hook(batch: list[Message]) -> None:
        nonlocal done
        if not done and any(m[0] == op and m[1][2] == MARK for m in batch):
            done = True
            action()

    return hook


def assert_nothing_held(budget: treasurer.Budget, used: int = 0) -> None:
    snap = budget.snapshot()
    assert snap.open_reservations == 0
    assert snap.tokens_reserved == 0
    assert snap.tokens_used == used
    assert budget.statistics().tasks_waiting == 0


class TestCancelledReserve:
    async def test_before_the_call(self) -> None:
        """A reserve in an already-cancelled scope raises and holds nothing."""
        async with treasurer.open_budget(tokens=100) as budget:
            with anyio.CancelScope() as scope:
                scope.cancel()
                async with budget.reserve(tokens=MARK):
                    pytest.fail("must not be entered")  # pragma: no cover
            assert scope.cancelled_caught
            await wait_all_tasks_blocked()
            assert_nothing_held(budget)

    async def test_while_waiting_for_mailbox_room(self) -> None:
        """A caller cancelled while the mailbox is full has sent nothing."""
        async with treasurer.open_budget(tokens=100, mailbox_size=1) as budget:
            core_of(budget).post(ADJUST, (0, 0, 0, 0, 0))  # fills the mailbox; actor not run yet
            with anyio.move_on_after(0) as scope:
                await budget.consume(MARK)
            assert scope.cancelled_caught
            await wait_all_tasks_blocked()
            assert_nothing_held(budget)
            assert budget.statistics().messages_served == 1
            assert core_of(budget)._in_flight == 0  # else the fast path stays off for good

    async def test_sent_but_not_yet_served(self) -> None:
        """A request whose caller is cancelled before the actor reaches it is skipped."""
        async with treasurer.open_budget(tokens=100) as budget:
            scope = anyio.CancelScope()
            core_of(budget)._before_batch = when_batch_holds(RESERVE, scope.cancel)
            with scope:
                async with budget.reserve(tokens=MARK):
                    pytest.fail("must not be entered")  # pragma: no cover
            assert scope.cancelled_caught
            await wait_all_tasks_blocked()
            assert_nothing_held(budget)

    async def test_granted_then_cancelled_by_a_scope(self) -> None:
        """A cancel scope firing right after the grant leaves nothing held.

        anyio delivers the grant first on both loops; the cancellation lands at
        the next checkpoint, inside the block, and the exit releases.
        """
        async with treasurer.open_budget(tokens=100) as budget:
            scope = anyio.CancelScope()
            core_of(budget)._after_batch = when_batch_holds(RESERVE, scope.cancel)
            with scope:
                async with budget.reserve(tokens=MARK):
                    await checkpoint()
                    pytest.fail("must be cancelled")  # pragma: no cover
            assert scope.cancelled_caught
            await wait_all_tasks_blocked()
            assert_nothing_held(budget)

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    @pytest.mark.parametrize("op", [RESERVE, RECORD], ids=["reserve", "consume"])
    async def test_granted_but_reply_not_seen(self, op: int) -> None:
        """A native asyncio cancel landing after the grant hands the grant back.

        ``task.cancel()`` (asyncio.timeout, wait_for, asyncio.TaskGroup) raises
        CancelledError in the caller even though the actor already answered;
        the caller must give back what it never saw, as anyio's CapacityLimiter does.
        """
        entered: list[bool] = []

        async with treasurer.open_budget(tokens=100) as budget:

            async def victim() -> None:
                if op == RESERVE:
                    async with budget.reserve(tokens=MARK):
                        entered.append(True)  # pragma: no cover
                else:
                    entered.append(await budget.consume(MARK))  # pragma: no cover

            task = asyncio.ensure_future(victim())
            core_of(budget)._after_batch = when_batch_holds(op, task.cancel)
            await asyncio.wait([task])
            assert task.cancelled()
            assert entered == []
            await wait_all_tasks_blocked()
            assert_nothing_held(budget)
            assert budget.totals().calls == 0

    async def test_during_the_llm_call(self) -> None:
        """Cancelling the call inside the block releases the reservation."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    async with budget.reserve(tokens=MARK):
                        await anyio.sleep_forever()

                tg.start_soon(call)
                await wait_all_tasks_blocked()
                assert budget.snapshot().tokens_reserved == MARK
                tg.cancel_scope.cancel()
            await wait_all_tasks_blocked()
            assert_nothing_held(budget)

    async def test_during_settle(self) -> None:
        """A commit made before cancellation takes effect even though the exit is cancelled."""
        async with treasurer.open_budget(tokens=100) as budget:
            with anyio.CancelScope() as scope:
                async with budget.reserve(tokens=MARK) as r:
                    r.commit(tokens=5)
                    scope.cancel()
                await checkpoint()
                pytest.fail("must be cancelled")  # pragma: no cover
            assert scope.cancelled_caught
            await wait_all_tasks_blocked()
            assert_nothing_held(budget, used=5)

    @pytest.mark.parametrize("commit", [True, False], ids=["commit", "release"])
    async def test_block_failing_in_a_cancelled_scope(self, commit: bool) -> None:
        """A block failing in a cancelled scope settles, and its own error propagates."""
        async with treasurer.open_budget(tokens=100) as budget:
            with anyio.CancelScope() as scope:
                with pytest.raises(LookupError):
                    async with budget.reserve(tokens=MARK) as r:
                        scope.cancel()
                        if commit:
                            r.commit(tokens=3)
                        raise LookupError("provider error")
            # The settlement was acknowledged before the error left the block.
            assert_nothing_held(budget, used=3 if commit else 0)


class TestSendRace:
    @pytest.mark.parametrize("op", [RESERVE, RECORD], ids=["reserve", "consume"])
    async def test_cancelled_while_room_appears(self, op: int) -> None:
        """A sender cancelled while it waits for mailbox room has sent nothing,
        even when room appears before it runs again; nothing leaks and the
        count of unapplied messages stays exact.

        The test plays the actor by hand (no actor task), so it can make room
        after the sender was cancelled but before the sender runs again, which
        is the order the real actor can hit.
        """
        core = BudgetCore(((None,) * 2 + (100,) + (None,) * 2), name="race", mailbox_size=1)
        budget = treasurer.Budget(core)
        core.post(ADJUST, (0, 0, 0, 0, 0))  # the mailbox is full
        scope = anyio.CancelScope()

        async def victim() -> None:
            with scope:
                if op == RESERVE:
                    async with budget.reserve(tokens=MARK):
                        pytest.fail("must not be entered")  # pragma: no cover
                else:
                    await budget.consume(MARK)

        async with anyio.create_task_group() as tg:
            tg.start_soon(victim)
            await wait_all_tasks_blocked()  # the victim waits for mailbox room
            scope.cancel()
            # Before the victim runs again, "the actor" takes the batch: room.
            batch = core._take()
            assert [message[0] for message in batch] == [ADJUST]
            core._serve(batch)
        assert scope.cancelled_caught
        assert core._take() == []  # the victim sent nothing
        assert core._in_flight == 0  # so an idle budget still takes the fast path
        assert core._waiting == 0
        assert core.ledger.used == [0] * 5
        assert core.ledger.reserved == [0] * 5
        assert core.ledger.calls == 0
        core.close()
        core._receive.close()

    async def test_room_given_to_a_cancelled_sender_passes_on(self) -> None:
        """Room handed to a waiting sender that is then cancelled goes to the
        next one in line, so no sender waits while the mailbox has room."""
        core = BudgetCore(((None,) * 2 + (100,) + (None,) * 2), name="room", mailbox_size=1)
        budget = treasurer.Budget(core)
        core.post(ADJUST, (0, 0, 0, 0, 0))  # the mailbox is full
        first = anyio.CancelScope()
        answers: list[bool] = []

        async def cancelled_sender() -> None:
            with first:
                await budget.consume(1)

        async def second_sender() -> None:
            answers.append(await budget.consume(2))

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancelled_sender)
            await wait_all_tasks_blocked()
            tg.start_soon(second_sender)
            await wait_all_tasks_blocked()  # both wait for room, in that order
            core._serve(core._take())  # room for one: the first is woken...
            first.cancel()  # ...and cancelled before it runs
            await wait_all_tasks_blocked()
            assert core._send.statistics().current_buffer_used == 1  # the room was used
            for _ in range(3):  # play the actor until everyone is answered
                core._serve(core._take())
                await wait_all_tasks_blocked()
        assert answers == [True]
        assert core._in_flight == 0
        core.close()
        core._receive.close()

    async def test_a_sender_waiting_for_room_fails_when_the_budget_closes(self) -> None:
        """Closing wakes the senders waiting for room, with BudgetClosed: none hangs."""
        core = BudgetCore(((None,) * 2 + (100,) + (None,) * 2), name="room", mailbox_size=1)
        budget = treasurer.Budget(core)
        core.post(ADJUST, (0, 0, 0, 0, 0))  # the mailbox is full

        async def sender() -> None:
            with pytest.raises(treasurer.BudgetClosed):
                await budget.consume(1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            tg.start_soon(sender)
            await wait_all_tasks_blocked()  # both wait for room
            core.close()
            core._shutdown()  # what the actor does as it stops
        assert core.ledger.calls == 0
        assert core._room_waiters == deque()

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_room_passes_on_from_a_sender_cancelled_after_its_wake_up(self) -> None:
        """On asyncio a task can be cancelled after its wait was answered (a raw
        ``Task.cancel()`` before it runs): the room it was given goes on."""
        core = BudgetCore(((None,) * 2 + (100,) + (None,) * 2), name="room", mailbox_size=1)
        core.post(ADJUST, (0, 0, 0, 0, 0))  # the mailbox is full
        first = asyncio.ensure_future(core._mailbox_room())
        second = asyncio.ensure_future(core._mailbox_room())
        await wait_all_tasks_blocked()
        core._serve(core._take())  # room for one: the first is woken...
        first.cancel()  # ...and cancelled before it runs
        await asyncio.wait([first, second], timeout=1)
        assert first.cancelled()
        assert second.done()
        assert second.exception() is None
        core.close()
        core._receive.close()


class TestCancelledConsumeAndRecord:
    async def test_consume_seen_then_cancelled(self) -> None:
        """A consume whose caller saw True stands, even if a cancel follows at once."""
        async with treasurer.open_budget(tokens=100) as budget:
            scope = anyio.CancelScope()
            core_of(budget)._after_batch = when_batch_holds(RECORD, scope.cancel)
            seen: list[bool] = []
            with scope:
                seen.append(await budget.consume(MARK))
                await checkpoint()
            assert scope.cancelled_caught
            assert seen == [True]
            assert_nothing_held(budget, used=MARK)

    async def test_record_sent_but_not_served(self) -> None:
        """A record whose caller is cancelled before the actor reaches it changes nothing."""
        async with treasurer.open_budget(tokens=100) as budget:
            scope = anyio.CancelScope()
            core_of(budget)._before_batch = when_batch_holds(RECORD, scope.cancel)
            with scope:
                await budget.record(tokens=MARK)
            assert scope.cancelled_caught
            await wait_all_tasks_blocked()
            assert_nothing_held(budget)

    async def test_refund_applies_even_if_cancelled(self) -> None:
        """A refund is a settlement: it takes effect even when its caller is cancelled."""
        async with treasurer.open_budget(tokens=100) as budget:
            assert await budget.consume(50)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await budget.refund(20, 50)
            await wait_all_tasks_blocked()
            assert budget.remaining == 80


class TestBackPressure:
    async def test_many_callers_through_a_tiny_mailbox(self) -> None:
        """With a mailbox of one, hundreds of callers still each get a correct answer."""
        async with treasurer.open_budget(tokens=250, mailbox_size=1) as budget:
            results: list[bool] = []

            async def call() -> None:
                results.append(await budget.consume(1))

            async with anyio.create_task_group() as tg:
                for _ in range(300):
                    tg.start_soon(call)
            assert results.count(True) == 250
            assert budget.remaining == 0

    async def test_settlements_never_block_on_a_full_mailbox(self) -> None:
        """Commits overflow a full mailbox instead of blocking, and are all applied."""
        async with treasurer.open_budget(tokens=1000, mailbox_size=2) as budget:
            reservations = []
            for _ in range(10):
                r = budget.reserve(tokens=10)
                reservations.append(await r.__aenter__())
            for r in reservations:
                r.commit(tokens=9)  # synchronous: the actor cannot run in between
            # Two fill the mailbox, the rest overflow; one may have gone straight
            # to the actor if it was already waiting to receive.
            assert budget.statistics().mailbox_depth in (9, 10)
            assert core_of(budget)._overflow
            await wait_all_tasks_blocked()
            assert_nothing_held(budget, used=90)


class TestClosing:
    async def test_calls_after_close_fail_at_once(self) -> None:
        """After the block every call raises BudgetClosed at once; reads still work."""
        async with treasurer.open_budget(tokens=100) as budget:
            await budget.record(tokens=10)
        assert budget.closed
        with anyio.fail_after(1):
            with pytest.raises(treasurer.BudgetClosed, match="closed"):
                await budget.consume(1)
            with pytest.raises(treasurer.BudgetClosed):
                await budget.record(tokens=1)
            with pytest.raises(treasurer.BudgetClosed):
                async with budget.reserve(tokens=1):
                    pass  # pragma: no cover
            with pytest.raises(treasurer.BudgetClosed):
                await budget.refund(1, 2)
            with pytest.raises(treasurer.BudgetClosed):
                await budget.reset()
        assert budget.remaining == 90
        assert isinstance(treasurer.BudgetClosed("x"), RuntimeError)

    async def test_reservation_outliving_its_budget(self) -> None:
        """Committing after close raises BudgetClosed; releasing is a quiet no-op."""
        async with treasurer.open_budget(tokens=100) as budget:
            first = await budget.reserve(tokens=10).__aenter__()
            second = await budget.reserve(tokens=10).__aenter__()
        with pytest.raises(treasurer.BudgetClosed):
            first.commit(tokens=5)
        second.release()
        await first.__aexit__(None, None, None)
        assert first.settled
        assert second.settled

    async def test_requests_pending_at_close_are_refused(self) -> None:
        """A request already queued when the budget closes gets BudgetClosed, not a hang."""
        errors: list[BaseException] = []
        async with anyio.create_task_group() as outer:
            async with treasurer.open_budget(tokens=100) as budget:
                core = core_of(budget)
                core._before_batch = when_batch_holds(RECORD, core.close)

                async def outsider() -> None:
                    try:
                        await budget.record(tokens=MARK)
                    except treasurer.BudgetClosed as exc:
                        errors.append(exc)

                outer.start_soon(outsider)
                with anyio.fail_after(5):
                    await wait_all_tasks_blocked()
        assert len(errors) == 1
        assert budget.totals().tokens == 0

    async def test_settlements_pending_at_close_are_applied(self) -> None:
        """Commits still queued when the block ends are applied before the actor stops."""
        async with treasurer.open_budget(tokens=100) as budget:
            r = await budget.reserve(tokens=10).__aenter__()
            r.commit(tokens=8)
        assert_nothing_held(budget, used=8)

    async def test_body_error_stops_the_actor_cleanly(self) -> None:
        """An error in the block propagates unchanged and the budget closes."""
        with pytest.raises(KeyError):
            async with treasurer.open_budget(tokens=100) as budget:
                await budget.record(tokens=1)
                raise KeyError("boom")
        assert budget.closed

    async def test_cancelled_from_outside(self) -> None:
        """Cancelling the scope around the budget stops the actor; queued settlements apply."""
        with anyio.CancelScope() as outer:
            async with treasurer.open_budget(tokens=100) as budget:
                outer.cancel()
                core = core_of(budget)
                core.post(ADJUST, (0, 0, -5, 0, 0))  # queued before the actor ever runs
                ack = core.post(ADJUST, (0, 0, -3, 0, 0), ack=True)
                await anyio.sleep_forever()
        assert outer.cancelled_caught
        assert budget.closed
        assert budget.statistics().messages_served == 0  # applied by the shutdown
        assert_nothing_held(budget, used=8)
        assert ack is not None
        assert ack.abandon() == (True, None)
        with pytest.raises(treasurer.BudgetClosed):
            await budget.consume(1)

    async def test_a_tenants_settlements_queued_at_cancellation_apply(self) -> None:
        """The shutdown applies a tenant's queued settlements and delivers their events."""
        events: list[treasurer.Event] = []
        with anyio.CancelScope() as outer:
            async with treasurer.open_budget(
                tokens=100, tenant_defaults=TenantCaps(tokens=10), on_event=events.append
            ) as budget:
                outer.cancel()
                core_of(budget).post(*tenant_op(CHARGE, "a", (0, 0, 8, 0, 0)))
                await anyio.sleep_forever()
        assert budget.totals().tokens == 8
        crossed = [e for e in events if isinstance(e, treasurer.ThresholdCrossed)]
        assert [(e.tenant, e.threshold) for e in crossed] == [("a", 50), ("a", 75)]


class TestActorFailure:
    async def test_every_pending_and_later_call_fails(self) -> None:
        """If the actor dies, its pending caller and all later calls get BudgetBroken at once."""
        caught: list[BaseException] = []
        victim_errors: list[BaseException] = []

        def explode() -> None:
            raise ZeroDivisionError("ledger bug")

        async def victim(budget: treasurer.Budget) -> None:
            try:
                await budget.consume(MARK)
            except treasurer.BudgetBroken as exc:
                victim_errors.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as outer:
                try:
                    async with treasurer.open_budget(tokens=100) as budget:
                        reservation = await budget.reserve(tokens=1).__aenter__()
                        core_of(budget)._before_batch = when_batch_holds(RECORD, explode)
                        outer.start_soon(victim, budget)
                        await anyio.sleep_forever()
                except* treasurer.BudgetBroken as group:
                    caught.extend(group.exceptions)
        assert len(caught) == 1
        assert isinstance(caught[0].__cause__, ZeroDivisionError)
        assert len(victim_errors) == 1
        assert "ledger bug" in str(victim_errors[0])
        with pytest.raises(treasurer.BudgetBroken) as later:
            await budget.consume(1)
        assert isinstance(later.value.__cause__, ZeroDivisionError)
        assert isinstance(later.value, treasurer.BudgetClosed)
        with pytest.raises(treasurer.BudgetBroken):
            reservation.commit(tokens=1)
        reservation.release()
        assert budget.snapshot().open_reservations == 1  # state as the actor last published it

    @pytest.mark.parametrize("where", ["caller", "reader"])
    async def test_a_batch_applied_outside_the_actor_breaks_the_budget(self, where: str) -> None:
        """A failure while a caller applies its message at once, or while a read
        applies the mailbox, breaks the budget just as the actor's would."""

        def explode(_: list[Message]) -> None:
            raise ZeroDivisionError("ledger bug")

        async with treasurer.open_budget(tokens=100) as budget:
            core = core_of(budget)
            with pytest.raises(treasurer.BudgetBroken) as caught:
                if where == "caller":
                    core.inline = True  # applied at once, in this task
                    core._before_batch = explode
                    await budget.record(tokens=1)
                else:
                    async with budget.reserve(tokens=5) as r:
                        r.commit(tokens=1)  # posted, not applied yet
                    core._before_batch = explode
                    budget.snapshot()  # applies the mailbox first
            assert isinstance(caught.value.__cause__, ZeroDivisionError)
            assert core.closed
            with pytest.raises(treasurer.BudgetBroken):
                await budget.consume(1)


class TestPostedSettlements:
    """Settlements are posted and not waited for; a read on the loop's thread
    applies what is still in the mailbox first, so a task reads its own writes."""

    async def test_leaving_the_block_does_not_wait_and_a_read_applies_it(self) -> None:
        async with treasurer.open_budget(tokens=100) as budget:
            core = core_of(budget)
            async with budget.reserve(tokens=30) as r:
                r.commit(tokens=20)
            assert core._in_flight == 1  # posted; leaving the block did not wait
            snap = budget.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved, snap.calls) == (20, 0, 1)
            assert core._in_flight == 0
            async with budget.reserve(tokens=30):
                pass  # released on the way out
            assert budget.remaining == 80
            assert await budget.consume(10)
            await budget.refund(4, 10)
            assert core._in_flight == 1
            assert budget.totals().tokens == 24
            tenant = budget.tenant("a")
            async with tenant.reserve(tokens=5) as r:
                r.commit(tokens=5)
            assert tenant.snapshot().tokens_used == 5

    async def test_a_read_from_another_thread_leaves_the_mailbox_alone(self) -> None:
        async with treasurer.open_budget(tokens=100) as budget:
            core = core_of(budget)
            async with budget.reserve(tokens=30) as r:
                r.commit(tokens=20)
            seen: list[tuple[int, int]] = []

            def read() -> None:
                snap = budget.snapshot()
                seen.append((snap.tokens_reserved, core._in_flight))

            reader = threading.Thread(target=read)
            reader.start()
            reader.join()  # the loop is blocked meanwhile: nothing else runs
            assert seen == [(30, 1)]  # the last published batch, nothing applied
            assert budget.snapshot().tokens_reserved == 0

    async def test_a_read_inside_a_batch_leaves_the_mailbox_alone(self) -> None:
        seen: list[tuple[int, int]] = []
        others: list[treasurer.Reservation] = []

        def on_event(event: treasurer.Event) -> None:
            if isinstance(event, treasurer.ReservationCommitted) and others:
                others.pop().release()  # posted from inside the batch
                snap = budget.snapshot()
                seen.append((snap.tokens_reserved, core._in_flight))

        async with treasurer.open_budget(tokens=100, on_event=on_event) as budget:
            core = core_of(budget)
            async with budget.reserve(tokens=10) as other:
                others.append(other)
                async with budget.reserve(tokens=30) as r:
                    r.commit(tokens=20)
                await checkpoint()  # the actor applies the commit: the event fires
                await checkpoint()
                assert seen == [(10, 1)]  # not applied inside the batch
            assert budget.snapshot().tokens_reserved == 0


class TestFastPath:
    """An idle budget applies a call at once in the caller's task, after one
    checkpoint; under contention calls go through the mailbox."""

    @staticmethod
    def applied_in(budget: treasurer.Budget) -> list[int]:
        core = core_of(budget)
        core.inline = True
        tasks: list[int] = []
        core._before_batch = lambda _: tasks.append(anyio.get_current_task().id)
        return tasks

    async def test_uncontended_calls_are_applied_in_the_callers_task(self) -> None:
        async with treasurer.open_budget(tokens=100) as budget:
            tasks = self.applied_in(budget)
            me = anyio.get_current_task().id
            async with budget.reserve(tokens=30) as r:
                r.commit(tokens=20)
                assert budget.snapshot().tokens_used == 20  # applied by commit() itself
            assert await budget.consume(10)
            await budget.refund(5, 10)
            assert tasks == [me] * 4
            assert budget.totals().tokens == 25
            assert budget.statistics().messages_served == 4

    async def test_settlements_with_others_open_share_one_batch(self) -> None:
        """With other reservations open, a settlement goes to the mailbox, so
        settlements made together are applied as one batch by the actor; the
        last one open is applied at once again. Reads on the loop's thread see
        each settlement at once either way."""
        async with treasurer.open_budget(tokens=1_000) as budget:
            tasks = self.applied_in(budget)
            me = anyio.get_current_task().id
            held = [await budget.reserve(tokens=10).__aenter__() for _ in range(5)]
            assert tasks == [me] * 5
            for r in held[:4]:
                r.commit(tokens=5)
            assert budget.statistics().mailbox_depth == 4  # none applied yet
            assert budget.snapshot().tokens_used == 20  # read-your-writes: applied here
            assert tasks == [me] * 6  # as one batch
            held[4].commit(tokens=5)  # the only one open: applied at once
            assert tasks == [me] * 7
            assert budget.statistics().mailbox_depth == 0
            for r in held:
                await r.__aexit__(None, None, None)
            await checkpoint()
            assert budget.statistics().messages_served == 10
            assert budget.totals().tokens == 25

    async def test_together_settlements_are_served_by_the_actor(self) -> None:
        async with treasurer.open_budget(tokens=1_000) as budget:
            tasks = self.applied_in(budget)
            held = [await budget.reserve(tokens=10).__aenter__() for _ in range(3)]
            for r in held:
                r.release()
            before = budget.statistics().batches_served
            with anyio.fail_after(5):
                while budget.statistics().batches_served == before:
                    await checkpoint()
            assert tasks[-1] != anyio.get_current_task().id  # the actor's task
            assert budget.statistics().batches_served == before + 1
            assert budget.snapshot().tokens_reserved == 0

    async def test_cancelled_at_the_checkpoint_applies_nothing(self) -> None:
        async with treasurer.open_budget(tokens=100) as budget:
            tasks = self.applied_in(budget)
            for call in (budget.record(tokens=MARK), budget.consume(MARK)):
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await call
                assert scope.cancelled_caught
            with anyio.CancelScope() as scope:
                scope.cancel()
                async with budget.reserve(tokens=MARK):
                    pytest.fail("must not be entered")  # pragma: no cover
            assert tasks == []
            assert_nothing_held(budget)

    async def test_closed_during_the_checkpoint(self) -> None:
        """A call whose budget closes while it is in the fast path's checkpoint
        raises BudgetClosed and applies nothing."""
        async with treasurer.open_budget(tokens=100) as budget:
            core = core_of(budget)
            core.inline = True

            async def closing_checkpoint() -> None:
                assert core._alone
                core.close()  # as if another task closed it meanwhile
                await checkpoint()

            core._checkpoint = closing_checkpoint
            with pytest.raises(treasurer.BudgetClosed):
                await budget.record(tokens=MARK)
            assert not core._alone
        assert budget.totals().tokens == 0

    def test_an_answer_given_at_once_is_awaitable_anywhere(self) -> None:
        answer = Answered()
        answer.deliver(42)
        assert not answer.abandoned
        assert answer.abandon() == (True, 42)

        async def wait() -> object:
            return await answer.wait()

        assert anyio.run(wait) == 42
        assert anyio.run(wait, backend="trio") == 42

    async def test_contention_goes_through_the_mailbox(self) -> None:
        async with treasurer.open_budget(tokens=1000) as budget:
            tasks = self.applied_in(budget)
            callers: set[int] = set()

            async def caller() -> None:
                callers.add(anyio.get_current_task().id)
                for _ in range(5):
                    async with budget.reserve(tokens=10) as r:
                        r.commit(tokens=10)

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(caller)
            by_the_actor = [task for task in tasks if task not in callers]
            assert by_the_actor  # the actor served batches...
            assert budget.statistics().peak_batch_size > 1  # ...of several messages
            assert_nothing_held(budget, used=500)

    async def test_a_late_comer_during_the_checkpoint_sends_to_the_mailbox(self) -> None:
        """A task arriving while another is in the fast path's checkpoint does not
        take the fast path too: it goes to the mailbox, and the first, finding a
        message there after its checkpoint, follows it rather than overtake it."""
        async with treasurer.open_budget(tokens=100) as budget:
            tasks = self.applied_in(budget)
            callers: list[int] = []

            async def call(tokens: int) -> None:
                callers.append(anyio.get_current_task().id)
                await budget.record(tokens=tokens)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, 1)
                tg.start_soon(call, 2)
            assert budget.totals().tokens == 3
            assert tasks  # one batch or two...
            assert not set(tasks) & set(callers)  # ...all applied by the actor


class TestReplySlots:
    """The slot contract the actor relies on, on each event loop's own slot."""

    async def test_an_answer_delivered_before_the_wait_is_kept_and_the_first_wins(self) -> None:
        slot = slot_factory()()
        slot.deliver(1)
        slot.deliver(2)  # answered already: ignored
        assert not slot.abandoned
        assert await slot.wait() == 1

    async def test_an_answer_to_a_slot_given_up_is_dropped(self) -> None:
        slot = slot_factory()()
        assert slot.abandon() == (False, None)
        slot.deliver(1)
        assert slot.abandoned
