"""What every handle of one budget shares: its actor, its settings, its published figures."""

from __future__ import annotations

from typing import Final

from .._core import reads
from .._core.config import Limits
from .._core.outcomes import ScopeView
from .._core.scope import Scope
from .._core.scopes import ROOT, ScopePath, tenant_of
from .._core.values import Snapshot
from .._runtime.actor import Actor
from .settings import Settings


class BudgetCore:
    """One budget's actor, settings and snapshot cache, shared by all its handles."""

    def __init__(self, actor: Actor, settings: Settings) -> None:
        self.actor: Final = actor
        self.settings: Final = settings
        self.name: Final = settings.config.name
        self.tenant_limits: dict[str, Limits] = dict(settings.config.tenants)
        self._snapshots: dict[ScopePath, tuple[ScopeView, Snapshot]] = {}

    def limits_of(self, tenant: str) -> Limits:
        return self.tenant_limits.get(tenant, self.settings.config.tenant_defaults)

    def view(self, path: ScopePath, last: ScopeView | None = None) -> ScopeView:
        """The scope's figures as of the actor's last batch.

        A tenant the budget holds nothing for (never seen, or forgotten while
        idle) shows its caps and nothing used; a child budget gone since it
        closed shows ``last``, its figures when it closed.
        """
        view = self.actor.views.get(path)
        if view is not None:
            return view
        tenant = tenant_of(path)
        now = self.actor.views[ROOT].at
        if tenant is not None and len(path) == 1:
            fresh = Scope(path, (self.name, tenant, None), self.limits_of(tenant), (), now)
            return reads.view(fresh, now)
        assert last is not None, f"no figures for {path!r}"
        return last

    def snapshot(self, path: ScopePath, last: ScopeView | None = None) -> Snapshot:
        """The scope's snapshot, built once per batch that changed it."""
        view = self.view(path, last)
        cached = self._snapshots.get(path)
        if cached is not None and cached[0] is view:
            return cached[1]
        snapshot = view.snapshot()
        self._snapshots[path] = (view, snapshot)
        if len(self._snapshots) > 1024:  # a cache, not a record of every tenant
            self._snapshots.clear()
        return snapshot
