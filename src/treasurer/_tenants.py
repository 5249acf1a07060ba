"""Per-tenant caps: what ``open_budget(tenant_defaults=..., tenants=...)`` takes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from ._amounts import Money, parse_caps
from ._errors import InvalidAmountType, InvalidOption
from ._ledger import TenantSpec
from ._types import Caps
from ._windows import Window


@attrs.frozen(init=False)
class TenantCaps:
    """The caps of a tenant: for its whole life, per request, per time window.

    ``TenantCaps(tokens=100_000, usd=5, per_request={"tokens": 8_000},
    windows=[Window.hour(tokens=20_000)])``. Omitted caps are unbounded (the
    budget's own caps still apply). Validated when made, so a mistake raises
    where it was written.
    """

    caps: Caps
    per_request: Caps
    windows: tuple[Window, ...]
    _spec: TenantSpec = attrs.field(repr=False, eq=False)

    def __init__(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        tokens: int | None = None,
        usd: Money | None = None,
        requests: int | None = None,
        per_request: Mapping[str, int | Money | None] | None = None,
        windows: Sequence[Window] = (),
    ) -> None:
        caps = parse_caps(
            {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "tokens": tokens,
                "usd": usd,
                "requests": requests,
            }
        )
        if per_request is not None and not isinstance(per_request, Mapping):
            raise InvalidAmountType(
                f"per_request must be a mapping of axis to cap, not {per_request!r}"
            )
        per_request_caps = parse_caps(dict(per_request or {}))
        window_specs = validated_window_list(windows)
        self.__attrs_init__(
            Caps._from_vector(caps),
            Caps._from_vector(per_request_caps),
            window_specs,
            (caps, per_request_caps, window_specs),
        )

    @property
    def spec(self) -> TenantSpec:
        """The ledger's form of these caps."""
        return self._spec


def validated_window_list(windows: object) -> tuple[Window, ...]:
    """A sequence of uniquely named windows, none called "lifetime" or "request"."""
    if (
        isinstance(windows, str)
        or not isinstance(windows, Sequence)
        or not all(isinstance(w, Window) for w in windows)
    ):
        raise InvalidOption(f"windows must be a sequence of treasurer.Window, not {windows!r}")
    names = [w.name for w in windows]
    if len(set(names)) != len(names) or {"lifetime", "request"} & set(names):
        raise InvalidOption(f"window names must be unique and not lifetime or request: {names}")
    return tuple(windows)


def validated_tenants(
    defaults: object, tenants: object
) -> tuple[TenantSpec | None, dict[str, TenantSpec]]:
    """The tenant options of ``open_budget``, validated."""
    if defaults is not None and not isinstance(defaults, TenantCaps):
        raise InvalidOption(f"tenant_defaults must be a treasurer.TenantCaps, not {defaults!r}")
    if tenants is None:
        tenants = {}
    if not isinstance(tenants, Mapping):
        raise InvalidOption(f"tenants must map tenant names to TenantCaps, not {tenants!r}")
    specs = {}
    for name, caps in tenants.items():
        if not isinstance(name, str) or not name:
            raise InvalidOption(f"a tenant is named by a non-empty str, not {name!r}")
        if not isinstance(caps, TenantCaps):
            raise InvalidOption(f"tenants[{name!r}] must be a treasurer.TenantCaps, not {caps!r}")
        specs[name] = caps.spec
    return (None if defaults is None else defaults.spec), specs
