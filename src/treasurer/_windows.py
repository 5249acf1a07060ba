"""Time windows: caps that apply per calendar hour/day/week/month or rolling period.

Pure: time comes in as an argument (an aware ``datetime``), never from a
clock. A window advances lazily when the ledger is told the time, so one that
rolled over while nobody called is right at the next call, however long the
gap: a calendar window jumps straight to the period holding ``now``; a rolling
window drops, oldest first, the charges that left it (amortized O(1) each).
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from ._amounts import AXES, CapVector, Money, Vector, parse_caps
from ._errors import InvalidOption

Kind = Literal["hour", "day", "week", "month", "rolling"]
_CALENDAR: Final = ("hour", "day", "week", "month")


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidOption(f"unknown time zone {tz!r}") from exc


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
        cls, *, tz: str | tzinfo | None = None, name: str | None = None, **caps: Money | None
    ) -> Window:
        """Caps per calendar hour."""
        return cls._calendar("hour", tz, name, caps)

    @classmethod
    def day(
        cls, *, tz: str | tzinfo | None = None, name: str | None = None, **caps: Money | None
    ) -> Window:
        """Caps per calendar day (from midnight to midnight in ``tz``)."""
        return cls._calendar("day", tz, name, caps)

    @classmethod
    def week(
        cls, *, tz: str | tzinfo | None = None, name: str | None = None, **caps: Money | None
    ) -> Window:
        """Caps per ISO week (from Monday 00:00 in ``tz``)."""
        return cls._calendar("week", tz, name, caps)

    @classmethod
    def month(
        cls, *, tz: str | tzinfo | None = None, name: str | None = None, **caps: Money | None
    ) -> Window:
        """Caps per calendar month (from the 1st, 00:00 in ``tz``)."""
        return cls._calendar("month", tz, name, caps)

    @classmethod
    def rolling(
        cls, duration: timedelta, *, name: str | None = None, **caps: Money | None
    ) -> Window:
        """Caps over any ``duration`` ending now (e.g. the last 60 minutes)."""
        if not isinstance(duration, timedelta) or duration <= timedelta(0):
            raise InvalidOption(f"a rolling window needs a positive timedelta, got {duration!r}")
        seconds = duration.total_seconds()
        label = f"rolling {int(seconds)}s" if seconds == int(seconds) else f"rolling {seconds}s"
        return cls("rolling", _window_caps(caps), UTC, duration, name or label)

    @classmethod
    def _calendar(
        cls, kind: Kind, tz: str | tzinfo | None, name: str | None, caps: dict[str, Money | None]
    ) -> Window:
        return cls(kind, _window_caps(caps), _zone(tz), None, name or kind)


def _window_caps(caps: dict[str, Money | None]) -> CapVector:
    vector = parse_caps(dict(caps))
    if all(cap is None for cap in vector):
        raise InvalidOption(f"a window needs at least one cap ({', '.join(AXES)})")
    return vector


def period_bounds(window: Window, now: datetime) -> tuple[datetime, datetime]:
    """The calendar period of ``window`` that holds ``now``: [start, end), in UTC."""
    local = now.astimezone(window.tz)
    if window.kind == "hour":
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return start, start + timedelta(hours=1)
    day = local.date()
    if window.kind == "day":
        first, after = day, day + timedelta(days=1)
    elif window.kind == "week":
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(days=7)
    else:  # month
        first = day.replace(day=1)
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return _midnight(first, window.tz), _midnight(after, window.tz)


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


class WindowState:
    """Usage of one window in its current period (or rolling span).

    The usage is kept as an offset from its scope's lifetime usage, which
    every charge adds to anyway: ``used = lifetime - base``. A charge then
    costs a calendar window nothing; ``base`` moves only when the window
    drops usage (a new period, a rolling charge ageing out, a reset) or when
    the lifetime changes without the window (a credit). A rolling window also
    keeps its charges, one entry per instant, to know when each leaves it.
    """

    __slots__ = (
        "base",
        "by_model",
        "capped",
        "end",
        "entries",
        "lifetime",
        "limits",
        "start",
        "window",
    )

    def __init__(self, window: Window, now: datetime, lifetime: list[int]) -> None:
        self.window: Final = window
        self.capped: Final = tuple(i for i, cap in enumerate(window.caps) if cap is not None)
        self.limits: CapVector = window.caps  # caps plus active overrides
        self.lifetime: Final = lifetime  # the scope's lifetime usage, shared, never replaced
        self.base = list(lifetime)
        self.by_model: dict[str, list[int]] = {}  # usage per model in this period
        self.entries: deque[tuple[datetime, Vector, str | None]] = deque()
        self.start = self.end = now
        if window.kind in _CALENDAR:
            self.start, self.end = period_bounds(window, now)

    @property
    def used(self) -> list[int]:
        """Usage in the current period, per axis."""
        lifetime, base = self.lifetime, self.base
        return [lifetime[0] - base[0], lifetime[1] - base[1], lifetime[2] - base[2],
                lifetime[3] - base[3], lifetime[4] - base[4]]  # fmt: skip

    def advance(self, now: datetime) -> bool:
        """Move to the period holding ``now``; True if usage was dropped (rolled over)."""
        if self.window.kind == "rolling":
            duration = self.window.duration
            assert duration is not None
            horizon = now - duration
            entries = self.entries
            dropped = False
            while entries and entries[0][0] <= horizon:
                _, amount, model = entries.popleft()
                base = self.base
                for axis, value in enumerate(amount):
                    base[axis] += value
                if model is not None:
                    totals = self.by_model[model]
                    for axis, value in enumerate(amount):
                        totals[axis] -= value
                    if not any(totals):
                        del self.by_model[model]
                dropped = True
            return dropped
        if now < self.end:
            return False
        self.start, self.end = period_bounds(self.window, now)
        assert self.start <= now < self.end, "a period must contain the instant it was made for"
        self.base = list(self.lifetime)
        self.by_model = {}
        return True

    def charge(self, amount: Vector, now: datetime, model: str | None = None) -> bool:
        """Note a charge its scope's lifetime has just taken (the usage itself follows).

        True if that moved :meth:`resets_at`: a rolling window's first charge.
        """
        if model is not None:
            add_to(self.by_model, model, amount)
        if self.window.kind != "rolling":
            return False
        entries = self.entries
        if entries and entries[-1][0] == now and entries[-1][2] == model:
            # Charges of one instant leave together: one entry holds them all.
            last = entries[-1][1]
            entries[-1] = (now, (last[0] + amount[0], last[1] + amount[1],
                                 last[2] + amount[2], last[3] + amount[3],
                                 last[4] + amount[4]), model)  # fmt: skip
            return False
        entries.append((now, amount, model))
        return len(entries) == 1

    def resets_at(self) -> datetime | None:
        """When usage next drops: the period's end, or when the oldest charge leaves."""
        if self.window.kind != "rolling":
            return self.end
        if not self.entries:
            return None
        duration = self.window.duration
        assert duration is not None
        return self.entries[0][0] + duration

    def clear(self) -> None:
        self.base = list(self.lifetime)
        self.by_model = {}
        self.entries.clear()


def add_to(by_model: dict[str, list[int]], model: str, amount: Vector) -> None:
    totals = by_model.get(model)
    if totals is None:
        by_model[model] = list(amount)
    else:
        for axis, value in enumerate(amount):
            totals[axis] += value
