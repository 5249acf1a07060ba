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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

import anyio
import anyio.to_thread

from .._core.axes import AXES
from .._core.events import UsageRecorded
from .._errors import InvalidOption, StoreUnavailable
from .._runtime.usage_log import FIELDS
from .._stores.sqlite_file import connect, sqlite_errors
from .queued_log import QueuedUsageLog, positive

T = TypeVar("T")
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


class SqliteUsageLog(QueuedUsageLog):
    """Usage records in the SQLite file at ``path``; any number of budgets (and
    processes) may write to one file. ``buffer`` bounds the records waiting to be
    written; ``timeout`` is how long a write waits for the file's lock."""

    def __init__(self, path: str | Path, *, buffer: int = 10_000, timeout: float = 5.0) -> None:
        if not isinstance(path, str | Path):
            raise InvalidOption(f"path must be a str or Path, not {path!r}")
        super().__init__(buffer=buffer)
        self.path: Final = Path(path)
        self.timeout: Final = positive(timeout, "timeout")
        self._limiter = anyio.CapacityLimiter(1)
        self._db: sqlite3.Connection | None = None

    async def _connect(self) -> None:
        self._db = await self._thread(
            lambda: connect(self.path, self.timeout, _SCHEMA, "usage log")
        )

    async def _store(self, batch: Sequence[tuple[int, UsageRecorded]]) -> None:
        db = self._db
        assert db is not None, "open() first"

        def write() -> None:
            with db:  # one transaction: all of the batch or none
                db.execute("BEGIN IMMEDIATE")
                db.executemany(_INSERT, [_row(record) for _, record in batch])

        await self._thread(write)

    async def _disconnect(self) -> None:
        db, self._db = self._db, None
        assert db is not None, "open() first"
        await self._thread(db.close)

    async def _records(self, budget: str, since: datetime | None) -> list[UsageRecorded]:
        return await self._thread(lambda: read(self.path, budget=budget, since=since))

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
