"""A reservation held from a thread: ``with budget.reserve(...) as r:`` on a
:class:`~treasurer.sync.SyncBudget`."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, Unpack

import anyio
import anyio.lowlevel

from .._core.options import UsageInfo
from .._core.values import Usage
from .._errors import (
    AlreadySettled,
    BudgetClosed,
    ReservationError,
    ReservationExpired,
)
from .._handles.reservation import Reservation, validate_commit
from .calls import Caller, PortalCaller
from .interrupts import DeferredInterrupts


class SyncReservation:
    """A reservation for synchronous code: ``with budget.reserve(...) as r:``.

    Same rules as :class:`treasurer.Reservation`: leaving the block without
    :meth:`commit`, including by an exception, releases it. A commit is
    validated at once and sent with the end of the block, in one call to the
    budget's thread. A Ctrl-C that lands while the thread waits for the
    budget never leaves the reservation open.
    """

    __slots__ = ("_abandoned", "_caller", "_committed", "_reservation", "_timeout")

    def __init__(self, caller: Caller, reservation: Reservation, timeout: float | None) -> None:
        self._caller = caller
        self._reservation = reservation
        self._timeout = timeout
        self._committed: dict[str, Any] | None = None  # a validated commit, sent at the end
        self._abandoned = False  # its thread stopped waiting for the grant

    @property
    def id(self) -> int:
        return self._reservation.id

    @property
    def amount(self) -> Usage:
        return self._reservation.amount

    @property
    def settled(self) -> bool:
        return self._committed is not None or self._reservation.settled

    @property
    def deadline(self) -> datetime | None:
        return self._reservation.deadline

    def __enter__(self) -> SyncReservation:
        caller = self._caller
        caller.check("reserve()")
        if not isinstance(caller, PortalCaller):
            caller.call(self._enter, what="reserve()")
            return self
        with DeferredInterrupts() as held:  # see .interrupts: no Ctrl-C between grant and use
            future = caller.submit(self._enter)
            try:
                with held.allowed():
                    caller.wait(future)
            except BaseException:
                # Interrupted (Ctrl-C) or timed out while the budget's thread grants
                # it: that thread decides, in order with the grant, to hand it back.
                caller.start(self._abandon, future)
                raise
            if held.pending:  # pressed just after the grant: hand it back, then raise
                caller.start(self._abandon, future)
        return self

    async def _enter(self) -> None:
        with anyio.fail_after(self._timeout):
            await self._reservation.__aenter__()
        if self._abandoned:  # its thread gave up while it was being granted
            self._reservation.release()

    def _abandon(self, future: Any) -> None:
        """On the budget's thread: the caller gave up waiting for the grant."""
        self._abandoned = True
        future.cancel()
        if self._reservation.id and not self._reservation.settled:
            self._reservation.release()

    def commit(self, **actual: Unpack[UsageInfo]) -> None:
        """Record what the call really used; see :meth:`treasurer.Reservation.commit`.

        Validated here (bad input raises and changes nothing) and applied when
        the block ends, so a late commit's :class:`ReservationExpired` is
        raised there (its usage is recorded all the same).
        """
        if self._caller.closed:
            raise BudgetClosed(f"budget {self._caller.name!r} is closed")
        if self._committed is not None or self._reservation.settled:
            raise AlreadySettled(f"reservation {self.id} was already settled")
        if self._reservation.detached:
            raise ReservationError(
                f"reservation {self.id} was detached: settle it with budget.settle({self.id})"
            )
        validate_commit(self._reservation, actual)
        self._committed = dict(actual)

    def detach(self) -> int:
        """Leave it open when the block ends and return its id; see
        :meth:`treasurer.Reservation.detach` (settle it with ``budget.settle(id)``)."""
        if self._committed is not None:
            raise AlreadySettled(f"reservation {self.id} was already settled")
        rid: int = self._caller.call(self._detach, what="detach()")
        return rid

    async def _detach(self) -> int:
        return self._reservation.detach()

    def release(self) -> None:
        """Give the reservation back without recording usage; applied when it returns."""
        if self._committed is not None:
            raise AlreadySettled(f"reservation {self.id} was already settled")
        self._caller.call(self._release, what="release()")

    async def _release(self) -> None:
        self._reservation.release()
        await self._reservation.applied()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with DeferredInterrupts() as held:
            self._exit(exc_type, held)

    def _exit(self, exc_type: type[BaseException] | None, held: DeferredInterrupts) -> None:
        committed = self._committed
        sent = None
        try:
            if isinstance(self._caller, PortalCaller):
                sent = self._caller.start(self._settle, committed, exc_type is None)
                if sent is not None:
                    with held.allowed():  # sent: it is applied whatever happens now
                        self._caller.wait(sent)
                elif self._caller.closed:
                    self._caller.check("commit()")  # raises BudgetClosed
            else:
                self._caller.call(self._settle, committed, exc_type is None, what="commit()")
        except BudgetClosed:
            # The budget is gone, and with it what this held (releasing a
            # reservation of a stopped budget only marks it settled); but a
            # commit it could not record must not vanish without a word.
            if not self._reservation.settled:
                self._reservation.release()
            if committed is not None and exc_type is None:
                raise
        finally:
            if sent is None and isinstance(self._caller, PortalCaller):
                # Interrupted before the settlement got out: send it now (it is
                # applied once whatever happens, so sending it twice is harmless).
                self._caller.start(self._settle, committed, False)

    async def _settle(self, committed: dict[str, Any] | None, raise_late: bool) -> None:
        """On the budget's thread: what commit() and leaving the block do, once."""
        reservation = self._reservation
        late: ReservationExpired | None = None
        if committed is not None and reservation.id and not reservation.settled:
            try:
                reservation.commit(**committed)
            except ReservationExpired as error:
                late = error
        await reservation.__aexit__(None if raise_late else BaseException, None, None)
        if late is not None and raise_late:
            raise late

    def __repr__(self) -> str:
        return repr(self._reservation).replace("<Reservation", "<SyncReservation", 1)
