"""Commands: what a handle asks of a budget, as frozen values.

The actor hands them to the store, which applies them to the ledger in order.
Every command names the scope it acts in (see :mod:`.scopes`), so a tenant's
or a child budget's command is the same type as the budget's own. Commands
are named tuples: immutable, slotted, typed, and the cheapest such value to
make (one is made for every call).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

import attrs

from .._errors import InvalidAmountType, UnknownAxis
from .axes import AXES, CapVector, Vector
from .config import Limits
from .options import METADATA_KEYS
from .scopes import ScopePath


@attrs.frozen
class Meta:
    """What a call says about itself: carried into its events and usage records."""

    model: str | None = None
    request_id: str | None = None
    session_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def merged(self, later: Meta | None) -> Meta:
        """These fields, updated by those ``later`` gives (a commit after its reserve)."""
        if later is None:
            return self
        tags = dict(self.tags)
        tags.update(later.tags)
        return Meta(
            later.model or self.model,
            later.request_id or self.request_id,
            later.session_id or self.session_id,
            tuple(sorted(tags.items())),
        )


def split_usage(
    given: Mapping[str, object],
) -> tuple[dict[str, object], Meta | None, str | None]:
    """Separate a call's keywords into amounts, metadata and a named tenant; validates
    the metadata (amounts are validated by :func:`.axes.parse`)."""
    amounts: dict[str, object] = {}
    fields: dict[str, object] = {}
    tenant: str | None = None
    for key, value in given.items():
        if key in AXES:
            amounts[key] = value
        elif key == "tenant":
            tenant = _text(key, value)
        elif key == "tags":
            fields[key] = _tags(value)
        elif key in METADATA_KEYS:
            fields[key] = _text(key, value)
        else:
            raise UnknownAxis(
                f"unknown keyword {key!r}; expected an axis ({', '.join(AXES)}) "
                f"or metadata ({', '.join(METADATA_KEYS)})"
            )
    return amounts, (Meta(**fields) if fields else None), tenant  # type: ignore[arg-type]


def _text(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidAmountType(f"{key} must be a str, got {type(value).__name__} {value!r}")
    return value


def _tags(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidAmountType(f"tags must be a mapping of str to str, got {value!r}")
    return tuple(sorted(value.items()))


class Reserve(NamedTuple):
    """Hold ``amount`` until committed, released or expired; refused if it does not fit.

    ``ttl`` of ``None`` takes the budget's default; ``timedelta.max`` never expires.
    """

    scope: ScopePath
    amount: Vector
    ttl: timedelta | None = None
    meta: Meta | None = None


class Commit(NamedTuple):
    """End a reservation, charging what was used (``None``: what it holds), even past a cap.

    ``token``: the one its handle was granted (``None``: settled by id alone)."""

    scope: ScopePath
    reservation: int
    actual: Vector | None
    meta: Meta | None = None
    token: int | None = None


class Release(NamedTuple):
    """End a reservation without charging anything (``token``: as for :class:`Commit`)."""

    scope: ScopePath
    reservation: int
    token: int | None = None


class Record(NamedTuple):
    """Charge ``amount`` at once if it fits; a refusal changes nothing."""

    scope: ScopePath
    amount: Vector
    meta: Meta | None = None


class Consume(NamedTuple):
    """A record that a later :class:`Refund` of the same estimate may correct."""

    scope: ScopePath
    amount: Vector


class Refund(NamedTuple):
    """Correct an outstanding :class:`Consume` of ``estimated`` tokens to ``actual``."""

    scope: ScopePath
    actual: int
    estimated: int


class Charge(NamedTuple):
    """Record usage that already happened, whatever the caps: never refused."""

    scope: ScopePath
    amount: Vector
    meta: Meta | None = None


class TakeBack(NamedTuple):
    """Undo a record or consume made ``at`` whose caller never saw the reply.

    ``resets`` is its :class:`~.outcomes.Charged` reply's: if a reset came in
    between, that usage was zeroed already and nothing is given back (else the
    usage made since the reset would be erased).
    """

    scope: ScopePath
    amount: Vector
    at: datetime
    meta: Meta | None = None
    consumed: bool = False
    resets: int = 0


class Reset(NamedTuple):
    """Zero usage (of one window's current period if ``window`` is given)."""

    scope: ScopePath
    window: str | None = None


class SetOverride(NamedTuple):
    """Raise the caps of one period ("lifetime" or a window) until ``expires_at``."""

    scope: ScopePath
    window: str
    increase: Vector
    expires_at: datetime
    reason: str = ""
    created_by: str = ""


class RemoveOverride(NamedTuple):
    """End an override of this scope before it expires."""

    scope: ScopePath
    override: int


class SetTenantCaps(NamedTuple):
    """Give a tenant its own caps from now on (``None``: back to the defaults)."""

    tenant: str
    limits: Limits | None


class OpenChild(NamedTuple):
    """Carve a child budget out of ``scope``: hold ``caps`` there until it closes."""

    scope: ScopePath
    name: str | None
    caps: CapVector

    def carve(self) -> Vector:
        """What the child's caps hold in its parent: each cap, zero where it has none."""
        return tuple(cap or 0 for cap in self.caps)


class CloseChild(NamedTuple):
    """Stop a child taking requests; what it holds comes back as it settles."""

    scope: ScopePath


class Probe(NamedTuple):
    """Would ``amount`` fit now? Changes nothing (``budget.check()``)."""

    scope: ScopePath
    amount: Vector


class ReadUsage(NamedTuple):
    """Usage figures of one period of a scope."""

    scope: ScopePath
    period: str


Command = (
    Reserve
    | Commit
    | Release
    | Record
    | Consume
    | Refund
    | Charge
    | TakeBack
    | Reset
    | SetOverride
    | RemoveOverride
    | SetTenantCaps
    | OpenChild
    | CloseChild
    | Probe
    | ReadUsage
)

SETTLEMENTS = (Commit, Release, Refund, Charge, TakeBack, CloseChild)
"""Commands that always take effect, even when their caller is cancelled: the
spend or release they describe has already happened."""
