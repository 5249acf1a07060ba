"""The budget actor: the one task that changes a budget's state.

Callers put ``(command, slot, kind)`` items in a bounded anyio memory stream
and await their slot. The actor wakes once per batch, takes every item
waiting, hands the commands to the store in ONE call, publishes the views the
store returns (so a caller's next read sees its own writes), then answers the
slots and hands the events on. Nothing else writes budget state, so no
check-and-deduct can interleave with another, and there is no lock.

Three kinds of item: requests (skipped if their caller gave up before the
actor reached them; a grant whose caller gave up after is handed back),
settlements (always applied: the spend or release they describe happened),
and waiting reservations (queued, first come first served, until they fit).
The callers' side (posting, waiting for a reply, handing back what a caller
who gave up was granted) is :mod:`.mailbox`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Final

import anyio
from anyio import WouldBlock

from .._core.commands import (
    OpenChild,
    Reserve,
)
from .._core.events import Event, UsageRecorded
from .._core.outcomes import Refusal, Reply, ScopeView
from .._core.scopes import ROOT, ScopePath
from .._errors import StoreUnavailable
from .._stores.base import BatchResult, Clock, Store
from .delivery import Delivery
from .mailbox import REQUEST, SETTLE, WAIT, Item, Mailbox
from .slots import Slot
from .subscription import Subscription
from .timer import Timer
from .usage_log import UsageLog

if TYPE_CHECKING:
    from .._ops.alerts import AlertDispatcher
    from .._ops.forecast import ForecastWatch

# After a batch the store could not apply, waiting requests are served again this
# much later (on the budget's clock) even if no call comes to wake the actor.
STORE_RETRY: Final = timedelta(seconds=1)


class Waiter:
    __slots__ = ("command", "slot")

    def __init__(self, command: Reserve | OpenChild, slot: Slot) -> None:
        self.command = command
        self.slot = slot


class Actor(Mailbox):
    """Mailbox, actor loop and published views of one budget."""

    def __init__(
        self,
        name: str,
        store: Store,
        clock: Clock,
        view: ScopeView,
        delivery: Delivery,
        usage_log: UsageLog | None,
        mailbox_size: int,
        alerts: AlertDispatcher | None = None,
        forecast: ForecastWatch | None = None,
    ) -> None:
        super().__init__(name, mailbox_size)
        self.store: Final = store
        self.clock: Final = clock
        self.delivery: Final = delivery
        self.usage_log: Final = usage_log
        self.alerts: Final = alerts
        self.forecast: Final = forecast
        if forecast is not None:
            forecast.observe({ROOT: view}, view.at)
        self.views: dict[ScopePath, ScopeView] = {ROOT: view}
        self.waiting: deque[Waiter] = deque()
        self.subscribers: set[Subscription] = set()
        self.timer: Final = Timer(clock, self.wake)
        self._serving: list[Item] = []  # the batch being applied
        self.messages_served = 0
        self.batches_served = 0
        self.peak_batch = 0
        self.refusals = 0  # requests refused by a cap

    def wake_waiters(self) -> None:
        """Serve the waiting requests again (the store says budget may have come back)."""
        if self.waiting:
            self.wake()

    def close(self) -> None:
        """Refuse new requests; the actor applies what is queued, then stops."""
        if not self.closing:
            self.closing = True
            self.wake()
            self.timer.stop()

    # -- the actor -----------------------------------------------------------------

    async def run(self) -> None:
        """Serve batches until the budget closes; then apply the settlements left."""
        try:
            while not self.closing:
                await self._serve(await self._next_batch())
        except Exception as exc:  # a store or ledger bug: every caller gets BudgetBroken
            self.failure = exc
            self.delivery.log.exception("budget actor failed")
        finally:
            self.closing = True
            with anyio.CancelScope(shield=True):
                await self._finish()
            self.delivery.close()
            if self.usage_log is not None:
                self.usage_log.finish()
            if self.alerts is not None:
                self.alerts.finish()

    async def _next_batch(self) -> list[Item]:
        """Wait for the next items: a call, or a wake-up from the timer."""
        first = await self._receive.receive()
        return [first, *self._take()]

    def _take(self) -> list[Item]:
        """Everything waiting in the mailbox, in order."""
        items = []
        while True:
            try:
                items.append(self._receive.receive_nowait())
            except WouldBlock:
                break
        if self._overflow:
            # Posted when the mailbox was full, so before what was behind them.
            items.extend(self._overflow)
            self._overflow.clear()
        return items

    async def _serve(self, items: list[Item]) -> None:
        self._serving = items
        applied: list[Item] = []  # in order: requests still wanted, and every settlement
        joined = 0  # waiting requests that join the queue with this batch
        for item in items:
            command, slot, kind = item
            if kind == SETTLE:
                applied.append(item)
            elif slot is None or slot.abandoned:
                continue  # a wake-up, or a caller who gave up before it was served
            elif kind == WAIT:
                assert isinstance(command, Reserve | OpenChild)
                self.waiting.append(Waiter(command, slot))
                joined += 1
            else:
                applied.append(item)
        batch = [item[0] for item in applied]
        waiters = [w for w in self.waiting if not w.slot.abandoned] if self.waiting else []
        try:
            result = await self.store.apply(
                batch,  # type: ignore[arg-type]
                [w.command for w in waiters],
                new_from=len(waiters) - joined,
                verbose=self._verbose(),
            )
        except StoreUnavailable as exc:
            self._store_failed(applied, exc)
            return
        self._publish(result)  # before the answers: a caller's next read sees its write
        for (command, slot, kind), reply in zip(applied, result.replies, strict=True):
            if isinstance(reply, Refusal):
                self.refusals += 1
            if slot is None:
                continue
            if kind == REQUEST and slot.abandoned:
                assert command is not None
                self.undo(command, reply)  # its caller left while the store worked
            else:
                slot.deliver(reply)
        if self.waiting:  # answer the waiters, and drop those who gave up
            self._answer_waiters(waiters, result.answered)
        events = result.events
        if self.forecast is not None:
            events = [*events, *self.forecast.observe(result.views, result.now, events)]
        if events:
            self._hand_out(events)
        self.timer.move(result.next_wakeup)
        self._serving = []
        self.messages_served += len(batch)
        self.batches_served += 1
        self.peak_batch = max(self.peak_batch, len(batch))

    def _store_failed(self, applied: list[Item], failure: StoreUnavailable) -> None:
        """The store applied none of the batch: each of its callers gets the error
        (requests fail closed; a settlement is not stored, so what it held stays
        reserved until its deadline); waiting requests wait on; the budget goes on."""
        self.delivery.log.log(
            logging.WARNING, "budget store unavailable", calls=len(applied), error=str(failure)
        )
        for _, slot, _ in applied:
            if slot is not None:
                slot.deliver(_store_error(failure))
        if self.waiting:
            self.timer.move(self.clock() + STORE_RETRY)
        self._serving = []

    def _answer_waiters(self, waiters: list[Waiter], answered: Sequence[tuple[int, Reply]]) -> None:
        done = set()
        for index, reply in answered:
            waiter = waiters[index]
            done.add(index)
            if isinstance(reply, Refusal):
                self.refusals += 1
            if waiter.slot.abandoned:
                self.undo(waiter.command, reply)
            else:
                waiter.slot.deliver(reply)
        self.waiting = deque(w for i, w in enumerate(waiters) if i not in done)

    def _verbose(self) -> bool:
        """Whether anyone would see the routine events (see ``Ledger.verbose``);
        the forecast reads the usage events of a scope's first batch."""
        return (
            bool(self.subscribers)
            or self.usage_log is not None
            or self.forecast is not None
            or self.delivery.wants(logging.DEBUG)
        )

    def _publish(self, result: BatchResult) -> None:
        for path, view in result.views.items():
            if view is None:
                self.views.pop(path, None)
            else:
                self.views[path] = view

    def hand_out_shared(self, events: Sequence[Event]) -> None:
        """Events another process's batch made for the whole budget (a threshold
        crossed, a window rolled over): to subscribers and ``on_event``. Its own
        alert channels and usage log had them there."""
        for event in events:
            for subscriber in self.subscribers:
                subscriber.offer(event)
            self.delivery.offer(event)

    def _hand_out(self, events: Sequence[Event]) -> None:
        """Events to subscribers, the usage log and delivery, in the order they happened."""
        usage_log, alerts = self.usage_log, self.alerts
        for event in events:
            if usage_log is not None and isinstance(event, UsageRecorded):
                usage_log.append(event)
            if alerts is not None:
                alerts.offer(event)
            for subscriber in self.subscribers:
                subscriber.offer(event)
            self.delivery.offer(event)

    async def _finish(self) -> None:
        """The budget closes: apply every settlement still queued, refuse the rest."""
        error = self.closed_error()
        for waiter in self.waiting:
            waiter.slot.deliver(error)
        self.waiting.clear()
        # A batch cut short (its store call failed): its callers get the error
        # (a slot that was answered ignores a second answer).
        for _, slot, _ in self._serving:
            if slot is not None:
                slot.deliver(error)
        self._serving = []
        while items := self._take():
            settlements: list[Item] = []
            for command, slot, kind in items:
                if kind == SETTLE and self.failure is None:
                    settlements.append((command, slot, kind))
                elif slot is not None:
                    slot.deliver(error)
            if settlements:
                try:
                    result = await self.store.apply([c for c, _, _ in settlements if c is not None])
                except StoreUnavailable as exc:
                    self._store_failed(settlements, exc)
                    continue
                self._publish(result)
                for (_, slot, _), reply in zip(settlements, result.replies, strict=True):
                    if slot is not None:
                        slot.deliver(reply)
                self._hand_out(result.events)
        self.finished = True
        self._send.close()
        self._receive.close()
        self.timer.stop()
        for subscriber in self.subscribers:
            subscriber.end()


def _store_error(failure: StoreUnavailable) -> StoreUnavailable:
    """One error per caller (an exception raised in several tasks would gather
    their tracebacks), each caused by the store's."""
    error = StoreUnavailable(str(failure))
    error.__cause__ = failure
    return error
