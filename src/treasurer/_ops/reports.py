"""Usage reports from usage records: rows grouped by metadata or by time, as
Python objects, CSV or JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Final

import attrs

from .._core.axes import AXES, nanos_to_usd
from .._core.events import UsageRecorded
from .._errors import InvalidOption
from .._runtime.usage_log import FIELDS, reader

TIME_KEYS: Final = {"hour": "%Y-%m-%dT%H:00Z", "day": "%Y-%m-%d", "month": "%Y-%m"}
KEYS: Final = (*FIELDS, "budget", "source", *TIME_KEYS)
USD: Final = AXES.index("usd")


@attrs.frozen
class ReportRow:
    """Usage of one group: ``group`` holds the value of each ``group_by`` key (time
    keys as UTC text: ``2026-12-04``), ``calls`` the records in it (a refund or a
    call taken back counts as a record of negative usage), ``usd`` in dollars."""

    group: tuple[str | None, ...]
    calls: int
    input_tokens: int
    output_tokens: int
    tokens: int
    usd: Decimal
    requests: int


def usage_report(
    records: Iterable[UsageRecorded],
    *,
    group_by: Sequence[str] = ("model",),
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ReportRow]:
    """Usage per group of ``records`` at or after ``since`` and before ``until``,
    the most expensive group first (then by tokens, then by name).

    ``group_by`` keys: ``model``, ``tenant``, ``child``, ``request_id``,
    ``session_id``, ``budget``, ``source``, ``tag:<name>``, and the UTC time
    buckets ``hour``, ``day`` and ``month``.
    """
    if isinstance(group_by, str):
        group_by = (group_by,)
    readers = [_key_reader(key) for key in group_by]
    totals: dict[tuple[str | None, ...], list[int]] = {}
    for record in records:
        if (since is not None and record.at < since) or (until is not None and record.at >= until):
            continue
        group = tuple(read(record) for read in readers)
        sums = totals.setdefault(group, [0] * (len(AXES) + 1))
        sums[0] += 1
        for index, value in enumerate(record.amount):
            sums[index + 1] += value
    rows = [
        ReportRow(
            group=group,
            calls=sums[0],
            input_tokens=sums[1],
            output_tokens=sums[2],
            tokens=sums[3],
            usd=nanos_to_usd(sums[1 + USD]),
            requests=sums[5],
        )
        for group, sums in totals.items()
    ]
    return sorted(rows, key=lambda row: (-row.usd, -row.tokens, [g or "" for g in row.group]))


def _key_reader(key: str) -> Callable[[UsageRecorded], str | None]:
    if not isinstance(key, str):
        raise InvalidOption(f"group_by keys are names, not {key!r}")
    if key in TIME_KEYS:
        pattern = TIME_KEYS[key]
        return lambda record: record.at.astimezone(UTC).strftime(pattern)
    if key in ("budget", "source"):
        return lambda record: getattr(record, key)
    try:
        return reader(key)
    except InvalidOption:
        raise InvalidOption(
            f"group_by keys are {', '.join(KEYS)} or 'tag:<name>', not {key!r}"
        ) from None


def columns(group_by: Sequence[str]) -> list[str]:
    """The header of a report's table: the group keys, then the figures."""
    return [*group_by, "calls", "input_tokens", "output_tokens", "tokens", "usd", "requests"]


def _cells(row: ReportRow) -> list[object]:
    figures = (row.input_tokens, row.output_tokens, row.tokens, row.usd, row.requests)
    return [*row.group, row.calls, *figures]


def write_csv(rows: Iterable[ReportRow], file: IO[str], group_by: Sequence[str]) -> None:
    """The report as CSV, one row per group after a header (empty groups as "")."""
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(columns(group_by))
    for row in rows:
        writer.writerow(["" if cell is None else cell for cell in _cells(row)])


def to_json(rows: Iterable[ReportRow], group_by: Sequence[str]) -> str:
    """The report as a JSON array of objects (``usd`` as a string: it is exact)."""
    names = columns(group_by)
    items = [
        {
            name: str(c) if isinstance(c, Decimal) else c
            for name, c in zip(names, _cells(row), strict=True)
        }
        for row in rows
    ]
    return json.dumps(items, indent=2)
