"""The SQLite store: a budget's state in a file, shared by the processes of one host.

Each batch the actor drains is ONE write transaction (``BEGIN IMMEDIATE``, WAL
journal): read the budget's version; if another process wrote since this store
last read, rebuild the ledger from the stored rows (:mod:`.._core.state`'s
records: one per scope and per open reservation); apply the batch exactly as
the memory store does (:func:`.base.run_batch`); write the budget's counters,
the scopes the batch touched and the reservations it made or ended, with the
next version; commit. A failed batch rolls back and drops the cached ledger,
so it changes nothing. ``sqlite3`` runs in a
worker thread (``anyio.to_thread``), one call at a time, so the store works on
asyncio and trio. A database locked by another writer is waited for up to
``timeout`` seconds (SQLite's busy timeout, no polling here), then the batch
fails with :class:`StoreUnavailable`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import anyio.to_thread

from .._core import state
from .._core.commands import Command, OpenChild, Reserve
from .._core.config import BudgetConfig
from .._core.ledger import Ledger
from .._core.outcomes import ScopeView
from .._core.reads import view
from .._core.scopes import ScopePath
from .._core.values import Snapshot
from .._errors import InvalidOption, StoreUnavailable
from . import rows, sqlite_file
from .base import BatchResult, Clock, Health, run_batch
from .sqlite_file import connect, sqlite_errors

if TYPE_CHECKING:
    from .._handles.settings import BudgetOptions

T = TypeVar("T")


class SqliteStore:
    """Keeps budgets in the SQLite file at ``path``; every process that opens the
    same budget name on the same file shares that budget."""

    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        if not isinstance(path, str | Path):
            raise InvalidOption(f"path must be a str or Path, not {path!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidOption(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.path: Final = Path(path)
        self.timeout: Final = float(timeout)
        self._limiter = anyio.CapacityLimiter(1)
        self._db: sqlite3.Connection | None = None
        self._config: BudgetConfig | None = None
        self._clock: Clock | None = None
        self._ledger: Ledger | None = None
        self._version = -1  # the stored version the cached ledger was read at

    # -- running sqlite3 in a worker thread ------------------------------------------

    async def _run(self, func: Callable[[], T]) -> T:
        guarded = sqlite_errors(self.path, "SQLite store", func)
        return await anyio.to_thread.run_sync(guarded, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, self.timeout, sqlite_file.SCHEMA, "SqliteStore")

    def _read_or_create(
        self, db: sqlite3.Connection, config: BudgetConfig, clock: Clock, reconfigure: bool
    ) -> tuple[Ledger, int]:
        """The stored budget (inside a transaction), created on first open, or put
        under ``config`` if it asks to ``reconfigure``."""
        given = state.dump_config(config)
        config_text = json.dumps(given, sort_keys=True)
        row = db.execute(
            "SELECT config, version FROM treasurer_budgets WHERE name = ?", (config.name,)
        ).fetchone()
        if row is None:
            ledger = Ledger(config, clock())
            db.execute(
                "INSERT INTO treasurer_budgets VALUES (?, ?, ?, 0)",
                (config.name, config_text, rows.meta(ledger)),
            )
            sqlite_file.save_all(db, config.name, ledger)
            return ledger, 0
        stored_text, version = row
        if stored_text == config_text:
            return sqlite_file.load(db, config, clock()), version
        stored = json.loads(stored_text)
        if not reconfigure:
            raise state.other_configuration(config.name, repr(str(self.path)), stored, given)
        record = state.dump_ledger(sqlite_file.load(db, config, clock()))
        ledger = state.reconfigured(config, stored["tenants"], record, clock())
        db.execute(
            "UPDATE treasurer_budgets SET config = ?, state = ?, version = ? WHERE name = ?",
            (config_text, rows.meta(ledger), version + 1, config.name),
        )
        sqlite_file.save_all(db, config.name, ledger)
        return ledger, version + 1

    # -- the Store protocol -----------------------------------------------------------

    async def open(
        self, config: BudgetConfig, clock: Clock, *, reconfigure: bool = False
    ) -> ScopeView:
        if self._db is not None:
            raise InvalidOption("a SqliteStore serves one open budget at a time")

        def open_budget() -> tuple[sqlite3.Connection, Ledger, int]:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    ledger, version = self._read_or_create(db, config, clock, reconfigure)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except BaseException:
                db.close()
                raise
            return db, ledger, version

        db, ledger, self._version = await self._run(open_budget)
        self._db, self._ledger = db, ledger
        self._config, self._clock = config, clock
        return view(ledger.root, clock())

    def _serving(self) -> tuple[sqlite3.Connection, BudgetConfig, Clock]:
        if self._db is None or self._config is None or self._clock is None:
            raise InvalidOption("the store serves no budget: open one first")
        return self._db, self._config, self._clock

    def _current(self, db: sqlite3.Connection, config: BudgetConfig, now: datetime) -> Ledger:
        """The budget's ledger as stored now (inside a transaction)."""
        row = db.execute(
            "SELECT version FROM treasurer_budgets WHERE name = ?", (config.name,)
        ).fetchone()
        if row is None:
            raise StoreUnavailable(f"budget {config.name!r} was removed from {str(self.path)!r}")
        if self._ledger is None or row[0] != self._version:
            self._ledger, self._version = sqlite_file.load(db, config, now), row[0]
        return self._ledger

    async def apply(
        self,
        batch: Sequence[Command],
        waiting: Sequence[Reserve | OpenChild] = (),
        *,
        new_from: int = 0,
        verbose: bool = True,
    ) -> BatchResult:
        db, config, clock = self._serving()

        def transaction() -> BatchResult:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = clock()
                ledger = self._current(db, config, now)
                held_before = set(ledger.reservations.open)
                result = run_batch(ledger, now, batch, waiting, new_from=new_from, verbose=verbose)
                db.execute(
                    "UPDATE treasurer_budgets SET state = ?, version = ? WHERE name = ?",
                    (rows.meta(ledger), self._version + 1, config.name),
                )
                sqlite_file.save(db, config.name, rows.changes(ledger, result.views, held_before))
                db.execute("COMMIT")
            except BaseException:
                self._ledger = None  # what it did in memory was not stored: read it again
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._version += 1
            return result

        return await self._run(transaction)

    async def refresh(self, scope: ScopePath) -> ScopeView | None:
        db, config, clock = self._serving()

        def read() -> ScopeView | None:
            db.execute("BEGIN")
            try:
                ledger = self._current(db, config, clock())
            finally:
                db.execute("COMMIT")
            found = ledger.tree.scopes.get(scope)
            return None if found is None else view(found, ledger.now)

        return await self._run(read)

    async def health(self) -> Health:
        """Healthy when the file answers and its write lock can be had within ``timeout``."""
        start = time.perf_counter()
        if self._db is None:
            return Health(False, "sqlite", timedelta(0), "not open")
        db = self._db

        def can_write() -> None:  # the file answers, and its write lock can be had
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")

        try:
            await self._run(can_write)
        except StoreUnavailable as exc:
            return Health(False, "sqlite", timedelta(seconds=time.perf_counter() - start), str(exc))
        return Health(True, "sqlite", timedelta(seconds=time.perf_counter() - start))

    # -- reading without a budget open (scripts, the command line) ---------------------

    def names(self) -> list[str]:
        """The names of the budgets the file holds (blocking)."""
        rows = self._read(
            lambda db: db.execute("SELECT name FROM treasurer_budgets ORDER BY name").fetchall()
        )
        return [row[0] for row in rows]

    def options(self, name: str) -> BudgetOptions:
        """The keywords of ``open_budget`` that open budget ``name`` of this store
        as it is stored (its caps, windows, tenants, thresholds, TTL, and
        ``store``), read without writing, blocking: ``open_budget(**store.options("api"))``."""
        from .._handles.settings import options_of  # settings builds on the stores

        def load(db: sqlite3.Connection) -> BudgetConfig:
            return state.load_config(json.loads(self._config_text(db, name)))

        options = options_of(self._read(load))
        options["store"] = self
        return options

    def _config_text(self, db: sqlite3.Connection, name: str) -> str:
        row = db.execute("SELECT config FROM treasurer_budgets WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise InvalidOption(f"{str(self.path)!r} holds no budget named {name!r}")
        return str(row[0])

    def read(self, name: str, *, clock: Clock | None = None) -> dict[str | None, Snapshot]:
        """The stored figures of budget ``name`` as of now (``clock()``), read-only and
        blocking: the budget's own under ``None``, then each tenant's by name. What
        time alone changed (windows that rolled, reservations past their deadline)
        shows as it will be applied; nothing is written."""
        now = (clock or _utc_now)()

        def load(db: sqlite3.Connection) -> Ledger:
            config = state.load_config(json.loads(self._config_text(db, name)))
            return sqlite_file.load(db, config, now)

        return rows.figures(self._read(load), now)

    def _read(self, func: Callable[[sqlite3.Connection], T]) -> T:
        """``func(db)`` on a read-only connection to the file (blocking)."""
        if not self.path.is_file():
            raise StoreUnavailable(f"no SQLite store at {str(self.path)!r}")

        def select() -> T:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
                if "treasurer_scopes" not in tables:
                    raise InvalidOption(
                        f"{str(self.path)!r} holds no treasurer budgets of schema version "
                        f"{sqlite_file.SCHEMA_VERSION} (a SqliteStore that opens it "
                        "migrates an older one)"
                    )
                return func(db)
            finally:
                db.close()

        return sqlite_errors(self.path, "SQLite store", select)()

    async def close(self) -> None:
        db, self._db = self._db, None
        self._config = self._clock = self._ledger = None
        self._version = -1
        if db is not None:
            with anyio.CancelScope(shield=True):
                await self._run(db.close)


def _utc_now() -> datetime:
    return datetime.now(UTC)
