"""What every usage log that writes to a file or a server shares: a bounded
queue the actor appends to without waiting, a task of the budget's own that
writes what is queued (one batch at a time), retries with backoff, counted
failures and drops, and a grace period to write what is left when the budget
closes. A subclass says how to connect, write a batch and read records."""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import anyio

from .._core.events import UsageRecorded
from .._core.values import Usage
from .._errors import InvalidOption, StoreUnavailable
from .._runtime.usage_log import UsageLog, UsageLogStatistics, complete, group, reader

GRACE: Final = 5.0  # seconds to write what is queued when the budget closes
BACKOFF: Final = (0.05, 5.0)  # first and longest wait before a failed write is retried


def positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidOption(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


class QueuedUsageLog(UsageLog):
    """A usage log written by a task of the budget's own; ``buffer`` bounds the
    records waiting to be written."""

    def __init__(self, *, buffer: int = 10_000) -> None:
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise InvalidOption(f"buffer must be an int >= 1, not {buffer!r}")
        self.buffer: Final = buffer
        # Each record with its number in this log, so a sink can tell a batch it
        # is sent again (after a failure it could not see the end of) from a new one.
        self._queue: deque[tuple[int, UsageRecorded]] = deque()
        self._numbers = itertools.count()
        # Made when a budget opens with the log (an anyio object needs its loop):
        self._ready: anyio.Event | None = None  # records were queued, or the budget closes
        self._closing: anyio.Event | None = None
        self._writing: anyio.Lock | None = None  # the writer task and a reader's flush
        self._busy = False  # opened by a budget that has not closed yet
        self._written = self._dropped = self._failures = 0
        self._last_error: str | None = None
        self._lost_until: datetime | None = None  # the time of the newest record dropped

    # -- what a subclass does ----------------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None:
        """Get ready to write (a sink that cannot be used raises, failing the open)."""

    @abstractmethod
    async def _store(self, batch: Sequence[tuple[int, UsageRecorded]]) -> None:
        """Write every record of ``batch`` (numbered), or none (raise StoreUnavailable)."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """The budget closed and what could be written was."""

    @abstractmethod
    async def _records(self, budget: str, since: datetime | None) -> list[UsageRecorded]:
        """The records of ``budget`` at or after ``since``, oldest first."""

    # -- the budget's side -------------------------------------------------------------

    def append(self, record: UsageRecorded) -> None:
        if len(self._queue) >= self.buffer:
            self._lose([record])
            return
        self._queue.append((next(self._numbers), record))
        assert self._ready is not None, "open() first"  # the budget appends once open
        self._ready.set()

    async def open(self) -> None:
        """Check the sink at once, so a bad path or address fails the open."""
        if self._busy:
            raise InvalidOption(
                f"a {type(self).__name__} serves one open budget at a time; give each "
                "budget its own (they can share the file or stream)"
            )
        await self._connect()
        self._busy = True
        self._ready, self._closing, self._writing = anyio.Event(), anyio.Event(), anyio.Lock()

    async def run(self) -> None:
        assert self._ready is not None, "open() first"
        assert self._closing is not None
        try:
            delay = BACKOFF[0]
            while self._queue or not self._closing.is_set():
                if not self._queue:
                    await self._ready.wait()
                    self._ready = anyio.Event()  # a budget's log: one writer task
                elif await self._write_queued():
                    delay = BACKOFF[0]
                elif self._closing.is_set():
                    break  # one more try below, then what is left is dropped
                else:
                    with anyio.move_on_after(delay):
                        await self._closing.wait()
                    delay = min(delay * 2, BACKOFF[1])
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(GRACE):
                await self._write_queued()
            self._lose([record for _, record in self._queue])
            self._queue.clear()
            self._busy = False
            with anyio.CancelScope(shield=True):
                await self._disconnect()

    def finish(self) -> None:
        assert self._closing is not None, "open() first"
        assert self._ready is not None
        self._closing.set()
        self._ready.set()

    def statistics(self) -> UsageLogStatistics:
        return UsageLogStatistics(
            self._written, len(self._queue), self._dropped, self._failures, self._last_error
        )

    async def groups(
        self,
        key: str,
        *,
        budget: str,
        since: datetime | None,
        tenant: str | None,
        child: str | None,
    ) -> tuple[dict[str | None, Usage], bool]:
        value_of = reader(key)  # checks the key before anything is read
        await self._write_queued()  # read-your-writes: the records taken so far
        records = await self._records(budget, since)
        return group(records, value_of, tenant, child), complete(self._lost_until, since)

    # -- writing -----------------------------------------------------------------------

    async def _write_queued(self) -> bool:
        """Write every queued record in one batch; False if it failed."""
        assert self._writing is not None
        async with self._writing:
            batch = list(self._queue)
            if not batch:
                return True
            try:
                await self._store(batch)
            except StoreUnavailable as exc:
                self._failures += 1
                self._last_error = str(exc)
                return False
            for _ in batch:
                self._queue.popleft()
            self._written += len(batch)
            return True

    def _lose(self, records: Sequence[UsageRecorded]) -> None:
        if not records:
            return
        self._dropped += len(records)
        newest = max(record.at for record in records)
        if self._lost_until is None or newest > self._lost_until:
            self._lost_until = newest
