"""Helpers for testing code that uses treasurer: a clock you move by hand.

``ManualClock`` replaces the system clock (``open_budget(clock=clock)``), so
windows, expiry and overrides are tested without sleeping: move it with
:meth:`ManualClock.advance` or :meth:`ManualClock.set`, and every budget
opened with it applies what the new time changes (expiries, rollovers) at
once, as if its timer had fired.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from ._errors import InvalidOption

__all__ = ("ManualClock",)


class ManualClock:
    """A clock that moves only when told: ``ManualClock(datetime(2026, 1, 1, tzinfo=UTC))``.

    Call it to read the time. Move it from the thread running the budget's
    event loop (a budget opened with it is woken to apply the new time); moved
    from another thread, a budget sees the new time at its next call.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC) if start is None else start
        self.now = _aware(start)
        self.wakers: Final[set[Callable[[], None]]] = set()

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (backwards too: a clock stepped back)."""
        self.now = _aware(when)
        for wake in list(self.wakers):
            try:
                wake()
            except RuntimeError:
                pass  # called off the budget's thread: it sees the time at its next call

    def advance(self, delta: timedelta | None = None, **parts: float) -> None:
        """Move forward by ``delta`` or by ``timedelta(**parts)``: ``advance(minutes=15)``."""
        self.set(self.now + (delta if delta is not None else timedelta(**parts)))

    def __repr__(self) -> str:
        return f"<ManualClock {self.now.isoformat()}>"


def _aware(when: object) -> datetime:
    if not isinstance(when, datetime) or when.utcoffset() is None:
        raise InvalidOption(f"a ManualClock needs an aware datetime, not {when!r}")
    return when
