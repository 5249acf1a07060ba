"""Cancellation at every await point, closing, and actor failure leave nothing behind.

Exact interleavings come from a :class:`ProbeStore` (a real memory store
given through the public ``store=`` seam) whose hooks hold the actor inside a
chosen batch, and from ``wait_all_tasks_blocked``; never from sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

import treasurer
from store_probes import TOKENS, ProbeStore, holding
from treasurer import TenantCaps
from treasurer._core.commands import (
    Command,
    Commit,
    Consume,
    Record,
    Release,
    Reserve,
    TakeBack,
)
from treasurer._runtime.slots import slot_factory

pytestmark = pytest.mark.anyio

MARK = 7  # the victim's token count, to find its command in a batch


class Gate:
    """A store hook that holds the actor inside the first batch ``matches`` picks,
    until the test opens it."""

    def __init__(self, matches: Callable[[Sequence[Command]], bool]) -> None:
        self.matches = matches
        self.reached = anyio.Event()
        self.opened = anyio.Event()

    async def __call__(self, batch: Sequence[Command]) -> None:
        if not self.reached.is_set() and self.matches(batch):
            self.reached.set()
            await self.opened.wait()


@asynccontextmanager
async def probed(**options: Any) -> AsyncIterator[tuple[treasurer.Budget, ProbeStore]]:
    store = ProbeStore()
    async with treasurer.open_budget(store=store, **options) as budget:
        yield budget, store
    assert store.violations == []


def assert_nothing_held(budget: treasurer.Budget, used: int = 0) -> None:
    snap = budget.snapshot()
    assert snap.open_reservations == 0
    assert snap.tokens_reserved == 0
    assert snap.tokens_used == used
    stats = budget.statistics()
    assert stats.tasks_waiting == 0
    assert stats.reservations_waiting == 0


def tokens_of(store: ProbeStore, kind: type[Command]) -> list[int]:
    """The token amounts of every ``kind`` command the store applied, in order."""
    return [command.amount[TOKENS] for command in store.commands(kind)]  # type: ignore[attr-defined]


async def hold_the_actor(
    budget: treasurer.Budget, store: ProbeStore, tg: anyio.abc.TaskGroup
) -> Gate:
    """Park the actor inside a batch (a ``record(tokens=1)``) until the gate opens."""
    gate = Gate(holding(Record, 1))
    store.before = gate
    tg.start_soon(lambda: budget.record(tokens=1))
    await gate.reached.wait()
    return gate


class Victim:
    """A call (``op``) made in a task of its own, in a cancel scope the test holds."""

    def __init__(self, budget: treasurer.Budget, op: str) -> None:
        self.budget = budget
        self.op = op
        self.scope = anyio.CancelScope()
        self.seen: list[object] = []  # what the call returned, or "entered"
        self.error: BaseException | None = None

    async def __call__(self) -> None:
        budget = self.budget
        with self.scope:
            try:
                if self.op == "reserve":
                    async with budget.reserve(tokens=MARK):
                        self.seen.append("entered")
                        await checkpoint()
                elif self.op == "consume":
                    self.seen.append(await budget.consume(MARK))
                else:
                    self.seen.append(await budget.record(tokens=MARK))
            except treasurer.TreasurerError as exc:
                self.error = exc


OPS = pytest.mark.parametrize("op", ["reserve", "consume", "record"])


class TestCancelledReserve:
    async def test_before_the_call(self) -> None:
        """A reserve in an already-cancelled scope raises and holds nothing."""
        async with probed(tokens=100) as (budget, store):
            with anyio.CancelScope() as scope:
                scope.cancel()
                async with budget.reserve(tokens=MARK):
                    pytest.fail("must not be entered")  # pragma: no cover
            assert scope.cancelled_caught
            await wait_all_tasks_blocked()
            assert_nothing_held(budget)
            assert store.commands(Reserve) == []

    async def test_during_the_llm_call(self) -> None:
        """Cancelling the call inside the block releases the reservation."""
        async with probed(tokens=100) as (budget, _):
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    async with budget.reserve(tokens=MARK):
                        await anyio.sleep_forever()

                tg.start_soon(call)
                await wait_all_tasks_blocked()
                assert budget.snapshot().tokens_reserved == MARK
                tg.cancel_scope.cancel()
            assert_nothing_held(budget)

    async def test_during_settle(self) -> None:
        """A commit made before cancellation takes effect even though the exit is cancelled."""
        async with probed(tokens=100) as (budget, _):
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
        async with probed(tokens=100) as (budget, _):
            with anyio.CancelScope() as scope:
                with pytest.raises(LookupError):
                    async with budget.reserve(tokens=MARK) as r:
                        scope.cancel()
                        if commit:
                            r.commit(tokens=3)
                        raise LookupError("provider error")
            # The settlement was applied before the error left the block.
            assert_nothing_held(budget, used=3 if commit else 0)


KIND: dict[str, type[Command]] = {"reserve": Reserve, "consume": Consume, "record": Record}


class TestCancelledWhileQueued:
    @OPS
    async def test_sent_but_not_yet_served(self, op: str) -> None:
        """A request whose caller is cancelled before the actor reaches it is skipped:
        the store never sees it."""
        async with probed(tokens=100) as (budget, store):
            victim = Victim(budget, op)
            async with anyio.create_task_group() as tg:
                gate = await hold_the_actor(budget, store, tg)
                tg.start_soon(victim)
                await wait_all_tasks_blocked()  # the victim's request is in the mailbox
                assert budget.statistics().mailbox_depth == 1
                victim.scope.cancel()
                await wait_all_tasks_blocked()
                gate.opened.set()
            assert victim.scope.cancelled_caught
            assert victim.seen == []
            assert MARK not in tokens_of(store, KIND[op])
            assert_nothing_held(budget, used=1)

    @OPS
    async def test_cancelled_while_the_store_applies_it(self, op: str) -> None:
        """A caller who leaves while the store applies its request never sees the
        answer; what it was granted is handed back (a release, or a take-back)."""
        async with probed(tokens=100) as (budget, store):
            victim = Victim(budget, op)
            gate = Gate(holding(KIND[op], MARK))
            store.before = gate
            async with anyio.create_task_group() as tg:
                tg.start_soon(victim)
                await gate.reached.wait()  # the store holds the victim's request
                victim.scope.cancel()
                await wait_all_tasks_blocked()
                gate.opened.set()
            assert victim.scope.cancelled_caught
            assert victim.seen == []
            assert tokens_of(store, KIND[op]) == [MARK]  # applied...
            await wait_all_tasks_blocked()
            undo = Release if op == "reserve" else TakeBack
            assert len(store.commands(undo)) == 1  # ...and handed back
            assert_nothing_held(budget)
            assert budget.totals().calls == 0

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    @OPS
    async def test_granted_but_reply_not_seen(self, op: str) -> None:
        """A native asyncio cancel landing after the answer was delivered hands it back.

        ``task.cancel()`` (asyncio.timeout, wait_for, asyncio.TaskGroup) raises
        CancelledError in the caller even though the actor already answered;
        the caller gives back what it never saw, as anyio's CapacityLimiter does.
        """
        async with probed(tokens=100) as (budget, store):
            victim = Victim(budget, op)
            task = asyncio.ensure_future(victim())

            def cancel_after_the_answer(batch: Sequence[Command]) -> None:
                if holding(KIND[op], MARK)(batch):
                    # Runs after the actor delivers this batch's answers, before
                    # the victim's task resumes.
                    asyncio.get_running_loop().call_soon(task.cancel)

            store.after = cancel_after_the_answer
            await asyncio.wait([task])
            assert task.cancelled()
            assert victim.seen == []
            await wait_all_tasks_blocked()
            undo = Release if op == "reserve" else TakeBack
            assert len(store.commands(undo)) == 1
            assert_nothing_held(budget)
            assert budget.totals().calls == 0

    async def test_a_woken_sender_cancelled_before_it_runs(self) -> None:
        """A caller that waited for mailbox room, whose request the actor took and
        answered before the caller ran again, is cancelled at that moment: what it
        was granted is handed back, or it entered and its block released it."""
        async with probed(tokens=100, mailbox_size=1) as (budget, store):
            victim = Victim(budget, "reserve")
            store.after = lambda batch: (
                victim.scope.cancel() if holding(Reserve, MARK)(batch) else None
            )
            async with anyio.create_task_group() as tg:
                gate = await hold_the_actor(budget, store, tg)
                tg.start_soon(budget.consume, 2)  # fills the mailbox
                await wait_all_tasks_blocked()
                tg.start_soon(victim)
                await wait_all_tasks_blocked()  # the victim waits for room
                assert budget.statistics().tasks_waiting == 3
                gate.opened.set()
            assert victim.scope.cancelled_caught
            assert tokens_of(store, Reserve) == [MARK]
            await wait_all_tasks_blocked()
            assert len(store.commands(Release)) == 1
            assert_nothing_held(budget, used=3)


class TestMailboxRoom:
    @pytest.mark.parametrize("op", ["reserve", "consume"])
    async def test_cancelled_while_waiting_for_room(self, op: str) -> None:
        """A caller cancelled while the mailbox is full has sent nothing."""
        async with probed(tokens=100, mailbox_size=1) as (budget, store):
            victim = Victim(budget, op)
            async with anyio.create_task_group() as tg:
                gate = await hold_the_actor(budget, store, tg)
                tg.start_soon(budget.consume, 2)  # fills the mailbox
                await wait_all_tasks_blocked()
                tg.start_soon(victim)
                await wait_all_tasks_blocked()
                assert budget.statistics().tasks_waiting == 3
                victim.scope.cancel()
                await wait_all_tasks_blocked()
                gate.opened.set()
            assert victim.scope.cancelled_caught
            assert MARK not in tokens_of(store, KIND[op])
            assert_nothing_held(budget, used=3)
            assert budget.statistics().messages_served == 2

    async def test_room_given_to_a_cancelled_sender_passes_on(self) -> None:
        """Room freed while the first sender in line is cancelled goes to the next
        one, so no sender waits while the mailbox has room."""
        async with probed(tokens=100, mailbox_size=1) as (budget, store):
            first = Victim(budget, "consume")
            answers: list[bool] = []

            async def second() -> None:
                answers.append(await budget.consume(4))

            async with anyio.create_task_group() as tg:
                gate = await hold_the_actor(budget, store, tg)
                tg.start_soon(budget.consume, 2)  # fills the mailbox
                await wait_all_tasks_blocked()
                tg.start_soon(first)
                await wait_all_tasks_blocked()
                tg.start_soon(second)
                await wait_all_tasks_blocked()  # both wait for room, in that order
                first.scope.cancel()
                gate.opened.set()
            assert answers == [True]
            assert tokens_of(store, Consume) == [2, 4]
            assert_nothing_held(budget, used=7)

    async def test_a_sender_waiting_for_room_fails_when_the_budget_closes(self) -> None:
        """Closing answers the senders waiting for room with BudgetClosed: none hangs,
        and nothing they asked for is applied."""
        errors: list[BaseException] = []

        async def sender(budget: treasurer.Budget, tokens: int) -> None:
            try:
                await budget.consume(tokens)
            except treasurer.BudgetClosed as exc:
                errors.append(exc)

        async with anyio.create_task_group() as outer:
            async with probed(tokens=100, mailbox_size=1) as (budget, store):
                gate = await hold_the_actor(budget, store, outer)
                outer.start_soon(sender, budget, 2)  # fills the mailbox
                await wait_all_tasks_blocked()
                outer.start_soon(sender, budget, 3)
                outer.start_soon(sender, budget, 4)
                await wait_all_tasks_blocked()  # two wait for room

                async def open_once_closing() -> None:
                    await wait_all_tasks_blocked()  # the block has ended: closing
                    assert budget.closed
                    gate.opened.set()

                outer.start_soon(open_once_closing)
        assert len(errors) == 3
        assert tokens_of(store, Consume) == []
        assert budget.totals().tokens == 1

    async def test_many_callers_through_a_tiny_mailbox(self) -> None:
        """With a mailbox of one, hundreds of callers still each get a correct answer."""
        async with probed(tokens=250, mailbox_size=1) as (budget, _):
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
        async with probed(tokens=1000, mailbox_size=2) as (budget, _):
            reservations = [await budget.reserve(tokens=10).__aenter__() for _ in range(10)]
            for r in reservations:
                r.commit(tokens=9)  # synchronous: the actor cannot run in between
            # Two fill the mailbox, the rest overflow; one may have gone straight
            # to the actor if it was already waiting to receive.
            assert budget.statistics().mailbox_depth in (9, 10)
            for r in reservations:
                await r.__aexit__(None, None, None)
            assert_nothing_held(budget, used=90)


class TestCancelledSettlements:
    async def test_refund_applies_even_if_cancelled(self) -> None:
        """A refund is a settlement: it takes effect even when its caller is cancelled."""
        async with probed(tokens=100) as (budget, _):
            assert await budget.consume(50)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await budget.refund(20, 50)
            await wait_all_tasks_blocked()
            assert budget.remaining == 80

    async def test_a_commit_whose_wait_is_cancelled_is_applied(self) -> None:
        """Leaving the block waits for the commit to be applied; cancelled in that
        wait (the store still working on it), the commit is applied all the same."""
        async with probed(tokens=100) as (budget, store):
            async with anyio.create_task_group() as tg:
                reservation = await budget.reserve(tokens=MARK).__aenter__()
                gate = Gate(lambda batch: any(type(c).__name__ == "Commit" for c in batch))
                store.before = gate

                async def leave() -> None:
                    with anyio.CancelScope() as scope:
                        reservation.commit(tokens=5)
                        tg.start_soon(cancel_when_held, scope)
                        await reservation.__aexit__(None, None, None)

                async def cancel_when_held(scope: anyio.CancelScope) -> None:
                    await gate.reached.wait()
                    scope.cancel()
                    await wait_all_tasks_blocked()
                    gate.opened.set()

                tg.start_soon(leave)
            await wait_all_tasks_blocked()  # the actor finishes the batch it was held in
            assert_nothing_held(budget, used=5)


class TestClosing:
    async def test_calls_after_close_fail_at_once(self) -> None:
        """After the block every call raises BudgetClosed at once; reads still work."""
        async with probed(tokens=100) as (budget, _):
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
        async with probed(tokens=100) as (budget, _):
            first = await budget.reserve(tokens=10).__aenter__()
            second = await budget.reserve(tokens=10).__aenter__()
        with pytest.raises(treasurer.BudgetClosed):
            first.commit(tokens=5)
        second.release()
        await first.__aexit__(None, None, None)
        assert first.settled
        assert second.settled

    async def test_requests_queued_at_close_are_refused(self) -> None:
        """A request still in the mailbox when the budget closes gets BudgetClosed,
        not a hang, and is not applied."""
        victim_holder: list[Victim] = []
        async with anyio.create_task_group() as outer:
            async with probed(tokens=100) as (budget, store):
                victim = Victim(budget, "record")
                victim_holder.append(victim)
                gate = await hold_the_actor(budget, store, outer)
                outer.start_soon(victim)
                await wait_all_tasks_blocked()  # queued behind the held batch

                async def open_once_closing() -> None:
                    await wait_all_tasks_blocked()
                    gate.opened.set()

                outer.start_soon(open_once_closing)
        assert isinstance(victim.error, treasurer.BudgetClosed)
        assert tokens_of(store, Record) == [1]
        assert budget.totals().tokens == 1

    async def test_settlements_pending_at_close_are_applied(self) -> None:
        """Commits still queued when the block ends are applied before the actor stops."""
        async with probed(tokens=100) as (budget, _):
            r = await budget.reserve(tokens=10).__aenter__()
            r.commit(tokens=8)
        assert_nothing_held(budget, used=8)

    @pytest.mark.parametrize("stored", [True, False], ids=["stored", "store-down"])
    async def test_a_settlement_posted_during_the_last_batch(self, stored: bool) -> None:
        """A commit posted while the actor applies its last batch (the budget is
        closing) is applied, in a batch of its own, before the actor stops; if the
        store cannot take it then, it is not counted, and the budget still closes."""

        def unavailable(batch: Sequence[Command]) -> None:
            if any(isinstance(command, Commit) for command in batch):
                raise treasurer.StoreUnavailable("the store is down")

        async with anyio.create_task_group() as outer:
            async with probed(tokens=100) as (budget, store):
                r = await budget.reserve(tokens=10).__aenter__()
                gate = Gate(lambda batch: budget.closed)
                store.before = gate

                async def settle_during_the_last_batch() -> None:
                    await gate.reached.wait()
                    if not stored:
                        store.before = unavailable
                    r.commit(tokens=8)
                    gate.opened.set()

                outer.start_soon(settle_during_the_last_batch)
        assert store.batches[-1] == store.commands(Commit)
        if stored:
            assert_nothing_held(budget, used=8)
        else:
            snap = budget.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved) == (0, 10)

    async def test_body_error_stops_the_actor_cleanly(self) -> None:
        """An error in the block propagates unchanged and the budget closes."""
        with pytest.raises(KeyError):
            async with probed(tokens=100) as (budget, _):
                await budget.record(tokens=1)
                raise KeyError("boom")
        assert budget.closed

    async def test_cancelled_from_outside(self) -> None:
        """Cancelling the scope around the budget stops the actor once the block has
        unwound: settlements posted as it unwinds are applied first."""
        with anyio.CancelScope() as outer:
            async with probed(tokens=100) as (budget, _):
                first = await budget.reserve(tokens=10).__aenter__()
                second = await budget.reserve(tokens=10).__aenter__()
                served = budget.statistics().messages_served
                outer.cancel()
                first.commit(tokens=5)
                second.commit(tokens=3)
                await anyio.sleep_forever()
        assert outer.cancelled_caught
        assert budget.closed
        assert budget.statistics().messages_served == served + 2  # both commits
        assert_nothing_held(budget, used=8)
        with pytest.raises(treasurer.BudgetClosed):
            await budget.consume(1)

    async def test_a_tenants_settlements_queued_at_cancellation_apply(self) -> None:
        """The shutdown applies a tenant's queued settlements and delivers their events."""
        events: list[treasurer.Event] = []
        with anyio.CancelScope() as outer:
            async with probed(
                tokens=100, tenant_defaults=TenantCaps(tokens=10), on_event=events.append
            ) as (budget, _):
                r = await budget.tenant("a").reserve(tokens=8).__aenter__()
                outer.cancel()
                r.commit()
                await anyio.sleep_forever()
        assert budget.totals().tokens == 8
        crossed = [e for e in events if isinstance(e, treasurer.ThresholdCrossed)]
        assert [(e.tenant, e.threshold) for e in crossed] == [("a", 50), ("a", 75)]


def explode_on(kind: type[Command]) -> Callable[[Sequence[Command]], None]:
    def hook(batch: Sequence[Command]) -> None:
        if holding(kind, MARK)(batch):
            raise ZeroDivisionError("store bug")

    return hook


class TestActorFailure:
    async def test_every_pending_and_later_call_fails(self) -> None:
        """If the store fails, the actor stops: its pending caller and every later call
        get BudgetBroken at once, and the block raises it."""
        caught: list[BaseException] = []
        with anyio.fail_after(5):
            try:
                async with probed(tokens=100) as (budget, store):
                    reservation = await budget.reserve(tokens=1).__aenter__()
                    store.before = explode_on(Consume)
                    victim = Victim(budget, "consume")
                    await victim()  # the store fails on it
                    assert isinstance(victim.error, treasurer.BudgetBroken)
                    with pytest.raises(treasurer.BudgetBroken):
                        await budget.record(tokens=1)  # the budget stays broken
            except* treasurer.BudgetBroken as group:
                caught.extend(group.exceptions)
        assert len(caught) == 1
        assert isinstance(caught[0].__cause__, ZeroDivisionError)
        assert isinstance(victim.error, treasurer.BudgetBroken)
        assert "store bug" in str(victim.error)
        with pytest.raises(treasurer.BudgetBroken) as later:
            await budget.consume(1)
        assert isinstance(later.value.__cause__, ZeroDivisionError)
        assert isinstance(later.value, treasurer.BudgetClosed)
        with pytest.raises(treasurer.BudgetBroken):
            reservation.commit(tokens=1)
        reservation.release()
        assert budget.snapshot().open_reservations == 1  # as the actor last published it

    async def test_settlements_queued_behind_a_failure_are_not_applied(self) -> None:
        """After a failure nothing more is applied: a queued commit's caller gets
        BudgetBroken when its block ends, and the figures stay as last published."""
        with pytest.raises(treasurer.BudgetBroken):
            async with probed(tokens=100) as (budget, store):
                reservation = await budget.reserve(tokens=5).__aenter__()
                gate = Gate(holding(Consume, MARK))
                store.before = gate
                async with anyio.create_task_group() as tg:
                    victim = Victim(budget, "consume")
                    tg.start_soon(victim)
                    await gate.reached.wait()
                    reservation.commit(tokens=4)  # queued behind the failing batch
                    store.before = None

                    def fail(_: Sequence[Command]) -> None:
                        raise ZeroDivisionError("store bug")

                    store.after = fail
                    gate.opened.set()
                with pytest.raises(treasurer.BudgetBroken):
                    await reservation.__aexit__(None, None, None)
        assert isinstance(victim.error, treasurer.BudgetBroken)
        assert budget.snapshot().tokens_used == 0


class TestStoreUnavailable:
    async def test_a_failed_batch_fails_its_calls_and_the_budget_goes_on(self) -> None:
        """A store that raises StoreUnavailable applied nothing: each caller of that
        batch gets its own StoreUnavailable (caused by the store's), the next batch
        is served as usual, and nothing is left reserved."""

        def unavailable(batch: Sequence[Command]) -> None:
            if holding(Consume, MARK)(batch):
                raise treasurer.StoreUnavailable("the store is down")

        async with probed(tokens=100) as (budget, store):
            store.before = unavailable
            errors = []
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    victim = Victim(budget, "consume")
                    errors.append(victim)
                    tg.start_soon(victim)
            assert [type(v.error) for v in errors] == [treasurer.StoreUnavailable] * 3
            assert len({id(v.error) for v in errors}) == 3
            assert all("the store is down" in str(v.error.__cause__) for v in errors)
            assert budget.snapshot().tokens_used == 0
            store.before = None
            assert await budget.consume(MARK)
            assert budget.snapshot().tokens_used == MARK

    async def test_a_failure_at_shutdown_fails_those_settlements_only(self) -> None:
        """Settlements the closing budget could not store are not counted, and the
        budget still closes (cancelled from outside, as it was)."""

        def unavailable(batch: Sequence[Command]) -> None:
            if any(isinstance(command, Commit) for command in batch):
                raise treasurer.StoreUnavailable("the store is down")

        with anyio.CancelScope() as outer:
            async with probed(tokens=100) as (budget, store):
                r = await budget.reserve(tokens=8).__aenter__()
                store.before = unavailable
                outer.cancel()
                r.commit()
                await anyio.sleep_forever()
        assert outer.cancelled_caught
        assert len(store.commands(Commit)) == 1  # tried once, not stored
        assert (budget.snapshot().tokens_used, budget.snapshot().tokens_reserved) == (0, 8)


class TestReplySlots:
    """The slot contract the actor relies on, on each event loop's own slot."""

    async def test_an_answer_delivered_before_the_wait_is_kept_and_the_first_wins(self) -> None:
        slot = slot_factory()()
        slot.deliver(1)
        slot.deliver(2)  # answered already: ignored
        assert not slot.abandoned
        assert await slot.wait() == 1
        assert slot.abandon() == (True, 1)

    async def test_an_answer_to_a_slot_given_up_is_dropped(self) -> None:
        slot = slot_factory()()
        assert slot.abandon() == (False, None)
        slot.deliver(1)
        assert slot.abandoned

    async def test_a_waiter_cancelled_marks_its_slot_abandoned(self) -> None:
        slot = slot_factory()()
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                await slot.wait()

            tg.start_soon(wait)
            await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert slot.abandoned
        slot.deliver(1)  # too late: ignored
        assert slot.abandon() == (False, None)
