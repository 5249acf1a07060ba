"""The commands of ``treasurer`` that show a budget kept in a store (SQLite or
Redis): ``status``'s tables, ``watch`` and ``forecast``. They read it through
the public API only (the store's ``names() / read()``) and write nothing."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from .._core.axes import AXES
from .._core.events import scope_words
from .._core.values import Snapshot
from .cli_common import (
    DEFAULT_PREFIX,
    BudgetOption,
    JsonOption,
    PrefixOption,
    StoreOption,
    duration,
    kept,
    pick_budget,
    plain,
    reading,
    shown_time,
)
from .forecast import ForecastOptions, from_records
from .redis_log import read as read_stream
from .sqlite_log import read


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
        title = scope_words(name, tenant)
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
    prefix: PrefixOption = DEFAULT_PREFIX,
    budget: BudgetOption = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 2.0,
    count: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many refreshes (default: never).")
    ] = None,
) -> None:
    """The status of a stored budget, refreshed every --interval seconds (Ctrl-C ends it)."""
    kept_store = kept(store, prefix)
    with reading("watch"):
        name = pick_budget(kept_store, budget)

        def render() -> Group:
            return Group(*status_tables(name, kept_store.read(name)))

        refreshes = 0
        with Live(render(), auto_refresh=False, console=Console()) as live:
            try:
                while count is None or refreshes < count - 1:
                    time.sleep(interval)
                    live.update(render(), refresh=True)
                    refreshes += 1
            except KeyboardInterrupt:
                pass


def forecast(
    store: StoreOption,
    log: Annotated[
        Path | None, typer.Option("--log", help="The budget's usage log (SqliteUsageLog).")
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option("--stream", help="Its usage stream (RedisUsageLog) on the --store server."),
    ] = None,
    prefix: PrefixOption = DEFAULT_PREFIX,
    budget: BudgetOption = None,
    span: Annotated[str, typer.Option(help="The linear rate's span: 1h, 30m, ...")] = "1h",
    half_life: Annotated[str, typer.Option(help="The EWMA rate's half-life.")] = "15m",
    as_json: JsonOption = False,
) -> None:
    """Burn rates of a stored budget and its tenants (from its usage log: a SQLite
    file, or a stream on the Redis server of --store), and when each cap runs out."""
    if (log is None) == (stream is None):
        raise typer.BadParameter("give the usage log: --log PATH or --stream NAME")
    if stream is not None and not store.startswith(("redis://", "rediss://", "unix://")):
        raise typer.BadParameter("--stream reads the Redis server of a redis:// --store")
    options = ForecastOptions(
        span=duration(span, "--span"), half_life=duration(half_life, "--half-life")
    )
    kept_store = kept(store, prefix)
    now = datetime.now(UTC)
    with reading("forecast"):
        name = pick_budget(kept_store, budget)
        figures = kept_store.read(name)
        lookback = max(options.span, 4 * options.half_life)
        since = now - lookback
        if log is not None:
            records = read(log, budget=name, since=since)
        else:
            assert stream is not None
            records = anyio.run(lambda: read_stream(store, stream, budget=name, since=since))
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
