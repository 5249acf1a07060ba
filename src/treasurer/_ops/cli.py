"""The ``treasurer`` command line (typer and rich: ``pip install treasurer[cli]``).

Exit codes scripts can rely on: 0 done; 1 the input could not be read (no
such file, not a usage log, a file SQLite cannot read); 2 the command line
was wrong (typer's usage errors, and options that exclude each other).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .._errors import TreasurerError
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


def main() -> None:
    """The ``treasurer`` console script."""
    app()
