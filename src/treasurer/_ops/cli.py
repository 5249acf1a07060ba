"""The ``treasurer`` command line (typer and rich: ``pip install treasurer[cli]``).

Exit codes scripts can rely on: 0 done; 1 the input could not be read (no
such file, not a usage log, a file SQLite cannot read); 2 the command line
was wrong (typer's usage errors, and options that exclude each other).
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .._core.axes import AXES
from .cli_budgets import forecast, period_rows, status_tables, watch
from .cli_common import (
    DEFAULT_PREFIX,
    BudgetOption,
    JsonOption,
    PrefixOption,
    StoreOption,
    fail,
    kept,
    plain,
    reading,
    stored_figures,
    when,
)
from .cli_overrides import overrides
from .reports import KEYS, columns, to_json, usage_report, write_csv
from .sqlite_log import read

app = typer.Typer(
    name="treasurer",
    help="Look at the budgets and usage treasurer keeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options() -> None:
    """treasurer: token and money budgets shared by concurrent LLM calls."""


@app.command()
def report(
    log: Annotated[
        Path | None, typer.Option("--log", help="A usage log file (SqliteUsageLog).")
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option("--redis", help="A Redis URL whose stream is the log (RedisUsageLog)."),
    ] = None,
    stream: Annotated[str, typer.Option(help="The stream at --redis.")] = "treasurer:usage",
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
    """Usage grouped by model (or other keys) from a usage log (a file or a Redis
    stream): a table, CSV or JSON."""
    if as_csv and as_json:
        raise typer.BadParameter("give --csv or --json, not both", param_hint="--csv/--json")
    if (log is None) == (redis is None):
        raise typer.BadParameter("give --log or --redis (one of them)", param_hint="--log/--redis")
    keys = group_by or ["model"]
    start, end = when(since, "--since"), when(until, "--until")
    with reading("report"):
        if log is not None:
            records = read(log, budget=budget, since=start, until=end)
        else:
            import anyio

            from .redis_log import read as read_stream

            assert redis is not None
            reading_stream = partial(read_stream, budget=budget, since=start, until=end)
            records = anyio.run(reading_stream, redis, stream)
        rows = usage_report(records, group_by=keys)
    if as_csv:
        write_csv(rows, sys.stdout, keys)
    elif as_json:
        sys.stdout.write(to_json(rows, keys) + "\n")
    else:
        table = Table(title=f"usage in {log or f'{redis} {stream}'}")
        for name in columns(keys):
            table.add_column(name, justify="left" if name in keys else "right", overflow="fold")
        for row in rows:
            cells = [*row.group, row.calls, row.input_tokens, row.output_tokens, row.tokens]
            table.add_row(
                *["" if c is None else str(c) for c in cells], f"{row.usd:.6f}", str(row.requests)
            )
        Console().print(table)


@app.command()
def status(
    store: StoreOption,
    prefix: PrefixOption = DEFAULT_PREFIX,
    budget: BudgetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every capped period of a stored budget and its tenants: used, limit, resets."""
    name, figures = stored_figures("status", store, prefix, budget)
    if as_json:
        scopes = [
            {
                "tenant": tenant,
                "open_reservations": snap.open_reservations,
                "reserved": {axis: plain(getattr(snap.reserved, axis)) for axis in AXES},
                "periods": [
                    {key: plain(value) for key, value in row.items()} for row in period_rows(snap)
                ],
            }
            for tenant, snap in figures.items()
        ]
        sys.stdout.write(json.dumps({"budget": name, "scopes": scopes}, indent=2) + "\n")
        return
    console = Console()
    for table in status_tables(name, figures):
        console.print(table)


@app.command()
def dashboard(
    store: StoreOption,
    prefix: PrefixOption = DEFAULT_PREFIX,
    log: Annotated[
        Path | None,
        typer.Option("--log", help="The budget's usage log, for forecasts and models."),
    ] = None,
    budget: BudgetOption = None,
    host: Annotated[str, typer.Option(help="The address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0: any free port.")] = 8050,
    refresh: Annotated[float, typer.Option(min=0.1, help="Seconds between updates.")] = 2.0,
) -> None:
    """Serve a page with a stored budget's burn, forecasts, alerts and top models
    until Ctrl-C (pip install 'treasurer[dashboard]')."""
    import anyio

    from .dashboard import Announce, serve_source
    from .dashboard_sources import StoreSource

    with reading("dashboard"):
        source = StoreSource(kept(store, prefix), budget=budget, log=log)
        announce = Announce("treasurer dashboard on {} (Ctrl-C stops it)")
        try:
            anyio.run(serve_source, source, host, port, refresh, announce)
        except KeyboardInterrupt:
            pass
        except OSError as exc:  # the port is taken, the address is not this host's
            fail("dashboard", exc)


app.command()(watch)
app.command()(forecast)
app.add_typer(overrides)


def main() -> None:
    """The ``treasurer`` console script."""
    app()
