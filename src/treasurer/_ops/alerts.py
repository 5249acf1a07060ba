"""Alert channels: threshold crossings and forecast warnings sent off the
budget's path (the webhook and e-mail channels are in :mod:`.alert_channels`).

The actor hands each :class:`ThresholdCrossed` and
:class:`ExhaustionForecast` to the budget's alert
dispatcher, which only queues it for each channel (bounded; a full queue
drops and counts). Each channel sends from a task of its own: retries with
backoff, at most one send per ``min_interval``, failures counted and kept in
:meth:`Channel.statistics`. A dead channel never blocks or breaks the budget;
when the budget closes, channels get :data:`GRACE` seconds to send what is
queued, and what is left is counted as dropped.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import Final

import anyio
import anyio.to_thread
import attrs

from .._core.events import Event, ExhaustionForecast, ThresholdCrossed
from .._errors import InvalidOption

Alert = ThresholdCrossed | ExhaustionForecast
GRACE: Final = 5.0  # seconds channels get to send what is queued when the budget closes


@attrs.frozen
class ChannelStatistics:
    """What a channel did: alerts ``sent``, ``failed`` (given up after the retries),
    ``dropped`` (its queue was full, or the budget closed first), ``retries`` made,
    and the last error's message."""

    sent: int
    failed: int
    dropped: int
    retries: int
    last_error: str | None


class PermanentFailure(Exception):
    """A send that retrying cannot fix (the receiver refused the request itself)."""


class Channel(ABC):
    """Where alerts go. ``retries`` more tries after a failed send, waiting
    ``backoff`` seconds, doubling each time; at most one send per ``min_interval``
    seconds (alerts wait in a queue of ``buffer``)."""

    def __init__(
        self,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        min_interval: float = 0.0,
        buffer: int = 100,
    ) -> None:
        count(retries, "retries", 0)
        count(buffer, "buffer", 1)
        seconds(backoff, "backoff", allow_zero=True)
        seconds(min_interval, "min_interval", allow_zero=True)
        self.retries: Final = retries
        self.backoff: Final = float(backoff)
        self.min_interval: Final = float(min_interval)
        self.buffer: Final = buffer
        self._queue: deque[Alert] = deque()
        self._sending: Alert | None = None
        self._ready: anyio.Event | None = None
        self._closing = False
        self._busy = False
        self._sent = self._failed = self._dropped = self._retries = 0
        self._last_error: str | None = None
        self._last_sent: float | None = None

    @abstractmethod
    async def send(self, alert: Alert) -> None:
        """Deliver one alert; raise to fail (:class:`PermanentFailure`: no retry)."""

    async def connect(self) -> None:  # noqa: B027 - most channels need nothing
        """Called once before the first send of a budget's life."""

    async def disconnect(self) -> None:  # noqa: B027
        """Called once after the last."""

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            self._sent, self._failed, self._dropped, self._retries, self._last_error
        )

    # -- run by the budget's dispatcher ------------------------------------------------

    def _start(self) -> None:
        if self._busy:
            raise InvalidOption(
                f"{self!r} serves one open budget at a time; give each budget its own"
            )
        self._busy, self._closing, self._ready = True, False, anyio.Event()

    def _offer(self, alert: Alert) -> None:
        if len(self._queue) >= self.buffer:
            self._dropped += 1
            return
        self._queue.append(alert)
        assert self._ready is not None, "_start() first"
        self._ready.set()

    def _finish(self) -> None:
        self._closing = True
        assert self._ready is not None, "_start() first"
        self._ready.set()

    async def _run(self) -> None:
        try:
            await self.connect()
            while self._queue or not self._closing:
                if not self._queue:
                    assert self._ready is not None
                    await self._ready.wait()
                    self._ready = anyio.Event()
                    continue
                await self._pace()
                self._sending = self._queue.popleft()  # buffer counts those waiting only
                await self._deliver(self._sending)
                self._sending = None
        finally:
            self._dropped += len(self._queue) + (self._sending is not None)
            self._sending = None
            self._queue.clear()
            self._busy = False
            with anyio.CancelScope(shield=True):
                await self.disconnect()

    async def _pace(self) -> None:
        if self._last_sent is not None and self.min_interval:
            wait = self._last_sent + self.min_interval - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)

    async def _deliver(self, alert: Alert) -> None:
        for attempt in range(self.retries + 1):
            try:
                await self.send(alert)
            except Exception as exc:  # a channel's failure never reaches the budget
                self._last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, PermanentFailure) or attempt == self.retries:
                    self._failed += 1
                    return
                self._retries += 1
                await anyio.sleep(self.backoff * 2**attempt)
            else:
                self._sent += 1
                self._last_sent = time.monotonic()
                return


class AlertDispatcher:
    """A budget's channels: the actor offers each event; channels send in tasks."""

    def __init__(self, channels: Sequence[Channel]) -> None:
        self.channels: Final = tuple(channels)
        self._closing: anyio.Event | None = None

    def start(self) -> None:
        for channel in self.channels:
            channel._start()
        self._closing = anyio.Event()

    def offer(self, event: Event) -> None:
        if isinstance(event, Alert):
            for channel in self.channels:
                channel._offer(event)

    def finish(self) -> None:
        assert self._closing is not None, "start() first"
        self._closing.set()

    async def run(self) -> None:
        assert self._closing is not None, "start() first"
        async with anyio.create_task_group() as tg:
            for channel in self.channels:
                tg.start_soon(channel._run)
            await self._closing.wait()
            for channel in self.channels:
                channel._finish()
            tg.cancel_scope.deadline = anyio.current_time() + GRACE


def channels(value: object) -> tuple[Channel, ...]:
    """``open_budget``'s ``alerts``, checked."""
    if value is None:
        return ()
    if isinstance(value, Channel):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(c, Channel) for c in value):
        raise InvalidOption(
            f"alerts must be a list of alert channels (treasurer.alerts.Webhook, Email), "
            f"not {value!r}"
        )
    if len({id(c) for c in value}) != len(value):
        raise InvalidOption("alerts lists a channel twice")
    return tuple(value)


def count(value: object, name: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidOption(f"{name} must be an int >= {least}, not {value!r}")


def seconds(value: object, name: str, *, allow_zero: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise InvalidOption(
            f"{name} must be a {'' if allow_zero else 'positive '}number of seconds, not {value!r}"
        )
