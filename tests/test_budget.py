"""The Budget API on both event loops: the seed examples with their exact figures."""

from __future__ import annotations

import pickle
from decimal import Decimal

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

import treasurer
import treasurer.testing

pytestmark = pytest.mark.anyio


class TestSeedExamples:
    async def test_five_consumers_of_300_from_1000(self) -> None:
        """Exactly three of five concurrent consumers succeed; refunds of half leave 550."""
        outcomes: list[bool] = []

        async def call(budget: treasurer.Budget) -> None:
            ok = await budget.consume(300)
            outcomes.append(ok)
            if ok:
                await anyio.sleep(0.01)
                await budget.refund(150, 300)

        async with treasurer.open_budget(tokens=1000) as budget:
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(call, budget)
            assert sorted(outcomes) == [False, False, True, True, True]
            assert budget.remaining == 550

    async def test_max_tokens_alias(self) -> None:
        """``open_budget(max_tokens=...)`` is the TokenBudget spelling of ``tokens=``."""
        async with treasurer.open_budget(max_tokens=1000) as budget:
            assert budget.caps.tokens == 1000
            assert await budget.consume(300)
            await budget.refund(150, 300)
            assert budget.remaining == 850

    async def test_token_and_usd_pool(self) -> None:
        """record, reserve/commit, snapshot and reset with the pool's exact figures."""
        async with treasurer.open_budget(tokens=1_000_000, usd=10.0) as pool:
            totals = await pool.record(tokens=1200, usd=0.0036)
            assert totals == treasurer.Totals(0, 0, 1200, Decimal("0.0036"), 1, 1)
            snap = pool.snapshot()
            assert snap.tokens_used == 1200
            assert snap.tokens_remaining == 998800
            assert snap.usd_used == Decimal("0.0036")
            assert snap.usd_remaining == Decimal("9.9964")

            async with pool.reserve(tokens=2000, usd=0.012) as r:
                held = pool.snapshot()
                assert held.tokens_reserved == 2000
                assert held.usd_reserved == Decimal("0.012")
                assert held.tokens_remaining == 1_000_000 - 1200 - 2000
                r.commit(tokens=1800, usd=0.0108)
            snap = pool.snapshot()
            assert snap.tokens_used == 3000
            assert snap.tokens_reserved == 0
            assert snap.usd_used == Decimal("0.0144")
            assert snap.calls == 2

            await pool.reset()
            snap = pool.snapshot()
            assert (snap.tokens_used, snap.usd_used, snap.calls) == (0, Decimal(0), 0)
            assert snap.tokens_remaining == 1_000_000

    async def test_four_axis_caps(self) -> None:
        """A record over the input cap raises BudgetExceeded naming it, totals unchanged."""
        async with treasurer.open_budget(input_tokens=10_000, output_tokens=5_000, usd=1.0) as pool:
            totals = await pool.record(input_tokens=1000, output_tokens=500, usd=0.05)
            assert (totals.input_tokens, totals.output_tokens, totals.tokens) == (1000, 500, 1500)
            assert totals.total_tokens == 1500
            assert totals.usd == Decimal("0.05")
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await pool.record(input_tokens=20_000)
            error = caught.value
            assert error.cap == "input_tokens"
            assert error.limit == 10_000
            assert error.attempted == 21_000
            assert error.requested == 20_000
            assert error.available == 9_000
            assert "input_tokens" in str(error)
            assert "21000" in str(error)
            assert pool.totals() == totals

    async def test_exact_money(self) -> None:
        """Three records of $0.10 fit a $0.30 cap exactly; a fourth cent does not."""
        async with treasurer.open_budget(usd=0.3) as pool:
            for _ in range(3):
                await pool.record(usd=0.1)
            assert pool.snapshot().usd_remaining == 0
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await pool.record(usd=0.01)
            assert caught.value.cap == "usd"
            assert caught.value.limit == Decimal("0.3")
            assert caught.value.attempted == Decimal("0.31")


class TestReservations:
    async def test_refused_at_once(self) -> None:
        """A reservation that does not fit raises on entry and holds nothing."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with budget.reserve(tokens=60):
                with pytest.raises(treasurer.BudgetExceeded) as caught:
                    async with budget.reserve(tokens=50):
                        pytest.fail("must not be entered")  # pragma: no cover
                assert caught.value.available == 40
                assert budget.snapshot().tokens_reserved == 60
            assert budget.snapshot().tokens_reserved == 0

    async def test_released_without_commit(self) -> None:
        """Leaving the block without commit releases the reservation and charges nothing."""
        async with treasurer.open_budget(tokens=100, usd=1) as budget:
            async with budget.reserve(tokens=60, usd=0.5) as r:
                assert r.amount.tokens == 60
                assert r.amount.usd == Decimal("0.5")
            assert r.settled
            snap = budget.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved, snap.open_reservations) == (0, 0, 0)

    async def test_released_on_exception(self) -> None:
        """An exception in the block releases the reservation and propagates."""
        async with treasurer.open_budget(tokens=100) as budget:
            with pytest.raises(KeyError):
                async with budget.reserve(tokens=60):
                    raise KeyError("provider error")
            # The exit waited for the release, so no checkpoint is needed to see it.
            assert budget.snapshot().tokens_reserved == 0
            assert await budget.consume(100)

    async def test_commit_above_estimate_is_never_dropped(self) -> None:
        """Actual usage above the reservation is recorded past the cap and blocks later calls."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with budget.reserve(tokens=90) as r:
                r.commit(tokens=130)
            snap = budget.snapshot()
            assert snap.tokens_used == 130
            assert snap.tokens_remaining == -30
            assert budget.remaining == -30
            with pytest.raises(treasurer.BudgetExceeded):
                await budget.record(tokens=1)
            assert not await budget.consume(1)

    async def test_commit_below_estimate_returns_the_rest(self) -> None:
        """Committing less than reserved frees the difference."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with budget.reserve(tokens=90) as r:
                r.commit(tokens=10)
            assert budget.remaining == 90

    async def test_commit_defaults(self) -> None:
        """Omitted axes commit as zero; requests default to what was reserved."""
        async with treasurer.open_budget(requests=10) as budget:
            async with budget.reserve(input_tokens=10, output_tokens=5, usd=1) as r:
                r.commit(input_tokens=7)
            snap = budget.snapshot()
            assert (snap.input_tokens_used, snap.output_tokens_used, snap.tokens_used) == (7, 0, 7)
            assert snap.usd_used == 0
            assert snap.requests_used == 1
            assert snap.requests_remaining == 9

    async def test_settles_exactly_once(self) -> None:
        """A second commit or release raises AlreadySettled and changes nothing."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with budget.reserve(tokens=50) as r:
                r.commit(tokens=40)
                with pytest.raises(treasurer.AlreadySettled):
                    r.commit(tokens=1)
                with pytest.raises(treasurer.AlreadySettled):
                    r.release()
            assert budget.snapshot().tokens_used == 40
            with pytest.raises(treasurer.AlreadySettled, match="already settled"):
                r.commit(tokens=1)

    async def test_explicit_release(self) -> None:
        """release() gives everything back at once."""
        async with treasurer.open_budget(tokens=100) as budget:
            async with budget.reserve(tokens=50) as r:
                r.release()  # applied when the actor next runs
                await wait_all_tasks_blocked()
                assert budget.snapshot().tokens_reserved == 0
            assert budget.remaining == 100

    async def test_not_entered(self) -> None:
        """Committing a reservation that was never entered is a clear error."""
        async with treasurer.open_budget(tokens=100) as budget:
            reservation = budget.reserve(tokens=5)
            with pytest.raises(treasurer.ReservationError, match="async with"):
                reservation.commit(tokens=1)
            assert reservation.id == 0
            assert "new" in repr(reservation)

    async def test_entered_once(self) -> None:
        """A reservation object cannot be entered twice."""
        async with treasurer.open_budget(tokens=100) as budget:
            reservation = budget.reserve(tokens=5)
            async with reservation:
                pass
            with pytest.raises(treasurer.ReservationError, match="once"):
                async with reservation:
                    pass  # pragma: no cover

    async def test_reset_keeps_open_reservations(self) -> None:
        """After reset, an open reservation still holds, so settling it cannot overspend."""
        async with treasurer.open_budget(tokens=100) as budget:
            await budget.record(tokens=30)
            async with budget.reserve(tokens=60) as r:
                await budget.reset()
                snap = budget.snapshot()
                assert (snap.tokens_used, snap.tokens_reserved) == (0, 60)
                assert not await budget.consume(41)
                r.commit(tokens=60)
            assert budget.snapshot().tokens_used == 60
            assert budget.remaining == 40

    async def test_unsettled_reservation_warns(self) -> None:
        """A granted reservation dropped without settling warns with ResourceWarning."""
        async with treasurer.open_budget(tokens=100) as budget:
            reservation = budget.reserve(tokens=5)
            await reservation.__aenter__()
            with pytest.warns(ResourceWarning, match="never settled"):
                reservation.__del__()
            reservation.release()


class TestTokensAxis:
    async def test_tokens_default_to_input_plus_output(self) -> None:
        """Input and output tokens both count toward the total tokens cap."""
        async with treasurer.open_budget(tokens=100) as budget:
            await budget.record(input_tokens=60, output_tokens=30)
            assert budget.remaining == 10
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await budget.record(input_tokens=6, output_tokens=5)
            assert caught.value.cap == "tokens"

    async def test_first_cap_in_axis_order_is_named(self) -> None:
        """When several caps refuse, the error names the first in axis order."""
        async with treasurer.open_budget(output_tokens=10, usd=0.01) as budget:
            await budget.record(output_tokens=8, usd=0.008)
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await budget.record(output_tokens=5, usd=0.005)
            assert caught.value.cap == "output_tokens"
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await budget.record(output_tokens=1, usd=0.005)
            assert caught.value.cap == "usd"

    async def test_too_large_wins_over_does_not_fit(self) -> None:
        """A request larger than any cap itself is RequestTooLarge, whatever else fails."""
        async with treasurer.open_budget(output_tokens=10, usd=0.01) as budget:
            await budget.record(output_tokens=8)
            with pytest.raises(treasurer.RequestTooLarge) as caught:
                await budget.record(output_tokens=5, usd=0.02)
            assert caught.value.cap == "usd"
            assert isinstance(caught.value, ValueError)

    async def test_requests_axis(self) -> None:
        """Every record, consume and reservation counts one request unless told otherwise."""
        async with treasurer.open_budget(requests=3) as budget:
            await budget.record(tokens=1)
            assert await budget.consume(1)
            async with budget.reserve(tokens=1) as r:
                assert not await budget.consume(1)
                r.commit(tokens=1)
            assert budget.snapshot().requests_used == 3
            assert budget.remaining is None
            await budget.record(tokens=5, requests=0)
            assert budget.totals().calls == 4


class TestReads:
    async def test_snapshot_is_immutable_and_cached(self) -> None:
        """A snapshot is frozen, and one is built once per published state."""
        async with treasurer.open_budget(tokens=10) as budget:
            first = budget.snapshot()
            assert budget.snapshot() is first
            with pytest.raises(AttributeError):
                first.tokens_used = 5  # type: ignore[misc]
            await budget.record(tokens=1)
            second = budget.snapshot()
            assert second is not first
            assert (first.tokens_used, second.tokens_used) == (0, 1)
            assert second.totals == budget.totals()

    async def test_snapshot_lists_caps(self) -> None:
        """The snapshot carries the caps the budget was opened with."""
        async with treasurer.open_budget(tokens=10, usd=1, requests=2) as budget:
            assert budget.snapshot().caps == treasurer.Caps(tokens=10, usd=Decimal(1), requests=2)

    async def test_statistics(self) -> None:
        """statistics() counts batches, peak batch size, waiting tasks and open reservations."""
        async with treasurer.open_budget(tokens=1000, mailbox_size=64, name="stats") as budget:
            assert budget.name == "stats"
            assert "stats" in repr(budget)
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(budget.consume, 1)
                await wait_all_tasks_blocked()
            async with budget.reserve(tokens=1):
                stats = budget.statistics()
            assert stats.open_reservations == 1
            assert stats.mailbox_size == 64
            assert stats.mailbox_depth == 0
            assert stats.tasks_waiting == 0
            assert stats.messages_served == 21
            assert 2 <= stats.batches_served <= 21
            assert stats.peak_batch_size >= 2

    async def test_reads_never_see_a_half_applied_batch(self) -> None:
        """Between batches, reserved always equals the sum of the granted open reservations."""
        async with treasurer.open_budget(tokens=10_000) as budget:
            held: dict[int, int] = {}
            violations: list[str] = []

            async def worker(size: int) -> None:
                async with budget.reserve(tokens=size) as r:
                    held[r.id] = size
                    snap = budget.snapshot()
                    # Our own grant is visible, and used + reserved never passes the cap.
                    if (
                        snap.tokens_reserved < size
                        or snap.tokens_used + snap.tokens_reserved > 10_000
                    ):
                        violations.append(repr(snap))
                    await checkpoint()
                    del held[r.id]
                    r.commit(tokens=size)

            async with anyio.create_task_group() as tg:
                for size in range(1, 101):
                    tg.start_soon(worker, size)
            assert violations == []
            assert budget.snapshot().tokens_used == sum(range(1, 101))


class TestLogging:
    async def test_structured_events_with_budget_name(
        self, captured_logs: list[dict[str, object]]
    ) -> None:
        """reserve, settle, refuse and close are logged as structlog events with the name bound."""
        async with treasurer.open_budget(tokens=10, name="logged") as budget:
            async with budget.reserve(tokens=5) as r:
                r.commit(tokens=4)
            async with budget.reserve(tokens=5):
                pass
            assert not await budget.consume(7)
        logs = captured_logs
        events = [entry["event"] for entry in logs]
        assert events == [
            "budget opened",
            "reservation created",
            "usage recorded",
            "reservation committed",
            "reservation created",
            "reservation released",
            "request refused",
            "budget closed",
        ]
        assert {entry["budget"] for entry in logs} == {"logged"}
        created = logs[1]["amount"]
        assert isinstance(created, treasurer.Usage)
        assert created.tokens == 5
        committed = logs[3]["actual"]
        assert isinstance(committed, treasurer.Usage)
        assert committed.tokens == 4
        assert logs[6]["cap"] == "tokens"
        assert (logs[-1]["calls"], logs[-1]["open_reservations"]) == (1, 0)


class TestErrors:
    async def test_refusals_pickle(self) -> None:
        """A BudgetExceeded survives pickling with its fields and message."""
        async with treasurer.open_budget(usd=0.3) as budget:
            await budget.record(usd=0.1)
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await budget.record(usd=Decimal("0.25"))
            with pytest.raises(treasurer.RequestTooLarge) as too_large:
                await budget.record(usd=1)
        for error in (caught.value, too_large.value):
            copy = pickle.loads(pickle.dumps(error))
            assert type(copy) is type(error)
            assert str(copy) == str(error)
            assert vars(copy) == vars(error)
        assert caught.value.available == Decimal("0.2")
        assert "requested 0.25 but only 0.2 available" in str(caught.value)


class TestPerRequestCaps:
    async def test_larger_requests_are_refused(self) -> None:
        """A request above the per-request cap raises RequestTooLarge naming it; nothing changes."""
        async with treasurer.open_budget(
            tokens=100_000, per_request={"tokens": 8000, "usd": Decimal("0.5")}
        ) as budget:
            assert budget.per_request == treasurer.Caps(tokens=8000, usd=Decimal("0.5"))
            assert budget.snapshot().per_request == budget.per_request
            before = budget.snapshot()
            with pytest.raises(treasurer.RequestTooLarge) as caught:
                await budget.record(tokens=8001)
            error = caught.value
            assert (error.cap, error.window, error.limit, error.requested) == (
                "tokens",
                "request",
                8000,
                8001,
            )
            assert "per-request tokens cap of 8000" in str(error)
            with pytest.raises(treasurer.RequestTooLarge, match=r"per-request usd cap of 0\.5"):
                async with budget.reserve(tokens=10, usd=0.51):
                    pass  # pragma: no cover
            with pytest.raises(treasurer.RequestTooLarge):
                await budget.consume(9000)
            assert budget.snapshot() == before
            assert await budget.consume(8000)

    async def test_actual_usage_above_it_is_recorded(self) -> None:
        """The per-request cap limits what is admitted; spend above it at commit is kept."""
        async with treasurer.open_budget(per_request={"tokens": 100}) as budget:
            async with budget.reserve(tokens=100) as r:
                r.commit(tokens=150)
            assert budget.totals().tokens == 150

    async def test_lifetime_refusals_name_their_window(self) -> None:
        """A refusal by a whole-life cap says window 'lifetime'."""
        async with treasurer.open_budget(tokens=10, per_request={"tokens": 8}) as budget:
            await budget.record(tokens=5)
            with pytest.raises(treasurer.BudgetExceeded) as caught:
                await budget.record(tokens=6)
            assert caught.value.window == "lifetime"
            assert type(caught.value) is treasurer.BudgetExceeded

    @pytest.mark.parametrize(
        ("per_request", "error"),
        [
            ({"tokenz": 1}, treasurer.UnknownAxis),
            ({"tokens": -1}, treasurer.InvalidAmount),
            ({"usd": float("nan")}, treasurer.InvalidAmount),
            (5, treasurer.InvalidAmountType),
        ],
        ids=repr,
    )
    async def test_bad_per_request_caps(self, per_request: object, error: type) -> None:
        """Bad per-request caps are refused before the budget opens."""
        with pytest.raises(error):
            async with treasurer.open_budget(per_request=per_request):  # type: ignore[arg-type]
                pass  # pragma: no cover


class TestCheck:
    async def test_fits(self) -> None:
        """check() says a request fits, shows what is left, and reserves nothing."""
        async with treasurer.open_budget(tokens=1000, usd=1) as budget:
            await budget.record(tokens=300, usd=0.25)
            async with budget.reserve(tokens=200):
                before = budget.snapshot()
                result = await budget.check(tokens=500)
                assert result.fits
                assert result.refusal is None
                assert (result.cap, result.window) == (None, None)
                assert result.remaining.tokens == 500
                assert result.remaining.usd == Decimal("0.75")
                assert result.remaining.requests is None
                assert budget.snapshot() == before

    async def test_does_not_fit(self) -> None:
        """check() names the cap that would refuse, with the refusal's figures."""
        async with treasurer.open_budget(tokens=1000, per_request={"usd": 0.1}) as budget:
            await budget.record(tokens=900)
            result = await budget.check(tokens=101)
            assert not result.fits
            assert (result.cap, result.window) == ("tokens", "lifetime")
            assert result.refusal is not None
            assert result.refusal.available == 100
            result = await budget.check(usd=0.2)
            assert (result.fits, result.cap, result.window) == (False, "usd", "request")
            assert budget.totals().calls == 1

    async def test_bad_input(self) -> None:
        """check() refuses bad input like every other call."""
        async with treasurer.open_budget(tokens=10) as budget:
            with pytest.raises(treasurer.UnknownAxis):
                await budget.check(tokenz=1)  # type: ignore[call-arg]
            with pytest.raises(treasurer.InvalidAmount):
                await budget.check(tokens=-1)


class TestCommitWithoutAmounts:
    async def test_commits_what_was_reserved(self) -> None:
        """commit() with no amounts records exactly the reservation, on every axis."""
        async with treasurer.open_budget(tokens=100, usd=1, requests=5) as budget:
            async with budget.reserve(input_tokens=30, output_tokens=10, usd=0.25) as r:
                r.commit()
            snap = budget.snapshot()
            assert snap.used == treasurer.Usage(
                input_tokens=30, output_tokens=10, tokens=40, usd=Decimal("0.25"), requests=1
            )
            assert (snap.reserved, snap.calls) == (treasurer.Usage(0, 0, 0, Decimal(0), 0), 1)

    async def test_committing_zero_is_explicit(self) -> None:
        """commit(tokens=0) records no tokens; requests still default to what was reserved."""
        async with treasurer.open_budget(tokens=100, requests=5) as budget:
            async with budget.reserve(tokens=60) as r:
                r.commit(tokens=0)
            snap = budget.snapshot()
            assert (snap.tokens_used, snap.requests_used, snap.tokens_reserved) == (0, 1, 0)
            assert budget.remaining == 100


class TestRefunds:
    async def test_a_refund_matching_no_consume_erases_nobody_elses_usage(self) -> None:
        """A consumes 600 and B 400 of 1,000; refund(0, 10**9) raises InvalidRefund and
        changes nothing, so nothing more is admitted."""
        async with treasurer.open_budget(tokens=1000) as budget:

            async def task(tokens: int) -> None:
                assert await budget.consume(tokens)

            async with anyio.create_task_group() as tg:
                tg.start_soon(task, 600)
                tg.start_soon(task, 400)
            before = budget.snapshot()
            with pytest.raises(treasurer.InvalidRefund) as caught:
                await budget.refund(0, 10**9)
            assert isinstance(caught.value, ValueError)
            assert isinstance(caught.value, treasurer.TreasurerError)
            assert budget.snapshot() == before
            assert budget.snapshot().tokens_used == 1000
            assert not await budget.consume(1)

    async def test_each_consume_takes_one_refund(self) -> None:
        """A refund corrects one outstanding consume of its estimate; a second refund of
        the same estimate is refused and changes nothing."""
        async with treasurer.open_budget(tokens=1000) as budget:
            assert await budget.consume(600)
            await budget.refund(100, 600)
            assert budget.snapshot().tokens_used == 100
            with pytest.raises(treasurer.InvalidRefund):
                await budget.refund(0, 600)
            assert budget.snapshot().tokens_used == 100

    async def test_a_refund_of_another_estimate_is_refused(self) -> None:
        """refund(actual, estimated) must name the estimate the consume took."""
        async with treasurer.open_budget(tokens=1000) as budget:
            assert await budget.consume(300)
            with pytest.raises(treasurer.InvalidRefund):
                await budget.refund(0, 299)
            await budget.refund(0, 300)
            assert budget.remaining == 1000

    async def test_a_refused_consume_cannot_be_refunded(self) -> None:
        """A consume that returned False took nothing, so there is nothing to refund."""
        async with treasurer.open_budget(tokens=100) as budget:
            assert await budget.consume(100)
            assert not await budget.consume(50)
            with pytest.raises(treasurer.InvalidRefund):
                await budget.refund(0, 50)
            assert budget.snapshot().tokens_used == 100

    def test_the_same_rule_holds_on_the_thread_facade(self) -> None:
        """treasurer.sync: a refund matching no consume is refused and nothing changes."""
        import treasurer.sync

        with treasurer.sync.open_budget(tokens=1000) as budget:
            assert budget.consume(600)
            assert budget.consume(400)
            with pytest.raises(treasurer.InvalidRefund):
                budget.refund(0, 10**9)
            assert budget.snapshot().tokens_used == 1000
            assert not budget.consume(1)
            budget.refund(0, 400)
            assert budget.remaining == 400


class TestReadYourWrites:
    async def test_every_awaited_settlement_is_visible_at_once(self) -> None:
        """After record, consume, refund, charge and a block's exit return, a snapshot
        taken right away (no checkpoint) shows them."""
        async with treasurer.open_budget(tokens=1000) as budget:
            await budget.record(tokens=10)
            assert budget.snapshot().tokens_used == 10
            assert await budget.consume(20)
            assert budget.snapshot().tokens_used == 30
            await budget.refund(5, 20)
            assert budget.snapshot().tokens_used == 15
            await budget.charge(tokens=100)
            assert budget.snapshot().tokens_used == 115
            async with budget.reserve(tokens=50) as r:
                r.commit(tokens=40)
            assert budget.snapshot().tokens_used == 155
            async with budget.reserve(tokens=50):
                pass
            assert budget.snapshot().tokens_reserved == 0

    async def test_reads_change_nothing_and_send_nothing(self) -> None:
        """snapshot(), remaining, totals(), available and statistics() serve no batch."""
        async with treasurer.open_budget(tokens=1000) as budget:
            await budget.record(tokens=10)
            before = budget.statistics()
            for _ in range(20):
                budget.snapshot()
                _ = budget.remaining
                budget.totals()
                _ = budget.available
                budget.tenant("t").snapshot()
            await wait_all_tasks_blocked()
            after = budget.statistics()
            assert (after.batches_served, after.messages_served) == (
                before.batches_served,
                before.messages_served,
            )
            assert budget.snapshot().tokens_used == 10

    async def test_the_snapshot_tells_when_and_sums_up_each_axis(self) -> None:
        """A snapshot carries the budget's time of its batch and used/reserved/remaining
        on every axis."""
        clock = treasurer.testing.ManualClock()
        async with treasurer.open_budget(tokens=100, usd=1, clock=clock) as budget:
            async with budget.reserve(tokens=30, usd=0.5):
                clock.advance(minutes=1)
                await budget.record(tokens=20, usd=0.25)
                snap = budget.snapshot()
            assert snap.at == clock()
            assert snap.used == treasurer.Usage(0, 0, 20, Decimal("0.25"), 1)
            assert snap.reserved == treasurer.Usage(0, 0, 30, Decimal("0.5"), 1)
            assert snap.remaining == treasurer.Caps(tokens=50, usd=Decimal("0.25"))


class TestAvailable:
    async def test_available_is_the_least_any_cap_leaves_on_every_axis(self) -> None:
        """``available`` names every axis: None where uncapped, else what is left."""
        async with treasurer.open_budget(tokens=1000, usd=2) as budget:
            await budget.record(tokens=100, usd=0.5)
            assert budget.available == treasurer.Caps(tokens=900, usd=Decimal("1.5"))

    async def test_a_window_bounds_what_is_available(self) -> None:
        """A budget capped only by $1 a day, $0.80 spent, has $0.20 available: what a
        request could still take now."""
        async with treasurer.open_budget(windows=[treasurer.Window.day(usd=1)]) as budget:
            await budget.record(usd=Decimal("0.8"))
            assert budget.available.usd == Decimal("0.2")
            assert not (await budget.check(usd=Decimal("0.21"))).fits


class TestStore:
    async def test_health_and_refresh(self) -> None:
        """health() is truthy for the memory store; refresh() gives the current figures."""
        async with treasurer.open_budget(tokens=100) as budget:
            await budget.record(tokens=7)
            health = await budget.health()
            assert health
            assert health.store == "memory"
            assert (await budget.refresh()).tokens_used == 7
