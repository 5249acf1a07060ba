"""Events: threshold alerts, reservations, refusals and rollovers, delivered three ways."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import pytest
import structlog
import trio.testing

import treasurer
import treasurer.sync
import treasurer.testing
from api_support import BOTH_LOOPS_FAST
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
        clock = treasurer.testing.ManualClock(at(10))
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(
            windows=[Window.hour(tokens=100)],
            clock=clock,
            thresholds=[80],
            on_event=events.append,
        ) as budget:
            await budget.record(tokens=85)
            await budget.record(tokens=5)  # still above 80 %: no second alert
            clock.set(at(11, 1))
            await budget.record(tokens=90)
        kinds = [
            (type(e).__name__, getattr(e, "window", None))
            for e in events
            if isinstance(e, treasurer.ThresholdCrossed | treasurer.WindowRolledOver)
        ]
        assert kinds == [
            ("ThresholdCrossed", "hour"),
            ("WindowRolledOver", "hour"),
            ("ThresholdCrossed", "hour"),
        ]
        (rolled,) = [e for e in events if isinstance(e, treasurer.WindowRolledOver)]
        assert (rolled.at, rolled.resets_at) == (at(11, 1), at(12))
        assert all(
            e.level == "warning" for e in events if isinstance(e, treasurer.ThresholdCrossed)
        )

    async def test_the_usage_comes_before_the_alert_it_causes(self) -> None:
        """Each UsageRecorded is delivered before the ThresholdCrossed it caused."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(tokens=100, thresholds=[50], on_event=events.append) as b:
            await b.record(tokens=40)
            await b.record(tokens=20)
        assert [type(e).__name__ for e in events] == [
            "UsageRecorded",
            "UsageRecorded",
            "ThresholdCrossed",
        ]
        assert [e.usage.tokens for e in events if isinstance(e, treasurer.UsageRecorded)] == [
            40,
            20,
        ]

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
        """A subscriber gets reservation, usage, refusal and alert events in order, until it
        ends."""
        async with treasurer.open_budget(tokens=100, thresholds=[90]) as budget:
            async with budget.subscribe() as events:
                async with budget.reserve(tokens=50) as r:
                    r.commit(tokens=95)
                async with budget.reserve(tokens=5):
                    pass
                assert not await budget.consume(10)
                got = []
                with anyio.fail_after(1):
                    async for event in events:
                        got.append(event)
                        if len(got) == 7:
                            break
            async with budget.reserve(tokens=1):  # not seen: the subscription ended
                pass
            assert events.pending() == []
        assert [type(e).__name__ for e in got] == [
            "ReservationCreated",
            "UsageRecorded",
            "ThresholdCrossed",
            "ReservationCommitted",
            "ReservationCreated",
            "ReservationReleased",
            "RequestRefused",
        ]
        created, used, _, committed = got[:4]
        assert isinstance(created, treasurer.ReservationCreated)
        assert isinstance(used, treasurer.UsageRecorded)
        assert isinstance(committed, treasurer.ReservationCommitted)
        assert created.amount.tokens == 50
        assert committed.actual.tokens == 95
        assert (used.source, used.usage.tokens) == ("commit", 95)
        assert created.reservation == committed.reservation == used.reservation
        refused = got[6]
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
                assert events.missed == 13  # 15 events (created, usage, committed) x 5, 2 kept
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
        assert [type(e).__name__ for e in seen] == ["UsageRecorded", "ThresholdCrossed"]

    async def test_async_callback(self) -> None:
        """An async on_event runs in the budget's task group, after the batch."""
        received: list[treasurer.Event] = []

        async def on_event(event: treasurer.Event) -> None:
            await anyio.lowlevel.checkpoint()
            received.append(event)

        async with treasurer.open_budget(tokens=10, thresholds=[100], on_event=on_event) as b:
            await b.record(tokens=10)
        assert [type(e).__name__ for e in received] == ["UsageRecorded", "ThresholdCrossed"]

    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_failing_callback_is_logged_not_fatal(
        self, kind: str, captured_logs: list[dict[str, object]]
    ) -> None:
        """A callback that raises is logged; the budget keeps serving and calls it again."""
        delivered: list[treasurer.Event] = []

        def broken(event: treasurer.Event) -> None:
            delivered.append(event)
            if isinstance(event, treasurer.ThresholdCrossed):
                raise RuntimeError("listener bug")  # noqa: TRY004 - a bug, not a type check

        async def broken_async(event: treasurer.Event) -> None:
            broken(event)

        callback = broken if kind == "sync" else broken_async
        async with treasurer.open_budget(tokens=10, thresholds=[10], on_event=callback) as b:
            await b.record(tokens=5)
            await b.record(tokens=1)
        assert b.totals().tokens == 6
        failures = [e for e in captured_logs if e["event"] == "on_event callback failed"]
        assert [e["event_type"] for e in failures] == ["ThresholdCrossed"]
        assert [type(e).__name__ for e in delivered] == [
            "UsageRecorded",
            "ThresholdCrossed",
            "UsageRecorded",
        ]

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
        clock = treasurer.testing.ManualClock(at(9))
        with treasurer.sync.open_budget(
            windows=[Window.rolling(timedelta(minutes=5), usd=1)],
            clock=clock,
            thresholds=[100],
            on_event=events.append,
        ) as budget:
            budget.record(usd=1)
        crossed = [e for e in events if isinstance(e, treasurer.ThresholdCrossed)]
        assert [(e.threshold, e.window) for e in crossed] == [(100, "rolling 300s")]

    def test_a_sync_budget_subscribes(self) -> None:
        """SyncBudget.subscribe() iterates the budget's events; iteration ends with the block."""
        with treasurer.sync.open_budget(tokens=100, thresholds=[50]) as budget:
            with budget.subscribe() as events:
                with budget.reserve(tokens=60) as r:
                    r.commit()
                assert not budget.consume(50)
                seen = [next(events) for _ in range(4)]
                assert [type(e).__name__ for e in events.pending()] == ["RequestRefused"]
            assert list(events) == []
            assert events.missed == 0
        assert [type(e).__name__ for e in seen] == [
            "ReservationCreated",
            "UsageRecorded",
            "ThresholdCrossed",
            "ReservationCommitted",
        ]

    def test_buffered_events_are_read_after_the_budget_closed(self) -> None:
        """After the budget closes, a sync subscription yields what it buffered, then
        ends, and its block exits without an error (as the async one does)."""
        budget = treasurer.sync.open_budget(tokens=100)
        with budget.subscribe() as events:
            budget.record(tokens=1)
            budget.close()
            seen = [type(e).__name__ for e in events]
        assert seen == ["UsageRecorded"]

    def test_a_sync_subscription_ends_when_the_budget_closes(self) -> None:
        """A thread iterating a sync subscription stops when the budget closes."""
        import threading

        seen: list[str] = []
        errors: list[BaseException] = []
        with treasurer.sync.open_budget(tokens=100) as budget:
            subscribed = threading.Event()

            def reader() -> None:
                try:
                    with budget.subscribe() as events:
                        subscribed.set()
                        seen.extend(type(e).__name__ for e in events)
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=reader)
            thread.start()
            assert subscribed.wait(5)
            budget.record(tokens=1)
        thread.join(5)
        assert not thread.is_alive()
        assert errors == []
        assert seen == ["UsageRecorded"]


class TestBoundedDelivery:
    @pytest.mark.parametrize(
        "anyio_backend",
        [
            pytest.param(
                ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}),
                id="trio-virtual-time",
            ),
            pytest.param(("asyncio", {}), id="asyncio-real-time", marks=pytest.mark.slow),
        ],
    )
    async def test_a_callback_that_never_returns_cannot_keep_the_budget_open(self) -> None:
        """An async on_event stuck forever is cancelled after the 5 s grace at close; the
        budget's block exits and the event still queued is counted as dropped."""
        stuck = anyio.Event()

        async def never_returns(event: treasurer.Event) -> None:
            stuck.set()
            await anyio.sleep_forever()

        with anyio.fail_after(30):
            async with treasurer.open_budget(tokens=10, on_event=never_returns) as budget:
                await budget.record(tokens=1)
                await budget.record(tokens=1)
                await stuck.wait()
                closing = anyio.current_time()
        assert 5 <= anyio.current_time() - closing < 10
        assert budget.closed
        assert budget.statistics().events_dropped == 1

    @BOTH_LOOPS_FAST
    async def test_a_slow_callback_gets_no_task_per_event(self) -> None:
        """20,000 reservations with an async on_event that blocks start no task per event;
        the events that do not fit the queue are dropped and counted, none is lost."""
        gate = anyio.Event()
        calls = 0

        async def slow(event: treasurer.Event) -> None:
            nonlocal calls
            calls += 1
            await gate.wait()

        async with treasurer.open_budget(tokens=10**9, on_event=slow) as budget:
            tasks_at_start = len(anyio.get_running_tasks())
            most_tasks = tasks_at_start

            async def worker() -> None:
                nonlocal most_tasks
                for _ in range(200):
                    async with budget.reserve(tokens=1) as r:
                        r.commit()
                most_tasks = max(most_tasks, len(anyio.get_running_tasks()))

            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(worker)
            assert len(anyio.get_running_tasks()) == tasks_at_start
            dropped_while_blocked = budget.statistics().events_dropped
            gate.set()
        assert most_tasks <= tasks_at_start + 100  # the workers themselves, nothing per event
        assert dropped_while_blocked > 0
        # created, usage recorded and committed for each reservation: delivered or counted
        assert calls + budget.statistics().events_dropped == 3 * 20_000
        assert budget.totals().tokens == 20_000


QUIET_SCRIPT = """
import logging, sys
import anyio
import treasurer, treasurer.sync

if sys.argv[2] == "debug":
    logging.basicConfig(level=logging.DEBUG)

async def main():
    async with treasurer.open_budget(tokens=100, thresholds=[50, 100], name="quiet") as b:
        async with b.reserve(tokens=60) as r:
            r.commit()
        assert not await b.consume(50)
        try:
            await b.record(tokens=50)
        except treasurer.BudgetExceeded:
            pass
        async with b.reserve(tokens=10):
            pass
        await b.record(tokens=40)

anyio.run(main, backend=sys.argv[1])
with treasurer.sync.open_budget(tokens=10, backend=sys.argv[1]) as s:
    with s.reserve(tokens=5) as r:
        r.commit()
    assert not s.consume(6)
"""


class TestQuietByDefault:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_nothing_is_printed_without_logging_configured(self, backend: str) -> None:
        """A program that reserves, commits, is refused and crosses thresholds with no
        logging configured prints nothing on stdout or stderr."""
        done = subprocess.run(
            [sys.executable, "-c", QUIET_SCRIPT, backend, "quiet"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert (done.stdout, done.stderr) == ("", "")

    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_one_line_of_logging_config_shows_the_events(self, backend: str) -> None:
        """With logging.basicConfig(level=logging.DEBUG) the same program logs every event
        on the "treasurer" logger."""
        done = subprocess.run(
            [sys.executable, "-c", QUIET_SCRIPT, backend, "debug"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines = [
            line
            for line in done.stderr.splitlines()
            if line.startswith(
                ("DEBUG:treasurer", "INFO:treasurer", "WARNING:treasurer", "CRITICAL:treasurer")
            )
        ]
        for event in (
            "budget opened",
            "reservation created",
            "usage recorded",
            "reservation committed",
            "threshold crossed",
            "request refused",
            "reservation released",
            "budget closed",
        ):
            assert any(f":treasurer:{event} budget='quiet'" in line for line in lines), event
        assert any(line.startswith("CRITICAL:treasurer:threshold crossed") for line in lines)

    @pytest.mark.anyio
    async def test_stdlib_records_carry_the_event_as_data(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Without structlog configured, each event is a record of the "treasurer" logger
        whose ``treasurer`` attribute holds the event's fields (dollars, not nano-dollars),
        and a failing on_event is logged with its traceback."""

        def broken(event: treasurer.Event) -> None:
            raise RuntimeError("the application's bug")

        structlog.reset_defaults()
        try:
            with caplog.at_level(logging.DEBUG, logger="treasurer"):
                async with treasurer.open_budget(usd=1, name="plain", on_event=broken) as b:
                    await b.record(usd=Decimal("0.25"), model="m")
        finally:
            structlog.configure(
                wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
            )
        usage = [r for r in caplog.records if r.getMessage().startswith("usage recorded")]
        assert len(usage) == 1
        fields = usage[0].treasurer  # type: ignore[attr-defined]
        assert fields["event"] == "usage recorded"
        assert fields["budget"] == "plain"
        assert fields["model"] == "m"
        assert fields["amount"].usd == Decimal("0.25")
        failures = [r for r in caplog.records if r.getMessage().startswith("on_event callback")]
        assert failures
        assert failures[0].exc_info is not None
        assert failures[0].exc_info[1].args == ("the application's bug",)
