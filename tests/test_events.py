"""Events: threshold alerts, reservations, refusals and rollovers, delivered three ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import pytest

import treasurer
import treasurer.sync
from treasurer import Window

pytestmark = pytest.mark.anyio


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 22, hour, minute, tzinfo=UTC)


class TestThresholds:
    async def test_each_threshold_fires_once(self) -> None:
        """50/75/90/100 % fire once each as usage passes them, with levels info/warning/critical."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(usd=1, on_event=events.append) as budget:
            await budget.record(usd=0.4)
            await budget.record(usd=0.2)  # 60 %: passes 50
            await budget.record(usd=0.1)  # 70 %
            await budget.record(usd=0.2)  # 90 %: passes 75 and 90 at once
            await budget.record(usd=0.05)
            await budget.record(usd=0.05)  # 100 %
            with pytest.raises(treasurer.BudgetExceeded):
                await budget.record(usd=0.01)
        crossed = [e for e in events if isinstance(e, treasurer.ThresholdCrossed)]
        assert [(e.threshold, e.level) for e in crossed] == [
            (50, "info"),
            (75, "warning"),
            (90, "warning"),
            (100, "critical"),
        ]
        assert all((e.cap, e.window, e.limit) == ("usd", "lifetime", Decimal(1)) for e in crossed)
        assert [e.used for e in crossed] == [Decimal("0.6"), Decimal("0.9"), Decimal("0.9"), 1]
        assert crossed[0].message == (
            f"budget {budget.name!r}: usd usage reached 50% of its cap (0.6 of 1)"
        )

    async def test_fires_again_in_the_next_window(self) -> None:
        """A window's thresholds re-arm when it rolls over, and the rollover is an event."""
        now = [at(10)]
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(
            windows=[Window.hour(tokens=100)],
            clock=lambda: now[0],
            thresholds=[80],
            on_event=events.append,
        ) as budget:
            await budget.record(tokens=85)
            await budget.record(tokens=5)  # still above 80 %: no second alert
            now[0] = at(11, 1)
            await budget.record(tokens=90)
        kinds = [(type(e).__name__, getattr(e, "window", None)) for e in events]
        assert kinds == [
            ("ThresholdCrossed", "hour"),
            ("WindowRolledOver", "hour"),
            ("ThresholdCrossed", "hour"),
        ]
        rolled = events[1]
        assert isinstance(rolled, treasurer.WindowRolledOver)
        assert (rolled.at, rolled.resets_at) == (at(11, 1), at(12))
        assert all(
            e.level == "warning" for e in events if isinstance(e, treasurer.ThresholdCrossed)
        )

    async def test_reset_rearms_the_lifetime(self) -> None:
        """After reset(), crossing a threshold again fires again."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(tokens=10, thresholds=[50], on_event=events.append) as b:
            await b.record(tokens=6)
            await b.reset()
            await b.record(tokens=6)
        assert [e.threshold for e in events if isinstance(e, treasurer.ThresholdCrossed)] == [
            50,
            50,
        ]

    async def test_commits_above_estimates_and_extra_refund_charges_alert(self) -> None:
        """Usage that lands by commit or by an extra charge counts toward thresholds."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(
            tokens=100, thresholds=[50, 100], on_event=events.append
        ) as b:
            async with b.reserve(tokens=40) as r:
                r.commit(tokens=60)
            assert await b.consume(10)
            await b.refund(40, 10)  # 30 more than estimated
        assert [e.threshold for e in events if isinstance(e, treasurer.ThresholdCrossed)] == [
            50,
            100,
        ]


class TestDelivery:
    async def test_subscription_sees_every_event_in_order(self) -> None:
        """A subscriber gets reservation, refusal and alert events in order, until it ends."""
        async with treasurer.open_budget(tokens=100, thresholds=[90]) as budget:
            async with budget.subscribe() as events:
                async with budget.reserve(tokens=50) as r:
                    r.commit(tokens=95)
                async with budget.reserve(tokens=5):
                    pass
                assert not await budget.consume(10)
                await anyio.wait_all_tasks_blocked()
                got = []
                with anyio.move_on_after(1):
                    async for event in events:
                        got.append(event)
                        if len(got) == 6:
                            break
            async with budget.reserve(tokens=1):  # not seen: the subscription ended
                pass
        assert [type(e).__name__ for e in got] == [
            "ReservationCreated",
            "ThresholdCrossed",
            "ReservationCommitted",
            "ReservationCreated",
            "ReservationReleased",
            "RequestRefused",
        ]
        created, _, committed = got[0], got[1], got[2]
        assert isinstance(created, treasurer.ReservationCreated)
        assert isinstance(committed, treasurer.ReservationCommitted)
        assert created.amount.tokens == 50
        assert committed.actual.tokens == 95
        assert created.reservation == committed.reservation
        refused = got[5]
        assert isinstance(refused, treasurer.RequestRefused)
        assert (refused.cap, refused.window, refused.level) == ("tokens", "lifetime", "warning")
        assert refused.message == refused.error
        assert events.missed == 0

    async def test_a_slow_subscriber_never_slows_the_budget(self) -> None:
        """When a subscriber's buffer is full, events are dropped and counted, not waited for."""
        async with treasurer.open_budget(tokens=1000) as budget:
            async with budget.subscribe(buffer=2) as events:
                for _ in range(5):
                    async with budget.reserve(tokens=1) as r:
                        r.commit(tokens=1)
                assert events.missed == 8  # 10 events, 2 buffered
                first = await events.__anext__()
                assert isinstance(first, treasurer.ReservationCreated)

    async def test_iteration_ends_when_the_budget_closes(self) -> None:
        """A subscriber reading in another task stops when the budget closes."""
        seen: list[treasurer.Event] = []
        async with anyio.create_task_group() as tg:
            async with treasurer.open_budget(tokens=10) as budget:
                ready = anyio.Event()

                async def reader() -> None:
                    async with budget.subscribe() as events:
                        ready.set()
                        async for event in events:
                            seen.append(event)

                tg.start_soon(reader)
                await ready.wait()
                await budget.record(tokens=6)
        assert [type(e).__name__ for e in seen] == ["ThresholdCrossed"]

    async def test_async_callback(self) -> None:
        """An async on_event runs in the budget's task group, after the batch."""
        received: list[treasurer.Event] = []

        async def on_event(event: treasurer.Event) -> None:
            await anyio.lowlevel.checkpoint()
            received.append(event)

        async with treasurer.open_budget(tokens=10, thresholds=[100], on_event=on_event) as b:
            await b.record(tokens=10)
        assert [type(e).__name__ for e in received] == ["ThresholdCrossed"]

    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_failing_callback_is_logged_not_fatal(
        self, kind: str, captured_logs: list[dict[str, object]]
    ) -> None:
        """A callback that raises is logged; the budget keeps serving."""

        def broken(event: treasurer.Event) -> None:
            raise RuntimeError("listener bug")

        async def broken_async(event: treasurer.Event) -> None:
            raise RuntimeError("listener bug")

        callback = broken if kind == "sync" else broken_async
        async with treasurer.open_budget(tokens=10, thresholds=[10], on_event=callback) as b:
            await b.record(tokens=5)
            await b.record(tokens=1)
        assert b.totals().tokens == 6
        failures = [e for e in captured_logs if e["event"] == "on_event callback failed"]
        assert len(failures) == 1

    async def test_logged_with_level(self, captured_logs: list[dict[str, object]]) -> None:
        """Threshold crossings and rollovers are structlog events at the event's level."""
        now = [at(10)]
        async with treasurer.open_budget(
            windows=[Window.hour(usd=1)], clock=lambda: now[0], thresholds=[50, 100]
        ) as b:
            await b.record(usd=1)
            now[0] = at(11)
            await b.record(usd=0)
        logged = [
            (e["event"], e["log_level"]) for e in captured_logs if e["event"] != "usage recorded"
        ]
        assert ("threshold crossed", "info") in logged
        assert ("threshold crossed", "critical") in logged
        assert ("window rolled over", "info") in logged

    async def test_subscribe_errors(self) -> None:
        """A bad buffer size or a closed budget is refused at once."""
        async with treasurer.open_budget(tokens=10) as budget:
            with pytest.raises(treasurer.InvalidAmount):
                async with budget.subscribe(buffer=0):
                    pass  # pragma: no cover
        with pytest.raises(treasurer.BudgetClosed):
            async with budget.subscribe():
                pass  # pragma: no cover

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"thresholds": [0]},
            {"thresholds": [50, 50]},
            {"thresholds": "50"},
            {"on_event": 5},
        ],
        ids=repr,
    )
    async def test_bad_options(self, kwargs: dict[str, object]) -> None:
        """Bad thresholds or callbacks raise InvalidOption before the budget opens."""
        with pytest.raises(treasurer.InvalidOption):
            async with treasurer.open_budget(**kwargs):  # type: ignore[arg-type]
                pass  # pragma: no cover

    async def test_negative_threshold(self) -> None:
        """A negative threshold is a bad amount."""
        with pytest.raises(treasurer.InvalidAmount):
            async with treasurer.open_budget(thresholds=[-5]):
                pass  # pragma: no cover


class TestSyncEvents:
    def test_callback_from_the_sync_facade(self) -> None:
        """The sync facade takes on_event too; it runs on the facade's loop thread."""
        events: list[treasurer.Event] = []
        clock = [at(9)]
        with treasurer.sync.open_budget(
            windows=[Window.rolling(timedelta(minutes=5), usd=1)],
            clock=lambda: clock[0],
            thresholds=[100],
            on_event=events.append,
        ) as budget:
            budget.record(usd=1)
        assert [(e.threshold, e.window) for e in events] == [(100, "rolling 300s")]  # type: ignore[attr-defined]
