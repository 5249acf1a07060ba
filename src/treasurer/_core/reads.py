"""Reading a scope's figures into plain data: its view (what snapshots are built
from) and the figures of one period (what usage reports are built from)."""

from __future__ import annotations

from datetime import datetime

from .outcomes import ScopeView, UsageFigures, WindowView
from .scope import Scope


def view(scope: Scope, now: datetime) -> ScopeView:
    """The scope's figures at ``now``."""
    return ScopeView(
        scope.path,
        scope.caps,
        scope.per_request,
        scope.limits,
        scope.used,
        scope.reserved,
        scope.calls,
        scope.open,
        tuple(
            WindowView(w.window.name, w.window.kind, w.window.caps, w.limits, w.used, w.resets_at())
            for w in scope.windows
        ),
        tuple(override for override, _ in scope.overrides.values()),
        scope.names[1],
        scope.names[2],
        now,
    )


def usage_figures(scope: Scope, index: int, now: datetime) -> UsageFigures:
    """The figures of one period: the lifetime (``index`` -1) or a window."""
    if index < 0:
        used, limits, by_model, resets = scope.used, scope.limits, scope.by_model, None
        start = scope.since
    else:
        window = scope.windows[index]
        used, limits, by_model = window.used, window.limits, window.by_model
        resets, start = window.resets_at(), window.period_start(now)
    name = scope.periods()[index + 1]
    return UsageFigures(
        name,
        used,
        scope.reserved,
        limits,
        scope.open,
        tuple(sorted(by_model.items())),
        resets,
        tuple(o for o, _ in scope.overrides.values() if o.window == name),
        scope.names[1],
        start,
    )
