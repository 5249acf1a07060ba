"""The pure ledger: ``Ledger(config, now).apply(command, now)``, exact unit cases.

Admission names the first failing cap (too large on any axis before exceeded on
any), a refusal changes nothing, commits charge what was used even past a cap,
releases only free, resets keep open reservations, refunds match an outstanding
consume, expired reservations are settled late, and every settled usage is an
event. The Hypothesis state machines that check the same rules against a model
are in ``tests/conformance``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal

import pytest

from core_support import (
    NAME,
    T0,
    TOKENS,
    USD,
    ZERO,
    apply,
    assert_refusal,
    everything,
    figures,
    make_ledger,
    only_tokens,
    state,
    tokens,
)
from treasurer import (
    OverrideExpired,
    OverrideRemoved,
    OverrideSet,
    RequestRefused,
    ReservationCommitted,
    ReservationCreated,
    ReservationExpiredEvent,
    ThresholdCrossed,
    Usage,
    UsageRecorded,
    Window,
)
from treasurer._core.axes import parse
from treasurer._core.books import _tokens
from treasurer._core.commands import (
    Charge,
    Commit,
    Consume,
    Meta,
    Probe,
    ReadUsage,
    Record,
    Refund,
    Release,
    RemoveOverride,
    Reserve,
    Reset,
    SetOverride,
    TakeBack,
)
from treasurer._core.events import Override
from treasurer._core.outcomes import (
    Charged,
    Granted,
    Refusal,
    Rejected,
    Settled,
    UsageFigures,
    Verdict,
)
from treasurer._core.scopes import ROOT, tenant_path

HOUR = timedelta(hours=1)


def reserve(ledger: object, amount: tuple[int, ...], **fields: object) -> int:
    """Reserve ``amount`` in the budget's scope; the reservation's id (it must be granted)."""
    reply = apply(ledger, Reserve(ROOT, amount, **fields))  # type: ignore[arg-type]
    assert isinstance(reply, Granted), reply
    return reply.reservation


class TestAdmission:
    def test_three_reserves_fit_and_the_fourth_is_refused(self) -> None:
        """With a 1000-token cap, three 300-token reserves fit and a fourth is refused."""
        ledger = make_ledger({"tokens": 1000})
        ids = [reserve(ledger, tokens(300)) for _ in range(3)]
        assert len(set(ids)) == 3
        before = everything(ledger)
        refusal = apply(ledger, Reserve(ROOT, tokens(300)))
        assert_refusal(
            refusal, too_large=False, axis=TOKENS, cap=1000, requested=300, used=0, reserved=900
        )
        assert isinstance(refusal, Refusal)
        assert (refusal.attempted, refusal.available) == (1200, 100)
        assert not refusal.final  # a release would make room
        assert everything(ledger) == before
        assert state(ledger) == (ZERO, (0, 0, 900, 0, 3), 0, 3)
        reserve(ledger, tokens(100))
        assert state(ledger)[1][TOKENS] == 1000

    def test_a_request_larger_than_the_cap_is_too_large(self) -> None:
        """A request above the cap itself is too large (it never fits), even on an empty budget."""
        ledger = make_ledger({"tokens": 1000})
        refusal = apply(ledger, Record(ROOT, tokens(1001)))
        assert_refusal(
            refusal, too_large=True, axis=TOKENS, cap=1000, requested=1001, used=0, reserved=0
        )
        assert isinstance(refusal, Refusal)
        assert refusal.final
        assert issubclass(type(refusal.error()), ValueError)
        assert state(ledger) == (ZERO, ZERO, 0, 0)

    def test_too_large_on_a_later_axis_wins_over_exceeded_on_an_earlier_one(self) -> None:
        """Every axis is checked for "too large" before any is checked for "exceeded"."""
        ledger = make_ledger({"tokens": 10, "usd": 1})
        assert isinstance(apply(ledger, Record(ROOT, parse({"tokens": 8}))), Charged)
        refusal = apply(ledger, Reserve(ROOT, parse({"tokens": 5, "usd": 2})))
        assert_refusal(
            refusal, too_large=True, axis=USD, cap=10**9, requested=2 * 10**9, used=0, reserved=0
        )

    def test_the_first_failing_axis_in_axis_order_is_named(self) -> None:
        """When several capped axes would be exceeded, the earliest axis is named."""
        ledger = make_ledger({"usd": 1, "input_tokens": 10, "requests": 1})
        amount = parse({"input_tokens": 6, "usd": Decimal("0.6")})
        assert isinstance(apply(ledger, Record(ROOT, amount)), Charged)
        refusal = apply(ledger, Reserve(ROOT, amount))
        assert_refusal(refusal, too_large=False, axis=0, cap=10, requested=6, used=6, reserved=0)
        refusal = apply(ledger, Reserve(ROOT, parse({"input_tokens": 1, "usd": Decimal("0.6")})))
        assert_refusal(
            refusal,
            too_large=False,
            axis=USD,
            cap=10**9,
            requested=6 * 10**8,
            used=6 * 10**8,
            reserved=0,
        )

    def test_usd_figures_are_exact_decimals(self) -> None:
        """Three 0.1 USD records fill a 0.3 USD cap exactly and the refusal shows Decimals."""
        ledger = make_ledger({"usd": 0.3})
        for _ in range(3):
            assert isinstance(apply(ledger, Record(ROOT, parse({"usd": 0.1}))), Charged)
        refusal = apply(ledger, Record(ROOT, parse({"usd": 0.1})))
        assert isinstance(refusal, Refusal)
        assert refusal.cap == "usd"
        assert refusal.limit == Decimal("0.3")
        assert refusal.requested == Decimal("0.1")
        assert refusal.used == Decimal("0.3")
        assert refusal.reserved == Decimal(0)
        assert refusal.available == Decimal(0)
        assert refusal.attempted == Decimal("0.4")
        assert refusal.final  # spent usage alone leaves no room
        assert state(ledger) == ((0, 0, 0, 3 * 10**8, 3), ZERO, 3, 0)

    def test_usd_available_is_a_decimal_when_usage_is_past_the_cap(self) -> None:
        """A USD refusal's available figure is a Decimal zero when usage is already past the cap."""
        ledger = make_ledger({"usd": 0})
        apply(ledger, Charge(ROOT, parse({"usd": Decimal("0.1")})))
        refusal = apply(ledger, Record(ROOT, parse({})))
        assert isinstance(refusal, Refusal)
        assert refusal.available == 0
        assert isinstance(refusal.available, Decimal)

    def test_uncapped_axes_never_refuse(self) -> None:
        """A ledger with no caps admits anything."""
        ledger = make_ledger()
        big = parse({"input_tokens": 10**12, "output_tokens": 1, "usd": 10**6})
        assert isinstance(apply(ledger, Record(ROOT, big)), Charged)
        reserve(ledger, big)
        assert state(ledger) == (big, big, 1, 1)

    def test_per_request_caps_come_first(self) -> None:
        """A per-request cap refuses a request above it as too large, with no usage figures."""
        ledger = make_ledger({"tokens": 5}, per_request={"usd": 1, "tokens": 100})
        refusal = apply(ledger, Reserve(ROOT, parse({"tokens": 150})))
        assert_refusal(
            refusal,
            too_large=True,
            axis=TOKENS,
            cap=100,
            requested=150,
            used=0,
            reserved=0,
            window="request",
        )
        assert "per-request" in str(refusal.error())  # type: ignore[union-attr]

    def test_a_refusal_is_an_event_when_verbose(self) -> None:
        """A refused request emits RequestRefused with the error's text, only if verbose."""
        ledger = make_ledger({"tokens": 10})
        outcome = ledger.apply(Record(ROOT, tokens(11)), T0)
        (event,) = outcome.events
        assert isinstance(event, RequestRefused)
        assert (event.cap, event.window, event.level) == ("tokens", "lifetime", "warning")
        assert isinstance(outcome.reply, Refusal)
        assert event.error == str(outcome.reply.error())
        ledger.verbose = False
        assert ledger.apply(Record(ROOT, tokens(11)), T0).events == ()

    def test_probe_answers_without_changing_anything(self) -> None:
        """A probe says whether an amount fits now, and changes nothing."""
        ledger = make_ledger({"tokens": 100})
        reserve(ledger, tokens(60))
        before = everything(ledger)
        verdict = apply(ledger, Probe(ROOT, tokens(40)))
        assert isinstance(verdict, Verdict)
        assert verdict.refusal is None
        assert verdict.view.reserved[TOKENS] == 60
        verdict = apply(ledger, Probe(ROOT, tokens(41)))
        assert isinstance(verdict, Verdict)
        assert_refusal(
            verdict.refusal,
            too_large=False,
            axis=TOKENS,
            cap=100,
            requested=41,
            used=0,
            reserved=60,
        )
        assert everything(ledger) == before


class TestSettling:
    def test_a_commit_above_the_estimate_is_charged_past_the_cap(self) -> None:
        """Committing more than was reserved is charged in full, and then nothing more fits."""
        ledger = make_ledger({"tokens": 1000})
        reservation = reserve(ledger, tokens(400))
        assert apply(ledger, Commit(ROOT, reservation, tokens(1200))) == Settled(reservation)
        assert state(ledger) == ((0, 0, 1200, 0, 1), ZERO, 1, 0)
        for amount in (tokens(1), tokens(0)):
            refusal = apply(ledger, Reserve(ROOT, amount))
            assert_refusal(
                refusal,
                too_large=False,
                axis=TOKENS,
                cap=1000,
                requested=amount[TOKENS],
                used=1200,
                reserved=0,
            )
            assert isinstance(refusal, Refusal)
            assert refusal.available == 0
            assert refusal.final
            assert isinstance(apply(ledger, Record(ROOT, amount)), Refusal)
        assert state(ledger) == ((0, 0, 1200, 0, 1), ZERO, 1, 0)

    def test_a_commit_below_the_estimate_frees_the_rest(self) -> None:
        """Committing less than was reserved charges only the actual amount."""
        ledger = make_ledger({"tokens": 1000})
        reservation = reserve(ledger, tokens(900))
        assert apply(ledger, Commit(ROOT, reservation, tokens(100))) == Settled(reservation)
        assert state(ledger) == ((0, 0, 100, 0, 1), ZERO, 1, 0)
        reserve(ledger, tokens(900))

    def test_release_frees_without_charging(self) -> None:
        """Releasing a reservation frees its amount and counts no call."""
        ledger = make_ledger({"tokens": 1000})
        reservation = reserve(ledger, tokens(1000))
        assert apply(ledger, Release(ROOT, reservation)) == Settled(reservation)
        assert state(ledger) == (ZERO, ZERO, 0, 0)

    def test_commit_replies_and_events(self) -> None:
        """A commit emits UsageRecorded (with the reservation's and the commit's metadata
        merged) before the thresholds it crosses, then ReservationCommitted."""
        ledger = make_ledger({"tokens": 100})
        outcome = ledger.apply(
            Reserve(ROOT, tokens(80), meta=Meta(model="m", tags=(("a", "1"),))), T0
        )
        (created,) = outcome.events
        assert isinstance(created, ReservationCreated)
        assert (created.model, created.amount) == ("m", Usage.of(tokens(80)))
        assert isinstance(outcome.reply, Granted)
        reservation = outcome.reply.reservation
        meta = Meta(request_id="r-1", tags=(("b", "2"),))
        events = ledger.apply(Commit(ROOT, reservation, tokens(90), meta), T0).events
        kinds = [type(event) for event in events]
        assert kinds == [UsageRecorded, ThresholdCrossed, ThresholdCrossed, ThresholdCrossed,
                         ReservationCommitted]  # fmt: skip
        usage = events[0]
        assert isinstance(usage, UsageRecorded)
        assert (usage.source, usage.reservation, usage.usage) == (
            "commit",
            reservation,
            Usage.of(tokens(90)),
        )
        assert (usage.model, usage.request_id, usage.tags) == ("m", "r-1", {"a": "1", "b": "2"})
        assert [e.threshold for e in events if isinstance(e, ThresholdCrossed)] == [50, 75, 90]

    def test_unknown_reservations_are_rejected(self) -> None:
        """Settling an id that was never issued is rejected and changes nothing."""
        ledger = make_ledger({"tokens": 1000})
        reserve(ledger, tokens(10))
        before = everything(ledger)
        for reply in (
            apply(ledger, Commit(ROOT, 12345, tokens(1))),
            apply(ledger, Release(ROOT, -1)),
            apply(ledger, Release(ROOT, 0)),
        ):
            assert isinstance(reply, Rejected)
            assert reply.kind == "reservation"
            assert "never made" in str(reply.error())
        assert everything(ledger) == before

    def test_an_ended_reservation_released_again_changes_nothing(self) -> None:
        """Releasing an id that already ended (handles settle once, so it expired) changes
        nothing."""
        ledger = make_ledger({"tokens": 1000})
        for first in ("commit", "release"):
            reservation = reserve(ledger, tokens(300))
            if first == "commit":
                apply(ledger, Commit(ROOT, reservation, tokens(200)))
            else:
                apply(ledger, Release(ROOT, reservation))
            before = everything(ledger)
            assert apply(ledger, Release(ROOT, reservation)) == Settled(reservation, expired=True)
            assert everything(ledger) == before

    def test_a_commit_of_an_ended_reservation_is_recorded_late(self) -> None:
        """The ledger trusts handles to settle once: a commit of an issued id that is no
        longer open is a late commit, recorded even past the cap (that spend happened)."""
        ledger = make_ledger({"tokens": 1000})
        reservation = reserve(ledger, tokens(600))
        apply(ledger, Release(ROOT, reservation))
        outcome = ledger.apply(Commit(ROOT, reservation, tokens(1500)), T0)
        assert outcome.reply == Settled(reservation, expired=True)
        assert state(ledger) == ((0, 0, 1500, 0, 1), ZERO, 1, 0)
        usage = outcome.events[0]
        assert isinstance(usage, UsageRecorded)
        assert (usage.source, usage.reservation) == ("late_commit", reservation)


class TestMovedIds:
    def test_ids_moved_onto_ids_of_their_own_batch_keep_holds_and_deadlines(self) -> None:
        """A store moves the ids a batch issued past those other processes issued
        (the Redis store's merge). Moved by fewer than it issued, a new id is an
        old one of the same batch: each hold keeps its amount and its deadline."""
        ledger = make_ledger({"tokens": 1000})
        for minutes, amount in [(10, 100), (20, 200), (30, 300)]:
            apply(ledger, Reserve(ROOT, tokens(amount), timedelta(minutes=minutes)))
        books = ledger.reservations
        assert books.move_ids(1, 1) == {1: 2, 2: 3, 3: 4}
        assert {rid: held.amount[TOKENS] for rid, held in books.open.items()} == {
            2: 100,
            3: 200,
            4: 300,
        }
        assert books.next_id == 5
        assert ledger.next_wakeup() == T0 + timedelta(minutes=10)
        expired = ledger.advance(T0 + timedelta(minutes=20))
        assert [(e.reservation, e.amount) for e in expired] == [  # type: ignore[attr-defined]
            (2, Usage.of(tokens(100))),
            (3, Usage.of(tokens(200))),
        ]
        assert list(books.open) == [4]
        assert state(ledger)[1][TOKENS] == 300


class TestExpiry:
    def test_a_reservation_expires_at_its_deadline(self) -> None:
        """At its deadline (not a microsecond before) a reservation is released, with an event."""
        ledger = make_ledger({"tokens": 100}, reservation_ttl=timedelta(minutes=15))
        granted = apply(ledger, Reserve(ROOT, tokens(60)))
        assert isinstance(granted, Granted)
        assert granted.token > 0
        assert granted[:2] == (1, T0 + timedelta(minutes=15))
        assert ledger.next_wakeup() == T0 + timedelta(minutes=15)
        assert ledger.advance(T0 + timedelta(minutes=15, microseconds=-1)) == []
        assert state(ledger)[1][TOKENS] == 60
        (event,) = ledger.advance(T0 + timedelta(minutes=15))
        assert isinstance(event, ReservationExpiredEvent)
        assert (event.reservation, event.amount, event.deadline, event.level) == (
            1,
            Usage.of(tokens(60)),
            T0 + timedelta(minutes=15),
            "warning",
        )
        assert state(ledger) == (ZERO, ZERO, 0, 0)
        assert ledger.next_wakeup() is None

    @pytest.mark.parametrize(
        ("config_ttl", "ttl", "deadline"),
        [
            (timedelta(minutes=15), None, T0 + timedelta(minutes=15)),
            (timedelta(minutes=15), timedelta(seconds=5), T0 + timedelta(seconds=5)),
            (timedelta(minutes=15), timedelta.max, None),
            (None, None, None),
            (None, HOUR, T0 + HOUR),
        ],
    )
    def test_deadlines(
        self, config_ttl: timedelta | None, ttl: timedelta | None, deadline: object
    ) -> None:
        """A reservation's TTL is its own, else the budget's; timedelta.max or None: never."""
        ledger = make_ledger(reservation_ttl=config_ttl)
        reply = apply(ledger, Reserve(ROOT, tokens(1), ttl))
        assert isinstance(reply, Granted)
        assert reply[:2] == (1, deadline)

    def test_a_late_commit_is_recorded_past_the_cap(self) -> None:
        """A commit after expiry records its usage all the same, past the cap, as late."""
        ledger = make_ledger({"tokens": 100}, reservation_ttl=timedelta(minutes=1))
        reservation = reserve(ledger, tokens(100))
        ledger.advance(T0 + HOUR)
        reserve(ledger, tokens(100))  # the room it held was given back
        outcome = ledger.apply(Commit(ROOT, reservation, tokens(70)), T0 + HOUR)
        assert outcome.reply == Settled(reservation, expired=True)
        assert state(ledger) == ((0, 0, 70, 0, 1), (0, 0, 100, 0, 1), 1, 1)
        assert isinstance(outcome.events[0], UsageRecorded)
        assert outcome.events[0].source == "late_commit"

    def test_a_settle_leaves_another_reservation_given_its_id(self) -> None:
        """A shared store that lost its last writes can issue an id again: the
        handle of the lost reservation settles as a late one (its commit charged
        past the cap) and leaves the reservation that now has the id open; a
        settle by id alone, or by the new one's token, ends it."""
        ledger = make_ledger({"tokens": 100})
        lost = apply(ledger, Reserve(ROOT, tokens(60)))
        assert isinstance(lost, Granted)
        held = ledger.reservations.open[lost.reservation]
        ledger.reservations.open[lost.reservation] = held._replace(token=lost.token + 1)
        before = everything(ledger)
        for command in (
            Release(ROOT, lost.reservation, lost.token),
            Commit(ROOT, lost.reservation, None, None, lost.token),
        ):
            assert apply(ledger, command) == Settled(lost.reservation, expired=True)
            assert everything(ledger) == before
        reply = apply(ledger, Commit(ROOT, lost.reservation, tokens(30), None, lost.token))
        assert reply == Settled(lost.reservation, expired=True)
        assert state(ledger) == ((0, 0, 30, 0, 1), (0, 0, 60, 0, 1), 1, 1)  # still held
        assert apply(ledger, Release(ROOT, lost.reservation, lost.token + 1)) == Settled(1)
        assert state(ledger)[1] == ZERO

    def test_a_forked_process_draws_its_own_tokens(self) -> None:
        """Forked workers (a preloading server's) would otherwise count the same
        tokens from the same start."""
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover (the child)
            os.write(write, str(_tokens.next()).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        with os.fdopen(read) as answer:
            assert int(answer.read()) != _tokens.next()

    def test_a_record_stored_before_tokens_is_settled_by_any_handle(self) -> None:
        """A reservation read from a store without a token (0) ends at its id."""
        ledger = make_ledger({"tokens": 100})
        granted = apply(ledger, Reserve(ROOT, tokens(60)))
        assert isinstance(granted, Granted)
        held = ledger.reservations.open[granted.reservation]
        ledger.reservations.open[granted.reservation] = held._replace(token=0)
        reply = apply(ledger, Commit(ROOT, granted.reservation, tokens(10), None, granted.token))
        assert reply == Settled(granted.reservation)
        assert state(ledger) == ((0, 0, 10, 0, 1), ZERO, 1, 0)

    def test_a_late_release_changes_nothing(self) -> None:
        """Releasing an expired reservation is answered as expired and changes nothing."""
        ledger = make_ledger({"tokens": 100}, reservation_ttl=timedelta(minutes=1))
        reservation = reserve(ledger, tokens(100))
        ledger.advance(T0 + HOUR)
        before = everything(ledger)
        reply = apply(ledger, Release(ROOT, reservation), T0 + HOUR)
        assert reply == Settled(reservation, expired=True)
        assert everything(ledger) == before

    def test_deadlines_near_the_end_of_time_do_not_overflow(self) -> None:
        """A TTL that would pass year 9999 gives the last representable instant."""
        end = T0.replace(year=9999, month=12, day=31, hour=23)
        ledger = make_ledger({"tokens": 10}, now=end, reservation_ttl=timedelta(days=36_525))
        granted = apply(ledger, Reserve(ROOT, tokens(5)), end)
        assert isinstance(granted, Granted)
        assert granted.deadline is not None
        assert granted.deadline.year == 9999
        assert ledger.advance(end + timedelta(minutes=59)) == []
        assert state(ledger)[3] == 1


class TestReset:
    def test_reset_keeps_open_reservations(self) -> None:
        """After a reset, open reservations still count, so settling them never overspends."""
        ledger = make_ledger({"tokens": 1000})
        old = reserve(ledger, tokens(600))
        apply(ledger, Record(ROOT, tokens(300)))
        assert apply(ledger, Reset(ROOT)) is None
        assert state(ledger) == (ZERO, (0, 0, 600, 0, 1), 0, 1)
        assert_refusal(
            apply(ledger, Reserve(ROOT, tokens(401))),
            too_large=False,
            axis=TOKENS,
            cap=1000,
            requested=401,
            used=0,
            reserved=600,
        )
        new = reserve(ledger, tokens(400))
        assert state(ledger)[1][TOKENS] == 1000
        apply(ledger, Commit(ROOT, old, tokens(600)))
        assert state(ledger) == ((0, 0, 600, 0, 1), (0, 0, 400, 0, 1), 1, 1)
        apply(ledger, Release(ROOT, new))
        assert state(ledger) == ((0, 0, 600, 0, 1), ZERO, 1, 0)
        assert isinstance(apply(ledger, Record(ROOT, tokens(401))), Refusal)
        assert isinstance(apply(ledger, Record(ROOT, tokens(400))), Charged)

    def test_reset_zeroes_usage_and_calls(self) -> None:
        """A reset makes usage and the call count zero."""
        ledger = make_ledger({"tokens": 1000})
        apply(ledger, Record(ROOT, tokens(999)))
        apply(ledger, Reset(ROOT))
        assert state(ledger) == (ZERO, ZERO, 0, 0)
        assert isinstance(apply(ledger, Record(ROOT, tokens(1000))), Charged)

    def test_reset_of_one_window_keeps_the_rest(self) -> None:
        """Resetting one window zeroes that window's period only; the lifetime and other
        windows keep counting."""
        windows = [Window.hour(tokens=100), Window.day(tokens=150)]
        ledger = make_ledger({"tokens": 1000}, windows=windows)
        apply(ledger, Record(ROOT, tokens(90)))
        assert apply(ledger, Reset(ROOT, "hour")) is None
        view = figures(ledger)
        assert [w.used[TOKENS] for w in view.windows] == [0, 90]
        assert view.used[TOKENS] == 90
        refusal = apply(ledger, Record(ROOT, tokens(61)))
        assert_refusal(
            refusal,
            too_large=False,
            axis=TOKENS,
            cap=150,
            requested=61,
            used=90,
            reserved=0,
            window="day",
            resets_at=T0.replace(hour=0) + timedelta(days=1),
        )

    def test_reset_of_an_unknown_window_is_rejected(self) -> None:
        """A reset naming no window of the scope (or "lifetime") is rejected; nothing changes."""
        ledger = make_ledger({"tokens": 1000}, windows=[Window.hour(tokens=100)])
        apply(ledger, Record(ROOT, tokens(50)))
        before = everything(ledger)
        for name in ("fortnight", "lifetime"):
            reply = apply(ledger, Reset(ROOT, name))
            assert isinstance(reply, Rejected)
            assert reply.kind == "invalid_option"
            assert "hour" in reply.message
        assert everything(ledger) == before


class TestRefunds:
    def test_a_refund_must_match_an_outstanding_consume(self) -> None:
        """A consumes 600 and B 400 of 1000; a refund of an estimate nobody consumed is
        rejected and changes nothing, so it cannot erase their usage."""
        ledger = make_ledger({"tokens": 1000})
        apply(ledger, Consume(ROOT, tokens(600)))
        apply(ledger, Consume(ROOT, tokens(400)))
        before = everything(ledger)
        for actual, estimated in ((0, 10**9), (0, 500), (600, 1000)):
            reply = apply(ledger, Refund(ROOT, actual, estimated))
            assert isinstance(reply, Rejected)
            assert reply.kind == "refund"
            assert type(reply.error()).__name__ == "InvalidRefund"
        assert everything(ledger) == before
        assert isinstance(apply(ledger, Record(ROOT, tokens(1))), Refusal)

    def test_a_refund_gives_back_the_difference_once(self) -> None:
        """refund(actual, estimated) gives back estimated - actual, once per consume."""
        ledger = make_ledger({"tokens": 1000})
        apply(ledger, Consume(ROOT, tokens(600)))
        assert apply(ledger, Refund(ROOT, 250, 600)) is None
        assert state(ledger) == ((0, 0, 250, 0, 1), ZERO, 1, 0)
        assert isinstance(apply(ledger, Refund(ROOT, 250, 600)), Rejected)
        assert state(ledger) == ((0, 0, 250, 0, 1), ZERO, 1, 0)

    def test_each_consume_of_an_estimate_takes_one_refund(self) -> None:
        """Two consumes of the same estimate take two refunds, and a third is rejected."""
        ledger = make_ledger({"tokens": 1000})
        for _ in range(2):
            apply(ledger, Consume(ROOT, tokens(300)))
        assert apply(ledger, Refund(ROOT, 100, 300)) is None
        assert apply(ledger, Refund(ROOT, 0, 300)) is None
        assert isinstance(apply(ledger, Refund(ROOT, 0, 300)), Rejected)
        assert state(ledger)[0][TOKENS] == 100

    def test_a_refund_above_the_estimate_charges_the_excess_past_the_cap(self) -> None:
        """A call that used more than estimated is charged the excess, even past a cap,
        as a refund's usage without another call."""
        ledger = make_ledger({"tokens": 1000})
        apply(ledger, Consume(ROOT, tokens(900)))
        outcome = ledger.apply(Refund(ROOT, 1300, 900), T0)
        assert outcome.reply is None
        assert state(ledger) == ((0, 0, 1300, 0, 1), ZERO, 1, 0)
        usage = outcome.events[0]
        assert isinstance(usage, UsageRecorded)
        assert (usage.source, usage.usage.tokens) == ("refund", 400)

    def test_a_refund_matches_consumes_of_its_own_scope_only(self) -> None:
        """A tenant's refund does not match the budget's consume, nor the other way round."""
        ledger = make_ledger({"tokens": 1000})
        apply(ledger, Consume(ROOT, tokens(100)))
        apply(ledger, Consume(tenant_path("bob"), tokens(200)))
        assert isinstance(apply(ledger, Refund(tenant_path("alice"), 0, 100)), Rejected)
        assert isinstance(apply(ledger, Refund(ROOT, 0, 200)), Rejected)
        assert apply(ledger, Refund(tenant_path("bob"), 0, 200)) is None
        assert state(ledger)[0][TOKENS] == 100
        assert state(ledger, tenant_path("bob"))[0][TOKENS] == 0

    def test_a_refund_credits_the_lifetime_and_windows_keep_counting(self) -> None:
        """A refund gives back lifetime usage; a time window keeps what was consumed, since
        crediting the wrong period could admit more than its cap."""
        ledger = make_ledger({"tokens": 1000}, windows=[Window.hour(tokens=500)])
        apply(ledger, Consume(ROOT, tokens(400)))
        apply(ledger, Refund(ROOT, 0, 400))
        view = figures(ledger)
        assert (view.used[TOKENS], view.windows[0].used[TOKENS]) == (0, 400)

    def test_a_refund_after_a_reset_keeps_usage_made_since(self) -> None:
        """A consume's usage zeroed by a reset is not given back again by its refund: the
        usage others made since the reset stays (else 2,000 could be spent on 1,000)."""
        ledger = make_ledger({"tokens": 1000})
        apply(ledger, Consume(ROOT, tokens(600)))  # A
        apply(ledger, Reset(ROOT))
        apply(ledger, Consume(ROOT, tokens(400)))  # B, after the reset
        reply = apply(ledger, Refund(ROOT, 0, 600))  # A's call used nothing
        assert reply is None or (isinstance(reply, Rejected) and reply.kind == "refund")
        assert state(ledger)[0][TOKENS] == 400
        assert isinstance(apply(ledger, Record(ROOT, tokens(601))), Refusal)


class TestChargeAndTakeBack:
    def test_a_charge_is_never_refused(self) -> None:
        """Usage that already happened is charged even past the cap; then nothing fits."""
        ledger = make_ledger({"tokens": 1000})
        apply(ledger, Record(ROOT, tokens(900)))
        reply = apply(ledger, Charge(ROOT, tokens(300)))
        assert isinstance(reply, Charged)
        assert (reply.used, reply.calls, reply.at) == ((0, 0, 1200, 0, 2), 2, T0)
        assert isinstance(apply(ledger, Reserve(ROOT, tokens(0))), Refusal)

    def test_take_back_undoes_a_record(self) -> None:
        """Taking back a record (its caller never saw the reply) frees its usage, its
        call and its window usage."""
        ledger = make_ledger({"tokens": 1000}, windows=[Window.hour(tokens=1000)])
        apply(ledger, Record(ROOT, tokens(300)))
        amount = tokens(700)
        assert isinstance(apply(ledger, Record(ROOT, amount, Meta(model="m"))), Charged)
        later = T0 + timedelta(minutes=1)
        assert apply(ledger, TakeBack(ROOT, amount, T0, Meta(model="m")), later) is None
        view = figures(ledger)
        assert state(ledger) == ((0, 0, 300, 0, 1), ZERO, 1, 0)
        assert view.windows[0].used[TOKENS] == 300
        usage = apply(ledger, ReadUsage(ROOT, "lifetime"))
        assert isinstance(usage, UsageFigures)
        assert usage.by_model == (("m", ZERO),)
        assert isinstance(apply(ledger, Record(ROOT, tokens(500))), Charged)

    def test_take_back_of_a_consume_ends_its_refund(self) -> None:
        """A consume taken back can no longer be refunded."""
        ledger = make_ledger({"tokens": 1000})
        apply(ledger, Consume(ROOT, tokens(300)))
        apply(ledger, TakeBack(ROOT, tokens(300), T0, consumed=True))
        assert state(ledger) == (ZERO, ZERO, 0, 0)
        assert isinstance(apply(ledger, Refund(ROOT, 0, 300)), Rejected)

    def test_take_back_after_a_reset_keeps_usage_made_since(self) -> None:
        """Taking back a record from before a reset never makes usage or calls negative,
        and never erases usage recorded since the reset."""
        ledger = make_ledger({"tokens": 1000})
        first = tokens(700)
        apply(ledger, Record(ROOT, first))
        apply(ledger, Reset(ROOT))
        apply(ledger, Record(ROOT, tokens(100)))
        apply(ledger, TakeBack(ROOT, first, T0))
        used, _, calls, _ = state(ledger)
        assert min(used) >= 0
        assert calls >= 0
        assert used[TOKENS] == 100

    def test_take_back_in_a_scope_forgotten_since_changes_nothing(self) -> None:
        """Taking back usage of a scope that no longer exists is a no-op."""
        ledger = make_ledger()
        before = everything(ledger)
        assert apply(ledger, TakeBack(("tenant:x", "child:9"), tokens(1), T0)) is None
        assert everything(ledger) == before


class TestOverrides:
    def override(self, ledger: object, **fields: object) -> object:
        command = SetOverride(
            **{  # type: ignore[arg-type]
                "scope": ROOT,
                "window": "lifetime",
                "increase": only_tokens(50),
                "expires_at": T0 + HOUR,
                "reason": "launch",
                "created_by": "ops",
                **fields,
            }
        )
        return apply(ledger, command)  # type: ignore[arg-type]

    def test_an_override_raises_a_cap_until_it_expires(self) -> None:
        """An override raises the limit of one period until its expiry, with events."""
        ledger = make_ledger({"tokens": 100}, windows=[Window.day(tokens=1000)])
        apply(ledger, Record(ROOT, tokens(100)))
        override = self.override(ledger)
        assert isinstance(override, Override)
        assert (override.id, override.window, override.increase.tokens) == (1, "lifetime", 50)
        assert (override.created_at, override.expires_at) == (T0, T0 + HOUR)
        assert (override.reason, override.created_by, override.budget) == ("launch", "ops", NAME)
        assert figures(ledger).limits[TOKENS] == 150
        assert isinstance(apply(ledger, Record(ROOT, tokens(50))), Charged)
        assert ledger.next_wakeup() == T0 + HOUR
        (event,) = ledger.advance(T0 + HOUR)
        assert isinstance(event, OverrideExpired)
        assert event.override == override
        assert figures(ledger).limits[TOKENS] == 100

    @pytest.mark.parametrize(
        ("fields", "reason"),
        [
            ({"window": "fortnight"}, "no window named"),
            ({"increase": parse({"usd": 1}, per_call=False)}, "no cap on usd"),
            ({"increase": ZERO}, "at least one cap"),
            ({"expires_at": T0}, "not in the future"),
            ({"window": "day", "increase": parse({"usd": 1}, per_call=False)}, "no cap on usd"),
        ],
    )
    def test_bad_overrides_are_rejected(self, fields: dict[str, object], reason: str) -> None:
        """An override of an unknown window, an uncapped axis, nothing, or in the past is
        rejected and changes nothing."""
        ledger = make_ledger({"tokens": 100}, windows=[Window.day(tokens=1000)])
        before = everything(ledger)
        reply = self.override(ledger, **fields)
        assert isinstance(reply, Rejected)
        assert reply.kind == "invalid_option"
        assert reason in reply.message
        assert everything(ledger) == before

    def test_an_override_is_removed_only_through_its_scope(self) -> None:
        """remove_override ends an override only from the scope that set it; an unknown
        id is rejected."""
        ledger = make_ledger({"tokens": 100}, tenant_defaults=None)
        override = self.override(ledger)
        assert isinstance(override, Override)
        for scope, number in ((tenant_path("a"), override.id), (ROOT, override.id + 1)):
            reply = apply(ledger, RemoveOverride(scope, number))
            assert isinstance(reply, Rejected)
            assert reply.kind == "invalid_option"
        outcome = ledger.apply(RemoveOverride(ROOT, override.id), T0)
        assert outcome.reply is None
        (event,) = outcome.events
        assert isinstance(event, OverrideRemoved)
        assert figures(ledger).limits[TOKENS] == 100
        assert isinstance(apply(ledger, RemoveOverride(ROOT, override.id)), Rejected)

    def test_an_override_is_an_event(self) -> None:
        """Setting an override emits OverrideSet carrying it."""
        ledger = make_ledger({"tokens": 100})
        outcome = ledger.apply(SetOverride(ROOT, "lifetime", only_tokens(1), T0 + HOUR, "", ""), T0)
        (event,) = outcome.events
        assert isinstance(event, OverrideSet)
        assert event.override == outcome.reply


class TestReads:
    def test_a_view_is_an_immutable_copy(self) -> None:
        """A scope's view holds tuples that later commands do not change."""
        ledger = make_ledger({"tokens": 1000, "usd": Decimal("0.3")})
        apply(ledger, Record(ROOT, parse({"input_tokens": 2, "output_tokens": 3, "usd": 0.1})))
        reserve(ledger, parse({"tokens": 200}))
        view = figures(ledger)
        assert (view.used, view.reserved, view.calls, view.open) == (
            (2, 3, 5, 10**8, 1),
            (0, 0, 200, 0, 1),
            1,
            1,
        )
        apply(ledger, Record(ROOT, tokens(1)))
        assert (view.used, view.reserved, view.calls, view.open) == (
            (2, 3, 5, 10**8, 1),
            (0, 0, 200, 0, 1),
            1,
            1,
        )
        with pytest.raises(AttributeError):
            view.used = ZERO  # type: ignore[misc]

    def test_the_snapshot_shows_public_units(self) -> None:
        """A view's snapshot shows Decimal dollars, remaining per axis, None where uncapped."""
        ledger = make_ledger({"tokens": 1000, "usd": Decimal("0.3")})
        apply(ledger, Record(ROOT, parse({"tokens": 300, "usd": Decimal("0.1")})))
        reserve(ledger, parse({"tokens": 200}))
        snapshot = figures(ledger).snapshot()
        assert (snapshot.tokens_used, snapshot.tokens_reserved, snapshot.tokens_remaining) == (
            300,
            200,
            500,
        )
        assert (snapshot.usd_used, snapshot.usd_remaining) == (Decimal("0.1"), Decimal("0.2"))
        assert snapshot.input_tokens_remaining is None
        assert (snapshot.calls, snapshot.open_reservations) == (1, 1)

    def test_usage_figures_of_a_period(self) -> None:
        """A usage read gives a period's used, limits and models; an unknown period is rejected."""
        ledger = make_ledger({"tokens": 1000}, windows=[Window.day(tokens=500)])
        apply(ledger, Record(ROOT, tokens(30), Meta(model="a")))
        apply(ledger, Record(ROOT, tokens(20), Meta(model="b")))
        figures_ = apply(ledger, ReadUsage(ROOT, "day"))
        assert isinstance(figures_, UsageFigures)
        assert figures_.used[TOKENS] == 50
        assert figures_.limits[TOKENS] == 500
        assert dict(figures_.by_model) == {"a": tokens(30), "b": tokens(20)}
        assert figures_.start == T0.replace(hour=0)
        assert figures_.resets_at == T0.replace(hour=0) + timedelta(days=1)
        lifetime = apply(ledger, ReadUsage(ROOT, "lifetime"))
        assert isinstance(lifetime, UsageFigures)
        assert (lifetime.start, lifetime.resets_at) == (None, None)
        report = lifetime.report(top=1)
        assert report.top_models_by_tokens == (("a", 30),)
        reply = apply(ledger, ReadUsage(ROOT, "week"))
        assert isinstance(reply, Rejected)
        assert reply.kind == "invalid_option"
