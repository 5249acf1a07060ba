"""``treasurer override add / list / remove``: temporary cap increases of a budget
kept in a SQLite store, made through the budget itself
(``treasurer.sync.open_budget(**store.options(name))``), so the processes that
have it open see them at their next batch and it is never reconfigured."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .. import sync
from .._core.axes import AXES
from .._core.events import Override, scope_words
from .._core.values import Snapshot
from .cli_common import (
    DEFAULT_PREFIX,
    BudgetOption,
    JsonOption,
    KeptBudgets,
    PrefixOption,
    StoreOption,
    duration,
    fail,
    kept,
    pick_budget,
    plain,
    reading,
    shown_time,
    stored_figures,
    when,
)

overrides = typer.Typer(
    name="override",
    help="Add, list and remove temporary cap increases of a stored budget.",
    no_args_is_help=True,
)


def _open(store: KeptBudgets, name: str) -> sync.SyncBudget:
    return sync.open_budget(**store.options(name))


def _overrides(figures: dict[str | None, Snapshot]) -> list[Override]:
    return sorted((o for snap in figures.values() for o in snap.overrides), key=lambda o: o.id)


def _override_json(override: Override) -> dict[str, object]:
    return {
        "id": override.id,
        "tenant": override.tenant,
        "window": override.window,
        "increase": {
            axis: plain(value) for axis in AXES if (value := getattr(override.increase, axis))
        },
        "created_at": plain(override.created_at),
        "expires_at": plain(override.expires_at),
        "reason": override.reason,
        "created_by": override.created_by,
    }


def _increase_text(override: Override) -> str:
    return ", ".join(
        f"{axis}+{value}" for axis in AXES if (value := getattr(override.increase, axis))
    )


@overrides.command("add")
def add_override(
    store: StoreOption,
    prefix: PrefixOption = DEFAULT_PREFIX,
    budget: BudgetOption = None,
    tenant: Annotated[str | None, typer.Option(help="Raise this tenant's caps.")] = None,
    window: Annotated[
        str, typer.Option(help="The period raised: lifetime or a window's name.")
    ] = "lifetime",
    tokens: Annotated[int | None, typer.Option(min=1)] = None,
    input_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    output_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    usd: Annotated[str | None, typer.Option(help="Dollars (a decimal number).")] = None,
    requests: Annotated[int | None, typer.Option(min=1)] = None,
    lasting: Annotated[
        str | None, typer.Option("--for", help="How long it lasts: 90s, 15m, 2h, 1d, 1h30m.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="When it ends (ISO 8601; UTC if naive).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept with the override).")] = "",
    by: Annotated[str, typer.Option("--by", help="Who asked for it.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Raise a cap of a stored budget (or of one tenant) until --until or for --for."""
    if (lasting is None) == (until is None):
        raise typer.BadParameter("give --for or --until (one of them)", param_hint="--for/--until")
    amounts: dict[str, Any] = {
        axis: value
        for axis, value in (
            ("tokens", tokens),
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("requests", requests),
        )
        if value is not None
    }
    if usd is not None:
        try:
            amounts["usd"] = Decimal(usd)
        except InvalidOperation:
            raise typer.BadParameter(f"{usd!r} is not a number", param_hint="--usd") from None
    if not amounts:
        raise typer.BadParameter(
            "say what to raise: --tokens, --input-tokens, --output-tokens, --usd or --requests",
            param_hint="--tokens",
        )
    expires_at = when(until, "--until")
    if lasting is not None:
        expires_at = datetime.now(UTC) + duration(lasting, "--for")
    assert expires_at is not None
    kept_store = kept(store, prefix)
    with reading("override add"):
        name = pick_budget(kept_store, budget)
        if tenant is not None:  # a mistyped name would make a tenant
            configured = kept_store.options(name).get("tenants") or {}
            known = {t for t in kept_store.read(name) if t is not None} | set(configured)
            if tenant not in known:
                names = ", ".join(sorted(known)) or "none"
                error = LookupError(f"budget {name!r} has no tenant {tenant!r} (it has: {names})")
                fail("override add", error)
        with _open(kept_store, name) as opened:
            scope = opened if tenant is None else opened.tenant(tenant)
            override = scope.override(
                expires_at=expires_at,
                window=window,
                reason=reason,
                created_by=by,
                **amounts,
            )
    if as_json:
        sys.stdout.write(json.dumps(_override_json(override), indent=2) + "\n")
    else:
        Console().print(
            f"override {override.id} of {scope_words(name, tenant)}: {window} "
            f"{_increase_text(override)} until {shown_time(override.expires_at)}",
            markup=False,
            highlight=False,
        )


@overrides.command("list")
def list_overrides(
    store: StoreOption,
    prefix: PrefixOption = DEFAULT_PREFIX,
    budget: BudgetOption = None,
    as_json: JsonOption = False,
) -> None:
    """The overrides in force in a stored budget and its tenants."""
    name, figures = stored_figures("override list", store, prefix, budget)
    found = _overrides(figures)
    if as_json:
        items = [_override_json(o) for o in found]
        sys.stdout.write(json.dumps({"budget": name, "overrides": items}, indent=2) + "\n")
        return
    table = Table(title=f"overrides of budget {name!r}")
    for column in ("id", "tenant", "window", "increase", "expires at", "reason", "by"):
        table.add_column(column, overflow="fold")
    for o in found:
        table.add_row(
            str(o.id),
            o.tenant or "",
            o.window,
            _increase_text(o),
            shown_time(o.expires_at),
            o.reason,
            o.created_by,
        )
    Console().print(table)


@overrides.command("remove")
def remove_override(
    override_id: Annotated[int, typer.Argument(help="The override's id (see override list).")],
    store: StoreOption,
    prefix: PrefixOption = DEFAULT_PREFIX,
    budget: BudgetOption = None,
) -> None:
    """End an override of a stored budget before its expiry."""
    kept_store = kept(store, prefix)
    with reading("override remove"):
        name = pick_budget(kept_store, budget)
        found = {o.id: o for o in _overrides(kept_store.read(name))}
        if override_id not in found:
            fail("override remove", LookupError(f"budget {name!r} has no override {override_id}"))
        tenant = found[override_id].tenant
        with _open(kept_store, name) as opened:
            (opened if tenant is None else opened.tenant(tenant)).remove_override(override_id)
    Console().print(f"override {override_id} removed", markup=False, highlight=False)
