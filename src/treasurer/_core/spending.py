"""The commands that spend: reserve, commit, release, record, consume, charge,
refund, and taking back a call whose caller never saw the reply."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .axes import TOKENS, on_axis
from .commands import Charge, Commit, Consume, Record, Refund, Release, Reserve, TakeBack
from .events import ReservationCommitted, ReservationCreated, ReservationReleased
from .outcomes import Granted, Rejected, Reply, Settled
from .scope import Scope
from .values import Usage

if TYPE_CHECKING:
    from .ledger import Ledger


def reserve(ledger: Ledger, command: Reserve) -> Reply:
    scope = ledger.admitted(command.scope, command.amount)
    if not isinstance(scope, Scope):
        return scope
    ttl = ledger.config.reservation_ttl if command.ttl is None else command.ttl
    reservation, held = ledger.reservations.add(
        scope.path, command.amount, ttl, command.meta, ledger.now
    )
    ledger.tree.hold(scope, command.amount)
    if ledger.verbose:
        ledger.emit(
            ReservationCreated,
            scope,
            reservation=reservation,
            amount=Usage.of(command.amount),
            model=command.meta.model if command.meta else None,
        )
    return Granted(reservation, held.deadline, held.token)


def _never_made(ledger: Ledger, reservation: int, token: int | None) -> Rejected | None:
    """``None`` if the id was issued (so it was settled or it expired), else why not.
    A handle's id (it has a token) was granted: a shared store that lost the
    write which made it may not count it as issued any more."""
    if token is not None or ledger.reservations.issued(reservation):
        return None
    return Rejected("reservation", f"reservation {reservation} was never made by {ledger.name!r}")


def commit(ledger: Ledger, command: Commit) -> Reply:
    held = ledger.reservations.take(command.reservation, command.token)
    if held is None:
        # Handles settle once, so an issued id no longer open (or open as another
        # reservation) has expired. Its usage happened: it is recorded all the
        # same, past any cap.
        if (rejected := _never_made(ledger, command.reservation, command.token)) is not None:
            return rejected
        if command.actual is not None:  # (what it held is not known any more)
            scope = ledger.nearest(command.scope)
            ledger.charge(scope, command.actual, command.meta, "late_commit", command.reservation)
        return Settled(command.reservation, expired=True)
    scope = ledger.tree.scopes[held.scope]
    ledger.tree.hold(scope, held.amount, -1)
    meta = held.meta.merged(command.meta) if held.meta else command.meta
    actual = held.amount if command.actual is None else command.actual
    ledger.charge(scope, actual, meta, "commit", command.reservation)
    if ledger.verbose:
        ledger.emit(
            ReservationCommitted,
            scope,
            reservation=command.reservation,
            actual=Usage.of(actual),
        )
    ledger.tree.forget_drained(scope)
    return Settled(command.reservation)


def release(ledger: Ledger, command: Release) -> Reply:
    held = ledger.reservations.take(command.reservation, command.token)
    if held is None:
        never = _never_made(ledger, command.reservation, command.token)
        return never or Settled(command.reservation, True)
    scope = ledger.end(held)
    if ledger.verbose:
        ledger.emit(ReservationReleased, scope, reservation=command.reservation)
    return Settled(command.reservation)


def record(ledger: Ledger, command: Record | Consume) -> Reply:
    scope = ledger.admitted(command.scope, command.amount)
    if not isinstance(scope, Scope):
        return scope
    if isinstance(command, Consume):
        estimate = command.amount[TOKENS]
        scope.consumed[estimate] = scope.consumed.get(estimate, 0) + 1
        return ledger.charge(scope, command.amount, None, "consume")
    return ledger.charge(scope, command.amount, command.meta, "record")


def charge(ledger: Ledger, command: Charge) -> Reply:
    return ledger.charge(ledger.nearest(command.scope), command.amount, command.meta, "charge")


def refund(ledger: Ledger, command: Refund) -> Reply:
    scope = ledger.find(command.scope)
    if isinstance(scope, Rejected):
        return scope
    outstanding = scope.consumed.get(command.estimated, 0)
    if not outstanding:
        return Rejected(
            "refund",
            f"no consume({command.estimated}) is waiting for a refund in this scope; "
            "refund(actual_used, estimated) corrects one earlier consume of that estimate",
        )
    if outstanding == 1:
        del scope.consumed[command.estimated]
    else:
        scope.consumed[command.estimated] = outstanding - 1
    difference = command.estimated - command.actual
    amount = on_axis(TOKENS, abs(difference))
    if difference > 0:
        ledger.tree.credit(scope, amount, None, None)
        ledger.uncharge(scope, amount, None, "refund")
    elif difference < 0:  # it used more than estimated: that spend happened
        ledger.charge(scope, amount, None, "refund", calls=0)
    return None


def take_back(ledger: Ledger, command: TakeBack) -> Reply:
    scope = ledger.tree.scopes.get(command.scope)
    if scope is None:
        return None  # forgotten since: nothing of it is left to take back
    model = command.meta.model if command.meta else None
    if command.resets == ledger.resets:  # else a reset zeroed it already
        ledger.tree.credit(scope, command.amount, command.at, model)
        ledger.uncharge(scope, command.amount, command.meta, "take_back")
    if command.consumed:
        estimate = command.amount[TOKENS]
        left = scope.consumed.get(estimate, 0) - 1
        if left > 0:
            scope.consumed[estimate] = left
        else:
            scope.consumed.pop(estimate, None)
    return None


HANDLERS: Final[dict[type, Callable[[Any, Any], Reply]]] = {
    Reserve: reserve,
    Commit: commit,
    Release: release,
    Record: record,
    Consume: record,
    Charge: charge,
    Refund: refund,
    TakeBack: take_back,
}
