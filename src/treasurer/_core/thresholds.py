"""Threshold alerts: a ``ThresholdCrossed`` event once per threshold per period.

A period is the lifetime (re-armed by a reset) or a window's current period
(re-armed when it rolls over). ``fired[axis]`` counts the thresholds of one
period that have fired, lowest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .axes import AXES, Vector, to_public
from .events import Event, ThresholdCrossed, threshold_level
from .windows import WindowState

Names = tuple[str, str | None, str | None]


def fire(
    names: Names,
    thresholds: Sequence[int],
    caps: Sequence[tuple[int, int]],
    used: Vector,
    fired: list[int],
    window: WindowState | None,
    now: datetime,
    events: list[Event],
) -> None:
    """Add an event for every threshold of one period that ``used`` has newly reached."""
    for axis, cap in caps:
        while fired[axis] < len(thresholds) and used[axis] * 100 >= cap * thresholds[fired[axis]]:
            threshold = thresholds[fired[axis]]
            fired[axis] += 1
            events.append(
                ThresholdCrossed(
                    budget=names[0],
                    tenant=names[1],
                    child=names[2],
                    at=now,
                    level=threshold_level(threshold),
                    cap=AXES[axis],
                    window="lifetime" if window is None else window.window.name,
                    threshold=threshold,
                    used=to_public(axis, used[axis]),
                    limit=to_public(axis, cap),
                    resets_at=None if window is None else window.resets_at(),
                )
            )


def rearm_rolling(window: WindowState, thresholds: Sequence[int]) -> None:
    """After a rolling window dropped usage: re-arm only the thresholds usage is
    back below, so each fires once per crossing, not again on every charge."""
    for axis, cap in enumerate(window.limits):
        if cap is not None:
            reached = sum(window.used[axis] * 100 >= cap * t for t in thresholds)
            window.fired[axis] = min(window.fired[axis], reached)
