"""Reservations expire at their deadline; a late commit still records its spend."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
import pytest
import trio.testing

import treasurer
from treasurer._ledger import Ledger

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 22, 10, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def expired_events(events: list[treasurer.Event]) -> list[treasurer.ReservationExpiredEvent]:
    return [e for e in events if isinstance(e, treasurer.ReservationExpiredEvent)]


class TestExpiry:
    async def test_released_at_the_deadline(self) -> None:
        """An unsettled reservation is released at exactly its deadline, with an event."""
        clock, events = FakeClock(), []
        async with treasurer.open_budget(tokens=100, clock=clock, on_event=events.append) as b:
            async with b.reserve(tokens=80) as r:
                assert r.deadline == START + timedelta(minutes=15)
                clock.now = START + timedelta(minutes=14, seconds=59)
                assert not (await b.check(tokens=21)).fits
                clock.now = START + timedelta(minutes=15)
                assert (await b.check(tokens=100)).fits
                assert b.snapshot().open_reservations == 0
            # Leaving the block releases nothing twice.
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
                clock.now = START + timedelta(hours=1)
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
                    clock.now = START + timedelta(hours=1)
                    await b.check()  # the budget expires it now
                    clock.now = START  # this caller's view of time lags behind
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
                    clock.now = START + timedelta(days=365)
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


on_trio_virtual_time = pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio")],
)


def on_virtual_time(events: list[treasurer.Event]) -> AbstractAsyncContextManager[treasurer.Budget]:
    """A budget on trio's virtual clock, with a 15-minute TTL, recording its events."""
    base = START - timedelta(seconds=anyio.current_time())
    return treasurer.open_budget(
        tokens=100,
        clock=lambda: base + timedelta(seconds=anyio.current_time()),
        reservation_ttl=timedelta(minutes=15),
        on_event=events.append,
    )


class TestTimer:
    @on_trio_virtual_time
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

    @on_trio_virtual_time
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

    async def test_steady_traffic_does_not_wake_the_timer_each_time(self) -> None:
        """Reservations settled before their deadline leave the timer asleep: a
        deadline later than the one it sleeps for needs no wake-up."""
        async with treasurer.open_budget(tokens=10**9, reservation_ttl=timedelta(minutes=15)) as b:
            core = b._core
            wakeups: list[object] = []  # kept alive, so no two share an id
            for _ in range(200):
                async with b.reserve(tokens=10) as r:
                    r.commit(tokens=5)
                await anyio.lowlevel.checkpoint()  # the timer's turn, if it was woken
                wakeups.append(core._timer_wakeup)
            assert len({id(w) for w in wakeups}) <= 2

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


class TestLedgerExpiry:
    def test_no_scan_heap_order_and_lazy_cleanup(self) -> None:
        """Deadlines come off a heap in order; settled reservations are skipped lazily."""
        ledger = Ledger((None, None, 100, None, None), default_ttl=timedelta(seconds=10), now=START)
        ids = [ledger.reserve((0, 0, 10, 0, 1)) for _ in range(3)]
        assert all(isinstance(i, int) for i in ids)
        assert ledger.release(ids[0]) is None
        assert ledger.next_deadline() == START + timedelta(seconds=10)
        ledger.advance(START + timedelta(seconds=10))
        assert ledger.reservations == {}
        assert ledger.next_deadline() is None
        # Strict by default: an ended id is an error and changes nothing.
        error = ledger.commit(ids[1], (0, 0, 5, 0, 1))
        assert isinstance(error, treasurer.ReservationError)
        assert not isinstance(error, treasurer.ReservationExpired)
        assert ledger.used == [0] * 5
        late = ledger.commit(ids[1], (0, 0, 5, 0, 1), expired_ok=True)
        assert isinstance(late, treasurer.ReservationExpired)
        assert ledger.used[2] == 5
        assert ledger.release(ids[2], expired_ok=True) is None
        assert isinstance(ledger.release(99, expired_ok=True), treasurer.ReservationError)


def test_deadlines_of_settled_reservations_are_not_kept() -> None:
    """Settled in any order, every deadline entry is gone once nothing is open
    (they are dropped lazily while something is), and expiry still works after."""
    ledger = Ledger((None, None, 10_000, None, None), default_ttl=timedelta(seconds=60), now=START)
    amount = (0, 0, 10, 0, 1)
    ids = [ledger.reserve(amount, timedelta(seconds=60 - i % 3)) for i in range(30)]
    for reservation in reversed(ids):  # the earliest deadline is settled last
        assert isinstance(reservation, int)
        assert ledger.commit(reservation, amount) is None
    assert ledger.reservations == {}
    assert len(ledger._in_order) + len(ledger._deadlines) == 0
    assert ledger.next_deadline() is None
    kept = ledger.reserve(amount)
    ledger.advance(START + timedelta(seconds=60))
    assert [event.reservation for event in expired_events(ledger.events)] == [kept]


def test_deadlines_out_of_order_expire_in_deadline_order() -> None:
    """Deadlines that arrive out of order (a shorter TTL, a clock stepped back)
    expire in deadline order, and a settled reservation's deadline is skipped."""
    ledger = Ledger((None, None, 1_000, None, None), default_ttl=timedelta(seconds=60), now=START)
    amount = (0, 0, 10, 0, 1)

    def reserve(ttl: timedelta | None = None) -> int:
        reservation = ledger.reserve(amount, ttl)
        assert isinstance(reservation, int)
        return reservation

    first = reserve()  # START + 60 s
    short = reserve(timedelta(seconds=10))  # START + 10 s: out of order
    ledger.advance(START + timedelta(seconds=1))
    later = reserve()  # START + 61 s
    ledger.advance(START - timedelta(seconds=5))  # the clock stepped back
    stepped_back = reserve()  # START + 55 s: out of order
    settled = reserve(timedelta(seconds=5))  # START - 5 s + 5 s = START
    assert ledger.release(settled) is None
    assert ledger.next_deadline() == START + timedelta(seconds=10)
    ledger.advance(START + timedelta(seconds=60))
    order = [event.reservation for event in expired_events(ledger.events)]
    assert order == [short, stepped_back, first]
    assert ledger.next_deadline() == START + timedelta(seconds=61)
    ledger.advance(START + timedelta(seconds=61))
    assert [event.reservation for event in expired_events(ledger.events)][-1] == later
    assert ledger.next_deadline() is None
    assert ledger.reservations == {}
