"""The usage log in a SQLite file: durable usage records for reports and the CLI.

The budget's actor hands each record to :meth:`SqliteUsageLog.append`, which
only queues it (bounded; past ``buffer`` records waiting, new ones are
dropped and counted). A task of the budget's own writes what is queued, one
transaction per batch, ``sqlite3`` in a worker thread (so it runs on asyncio
and trio). A failed write is counted, its records kept, and retried with
backoff. When the budget closes, what is queued is written (within a grace
period, even if the budget was cancelled); what could not be is counted as
dropped. The file can be the one a :class:`~treasurer.SqliteStore` uses.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

import anyio
import anyio.to_thread

from .._core.axes import AXES
from .._core.events import UsageRecorded
from .._core.values import Usage
from .._errors import InvalidOption, StoreUnavailable
from .._runtime.usage_log import (
    FIELDS,
    UsageLog,
    UsageLogStatistics,
    complete,
    group,
    reader,
)
from .._stores.sqlite_file import connect, sqlite_errors

T = TypeVar("T")
GRACE: Final = 5.0  # seconds to write what is queued when the budget closes
_BACKOFF: Final = (0.05, 5.0)  # first and longest wait before a failed write is retried
_COLUMNS: Final = tuple("usd_nanos" if axis == "usd" else axis for axis in AXES)
_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS treasurer_usage (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    budget TEXT NOT NULL,
    tenant TEXT,
    child TEXT,
    source TEXT NOT NULL,
    reservation INTEGER,
    model TEXT,
    request_id TEXT,
    session_id TEXT,
    {", ".join(f"{column} INTEGER NOT NULL" for column in _COLUMNS)},
    tags TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS treasurer_usage_by_time ON treasurer_usage (budget, at);
"""
_FIELDS: Final = (
    "at",
    "budget",
    "tenant",
    "child",
    "source",
    "reservation",
    "model",
    "request_id",
    "session_id",
    *_COLUMNS,
    "tags",
)
_INSERT: Final = (
    f"INSERT INTO treasurer_usage ({', '.join(_FIELDS)}) VALUES ({', '.join('?' for _ in _FIELDS)})"
)


class SqliteUsageLog(UsageLog):
    """Usage records in the SQLite file at ``path``; any number of budgets (and
    processes) may write to one file. ``buffer`` bounds the records waiting to be
    written; ``timeout`` is how long a write waits for the file's lock."""

    def __init__(self, path: str | Path, *, buffer: int = 10_000, timeout: float = 5.0) -> None:
        if not isinstance(path, str | Path):
            raise InvalidOption(f"path must be a str or Path, not {path!r}")
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise InvalidOption(f"buffer must be an int >= 1, not {buffer!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidOption(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.path: Final = Path(path)
        self.buffer: Final = buffer
        self.timeout: Final = float(timeout)
        self._limiter = anyio.CapacityLimiter(1)
        self._queue: deque[UsageRecorded] = deque()
        # Made when a budget opens with the log (an anyio object needs its loop):
        self._ready: anyio.Event | None = None  # records were queued, or the budget closes
        self._closing: anyio.Event | None = None
        self._writing: anyio.Lock | None = None  # the writer task and a reader's flush
        self._db: sqlite3.Connection | None = None
        self._busy = False  # opened by a budget that has not closed yet
        self._written = self._dropped = self._failures = 0
        self._last_error: str | None = None
        self._lost_until: datetime | None = None  # the time of the newest record dropped

    # -- the budget's side -------------------------------------------------------------

    def append(self, record: UsageRecorded) -> None:
        if len(self._queue) >= self.buffer:
            self._lose([record])
            return
        self._queue.append(record)
        assert self._ready is not None, "open() first"  # the budget appends once open
        self._ready.set()

    async def open(self) -> None:
        """Check the file at once (made if missing), so a bad path fails the open."""
        if self._busy:
            raise InvalidOption(
                "a SqliteUsageLog serves one open budget at a time; give each budget "
                "its own (they can share the file)"
            )
        self._db = await self._thread(
            lambda: connect(self.path, self.timeout, _SCHEMA, "usage log")
        )
        self._busy = True
        self._ready, self._closing, self._writing = anyio.Event(), anyio.Event(), anyio.Lock()

    async def run(self) -> None:
        assert self._ready is not None, "open() first"
        assert self._closing is not None
        try:
            delay = _BACKOFF[0]
            while self._queue or not self._closing.is_set():
                if not self._queue:
                    await self._ready.wait()
                    self._ready = anyio.Event()  # a budget's log: one writer task
                elif await self._write_queued():
                    delay = _BACKOFF[0]
                elif self._closing.is_set():
                    break  # one more try below, then what is left is dropped
                else:
                    with anyio.move_on_after(delay):
                        await self._closing.wait()
                    delay = min(delay * 2, _BACKOFF[1])
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(GRACE):
                await self._write_queued()
            self._lose(list(self._queue))
            self._queue.clear()
            db, self._db = self._db, None
            self._busy = False
            if db is not None:
                with anyio.CancelScope(shield=True):
                    await self._thread(db.close)

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
        records = await self._thread(lambda: read(self.path, budget=budget, since=since))
        return group(records, value_of, tenant, child), complete(self._lost_until, since)

    # -- writing -----------------------------------------------------------------------

    async def _write_queued(self) -> bool:
        """Write every queued record in one transaction; False if it failed."""
        assert self._writing is not None
        async with self._writing:
            return await self._write(list(self._queue))

    async def _write(self, batch: list[UsageRecorded]) -> bool:
        db = self._db
        if not batch or db is None:
            return True

        def write() -> None:
            with db:  # one transaction: all of the batch or none
                db.execute("BEGIN IMMEDIATE")
                db.executemany(_INSERT, [_row(record) for record in batch])

        try:
            await self._thread(write)
        except StoreUnavailable as exc:
            self._failures += 1
            self._last_error = str(exc)
            return False
        for _ in batch:
            self._queue.popleft()
        self._written += len(batch)
        return True

    def _lose(self, records: Sequence[UsageRecorded]) -> None:
        if records:
            self._dropped += len(records)
            newest = max(record.at for record in records)
            if self._lost_until is None or newest > self._lost_until:
                self._lost_until = newest

    async def _thread(self, func: Callable[[], T]) -> T:
        guarded = sqlite_errors(self.path, "usage log", func)
        return await anyio.to_thread.run_sync(guarded, limiter=self._limiter)


def _time(when: datetime) -> str:
    """Times as fixed-width UTC text, so the file's order by text is order by time."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _row(record: UsageRecorded) -> tuple[object, ...]:
    return (
        _time(record.at),
        record.budget,
        record.tenant,
        record.child,
        record.source,
        record.reservation,
        record.model,
        record.request_id,
        record.session_id,
        *record.amount,
        json.dumps(record.tags, sort_keys=True),
    )


def read(
    path: str | Path,
    *,
    budget: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[UsageRecorded]:
    """The usage records in a usage log file, oldest first: of ``budget`` (``None``:
    every budget), at or after ``since`` and before ``until``. Blocking (it reads the
    file); the CLI and reports use it. Raises :class:`StoreUnavailable` for a file
    that cannot be read, :class:`InvalidOption` for one that is not a usage log."""
    path = Path(path)
    if not path.is_file():
        raise StoreUnavailable(f"no usage log at {str(path)!r}")
    clauses, values = [], []
    for clause, value in (("budget = ?", budget), ("at >= ?", since), ("at < ?", until)):
        if value is not None:
            clauses.append(clause)
            values.append(_time(value) if isinstance(value, datetime) else value)
    query = f"SELECT {', '.join(_FIELDS)} FROM treasurer_usage"
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)  # opens lazily
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "treasurer_usage" not in tables:
            raise InvalidOption(f"{str(path)!r} is not a treasurer usage log")
        rows = db.execute(query + " ORDER BY at, id", values).fetchall()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"usage log {str(path)!r}: {exc}") from exc
    finally:
        db.close()
    return [_record(row) for row in rows]


def _record(row: Sequence[object]) -> UsageRecorded:
    at, budget, tenant, child, source, reservation, model, request_id, session_id = row[:9]
    return UsageRecorded(
        budget=budget,  # type: ignore[arg-type]
        at=datetime.fromisoformat(at),  # type: ignore[arg-type]
        tenant=tenant,  # type: ignore[arg-type]
        child=child,  # type: ignore[arg-type]
        amount=tuple(row[9 : 9 + len(AXES)]),  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        reservation=reservation,  # type: ignore[arg-type]
        model=model,  # type: ignore[arg-type]
        request_id=request_id,  # type: ignore[arg-type]
        session_id=session_id,  # type: ignore[arg-type]
        tags=json.loads(row[-1]),  # type: ignore[arg-type]
    )


__all__ = ["FIELDS", "SqliteUsageLog", "read"]
