"""Events a budget emits: threshold alerts, refusals, reservations, rollovers.

Frozen values, made by the pure ledger and delivered by the actor after each
batch, so a slow listener never holds up the budget.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Literal

import anyio
import attrs

from ._types import Usage

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

Level = Literal["info", "warning", "critical"]
DEFAULT_THRESHOLDS: Final = (50, 75, 90, 100)


@attrs.frozen(kw_only=True)
class Event:
    """Base class of every event: which budget (and tenant), when (the budget's
    clock), how serious. ``tenant`` is ``None`` for the budget's shared scope."""

    budget: str
    at: datetime
    level: Level = "info"
    tenant: str | None = None

    @property
    def message(self) -> str:
        """One plain sentence about what happened."""
        return f"{type(self).__name__} in {self.scope}"

    @property
    def scope(self) -> str:
        """Which budget, and which tenant if any, in words."""
        if self.tenant is None:
            return f"budget {self.budget!r}"
        return f"budget {self.budget!r}, tenant {self.tenant!r}"


@attrs.frozen(kw_only=True)
class ThresholdCrossed(Event):
    """Usage on one axis of one window passed a percentage of its cap.

    Fires once per threshold per window period (the lifetime counts as one
    period, re-armed by ``reset()``); a window's thresholds re-arm when it
    rolls over. Level: critical at 100 % and above, warning from 75 %, else info.
    """

    cap: str
    window: str
    threshold: int
    used: int | Decimal
    limit: int | Decimal
    resets_at: datetime | None = None

    @property
    def message(self) -> str:
        where = "" if self.window == "lifetime" else f" per {self.window}"
        return (
            f"{self.scope}: {self.cap} usage{where} reached {self.threshold}% "
            f"of its cap ({self.used} of {self.limit})"
        )


@attrs.frozen(kw_only=True)
class RequestRefused(Event):
    """A request did not fit; ``error`` is the BudgetExceeded its caller got."""

    cap: str
    window: str
    error: str

    @property
    def message(self) -> str:
        return self.error


@attrs.frozen(kw_only=True)
class ReservationCreated(Event):
    reservation: int
    amount: Usage


@attrs.frozen(kw_only=True)
class ReservationCommitted(Event):
    reservation: int
    actual: Usage


@attrs.frozen(kw_only=True)
class ReservationReleased(Event):
    reservation: int


@attrs.frozen(kw_only=True)
class ReservationExpired(Event):
    """A reservation reached its deadline unsettled and was released."""

    reservation: int
    amount: Usage
    deadline: datetime

    @property
    def message(self) -> str:
        return (
            f"{self.scope}: reservation {self.reservation} expired unsettled "
            f"at {self.deadline.isoformat()} and was released"
        )


@attrs.frozen(kw_only=True)
class Override:
    """A temporary increase of the caps of one scope ("lifetime" or a window's
    name) of the budget, or of one tenant."""

    id: int
    window: str
    increase: Usage
    created_at: datetime
    expires_at: datetime
    reason: str = ""
    created_by: str = ""
    tenant: str | None = None


@attrs.frozen(kw_only=True)
class OverrideSet(Event):
    override: Override


@attrs.frozen(kw_only=True)
class OverrideExpired(Event):
    override: Override


@attrs.frozen(kw_only=True)
class OverrideRemoved(Event):
    override: Override


@attrs.frozen(kw_only=True)
class WindowRolledOver(Event):
    """A time window dropped usage: a new calendar period began, or charges aged out."""

    window: str
    resets_at: datetime | None


def threshold_level(threshold: int) -> Level:
    if threshold >= 100:
        return "critical"
    return "warning" if threshold >= 75 else "info"


class Subscription:
    """Events of one budget, as an async iterator: ``async for event in events``.

    Its buffer is bounded. When it is full, new events are dropped, never
    waited for, so a slow subscriber cannot slow the budget down, and
    :attr:`missed` counts every dropped event. Iteration ends when the
    subscription or the budget closes. A tenant's subscription gets only
    that tenant's events.
    """

    def __init__(self, buffer: int, tenant: str | None = None) -> None:
        send, receive = anyio.create_memory_object_stream[Event](buffer)
        self._send: MemoryObjectSendStream[Event] = send
        self._receive: MemoryObjectReceiveStream[Event] = receive
        self.tenant: Final = tenant  # only this tenant's events (``None``: all)
        self.missed = 0

    def offer(self, event: Event) -> None:
        if self.tenant is not None and event.tenant != self.tenant:
            return
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.missed += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

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
