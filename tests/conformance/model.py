"""A budget as the specification describes it, in plain lists and dicts.

Written from the specification (docs/concepts.md, docs/guide.md, the notes on the
core), not from the ledger. It computes what every command must answer and what
every scope must show; the machines (``machine.py``) compare a store with it.

* **Scopes.** The budget's own (``()``), one per tenant (made on first use, with
  its configured caps or the defaults), and child budgets carved out of any
  scope. A scope's ``used`` and ``calls`` count its own usage and every scope
  below it. What a scope holds (``reserved``) is its own open reservations plus,
  for each child, the child's carve while the child is open (on each axis the
  child caps: the carve, less what the child has used, or what the child uses
  and holds where that is more) and the child's own ``reserved`` otherwise.
* **Periods.** A calendar window's usage is the sum of the charges made in the
  same local hour (with its UTC offset), day, ISO week or month as ``now``; a
  rolling window's the sum of those made after ``now - duration``; in both,
  only charges since the window was last reset. When a window frees usage next
  (``resets_at``) is found by bisection on that "same period" test, or is when
  the oldest charge still inside leaves a rolling window.
* **Admission** of an amount in a scope: the scope and every scope above it
  must each find room for its part (the amount itself at the bottom; in a
  parent, how much more its child would hold or use there). First every
  "too large" check (per-request caps against the whole request, then the
  lifetime and each window against the part), bottom up; then every "no room"
  check (``used + reserved + part > limit``, lifetime then windows), bottom up.
  The first failing cap in axis order is named; among "no room" refusals, the
  first final one (below) comes before the others. A limit is the cap plus the
  overrides in force. A lifetime refusal is *final* when spent usage alone
  leaves no room. A child's carve is not a request: per-request caps do not
  apply to it.
* **Settling.** A commit charges what was used, even past a cap; a release only
  frees; an issued id no longer open has expired: committing it charges the
  usage late (to its scope, or the nearest scope above that still exists),
  releasing it changes nothing. A refund matches an outstanding consume of its
  estimate in its scope, gives the difference back to the lifetime only (or
  charges the excess; a child's carve grows back by what it gave back, so the
  windows above the child may show it twice, and may be over their caps); a
  take-back undoes one call exactly. A reset zeroes usage (all scopes from the
  budget, one tenant's own, or one window's period) and keeps open reservations.
* **Waiting.** Waiting requests are served after each batch in arrival order.
  One refused by a scope (not finally) holds up every later request that must
  fit that scope; a request held up is not looked at, except that one which
  just came (or every one, after a limit dropped) is answered at once if it can
  never fit.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Final

from treasurer._core.axes import AXES, ZERO, CapVector, Vector, on_axis
from treasurer._core.config import Limits
from treasurer._core.scopes import ROOT, ScopePath, child_path, tenant_of, tenant_path
from treasurer._core.windows import Window

N: Final = len(AXES)
TOKENS: Final = AXES.index("tokens")
MICROSECOND: Final = timedelta(microseconds=1)
LIFETIME: Final = -1
Key = tuple[ScopePath, int, int]
"""(scope, period: -1 for the lifetime or a window's index, axis)."""


def add(a: Sequence[int], b: Sequence[int]) -> Vector:
    return tuple(map(operator.add, a, b))


def take(a: Sequence[int], b: Sequence[int]) -> Vector:
    return tuple(max(x - y, 0) for x, y in zip(a, b, strict=True))


# -- calendar periods from first principles ------------------------------------------


def period_key(kind: str, zone: tzinfo, when: datetime) -> Hashable:
    """Which calendar period ``when`` falls in: equal keys, same period. The hour
    carries the UTC offset, so an hour the clock repeats is two periods."""
    local = when.astimezone(zone)
    if kind == "hour":
        return local.date(), local.hour, local.utcoffset()
    if kind == "day":
        return local.date()
    if kind == "week":
        year, week, _ = local.isocalendar()
        return year, week
    assert kind == "month"
    return local.year, local.month


_ENDS: dict[tuple[str, tzinfo, Hashable], datetime] = {}


def period_end(kind: str, zone: tzinfo, now: datetime) -> datetime:
    """The first instant after ``now`` in another period, by bisection to the microsecond."""
    key = period_key(kind, zone, now)
    cached = _ENDS.get((kind, zone, key))
    if cached is not None and cached > now:
        return cached
    low, high = now, now + timedelta(days=32)  # every period is shorter than 32 days
    while high - low > MICROSECOND:
        middle = low + (high - low) // 2
        if period_key(kind, zone, middle) == key:
            low = middle
        else:
            high = middle
    _ENDS[(kind, zone, key)] = high
    return high


# -- the model -----------------------------------------------------------------------


@dataclass(eq=False)
class Spend:
    """One charge, shared by every scope it counts in."""

    when: datetime
    amount: Vector
    model: str | None
    counted: bool  # it was not nothing: a rolling window frees it when it leaves
    keys: dict[tuple[str, tzinfo], Hashable] = field(default_factory=dict)

    def key(self, window: Window) -> Hashable:
        cache = (window.kind, window.tz)
        key = self.keys.get(cache)
        if key is None:
            key = self.keys[cache] = period_key(window.kind, window.tz, self.when)
        return key


@dataclass
class WindowModel:
    window: Window
    floor: int = 0  # spends before this index of the scope's list do not count here


@dataclass
class Refused:
    """What a refusal must say (internal units)."""

    too_large: bool
    axis: int
    window: str
    scope: ScopePath
    tenant: str | None
    child: str | None
    limit: int
    requested: int
    used: int
    reserved: int
    resets_at: datetime | None
    final: bool


@dataclass
class Rejection:
    """A command the ledger must not apply: ``kind`` as in ``Rejected.kind``."""

    kind: str


@dataclass
class Held:
    path: ScopePath
    amount: Vector
    deadline: datetime | None


@dataclass
class OverrideModel:
    path: ScopePath
    window: str
    increase: Vector
    expires_at: datetime


class ScopeModel:
    def __init__(
        self,
        path: ScopePath,
        tenant: str | None,
        child: str | None,
        parent: ScopeModel | None,
        limits: Limits,
        carve: CapVector | None = None,
    ) -> None:
        self.path = path
        self.tenant = tenant
        self.child = child
        self.parent = parent
        self.caps = limits.caps
        self.per_request = limits.per_request
        self.windows = [WindowModel(window) for window in limits.windows]
        self.carve = carve
        self.closed = False
        self.used = ZERO
        self.calls = 0
        self.own: dict[int, Vector] = {}
        self.below: list[ScopeModel] = []  # tenants of the budget, child budgets
        self.overrides: dict[int, OverrideModel] = {}
        self.consumed: Counter[int] = Counter()
        self.spends: list[Spend] = []

    def chain(self) -> Iterator[ScopeModel]:
        member: ScopeModel | None = self
        while member is not None:
            yield member
            member = member.parent

    def periods(self) -> list[str]:
        return ["lifetime", *(w.window.name for w in self.windows)]

    def period(self, name: str) -> int | None:
        names = self.periods()
        return names.index(name) - 1 if name in names else None

    def base(self, index: int) -> CapVector:
        return self.caps if index == LIFETIME else self.windows[index].window.caps

    def limits(self, index: int) -> CapVector:
        """The caps of the lifetime (-1) or a window, raised by the overrides in force."""
        limits = list(self.base(index))
        name = self.periods()[index + 1]
        for override in self.overrides.values():
            if override.window == name:
                for axis, value in enumerate(override.increase):
                    cap = limits[axis]
                    if cap is not None:
                        limits[axis] = cap + value
        return tuple(limits)

    @property
    def reserved(self) -> Vector:
        total = ZERO
        for amount in self.own.values():
            total = add(total, amount)
        for scope in self.below:
            total = add(total, scope.holding())
        return total

    @property
    def open(self) -> int:
        return len(self.own) + sum(scope.open for scope in self.below)

    def holding(self, extra: Vector = ZERO) -> Vector:
        """What this child holds in its parent (with ``extra`` more reserved in it)."""
        reserved = add(self.reserved, extra)
        if self.carve is None or self.closed:
            return reserved
        return tuple(
            r if cap is None else max(cap, u + r) - u
            for cap, u, r in zip(self.carve, self.used, reserved, strict=True)
        )

    def growth(self, amount: Vector) -> Vector:
        """How much more this scope holds or uses in its parent if it takes ``amount``."""
        return take(self.holding(amount), self.holding()) if self.carve is not None else amount

    def inside(self, index: int, now: datetime) -> list[Spend]:
        window = self.windows[index]
        spends = self.spends[window.floor :]
        if window.window.kind == "rolling":
            assert window.window.duration is not None
            horizon = now - window.window.duration
            return [spend for spend in spends if spend.when > horizon]
        key = period_key(window.window.kind, window.window.tz, now)
        return [spend for spend in spends if spend.key(window.window) == key]

    def window_used(self, index: int, now: datetime) -> Vector:
        total = ZERO
        for spend in self.inside(index, now):
            total = add(total, spend.amount)
        return total

    def resets_at(self, index: int, now: datetime) -> datetime | None:
        window = self.windows[index].window
        if window.kind != "rolling":
            return period_end(window.kind, window.tz, now)
        assert window.duration is not None
        counted = [spend.when for spend in self.inside(index, now) if spend.counted]
        return min(counted) + window.duration if counted else None


class Model:
    """The whole budget: its scopes, reservations, overrides and clock."""

    def __init__(
        self,
        name: str,
        limits: Limits,
        tenant_defaults: Limits,
        tenants: dict[str, Limits],
        reservation_ttl: timedelta | None,
        now: datetime,
    ) -> None:
        self.name = name
        self.tenant_defaults = tenant_defaults
        self.tenant_limits = dict(tenants)
        self.reservation_ttl = reservation_ttl
        self.now = now
        self.root = ScopeModel(ROOT, None, None, None, limits)
        self.scopes: dict[ScopePath, ScopeModel] = {ROOT: self.root}
        self.reservations: dict[int, Held] = {}
        self.issued = 0
        self.children_made = 0
        self.overrides: dict[int, OverrideModel] = {}
        self.overrides_made = 0
        self.limits_lowered = False
        self.events: list[tuple[object, ...]] = []  # expected, not yet seen
        # Where used + reserved may be over a limit: it went over through spend
        # that happened (a commit above its estimate, a charge...) or a limit
        # dropping, and has not come back within since.
        self.excused: set[Key] = set()

    # -- scopes --------------------------------------------------------------------

    def find(self, path: ScopePath) -> ScopeModel | None:
        """The scope at ``path``; a tenant is made on first use (``None``: a child gone)."""
        scope = self.scopes.get(path)
        tenant = tenant_of(path)
        if scope is None and tenant is not None and len(path) == 1:
            limits = self.tenant_limits.get(tenant, self.tenant_defaults)
            scope = ScopeModel(path, tenant, None, self.root, limits)
            self.scopes[path] = scope
            self.root.below.append(scope)  # what a tenant holds, the budget holds
        return scope

    def nearest(self, path: ScopePath) -> ScopeModel:
        """The scope at ``path`` or, for a child gone, the nearest scope above it."""
        while True:
            scope = self.find(path)
            if scope is not None:
                return scope
            path = path[:-1]

    def tenants(self) -> list[ScopeModel]:
        return [scope for path, scope in self.scopes.items() if len(path) == 1]

    def children(self, *, open_only: bool = True) -> list[ScopeModel]:
        return [
            scope
            for scope in self.scopes.values()
            if scope.carve is not None and not (open_only and scope.closed)
        ]

    # -- admission -----------------------------------------------------------------

    def admission(
        self, path: ScopePath, amount: Vector, *, carve: bool = False
    ) -> Refused | Rejection | None:
        """Why ``amount`` cannot be admitted in the scope at ``path`` now (``None``: it fits)."""
        scope = self.find(path)
        if scope is None or scope.closed:
            return Rejection("closed")
        return self.refusal(scope, amount, carve=carve)

    def refusal(self, scope: ScopeModel, amount: Vector, *, carve: bool = False) -> Refused | None:
        parts = []
        part = amount
        for member in scope.chain():
            parts.append((member, part))
            part = member.growth(part)
        for member, part in parts:
            refused = self.too_large(member, part, amount, carve=carve)
            if refused is not None:
                return refused
        refusals = [r for member, part in parts if (r := self.no_room(member, part)) is not None]
        finals = [refused for refused in refusals if refused.final]
        return (finals or refusals or [None])[0]

    def refused(
        self,
        member: ScopeModel,
        axis: int,
        index: int,
        limit: int,
        part: Vector,
        *,
        too_large: bool,
    ) -> Refused:
        used = member.used if index == LIFETIME else member.window_used(index, self.now)
        reserved = member.reserved
        final = too_large or (index == LIFETIME and used[axis] + part[axis] > limit)
        return Refused(
            too_large,
            axis,
            member.periods()[index + 1],
            member.path,
            member.tenant,
            member.child,
            limit,
            part[axis],
            used[axis],
            reserved[axis],
            None if index == LIFETIME else member.resets_at(index, self.now),
            final,
        )

    def too_large(
        self, member: ScopeModel, part: Vector, whole: Vector, *, carve: bool
    ) -> Refused | None:
        if not carve:
            for axis, cap in enumerate(member.per_request):
                if cap is not None and whole[axis] > cap:
                    return Refused(
                        True, axis, "request", member.path, member.tenant, member.child,
                        cap, whole[axis], 0, 0, None, True,
                    )  # fmt: skip
        for index in range(LIFETIME, len(member.windows)):
            for axis, cap in enumerate(member.limits(index)):
                if cap is not None and part[axis] > cap:
                    return self.refused(member, axis, index, cap, part, too_large=True)
        return None

    def no_room(self, member: ScopeModel, part: Vector) -> Refused | None:
        reserved = member.reserved
        for index in range(LIFETIME, len(member.windows)):
            used = member.used if index == LIFETIME else member.window_used(index, self.now)
            for axis, cap in enumerate(member.limits(index)):
                if cap is not None and used[axis] + reserved[axis] + part[axis] > cap:
                    return self.refused(member, axis, index, cap, part, too_large=False)
        return None

    # -- spending ------------------------------------------------------------------

    def deadline(self, ttl: timedelta | None) -> datetime | None:
        ttl = self.reservation_ttl if ttl is None else ttl
        return None if ttl is None or ttl == timedelta.max else self.now + ttl

    def hold(self, scope: ScopeModel, amount: Vector, ttl: timedelta | None) -> tuple[int, object]:
        self.issued += 1
        deadline = self.deadline(ttl)
        scope.own[self.issued] = amount
        self.reservations[self.issued] = Held(scope.path, amount, deadline)
        return self.issued, deadline

    def unhold(self, reservation: int) -> tuple[ScopeModel, Held]:
        held = self.reservations.pop(reservation)
        scope = self.scopes[held.path]
        del scope.own[reservation]
        return scope, held

    def charge(
        self,
        scope: ScopeModel,
        amount: Vector,
        source: str,
        *,
        model: str | None = None,
        reservation: int | None = None,
        calls: int = 1,
        overrun: Sequence[int] = (),
    ) -> Spend:
        """Count usage in ``scope`` and every scope above it. ``overrun``: the axes on
        which it went past what was admitted for it (spend that happened)."""
        spend = Spend(self.now, amount, model, any(amount))
        for member in scope.chain():
            member.used = add(member.used, amount)
            member.calls += calls
            member.spends.append(spend)
        self.events.append(
            ("UsageRecorded", source, scope.tenant, scope.child, amount, reservation, model)
        )
        if overrun:
            self.excuse(list(scope.chain()), overrun)
        return spend

    def end(self, reservation: int) -> tuple[ScopeModel, Held]:
        """End an open reservation (settled or expired); a closed child drained of it goes."""
        scope, held = self.unhold(reservation)
        self.drain(scope)
        return scope, held

    def drain(self, scope: ScopeModel) -> None:
        """Forget a closed child budget once nothing is open in it."""
        while (
            scope.carve is not None
            and scope.closed
            and not scope.open
            and not self.descendants(scope)
            and scope.parent is not None
        ):
            parent = scope.parent
            parent.below.remove(scope)
            del self.scopes[scope.path]
            scope = parent

    def descendants(self, scope: ScopeModel) -> list[ScopeModel]:
        found = []
        for child in scope.below:
            found.append(child)
            found.extend(self.descendants(child))
        return found

    def excuse(
        self, scopes: Sequence[ScopeModel], axes: Sequence[int], index: int | None = None
    ) -> None:
        for scope in scopes:
            periods = range(LIFETIME, len(scope.windows)) if index is None else (index,)
            self.excused.update((scope.path, i, axis) for i in periods for axis in axes)

    # -- time ----------------------------------------------------------------------

    def move_to(self, when: datetime) -> None:
        """The clock moves to ``when`` (never back): deadlines and expiries due pass."""
        self.now = max(when, self.now)
        due = sorted(
            (held.deadline, reservation)
            for reservation, held in self.reservations.items()
            if held.deadline is not None and held.deadline <= self.now
        )
        for deadline, reservation in due:
            scope, held = self.end(reservation)
            self.events.append(
                ("ReservationExpiredEvent", scope.tenant, scope.child, reservation, held.amount,
                 deadline)
            )  # fmt: skip
        for number, override in sorted(self.overrides.items()):
            if override.expires_at <= self.now:
                self.end_override(number, "OverrideExpired")

    def forget_ended_overrides(self) -> None:
        """After a batch: overrides whose child budget went, or whose window the
        tenant lost, are no longer active (the store forgets them with the batch)."""
        for number, override in list(self.overrides.items()):
            scope = self.scopes.get(override.path)
            if scope is None or number not in scope.overrides:
                del self.overrides[number]

    def end_override(self, number: int, kind: str) -> None:
        override = self.overrides.pop(number)
        scope = self.scopes.get(override.path)
        if scope is None or number not in scope.overrides:
            return  # its child budget, or its window, is gone, and the override with it
        del scope.overrides[number]
        self.limits_lowered = True
        index = scope.period(override.window)
        assert index is not None
        self.excuse([scope], range(N), index)
        self.events.append((kind, scope.tenant, scope.child, number))

    # -- what a scope shows --------------------------------------------------------

    def figures(self, scope: ScopeModel) -> tuple[object, ...]:
        """Lifetime figures: used, reserved, calls, open, caps, per-request, limits, overrides."""
        return (
            scope.used,
            scope.reserved,
            scope.calls,
            scope.open,
            scope.caps,
            scope.per_request,
            scope.limits(LIFETIME),
            tuple(sorted(scope.overrides)),
            scope.tenant,
            scope.child,
        )

    def window_figures(self, scope: ScopeModel) -> list[tuple[object, ...]]:
        """Per window: name, kind, caps, limits, used, resets_at."""
        return [
            (
                w.window.name,
                w.window.kind,
                w.window.caps,
                scope.limits(index),
                scope.window_used(index, self.now),
                scope.resets_at(index, self.now),
            )
            for index, w in enumerate(scope.windows)
        ]

    # -- commands ------------------------------------------------------------------

    def reserve(
        self, path: ScopePath, amount: Vector, ttl: timedelta | None
    ) -> Refused | Rejection | tuple[int, object]:
        refused = self.admission(path, amount)
        if refused is not None:
            return refused
        return self.hold(self.scopes[path], amount, ttl)

    def commit(
        self, path: ScopePath, reservation: int, actual: Vector, model: str | None = None
    ) -> Rejection | bool:
        """True: committed; False: it had expired (a late commit); or a rejection."""
        held = self.reservations.get(reservation)
        if held is None:
            if not 0 < reservation <= self.issued:
                return Rejection("reservation")
            scope = self.nearest(path)
            self.charge(
                scope, actual, "late_commit", model=model, reservation=reservation,
                overrun=[a for a in range(N) if actual[a]],
            )  # fmt: skip
            return False
        scope = self.scopes[held.path]
        del scope.own[reservation]
        del self.reservations[reservation]
        overrun = [axis for axis in range(N) if actual[axis] > held.amount[axis]]
        self.charge(scope, actual, "commit", model=model, reservation=reservation, overrun=overrun)
        self.drain(scope)
        return True

    def release(self, reservation: int) -> Rejection | bool:
        """True: released; False: it had expired (nothing changes); or a rejection."""
        if reservation not in self.reservations:
            return False if 0 < reservation <= self.issued else Rejection("reservation")
        self.end(reservation)
        return True

    def record(
        self, path: ScopePath, amount: Vector, *, consume: bool = False, model: str | None = None
    ) -> Refused | Rejection | ScopeModel:
        refused = self.admission(path, amount)
        if refused is not None:
            return refused
        scope = self.scopes[path]
        if consume:
            scope.consumed[amount[TOKENS]] += 1
        self.charge(scope, amount, "consume" if consume else "record", model=model)
        return scope

    def charge_usage(self, path: ScopePath, amount: Vector, model: str | None) -> ScopeModel:
        """Usage that already happened: never refused."""
        scope = self.nearest(path)
        self.charge(
            scope, amount, "charge", model=model, overrun=[a for a in range(N) if amount[a]]
        )
        return scope

    def refund(self, path: ScopePath, actual: int, estimated: int) -> Rejection | None:
        scope = self.find(path)
        if scope is None:
            return Rejection("closed")
        if not scope.consumed[estimated]:
            return Rejection("refund")
        scope.consumed[estimated] -= 1
        difference = estimated - actual
        if difference > 0:
            credit = on_axis(TOKENS, difference)
            carves = [member for member in scope.chain() if member.carve is not None]
            held = [member.holding()[TOKENS] for member in carves]
            for member in scope.chain():
                member.used = take(member.used, credit)
            self.given_back(scope, credit, "refund", None)
            # Windows keep counting what a refund gives back, while an open child's
            # carve may grow back by it in every scope above the child: their
            # windows may then show more used and held than their caps (the tokens
            # twice). Excused only where a carve did grow.
            grew = [m for m, h in zip(carves, held, strict=True) if m.holding()[TOKENS] > h]
            above = False
            for member in scope.chain():
                if above:
                    for index in range(len(member.windows)):
                        self.excuse([member], [TOKENS], index)
                above = above or any(member is child for child in grew)
        elif difference < 0:
            self.charge(scope, on_axis(TOKENS, -difference), "refund", calls=0, overrun=[TOKENS])
        return None

    def take_back(self, path: ScopePath, spend: Spend, consumed: bool) -> None:
        """Undo one call whose caller never saw the reply (made in this step, no reset since)."""
        scope = self.scopes[path]
        for member in scope.chain():
            member.used = take(member.used, spend.amount)
            member.calls = max(member.calls - 1, 0)
        if consumed:
            scope.consumed[spend.amount[TOKENS]] -= 1
        self.given_back(scope, spend.amount, "take_back", spend.model)
        spend.amount = ZERO

    def given_back(self, scope: ScopeModel, amount: Vector, source: str, model: str | None) -> None:
        """Usage given back is a usage record of the negative amount."""
        negative = tuple(-value for value in amount)
        self.events.append(
            ("UsageRecorded", source, scope.tenant, scope.child, negative, None, model)
        )

    def reset(self, path: ScopePath, window: str | None) -> Rejection | None:
        scope = self.find(path)
        if scope is None:
            return Rejection("closed")
        if scope.carve is not None:
            return Rejection("invalid_option")
        index = None if window is None else scope.period(window)
        if window is not None and (index is None or index == LIFETIME):
            return Rejection("invalid_option")
        members = list(self.scopes.values()) if scope is self.root and index is None else [scope]
        for member in members:
            if index is None:
                member.used = ZERO
                member.calls = 0
                member.spends = []
                for w in member.windows:
                    w.floor = 0
            else:
                member.windows[index].floor = len(member.spends)
        return None

    def set_override(
        self, path: ScopePath, window: str, increase: Vector, expires_at: datetime
    ) -> Rejection | int:
        scope = self.find(path)
        if scope is None:
            return Rejection("closed")
        index = scope.period(window)
        if index is None:
            return Rejection("invalid_option")
        base = scope.base(index)
        if any(value and base[axis] is None for axis, value in enumerate(increase)):
            return Rejection("invalid_option")
        if not any(increase) or expires_at <= self.now:
            return Rejection("invalid_option")
        self.overrides_made += 1
        override = OverrideModel(path, window, increase, expires_at)
        self.overrides[self.overrides_made] = override
        scope.overrides[self.overrides_made] = override
        self.events.append(("OverrideSet", scope.tenant, scope.child, self.overrides_made))
        return self.overrides_made

    def remove_override(self, path: ScopePath, number: int) -> Rejection | None:
        override = self.overrides.get(number)
        if override is None or override.path != path:
            return Rejection("invalid_option")
        self.end_override(number, "OverrideRemoved")
        return None

    def set_tenant_caps(self, tenant: str, limits: Limits | None) -> None:
        if limits is None:
            self.tenant_limits.pop(tenant, None)
        else:
            self.tenant_limits[tenant] = limits
        self.limits_lowered = True
        scope = self.scopes.get(tenant_path(tenant))
        if scope is None:
            return
        new = self.tenant_limits.get(tenant, self.tenant_defaults)
        kept = {
            (w.window.name, w.window.kind, w.window.tz, w.window.duration): w for w in scope.windows
        }
        windows = []
        for window in new.windows:
            state = kept.get((window.name, window.kind, window.tz, window.duration))
            if state is None:
                state = WindowModel(window, floor=len(scope.spends))
            windows.append(WindowModel(window, state.floor))
        scope.caps, scope.per_request, scope.windows = new.caps, new.per_request, windows
        names = set(scope.periods())
        for number, override in list(scope.overrides.items()):
            if override.window not in names:  # its window is gone, and the override with it
                del scope.overrides[number]
                del self.overrides[number]
        self.excuse([scope], range(N))

    def open_child(
        self, path: ScopePath, name: str | None, caps: CapVector
    ) -> Refused | Rejection | ScopeModel:
        carve = tuple(cap or 0 for cap in caps)
        refused = self.admission(path, carve, carve=True)
        if refused is not None:
            return refused
        parent = self.scopes[path]
        self.children_made += 1
        if name is None:
            prefix = parent.child or (
                self.name if parent.tenant is None else f"{self.name}/{parent.tenant}"
            )
            name = f"{prefix}/child-{self.children_made}"
        child = ScopeModel(
            child_path(path, self.children_made), parent.tenant, name, parent, Limits(caps), caps
        )
        parent.below.append(child)
        self.scopes[child.path] = child
        return child

    def close_child(self, path: ScopePath) -> ScopeModel | None:
        child = self.scopes.get(path)
        if child is None:
            return None
        child.closed = True
        self.drain(child)
        return child

    # -- waiting -------------------------------------------------------------------

    def serve(
        self, waiting: Sequence[tuple[str, ScopePath, Vector, object]], new_from: int
    ) -> list[tuple[int, object]]:
        """Serve waiting requests (("reserve", path, amount, ttl) or ("child", path, carve,
        (name, caps))) in arrival order; what each one answered gets."""
        recheck_from = 0 if self.limits_lowered else new_from
        self.limits_lowered = False
        blocked: set[ScopePath] = set()
        answers: list[tuple[int, object]] = []
        for index, (kind, path, amount, extra) in enumerate(waiting):
            held_up = any(path[:depth] in blocked for depth in range(len(path) + 1))
            refused = self.admission(path, amount, carve=kind == "child")
            if held_up:
                if index >= recheck_from and (
                    isinstance(refused, Rejection) or (refused is not None and refused.final)
                ):
                    answers.append((index, refused))
                continue
            if isinstance(refused, Refused) and not refused.final:
                blocked.add(refused.scope)
            elif refused is not None:
                answers.append((index, refused))
            elif kind == "reserve":
                answers.append((index, self.reserve(path, amount, extra)))  # type: ignore[arg-type]
            else:
                name, caps = extra  # type: ignore[misc]
                answers.append((index, self.open_child(path, name, caps)))
        return answers

    # -- the invariant ---------------------------------------------------------------

    def over(
        self,
        observed: dict[
            ScopePath, tuple[Vector, Vector, CapVector, list[tuple[Vector, CapVector]] | None]
        ],
    ) -> set[Key]:
        """Where observed usage plus reservations is above the observed limits."""
        found = set()
        for path, (used, reserved, limits, windows) in observed.items():
            periods = [(LIFETIME, used, limits)]
            if windows is not None:
                periods += [(i, w_used, w_limits) for i, (w_used, w_limits) in enumerate(windows)]
            for index, period_used, period_limits in periods:
                for axis, cap in enumerate(period_limits):
                    if cap is not None and period_used[axis] + reserved[axis] > cap:
                        found.add((path, index, axis))
        return found
