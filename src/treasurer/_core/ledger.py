"""The budget's arithmetic as a pure state machine: no I/O, no event loop, no clock.

:meth:`Ledger.apply` applies one command at a time ``now`` and returns an
:class:`~.outcomes.Outcome`: the reply (or the refusal) and the events it
caused, as plain data. A store owns a ledger (or, for a remote store, does
the same arithmetic where the state lives); only the budget's actor calls it.
The commands themselves are applied by the functions of :mod:`.spending` and
:mod:`.administration`; this module holds the state and what they share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

import attrs

from . import administration, spending
from .books import Held, Overrides, Reservations
from .commands import Command, Meta, OpenChild, Reserve
from .config import BudgetConfig
from .events import Event, OverrideExpired, RequestRefused, ReservationExpiredEvent, UsageRecorded
from .outcomes import Charged, Outcome, Refusal, Rejected, Reply
from .scope import Scope
from .scopes import ROOT, ScopePath
from .tree import ScopeTree
from .values import Usage
from .windows import FOREVER

_HANDLERS: Final[dict[type, Callable[[Any, Any], Reply]]] = {
    **spending.HANDLERS,
    **administration.HANDLERS,
}


class Ledger:
    """All the state of one budget, changed only by :meth:`apply` and :meth:`advance`.

    ``verbose`` adds the events nobody needs unless someone listens: usage
    recorded, reservations created, committed and released, and refusals.
    """

    def __init__(self, config: BudgetConfig, now: datetime) -> None:
        self.config: Final = config
        self.name: Final = config.name
        self.now = now
        self.verbose = True
        self.tree: Final = ScopeTree(config, now)
        self.reservations = Reservations()
        self.overrides = Overrides()
        self.events: list[Event] = []  # those of the command being applied
        self.resets = 0  # Reset commands applied: see TakeBack
        self.limits_lowered = False  # a waiting request may have become one that never fits
        # Waiter (by identity) -> why it was refused when last looked at.
        self._refused_by: dict[int, _LastRefusal] = {}

    @property
    def root(self) -> Scope:
        return self.tree.root

    def apply(self, command: Command, now: datetime) -> Outcome:
        """Apply one command at ``now``; the reply and the events it caused."""
        self.now = now
        self.events = events = list[Event]()
        reply = _HANDLERS[type(command)](self, command)
        return Outcome(reply, tuple(events) if events else ())

    def apply_batch(
        self, batch: Sequence[Command], now: datetime, events: list[Event]
    ) -> list[Reply]:
        """Apply commands in order at one instant, as :meth:`apply` does each; the
        replies, and every event added to ``events`` in the order it happened."""
        self.now = now
        self.events = events
        return [_HANDLERS[type(command)](self, command) for command in batch]

    # -- time --------------------------------------------------------------------

    def advance(self, now: datetime) -> list[Event]:
        """Tell the ledger the time: expire due reservations and overrides, roll
        the budget's windows over (other scopes' windows move when next used)."""
        self.now = now
        self.events = events = list[Event]()
        for reservation, held in self.reservations.due(now):
            scope = self.end(held)
            self.emit(
                ReservationExpiredEvent,
                scope,
                level="warning",
                reservation=reservation,
                amount=Usage.of(held.amount),
                deadline=held.deadline or now,
            )
        for override in self.overrides.due(now):
            administration.end_override(self, override, OverrideExpired)
        self.tree.advance(self.root, now, events)
        self.tree.touched.add(ROOT)
        return events

    def forget_ended_overrides(self) -> None:
        """Drop from the index the overrides that ended with their scope or window
        (a child budget that closed and went, a window a tenant's new caps lack):
        nothing is left for them to do, and a store that reloads would not find them."""
        scopes, index = self.tree.scopes, self.overrides.scope_of
        for override, path in list(index.items()):
            scope = scopes.get(path)
            if scope is None or override not in scope.overrides:
                del index[override]

    def next_wakeup(self, waiting_in: Sequence[ScopePath] = ()) -> datetime | None:
        """The next instant time alone changes something: a reservation or an
        override expires, or a window resets in a scope where requests wait."""
        due = [self.reservations.next_deadline(), self.overrides.next_expiry()]
        for path in waiting_in:
            scope = self.tree.scopes.get(path)
            if scope is not None:
                due.extend(member.stale_at for member in self.tree.chain(scope))
        soonest = min((at for at in due if at is not None), default=FOREVER)
        return None if soonest == FOREVER else soonest

    # -- what the commands share ---------------------------------------------------

    def emit(self, kind: type[Event], scope: Scope, **fields: Any) -> None:
        """Add an event of ``kind`` about ``scope``, at the ledger's time."""
        budget, tenant, child = scope.names
        self.events.append(kind(budget=budget, tenant=tenant, child=child, at=self.now, **fields))

    def find(self, path: ScopePath) -> Scope | Rejected:
        """The scope at ``path``, current to the ledger's time (a tenant is made on first use)."""
        return self.tree.find(path, self.now, self.events)

    def open_scope(self, path: ScopePath) -> Scope | Rejected:
        """The scope at ``path`` if it takes requests: not a child budget that closed."""
        scope = self.find(path)
        if isinstance(scope, Scope) and scope.closed:
            return Rejected("closed", f"child budget {scope.names[2]!r} is closed")
        return scope

    def nearest(self, path: ScopePath) -> Scope:
        """The scope at ``path``, or, for a child budget that is gone, the nearest scope
        above it: usage that happened late is counted where it can still be."""
        found = self.find(path)
        while isinstance(found, Rejected):
            path = path[:-1]
            found = self.find(path)
        return found

    def admitted(
        self, path: ScopePath, amount: Sequence[int], *, request: bool = True
    ) -> Scope | Refusal | Rejected:
        """The scope ``amount`` is admitted in, or why not (a refusal event if verbose);
        ``request`` false for a child's carve, which per-request caps do not bound."""
        scope = self.open_scope(path)
        if isinstance(scope, Rejected):
            return scope
        refusal = self.tree.refusal(scope, tuple(amount), request=request)
        if refusal is None:
            return scope
        if self.verbose:
            self.emit(
                RequestRefused,
                scope,
                level="warning",
                cap=refusal.cap,
                window=refusal.window,
                error=str(refusal.error()),
            )
        return refusal

    def charge(
        self,
        scope: Scope,
        amount: tuple[int, ...],
        meta: Meta | None,
        source: str,
        reservation: int | None = None,
        calls: int = 1,
    ) -> Charged:
        """Count usage that happened in ``scope`` (and every scope above it)."""
        self.tree.catch_up(scope, self.now, self.events)  # (windows rolling over first)
        if self.verbose:  # first the usage, then what it caused (thresholds crossed)
            self.emit(
                UsageRecorded,
                scope,
                amount=amount,
                source=source,
                reservation=reservation,
                model=meta.model if meta else None,
                request_id=meta.request_id if meta else None,
                session_id=meta.session_id if meta else None,
                tags=dict(meta.tags) if meta else {},
            )
        model = meta.model if meta else None
        self.tree.charge(scope, amount, self.now, model, self.events, calls)
        return Charged(scope.used, scope.calls, self.now, self.resets)

    def uncharge(
        self, scope: Scope, amount: tuple[int, ...], meta: Meta | None, source: str
    ) -> None:
        """Report usage given back (a refund's credit, a call taken back) as a usage
        record with a negative amount, so the records keep adding up to what is used."""
        if self.verbose:
            self.emit(
                UsageRecorded,
                scope,
                amount=tuple(-value for value in amount),
                source=source,
                model=meta.model if meta else None,
                request_id=meta.request_id if meta else None,
                session_id=meta.session_id if meta else None,
                tags=dict(meta.tags) if meta else {},
            )

    def end(self, held: Held) -> Scope:
        """Stop holding an open reservation (already taken out of ``reservations``)."""
        scope = self.tree.scopes[held.scope]
        self.tree.hold(scope, held.amount, -1)
        self.tree.forget_drained(scope)
        return scope

    # -- waiting -------------------------------------------------------------------

    def refusal(self, command: Reserve | OpenChild) -> Refusal | Rejected | None:
        """Why a waiting request would be refused now; changes nothing."""
        scope = self.open_scope(command.scope)
        if isinstance(scope, Rejected):
            return scope
        if isinstance(command, Reserve):
            return self.tree.refusal(scope, command.amount)
        return self.tree.refusal(scope, command.carve(), request=False)

    def _refuses_still(self, last: _LastRefusal) -> bool:
        """Whether a waiter's last refusal stands without looking again. It does if,
        since then, no window of its scopes rolled, no usage was spent in them (it
        might never fit now), room did not grow in the scope that refused it, and the
        scopes below that one did not change at all (one might refuse first now, or
        ask another part of the scopes above)."""
        scope = self.tree.scopes.get(last.command.scope)
        if scope is not last.scope:
            return False
        seen = last.seen
        below = True
        for member in self.tree.chain(scope):
            if self.now >= member.stale_at or member.spent_at > seen:
                return False
            if not below:
                continue
            if member.path == last.refuser:
                below = False
                if member.freed_at > seen:
                    return False
            elif member.freed_at > seen or member.held_at > seen:
                return False
        return True

    def serve_waiting(
        self, waiting: Sequence[Reserve | OpenChild], new_from: int = 0
    ) -> list[tuple[int, Reply]]:
        """Grant waiting requests in arrival order while they fit.

        A request refused by a scope's caps holds up every later request that
        must fit the same scope, so a large request is never overtaken by
        smaller ones that came after it; requests elsewhere in the tree go on
        (a tenant over its own cap holds up only that tenant). A request that
        can never fit is answered with its refusal: those from ``new_from`` on
        (they just came) are looked at even when held up, and every one after
        an override ended or a tenant's caps changed. Returns, for each
        request answered, its index in ``waiting`` and its reply; the events
        of the grants are added to :attr:`events`.
        """
        recheck_from = 0 if self.limits_lowered else new_from
        self.limits_lowered = False
        refused_by = self._refused_by
        blocked: set[ScopePath] = set()
        answers = []
        for index, command in enumerate(waiting):
            path = command.scope
            held_up = any(path[:depth] in blocked for depth in range(len(path) + 1))
            if index < recheck_from:
                if held_up:
                    continue
                # Nothing that decided its last refusal changed since: it is not
                # looked at again (serving costs what changed, not the number of
                # waiters).
                last = refused_by.get(id(command))
                if last is not None and last.command is command and self._refuses_still(last):
                    blocked.add(last.refuser)
                    continue
            refusal = self.refusal(command)
            if isinstance(refusal, Refusal) and not refusal.final:
                scope = self.tree.scopes[command.scope]
                refused_by[id(command)] = _LastRefusal(
                    command, scope, refusal.scope, self.tree.changes
                )
                if not held_up:  # a waiter behind another holds up nobody itself
                    blocked.add(refusal.scope)
            elif not held_up:
                refused_by.pop(id(command), None)
                answers.append((index, _HANDLERS[type(command)](self, command)))
            elif refusal is not None:
                refused_by.pop(id(command), None)
                answers.append((index, refusal))
        if len(refused_by) > 2 * len(waiting) + 64:  # waiters who gave up
            live = {id(command) for command in waiting}
            self._refused_by = {key: value for key, value in refused_by.items() if key in live}
        return answers


@attrs.frozen
class _LastRefusal:
    """A waiting request's last refusal for now: by ``refuser``, a scope of the
    chain of ``scope``, when :attr:`ScopeTree.changes` was ``seen``."""

    command: Reserve | OpenChild
    scope: Scope
    refuser: ScopePath
    seen: int
