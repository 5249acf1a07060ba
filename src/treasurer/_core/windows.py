"""Time windows: caps per calendar hour, day, week or month, or per rolling span.

Pure: time comes in as an argument (an aware ``datetime``), never from a
clock. A window moves to the period holding ``now`` when it is told the time,
so one that rolled over while nobody called is right at the next call however
long the gap: a calendar window jumps straight to the period holding ``now``;
a rolling window drops, oldest first, the charges that have left it.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Final, Literal, Unpack
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from .._errors import InvalidOption
from .axes import AXES, ZERO, CapVector, Vector, add, parse_caps, take
from .options import CapOptions

Kind = Literal["hour", "day", "week", "month", "rolling"]
CALENDAR: Final = ("hour", "day", "week", "month")
FOREVER: Final = datetime.max.replace(tzinfo=UTC)
"""The end of time as far as a budget is concerned: later than any deadline."""
_TICK: Final = timedelta(microseconds=1)


def later(when: datetime, delta: timedelta) -> datetime:
    """``when + delta``, or :data:`FOREVER` where that would pass year 9999."""
    try:
        return min(when + delta, FOREVER)
    except OverflowError:
        return FOREVER


def zone(tz: object) -> tzinfo:
    """A time zone from a name or a ``tzinfo``; raises InvalidOption otherwise."""
    if tz is None:
        return UTC
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidOption(f"unknown time zone {tz!r}") from exc
    if not isinstance(tz, tzinfo):
        raise InvalidOption(f"tz must be a time zone name or a tzinfo, not {tz!r}")
    pytz_zone = getattr(tz, "zone", None)
    if isinstance(pytz_zone, str) and hasattr(tz, "localize"):
        # A pytz zone gives its first historical offset (LMT) to plain datetime
        # arithmetic, so New York days would start at 04:56 UTC: use the same
        # zone from the system's database instead.
        return zone(pytz_zone)
    return tz


@attrs.frozen
class Window:
    """Caps that apply per period of time; build one with the class methods.

    ``Window.day(tokens=1_000_000, tz="Europe/Berlin")`` caps each day from
    00:00 to 00:00 Berlin time; ``Window.rolling(timedelta(minutes=60),
    usd=5)`` caps any 60 minutes. Calendar windows are aligned to UTC unless
    ``tz`` says otherwise. The caps take the axis keywords of ``open_budget``.
    """

    kind: Kind
    caps: CapVector = attrs.field(repr=False)
    tz: tzinfo = UTC
    duration: timedelta | None = None
    name: str = ""

    @classmethod
    def hour(
        cls, *, tz: str | tzinfo | None = None, name: str | None = None, **caps: Unpack[CapOptions]
    ) -> Window:
        """Caps per hour of the local clock in ``tz``."""
        return cls._calendar("hour", tz, name, caps)

    @classmethod
    def day(
        cls, *, tz: str | tzinfo | None = None, name: str | None = None, **caps: Unpack[CapOptions]
    ) -> Window:
        """Caps per calendar day (from midnight to midnight in ``tz``)."""
        return cls._calendar("day", tz, name, caps)

    @classmethod
    def week(
        cls, *, tz: str | tzinfo | None = None, name: str | None = None, **caps: Unpack[CapOptions]
    ) -> Window:
        """Caps per ISO week (from Monday 00:00 in ``tz``)."""
        return cls._calendar("week", tz, name, caps)

    @classmethod
    def month(
        cls, *, tz: str | tzinfo | None = None, name: str | None = None, **caps: Unpack[CapOptions]
    ) -> Window:
        """Caps per calendar month (from the 1st, 00:00 in ``tz``)."""
        return cls._calendar("month", tz, name, caps)

    @classmethod
    def rolling(
        cls, duration: timedelta, *, name: str | None = None, **caps: Unpack[CapOptions]
    ) -> Window:
        """Caps over any ``duration`` ending now (e.g. the last 60 minutes)."""
        if not isinstance(duration, timedelta) or duration <= timedelta(0):
            raise InvalidOption(f"a rolling window needs a positive timedelta, got {duration!r}")
        seconds = duration.total_seconds()
        label = f"rolling {int(seconds)}s" if seconds == int(seconds) else f"rolling {seconds}s"
        return cls("rolling", _window_caps(caps), UTC, duration, _name(name, label))

    @classmethod
    def _calendar(cls, kind: Kind, tz: object, name: str | None, caps: CapOptions) -> Window:
        return cls(kind, _window_caps(caps), zone(tz), None, _name(name, kind))


def _name(name: object, default: str) -> str:
    if name is None:
        return default
    if not isinstance(name, str) or not name:
        raise InvalidOption(f"a window's name must be a non-empty str, not {name!r}")
    return name


def _window_caps(caps: CapOptions) -> CapVector:
    vector = parse_caps(caps)
    if all(cap is None for cap in vector):
        raise InvalidOption(f"a window needs at least one cap ({', '.join(AXES)})")
    return vector


def period_bounds(window: Window, now: datetime) -> tuple[datetime, datetime]:
    """The calendar period of ``window`` holding ``now``: [start, end), in UTC.

    Always holds ``now``, even where the local clock repeats or skips a span
    (the hour after clocks go back, a midnight that does not exist), so a
    window never rolls over twice at one instant.
    """
    try:
        local = now.astimezone(window.tz)
    except OverflowError:  # the local date is past year 9999: the last period there is
        before = period_bounds(window, now - timedelta(days=1))
        return (before[0] if before[1] == FOREVER else before[1]), FOREVER
    if window.kind == "hour":
        return _hour_bounds(window.tz, now, local)
    day = local.date()
    if window.kind == "day":
        first, after = day, _next_day(day, 1)
    elif window.kind == "week":
        first = day - timedelta(days=day.weekday())
        after = _next_day(first, 7)
    else:  # month
        first = day.replace(day=1)
        after = (
            date(first.year + first.month // 12, first.month % 12 + 1, 1)
            if (first.year, first.month) != (9999, 12)
            else None
        )
    start = min(_midnight(first, window.tz), now)
    end = FOREVER if after is None else _midnight(after, window.tz)
    return start, max(end, later(now, _TICK))


def _hour_bounds(tz: tzinfo, now: datetime, local: datetime) -> tuple[datetime, datetime]:
    """The local clock hour holding ``now``. Counted in real time from ``now``; where
    the UTC offset changes inside that hour, the change is a bound too, so the two
    passes through a repeated (half) hour are two periods."""
    start = now - timedelta(
        minutes=local.minute, seconds=local.second, microseconds=local.microsecond
    )
    end = later(start, timedelta(hours=1))
    offset = local.utcoffset()
    if _offset(tz, start) != offset:
        start = _first_change(tz, start, now)
    if end != FOREVER and _offset(tz, end - _TICK) != offset:
        end = _first_change(tz, now, end - _TICK)
    return start, end


def _offset(tz: tzinfo, when: datetime) -> timedelta | None:
    return when.astimezone(tz).utcoffset()


def _first_change(tz: tzinfo, low: datetime, high: datetime) -> datetime:
    """The first instant in (low, high] with ``high``'s UTC offset, to the microsecond
    (the offset changes once between them)."""
    target = _offset(tz, high)
    while high - low > _TICK:
        middle = low + (high - low) // 2
        if _offset(tz, middle) == target:
            high = middle
        else:
            low = middle
    return high


def _next_day(day: date, days: int) -> date | None:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return None


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


class WindowState:
    """Usage of one window in its current period (or rolling span).

    A rolling window also keeps its charges, one entry per instant and model,
    to know when each leaves it. ``limits`` are the caps plus active overrides;
    ``fired`` counts, per axis, the thresholds that fired this period.
    """

    __slots__ = (
        "by_model",
        "end",
        "entries",
        "fired",
        "limits",
        "since",
        "start",
        "used",
        "window",
    )

    def __init__(self, window: Window, now: datetime) -> None:
        self.window = window
        self.limits: CapVector = window.caps
        self.used = ZERO
        self.by_model: dict[str, Vector] = {}
        self.entries: deque[tuple[datetime, Vector, str | None]] = deque()
        self.fired = [0] * len(AXES)
        self.start = self.end = now
        self.since: datetime | None = None  # when it was last reset by hand
        if window.kind in CALENDAR:
            self.start, self.end = period_bounds(window, now)

    @property
    def rolling(self) -> bool:
        return self.window.kind == "rolling"

    def advance(self, now: datetime) -> bool:
        """Move to the period holding ``now``; True if usage was dropped."""
        if self.rolling:
            duration = self.window.duration
            assert duration is not None
            horizon = now - duration
            dropped = False
            while self.entries and self.entries[0][0] <= horizon:
                _, amount, model = self.entries.popleft()
                self._take(amount, model)
                dropped = True
            return dropped
        if now < self.end or self.end == FOREVER:  # the last period never ends
            return False
        self.start, self.end = period_bounds(self.window, now)
        self.clear()
        return True

    def charge(self, amount: Vector, now: datetime, model: str | None) -> None:
        """Count ``amount``, charged at ``now``."""
        if not any(amount):
            return  # nothing to count, and nothing to age out later
        self.used = add(self.used, amount)
        if model is not None:
            add_to(self.by_model, model, amount)
        if self.rolling:
            entries = self.entries
            if entries and entries[-1][0] == now and entries[-1][2] == model:
                last = entries[-1][1]
                entries[-1] = (now, add(last, amount), model)
            else:
                entries.append((now, amount, model))

    def take_back(self, amount: Vector, at: datetime, model: str | None) -> None:
        """Uncount a charge made at ``at``, if it still counts in this window."""
        if self.rolling:
            # Newest first: the call taken back is the last of its instant and model.
            left = amount
            for index in range(len(self.entries) - 1, -1, -1):
                when, held, held_model = self.entries[index]
                if when != at or held_model != model:
                    continue
                kept = take(held, left)
                taken = take(held, kept)
                self._take(taken, model)
                self.entries[index] = (when, kept, model)
                left = take(left, taken)
                if not any(left):
                    return
            return
        if at >= self.start:
            self._take(amount, model)

    def _take(self, amount: Vector, model: str | None) -> None:
        self.used = take(self.used, amount)
        if model is not None and model in self.by_model:
            totals = self.by_model[model] = take(self.by_model[model], amount)
            if not any(totals):
                del self.by_model[model]

    def resets_at(self) -> datetime | None:
        """When usage next drops: the period's end, or when the oldest charge leaves."""
        if not self.rolling:
            return self.end
        if not self.entries:
            return None
        assert self.window.duration is not None
        return later(self.entries[0][0], self.window.duration)

    def empty(self) -> bool:
        return not any(self.used)

    def period_start(self, now: datetime) -> datetime:
        """When the usage it counts now began: its period's start, a rolling
        window's span back from ``now``, or a reset by hand since."""
        start = self.start
        if self.rolling:
            assert self.window.duration is not None
            start = now - self.window.duration
        return start if self.since is None else max(start, self.since)

    def clear(self) -> None:
        self.used = ZERO
        self.by_model = {}
        self.entries.clear()
        self.fired = [0] * len(AXES)


def add_to(by_model: dict[str, Vector], model: str, amount: Vector) -> None:
    totals = by_model.get(model)
    by_model[model] = amount if totals is None else add(totals, amount)
