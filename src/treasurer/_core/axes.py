"""The axes a budget counts, and turning user input into exact integer vectors.

An amount is a tuple with one int per axis, in the order of ``AXES``. Every
loop over axes goes through this registry, so a new axis is added here once.
USD is held as integer nano-dollars (1e-9 USD), so sums are exact: ``0.1 +
0.1 + 0.1`` fits a ``0.3`` cap. A charge finer than a nano-dollar rounds up and
a cap rounds down, so rounding never lets spend past a cap.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation, localcontext
from typing import Final

import attrs

from .._errors import InvalidAmount, InvalidAmountType, UnknownAxis


@attrs.frozen
class Axis:
    """One thing a budget counts.

    ``money`` axes are given in dollars and held in nano-dollars; ``per_call``
    is what a call counts when the caller does not say (one request);
    ``total_of`` names the axes this one is at least the sum of.
    """

    name: str
    money: bool = False
    per_call: int = 0
    total_of: tuple[str, ...] = ()


REGISTRY: Final = (
    Axis("input_tokens"),
    Axis("output_tokens"),
    Axis("tokens", total_of=("input_tokens", "output_tokens")),
    Axis("usd", money=True),
    Axis("requests", per_call=1),
)
AXES: Final = tuple(axis.name for axis in REGISTRY)
INDEX: Final = {name: index for index, name in enumerate(AXES)}
TOKENS: Final = INDEX["tokens"]
REQUESTS: Final = INDEX["requests"]
_MONEY: Final = frozenset(index for index, axis in enumerate(REGISTRY) if axis.money)
_PER_CALL: Final = [axis.per_call for axis in REGISTRY]
_TOTALS: Final = tuple(
    (index, tuple(INDEX[part] for part in axis.total_of))
    for index, axis in enumerate(REGISTRY)
    if axis.total_of
)

Vector = tuple[int, ...]
"""One int per axis, in registry order."""
CapVector = tuple[int | None, ...]
"""One cap per axis; ``None`` is unbounded."""
ZERO: Final[Vector] = (0,) * len(AXES)
NO_CAPS: Final[CapVector] = (None,) * len(AXES)

NANOS_PER_USD: Final = 10**9
# Bounds on any one figure a caller gives: far beyond any real budget, small
# enough that nothing a caller sends costs long to convert or overflows a
# 64-bit integer in a store. Checked before converting, so a Decimal such as
# 1e1000000 is refused at once.
MAX_COUNT: Final = 10**15
MAX_USD: Final = 10**9
_MAX_USD_EXPONENT: Final = 9  # Decimal.adjusted() of MAX_USD
_FAST_FLOAT_LIMIT: Final = 1_000_000.0


# Vectors are immutable: every change makes a new one (map over axes is the
# cheapest loop Python has, and nobody can see a half-changed vector).


def add(a: Vector, b: Vector) -> Vector:
    return tuple(map(operator.add, a, b))


def sub(a: Vector, b: Vector) -> Vector:
    return tuple(map(operator.sub, a, b))


def take(a: Vector, b: Vector) -> Vector:
    """``a - b`` per axis, never below zero."""
    difference = tuple(map(operator.sub, a, b))
    if min(difference) >= 0:
        return difference
    return tuple(max(value, 0) for value in difference)


def on_axis(axis: int, value: int) -> Vector:
    """A vector with ``value`` on one axis and zero elsewhere."""
    return (*ZERO[:axis], value, *ZERO[axis + 1 :])


def to_public(axis: int, value: int) -> int | Decimal:
    """An internal figure in the unit users see (Decimal dollars for money)."""
    return nanos_to_usd(value) if axis in _MONEY else value


_EXACT: Final = Context(prec=60)  # wider than any figure: MAX_COUNT nano-dollars and more


@functools.lru_cache(maxsize=4096)  # the same prices come back again and again
def nanos_to_usd(nanos: int) -> Decimal:
    """Integer nano-dollars as an exact, normalized Decimal ("10", "0.0036")."""
    if nanos == 0:
        return Decimal(0)
    # Our own context: the application's precision must not round a figure (and a
    # figure rounded once would stay in the cache).
    result = Decimal(nanos).scaleb(-9, _EXACT).normalize(_EXACT)
    if result == result.to_integral_value(context=_EXACT):
        return result.quantize(Decimal(1), context=_EXACT)
    return result


def count(value: object, name: str) -> int:
    """Validate a token or request count."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmountType(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise InvalidAmount(f"{name} must be >= 0, got {shown(value)}")
    if value > MAX_COUNT:
        raise InvalidAmount(f"{name} must be <= {MAX_COUNT:_}, got {shown(value)}")
    return int(value)


def shown(value: object) -> str:
    """A figure for an error message, cut short if it is huge."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"a {value.bit_length()}-bit integer"
    text = str(value)
    return text if len(text) <= 60 else f"{text[:30]}...{text[-10:]}"


def usd_to_nanos(value: object, name: str = "usd", *, round_up: bool = True) -> int:
    """A dollar amount as integer nano-dollars, exactly; floats read by their repr."""
    if type(value) is float and 0 <= value < _FAST_FLOAT_LIMIT:
        # The common case without Decimal: below a million dollars adjacent
        # doubles are at most 1.2e-10 apart, so a float with at most nine
        # decimals is the only one that round-trips through its nano count.
        # Anything finer fails the round trip and takes the exact path.
        nanos = round(value * NANOS_PER_USD)
        if nanos / NANOS_PER_USD == value:
            return nanos
    if isinstance(value, bool):
        raise InvalidAmountType(f"{name} must be a number of dollars, got bool {value!r}")
    if isinstance(value, int):
        exact = Decimal(value) if abs(value) <= MAX_USD else Decimal(MAX_USD + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidAmount(f"{name} must be a finite number, got {value}")
        exact = Decimal(repr(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidAmount(f"{name} must be a finite number, got {value}")
        exact = value
    else:
        raise InvalidAmountType(
            f"{name} must be an int, float or Decimal, got {type(value).__name__} {value!r}"
        )
    if exact < 0:
        raise InvalidAmount(f"{name} must be >= 0, got {shown(value)}")
    if not exact:
        return 0
    if exact.adjusted() >= _MAX_USD_EXPONENT and exact > MAX_USD:
        raise InvalidAmount(f"{name} must be <= {MAX_USD:_} dollars, got {shown(value)}")
    if exact.adjusted() < -10:  # far below a nano-dollar
        return 1 if round_up else 0
    with localcontext() as context:
        context.prec = 40  # enough for MAX_USD in nano-dollars and any fraction
        try:
            scaled = exact.scaleb(9).to_integral_value(
                rounding=ROUND_CEILING if round_up else ROUND_FLOOR
            )
        except InvalidOperation as exc:  # pragma: no cover - bounded above
            raise InvalidAmount(f"{name} is out of range: {value}") from exc
    return int(scaled)


def _axis_value(axis: Axis, value: object, *, cap: bool = False) -> int:
    if axis.money:
        return usd_to_nanos(value, axis.name, round_up=not cap)
    return count(value, axis.name)


def parse(amounts: Mapping[str, object], *, per_call: bool = True) -> Vector:
    """Axis keywords as a validated amount vector; raises on bad input.

    Omitted axes are zero, except that a call counts its ``per_call`` amount
    (one request) when ``per_call`` is set, and a total axis defaults to the
    sum of its parts (and must be at least that sum when given).
    """
    values = _PER_CALL.copy() if per_call else [0] * len(AXES)
    for name, value in amounts.items():
        index = INDEX.get(name)
        if index is None:
            raise UnknownAxis(f"unknown axis {name!r}; expected one of {', '.join(AXES)}")
        if type(value) is int and 0 <= value <= MAX_COUNT and index not in _MONEY:
            values[index] = value  # a plain count, the common case
        else:
            values[index] = _axis_value(REGISTRY[index], value)
    for index, parts in _TOTALS:
        split = 0
        for part in parts:
            split += values[part]
        if AXES[index] not in amounts:
            values[index] = split
        elif values[index] < split:
            names = " + ".join(AXES[part] for part in parts)
            raise InvalidAmount(f"{AXES[index]} ({values[index]}) must be >= {names} ({split})")
    return tuple(values)


def parse_caps(caps: Mapping[str, object]) -> CapVector:
    """Cap keywords as a cap vector; ``None`` (or omitted) leaves an axis unbounded."""
    values: list[int | None] = [None] * len(AXES)
    for name, value in caps.items():
        index = INDEX.get(name)
        if index is None:
            raise UnknownAxis(f"unknown cap {name!r}; expected one of {', '.join(AXES)}")
        if value is not None:
            values[index] = _axis_value(REGISTRY[index], value, cap=True)
    return tuple(values)


def describe(amount: Iterable[int]) -> dict[str, int | Decimal]:
    """The nonzero axes of an amount, in public units (for logs and messages)."""
    return {AXES[i]: to_public(i, value) for i, value in enumerate(amount) if value}
