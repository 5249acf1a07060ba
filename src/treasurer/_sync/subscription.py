"""A budget's events for threads: a blocking iterator over a subscription."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from .._core.events import Event
from .._errors import BudgetClosed
from .._runtime.subscription import Subscription
from .calls import Caller


class SyncSubscription:
    """A budget's events for synchronous code: iterate it (blocking), or take
    :meth:`pending` events without waiting. See :class:`treasurer.Subscription`."""

    def __init__(self, caller: Caller, subscription: Subscription) -> None:
        self._caller = caller
        self._subscription = subscription
        self._left: deque[Event] | None = None  # buffered when the budget closed

    @property
    def missed(self) -> int:
        """Events dropped because this subscription's buffer was full."""
        return self._subscription.missed

    def pending(self) -> list[Event]:
        """The events buffered now: after a call returns, those it caused are here."""
        left = self._after_close()
        if left is None:
            try:
                events: list[Event] = self._caller.call(
                    self._subscription.pending, what="pending()"
                )
                return events
            except BudgetClosed:
                left = self._after_close(closed=True)
        assert left is not None
        events = list(left)
        left.clear()
        return events

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        left = self._after_close()
        if left is None:
            try:
                event: Event = self._caller.call(self._subscription.__anext__, what="next(events)")
                return event
            except StopAsyncIteration:
                raise StopIteration from None
            except BudgetClosed:
                left = self._after_close(closed=True)
        assert left is not None
        if not left:
            raise StopIteration
        return left.popleft()

    def _after_close(self, *, closed: bool = False) -> deque[Event] | None:
        """What was buffered when the budget closed, once it has: read here, since its
        event loop no longer runs (``None`` while the budget is open)."""
        if self._left is None and closed:
            self._left = deque(self._subscription.pending())
        return self._left
