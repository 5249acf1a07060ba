"""Helpers for the tests of the pure core (``tests/test_core_*.py``): building a
ledger, applying commands, reading a scope's figures, checking refusals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from treasurer import BudgetExceeded, RequestTooLarge
from treasurer._core.axes import AXES, INDEX, Vector, nanos_to_usd, on_axis, parse
from treasurer._core.commands import Command
from treasurer._core.config import DEFAULT_RESERVATION_TTL, BudgetConfig, Limits
from treasurer._core.ledger import Ledger
from treasurer._core.outcomes import Refusal, Reply, ScopeView
from treasurer._core.reads import view
from treasurer._core.scopes import ROOT, ScopePath
from treasurer._core.windows import Window

NAME = "team-a"
T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)  # a Monday
USD = INDEX["usd"]
TOKENS = INDEX["tokens"]
ZERO: Vector = (0,) * len(AXES)


def tokens(n: int, requests: int = 1) -> Vector:
    """``n`` tokens (and one request, as a call counts)."""
    return parse({"tokens": n, "requests": requests})


def only_tokens(n: int) -> Vector:
    """``n`` tokens and nothing else (no request): for caps and carves."""
    return on_axis(TOKENS, n)


def make_ledger(
    caps: Mapping[str, object] | None = None,
    *,
    per_request: Mapping[str, object] | None = None,
    windows: Sequence[Window] = (),
    now: datetime = T0,
    reservation_ttl: timedelta | None = DEFAULT_RESERVATION_TTL,
    tenant_defaults: Limits | None = None,
    tenants: Mapping[str, Limits] | None = None,
    thresholds: Sequence[int] = (50, 75, 90, 100),
) -> Ledger:
    limits = Limits.build(caps or {}, per_request, windows)
    config = BudgetConfig.build(
        NAME,
        limits,
        thresholds=tuple(thresholds),
        reservation_ttl=reservation_ttl,
        tenant_defaults=tenant_defaults,
        tenants=tenants,
    )
    return Ledger(config, now)


def apply(ledger: Ledger, command: Command, now: datetime | None = None) -> Reply:
    """Apply ``command`` at ``now`` (default: the ledger's time) and return its reply."""
    return ledger.apply(command, ledger.now if now is None else now).reply


def figures(ledger: Ledger, path: ScopePath = ROOT) -> ScopeView:
    """The scope's figures now, as a store would publish them (changes nothing)."""
    return view(ledger.tree.scopes[path], ledger.now)


def state(ledger: Ledger, path: ScopePath = ROOT) -> tuple[Vector, Vector, int, int]:
    """(used, reserved, calls, open reservations) of one scope."""
    scope = figures(ledger, path)
    return scope.used, scope.reserved, scope.calls, scope.open


def everything(ledger: Ledger) -> dict[ScopePath, object]:
    """Every scope's figures and the open reservations: what a refusal must leave as it was."""
    scopes: dict[ScopePath, object] = {
        path: (scope.used, scope.reserved, scope.calls, scope.open, figures(ledger, path).windows)
        for path, scope in ledger.tree.scopes.items()
    }
    scopes[("reservations",)] = dict(ledger.reservations.open)
    return scopes


def public(axis: int, value: int) -> int | Decimal:
    """An internal figure in the unit users see: Decimal dollars for USD, int otherwise."""
    return nanos_to_usd(value) if axis == USD else value


def assert_public(value: object, axis: int, expected: int) -> None:
    """``value`` is ``expected`` (internal units) shown in public units, with the right type."""
    if axis == USD:
        assert isinstance(value, Decimal), f"expected a Decimal, got {value!r}"
        assert value == nanos_to_usd(expected)
    else:
        assert type(value) is int, f"expected an int, got {value!r}"
        assert value == expected


def assert_refusal(
    reply: object,
    *,
    too_large: bool,
    axis: int,
    cap: int,
    requested: int,
    used: int,
    reserved: int,
    window: str = "lifetime",
    tenant: str | None = None,
    child: str | None = None,
    resets_at: datetime | None = None,
) -> Refusal:
    """``reply`` is exactly this refusal, every figure in public units; its error says so."""
    assert isinstance(reply, Refusal), f"expected a refusal, got {reply!r}"
    assert reply.too_large is too_large, reply
    assert (reply.budget, reply.tenant, reply.child) == (NAME, tenant, child)
    assert (reply.cap, reply.window, reply.resets_at) == (AXES[axis], window, resets_at)
    assert_public(reply.limit, axis, cap)
    assert_public(reply.requested, axis, requested)
    assert_public(reply.used, axis, used)
    assert_public(reply.reserved, axis, reserved)
    assert_public(reply.attempted, axis, used + reserved + requested)
    assert_public(reply.available, axis, max(cap - used - reserved, 0))
    error = reply.error()
    assert type(error) is (RequestTooLarge if too_large else BudgetExceeded)
    assert (error.cap, error.window, error.tenant, error.child) == (
        AXES[axis],
        window,
        tenant,
        child,
    )
    assert (error.limit, error.requested, error.used, error.reserved) == (
        reply.limit,
        reply.requested,
        reply.used,
        reply.reserved,
    )
    assert AXES[axis] in str(error)
    return reply
