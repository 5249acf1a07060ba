"""The budget actor: the one task that owns a ledger.

Callers put ``(op, a, b, slot)`` messages in a bounded anyio memory stream.
The actor wakes once per batch, drains every waiting message, applies each to
the ledger in arrival order, delivers the replies, and publishes an immutable
state tuple for synchronous reads. Nothing else touches the ledger, so no
check-and-deduct can interleave with another, and there is no lock.

Two kinds of message:

* requests (reserve, record, reset) are skipped if their caller was cancelled
  before the actor reached them, so a cancelled request has no effect; a
  caller cancelled *after* its request was granted hands the grant back
  (``_undo``), as anyio's CapacityLimiter does;
* settlements (commit, release, refund, undo) always take effect, even when
  the caller is cancelled or the budget is closing, because the spend or the
  release they describe has already happened.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import structlog
from anyio import ClosedResourceError, EndOfStream, WouldBlock

from ._amounts import AXES, NO_CAPS, CapVector, Vector, to_public
from ._errors import (
    BudgetBroken,
    BudgetClosed,
    BudgetExceeded,
    LoopThreadError,
    RequestTooLarge,
)
from ._events import (
    DEFAULT_THRESHOLDS,
    Event,
    Override,
    Subscription,
    ThresholdCrossed,
    WindowRolledOver,
)
from ._ledger import NO_TENANT_CAPS, Ledger, Scope, State, TenantSpec, WindowsView
from ._slots import Answered, Slot, checkpoint_factory, slot_factory
from ._types import Snapshot, Statistics
from ._windows import Window, WindowState, utc_now

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

# Requests (may be refused; skipped when abandoned).
RESERVE: Final = 0
RECORD: Final = 1
RESET: Final = 2
CHECK: Final = 3
RESERVE_WAIT: Final = 4
OVERRIDE: Final = 5
REMOVE_OVERRIDE: Final = 6
USAGE: Final = 7
# Settlements (always applied).
COMMIT: Final = 8
RELEASE: Final = 9
ADJUST: Final = 10
UNRECORD: Final = 11
CHARGE: Final = 12
# A batch with nothing to do but let time pass (from the timer) or let the
# waiters' queue move (a waiter gave up).
TICK: Final = 13
_FIRST_SETTLEMENT: Final = COMMIT
# Added to an op for a tenant's message, whose ``a`` is then ``(tenant, a)``.
# Untenanted messages, the common case, carry nothing extra.
TENANT: Final = 32
_MAY_WAIT: Final = frozenset({RESERVE_WAIT, RESERVE_WAIT + TENANT})  # never applied inline

Message = tuple[int, Any, Any, Slot | None]


class Published:
    """The figures of one batch, replaced whole after each batch, so a reader in
    any thread sees lifetime and window figures from the same batch. The
    snapshot built from them is kept here: built once per batch, at most."""

    __slots__ = ("limits", "overrides", "snapshot", "state", "windows")

    def __init__(
        self,
        state: State,
        windows: WindowsView,
        limits: CapVector,
        overrides: tuple[Override, ...],
    ) -> None:
        self.state = state
        self.windows = windows
        self.limits = limits
        self.overrides = overrides
        self.snapshot: Snapshot | None = None


def tenant_op(op: int, tenant: str | None, a: object) -> tuple[int, object]:
    """The op and first argument of a message for ``tenant`` (``None``: the budget)."""
    return (op, a) if tenant is None else (op + TENANT, (tenant, a))


DEFAULT_MAILBOX_SIZE: Final = 4096
_MIN_TIMER_SLEEP: Final = 0.001  # seconds; no busy loop if the clocks disagree
_LOG_LEVELS: Final = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "critical": logging.CRITICAL,
}
_names = itertools.count(1)


def _describe(amount: Vector | tuple[int, ...]) -> dict[str, object]:
    return {AXES[axis]: to_public(axis, value) for axis, value in enumerate(amount) if value}


# False sends every new budget's messages through the mailbox (tests use it to
# reach the mailbox's interleavings; the fast path has its own tests). A module
# global, not a class attribute, so a test can set it on a compiled build too.
inline_by_default = True


class BudgetCore:
    """Mailbox, actor loop and published state of one budget."""

    def __init__(
        self,
        caps: CapVector,
        *,
        name: str | None,
        mailbox_size: int,
        per_request: CapVector = NO_CAPS,
        windows: Sequence[Window] = (),
        clock: Callable[[], datetime] = utc_now,
        thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
        on_event: Callable[[Event], object] | None = None,
        reservation_ttl: timedelta | None = None,
        tenant_default: TenantSpec = NO_TENANT_CAPS,
        tenant_specs: Mapping[str, TenantSpec] | None = None,
    ) -> None:
        self.name: Final = name or f"budget-{next(_names)}"
        self.caps: Final = caps
        self.per_request: Final = per_request
        self.clock: Final = clock
        self.ledger = Ledger(
            caps,
            self.name,
            per_request,
            windows,
            clock(),
            thresholds,
            reservation_ttl,
            tenant_default,
            tenant_specs,
        )
        # Whether batches must read the clock: windows or reservation deadlines.
        self.uses_time = (
            bool(windows)
            or reservation_ttl is not None
            or bool(tenant_default[2])
            or any(spec[2] for spec in (tenant_specs or {}).values())
        )
        # The earliest reservation deadline, published by the actor for the timer.
        self.next_deadline: datetime | None = None
        self._timer_target: datetime | None = None
        self._timer_wakeup = anyio.Event()
        self.on_event: Final = on_event
        self._async_callback: Final = on_event is not None and inspect.iscoroutinefunction(on_event)
        self.subscribers: set[Subscription] = set()
        self.ledger.verbose = on_event is not None
        # Starts the async on_event callback; set by open_budget to its task group.
        self.spawn: Callable[..., object] | None = None
        send, receive = anyio.create_memory_object_stream[Message](mailbox_size)
        self._send: MemoryObjectSendStream[Message] = send
        self._receive: MemoryObjectReceiveStream[Message] = receive
        self._mailbox_size = mailbox_size
        # Settlements that found the mailbox full. The mailbox is never full while
        # the actor waits to receive, so it will wake and take these first.
        self._overflow: deque[Message] = deque()
        self._new_slot: Callable[[], Slot] = slot_factory()
        self._checkpoint = checkpoint_factory()
        # Messages sent to the mailbox and not yet taken by the actor, and
        # whether a batch is being applied: while both are nil, a message is
        # applied at once in its sender's task (see _idle).
        self._in_flight = 0
        self._serving = False
        self._alone = False  # a task is in the fast path's checkpoint
        # The actor parks on a slot of its own, not in the stream's receive(), and
        # takes batches with receive_nowait(): every message waits in the stream's
        # buffer until taken, so _in_flight counts exactly what is unapplied.
        self._parked = False
        self._wake_slot: Slot | None = None
        self._room_waiters: deque[Slot] = deque()  # senders waiting for mailbox room
        self.log = structlog.get_logger("treasurer").bind(budget=self.name)
        # Looked up once: asked once per batch (see _debug_enabled).
        self._is_enabled_for: Callable[[int], object] | None = getattr(
            self.log, "is_enabled_for", None
        )
        self.published: Published = self._view(self.ledger)
        # Tenants' figures are not published (thousands of tenants would make
        # every batch pay for reads nobody asked for): they are read from the
        # ledger between batches, on the loop's thread.
        self.loop_thread: Final = threading.get_ident()
        self.closed = False
        self._failure: BaseException | None = None
        self._messages_served = 0
        self._batches_served = 0
        self._peak_batch = 0
        self._waiting = 0
        self._pending: list[Message] = []
        # Test seams for exact interleavings: called with each batch before it is
        # applied and after its replies are delivered.
        self._before_batch: Callable[[list[Message]], None] | None = None
        self._after_batch: Callable[[list[Message]], None] | None = None
        self.inline = inline_by_default

    # -- caller side ---------------------------------------------------------------

    def closed_error(self) -> BudgetClosed:
        if self._failure is not None:
            error = BudgetBroken(f"budget {self.name!r} failed: {self._failure!r}")
            error.__cause__ = self._failure
            return error
        return BudgetClosed(f"budget {self.name!r} is closed")

    def _idle(self) -> bool:
        """Whether a message may be applied at once, in the caller's task.

        True when nothing sent to the mailbox is still unapplied and no batch is
        being applied: applying the message now, synchronously, is then exactly
        what the actor would do next with a batch of one, in the same order.
        """
        return not self._in_flight and not self._serving and not self.closed and self.inline

    def _apply_now(self, op: int, a: object, b: object) -> object:
        """Apply one message in the caller's task: a batch of one, without the
        batch's list, reply slot and loop (see _idle for why that is exact)."""
        self._serving = True
        try:
            batch: list[Message] | None = None  # only for the test seams
            if self._before_batch is not None or self._after_batch is not None:
                batch = [(op, a, b, None)]
                if self._before_batch is not None:
                    self._before_batch(batch)
            ledger = self.ledger
            if self.uses_time:
                ledger.advance(self.clock())
            debug = self._debug_enabled()
            tenant: str | None = None
            if op >= TENANT:
                op -= TENANT
                tenant, a = a  # type: ignore[misc]
            reply = self._apply(ledger, self.log, op, a, b, debug, tenant)
            self._end_batch(ledger, debug, batch, 1)
        except BaseException as exc:  # a ledger bug, never expected
            raise self._broken(exc) from exc
        finally:
            self._serving = False
        return reply

    def _broken(self, exc: BaseException) -> BudgetClosed:
        """A batch applied outside the actor task failed: close the budget as
        broken; returns the error to raise."""
        self._failure = exc
        self.log.exception("budget failed while applying a message")
        self.close()
        return self.closed_error()

    async def _mailbox_room(self) -> None:
        """Wait, first come first served, until the actor takes a batch."""
        waiter = self._new_slot()
        self._room_waiters.append(waiter)
        try:
            await waiter.wait()
        except BaseException:
            delivered, _ = waiter.abandon()
            if delivered:  # woken, then cancelled: the room goes to the next one
                self._made_room(1)
            raise
        if self.closed:
            raise self.closed_error()

    def _made_room(self, spots: int) -> None:
        """Wake as many senders waiting for room as there are free spots."""
        waiters = self._room_waiters
        while spots > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.abandoned:
                waiter.deliver(None)
                spots -= 1

    def _rouse(self) -> None:
        """Wake the actor if it is parked (after a message was sent, or on close)."""
        if self._parked:
            self._parked = False
            assert self._wake_slot is not None
            self._wake_slot.deliver(None)

    async def request(self, op: int, a: object = None, b: object = None) -> Any:
        """Send a request and wait for its reply; raise a reply that is an error."""
        if self.closed:
            raise self.closed_error()
        if op not in _MAY_WAIT and not self._waiting and not self._alone and self._idle():
            # The uncontended fast path: a checkpoint (where a cancellation lands,
            # before anything is applied), then, if no other task turned up
            # meanwhile, the request applied at once. No reply to wait for and
            # nothing to undo. Under contention requests go to the mailbox, where
            # one actor wake-up serves a whole batch.
            self._alone = True
            try:
                await self._checkpoint()
            finally:
                self._alone = False
            if not self._waiting and self._idle():
                reply = self._apply_now(op, a, b)
                if isinstance(reply, BaseException):
                    raise reply
                return reply
            if self.closed:
                raise self.closed_error()
        slot = self._new_slot()
        message = (op, a, b, slot)
        self._waiting += 1
        try:
            while True:
                try:
                    self._send.send_nowait(message)
                    break
                except WouldBlock:
                    # Mailbox full: wait until the actor takes a batch, then try
                    # again. Waiting here, not in anyio's send(), keeps "sent" exact:
                    # a cancellation here means nothing was sent.
                    await self._mailbox_room()
            self._in_flight += 1
            self._rouse()
            reply = await slot.wait()
        except BaseException as exc:
            # Whatever the actor has not reached yet, it now skips; whatever it
            # already granted (asyncio can cancel a caller after the answer) is
            # handed back, as anyio's CapacityLimiter does.
            delivered, granted = slot.abandon()
            tenant: str | None = None
            if op >= TENANT:
                op -= TENANT
                tenant, a = a  # type: ignore[misc]
            if delivered:
                self._undo(op, a, granted, tenant)
            elif op == RESERVE_WAIT and not self.closed:
                self.post(*tenant_op(TICK, tenant, None))  # if it was the head, its queue may move
            if isinstance(exc, ClosedResourceError | anyio.BrokenResourceError):  # pragma: no cover
                # Defensive: the closed flag is set before either end of the mailbox
                # closes, so a caller reaching send() after close was refused above.
                raise self.closed_error() from None
            raise
        finally:
            self._waiting -= 1
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def _undo(self, op: int, amount: object, reply: object, tenant: str | None) -> None:
        if isinstance(reply, BaseException) or self.closed:
            return
        if op in (RESERVE, RESERVE_WAIT):
            assert isinstance(reply, tuple)
            self.post(RELEASE, reply[0])
        elif op == RECORD:
            self.post(*tenant_op(UNRECORD, tenant, amount))

    def post(
        self, op: int, a: object = None, b: object = None, *, ack: bool = False
    ) -> Slot | None:
        """Send a settlement without waiting; it cannot be refused.

        Never blocks and never raises for a full mailbox, so it works in a
        cancelled scope and from ``__aexit__``. With ``ack`` it returns a slot
        that is answered once the settlement is applied.
        """
        if self.closed:
            raise self.closed_error()
        # Applied at once (see request()) only if no other reservation is open:
        # otherwise other calls are in flight and will settle too, and their
        # settlements share one batch instead of paying a batch end each.
        if len(self.ledger.reservations) <= 1 and self._idle():
            reply = self._apply_now(op, a, b)
            if not ack:
                return None
            answer = Answered()
            answer.deliver(reply)
            return answer
        slot = self._new_slot() if ack else None
        message = (op, a, b, slot)
        self._in_flight += 1
        try:
            self._send.send_nowait(message)
        except WouldBlock:
            self._overflow.append(message)
        self._rouse()
        return slot

    # -- reads ---------------------------------------------------------------------

    def holds(self, reservation_id: int) -> bool:
        """Whether the ledger still holds a reservation (False once it expired)."""
        return reservation_id in self.ledger.reservations

    def catch_up(self) -> None:
        """Before a read on the loop's thread: apply what was sent and not applied yet.

        Settlements are posted without waiting for them to be applied, so this
        is what lets a task read its own writes: exactly the batch the actor
        would take next, applied now. Elsewhere (another thread, or inside a
        batch, as in an event callback) a read gets the last published batch.
        """
        if (
            self._in_flight
            and not self._serving
            and not self.closed
            and threading.get_ident() == self.loop_thread
        ):
            try:
                self._serve(self._take())
            except BaseException as exc:  # a ledger bug, never expected
                raise self._broken(exc) from exc
            finally:
                self._pending = []

    @property
    def state(self) -> State:
        """Lifetime figures, as of now on the loop's thread (see catch_up)."""
        self.catch_up()
        return self.published.state

    def snapshot(self) -> Snapshot:
        self.catch_up()
        published = self.published
        snapshot = published.snapshot
        if snapshot is None:
            # Two threads may both build it; the results are equal.
            snapshot = published.snapshot = self.build_snapshot(published)
        return snapshot

    def build_snapshot(self, published: Published, tenant: str | None = None) -> Snapshot:
        used, reserved, calls, open_reservations = published.state
        if tenant is None:
            caps, per_request = self.caps, self.per_request
        else:
            caps, per_request, _ = self.ledger.tenant_spec(tenant)
        return Snapshot._build(
            caps,
            used,
            reserved,
            calls,
            open_reservations,
            per_request,
            published.windows,
            published.limits,
            published.overrides,
            tenant,
        )

    def tenant_view(self, tenant: str) -> Published:
        """A tenant's figures as of the last batch; only on the loop's thread,
        where no batch can be half applied."""
        if threading.get_ident() != self.loop_thread:
            raise LoopThreadError(
                f"tenant {tenant!r} of budget {self.name!r} can be read only on the "
                "budget's event loop thread; from other threads use treasurer.sync"
            )
        self.catch_up()
        scope = self.ledger.existing(tenant)
        if scope is not None:
            return self._view(scope)
        # Never used: what its first use would start from.
        caps, _, windows = self.ledger.tenant_spec(tenant)
        now = self.ledger.now
        zero = (0, 0, 0, 0, 0)
        return Published(
            (zero, zero, 0, 0),
            tuple((w, zero, WindowState(w, now, [0] * 5).resets_at(), w.caps) for w in windows),
            caps,
            (),
        )

    def tenant_snapshot(self, tenant: str) -> Snapshot:
        """A tenant's figures as of the last batch (on the loop's thread)."""
        return self.build_snapshot(self.tenant_view(tenant), tenant)

    @staticmethod
    def _view(scope: Scope) -> Published:
        windows = scope.windows_view() if scope.windows else ()
        overrides = tuple(scope.overrides.values()) if scope.overrides else ()
        return Published(scope.state(), windows, scope.limits, overrides)

    def publish(self) -> None:
        ledger = self.ledger
        if ledger.windows or ledger.overrides:
            self.published = self._view(ledger)
        else:  # after every batch, so the common case skips _view's work
            self.published = Published(ledger.state(), (), ledger.limits, ())

    def statistics(self) -> Statistics:
        return Statistics(
            mailbox_depth=self._send.statistics().current_buffer_used + len(self._overflow),
            mailbox_size=self._mailbox_size,
            messages_served=self._messages_served,
            batches_served=self._batches_served,
            peak_batch_size=self._peak_batch,
            open_reservations=self.published.state[3],
            tasks_waiting=self._waiting,
            reservations_waiting=self.ledger.waiting,
        )

    # -- the actor -----------------------------------------------------------------

    async def run(self) -> None:
        """Serve batches until the budget is closed and the mailbox drained."""
        try:
            while True:
                if self._in_flight:
                    # More arrived while the last batch was applied: let other
                    # tasks run (and add to the batch) first, as receive() would.
                    await self._checkpoint()
                elif self.closed:
                    break
                else:
                    wake = self._wake_slot = self._new_slot()
                    self._parked = True
                    try:
                        await wake.wait()  # until a message is sent, or close()
                    finally:
                        self._parked = False
                if self._in_flight:  # nothing, if woken by close()
                    self._serve(self._take())
                    self._pending = []
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:
            self._failure = exc
            self.log.exception("budget actor failed")
            raise self.closed_error() from exc
        finally:
            self._shutdown()

    def _take(self) -> list[Message]:
        """Everything in the mailbox, in order, as the next batch."""
        # Settlements that overflowed were posted while everything now in the
        # mailbox was still pending, so applying them first is a valid order,
        # and one that never refuses a request they made room for.
        batch = self._pending = [*self._overflow]
        overflowed = len(batch)
        self._overflow.clear()
        receive = self._receive.receive_nowait
        while True:
            try:
                batch.append(receive())
            except (WouldBlock, EndOfStream):
                break
        self._in_flight -= len(batch)
        if self._room_waiters:
            self._made_room(len(batch) - overflowed)
        return batch

    def log_opened(self) -> None:
        caps = {
            AXES[axis]: to_public(axis, cap)
            for axis, cap in enumerate(self.caps)
            if cap is not None
        }
        self.log.info("budget opened", caps=caps)

    def _serve(self, batch: list[Message]) -> None:
        self._serving = True
        try:
            self._serve_batch(batch)
        finally:
            self._serving = False

    def _serve_batch(self, batch: list[Message]) -> None:
        if self._before_batch is not None:
            self._before_batch(batch)
        ledger = self.ledger
        if self.uses_time:  # one clock read per batch
            ledger.advance(self.clock())
        log = self.log
        debug = self._debug_enabled()
        closing = self.closed
        for op, a, b, slot in batch:
            tenant = None
            if op >= TENANT:
                op -= TENANT
                tenant, a = a
            if op < _FIRST_SETTLEMENT:
                assert slot is not None
                if slot.abandoned:
                    continue
                if closing:
                    slot.deliver(self.closed_error())
                    continue
                if op == RESERVE_WAIT and self._must_wait(ledger, a, tenant):
                    ledger.wait(slot, a, b, tenant)  # answered when granted, in arrival order
                    if debug:
                        log.debug(
                            "reservation waiting",
                            waiting=ledger.waiting,
                            tenant=tenant,
                            **_describe(a),
                        )
                    continue
            reply = self._apply(ledger, log, op, a, b, debug, tenant)
            if slot is not None:
                slot.deliver(reply)
        self._end_batch(ledger, debug, batch, len(batch))

    def _end_batch(
        self, ledger: Ledger, debug: bool, batch: list[Message] | None, count: int
    ) -> None:
        """After a batch's messages: grant waiters, publish, hand out events."""
        if ledger.waiting:
            for ticket, answer in ledger.serve_waiters():
                if debug:
                    self.log.debug("waiting reservation answered", answer=repr(answer))
                cast(Slot, ticket).deliver(answer)
        self.publish()
        if ledger.events:
            events, ledger.events = ledger.events, []
            self._deliver(events)
        # Nothing open and nothing published before: nothing for the timer.
        if self.uses_time and (ledger.reservations or ledger.waiting or self.next_deadline):
            self._publish_deadline()
        if self._after_batch is not None:
            assert batch is not None
            self._after_batch(batch)
        self._messages_served += count
        self._batches_served += 1
        if count > self._peak_batch:
            self._peak_batch = count

    async def run_timer(self) -> None:
        """Wake the actor at the next reservation deadline, even if nobody calls.

        Sleeps until its target (on the budget's clock), then looks at the
        earliest deadline the actor last published and, once one is due, posts
        a TICK; the actor expires what is due at the start of that batch. The
        actor moves the target, and wakes the timer, only when an earlier
        deadline appears. Not a scan: one sleep per distinct deadline.
        """
        while not self.closed:
            wakeup = self._timer_wakeup = anyio.Event()
            target = self._timer_target
            if target is None:
                await wakeup.wait()
                continue
            delay = (target - self.clock()).total_seconds()
            if delay > 0:
                # Sleep on the event loop's clock, then look again on the budget's
                # clock: the two may differ slightly, and only the budget's decides.
                with anyio.move_on_after(max(delay, _MIN_TIMER_SLEEP)):
                    await wakeup.wait()
                if not wakeup.is_set():
                    # Reached the target. What it was set for may be settled by
                    # now; the next deadline, if any, is the new target.
                    self._timer_target = self.next_deadline
                continue
            # Due by the budget's clock, which the actor reads next: it will expire
            # what is due; with no target, the next deadline it publishes wakes us.
            self._timer_target = None
            self.post(TICK)
            await wakeup.wait()

    def _publish_deadline(self) -> None:
        """Give the timer an earlier target if a deadline needs it (actor only).

        A later deadline needs no wake-up: the timer reaches its current target,
        finds the next deadline and sleeps again. A reservation settled before
        its deadline leaves the target where it was, so steady traffic wakes
        the timer once per deadline period, not once per reservation.
        """
        ledger = self.ledger
        deadline = ledger.next_deadline() if ledger.reservations or ledger.waiting else None
        self.next_deadline = deadline
        target = self._timer_target
        if deadline is not None and (target is None or deadline < target):
            self._timer_target = deadline
            self._timer_wakeup.set()

    def _debug_enabled(self) -> bool:
        """Whether debug events would go anywhere (asked once per batch).

        Building their arguments costs more than applying most messages, so a
        batch with debug logging off gets a logger that skips them entirely;
        info and above still go to the real one.
        """
        is_enabled_for = self._is_enabled_for
        return True if is_enabled_for is None else bool(is_enabled_for(logging.DEBUG))

    def _deliver(self, events: list[Event]) -> None:
        """Hand events out without waiting on anyone: log, callback, subscribers."""
        for event in events:
            log = self.log if event.tenant is None else self.log.bind(tenant=event.tenant)
            if isinstance(event, ThresholdCrossed):
                log.log(
                    _LOG_LEVELS[event.level],
                    "threshold crossed",
                    cap=event.cap,
                    window=event.window,
                    threshold=event.threshold,
                    used=event.used,
                    limit=event.limit,
                )
            elif isinstance(event, WindowRolledOver):
                log.info("window rolled over", window=event.window, resets_at=event.resets_at)
            callback = self.on_event
            if callback is not None:
                if self._async_callback:
                    assert self.spawn is not None
                    self.spawn(self._call_async, callback, event)
                else:
                    try:
                        callback(event)
                    except Exception:
                        log.exception("on_event callback failed", event_type=type(event).__name__)
            for subscriber in self.subscribers:
                subscriber.offer(event)

    async def _call_async(self, callback: Callable[[Event], Any], event: Event) -> None:
        try:
            await callback(event)
        except Exception:
            self.log.exception("on_event callback failed", event_type=type(event).__name__)

    def subscribe(self, subscription: Subscription) -> None:
        if self.closed:
            raise self.closed_error()
        self.subscribers.add(subscription)
        self.ledger.verbose = True

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        self.ledger.verbose = self.on_event is not None or bool(self.subscribers)

    @staticmethod
    def _must_wait(ledger: Ledger, amount: Vector, tenant: str | None) -> bool:
        """Whether a waiting request joins the queue: it does not fit now, or
        others wait before it. One that can never fit is answered at once."""
        refusal = ledger.refusal_for(amount, tenant)
        if isinstance(refusal, RequestTooLarge):
            return False
        return refusal is not None or ledger.waiting > 0

    @staticmethod
    def _apply(
        ledger: Ledger,
        log: Any,
        op: int,
        a: Any,
        b: Any,
        debug: bool = True,
        tenant: str | None = None,
    ) -> object:
        if op in (RESERVE, RESERVE_WAIT):
            granted = ledger.reserve(a, b, tenant)
            if isinstance(granted, BudgetExceeded):
                log.info("request refused", op="reserve", cap=granted.cap, error=str(granted))
                return granted
            if debug:
                log.debug("reservation granted", reservation=granted, **_describe(a))
            return (granted, ledger.deadline(granted))
        # Handles settle each reservation exactly once, so an unknown id has expired.
        if op == COMMIT:
            actual, meta = b if len(b) == 2 else (b, None)  # (vector, metadata) or a vector
            model = meta.get("model") if meta else None
            reply: object = ledger.commit(a, actual, expired_ok=True, model=model, tenant=tenant)
            if debug:
                log.debug(
                    "reservation committed", reservation=a, **_describe(actual), **(meta or {})
                )
            return reply
        if op == RELEASE:
            reply = ledger.release(a, expired_ok=True)
            if debug:
                log.debug("reservation released", reservation=a)
            return reply
        if op == TICK:
            ledger.wake(tenant)
            return None
        if op == RECORD:
            refusal = ledger.record(a, b.get("model") if b else None, tenant)
            if refusal is not None:
                log.info("request refused", op="record", cap=refusal.cap, error=str(refusal))
                return refusal
            if debug:
                log.debug("usage recorded", tenant=tenant, **_describe(a), **(b or {}))
            return ledger.scope(tenant).state()
        if op == ADJUST:
            ledger.adjust(a, tenant)
            if debug:
                log.debug("usage adjusted", credit=_describe(a))
            return None
        if op == UNRECORD:
            ledger.unrecord(a, tenant)
            if debug:
                log.debug("usage recorded by a cancelled caller was taken back", **_describe(a))
            return None
        if op == CHECK:
            refusal = ledger.refusal_for(a, tenant)
            scope = ledger.scope(tenant)
            return (refusal, Published(scope.state(), scope.windows_view(), scope.limits, ()))
        if op == OVERRIDE:
            window, increase, expires_at, reason, created_by = a
            result = ledger.add_override(window, increase, expires_at, reason, created_by, tenant)
            log.info("override set", window=window, tenant=tenant, result=repr(result))
            return result
        if op == REMOVE_OVERRIDE:
            return ledger.remove_override(a)
        if op == CHARGE:
            ledger.charge(a, b.get("model") if b else None, tenant)
            if debug:
                log.debug("usage charged", tenant=tenant, **_describe(a), **(b or {}))
            return ledger.scope(tenant).state()
        if op == USAGE:
            return ledger.usage_for(a, tenant)
        if op == RESET:
            reply = ledger.reset(a, tenant)
            log.info("budget reset", window=a or "all", tenant=tenant)
            return reply
        raise AssertionError(f"unknown op {op}")  # pragma: no cover

    def _shutdown(self) -> None:
        """Stop serving: apply pending settlements, refuse pending requests.

        Synchronous, so it runs to the end even in a cancelled task.
        """
        self.closed = True
        self._timer_wakeup.set()
        # A batch cut short by a failure: its delivered slots ignore a second answer,
        # and its settlements are not applied again (nothing is, after a failure).
        pending = self._pending
        self._pending = []
        while True:
            try:
                pending.append(self._receive.receive_nowait())
            except (WouldBlock, EndOfStream, ClosedResourceError):
                break
        self._receive.close()
        self._made_room(len(self._room_waiters))  # senders waiting for room fail at once
        pending.extend(self._overflow)
        self._overflow.clear()
        error = self.closed_error()
        for ticket in self.ledger.drain_waiting():
            cast(Slot, ticket).deliver(error)
        for op, a, b, slot in pending:
            tenant = None
            if op >= TENANT:
                op -= TENANT
                tenant, a = a
            if op >= _FIRST_SETTLEMENT and self._failure is None:
                reply = self._apply(self.ledger, self.log, op, a, b, True, tenant)
                if slot is not None:
                    slot.deliver(reply)
            elif slot is not None:
                slot.deliver(error)
        self.publish()
        if self.ledger.events:
            events, self.ledger.events = self.ledger.events, []
            self._deliver(events)
        for subscriber in self.subscribers:
            subscriber.end()
        snapshot = self.snapshot()
        level = logging.ERROR if self._failure is not None else logging.INFO
        self.log.log(
            level,
            "budget closed",
            calls=snapshot.calls,
            open_reservations=snapshot.open_reservations,
            **_describe(self.state[0]),
        )

    def close(self) -> None:
        """Refuse new calls; the actor finishes what is queued, then stops."""
        self.closed = True
        self._send.close()
        self._timer_wakeup.set()
        self._rouse()
