"""The Store protocol: the seam between a budget's actor and where its state lives.

The actor drains a batch of commands from its mailbox and hands the whole
batch to :meth:`Store.apply` in one call (for a remote store, one round trip);
the store applies the commands in order at ONE instant of its own clock,
serves waiting requests, and answers with a :class:`BatchResult`: a reply
per command, the batch's events, the waiting requests it answered, the views of the scopes the
batch touched, and when time alone will next change something. Every part of
a result is plain data, so a store in another process can produce it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import attrs

from .._core.commands import Command, OpenChild, Reserve
from .._core.config import BudgetConfig
from .._core.events import Event
from .._core.ledger import Ledger
from .._core.outcomes import Reply, ScopeView
from .._core.scopes import ScopePath

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """This host's clock: a budget's unless ``open_budget`` is given another (a store
    that keeps its own time, as Redis's, takes the place of this one)."""
    return datetime.now(UTC)


@attrs.frozen
class BatchResult:
    """What applying one batch did.

    ``replies[i]`` answers ``batch[i]``; ``answered`` holds ``(index,
    reply)`` for each waiting request that was granted or can never be;
    ``events`` every event of the batch in the order it happened (those time
    alone caused first: expiries, rollovers); ``views`` the figures of each
    scope the batch touched (``None``: the scope was forgotten); ``now`` the
    store's time of the batch.
    """

    replies: Sequence[Reply]
    answered: Sequence[tuple[int, Reply]]
    events: Sequence[Event]
    views: Mapping[ScopePath, ScopeView | None]
    now: datetime
    next_wakeup: datetime | None


@attrs.frozen
class Health:
    """The answer of ``budget.health()``: truthy when the store answers."""

    ok: bool
    store: str
    latency: timedelta
    detail: str = ""

    def __bool__(self) -> bool:
        return self.ok


@runtime_checkable
class Store(Protocol):
    """Where a budget's state lives. Only the budget's actor calls these methods,
    one at a time, on the budget's event loop."""

    async def open(
        self, config: BudgetConfig, clock: Clock, *, reconfigure: bool = False
    ) -> ScopeView:
        """Start serving the budget ``config`` describes (creating its state or
        checking that the stored one was made with the same configuration, or,
        with ``reconfigure``, replacing that one by ``config``); returns the
        budget's figures now."""
        ...

    async def apply(
        self,
        batch: Sequence[Command],
        waiting: Sequence[Reserve | OpenChild] = (),
        *,
        new_from: int = 0,
        verbose: bool = True,
    ) -> BatchResult:
        """Apply ``batch`` in order at one instant, then serve ``waiting`` in order.

        ``waiting[new_from:]`` joined the queue with this batch (see
        :meth:`Ledger.serve_waiting <treasurer._core.ledger.Ledger.serve_waiting>`).
        ``verbose`` asks for the events nobody needs unless someone listens
        (reservations created, committed, released; refusals).
        """
        ...

    async def refresh(self, scope: ScopePath) -> ScopeView | None:
        """The current figures of one scope, as the store holds them now."""
        ...

    async def health(self) -> Health:
        """Whether the store answers, and how fast."""
        ...

    async def close(self) -> None:
        """Stop serving; nothing is lost that was applied."""
        ...


def run_batch(
    ledger: Ledger,
    now: datetime,
    batch: Sequence[Command],
    waiting: Sequence[Reserve | OpenChild] = (),
    *,
    new_from: int = 0,
    verbose: bool = True,
) -> BatchResult:
    """Apply one batch to a ledger at ``now``, as :meth:`Store.apply` describes:
    what time alone changed first, then the commands in order, then the waiting
    requests; idle tenants are forgotten. Every store that keeps a
    :class:`Ledger` (in memory, or loaded from records) answers with this."""
    ledger.verbose = verbose
    events = ledger.advance(now)
    replies = ledger.apply_batch(batch, now, events)
    answered = ledger.serve_waiting(waiting, new_from) if waiting else []
    ledger.tree.forget_idle(now, events)
    ledger.forget_ended_overrides()
    return BatchResult(
        replies,
        answered,
        events,
        ledger.tree.views(now),
        now,
        ledger.next_wakeup([command.scope for command in waiting]),
    )


@attrs.frozen
class Work:
    """One :meth:`Store.apply` call's batch, kept whole while a store decides where
    to apply it (the Redis store: on the stored rows, or on its copy while the
    server is away)."""

    commands: Sequence[Command]
    waiting: Sequence[Reserve | OpenChild] = ()
    new_from: int = 0
    verbose: bool = True

    def run(self, ledger: Ledger, now: datetime) -> BatchResult:
        """:func:`run_batch` of this batch on ``ledger`` at ``now``."""
        return run_batch(
            ledger, now, self.commands, self.waiting, new_from=self.new_from, verbose=self.verbose
        )
