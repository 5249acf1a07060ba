"""Hypothesis strategies of the conformance machines: caps, windows, amounts, instants.

Caps are mostly a few requests' worth, so refusals are frequent, and sometimes
smaller than one request; instants cluster near where calendars do something
unusual (daylight-saving changes, a repeated half hour, the turn of a year).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from treasurer._core.axes import AXES, CapVector, Vector, nanos_to_usd
from treasurer._core.config import Limits
from treasurer._core.windows import Window

N = len(AXES)
USD = AXES.index("usd")
MICROSECOND = timedelta(microseconds=1)
ZONES: dict[str, tzinfo] = {  # the first is drawn most often
    "Europe/Berlin": ZoneInfo("Europe/Berlin"),
    "Australia/Lord_Howe": ZoneInfo("Australia/Lord_Howe"),
    "Asia/Kolkata": ZoneInfo("Asia/Kolkata"),
    "UTC": UTC,
}
CALENDAR = ("hour", "day", "week", "month")
ROLLING = (timedelta(seconds=90), timedelta(hours=1), timedelta(days=1))
TENANTS = ("alice", "bob", "carol")
T = TypeVar("T")

# Internal units per "step" on each axis (USD is in nano-dollars), and the most one
# generated request asks for, in steps.
SCALE = (1, 1, 1, 10**8, 1)
MOST = (9, 9, 22, 8, 2)


def steps(axis: int, low: int, high: int) -> st.SearchStrategy[int]:
    """From ``low`` to ``high`` steps of ``axis``, in internal units."""
    scale = SCALE[axis]
    return st.integers(low, high).map(lambda n: n * scale)


def few_requests(axis: int) -> st.SearchStrategy[int]:
    """A cap of a few requests' worth (on USD, odd caps too: not a multiple of 0.1 USD)."""
    strategy = steps(axis, MOST[axis], 4 * MOST[axis])
    if axis == USD:
        strategy |= st.integers(MOST[axis] * SCALE[axis], 4 * MOST[axis] * SCALE[axis])
    return strategy


FEW = tuple(few_requests(axis) for axis in range(N))
SMALL = tuple(steps(axis, 0, MOST[axis]) for axis in range(N))
SOME_AXES = st.sets(st.integers(0, N - 1), min_size=1, max_size=3)
INDEX = st.integers(0, 719)  # 720 = 2^4 * 3^2 * 5: picks among a few are (nearly) fair


def pick(data: st.DataObject, items: Sequence[T], label: str) -> T:
    """One of ``items``, mostly the first (as Hypothesis favours 0)."""
    return items[data.draw(INDEX, label=label) % len(items)]


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws."""
    return st.integers(1, n).map(lambda k: k == n)


@st.composite
def window_caps(draw: st.DrawFn) -> CapVector:
    """Caps on a random non-empty subset of the axes, now and then below the largest request."""
    caps: list[int | None] = [None] * N
    for axis in sorted(draw(SOME_AXES)):
        small = draw(st.integers(0, 15)) == 0
        caps[axis] = draw(SMALL[axis] if small else FEW[axis])
    return tuple(caps)


def keywords(caps: CapVector) -> dict[str, int | Decimal]:
    """Caps as the public keywords of Window, open_budget and TenantCaps."""
    return {
        AXES[axis]: nanos_to_usd(cap) if axis == USD else cap
        for axis, cap in enumerate(caps)
        if cap is not None
    }


KINDS: tuple[str | timedelta, ...] = (*CALENDAR, *ROLLING)
SOME_KINDS = st.lists(st.sampled_from(KINDS), unique=True, min_size=1, max_size=3)
ZONE_NAMES = st.sampled_from(tuple(ZONES))


@st.composite
def windows_strategy(draw: st.DrawFn) -> tuple[Window, ...]:
    """A random subset of the kinds (at most one rolling window per duration), in random order."""
    windows = []
    for kind in draw(SOME_KINDS):
        caps = keywords(draw(window_caps()))
        if isinstance(kind, timedelta):
            rolling: Callable[..., Window] = Window.rolling
            windows.append(rolling(kind, **caps))
        else:
            calendar: Callable[..., Window] = getattr(Window, kind)
            zone = draw(ZONE_NAMES)
            tz = None if zone == "UTC" and draw(st.booleans()) else zone  # None: UTC
            windows.append(calendar(tz=tz, **caps))
    return tuple(windows)


def sometimes_capped(axis: int, low: int, high: int) -> st.SearchStrategy[int | None]:
    """Capped at ``low`` to ``high`` requests' worth, or uncapped."""
    return steps(axis, low * MOST[axis], high * MOST[axis]) | st.none()


def per_request_cap(axis: int) -> st.SearchStrategy[int | None]:
    capped = steps(axis, MOST[axis] // 2, MOST[axis])
    return st.integers(0, 15).flatmap(lambda k: capped if k == 0 else st.none())


PER_REQUEST = st.tuples(*(per_request_cap(axis) for axis in range(N)))
# The shared caps hold several requests; a tenant's a few, so both refuse now and then.
SHARED_CAPS = st.tuples(*(sometimes_capped(axis, 3, 10) for axis in range(N)))
TENANT_CAPS = st.tuples(*(sometimes_capped(axis, 2, 6) for axis in range(N)))
SHARED_WINDOWS = windows_strategy() | st.just(())
TENANT_WINDOWS = windows_strategy().map(lambda windows: windows[:2]) | st.just(())
TENANT_LIMITS = st.builds(Limits, TENANT_CAPS, PER_REQUEST, TENANT_WINDOWS)
DEFAULT_LIMITS = TENANT_LIMITS | st.just(Limits())
TENANT_SPECS = st.dictionaries(st.sampled_from(TENANTS), TENANT_LIMITS, max_size=len(TENANTS))
SECONDS = st.integers(1, 2 * 3600).map(lambda s: timedelta(seconds=s))
DEFAULT_TTL = st.none() | SECONDS
TTLS = SECONDS | st.sampled_from((None, timedelta.max))
# Mostly in the future; now and then now or just before, which an override refuses.
PAST = (timedelta(0), -MICROSECOND, -timedelta(minutes=5))
EXPIRES = st.integers(1, 20 + len(PAST)).map(
    lambda k: timedelta(minutes=5 * k) if k <= 20 else PAST[k - 21]
)
CARVE = tuple(steps(axis, 0, 2 * MOST[axis]) for axis in range(N))
CARVE_NESTED = tuple(steps(axis, 0, MOST[axis]) for axis in range(N))


def last_sunday_at_one_utc(year: int, month: int) -> datetime:
    """When Berlin (like all the EU) changes its clocks: 01:00 UTC, last Sunday of the month."""
    day = datetime(year, month + 1, 1, 1, tzinfo=UTC) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - 6) % 7)


def first_sunday_lord_howe(year: int, month: int) -> datetime:
    """When Lord Howe changes its clocks: 02:00 local on the first Sunday of April
    (back to 01:30, +10:30) or October (on to 02:30, +11)."""
    day = datetime(year, month, 1)
    day += timedelta(days=(6 - day.weekday()) % 7)
    offset = timedelta(hours=11) if month == 4 else timedelta(hours=10, minutes=30)
    return day.replace(hour=2, tzinfo=UTC) - offset


DST_CHANGES = (
    *(last_sunday_at_one_utc(year, month) for month in (10, 3) for year in range(2030, 2023, -1)),
    *(first_sunday_lord_howe(year, month) for month in (4, 10) for year in range(2030, 2023, -1)),
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
NEAR_AN_ANCHOR = st.builds(
    lambda anchor, seconds, micros: anchor + timedelta(seconds=seconds, microseconds=micros),
    st.sampled_from(ANCHORS),
    st.integers(0, 3600) | st.integers(-3 * 3600, 3 * 3600) | st.integers(-2 * 86400, 0),
    st.sampled_from([0, 0, -1, 1]),
)
STARTS = st.one_of(
    NEAR_AN_ANCHOR,
    st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    ),
)
DELTAS = st.one_of(
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


def near(held: int, axis: int) -> st.SearchStrategy[int]:
    """What a commit reports for ``held``: often less, sometimes more (an overrun)."""
    return st.integers(0, held) | st.integers(held, held + 3 * SCALE[axis])


@st.composite
def actuals(draw: st.DrawFn, held: Vector) -> Vector:
    """What a call used, near what it held; tokens stay >= input + output."""
    values = [draw(near(held[axis], axis)) for axis in range(N)]
    values[2] = max(values[2], values[0] + values[1])
    return tuple(values)


@st.composite
def increases(draw: st.DrawFn, capped: Sequence[int]) -> Vector:
    """An override's increase: on some capped axes, now and then on none or an uncapped one."""
    increase = [0] * N
    if capped and not draw(one_in(8), label="raise nothing"):
        first = draw(st.sampled_from(sorted(capped)))
        for axis in capped:
            if axis == first or draw(st.booleans(), label="raise"):
                increase[axis] = draw(steps(axis, 0, MOST[axis])) or SCALE[axis]
    if draw(one_in(8), label="stray"):
        axis = draw(st.integers(0, N - 1), label="stray axis")
        increase[axis] += SCALE[axis]
    increase[2] = max(increase[2], increase[0] + increase[1])  # tokens >= input + output
    return tuple(increase)
