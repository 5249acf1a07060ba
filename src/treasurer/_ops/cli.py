"""The ``treasurer`` command line (typer and rich: ``pip install treasurer[cli]``).

Exit codes scripts can rely on: 0 done; 1 the input could not be read (no
such file, not a usage log, a file SQLite cannot read); 2 the command line
was wrong (typer's usage errors, and options that exclude each other).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .._core.axes import AXES
from .._core.values import Snapshot
from .._errors import TreasurerError
from .._stores.sqlite import SqliteStore
from .reports import KEYS, columns, to_json, usage_report, write_csv
from .sqlite_log import read

app = typer.Typer(
    name="treasurer",
    help="Look at the budgets and usage treasurer keeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
READ_FAILED = 1
USAGE = 2


@app.callback()
def main_options() -> None:
    """treasurer: token and money budgets shared by concurrent LLM calls."""


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time (2026-12-04 or 2026-12-04T09:30)",
            param_hint=option,
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@app.command()
def report(
    log: Annotated[Path, typer.Option("--log", help="A usage log file (SqliteUsageLog).")],
    group_by: Annotated[
        list[str] | None,
        typer.Option(
            "--group-by",
            "-g",
            help=f"Group by this key (repeat for several): {', '.join(KEYS)}, tag:NAME.",
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Records at or after this time (ISO 8601; UTC if naive).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Records before this time.")] = None,
    budget: Annotated[str | None, typer.Option(help="Only this budget's records.")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Usage grouped by model (or other keys) from a usage log: a table, CSV or JSON."""
    if as_csv and as_json:
        raise typer.BadParameter("give --csv or --json, not both", param_hint="--csv/--json")
    keys = group_by or ["model"]
    start, end = _when(since, "--since"), _when(until, "--until")
    try:
        rows = usage_report(read(log, budget=budget, since=start, until=end), group_by=keys)
    except TreasurerError as exc:
        Console(stderr=True).print(f"treasurer report: {exc}", markup=False, highlight=False)
        raise typer.Exit(READ_FAILED) from None
    if as_csv:
        write_csv(rows, sys.stdout, keys)
    elif as_json:
        sys.stdout.write(to_json(rows, keys) + "\n")
    else:
        table = Table(title=f"usage in {log}")
        for name in columns(keys):
            table.add_column(name, justify="left" if name in keys else "right", overflow="fold")
        for row in rows:
            cells = [*row.group, row.calls, row.input_tokens, row.output_tokens, row.tokens]
            table.add_row(
                *["" if c is None else str(c) for c in cells], f"{row.usd:.6f}", str(row.requests)
            )
        Console().print(table)


def _periods(snapshot: Snapshot) -> list[dict[str, object]]:
    """Each capped axis of each period: used, limit, remaining, when it resets."""
    lifetime: datetime | None = None  # never resets
    periods = [("lifetime", snapshot.used, snapshot.limits, snapshot.remaining, lifetime)]
    periods += [(w.name, w.used, w.limits, w.remaining, w.resets_at) for w in snapshot.windows]
    rows = []
    for period, used, limits, remaining, resets_at in periods:
        for axis in AXES:
            limit = getattr(limits, axis)
            if limit is not None:
                rows.append(
                    {
                        "period": period,
                        "axis": axis,
                        "used": getattr(used, axis),
                        "limit": limit,
                        "remaining": getattr(remaining, axis),
                        "resets_at": resets_at,
                    }
                )
    return rows


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    return value.isoformat() if isinstance(value, datetime) else value


def _bar(used: float, limit: float, width: int = 10) -> str:
    share = 1.0 if limit <= 0 else min(max(used / limit, 0.0), 1.0)
    filled = round(share * width)
    return "#" * filled + "." * (width - filled) + f" {share:4.0%}"


@app.command()
def status(
    store: Annotated[Path, typer.Option("--store", help="A SqliteStore file.")],
    budget: Annotated[
        str | None, typer.Option(help="The budget (needed if the file holds several).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Every capped period of a stored budget and its tenants: used, limit, resets."""
    sqlite_store = SqliteStore(store)
    try:
        names = sqlite_store.names()
        if budget is None and len(names) != 1:
            raise typer.BadParameter(
                f"the file holds {len(names)} budgets ({', '.join(names) or 'none'}): name one",
                param_hint="--budget",
            )
        name = budget if budget is not None else names[0]
        figures = sqlite_store.read(name)
    except TreasurerError as exc:
        Console(stderr=True).print(f"treasurer status: {exc}", markup=False, highlight=False)
        raise typer.Exit(READ_FAILED) from None
    if as_json:
        scopes = [
            {
                "tenant": tenant,
                "open_reservations": snap.open_reservations,
                "reserved": {axis: _plain(getattr(snap.reserved, axis)) for axis in AXES},
                "periods": [
                    {key: _plain(value) for key, value in row.items()} for row in _periods(snap)
                ],
            }
            for tenant, snap in figures.items()
        ]
        sys.stdout.write(json.dumps({"budget": name, "scopes": scopes}, indent=2) + "\n")
        return
    console = Console()
    for tenant, snap in figures.items():
        title = f"budget {name!r}" + ("" if tenant is None else f", tenant {tenant!r}")
        table = Table(title=f"{title}: {snap.open_reservations} open reservations")
        for column in ("period", "axis", "used", "limit", "", "resets at"):
            table.add_column(column, overflow="fold", no_wrap=not column)
        for row in _periods(snap):
            used, limit = row["used"], row["limit"]
            assert isinstance(used, int | Decimal)
            assert isinstance(limit, int | Decimal)
            resets = row["resets_at"]
            table.add_row(
                str(row["period"]),
                str(row["axis"]),
                str(used),
                str(limit),
                _bar(float(used), float(limit)),
                "" if resets is None else f"{resets:%Y-%m-%d %H:%M} UTC",
            )
        console.print(table)


def main() -> None:
    """The ``treasurer`` console script."""
    app()
