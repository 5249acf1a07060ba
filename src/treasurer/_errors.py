"""Exceptions. Each also subclasses the built-in with the same meaning."""

from __future__ import annotations

from decimal import Decimal

Quantity = int | Decimal


class TreasurerError(Exception):
    """Base class for every treasurer exception."""


class BudgetExceeded(TreasurerError):
    """A request does not fit in the budget; nothing was changed.

    ``cap`` names the first cap that refused it ("input_tokens",
    "output_tokens", "tokens", "usd" or "requests"). USD figures are
    ``Decimal``; token and request figures are ``int``.
    """

    def __init__(
        self,
        *,
        budget: str,
        cap: str,
        limit: Quantity,
        requested: Quantity,
        used: Quantity,
        reserved: Quantity,
    ) -> None:
        self.budget = budget
        self.cap = cap
        self.limit = limit
        self.requested = requested
        self.used = used
        self.reserved = reserved
        self.attempted: Quantity = used + reserved + requested
        self.available: Quantity = max(limit - used - reserved, 0)
        super().__init__(self._describe())

    def _describe(self) -> str:
        return (
            f"budget {self.budget!r}: {self.cap} cap of {self.limit} exceeded: "
            f"requested {self.requested} but only {self.available} available "
            f"({self.used} used, {self.reserved} reserved); "
            f"it would have reached {self.attempted}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.__dict__))


class RequestTooLarge(BudgetExceeded, ValueError):
    """A single request is larger than the cap itself, so it can never fit."""

    def _describe(self) -> str:
        return (
            f"budget {self.budget!r}: requested {self.requested} {self.cap}, more than "
            f"the whole {self.cap} cap of {self.limit}, so it can never fit "
            f"({self.used} used, {self.reserved} reserved, {self.available} available; "
            f"it would have reached {self.attempted})"
        )


def _rebuild(cls: type[BudgetExceeded], state: dict[str, object]) -> BudgetExceeded:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    error.args = (error._describe(),)
    return error


class InvalidAmount(TreasurerError, ValueError):
    """An amount is negative, not finite, or inconsistent with the others."""


class InvalidAmountType(TreasurerError, TypeError):
    """An amount has the wrong type (a float token count, a bool, a string...)."""


class UnknownAxis(TreasurerError, TypeError):
    """A keyword names no budget axis."""


class ReservationError(TreasurerError, RuntimeError):
    """A reservation was used in a way its lifecycle does not allow."""


class AlreadySettled(ReservationError):
    """The reservation was already committed or released; it settles once."""


class BudgetClosed(TreasurerError, RuntimeError):
    """The budget's ``async with`` block has ended; it serves no more calls."""


class BudgetBroken(BudgetClosed):
    """The budget's actor failed; the original error is the ``__cause__``."""
