"""The tree of scopes of one budget, and the walks a request makes up it.

A request made in a scope must fit that scope and every scope above it: a
child budget, the tenant it was carved from, the budget. Usage counts in all
of them; a reservation is held in all of them, except that a child budget's
carve already holds room in its parent (see :meth:`Scope.holding`).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime
from typing import Final

from . import headroom, reads
from .axes import ZERO, Vector, add, sub
from .config import BudgetConfig, Limits
from .events import Event
from .outcomes import Refusal, Rejected, ScopeView
from .scope import Scope
from .scopes import ROOT, ScopePath, child_path, tenant_of, tenant_path
from .windows import FOREVER

IDLE_TENANTS_KEPT: Final = 1024
"""Idle tenants kept (most recently used first) so their lifetime figures
survive a while; beyond that the oldest are forgotten, so a budget that sees a
million tenants over a month does not grow with them."""


class ScopeTree:
    """Every scope of one budget that holds state, by path; tenants made on first use."""

    def __init__(self, config: BudgetConfig, now: datetime) -> None:
        self.config: Final = config
        self.tenant_limits: dict[str, Limits] = dict(config.tenants)
        self.root = Scope(ROOT, (config.name, None, None), config.limits, config.thresholds, now)
        self.scopes: dict[ScopePath, Scope] = {ROOT: self.root}
        self.touched: set[ScopePath] = set()  # since the last views() call
        self.changes = 0  # counts changes that matter to waiters (Scope.freed_at, ...)
        self._idle: OrderedDict[ScopePath, None] = OrderedDict()
        # (when its windows next reset, tenant): to find tenants that become idle by time alone.
        self._idle_check: list[tuple[datetime, ScopePath]] = []
        self._check_at: dict[ScopePath, datetime] = {}
        self.next_child = 1
        # Set by a store that needs it: the room each admission left (see headroom).
        self.room: headroom.Room | None = None

    def replace_root(self, root: Scope) -> None:
        """Put in the budget's own scope as a store kept it."""
        self.root = root
        self.scopes[root.path] = root

    # -- lookup ------------------------------------------------------------------

    def find(self, path: ScopePath, now: datetime, events: list[Event]) -> Scope | Rejected:
        """The scope at ``path``, current to ``now``; a tenant is made on first use."""
        scope = self.scopes.get(path)
        if scope is None:
            tenant = tenant_of(path)
            if tenant is None or len(path) != 1:
                return Rejected(
                    "closed", f"child budget {path!r} of {self.config.name!r} is closed"
                )
            limits = self.tenant_limits.get(tenant, self.config.tenant_defaults)
            scope = Scope(
                path,
                (self.config.name, tenant, None),
                limits,
                self.config.thresholds,
                now,
                self.root,
            )
            self.scopes[path] = scope
        elif path in self._idle:
            del self._idle[path]
        member: Scope | None = scope
        while member is not None:
            if now >= member.stale_at:
                self.advance(member, now, events)
            self.touched.add(member.path)
            member = member.parent
        return scope

    def catch_up(self, scope: Scope, now: datetime, events: list[Event]) -> None:
        """Move the windows of ``scope`` and every scope above it to ``now``, as
        :meth:`get` does: a commit's scope may not have been used since a window's
        period ended, and usage counted in that period would be dropped."""
        for member in self.chain(scope):
            if now >= member.stale_at:
                self.advance(member, now, events)

    def advance(self, scope: Scope, now: datetime, events: list[Event]) -> None:
        """Move a scope's windows to ``now``."""
        if scope.advance(now, events):
            self.freed(scope)

    def freed(self, scope: Scope) -> None:
        """Note that room in ``scope`` may have grown (a waiter may fit now)."""
        self.changes += 1
        scope.freed_at = self.changes

    def spent(self, scope: Scope) -> None:
        """Note that usage was spent in ``scope`` (a waiter may never fit now)."""
        self.changes += 1
        scope.spent_at = self.changes

    def held(self, scope: Scope) -> None:
        """Note that more is reserved in ``scope`` (it may refuse a waiter first now)."""
        self.changes += 1
        scope.held_at = self.changes

    @staticmethod
    def chain(scope: Scope) -> Iterator[Scope]:
        """The scope, then each scope above it up to the budget's."""
        member: Scope | None = scope
        while member is not None:
            yield member
            member = member.parent

    def parts(self, scope: Scope, amount: Vector) -> list[tuple[Scope, Vector]]:
        """Each scope of the chain with the part of ``amount`` it must find room for."""
        parts = []
        member: Scope | None = scope
        while member is not None:
            parts.append((member, amount))
            amount = member.growth(amount)
            member = member.parent
        return parts

    # -- admission and usage ---------------------------------------------------------

    def refusal(self, scope: Scope, amount: Vector, *, request: bool = True) -> Refusal | None:
        """Why ``amount`` cannot be admitted in ``scope`` now, or ``None`` if it fits.

        A cap the request can never fit comes first, from any scope of the
        chain; then the first scope, from the bottom, without room now. A
        carve (``request`` false) is not a request: per-request caps do not
        bound it.
        """
        whole = amount if request else ZERO
        if scope.parent is None and scope.fits(amount, whole):
            if self.room is not None:
                headroom.note_room(self.room, scope, amount)
            return None  # the budget's own scope, the common case
        parts = self.parts(scope, amount)
        if all(member.fits(part, whole) for member, part in parts):
            if self.room is not None:
                for member, part in parts:
                    headroom.note_room(self.room, member, part)
            return None
        for member, part in parts:
            if (refusal := member.too_large(part, whole)) is not None:
                return refusal
        # A scope whose spent usage alone leaves no room is reported before one that
        # is only full for now: that request can never fit, and waiting is pointless.
        refusals = [r for member, part in parts if (r := member.no_room(part)) is not None]
        if not refusals:
            raise AssertionError("a request that does not fit is refused by some cap")
        return next((refusal for refusal in refusals if refusal.final), refusals[0])

    def hold(self, scope: Scope, amount: Vector, sign: int = 1) -> None:
        """Reserve (``sign`` 1) or unreserve (-1) ``amount`` in ``scope`` and above."""
        scope.reserved = add(scope.reserved, amount) if sign > 0 else sub(scope.reserved, amount)
        for member in self.chain(scope):
            member.open += sign
            self.touched.add(member.path)
            if sign < 0:
                self.freed(member)
            else:
                self.held(member)
        if scope.parent is not None:
            self.sync(scope)

    def charge(
        self,
        scope: Scope,
        amount: Vector,
        now: datetime,
        model: str | None,
        events: list[Event],
        calls: int = 1,
    ) -> None:
        """Count usage that happened in ``scope`` and every scope above it (each in
        the periods holding ``now``: see :meth:`catch_up`)."""
        for member in self.chain(scope):
            member.charge(amount, now, model, events, calls)
            self.touched.add(member.path)
            self.spent(member)
        if scope.parent is not None:
            self.sync(scope)

    def credit(self, scope: Scope, amount: Vector, at: datetime | None, model: str | None) -> None:
        """Give usage back in ``scope`` and above: a refund (``at`` is ``None``, the
        lifetime only) or one call taken back exactly (made ``at``)."""
        for member in self.chain(scope):
            if at is None:
                member.credit(amount)
            else:
                member.take_back(amount, at, model)
            self.touched.add(member.path)
            self.freed(member)
        self.sync(scope)

    def sync(self, scope: Scope) -> None:
        """Bring what each scope holds in its parent up to date, bottom up."""
        # Every level is looked at: usage counts in all of them, so a level whose
        # holding did not change can still change what the one above it holds.
        member = scope
        while member.parent is not None:
            holding = member.holding()
            parent = member.parent
            if holding != member.contributed:
                change = sub(holding, member.contributed)
                parent.reserved = add(parent.reserved, change)
                member.contributed = holding
                if any(value < 0 for value in change):
                    self.freed(parent)
                    self.touched.add(parent.path)
                if any(value > 0 for value in change):
                    self.held(parent)
            member = parent

    # -- children ------------------------------------------------------------------

    def open_child(self, parent: Scope, name: str | None, caps: Limits, now: datetime) -> Scope:
        path = child_path(parent.path, self.next_child)
        if name is None:
            budget, tenant, parent_child = parent.names
            prefix = parent_child or (budget if tenant is None else f"{budget}/{tenant}")
            name = f"{prefix}/child-{self.next_child}"
        self.next_child += 1
        child = Scope(
            path,
            (self.config.name, parent.names[1], name),
            caps,
            self.config.thresholds,
            now,
            parent,
            carve=caps.caps,
        )
        self.scopes[path] = child
        self.touched.add(path)
        for member in self.chain(parent):
            member.children += 1
        self.sync(child)
        return child

    def close_child(self, child: Scope) -> None:
        """No more requests; what it holds beyond its open reservations comes back."""
        if not child.closed:
            child.closed = True
            self.sync(child)
            self.touched.update(member.path for member in self.chain(child))
            self.freed(child)  # its waiters are answered: it is closed
        self.forget_drained(child)

    def forget_drained(self, scope: Scope) -> None:
        """Drop a closed child budget once nothing is open in it any more."""
        if scope.closed and not scope.open and not scope.children and scope.parent is not None:
            del self.scopes[scope.path]
            for member in self.chain(scope.parent):
                member.children -= 1
            self.touched.add(scope.path)
            self.forget_drained(scope.parent)

    # -- tenants ---------------------------------------------------------------------

    def set_tenant_limits(self, tenant: str, limits: Limits | None, now: datetime) -> ScopePath:
        """Give ``tenant`` its own caps (``None``: the defaults again); its path."""
        if limits is None:
            self.tenant_limits.pop(tenant, None)
        else:
            self.tenant_limits[tenant] = limits
        path = tenant_path(tenant)
        scope = self.scopes.get(path)
        if scope is not None:
            scope.relimit(self.tenant_limits.get(tenant, self.config.tenant_defaults), now)
            self.touched.add(path)
            self.freed(scope)
        return path

    def forget_idle(self, now: datetime, events: list[Event]) -> list[ScopePath]:
        """Forget idle tenants beyond :data:`IDLE_TENANTS_KEPT`; returns their paths."""
        while self._idle_check and self._idle_check[0][0] <= now:
            when, path = heapq.heappop(self._idle_check)
            if self._check_at.get(path) == when:
                del self._check_at[path]
            scope = self.scopes.get(path)
            if scope is not None and path not in self._idle:
                self.advance(scope, now, events)
                self.touched.add(path)
                self._note(scope)
        for path in [p for p in self.touched if tenant_of(p) is not None and len(p) == 1]:
            scope = self.scopes.get(path)
            if scope is not None:
                self._note(scope)
        forgotten = []
        while len(self._idle) > IDLE_TENANTS_KEPT:
            path, _ = self._idle.popitem(last=False)
            del self.scopes[path]
            self.touched.add(path)
            forgotten.append(path)
        return forgotten

    def _note(self, scope: Scope) -> None:
        if scope.idle():
            self._idle[scope.path] = None
            self._idle.move_to_end(scope.path)
        elif scope.stale_at != FOREVER and self._check_at.get(scope.path) != scope.stale_at:
            self._check_at[scope.path] = scope.stale_at
            heapq.heappush(self._idle_check, (scope.stale_at, scope.path))

    # -- reads -------------------------------------------------------------------------

    def views(self, now: datetime) -> dict[ScopePath, ScopeView | None]:
        """Views of every scope touched since the last call (``None``: forgotten)."""
        views: dict[ScopePath, ScopeView | None] = {}
        for path in self.touched:
            scope = self.scopes.get(path)
            views[path] = None if scope is None else reads.view(scope, now)
        self.touched = set()
        return views
