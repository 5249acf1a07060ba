"""Time windows, driven by an injected clock: no test sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

import treasurer
import treasurer.sync
from treasurer import Window
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


class TestCalendarWindows:
    async def test_hour_rolls_over_at_the_exact_instant(self) -> None:
        """An hourly cap refuses until the hour ends, and admits again at exactly HH:00."""
        clock = ManualClock(utc(2026, 11, 22, 10, 15))
        async with treasurer.open_budget(windows=[Window.hour(tokens=100)], clock=clock) as b:
            await b.record(tokens=100)
            clock.set(utc(2026, 11, 22, 10, 59, 59, 999_999))
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await b.record(tokens=1)
            error = caught.value
            assert (error.cap, error.window, error.limit) == ("tokens", "hour", 100)
            assert error.resets_at == utc(2026, 11, 22, 11)
            assert "per hour" in str(error)
            assert "2026-11-22T11:00:00+00:00" in str(error)
            clock.set(utc(2026, 11, 22, 11))
            await b.record(tokens=100)
            clock.set(utc(2026, 11, 22, 11, 59, 59))
            assert not (await b.check(tokens=1)).fits
            assert b.snapshot().window("hour").used.tokens == 100
            assert b.snapshot().tokens_used == 200  # the lifetime keeps counting

    async def test_correct_after_a_long_idle_gap(self) -> None:
        """A window that rolled over many times while nobody called is right at the next call."""
        clock = ManualClock(utc(2026, 1, 31, 23, 59))
        windows = [Window.month(usd=1), Window.hour(usd=1)]
        async with treasurer.open_budget(windows=windows, clock=clock) as b:
            await b.record(usd=1)
            clock.advance(days=400)  # 2027-03-07
            check = await b.check(usd=1)
            assert check.fits
            month = b.snapshot().window("month")
            assert month.used.usd == 0
            assert month.resets_at == utc(2027, 4, 1)

    async def test_month_boundaries(self) -> None:
        """Months end on their own last day, December included."""
        clock = ManualClock(utc(2026, 12, 31, 23, 59, 59))
        async with treasurer.open_budget(windows=[Window.month(tokens=10)], clock=clock) as b:
            await b.record(tokens=10)
            assert b.snapshot().window("month").resets_at == utc(2027, 1, 1)
            clock.set(utc(2027, 1, 1))
            await b.record(tokens=10)
            clock.set(utc(2027, 2, 28, 12))
            await b.record(tokens=10)
            assert b.snapshot().window("month").resets_at == utc(2027, 3, 1)

    async def test_week_starts_on_monday(self) -> None:
        """An ISO week runs from Monday 00:00 to the next Monday."""
        clock = ManualClock(utc(2026, 11, 22, 12))  # a Sunday
        async with treasurer.open_budget(windows=[Window.week(requests=1)], clock=clock) as b:
            await b.record()
            clock.set(utc(2026, 11, 22, 23, 59, 59))
            assert not (await b.check()).fits
            clock.set(utc(2026, 11, 23))  # Monday
            await b.record()
            assert b.snapshot().window("week").resets_at == utc(2026, 11, 30)

    async def test_day_in_a_time_zone(self) -> None:
        """A Berlin day starts at 00:00 Berlin time: 23:00 UTC in winter, 22:00 in summer."""
        clock = ManualClock(utc(2026, 11, 22, 12))
        day = Window.day(tokens=10, tz="Europe/Berlin")
        async with treasurer.open_budget(windows=[day], clock=clock) as b:
            await b.record(tokens=10)
            clock.set(utc(2026, 11, 22, 22, 59, 59))
            assert not (await b.check(tokens=1)).fits
            clock.set(utc(2026, 11, 22, 23))
            await b.record(tokens=10)  # a new Berlin day...
            clock.set(utc(2026, 11, 23, 22, 59))
            assert not (await b.check(tokens=1)).fits  # ...that lasts until 23:00 UTC
            assert b.snapshot().window("day").resets_at == utc(2026, 11, 23, 23)
        clock = ManualClock(utc(2026, 7, 1, 21, 59))
        async with treasurer.open_budget(windows=[day], clock=clock) as b:
            await b.record(tokens=10)
            clock.set(utc(2026, 7, 1, 22))
            await b.record(tokens=10)
            clock.set(utc(2026, 7, 2, 21, 59))
            assert not (await b.check(tokens=1)).fits

    async def test_a_day_with_a_clock_change_is_23_hours(self) -> None:
        """The Berlin day of the spring clock change ends 23 hours after it starts."""
        clock = ManualClock(utc(2026, 3, 29, 12))
        day = Window.day(tokens=10, tz="Europe/Berlin")
        async with treasurer.open_budget(windows=[day], clock=clock) as b:
            await b.record(tokens=1)
            assert b.snapshot().window("day").resets_at == utc(2026, 3, 29, 22)

    async def test_several_windows_at_once(self) -> None:
        """A request must fit every window; the refusal names the one that refused."""
        clock = ManualClock(utc(2026, 11, 22, 9))
        windows = [Window.hour(tokens=100), Window.day(tokens=150)]
        async with treasurer.open_budget(tokens=1000, windows=windows, clock=clock) as b:
            await b.record(tokens=100)
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await b.record(tokens=1)
            assert caught.value.window == "hour"
            clock.advance(hours=1)
            await b.record(tokens=50)
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await b.record(tokens=1)
            assert caught.value.window == "day"
            assert caught.value.resets_at == utc(2026, 11, 23)
            assert caught.value.available == 0


class TestRollingWindows:
    async def test_charges_leave_after_the_duration(self) -> None:
        """A rolling hour frees each charge exactly 60 minutes after it was made."""
        start = utc(2026, 11, 22, 10)
        clock = ManualClock(start)
        rolling = Window.rolling(timedelta(minutes=60), tokens=100)
        assert rolling.name == "rolling 3600s"
        async with treasurer.open_budget(windows=[rolling], clock=clock) as b:
            await b.record(tokens=50)
            clock.advance(minutes=30)
            await b.record(tokens=50)
            clock.set(start + timedelta(minutes=59, seconds=59))
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await b.record(tokens=1)
            assert caught.value.window == "rolling 3600s"
            assert caught.value.resets_at == start + timedelta(minutes=60)
            clock.set(start + timedelta(minutes=60))
            await b.record(tokens=50)
            assert b.snapshot().window("rolling 3600s").used.tokens == 100
            clock.advance(hours=5)
            assert (await b.check(tokens=100)).fits
            assert b.snapshot().window("rolling 3600s").resets_at is None

    async def test_a_free_call_with_a_model_ages_out_cleanly(self) -> None:
        """A zero-amount record with a model (a cached answer) in a 60 s rolling window
        leaves the budget working after the window has passed."""
        clock = ManualClock(utc(2026, 11, 22, 10))
        rolling = Window.rolling(timedelta(seconds=60), tokens=100)
        async with treasurer.open_budget(windows=[rolling], clock=clock) as b:
            await b.record(tokens=5, model="m")
            clock.advance(seconds=1)
            await b.record(tokens=0, requests=0, model="m")
            clock.advance(seconds=120)
            await b.record(tokens=100, model="m")
            assert b.snapshot().window("rolling 60s").used.tokens == 100
            assert (await b.usage("rolling 60s")).models["m"].tokens == 100
            assert not b.closed

    async def test_named_rolling_window(self) -> None:
        """A window can be given its own name."""
        clock = ManualClock(utc(2026, 11, 22))
        window = Window.rolling(timedelta(seconds=90), name="burst", requests=2)
        async with treasurer.open_budget(windows=[window], clock=clock) as b:
            await b.record()
            await b.record()
            with pytest.raises(treasurer.BudgetExceeded, match="per burst"):
                await b.record()


class TestWindowAccounting:
    async def test_reservations_count_across_a_rollover(self) -> None:
        """A reservation made in one hour still holds in the next, and is charged there."""
        clock = ManualClock(utc(2026, 11, 22, 10, 50))
        async with treasurer.open_budget(windows=[Window.hour(tokens=100)], clock=clock) as b:
            async with b.reserve(tokens=80) as r:
                clock.set(utc(2026, 11, 22, 11, 4))  # before its 15-minute time-to-live ends
                answer = await b.check(tokens=21)
                assert (answer.fits, answer.window) == (False, "hour")
                assert answer.windows[0].remaining.tokens == 20
                r.commit(tokens=70)
            hour = b.snapshot().window("hour")
            assert hour.used.tokens == 70
            assert hour.remaining.tokens == 30

    async def test_a_tenants_commit_after_its_hour_ended_counts_in_the_new_hour(self) -> None:
        """A tenant not used since its hour ended is charged in the new hour: not in
        the old one, which its next use drops (its cap then let 160 into an hour of
        100). The clock wakes no budget when it moves, as the system clock does not:
        the commit is the first batch of the new hour."""
        now = [utc(2026, 11, 22, 10, 59, 59)]
        caps = treasurer.TenantCaps(windows=[Window.hour(tokens=100)])
        seen: list[str] = []
        async with treasurer.open_budget(
            tokens=1000,
            tenant_defaults=caps,
            clock=lambda: now[0],
            thresholds=[],
            on_event=lambda event: seen.append(type(event).__name__),
        ) as b:
            acme = b.tenant("acme")
            async with acme.reserve(tokens=100) as r:
                now[0] = utc(2026, 11, 22, 11, 0, 1)
                r.commit(tokens=60)
            assert acme.snapshot().window("hour").used.tokens == 60
            assert not await acme.consume(100)
            assert await acme.consume(40)
        # The new hour began before the usage it counts (a reader that starts a
        # new total at each roll-over counts the 60 in it).
        assert seen.index("WindowRolledOver") < seen.index("UsageRecorded")

    async def test_refunds_do_not_free_window_usage(self) -> None:
        """A refund frees lifetime budget at once but windows keep counting until they roll."""
        clock = ManualClock(utc(2026, 11, 22, 10))
        async with treasurer.open_budget(
            tokens=1000, windows=[Window.hour(tokens=100)], clock=clock
        ) as b:
            assert await b.consume(60)
            await b.refund(10, 60)
            assert b.remaining == 990
            assert b.snapshot().window("hour").used.tokens == 60
            assert not await b.consume(41)
            assert await b.consume(40)
            await b.refund(80, 40)  # used more than estimated: charged everywhere
            assert b.snapshot().window("hour").used.tokens == 140
            assert b.snapshot().tokens_used == 90

    async def test_larger_than_a_window_cap(self) -> None:
        """A request larger than a window's cap can never fit: RequestTooLarge naming it."""
        clock = ManualClock(utc(2026, 11, 22))
        async with treasurer.open_budget(windows=[Window.day(usd=1)], clock=clock) as b:
            with pytest.raises(treasurer.RequestTooLarge) as caught:
                await b.record(usd=Decimal("1.01"))
            assert (caught.value.window, caught.value.cap) == ("day", "usd")
            assert "per day" in str(caught.value)

    async def test_reset_clears_windows(self) -> None:
        """reset() zeroes window usage too."""
        clock = ManualClock(utc(2026, 11, 22))
        windows = [Window.day(tokens=10), Window.rolling(timedelta(hours=1), tokens=10)]
        async with treasurer.open_budget(windows=windows, clock=clock) as b:
            await b.record(tokens=10)
            await b.reset()
            assert all(w.used.tokens == 0 for w in b.snapshot().windows)
            await b.record(tokens=10)

    async def test_snapshot_windows(self) -> None:
        """The snapshot lists each window with caps, usage, remaining and reset time."""
        clock = ManualClock(utc(2026, 11, 22, 10, 30))
        async with treasurer.open_budget(
            windows=[Window.hour(tokens=100, usd=2)], clock=clock
        ) as b:
            async with b.reserve(tokens=30, usd=0.5):
                await b.record(tokens=20, usd=Decimal("0.25"))
                (hour,) = b.snapshot().windows
            assert hour.name == hour.kind == "hour"
            assert hour.caps == treasurer.Caps(tokens=100, usd=Decimal(2))
            assert (hour.used.tokens, hour.used.usd) == (20, Decimal("0.25"))
            assert hour.remaining.tokens == 50
            assert hour.remaining.usd == Decimal("1.25")
            assert hour.remaining.input_tokens is None
            assert hour.resets_at == utc(2026, 11, 22, 11)
            with pytest.raises(KeyError, match="day"):
                b.snapshot().window("day")


class TestTimeZones:
    async def test_the_repeated_half_hour_of_lord_howe(self) -> None:
        """Australia/Lord_Howe repeats 01:30-02:00 on 2026-04-05: each pass is an hour
        period of its own, and one instant admits at most 100 tokens of a 100/hour cap."""
        zone = ZoneInfo("Australia/Lord_Howe")
        first = datetime(2026, 4, 5, 1, 45, tzinfo=zone).astimezone(UTC)  # 14:45 UTC
        second = datetime(2026, 4, 5, 1, 45, fold=1, tzinfo=zone).astimezone(UTC)  # 15:15
        clock = ManualClock(first)
        hourly = Window.hour(tokens=100, tz="Australia/Lord_Howe")
        async with treasurer.open_budget(windows=[hourly], clock=clock) as b:
            for now in (first, second):
                clock.set(now)
                admitted = 0
                for amount in (100, 60, 1):
                    while (await b.check(tokens=amount)).fits:
                        await b.record(tokens=amount)
                        admitted += amount
                    assert not await b.consume(amount)
                assert admitted == 100
                assert b.snapshot().window("hour").used.tokens == 100
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await b.record(tokens=1)
            assert caught.value.resets_at == utc(2026, 4, 4, 15, 30)
            assert b.totals().tokens == 200

    @pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", ZoneInfo("America/New_York"), UTC])
    async def test_zones_by_name_or_tzinfo(self, tz: object) -> None:
        """A window's zone is a name or a tzinfo; days reset at that zone's midnight."""
        clock = ManualClock(utc(2026, 1, 15, 12))
        async with treasurer.open_budget(
            windows=[Window.day(tokens=10, tz=tz)],
            clock=clock,  # type: ignore[arg-type]
        ) as b:
            await b.record(tokens=10)
            zone = ZoneInfo(tz) if isinstance(tz, str) else tz
            midnight = datetime(2026, 1, 16, tzinfo=zone).astimezone(UTC)  # type: ignore[arg-type]
            assert b.snapshot().window("day").resets_at == midnight

    @pytest.mark.parametrize("tz", [123, 1.5, b"UTC", "Mars/Olympus_Mons", ""], ids=repr)
    def test_a_zone_that_is_no_zone(self, tz: object) -> None:
        """Window.day(tz=123) and other non-zones raise InvalidOption."""
        with pytest.raises(treasurer.InvalidOption):
            Window.day(tokens=1, tz=tz)  # type: ignore[arg-type]


class TestBadWindows:
    @pytest.mark.parametrize(
        ("make", "error"),
        [
            (lambda: Window.hour(), treasurer.InvalidOption),
            (lambda: Window.day(tokens=1, tz="Mars/Olympus_Mons"), treasurer.InvalidOption),
            (lambda: Window.rolling(timedelta(0), tokens=1), treasurer.InvalidOption),
            (lambda: Window.rolling(60, tokens=1), treasurer.InvalidOption),  # type: ignore[arg-type]
            (lambda: Window.hour(tokenz=1), treasurer.UnknownAxis),
            (lambda: Window.hour(tokens=-1), treasurer.InvalidAmount),
        ],
    )
    async def test_bad_window(self, make: object, error: type) -> None:
        """A window without caps, with a bad zone, duration or cap is refused when built."""
        with pytest.raises(error):
            make()  # type: ignore[operator]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"windows": [1]},
            {"windows": Window.hour(tokens=1)},
            {"windows": [Window.hour(tokens=1), Window.hour(tokens=2)]},
            {"windows": [Window.hour(tokens=1, name="request")]},
            {"clock": 5},
            {"clock": lambda: datetime(2026, 1, 1)},
            {"clock": lambda: "noon"},
        ],
        ids=["int", "not-a-list", "twice", "reserved-name", "clock-int", "naive", "not-time"],
    )
    async def test_bad_budget_options(self, kwargs: dict[str, object]) -> None:
        """Bad windows or clocks raise InvalidOption (a ValueError) before the budget opens."""
        with pytest.raises(treasurer.InvalidOption) as caught:
            async with treasurer.open_budget(**kwargs):  # type: ignore[arg-type]
                pass  # pragma: no cover
        assert isinstance(caught.value, ValueError)


class TestSyncWindows:
    def test_windows_from_threads(self) -> None:
        """The sync facade takes windows and a clock too, and validates them in the caller."""
        clock = ManualClock(utc(2026, 11, 22, 10))
        with treasurer.sync.open_budget(windows=[Window.hour(tokens=5)], clock=clock) as b:
            b.record(tokens=5)
            assert not b.check(tokens=1).fits
            clock.advance(hours=1)
            b.record(tokens=5)
        with pytest.raises(treasurer.InvalidOption):
            treasurer.sync.open_budget(windows=[3])  # type: ignore[list-item]
