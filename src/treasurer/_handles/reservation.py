"""``Reservation``: budget held for one call, committed or released exactly once."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Final, Unpack

import anyio

from .._core.axes import REQUESTS, Vector, parse
from .._core.commands import Commit, Meta, Release, Reserve, split_usage
from .._core.options import UsageInfo
from .._core.outcomes import Granted, Refusal, Rejected, Settled
from .._core.scopes import ScopePath, tenant_of
from .._core.values import Usage
from .._errors import AlreadySettled, InvalidOption, ReservationError, ReservationExpired

if TYPE_CHECKING:
    from .._runtime.slots import Slot
    from .core import BudgetCore

_NEW: Final = "new"
_OPEN: Final = "open"
_SETTLED: Final = "settled"
_DETACHED: Final = "detached"  # left open past the block, to be settled by id


class Reservation:
    """Budget held for one call: commit what it really used, or it is released.

    Use it as ``async with budget.reserve(...) as r:``. Entering waits for the
    actor and raises :class:`BudgetExceeded` at once if the request does not
    fit. Leaving the block without :meth:`commit` (normally, by an exception,
    or by cancellation) releases it. It settles exactly once. Leaving the
    block waits until the settlement is applied, so what follows sees it.
    """

    __slots__ = (
        "_amount",
        "_core",
        "_deadline",
        "_id",
        "_meta",
        "_pending",
        "_report_late",
        "_scope",
        "_state",
        "_token",
        "_ttl",
        "_wait",
    )

    def __init__(
        self,
        core: BudgetCore,
        scope: ScopePath,
        amount: Vector,
        meta: Meta | None,
        ttl: timedelta | None = None,
        wait: bool = False,
    ) -> None:
        self._core = core
        self._scope = scope
        self._amount = amount
        self._meta = meta
        self._ttl = ttl
        self._wait = wait
        self._id = 0
        self._token: int | None = None  # names it apart from a reservation given its id again
        self._deadline: datetime | None = None
        self._state = _NEW
        self._pending: Slot | None = None  # the settlement posted, until it is applied
        self._report_late = False  # a commit whose lateness was not raised yet

    @property
    def deadline(self) -> datetime | None:
        """When the budget releases it if still unsettled (``None``: never), on its clock."""
        return self._deadline

    @property
    def id(self) -> int:
        """The budget's number for this reservation (0 until granted)."""
        return self._id

    @property
    def amount(self) -> Usage:
        """What the reservation holds."""
        return Usage.of(self._amount)

    @property
    def settled(self) -> bool:
        """Whether it was committed or released (or has expired and been settled since)."""
        return self._state == _SETTLED

    @property
    def detached(self) -> bool:
        """Whether :meth:`detach` left it open past the block, to be settled by id."""
        return self._state == _DETACHED

    @property
    def tenant(self) -> str | None:
        """The tenant it was made for (``None``: the budget itself)."""
        return tenant_of(self._scope)

    async def __aenter__(self) -> Reservation:
        if self._state != _NEW:
            raise ReservationError("a reservation can be entered only once")
        command = Reserve(self._scope, self._amount, self._ttl, self._meta)
        reply = await self._core.actor.request(command, wait=self._wait)
        if isinstance(reply, Refusal | Rejected):
            raise reply.error()
        assert isinstance(reply, Granted)
        self._id, self._deadline, self._token = reply.reservation, reply.deadline, reply.token
        self._state = _OPEN
        return self

    def commit(self, **actual: Unpack[UsageInfo]) -> None:
        """Record what the call really used; it may be below or above the estimate.

        Without amounts it commits what was reserved; ``commit(tokens=0)``
        commits nothing used (or use :meth:`release`). Omitted axes count as
        zero, except ``requests``, which defaults to what was reserved.
        Metadata (``model=``, ``request_id=``, ...) adds to what ``reserve``
        said. Spend above the estimate is recorded even past a cap: it
        happened. Synchronous and never blocks, so it works anywhere,
        including in a cancelled scope; leaving the block waits until it is
        applied.

        Past the reservation's :attr:`deadline` the budget has released it:
        the usage is recorded all the same, and :class:`ReservationExpired`
        is raised, here if the budget's clock already says so, else when the
        block ends.
        """
        self._check_open()
        self._post_commit(validate_commit(self, actual))
        self._raise_if_late()

    def _post_commit(self, usage: tuple[Vector, Meta | None]) -> None:
        actor = self._core.actor
        if actor.finished:
            raise actor.closed_error()
        actual, meta = usage
        self._pending = actor.post_awaitable(
            Commit(self._scope, self._id, actual, meta, self._token)
        )
        self._state = _SETTLED
        self._report_late = True

    def _raise_if_late(self) -> None:
        if self._deadline is not None and self._core.settings.clock() >= self._deadline:
            self._report_late = False  # raised here, not again when the block ends
            raise ReservationExpired(
                f"reservation {self._id} expired at {self._deadline.isoformat()} before it was "
                "committed; its usage was recorded all the same"
            )

    def release(self) -> None:
        """Give the whole reservation back without recording usage."""
        self._check_open()
        self._post_release()

    def _post_release(self) -> None:
        self._state = _SETTLED
        actor = self._core.actor
        if not actor.finished:  # a budget that has stopped holds nothing any more
            self._pending = actor.post_awaitable(Release(self._scope, self._id, self._token))

    def detach(self) -> int:
        """Leave the reservation open when the block ends and return its id: it is
        settled later by ``await budget.settle(id, ...)``, in this process or in
        another that shares the budget's store, or released at its :attr:`deadline`."""
        self._check_open()
        self._state = _DETACHED
        return self._id

    def _check_open(self) -> None:
        if self._state == _DETACHED:
            raise ReservationError(
                f"reservation {self._id} was detached: settle it with budget.settle({self._id})"
            )
        if self._state == _SETTLED:
            raise AlreadySettled(f"reservation {self._id} was already settled")
        if self._state == _NEW:
            raise ReservationError("the reservation was not granted; use it with `async with`")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state == _OPEN:
            self._post_release()
        # Leaving by an exception (a cancellation among them): the settlement
        # is waited for shielded, so the code that handles it reads it applied.
        await self.applied(raise_late=exc_type is None, shielded=exc_type is not None)

    async def applied(self, *, raise_late: bool = True, shielded: bool = False) -> None:
        """Wait until the settlement is applied; raise ReservationExpired for a late commit."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if shielded:  # the actor answers within a batch, or at once if it has stopped
            with anyio.CancelScope(shield=True):
                reply = await self._core.actor.settled(pending)
        else:
            reply = await self._core.actor.settled(pending)
        late, self._report_late = self._report_late, False
        if isinstance(reply, Settled) and reply.expired and late and raise_late:
            raise ReservationExpired(
                f"reservation {self._id} was no longer held when it was committed (it "
                "expired, or a shared store lost it in a failover); its usage was "
                "recorded all the same"
            )

    def __del__(self) -> None:
        if self._state == _OPEN:
            warnings.warn(
                f"reservation {self._id} of budget {self._core.name!r} was never settled",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    def __repr__(self) -> str:
        where = self._core.name + ("" if self.tenant is None else f" ({self.tenant!r})")
        return f"<Reservation {self._id} {self._state} of {where!r}: {self.amount}>"


def validate_commit(
    reservation: Reservation, actual: Mapping[str, object]
) -> tuple[Vector, Meta | None]:
    """A commit's keywords, validated against its reservation; changes nothing.

    Without amounts, what was reserved; omitted ``requests`` is what was reserved.
    """
    amounts, meta, tenant = split_usage(actual)
    if tenant is not None and tenant != reservation.tenant:
        owner = (
            "the whole budget" if reservation.tenant is None else f"tenant {reservation.tenant!r}"
        )
        raise InvalidOption(f"tenant={tenant!r} given for a reservation of {owner}")
    reserved = reservation._amount
    if not amounts:
        return reserved, meta
    if "requests" not in amounts:
        amounts["requests"] = reserved[REQUESTS]
    return parse(amounts), meta
