"""The Redis store's own task: it holds the connection the budget's batches go
through, and listens to the budget's channel for other processes' writes; and
the server's clock, as this host reckons it."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import attrs

from .._core.events import Event
from .._errors import StoreUnavailable
from . import shared_events
from .redis_client import redis_errors

_RESUBSCRIBE: Final = 1.0  # seconds before a lost subscription is made again
RECKON_AGAIN = 60.0  # seconds between measures of the server's clock


class StoreTask:
    """``RedisStore.run``: what ``open_budget`` runs for the budget's life."""

    if TYPE_CHECKING:

        @property
        def _where(self) -> str: ...

        _channel: str
        _writer: str
        _reckoning: Reckoning
        _reckon_due: float
        _clock: Any
        _turn: anyio.Event | None
        _turn_of: str
        _redis: Any
        _script: Any

        def _client(self) -> AbstractAsyncContextManager[Any]: ...

        def _serving(self) -> Any: ...

        async def _talk_through(self, redis: Any) -> None: ...

    async def run(
        self,
        wake: Callable[[], None],
        *,
        deliver: Callable[[list[Event]], None] | None = None,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The store's own task, from ``open`` until cancelled after the last batch:
        it holds the connection batches go through, calls ``wake`` each time
        another process writes the budget, and ``deliver`` with the events that
        process's batch made for the whole budget (a lost subscription is made
        again)."""
        self._serving()
        async with redis_errors(self._where), self._client() as redis:
            await self._talk_through(redis)
            task_status.started()
            try:
                while True:
                    try:
                        await self._listen(wake, deliver)
                    except BaseException as exc:
                        if anyio.current_effective_deadline() == -math.inf:
                            # Cancelled: the budget has closed. (coredis's pub/sub
                            # raises ClosedResourceError as it is torn down.)
                            return
                        if not isinstance(exc, StoreUnavailable):
                            raise  # pragma: no cover - a bug, not a lost connection
                        await anyio.sleep(_RESUBSCRIBE)
            finally:
                self._redis = self._script = None

    async def _listen(
        self, wake: Callable[[], None], deliver: Callable[[list[Event]], None] | None
    ) -> None:
        async with redis_errors(self._where):
            import coredis.retry

            pubsub = self._redis.pubsub(  # a lost connection ends it: run() makes it again
                channels=[self._channel],
                ignore_subscribe_messages=True,
                retry_policy=coredis.retry.NoRetryPolicy(),
            )
            async with pubsub:
                wake()  # what was announced while the subscription was down is not heard
                async for message in pubsub:
                    text = str(message["data"])
                    if text.startswith("turn "):  # whose turn it is to write
                        if self._turn is not None and self._turn_of in ("", text[5:]):
                            self._turn.set()
                        continue
                    writer, events = shared_events.read_message(text)
                    if writer != self._writer:
                        wake()
                        if events and deliver is not None:
                            deliver(events)

    async def _reckon(self) -> None:
        """Measures the server's clock (the quickest of three ``TIME`` calls, through
        a script: coredis's ``time()`` drops the microseconds) against this host's
        monotonic clock, which no step of the host's wall clock moves."""
        self._reckon_due = time.monotonic() + RECKON_AGAIN
        server_time = self._redis.register_script("return redis.call('TIME')")
        best: tuple[float, Reckoning] | None = None
        for _ in range(3):
            start = time.monotonic()
            seconds, microseconds = await server_time()
            took = time.monotonic() - start
            server = datetime.fromtimestamp(int(seconds), UTC) + timedelta(
                microseconds=int(microseconds)
            )
            if best is None or took < best[0]:
                best = (took, Reckoning(server, start + took / 2))
        assert best is not None
        self._reckoning = best[1]

    async def _reckon_again_if_due(self) -> None:
        """Measures the server's clock again once it was last measured RECKON_AGAIN
        seconds ago (a host's monotonic clock may run apart from the server's by a
        few seconds a day); if the server does not answer, the batch will tell."""
        if self._clock != self.server_clock or time.monotonic() < self._reckon_due:
            return  # (a clock given to open_budget is not the server's)
        with contextlib.suppress(StoreUnavailable):
            async with redis_errors(self._where):
                await self._reckon()

    def server_clock(self) -> datetime:
        """The server's time now, as this host reckons it."""
        return self._reckoning.now()


@attrs.frozen
class Reckoning:
    """The server's time at a moment of this host's monotonic clock."""

    server: datetime
    at: float  # time.monotonic() when the server's clock read ``server``

    def now(self) -> datetime:
        return self.server + timedelta(seconds=time.monotonic() - self.at)
