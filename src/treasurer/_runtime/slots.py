"""One-shot reply slots: where the actor puts the outcome a caller awaits.

The public API is anyio-portable; this is the one place that is not. A slot on
asyncio is a bare Future, on trio a parked task: each costs a fraction of an
``anyio.Event``, and both say whether the waiter gave up (was cancelled)
before the outcome came, which lets the actor skip an abandoned request and
a caller hand back a grant it never saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import sniffio


class Slot(Protocol):
    """What the actor and the caller need from a reply slot."""

    @property
    def abandoned(self) -> bool:
        """The waiter was cancelled before an outcome was delivered."""

    def deliver(self, value: object) -> None:
        """Hand ``value`` to the waiter (ignored if it has gone)."""

    def wait(self) -> Awaitable[object]:
        """Wait for the outcome."""

    def abandon(self) -> tuple[bool, object]:
        """The waiter gives up. Returns ``(True, outcome)`` if one had already
        been delivered, else ``(False, None)``."""


class AsyncioSlot:
    """A Future. Cancelling the waiting task cancels it, which marks it abandoned."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[object]) -> None:
        self._future = future

    @property
    def abandoned(self) -> bool:
        return self._future.cancelled()

    def deliver(self, value: object) -> None:
        if not self._future.done():
            self._future.set_result(value)

    def wait(self) -> Awaitable[object]:
        return self._future

    def abandon(self) -> tuple[bool, object]:
        future = self._future
        if future.cancel() or future.cancelled():
            return False, None
        return True, future.result()


_PENDING: Final = 0
_DELIVERED: Final = 1
_ABANDONED: Final = 2


class TrioSlot:
    """A parked trio task; trio's abort callback marks the slot abandoned."""

    __slots__ = ("_lowlevel", "_state", "_task", "_value", "_wrap")

    def __init__(self, lowlevel: Any, wrap: Callable[[object], Any]) -> None:
        self._lowlevel = lowlevel
        self._wrap = wrap  # outcome.Value, what trio reschedules a task with
        self._state = _PENDING
        self._task: Any = None
        self._value: object = None

    @property
    def abandoned(self) -> bool:
        return self._state == _ABANDONED

    def deliver(self, value: object) -> None:
        if self._state != _PENDING:
            return
        self._value = value
        self._state = _DELIVERED
        if self._task is not None:
            task, self._task = self._task, None
            self._lowlevel.reschedule(task, self._wrap(value))

    async def wait(self) -> object:
        lowlevel = self._lowlevel
        if self._state == _DELIVERED:
            await lowlevel.checkpoint()
            return self._value
        self._task = lowlevel.current_task()

        def abort(_: object) -> Any:
            self._task = None
            self._state = _ABANDONED
            return lowlevel.Abort.SUCCEEDED

        return await lowlevel.wait_task_rescheduled(abort)

    def abandon(self) -> tuple[bool, object]:
        if self._state == _DELIVERED:
            return True, self._value
        self._state = _ABANDONED
        self._task = None
        return False, None


def slot_factory() -> Callable[[], Slot]:
    """A function making slots for the event loop running now."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        create_future = asyncio.get_running_loop().create_future
        return lambda: AsyncioSlot(create_future())
    if library == "trio":
        import outcome
        import trio

        lowlevel, wrap = trio.lowlevel, outcome.Value
        return lambda: TrioSlot(lowlevel, wrap)
    raise RuntimeError(f"treasurer runs on asyncio or trio, not {library!r}")  # pragma: no cover
