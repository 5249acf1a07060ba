"""Usage records with metadata, and usage() reports per period with top models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import pytest

import treasurer
import treasurer.sync
from treasurer import Window
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 22, 10, tzinfo=UTC)


class TestUsage:
    async def test_report_with_top_models(self) -> None:
        """usage() gives used, limits, percent, remaining, reserved and the top models."""
        now = [START]
        async with treasurer.open_budget(
            tokens=10_000, usd=10, windows=[Window.day(usd=5)], clock=lambda: now[0]
        ) as budget:
            await budget.record(
                input_tokens=1000, output_tokens=500, usd=0.05, model="gpt-4o", request_id="r1"
            )
            await budget.record(input_tokens=200, output_tokens=100, usd=0.2, model="claude")
            async with budget.reserve(tokens=2000, usd=1) as r:
                r.commit(
                    input_tokens=2000, output_tokens=1000, usd=0.03, model="mini", tags={"a": "b"}
                )
            await budget.charge(tokens=100, usd=0.01)  # no model: counted, not ranked
            async with budget.reserve(tokens=500):
                report = await budget.usage()
            assert report.period == "lifetime"
            assert (report.used.input_tokens, report.used.output_tokens) == (3200, 1600)
            assert report.used.tokens == 4900
            assert report.used.usd == Decimal("0.29")
            assert report.reserved.tokens == 500
            assert report.open_reservations == 1
            assert report.limits == treasurer.Caps(tokens=10_000, usd=Decimal(10))
            assert report.remaining.tokens == 10_000 - 4900 - 500
            assert report.percent_used == {"tokens": 49.0, "usd": pytest.approx(2.9)}
            assert report.top_models_by_tokens == (
                ("mini", 3000),
                ("gpt-4o", 1500),
                ("claude", 300),
            )
            assert report.top_models_by_usd == (
                ("claude", Decimal("0.2")),
                ("gpt-4o", Decimal("0.05")),
                ("mini", Decimal("0.03")),
            )
            assert report.models["gpt-4o"].input_tokens == 1000
            assert report.resets_at is None
            top_one = await budget.usage(top=1)
            assert top_one.top_models_by_tokens == (("mini", 3000),)

            day = await budget.usage("day")
            assert (day.period, day.used.usd, day.limits.usd) == ("day", Decimal("0.29"), 5)
            assert day.resets_at == datetime(2026, 11, 23, tzinfo=UTC)
            now[0] += timedelta(days=1)
            day = await budget.usage("day")
            assert (day.used.usd, day.models, day.top_models_by_usd) == (0, {}, ())
            assert (await budget.usage()).used.usd == Decimal("0.29")  # the lifetime keeps it

    async def test_rolling_window_models_age_out(self) -> None:
        """In a rolling window a model's usage leaves with its charges."""
        now = [START]
        async with treasurer.open_budget(
            windows=[Window.rolling(timedelta(minutes=10), tokens=1000, name="burst")],
            clock=lambda: now[0],
        ) as budget:
            await budget.record(tokens=100, model="a")
            now[0] += timedelta(minutes=5)
            await budget.record(tokens=50, model="b")
            now[0] += timedelta(minutes=5)
            report = await budget.usage("burst")
            assert report.top_models_by_tokens == (("b", 50),)

    async def test_bad_arguments(self) -> None:
        """Bad metadata, periods or top counts are refused with typed errors."""
        async with treasurer.open_budget(tokens=10) as budget:
            with pytest.raises(treasurer.InvalidAmountType, match="model"):
                await budget.record(tokens=1, model=5)  # type: ignore[typeddict-item]
            with pytest.raises(treasurer.InvalidAmountType, match="tags"):
                await budget.record(tokens=1, tags=["x"])  # type: ignore[typeddict-item]
            with pytest.raises(treasurer.InvalidOption, match="no period named 'week'"):
                await budget.usage("week")
            with pytest.raises(treasurer.InvalidOption):
                await budget.usage(7)  # type: ignore[arg-type]
            with pytest.raises(treasurer.InvalidAmount):
                await budget.usage(top=0)
            assert budget.totals().calls == 0

    async def test_metadata_is_logged(self, captured_logs: list[dict[str, object]]) -> None:
        """Records and commits log their metadata with the amounts."""
        async with treasurer.open_budget(tokens=10) as budget:
            await budget.record(
                tokens=1, model="m", request_id="r", session_id="s", tags={"k": "v"}
            )
        (entry,) = [e for e in captured_logs if e["event"] == "usage recorded"]
        assert (entry["model"], entry["request_id"], entry["session_id"]) == ("m", "r", "s")
        assert entry["tags"] == {"k": "v"}

    def test_from_threads(self) -> None:
        """The sync facade reports usage too."""
        with treasurer.sync.open_budget(tokens=100) as budget:
            budget.record(tokens=10, model="x")
            with budget.reserve(tokens=5) as r:
                r.commit(tokens=5, model="y")
            assert budget.usage().top_models_by_tokens == (("x", 10), ("y", 5))


class TestSmallPaths:
    async def test_a_model_accumulates(self) -> None:
        """Several records of one model add up in its totals."""
        async with treasurer.open_budget(windows=[Window.day(tokens=100, tz=UTC)]) as budget:
            await budget.record(tokens=3, model="m")
            await budget.record(tokens=4, model="m")
            assert (await budget.usage()).models["m"].tokens == 7
            assert (await budget.usage("day")).models["m"].tokens == 7

    async def test_event_message_and_a_closed_subscription(self) -> None:
        """Every event has a message; offering to a closed subscription is harmless."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(tokens=10, on_event=events.append) as budget:
            async with budget.subscribe() as subscription:
                subscription.close()
                async with budget.reserve(tokens=1) as r:
                    r.commit(tokens=1)
            assert subscription.missed == 0
        created = next(e for e in events if isinstance(e, treasurer.ReservationCreated))
        assert created.message == f"ReservationCreated in budget {budget.name!r}"


class TestSyncDetails:
    def test_reservation_properties_and_views_as_context_managers(self) -> None:
        """A sync reservation shows its id and deadline; a view can be used with `with`."""
        with treasurer.sync.open_budget(tokens=10) as budget:
            with budget.reserve(tokens=1) as r:
                assert r.id > 0
                assert r.deadline is not None
                r.commit(tokens=1)

        async def main() -> None:
            async with treasurer.open_budget(tokens=10) as async_budget:
                view = async_budget.sync_view()

                def use() -> None:
                    with view as same:
                        same.record(tokens=2)
                    assert view.closed

                await anyio.to_thread.run_sync(use)
                assert async_budget.totals().tokens == 2

        anyio.run(main)


def recorded(events: list[treasurer.Event]) -> list[treasurer.UsageRecorded]:
    return [e for e in events if isinstance(e, treasurer.UsageRecorded)]


class TestMetadata:
    async def test_a_reservation_takes_the_model(self) -> None:
        """reserve(model=...) is accepted; the model reaches UsageRecorded and usage()."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(tokens=1000, on_event=events.append) as budget:
            async with budget.reserve(tokens=100, model="gpt-4o") as r:
                r.commit(tokens=80)
            report = await budget.usage()
        (used,) = recorded(events)
        assert (used.model, used.source, used.reservation) == ("gpt-4o", "commit", r.id)
        assert report.models["gpt-4o"].tokens == 80
        created = [e for e in events if isinstance(e, treasurer.ReservationCreated)]
        assert [e.model for e in created] == ["gpt-4o"]

    async def test_ids_and_tags_reach_the_usage_event(self) -> None:
        """request_id, session_id and tags given to reserve reach UsageRecorded; the
        commit's metadata adds to them and wins where both say something."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(tokens=1000, on_event=events.append) as budget:
            async with budget.reserve(
                tokens=100,
                model="a",
                request_id="req-1",
                session_id="sess-1",
                tags={"team": "search", "stage": "draft"},
            ) as r:
                r.commit(tokens=50, model="b", tags={"stage": "final", "cached": "no"})
            async with budget.reserve(tokens=10, session_id="sess-2") as r:
                r.commit()
        first, second = recorded(events)
        assert (first.model, first.request_id, first.session_id) == ("b", "req-1", "sess-1")
        assert first.tags == {"team": "search", "stage": "final", "cached": "no"}
        assert (second.model, second.request_id, second.session_id) == (None, None, "sess-2")
        assert second.tags == {}
        assert (first.usage.tokens, second.usage.tokens) == (50, 10)

    async def test_every_settled_call_emits_its_usage(self) -> None:
        """record, charge, consume and a commit each emit one UsageRecorded with its
        source, amounts and metadata."""
        events: list[treasurer.Event] = []
        async with treasurer.open_budget(tokens=1000, usd=1, on_event=events.append) as b:
            await b.record(input_tokens=3, output_tokens=2, usd=0.01, model="m", request_id="r")
            await b.charge(tokens=4, session_id="s")
            assert await b.consume(5)
            async with b.reserve(tokens=6) as r:
                r.commit()
        used = recorded(events)
        assert [e.source for e in used] == ["record", "charge", "consume", "commit"]
        assert [e.usage.tokens for e in used] == [5, 4, 5, 6]
        assert used[0].usage == treasurer.Usage(3, 2, 5, Decimal("0.01"), 1)
        assert (used[0].model, used[0].request_id, used[1].session_id) == ("m", "r", "s")
        assert all(e.budget == b.name and e.tenant is None and e.child is None for e in used)

    async def test_a_subscriber_gets_usage_events_without_a_callback(self) -> None:
        """With only a subscriber listening, record() still emits UsageRecorded."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with budget.subscribe() as events:
                await budget.record(tokens=7, model="m")
                (event,) = events.pending()
        assert isinstance(event, treasurer.UsageRecorded)
        assert (event.usage.tokens, event.model) == (7, "m")


class TestGroupBy:
    async def test_usage_per_model_session_and_tag(self) -> None:
        """usage(group_by=...) with a MemoryUsageLog sums usage per value; records without
        the metadata group under None."""
        async with treasurer.open_budget(
            tokens=10_000, usage_log=treasurer.MemoryUsageLog()
        ) as budget:
            async with budget.reserve(tokens=100, model="big", session_id="s1") as r:
                r.commit(tokens=90, tags={"team": "search"})
            await budget.record(tokens=20, model="small", session_id="s1", tags={"team": "ads"})
            await budget.record(tokens=5, model="small", session_id="s2")
            await budget.charge(tokens=1)
            by_model = await budget.usage(group_by="model")
            by_session = await budget.usage(group_by="session_id")
            by_team = await budget.usage(group_by="tag:team")
        assert by_model.group_by == "model"
        assert {k: v.tokens for k, v in by_model.groups.items()} == {
            "big": 90,
            "small": 25,
            None: 1,
        }
        assert {k: v.tokens for k, v in by_session.groups.items()} == {
            "s1": 110,
            "s2": 5,
            None: 1,
        }
        assert {k: v.tokens for k, v in by_team.groups.items()} == {
            "search": 90,
            "ads": 20,
            None: 6,
        }
        assert by_model.groups_complete
        assert by_model.used.tokens == 116

    async def test_groups_per_tenant_and_period(self) -> None:
        """A tenant's report groups only its records; a window's report only the period's."""
        clock = ManualClock(START)
        async with treasurer.open_budget(
            windows=[Window.day(tokens=1000)], clock=clock, usage_log=treasurer.MemoryUsageLog()
        ) as budget:
            await budget.tenant("a").record(tokens=10, model="m")
            await budget.tenant("b").record(tokens=20, model="m")
            clock.advance(days=1)
            await budget.tenant("a").record(tokens=1, model="n")
            by_tenant = await budget.usage(group_by="tenant")
            a_lifetime = await budget.tenant("a").usage(group_by="model")
            today = await budget.usage("day", group_by="model")
        assert {k: v.tokens for k, v in by_tenant.groups.items()} == {"a": 11, "b": 20}
        assert {k: v.tokens for k, v in a_lifetime.groups.items()} == {"m": 10, "n": 1}
        assert {k: v.tokens for k, v in today.groups.items()} == {"n": 1}

    async def test_the_groups_add_up_to_what_was_used(self) -> None:
        """After a consume corrected by a refund, the groups of the lifetime report still
        add up to the usage the report shows."""
        async with treasurer.open_budget(
            tokens=1000, usage_log=treasurer.MemoryUsageLog()
        ) as budget:
            await budget.record(tokens=10, model="m")
            assert await budget.consume(50)
            await budget.refund(20, 50)
            assert await budget.consume(5)
            await budget.refund(9, 5)  # 4 more than estimated
            report = await budget.usage(group_by="model")
        assert report.used.tokens == 10 + 20 + 9
        assert sum(usage.tokens for usage in report.groups.values()) == report.used.tokens

    async def test_a_call_taken_back_leaves_the_records_adding_up(self) -> None:
        """A record whose caller is cancelled after the budget applied it is taken back:
        used is zero again, and the usage events and groups add up to zero too."""
        caller = anyio.CancelScope()
        armed = False

        def clock() -> datetime:
            """The budget's clock; read inside the batch, it cancels the caller there."""
            nonlocal armed
            if armed:
                armed = False
                caller.cancel()
            return START

        events: list[treasurer.Event] = []
        async with treasurer.open_budget(
            tokens=1000, clock=clock, usage_log=treasurer.MemoryUsageLog()
        ) as budget:
            async with budget.subscribe() as subscription:

                async def call() -> None:
                    with caller:
                        await budget.record(tokens=10, model="m")

                async with anyio.create_task_group() as tg:
                    armed = True
                    tg.start_soon(call)
                await anyio.wait_all_tasks_blocked()
                events = subscription.pending()
            assert caller.cancelled_caught
            assert budget.snapshot().tokens_used == 0
            report = await budget.usage(group_by="model")
        assert sum(e.usage.tokens for e in recorded(events)) == 0
        assert sum(usage.tokens for usage in report.groups.values()) == 0

    async def test_a_bounded_log_says_when_groups_are_incomplete(self) -> None:
        """A MemoryUsageLog keeps its last ``capacity`` records; a report over a period
        that lost some says so."""
        async with treasurer.open_budget(usage_log=treasurer.MemoryUsageLog(3)) as budget:
            for n in range(5):
                await budget.record(tokens=1, model=f"m{n}")
            report = await budget.usage(group_by="model")
        assert not report.groups_complete
        assert set(report.groups) == {"m2", "m3", "m4"}

    async def test_group_by_needs_a_usage_log_and_a_known_key(self) -> None:
        """group_by without a usage log, or naming no metadata, raises InvalidOption."""
        async with treasurer.open_budget(tokens=10) as budget:
            with pytest.raises(treasurer.InvalidOption, match="usage_log"):
                await budget.usage(group_by="model")
        async with treasurer.open_budget(usage_log=treasurer.MemoryUsageLog()) as budget:
            for key in ("colour", "tag:", "tags"):
                with pytest.raises(treasurer.InvalidOption):
                    await budget.usage(group_by=key)
        for capacity in (0, -1, 1.5, True):
            with pytest.raises(treasurer.InvalidOption):
                treasurer.MemoryUsageLog(capacity)  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption):
            async with treasurer.open_budget(usage_log=[]):  # type: ignore[arg-type]
                pass  # pragma: no cover

    def test_from_threads(self) -> None:
        """The sync facade groups usage too."""
        with treasurer.sync.open_budget(usage_log=treasurer.MemoryUsageLog()) as budget:
            with budget.reserve(tokens=5, model="x") as r:
                r.commit()
            budget.record(tokens=2, model="y")
            report = budget.usage(group_by="model")
        assert {k: v.tokens for k, v in report.groups.items()} == {"x": 5, "y": 2}
