"""A ledger's state as plain JSON-able data, and back: what a durable store writes.

A store keeps four kinds of record: one per scope (the budget, each tenant
and child budget that holds state), one per open reservation, and the
ledger's counters and run-time tenant caps (``meta``). Overrides live in their
scope's record. Times are ISO 8601 strings; amounts are lists of ints in axis
order; a time zone is its IANA name.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from .._errors import InvalidOption
from .books import Held, Overrides, Reservations
from .commands import Meta
from .config import BudgetConfig, Limits
from .events import Override
from .ledger import Ledger
from .scope import Scope
from .scopes import ScopePath, tenant_of
from .values import Usage
from .windows import Window, WindowState

Record = dict[str, Any]


def _time(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


_ZONEINFO_UTC = "zoneinfo:UTC"


def _zone(tz: tzinfo) -> str:
    if tz is UTC or tz == UTC:
        return "UTC"
    if isinstance(tz, ZoneInfo):
        # ZoneInfo("UTC") is not datetime.UTC: kept apart, so a window comes back
        # with the zone it was made with (and keeps its usage when caps change).
        return _ZONEINFO_UTC if tz.key == "UTC" else tz.key
    raise InvalidOption(f"a durable store needs time zones by IANA name (a ZoneInfo), not {tz!r}")


def _load_zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC
    return ZoneInfo("UTC" if name == _ZONEINFO_UTC else name)


def dump_window(window: Window) -> Record:
    return {
        "kind": window.kind,
        "caps": list(window.caps),
        "tz": _zone(window.tz),
        "duration": None if window.duration is None else window.duration.total_seconds(),
        "name": window.name,
    }


def load_window(record: Record) -> Window:
    duration = record["duration"]
    tz = _load_zone(record["tz"])
    return Window(
        record["kind"],
        tuple(record["caps"]),
        tz,
        None if duration is None else timedelta(seconds=duration),
        record["name"],
    )


def dump_limits(limits: Limits) -> Record:
    return {
        "caps": list(limits.caps),
        "per_request": list(limits.per_request),
        "windows": [dump_window(window) for window in limits.windows],
    }


def load_limits(record: Record) -> Limits:
    return Limits(
        tuple(record["caps"]),
        tuple(record["per_request"]),
        tuple(load_window(window) for window in record["windows"]),
    )


def dump_config(config: BudgetConfig) -> Record:
    """The configuration, for a store to keep with the budget and compare at open."""
    ttl = config.reservation_ttl
    return {
        "name": config.name,
        "limits": dump_limits(config.limits),
        "thresholds": list(config.thresholds),
        "reservation_ttl": None if ttl is None else ttl.total_seconds(),
        "tenant_defaults": dump_limits(config.tenant_defaults),
        "tenants": {name: dump_limits(limits) for name, limits in sorted(config.tenants.items())},
    }


def load_config(record: Record) -> BudgetConfig:
    """The configuration :func:`dump_config` wrote."""
    ttl = record["reservation_ttl"]
    return BudgetConfig(
        record["name"],
        load_limits(record["limits"]),
        tuple(record["thresholds"]),
        None if ttl is None else timedelta(seconds=ttl),
        load_limits(record["tenant_defaults"]),
        {name: load_limits(limits) for name, limits in record["tenants"].items()},
    )


def _dump_window_state(state: WindowState) -> Record:
    return {
        "name": state.window.name,
        "used": list(state.used),
        "by_model": {model: list(amount) for model, amount in state.by_model.items()},
        "entries": [[_time(at), list(amount), model] for at, amount, model in state.entries],
        "fired": list(state.fired),
        "start": _time(state.start),
        "end": _time(state.end),
        "since": _time(state.since),
    }


def _load_window_state(state: WindowState, record: Record) -> None:
    state.used = tuple(record["used"])
    state.by_model = {model: tuple(amount) for model, amount in record["by_model"].items()}
    state.entries = deque(
        (datetime.fromisoformat(at), tuple(amount), model)
        for at, amount, model in record["entries"]
    )
    state.fired = list(record["fired"])
    state.start = _parse_time(record["start"])  # type: ignore[assignment]
    state.end = _parse_time(record["end"])  # type: ignore[assignment]
    state.since = _parse_time(record["since"])


def _dump_override(override: Override, increase: tuple[int, ...]) -> Record:
    return {
        "id": override.id,
        "window": override.window,
        "increase": list(increase),
        "created_at": _time(override.created_at),
        "expires_at": _time(override.expires_at),
        "reason": override.reason,
        "created_by": override.created_by,
    }


def dump_scope(scope: Scope) -> Record:
    return {
        "path": list(scope.path),
        "names": list(scope.names),
        "limits": dump_limits(
            Limits(scope.caps, scope.per_request, tuple(w.window for w in scope.windows))
        ),
        "carve": None if scope.carve is None else list(scope.carve),
        "used": list(scope.used),
        "reserved": list(scope.reserved),
        "contributed": list(scope.contributed),
        "calls": scope.calls,
        "open": scope.open,
        "children": scope.children,
        "closed": scope.closed,
        "by_model": {model: list(amount) for model, amount in scope.by_model.items()},
        "fired": list(scope.fired),
        "consumed": {str(estimate): count for estimate, count in scope.consumed.items()},
        "since": _time(scope.since),
        "windows": [_dump_window_state(window) for window in scope.windows],
        "overrides": [_dump_override(o, increase) for o, increase in scope.overrides.values()],
    }


def _load_scope(record: Record, config: BudgetConfig, parent: Scope | None, now: datetime) -> Scope:
    budget, tenant, child = record["names"]
    carve = record["carve"]
    scope = Scope(
        tuple(record["path"]),
        (budget, tenant, child),
        load_limits(record["limits"]),
        config.thresholds,
        now,
        parent,
        carve=None if carve is None else tuple(carve),
    )
    load_counters(scope, record)
    scope.children = record["children"]
    scope.closed = record["closed"]
    scope.fired = list(record["fired"])
    scope.since = _parse_time(record["since"])
    states = {state.window.name: state for state in scope.windows}
    for window in record["windows"]:
        _load_window_state(states[window["name"]], window)
    for item in record["overrides"]:
        override = Override(
            id=item["id"],
            window=item["window"],
            increase=Usage.of(tuple(item["increase"])),
            created_at=_parse_time(item["created_at"]),  # type: ignore[arg-type]
            expires_at=_parse_time(item["expires_at"]),  # type: ignore[arg-type]
            reason=item["reason"],
            created_by=item["created_by"],
            tenant=tenant,
            budget=budget,
            child=child,
        )
        scope.overrides[override.id] = (override, tuple(item["increase"]))
    for index in range(-1, len(scope.windows)):
        scope.recompute_limits(index)
    scope.stale_at = scope.next_reset()
    return scope


def load_counters(scope: Scope, record: Record) -> None:
    """Set what a scope counts (usage, holds, calls, by model, in each window) from
    its record; the rest of the scope stays as it is."""
    scope.used = tuple(record["used"])
    scope.reserved = tuple(record["reserved"])
    scope.contributed = tuple(record["contributed"])
    scope.calls = record["calls"]
    scope.open = record["open"]
    scope.by_model = {model: tuple(amount) for model, amount in record["by_model"].items()}
    scope.consumed = {int(estimate): count for estimate, count in record["consumed"].items()}
    windows = {window.window.name: window for window in scope.windows}
    for saved in record["windows"]:
        window = windows[saved["name"]]
        window.used = tuple(saved["used"])
        window.by_model = {model: tuple(amount) for model, amount in saved["by_model"].items()}


def dump_held(held: Held) -> Record:
    """A reservation's record; the token comes first (the Redis script checks the
    text begins ``{"token": <token>,``)."""
    meta = held.meta
    return {
        "token": held.token,
        "scope": list(held.scope),
        "amount": list(held.amount),
        "deadline": _time(held.deadline),
        "meta": None
        if meta is None
        else {
            "model": meta.model,
            "request_id": meta.request_id,
            "session_id": meta.session_id,
            "tags": dict(meta.tags),
        },
    }


def load_held(record: Record) -> Held:
    meta = record["meta"]
    return Held(
        tuple(record["scope"]),
        tuple(record["amount"]),
        _parse_time(record["deadline"]),
        None
        if meta is None
        else Meta(
            meta["model"],
            meta["request_id"],
            meta["session_id"],
            tuple(sorted(meta["tags"].items())),
        ),
        record.get("token", 0),  # (0: stored before reservations had tokens)
    )


def dump_meta(ledger: Ledger) -> Record:
    """The ledger's counters and the tenant caps set at run time. The resets and the
    tenant caps come last: the Redis store compares that part of the text alone."""
    return {
        "next_reservation": ledger.reservations.next_id,
        "next_override": ledger.overrides.next_id,
        "next_child": ledger.tree.next_child,
        "resets": ledger.resets,
        "tenant_limits": {
            name: dump_limits(limits) for name, limits in sorted(ledger.tree.tenant_limits.items())
        },
    }


def restore(
    config: BudgetConfig,
    now: datetime,
    meta: Record,
    scopes: list[Record],
    reservations: dict[int, Record],
) -> Ledger:
    """A ledger with the state a store kept: every scope, reservation and counter."""
    ledger = Ledger(config, now)
    tree = ledger.tree
    tree.next_child = meta["next_child"]
    ledger.resets = meta.get("resets", 0)
    tree.tenant_limits = {name: load_limits(r) for name, r in meta["tenant_limits"].items()}
    ledger.reservations = Reservations(meta["next_reservation"])
    ledger.overrides = Overrides(meta["next_override"])
    made: dict[ScopePath, Scope] = {}
    for record in sorted(scopes, key=lambda r: len(r["path"])):
        path = tuple(record["path"])
        parent = made.get(path[:-1]) if path else None
        scope = _load_scope(record, config, parent, now)
        made[path] = scope
        for override, _ in scope.overrides.values():
            ledger.overrides.add(override, path)
    if () in made:
        tree.replace_root(made[()])
    tree.scopes.update(made)
    for reservation, record in reservations.items():
        ledger.reservations.restore(reservation, load_held(record))
    return ledger


def dump_ledger(ledger: Ledger, *, scopes: bool = True) -> Record:
    """Everything a store keeps of a ledger, as one JSON-able record (with
    ``scopes=False``: its time and counters only, for a store that keeps scopes
    and reservations as records of their own)."""
    record: Record = {"now": _time(ledger.now), "meta": dump_meta(ledger)}
    if scopes:
        record["scopes"] = [dump_scope(scope) for scope in ledger.tree.scopes.values()]
        record["reservations"] = {
            str(key): dump_held(held) for key, held in ledger.reservations.open.items()
        }
    return record


def load_ledger(config: BudgetConfig, record: Record, now: datetime) -> Ledger:
    """The ledger :func:`dump_ledger` wrote; its time moves on from where it was written."""
    reservations = {int(key): value for key, value in record["reservations"].items()}
    ledger = restore(config, now, record["meta"], record["scopes"], reservations)
    written = _parse_time(record["now"])
    if written is not None:
        ledger.now = written
    return ledger


def reconfigured(
    config: BudgetConfig, old_tenants: Collection[str], record: Record, now: datetime
) -> Ledger:
    """The ledger ``record`` holds, put under ``config`` (``reconfigure=True``).

    The budget takes ``config``'s caps, windows and thresholds (a window kept
    under the same name and kind keeps its usage; overrides of a window that
    is gone end); tenants named by the old configuration (``old_tenants``)
    but not by ``config`` go back to the defaults, caps set at run time for
    other tenants stay. Usage, reservations, overrides and child budgets are kept.
    """
    ledger = load_ledger(config, record, now)
    tree = ledger.tree
    kept = {name: caps for name, caps in tree.tenant_limits.items() if name not in old_tenants}
    tree.tenant_limits = kept | dict(config.tenants)
    tree.root.relimit(config.limits, now)
    for path, scope in tree.scopes.items():
        tenant = tenant_of(path)
        if tenant is not None and len(path) == 1:
            scope.relimit(tree.tenant_limits.get(tenant, config.tenant_defaults), now)
    return ledger


def other_configuration(name: str, where: str, stored: Record, given: Record) -> InvalidOption:
    """The error for opening a stored budget with another configuration."""
    differ = [key for key in given if stored.get(key) != given[key]]
    return InvalidOption(
        f"budget {name!r} exists in {where} with another configuration (its "
        f"{', '.join(differ)} differ); open it with the stored configuration, or "
        "pass reconfigure=True to open_budget to replace it (usage is kept)"
    )
