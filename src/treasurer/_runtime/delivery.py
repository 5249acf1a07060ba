"""Delivery: the budget's events to the log and to the user's ``on_event``, off
the actor's path.

The actor hands each event over without waiting (:meth:`Delivery.offer`); a
task of the budget's own runs the callback and writes the log. The queue is
bounded: when the callback falls that far behind, new events are dropped and
counted, never waited for. Closing gives the callback a grace period to
finish what is queued, then cancels it, so user code can never keep a budget
from closing.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from .._core.events import (
    Event,
    ReservationCommitted,
    ReservationCreated,
    ReservationReleased,
    UsageRecorded,
)
from .log import Log

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

DEFAULT_BUFFER: Final = 10_000
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
_DEBUG: Final = (UsageRecorded, ReservationCreated, ReservationCommitted, ReservationReleased)
_LEVELS: Final = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


def level_of(event: Event) -> int:
    """The log level of an event: debug for routine ones, else the event's own."""
    return logging.DEBUG if isinstance(event, _DEBUG) else _LEVELS[event.level]


def _snake(name: str) -> str:
    return "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()


class Delivery:
    """Runs ``on_event`` and logs events in a task of its own, from a bounded queue."""

    def __init__(
        self,
        log: Log,
        on_event: Callable[[Event], Any] | None,
        *,
        buffer: int = DEFAULT_BUFFER,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.log: Final = log
        self.on_event: Final = on_event
        self._is_async: Final = on_event is not None and (
            inspect.iscoroutinefunction(on_event)
            or inspect.iscoroutinefunction(getattr(on_event, "__call__", None))  # noqa: B004
        )
        send, receive = anyio.create_memory_object_stream[Event](buffer)
        self._send: MemoryObjectSendStream[Event] = send
        self._receive: MemoryObjectReceiveStream[Event] = receive
        self._close_timeout: Final = close_timeout
        self._scope = anyio.CancelScope()
        self.dropped = 0  # events the callback never got: the queue was full
        self.failed = 0  # calls of on_event that raised

    def wants(self, level: int) -> bool:
        """Whether an event at ``level`` would go anywhere."""
        return self.on_event is not None or self.log.enabled(level)

    def offer(self, event: Event) -> None:
        """Queue ``event`` without waiting; dropped and counted if the queue is full."""
        if not self.wants(level_of(event)):
            return
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.dropped += 1

    async def run(self) -> None:
        """Deliver until :meth:`close`, then what is queued within the grace period."""
        try:
            with self._scope:
                await self._drain()
        except anyio.get_cancelled_exc_class():
            # The budget is cancelled from outside: what is queued, and what the
            # actor's shutdown still applies, reaches the callback within the same
            # grace period a normal close gives.
            with anyio.CancelScope(shield=True) as grace:
                grace.deadline = anyio.current_time() + self._close_timeout
                await self._drain()
            raise
        finally:
            self.dropped += self._receive.statistics().current_buffer_used
            self._receive.close()

    async def _drain(self) -> None:
        async for event in self._receive:
            self._log(event)
            if self.on_event is not None:
                await self._call(event)

    def _log(self, event: Event) -> None:
        level = level_of(event)
        if self.log.enabled(level):
            fields = attrs.asdict(event, recurse=False)
            del fields["budget"], fields["level"]
            if isinstance(event, UsageRecorded):
                fields["amount"] = event.usage  # dollars, not the ledger's nano-dollars
            self.log.log(level, _snake(type(event).__name__), **fields)

    async def _call(self, event: Event) -> None:
        assert self.on_event is not None
        try:
            if self._is_async:
                await self.on_event(event)
            else:
                self.on_event(event)
        except Exception:
            self.failed += 1
            self.log.exception("on_event callback failed", event_type=type(event).__name__)

    def close(self) -> None:
        """No more events; what is queued is delivered within the grace period."""
        self._send.close()
        self._scope.deadline = anyio.current_time() + self._close_timeout
