"""Bad input gets a typed error that also subclasses the matching built-in, and changes nothing."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import pytest

import treasurer
import treasurer.testing

pytestmark = pytest.mark.anyio

BAD_COUNTS: list[tuple[object, type[Exception]]] = [
    (-1, treasurer.InvalidAmount),
    (1.0, treasurer.InvalidAmountType),
    (2.5, treasurer.InvalidAmountType),
    (True, treasurer.InvalidAmountType),
    ("10", treasurer.InvalidAmountType),
    (None, treasurer.InvalidAmountType),
    (Decimal(3), treasurer.InvalidAmountType),
]
BAD_MONEY: list[tuple[object, type[Exception]]] = [
    (-0.01, treasurer.InvalidAmount),
    (Decimal("-1"), treasurer.InvalidAmount),
    (math.nan, treasurer.InvalidAmount),
    (math.inf, treasurer.InvalidAmount),
    (-math.inf, treasurer.InvalidAmount),
    (Decimal("NaN"), treasurer.InvalidAmount),
    (False, treasurer.InvalidAmountType),
    ("0.1", treasurer.InvalidAmountType),
]
BUILTIN = {
    treasurer.InvalidAmount: ValueError,
    treasurer.InvalidAmountType: TypeError,
    treasurer.UnknownAxis: TypeError,
}

Call = Callable[[treasurer.Budget, dict[str, Any]], Awaitable[object]]


async def via_record(budget: treasurer.Budget, amounts: dict[str, Any]) -> object:
    return await budget.record(**amounts)


async def via_consume(budget: treasurer.Budget, amounts: dict[str, Any]) -> object:
    return await budget.consume(**amounts)


async def via_reserve(budget: treasurer.Budget, amounts: dict[str, Any]) -> object:
    async with budget.reserve(**amounts):
        pytest.fail("must not be entered")  # pragma: no cover


async def via_commit(budget: treasurer.Budget, amounts: dict[str, Any]) -> object:
    async with budget.reserve(tokens=1) as r:
        try:
            r.commit(**amounts)
        finally:
            assert not r.settled  # a refused commit leaves the reservation open
    return None


CALLS = [via_record, via_consume, via_reserve, via_commit]


async def assert_refused_unchanged(
    budget: treasurer.Budget, call: Call, amounts: dict[str, Any], error: type[Exception]
) -> None:
    before, served = budget.snapshot(), budget.statistics().messages_served
    with pytest.raises(error) as caught:
        await call(budget, amounts)
    assert isinstance(caught.value, treasurer.TreasurerError)
    assert isinstance(caught.value, BUILTIN[error])
    await anyio.wait_all_tasks_blocked()
    assert budget.snapshot() == before
    # via_commit's own reservation is granted and released: two messages.
    assert budget.statistics().messages_served == served + (2 if call is via_commit else 0)


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__name__)
class TestEveryCallRefusesBadInput:
    @pytest.mark.parametrize("axis", ["input_tokens", "output_tokens", "tokens", "requests"])
    @pytest.mark.parametrize(("value", "error"), BAD_COUNTS, ids=repr)
    async def test_bad_counts(self, call: Call, axis: str, value: object, error: type) -> None:
        """Negative, float, bool, str, None and Decimal token or request counts are refused."""
        async with treasurer.open_budget(tokens=100, usd=1) as budget:
            await assert_refused_unchanged(budget, call, {axis: value}, error)
            with pytest.raises(error, match=axis):
                await call(budget, {axis: value})

    @pytest.mark.parametrize(("value", "error"), BAD_MONEY, ids=repr)
    async def test_bad_money(self, call: Call, value: object, error: type) -> None:
        """Negative, NaN, infinite, bool and str money is refused."""
        async with treasurer.open_budget(tokens=100, usd=1) as budget:
            await assert_refused_unchanged(budget, call, {"usd": value}, error)

    async def test_unknown_keyword(self, call: Call) -> None:
        """A keyword that names no axis is refused, naming the keyword, the axes and (where
        the call takes metadata) the metadata keys."""
        async with treasurer.open_budget(tokens=100) as budget:
            await assert_refused_unchanged(budget, call, {"token": 5}, treasurer.UnknownAxis)
            listed = r"'token'.*input_tokens" + ("" if call is via_consume else r".*model")
            with pytest.raises(treasurer.UnknownAxis, match=listed):
                await call(budget, {"token": 5})

    async def test_tokens_below_their_split(self, call: Call) -> None:
        """A total below input + output tokens is inconsistent and refused."""
        async with treasurer.open_budget(tokens=100) as budget:
            amounts = {"tokens": 5, "input_tokens": 4, "output_tokens": 4}
            await assert_refused_unchanged(budget, call, amounts, treasurer.InvalidAmount)


class TestOtherBadInput:
    async def test_request_larger_than_the_cap(self) -> None:
        """A request larger than the cap itself raises RequestTooLarge, a ValueError."""
        async with treasurer.open_budget(tokens=100, usd=0.5) as budget:
            before = budget.snapshot()
            for attempt in (
                budget.consume(101),
                budget.record(usd=0.51),
            ):
                with pytest.raises(treasurer.RequestTooLarge) as caught:
                    await attempt
                assert isinstance(caught.value, ValueError)
                assert "can never fit" in str(caught.value)
            with pytest.raises(treasurer.RequestTooLarge, match="tokens"):
                async with budget.reserve(tokens=101):
                    pass  # pragma: no cover
            assert budget.snapshot() == before

    async def test_consume_given_tokens_twice(self) -> None:
        """consume(5, tokens=5) is ambiguous and refused."""
        async with treasurer.open_budget(tokens=100) as budget:
            with pytest.raises(treasurer.InvalidAmountType, match="both"):
                await budget.consume(5, tokens=5)

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            ((-1, 5), treasurer.InvalidAmount),
            ((1, -5), treasurer.InvalidAmount),
            ((1.5, 5), treasurer.InvalidAmountType),
            ((1, True), treasurer.InvalidAmountType),
        ],
    )
    async def test_bad_refund(self, args: tuple[object, object], error: type) -> None:
        """A refund with a negative or non-integer figure is refused and changes nothing."""
        async with treasurer.open_budget(tokens=100) as budget:
            assert await budget.consume(10)
            before = budget.snapshot()
            with pytest.raises(error):
                await budget.refund(*args)  # type: ignore[arg-type]
            assert budget.snapshot() == before

    @pytest.mark.parametrize(
        ("caps", "error"),
        [
            ({"tokens": -1}, treasurer.InvalidAmount),
            ({"tokens": 1.5}, treasurer.InvalidAmountType),
            ({"usd": math.nan}, treasurer.InvalidAmount),
            ({"requests": True}, treasurer.InvalidAmountType),
            ({"tokens": 5, "max_tokens": 5}, treasurer.InvalidAmount),
            ({"mailbox_size": 0}, treasurer.InvalidAmount),
            ({"mailbox_size": 1.0}, treasurer.InvalidAmountType),
        ],
        ids=repr,
    )
    async def test_bad_caps(self, caps: dict[str, Any], error: type) -> None:
        """open_budget refuses bad caps before starting anything."""
        with pytest.raises(error):
            async with treasurer.open_budget(**caps):
                pytest.fail("must not open")  # pragma: no cover

    async def test_unknown_open_budget_keyword(self) -> None:
        """An unknown cap keyword raises UnknownAxis, a TypeError, listing the valid ones."""
        with pytest.raises(treasurer.UnknownAxis, match=r"'token'.*input_tokens") as caught:
            async with treasurer.open_budget(token=5):  # type: ignore[call-arg]
                pass  # pragma: no cover
        assert isinstance(caught.value, TypeError)


async def still_works(budget: treasurer.Budget) -> None:
    """The budget answers calls as before: its actor is alive."""
    before = budget.snapshot().tokens_used
    await budget.record(tokens=1)
    async with budget.reserve(tokens=1) as r:
        r.commit()
    assert budget.snapshot().tokens_used == before + 2
    assert not budget.closed


class TestInputThatUsedToKillTheActor:
    async def test_a_ttl_of_three_million_days(self) -> None:
        """reserve(ttl=timedelta(days=3_000_000)) raises InvalidOption in the caller; the
        budget keeps working."""
        async with treasurer.open_budget(tokens=100) as budget:
            with pytest.raises(treasurer.InvalidOption, match="36525 days"):
                async with budget.reserve(tokens=1, ttl=timedelta(days=3_000_000)):
                    pytest.fail("must not be entered")  # pragma: no cover
            await still_works(budget)
            async with budget.reserve(tokens=1, ttl=timedelta(days=36525)) as r:
                assert r.deadline is not None
                r.commit()

    async def test_a_reservation_ttl_of_three_million_days(self) -> None:
        """open_budget(reservation_ttl=timedelta(days=3_000_000)) raises InvalidOption."""
        with pytest.raises(treasurer.InvalidOption, match="reservation_ttl"):
            async with treasurer.open_budget(reservation_ttl=timedelta(days=3_000_000)):
                pytest.fail("must not open")  # pragma: no cover

    @pytest.mark.parametrize("override", [[1], True, False, 1.0, "1", None], ids=repr)
    async def test_remove_override_of_something_that_is_no_override(self, override: object) -> None:
        """remove_override([1]), remove_override(True)... raise InvalidOption in the caller,
        remove nothing, and the budget keeps working."""
        clock = treasurer.testing.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
        async with treasurer.open_budget(tokens=100, clock=clock) as budget:
            kept = await budget.override(tokens=10, expires_at=clock() + timedelta(hours=1))
            assert kept.id == 1
            with pytest.raises(treasurer.InvalidOption):
                await budget.remove_override(override)  # type: ignore[arg-type]
            assert budget.snapshot().overrides == (kept,)
            await still_works(budget)

    async def test_a_clock_near_the_year_9999(self) -> None:
        """A budget whose clock reads the last minute of 9999 reserves, expires and rolls."""
        clock = treasurer.testing.ManualClock(datetime(9999, 12, 31, 23, 58, tzinfo=UTC))
        windows = [treasurer.Window.day(tokens=100), treasurer.Window.month(tokens=100)]
        async with treasurer.open_budget(windows=windows, clock=clock) as budget:
            async with budget.reserve(tokens=10) as r:
                assert r.deadline is not None
                r.commit()
            clock.advance(minutes=1)
            await still_works(budget)
            assert budget.snapshot().window("day").used.tokens == 12


class TestHugeNumbers:
    @pytest.mark.parametrize(
        "usd",
        [Decimal("1e1000000"), Decimal("1e999999999999999999"), 10**400, Decimal(10**9) + 1],
        ids=["1e1000000", "1e999999999999999999", "a 1329-bit int", "1e9 + 1"],
    )
    async def test_huge_money_is_refused_quickly(self, usd: object) -> None:
        """A USD amount above a billion dollars raises InvalidAmount (a TreasurerError)
        within a second, before any conversion, and changes nothing."""
        async with treasurer.open_budget(usd=1) as budget:
            before = budget.snapshot()
            started = time.perf_counter()
            with pytest.raises(treasurer.InvalidAmount) as caught:
                await budget.record(usd=usd)  # type: ignore[arg-type]
            assert time.perf_counter() - started < 1
            assert isinstance(caught.value, treasurer.TreasurerError)
            assert budget.snapshot() == before
            await still_works(budget)

    @pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__name__)
    async def test_huge_money_on_every_call(self, call: Call) -> None:
        """Every call refuses Decimal('1e999999999999999999') with InvalidAmount."""
        async with treasurer.open_budget(usd=1) as budget:
            await assert_refused_unchanged(
                budget, call, {"usd": Decimal("1e999999999999999999")}, treasurer.InvalidAmount
            )

    async def test_counts_are_bounded(self) -> None:
        """Token counts up to 10**15 are accepted; above, InvalidAmount."""
        async with treasurer.open_budget() as budget:
            await budget.record(tokens=10**15)
            with pytest.raises(treasurer.InvalidAmount, match="tokens"):
                await budget.record(tokens=10**15 + 1)
            with pytest.raises(treasurer.InvalidAmount):
                await budget.consume(10**100)
            assert budget.totals().tokens == 10**15

    async def test_huge_caps_are_refused_at_open(self) -> None:
        """open_budget refuses a USD cap above a billion dollars or a huge token cap."""
        for caps in ({"usd": Decimal("1e1000000")}, {"tokens": 10**20}):
            with pytest.raises(treasurer.InvalidAmount):
                async with treasurer.open_budget(**caps):  # type: ignore[arg-type]
                    pytest.fail("must not open")  # pragma: no cover


class TestTypedErrorsEverywhere:
    async def test_a_name_that_is_no_string(self) -> None:
        """open_budget(name=123) raises InvalidOption."""
        for name in (123, "", b"budget"):
            with pytest.raises(treasurer.InvalidOption, match="name"):
                async with treasurer.open_budget(name=name):  # type: ignore[arg-type]
                    pytest.fail("must not open")  # pragma: no cover

    def test_a_time_zone_that_is_no_zone(self) -> None:
        """Window.day(tz=123) raises InvalidOption, a ValueError."""
        with pytest.raises(treasurer.InvalidOption) as caught:
            treasurer.Window.day(tokens=1, tz=123)  # type: ignore[arg-type]
        assert isinstance(caught.value, ValueError)

    def test_tenant_caps_with_an_unknown_cap(self) -> None:
        """TenantCaps(foo=1) raises UnknownAxis naming the axes."""
        with pytest.raises(treasurer.UnknownAxis, match=r"'foo'.*input_tokens"):
            treasurer.TenantCaps(foo=1)  # type: ignore[call-arg]
