"""A batch merged into counters other processes moved (the script's ``merge``).

A batch is computed on this process's copy, which may be behind the stored
budget. When the batch only holds, spends and settles (no refusal, no
threshold, nothing time changed, no waiting request, every scope it touched
still shaped as stored, or new), its effect is a set of additions to integer
counters, and it is sent as those additions together with what its decisions
assumed: each scope's shape (a scope it made: absent, or made alike by another
process meanwhile, under the same tenant caps), each reservation it
ends still open, none past its deadline, and for each cap the most the stored
counters may have grown beyond this copy's for every admission still to fit
and no threshold to be crossed (:mod:`.._core.headroom`). The script checks
all of it and adds, or answers the rows, and the batch is computed again on
them. So writers of one budget no longer exclude each other: two batches that
both fit are both applied, in one round trip each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from .._core import state
from .._core.axes import AXES
from .._core.commands import Charge, Commit, Consume, Record, Release, Reserve
from .._core.events import (
    Event,
    ReservationCommitted,
    ReservationCreated,
    ReservationReleased,
    UsageRecorded,
    WindowRolledOver,
)
from .._core.headroom import Room, quiet_below
from .._core.ledger import Ledger
from .._core.outcomes import Charged, Granted, Reply, ScopeView, Settled
from .._core.reads import view
from .._core.scopes import ROOT, ScopePath, tenant_path
from . import shared_events
from .base import BatchResult, Work
from .redis_outage import renumbered
from .redis_rows import (
    Known,
    caps_part,
    counters,
    deadline_ms,
    grouped,
    in_windows,
    now_ms,
    patch,
    rolled,
    shape,
)
from .rows import scope_key

_COMMANDS: Final = (Reserve, Commit, Release, Record, Consume, Charge)
_EVENTS: Final = (
    ReservationCreated,
    ReservationCommitted,
    ReservationReleased,
    UsageRecorded,
    WindowRolledOver,
)
_EXACT: Final = 1 << 52  # the script's numbers are doubles, exact integers up to here


def _field(key: str, period: int, name: str, axis: int) -> str:
    return f"{key}\t{name if period < 0 else f'w{period}.{name}'}\t{axis}"


def _rolled_key(event: Event) -> str | None:
    """The key of the scope a window rolled over in (merged scopes are the
    budget's own and tenants'), or ``None`` for any other event."""
    if not isinstance(event, WindowRolledOver) or event.child is not None:
        return None
    return scope_key(ROOT if event.tenant is None else tenant_path(event.tenant))


def _told_of_rolls(events: Sequence[Event]) -> dict[str, str]:
    """For each scope, the indexes of its roll-overs among the events told to the
    other processes (comma-separated): untold if another writer rolled it first."""
    told: dict[str, list[str]] = {}
    for index, event in enumerate(shared_events.shared(events)):
        key = _rolled_key(event)
        if key is not None:
            told.setdefault(key, []).append(str(index))
    return {key: ",".join(indexes) for key, indexes in told.items()}


@attrs.frozen
class Merge:
    """The script's arguments for a merge, and what to do with its answer."""

    args: list[str]
    counts: dict[str, dict[str, int]]  # each touched scope's count fields, on this copy
    new_shapes: dict[str, str]  # the shapes of the scopes the batch made or rolled over
    bases: dict[str, dict[str, int]]  # what is stored of a rolled scope but its old windows
    deltas: dict[str, int]
    first_id: int
    charged: list[tuple[int, str]]  # each Charged reply's index, and its scope's key

    def done(
        self, known: Known, ledger: Ledger, answer: Sequence[Any], result: BatchResult
    ) -> BatchResult:
        """The merge was stored: the copy takes the stored value of each counter the
        batch changed; reservation ids move as the script moved them."""
        stored = dict(zip(self.deltas, (int(value) for value in answer[6]), strict=True))
        by_scope = grouped(stored.items())
        views: dict[ScopePath, ScopeView] = {}
        for key, counts in self.counts.items():
            here = by_scope.get(key, {})
            # What is stored, zero fields too (a write of the scope deletes them).
            merged = self.bases.get(key, known.counts.get(key, {})) | counts | here
            if any(counts.get(field, 0) != value for field, value in here.items()):
                path = tuple(json.loads(key))  # others' spend is in it: the figures show it
                patch(ledger.tree.scopes[path], merged)
                views[path] = view(ledger.tree.scopes[path], result.now)
            known.counts[key] = merged
        known.shapes.update(self.new_shapes)
        alike = set(answer[7])  # rolled over by another writer, which told of it
        if alike:
            events = [e for e in result.events if _rolled_key(e) not in alike]
            result = attrs.evolve(result, events=events)
        if views:
            result = attrs.evolve(result, views={**result.views, **views})
        if self.charged:
            result = attrs.evolve(result, replies=self._totals(result.replies, stored))
        offset = int(answer[4])
        if offset:
            result = renumbered(ledger, result, self.first_id, offset)
        due = str(answer[5])
        if due:
            at = datetime.fromtimestamp(int(due) / 1000, UTC)
            if result.next_wakeup is None or at < result.next_wakeup:
                result = attrs.evolve(result, next_wakeup=at)
        return result

    def _totals(self, replies: Sequence[Reply], stored: dict[str, int]) -> list[Reply]:
        """The replies, each total a charge reports moved by what others spent in its
        scope before this batch (the script answered every such counter)."""
        others = {
            field: value - self.counts[field.split("\t", 1)[0]].get(field, 0)
            for field, value in stored.items()
        }
        replies = list(replies)
        for index, key in self.charged:
            reply = replies[index]
            assert isinstance(reply, Charged)
            used = tuple(v + others[f"{key}\tused\t{axis}"] for axis, v in enumerate(reply.used))
            replies[index] = reply._replace(used=used, calls=reply.calls + others[f"{key}\tcalls"])
        return replies


def settles_unseen(commands: Sequence[Any], ledger: Ledger) -> bool:
    """Whether a command settles a reservation issued since ``ledger`` (a copy) was
    read, by another process: the copy would take it for one the batch itself
    issues under the same id, so the rows must be read first."""
    unseen = ledger.reservations.next_id
    return any(isinstance(c, Commit | Release) and c.reservation >= unseen for c in commands)


def plan(
    known: Known,
    ledger: Ledger,
    work: Work,
    result: BatchResult,
    room: Room,
    held_before: dict[int, int],
    first_id: int,
) -> Merge | None:
    """The merge of a batch just applied to the copy, or ``None`` if it is not one
    (then it is written by compare-and-set)."""
    if work.waiting or not all(isinstance(c, _COMMANDS) for c in work.commands):
        return None
    charged: list[tuple[int, str]] = []
    for index, reply in enumerate(result.replies):
        if isinstance(reply, Charged):
            command = work.commands[index]
            assert isinstance(command, Record | Consume | Charge)
            charged.append((index, scope_key(command.scope)))
        elif not (isinstance(reply, Granted) or (isinstance(reply, Settled) and not reply.expired)):
            return None
    if not all(isinstance(event, _EVENTS) for event in result.events):
        return None
    scopes = ledger.tree.scopes
    told = _told_of_rolls(result.events)
    shapes: list[str] = []
    new_shapes: dict[str, str] = {}
    rolls: list[str] = []  # each rolled scope's key, shapes before and after, windows
    bases: dict[str, dict[str, int]] = {}
    counts: dict[str, dict[str, int]] = {}
    deltas: dict[str, int] = {}
    quiet: list[tuple[list[str], int]] = []
    for path in result.views:
        scope = scopes.get(path)
        if scope is None or scope.carve is not None or scope.children:
            return None  # (a child budget's carve moves its parent's holds: not merged)
        key = scope_key(path)
        record = state.dump_scope(scope)
        text = shape(record)
        stored = known.shapes.get(key)
        before = known.counts.get(key, {})
        if stored is None and known.meta is not None:
            new_shapes[key] = text  # made by this batch: its counts start from zero
        elif stored == text:
            shapes += [key, text]
        elif stored is not None and (windows := rolled(stored, text)):
            # Windows that began a new period: their stored fields go, and the
            # counts in them start from zero.
            rolls += [key, stored, text, ",".join(map(str, windows)), told.get(key, "")]
            before = bases[key] = {f: v for f, v in before.items() if not in_windows(f, windows)}
        else:
            return None  # fired, changed by hand, or stored in the old layout
        now = counts[key] = counters(key, record)
        deltas.update((f, v - before.get(f, 0)) for f, v in now.items() if before.get(f) != v)
        deltas.update((f, -v) for f, v in before.items() if f not in now and v)
        if f"{key}\tcalls" not in deltas:
            continue  # thresholds are checked when usage is charged, and none was here
        for period, axis, most in quiet_below(scope):
            field = _field(key, period, "used", axis)
            quiet.append(([field], most - deltas.get(field, 0)))
    for _, key in charged:
        if key not in counts:
            return None  # (charged above its own scope: a child budget that is gone)
        for field in (f"{key}\tcalls", *(f"{key}\tused\t{axis}" for axis in range(len(AXES)))):
            deltas.setdefault(field, 0)  # adding 0 answers the stored total: the reply's
    conditions: list[tuple[list[str], int]] = []
    for (path, period, axis), left in room.items():
        key = scope_key(path)
        # (in a window this batch rolls over, the script counts the stored used
        # as zero; it is the new period's if another writer rolled it over alike)
        fields = [_field(key, period, "used", axis), _field(key, -1, "reserved", axis)]
        before = bases.get(key, known.counts.get(key, {}))
        conditions.append((fields, left + sum(before.get(f, 0) for f in fields)))
    held = ledger.reservations.open
    made = sorted(rid for rid in held if rid >= first_id)
    ended = sorted(held_before.keys() - held.keys())
    args = [str(now_ms(ledger.now)), str(len(shapes) // 2), *shapes, str(len(rolls) // 5)]
    args += [*rolls, str(len(new_shapes))]
    for key, text in new_shapes.items():
        args += [key, text]
    # A scope made under the tenant caps of the copy's meta record, or a charge
    # reporting the resets it knows (TakeBack): those must still be stored.
    assert known.meta is not None or not (new_shapes or charged)
    args.append(caps_part(known.meta) if known.meta and (new_shapes or charged) else "")
    args.append(str(len(ended)))
    for rid in ended:  # each with its token: open as this one, not one given its id again
        args += [str(rid), str(held_before[rid])]
    args.append(str(len(conditions) + len(quiet)))
    for fields, limit in conditions + quiet:
        if not -_EXACT < limit < _EXACT:
            return None  # beyond what the script compares exactly
        args += [str(len(fields)), *fields, str(limit)]
    args.append(str(len(deltas)))
    for field, delta in deltas.items():
        args += [field, str(delta)]
    args += [str(first_id), str(len(made))]
    for rid in made:
        args += [str(rid), json.dumps(state.dump_held(held[rid]))]
    due = [(deadline_ms(d), rid) for rid in made if (d := held[rid].deadline) is not None]
    args.append(str(len(due)))
    for ms, rid in due:
        args += [str(ms), str(rid)]
    new_shapes.update(zip(rolls[::5], rolls[2::5], strict=True))
    return Merge(args, counts, new_shapes, bases, deltas, first_id, charged)
