"""``RedisStore(fail_open=True)``: while the server cannot be reached, batches are
judged on this process's copy of the budget and nothing is stored.

The copy starts as the budget was at the last batch the server took, with the
failed batch applied. Every later batch first asks the server once (no retries)
and, while it still cannot be reached, is applied to the copy. The copy's
reservation ids are moved far above the server's (``ID_OFFSET``), so they are
this process's own: ids the server will not issue. Their settlements, once the
server is back, are turned into what the server can take: a commit into a
charge of what was used (the usage happened), a release into nothing to do
(the server never held it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import attrs

from .._core.commands import Charge, Command, Commit, Release
from .._core.events import Event
from .._core.ledger import Ledger
from .._core.outcomes import Granted, Reply, Settled
from .._core.scopes import ScopePath
from .._runtime.log import Log
from .base import BatchResult, Clock, Work

Vector = tuple[int, ...]
ID_OFFSET: Final = 1 << 48  # reservation ids granted while failing open start above this


def begin(
    ledger: Ledger, result: BatchResult, first_id: int, now: datetime
) -> tuple[Outage, BatchResult]:
    """The outage that a batch failing to be stored begins: the copy (``ledger``,
    with the batch applied), its reservations from ``first_id`` on moved to ids of
    this process's own, and the batch's answers with those ids."""
    return Outage(ledger, now), renumbered(ledger, result, first_id, ID_OFFSET)


def renumbered(ledger: Ledger, result: BatchResult, first_id: int, offset: int) -> BatchResult:
    """The reservations of ``ledger`` from ``first_id`` on moved ``offset`` ids up, and
    ``result`` (the batch that made them) with the moved ids."""
    moved = ledger.reservations.move_ids(first_id, offset)
    if not moved:
        return result
    return attrs.evolve(
        result,
        replies=[_renumbered(reply, moved) for reply in result.replies],
        answered=[(index, _renumbered(reply, moved)) for index, reply in result.answered],
        events=[_event_renumbered(event, moved) for event in result.events],
    )


def _renumbered(reply: Reply, moved: dict[int, int]) -> Reply:
    if isinstance(reply, Granted) and reply.reservation in moved:
        return reply._replace(reservation=moved[reply.reservation])
    return reply


def _event_renumbered(event: Event, moved: dict[int, int]) -> Event:
    reservation = getattr(event, "reservation", None)
    if isinstance(reservation, int) and reservation in moved:
        return attrs.evolve(event, reservation=moved[reservation])  # type: ignore[call-arg]
    return event


@attrs.define
class Outage:
    """This process's copy of a budget while its server is away."""

    ledger: Ledger
    since: datetime
    batches: int = 0  # batches answered from the copy

    def serve(self, unstored: Unstored, clock: Clock, work: Work) -> BatchResult:
        """Apply a batch to the copy (nothing is stored)."""
        now = max(clock(), self.ledger.now)
        result = work.run(self.ledger, now)
        unstored.note(self.ledger, result)
        self.batches += 1
        return result


@attrs.define
class Unstored:
    """Reservations granted while failing open, by id: where, and what they hold."""

    held: dict[int, tuple[ScopePath, Vector]] = attrs.Factory(dict)

    def note(self, ledger: Ledger, result: BatchResult) -> None:
        """Keep the reservations the copy granted, and forget those it settled."""
        replies = [*result.replies, *(reply for _, reply in result.answered)]
        for reply in replies:
            if isinstance(reply, Granted) and reply.reservation in ledger.reservations.open:
                held = ledger.reservations.open[reply.reservation]
                self.held[reply.reservation] = (held.scope, held.amount)
        for reservation in [r for r in self.held if r not in ledger.reservations.open]:
            del self.held[reservation]  # settled (or expired) on the copy

    def translate(self, batch: Sequence[Command]) -> tuple[list[Command], dict[int, Reply]]:
        """``batch`` as the server can take it: the commands to send, and the
        replies of the settlements of unstored reservations, by their index."""
        sent: list[Command] = []
        settled: dict[int, Reply] = {}
        for index, command in enumerate(batch):
            if isinstance(command, Commit | Release) and command.reservation in self.held:
                scope, amount = self.held.pop(command.reservation)
                settled[index] = Settled(command.reservation)
                if isinstance(command, Release):
                    continue
                used = amount if command.actual is None else command.actual
                command = Charge(scope, used, command.meta)
            sent.append(command)
        return sent, settled


def merged(batch: Sequence[Command], settled: dict[int, Reply], result: BatchResult) -> BatchResult:
    """``result`` (of the commands :meth:`Unstored.translate` sent) with the replies
    of the whole ``batch``."""
    if not settled:
        return result
    replies = iter(result.replies)
    answers: list[Reply] = []
    for index, command in enumerate(batch):
        sent_reply = None if isinstance(command, Release) and index in settled else next(replies)
        answers.append(settled.get(index) or sent_reply)
    return attrs.evolve(result, replies=answers)


def warn(name: str, event: str, error: str) -> None:
    Log(name).log(logging.WARNING, event, error=error)
