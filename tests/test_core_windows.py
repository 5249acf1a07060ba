"""Time windows in the pure core: calendar periods from first principles, window
state, and the ledger with windows at awkward instants (a repeated half hour,
pytz zones, the end of year 9999). No event loop; time is an argument."""

from __future__ import annotations

from collections.abc import Hashable
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
import pytz
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core_support import T0, TOKENS, ZERO, apply, figures, make_ledger, state, tokens
from treasurer import InvalidOption, WindowRolledOver
from treasurer._core.axes import add
from treasurer._core.commands import Commit, Meta, Record, Reserve, TakeBack
from treasurer._core.outcomes import Charged, Granted, Refusal, Settled
from treasurer._core.scopes import ROOT
from treasurer._core.windows import FOREVER, Window, WindowState, period_bounds

MICROSECOND = timedelta(microseconds=1)
ZONES = (
    "UTC",
    "Europe/Berlin",
    "Asia/Kolkata",
    "America/New_York",
    "Australia/Lord_Howe",  # half-hour daylight saving: a half hour happens twice
    "America/Santiago",  # clocks change at midnight
    "Pacific/Chatham",  # +12:45
)
CALENDAR = ("hour", "day", "week", "month")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
# 2026-04-05: at 02:00 (+11) Lord Howe goes back to 01:30 (+10:30); 01:30-02:00 happens twice.
FIRST_0145 = datetime(2026, 4, 5, 1, 45, tzinfo=LORD_HOWE).astimezone(UTC)  # 14:45 UTC
SECOND_0145 = datetime(2026, 4, 5, 1, 45, fold=1, tzinfo=LORD_HOWE).astimezone(UTC)  # 15:15 UTC


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- calendar periods from first principles ------------------------------------------


def period_key(kind: str, zone: tzinfo, when: datetime) -> Hashable:
    """Which calendar period ``when`` falls in: equal keys, same period.

    The hour carries the UTC offset, so the two passes through an hour (or half
    hour) that the local clock repeats are two periods.
    """
    local = when.astimezone(zone)
    if kind == "hour":
        return local.date(), local.hour, local.utcoffset()
    if kind == "day":
        return local.date()
    if kind == "week":
        year, week, _ = local.isocalendar()
        return year, week
    assert kind == "month"
    return local.year, local.month


def period_end(kind: str, zone: tzinfo, now: datetime) -> datetime:
    """The first instant after ``now`` in another period, by bisection to the microsecond."""
    key = period_key(kind, zone, now)
    low, high = now, now + timedelta(days=32)  # every period is shorter than 32 days
    assert period_key(kind, zone, high) != key
    while high - low > MICROSECOND:
        middle = low + (high - low) // 2
        if period_key(kind, zone, middle) == key:
            low = middle
        else:
            high = middle
    return high


def period_start(kind: str, zone: tzinfo, now: datetime) -> datetime:
    """The first instant of the period holding ``now``, by bisection to the microsecond."""
    key = period_key(kind, zone, now)
    low, high = now - timedelta(days=32), now
    assert period_key(kind, zone, low) != key
    while high - low > MICROSECOND:
        middle = low + (high - low) // 2
        if period_key(kind, zone, middle) == key:
            high = middle
        else:
            low = middle
    return high


def window(kind: str, zone: str, **caps: int) -> Window:
    maker = getattr(Window, kind)
    return maker(tz=zone, **caps)  # type: ignore[no-any-return]


# Daylight-saving changes and other odd instants of the zones above.
ODD_INSTANTS = (
    FIRST_0145,
    SECOND_0145,
    utc(2026, 4, 4, 15),  # Lord Howe: the repeated half hour begins
    utc(2026, 4, 4, 15, 30),  # and ends
    utc(2026, 10, 3, 15, 30),  # Lord Howe: 02:00 (+10:30) -> 02:30 (+11)
    utc(2026, 3, 29, 1),  # Berlin spring forward
    utc(2026, 10, 25, 1),  # Berlin fall back
    utc(2026, 3, 8, 7),  # New York spring forward
    utc(2026, 11, 1, 6),  # New York fall back
    utc(2026, 4, 5, 3),  # Santiago: 00:00 -> 23:00 the day before
    utc(2026, 9, 6, 4),  # Santiago: 00:00 -> 01:00
    utc(2026, 4, 4, 14),  # Chatham
    utc(2026, 12, 31, 18, 30),  # Kolkata new year
    utc(2028, 2, 29),
)


class TestPeriodBounds:
    @settings(max_examples=300, deadline=None)
    @given(
        kind=st.sampled_from(CALENDAR),
        zone=st.sampled_from(ZONES),
        now=st.one_of(
            st.builds(
                lambda anchor, seconds: anchor + timedelta(seconds=seconds),
                st.sampled_from(ODD_INSTANTS),
                st.integers(-3 * 3600, 3 * 3600) | st.sampled_from([0, -1, 1]),
            ),
            st.datetimes(
                min_value=datetime(2024, 1, 1),
                max_value=datetime(2030, 12, 31),
                timezones=st.just(UTC),
            ),
        ),
    )
    @example(kind="hour", zone="Australia/Lord_Howe", now=SECOND_0145)
    @example(kind="hour", zone="Australia/Lord_Howe", now=utc(2026, 4, 4, 15))
    # St. John's sprang forward at 00:01 local until 2011: the change falls inside an hour
    @example(kind="hour", zone="America/St_Johns", now=utc(2010, 3, 14, 3, 30, 30))
    def test_a_period_is_what_the_local_calendar_says(
        self, kind: str, zone: str, now: datetime
    ) -> None:
        """period_bounds gives the calendar period holding ``now``: it starts at the first
        instant of that local hour, day, ISO week or month and ends at the first instant of
        the next, so consecutive periods tile time."""
        tz = ZoneInfo(zone)
        start, end = period_bounds(window(kind, zone, tokens=1), now)
        assert start <= now < end
        assert end == period_end(kind, tz, now)
        assert start == period_start(kind, tz, now)
        assert period_bounds(window(kind, zone, tokens=1), end)[0] == end

    def test_the_repeated_half_hour_is_a_period_of_its_own(self) -> None:
        """In Lord Howe, the second pass through 01:30-02:00 is one period from 15:00 to
        15:30 UTC, after the first pass's hour ended."""
        lord_howe = Window.hour(tz="Australia/Lord_Howe", tokens=100)
        assert period_bounds(lord_howe, FIRST_0145) == (utc(2026, 4, 4, 14), utc(2026, 4, 4, 15))
        assert period_bounds(lord_howe, SECOND_0145) == (
            utc(2026, 4, 4, 15),
            utc(2026, 4, 4, 15, 30),
        )

    def test_the_end_of_time(self) -> None:
        """Periods at the end of year 9999 end at the last instant there is, never overflow."""
        last = utc(9999, 12, 31, 23, 30)
        for kind in CALENDAR:
            start, end = period_bounds(window(kind, "UTC", tokens=1), last)
            assert start <= last < end <= FOREVER
        assert period_bounds(Window.month(tokens=1), last) == (utc(9999, 12, 1), FOREVER)
        assert period_bounds(Window.hour(tokens=1), last)[1] == FOREVER


class TestWindowState:
    def test_a_rolling_window_keeps_one_entry_per_instant_and_model(self) -> None:
        """Charges of one instant and model share an entry; they leave the window
        together, and by-model usage keeps what is still inside."""
        state_ = WindowState(Window.rolling(timedelta(minutes=1), tokens=1_000), T0)
        state_.charge((0, 0, 10, 0, 1), T0, "gpt")
        state_.charge((0, 0, 5, 0, 1), T0, "gpt")  # same instant, same model: merged
        state_.charge((0, 0, 7, 0, 1), T0, None)  # same instant, no model: an entry of its own
        assert len(state_.entries) == 2
        assert state_.resets_at() == T0 + timedelta(minutes=1)
        assert state_.advance(T0 + timedelta(seconds=30)) is False
        state_.charge((0, 0, 3, 0, 1), T0 + timedelta(seconds=30), "gpt")
        assert state_.advance(T0 + timedelta(seconds=61)) is True  # the first instant leaves
        assert state_.used == (0, 0, 3, 0, 1)
        assert state_.by_model == {"gpt": (0, 0, 3, 0, 1)}
        assert state_.resets_at() == T0 + timedelta(seconds=90)
        assert state_.advance(T0 + timedelta(seconds=90)) is True
        assert (state_.used, state_.by_model, state_.resets_at()) == (ZERO, {}, None)

    def test_a_charge_of_nothing_leaves_no_entry(self) -> None:
        """A zero amount is not counted, so nothing has to age out later."""
        state_ = WindowState(Window.rolling(timedelta(minutes=1), tokens=10), T0)
        state_.charge(ZERO, T0, "m")
        assert (len(state_.entries), state_.by_model, state_.resets_at()) == (0, {}, None)

    def test_a_calendar_window_jumps_to_the_period_holding_now(self) -> None:
        """After a long idle gap a calendar window is in the period of now, empty."""
        state_ = WindowState(Window.day(tokens=10), T0)
        state_.charge(tokens(5), T0, None)
        assert state_.advance(T0 + timedelta(days=40, hours=3)) is True
        assert state_.used == ZERO
        assert (state_.start, state_.end) == (
            utc(2026, 2, 14),
            utc(2026, 2, 15),
        )
        assert state_.resets_at() == utc(2026, 2, 15)

    def test_take_back_counts_only_charges_of_the_current_period(self) -> None:
        """Taking back a charge made in an earlier period leaves the current one alone."""
        state_ = WindowState(Window.hour(tokens=100), T0)
        state_.charge(tokens(30), T0 + timedelta(minutes=59), None)
        state_.advance(T0 + HOUR)
        state_.charge(tokens(20), T0 + HOUR, None)
        state_.take_back(tokens(30), T0 + timedelta(minutes=59), None)
        assert state_.used == tokens(20)
        state_.take_back(tokens(20), T0 + HOUR, None)
        assert state_.used == ZERO

    def test_take_back_finds_its_entry_among_others_of_the_same_instant(self) -> None:
        """Taking back the last charge of an instant frees it, even when an entry of another
        model came between it and an earlier entry of the same instant and model."""
        state_ = WindowState(Window.rolling(timedelta(minutes=5), tokens=100), T0)
        state_.charge(tokens(30), T0, None)
        state_.charge(tokens(20), T0, "m")
        state_.charge(tokens(5, requests=0), T0, None)
        state_.take_back(tokens(5, requests=0), T0, None)
        assert state_.used == add(tokens(30), tokens(20))
        state_.take_back(tokens(30), T0, None)
        assert state_.used == tokens(20)

    def test_take_back_in_a_rolling_window_finds_its_entry(self) -> None:
        """A rolling window takes back from the entry of the charge's instant and model."""
        state_ = WindowState(Window.rolling(timedelta(minutes=5), tokens=100), T0)
        state_.charge(tokens(30), T0, "a")
        state_.charge(tokens(20), T0, "b")
        state_.take_back(tokens(30), T0, "b")  # more than b's entry holds: b's only
        assert state_.used == tokens(30)
        assert state_.by_model == {"a": tokens(30)}
        state_.take_back(tokens(5), T0 + MICROSECOND, "a")  # no entry then: nothing
        assert state_.used == tokens(30)


HOUR = timedelta(hours=1)


class TestRollingWindows:
    def test_a_zero_record_with_a_model_ages_out_cleanly(self) -> None:
        """record(tokens=5, model="m"), then a second later a record of nothing with the
        same model (a cached answer), then any call after the window passed, all work."""
        ledger = make_ledger(windows=[Window.rolling(timedelta(seconds=60), tokens=100)])
        assert isinstance(apply(ledger, Record(ROOT, tokens(5), Meta(model="m"))), Charged)
        one_second = T0 + timedelta(seconds=1)
        nothing = (0, 0, 0, 0, 0)
        assert isinstance(
            apply(ledger, Record(ROOT, nothing, Meta(model="m")), one_second), Charged
        )
        for seconds in (61, 62, 3600):
            later = T0 + timedelta(seconds=seconds)
            ledger.advance(later)
            assert isinstance(
                apply(ledger, Record(ROOT, tokens(1), Meta(model="m")), later), Charged
            )
            assert isinstance(apply(ledger, Reserve(ROOT, tokens(1)), later), Granted)
        assert figures(ledger).windows[0].used[TOKENS] == 1  # only the last call is inside
        assert state(ledger)[2] == 5

    def test_usage_leaves_a_rolling_window_when_its_span_has_passed(self) -> None:
        """A rolling window frees each charge exactly its duration after it was made."""
        ledger = make_ledger(windows=[Window.rolling(timedelta(seconds=90), tokens=10)])
        apply(ledger, Record(ROOT, tokens(6)))
        apply(ledger, Record(ROOT, tokens(4)), T0 + timedelta(seconds=30))
        refusal = apply(ledger, Record(ROOT, tokens(6)), T0 + timedelta(seconds=60))
        assert isinstance(refusal, Refusal)
        assert refusal.resets_at == T0 + timedelta(seconds=90)
        ledger.advance(T0 + timedelta(seconds=90))
        assert isinstance(apply(ledger, Record(ROOT, tokens(6))), Charged)
        assert ledger.next_wakeup([ROOT]) == T0 + timedelta(seconds=120)


class TestCalendarWindows:
    def test_a_window_rolls_over_with_an_event(self) -> None:
        """At the first instant of a new period the window drops its usage and says so."""
        ledger = make_ledger(windows=[Window.hour(tokens=10)])
        apply(ledger, Record(ROOT, tokens(10)))
        assert isinstance(apply(ledger, Record(ROOT, tokens(1))), Refusal)
        assert ledger.next_wakeup([ROOT]) == T0 + HOUR
        assert ledger.advance(T0 + HOUR - MICROSECOND) == []
        (event,) = ledger.advance(T0 + HOUR)
        assert isinstance(event, WindowRolledOver)
        assert (event.window, event.resets_at, event.at) == ("hour", T0 + 2 * HOUR, T0 + HOUR)
        assert ledger.advance(T0 + HOUR) == []  # never twice at one instant
        assert isinstance(apply(ledger, Record(ROOT, tokens(10))), Charged)

    def test_open_reservations_count_in_every_window(self) -> None:
        """A reservation may be charged in any period, so it counts in each window."""
        ledger = make_ledger(windows=[Window.hour(tokens=10), Window.day(tokens=15)])
        reply = apply(ledger, Reserve(ROOT, tokens(8), timedelta.max))
        assert isinstance(reply, Granted)
        ledger.advance(T0 + HOUR)
        refusal = apply(ledger, Record(ROOT, tokens(3)))
        assert isinstance(refusal, Refusal)
        assert (refusal.window, refusal.used, refusal.reserved) == ("hour", 0, 8)
        apply(ledger, Commit(ROOT, reply.reservation, tokens(8)))
        assert [w.used[TOKENS] for w in figures(ledger).windows] == [8, 8]

    def test_bad_windows_are_refused(self) -> None:
        """A window without caps, with a bad zone or duration is an InvalidOption."""
        for make in (
            lambda: Window.hour(),
            lambda: Window.day(tz=123, tokens=1),  # type: ignore[arg-type]
            lambda: Window.day(tz="Mars/Olympus", tokens=1),
            lambda: Window.rolling(timedelta(0), tokens=1),
            lambda: Window.rolling(60, tokens=1),  # type: ignore[arg-type]
            lambda: Window.week(name="", tokens=1),
        ):
            with pytest.raises(InvalidOption):
                make()


class TestRepeatedHalfHour:
    """Window.hour(tz="Australia/Lord_Howe") on 2026-04-05, when 01:30-02:00 happens twice."""

    def test_at_most_the_cap_per_period_and_one_rollover_per_instant(self) -> None:
        """Walking the clock through the repeated half hour, taking all the room there is at
        each instant, the window admits at most its cap per period and never rolls over
        twice at one instant."""
        lord_howe = Window.hour(tz="Australia/Lord_Howe", tokens=100)
        start = utc(2026, 4, 4, 13)
        ledger = make_ledger(windows=[lord_howe], now=start)
        admitted: dict[Hashable, int] = {}
        instants = sorted(
            {start + timedelta(minutes=5 * step) for step in range(48)}
            | {FIRST_0145, SECOND_0145, utc(2026, 4, 4, 15), utc(2026, 4, 4, 15, 30)}
            | {utc(2026, 4, 4, 15) - MICROSECOND, utc(2026, 4, 4, 15, 30) - MICROSECOND}
        )
        for now in instants:
            rolled = [e for e in ledger.advance(now) if isinstance(e, WindowRolledOver)]
            assert len(rolled) <= 1
            assert ledger.advance(now) == []
            for amount in (100, 50, 1):
                while isinstance(apply(ledger, Record(ROOT, tokens(amount)), now), Charged):
                    key = period_key("hour", LORD_HOWE, now)
                    admitted[key] = admitted.get(key, 0) + amount
            assert figures(ledger).windows[0].used[TOKENS] <= 100
        assert max(admitted.values()) <= 100
        assert len(admitted) == 5  # 13:00, 14:00 (01:00 +11), 15:00 (01:30 +10:30), 15:30, 16:30

    def test_at_the_second_0145_one_instant_admits_the_cap_once(self) -> None:
        """At 01:45 (second pass) the hour admits 100 tokens, then nothing more at that instant."""
        ledger = make_ledger(
            windows=[Window.hour(tz="Australia/Lord_Howe", tokens=100)], now=SECOND_0145
        )
        results = [apply(ledger, Record(ROOT, tokens(100)), SECOND_0145) for _ in range(3)]
        assert [type(reply) for reply in results] == [Charged, Refusal, Refusal]
        refusal = results[1]
        assert isinstance(refusal, Refusal)
        assert refusal.resets_at == utc(2026, 4, 4, 15, 30)

    def test_a_take_back_of_the_first_pass_leaves_the_second_alone(self) -> None:
        """A record of the first pass's hour, taken back during the second pass, does not
        free room in the second pass's period (else it would admit more than its cap)."""
        ledger = make_ledger(
            windows=[Window.hour(tz="Australia/Lord_Howe", tokens=100)], now=FIRST_0145
        )
        first = tokens(60)
        apply(ledger, Record(ROOT, first), FIRST_0145)
        ledger.advance(SECOND_0145)
        apply(ledger, Record(ROOT, tokens(100)), SECOND_0145)
        apply(ledger, TakeBack(ROOT, first, FIRST_0145), SECOND_0145)
        assert figures(ledger).windows[0].used[TOKENS] == 100
        assert isinstance(apply(ledger, Record(ROOT, tokens(1)), SECOND_0145), Refusal)


class PytzLikeZone(tzinfo):
    """What a pytz zone looks like to plain datetime arithmetic: its first historical
    offset (New York's local mean time, -4:56:02), a ``zone`` name and ``localize``."""

    zone = "America/New_York"

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return -timedelta(hours=4, minutes=56, seconds=2)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "LMT"

    def localize(self, dt: datetime) -> datetime:
        return dt.replace(tzinfo=self)


class TestPytzZones:
    @pytest.mark.parametrize(
        "zone",
        [pytz.timezone("America/New_York"), PytzLikeZone()],
        ids=["pytz", "pytz-like"],
    )
    def test_new_york_days_start_at_local_midnight(self, zone: tzinfo) -> None:
        """A pytz zone is read by its name: New York days start at local midnight
        (05:00 UTC in winter, 04:00 in summer), not at 04:56."""
        day = Window.day(tz=zone, tokens=10)
        assert day.tz == ZoneInfo("America/New_York")
        assert period_bounds(day, utc(2026, 1, 5, 12)) == (utc(2026, 1, 5, 5), utc(2026, 1, 6, 5))
        assert period_bounds(day, utc(2026, 7, 5, 12)) == (utc(2026, 7, 5, 4), utc(2026, 7, 6, 4))
        ledger = make_ledger(windows=[day], now=utc(2026, 1, 6, 4, 59))
        apply(ledger, Record(ROOT, tokens(10)))
        assert isinstance(
            apply(ledger, Record(ROOT, tokens(1)), utc(2026, 1, 6, 4, 59, 59)), Refusal
        )
        ledger.advance(utc(2026, 1, 6, 5))
        assert isinstance(apply(ledger, Record(ROOT, tokens(10)), utc(2026, 1, 6, 5)), Charged)


class TestTheEndOfTime:
    """A clock near the end of year 9999 (the last a datetime can hold) works."""

    END = utc(9999, 12, 31, 23, 59)

    def test_calendar_windows_and_reservations_work(self) -> None:
        """Hour, day, week and month windows and a reservation with a TTL work in the
        last minute of year 9999; nothing overflows."""
        windows = [
            Window.hour(tokens=50),
            Window.day(tokens=60),
            Window.week(tokens=70),
            Window.month(tokens=80),
        ]
        ledger = make_ledger({"tokens": 100}, windows=windows, now=self.END - timedelta(days=1))
        reservation = apply(ledger, Reserve(ROOT, tokens(10)), self.END)
        assert isinstance(reservation, Granted)
        assert reservation.deadline == FOREVER
        assert isinstance(apply(ledger, Record(ROOT, tokens(10)), self.END), Charged)
        committed = apply(ledger, Commit(ROOT, reservation.reservation, tokens(5)), self.END)
        assert committed == Settled(reservation.reservation)
        assert [w.resets_at for w in figures(ledger).windows] == [FOREVER] * 4
        last_second = self.END + timedelta(seconds=59)
        assert ledger.advance(last_second) == []
        assert [w.used[TOKENS] for w in figures(ledger).windows] == [15] * 4
        assert isinstance(apply(ledger, Record(ROOT, tokens(35)), last_second), Charged)
        assert isinstance(apply(ledger, Record(ROOT, tokens(1)), last_second), Refusal)

    def test_the_last_instant_belongs_to_its_period(self) -> None:
        """The last instant a datetime can hold is still in the hour, day and month it ends:
        reaching it rolls nothing over, however often, so the caps still hold there."""
        windows = [Window.hour(tokens=50), Window.day(tokens=60), Window.month(tokens=80)]
        ledger = make_ledger(windows=windows, now=self.END)
        apply(ledger, Record(ROOT, tokens(50)), self.END)
        for _ in range(2):
            assert ledger.advance(FOREVER) == []
            assert [w.used[TOKENS] for w in figures(ledger).windows] == [50] * 3
            assert isinstance(apply(ledger, Record(ROOT, tokens(1)), FOREVER), Refusal)

    @pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York"])
    def test_windows_in_any_time_zone_work(self, zone: str) -> None:
        """A day and a month window in a zone east or west of UTC work in the last minute of
        year 9999 (east of UTC, the local date there is already year 10000)."""
        windows = [Window.day(tz=zone, tokens=60), Window.month(tz=zone, tokens=80)]
        ledger = make_ledger(windows=windows, now=self.END - timedelta(days=2))
        assert isinstance(apply(ledger, Record(ROOT, tokens(10)), self.END), Charged)
        assert isinstance(apply(ledger, Reserve(ROOT, tokens(10)), self.END), Granted)
        ledger.advance(self.END + timedelta(seconds=59))
        assert [w.used[TOKENS] for w in figures(ledger).windows] == [10, 10]

    def test_a_rolling_window_works(self) -> None:
        """A rolling window charged in the last minute of year 9999 does not overflow."""
        windows = [Window.rolling(timedelta(days=2), tokens=90)]
        ledger = make_ledger({"tokens": 100}, windows=windows, now=self.END)
        assert isinstance(apply(ledger, Record(ROOT, tokens(10)), self.END), Charged)
        assert figures(ledger).windows[0].resets_at == FOREVER
        assert isinstance(apply(ledger, Reserve(ROOT, tokens(10)), self.END), Granted)
        ledger.advance(self.END + timedelta(seconds=59))
        assert figures(ledger).windows[0].used[TOKENS] == 10
