"""What every ``treasurer`` command shares: its common options, how it reports
an error (exit code 1), and how it reads times and durations."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from .._core.values import Snapshot
from .._errors import TreasurerError
from .._stores.redis import DEFAULT_PREFIX as DEFAULT_PREFIX
from .._stores.redis import RedisStore
from .._stores.sqlite import SqliteStore

READ_FAILED = 1
StoreOption = Annotated[
    str,
    typer.Option(
        "--store", help="A SqliteStore file, or the redis:// URL of a RedisStore's server."
    ),
]
PrefixOption = Annotated[
    str, typer.Option("--prefix", help="The RedisStore's key prefix (with a redis:// --store).")
]
KeptBudgets = SqliteStore | RedisStore
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
BudgetOption = Annotated[
    str | None, typer.Option("--budget", help="The budget (needed if the file holds several).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def fail(command: str, error: Exception) -> NoReturn:
    """Say what went wrong on stderr and exit with the code for "could not read"."""
    Console(stderr=True).print(f"treasurer {command}: {error}", markup=False, highlight=False)
    raise typer.Exit(READ_FAILED) from None


def kept(store: str, prefix: str = DEFAULT_PREFIX) -> KeptBudgets:
    """The store ``--store`` names: a Redis server by URL, else a SQLite file."""
    if store.startswith(_REDIS_SCHEMES):
        return RedisStore(store, prefix=prefix)
    return SqliteStore(Path(store))


def stored_figures(
    command: str, store: str, prefix: str, budget: str | None
) -> tuple[str, dict[str | None, Snapshot]]:
    """The budget a command names and its figures now, read from ``--store``; a
    store that cannot be read ends the command (exit code 1)."""
    kept_store = kept(store, prefix)
    with reading(command):
        name = pick_budget(kept_store, budget)
        return name, kept_store.read(name)


def pick_budget(store: KeptBudgets, budget: str | None) -> str:
    """The budget named, or the only one the store holds."""
    if budget is not None:
        return budget
    names = store.names()
    if len(names) != 1:
        raise typer.BadParameter(
            f"the store holds {len(names)} budgets ({', '.join(names) or 'none'}): name one",
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
