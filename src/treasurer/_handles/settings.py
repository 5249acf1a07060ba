"""The options of ``open_budget`` (async and sync), validated into one value."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Unpack

import attrs

from .._core.axes import AXES, CapVector, count
from .._core.config import DEFAULT_RESERVATION_TTL, DEFAULT_THRESHOLDS, BudgetConfig, Limits
from .._core.options import CapOptions, Money
from .._core.values import Caps
from .._core.windows import FOREVER, Window
from .._errors import InvalidAmount, InvalidOption, UnknownAxis
from .._ops.alerts import Channel, channels
from .._ops.forecast import ForecastOptions
from .._runtime.usage_log import UsageLog
from .._stores.base import Clock, Store, system_clock
from .._stores.memory import MemoryStore

if TYPE_CHECKING:
    from .._core.events import Event

DEFAULT_MAILBOX_SIZE: Final = 4096
_names = iter(range(1, 2**62))


class TenantCaps:
    """The caps of a tenant: for its whole life, per request, per time window.

    ``TenantCaps(tokens=100_000, usd=5, per_request={"tokens": 8_000},
    windows=[Window.hour(tokens=20_000)])``. Omitted caps are unbounded (the
    budget's own caps still apply). Validated when made, so a mistake raises
    where it was written.
    """

    __slots__ = ("limits",)

    def __init__(
        self,
        *,
        per_request: Mapping[str, int | Money | None] | None = None,
        windows: Sequence[Window] = (),
        **caps: Unpack[CapOptions],
    ) -> None:
        self.limits: Final = Limits.build(caps, per_request, windows)

    @property
    def caps(self) -> Caps:
        return Caps.of(self.limits.caps)

    @property
    def per_request(self) -> Caps:
        return Caps.of(self.limits.per_request)

    @property
    def windows(self) -> tuple[Window, ...]:
        return self.limits.windows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TenantCaps) and other.limits == self.limits

    def __hash__(self) -> int:
        return hash(self.limits)

    def __repr__(self) -> str:
        return (
            f"TenantCaps(caps={self.caps}, per_request={self.per_request}, windows={self.windows})"
        )


class BudgetOptions(CapOptions, total=False):
    """Every keyword of ``open_budget`` (see its docstring)."""

    name: str
    max_tokens: int | None
    per_request: Mapping[str, int | Money | None] | None
    windows: Sequence[Window]
    thresholds: Sequence[int]
    reservation_ttl: timedelta | None
    tenant_defaults: TenantCaps | None
    tenants: Mapping[str, TenantCaps] | None
    clock: Callable[[], datetime] | None
    on_event: Callable[[Event], object] | None
    mailbox_size: int
    store: Store | None
    reconfigure: bool
    usage_log: UsageLog | None
    alerts: Sequence[Channel] | None
    forecast: ForecastOptions | bool | None


_KNOWN: Final = frozenset(BudgetOptions.__annotations__) | frozenset(CapOptions.__annotations__)


def _cap_options(caps: CapVector) -> dict[str, int | Decimal]:
    public = Caps.of(caps)
    return {axis: cap for axis in AXES if (cap := getattr(public, axis)) is not None}


def _tenant_caps_of(limits: Limits) -> TenantCaps:
    per_request = _cap_options(limits.per_request)
    return TenantCaps(
        per_request=per_request or None,
        windows=limits.windows,
        **_cap_options(limits.caps),  # type: ignore[arg-type]
    )


def options_of(config: BudgetConfig) -> BudgetOptions:
    """The keywords of ``open_budget`` that give exactly ``config``."""
    options: BudgetOptions = {
        "name": config.name,
        "windows": config.limits.windows,
        "thresholds": config.thresholds,
        "reservation_ttl": config.reservation_ttl,
        "tenant_defaults": _tenant_caps_of(config.tenant_defaults),
        "tenants": {name: _tenant_caps_of(limits) for name, limits in config.tenants.items()},
    }
    options.update(_cap_options(config.limits.caps))  # type: ignore[typeddict-item]
    per_request = _cap_options(config.limits.per_request)
    if per_request:
        options["per_request"] = per_request
    return options


@attrs.frozen
class Settings:
    """``open_budget``'s options, validated: the budget's configuration and how to run it."""

    config: BudgetConfig
    clock: Clock
    on_event: Callable[[Event], object] | None
    mailbox_size: int
    store: Store
    usage_log: UsageLog | None
    reconfigure: bool = False
    alerts: tuple[Channel, ...] = ()
    forecast: ForecastOptions | None = None

    @classmethod
    def build(cls, options: Mapping[str, Any], function: str = "open_budget") -> Settings:
        """Validate ``open_budget``'s keywords; raises a typed error for any mistake."""
        unknown = sorted(set(options) - _KNOWN)
        if unknown:
            raise UnknownAxis(
                f"{function}() got an unknown keyword {unknown[0]!r}; "
                f"expected one of {', '.join(sorted(_KNOWN))}"
            )
        caps = {axis: options.get(axis) for axis in AXES}
        max_tokens = options.get("max_tokens")
        if max_tokens is not None:
            if caps["tokens"] is not None:
                raise InvalidAmount("give either tokens or its alias max_tokens, not both")
            caps["tokens"] = max_tokens
        limits = Limits.build(caps, options.get("per_request"), options.get("windows", ()))
        name = options.get("name")
        config = BudgetConfig.build(
            f"budget-{next(_names)}" if name is None else name,
            limits,
            thresholds=options.get("thresholds", DEFAULT_THRESHOLDS),
            reservation_ttl=options.get("reservation_ttl", DEFAULT_RESERVATION_TTL),
            tenant_defaults=_tenant_caps(options.get("tenant_defaults"), "tenant_defaults"),
            tenants=_tenants(options.get("tenants")),
        )
        on_event = options.get("on_event")
        if on_event is not None and not callable(on_event):
            raise InvalidOption(f"on_event must be callable, not {on_event!r}")
        mailbox_size = options.get("mailbox_size", DEFAULT_MAILBOX_SIZE)
        if count(mailbox_size, "mailbox_size") < 1:
            raise InvalidAmount("mailbox_size must be >= 1")
        store = options.get("store") or MemoryStore()
        if not isinstance(store, Store):
            raise InvalidOption(
                f"store must be a treasurer store (MemoryStore, ...), not {store!r}"
            )
        usage_log = options.get("usage_log")
        if usage_log is not None and not isinstance(usage_log, UsageLog):
            raise InvalidOption(f"usage_log must be a treasurer usage log, not {usage_log!r}")
        reconfigure = options.get("reconfigure", False)
        if not isinstance(reconfigure, bool):
            raise InvalidOption(f"reconfigure must be True or False, not {reconfigure!r}")
        return cls(
            config,
            _clock(options.get("clock")),
            on_event,
            mailbox_size,
            store,
            usage_log,
            reconfigure,
            channels(options.get("alerts")),
            ForecastOptions.of(options.get("forecast")),
        )


def _clock(clock: Clock | None) -> Clock:
    if clock is None:
        return system_clock
    if not callable(clock):
        raise InvalidOption(f"clock must be a callable returning an aware datetime, not {clock!r}")
    now = clock()
    if not isinstance(now, datetime) or now.utcoffset() is None or now > FOREVER:
        raise InvalidOption(f"clock must return an aware datetime, got {now!r}")
    return clock


def _tenant_caps(caps: object, what: str) -> Limits | None:
    if caps is None:
        return None
    if not isinstance(caps, TenantCaps):
        raise InvalidOption(f"{what} must be a treasurer.TenantCaps, not {caps!r}")
    return caps.limits


def _tenants(tenants: object) -> dict[str, Limits]:
    if tenants is None:
        return {}
    if not isinstance(tenants, Mapping):
        raise InvalidOption(f"tenants must map tenant names to TenantCaps, not {tenants!r}")
    limits = {}
    for name, caps in tenants.items():
        if not isinstance(name, str) or not name:
            raise InvalidOption(f"a tenant is named by a non-empty str, not {name!r}")
        limits[name] = _tenant_caps(caps, f"tenants[{name!r}]") or Limits()
    return limits
