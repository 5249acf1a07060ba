"""The commands that manage a budget rather than spend: reset, overrides, tenant
caps, child budgets opening and closing, and the reads that go through the actor."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import reads
from .axes import AXES
from .commands import (
    CloseChild,
    OpenChild,
    Probe,
    ReadUsage,
    RemoveOverride,
    Reset,
    SetOverride,
    SetTenantCaps,
)
from .config import Limits
from .events import Override, OverrideExpired, OverrideRemoved, OverrideSet
from .outcomes import ChildOpened, Rejected, Reply, Verdict
from .scope import Scope
from .values import Usage

if TYPE_CHECKING:
    from .ledger import Ledger


def _invalid(message: str) -> Rejected:
    return Rejected("invalid_option", message)


def reset(ledger: Ledger, command: Reset) -> Reply:
    scope = ledger.find(command.scope)
    if isinstance(scope, Rejected):
        return scope
    if scope.carve is not None:
        return _invalid("a child budget cannot be reset: its spend is its parent's too")
    index = None
    if command.window is not None:
        index = scope.period(command.window)
        if index is None or index < 0:
            names = scope.periods()[1:]
            return _invalid(f"no window named {command.window!r}; {scope.describe()} has {names}")
    # The whole budget: every scope's usage with it. A tenant: its own only
    # (the shared total keeps counting what it spent).
    ledger.resets += 1
    everything = scope is ledger.root and index is None
    members = list(ledger.tree.scopes.values()) if everything else [scope]
    for member in members:
        member.reset(index, ledger.now)
        ledger.tree.touched.add(member.path)
    for member in sorted(members, key=lambda m: -len(m.path)):
        ledger.tree.sync(member)  # bottom up: what children hold in parents
    for member in members:
        ledger.tree.freed(member)
    return None


def set_override(ledger: Ledger, command: SetOverride) -> Reply:
    scope = ledger.find(command.scope)
    if isinstance(scope, Rejected):
        return scope
    index = scope.period(command.window)
    if index is None:
        return _invalid(
            f"no window named {command.window!r}; {scope.describe()} has {scope.periods()}"
        )
    base = scope.base_caps(index)
    uncapped = [
        name
        for name, value, cap in zip(AXES, command.increase, base, strict=True)
        if value and cap is None
    ]
    if uncapped:
        return _invalid(f"{command.window} has no cap on {', '.join(uncapped)} to raise")
    if not any(command.increase):
        return _invalid("an override must raise at least one cap")
    if command.expires_at <= ledger.now:
        return _invalid(f"expires_at {command.expires_at.isoformat()} is not in the future")
    override = Override(
        id=ledger.overrides.new_id(),
        window=command.window,
        increase=Usage.of(command.increase),
        created_at=ledger.now,
        expires_at=command.expires_at,
        reason=command.reason,
        created_by=command.created_by,
        tenant=scope.names[1],
        budget=ledger.name,
        child=scope.names[2],
    )
    scope.overrides[override.id] = (override, command.increase)
    ledger.overrides.add(override, scope.path)
    scope.recompute_limits(index)
    ledger.tree.freed(scope)
    ledger.emit(OverrideSet, scope, override=override)
    return override


def remove_override(ledger: Ledger, command: RemoveOverride) -> Reply:
    if ledger.overrides.scope_of.get(command.override) != command.scope:
        return _invalid(f"no active override {command.override} was set through this handle")
    end_override(ledger, command.override, OverrideRemoved)
    return None


def end_override(
    ledger: Ledger, override_id: int, kind: type[OverrideExpired | OverrideRemoved]
) -> None:
    """An override ends (it expired, or was removed): its scope's limits drop back."""
    path = ledger.overrides.scope_of.pop(override_id)
    scope = ledger.tree.scopes.get(path)
    if scope is None or override_id not in scope.overrides:
        return  # its scope or window is gone, and the override with it
    override, _ = scope.overrides.pop(override_id)
    ledger.limits_lowered = True
    index = scope.period(override.window)
    assert index is not None
    scope.recompute_limits(index)
    ledger.tree.touched.add(path)
    ledger.emit(kind, scope, override=override)


def set_tenant_caps(ledger: Ledger, command: SetTenantCaps) -> Reply:
    path = ledger.tree.set_tenant_limits(command.tenant, command.limits, ledger.now)
    scope = ledger.tree.scopes.get(path)
    if scope is not None:  # overrides of a window the new caps dropped ended with it
        index = ledger.overrides.scope_of
        for override in [o for o, p in index.items() if p == path and o not in scope.overrides]:
            del index[override]
    ledger.limits_lowered = True
    return None


def open_child(ledger: Ledger, command: OpenChild) -> Reply:
    parent = ledger.admitted(command.scope, command.carve(), request=False)
    if not isinstance(parent, Scope):
        return parent
    child = ledger.tree.open_child(parent, command.name, Limits(command.caps), ledger.now)
    name = child.names[2]
    assert name is not None
    return ChildOpened(child.path, name)


def close_child(ledger: Ledger, command: CloseChild) -> Reply:
    child = ledger.tree.scopes.get(command.scope)
    if child is None:
        return None
    view = reads.view(child, ledger.now)
    ledger.tree.close_child(child)
    return view


def probe(ledger: Ledger, command: Probe) -> Reply:
    scope = ledger.find(command.scope)
    if isinstance(scope, Rejected):
        return scope
    return Verdict(ledger.tree.refusal(scope, command.amount), reads.view(scope, ledger.now))


def read_usage(ledger: Ledger, command: ReadUsage) -> Reply:
    scope = ledger.find(command.scope)
    if isinstance(scope, Rejected):
        return scope
    index = scope.period(command.period)
    if index is None:
        return _invalid(
            f"no period named {command.period!r}; {scope.describe()} has {scope.periods()}"
        )
    return reads.usage_figures(scope, index, ledger.now)


HANDLERS: Final[dict[type, Callable[[Any, Any], Reply]]] = {
    Reset: reset,
    SetOverride: set_override,
    RemoveOverride: remove_override,
    SetTenantCaps: set_tenant_caps,
    OpenChild: open_child,
    CloseChild: close_child,
    Probe: probe,
    ReadUsage: read_usage,
}
