"""Subscriptions: a budget's events as an async iterator, never slowing the budget."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio

from .._core.events import Event

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


class Subscription:
    """Events of one budget, as an async iterator: ``async for event in events``.

    Its buffer is bounded. When it is full, new events are dropped, never
    waited for, so a slow subscriber cannot slow the budget down, and
    :attr:`missed` counts every dropped event. Iteration ends when the
    subscription or the budget closes. A tenant's or a child budget's
    subscription gets only that tenant's or child's events.
    """

    def __init__(self, buffer: int, tenant: str | None = None, child: str | None = None) -> None:
        send, receive = anyio.create_memory_object_stream[Event](buffer)
        self._send: MemoryObjectSendStream[Event] = send
        self._receive: MemoryObjectReceiveStream[Event] = receive
        self.tenant: Final = tenant
        self.child: Final = child
        self.missed = 0

    def offer(self, event: Event) -> None:
        """Hand over ``event`` if it is this subscription's and there is room."""
        if (self.tenant is not None and event.tenant != self.tenant) or (
            self.child is not None and event.child != self.child
        ):
            return
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.missed += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def pending(self) -> list[Event]:
        """The events buffered now, without waiting (on the budget's event loop).

        Every event of a call is buffered before the call returns, so after
        ``await budget.record(...)`` this holds what that record caused.
        """
        events = []
        while True:
            try:
                events.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return events

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def end(self) -> None:
        """No more events will come; what is buffered can still be read."""
        self._send.close()

    def close(self) -> None:
        self._send.close()
        self._receive.close()
