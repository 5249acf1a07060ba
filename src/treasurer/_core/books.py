"""The ledger's registries: open reservations with their deadlines, and overrides.

Each keeps a heap of expiry times, so nothing is ever scanned for what is due;
entries settled before their time are dropped when they reach the top.
"""

from __future__ import annotations

import heapq
import itertools
import os
import secrets
from datetime import datetime, timedelta
from typing import Final, NamedTuple

from .axes import Vector
from .commands import Meta
from .events import Override
from .scopes import ScopePath
from .windows import later

_TOKENS: Final = 2**62


class _Tokens:
    """Reservation tokens: a count from a random start drawn in each process (again
    in a forked child), so no two processes hand out the same token in practice,
    at the cost of a count, not of a draw from the OS, per reservation."""

    def __init__(self) -> None:
        self.draw()
        if hasattr(os, "register_at_fork"):  # pragma: no branch (not on Windows)
            os.register_at_fork(after_in_child=self.draw)

    def draw(self) -> None:
        self._start, self._count = secrets.randbelow(_TOKENS), itertools.count()

    def next(self) -> int:
        return (self._start + next(self._count)) % _TOKENS + 1


_tokens = _Tokens()


class Held(NamedTuple):
    """An open reservation: where, how much, until when, and what it said about itself.

    ``token`` tells it from another reservation given the same id: a shared store
    that loses its last writes (a Redis failover) can issue their ids again, and
    a handle must not settle the reservation that now has its id (0: a record
    stored before tokens, which any settle of its id may end)."""

    scope: ScopePath
    amount: Vector
    deadline: datetime | None
    meta: Meta | None
    token: int = 0


class Reservations:
    """Open reservations by id, and their deadlines.

    ``changed`` collects the ids added or ended since a store last wrote them
    out (a durable store writes only those).
    """

    def __init__(self, next_id: int = 1) -> None:
        self.open: dict[int, Held] = {}
        self._deadlines: list[tuple[datetime, int]] = []
        self._next = next_id
        self.changed: set[int] = set()

    @property
    def next_id(self) -> int:
        return self._next

    def restore(self, reservation: int, held: Held) -> None:
        """Put back a reservation read from a store."""
        self.open[reservation] = held
        if held.deadline is not None:
            heapq.heappush(self._deadlines, (held.deadline, reservation))

    def take(self, reservation: int, token: int | None = None) -> Held | None:
        """End an open reservation: what it held (``None``: not open, or, given the
        ``token`` of the one its settler holds, open as another reservation)."""
        held = self.open.get(reservation)
        if held is None or (token is not None and held.token not in (token, 0)):
            return None
        del self.open[reservation]
        self.changed.add(reservation)
        return held

    def add(
        self,
        scope: ScopePath,
        amount: Vector,
        ttl: timedelta | None,
        meta: Meta | None,
        now: datetime,
    ) -> tuple[int, Held]:
        """Register a reservation; ``ttl`` of ``None`` or ``timedelta.max`` never expires."""
        reservation = self._next
        self._next += 1
        deadline = None if ttl is None or ttl == timedelta.max else later(now, ttl)
        held = Held(scope, amount, deadline, meta, _tokens.next())
        self.restore(reservation, held)
        self.changed.add(reservation)
        return reservation, held

    def move_ids(self, first: int, offset: int) -> dict[int, int]:
        """Give the open reservations numbered from ``first`` on, and every later one,
        ids ``offset`` higher (ids no other process will issue); returns old -> new."""
        moved = {rid: rid + offset for rid in self.open if rid >= first}
        # All taken out before any is put back: a new id may be another's old one.
        held = [self.open.pop(rid) for rid in moved]
        self.open.update(zip(moved.values(), held, strict=True))
        # Every id from ``first`` on moves, open or not, so no deadline comes to
        # name another reservation than its own.
        self._deadlines = [(at, rid + offset * (rid >= first)) for at, rid in self._deadlines]
        heapq.heapify(self._deadlines)
        self.changed = {rid + offset * (rid >= first) for rid in self.changed}
        self._next += offset
        return moved

    def issued(self, reservation: int) -> bool:
        """Whether this ledger ever made a reservation with this id."""
        return 0 < reservation < self._next

    def due(self, now: datetime) -> list[tuple[int, Held]]:
        """Take out every open reservation whose deadline has come, earliest first."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, reservation = heapq.heappop(self._deadlines)
            held = self.take(reservation)
            if held is not None:
                expired.append((reservation, held))
        return expired

    def next_deadline(self) -> datetime | None:
        while self._deadlines and self._deadlines[0][1] not in self.open:
            heapq.heappop(self._deadlines)
        if not self.open:
            self._deadlines.clear()  # nothing open: every entry left is stale
        return self._deadlines[0][0] if self._deadlines else None


class Overrides:
    """Active overrides by id: which scope each raises, and when each expires.

    (An override itself lives with its scope; this is the index.)
    """

    def __init__(self, next_id: int = 1) -> None:
        self.scope_of: dict[int, ScopePath] = {}
        self._expiry: list[tuple[datetime, int]] = []
        self._next = next_id

    @property
    def next_id(self) -> int:
        return self._next

    def new_id(self) -> int:
        override = self._next
        self._next += 1
        return override

    def add(self, override: Override, scope: ScopePath) -> None:
        self.scope_of[override.id] = scope
        heapq.heappush(self._expiry, (override.expires_at, override.id))

    def due(self, now: datetime) -> list[int]:
        expired = []
        while self._expiry and self._expiry[0][0] <= now:
            _, override = heapq.heappop(self._expiry)
            if override in self.scope_of:
                expired.append(override)
        return expired

    def next_expiry(self) -> datetime | None:
        while self._expiry and self._expiry[0][1] not in self.scope_of:
            heapq.heappop(self._expiry)
        return self._expiry[0][0] if self._expiry else None
