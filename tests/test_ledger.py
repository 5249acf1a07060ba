"""The pure ledger: exact unit cases, and a Hypothesis state machine against a simple model.

The model below is written from the specification, not from ``_ledger.py``:

* admission: for every capped axis, ``amount <= cap`` (else ``RequestTooLarge``,
  checked on all axes first) and ``used + reserved + amount <= cap`` (else
  ``BudgetExceeded``), naming the first failing axis in axis order; a refusal
  changes nothing;
* commit frees the held amount and charges the actual one, even past a cap;
* release only frees; record charges at once if it fits;
* adjust subtracts a credit from usage, clamped at zero (negative credit charges);
* unrecord is adjust plus one call fewer (clamped at zero);
* reset zeroes usage and calls but keeps open reservations reserved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from treasurer import BudgetExceeded, RequestTooLarge, ReservationError, TreasurerError
from treasurer._amounts import AXES, USD, ZERO, CapVector, Vector, nanos_to_usd, parse, parse_caps
from treasurer._ledger import Ledger

NAME = "team-a"
N = len(AXES)


def public(axis: int, value: int) -> int | Decimal:
    """An internal figure in the unit users see: Decimal dollars for USD, int otherwise."""
    return nanos_to_usd(value) if axis == USD else value


def vector(values: list[int]) -> Vector:
    return (values[0], values[1], values[2], values[3], values[4])


def assert_public(value: object, axis: int, expected: int) -> None:
    """``value`` is ``expected`` (internal units) shown in public units, with the right type."""
    if axis == USD:
        assert isinstance(value, Decimal), f"expected a Decimal, got {value!r}"
        assert value == nanos_to_usd(expected)
    else:
        assert type(value) is int
        assert value == expected


def assert_refusal(
    reply: object,
    kind: type[BudgetExceeded],
    axis: int,
    *,
    cap: int,
    requested: int,
    used: int,
    reserved: int,
) -> None:
    """``reply`` is exactly a ``kind`` refusal on ``axis`` with these internal figures."""
    assert type(reply) is kind, f"expected {kind.__name__}, got {reply!r}"
    assert isinstance(reply, BudgetExceeded)
    assert isinstance(reply, TreasurerError)
    assert reply.budget == NAME
    assert reply.cap == AXES[axis]
    assert_public(reply.limit, axis, cap)
    assert_public(reply.requested, axis, requested)
    assert_public(reply.used, axis, used)
    assert_public(reply.reserved, axis, reserved)
    assert_public(reply.attempted, axis, used + reserved + requested)
    assert_public(reply.available, axis, max(cap - used - reserved, 0))
    assert AXES[axis] in str(reply)


# -- exact unit cases ----------------------------------------------------------------


def tokens(n: int) -> Vector:
    return parse({"tokens": n})


def tokens_ledger(cap: int) -> Ledger:
    return Ledger(parse_caps({"tokens": cap}), NAME)


class TestAdmission:
    def test_three_reserves_fit_and_the_fourth_is_refused(self) -> None:
        """With a 1000-token cap, three 300-token reserves fit and a fourth is refused."""
        ledger = tokens_ledger(1000)
        ids = [ledger.reserve(tokens(300)) for _ in range(3)]
        assert all(type(i) is int for i in ids)
        assert len(set(ids)) == 3
        before = ledger.state()
        refusal = ledger.reserve(tokens(300))
        assert_refusal(refusal, BudgetExceeded, 2, cap=1000, requested=300, used=0, reserved=900)
        assert isinstance(refusal, BudgetExceeded)
        assert (refusal.attempted, refusal.available) == (1200, 100)
        assert ledger.state() == before == ((0, 0, 0, 0, 0), (0, 0, 900, 0, 3), 0, 3)
        assert isinstance(ledger.reserve(tokens(100)), int)
        assert ledger.state()[1][2] == 1000

    def test_a_request_larger_than_the_cap_is_too_large(self) -> None:
        """A request above the cap itself is a RequestTooLarge, even on an empty budget."""
        ledger = tokens_ledger(1000)
        refusal = ledger.record(tokens(1001))
        assert_refusal(refusal, RequestTooLarge, 2, cap=1000, requested=1001, used=0, reserved=0)
        assert issubclass(RequestTooLarge, ValueError)
        assert ledger.state() == (ZERO, ZERO, 0, 0)

    def test_too_large_on_a_later_axis_wins_over_exceeded_on_an_earlier_one(self) -> None:
        """Every axis is checked for "too large" before any is checked for "exceeded"."""
        ledger = Ledger(parse_caps({"tokens": 10, "usd": 1}), NAME)
        assert ledger.record(parse({"tokens": 8})) is None
        refusal = ledger.reserve(parse({"tokens": 5, "usd": 2}))
        assert_refusal(
            refusal, RequestTooLarge, USD, cap=10**9, requested=2 * 10**9, used=0, reserved=0
        )

    def test_the_first_failing_axis_in_axis_order_is_named(self) -> None:
        """When several capped axes would be exceeded, the earliest axis is named."""
        ledger = Ledger(parse_caps({"usd": 1, "input_tokens": 10, "requests": 1}), NAME)
        assert ledger.record(parse({"input_tokens": 6, "usd": Decimal("0.6")})) is None
        refusal = ledger.reserve(parse({"input_tokens": 6, "usd": Decimal("0.6")}))
        assert_refusal(refusal, BudgetExceeded, 0, cap=10, requested=6, used=6, reserved=0)
        refusal = ledger.reserve(parse({"input_tokens": 1, "usd": Decimal("0.6")}))
        assert_refusal(
            refusal,
            BudgetExceeded,
            USD,
            cap=10**9,
            requested=6 * 10**8,
            used=6 * 10**8,
            reserved=0,
        )

    def test_usd_figures_are_exact_decimals(self) -> None:
        """Three 0.1 USD records fill a 0.3 USD cap exactly and the refusal shows Decimals."""
        ledger = Ledger(parse_caps({"usd": 0.3}), NAME)
        for _ in range(3):
            assert ledger.record(parse({"usd": 0.1})) is None
        refusal = ledger.record(parse({"usd": 0.1}))
        assert isinstance(refusal, BudgetExceeded)
        assert refusal.cap == "usd"
        assert refusal.limit == Decimal("0.3")
        assert refusal.requested == Decimal("0.1")
        assert refusal.used == Decimal("0.3")
        assert refusal.reserved == Decimal(0)
        assert refusal.available == Decimal(0)
        assert refusal.attempted == Decimal("0.4")
        assert ledger.state() == ((0, 0, 0, 3 * 10**8, 3), ZERO, 3, 0)

    def test_usd_available_is_a_decimal_when_usage_is_past_the_cap(self) -> None:
        """A USD refusal's available figure is a Decimal even when usage is already past the cap."""
        ledger = Ledger(parse_caps({"usd": 0}), NAME)
        ledger.adjust((0, 0, 0, -(10**8), 0))
        refusal = ledger.record(parse({}))
        assert isinstance(refusal, BudgetExceeded)
        assert refusal.available == 0
        assert isinstance(refusal.available, Decimal)

    def test_uncapped_axes_never_refuse(self) -> None:
        """A ledger with no caps admits anything."""
        ledger = Ledger((None, None, None, None, None), NAME)
        big = parse({"input_tokens": 10**12, "output_tokens": 1, "usd": 10**6})
        assert ledger.record(big) is None
        assert isinstance(ledger.reserve(big), int)
        assert ledger.state() == (big, big, 1, 1)


class TestSettling:
    def test_a_commit_above_the_estimate_is_charged_past_the_cap(self) -> None:
        """Committing more than was reserved is charged in full, and then nothing more fits."""
        ledger = tokens_ledger(1000)
        reservation = ledger.reserve(tokens(400))
        assert isinstance(reservation, int)
        assert ledger.commit(reservation, tokens(1200)) is None
        assert ledger.state() == ((0, 0, 1200, 0, 1), ZERO, 1, 0)
        for amount in (tokens(1), tokens(0)):
            refusal = ledger.reserve(amount)
            assert_refusal(
                refusal,
                BudgetExceeded,
                2,
                cap=1000,
                requested=amount[2],
                used=1200,
                reserved=0,
            )
            assert isinstance(refusal, BudgetExceeded)
            assert refusal.available == 0
            assert ledger.record(amount) is not None
        assert ledger.state() == ((0, 0, 1200, 0, 1), ZERO, 1, 0)

    def test_a_commit_below_the_estimate_frees_the_rest(self) -> None:
        """Committing less than was reserved charges only the actual amount."""
        ledger = tokens_ledger(1000)
        reservation = ledger.reserve(tokens(900))
        assert isinstance(reservation, int)
        assert ledger.commit(reservation, tokens(100)) is None
        assert ledger.state() == ((0, 0, 100, 0, 1), ZERO, 1, 0)
        assert isinstance(ledger.reserve(tokens(900)), int)

    def test_release_frees_without_charging(self) -> None:
        """Releasing a reservation frees its amount and counts no call."""
        ledger = tokens_ledger(1000)
        reservation = ledger.reserve(tokens(1000))
        assert isinstance(reservation, int)
        assert ledger.release(reservation) is None
        assert ledger.state() == (ZERO, ZERO, 0, 0)

    def test_unknown_reservations_are_returned_errors(self) -> None:
        """Settling an id that was never issued returns (not raises) a ReservationError."""
        ledger = tokens_ledger(1000)
        assert isinstance(ledger.reserve(tokens(10)), int)
        before = ledger.state()
        for reply in (ledger.commit(12345, tokens(1)), ledger.release(-1)):
            assert isinstance(reply, ReservationError)
            assert isinstance(reply, TreasurerError)
        assert ledger.state() == before

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            ("commit", "commit"),
            ("commit", "release"),
            ("release", "commit"),
            ("release", "release"),
        ],
    )
    def test_a_reservation_settles_once(self, first: str, second: str) -> None:
        """Settling an already-ended reservation returns a ReservationError and changes nothing."""
        ledger = tokens_ledger(1000)
        reservation = ledger.reserve(tokens(300))
        assert isinstance(reservation, int)

        def settle(how: str) -> ReservationError | None:
            assert isinstance(reservation, int)
            if how == "commit":
                return ledger.commit(reservation, tokens(200))
            return ledger.release(reservation)

        assert settle(first) is None
        after_first = ledger.state()
        reply = settle(second)
        assert isinstance(reply, ReservationError)
        assert str(reservation) in str(reply)
        assert ledger.state() == after_first


class TestReset:
    def test_reset_keeps_open_reservations(self) -> None:
        """After a reset, open reservations still count, so settling them never overspends."""
        ledger = tokens_ledger(1000)
        old = ledger.reserve(tokens(600))
        assert isinstance(old, int)
        assert ledger.record(tokens(300)) is None
        ledger.reset()
        assert ledger.state() == (ZERO, (0, 0, 600, 0, 1), 0, 1)
        assert_refusal(
            ledger.reserve(tokens(401)),
            BudgetExceeded,
            2,
            cap=1000,
            requested=401,
            used=0,
            reserved=600,
        )
        new = ledger.reserve(tokens(400))
        assert isinstance(new, int)
        assert ledger.state()[1][2] == 1000
        assert ledger.commit(old, tokens(600)) is None
        assert ledger.state() == ((0, 0, 600, 0, 1), (0, 0, 400, 0, 1), 1, 1)
        assert ledger.release(new) is None
        assert ledger.state() == ((0, 0, 600, 0, 1), ZERO, 1, 0)
        assert ledger.record(tokens(401)) is not None
        assert ledger.record(tokens(400)) is None

    def test_reset_zeroes_usage_and_calls(self) -> None:
        """A reset makes usage and the call count zero."""
        ledger = tokens_ledger(1000)
        assert ledger.record(tokens(999)) is None
        ledger.reset()
        assert ledger.state() == (ZERO, ZERO, 0, 0)
        assert ledger.record(tokens(1000)) is None


class TestAdjust:
    def test_credit_is_clamped_at_zero(self) -> None:
        """A credit larger than the usage leaves the usage at zero, not negative."""
        ledger = tokens_ledger(1000)
        assert ledger.record(tokens(100)) is None
        ledger.adjust((0, 0, 250, 0, 0))
        assert ledger.state() == ((0, 0, 0, 0, 1), ZERO, 1, 0)

    def test_negative_credit_charges_even_past_the_cap(self) -> None:
        """A negative credit adds usage, and may push it past the cap."""
        ledger = tokens_ledger(1000)
        assert ledger.record(tokens(900)) is None
        ledger.adjust((0, 0, -300, 0, 0))
        assert ledger.state() == ((0, 0, 1200, 0, 1), ZERO, 1, 0)
        assert ledger.reserve(tokens(0)) is not None

    def test_unrecord_takes_back_a_record(self) -> None:
        """Unrecording a record frees its usage and its call."""
        ledger = tokens_ledger(1000)
        amount = tokens(700)
        assert ledger.record(amount) is None
        ledger.unrecord(amount)
        assert ledger.state() == (ZERO, ZERO, 0, 0)
        assert ledger.record(tokens(1000)) is None

    def test_unrecord_after_reset_is_clamped(self) -> None:
        """Unrecording a record from before a reset cannot make usage or calls negative."""
        ledger = tokens_ledger(1000)
        first = tokens(700)
        assert ledger.record(first) is None
        ledger.reset()
        assert ledger.record(tokens(100)) is None
        ledger.unrecord(first)
        assert ledger.state() == (ZERO, ZERO, 0, 0)


class TestReads:
    def test_state_is_an_immutable_copy(self) -> None:
        """state() returns tuples of the figures that later operations do not change."""
        ledger = Ledger(parse_caps({"tokens": 1000, "usd": Decimal("0.3")}), NAME)
        assert ledger.record(parse({"input_tokens": 2, "output_tokens": 3, "usd": 0.1})) is None
        assert isinstance(ledger.reserve(parse({"tokens": 200})), int)
        state = ledger.state()
        assert state == ((2, 3, 5, 10**8, 1), (0, 0, 200, 0, 1), 1, 1)
        assert isinstance(state[0], tuple)
        assert isinstance(state[1], tuple)
        assert ledger.record(tokens(1)) is None
        assert state == ((2, 3, 5, 10**8, 1), (0, 0, 200, 0, 1), 1, 1)

    def test_repr_shows_used_reserved_and_caps_in_public_units(self) -> None:
        """The repr names the budget and shows used+reserved/cap per axis, "-" when uncapped."""
        ledger = Ledger(parse_caps({"tokens": 1000, "usd": Decimal("0.3")}), NAME)
        assert ledger.record(parse({"tokens": 300, "usd": Decimal("0.1")})) is None
        assert isinstance(ledger.reserve(parse({"tokens": 200})), int)
        text = repr(ledger)
        assert text.startswith("<Ledger 'team-a' ")
        assert text.endswith(" open=1>")
        assert "tokens=300+200/1000" in text
        assert "usd=0.1+0/0.3" in text
        assert "input_tokens=0+0/-" in text
        assert "requests=1+1/-" in text

    def test_default_name(self) -> None:
        """A ledger without a name is called "budget" in its refusals."""
        ledger = Ledger(parse_caps({"tokens": 1}))
        refusal = ledger.record(tokens(2))
        assert isinstance(refusal, RequestTooLarge)
        assert refusal.budget == "budget"


# -- the state machine ---------------------------------------------------------------

# Internal units per "step" on each axis (USD is in nano-dollars), and the most one
# generated request asks for, in steps. Caps are mostly a few requests' worth, so
# refusals are frequent, and sometimes smaller than one request.
SCALE = (1, 1, 1, 10**8, 1)
MOST = (9, 9, 22, 8, 2)


def cap_strategy(axis: int) -> st.SearchStrategy[int | None]:
    scale, most = SCALE[axis], MOST[axis]
    few_requests = st.integers(most, 3 * most).map(lambda n: n * scale)
    small = st.integers(0, most).map(lambda n: n * scale)
    if axis == USD:  # odd caps, not a multiple of 0.1 USD
        few_requests = few_requests | st.integers(most * scale, 3 * most * scale)
    # One in four axes uncapped, one in eight capped below the largest request.
    return st.integers(0, 15).flatmap(
        lambda k: st.none() if k < 4 else small if k >= 14 else few_requests
    )


caps_strategy = st.tuples(*(cap_strategy(axis) for axis in range(N)))


@st.composite
def amounts(draw: st.DrawFn) -> Vector:
    """A plausible request: tokens >= input + output, a little USD, usually one request."""
    input_tokens = draw(st.integers(0, 9))
    output_tokens = draw(st.integers(0, 9))
    tokens_total = input_tokens + output_tokens + draw(st.integers(0, 4))
    usd = draw(st.integers(0, 7)) * 10**8 + draw(st.sampled_from([0, 0, 0, 1, 99_999_999]))
    requests = draw(st.sampled_from([1, 1, 1, 0, 2]))
    return (input_tokens, output_tokens, tokens_total, usd, requests)


def credit_strategy(axis: int) -> st.SearchStrategy[int]:
    scale = SCALE[axis]
    return st.integers(-4, 10).map(lambda n: n * scale)


credits_strategy = st.tuples(*(credit_strategy(axis) for axis in range(N)))


@dataclass
class Model:
    """The ledger as the specification describes it, in plain lists and dicts."""

    caps: CapVector
    used: list[int] = field(default_factory=lambda: [0] * N)
    reserved: list[int] = field(default_factory=lambda: [0] * N)
    calls: int = 0
    open: dict[int, Vector] = field(default_factory=dict)
    ended: list[int] = field(default_factory=list)
    issued: set[int] = field(default_factory=set)
    recorded: list[Vector] = field(default_factory=list)
    # How far commits above their estimates and negative credits have pushed
    # used + reserved since the last reset; admission alone never goes past a cap.
    overrun: list[int] = field(default_factory=lambda: [0] * N)

    def refusal(self, amount: Vector) -> tuple[type[BudgetExceeded], int] | None:
        capped = [axis for axis in range(N) if self.caps[axis] is not None]
        for axis in capped:
            cap = self.caps[axis]
            assert cap is not None
            if amount[axis] > cap:
                return RequestTooLarge, axis
        for axis in capped:
            cap = self.caps[axis]
            assert cap is not None
            if self.used[axis] + self.reserved[axis] + amount[axis] > cap:
                return BudgetExceeded, axis
        return None

    def state(self) -> tuple[Vector, Vector, int, int]:
        return vector(self.used), vector(self.reserved), self.calls, len(self.open)


class LedgerMachine(RuleBasedStateMachine):
    """Drives a Ledger and the Model side by side and demands identical behaviour."""

    def __init__(self) -> None:
        super().__init__()
        self.ledger: Ledger
        self.model: Model

    @initialize(caps=caps_strategy)
    def open_ledger(self, caps: CapVector) -> None:
        self.ledger = Ledger(caps, NAME)
        self.model = Model(caps)

    # -- helpers --

    def snapshot(self) -> tuple[object, ...]:
        return self.ledger.state(), dict(self.ledger.reservations), repr(self.ledger)

    def check_refusal(self, reply: object, amount: Vector, before: tuple[object, ...]) -> bool:
        """Check ``reply`` against the model's verdict; True if the amount was admitted."""
        expected = self.model.refusal(amount)
        if expected is None:
            return True
        kind, axis = expected
        cap = self.model.caps[axis]
        assert cap is not None
        assert_refusal(
            reply,
            kind,
            axis,
            cap=cap,
            requested=amount[axis],
            used=self.model.used[axis],
            reserved=self.model.reserved[axis],
        )
        assert self.snapshot() == before, "a refusal changed the ledger"
        event(f"refused: {kind.__name__}")
        return False

    def check_within_caps(self) -> None:
        """Right after an admission, every capped axis is within its cap, with no allowance."""
        for axis, cap in enumerate(self.model.caps):
            if cap is not None:
                assert self.ledger.used[axis] + self.ledger.reserved[axis] <= cap

    def pick_open(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.model.open)), label="reservation")

    # -- rules --

    @rule(amount=amounts())
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
            self.model.overrun[axis] += max(actual[axis] - held[axis], 0)
        self.model.calls += 1
        if any(a > h for a, h in zip(actual, held, strict=True)):
            event("committed above the estimate")

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
            reply = self.ledger.commit(reservation, data.draw(amounts(), label="actual"))
        else:
            reply = self.ledger.release(reservation)
        assert isinstance(reply, ReservationError), f"expected a ReservationError, got {reply!r}"
        assert self.snapshot() == before

    @rule(amount=amounts())
    def record(self, amount: Vector) -> None:
        before = self.snapshot()
        reply = self.ledger.record(amount)
        if not self.check_refusal(reply, amount, before):
            return
        assert reply is None, f"expected None, got {reply!r}"
        for axis in range(N):
            self.model.used[axis] += amount[axis]
        self.model.calls += 1
        self.model.recorded.append(amount)
        self.check_within_caps()
        event("recorded")

    def take_back(self, credit: tuple[int, ...]) -> None:
        for axis, value in enumerate(credit):
            self.model.used[axis] = max(self.model.used[axis] - value, 0)
            self.model.overrun[axis] += max(-value, 0)

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

    @rule()
    def reset(self) -> None:
        assert self.ledger.reset() is None  # type: ignore[func-returns-value]
        self.model.used = [0] * N
        self.model.calls = 0
        self.model.overrun = [0] * N

    # -- invariants --

    @invariant()
    def matches_the_model(self) -> None:
        assert self.ledger.state() == self.model.state()
        assert self.ledger.reservations == self.model.open

    @invariant()
    def reserved_is_the_sum_of_open_reservations(self) -> None:
        _, reserved, _, count = self.ledger.state()
        total = [0] * N
        for held in self.ledger.reservations.values():
            for axis in range(N):
                total[axis] += held[axis]
        assert vector(total) == reserved
        assert count == len(self.ledger.reservations)

    @invariant()
    def nothing_is_negative(self) -> None:
        used, reserved, calls, count = self.ledger.state()
        assert min(used) >= 0
        assert min(reserved) >= 0
        assert calls >= 0
        assert count >= 0

    @invariant()
    def never_overspent_except_by_overruns(self) -> None:
        """used + reserved <= cap, plus only what commits and charges forced past it."""
        used, reserved, _, _ = self.ledger.state()
        for axis, cap in enumerate(self.model.caps):
            if cap is None:
                continue
            # Reservations are only ever admitted within the cap.
            assert reserved[axis] <= cap
            assert used[axis] + reserved[axis] <= cap + self.model.overrun[axis]
            if used[axis] + reserved[axis] > cap:
                event("over the cap after an overrun")


TestLedgerStateMachine = LedgerMachine.TestCase
TestLedgerStateMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
