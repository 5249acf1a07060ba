"""How far a batch's decisions hold when the counters they were made on move.

A store that applies a batch to a copy of the budget other processes may have
moved on since (the Redis store) can keep the batch's outcome only if every
decision still holds on the stored counters: each admission must still fit
under every cap it was checked against, and no threshold may be crossed that
the copy did not cross. :func:`note_room` records, while the batch runs, the
least room an admission left under each cap; :func:`quiet_below` gives, after
it, the most usage each period can reach without firing a threshold anew.
"""

from __future__ import annotations

from collections.abc import Iterator

from .axes import Vector
from .scope import Scope
from .scopes import ScopePath

Period = int  # -1: the lifetime; else the index of a window in Scope.windows
Room = dict[tuple[ScopePath, Period, int], int]  # (scope, period, axis) -> least room left


def note_room(room: Room, scope: Scope, amount: Vector) -> None:
    """Record what each cap of ``scope`` has left once ``amount`` is admitted in it."""
    used, reserved = scope.used, scope.reserved
    for axis, cap in enumerate(scope.limits):
        if cap is not None:
            _least(room, (scope.path, -1, axis), cap - used[axis] - reserved[axis] - amount[axis])
    for index, window in enumerate(scope.windows):
        for axis, cap in enumerate(window.limits):
            if cap is not None:
                left = cap - window.used[axis] - reserved[axis] - amount[axis]
                _least(room, (scope.path, index, axis), left)


def _least(room: Room, key: tuple[ScopePath, Period, int], left: int) -> None:
    if left < room.get(key, left + 1):
        room[key] = left


def quiet_below(scope: Scope) -> Iterator[tuple[Period, int, int]]:
    """``(period, axis, most)``: the most usage each capped axis of each period of
    ``scope`` can reach without reaching the next threshold not yet fired."""
    thresholds = scope.thresholds
    if not thresholds:
        return
    periods = [(-1, scope.limits, scope.fired)]
    periods += [(index, w.limits, w.fired) for index, w in enumerate(scope.windows)]
    for period, limits, fired in periods:
        for axis, cap in enumerate(limits):
            if cap is not None and fired[axis] < len(thresholds):
                # Fired when used * 100 >= cap * threshold (thresholds.fire).
                yield period, axis, -(-cap * thresholds[fired[axis]] // 100) - 1
