"""Small behaviours at the edges of the API: typed errors for odd input, calls that
race a closing child or a cancelled caller, and what the core answers for a scope
that is gone."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from anyio import wait_all_tasks_blocked

import treasurer
from core_support import T0, apply, make_ledger, tokens
from store_probes import ProbeStore
from treasurer._core.commands import (
    CloseChild,
    Command,
    OpenChild,
    Probe,
    ReadUsage,
    Record,
    Refund,
    Release,
    RemoveOverride,
    Reset,
    SetOverride,
)
from treasurer._core.outcomes import Rejected
from treasurer._core.scopes import child_path
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio


class TestGoneScopes:
    """A command for a child budget the ledger no longer has (it closed and was
    forgotten, or another process removed it) is rejected, and changes nothing."""

    @pytest.mark.parametrize(
        "command",
        [
            Reset(child_path((), 9)),
            SetOverride(child_path((), 9), "lifetime", tokens(5), T0 + timedelta(hours=1)),
            Probe(child_path((), 9), tokens(5)),
            ReadUsage(child_path((), 9), "lifetime"),
            Refund(child_path((), 9), 1, 2),
        ],
        ids=lambda command: type(command).__name__,
    )
    def test_rejected(self, command: Command) -> None:
        ledger = make_ledger({"tokens": 100})
        reply = apply(ledger, command)
        assert isinstance(reply, Rejected)
        assert set(ledger.tree.scopes) == {()}


class TestTypedErrors:
    async def test_reset_of_a_window_named_by_something_else(self) -> None:
        async with treasurer.open_budget(tokens=100) as budget:
            with pytest.raises(treasurer.InvalidOption, match="window must be"):
                await budget.reset(window=5)  # type: ignore[arg-type]

    async def test_override_fields_must_be_text(self) -> None:
        async with treasurer.open_budget(tokens=100) as budget:
            with pytest.raises(treasurer.InvalidOption, match="reason must be a str"):
                await budget.override(
                    tokens=5,
                    expires_at=datetime.now(UTC) + timedelta(hours=1),
                    reason=5,  # type: ignore[arg-type]
                )
            assert budget.snapshot().overrides == ()

    async def test_a_store_that_is_not_one(self) -> None:
        with pytest.raises(treasurer.InvalidOption, match="store must be"):
            async with treasurer.open_budget(tokens=100, store=object()):  # type: ignore[arg-type]
                pass  # pragma: no cover

    async def test_a_memory_store_serves_one_open_budget(self) -> None:
        store = treasurer.MemoryStore()
        async with treasurer.open_budget(tokens=100, store=store):
            with pytest.raises(treasurer.InvalidOption, match="one open budget"):
                async with treasurer.open_budget(tokens=100, store=store):
                    pass  # pragma: no cover

    async def test_a_memory_store_that_serves_nothing(self) -> None:
        with pytest.raises(treasurer.InvalidOption, match="open one first"):
            await treasurer.MemoryStore().apply([])

    def test_a_manual_clock_needs_an_aware_time(self) -> None:
        with pytest.raises(treasurer.InvalidOption, match="aware datetime"):
            ManualClock(datetime(2026, 1, 1))
        assert repr(ManualClock(T0)) == f"<ManualClock {T0.isoformat()}>"

    def test_tenant_caps_hash_as_they_compare(self) -> None:
        assert hash(treasurer.TenantCaps(tokens=5)) == hash(treasurer.TenantCaps(tokens=5))
        assert len({treasurer.TenantCaps(tokens=5), treasurer.TenantCaps(tokens=5)}) == 1


class TestChildren:
    async def test_charge_on_a_closed_child(self) -> None:
        async with treasurer.open_budget(tokens=100) as budget:
            async with budget.child(tokens=10) as child:
                await child.charge(tokens=2)
            with pytest.raises(treasurer.BudgetClosed, match="child budget"):
                await child.charge(tokens=1)
            assert budget.totals().tokens == 2

    async def test_a_child_outliving_its_budget_closes_quietly(self) -> None:
        """A child still open when its budget closes: its block's end raises
        BudgetClosed (nothing can be handed back to a closed budget)."""
        async with treasurer.open_budget(tokens=100) as budget:
            opened = budget.child(tokens=10)
            child = await opened.__aenter__()
            await child.record(tokens=3)
        with pytest.raises(treasurer.BudgetClosed):
            await opened.__aexit__(None, None, None)
        assert budget.totals().tokens == 3

    async def test_opening_cancelled_while_the_store_applies_it(self) -> None:
        """A child opened for a caller who left is closed again: its carve comes back."""
        store = ProbeStore()
        async with treasurer.open_budget(tokens=100, store=store) as budget:
            scope = anyio.CancelScope()

            def cancel(batch: Sequence[Command]) -> None:
                if any(isinstance(c, OpenChild) for c in batch):
                    scope.cancel()

            store.before = cancel
            with scope:
                async with budget.child(tokens=40):
                    pytest.fail("must not be entered")  # pragma: no cover
            await wait_all_tasks_blocked()
            assert len(store.commands(CloseChild)) == 1
            assert budget.available.tokens == 100


class TestUndone:
    async def test_an_override_set_for_a_caller_who_left_is_removed(self) -> None:
        store = ProbeStore()
        async with treasurer.open_budget(tokens=100, store=store) as budget:
            scope = anyio.CancelScope()

            def cancel(batch: Sequence[Command]) -> None:
                if any(isinstance(c, SetOverride) for c in batch):
                    scope.cancel()

            store.before = cancel
            with scope:
                await budget.override(tokens=50, expires_at=datetime.now(UTC) + timedelta(hours=1))
            await wait_all_tasks_blocked()
            assert len(store.commands(RemoveOverride)) == 1
            assert budget.snapshot().overrides == ()
            assert budget.snapshot().limits.tokens == 100

    async def test_a_waiter_granted_as_it_leaves_hands_it_back(self) -> None:
        """A waiting reservation granted in the very batch its caller is cancelled in
        is released: the room goes to nobody who cannot use it."""
        store = ProbeStore()
        async with treasurer.open_budget(tokens=10, store=store) as budget:
            holder = await budget.reserve(tokens=10).__aenter__()
            victim = anyio.CancelScope()
            entered: list[bool] = []

            async def wait_for_room() -> None:
                with victim:
                    async with budget.reserve(tokens=7, wait=True):
                        entered.append(True)  # pragma: no cover

            def cancel(batch: Sequence[Command]) -> None:
                if any(isinstance(c, Release) for c in batch):
                    victim.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_room)
                await wait_all_tasks_blocked()
                assert budget.statistics().reservations_waiting == 1
                store.before = cancel
                holder.release()
                await holder.__aexit__(None, None, None)
            await wait_all_tasks_blocked()
            assert entered == []
            assert len(store.commands(Release)) == 2  # the holder's, and the victim's grant
            snap = budget.snapshot()
            assert (snap.tokens_reserved, snap.open_reservations) == (0, 0)
            assert budget.statistics().reservations_waiting == 0


class TestThreads:
    async def test_a_refund_from_another_threads_loop(self) -> None:
        """A settlement from a thread running another event loop raises LoopThreadError
        at once instead of touching the budget from the wrong thread."""
        async with treasurer.open_budget(tokens=100) as budget:
            assert await budget.consume(10)
            errors: list[BaseException] = []

            def other_thread() -> None:
                async def refund() -> None:
                    await budget.refund(5, 10)

                try:
                    anyio.run(refund)
                except treasurer.LoopThreadError as exc:
                    errors.append(exc)

            thread = threading.Thread(target=other_thread)
            thread.start()
            await anyio.to_thread.run_sync(thread.join)
            assert len(errors) == 1
            assert budget.snapshot().tokens_used == 10


class TestReads:
    async def test_snapshots_of_many_tenants_stay_right(self) -> None:
        """The snapshot cache is bounded; past its bound snapshots are still current."""
        async with treasurer.open_budget(
            tokens=100_000, tenant_defaults=treasurer.TenantCaps(tokens=10)
        ) as budget:
            for i in range(1_100):
                await budget.tenant(f"t{i}").record(tokens=i % 10)
            for _ in range(2):  # the second pass reads past the cache's bound again
                for i in range(1_100):
                    snap = budget.tenant(f"t{i}").snapshot()
                    assert (snap.tokens_used, snap.tokens_remaining) == (i % 10, 10 - i % 10)

    async def test_usage_records_by_child_and_the_log_itself(self) -> None:
        log = treasurer.MemoryUsageLog()
        async with treasurer.open_budget(tokens=100, usage_log=log) as budget:
            async with budget.child(tokens=20) as first, budget.child(tokens=20) as second:
                await first.record(tokens=3, model="a")
                await second.record(tokens=4, model="b")
                report = await first.usage(group_by="model")
            assert set(report.groups) == {"a"}
        assert len(log) == 2
        assert [r.usage.tokens for r in log.records()] == [3, 4]

    def test_a_usage_record_says_what_it_was(self) -> None:
        ledger = make_ledger({"tokens": 100})
        events: list[treasurer.Event] = []
        ledger.apply_batch([Record((), tokens(5))], T0, events)
        (record,) = [e for e in events if isinstance(e, treasurer.UsageRecorded)]
        assert "record of" in record.message
        assert "tokens=5" in record.message
