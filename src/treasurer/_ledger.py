"""The budget arithmetic as a pure state machine: no I/O, no event loop, no clock.

Only the actor calls it, one message at a time, so no method needs a lock.
Refusals are *returned* as exception instances rather than raised, so the
caller's task raises them with its own traceback and the actor never unwinds.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping, Sequence
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
"""Each window, its base, when it next resets, its limits now.

A window's usage in its current period is the scope's lifetime usage minus
its base (see WindowState), so the view holds the base: it stays valid while
charges come in, and a batch publishes it again only when it changed."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

UsageView = tuple[
    Vector, CapVector, Vector, int, dict[str, Vector], datetime | None, tuple[Override, ...]
]
"""used, limits, reserved, open reservations, usage per model, resets_at, overrides."""


class Ticket(Protocol):
    """Whatever the actor uses to answer a waiting request; the ledger only asks
    whether its holder gave up."""

    @property
    def abandoned(self) -> bool: ...


def _vector(values: list[int]) -> Vector:
    return (values[0], values[1], values[2], values[3], values[4])


TenantSpec = tuple[CapVector, CapVector, tuple[Window, ...]]
"""A tenant's own caps: whole-life caps, per-request caps, time windows."""

NO_TENANT_CAPS: Final[TenantSpec] = (NO_CAPS, NO_CAPS, ())
_NEVER: Final = float("inf")  # a usage no threshold fires at
# An amount on one axis, or _NEVER. Spelled as a union, not float, so a build
# compiled with mypyc keeps ints as ints.
Level = int | float
_FOREVER: Final = datetime.max.replace(tzinfo=UTC)

Waiter = tuple[int, Ticket, Vector, "timedelta | None"]
"""Arrival number, ticket, amount, time-to-live of a reservation waiting for room."""

Answer = tuple[Ticket, "tuple[int, datetime | None] | BudgetExceeded"]
"""A waiter's ticket and its answer: (reservation id, deadline), or why it never fits."""


class Scope:
    """Caps and usage of one accounting scope: the budget's shared one, or one tenant's.

    Holds whole-life caps, per-request caps, time windows, overrides in force,
    threshold state and the queue of requests waiting for room in it. Events
    and the clock belong to the ledger that owns it.
    """

    __slots__ = (
        "_capped",
        "_ceiling",
        "_fired",
        "_largest",
        "_per_request_capped",
        "_rolling",
        "_trip_at",
        "_trips",
        "_windows_view",
        "by_model",
        "calls",
        "caps",
        "increases",
        "limits",
        "name",
        "open",
        "overrides",
        "owner",
        "parked",
        "per_request",
        "queue",
        "reserved",
        "stale_at",
        "tenant",
        "used",
        "windows",
    )

    def __init__(
        self,
        owner: Ledger,
        name: str,
        tenant: str | None,
        spec: TenantSpec,
        now: datetime,
    ) -> None:
        caps, per_request, windows = spec
        self.owner: Final = owner
        self.name: Final = name
        self.tenant: Final = tenant
        self.caps: Final = caps
        self.per_request: Final = per_request
        # Caps in force now: the caps plus active overrides (recomputed only
        # when an override starts or ends, so admission reads one vector).
        self.limits: CapVector = caps
        self.used = [0] * len(AXES)  # lifetime usage; windows read it too, so never replaced
        self.windows: Final = tuple(WindowState(window, now, self.used) for window in windows)
        self._rolling: Final = tuple(w for w in self.windows if w.window.kind == "rolling")
        self._windows_view: WindowsView | None = None  # made again once a base or limit moves
        # The first instant a window may drop usage: before it, advancing is a
        # no-op. Never later than the truth (that would skip a rollover).
        self.stale_at = self.next_reset() or _FOREVER
        self._capped: Final = tuple(i for i, cap in enumerate(caps) if cap is not None)
        self._per_request_capped: Final = tuple(
            i for i, cap in enumerate(per_request) if cap is not None
        )
        self.reserved = [0] * len(AXES)
        self.by_model: dict[str, list[int]] = {}  # lifetime usage per model
        self.calls = 0
        self.open = 0  # open reservations (a tenant's; the ledger counts its own)
        # How many thresholds have fired, per (window index, axis); -1 is the lifetime.
        self._fired: dict[tuple[int, int], int] = {}
        # The usage at which the next threshold fires, per axis, for the lifetime
        # (row 0) and each window (row index + 1): a charge compares, no more.
        self._trips: list[list[Level]] = [[_NEVER] * len(AXES) for _ in range(len(windows) + 1)]
        # Per axis, over the lifetime and every window, in terms of lifetime
        # usage (a window's usage is lifetime usage minus its base): the
        # highest lifetime usage every cap allows, the lifetime usage at which
        # the next threshold fires, and the largest request any cap allows.
        # A charge adds to lifetime usage only, so these stay put; a window
        # rolling over, a credit or an override recomputes them. A request is
        # checked against these numbers, and only a refusal looks at each cap
        # to say which one refused.
        self._ceiling: list[Level] = [_NEVER] * len(AXES)
        self._trip_at: list[Level] = [_NEVER] * len(AXES)
        self._largest: list[Level] = [_NEVER] * len(AXES)
        for index in range(-1, len(windows)):
            self._rearm(index)
        self._recompute()
        self._recompute_largest()
        self.overrides: dict[int, Override] = {}
        self.increases: dict[int, tuple[int, Vector]] = {}  # override id: (window index, increase)
        # Requests waiting for room in this scope, in arrival order; ``parked``
        # while the head does not fit this scope's own caps.
        self.queue: deque[Waiter] = deque()
        self.parked = False

    # -- admission ---------------------------------------------------------------

    def fits(self, amount: Vector) -> bool:
        """Whether ``amount`` fits this scope now: exactly when :meth:`refusal`
        is ``None``, in one pass over the precomputed limits (``_largest``,
        ``_ceiling``); only a refusal walks the caps to name one."""
        largest, ceiling, reserved, used = self._largest, self._ceiling, self.reserved, self.used
        return (
            amount[0] <= largest[0]
            and amount[1] <= largest[1]
            and amount[2] <= largest[2]
            and amount[3] <= largest[3]
            and amount[4] <= largest[4]
            and amount[0] + reserved[0] + used[0] <= ceiling[0]
            and amount[1] + reserved[1] + used[1] <= ceiling[1]
            and amount[2] + reserved[2] + used[2] <= ceiling[2]
            and amount[3] + reserved[3] + used[3] <= ceiling[3]
            and amount[4] + reserved[4] + used[4] <= ceiling[4]
        )

    def refusal(self, amount: Vector) -> BudgetExceeded | None:
        """Why ``amount`` cannot be admitted in this scope now, or ``None`` if it fits.

        First a cap the request can never fit (per request, then whole caps),
        then the first cap in axis order that it does not fit now.
        """
        return self.too_large(amount) or self.no_room(amount)

    def too_large(self, amount: Vector) -> BudgetExceeded | None:
        """A cap of this scope that ``amount`` exceeds on its own, so it never fits."""
        for axis in self._per_request_capped:
            limit = self.per_request[axis]
            assert limit is not None
            if amount[axis] > limit:
                return RequestTooLarge(
                    budget=self.name,
                    tenant=self.tenant,
                    cap=AXES[axis],
                    limit=to_public(axis, limit),
                    requested=to_public(axis, amount[axis]),
                    used=to_public(axis, 0),
                    reserved=to_public(axis, 0),
                    attempted=to_public(axis, amount[axis]),
                    available=to_public(axis, limit),
                    window="request",
                )
        caps = self.limits
        for axis in self._capped:
            cap = caps[axis]
            assert cap is not None
            if amount[axis] > cap:
                return self._exceeded(RequestTooLarge, axis, amount, cap, self.used)
        for window in self.windows:
            for axis in window.capped:
                cap = window.limits[axis]
                assert cap is not None
                if amount[axis] > cap:
                    return self._exceeded(RequestTooLarge, axis, amount, cap, window.used, window)
        return None

    def no_room(self, amount: Vector) -> BudgetExceeded | None:
        """The first cap of this scope without room for ``amount`` now."""
        reserved, used = self.reserved, self.used
        caps = self.limits
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
            tenant=self.tenant,
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

    # -- usage -------------------------------------------------------------------

    def advance_windows(self, now: datetime) -> list[Window]:
        """Move each window to ``now``; returns those that dropped usage.

        Those re-arm their thresholds; a calendar one emits WindowRolledOver.
        """
        rolled = []
        for index, state in enumerate(self.windows):
            if state.advance(now):
                rolled.append(state.window)
                for axis in state.capped:
                    self._fired.pop((index, axis), None)
                self._rearm(index)
                if state.window.kind != "rolling":  # rolling windows age out continuously
                    self.owner.events.append(
                        WindowRolledOver(
                            budget=self.name,
                            tenant=self.tenant,
                            at=now,
                            window=state.window.name,
                            resets_at=state.end,
                        )
                    )
        self.stale_at = self.next_reset() or _FOREVER
        if rolled:
            self._recompute()
        return rolled

    # Vectors have exactly five axes; spelled out, these run on every request.

    def hold(self, amount: Vector) -> None:
        reserved = self.reserved
        reserved[0] += amount[0]
        reserved[1] += amount[1]
        reserved[2] += amount[2]
        reserved[3] += amount[3]
        reserved[4] += amount[4]

    def unhold(self, amount: Vector) -> None:
        reserved = self.reserved
        reserved[0] -= amount[0]
        reserved[1] -= amount[1]
        reserved[2] -= amount[2]
        reserved[3] -= amount[3]
        reserved[4] -= amount[4]

    def charge_usage(self, amount: Vector, model: str | None) -> None:
        used, trip_at = self.used, self._trip_at
        used[0] += amount[0]
        used[1] += amount[1]
        used[2] += amount[2]
        used[3] += amount[3]
        used[4] += amount[4]
        if model is not None:
            add_to(self.by_model, model, amount)
            self._charge_windows(amount, model)
        elif self._rolling:
            self._charge_windows(amount)
        if (
            used[0] >= trip_at[0]
            or used[1] >= trip_at[1]
            or used[2] >= trip_at[2]
            or used[3] >= trip_at[3]
            or used[4] >= trip_at[4]
        ):
            self._check_thresholds()

    def _charge_windows(self, amount: Vector, model: str | None = None) -> None:
        """After the lifetime took ``amount``: what windows keep besides (see WindowState)."""
        now = self.owner.now
        for window in self.windows if model is not None else self._rolling:
            if window.charge(amount, now, model):
                # A rolling window's first charge: it now resets when that one leaves.
                self._windows_view = None
                duration = window.window.duration
                assert duration is not None
                if now + duration < self.stale_at:
                    self.stale_at = now + duration

    def credit(self, credit: tuple[int, ...]) -> None:
        """Give usage back (negative entries charge more); see :meth:`Ledger.adjust`."""
        used = self.used
        extra = [0] * len(AXES)
        for axis, value in enumerate(credit):
            if value > 0:
                given_back = min(value, used[axis])
                used[axis] -= given_back
                for window in self.windows:  # windows keep their usage
                    window.base[axis] -= given_back
            elif value < 0:
                used[axis] -= value
                extra[axis] = -value
        if any(extra):
            self._charge_windows(_vector(extra))
            if self.owner.thresholds:
                self._check_thresholds()
        self._recompute()

    def _check_thresholds(self) -> None:
        trips, used = self._trips, self.used
        lifetime = trips[0]
        for axis in self._capped:
            if used[axis] >= lifetime[axis]:
                cap = self.limits[axis]
                assert cap is not None
                self._alert(-1, axis, used[axis], cap, None)
        for index, window in enumerate(self.windows):
            row, window_used = trips[index + 1], window.used
            for axis in window.capped:
                if window_used[axis] >= row[axis]:
                    cap = window.limits[axis]
                    assert cap is not None
                    self._alert(index, axis, window_used[axis], cap, window)

    def _rearm(self, index: int) -> None:
        """Recompute when each threshold of one scope (-1: lifetime) next fires."""
        thresholds = self.owner.thresholds
        limits = self.limits if index < 0 else self.windows[index].limits
        row = self._trips[index + 1]
        for axis, cap in enumerate(limits):
            fired = self._fired.get((index, axis), 0)
            if cap is None or fired >= len(thresholds):
                row[axis] = _NEVER
            else:  # used * 100 >= cap * threshold, in integers
                row[axis] = -(-cap * thresholds[fired] // 100)
        self._recompute_trips()

    def _recompute(self) -> None:
        """Recompute each axis' ceiling and threshold trip (see ``_ceiling``) after
        a window's base, a cap or a threshold moved."""
        self._windows_view = None
        ceiling = self._ceiling
        for axis in range(len(AXES)):
            cap = self.limits[axis]
            least: Level = _NEVER if cap is None else cap
            for window in self.windows:
                cap = window.limits[axis]
                if cap is not None and cap + window.base[axis] < least:
                    least = cap + window.base[axis]
            ceiling[axis] = least
        self._recompute_trips()

    def _recompute_trips(self) -> None:
        trip_at, trips = self._trip_at, self._trips
        for axis in range(len(AXES)):
            least = trips[0][axis]
            for index, window in enumerate(self.windows):
                at = trips[index + 1][axis] + window.base[axis]
                if at < least:
                    least = at
            trip_at[axis] = least

    def _recompute_largest(self) -> None:
        largest = self._largest
        for axis in range(len(AXES)):
            caps = [self.per_request[axis], self.limits[axis]]
            caps += [window.limits[axis] for window in self.windows]
            present = [cap for cap in caps if cap is not None]
            largest[axis] = min(present) if present else _NEVER

    def _alert(
        self, index: int, axis: int, used: int, cap: int, window: WindowState | None
    ) -> None:
        """Fire each threshold that ``used`` has newly reached, once."""
        thresholds, key = self.owner.thresholds, (index, axis)
        fired = start = self._fired.get(key, 0)
        while fired < len(thresholds) and used * 100 >= cap * thresholds[fired]:
            threshold = thresholds[fired]
            fired += 1
            self.owner.events.append(
                ThresholdCrossed(
                    budget=self.name,
                    tenant=self.tenant,
                    at=self.owner.now,
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
            self._rearm(index)

    def clear(self, window: str | None = None) -> InvalidOption | None:
        """Zero usage: everything, or one time window's current period."""
        if window is not None:
            index = self.window_index(window)
            if index is None or index < 0:
                names = [state.window.name for state in self.windows]
                return InvalidOption(f"no window named {window!r}; this scope has {names}")
            state = self.windows[index]
            state.clear()
            for axis in state.capped:
                self._fired.pop((index, axis), None)
            self._rearm(index)
            self._recompute()
            return None
        self.used[:] = [0] * len(AXES)  # in place: the windows read this list
        self.by_model = {}
        self.calls = 0
        self._fired.clear()
        for state in self.windows:
            state.clear()
        for index in range(-1, len(self.windows)):
            self._rearm(index)
        self._recompute()
        return None

    # -- reads -------------------------------------------------------------------

    def open_reservations(self) -> int:
        return self.open

    def state(self) -> State:
        """An immutable copy of the current figures (published after every batch)."""
        used, reserved = self.used, self.reserved
        return (
            (used[0], used[1], used[2], used[3], used[4]),
            (reserved[0], reserved[1], reserved[2], reserved[3], reserved[4]),
            self.calls,
            self.open_reservations(),
        )

    def windows_view(self) -> WindowsView:
        """An immutable copy of each window's base, reset time and limits.

        Made again only after one of them moved (a charge moves none of them),
        so publishing it after every batch costs nothing in between.
        """
        view = self._windows_view
        if view is None:
            view = self._windows_view = tuple(
                (state.window, _vector(state.base), state.resets_at(), state.limits)
                for state in self.windows
            )
        return view

    def usage_view(self, period: str) -> UsageView | InvalidOption:
        """Raw figures for a usage report of ``period`` ("lifetime" or a window's name)."""
        index = self.window_index(period)
        if index is None:
            return InvalidOption(f"no period named {period!r}; this scope has {self.periods()}")
        if index < 0:
            used, limits, by_model, resets = self.used, self.limits, self.by_model, None
        else:
            state = self.windows[index]
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
            self.open_reservations(),
            {model: _vector(totals) for model, totals in by_model.items()},
            resets,
            tuple(o for o in self.overrides.values() if o.window == period),
        )

    def periods(self) -> list[str]:
        return ["lifetime", *(state.window.name for state in self.windows)]

    def window_index(self, window: str) -> int | None:
        """-1 for "lifetime", a window's index by name, or ``None``."""
        if window == "lifetime":
            return -1
        for index, state in enumerate(self.windows):
            if state.window.name == window:
                return index
        return None

    def recompute_limits(self, index: int) -> None:
        base = self.caps if index < 0 else self.windows[index].window.caps
        limits = list(base)
        for override_index, increase in self.increases.values():
            if override_index == index:
                for axis, value in enumerate(increase):
                    cap = limits[axis]
                    if value and cap is not None:
                        limits[axis] = cap + value
        if index < 0:
            self.limits = _vector_caps(limits)
        else:
            self.windows[index].limits = _vector_caps(limits)
        self._rearm(index)
        self._recompute()
        self._recompute_largest()

    def next_reset(self) -> datetime | None:
        """When one of this scope's windows next frees usage."""
        resets = [at for state in self.windows if (at := state.resets_at()) is not None]
        return min(resets) if resets else None


def _vector_caps(values: list[int | None]) -> CapVector:
    return (values[0], values[1], values[2], values[3], values[4])


class Ledger(Scope):
    """The budget: its shared scope, its tenants, reservations, waiters and overrides.

    Every operation takes an optional ``tenant``. A tenant's request must fit
    both the tenant's own caps and the budget's (which are therefore a shared
    total over all tenants), and its usage counts in both. Tenants are made
    on first use, from their configured caps or the defaults, and their
    windows advance only when they are used (lazily, like every window).
    """

    __slots__ = (
        "_deadline_of",
        "_deadlines",
        "_in_order",
        "_next_id",
        "_next_override",
        "_next_seq",
        "_override_expiry",
        "_override_scope",
        "_parked",
        "_parked_wake",
        "_ready",
        "_scope_of",
        "_tenant_default",
        "_tenant_specs",
        "default_ttl",
        "events",
        "now",
        "reservations",
        "tenants",
        "thresholds",
        "verbose",
        "waiting",
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
        tenant_default: TenantSpec = NO_TENANT_CAPS,
        tenant_specs: Mapping[str, TenantSpec] | None = None,
    ) -> None:
        self.now = now
        self.thresholds: Final = tuple(sorted(thresholds))
        # Events since the actor last took them. Per-operation events
        # (reservations, refusals) are made only while someone listens.
        self.events: list[Event] = []
        self.verbose = False
        super().__init__(self, name, None, (caps, per_request, tuple(windows)), now)
        self.default_ttl = default_ttl
        self.reservations: dict[int, Vector] = {}
        self._next_id = 1
        # (deadline, reservation id), so expiry never scans reservations. With
        # one TTL for all, deadlines come in order: a queue takes those (O(1)
        # each way), a heap any that would come before the queue's last.
        self._in_order: deque[tuple[datetime, int]] = deque()
        self._deadlines: list[tuple[datetime, int]] = []
        self._deadline_of: dict[int, datetime] = {}
        self._next_override = 1
        self._override_expiry: list[tuple[datetime, int]] = []
        self._override_scope: dict[int, Scope] = {}
        # Tenants, made on first use; which tenant holds each tenant reservation.
        self._tenant_default: Final = tenant_default
        self._tenant_specs: Final = dict(tenant_specs or {})
        self.tenants: dict[str, Scope] = {}
        self._scope_of: dict[int, Scope] = {}
        # Waiting: each scope queues its own requests; ``_ready`` holds the
        # head of every queue that is not parked, by arrival number, so the
        # oldest is tried first. A parked tenant is woken when it frees room,
        # or by ``_parked_wake`` when one of its windows next resets.
        self.waiting = 0
        self._next_seq = 0
        self._ready: list[tuple[int, Scope]] = []
        self._parked_wake: list[tuple[datetime, int, Scope]] = []
        self._parked: set[Scope] = set()

    # -- tenants -----------------------------------------------------------------

    def scope(self, tenant: str | None) -> Scope:
        """The scope of ``tenant`` (``None``: the budget's own), made on first use."""
        if tenant is None:
            return self
        scope = self.tenants.get(tenant)
        if scope is None:
            spec = self._tenant_specs.get(tenant, self._tenant_default)
            scope = self.tenants[tenant] = Scope(self, self.name, tenant, spec, self.now)
        elif self.now >= scope.stale_at:
            self._advance_tenant(scope)
        return scope

    def _advance_tenant(self, scope: Scope) -> None:
        if scope.advance_windows(self.now):
            self._unpark(scope)

    def existing(self, tenant: str) -> Scope | None:
        """A tenant's scope, current to the ledger's time, if it was ever used.

        For reads between batches: it creates nothing, but brings the tenant's
        windows up to date, as its next use would.
        """
        scope = self.tenants.get(tenant)
        if scope is not None and self.now >= scope.stale_at:
            self._advance_tenant(scope)
        return scope

    def _admit(self, tenant: str | None, amount: Vector) -> Scope | BudgetExceeded:
        """The scope ``amount`` is admitted in, or why it is refused (recorded as
        a refusal). The comparisons of :meth:`Scope.fits` decide; only a
        refusal looks for the cap to name (see :meth:`_refusal_in`)."""
        if tenant is None:
            return self if self.fits(amount) else self._refuse(self, amount)
        found = self.tenants.get(tenant)
        scope = self.scope(tenant) if found is None or self.now >= found.stale_at else found
        return scope if scope.fits(amount) and self.fits(amount) else self._refuse(scope, amount)

    def _refuse(self, scope: Scope, amount: Vector) -> BudgetExceeded:
        """The refusal of ``amount``, which does not fit ``scope`` or the shared caps."""
        refusal = self._refusal_in(scope, amount)
        assert refusal is not None, "fits() is exactly these caps' room"
        return self._refused(refusal)

    def _refusal_in(self, scope: Scope, amount: Vector) -> BudgetExceeded | None:
        """Why ``amount`` does not fit ``scope`` and the shared caps (``None``: it fits).

        Caps it can never fit come first, from either scope, so a waiter is
        never queued for something that cannot happen.
        """
        if scope is self:
            return self.refusal(amount)
        return (
            scope.too_large(amount)
            or self.too_large(amount)
            or scope.no_room(amount)
            or self.no_room(amount)
        )

    def refusal_for(self, amount: Vector, tenant: str | None = None) -> BudgetExceeded | None:
        """Why ``amount`` cannot be admitted for ``tenant`` now (``None``: it fits)."""
        return self._refusal_in(self.scope(tenant), amount)

    def tenant_spec(self, tenant: str) -> TenantSpec:
        """The caps ``tenant`` has, or will have on first use."""
        return self._tenant_specs.get(tenant, self._tenant_default)

    # -- time --------------------------------------------------------------------

    def advance(self, now: datetime) -> list[Window]:
        """Tell the ledger the time; returns the budget's windows that dropped usage.

        Expires reservations and overrides that are due and wakes parked
        tenants whose windows reset; other tenants' windows advance lazily.
        """
        self.now = now
        if (self._in_order and self._in_order[0][0] <= now) or (
            self._deadlines and self._deadlines[0][0] <= now
        ):
            self._expire(now)
        if self._override_expiry and self._override_expiry[0][0] <= now:
            self._expire_overrides(now)
        wake = self._parked_wake
        while wake and wake[0][0] <= now:
            scope = heapq.heappop(wake)[2]
            if scope.parked:
                self._advance_tenant(scope)
                self._unpark(scope)
        return self.advance_windows(now) if now >= self.stale_at else []

    def next_deadline(self) -> datetime | None:
        """The next instant time alone changes something: a reservation or
        override expires, or, while requests wait, a window frees usage
        (``None``: nothing is due)."""
        deadlines, in_order, reservations = self._deadlines, self._in_order, self.reservations
        # Settled already: dropped lazily, never scanned for.
        while in_order and in_order[0][1] not in reservations:
            in_order.popleft()
        while deadlines and deadlines[0][1] not in reservations:
            heapq.heappop(deadlines)
        due = in_order[0][0] if in_order else None
        if deadlines and (due is None or deadlines[0][0] < due):
            due = deadlines[0][0]
        heap = self._override_expiry
        while heap and heap[0][1] not in self._override_scope:
            heapq.heappop(heap)
        if heap and (due is None or heap[0][0] < due):
            due = heap[0][0]
        wake = self._parked_wake
        while wake and not wake[0][2].parked:
            heapq.heappop(wake)
        if wake and (due is None or wake[0][0] < due):
            due = wake[0][0]
        if self._ready:
            resets = self.next_reset()
            if resets is not None and (due is None or resets < due):
                due = resets
        return due

    # -- reservations ------------------------------------------------------------

    def _refused(self, refusal: BudgetExceeded) -> BudgetExceeded:
        if self.verbose:
            self.events.append(
                RequestRefused(
                    budget=self.name,
                    tenant=refusal.tenant,
                    at=self.now,
                    level="warning",
                    cap=refusal.cap,
                    window=refusal.window,
                    error=str(refusal),
                )
            )
        return refusal

    def reserve(
        self, amount: Vector, ttl: timedelta | None = None, tenant: str | None = None
    ) -> int | BudgetExceeded:
        """Hold ``amount`` until committed, released or expired; returns its id.

        ``ttl`` is the time-to-live; ``None`` means the ledger's default
        (which may be no expiry at all) and ``timedelta.max`` never expires.
        See :meth:`deadline`.
        """
        if tenant is None:  # the common case, decided without _admit's call
            if self.fits(amount):
                return self._hold(self, amount, ttl)
            return self._refuse(self, amount)
        scope = self._admit(tenant, amount)
        if isinstance(scope, BudgetExceeded):
            return scope
        return self._hold(scope, amount, ttl)

    def _hold(self, scope: Scope, amount: Vector, ttl: timedelta | None) -> int:
        self.hold(amount)
        reservation_id = self._next_id
        self._next_id = reservation_id + 1
        self.reservations[reservation_id] = amount
        if scope is not self:
            scope.hold(amount)
            scope.open += 1
            self._scope_of[reservation_id] = scope
        ttl = self.default_ttl if ttl is None else ttl
        if ttl is not None and ttl != timedelta.max:
            deadline = self.now + ttl
            in_order = self._in_order
            if not in_order or in_order[-1][0] <= deadline:
                in_order.append((deadline, reservation_id))
            else:
                heapq.heappush(self._deadlines, (deadline, reservation_id))
            self._deadline_of[reservation_id] = deadline
        if self.verbose:
            self.events.append(
                ReservationCreated(
                    budget=self.name,
                    tenant=scope.tenant,
                    at=self.now,
                    reservation=reservation_id,
                    amount=Usage._from_vector(amount),
                )
            )
        return reservation_id

    def deadline(self, reservation_id: int) -> datetime | None:
        """When an open reservation expires (``None``: never)."""
        return self._deadline_of.get(reservation_id)

    def _end(self, reservation_id: int) -> tuple[Vector, Scope] | None:
        """Close an open reservation: what it held, and its scope (``None``: not open)."""
        reservations = self.reservations
        held = reservations.pop(reservation_id, None)
        if self._deadline_of:
            self._deadline_of.pop(reservation_id, None)
            if not reservations:  # every entry left is stale: drop them now
                self._in_order.clear()
                self._deadlines.clear()
        if held is None:
            return None
        self.unhold(held)
        scope = self._scope_of.pop(reservation_id, None) if self._scope_of else None
        if scope is None:
            return held, self
        if self.now >= scope.stale_at:
            self._advance_tenant(scope)
        scope.unhold(held)
        scope.open -= 1
        if scope.parked:
            self._unpark(scope)
        return held, scope

    def _expire(self, now: datetime) -> None:
        deadlines, in_order = self._deadlines, self._in_order
        while True:  # both in (deadline, id) order: take the earlier head
            if in_order and (not deadlines or in_order[0] < deadlines[0]):
                if in_order[0][0] > now:
                    break
                deadline, reservation_id = in_order.popleft()
            elif deadlines and deadlines[0][0] <= now:
                deadline, reservation_id = heapq.heappop(deadlines)
            else:
                break
            ended = self._end(reservation_id)
            if ended is None:
                continue
            held, scope = ended
            self.events.append(
                ReservationExpiredEvent(
                    budget=self.name,
                    tenant=scope.tenant,
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
        tenant: str | None = None,
    ) -> ReservationError | None:
        """End a reservation, charging what was really used, even past a cap.

        With ``expired_ok`` (the caller vouches that it settles each
        reservation once, as the handles do), an issued id that is no longer
        open can only have expired: ``actual`` is still charged (to
        ``tenant``, the reservation's), since that spend happened, and the
        answer is :class:`ReservationExpired`.
        """
        ended = self._end(reservation_id)
        if ended is None:
            if expired_ok and 0 < reservation_id < self._next_id:
                self.charge(actual, model, tenant)
                return ReservationExpired(
                    f"reservation {reservation_id} expired before it was committed; "
                    "its usage was recorded all the same"
                )
            return ReservationError(f"reservation {reservation_id} is not open")
        scope = ended[1]
        self.charge_usage(actual, model)
        self.calls += 1
        if scope is not self:
            scope.charge_usage(actual, model)
            scope.calls += 1
        if self.verbose:
            self.events.append(
                ReservationCommitted(
                    budget=self.name,
                    tenant=scope.tenant,
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
        ended = self._end(reservation_id)
        if ended is None:
            if expired_ok and 0 < reservation_id < self._next_id:
                return None  # expired: already released
            return ReservationError(f"reservation {reservation_id} is not open")
        if self.verbose:
            self.events.append(
                ReservationReleased(
                    budget=self.name,
                    tenant=ended[1].tenant,
                    at=self.now,
                    reservation=reservation_id,
                )
            )
        return None

    # -- usage without a reservation -----------------------------------------------

    def record(
        self, amount: Vector, model: str | None = None, tenant: str | None = None
    ) -> BudgetExceeded | None:
        """Charge ``amount`` at once if it fits; a refusal changes nothing."""
        scope = self._admit(tenant, amount)
        if isinstance(scope, BudgetExceeded):
            return scope
        self._charge_in(scope, amount, model)
        return None

    def charge(self, amount: Vector, model: str | None = None, tenant: str | None = None) -> None:
        """Record usage that already happened, whatever the caps: it is never refused."""
        self._charge_in(self.scope(tenant), amount, model)

    def _charge_in(self, scope: Scope, amount: Vector, model: str | None) -> None:
        self.charge_usage(amount, model)
        self.calls += 1
        if scope is not self:
            scope.charge_usage(amount, model)
            scope.calls += 1

    def adjust(self, credit: tuple[int, ...], tenant: str | None = None) -> None:
        """Give ``credit`` back to the budget (negative entries charge more).

        Usage never drops below zero: the part of a credit for usage from
        before a :meth:`reset` is dropped rather than counted twice.

        Time windows take extra charges but not credits: which window the
        credited usage was charged in is unknown, and crediting the wrong one
        could admit more than its cap. So a window keeps counting credited
        usage until it rolls over; it never undercounts.
        """
        self.credit(credit)
        if tenant is not None:
            scope = self.scope(tenant)
            scope.credit(credit)
            self._unpark(scope)

    def unrecord(self, amount: Vector, tenant: str | None = None) -> None:
        """Take back a :meth:`record` whose caller was cancelled before it saw the reply.

        Like any credit, it does not reach time windows (see :meth:`adjust`).
        """
        self.adjust(amount, tenant)
        self.calls = max(self.calls - 1, 0)
        if tenant is not None:
            scope = self.scope(tenant)
            scope.calls = max(scope.calls - 1, 0)

    def reset(self, window: str | None = None, tenant: str | None = None) -> InvalidOption | None:
        """Zero usage; open reservations stay reserved.

        Without ``tenant``: the budget's usage and every tenant's. With
        ``tenant``: that tenant's only (the shared total keeps counting it).
        With ``window``, only that time window's current period.
        """
        if tenant is not None:
            scope = self.scope(tenant)
            self._unpark(scope)
            return scope.clear(window)
        error = self.clear(window)
        if error is None and window is None:
            for scope in self.tenants.values():
                scope.clear()
                self._unpark(scope)
        return error

    # -- waiting for room ----------------------------------------------------------

    def wait(
        self, ticket: Ticket, amount: Vector, ttl: timedelta | None, tenant: str | None = None
    ) -> None:
        """Queue a reservation that does not fit yet; :meth:`serve_waiters` answers it."""
        scope = self.scope(tenant)
        seq = self._next_seq
        self._next_seq = seq + 1
        if not scope.queue:
            heapq.heappush(self._ready, (seq, scope))
        scope.queue.append((seq, ticket, amount, ttl))
        self.waiting += 1

    def serve_waiters(self) -> list[Answer]:
        """Grant waiting reservations, oldest first, while they fit.

        A request blocked by the shared caps stops everything behind it, so a
        large request is never overtaken by smaller ones that arrived later. A
        request blocked only by its own tenant's caps holds up that tenant's
        later requests, not other tenants': its tenant is parked until it
        frees room or a window of it resets. Requests that can no longer ever
        fit (an override ended) are answered with the error; tickets whose
        holder gave up are dropped.
        """
        answers: list[Answer] = []
        ready = self._ready
        while ready:
            seq, scope = ready[0]
            queue = scope.queue
            if not queue or queue[0][0] != seq or scope.parked:
                heapq.heappop(ready)  # stale: that head was answered or its scope parked
                continue
            _, ticket, amount, ttl = queue[0]
            if not ticket.abandoned:
                if scope is self:
                    refusal = self.refusal(amount)
                    if refusal is not None and not isinstance(refusal, RequestTooLarge):
                        break  # the oldest request does not fit the shared caps yet
                else:
                    if self.now >= scope.stale_at:  # its windows advance lazily
                        scope.advance_windows(self.now)
                    refusal = scope.too_large(amount) or self.too_large(amount)
                    if refusal is None:
                        if scope.no_room(amount) is not None:
                            heapq.heappop(ready)
                            self._park(scope)
                            continue
                        if self.no_room(amount) is not None:
                            break
                if refusal is None:
                    reservation_id = self._hold(scope, amount, ttl)
                    answers.append((ticket, (reservation_id, self.deadline(reservation_id))))
                else:
                    answers.append((ticket, refusal))
            heapq.heappop(ready)
            queue.popleft()
            self.waiting -= 1
            if queue:
                heapq.heappush(ready, (queue[0][0], scope))
        return answers

    def _park(self, scope: Scope) -> None:
        scope.parked = True
        self._parked.add(scope)
        resets = scope.next_reset()
        if resets is not None:
            heapq.heappush(self._parked_wake, (resets, scope.queue[0][0], scope))

    def _unpark(self, scope: Scope) -> None:
        if scope.parked:
            scope.parked = False
            self._parked.discard(scope)
            heapq.heappush(self._ready, (scope.queue[0][0], scope))

    def wake(self, tenant: str | None) -> None:
        """Look at ``tenant``'s queue again (a waiter at its head gave up)."""
        if tenant is not None and tenant in self.tenants:
            self._unpark(self.tenants[tenant])

    def drain_waiting(self) -> list[Ticket]:
        """Remove every waiting request (the budget is closing); returns their tickets."""
        tickets = [waiter[1] for waiter in self.queue]
        self.queue.clear()
        for scope in self.tenants.values():
            tickets.extend(waiter[1] for waiter in scope.queue)
            scope.queue.clear()
            scope.parked = False
        self._ready.clear()
        self._parked_wake.clear()
        self._parked.clear()
        self.waiting = 0
        return tickets

    # -- reads -------------------------------------------------------------------

    def open_reservations(self) -> int:
        return len(self.reservations)

    def usage_for(self, period: str, tenant: str | None = None) -> UsageView | InvalidOption:
        return self.scope(tenant).usage_view(period)

    # -- overrides -------------------------------------------------------------------

    def add_override(
        self,
        window: str,
        increase: Vector,
        expires_at: datetime,
        reason: str,
        created_by: str,
        tenant: str | None = None,
    ) -> Override | InvalidOption:
        """Raise the caps of one scope ("lifetime" or a window) until ``expires_at``."""
        scope = self.scope(tenant)
        index = scope.window_index(window)
        if index is None:
            return InvalidOption(f"no window named {window!r}; this scope has {scope.periods()}")
        base = scope.caps if index < 0 else scope.windows[index].window.caps
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
            tenant=tenant,
        )
        self._next_override += 1
        scope.overrides[override.id] = override
        scope.increases[override.id] = (index, increase)
        self._override_scope[override.id] = scope
        heapq.heappush(self._override_expiry, (expires_at, override.id))
        scope.recompute_limits(index)
        if scope is not self:
            self._unpark(scope)
        self.events.append(
            OverrideSet(budget=self.name, tenant=tenant, at=self.now, override=override)
        )
        return override

    def remove_override(self, override_id: int) -> InvalidOption | None:
        """End an override before it expires."""
        if override_id not in self._override_scope:
            return InvalidOption(f"no active override {override_id}")
        self._end_override(override_id, expired=False)
        return None

    def _end_override(self, override_id: int, *, expired: bool) -> None:
        scope = self._override_scope.pop(override_id)
        override = scope.overrides.pop(override_id)
        index, _ = scope.increases.pop(override_id)
        scope.recompute_limits(index)
        # A waiter the lower caps make too large is answered with the error: look
        # again at the tenant's queue, or at every parked one for the shared caps
        # (overrides end rarely; waiters do not wait on a timer meanwhile).
        for parked in (scope,) if scope is not self else tuple(self._parked):
            self._unpark(parked)
        kind = OverrideExpired if expired else OverrideRemoved
        self.events.append(
            kind(budget=self.name, tenant=scope.tenant, at=self.now, override=override)
        )

    def _expire_overrides(self, now: datetime) -> None:
        heap = self._override_expiry
        while heap and heap[0][0] <= now:
            _, override_id = heapq.heappop(heap)
            if override_id in self._override_scope:
                self._end_override(override_id, expired=True)

    def __repr__(self) -> str:
        parts = []
        for axis, name in enumerate(AXES):
            cap = self.caps[axis]
            shown = "-" if cap is None else str(to_public(axis, cap))
            used = to_public(axis, self.used[axis])
            parts.append(f"{name}={used}+{to_public(axis, self.reserved[axis])}/{shown}")
        tenants = f" tenants={len(self.tenants)}" if self.tenants else ""
        return f"<Ledger {self.name!r} {' '.join(parts)} open={len(self.reservations)}{tenants}>"
