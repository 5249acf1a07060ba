"""Bad input gets a typed error that also subclasses the matching built-in, and changes nothing."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import anyio
import pytest

import treasurer

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
        """A keyword that names no axis is refused, naming the keyword and the axes."""
        async with treasurer.open_budget(tokens=100) as budget:
            await assert_refused_unchanged(budget, call, {"token": 5}, treasurer.UnknownAxis)
            with pytest.raises(treasurer.UnknownAxis, match=r"'token'.*input_tokens"):
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
