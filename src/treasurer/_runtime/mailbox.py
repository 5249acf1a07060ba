"""The callers' side of a budget's actor: the mailbox they post commands to,
and how a caller waits for its reply, gives up, or hands back what it was
granted after it gave up. The actor (:mod:`.actor`) is the other side."""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Final

import anyio
from anyio import WouldBlock

from .._core.commands import (
    CloseChild,
    Command,
    Consume,
    Record,
    Release,
    RemoveOverride,
    Reserve,
    SetOverride,
    TakeBack,
)
from .._core.events import Override
from .._core.outcomes import Charged, ChildOpened, Granted, Reply
from .._errors import BudgetBroken, BudgetClosed, LoopThreadError
from .slots import Slot, slot_factory

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

REQUEST: Final = 0
SETTLE: Final = 1
WAIT: Final = 2
WAKE: Final = 3  # nothing to apply: time passed, a waiter left, or the budget closes
Item = tuple[Command | None, Slot | None, int]


class Mailbox:
    """A budget's mailbox and the calls that post to it (on the budget's loop)."""

    def __init__(self, name: str, mailbox_size: int) -> None:
        self.name: Final = name
        self.mailbox_size: Final = mailbox_size
        send, receive = anyio.create_memory_object_stream[Item](mailbox_size)
        self._send: MemoryObjectSendStream[Item] = send
        self._receive: MemoryObjectReceiveStream[Item] = receive
        # Settlements that found the mailbox full: taken with the next batch.
        self._overflow: deque[Item] = deque()
        self._new_slot: Final = slot_factory()
        self.loop_thread: Final = threading.get_ident()
        self.closing = False  # no new requests; the actor finishes what is queued
        self.finished = False  # the actor has stopped: nothing more is applied
        self.failure: BaseException | None = None
        self.tasks_waiting = 0

    def closed_error(self) -> BudgetClosed:
        if self.failure is not None:
            error = BudgetBroken(f"budget {self.name!r} failed: {self.failure!r}")
            error.__cause__ = self.failure
            return error
        return BudgetClosed(f"budget {self.name!r} is closed")

    def check_caller(self) -> None:
        """Raise at once for a call from another thread, or to a closed budget."""
        if threading.get_ident() != self.loop_thread:
            raise LoopThreadError(
                f"budget {self.name!r} runs on another thread's event loop; "
                "call it there, or use treasurer.sync / Budget.sync_view() from this thread"
            )
        if self.closing:
            raise self.closed_error()

    async def request(self, command: Command, *, wait: bool = False) -> Reply:
        """Send a request and wait for its reply.

        Cancelled before the actor reached it, it has no effect; cancelled
        after, what it was granted is handed back (as anyio's CapacityLimiter
        does), so a cancelled call never leaves anything behind.
        """
        self.check_caller()
        slot = self._new_slot()
        item = (command, slot, WAIT if wait else REQUEST)
        self.tasks_waiting += 1
        try:
            try:
                self._send.send_nowait(item)
            except WouldBlock:
                await self._send.send(item)  # a full mailbox: wait for room
            reply = await slot.wait()
        except BaseException:
            delivered, reply = slot.abandon()
            if delivered:
                self.undo(command, reply)
            elif wait:
                self.wake()  # it may have been the head of the queue
            raise
        finally:
            self.tasks_waiting -= 1
        if isinstance(reply, BaseException):
            raise reply
        return reply  # type: ignore[return-value]

    async def settle(self, command: Command) -> Reply:
        """Apply a settlement and wait until it is applied (read-your-writes).

        It is posted first, so it applies even if this caller is cancelled
        while it waits.
        """
        if threading.get_ident() != self.loop_thread:
            self.check_caller()
        if self.finished:
            raise self.closed_error()
        return await self.settled(self.post_awaitable(command))

    async def settled(self, slot: Slot) -> Reply:
        """Wait until a posted settlement is applied; its reply."""
        try:
            reply = await slot.wait()
        except BaseException:
            slot.abandon()
            raise
        if isinstance(reply, BaseException):
            raise reply
        return reply  # type: ignore[return-value]

    def post_awaitable(self, command: Command) -> Slot:
        """Post a settlement now; its slot answers once it is applied."""
        slot = self._new_slot()
        self.post(command, slot)
        return slot

    def post(self, command: Command, slot: Slot | None = None) -> None:
        """Send a settlement without waiting: never blocks, never refused for a
        full mailbox, so it works in a cancelled scope."""
        if self.finished:
            if slot is not None:
                slot.deliver(self.closed_error())
            return
        item = (command, slot, SETTLE)
        try:
            self._send.send_nowait(item)
        except WouldBlock:
            self._overflow.append(item)

    def wake(self) -> None:
        """Have the actor run a batch soon even if nobody calls (on its loop's thread)."""
        if threading.get_ident() != self.loop_thread:
            raise RuntimeError("wake() is called on the budget's event loop thread")
        if not self.finished:
            try:
                self._send.send_nowait((None, None, WAKE))
            except WouldBlock:
                pass  # the mailbox is full: a batch is coming anyway

    def undo(self, command: Command, reply: object) -> None:
        """Hand back what a caller who gave up was granted."""
        if isinstance(reply, Granted) and isinstance(command, Reserve):
            self.post(Release(command.scope, reply.reservation, reply.token))
        elif isinstance(reply, Charged) and isinstance(command, Record | Consume):
            meta = command.meta if isinstance(command, Record) else None
            consumed = isinstance(command, Consume)
            self.post(
                TakeBack(command.scope, command.amount, reply.at, meta, consumed, reply.resets)
            )
        elif isinstance(reply, ChildOpened):
            self.post(CloseChild(reply.path))
        elif isinstance(reply, Override) and isinstance(command, SetOverride):
            self.post(RemoveOverride(command.scope, reply.id))

    def mailbox_depth(self) -> int:
        return self._send.statistics().current_buffer_used + len(self._overflow)
