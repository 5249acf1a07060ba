"""A budget kept as rows: a durable store's view of a ledger.

A durable store keeps a budget as its configuration, one record of the ledger's
time and counters (``meta``), a record per scope and one per open reservation
(:mod:`.._core.state`'s records, as JSON text). A batch rewrites the meta, the
scopes it touched and the reservations it made or ended: :func:`changes`. The
SQLite store keeps them as table rows, the Redis store as hash fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

import attrs

from .._core import state
from .._core.config import BudgetConfig
from .._core.ledger import Ledger
from .._core.outcomes import ScopeView
from .._core.reads import view
from .._core.scope import Scope
from .._core.scopes import ScopePath, tenant_of
from .._core.values import Snapshot


def meta(ledger: Ledger) -> str:
    """The ledger's time and counters, as JSON text."""
    return json.dumps(state.dump_ledger(ledger, scopes=False))


def scope_key(path: ScopePath) -> str:
    return json.dumps(list(path))


def ledger_from_rows(
    config: BudgetConfig,
    meta_text: str,
    scopes: Iterable[str],
    held: Iterable[tuple[int | str, str]],
    now: datetime,
) -> Ledger:
    """The ledger a store's rows hold: ``meta_text``, each scope's record, and
    ``(id, record)`` per open reservation."""
    record = json.loads(meta_text)
    record["scopes"] = [json.loads(text) for text in scopes]
    record["reservations"] = {str(rid): json.loads(text) for rid, text in held}
    return state.load_ledger(config, record, now)


@attrs.frozen
class Changes:
    """What a batch changed, as rows: scopes to write and to delete (by key),
    reservations to write and to delete (by id)."""

    scopes: dict[str, str]
    scopes_gone: list[str]
    held: dict[int, str]
    held_gone: list[int]


def changes(ledger: Ledger, touched: Iterable[ScopePath], held_before: set[int]) -> Changes:
    """The rows to write after a batch that touched ``touched`` (a path no longer in
    the ledger was forgotten) and began with ``held_before`` open."""
    scopes = ledger.tree.scopes
    written = {
        scope_key(path): json.dumps(state.dump_scope(scopes[path]))
        for path in touched
        if path in scopes
    }
    gone = [scope_key(path) for path in touched if path not in scopes]
    held_now = ledger.reservations.open
    return Changes(
        written,
        gone,
        {rid: json.dumps(state.dump_held(held_now[rid])) for rid in held_now.keys() - held_before},
        sorted(held_before - held_now.keys()),
    )


def every_row(ledger: Ledger) -> Changes:
    """Every row of the ledger (written in place of what was stored)."""
    return changes(ledger, list(ledger.tree.scopes), set())


def figures(ledger: Ledger, now: datetime) -> dict[str | None, Snapshot]:
    """A stored budget's figures as of ``now``, what time alone changed (windows
    rolled over, reservations past their deadline) shown as the next batch will
    apply it: the budget's own under ``None``, then each tenant's by name."""
    ledger.advance(max(now, ledger.now))
    scopes = sorted(
        (path, scope)
        for path, scope in ledger.tree.scopes.items()
        if len(path) == 1 and tenant_of(path) is not None
    )
    found: dict[str | None, Snapshot] = {None: view_now(ledger, ledger.root).snapshot()}
    found.update({tenant_of(path): view_now(ledger, scope).snapshot() for path, scope in scopes})
    return found


def view_now(ledger: Ledger, scope: Scope) -> ScopeView:
    """The view of ``scope`` in a ledger read only to be shown, its windows (and
    those above it) in the periods that hold the ledger's time: a scope no batch
    touched since a period ended still counts that period until one does."""
    ledger.tree.catch_up(scope, ledger.now, [])
    return view(scope, ledger.now)
