"""One-shot reply slots: where the actor puts the answer a caller awaits.

The public API is anyio-portable; this is the one place that is not. A slot on
asyncio is a bare Future, on trio a parked task: each costs a fraction of an
``anyio.Event`` (see PERF-NOTES.md), and both report whether the waiter gave
up (was cancelled) before the answer came, which is what lets the actor skip
an abandoned request and lets a caller hand back a grant it never saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, cast

import sniffio

if TYPE_CHECKING:
    import trio


class Slot(Protocol):
    """What the actor and the caller need from a reply slot."""

    @property
    def abandoned(self) -> bool:
        """The waiter was cancelled before an answer was delivered."""

    def deliver(self, value: object) -> None:
        """Hand ``value`` to the waiter (ignored if it has gone)."""

    def wait(self) -> Awaitable[object]:
        """Wait for the answer."""

    def abandon(self) -> tuple[bool, object]:
        """The waiter gives up, so later answers are dropped.

        Returns ``(True, answer)`` if an answer had already been delivered,
        else ``(False, None)``.
        """


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

    __slots__ = ("_state", "_task", "_value")

    def __init__(self) -> None:
        self._state = _PENDING
        self._task: trio.lowlevel.Task | None = None
        self._value: object = None

    @property
    def abandoned(self) -> bool:
        return self._state == _ABANDONED

    def deliver(self, value: object) -> None:
        if self._state != _PENDING:
            return
        self._value = value
        self._state = _DELIVERED
        task = self._task
        if task is not None:
            self._task = None
            _trio.lowlevel.reschedule(task, _trio.Value(value))

    async def wait(self) -> object:
        lowlevel = _trio.lowlevel
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


class _Trio:
    """trio's modules, imported once trio is seen running (never before: the
    library must import without trio). An ``import`` in every call showed in
    the profile."""

    lowlevel: ClassVar[Any] = None
    Value: ClassVar[Any] = None

    @classmethod
    def bind(cls) -> Any:
        if cls.lowlevel is None:
            import outcome
            import trio

            cls.lowlevel = trio.lowlevel
            cls.Value = outcome.Value
        return cls.lowlevel


_trio: Final = _Trio


class Answered:
    """A slot answered before anyone waits: for a message applied at once.

    Awaiting it returns the answer without suspending, on either event loop.
    """

    __slots__ = ("value",)

    abandoned: Final = False

    def __init__(self) -> None:
        self.value: object = None

    def deliver(self, value: object) -> None:
        self.value = value

    def wait(self) -> Answered:
        return self

    def __await__(self) -> Generator[Any, None, object]:
        yield from ()  # a generator that never suspends
        return self.value

    def abandon(self) -> tuple[bool, object]:
        return True, self.value


def checkpoint_factory() -> Callable[[], Awaitable[None]]:
    """The event loop's own checkpoint (a cancellation point and a chance for
    other tasks to run), without anyio's per-call dispatch."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        sleep = asyncio.sleep
        return lambda: sleep(0)
    if library == "trio":
        return cast(Callable[[], Awaitable[None]], _trio.bind().checkpoint)
    raise RuntimeError(f"treasurer runs on asyncio or trio, not {library!r}")  # pragma: no cover


def slot_factory() -> Callable[[], Slot]:
    """A function making slots for the event loop running now."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        create_future = asyncio.get_running_loop().create_future
        return lambda: AsyncioSlot(create_future())
    if library == "trio":
        _trio.bind()
        return TrioSlot
    raise RuntimeError(f"treasurer runs on asyncio or trio, not {library!r}")  # pragma: no cover
