"""The pure ledger with time windows: a Hypothesis state machine against a simple model.

The machine moves a clock forward (by nothing, 1 µs, seconds or days; to just
before, at or after the next hour/day/week/month start in UTC, Berlin or
Kolkata, or the instant a window resets; or months ahead to near a
daylight-saving change or a new year) and tells the ledger with
``Ledger.advance(now)``. The model below is written from the specification,
not from ``_ledger.py`` or ``_windows.py``:

* the model keeps a plain list of charges ``(time, amount)`` since the last
  reset; a calendar window's usage is the sum of the charges made in the same
  calendar period as ``now`` (same local hour, day, ISO week or month in the
  window's time zone), a rolling window's the sum of those made after
  ``now - duration``;
* a calendar window resets at the first instant whose period differs (found by
  bisection on that "same period" test, not from period arithmetic); a
  rolling one when its oldest charge still inside leaves it, or never if none;
* commit and record charge lifetime usage and every window; a credit's negative
  entries charge windows too, but positive credits reduce lifetime usage only;
  reset empties every window;
* admission: per-request caps, then lifetime caps too large, then each window's
  caps too large, then lifetime fit, then each window's fit (open reservations
  count in every window); windows in their given order, axes in axis order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from treasurer import BudgetExceeded, RequestTooLarge, ReservationError, TreasurerError, Window
from treasurer._amounts import AXES, USD, CapVector, Vector, nanos_to_usd
from treasurer._ledger import Ledger, Scope

NAME = "team-a"
N = len(AXES)
MICROSECOND = timedelta(microseconds=1)
ZONES: dict[str, tzinfo] = {  # the first is drawn most often
    "Europe/Berlin": ZoneInfo("Europe/Berlin"),
    "Asia/Kolkata": ZoneInfo("Asia/Kolkata"),
    "UTC": UTC,
}
CALENDAR = ("hour", "day", "week", "month")
ROLLING = (timedelta(seconds=90), timedelta(hours=1), timedelta(days=1))


def vector(values: list[int]) -> Vector:
    return (values[0], values[1], values[2], values[3], values[4])


def window_usages(scope: Scope) -> list[Vector]:
    """Each window's usage in its period, as a read sees it: the published
    lifetime usage minus the window's base."""
    lifetime = scope.state()[0]
    return [
        vector([used - base for used, base in zip(lifetime, entry[1], strict=True)])
        for entry in scope.windows_view()
    ]


def assert_public(value: object, axis: int, expected: int) -> None:
    """``value`` is ``expected`` (internal units) shown in public units, with the right type."""
    if axis == USD:
        assert isinstance(value, Decimal), f"expected a Decimal, got {value!r}"
        assert value == nanos_to_usd(expected)
    else:
        assert type(value) is int
        assert value == expected


# -- calendar periods from first principles ------------------------------------------


def period_key(kind: str, zone: tzinfo, when: datetime) -> Hashable:
    """Which calendar period ``when`` falls in: equal keys, same period.

    The hour carries the UTC offset, so the two 02:00-03:00 hours of a
    daylight-saving fall-back are two periods.
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


# -- strategies ----------------------------------------------------------------------

# Internal units per "step" on each axis (USD is in nano-dollars), and the most one
# generated request asks for, in steps (as in test_ledger.py).
SCALE = (1, 1, 1, 10**8, 1)
MOST = (9, 9, 22, 8, 2)


def steps(axis: int, low: int, high: int) -> st.SearchStrategy[int]:
    """From ``low`` to ``high`` steps of ``axis``, in internal units."""
    scale = SCALE[axis]
    return st.integers(low, high).map(lambda n: n * scale)


def few_requests(axis: int) -> st.SearchStrategy[int]:
    """A window cap of a few requests' worth."""
    strategy = steps(axis, MOST[axis], 3 * MOST[axis])
    if axis == USD:  # odd caps too, not a multiple of 0.1 USD
        strategy |= st.integers(MOST[axis] * SCALE[axis], 3 * MOST[axis] * SCALE[axis])
    return strategy


# Strategies are built once: building them on every draw is slow.
FEW = tuple(few_requests(axis) for axis in range(N))
SMALL = tuple(steps(axis, 0, MOST[axis]) for axis in range(N))
SOME_AXES = st.sets(st.integers(0, N - 1), min_size=1, max_size=3)


@st.composite
def window_caps(draw: st.DrawFn) -> CapVector:
    """Caps on a random non-empty subset of the axes, now and then below the largest request."""
    caps: list[int | None] = [None] * N
    for axis in sorted(draw(SOME_AXES)):
        small = draw(st.integers(0, 7)) == 0
        caps[axis] = draw(SMALL[axis] if small else FEW[axis])
    return (caps[0], caps[1], caps[2], caps[3], caps[4])


def keywords(caps: CapVector) -> dict[str, int | Decimal]:
    """Caps as the public keywords of the Window constructors."""
    return {
        AXES[axis]: nanos_to_usd(cap) if axis == USD else cap
        for axis, cap in enumerate(caps)
        if cap is not None
    }


# A random subset of the kinds (at most one rolling window per duration), in random order.
KINDS: tuple[str | timedelta, ...] = (*CALENDAR, *ROLLING)


SOME_KINDS = st.lists(st.sampled_from(KINDS), unique=True, min_size=1, max_size=4)
ZONE_NAMES = st.sampled_from(tuple(ZONES))


@st.composite
def windows_strategy(draw: st.DrawFn) -> list[Window]:
    chosen = draw(SOME_KINDS)
    windows = []
    for kind in chosen:
        caps = keywords(draw(window_caps()))
        if isinstance(kind, timedelta):
            rolling: Callable[..., Window] = Window.rolling
            windows.append(rolling(kind, **caps))
        else:
            calendar: Callable[..., Window] = getattr(Window, kind)
            zone = draw(ZONE_NAMES)
            tz = None if zone == "UTC" and draw(st.booleans()) else zone  # None: UTC
            windows.append(calendar(tz=tz, **caps))
    return windows


def lifetime_cap(axis: int) -> st.SearchStrategy[int | None]:
    """Mostly uncapped, so the windows do most of the refusing; else several requests' worth."""
    capped = steps(axis, 2 * MOST[axis], 6 * MOST[axis])
    return st.integers(0, 2).flatmap(lambda k: capped if k == 0 else st.none())


def per_request_cap(axis: int) -> st.SearchStrategy[int | None]:
    capped = steps(axis, MOST[axis] // 2, MOST[axis])
    return st.integers(0, 7).flatmap(lambda k: capped if k == 0 else st.none())


caps_strategy = st.tuples(*(lifetime_cap(axis) for axis in range(N)))
per_request_strategy = st.tuples(*(per_request_cap(axis) for axis in range(N)))


def last_sunday_at_one_utc(year: int, month: int) -> datetime:
    """When Berlin (like all the EU) changes its clocks: 01:00 UTC, last Sunday of the month."""
    day = datetime(year, month + 1, 1, 1, tzinfo=UTC) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - 6) % 7)


# Instants near which calendars do something unusual: daylight-saving changes in
# Berlin (an hour and a day of 23 or 25 hours, and an hour that happens twice), the
# turn of a year (UTC, Berlin and Kolkata), a leap day, a Monday.
# The latest autumn change first: drawn most often, and after most starts, so the
# machine often jumps to it (the hour that happens twice is the likeliest to go wrong).
DST_CHANGES = tuple(
    last_sunday_at_one_utc(year, month) for month in (10, 3) for year in range(2030, 2023, -1)
)
ANCHORS = (
    *DST_CHANGES,
    datetime(2026, 12, 31, 18, 30, tzinfo=UTC),
    datetime(2026, 12, 31, 23, tzinfo=UTC),
    datetime(2027, 1, 1, tzinfo=UTC),
    datetime(2028, 2, 29, tzinfo=UTC),
    datetime(2028, 3, 1, tzinfo=UTC),
    datetime(2029, 12, 31, 18, 30, tzinfo=UTC),
    datetime(2026, 11, 23, tzinfo=UTC),
)
near_an_anchor = st.builds(
    lambda anchor, seconds, micros: anchor + timedelta(seconds=seconds, microseconds=micros),
    st.sampled_from(ANCHORS),
    st.integers(0, 3600) | st.integers(-3 * 3600, 3 * 3600) | st.integers(-2 * 86400, 0),
    st.sampled_from([0, 0, -1, 1]),
)
start_strategy = st.one_of(
    near_an_anchor,
    st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    ),
)

delta_strategy = st.one_of(
    st.just(timedelta(0)),
    st.just(MICROSECOND),
    st.integers(1, 120).map(lambda s: timedelta(seconds=s)),
    st.integers(1, 3 * 86400).map(lambda s: timedelta(seconds=s)),
    st.integers(1, 3 * 86400 * 10**6).map(lambda us: timedelta(microseconds=us)),
)


@st.composite
def amounts(draw: st.DrawFn) -> Vector:
    """A plausible request: tokens >= input + output, a little USD, usually one request."""
    input_tokens = draw(st.integers(0, 9))
    output_tokens = draw(st.integers(0, 9))
    tokens_total = input_tokens + output_tokens + draw(st.integers(0, 4))
    usd = draw(st.integers(0, 7)) * 10**8 + draw(st.sampled_from((0, 0, 0, 1, 99_999_999)))
    requests = draw(st.sampled_from((1, 1, 1, 0, 2)))
    return (input_tokens, output_tokens, tokens_total, usd, requests)


AMOUNTS = amounts()
credits_strategy = st.tuples(*(steps(axis, -4, 10) for axis in range(N)))


# -- the model -----------------------------------------------------------------------


@dataclass
class Charge:
    when: datetime
    amount: Vector
    keys: tuple[Hashable, ...]  # the calendar period of each window it was made in


@dataclass
class Refusal:
    kind: type[BudgetExceeded]
    axis: int
    window: str
    limit: int
    used: int
    reserved: int
    resets_at: datetime | None


@dataclass
class Model:
    """The ledger as the specification describes it, in plain lists and dicts."""

    caps: CapVector
    per_request: CapVector
    windows: list[Window]
    now: datetime
    used: list[int] = field(default_factory=lambda: [0] * N)
    reserved: list[int] = field(default_factory=lambda: [0] * N)
    calls: int = 0
    open: dict[int, Vector] = field(default_factory=dict)
    ended: list[int] = field(default_factory=list)
    issued: set[int] = field(default_factory=set)
    recorded: list[Vector] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)  # since the last reset
    ends: dict[int, tuple[Hashable, datetime]] = field(default_factory=dict)

    def key(self, index: int, when: datetime) -> Hashable:
        window = self.windows[index]
        if window.kind == "rolling":
            return None
        return period_key(window.kind, window.tz, when)

    def charge(self, amount: Vector) -> None:
        keys = tuple(self.key(index, self.now) for index in range(len(self.windows)))
        self.charges.append(Charge(self.now, amount, keys))

    def inside(self, index: int) -> list[Charge]:
        """The charges that count in window ``index`` now."""
        window = self.windows[index]
        if window.kind == "rolling":
            assert window.duration is not None
            horizon = self.now - window.duration
            return [c for c in self.charges if c.when > horizon]
        key = self.key(index, self.now)
        return [c for c in self.charges if c.keys[index] == key]

    def window_used(self, index: int) -> list[int]:
        total = [0] * N
        for charge in self.inside(index):
            for axis in range(N):
                total[axis] += charge.amount[axis]
        return total

    def resets_at(self, index: int) -> datetime | None:
        window = self.windows[index]
        if window.kind == "rolling":
            assert window.duration is not None
            inside = self.inside(index)
            return min(c.when for c in inside) + window.duration if inside else None
        key = self.key(index, self.now)
        cached = self.ends.get(index)
        if cached is None or cached[0] != key:
            cached = key, period_end(window.kind, window.tz, self.now)
            self.ends[index] = cached
        return cached[1]

    def refusal(self, amount: Vector) -> Refusal | None:
        for axis, cap in enumerate(self.per_request):
            if cap is not None and amount[axis] > cap:
                return Refusal(RequestTooLarge, axis, "request", cap, 0, 0, None)
        reserved = self.reserved
        lifetime = [(a, c) for a, c in enumerate(self.caps) if c is not None]
        usage = [self.window_used(i) for i in range(len(self.windows))]
        for axis, cap in lifetime:
            if amount[axis] > cap:
                return Refusal(
                    RequestTooLarge, axis, "lifetime", cap, self.used[axis], reserved[axis], None
                )
        for index, window in enumerate(self.windows):
            for axis, cap in enumerate(window.caps):
                if cap is not None and amount[axis] > cap:
                    return Refusal(
                        RequestTooLarge,
                        axis,
                        window.name,
                        cap,
                        usage[index][axis],
                        reserved[axis],
                        self.resets_at(index),
                    )
        for axis, cap in lifetime:
            if self.used[axis] + reserved[axis] + amount[axis] > cap:
                return Refusal(
                    BudgetExceeded, axis, "lifetime", cap, self.used[axis], reserved[axis], None
                )
        for index, window in enumerate(self.windows):
            for axis, cap in enumerate(window.caps):
                if cap is not None and usage[index][axis] + reserved[axis] + amount[axis] > cap:
                    return Refusal(
                        BudgetExceeded,
                        axis,
                        window.name,
                        cap,
                        usage[index][axis],
                        reserved[axis],
                        self.resets_at(index),
                    )
        return None

    def state(self) -> tuple[Vector, Vector, int, int]:
        return vector(self.used), vector(self.reserved), self.calls, len(self.open)


def assert_refusal(reply: object, expected: Refusal, amount: Vector) -> None:
    """``reply`` is exactly the refusal the model expects, every figure included."""
    kind, axis = expected.kind, expected.axis
    assert type(reply) is kind, f"expected {kind.__name__} on {expected.window}, got {reply!r}"
    assert isinstance(reply, BudgetExceeded)
    assert isinstance(reply, TreasurerError)
    assert (reply.budget, reply.cap, reply.window) == (NAME, AXES[axis], expected.window)
    assert reply.resets_at == expected.resets_at
    requested, used, reserved = amount[axis], expected.used, expected.reserved
    assert_public(reply.limit, axis, expected.limit)
    assert_public(reply.requested, axis, requested)
    assert_public(reply.used, axis, used)
    assert_public(reply.reserved, axis, reserved)
    assert_public(reply.attempted, axis, used + reserved + requested)
    assert_public(reply.available, axis, max(expected.limit - used - reserved, 0))
    text = str(reply)
    assert AXES[axis] in text
    if expected.window not in ("lifetime", "request"):
        assert f"per {expected.window}" in text
    if kind is BudgetExceeded and expected.resets_at is not None:
        assert expected.resets_at.isoformat() in text


# -- the state machine ---------------------------------------------------------------


class LedgerWindowsMachine(RuleBasedStateMachine):
    """Drives a Ledger with windows and the Model side by side, moving the clock."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger: Ledger
        self.model: Model

    @initialize(
        caps=caps_strategy,
        per_request=per_request_strategy,
        windows=windows_strategy(),
        start=start_strategy,
    )
    def open_ledger(
        self, caps: CapVector, per_request: CapVector, windows: list[Window], start: datetime
    ) -> None:
        self.ledger = Ledger(caps, NAME, per_request, windows, start)
        self.model = Model(caps, per_request, windows, start)
        for window in windows:
            event(f"window: {window.name} {window.tz}")

    # -- helpers --

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.ledger.state(),
            dict(self.ledger.reservations),
            self.ledger.windows_view(),
            repr(self.ledger),
        )

    def check_refusal(self, reply: object, amount: Vector, before: tuple[object, ...]) -> bool:
        """Check ``reply`` against the model's verdict; True if the amount was admitted."""
        expected = self.model.refusal(amount)
        if expected is None:
            return True
        assert_refusal(reply, expected, amount)
        assert self.snapshot() == before, "a refusal changed the ledger"
        scope = expected.window if expected.window in ("lifetime", "request") else "window"
        event(f"refused: {expected.kind.__name__} ({scope})")
        return False

    def check_within_caps(self) -> None:
        """Right after an admission, used + reserved is within every cap, windows included."""
        used, reserved, _, _ = self.ledger.state()
        for axis, cap in enumerate(self.model.caps):
            if cap is not None:
                assert used[axis] + reserved[axis] <= cap, f"lifetime {AXES[axis]} over its cap"
        view = self.ledger.windows_view()
        for entry, window_used in zip(view, window_usages(self.ledger), strict=True):
            window = entry[0]
            for axis, cap in enumerate(window.caps):
                if cap is not None:
                    assert window_used[axis] + reserved[axis] <= cap, (
                        f"{window.name} {AXES[axis]} over its cap"
                    )

    def move_to(self, when: datetime) -> None:
        """Advance the clock to ``when`` (never backwards)."""
        when = max(when, self.model.now)
        count = len(self.model.windows)
        before = [self.model.window_used(i) for i in range(count)]
        self.model.now = when
        self.ledger.advance(when)
        if any(self.model.window_used(i) != before[i] for i in range(count)):
            event("a window dropped usage")

    def pick_open(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.model.open)), label="reservation")

    # -- the clock --

    @rule(delta=delta_strategy)
    def tick(self, delta: timedelta) -> None:
        self.move_to(self.model.now + delta)

    @rule(
        kind=st.sampled_from(CALENDAR),
        zone=ZONE_NAMES,
        nudge=st.sampled_from([-1, 0, 0, 1]),
    )
    def tick_to_calendar_boundary(self, kind: str, zone: str, nudge: int) -> None:
        """Jump to (or a microsecond around) the next start of an hour, day, week or month."""
        end = period_end(kind, ZONES[zone], self.model.now)
        self.move_to(end + nudge * MICROSECOND)

    @rule(when=near_an_anchor)
    def tick_to_near_an_anchor(self, when: datetime) -> None:
        """Jump (maybe months or years ahead) to near a daylight-saving change, a new year..."""
        if when >= self.model.now:
            self.move_to(when)

    @rule(data=st.data(), nudge=st.sampled_from([-1, 0, 0, 1]))
    def tick_to_window_reset(self, data: st.DataObject, nudge: int) -> None:
        """Jump to (or a microsecond around) the instant one of the windows next resets."""
        index = data.draw(st.integers(0, len(self.model.windows) - 1), label="window")
        resets_at = self.model.resets_at(index)
        if resets_at is None:
            return
        self.move_to(resets_at + nudge * MICROSECOND)

    # -- operations --

    @rule(amount=AMOUNTS)
    def reserve(self, amount: Vector) -> None:
        before = self.snapshot()
        reply = self.ledger.reserve(amount)
        if not self.check_refusal(reply, amount, before):
            return
        assert type(reply) is int, f"expected an id, got {reply!r}"
        assert reply not in self.model.issued, "a reservation id was reused"
        self.model.issued.add(reply)
        self.model.open[reply] = amount
        for axis in range(N):
            self.model.reserved[axis] += amount[axis]
        self.check_within_caps()
        event("reserved")

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        if not self.model.open:
            return
        reservation = self.pick_open(data)
        held = self.model.open[reservation]
        actual = data.draw(
            st.tuples(
                *(
                    st.integers(0, held[axis])
                    | st.integers(held[axis], held[axis] + 3 * SCALE[axis])
                    for axis in range(N)
                )
            ),
            label="actual",
        )
        assert self.ledger.commit(reservation, actual) is None
        del self.model.open[reservation]
        self.model.ended.append(reservation)
        for axis in range(N):
            self.model.reserved[axis] -= held[axis]
            self.model.used[axis] += actual[axis]
        self.model.charge(actual)
        self.model.calls += 1

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.model.open:
            return
        reservation = self.pick_open(data)
        held = self.model.open.pop(reservation)
        assert self.ledger.release(reservation) is None
        self.model.ended.append(reservation)
        for axis in range(N):
            self.model.reserved[axis] -= held[axis]

    @rule(data=st.data(), commit=st.booleans())
    def settle_ended_or_unknown(self, data: st.DataObject, commit: bool) -> None:
        newest = max(self.model.issued, default=0)
        choices = st.integers(newest + 1, newest + 5) | st.integers(-3, 0)
        if self.model.ended:
            choices = choices | st.sampled_from(self.model.ended)
        reservation = data.draw(choices, label="reservation")
        assert reservation not in self.model.open
        before = self.snapshot()
        if commit:
            reply = self.ledger.commit(reservation, data.draw(AMOUNTS, label="actual"))
        else:
            reply = self.ledger.release(reservation)
        assert isinstance(reply, ReservationError), f"expected a ReservationError, got {reply!r}"
        assert self.snapshot() == before

    @rule(amount=AMOUNTS)
    def record(self, amount: Vector) -> None:
        before = self.snapshot()
        reply = self.ledger.record(amount)
        if not self.check_refusal(reply, amount, before):
            return
        assert reply is None, f"expected None, got {reply!r}"
        for axis in range(N):
            self.model.used[axis] += amount[axis]
        self.model.charge(amount)
        self.model.calls += 1
        self.model.recorded.append(amount)
        self.check_within_caps()
        event("recorded")

    def take_back(self, credit: tuple[int, ...]) -> None:
        """Positive entries credit lifetime usage only; negative ones charge everywhere."""
        for axis, value in enumerate(credit):
            self.model.used[axis] = max(self.model.used[axis] - value, 0)
        extra = [max(-value, 0) for value in credit]
        if any(extra):
            self.model.charge(vector(extra))
            event("negative credit charged the windows")

    @rule(credit=credits_strategy)
    def adjust(self, credit: tuple[int, ...]) -> None:
        assert self.ledger.adjust(credit) is None  # type: ignore[func-returns-value]
        self.take_back(credit)

    @rule(data=st.data())
    def unrecord(self, data: st.DataObject) -> None:
        if not self.model.recorded:
            return
        index = data.draw(st.integers(0, len(self.model.recorded) - 1), label="record")
        amount = self.model.recorded.pop(index)
        assert self.ledger.unrecord(amount) is None  # type: ignore[func-returns-value]
        self.take_back(amount)
        self.model.calls = max(self.model.calls - 1, 0)

    # A rule without arguments would be sorted first and drawn far more often than
    # the others (about one step in four), so reset also moves the clock first.
    @rule(delta=delta_strategy)
    def tick_then_reset(self, delta: timedelta) -> None:
        self.move_to(self.model.now + delta)
        assert self.ledger.reset() is None  # type: ignore[func-returns-value,unused-ignore]
        self.model.used = [0] * N
        self.model.calls = 0
        self.model.charges.clear()

    # -- invariants --

    @invariant()
    def matches_the_model(self) -> None:
        assert self.ledger.state() == self.model.state()
        assert self.ledger.reservations == self.model.open
        assert self.ledger.now == self.model.now

    @invariant()
    def windows_match_the_model(self) -> None:
        view = self.ledger.windows_view()
        assert [entry[0] for entry in view] == self.model.windows
        usages = window_usages(self.ledger)
        for index, entry in enumerate(view):
            window, used, resets_at = entry[0], usages[index], entry[2]
            assert used == vector(self.model.window_used(index)), f"{window.name} usage"
            assert resets_at == self.model.resets_at(index), f"{window.name} resets_at"
            assert min(used) >= 0
            if resets_at is not None:
                assert resets_at > self.model.now
                assert resets_at.utcoffset() == timedelta(0)


TestLedgerWindowsStateMachine = LedgerWindowsMachine.TestCase
TestLedgerWindowsStateMachine.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)


def test_a_rolling_window_keeps_one_entry_per_instant_and_model() -> None:
    """Charges of one instant and model share an entry; they leave the window
    together, and by-model usage keeps what is still inside."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    window = Window.rolling(timedelta(minutes=1), tokens=1_000)
    ledger = Ledger((None, None, None, None, None), NAME, windows=[window], now=start)
    ledger.charge((0, 0, 10, 0, 1), "gpt")
    ledger.charge((0, 0, 5, 0, 1), "gpt")  # same instant, same model: merged
    ledger.charge((0, 0, 7, 0, 1))  # same instant, no model: an entry of its own
    assert len(ledger.windows[0].entries) == 2
    ledger.advance(start + timedelta(seconds=30))
    ledger.charge((0, 0, 3, 0, 1), "gpt")
    ledger.advance(start + timedelta(seconds=61))  # the first instant's charges leave
    assert ledger.windows[0].used == [0, 0, 3, 0, 1]
    view = ledger.usage_for(window.name)
    assert not isinstance(view, TreasurerError)
    assert view[0] == (0, 0, 3, 0, 1)
    assert view[4] == {"gpt": (0, 0, 3, 0, 1)}
    assert ledger.used == [0, 0, 25, 0, 4]  # the lifetime keeps everything
