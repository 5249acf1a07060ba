"""Usage records with metadata, and usage() reports per period with top models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import pytest

import treasurer
import treasurer.sync
from treasurer import Window

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
