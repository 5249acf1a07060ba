"""The commands of ``treasurer`` that work on a budget kept in a SQLite store:
``override`` (add, list, remove), ``forecast`` and ``watch``.

They use the public API only: ``SqliteStore.names() / read() / options()``
to look, and ``treasurer.sync.open_budget(**store.options(name))`` to change
(the budget's own configuration, so it is never reconfigured; the processes
that have it open see the change at their next batch).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from .. import sync
from .._core.axes import AXES
from .._core.events import Override
from .._core.values import Snapshot
from .._errors import TreasurerError
from .._stores.sqlite import SqliteStore
from .forecast import ForecastOptions, from_records
from .sqlite_log import read

READ_FAILED = 1
StoreOption = Annotated[Path, typer.Option("--store", help="A SqliteStore file.")]
BudgetOption = Annotated[
    str | None, typer.Option("--budget", help="The budget (needed if the file holds several).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def fail(command: str, error: Exception) -> NoReturn:
    """Say what went wrong on stderr and exit with the code for "could not read"."""
    Console(stderr=True).print(f"treasurer {command}: {error}", markup=False, highlight=False)
    raise typer.Exit(READ_FAILED) from None


def pick_budget(store: SqliteStore, budget: str | None) -> str:
    """The budget named, or the only one the file holds."""
    if budget is not None:
        return budget
    names = store.names()
    if len(names) != 1:
        raise typer.BadParameter(
            f"the file holds {len(names)} budgets ({', '.join(names) or 'none'}): name one",
            param_hint="--budget",
        )
    return names[0]


@contextmanager
def reading(command: str) -> Iterator[None]:
    """Treasurer's errors (a missing file, an unknown budget) end the command cleanly."""
    try:
        yield
    except TreasurerError as exc:
        fail(command, exc)


def plain(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    return value.isoformat() if isinstance(value, datetime) else value


def shown_time(when: datetime | None) -> str:
    return "" if when is None else f"{when.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def duration(text: str, option: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise typer.BadParameter(
            f"{text!r} is not a duration (90s, 15m, 2h, 1d, 1h30m)", param_hint=option
        )
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    span = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if span <= timedelta(0):
        raise typer.BadParameter(f"{text!r} is not a positive duration", param_hint=option)
    return span


def when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time (2026-12-04 or 2026-12-04T09:30)",
            param_hint=option,
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- status and watch ---------------------------------------------------------------------


def _bar(used: float, limit: float, width: int = 10) -> str:
    share = 1.0 if limit <= 0 else min(max(used / limit, 0.0), 1.0)
    filled = round(share * width)
    return "#" * filled + "." * (width - filled) + f" {share:4.0%}"


def period_rows(snapshot: Snapshot) -> list[dict[str, object]]:
    """Each capped axis of each period: used, limit, remaining, when it resets."""
    rows = []
    for period in snapshot.periods():
        for axis in AXES:
            limit = getattr(period.limits, axis)
            if limit is not None:
                rows.append(
                    {
                        "period": period.name,
                        "axis": axis,
                        "used": getattr(period.used, axis),
                        "limit": limit,
                        "remaining": getattr(period.remaining, axis),
                        "resets_at": period.resets_at,
                    }
                )
    return rows


def status_tables(name: str, figures: dict[str | None, Snapshot]) -> list[Table]:
    """A table per scope: every capped period with used, limit, a bar, its reset."""
    tables = []
    for tenant, snap in figures.items():
        title = f"budget {name!r}" + ("" if tenant is None else f", tenant {tenant!r}")
        table = Table(title=f"{title}: {snap.open_reservations} open reservations")
        for column in ("period", "axis", "used", "limit", "", "resets at"):
            table.add_column(column, overflow="fold", no_wrap=not column)
        for row in period_rows(snap):
            used, limit = row["used"], row["limit"]
            assert isinstance(used, int | Decimal)
            assert isinstance(limit, int | Decimal)
            resets = row["resets_at"]
            assert resets is None or isinstance(resets, datetime)
            table.add_row(
                str(row["period"]),
                str(row["axis"]),
                str(used),
                str(limit),
                _bar(float(used), float(limit)),
                shown_time(resets),
            )
        tables.append(table)
    return tables


def watch(
    store: StoreOption,
    budget: BudgetOption = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 2.0,
    count: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many refreshes (default: never).")
    ] = None,
) -> None:
    """The status of a stored budget, refreshed every --interval seconds (Ctrl-C ends it)."""
    sqlite_store = SqliteStore(store)
    with reading("watch"):
        name = pick_budget(sqlite_store, budget)

        def render() -> Group:
            return Group(*status_tables(name, sqlite_store.read(name)))

        refreshes = 0
        with Live(render(), auto_refresh=False, console=Console()) as live:
            try:
                while count is None or refreshes < count - 1:
                    time.sleep(interval)
                    live.update(render(), refresh=True)
                    refreshes += 1
            except KeyboardInterrupt:
                pass


# -- override -----------------------------------------------------------------------------

overrides = typer.Typer(
    name="override",
    help="Add, list and remove temporary cap increases of a stored budget.",
    no_args_is_help=True,
)


def _open(store: SqliteStore, name: str) -> sync.SyncBudget:
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
    sqlite_store = SqliteStore(store)
    with reading("override add"):
        name = pick_budget(sqlite_store, budget)
        if tenant is not None:  # a mistyped name would make a tenant
            configured = sqlite_store.options(name).get("tenants") or {}
            known = {t for t in sqlite_store.read(name) if t is not None} | set(configured)
            if tenant not in known:
                names = ", ".join(sorted(known)) or "none"
                error = LookupError(f"budget {name!r} has no tenant {tenant!r} (it has: {names})")
                fail("override add", error)
        with _open(sqlite_store, name) as opened:
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
            f"override {override.id} of budget {name!r}"
            + ("" if tenant is None else f", tenant {tenant!r}")
            + f": {window} {_increase_text(override)} until {shown_time(override.expires_at)}",
            markup=False,
            highlight=False,
        )


@overrides.command("list")
def list_overrides(
    store: StoreOption, budget: BudgetOption = None, as_json: JsonOption = False
) -> None:
    """The overrides in force in a stored budget and its tenants."""
    sqlite_store = SqliteStore(store)
    with reading("override list"):
        name = pick_budget(sqlite_store, budget)
        found = _overrides(sqlite_store.read(name))
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
    budget: BudgetOption = None,
) -> None:
    """End an override of a stored budget before its expiry."""
    sqlite_store = SqliteStore(store)
    with reading("override remove"):
        name = pick_budget(sqlite_store, budget)
        found = {o.id: o for o in _overrides(sqlite_store.read(name))}
        if override_id not in found:
            fail("override remove", LookupError(f"budget {name!r} has no override {override_id}"))
        tenant = found[override_id].tenant
        with _open(sqlite_store, name) as opened:
            (opened if tenant is None else opened.tenant(tenant)).remove_override(override_id)
    Console().print(f"override {override_id} removed", markup=False, highlight=False)


# -- forecast -----------------------------------------------------------------------------


def forecast(
    store: StoreOption,
    log: Annotated[Path, typer.Option("--log", help="The budget's usage log (SqliteUsageLog).")],
    budget: BudgetOption = None,
    span: Annotated[str, typer.Option(help="The linear rate's span: 1h, 30m, ...")] = "1h",
    half_life: Annotated[str, typer.Option(help="The EWMA rate's half-life.")] = "15m",
    as_json: JsonOption = False,
) -> None:
    """Burn rates of a stored budget and its tenants (from its usage log), and when
    each cap runs out at them."""
    options = ForecastOptions(
        span=duration(span, "--span"), half_life=duration(half_life, "--half-life")
    )
    sqlite_store = SqliteStore(store)
    now = datetime.now(UTC)
    with reading("forecast"):
        name = pick_budget(sqlite_store, budget)
        figures = sqlite_store.read(name)
        lookback = max(options.span, 4 * options.half_life)
        records = read(log, budget=name, since=now - lookback)
    results = []
    for tenant, snap in figures.items():
        of_scope = [r for r in records if tenant is None or r.tenant == tenant]
        results += from_records(name, snap, of_scope, options, now)
    if as_json:
        items = [
            {
                "tenant": f.tenant,
                "period": f.window,
                "axis": f.axis,
                "used": plain(f.used),
                "limit": plain(f.limit),
                "remaining": plain(f.remaining),
                "linear_rate_per_hour": f.linear_rate,
                "ewma_rate_per_hour": f.ewma_rate,
                "exhausts_at": plain(f.exhausts_at),
                "resets_at": plain(f.resets_at),
                "runs_out": f.runs_out,
            }
            for f in results
        ]
        sys.stdout.write(json.dumps({"budget": name, "forecasts": items}, indent=2) + "\n")
        return
    table = Table(title=f"forecast of budget {name!r} as of {shown_time(now)}")
    columns = ("tenant", "period", "axis", "used", "limit", "per hour", "runs out", "resets")
    for column in (*columns, "first"):
        table.add_column(column, overflow="fold")
    for f in results:
        rate = max(f.linear_rate, f.ewma_rate)
        runs_out = shown_time(f.exhausts_at) if f.exhausts_at is not None else "never"
        first = "" if f.resets_at is None else ("OUT" if f.runs_out else "reset")
        table.add_row(
            f.tenant or "",
            f.window,
            f.axis,
            str(f.used),
            str(f.limit),
            f"{rate:.6g}",
            runs_out,
            shown_time(f.resets_at),
            first,
        )
    Console().print(table)
