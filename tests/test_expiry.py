"""Reservations expire at their deadline; a late commit still records its spend."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
import pytest

import treasurer
from api_support import ON_TRIO_VIRTUAL_TIME, loop_clock
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 22, 10, tzinfo=UTC)


def FakeClock() -> ManualClock:
    return ManualClock(START)


def expired_events(events: list[treasurer.Event]) -> list[treasurer.ReservationExpiredEvent]:
    return [e for e in events if isinstance(e, treasurer.ReservationExpiredEvent)]


class TestExpiry:
    async def test_released_at_the_deadline(self) -> None:
        """An unsettled reservation is released at exactly its deadline, with an event."""
        clock, events = FakeClock(), []
        async with treasurer.open_budget(tokens=100, clock=clock, on_event=events.append) as b:
            async with b.reserve(tokens=80) as r:
                assert r.deadline == START + timedelta(minutes=15)
                clock.set(START + timedelta(minutes=14, seconds=59))
                assert not (await b.check(tokens=21)).fits
                clock.set(START + timedelta(minutes=15))
                assert (await b.check(tokens=100)).fits
                assert b.snapshot().open_reservations == 0
            # Leaving the block releases nothing twice, and raises nothing: no commit was late.
            assert b.snapshot().tokens_reserved == 0
            assert b.remaining == 100
        (event,) = expired_events(events)
        assert (event.reservation, event.amount.tokens, event.level) == (r.id, 80, "warning")
        assert event.deadline == START + timedelta(minutes=15)
        assert "expired unsettled" in event.message

    async def test_late_commit_records_the_spend(self) -> None:
        """Committing after the deadline raises ReservationExpired but records the usage."""
        clock = FakeClock()
        async with treasurer.open_budget(tokens=100, clock=clock) as b:
            async with b.reserve(tokens=50) as r:
                clock.set(START + timedelta(hours=1))
                with pytest.raises(treasurer.ReservationExpired, match="recorded all the same"):
                    r.commit(tokens=60)
                assert r.settled
            assert isinstance(treasurer.ReservationExpired("x"), RuntimeError)
            await anyio.wait_all_tasks_blocked()
            snap = b.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved, snap.calls) == (60, 0, 1)

    async def test_late_commit_the_handle_could_not_see(self) -> None:
        """If the budget expired it first, the block's exit raises ReservationExpired."""
        clock = FakeClock()
        async with treasurer.open_budget(tokens=100, clock=clock) as b:
            with pytest.raises(treasurer.ReservationExpired):
                async with b.reserve(tokens=50) as r:
                    clock.set(START + timedelta(hours=1))
                    await b.check()  # the budget expires it now
                    clock.set(START)  # this caller's view of time lags behind
                    r.commit(tokens=30)
            assert b.snapshot().tokens_used == 30

    async def test_per_call_ttl_and_no_ttl(self) -> None:
        """reserve(ttl=...) overrides the default; reservation_ttl=None never expires."""
        clock = FakeClock()
        async with treasurer.open_budget(tokens=100, clock=clock, reservation_ttl=None) as b:
            async with b.reserve(tokens=10) as forever:
                async with b.reserve(tokens=10, ttl=timedelta(seconds=30)) as short:
                    assert forever.deadline is None
                    assert short.deadline == START + timedelta(seconds=30)
                    clock.set(START + timedelta(days=365))
                    await b.check()
                    assert b.snapshot().tokens_reserved == 10
                    forever.commit(tokens=10)
        assert b.snapshot().tokens_used == 10

    @pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1), 30])
    async def test_bad_ttl(self, ttl: object) -> None:
        """A TTL that is not a positive timedelta is refused."""
        async with treasurer.open_budget(tokens=10) as b:
            with pytest.raises(treasurer.InvalidOption):
                b.reserve(tokens=1, ttl=ttl)  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption):
            async with treasurer.open_budget(reservation_ttl=ttl):  # type: ignore[arg-type]
                pass  # pragma: no cover


def on_virtual_time(events: list[treasurer.Event]) -> AbstractAsyncContextManager[treasurer.Budget]:
    """A budget on trio's virtual clock, with a 15-minute TTL, recording its events."""
    return treasurer.open_budget(
        tokens=100,
        clock=loop_clock(START),
        reservation_ttl=timedelta(minutes=15),
        on_event=events.append,
    )


class TestTimer:
    @ON_TRIO_VIRTUAL_TIME
    async def test_expires_with_nobody_calling(self) -> None:
        """On trio's virtual clock: the actor releases a reservation at its deadline unprompted."""
        events: list[treasurer.Event] = []
        async with on_virtual_time(events) as b:
            first = await b.reserve(tokens=30).__aenter__()
            await anyio.sleep(60)
            second = await b.reserve(tokens=30, ttl=timedelta(minutes=1)).__aenter__()
            await anyio.sleep(61)  # the short one, made later, expires first
            assert [e.reservation for e in expired_events(events)] == [second.id]
            assert b.snapshot().tokens_reserved == 30
            await anyio.sleep(15 * 60)
            assert [e.reservation for e in expired_events(events)] == [second.id, first.id]
            assert b.snapshot().tokens_reserved == 0
            first.release()
            second.release()

    @ON_TRIO_VIRTUAL_TIME
    async def test_expires_after_the_timer_target_was_settled(self) -> None:
        """The timer's target belonged to a reservation settled long ago: it still
        finds the later deadline of one left open, and expires it on time."""
        events: list[treasurer.Event] = []
        async with on_virtual_time(events) as b:
            async with b.reserve(tokens=10) as settled:
                settled.commit(tokens=5)
            await anyio.sleep(60)
            left_open = await b.reserve(tokens=30).__aenter__()
            await anyio.sleep(14 * 60 + 30)  # past the settled one's deadline only
            assert expired_events(events) == []
            assert b.snapshot().tokens_reserved == 30
            await anyio.sleep(31)
            assert [e.reservation for e in expired_events(events)] == [left_open.id]
            assert b.snapshot().tokens_reserved == 0
            left_open.release()

    async def test_steady_traffic_does_not_wake_the_budget(self) -> None:
        """Reservations settled before their deadline add no batch of their own: 200
        reserve/commit pairs are 400 batches, the timer adding none."""
        async with treasurer.open_budget(tokens=10**9, reservation_ttl=timedelta(minutes=15)) as b:
            before = b.statistics()
            for _ in range(200):
                async with b.reserve(tokens=10) as r:
                    r.commit(tokens=5)
                await anyio.lowlevel.checkpoint()  # the timer's turn, if it was woken
            await anyio.wait_all_tasks_blocked()
            after = b.statistics()
        assert after.messages_served - before.messages_served == 400
        assert after.batches_served - before.batches_served == 400

    @ON_TRIO_VIRTUAL_TIME
    async def test_the_budget_is_woken_once_per_deadline(self) -> None:
        """On trio's virtual clock: an hour with one open reservation and steady traffic
        wakes the budget once, for that reservation's deadline."""
        events: list[treasurer.Event] = []
        async with on_virtual_time(events) as b:
            left_open = await b.reserve(tokens=1).__aenter__()
            await anyio.sleep(1)  # so no call falls on the deadline's instant
            before = b.statistics().batches_served
            for _ in range(60):
                async with b.reserve(tokens=1) as r:
                    r.commit()
                await anyio.sleep(60)
            woken = b.statistics().batches_served - before - 2 * 60
            assert woken == 1
            assert [e.reservation for e in expired_events(events)] == [left_open.id]
            left_open.release()

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_expires_on_the_real_clock(self) -> None:
        """On asyncio's real clock, with a 20 ms TTL: released without any call."""
        expired = anyio.Event()

        def on_event(event: treasurer.Event) -> None:
            if isinstance(event, treasurer.ReservationExpiredEvent):
                expired.set()

        async with treasurer.open_budget(
            tokens=100, reservation_ttl=timedelta(milliseconds=20), on_event=on_event
        ) as b:
            r = await b.reserve(tokens=30).__aenter__()
            with anyio.fail_after(5):
                await expired.wait()
            assert b.snapshot().tokens_reserved == 0
            r.release()


class TestDeadlineOrder:
    async def test_deadlines_out_of_order_expire_in_deadline_order(self) -> None:
        """Deadlines that arrive out of order (a shorter TTL, a clock stepped back)
        expire in deadline order, and a settled reservation's deadline is skipped."""
        clock, events = FakeClock(), []
        async with treasurer.open_budget(
            tokens=1_000,
            clock=clock,
            reservation_ttl=timedelta(seconds=60),
            on_event=events.append,
        ) as b:

            async def reserve(ttl: timedelta | None = None) -> treasurer.Reservation:
                return await b.reserve(tokens=10, ttl=ttl).__aenter__()

            first = await reserve()  # START + 60 s
            short = await reserve(timedelta(seconds=10))  # START + 10 s: out of order
            clock.set(START + timedelta(seconds=1))
            later = await reserve()  # START + 61 s
            clock.set(START - timedelta(seconds=5))  # the clock stepped back
            stepped_back = await reserve()  # START + 55 s: out of order
            settled = await reserve(timedelta(seconds=5))  # START
            settled.release()
            await anyio.wait_all_tasks_blocked()  # applied before the clock moves on
            clock.set(START + timedelta(seconds=60))
            await anyio.wait_all_tasks_blocked()
            order = [e.reservation for e in expired_events(events)]
            assert order == [short.id, stepped_back.id, first.id]
            assert b.snapshot().open_reservations == 1
            clock.set(START + timedelta(seconds=61))
            await anyio.wait_all_tasks_blocked()
            assert [e.reservation for e in expired_events(events)][-1] == later.id
            assert b.snapshot().open_reservations == 0
            for reservation in (first, short, later, stepped_back):
                reservation.release()  # expired already: changes nothing
            await anyio.wait_all_tasks_blocked()
            assert b.snapshot().tokens_reserved == 0


class TestLateCommits:
    async def test_a_late_commit_is_recorded_past_the_cap(self) -> None:
        """A reservation that expired gave its room away; committing it later records the
        usage all the same, past the cap, and raises ReservationExpired from commit()."""
        clock = FakeClock()
        async with treasurer.open_budget(tokens=100, clock=clock) as b:
            async with b.reserve(tokens=100, ttl=timedelta(minutes=1)) as r:
                clock.advance(minutes=1)
                await anyio.wait_all_tasks_blocked()
                await b.record(tokens=100)  # the room it held was given back
                with pytest.raises(treasurer.ReservationExpired):
                    r.commit(tokens=100)
            snap = b.snapshot()
            assert (snap.tokens_used, snap.tokens_remaining) == (200, -100)
            assert not await b.consume(1)

    async def test_a_commit_the_budget_expires_first_is_raised_by_the_block(self) -> None:
        """When the budget's clock passes the deadline only after commit() was called but
        before the commit is applied, the block's exit raises ReservationExpired and the
        usage is recorded."""
        clock = FakeClock()
        async with treasurer.open_budget(tokens=100, clock=clock) as b:
            with pytest.raises(treasurer.ReservationExpired):
                async with b.reserve(tokens=50, ttl=timedelta(minutes=1)) as r:
                    r.commit(tokens=80)  # posted before the deadline...
                    clock.set(START + timedelta(minutes=1))  # ...applied after it
            assert b.snapshot().tokens_used == 80

    async def test_a_late_commit_event_says_so(self) -> None:
        """A late commit's UsageRecorded has source "late_commit" and its reservation."""
        clock, events = FakeClock(), []
        async with treasurer.open_budget(tokens=100, clock=clock, on_event=events.append) as b:
            async with b.reserve(tokens=50, ttl=timedelta(minutes=1), model="m") as r:
                clock.advance(minutes=2)
                with pytest.raises(treasurer.ReservationExpired):
                    r.commit(tokens=30)
        (used,) = [e for e in events if isinstance(e, treasurer.UsageRecorded)]
        assert (used.source, used.reservation, used.usage.tokens) == ("late_commit", r.id, 30)

    def test_from_threads(self) -> None:
        """On the sync facade a late commit raises when the block ends; usage is kept."""
        import treasurer.sync

        clock = FakeClock()
        with treasurer.sync.open_budget(tokens=100, clock=clock) as b:
            with pytest.raises(treasurer.ReservationExpired):
                with b.reserve(tokens=50, ttl=timedelta(minutes=1)) as r:
                    clock.advance(minutes=2)
                    r.commit(tokens=120)
            assert b.snapshot().tokens_used == 120
