"""``open_budget``: a budget's actor, timer and delivery, alive for one ``async with``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Unpack

import anyio
import anyio.abc
import attrs

from .._core.axes import describe
from .._ops.alerts import AlertDispatcher
from .._ops.forecast import ForecastWatch
from .._runtime.actor import Actor
from .._runtime.delivery import Delivery
from .._runtime.log import Log
from .._stores.base import system_clock
from ..testing import ManualClock
from .budget import Budget
from .core import BudgetCore
from .settings import BudgetOptions, Settings


@asynccontextmanager
async def open_budget(**options: Unpack[BudgetOptions]) -> AsyncIterator[Budget]:
    """Open a budget whose actor lives as long as the ``async with`` block.

    Caps (each optional; omitted means unbounded): ``input_tokens``,
    ``output_tokens``, ``tokens`` (input plus output; ``max_tokens`` is an
    alias), ``usd`` and ``requests``. ``per_request`` caps any single request
    (``{"usd": 0.5, "tokens": 8000}``); ``windows`` adds caps per period of
    time (:class:`Window`). ``tenant_defaults`` and ``tenants``
    (:class:`TenantCaps`) give tenants their own caps inside the budget's.
    ``thresholds`` are the percentages of each cap at which a
    :class:`ThresholdCrossed` event fires; ``on_event`` (a function or an
    async function) receives every event, off the budget's path. A
    reservation left unsettled for ``reservation_ttl`` (15 minutes unless
    given; ``None``: never) is released at its deadline. ``clock`` (a callable
    returning an aware ``datetime``) replaces the system clock, for tests;
    ``store`` is where the state lives (a :class:`MemoryStore` unless given);
    a durable store that holds this budget with another configuration
    refuses to open it unless ``reconfigure=True`` (then this configuration
    replaces the stored one, and the usage is kept);
    ``usage_log`` keeps usage records for ``usage(group_by=...)`` and
    reports (:class:`MemoryUsageLog`, :class:`SqliteUsageLog`);
    ``alerts`` (channels of :mod:`treasurer.alerts`) are sent every threshold
    crossing and forecast warning; ``forecast`` (``True`` or a
    :class:`treasurer.forecast.ForecastOptions`) follows the burn rate for
    ``forecast()`` and :class:`ExhaustionForecast` warnings; ``mailbox_size``
    bounds the actor's mailbox. After the block, every call raises
    :class:`BudgetClosed`.
    """
    async with run_budget(Settings.build(options)) as budget:
        yield budget


@asynccontextmanager
async def run_budget(settings: Settings) -> AsyncIterator[Budget]:
    """Run a budget with validated settings (the sync facade validates in its caller)."""
    name = settings.config.name
    log = Log(name)
    usage_log = settings.usage_log
    if settings.reconfigure:
        view = await settings.store.open(settings.config, settings.clock, reconfigure=True)
    else:  # a store written before reconfigure= existed opens as it did
        view = await settings.store.open(settings.config, settings.clock)
    # A store that keeps its own time (Redis: the server's) serves the budget's clock.
    store_clock = getattr(settings.store, "server_clock", None)
    if settings.clock is system_clock and store_clock is not None:
        settings = attrs.evolve(settings, clock=store_clock)
    alerts = AlertDispatcher(settings.alerts) if settings.alerts else None
    try:
        if usage_log is not None:
            await usage_log.open()
        if alerts is not None:
            alerts.start()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await settings.store.close()
        raise
    delivery = Delivery(log, settings.on_event)
    actor = Actor(
        name,
        settings.store,
        settings.clock,
        view,
        delivery,
        settings.usage_log,
        settings.mailbox_size,
        alerts,
        None if settings.forecast is None else ForecastWatch(settings.forecast, name),
    )
    clock = settings.clock
    if isinstance(clock, ManualClock):
        clock.wakers.add(actor.wake)
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as task_group:
            # A store with a task of its own (Redis: its connection, and word of other
            # processes' writes) serves until the actor has applied its last batch,
            # even when the budget is cancelled (the actor's last batches need it).
            store_task = anyio.CancelScope(shield=True)
            serve_store = getattr(settings.store, "run", None)
            if serve_store is not None:
                await task_group.start(_serve_store, store_task, serve_store, actor)
            task_group.start_soon(_run_actor, actor, store_task, name=f"treasurer actor {name}")
            task_group.start_soon(actor.timer.run, name=f"treasurer timer {name}")
            task_group.start_soon(delivery.run, name=f"treasurer delivery {name}")
            if usage_log is not None:
                task_group.start_soon(usage_log.run, name=f"treasurer usage log {name}")
            if alerts is not None:
                task_group.start_soon(alerts.run, name=f"treasurer alerts {name}")
            log.log(logging.INFO, "budget opened", caps=describe(c or 0 for c in view.caps))
            try:
                yield Budget(BudgetCore(actor, settings))
            except anyio.get_cancelled_exc_class():
                raise  # belongs to a cancel scope; the task group must see it
            except BaseException as exc:
                # Raised after the task group, so the block's own error reaches the
                # caller as itself, not wrapped in an ExceptionGroup.
                body_error = exc
            finally:
                actor.close()
    finally:
        if isinstance(clock, ManualClock):
            clock.wakers.discard(actor.wake)
        with anyio.CancelScope(shield=True):
            await settings.store.close()
        final = actor.views.get((), view)
        level = logging.ERROR if actor.failure is not None else logging.INFO
        log.log(level, "budget closed", calls=final.calls, open_reservations=final.open)
    if body_error is not None:
        raise body_error
    if actor.failure is not None:
        raise actor.closed_error()


async def _run_actor(actor: Actor, store_task: anyio.CancelScope) -> None:
    """The actor serves until the budget's block has ended and closed it, even when
    the budget is cancelled: what the block settles as it unwinds (a reservation
    released by the cancellation) is applied, and a durable store keeps it."""
    try:
        with anyio.CancelScope(shield=True):
            await actor.run()
    finally:
        store_task.cancel()


async def _serve_store(
    scope: anyio.CancelScope,
    serve: Callable[..., Awaitable[None]],
    actor: Actor,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await serve(actor.wake_waiters, deliver=actor.hand_out_shared, task_status=task_status)
