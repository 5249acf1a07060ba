"""The budget's usage records in memory: what ``usage(group_by=...)`` reads."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final

from .._core.axes import AXES
from .._core.events import UsageRecorded
from .._core.values import Usage
from .._errors import InvalidOption

DEFAULT_CAPACITY: Final = 10_000
_FIELDS: Final = ("model", "tenant", "child", "request_id", "session_id")


class MemoryUsageLog:
    """The last ``capacity`` usage records of a budget, in memory.

    Bounded: past ``capacity`` the oldest record goes, and a report over a
    period that began before it says its groups are incomplete.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InvalidOption(f"capacity must be an int >= 1, not {capacity!r}")
        self.capacity: Final = capacity
        self._records: deque[UsageRecorded] = deque(maxlen=capacity)
        self._lost_until: datetime | None = None  # the time of the newest record dropped

    def append(self, record: UsageRecorded) -> None:
        if len(self._records) == self.capacity:
            self._lost_until = self._records[0].at
        self._records.append(record)

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> Iterable[UsageRecorded]:
        """Every record kept, oldest first."""
        return iter(self._records)

    def groups(
        self,
        key: str,
        *,
        since: datetime | None,
        tenant: str | None,
        child: str | None,
    ) -> tuple[dict[str | None, Usage], bool]:
        """Usage per value of ``key`` since ``since`` (``None``: all), in one scope;
        and whether every record of the period is still here."""
        value_of = _reader(key)
        totals: dict[str | None, list[int]] = {}
        for record in self._records:
            if since is not None and record.at < since:
                continue
            if tenant is not None and record.tenant != tenant:
                continue
            if child is not None and record.child != child:
                continue
            amounts = totals.setdefault(value_of(record), [0] * len(AXES))
            for index, value in enumerate(record.amount):
                amounts[index] += value
        complete = self._lost_until is None or (since is not None and since > self._lost_until)
        groups = {value: Usage.of(tuple(amounts)) for value, amounts in totals.items()}
        return groups, complete


def _reader(key: str) -> Callable[[UsageRecorded], str | None]:
    if key in _FIELDS:
        return lambda record: getattr(record, key)
    if key.startswith("tag:") and len(key) > 4:
        tag = key[4:]
        return lambda record: record.tags.get(tag)
    raise InvalidOption(
        f"group_by must be one of {', '.join(_FIELDS)} or 'tag:<name>', not {key!r}"
    )
