"""A Redis budget's rows: each scope's record without its counters (its *shape*,
JSON text in the scopes hash) and its counters as integer fields of the counts
hash, so a batch of another process can add to them (``HINCRBY``, exact
integers) without rewriting the record.

A count's field is ``<scope key>\\t<counter>[\\t<axis>[\\t<model or estimate>]]``:
JSON text never holds a raw tab, so the scope key ends at the first one. A
counter that is zero has no field, except a model's usage, whose fields name
the model. A record stored before counts existed keeps its counters in the
record and has no count fields: loading adds the counts to what the record
holds, so both load alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Set
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from .._core import state
from .._core.config import BudgetConfig
from .._core.ledger import Ledger
from .._core.scope import Scope
from .._core.scopes import ScopePath
from .rows import scope_key

Record = dict[str, Any]
VECTORS = ("used", "reserved", "contributed")
SCALARS = ("calls", "open")


def counters(key: str, record: Record) -> dict[str, int]:
    """The count fields of a scope's record."""
    found: dict[str, int] = {}

    def vector(name: str, values: list[int]) -> None:
        for axis, value in enumerate(values):
            if value:
                found[f"{key}\t{name}\t{axis}"] = value

    def models(name: str, by_model: dict[str, list[int]]) -> None:
        for model, values in by_model.items():
            for axis, value in enumerate(values):
                found[f"{key}\t{name}\t{axis}\t{model}"] = value

    for name in VECTORS:
        vector(name, record[name])
    for name in SCALARS:
        if record[name]:
            found[f"{key}\t{name}"] = record[name]
    models("by_model", record["by_model"])
    for estimate, count in record["consumed"].items():
        if count:
            found[f"{key}\tconsumed\t{estimate}"] = count
    for index, window in enumerate(record["windows"]):
        vector(f"w{index}.used", window["used"])
        models(f"w{index}.by_model", window["by_model"])
    return found


def shape(record: Record) -> str:
    """The record with its counters taken out, as the scopes hash keeps it."""
    zero = [0] * len(record["used"])
    bare = dict(record, by_model={}, consumed={}, calls=0, open=0)
    bare.update(dict.fromkeys(VECTORS, zero))
    bare["windows"] = [dict(w, used=zero, by_model={}) for w in record["windows"]]
    return json.dumps(bare)


def rolled(stored: str, text: str) -> list[int]:
    """The calendar windows a scope stored as ``stored`` began a new period of to be
    shaped as ``text`` (``[]``: it changed in some other way, or not at all)."""
    before, after = json.loads(stored), json.loads(text)
    old, new = before.pop("windows"), after.pop("windows")
    if before != after or len(old) != len(new):
        return []
    windows = []
    for index, (was, now) in enumerate(zip(old, new, strict=True)):
        if was == now:
            continue
        fresh = dict(was, start=now["start"], end=now["end"], fired=[0] * len(was["fired"]))
        if was["entries"] or now != fresh or _at(now["start"]) < _at(was["end"]):
            return []
        windows.append(index)
    return windows


def _at(text: str | None) -> datetime:
    return datetime.max.replace(tzinfo=UTC) if text is None else datetime.fromisoformat(text)


def in_windows(field: str, windows: Iterable[int]) -> bool:
    """Whether a count field is one of those of the scope's ``windows``."""
    name = field.split("\t", 2)[1]
    return name.startswith("w") and int(name[1 : name.index(".")]) in windows


CAPS_PART = '"resets": '  # where the part of a meta record caps_part() gives begins


def caps_part(meta_text: str) -> str:
    """The part of a meta record a merge that makes a tenant or reports totals
    depends on: the count of resets and the tenant caps set at run time, which
    :func:`.._core.state.dump_meta` puts last (the script compares this tail)."""
    return meta_text[meta_text.index(CAPS_PART) :]


def put(record: Record, field: str, value: int) -> None:
    """Add the count ``field`` holds to a record (whose counter is zero in a shape)."""
    _, name, *rest = field.split("\t", 3)
    target = record
    if name.startswith("w") and "." in name:
        index, name = name[1:].split(".", 1)
        target = record["windows"][int(index)]
    if name in SCALARS:
        target[name] += value
    elif name == "consumed":
        if value:
            target["consumed"][rest[0]] = target["consumed"].get(rest[0], 0) + value
    elif name.endswith("by_model"):
        axis, model = int(rest[0]), rest[1]
        amounts = target["by_model"].setdefault(model, [0] * len(record["used"]))
        amounts[axis] += value
    else:
        target[name][int(rest[0])] += value


def grouped(fields: Iterable[tuple[str, Any]]) -> dict[str, dict[str, int]]:
    """Count fields and their values (an ``HGETALL`` of the counts hash), by scope key."""
    counts: dict[str, dict[str, int]] = {}
    for field, value in fields:
        counts.setdefault(field.split("\t", 1)[0], {})[field] = int(value)
    return counts


@attrs.define
class Known:
    """What this process knows the stored rows hold: each scope's shape text, and
    its counts (which the copy's counters equal, scope by scope), and the meta
    record's text (the tenant caps set at run time among it). The meta is ``None``
    unless every scope of the copy is here: then one that is not was made by the
    batch at hand."""

    shapes: dict[str, str] = attrs.Factory(dict)
    counts: dict[str, dict[str, int]] = attrs.Factory(dict)
    meta: str | None = None

    @classmethod
    def of(cls, scopes: list[str], counts: list[str], meta: str) -> Known:
        """From the flat ``HGETALL`` answers of the scopes and counts hashes."""
        shapes = dict(zip(scopes[::2], scopes[1::2], strict=True))
        return cls(shapes, grouped(zip(counts[::2], counts[1::2], strict=True)), meta)

    def ledger(
        self,
        config: BudgetConfig,
        meta_text: str,
        held: Iterable[tuple[str, str]],
        now: datetime,
        next_id: int,
    ) -> Ledger:
        """The ledger the rows hold (reservation ids go on from ``next_id`` at least)."""
        record = json.loads(meta_text)
        meta = record["meta"]
        meta["next_reservation"] = max(meta["next_reservation"], next_id)
        scopes = []
        for key, text in self.shapes.items():
            scope = json.loads(text)
            for field, value in self.counts.get(key, {}).items():
                put(scope, field, value)
            scopes.append(scope)
        record["scopes"] = scopes
        record["reservations"] = {str(rid): json.loads(text) for rid, text in held}
        return state.load_ledger(config, record, now)

    def forget(self, key: str) -> list[str]:
        """Drop a scope that is gone; its count fields."""
        self.shapes.pop(key, None)
        return list(self.counts.pop(key, {}))


def patch(scope: Scope, counts: dict[str, int]) -> None:
    """Set the counters of a scope of the copy to ``counts`` (its count fields)."""
    record = json.loads(shape(state.dump_scope(scope)))
    for field, value in counts.items():
        put(record, field, value)
    state.load_counters(scope, record)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def deadline_ms(when: datetime) -> int:
    """A reservation's deadline as the script orders them: ms since the epoch,
    rounded up, so one the script finds due (at or before :func:`now_ms`) is."""
    return -((_EPOCH - when) // _MS)


def now_ms(when: datetime) -> int:
    """A batch's time in ms since the epoch, rounded down."""
    return (when - _EPOCH) // _MS


@attrs.frozen
class Write:
    """The rows a batch applied on an exact copy changes (a compare-and-set), as
    the script's groups, and what the stored rows then hold."""

    args: list[str]
    shapes: dict[str, str]
    counts: dict[str, dict[str, int]]
    gone: list[str]
    empty: bool  # no row changes

    def done(self, known: Known, meta: str) -> None:
        """The write was stored, with the meta record ``meta``: ``known`` is what the
        rows hold now."""
        for key in self.gone:
            known.forget(key)
        known.shapes.update(self.shapes)
        known.counts.update(self.counts)
        if known.meta is not None:
            known.meta = meta


def write(
    known: Known, ledger: Ledger, touched: Iterable[ScopePath], held_before: Set[int]
) -> Write:
    """The groups of a compare-and-set after a batch that touched ``touched`` (a path
    no longer in the ledger was forgotten) and began with ``held_before`` open."""
    scopes = ledger.tree.scopes
    shapes: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {}
    gone: list[str] = []
    dropped: list[str] = []
    changed: dict[str, int] = {}  # count fields to set
    for path in touched:
        key = scope_key(path)
        before = known.counts.get(key, {})
        if path not in scopes:
            gone.append(key)
            dropped += before
            continue
        record = state.dump_scope(scopes[path])
        shapes[key] = shape(record)
        counts[key] = counters(key, record)
        dropped += [field for field in before if field not in counts[key]]
        changed.update((f, v) for f, v in counts[key].items() if before.get(f) != v)
    held = ledger.reservations.open
    made = sorted(held.keys() - held_before)
    ended = sorted(held_before - held.keys())
    due = [(deadline_ms(d), rid) for rid in made if (d := held[rid].deadline) is not None]
    args = [str(len(shapes))]
    for key, text in shapes.items():
        args += [key, text]
    args += [str(len(gone)), *gone, str(len(made))]
    for rid in made:
        args += [str(rid), json.dumps(state.dump_held(held[rid]))]
    args += [str(len(ended)), *map(str, ended), str(len(due))]
    for ms, rid in due:
        args += [str(ms), str(rid)]
    args.append(str(len(changed)))
    for field, value in changed.items():
        args += [field, str(value)]
    args += [str(len(dropped)), *dropped]
    empty = not (shapes or gone or made or ended or due or changed or dropped)
    return Write(args, shapes, counts, gone, empty)
