"""The budget arithmetic as a pure state machine: no I/O, no event loop, no clock.

Only the actor calls it, one message at a time, so no method needs a lock.
Refusals are *returned* as exception instances rather than raised, so the
caller's task raises them with its own traceback and the actor never unwinds.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from ._amounts import AXES, NO_CAPS, CapVector, Vector, to_public
from ._errors import (
    BudgetExceeded,
    InvalidOption,
    RequestTooLarge,
    ReservationError,
    ReservationExpired,
)
from ._events import (
    DEFAULT_THRESHOLDS,
    Event,
    Override,
    OverrideExpired,
    OverrideRemoved,
    OverrideSet,
    RequestRefused,
    ReservationCommitted,
    ReservationCreated,
    ReservationReleased,
    ThresholdCrossed,
    WindowRolledOver,
    threshold_level,
)
from ._events import (
    ReservationExpired as ReservationExpiredEvent,
)
from ._types import Usage
from ._windows import Window, WindowState, add_to

State = tuple[Vector, Vector, int, int]
"""What the actor publishes: used, reserved, calls, open reservations."""

WindowsView = tuple[tuple[Window, Vector, datetime | None, CapVector], ...]
"""Each window, its usage in the current period, when it next resets, its limits now."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

UsageView = tuple[Vector, CapVector, Vector, int, dict[str, Vector], datetime | None]
"""used, limits, reserved, open reservations, usage per model, resets_at."""


class Ticket(Protocol):
    """Whatever the actor uses to answer a waiting request; the ledger only asks
    whether its holder gave up."""

    @property
    def abandoned(self) -> bool: ...


def _vector(values: list[int]) -> Vector:
    return (values[0], values[1], values[2], values[3], values[4])


class Ledger:
    """Used and reserved amounts per axis, checked against fixed caps."""

    __slots__ = (
        "_capped",
        "_deadline_of",
        "_deadlines",
        "_fired",
        "_increases",
        "_next_id",
        "_next_override",
        "_override_expiry",
        "_per_request_capped",
        "by_model",
        "calls",
        "caps",
        "default_ttl",
        "events",
        "limits",
        "name",
        "now",
        "overrides",
        "per_request",
        "reservations",
        "reserved",
        "thresholds",
        "used",
        "verbose",
        "waiting",
        "windows",
    )

    def __init__(
        self,
        caps: CapVector,
        name: str = "budget",
        per_request: CapVector = NO_CAPS,
        windows: Sequence[Window] = (),
        now: datetime = _EPOCH,
        thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
        default_ttl: timedelta | None = None,
    ) -> None:
        self.name: Final = name
        self.default_ttl = default_ttl
        # Caps in force now: the caps plus active overrides (recomputed only
        # when an override starts or ends, so admission reads one vector).
        self.limits: CapVector = caps
        self.by_model: dict[str, list[int]] = {}  # lifetime usage per model
        self.overrides: dict[int, Override] = {}
        self._override_expiry: list[tuple[datetime, int]] = []
        self._next_override = 1
        self._increases: dict[int, tuple[int, Vector]] = {}
        # (deadline, reservation id): a heap, so expiry never scans reservations.
        self._deadlines: list[tuple[datetime, int]] = []
        self._deadline_of: dict[int, datetime] = {}
        # Reservations waiting for room, in arrival order.
        self.waiting: deque[tuple[Ticket, Vector, timedelta | None]] = deque()
        self.caps: Final = caps
        self.per_request: Final = per_request
        self.now = now
        self.thresholds: Final = tuple(sorted(thresholds))
        # Events since the actor last took them. Per-operation events
        # (reservations, refusals) are made only while someone listens.
        self.events: list[Event] = []
        self.verbose = False
        # How many thresholds have fired, per (scope, axis); scope -1 is the lifetime.
        self._fired: dict[tuple[int, int], int] = {}
        self.windows: Final = tuple(WindowState(window, now) for window in windows)
        self._capped: Final = tuple(i for i, cap in enumerate(caps) if cap is not None)
        self._per_request_capped: Final = tuple(
            i for i, cap in enumerate(per_request) if cap is not None
        )
        self.used = [0] * len(AXES)
        self.reserved = [0] * len(AXES)
        self.reservations: dict[int, Vector] = {}
        self.calls = 0
        self._next_id = 1

    # -- admission ---------------------------------------------------------------

    def refusal(self, amount: Vector) -> BudgetExceeded | None:
        """Why ``amount`` cannot be admitted now, or ``None`` if it fits.

        First a cap the request can never fit (per request, then whole caps),
        then the first cap in axis order that it does not fit now.
        """
        for axis in self._per_request_capped:
            limit = self.per_request[axis]
            assert limit is not None
            if amount[axis] > limit:
                return RequestTooLarge(
                    budget=self.name,
                    cap=AXES[axis],
                    limit=to_public(axis, limit),
                    requested=to_public(axis, amount[axis]),
                    used=to_public(axis, 0),
                    reserved=to_public(axis, 0),
                    attempted=to_public(axis, amount[axis]),
                    available=to_public(axis, limit),
                    window="request",
                )
        caps, used, reserved = self.limits, self.used, self.reserved
        for axis in self._capped:
            cap = caps[axis]
            assert cap is not None
            if amount[axis] > cap:
                return self._exceeded(RequestTooLarge, axis, amount, cap, used)
        for window in self.windows:
            for axis in window.capped:
                cap = window.limits[axis]
                assert cap is not None
                if amount[axis] > cap:
                    return self._exceeded(RequestTooLarge, axis, amount, cap, window.used, window)
        for axis in self._capped:
            cap = caps[axis]
            assert cap is not None
            if used[axis] + reserved[axis] + amount[axis] > cap:
                return self._exceeded(BudgetExceeded, axis, amount, cap, used)
        # Open reservations count in every window: they may be charged in any of them.
        for window in self.windows:
            window_used = window.used
            for axis in window.capped:
                cap = window.limits[axis]
                assert cap is not None
                if window_used[axis] + reserved[axis] + amount[axis] > cap:
                    return self._exceeded(BudgetExceeded, axis, amount, cap, window_used, window)
        return None

    def _exceeded(
        self,
        kind: type[BudgetExceeded],
        axis: int,
        amount: Vector,
        cap: int,
        used_by_scope: list[int],
        window: WindowState | None = None,
    ) -> BudgetExceeded:
        used, reserved, requested = used_by_scope[axis], self.reserved[axis], amount[axis]
        return kind(
            budget=self.name,
            cap=AXES[axis],
            limit=to_public(axis, cap),
            requested=to_public(axis, requested),
            used=to_public(axis, used),
            reserved=to_public(axis, reserved),
            attempted=to_public(axis, used + reserved + requested),
            available=to_public(axis, max(cap - used - reserved, 0)),
            window="lifetime" if window is None else window.window.name,
            resets_at=None if window is None else window.resets_at(),
        )

    def advance(self, now: datetime) -> list[Window]:
        """Tell the ledger the time; returns the windows that dropped usage.

        Those windows re-arm their thresholds; a calendar one emits WindowRolledOver.
        """
        self.now = now
        if self._deadlines and self._deadlines[0][0] <= now:
            self._expire(now)
        if self._override_expiry and self._override_expiry[0][0] <= now:
            self._expire_overrides(now)
        rolled = []
        for scope, state in enumerate(self.windows):
            if state.advance(now):
                rolled.append(state.window)
                for axis in state.capped:
                    self._fired.pop((scope, axis), None)
                if state.window.kind != "rolling":  # rolling windows age out continuously
                    self.events.append(
                        WindowRolledOver(
                            budget=self.name, at=now, window=state.window.name, resets_at=state.end
                        )
                    )
        return rolled

    def _charge(self, amount: Vector, model: str | None = None) -> None:
        used = self.used
        for axis, value in enumerate(amount):
            used[axis] += value
        if model is not None:
            add_to(self.by_model, model, amount)
        for window in self.windows:
            window.charge(amount, self.now, model)
        if self.thresholds:
            self._check_thresholds()

    def _check_thresholds(self) -> None:
        caps, used = self.limits, self.used
        for axis in self._capped:
            cap = caps[axis]
            assert cap is not None
            self._alert(-1, axis, used[axis], cap, None)
        for scope, window in enumerate(self.windows):
            for axis in window.capped:
                cap = window.limits[axis]
                assert cap is not None
                self._alert(scope, axis, window.used[axis], cap, window)

    def _alert(
        self, scope: int, axis: int, used: int, cap: int, window: WindowState | None
    ) -> None:
        """Fire each threshold that ``used`` has newly reached, once."""
        thresholds, key = self.thresholds, (scope, axis)
        fired = start = self._fired.get(key, 0)
        while fired < len(thresholds) and used * 100 >= cap * thresholds[fired]:
            threshold = thresholds[fired]
            fired += 1
            self.events.append(
                ThresholdCrossed(
                    budget=self.name,
                    at=self.now,
                    level=threshold_level(threshold),
                    cap=AXES[axis],
                    window="lifetime" if window is None else window.window.name,
                    threshold=threshold,
                    used=to_public(axis, used),
                    limit=to_public(axis, cap),
                    resets_at=None if window is None else window.resets_at(),
                )
            )
        if fired != start:
            self._fired[key] = fired

    def _refused(self, refusal: BudgetExceeded) -> BudgetExceeded:
        if self.verbose:
            self.events.append(
                RequestRefused(
                    budget=self.name,
                    at=self.now,
                    level="warning",
                    cap=refusal.cap,
                    window=refusal.window,
                    error=str(refusal),
                )
            )
        return refusal

    # -- operations (the actor's message handlers) -------------------------------

    def reserve(self, amount: Vector, ttl: timedelta | None = None) -> int | BudgetExceeded:
        """Hold ``amount`` until committed, released or expired; returns its id.

        ``ttl`` is the time-to-live; ``None`` means the ledger's default
        (which may be no expiry at all) and ``timedelta.max`` never expires.
        See :meth:`deadline`.
        """
        refusal = self.refusal(amount)
        if refusal is not None:
            return self._refused(refusal)
        reserved = self.reserved
        for axis, value in enumerate(amount):
            reserved[axis] += value
        reservation_id = self._next_id
        self._next_id = reservation_id + 1
        self.reservations[reservation_id] = amount
        ttl = self.default_ttl if ttl is None else ttl
        deadline = None if ttl is None or ttl == timedelta.max else self.now + ttl
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, reservation_id))
            self._deadline_of[reservation_id] = deadline
        if self.verbose:
            self.events.append(
                ReservationCreated(
                    budget=self.name,
                    at=self.now,
                    reservation=reservation_id,
                    amount=Usage._from_vector(amount),
                )
            )
        return reservation_id

    def deadline(self, reservation_id: int) -> datetime | None:
        """When an open reservation expires (``None``: never)."""
        return self._deadline_of.get(reservation_id)

    def next_deadline(self) -> datetime | None:
        """The next instant time alone changes something: a reservation expires,
        or, while requests wait, a window frees usage (``None``: nothing is due)."""
        deadlines, reservations = self._deadlines, self.reservations
        while deadlines and deadlines[0][1] not in reservations:
            heapq.heappop(deadlines)  # settled already: dropped lazily, never scanned for
        due = deadlines[0][0] if deadlines else None
        heap = self._override_expiry
        while heap and heap[0][1] not in self.overrides:
            heapq.heappop(heap)
        if heap and (due is None or heap[0][0] < due):
            due = heap[0][0]
        if self.waiting:
            for window in self.windows:
                resets = window.resets_at()
                if resets is not None and (due is None or resets < due):
                    due = resets
        return due

    # -- waiting for budget --------------------------------------------------------

    def wait(self, ticket: Ticket, amount: Vector, ttl: timedelta | None) -> None:
        """Queue a reservation that does not fit yet; :meth:`serve_waiters` grants it."""
        self.waiting.append((ticket, amount, ttl))

    def serve_waiters(self) -> list[tuple[Ticket, int, datetime | None]]:
        """Grant waiting reservations in arrival order, from the head only.

        Stops at the first that still does not fit, so a large request at the
        head is never overtaken by smaller ones behind it. Tickets whose
        holder gave up are dropped. Returns (ticket, id, deadline) per grant.
        """
        granted = []
        waiting = self.waiting
        while waiting:
            ticket, amount, ttl = waiting[0]
            if ticket.abandoned:
                waiting.popleft()
                continue
            if self.refusal(amount) is not None:
                break
            waiting.popleft()
            reservation_id = self.reserve(amount, ttl)
            assert isinstance(reservation_id, int)
            granted.append((ticket, reservation_id, self.deadline(reservation_id)))
        return granted

    def _expire(self, now: datetime) -> None:
        deadlines, reservations = self._deadlines, self.reservations
        while deadlines and deadlines[0][0] <= now:
            deadline, reservation_id = heapq.heappop(deadlines)
            held = reservations.pop(reservation_id, None)
            if held is None:
                continue
            del self._deadline_of[reservation_id]
            reserved = self.reserved
            for axis, value in enumerate(held):
                reserved[axis] -= value
            self.events.append(
                ReservationExpiredEvent(
                    budget=self.name,
                    at=now,
                    level="warning",
                    reservation=reservation_id,
                    amount=Usage._from_vector(held),
                    deadline=deadline,
                )
            )

    def commit(
        self,
        reservation_id: int,
        actual: Vector,
        *,
        expired_ok: bool = False,
        model: str | None = None,
    ) -> ReservationError | None:
        """End a reservation, charging what was really used, even past a cap.

        With ``expired_ok`` (the caller vouches that it settles each
        reservation once, as the handles do), an issued id that is no longer
        open can only have expired: ``actual`` is still charged, since that
        spend happened, and the answer is :class:`ReservationExpired`.
        """
        held = self.reservations.pop(reservation_id, None)
        if self._deadline_of:
            self._deadline_of.pop(reservation_id, None)
        if held is None:
            if expired_ok and 0 < reservation_id < self._next_id:
                self.charge(actual, model)
                return ReservationExpired(
                    f"reservation {reservation_id} expired before it was committed; "
                    "its usage was recorded all the same"
                )
            return ReservationError(f"reservation {reservation_id} is not open")
        reserved = self.reserved
        for axis, value in enumerate(held):
            reserved[axis] -= value
        self._charge(actual, model)
        self.calls += 1
        if self.verbose:
            self.events.append(
                ReservationCommitted(
                    budget=self.name,
                    at=self.now,
                    reservation=reservation_id,
                    actual=Usage._from_vector(actual),
                )
            )
        return None

    def release(self, reservation_id: int, *, expired_ok: bool = False) -> ReservationError | None:
        """End a reservation without charging anything.

        With ``expired_ok`` (see :meth:`commit`), releasing an expired one is a no-op.
        """
        held = self.reservations.pop(reservation_id, None)
        if self._deadline_of:
            self._deadline_of.pop(reservation_id, None)
        if held is None:
            if expired_ok and 0 < reservation_id < self._next_id:
                return None  # expired: already released
            return ReservationError(f"reservation {reservation_id} is not open")
        reserved = self.reserved
        for axis, value in enumerate(held):
            reserved[axis] -= value
        if self.verbose:
            self.events.append(
                ReservationReleased(budget=self.name, at=self.now, reservation=reservation_id)
            )
        return None

    def record(self, amount: Vector, model: str | None = None) -> BudgetExceeded | None:
        """Charge ``amount`` at once if it fits; a refusal changes nothing."""
        refusal = self.refusal(amount)
        if refusal is not None:
            return self._refused(refusal)
        self._charge(amount, model)
        self.calls += 1
        return None

    def charge(self, amount: Vector, model: str | None = None) -> None:
        """Record usage that already happened, whatever the caps: it is never refused."""
        self._charge(amount, model)
        self.calls += 1

    def adjust(self, credit: tuple[int, ...]) -> None:
        """Give ``credit`` back to the budget (negative entries charge more).

        Usage never drops below zero: the part of a credit for usage from
        before a :meth:`reset` is dropped rather than counted twice.

        Time windows take extra charges but not credits: which window the
        credited usage was charged in is unknown, and crediting the wrong one
        could admit more than its cap. So a window keeps counting credited
        usage until it rolls over; it never undercounts.
        """
        used = self.used
        extra = [0] * len(AXES)
        for axis, value in enumerate(credit):
            if value:
                used[axis] = max(used[axis] - value, 0)
                extra[axis] = max(-value, 0)
        if self.windows and any(extra):
            for window in self.windows:
                window.charge((extra[0], extra[1], extra[2], extra[3], extra[4]), self.now)
        if self.thresholds and any(extra):
            self._check_thresholds()

    def unrecord(self, amount: Vector) -> None:
        """Take back a :meth:`record` whose caller was cancelled before it saw the reply.

        Like any credit, it does not reach time windows (see :meth:`adjust`).
        """
        self.adjust(amount)
        self.calls = max(self.calls - 1, 0)

    def reset(self, window: str | None = None) -> InvalidOption | None:
        """Zero all usage, in every window; open reservations stay reserved.

        With ``window``, zero only that time window's current usage.
        """
        if window is not None:
            for scope, state in enumerate(self.windows):
                if state.window.name == window:
                    state.clear()
                    for axis in state.capped:
                        self._fired.pop((scope, axis), None)
                    return None
            names = [state.window.name for state in self.windows]
            return InvalidOption(f"no window named {window!r}; this budget has {names}")
        self.used = [0] * len(AXES)
        self.by_model = {}
        self.calls = 0
        self._fired.clear()
        for state in self.windows:
            state.clear()
        return None

    # -- reads -------------------------------------------------------------------

    def state(self) -> State:
        """An immutable copy of the current figures."""
        return (_vector(self.used), _vector(self.reserved), self.calls, len(self.reservations))

    def windows_view(self) -> WindowsView:
        """An immutable copy of each window's usage, and when it next resets."""
        return tuple(
            (state.window, _vector(state.used), state.resets_at(), state.limits)
            for state in self.windows
        )

    def usage_view(self, period: str) -> UsageView | InvalidOption:
        """Raw figures for a usage report of ``period`` ("lifetime" or a window's name)."""
        scope = self._scope(period)
        if scope is None:
            names = ["lifetime", *(state.window.name for state in self.windows)]
            return InvalidOption(f"no period named {period!r}; this budget has {names}")
        if scope < 0:
            used, limits, by_model, resets = self.used, self.limits, self.by_model, None
        else:
            state = self.windows[scope]
            used, limits, by_model, resets = (
                state.used,
                state.limits,
                state.by_model,
                state.resets_at(),
            )
        return (
            _vector(used),
            limits,
            _vector(self.reserved),
            len(self.reservations),
            {model: _vector(totals) for model, totals in by_model.items()},
            resets,
        )

    # -- overrides -------------------------------------------------------------------

    def add_override(
        self,
        window: str,
        increase: Vector,
        expires_at: datetime,
        reason: str,
        created_by: str,
    ) -> Override | InvalidOption:
        """Raise the caps of one scope ("lifetime" or a window) until ``expires_at``."""
        scope = self._scope(window)
        if scope is None:
            names = ["lifetime", *(state.window.name for state in self.windows)]
            return InvalidOption(f"no window named {window!r}; this budget has {names}")
        base = self.caps if scope < 0 else self.windows[scope].window.caps
        uncapped = [AXES[i] for i, value in enumerate(increase) if value and base[i] is None]
        if uncapped:
            return InvalidOption(f"{window} has no cap on {', '.join(uncapped)} to raise")
        if not any(increase):
            return InvalidOption("an override must raise at least one cap")
        if expires_at <= self.now:
            return InvalidOption(f"expires_at {expires_at.isoformat()} is not in the future")
        override = Override(
            id=self._next_override,
            window=window,
            increase=Usage._from_vector(increase),
            created_at=self.now,
            expires_at=expires_at,
            reason=reason,
            created_by=created_by,
        )
        self._next_override += 1
        self.overrides[override.id] = override
        self._increases[override.id] = (scope, increase)
        heapq.heappush(self._override_expiry, (expires_at, override.id))
        self._recompute_limits(scope)
        self.events.append(OverrideSet(budget=self.name, at=self.now, override=override))
        return override

    def remove_override(self, override_id: int) -> InvalidOption | None:
        """End an override before it expires."""
        if override_id not in self.overrides:
            return InvalidOption(f"no active override {override_id}")
        self._end_override(override_id, expired=False)
        return None

    def _end_override(self, override_id: int, *, expired: bool) -> None:
        override = self.overrides.pop(override_id)
        scope, _ = self._increases.pop(override_id)
        self._recompute_limits(scope)
        kind = OverrideExpired if expired else OverrideRemoved
        self.events.append(kind(budget=self.name, at=self.now, override=override))

    def _expire_overrides(self, now: datetime) -> None:
        heap = self._override_expiry
        while heap and heap[0][0] <= now:
            _, override_id = heapq.heappop(heap)
            if override_id in self.overrides:
                self._end_override(override_id, expired=True)

    def _scope(self, window: str) -> int | None:
        if window == "lifetime":
            return -1
        for scope, state in enumerate(self.windows):
            if state.window.name == window:
                return scope
        return None

    def _recompute_limits(self, scope: int) -> None:
        base = self.caps if scope < 0 else self.windows[scope].window.caps
        limits = list(base)
        for override_scope, increase in self._increases.values():
            if override_scope == scope:
                for axis, value in enumerate(increase):
                    cap = limits[axis]
                    if value and cap is not None:
                        limits[axis] = cap + value
        vector = (limits[0], limits[1], limits[2], limits[3], limits[4])
        if scope < 0:
            self.limits = vector
        else:
            self.windows[scope].limits = vector

    def __repr__(self) -> str:
        parts = []
        for axis, name in enumerate(AXES):
            cap = self.caps[axis]
            shown = "-" if cap is None else str(to_public(axis, cap))
            used = to_public(axis, self.used[axis])
            parts.append(f"{name}={used}+{to_public(axis, self.reserved[axis])}/{shown}")
        return f"<Ledger {self.name!r} {' '.join(parts)} open={len(self.reservations)}>"
