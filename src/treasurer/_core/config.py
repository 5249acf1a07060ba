"""One configuration type for a budget, validated once.

``open_budget``, ``treasurer.sync.open_budget``, ``TenantCaps`` and ``child``
all build their caps with :meth:`Limits.build`; ``open_budget``'s other
options are checked by :meth:`BudgetConfig.build`. A mistake raises where it
was written, before anything starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Final

import attrs

from .._errors import InvalidAmountType, InvalidOption
from .axes import NO_CAPS, CapVector, count, parse_caps
from .options import CapOptions
from .windows import Window

DEFAULT_THRESHOLDS: Final = (50, 75, 90, 100)
DEFAULT_RESERVATION_TTL: Final = timedelta(minutes=15)
MAX_TTL: Final = timedelta(days=36_525)  # a century: longer is a mistake, not a plan
_RESERVED_NAMES: Final = frozenset({"lifetime", "request"})


@attrs.frozen
class Limits:
    """The caps of one scope: for its whole life, per request, per time window."""

    caps: CapVector = NO_CAPS
    per_request: CapVector = NO_CAPS
    windows: tuple[Window, ...] = ()

    @classmethod
    def build(
        cls,
        caps: CapOptions | Mapping[str, object],
        per_request: object = None,
        windows: object = (),
    ) -> Limits:
        if per_request is not None and not isinstance(per_request, Mapping):
            raise InvalidAmountType(
                f"per_request must be a mapping of axis to cap, not {per_request!r}"
            )
        return cls(parse_caps(caps), parse_caps(per_request or {}), window_list(windows))


def window_list(windows: object) -> tuple[Window, ...]:
    """A sequence of uniquely named windows, none called "lifetime" or "request"."""
    if (
        isinstance(windows, str)
        or not isinstance(windows, Sequence)
        or not all(isinstance(w, Window) for w in windows)
    ):
        raise InvalidOption(f"windows must be a sequence of treasurer.Window, not {windows!r}")
    names = [w.name for w in windows]
    if len(set(names)) != len(names) or _RESERVED_NAMES & set(names):
        raise InvalidOption(f"window names must be unique and not lifetime or request: {names}")
    return tuple(windows)


def ttl(value: object, name: str = "ttl") -> timedelta:
    """A reservation time-to-live: positive, and at most a century."""
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidOption(f"{name} must be a positive timedelta, not {value!r}")
    if value > MAX_TTL and value != timedelta.max:
        raise InvalidOption(f"{name} must be at most {MAX_TTL.days} days, not {value!r}")
    return value


def name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidOption(f"{what} must be a non-empty str, not {value!r}")
    return value


@attrs.frozen
class BudgetConfig:
    """Everything a store needs to apply commands: caps, tenants, thresholds, TTL."""

    name: str
    limits: Limits = Limits()
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    reservation_ttl: timedelta | None = DEFAULT_RESERVATION_TTL
    tenant_defaults: Limits = Limits()
    tenants: Mapping[str, Limits] = attrs.field(factory=dict)

    @classmethod
    def build(
        cls,
        name_: str,
        limits: Limits,
        *,
        thresholds: object = DEFAULT_THRESHOLDS,
        reservation_ttl: object = DEFAULT_RESERVATION_TTL,
        tenant_defaults: Limits | None = None,
        tenants: Mapping[str, Limits] | None = None,
    ) -> BudgetConfig:
        return cls(
            name(name_, "name"),
            limits,
            threshold_list(thresholds),
            None if reservation_ttl is None else ttl(reservation_ttl, "reservation_ttl"),
            tenant_defaults or Limits(),
            dict(tenants or {}),
        )


def threshold_list(thresholds: object) -> tuple[int, ...]:
    """Alert thresholds, in percent of a cap: distinct, above zero, sorted."""
    if not isinstance(thresholds, Sequence) or isinstance(thresholds, str):
        raise InvalidOption(f"thresholds must be a sequence of percentages, not {thresholds!r}")
    values = tuple(count(value, "threshold") for value in thresholds)
    if any(value == 0 for value in values) or len(set(values)) != len(values):
        raise InvalidOption(f"thresholds must be distinct percentages above 0, got {values}")
    return tuple(sorted(values))
