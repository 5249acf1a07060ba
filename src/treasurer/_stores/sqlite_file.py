"""The SQLite file under the store and the usage log: its schema (versioned, with
the migration from the first layout), connections, and a budget's rows.

treasurer_budgets holds a row per budget (its configuration; its time and
counters as ``state``; a version every batch increments); treasurer_scopes a row
per scope, treasurer_reservations one per open reservation, each a JSON record
of :mod:`.._core.state`. The usage log adds its own table to the same file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final, TypeVar

from .._core.config import BudgetConfig
from .._core.ledger import Ledger
from .._errors import InvalidOption, StoreUnavailable
from . import rows

SCHEMA_VERSION: Final = 2
_VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS treasurer_schema (version INTEGER NOT NULL);
"""
SCHEMA: Final = """
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


# -- the rows of a budget ---------------------------------------------------------------
# treasurer_budgets.state holds the ledger's time and counters ("now", "meta"); each
# scope is a row of treasurer_scopes, each open reservation one of
# treasurer_reservations (state.py's records, as JSON). A batch writes the counters,
# the scopes it touched and the reservations it made or ended.


def load(db: sqlite3.Connection, config: BudgetConfig, now: datetime) -> Ledger:
    """The budget ``config`` names, from its rows (inside a transaction)."""
    name = config.name
    (meta,) = db.execute("SELECT state FROM treasurer_budgets WHERE name = ?", (name,)).fetchone()
    scopes = db.execute("SELECT record FROM treasurer_scopes WHERE budget = ?", (name,))
    held = db.execute("SELECT id, record FROM treasurer_reservations WHERE budget = ?", (name,))
    return rows.ledger_from_rows(config, meta, (row[0] for row in scopes), held, now)


def save_all(db: sqlite3.Connection, name: str, ledger: Ledger) -> None:
    """Every row of the budget, replacing what was stored."""
    db.execute("DELETE FROM treasurer_scopes WHERE budget = ?", (name,))
    db.execute("DELETE FROM treasurer_reservations WHERE budget = ?", (name,))
    save(db, name, rows.every_row(ledger))


def save(db: sqlite3.Connection, name: str, changed: rows.Changes) -> None:
    """The rows a batch changed (:func:`.rows.changes`)."""
    db.executemany(
        "DELETE FROM treasurer_scopes WHERE budget = ? AND path = ?",
        [(name, key) for key in changed.scopes_gone],
    )
    db.executemany(
        "INSERT OR REPLACE INTO treasurer_scopes VALUES (?, ?, ?)",
        [(name, key, record) for key, record in changed.scopes.items()],
    )
    db.executemany(
        "DELETE FROM treasurer_reservations WHERE budget = ? AND id = ?",
        [(name, rid) for rid in changed.held_gone],
    )
    db.executemany(
        "INSERT INTO treasurer_reservations VALUES (?, ?, ?)",
        [(name, rid, record) for rid, record in changed.held.items()],
    )


def _migrate_from_1(db: sqlite3.Connection) -> None:
    """Schema 1 kept each budget as one JSON document; 2 keeps a row per scope and
    per reservation. Run once, in one transaction, by the first store that opens
    the file."""
    db.executescript(SCHEMA)  # the new tables (schema 1's table keeps its columns)
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
