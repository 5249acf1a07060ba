"""The budget arithmetic as a pure state machine: no I/O, no event loop, no clock.

Only the actor calls it, one message at a time, so no method needs a lock.
Refusals are *returned* as exception instances rather than raised, so the
caller's task raises them with its own traceback and the actor never unwinds.
"""

from __future__ import annotations

from typing import Final

from ._amounts import AXES, NO_CAPS, CapVector, Vector, to_public
from ._errors import BudgetExceeded, RequestTooLarge, ReservationError

State = tuple[Vector, Vector, int, int]
"""What the actor publishes: used, reserved, calls, open reservations."""


class Ledger:
    """Used and reserved amounts per axis, checked against fixed caps."""

    __slots__ = (
        "_capped",
        "_next_id",
        "_per_request_capped",
        "calls",
        "caps",
        "name",
        "per_request",
        "reservations",
        "reserved",
        "used",
    )

    def __init__(
        self, caps: CapVector, name: str = "budget", per_request: CapVector = NO_CAPS
    ) -> None:
        self.name: Final = name
        self.caps: Final = caps
        self.per_request: Final = per_request
        self._capped: Final = tuple(i for i, cap in enumerate(caps) if cap is not None)
        self._per_request_capped: Final = tuple(
            i for i, cap in enumerate(per_request) if cap is not None
        )
        self.used = [0] * len(AXES)
        self.reserved = [0] * len(AXES)
        self.reservations: dict[int, Vector] = {}
        self.calls = 0
        self._next_id = 1

    # -- admission ---------------------------------------------------------------

    def refusal(self, amount: Vector) -> BudgetExceeded | None:
        """Why ``amount`` cannot be admitted now, or ``None`` if it fits.

        First a cap the request can never fit (per request, then whole caps),
        then the first cap in axis order that it does not fit now.
        """
        for axis in self._per_request_capped:
            limit = self.per_request[axis]
            assert limit is not None
            if amount[axis] > limit:
                return RequestTooLarge(
                    budget=self.name,
                    cap=AXES[axis],
                    limit=to_public(axis, limit),
                    requested=to_public(axis, amount[axis]),
                    used=to_public(axis, 0),
                    reserved=to_public(axis, 0),
                    attempted=to_public(axis, amount[axis]),
                    available=to_public(axis, limit),
                    window="request",
                )
        caps, used, reserved = self.caps, self.used, self.reserved
        for axis in self._capped:
            cap = caps[axis]
            assert cap is not None
            if amount[axis] > cap:
                return self._exceeded(RequestTooLarge, axis, amount)
        for axis in self._capped:
            cap = caps[axis]
            assert cap is not None
            if used[axis] + reserved[axis] + amount[axis] > cap:
                return self._exceeded(BudgetExceeded, axis, amount)
        return None

    def _exceeded(self, kind: type[BudgetExceeded], axis: int, amount: Vector) -> BudgetExceeded:
        cap = self.caps[axis]
        assert cap is not None
        used, reserved, requested = self.used[axis], self.reserved[axis], amount[axis]
        return kind(
            budget=self.name,
            cap=AXES[axis],
            limit=to_public(axis, cap),
            requested=to_public(axis, requested),
            used=to_public(axis, used),
            reserved=to_public(axis, reserved),
            attempted=to_public(axis, used + reserved + requested),
            available=to_public(axis, max(cap - used - reserved, 0)),
        )

    # -- operations (the actor's message handlers) -------------------------------

    def reserve(self, amount: Vector) -> int | BudgetExceeded:
        """Hold ``amount`` until it is committed or released; returns its id."""
        refusal = self.refusal(amount)
        if refusal is not None:
            return refusal
        reserved = self.reserved
        for axis, value in enumerate(amount):
            reserved[axis] += value
        reservation_id = self._next_id
        self._next_id = reservation_id + 1
        self.reservations[reservation_id] = amount
        return reservation_id

    def commit(self, reservation_id: int, actual: Vector) -> ReservationError | None:
        """End a reservation, charging what was really used, even past a cap."""
        held = self.reservations.pop(reservation_id, None)
        if held is None:
            return ReservationError(f"reservation {reservation_id} is not open")
        used, reserved = self.used, self.reserved
        for axis in range(len(AXES)):
            reserved[axis] -= held[axis]
            used[axis] += actual[axis]
        self.calls += 1
        return None

    def release(self, reservation_id: int) -> ReservationError | None:
        """End a reservation without charging anything."""
        held = self.reservations.pop(reservation_id, None)
        if held is None:
            return ReservationError(f"reservation {reservation_id} is not open")
        reserved = self.reserved
        for axis, value in enumerate(held):
            reserved[axis] -= value
        return None

    def record(self, amount: Vector) -> BudgetExceeded | None:
        """Charge ``amount`` at once if it fits; a refusal changes nothing."""
        refusal = self.refusal(amount)
        if refusal is not None:
            return refusal
        used = self.used
        for axis, value in enumerate(amount):
            used[axis] += value
        self.calls += 1
        return None

    def adjust(self, credit: tuple[int, ...]) -> None:
        """Give ``credit`` back to the budget (negative entries charge more).

        Usage never drops below zero: the part of a credit for usage from
        before a :meth:`reset` is dropped rather than counted twice.
        """
        used = self.used
        for axis, value in enumerate(credit):
            if value:
                used[axis] = max(used[axis] - value, 0)

    def unrecord(self, amount: Vector) -> None:
        """Take back a :meth:`record` whose caller was cancelled before it saw the reply."""
        self.adjust(amount)
        self.calls = max(self.calls - 1, 0)

    def reset(self) -> None:
        """Zero all usage; open reservations stay reserved."""
        self.used = [0] * len(AXES)
        self.calls = 0

    # -- reads -------------------------------------------------------------------

    def state(self) -> State:
        """An immutable copy of the current figures."""
        used, reserved = self.used, self.reserved
        return (
            (used[0], used[1], used[2], used[3], used[4]),
            (reserved[0], reserved[1], reserved[2], reserved[3], reserved[4]),
            self.calls,
            len(self.reservations),
        )

    def __repr__(self) -> str:
        parts = []
        for axis, name in enumerate(AXES):
            cap = self.caps[axis]
            shown = "-" if cap is None else str(to_public(axis, cap))
            used = to_public(axis, self.used[axis])
            parts.append(f"{name}={used}+{to_public(axis, self.reserved[axis])}/{shown}")
        return f"<Ledger {self.name!r} {' '.join(parts)} open={len(self.reservations)}>"
