"""Exceptions.

``TreasurerError`` is the root. A refusal (``BudgetExceeded``) is an ordinary
outcome, not misuse, so it is a plain ``Exception``; every error that signals
misuse also subclasses the built-in with the same meaning (``ValueError``,
``TypeError``, ``RuntimeError``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

Quantity = int | Decimal


class TreasurerError(Exception):
    """Base class for every treasurer exception."""


class BudgetExceeded(TreasurerError):
    """A request does not fit in the budget; nothing was changed.

    ``cap`` names the first cap that refused it ("input_tokens",
    "output_tokens", "tokens", "usd" or "requests") and ``window`` which of
    its caps: "lifetime" (the budget's whole life), "request" (the
    per-request cap) or a time window's name ("hour", "day", ...), with
    ``resets_at`` the instant that window next frees usage. ``tenant`` is the
    tenant whose own cap refused it and ``child`` the child budget whose own
    cap refused it (both ``None``: the budget's shared caps).
    USD figures are ``Decimal``; token and request figures are ``int``.
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
        attempted: Quantity,
        available: Quantity,
        window: str = "lifetime",
        resets_at: datetime | None = None,
        tenant: str | None = None,
        child: str | None = None,
    ) -> None:
        self.budget = budget
        self.tenant = tenant
        self.child = child
        self.cap = cap
        self.window = window
        self.resets_at = resets_at
        self.limit = limit
        self.requested = requested
        self.used = used
        self.reserved = reserved
        self.attempted = attempted
        self.available = available
        super().__init__(self._describe())

    def _describe(self) -> str:
        f = _show
        where = "" if self.window == "lifetime" else f" per {self.window}"
        resets = "" if self.resets_at is None else f"; it resets at {self.resets_at.isoformat()}"
        return (
            f"{self._scope()}: {self.cap} cap{where} of {f(self.limit)} exceeded: "
            f"requested {f(self.requested)} but only {f(self.available)} available "
            f"({f(self.used)} used, {f(self.reserved)} reserved); "
            f"it would have reached {f(self.attempted)}{resets}"
        )

    def _scope(self) -> str:
        parts = [f"budget {self.budget!r}"]
        if self.tenant is not None:
            parts.append(f"tenant {self.tenant!r}")
        if self.child is not None:
            parts.append(f"child {self.child!r}")
        return ", ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.__dict__))


class RequestTooLarge(BudgetExceeded, ValueError):
    """A single request is larger than a cap itself, or than the per-request cap,
    so it can never fit."""

    def _describe(self) -> str:
        f = _show
        if self.window == "request":
            return (
                f"{self._scope()}: requested {f(self.requested)} {self.cap}, more "
                f"than the per-request {self.cap} cap of {f(self.limit)}"
            )
        where = "" if self.window == "lifetime" else f" per {self.window}"
        return (
            f"{self._scope()}: requested {f(self.requested)} {self.cap}, more than "
            f"the whole {self.cap} cap{where} of {f(self.limit)}, so it can never fit "
            f"({f(self.used)} used, {f(self.reserved)} reserved, {f(self.available)} "
            f"available; it would have reached {f(self.attempted)})"
        )


def _show(value: Quantity) -> str:
    """Money in plain fixed-point ("0.000000001", never "1E-9")."""
    return f"{value:f}" if isinstance(value, Decimal) else str(value)


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


class InvalidOption(TreasurerError, ValueError):
    """An option (not an amount) has a value it cannot take."""


class InvalidRefund(TreasurerError, ValueError):
    """A ``refund()`` that matches no outstanding ``consume()`` of that estimate."""


class ReservationError(TreasurerError, RuntimeError):
    """A reservation was used in a way its lifecycle does not allow."""


class AlreadySettled(ReservationError):
    """The reservation was already committed or released; it settles once."""


class ReservationExpired(ReservationError):
    """The reservation outlived its time-to-live and was released by the budget.

    The usage passed to the late commit was still recorded: that spend happened.
    """


class BudgetClosed(TreasurerError, RuntimeError):
    """The budget's ``async with`` block has ended; it serves no more calls."""


class BudgetBroken(BudgetClosed):
    """The budget's actor failed; the original error is the ``__cause__``."""


class LoopThreadError(TreasurerError, RuntimeError):
    """A call from the wrong thread.

    A blocking call (``treasurer.sync``) made from a thread that runs an
    event loop would freeze that loop, so it raises this at once instead; so
    does an async call made on another event loop than the budget's, and
    ``sync_view()`` called outside the budget's event loop.
    """


class StoreUnavailable(TreasurerError, ConnectionError):
    """The store that holds the budget's state cannot be reached; nothing was
    admitted (a store fails closed)."""
