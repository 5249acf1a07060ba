"""Axes, and turning user input into exact integer amount vectors.

Internally an amount is a tuple of five ints in axis order. USD is held as
integer nano-dollars (1e-9 USD) so sums are exact: ``0.1 + 0.1 + 0.1`` fits a
``0.3`` cap. A charge finer than a nano-dollar is rounded up and a cap is
rounded down, so rounding can never let spend past a cap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_CEILING,
    ROUND_FLOOR,
    Context,
    Decimal,
    InvalidOperation,
)
from typing import Final, TypedDict

from ._errors import InvalidAmount, InvalidAmountType, UnknownAxis

INPUT: Final = 0
OUTPUT: Final = 1
TOKENS: Final = 2
USD: Final = 3
REQUESTS: Final = 4

AXES: Final = ("input_tokens", "output_tokens", "tokens", "usd", "requests")
AXIS_INDEX: Final = {name: index for index, name in enumerate(AXES)}

NANOS_PER_USD: Final = 10**9
# Below a million dollars adjacent doubles are at most 1.2e-10 apart, so two
# numbers with 9 decimals (1e-9 apart or more) never round to the same double:
# a nano count that round-trips is the exact decimal of the float.
_FAST_FLOAT_LIMIT: Final = 1_000_000.0
_NANO_EXPONENT: Final = 9
_ONE: Final = Decimal(1)
# Our own context: exact whatever precision the application set for its thread.
_EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)

Vector = tuple[int, int, int, int, int]
CapVector = tuple[int | None, int | None, int | None, int | None, int | None]
ZERO: Final[Vector] = (0, 0, 0, 0, 0)
NO_CAPS: Final[CapVector] = (None, None, None, None, None)

Money = int | float | Decimal


class Amounts(TypedDict, total=False):
    """The axis keywords every call takes. Omitted axes count as zero.

    ``tokens`` is the total; it defaults to ``input_tokens + output_tokens``
    and, if given with them, must be at least their sum (the rest is usage
    not split into input and output). ``requests`` defaults to one per call.
    """

    input_tokens: int
    output_tokens: int
    tokens: int
    usd: Money
    requests: int


def count(value: object, name: str) -> int:
    """Validate a token or request count."""
    if type(value) is int:
        if value < 0:
            raise InvalidAmount(f"{name} must be >= 0, got {value}")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmountType(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return count(int(value), name)


def usd_to_nanos(value: object, name: str = "usd", *, round_up: bool = True) -> int:
    """Convert a USD amount to integer nano-dollars, exactly.

    Floats are read by their shortest repr, so ``0.1`` means one tenth.
    """
    if type(value) is float and 0 <= value < _FAST_FLOAT_LIMIT:
        # The common case first: a plain float in range (NaN, infinities and
        # negatives fail the comparison and are refused below). Exact, see
        # _FAST_FLOAT_LIMIT; anything finer than a nano-dollar fails the round
        # trip and takes the exact path.
        # Nearest by truncation (the value is >= 0), cheaper than round();
        # which neighbour a tie picks does not matter: the round trip decides.
        nanos = int(value * NANOS_PER_USD + 0.5)
        if nanos / NANOS_PER_USD == value:
            return nanos
    if isinstance(value, bool):
        raise InvalidAmountType(f"{name} must be a number of dollars, got bool {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise InvalidAmount(f"{name} must be >= 0, got {value}")
        return value * NANOS_PER_USD
    if isinstance(value, float):
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
        raise InvalidAmount(f"{name} must be >= 0, got {value}")
    try:
        scaled = exact.scaleb(_NANO_EXPONENT, _EXACT).to_integral_value(
            rounding=ROUND_CEILING if round_up else ROUND_FLOOR, context=_EXACT
        )
    except InvalidOperation as exc:  # pragma: no cover - only for absurd exponents
        raise InvalidAmount(f"{name} is out of range: {value}") from exc
    return int(scaled)


def nanos_to_usd(nanos: int) -> Decimal:
    """Integer nano-dollars as an exact, normalized Decimal number of dollars."""
    if nanos == 0:
        return Decimal(0)
    result = Decimal(nanos).scaleb(-_NANO_EXPONENT, _EXACT).normalize(_EXACT)
    # Drop trailing zeros, but show whole dollars as "10", not "1E+1".
    if result == result.to_integral_value(context=_EXACT):
        return result.quantize(_ONE, context=_EXACT)
    return result


def to_public(axis: int, value: int) -> int | Decimal:
    """An internal axis value in the unit users see."""
    return nanos_to_usd(value) if axis == USD else value


def parse(amounts: Mapping[str, object], *, default_requests: int = 1) -> Vector:
    """Turn axis keywords into a validated amount vector, or raise.

    Reads ``amounts`` only, so a call's own ``**kwargs`` is passed as it is,
    not copied.
    """
    input_tokens = output_tokens = usd = 0
    tokens: int | None = None
    requests = default_requests
    for name, value in amounts.items():
        if name == "tokens":
            # A plain count inline (the common case); count() for anything else.
            tokens = value if type(value) is int and value >= 0 else count(value, name)
        elif name == "usd":
            usd = usd_to_nanos(value)
        elif name == "input_tokens":
            input_tokens = count(value, name)
        elif name == "output_tokens":
            output_tokens = count(value, name)
        elif name == "requests":
            requests = count(value, name)
        else:
            raise UnknownAxis(f"unknown axis {name!r}; expected one of {', '.join(AXES)}")
    split = input_tokens + output_tokens
    if tokens is None:
        tokens = split
    elif tokens < split:
        raise InvalidAmount(f"tokens ({tokens}) must be >= input_tokens + output_tokens ({split})")
    return (input_tokens, output_tokens, tokens, usd, requests)


def parse_caps(caps: dict[str, object]) -> CapVector:
    """Validate cap keywords; ``None`` (or omitted) leaves an axis unbounded."""
    values: list[int | None] = [None] * len(AXES)
    for name, value in caps.items():
        index = AXIS_INDEX.get(name)
        if index is None:
            raise UnknownAxis(f"unknown cap {name!r}; expected one of {', '.join(AXES)}")
        if value is None:
            continue
        values[index] = (
            usd_to_nanos(value, name, round_up=False) if index == USD else count(value, name)
        )
    return (values[0], values[1], values[2], values[3], values[4])


class Metadata(TypedDict, total=False):
    """What a usage record may say about itself, besides its amounts."""

    model: str
    tenant: str
    request_id: str
    session_id: str
    tags: Mapping[str, str]


class UsageInfo(Amounts, Metadata, total=False):
    """The keywords of record(), charge() and commit(): amounts and metadata."""


_METADATA: Final = frozenset(Metadata.__annotations__)


def split_metadata(
    given: Mapping[str, object],
) -> tuple[Mapping[str, object], dict[str, object] | None]:
    """Separate metadata keywords from amounts, validating the metadata.

    Without metadata the amounts are ``given`` itself; with it, a new dict.
    """
    if _METADATA.isdisjoint(given):
        return given, None
    amounts = dict(given)
    meta: dict[str, object] = {}
    for key in given.keys() & _METADATA:
        value = amounts.pop(key)
        if key == "tags":
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise InvalidAmountType(f"tags must be a mapping of str to str, got {value!r}")
            value = dict(value)
        elif not isinstance(value, str):
            raise InvalidAmountType(f"{key} must be a str, got {type(value).__name__} {value!r}")
        meta[key] = value
    return amounts, meta
