"""The conformance state machine: the same rules and checks for every store and driver.

A driver (``drivers.py``) sends each operation to a store, through the Store
protocol or through the public API, and hands back what it answered in a
normalized form; the machine asks the model (``model.py``) what the answer must
be and compares. After every step it compares what every scope shows, the
events the step caused, and checks that nothing is over a limit without an
excuse (spend that already happened, or a limit that dropped).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from treasurer._core.axes import AXES, CapVector, Vector, to_public
from treasurer._core.config import BudgetConfig, Limits
from treasurer._core.scopes import ROOT, ScopePath, tenant_path

from .model import (
    LIFETIME,
    Model,
    Refused,
    Rejection,
    ScopeModel,
    Spend,
    add,
    period_end,
)
from .strategies import (
    AMOUNTS,
    CALENDAR,
    CARVE,
    CARVE_NESTED,
    DEFAULT_LIMITS,
    DEFAULT_TTL,
    DELTAS,
    EXPIRES,
    INDEX,
    MICROSECOND,
    NEAR_AN_ANCHOR,
    PER_REQUEST,
    SHARED_CAPS,
    SHARED_WINDOWS,
    STARTS,
    TENANT_LIMITS,
    TENANT_SPECS,
    TENANTS,
    TTLS,
    ZONE_NAMES,
    ZONES,
    actuals,
    increases,
    one_in,
    pick,
)

N = len(AXES)
NAME = "conformance"
NUDGE = st.sampled_from((-1, 0, 0, 1))  # microseconds around an instant something happens
MODELS = st.sampled_from((None, None, "m-1", "m-2"))
WHO = st.sampled_from((ROOT, *(tenant_path(t) for t in TENANTS)))


class Denied(NamedTuple):
    """A refusal as a store or a handle gave it, normalized; ``scope`` and ``final``
    are ``None`` where the answer does not carry them (an exception)."""

    too_large: bool
    cap: str
    window: str
    budget: str
    tenant: str | None
    child: str | None
    limit: object
    requested: object
    used: object
    reserved: object
    available: object
    attempted: object
    resets_at: datetime | None
    scope: ScopePath | None = None
    final: bool | None = None


class Observed(NamedTuple):
    """What a scope shows: its lifetime figures (as ``Model.figures``) and, when the
    reading is current, its windows (as ``Model.window_figures``)."""

    figures: tuple[object, ...]
    windows: Sequence[tuple[object, ...]] | None


Result = tuple[Any, ...]
"""A normalized answer: ("granted", id, deadline), ("settled", expired),
("charged", used, calls), ("ok",), ("refused", Denied), ("rejected", kind),
("override", id), ("child", key, name), ("closed", figures), ("fits",)."""


class Driver(ABC):
    """Sends operations to a store and normalizes what it answers."""

    waits = False  # serves waiting requests: the machine queues some
    takes_back = False  # can take back a call whose caller never saw the reply
    settles_any_id = False  # can settle ids no handle was granted (unknown ones)
    tells_wakeup = False  # says when time alone will next change something

    def __init__(self) -> None:
        self.answered: list[tuple[int, Result]] = []  # waiting requests the last batch answered
        self.next_wakeup: datetime | None = None  # as the last batch said, if it tells

    @abstractmethod
    def open(self, config: BudgetConfig, start: datetime) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def set_clock(self, when: datetime) -> None:
        """Move the clock and let the budget apply what the time changes."""

    @abstractmethod
    def set_clock_quietly(self, when: datetime) -> None:
        """Move the clock, the budget not told: its next batch sees the time."""

    @abstractmethod
    def reserve(
        self, path: ScopePath, amount: Vector, ttl: timedelta | None, model: str | None
    ) -> Result: ...

    @abstractmethod
    def commit(
        self,
        path: ScopePath,
        reservation: int,
        actual: Vector,
        model: str | None,
        as_reserved: bool = False,
    ) -> Result:
        """Commit ``actual`` (``as_reserved``: it is what was reserved, and a handle's
        ``commit()`` is called without amounts)."""

    @abstractmethod
    def release(self, path: ScopePath, reservation: int) -> Result: ...

    @abstractmethod
    def record(self, path: ScopePath, amount: Vector, model: str | None) -> Result: ...

    @abstractmethod
    def consume(self, path: ScopePath, amount: Vector) -> Result: ...

    @abstractmethod
    def refund(self, path: ScopePath, actual: int, estimated: int) -> Result: ...

    @abstractmethod
    def charge(self, path: ScopePath, amount: Vector, model: str | None) -> Result: ...

    def take_back(
        self, path: ScopePath, amount: Vector, at: datetime, model: str | None, consumed: bool
    ) -> Result:
        raise NotImplementedError

    @abstractmethod
    def reset(self, path: ScopePath, window: str | None) -> Result: ...

    @abstractmethod
    def probe(self, path: ScopePath, amount: Vector) -> Result: ...

    @abstractmethod
    def set_override(
        self, path: ScopePath, window: str, increase: Vector, expires_at: datetime
    ) -> Result: ...

    @abstractmethod
    def remove_override(self, path: ScopePath, number: int) -> Result: ...

    @abstractmethod
    def set_tenant_caps(self, tenant: str, limits: Limits | None) -> Result: ...

    @abstractmethod
    def open_child(self, path: ScopePath, name: str | None, caps: CapVector) -> Result: ...

    def adopt(self, path: ScopePath, key: object) -> None:  # noqa: B027 - most need nothing
        """The child the last ``open_child`` answered ``key`` for is the model's ``path``."""

    @abstractmethod
    def close_child(self, path: ScopePath) -> Result: ...

    def wait(self, requests: Sequence[tuple[str, ScopePath, Vector, object]]) -> None:
        """Queue waiting requests (("reserve", path, amount, ttl) or ("child", path, carve,
        (name, caps))) in one batch; ``answered`` then holds what that batch served."""
        raise NotImplementedError

    def abandon(self, index: int) -> None:
        """The holder of the waiting request at ``index`` gives up."""
        raise NotImplementedError

    @abstractmethod
    def observe(self, paths: Sequence[ScopePath], current: bool) -> dict[ScopePath, Observed]:
        """What each scope shows (``current``: windows brought to now and read too)."""

    @abstractmethod
    def events(self) -> list[tuple[object, ...]]:
        """The events since the last call, normalized as the model's."""

    def observes(self, scope: ScopeModel) -> bool:
        """Whether ``observe`` shows this scope (a handle shows a closed child as it closed)."""
        return True


def public(axis: int, value: int) -> int | Decimal:
    return to_public(axis, value)


def check_refusal(actual: Result, expected: Refused) -> None:
    """``actual`` is exactly the refusal the model expects, figures in public units."""
    assert actual[0] == "refused", f"expected a refusal {expected}, got {actual}"
    denied: Denied = actual[1]
    axis = expected.axis
    used, reserved = expected.used, expected.reserved
    assert (denied.too_large, denied.cap, denied.window) == (
        expected.too_large,
        AXES[axis],
        expected.window,
    ), f"{denied} is not {expected}"
    assert (denied.budget, denied.tenant, denied.child) == (NAME, expected.tenant, expected.child)
    assert denied.resets_at == expected.resets_at, f"{denied} is not {expected}"
    assert (denied.limit, denied.requested, denied.used, denied.reserved) == (
        public(axis, expected.limit),
        public(axis, expected.requested),
        public(axis, used),
        public(axis, reserved),
    ), f"{denied} is not {expected}"
    assert denied.available == public(axis, max(expected.limit - used - reserved, 0))
    assert denied.attempted == public(axis, used + reserved + expected.requested)
    assert type(denied.limit) is type(public(axis, 0))
    if denied.scope is not None:
        assert denied.scope == expected.scope
        assert denied.final == expected.final
    where = expected.window if expected.window in ("lifetime", "request") else "window"
    event(f"refused: {'too large' if expected.too_large else 'no room'} ({where})")


def check_answer(actual: Result, expected: object) -> bool:
    """Compare a refusal or rejection the model expects; True if the model expects neither."""
    if isinstance(expected, Refused):
        check_refusal(actual, expected)
        return False
    if isinstance(expected, Rejection):
        assert actual == ("rejected", expected.kind), f"expected {expected}, got {actual}"
        event(f"rejected: {expected.kind}")
        return False
    return True


class ConformanceMachine(RuleBasedStateMachine):
    """Drives a store (through ``driver``) and the model side by side."""

    driver: Driver

    def __init__(self, driver: Driver) -> None:
        super().__init__()
        self.driver = driver
        self.model: Model
        self.opened = False
        self.current_reads = True  # read every scope's windows after every step
        self.recorded: dict[int, tuple[str | None, Vector]] = {}  # reservation: (model, held)
        self.waiting: list[tuple[str, ScopePath, Vector, object]] = []
        self.new_from = 0  # waiting[new_from:] joined the queue with the current batch
        self.fresh: list[tuple[int, str]] = []  # estimates consumed since the last reset
        self.refundable: list[tuple[ScopePath, int]] = []
        self.override_ids: set[int] = set()
        self.handles: dict[int, ScopePath] = {}  # reservations the handles hold: their scope
        # The books, kept from what the budget said: every usage event it emitted, less
        # what refunds and take-backs gave back, since the last reset of the budget.
        self.books: Vector = (0,) * N

    # -- setup -----------------------------------------------------------------------

    @initialize(
        caps=SHARED_CAPS,
        per_request=PER_REQUEST,
        windows=SHARED_WINDOWS,
        defaults=DEFAULT_LIMITS,
        specs=TENANT_SPECS,
        ttl=DEFAULT_TTL,
        start=STARTS,
        current_reads=st.booleans(),
    )
    def open_budget(
        self,
        caps: CapVector,
        per_request: CapVector,
        windows: tuple[Any, ...],
        defaults: Limits,
        specs: dict[str, Limits],
        ttl: timedelta | None,
        start: datetime,
        current_reads: bool,
    ) -> None:
        limits = Limits(caps, per_request, windows)
        config = BudgetConfig.build(
            NAME, limits, reservation_ttl=ttl, tenant_defaults=defaults, tenants=specs
        )
        self.model = Model(NAME, limits, defaults, dict(specs), ttl, start)
        self.current_reads = current_reads
        self.driver.open(config, start)
        self.opened = True
        event(f"windows: {len(windows)}, tenants configured: {len(specs)}")

    def teardown(self) -> None:
        self.driver.close()

    # -- helpers ---------------------------------------------------------------------

    def who(self, data: st.DataObject) -> ScopePath:
        """A scope to act in: mostly a child budget if one is open, else the budget or a tenant."""
        children = [child.path for child in self.model.children()]
        return pick(data, [*children, ROOT, *(tenant_path(t) for t in TENANTS)], "scope")

    def amount(self, data: st.DataObject, path: ScopePath) -> Vector:
        """A plain request, or one at an edge of the room left (or the largest allowed)."""
        amount = list(data.draw(AMOUNTS, label="amount"))
        scope = self.model.find(path)
        if scope is None or data.draw(st.booleans(), label="plain"):
            return tuple(amount)
        members = list(scope.chain())
        member = pick(data, members, "edge of")
        edge = data.draw(st.sampled_from(("room", "over", "largest")), label="edge")
        axes = []
        for axis in range(N):
            value = self.edge(member, axis, edge)
            if value is not None:
                axes.append((axis, value))
        if axes:
            axis, value = pick(data, axes, "axis")
            amount[axis] = max(value, 0)
            amount[2] = max(amount[2], amount[0] + amount[1])
        return tuple(amount)

    def edge(self, member: ScopeModel, axis: int, edge: str) -> int | None:
        now = self.model.now
        reserved = member.reserved
        caps = []
        for index in range(LIFETIME, len(member.windows)):
            cap = member.limits(index)[axis]
            if cap is None:
                continue
            if edge == "largest":
                caps.append(cap)
            else:
                used = member.used if index == LIFETIME else member.window_used(index, now)
                caps.append(cap - used[axis] - reserved[axis] + (edge == "over"))
        if edge == "largest" and member.per_request[axis] is not None:
            caps.append(member.per_request[axis])  # type: ignore[arg-type]
        return min(caps, default=None)

    def serve(self) -> None:
        """After a batch: the waiting requests it answered, as the model serves them, and
        the store asks to be woken in time for what time alone will change."""
        if not self.driver.waits:
            return
        self.check_wakeup()
        new_from = self.new_from
        expected = self.model.serve(self.waiting, new_from)
        answered = self.driver.answered
        self.driver.answered = []
        assert [index for index, _ in answered] == [index for index, _ in expected], (
            f"answered waiters {answered}, the model answers {expected}"
        )
        for (index, actual), (_, reply) in zip(answered, expected, strict=True):
            kind, path = self.waiting[index][:2]
            if not check_answer(actual, reply):
                event("waiter: answered with an error")
                continue
            if kind == "reserve":
                reservation, deadline = reply  # type: ignore[misc]
                assert actual == ("granted", reservation, deadline), (actual, reply)
                self.handles[reservation] = path
                self.recorded[reservation] = (None, self.model.reservations[reservation].amount)
                event("waiter: granted")
            else:
                assert isinstance(reply, ScopeModel)
                assert actual[0] == "child", actual
                assert actual[2] == reply.child, (actual, reply.child)
                self.driver.adopt(reply.path, actual[1])
                event("waiter: child opened")
        done = {index for index, _ in answered}
        self.waiting = [w for i, w in enumerate(self.waiting) if i not in done]
        self.new_from = len(self.waiting)

    def check_wakeup(self) -> None:
        """The store asks to be woken no later than the next deadline, override expiry, or
        reset of a window that a waiting request must fit (so it is served in time)."""
        if not self.driver.tells_wakeup:
            return
        model = self.model
        due = [held.deadline for held in model.reservations.values()]
        due += [override.expires_at for override in model.overrides.values()]
        for _, path, _, _ in self.waiting:
            scope = model.scopes.get(path)
            for member in scope.chain() if scope is not None else ():
                due += [member.resets_at(i, model.now) for i in range(len(member.windows))]
        soonest = min((when for when in due if when is not None), default=None)
        if soonest is not None:
            wake = self.driver.next_wakeup
            assert wake is not None, f"the store asks no wake-up; something changes at {soonest}"
            assert wake <= soonest, (
                f"the store asks to be woken at {wake}, but something changes at {soonest}"
            )

    def batch_done(self) -> None:
        self.model.forget_ended_overrides()
        self.serve()

    def move_to(self, when: datetime) -> None:
        """Move the clock (never back); the budget applies what that changes at once."""
        when = max(when, self.model.now)
        self.model.move_to(when)
        self.driver.set_clock(when)
        self.batch_done()

    # -- the clock -------------------------------------------------------------------

    @rule(delta=DELTAS)
    def tick(self, delta: timedelta) -> None:
        self.move_to(self.model.now + delta)

    def something_happens(self, data: st.DataObject, kind: str, zone: str, nudge: int) -> datetime:
        """When (or a microsecond around when) something happens: a deadline, an
        override's expiry, a window's reset, or a calendar boundary."""
        model = self.model
        targets: set[datetime | None] = {held.deadline for held in model.reservations.values()}
        targets.update(override.expires_at for override in model.overrides.values())
        for scope in model.scopes.values():
            targets.update(scope.resets_at(i, model.now) for i in range(len(scope.windows)))
        targets.add(period_end(kind, ZONES[zone], model.now))
        when = pick(data, sorted(t for t in targets if t is not None), "when")
        return when + nudge * MICROSECOND

    @rule(data=st.data(), kind=st.sampled_from(CALENDAR), zone=ZONE_NAMES, nudge=NUDGE)
    def jump(self, data: st.DataObject, kind: str, zone: str, nudge: int) -> None:
        self.move_to(self.something_happens(data, kind, zone, nudge))

    @rule(
        data=st.data(),
        kind=st.sampled_from(CALENDAR),
        zone=ZONE_NAMES,
        nudge=NUDGE,
        then=st.sampled_from(("reserve", "commit", "release", "record", "consume")),
    )
    def jump_quietly_then(
        self, data: st.DataObject, kind: str, zone: str, nudge: int, then: str
    ) -> None:
        """The clock reaches when something happens with no batch run (the system
        clock wakes no budget at a window's end): the next call's batch is the
        first to see the time, and applies what it changed before the call."""
        when = max(self.something_happens(data, kind, zone, nudge), self.model.now)
        self.model.move_to(when)
        self.driver.set_clock_quietly(when)
        if then in ("commit", "release") and not self.handles:
            then = "record"  # (a batch must run: nothing to settle)
        if then == "reserve":
            self.reserve(data, None, None)
        elif then == "commit":
            self.commit(data, None, False)
        elif then == "release":
            self.release(data)
        elif then == "record":
            self.record(data, None)
        else:
            self.consume(data)

    @rule(when=NEAR_AN_ANCHOR)
    def jump_to_near_an_anchor(self, when: datetime) -> None:
        """Jump (maybe months or years ahead) to near a daylight-saving change or a new year."""
        if when >= self.model.now:
            self.move_to(when)

    # -- reservations ----------------------------------------------------------------

    @rule(data=st.data(), ttl=TTLS, model=MODELS)
    def reserve(self, data: st.DataObject, ttl: timedelta | None, model: str | None) -> None:
        path = self.who(data)
        amount = self.amount(data, path)
        expected = self.model.reserve(path, amount, ttl)
        actual = self.driver.reserve(path, amount, ttl, model)
        self.batch_done()
        if not check_answer(actual, expected):
            return
        reservation, deadline = expected  # type: ignore[misc]
        assert actual == ("granted", reservation, deadline), f"{actual} != {expected}"
        self.handles[reservation] = path
        self.recorded[reservation] = (model, amount)
        event("reserved")

    def settleable(self, data: st.DataObject) -> int | None:
        """A reservation a handle still holds: open, or expired since (mostly the oldest)."""
        if not self.handles:
            return None
        return pick(data, sorted(self.handles), "reservation")

    @rule(data=st.data(), model=MODELS, as_reserved=one_in(5))
    def commit(self, data: st.DataObject, model: str | None, as_reserved: bool) -> None:
        """Commit what the call used (or, without amounts, what was reserved); after
        expiry it is recorded all the same, late."""
        reservation = self.settleable(data)
        if reservation is not None:
            self.commit_one(data, reservation, model, as_reserved)

    @rule(data=st.data(), nudge=st.integers(0, 1))
    def commit_first_after_a_period_ends(self, data: st.DataObject, nudge: int) -> None:
        """A reservation still open when a calendar window of its scope begins a new
        period is committed in the first batch after (none ran in between): the
        usage counts in the new period, as in every scope above."""
        model = self.model
        candidates = []
        for reservation, path in sorted(self.handles.items()):
            held, scope = model.reservations.get(reservation), model.scopes.get(path)
            if held is None or scope is None:
                continue
            ends = [scope.resets_at(i, model.now) for i in range(len(scope.windows))]
            soonest = min((end for end in ends if end is not None), default=None)
            if soonest is None:
                continue
            when = soonest + nudge * MICROSECOND
            if held.deadline is None or when < held.deadline:
                candidates.append((reservation, when))
        if not candidates:
            return
        reservation, when = pick(data, candidates, "reservation")
        model.move_to(when)
        self.driver.set_clock_quietly(when)
        self.commit_one(data, reservation, None, False)

    def commit_one(
        self, data: st.DataObject, reservation: int, model: str | None, as_reserved: bool
    ) -> None:
        path = self.handles.pop(reservation)
        reserve_model, held = self.recorded.pop(reservation)
        actual = held if as_reserved else data.draw(actuals(held), label="actual")
        open_ = reservation in self.model.reservations
        merged = (model or reserve_model) if open_ else model
        expected = self.model.commit(path, reservation, actual, merged)
        result = self.driver.commit(path, reservation, actual, model, as_reserved)
        self.batch_done()
        assert result == ("settled", expected is False), f"{result}: expected {expected}"
        event("late commit" if expected is False else "committed")

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        reservation = self.settleable(data)
        if reservation is None:
            return
        path = self.handles.pop(reservation)
        self.recorded.pop(reservation)
        expected = self.model.release(reservation)
        result = self.driver.release(path, reservation)
        self.batch_done()
        # A handle does not say whether what it released had expired (None).
        assert result in {("settled", expected is False), ("settled", None)}, result
        event("late release" if expected is False else "released")

    @precondition(lambda self: self.driver.settles_any_id)
    @rule(data=st.data(), commit=st.booleans())
    def settle_unknown(self, data: st.DataObject, commit: bool) -> None:
        """Settling an id never issued is rejected and changes nothing; releasing one that
        ended already changes nothing."""
        issued = self.model.issued
        ended = sorted(set(range(1, issued + 1)) - set(self.model.reservations))
        choices = st.integers(issued + 1, issued + 5) | st.integers(-3, 0)
        if ended and not commit:
            choices |= st.sampled_from(ended)
        reservation = data.draw(choices, label="reservation")
        path = data.draw(WHO, label="scope")
        if commit:
            expected = self.model.commit(path, reservation, data.draw(AMOUNTS))
            result = self.driver.commit(path, reservation, data.draw(AMOUNTS), None)
        else:
            expected = self.model.release(reservation)
            result = self.driver.release(path, reservation)
        self.batch_done()
        if isinstance(expected, Rejection):
            assert result == ("rejected", expected.kind), result
        else:
            assert result == ("settled", True), result

    # -- usage without a reservation -------------------------------------------------

    @rule(data=st.data(), model=MODELS)
    def record(self, data: st.DataObject, model: str | None) -> None:
        path = self.who(data)
        amount = self.amount(data, path)
        expected = self.model.record(path, amount, model=model)
        actual = self.driver.record(path, amount, model)
        self.batch_done()
        if not check_answer(actual, expected):
            return
        assert isinstance(expected, ScopeModel)
        assert actual == ("charged", expected.used, expected.calls), actual
        event("recorded")

    @rule(data=st.data())
    def consume(self, data: st.DataObject) -> None:
        path = self.who(data)
        amount = self.amount(data, path)
        expected = self.model.record(path, amount, consume=True)
        actual = self.driver.consume(path, amount)
        self.batch_done()
        if not check_answer(actual, expected):
            return
        assert actual[0] == "consumed", actual
        self.refundable.append((path, amount[2]))
        event("consumed")

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        """Refund an outstanding consume (actual below or above its estimate), or one
        that matches none (rejected, nothing changes)."""
        if self.refundable and data.draw(st.integers(0, 3), label="matching") > 0:
            path, estimated = self.refundable.pop(data.draw(INDEX) % len(self.refundable))
        else:
            path = self.who(data)
            estimated = data.draw(st.integers(0, 30), label="estimated")
            if (path, estimated) in self.refundable or (
                (scope := self.model.find(path)) is not None and scope.consumed[estimated]
            ):
                return  # it would match a consume made before a reset (test_core_ledger)
        actual = data.draw(st.integers(0, estimated + 10), label="actual")
        expected = self.model.refund(path, actual, estimated)
        result = self.driver.refund(path, actual, estimated)
        self.batch_done()
        if check_answer(result, expected):
            assert result == ("ok",), result
            event("refunded")

    @rule(data=st.data(), model=MODELS)
    def charge(self, data: st.DataObject, model: str | None) -> None:
        """Usage that already happened: never refused, so it may go over."""
        path = self.who(data)
        amount = data.draw(AMOUNTS, label="amount")
        scope = self.model.charge_usage(path, amount, model)
        result = self.driver.charge(path, amount, model)
        self.batch_done()
        assert result == ("charged", scope.used, scope.calls), result

    @precondition(lambda self: self.driver.takes_back)
    @rule(data=st.data(), consumed=st.booleans(), delta=DELTAS)
    def take_back(self, data: st.DataObject, consumed: bool, delta: timedelta) -> None:
        """A call whose caller gave up after it was applied is taken back exactly, in the
        next batch (the clock may have moved in between)."""
        path = self.who(data)
        amount = self.amount(data, path)
        model = None if consumed else data.draw(MODELS)
        expected = self.model.record(path, amount, consume=consumed, model=model)
        at = self.model.now
        if consumed:
            actual = self.driver.consume(path, amount)
        else:
            actual = self.driver.record(path, amount, model)
        self.batch_done()
        if not check_answer(actual, expected):
            return
        spend = self.model.scopes[path].spends[-1]
        assert isinstance(spend, Spend)
        if data.draw(st.booleans(), label="tick first"):
            self.move_to(self.model.now + delta)
        self.model.take_back(path, spend, consumed)
        assert self.driver.take_back(path, amount, at, model, consumed) == ("ok",)
        self.batch_done()
        event("taken back")

    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        """Reset all usage, a tenant's, or one window's period; open reservations stay."""
        path = self.who(data)
        scope = self.model.find(path)
        assert scope is not None
        window = pick(data, [*scope.periods()[1:], None, "fortnight"], "window")
        expected = self.model.reset(path, window)
        result = self.driver.reset(path, window)
        self.batch_done()
        if check_answer(result, expected):
            assert result == ("ok",), result
            if window is None:
                # Consumes made before a reset are refunded in test_core_ledger only.
                self.refundable = []
                if path == ROOT:
                    self.books = (0,) * N
            event(f"reset ({'all' if window is None else 'window'})")

    @rule(data=st.data())
    def probe(self, data: st.DataObject) -> None:
        """Would an amount fit now? Changes nothing."""
        path = self.who(data)
        amount = self.amount(data, path)
        expected = self.model.admission(path, amount)
        if isinstance(expected, Rejection):
            return  # a closed child's handle raises before asking
        result = self.driver.probe(path, amount)
        self.batch_done()
        if check_answer(result, expected):
            assert result == ("fits",), result

    # -- overrides and tenant caps ---------------------------------------------------

    @rule(data=st.data(), expires_in=EXPIRES)
    def add_override(self, data: st.DataObject, expires_in: timedelta) -> None:
        path = self.who(data)
        scope = self.model.find(path)
        assert scope is not None
        names = scope.periods()
        known = not data.draw(one_in(8), label="unknown window")
        window = pick(data, names, "window") if known else "fortnight"
        index = names.index(window) - 1 if known else LIFETIME
        capped = [axis for axis, cap in enumerate(scope.base(index)) if cap is not None]
        increase = data.draw(increases(capped), label="increase")
        expires_at = self.model.now + expires_in
        expected = self.model.set_override(path, window, increase, expires_at)
        result = self.driver.set_override(path, window, increase, expires_at)
        self.batch_done()
        if check_answer(result, expected):
            assert result == ("override", expected), result
            assert expected not in self.override_ids
            self.override_ids.add(expected)  # type: ignore[arg-type]
            event("override set")

    @rule(data=st.data())
    def remove_override(self, data: st.DataObject) -> None:
        """End an override early, through the scope that set it (or, refused, another)."""
        active = sorted(self.model.overrides)
        if active and data.draw(st.integers(0, 3), label="active") > 0:
            number = pick(data, active, "override")
            path = self.model.overrides[number].path
            if data.draw(one_in(6), label="other scope"):
                path = ROOT if path != ROOT else tenant_path("alice")
        else:
            number = data.draw(st.integers(1, self.model.overrides_made + 3), label="override")
            path = self.who(data)
        expected = self.model.remove_override(path, number)
        result = self.driver.remove_override(path, number)
        self.batch_done()
        if check_answer(result, expected):
            assert result == ("ok",), result
            event("override removed")

    @rule(tenant=st.sampled_from(TENANTS), limits=st.none() | TENANT_LIMITS)
    def set_tenant_caps(self, tenant: str, limits: Limits | None) -> None:
        self.model.set_tenant_caps(tenant, limits)
        assert self.driver.set_tenant_caps(tenant, limits) == ("ok",)
        self.batch_done()

    # -- child budgets ---------------------------------------------------------------

    def child_caps(self, data: st.DataObject, parent: ScopeModel) -> CapVector:
        """Caps on a few axes (the parent bounds the rest); nested ones smaller."""
        strategies = CARVE if parent.carve is None else CARVE_NESTED
        caps: list[int | None] = [None] * N
        for axis in range(N):
            if data.draw(one_in(3), label="capped"):
                caps[axis] = data.draw(strategies[axis], label="cap")
        return tuple(caps)

    @rule(data=st.data(), named=st.booleans())
    def open_child(self, data: st.DataObject, named: bool) -> None:
        path = self.who(data)
        parent = self.model.find(path)
        assert parent is not None
        caps = self.child_caps(data, parent)
        name = f"sub-{self.model.children_made + 1}" if named else None
        expected = self.model.open_child(path, name, caps)
        result = self.driver.open_child(path, name, caps)
        self.batch_done()
        if not check_answer(result, expected):
            return
        assert isinstance(expected, ScopeModel)
        assert result[0] == "child", result
        assert result[2] == expected.child, (result, expected.child)
        self.driver.adopt(expected.path, result[1])
        event("child opened" if len(path) < 2 else "nested child opened")

    @rule(data=st.data())
    def close_child(self, data: st.DataObject) -> None:
        """Close a child budget (its open children first, as nested blocks end)."""
        children = self.model.children()
        if not children:
            return
        child = pick(data, children, "child")
        for inner in reversed(self.model.descendants(child)):
            if not inner.closed:
                self.close(inner)
        self.close(child)

    def close(self, child: ScopeModel) -> None:
        figures = self.model.figures(child)
        self.model.close_child(child.path)
        result = self.driver.close_child(child.path)
        self.batch_done()
        assert result == ("closed", figures), f"{result} != {figures}"
        event("child closed")

    # -- waiting ---------------------------------------------------------------------

    @precondition(lambda self: self.driver.waits)
    @rule(data=st.data(), count=st.integers(1, 3))
    def wait(self, data: st.DataObject, count: int) -> None:
        """Requests queue to wait for room, in one batch; most are over the room left."""
        requests: list[tuple[str, ScopePath, Vector, object]] = []
        for _ in range(count):
            path = self.who(data)
            if data.draw(one_in(4), label="a child"):
                parent = self.model.find(path)
                assert parent is not None
                caps = self.child_caps(data, parent)
                carve = tuple(cap or 0 for cap in caps)
                requests.append(("child", path, carve, (None, caps)))
            else:
                amount = self.amount(data, path)
                requests.append(("reserve", path, amount, data.draw(TTLS, label="ttl")))
        self.new_from = len(self.waiting)
        self.waiting.extend(requests)
        self.driver.wait(requests)
        self.batch_done()

    @precondition(lambda self: self.driver.waits)
    @rule(data=st.data())
    def abandon(self, data: st.DataObject) -> None:
        """A waiter's holder gives up: it leaves the queue, and the queue is served again."""
        if not self.waiting:
            return
        index = data.draw(INDEX) % len(self.waiting)
        del self.waiting[index]
        self.new_from = len(self.waiting)
        self.driver.abandon(index)
        self.batch_done()
        event("waiter abandoned")

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        """Every scope shows the model's figures, the step caused the model's events, and
        nothing is over a limit without an excuse."""
        if not self.opened:
            return
        model = self.model
        paths = sorted(model.scopes, key=len, reverse=True)  # the deepest difference first
        observed = self.driver.observe(paths, self.current_reads)
        for path in paths:
            scope = model.scopes[path]
            seen = observed.get(path)
            if seen is None:
                assert not self.driver.observes(scope), f"no figures for {path}"
                continue
            assert seen.figures == model.figures(scope), (
                f"{path}: shows {seen.figures}, the model {model.figures(scope)}"
            )
            used, reserved, calls, count = seen.figures[:4]  # type: ignore[misc]
            assert min(used) >= 0, seen
            assert min(reserved) >= 0, seen
            assert calls >= 0, seen
            assert count >= 0, seen
            if seen.windows is not None:
                assert seen.windows == model.window_figures(scope), (
                    f"{path}: windows {seen.windows}, the model {model.window_figures(scope)}"
                )
        gone = set(observed) - set(paths)
        assert not gone, f"figures for scopes that no longer exist: {gone}"
        over = model.over(
            {
                path: (
                    seen.figures[0],  # type: ignore[misc]
                    seen.figures[1],  # type: ignore[misc]
                    seen.figures[6],  # type: ignore[misc]
                    None if seen.windows is None else [(w[4], w[3]) for w in seen.windows],  # type: ignore[misc]
                )
                for path, seen in observed.items()
            }
        )
        assert over <= model.excused, f"over a limit without cause: {sorted(over - model.excused)}"
        model.excused = over  # an excuse lapses once usage is back within the limit
        if over:
            event("over a limit after spend that happened")
        events = self.driver.events()
        for key in events:
            if key[0] == "UsageRecorded":
                self.books = add(self.books, key[4])  # type: ignore[arg-type]
        if ROOT in observed:
            assert observed[ROOT].figures[0] == self.books, (
                f"the books do not balance: used {observed[ROOT].figures[0]}, but the usage "
                "records (refunds and take-backs negative) since the last reset add up to "
                f"{self.books}"
            )
        seen_events = Counter(events)
        expected_events = Counter(model.events)
        model.events = []
        assert seen_events == expected_events, (
            f"events: unexpected {seen_events - expected_events}, "
            f"missing {expected_events - seen_events}"
        )
