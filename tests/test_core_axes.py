"""Amount vectors (``treasurer._core.axes``): exact money, bounds, validation of every
axis, and typed errors naming the axis. Pure: no event loop."""

from __future__ import annotations

import enum
import math
import re
import time
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treasurer import InvalidAmount, InvalidAmountType, TreasurerError, UnknownAxis
from treasurer._core.axes import (
    AXES,
    INDEX,
    MAX_COUNT,
    MAX_USD,
    NANOS_PER_USD,
    count,
    nanos_to_usd,
    parse,
    parse_caps,
    usd_to_nanos,
)

USD = INDEX["usd"]
COUNT_AXES = ("input_tokens", "output_tokens", "tokens", "requests")
# Refusing a huge figure must not cost a measurable time (it used to take tens of
# seconds); the bound is loose so a busy machine never makes the test flaky.
FAST = 1.0


def names(axis: str) -> str:
    """A regex matching ``axis`` as a whole word ("tokens" must not match "input_tokens")."""
    return rf"(?<!\w){re.escape(axis)}(?!\w)"


class TestExactMoney:
    def test_three_tenths_fit_a_cap_of_three_tenths(self) -> None:
        """Three charges of 0.1 USD add up to exactly a 0.3 USD cap."""
        for tenth, cap in ((0.1, 0.3), (Decimal("0.1"), Decimal("0.3"))):
            total = sum(usd_to_nanos(tenth) for _ in range(3))
            assert total == parse_caps({"usd": cap})[USD] == 300_000_000
            assert sum(parse({"usd": tenth})[USD] for _ in range(3)) == total

    def test_floats_are_read_by_their_shortest_repr(self) -> None:
        """0.1 means one tenth, not the binary value just above it."""
        assert Fraction(0.1) > Fraction(1, 10)
        assert usd_to_nanos(0.1) == 100_000_000
        assert usd_to_nanos(0.3, round_up=False) == 300_000_000

    @pytest.mark.parametrize(
        ("value", "nanos"),
        [
            (0, 0),
            (2, 2 * NANOS_PER_USD),
            (MAX_USD, MAX_USD * NANOS_PER_USD),
            (Decimal(MAX_USD), MAX_USD * NANOS_PER_USD),
            (float(MAX_USD), MAX_USD * NANOS_PER_USD),
            (Decimal("0.0036"), 3_600_000),
            (Decimal("12.5"), 12_500_000_000),
            (Decimal("0.000000001"), 1),
            (Decimal("-0"), 0),
            (-0.0, 0),
            (1.5, 1_500_000_000),
        ],
    )
    def test_int_decimal_and_float_dollars_convert_exactly(self, value: object, nanos: int) -> None:
        """Dollars given as int, Decimal or float become exact integer nano-dollars."""
        assert usd_to_nanos(value) == nanos
        assert usd_to_nanos(value, round_up=False) == nanos
        assert type(usd_to_nanos(value)) is int

    @pytest.mark.parametrize(
        ("value", "charge", "cap"),
        [
            (Decimal("0.0000000001"), 1, 0),
            (Decimal("0.0000000019"), 2, 1),
            (Decimal("1.0000000001"), NANOS_PER_USD + 1, NANOS_PER_USD),
            (Decimal("0.00360000000000001"), 3_600_001, 3_600_000),
            (Decimal("1e-999999999999999999"), 1, 0),
            (1e-10, 1, 0),
            (5e-324, 1, 0),
            (1.23456789012, 1_234_567_891, 1_234_567_890),
        ],
    )
    def test_sub_nano_charges_round_up_and_caps_round_down(
        self, value: Decimal | float, charge: int, cap: int
    ) -> None:
        """A charge finer than a nano-dollar rounds up; a cap rounds down."""
        assert usd_to_nanos(value) == charge
        assert parse({"usd": value})[USD] == charge
        assert usd_to_nanos(value, round_up=False) == cap
        assert parse_caps({"usd": value})[USD] == cap

    @pytest.mark.parametrize(
        ("nanos", "text"),
        [
            (3_600_000, "0.0036"),
            (10 * NANOS_PER_USD, "10"),
            (100 * NANOS_PER_USD, "100"),
            (0, "0"),
            (-3_600_000, "-0.0036"),
            (-10 * NANOS_PER_USD, "-10"),
            (1_234_567_800_000, "1234.5678"),
            (1_500_000_000, "1.5"),
            (1, "1E-9"),
        ],
    )
    def test_nanos_to_usd_gives_normalized_decimals(self, nanos: int, text: str) -> None:
        """Nano-dollars become a Decimal without trailing zeros or exponents for whole dollars."""
        value = nanos_to_usd(nanos)
        assert type(value) is Decimal
        assert value == Decimal(text)
        assert str(value) == text

    @given(st.integers(0, MAX_USD * NANOS_PER_USD))
    def test_decimal_nanos_convert_back_exactly(self, n: int) -> None:
        """usd_to_nanos(Decimal(n) / 10**9) is n for every whole number of nano-dollars."""
        dollars = Decimal(n) / 10**9
        assert usd_to_nanos(dollars) == n
        assert usd_to_nanos(dollars, round_up=False) == n

    @given(st.integers(-(10**18), 10**18))
    def test_nanos_to_usd_is_exact_and_normalized(self, n: int) -> None:
        """nanos_to_usd is exact, has no trailing zeros, never an exponent above zero."""
        value = nanos_to_usd(n)
        assert Fraction(value) == Fraction(n, NANOS_PER_USD)
        _, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        assert exponent <= 0
        if exponent < 0:
            assert digits[-1] != 0
        assert nanos_to_usd(-n) == -value
        if n >= 0:
            assert usd_to_nanos(value) == n
            assert usd_to_nanos(value, round_up=False) == n

    @given(
        st.decimals(min_value=0, max_value=10**6, places=14, allow_nan=False, allow_infinity=False)
    )
    def test_rounding_brackets_the_exact_value(self, dollars: Decimal) -> None:
        """The charge is the ceiling and the cap the floor of the exact nano-dollar value."""
        exact = Fraction(dollars) * NANOS_PER_USD
        charge = usd_to_nanos(dollars)
        cap = usd_to_nanos(dollars, round_up=False)
        assert charge == math.ceil(exact)
        assert cap == math.floor(exact)

    @given(st.floats(min_value=0, max_value=MAX_USD, allow_nan=False, allow_infinity=False))
    def test_a_float_is_its_repr(self, dollars: float) -> None:
        """A float converts exactly as the Decimal of its repr does."""
        assert usd_to_nanos(dollars) == usd_to_nanos(Decimal(repr(dollars)))
        assert usd_to_nanos(dollars, round_up=False) == usd_to_nanos(
            Decimal(repr(dollars)), round_up=False
        )

    def test_a_charge_with_many_digits_still_rounds_up(self) -> None:
        """A charge with more than 28 significant digits is still rounded up, never down."""
        assert usd_to_nanos(Decimal("1.0000000000000000000000000001")) == NANOS_PER_USD + 1
        assert nanos_to_usd(12345678901234567890123456789) == Decimal(
            "12345678901234567890.123456789"
        )

    def test_conversions_ignore_the_ambient_decimal_context(self) -> None:
        """An application's decimal precision does not change caps, charges or reported dollars."""
        nanos_to_usd.cache_clear()  # a figure is computed afresh under the application's context
        with localcontext() as context:
            context.prec = 6
            cap = parse_caps({"usd": Decimal("1234.5678")})[USD]
            charge = usd_to_nanos(Decimal("1234.5612"))
            shown = nanos_to_usd(1_234_567_800_000)
        assert cap == 1_234_567_800_000
        assert charge == 1_234_561_200_000
        assert shown == Decimal("1234.5678")
        assert nanos_to_usd(1_234_567_800_000) == Decimal("1234.5678")  # nothing wrong was kept


class TestBounds:
    """Any one figure a caller gives is bounded, and refused at once beyond the bound."""

    @pytest.mark.parametrize("axis", COUNT_AXES)
    def test_counts_up_to_max_count_are_accepted(self, axis: str) -> None:
        """A count of exactly MAX_COUNT is valid, as an amount and as a cap."""
        assert count(MAX_COUNT, axis) == MAX_COUNT
        assert parse({axis: MAX_COUNT})[INDEX[axis]] == MAX_COUNT
        assert parse_caps({axis: MAX_COUNT})[INDEX[axis]] == MAX_COUNT

    @pytest.mark.parametrize("axis", COUNT_AXES)
    @pytest.mark.parametrize(
        "value",
        [MAX_COUNT + 1, 10**30, 10**100_000],
        ids=["max-plus-one", "1e30", "1e100000"],
    )
    def test_counts_above_max_count_are_refused_fast(self, axis: str, value: int) -> None:
        """A count above MAX_COUNT is an InvalidAmount naming the axis, however large."""
        for check in (
            lambda: count(value, axis),
            lambda: parse({axis: value}),
            lambda: parse_caps({axis: value}),
        ):
            start = time.perf_counter()
            with pytest.raises(InvalidAmount, match=names(axis)) as caught:
                check()
            assert time.perf_counter() - start < FAST
            assert len(str(caught.value)) < 200  # the figure is cut short, not printed whole

    @pytest.mark.parametrize(
        "value",
        [
            MAX_USD + 1,
            Decimal("1000000000.000000001"),
            float(MAX_USD) + 0.5,
            1e300,
            10**100_000,
            Decimal("1e1000000"),
            Decimal("1e999999999999999999"),
        ],
        ids=["int", "decimal", "float", "1e300", "huge-int", "1e1000000", "1e999999999999999999"],
    )
    def test_dollars_above_max_usd_are_refused_fast(self, value: object) -> None:
        """Dollars above MAX_USD, however large, are an InvalidAmount naming usd, at once."""
        for check in (
            lambda: usd_to_nanos(value),
            lambda: usd_to_nanos(value, round_up=False),
            lambda: parse({"usd": value}),
            lambda: parse_caps({"usd": value}),
        ):
            start = time.perf_counter()
            with pytest.raises(InvalidAmount, match=names("usd")) as caught:
                check()
            assert time.perf_counter() - start < FAST
            assert len(str(caught.value)) < 200

    @pytest.mark.parametrize(
        "value",
        [Decimal("-1e1000000"), Decimal("-1e999999999999999999"), -(10**100_000)],
        ids=["-1e1000000", "-1e999999999999999999", "huge-int"],
    )
    def test_huge_negative_dollars_are_refused_fast(self, value: object) -> None:
        """A hugely negative amount is an InvalidAmount (never decimal.Overflow), at once."""
        start = time.perf_counter()
        with pytest.raises(InvalidAmount, match=names("usd")):
            usd_to_nanos(value)
        assert time.perf_counter() - start < FAST

    def test_the_bounds_fit_a_signed_64_bit_integer(self) -> None:
        """The largest figure a caller can give fits a store's 64-bit integers."""
        assert MAX_COUNT < 2**63
        assert MAX_USD * NANOS_PER_USD < 2**63


class TestParse:
    def test_tokens_default_to_input_plus_output(self) -> None:
        """Omitted tokens are input + output; omitted requests are one; the rest zero."""
        assert parse({"input_tokens": 30, "output_tokens": 12}) == (30, 12, 42, 0, 1)
        assert parse({}) == (0, 0, 0, 0, 1)
        assert parse({}, per_call=False) == (0, 0, 0, 0, 0)
        assert parse({"requests": 3, "usd": 1}) == (0, 0, 0, NANOS_PER_USD, 3)

    def test_tokens_may_exceed_input_plus_output(self) -> None:
        """A total above input + output is kept (usage not split into input and output)."""
        assert parse({"input_tokens": 3, "output_tokens": 4, "tokens": 10}) == (3, 4, 10, 0, 1)
        assert parse({"input_tokens": 3, "output_tokens": 4, "tokens": 7}) == (3, 4, 7, 0, 1)
        assert parse({"tokens": 5}) == (0, 0, 5, 0, 1)

    def test_tokens_below_input_plus_output_are_refused(self) -> None:
        """A total below input + output is an InvalidAmount naming tokens."""
        with pytest.raises(InvalidAmount, match=names("tokens")) as caught:
            parse({"input_tokens": 5, "output_tokens": 5, "tokens": 9})
        assert "10" in str(caught.value)

    @given(
        st.fixed_dictionaries(
            {},
            optional={
                "input_tokens": st.integers(0, 10**9),
                "output_tokens": st.integers(0, 10**9),
                "usd": st.decimals(min_value=0, max_value=10**4, places=9) | st.integers(0, 10**4),
                "requests": st.integers(0, 100),
            },
        ),
        st.none() | st.integers(0, 10**6),
    )
    def test_random_valid_amounts(self, amounts: dict[str, object], extra: int | None) -> None:
        """Any valid dict parses to a vector whose tokens are input + output (+ any extra given)."""
        input_tokens = amounts.get("input_tokens", 0)
        output_tokens = amounts.get("output_tokens", 0)
        assert isinstance(input_tokens, int)
        assert isinstance(output_tokens, int)
        if extra is not None:
            amounts = {**amounts, "tokens": input_tokens + output_tokens + extra}
        parsed = parse(amounts)
        assert parsed[0] == input_tokens
        assert parsed[1] == output_tokens
        assert parsed[2] == input_tokens + output_tokens + (extra or 0)
        assert parsed[3] == usd_to_nanos(amounts.get("usd", 0))
        assert parsed[4] == amounts.get("requests", 1)
        assert all(type(value) is int and value >= 0 for value in parsed)

    def test_int_subclasses_count_as_ints(self) -> None:
        """An int subclass (not bool) is accepted and stored as a plain int."""

        class Size(enum.IntEnum):
            SMALL = 7

        assert count(Size.SMALL, "tokens") == 7
        assert type(count(Size.SMALL, "tokens")) is int
        assert parse({"tokens": Size.SMALL}) == (0, 0, 7, 0, 1)
        assert type(parse({"tokens": Size.SMALL})[2]) is int


class TestParseCaps:
    def test_omitted_and_none_caps_are_unbounded(self) -> None:
        """Caps that are omitted or None leave their axis unbounded."""
        assert parse_caps({}) == (None,) * len(AXES)
        assert parse_caps({"tokens": None, "usd": None}) == (None,) * len(AXES)

    def test_caps_parse_on_every_axis(self) -> None:
        """Each cap keyword fills its own axis; USD becomes nano-dollars."""
        caps = parse_caps(
            {
                "input_tokens": 1,
                "output_tokens": 2,
                "tokens": 3,
                "usd": Decimal("4.5"),
                "requests": 0,
            }
        )
        assert caps == (1, 2, 3, 4_500_000_000, 0)


BAD_COUNTS = [
    pytest.param(-1, InvalidAmount, id="negative"),
    pytest.param(True, InvalidAmountType, id="true"),
    pytest.param(False, InvalidAmountType, id="false"),
    pytest.param(1.0, InvalidAmountType, id="float"),
    pytest.param(2.5, InvalidAmountType, id="fractional-float"),
    pytest.param(Decimal(3), InvalidAmountType, id="decimal"),
    pytest.param("5", InvalidAmountType, id="str"),
    pytest.param(None, InvalidAmountType, id="none"),
]

BAD_MONEY = [
    pytest.param(-1, InvalidAmount, id="negative-int"),
    pytest.param(-0.01, InvalidAmount, id="negative-float"),
    pytest.param(Decimal("-0.01"), InvalidAmount, id="negative-decimal"),
    pytest.param(math.nan, InvalidAmount, id="nan"),
    pytest.param(math.inf, InvalidAmount, id="inf"),
    pytest.param(-math.inf, InvalidAmount, id="-inf"),
    pytest.param(Decimal("NaN"), InvalidAmount, id="decimal-nan"),
    pytest.param(Decimal("sNaN"), InvalidAmount, id="decimal-snan"),
    pytest.param(Decimal("Infinity"), InvalidAmount, id="decimal-inf"),
    pytest.param(Decimal("-Infinity"), InvalidAmount, id="decimal--inf"),
    pytest.param(True, InvalidAmountType, id="bool"),
    pytest.param("0.1", InvalidAmountType, id="str"),
    pytest.param(Fraction(1, 10), InvalidAmountType, id="fraction"),
    pytest.param([1], InvalidAmountType, id="list"),
]


class TestBadInput:
    def test_error_classes(self) -> None:
        """Invalid values are ValueErrors, wrong types and unknown axes TypeErrors, all ours."""
        assert issubclass(InvalidAmount, ValueError)
        assert issubclass(InvalidAmountType, TypeError)
        assert issubclass(UnknownAxis, TypeError)
        for error in (InvalidAmount, InvalidAmountType, UnknownAxis):
            assert issubclass(error, TreasurerError)

    @pytest.mark.parametrize("axis", COUNT_AXES)
    @pytest.mark.parametrize(("value", "error"), BAD_COUNTS)
    def test_bad_counts_are_refused_with_the_axis_named(
        self, axis: str, value: object, error: type[TreasurerError]
    ) -> None:
        """A bad token or request count raises the right typed error naming its axis."""
        with pytest.raises(error, match=names(axis)):
            parse({axis: value})
        with pytest.raises(error, match=names(axis)):
            count(value, axis)
        if value is not None:  # a None cap means unbounded
            with pytest.raises(error, match=names(axis)):
                parse_caps({axis: value})

    @pytest.mark.parametrize(("value", "error"), BAD_MONEY)
    def test_bad_money_is_refused_with_the_axis_named(
        self, value: object, error: type[TreasurerError]
    ) -> None:
        """Negative, non-finite or non-numeric USD raises the right typed error naming usd."""
        with pytest.raises(error, match=names("usd")):
            usd_to_nanos(value)
        with pytest.raises(error, match=names("usd")):
            usd_to_nanos(value, round_up=False)
        with pytest.raises(error, match=names("usd")):
            parse({"usd": value})
        with pytest.raises(error, match=names("usd")):
            parse_caps({"usd": value})

    def test_none_is_not_money(self) -> None:
        """A None charge is an InvalidAmountType naming usd (only a cap may be None)."""
        with pytest.raises(InvalidAmountType, match=names("usd")):
            parse({"usd": None})

    @pytest.mark.parametrize("axis", ["cost", "max_tokens", "total_tokens", "USD", ""])
    def test_unknown_axes_are_refused(self, axis: str) -> None:
        """An unknown axis keyword raises UnknownAxis naming it and listing the real axes."""
        for parser in (parse, parse_caps):
            with pytest.raises(UnknownAxis, match=re.escape(repr(axis))) as caught:
                parser({"tokens": 1, axis: 1})
            assert all(name in str(caught.value) for name in AXES)


class TestFloatFastPath:
    """usd_to_nanos converts most floats without Decimal; it must agree with it exactly."""

    @settings(max_examples=1500)
    @given(
        st.floats(min_value=0, max_value=MAX_USD, allow_nan=False)
        | st.integers(0, MAX_USD * NANOS_PER_USD).map(lambda n: n / 10**9)
        | st.integers(0, 10**12).map(lambda n: n / 10**6)
        | st.integers(0, 10**15).map(lambda n: n / 10**9)  # below a million dollars
        | st.integers(0, 10**16).map(lambda n: n / 10**10)  # a digit finer than a nano
    )
    def test_agrees_with_the_decimal_path(self, value: float) -> None:
        """For any float, charge and cap conversions equal the exact Decimal computation."""
        exact = Decimal(repr(value)).scaleb(9)
        assert usd_to_nanos(value) == int(exact.to_integral_value(rounding=ROUND_CEILING))
        floor = int(exact.to_integral_value(rounding=ROUND_FLOOR))
        assert usd_to_nanos(value, round_up=False) == floor

    @pytest.mark.parametrize(
        ("value", "charge", "cap"),
        [
            (0.123456789, 123_456_789, 123_456_789),
            (0.1234567891, 123_456_790, 123_456_789),
            (999_999.999999999, 999_999_999_999_999, 999_999_999_999_999),
            (999_999.9999999999, 1_000_000_000_000_000, 999_999_999_999_999),
            (1_000_000.0, 1_000_000_000_000_000, 1_000_000_000_000_000),
            (1_000_000.000000001, 1_000_000_000_000_001, 1_000_000_000_000_001),
            (0.000000001, 1, 1),
            (0.0000000015, 2, 1),
            (2.675, 2_675_000_000, 2_675_000_000),
        ],
    )
    def test_edges_of_the_fast_path(self, value: float, charge: int, cap: int) -> None:
        """Floats at nine decimals, just finer, and around a million dollars convert exactly."""
        assert usd_to_nanos(value) == charge
        assert usd_to_nanos(value, round_up=False) == cap
