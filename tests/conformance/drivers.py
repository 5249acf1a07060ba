"""The two ways the conformance machine reaches a store.

``ProtocolDriver`` opens the store itself (``await store.open(config, clock)``) and
sends every operation as a batch, ``await store.apply([command], waiting)``, as
the budget's actor does; it keeps the waiting queue and the published views as
the actor does. ``ApiDriver`` drives the same store through the public blocking
facade, ``treasurer.sync.open_budget(store=..., clock=ManualClock(...))``, and
reads what handles show. Both run their event loop in a thread of its own
(anyio's blocking portal), since Hypothesis rules are synchronous.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

import treasurer
import treasurer.sync
from redis_server import collect_client_leftovers, defer_collection
from treasurer import (
    BudgetClosed,
    BudgetExceeded,
    Caps,
    Event,
    InvalidOption,
    InvalidRefund,
    Override,
    OverrideExpired,
    OverrideRemoved,
    OverrideSet,
    RequestTooLarge,
    ReservationExpired,
    ReservationExpiredEvent,
    Snapshot,
    TenantCaps,
    Totals,
    Usage,
    UsageRecorded,
)
from treasurer._core.axes import AXES, CapVector, Vector, to_public, usd_to_nanos
from treasurer._core.commands import (
    Charge,
    CloseChild,
    Command,
    Commit,
    Consume,
    Meta,
    OpenChild,
    Probe,
    Record,
    Refund,
    Release,
    RemoveOverride,
    Reserve,
    Reset,
    SetOverride,
    SetTenantCaps,
    TakeBack,
)
from treasurer._core.config import BudgetConfig, Limits
from treasurer._core.outcomes import (
    Charged,
    ChildOpened,
    Granted,
    Refusal,
    Rejected,
    ScopeView,
    Settled,
    Verdict,
)
from treasurer._core.scopes import ROOT, ScopePath, tenant_of
from treasurer.testing import ManualClock

from .machine import Denied, Driver, Observed, Result
from .model import ScopeModel
from .stores import StoreFactory, TwoRedisWriters
from .strategies import keywords

Backend = tuple[str, dict[str, Any]]


# -- normalizing -----------------------------------------------------------------------


def caps_vector(caps: Caps) -> CapVector:
    values = [getattr(caps, name) for name in AXES]
    return tuple(
        None if value is None else usd_to_nanos(value) if isinstance(value, Decimal) else value
        for value in values
    )


def usage_vector(usage: Usage | Totals) -> Vector:
    return tuple(
        usd_to_nanos(value) if isinstance(value, Decimal) else value
        for value in (getattr(usage, name) for name in AXES)
    )


def denied(refusal: Refusal | BudgetExceeded) -> Result:
    too_large = (
        refusal.too_large if isinstance(refusal, Refusal) else isinstance(refusal, RequestTooLarge)
    )
    return (
        "refused",
        Denied(
            too_large,
            refusal.cap,
            refusal.window,
            refusal.budget,
            refusal.tenant,
            refusal.child,
            refusal.limit,
            refusal.requested,
            refusal.used,
            refusal.reserved,
            refusal.available,
            refusal.attempted,
            refusal.resets_at,
            refusal.scope if isinstance(refusal, Refusal) else None,
            refusal.final if isinstance(refusal, Refusal) else None,
        ),
    )


def view_figures(view: ScopeView) -> Observed:
    figures = (
        view.used,
        view.reserved,
        view.calls,
        view.open,
        view.caps,
        view.per_request,
        view.limits,
        tuple(sorted(override.id for override in view.overrides)),
        view.tenant,
        view.child,
    )
    windows = [(w.name, w.kind, w.caps, w.limits, w.used, w.resets_at) for w in view.windows]
    return Observed(figures, windows)


def snapshot_figures(snapshot: Snapshot) -> Observed:
    figures = (
        usage_vector(snapshot.used),
        usage_vector(snapshot.reserved),
        snapshot.calls,
        snapshot.open_reservations,
        caps_vector(snapshot.caps),
        caps_vector(snapshot.per_request),
        caps_vector(snapshot.limits),
        tuple(sorted(override.id for override in snapshot.overrides)),
        snapshot.tenant,
        snapshot.child,
    )
    windows = [
        (
            w.name,
            w.kind,
            caps_vector(w.caps),
            caps_vector(w.limits),
            usage_vector(w.used),
            w.resets_at,
        )
        for w in snapshot.windows
    ]
    return Observed(figures, windows)


def event_key(event: Event) -> tuple[object, ...] | None:
    """The model's form of the events it predicts (``None``: not one of those)."""
    if isinstance(event, UsageRecorded):
        return (
            "UsageRecorded",
            event.source,
            event.tenant,
            event.child,
            tuple(event.amount),
            event.reservation,
            event.model,
        )
    if isinstance(event, ReservationExpiredEvent):
        return (
            "ReservationExpiredEvent",
            event.tenant,
            event.child,
            event.reservation,
            usage_vector(event.amount),
            event.deadline,
        )
    if isinstance(event, OverrideSet | OverrideExpired | OverrideRemoved):
        return (type(event).__name__, event.tenant, event.child, event.override.id)
    return None


def reply_result(reply: object) -> Result:
    if isinstance(reply, Refusal):
        return denied(reply)
    if isinstance(reply, Rejected):
        return ("rejected", reply.kind)
    if isinstance(reply, Granted):
        return ("granted", reply.reservation, reply.deadline)
    if isinstance(reply, Settled):
        return ("settled", reply.expired)
    if isinstance(reply, Charged):
        return ("charged", reply.used, reply.calls)
    if isinstance(reply, Override):
        return ("override", reply.id)
    if isinstance(reply, ChildOpened):
        return ("child", reply.path, reply.name)
    if isinstance(reply, ScopeView):
        return ("closed", view_figures(reply).figures)
    if isinstance(reply, Verdict):
        return ("fits",) if reply.refusal is None else denied(reply.refusal)
    assert reply is None, f"unexpected reply {reply!r}"
    return ("ok",)


def amounts(amount: Vector) -> dict[str, object]:
    """An amount vector as the public keywords (all of them, so nothing is defaulted)."""
    return {AXES[axis]: to_public(axis, value) for axis, value in enumerate(amount)}


def tenant_caps(limits: Limits) -> TenantCaps:
    return TenantCaps(
        per_request=keywords(limits.per_request),
        windows=list(limits.windows),
        **keywords(limits.caps),  # type: ignore[arg-type]
    )


def meta(model: str | None) -> Meta | None:
    return None if model is None else Meta(model=model)


# -- through the Store protocol ----------------------------------------------------------


class ProtocolDriver(Driver):
    """Applies each operation as a batch through the Store protocol, as the actor does."""

    waits = True
    takes_back = True
    settles_any_id = True
    tells_wakeup = True

    def __init__(self, factory: StoreFactory, backend: Backend) -> None:
        super().__init__()
        self.factory = factory
        self.backend = backend
        self.portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self.portal: BlockingPortal
        self.store: Any = None
        self.store_task: Future[None] | None = None
        self.now: datetime
        self.queue: list[Reserve | OpenChild] = []
        self.resets = 0  # of the last Charged reply
        self.published: dict[ScopePath, ScopeView] = {}
        self.seen: list[tuple[object, ...]] = []

    def clock(self) -> datetime:
        return self.now

    def open(self, config: BudgetConfig, start: datetime) -> None:
        name, options = self.backend
        self.portal_cm = start_blocking_portal(name, options)
        self.portal = self.portal_cm.__enter__()
        self.store = self.factory()
        if isinstance(self.store, treasurer.RedisStore | TwoRedisWriters):
            defer_collection()  # until close()
        self.now = start
        view = self.portal.call(self.store.open, config, self.clock)
        if hasattr(self.store, "run"):  # a store with a task of its own, as open_budget runs it
            self.store_task, _ = self.portal.start_task(self.store.run, lambda: None)
        assert isinstance(view, ScopeView)
        assert view.path == ROOT
        self.published[ROOT] = view

    def close(self) -> None:
        try:
            if self.store is not None:
                self.portal.call(self.store.close)
        finally:
            if self.store_task is not None:
                self.store_task.cancel()
                self.store_task = None
            if self.portal_cm is not None:
                self.portal_cm.__exit__(None, None, None)
                self.portal_cm = None
            if isinstance(self.store, treasurer.RedisStore | TwoRedisWriters):
                collect_client_leftovers()

    def batch(
        self, commands: Sequence[Command], *, joined: int = 0, serve: bool = True
    ) -> list[Result]:
        """Apply ``commands`` in one batch (serving the queue, ``joined`` of which just came)."""
        waiting = list(self.queue) if serve else []
        apply = functools.partial(
            self.store.apply, list(commands), waiting, new_from=len(waiting) - joined, verbose=True
        )
        result = self.portal.call(apply)
        assert result.now == self.now, "a store applies a batch at its clock's time"
        assert len(result.replies) == len(commands)
        for path, view in result.views.items():
            if view is None:
                self.published.pop(path, None)
            else:
                assert view.path == path
                self.published[path] = view
        self.seen.extend(key for e in result.events if (key := event_key(e)) is not None)
        if serve:
            self.next_wakeup = result.next_wakeup
            self.answered = [(index, reply_result(reply)) for index, reply in result.answered]
            done = {index for index, _ in result.answered}
            self.queue = [command for i, command in enumerate(self.queue) if i not in done]
        else:
            assert not result.answered
        for reply in result.replies:
            if isinstance(reply, Charged):
                self.resets = reply.resets  # what a take-back of that call carries
        return [reply_result(reply) for reply in result.replies]

    def one(self, command: Command) -> Result:
        (result,) = self.batch([command])
        return result

    def set_clock(self, when: datetime) -> None:
        self.now = when
        self.batch([])  # what the timer does: time alone changes something

    def set_clock_quietly(self, when: datetime) -> None:
        self.now = when

    def reserve(
        self, path: ScopePath, amount: Vector, ttl: timedelta | None, model: str | None
    ) -> Result:
        return self.one(Reserve(path, amount, ttl, meta(model)))

    def commit(
        self,
        path: ScopePath,
        reservation: int,
        actual: Vector,
        model: str | None,
        as_reserved: bool = False,
    ) -> Result:
        return self.one(Commit(path, reservation, actual, meta(model)))

    def release(self, path: ScopePath, reservation: int) -> Result:
        return self.one(Release(path, reservation))

    def record(self, path: ScopePath, amount: Vector, model: str | None) -> Result:
        return self.one(Record(path, amount, meta(model)))

    def consume(self, path: ScopePath, amount: Vector) -> Result:
        result = self.one(Consume(path, amount))
        return ("consumed",) if result[0] == "charged" else result

    def refund(self, path: ScopePath, actual: int, estimated: int) -> Result:
        return self.one(Refund(path, actual, estimated))

    def charge(self, path: ScopePath, amount: Vector, model: str | None) -> Result:
        return self.one(Charge(path, amount, meta(model)))

    def take_back(
        self, path: ScopePath, amount: Vector, at: datetime, model: str | None, consumed: bool
    ) -> Result:
        return self.one(TakeBack(path, amount, at, meta(model), consumed, self.resets))

    def reset(self, path: ScopePath, window: str | None) -> Result:
        return self.one(Reset(path, window))

    def probe(self, path: ScopePath, amount: Vector) -> Result:
        return self.one(Probe(path, amount))

    def set_override(
        self, path: ScopePath, window: str, increase: Vector, expires_at: datetime
    ) -> Result:
        return self.one(SetOverride(path, window, increase, expires_at, "why", "who"))

    def remove_override(self, path: ScopePath, number: int) -> Result:
        return self.one(RemoveOverride(path, number))

    def set_tenant_caps(self, tenant: str, limits: Limits | None) -> Result:
        return self.one(SetTenantCaps(tenant, limits))

    def open_child(self, path: ScopePath, name: str | None, caps: CapVector) -> Result:
        return self.one(OpenChild(path, name, caps))

    def adopt(self, path: ScopePath, key: object) -> None:
        assert key == path, f"the child opened at {key}, the model expects {path}"

    def close_child(self, path: ScopePath) -> Result:
        return self.one(CloseChild(path))

    def wait(self, requests: Sequence[tuple[str, ScopePath, Vector, object]]) -> None:
        for kind, path, amount, extra in requests:
            if kind == "reserve":
                self.queue.append(Reserve(path, amount, extra))  # type: ignore[arg-type]
            else:
                name, caps = extra  # type: ignore[misc]
                self.queue.append(OpenChild(path, name, caps))
        self.batch([], joined=len(requests))

    def abandon(self, index: int) -> None:
        del self.queue[index]
        self.batch([])  # as the actor: the queue is served again

    def observe(self, paths: Sequence[ScopePath], current: bool) -> dict[ScopePath, Observed]:
        """The views the store published; with ``current``, each scope probed first (a
        batch without the queue), so its windows are read as of now."""
        if current:
            nothing = (0,) * len(AXES)
            self.batch([Probe(path, nothing) for path in paths], serve=False)
        observed = {}
        for path, view in self.published.items():
            refreshed = self.portal.call(self.store.refresh, path)
            assert refreshed is not None, f"the store forgot {path}"
            if isinstance(self.store, TwoRedisWriters):  # (a view is one writer's)
                view = refreshed
            seen = view_figures(view)
            observed[path] = Observed(seen.figures, seen.windows if current else None)
            assert view_figures(refreshed).figures == seen.figures, (
                f"{path}: refresh() shows {view_figures(refreshed).figures}, "
                f"the last batch published {seen.figures}"
            )
        return observed

    def events(self) -> list[tuple[object, ...]]:
        seen, self.seen = self.seen, []
        return seen


# -- through the public API ------------------------------------------------------------


class ApiDriver(Driver):
    """Drives the store through ``treasurer.sync.open_budget`` and the handles it gives."""

    def __init__(self, factory: StoreFactory, backend: Backend) -> None:
        super().__init__()
        self.factory = factory
        self.backend = backend
        self.budget: treasurer.sync.SyncBudget | None = None
        self.redis = False
        self.clock: ManualClock
        self.subscription_cm: AbstractContextManager[Any] | None = None
        self.subscription: Any = None
        self.reservations: dict[int, treasurer.sync.SyncReservation] = {}
        self.children: dict[ScopePath, tuple[AbstractContextManager[Any], Any]] = {}
        self.closed_children: dict[ScopePath, Any] = {}
        self.opened: list[ScopePath] = []

    def open(self, config: BudgetConfig, start: datetime) -> None:
        self.clock = ManualClock(start)
        name, options = self.backend
        limits = config.limits
        store = self.factory()
        # (coredis leaves leftovers)
        self.redis = isinstance(store, treasurer.RedisStore | TwoRedisWriters)
        if self.redis:
            defer_collection()  # until close()
        self.budget = treasurer.sync.open_budget(
            backend=name,  # type: ignore[arg-type]
            backend_options=options,
            store=store,
            clock=self.clock,
            name=config.name,
            per_request=keywords(limits.per_request),
            windows=list(limits.windows),
            reservation_ttl=config.reservation_ttl,
            tenant_defaults=tenant_caps(config.tenant_defaults),
            tenants={name: tenant_caps(spec) for name, spec in config.tenants.items()},
            **keywords(limits.caps),  # type: ignore[arg-type]
        )
        self.subscription_cm = self.budget.subscribe(buffer=1_000_000)
        self.subscription = self.subscription_cm.__enter__()

    def close(self) -> None:
        """Settle what handles still hold, end the child blocks, then close the budget
        (after a failure too: nothing of a run outlives it)."""
        if self.budget is None:
            if self.redis:
                collect_client_leftovers()  # the open failed
            return
        try:
            for reservation in self.reservations.values():
                with contextlib.suppress(treasurer.TreasurerError):
                    reservation.__exit__(None, None, None)  # released (or gone already)
            for path in reversed(self.opened):
                if path in self.children:
                    cm, _ = self.children.pop(path)
                    with contextlib.suppress(treasurer.TreasurerError):
                        cm.__exit__(None, None, None)
            if self.subscription_cm is not None:
                self.subscription_cm.__exit__(None, None, None)
        finally:
            self.budget.close()
            self.budget = None
            if self.redis:
                collect_client_leftovers()

    def handle(self, path: ScopePath) -> Any:
        assert self.budget is not None
        if path == ROOT:
            return self.budget
        if path in self.children:
            return self.children[path][1]
        if path in self.closed_children:
            return self.closed_children[path]
        tenant = tenant_of(path)
        assert tenant is not None, path
        assert len(path) == 1, path
        return self.budget.tenant(tenant)

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Result | Any:
        """Call a handle's method; an error it raises as the normalized result."""
        try:
            return function(*args, **kwargs)
        except BudgetExceeded as error:
            return denied(error)
        except InvalidRefund:
            return ("rejected", "refund")
        except InvalidOption:
            return ("rejected", "invalid_option")
        except BudgetClosed:
            return ("rejected", "closed")

    def set_clock(self, when: datetime) -> None:
        self.clock.set(when)  # from another thread: the budget sees it at its next call
        assert self.budget is not None
        self.budget.check()  # a call, so time acts now

    def set_clock_quietly(self, when: datetime) -> None:
        self.clock.set(when)

    def reserve(
        self, path: ScopePath, amount: Vector, ttl: timedelta | None, model: str | None
    ) -> Result:
        extra = {} if model is None else {"model": model}
        reservation = self.handle(path).reserve(ttl=ttl, **amounts(amount), **extra)
        entered = self.call(reservation.__enter__)
        if isinstance(entered, tuple):
            return entered
        self.reservations[reservation.id] = reservation
        return ("granted", reservation.id, reservation.deadline)

    def commit(
        self,
        path: ScopePath,
        reservation: int,
        actual: Vector,
        model: str | None,
        as_reserved: bool = False,
    ) -> Result:
        held = self.reservations.pop(reservation)
        given: dict[str, object] = {} if as_reserved else amounts(actual)
        if model is not None:
            given["model"] = model
        held.commit(**given)
        try:
            held.__exit__(None, None, None)
        except ReservationExpired:
            return ("settled", True)
        return ("settled", False)

    def release(self, path: ScopePath, reservation: int) -> Result:
        held = self.reservations.pop(reservation)
        held.__exit__(None, None, None)
        return ("settled", None)

    def record(self, path: ScopePath, amount: Vector, model: str | None) -> Result:
        extra = {} if model is None else {"model": model}
        totals = self.call(self.handle(path).record, **amounts(amount), **extra)
        if isinstance(totals, tuple):
            return totals
        return ("charged", usage_vector(totals), totals.calls)

    def consume(self, path: ScopePath, amount: Vector) -> Result:
        handle = self.handle(path)
        consumed = self.call(handle.consume, **amounts(amount))
        if isinstance(consumed, tuple):
            return consumed
        if consumed:
            return ("consumed",)
        check = handle.check(**amounts(amount))  # the refusal it met, for its figures
        assert check.refusal is not None, "consume() refused what check() says fits"
        return denied(check.refusal)

    def refund(self, path: ScopePath, actual: int, estimated: int) -> Result:
        result = self.call(self.handle(path).refund, actual, estimated)
        return ("ok",) if result is None else result

    def charge(self, path: ScopePath, amount: Vector, model: str | None) -> Result:
        extra = {} if model is None else {"model": model}
        totals = self.call(self.handle(path).charge, **amounts(amount), **extra)
        if isinstance(totals, tuple):
            return totals
        return ("charged", usage_vector(totals), totals.calls)

    def reset(self, path: ScopePath, window: str | None) -> Result:
        result = self.call(self.handle(path).reset, window)
        return ("ok",) if result is None else result

    def probe(self, path: ScopePath, amount: Vector) -> Result:
        check = self.call(self.handle(path).check, **amounts(amount))
        if isinstance(check, tuple):
            return check
        return ("fits",) if check.fits else denied(check.refusal)

    def set_override(
        self, path: ScopePath, window: str, increase: Vector, expires_at: datetime
    ) -> Result:
        override = self.call(
            self.handle(path).override,
            expires_at=expires_at,
            window=window,
            reason="why",
            created_by="who",
            **amounts(increase),
        )
        if isinstance(override, tuple):
            return override
        assert (override.window, override.expires_at) == (window, expires_at)
        assert usage_vector(override.increase) == increase
        return ("override", override.id)

    def remove_override(self, path: ScopePath, number: int) -> Result:
        result = self.call(self.handle(path).remove_override, number)
        return ("ok",) if result is None else result

    def set_tenant_caps(self, tenant: str, limits: Limits | None) -> Result:
        assert self.budget is not None
        self.budget.set_tenant_caps(tenant, None if limits is None else tenant_caps(limits))
        return ("ok",)

    def open_child(self, path: ScopePath, name: str | None, caps: CapVector) -> Result:
        cm = self.handle(path).child(name=name, **keywords(caps))
        child = self.call(cm.__enter__)
        if isinstance(child, tuple):
            return child
        return ("child", (cm, child), child.name)

    def adopt(self, path: ScopePath, key: object) -> None:
        self.children[path] = key  # type: ignore[assignment]
        self.opened.append(path)

    def close_child(self, path: ScopePath) -> Result:
        cm, child = self.children.pop(path)
        cm.__exit__(None, None, None)
        self.closed_children[path] = child
        return ("closed", snapshot_figures(child.snapshot()).figures)

    def observes(self, scope: ScopeModel) -> bool:
        return not scope.closed

    def observe(self, paths: Sequence[ScopePath], current: bool) -> dict[ScopePath, Observed]:
        observed = {}
        for path in paths:
            if path in self.closed_children:
                continue  # a closed child's handle shows its figures as it closed
            handle = self.handle(path)
            if current:
                handle.check()  # a call in that scope brings its windows to now
            seen = snapshot_figures(handle.snapshot())
            observed[path] = Observed(seen.figures, seen.windows if current else None)
        return observed

    def events(self) -> list[tuple[object, ...]]:
        return [key for e in self.subscription.pending() if (key := event_key(e)) is not None]
