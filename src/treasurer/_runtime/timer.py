"""The budget's timer: wakes the actor when time alone changes something."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

import anyio

_MIN_SLEEP: Final = 0.001  # seconds; no busy loop if the clocks disagree


class Timer:
    """Wakes the actor at the next instant time alone changes something (a
    reservation expires, a window resets for a waiting request), even if
    nobody calls.

    It sleeps until its target, then calls ``wake``; the actor's next batch
    reads the clock and applies what is due. After each batch the actor
    :meth:`move` s the target, which wakes the timer only if it came earlier:
    steady traffic wakes the timer once per deadline, not once per call.
    """

    def __init__(self, clock: Callable[[], datetime], wake: Callable[[], None]) -> None:
        self._clock: Final = clock
        self._wake: Final = wake
        self.due: datetime | None = None  # the next instant time alone changes something
        self._target: datetime | None = None
        self._moved = anyio.Event()
        self._stopped = False

    async def run(self) -> None:
        while not self._stopped:
            self._moved = anyio.Event()
            target = self._target = self.due
            if target is None:
                await self._moved.wait()
                continue
            delay = (target - self._clock()).total_seconds()
            if delay > 0:
                # Sleep on the event loop's clock, then look again on the budget's:
                # they may differ slightly, and only the budget's decides.
                with anyio.move_on_after(max(delay, _MIN_SLEEP)):
                    await self._moved.wait()
                continue
            self._target = None  # due: the next instant the actor sets is the target
            self._wake()
            await self._moved.wait()

    def move(self, due: datetime | None) -> None:
        """The actor's latest answer to "when does time alone next change something"."""
        self.due = due
        if due is not None and (self._target is None or due < self._target):
            self._moved.set()

    def stop(self) -> None:
        self._stopped = True
        self._moved.set()
