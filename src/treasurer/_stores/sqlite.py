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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

import anyio
import anyio.to_thread

from .._core import state
from .._core.commands import Command, OpenChild, Reserve
from .._core.config import BudgetConfig
from .._core.ledger import Ledger
from .._core.outcomes import ScopeView
from .._core.reads import view
from .._core.scopes import ScopePath, tenant_of
from .._core.values import Snapshot
from .._errors import InvalidOption, StoreUnavailable
from .base import BatchResult, Clock, Health, run_batch

SCHEMA_VERSION: Final = 2
_VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS treasurer_schema (version INTEGER NOT NULL);
"""
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS treasurer_budgets (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS treasurer_scopes (
    budget TEXT NOT NULL,
    path TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (budget, path)
);
CREATE TABLE IF NOT EXISTS treasurer_reservations (
    budget TEXT NOT NULL,
    id INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (budget, id)
);
"""
T = TypeVar("T")


def connect(path: Path, timeout: float, schema: str, owner: str) -> sqlite3.Connection:
    """A connection to a treasurer SQLite file (made if missing), WAL journal, with
    ``schema``'s tables made; a file of another program or another schema version
    is refused with :class:`InvalidOption` and left as it is. The budget store and
    the usage log can share one file."""
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        _prepare(db, path, schema, owner)
    except BaseException:
        db.close()
        raise
    return db


def _prepare(db: sqlite3.Connection, path: Path, schema: str, owner: str) -> None:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    if tables and "treasurer_schema" not in tables:
        raise InvalidOption(
            f"{str(path)!r} is a SQLite database of another program; "
            f"give the {owner} a file of its own"
        )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_VERSION_TABLE + schema)
    row = db.execute("SELECT version FROM treasurer_schema").fetchone()
    if row is None:
        db.execute("INSERT INTO treasurer_schema VALUES (?)", (SCHEMA_VERSION,))
    elif row[0] == 1:
        _migrate_from_1(db)
    elif row[0] != SCHEMA_VERSION:
        raise InvalidOption(
            f"{str(path)!r} holds treasurer schema version {row[0]}; this "
            f"treasurer reads version {SCHEMA_VERSION}: open it with a treasurer "
            "of that version, or start a new file"
        )


def sqlite_errors(path: Path, what: str, func: Callable[[], T]) -> Callable[[], T]:
    """``func`` with SQLite's errors raised as :class:`StoreUnavailable`."""

    def guarded() -> T:
        try:
            return func()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{what} {str(path)!r}: {exc}") from exc

    return guarded


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
        return connect(self.path, self.timeout, _SCHEMA, "SqliteStore")

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
                (config.name, config_text, _meta(ledger)),
            )
            _save_all(db, config.name, ledger)
            return ledger, 0
        stored_text, version = row
        if stored_text == config_text:
            return _load(db, config, clock()), version
        stored = json.loads(stored_text)
        if not reconfigure:
            raise state.other_configuration(config.name, repr(str(self.path)), stored, given)
        record = state.dump_ledger(_load(db, config, clock()))
        ledger = state.reconfigured(config, stored["tenants"], record, clock())
        db.execute(
            "UPDATE treasurer_budgets SET config = ?, state = ?, version = ? WHERE name = ?",
            (config_text, _meta(ledger), version + 1, config.name),
        )
        _save_all(db, config.name, ledger)
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
            self._ledger, self._version = _load(db, config, now), row[0]
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
                    (_meta(ledger), self._version + 1, config.name),
                )
                _save_changes(db, config.name, ledger, result.views, held_before)
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

    def read(self, name: str, *, clock: Clock | None = None) -> dict[str | None, Snapshot]:
        """The stored figures of budget ``name`` as of now (``clock()``), read-only and
        blocking: the budget's own under ``None``, then each tenant's by name. What
        time alone changed (windows that rolled, reservations past their deadline)
        shows as it will be applied; nothing is written."""
        now = (clock or _utc_now)()

        def load(db: sqlite3.Connection) -> Ledger:
            row = db.execute(
                "SELECT config FROM treasurer_budgets WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise InvalidOption(f"{str(self.path)!r} holds no budget named {name!r}")
            return _load(db, state.load_config(json.loads(row[0])), now)

        ledger = self._read(load)
        ledger.advance(now)
        scopes = sorted(
            (path, scope)
            for path, scope in ledger.tree.scopes.items()
            if len(path) == 1 and tenant_of(path) is not None
        )
        figures: dict[str | None, Snapshot] = {None: view(ledger.root, now).snapshot()}
        figures.update({tenant_of(path): view(scope, now).snapshot() for path, scope in scopes})
        return figures

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
                        f"{SCHEMA_VERSION} (a SqliteStore that opens it migrates an older one)"
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


# -- the rows of a budget ---------------------------------------------------------------
# treasurer_budgets.state holds the ledger's time and counters ("now", "meta"); each
# scope is a row of treasurer_scopes, each open reservation one of
# treasurer_reservations (state.py's records, as JSON). A batch writes the counters,
# the scopes it touched and the reservations it made or ended.


def _meta(ledger: Ledger) -> str:
    record = state.dump_ledger(ledger, scopes=False)
    return json.dumps(record)


def _load(db: sqlite3.Connection, config: BudgetConfig, now: datetime) -> Ledger:
    """The budget ``config`` names, from its rows (inside a transaction)."""
    name = config.name
    (meta,) = db.execute("SELECT state FROM treasurer_budgets WHERE name = ?", (name,)).fetchone()
    record = json.loads(meta)
    scopes = db.execute("SELECT record FROM treasurer_scopes WHERE budget = ?", (name,))
    held = db.execute("SELECT id, record FROM treasurer_reservations WHERE budget = ?", (name,))
    record["scopes"] = [json.loads(row[0]) for row in scopes]
    record["reservations"] = {str(row[0]): json.loads(row[1]) for row in held}
    return state.load_ledger(config, record, now)


def _save_all(db: sqlite3.Connection, name: str, ledger: Ledger) -> None:
    """Every row of the budget, replacing what was stored."""
    db.execute("DELETE FROM treasurer_scopes WHERE budget = ?", (name,))
    db.execute("DELETE FROM treasurer_reservations WHERE budget = ?", (name,))
    _save_changes(db, name, ledger, dict.fromkeys(ledger.tree.scopes), set())


def _save_changes(
    db: sqlite3.Connection,
    name: str,
    ledger: Ledger,
    touched: Mapping[ScopePath, object],
    held_before: set[int],
) -> None:
    """The scopes a batch touched (``None`` views: forgotten) and the reservations it
    made or ended."""
    scopes = ledger.tree.scopes
    rows = [(name, json.dumps(list(path)), path) for path in touched]
    db.executemany(
        "DELETE FROM treasurer_scopes WHERE budget = ? AND path = ?",
        [(name, key) for name, key, path in rows if path not in scopes],
    )
    db.executemany(
        "INSERT OR REPLACE INTO treasurer_scopes VALUES (?, ?, ?)",
        [
            (name, key, json.dumps(state.dump_scope(scopes[path])))
            for name, key, path in rows
            if path in scopes
        ],
    )
    held_now = ledger.reservations.open
    db.executemany(
        "DELETE FROM treasurer_reservations WHERE budget = ? AND id = ?",
        [(name, rid) for rid in held_before - held_now.keys()],
    )
    db.executemany(
        "INSERT INTO treasurer_reservations VALUES (?, ?, ?)",
        [
            (name, rid, json.dumps(state.dump_held(held_now[rid])))
            for rid in held_now.keys() - held_before
        ],
    )


def _migrate_from_1(db: sqlite3.Connection) -> None:
    """Schema 1 kept each budget as one JSON document; 2 keeps a row per scope and
    per reservation. Run once, in one transaction, by the first store that opens
    the file."""
    db.executescript(_SCHEMA)  # the new tables (schema 1's table keeps its columns)
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("SELECT version FROM treasurer_schema").fetchone()
        if version == 1:  # not migrated by another process meanwhile
            budgets = db.execute("SELECT name, state FROM treasurer_budgets").fetchall()
            for name, text in budgets:
                record = json.loads(text)
                db.executemany(
                    "INSERT INTO treasurer_scopes VALUES (?, ?, ?)",
                    [(name, json.dumps(r["path"]), json.dumps(r)) for r in record["scopes"]],
                )
                db.executemany(
                    "INSERT INTO treasurer_reservations VALUES (?, ?, ?)",
                    [(name, int(k), json.dumps(r)) for k, r in record["reservations"].items()],
                )
                meta = json.dumps({"now": record["now"], "meta": record["meta"]})
                db.execute(
                    "UPDATE treasurer_budgets SET state = ?, version = version + 1 WHERE name = ?",
                    (meta, name),
                )
            db.execute("UPDATE treasurer_schema SET version = ?", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except (ValueError, KeyError, TypeError) as exc:  # records that are not schema 1's
        db.execute("ROLLBACK")
        raise InvalidOption(
            f"this file's schema 1 records cannot be moved to schema {SCHEMA_VERSION} "
            f"({type(exc).__name__}: {exc}); the file is left as it was"
        ) from exc
    except BaseException:
        db.execute("ROLLBACK")
        raise
