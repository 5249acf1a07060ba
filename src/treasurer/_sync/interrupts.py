"""Holding off Ctrl-C while a reservation's two halves disagree.

A SIGINT in the main thread raises KeyboardInterrupt between any two bytecodes.
Landing inside a sync reservation's ``__enter__`` after the budget granted it,
or inside ``__exit__`` before its settlement was handed to the budget's loop,
it would strand the reservation until its deadline. So those stretches run
with a handler that only notes the interrupt, which is delivered (to the
handler the application had) as soon as the stretch ends; the blocking waits
inside them stay interruptible, as a user pressing Ctrl-C expects.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any


class DeferredInterrupts:
    """``with DeferredInterrupts() as held:``; ``with held.allowed():`` for a blocking wait."""

    __slots__ = ("_active", "_previous", "pending")

    def __init__(self) -> None:
        self.pending = False
        self._active = False
        self._previous: Any = None

    def __enter__(self) -> DeferredInterrupts:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._hold)
            except ValueError:  # not the main interpreter: nothing to hold off
                return self
            self._active = True
        return self

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True

    @contextmanager
    def allowed(self) -> Iterator[None]:
        """Interrupts land as usual in here (and one held so far lands now)."""
        if not self._active:
            yield
            return
        signal.signal(signal.SIGINT, self._previous)
        try:
            self._deliver()
            yield
        finally:
            signal.signal(signal.SIGINT, self._hold)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._active:
            self._active = False
            signal.signal(signal.SIGINT, self._previous)
            self._deliver()

    def _deliver(self) -> None:
        if not self.pending:
            return
        self.pending = False
        previous = self._previous
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous != signal.SIG_IGN:  # the default, or a handler set outside Python
            raise KeyboardInterrupt
