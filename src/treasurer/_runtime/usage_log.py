"""Where a budget's usage records go, and the one in memory: what
``usage(group_by=...)`` reads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final

import attrs

from .._core.axes import AXES
from .._core.events import UsageRecorded
from .._core.values import Usage
from .._errors import InvalidOption

DEFAULT_CAPACITY: Final = 10_000
FIELDS: Final = ("model", "tenant", "child", "request_id", "session_id")


@attrs.frozen
class UsageLogStatistics:
    """How a usage log is doing: records ``written`` to it, ``pending`` (taken,
    not yet written), ``dropped`` (lost: the log was full, or closed before they
    could be written), write ``failures`` and the last one's message."""

    written: int
    pending: int
    dropped: int
    failures: int = 0
    last_error: str | None = None


class UsageLog(ABC):
    """Where a budget's usage records go. The budget's actor calls :meth:`append`
    for every :class:`UsageRecorded`, on the budget's event loop, so it must
    never block; work that may (writing a file) is done in :meth:`run`, a task
    of the budget's own, which returns once :meth:`finish` was called and the
    records taken were written (or counted as dropped)."""

    @abstractmethod
    def append(self, record: UsageRecorded) -> None: ...

    # open, run and finish are hooks a log without background work leaves as they are.
    async def open(self) -> None:  # noqa: B027
        """A budget opens with this log (a log whose file cannot be used fails it)."""

    async def run(self) -> None:  # noqa: B027
        """The log's background work while the budget is open (none here)."""

    def finish(self) -> None:  # noqa: B027
        """The budget closes: :meth:`run` writes what it holds, then returns."""

    @abstractmethod
    async def groups(
        self,
        key: str,
        *,
        budget: str,
        since: datetime | None,
        tenant: str | None,
        child: str | None,
    ) -> tuple[dict[str | None, Usage], bool]:
        """Usage per value of ``key`` in one scope of ``budget`` since ``since``
        (``None``: all); and whether every record of the period is there."""

    @abstractmethod
    def statistics(self) -> UsageLogStatistics: ...


class MemoryUsageLog(UsageLog):
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
        self._appended = 0

    def append(self, record: UsageRecorded) -> None:
        if len(self._records) == self.capacity:
            self._lost_until = self._records[0].at
        self._records.append(record)
        self._appended += 1

    def statistics(self) -> UsageLogStatistics:
        """Records kept count as written; those pushed out by newer ones as dropped."""
        return UsageLogStatistics(len(self._records), 0, self._appended - len(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> Iterable[UsageRecorded]:
        """Every record kept, oldest first."""
        return iter(self._records)

    async def groups(
        self,
        key: str,
        *,
        budget: str,
        since: datetime | None,
        tenant: str | None,
        child: str | None,
    ) -> tuple[dict[str | None, Usage], bool]:
        value_of = reader(key)
        records = (
            r for r in self._records if r.budget == budget and (since is None or r.at >= since)
        )
        return group(records, value_of, tenant, child), complete(self._lost_until, since)


def group(
    records: Iterable[UsageRecorded],
    value_of: Callable[[UsageRecorded], str | None],
    tenant: str | None,
    child: str | None,
) -> dict[str | None, Usage]:
    """Usage per value of a record's metadata, in one scope (``tenant``, ``child``)."""
    totals: dict[str | None, list[int]] = {}
    for record in records:
        if (tenant is not None and record.tenant != tenant) or (
            child is not None and record.child != child
        ):
            continue
        amounts = totals.setdefault(value_of(record), [0] * len(AXES))
        for index, value in enumerate(record.amount):
            amounts[index] += value
    return {value: Usage.of(tuple(amounts)) for value, amounts in totals.items()}


def complete(lost_until: datetime | None, since: datetime | None) -> bool:
    """Whether every record since ``since`` is kept, the newest lost being ``lost_until``."""
    return lost_until is None or (since is not None and since > lost_until)


def reader(key: str) -> Callable[[UsageRecorded], str | None]:
    """How to read the metadata ``key`` names from a record."""
    if key in FIELDS:
        return lambda record: getattr(record, key)
    if key.startswith("tag:") and len(key) > 4:
        tag = key[4:]
        return lambda record: record.tags.get(tag)
    raise InvalidOption(f"group_by must be one of {', '.join(FIELDS)} or 'tag:<name>', not {key!r}")
