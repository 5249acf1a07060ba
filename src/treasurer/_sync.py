"""Blocking access to a budget from threads and plain synchronous code.

Every call hops to the thread running the budget's event loop and blocks until
the actor answered, so threads get the same guarantees as tasks: the actor
still serializes everything. Reads (``snapshot``, ``totals``, ``remaining``)
do not hop: they read the immutable state the actor last published, which a
single attribute read gets whole.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import functools
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar, Unpack

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import sniffio
from anyio.from_thread import BlockingPortal

from . import _budget
from ._actor import DEFAULT_MAILBOX_SIZE, BudgetCore
from ._amounts import Amounts, Money, UsageInfo
from ._budget import Budget, Reservation, _typed_keyword_errors
from ._errors import (
    AlreadySettled,
    BudgetClosed,
    InvalidOption,
    LoopThreadError,
    ReservationExpired,
    TreasurerError,
)
from ._events import DEFAULT_THRESHOLDS, Event, Override
from ._tenants import TenantCaps, validated_tenants
from ._types import Caps, Check, Snapshot, Statistics, Totals, Usage, UsageReport
from ._windows import Window

Backend = Literal["asyncio", "trio"]
_CLOSE_TIMEOUT = 10.0
_BACKENDS: frozenset[str] = frozenset({"asyncio", "trio"})


_T = TypeVar("_T")


class _Runner(ABC):
    """Runs a function on the budget's event loop thread and waits for it.

    Two ways to get there: a portal into a loop the facade owns, or the token
    of a loop someone else runs (for views).
    """

    def __init__(self, loop_thread: int, describe: str) -> None:
        self.loop_thread = loop_thread
        self.describe = describe
        self.closed = False

    def check_thread(self, what: str, *, settling: bool = False) -> None:
        if threading.get_ident() == self.loop_thread:
            raise LoopThreadError(
                f"{what} blocks, and was called from the thread running {self.describe}'s "
                "event loop, where it would deadlock; use the async Budget there"
            )
        if self.closed and not settling:
            raise self.closed_error()

    def closed_error(self) -> BudgetClosed:
        return BudgetClosed(f"{self.describe} is closed")

    @abstractmethod
    def run(
        self, func: Callable[..., Any], *args: object, what: str, settling: bool = False
    ) -> Any:
        """Run ``func(*args)`` on the loop thread and return its result.

        ``settling`` lets a release through even after this handle was closed,
        as long as the budget's loop still runs.
        """


class _Call:
    """One call from a thread into the facade's own loop, answered through a Future."""

    __slots__ = ("abandoned", "args", "func", "future", "scope")

    def __init__(self, func: Callable[..., Any], args: tuple[object, ...]) -> None:
        self.func = func
        self.args = args
        self.future: Future[Any] = Future()
        self.scope: anyio.CancelScope | None = None
        self.abandoned = False  # the caller stopped waiting (KeyboardInterrupt)

    def start(self, task_group: anyio.abc.TaskGroup, closed: BudgetClosed) -> None:
        """On the loop thread, as a callback that must not raise: start the call
        in a task of the facade's task group."""
        if self.abandoned or self.future.done():  # given up, or answered when the loop stopped
            return
        try:
            task_group.start_soon(self._run)
        except RuntimeError:  # the task group has ended: the budget is closing
            self.future.set_exception(closed)

    async def _run(self) -> None:
        if self.abandoned:  # given up between start() and now
            self.future.cancel()
            return
        with anyio.CancelScope() as self.scope:
            try:
                result = await _invoke(self.func, self.args)
            except Exception as exc:
                self.future.set_exception(exc)
                return
            except BaseException:
                self.future.cancel()
                raise
            self.future.set_result(result)

    def cancel(self) -> None:
        """On the loop thread: cancel the call if it is running."""
        if self.scope is not None:
            self.scope.cancel()


class _PortalRunner(_Runner):
    """For a budget the facade owns: calls run as tasks of its loop's task group.

    A call is handed to the loop without waiting (``call_soon_threadsafe`` on
    asyncio, ``run_sync_soon`` on trio), so the caller crosses threads once
    each way; the portal adds a third crossing, because it waits for the task
    to be started before waiting for its result. A caller
    interrupted while waiting (KeyboardInterrupt) cancels its call instead of
    leaving it running unobserved. The portal stays for what must run in one
    task from start to end (a child budget's block) and for stopping.
    """

    def __init__(
        self,
        portal: BlockingPortal,
        task_group: anyio.abc.TaskGroup,
        loop_thread: int,
        describe: str,
    ) -> None:
        super().__init__(loop_thread, describe)
        self.portal = portal
        self._task_group = task_group
        self._schedule = _thread_safe_scheduler()
        # Calls handed to the loop and not answered yet; any left when the loop
        # stops are answered with BudgetClosed, so no caller waits forever.
        self._pending: set[_Call] = set()
        self._pending_lock = threading.Lock()
        self._stopped = False

    def run(
        self, func: Callable[..., Any], *args: object, what: str, settling: bool = False
    ) -> Any:
        self.check_thread(what, settling=settling)
        call = _Call(func, args)
        with self._pending_lock:
            if self._stopped:
                raise self.closed_error()
            self._pending.add(call)
        try:
            try:
                self._schedule(call.start, self._task_group, self.closed_error())
            except RuntimeError:  # the loop has ended
                raise self.closed_error() from None
            return call.future.result()
        except BaseException:
            call.abandoned = True
            if not call.future.done():
                with contextlib.suppress(RuntimeError):  # the loop has ended
                    self._schedule(call.cancel)
            raise
        finally:
            with self._pending_lock:
                self._pending.discard(call)

    def stop(self) -> None:
        """On the loop thread, once no more calls can start: answer those left."""
        with self._pending_lock:
            self._stopped = True
            left, self._pending = self._pending, set()
        for call in left:
            if not call.future.done():
                call.future.set_exception(self.closed_error())


async def _invoke(func: Callable[..., Any], args: tuple[object, ...]) -> Any:
    """Call ``func``, awaiting what it returns if that is awaitable (on the loop thread)."""
    result = func(*args)
    if hasattr(result, "__await__"):
        result = await result
    return result


async def _then_caught_up(
    core: BudgetCore, func: Callable[..., Any], args: tuple[object, ...]
) -> Any:
    """On the loop thread: a call that posts a settlement, then the settlement
    applied, so the thread's next read (which does not hop) shows it."""
    try:
        return await _invoke(func, args)
    finally:
        core.catch_up()


def _thread_safe_scheduler() -> Callable[..., object]:
    """The running loop's way to schedule a callback from another thread, without waiting."""
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    # asyncio runs the callback in the context it is given; outside a task,
    # anyio finds its backend only through sniffio's context variable.
    context = contextvars.copy_context()
    context.run(sniffio.current_async_library_cvar.set, "asyncio")
    return functools.partial(asyncio.get_running_loop().call_soon_threadsafe, context=context)


class _TokenRunner(_Runner):
    """For a view of a budget that runs in someone else's event loop."""

    def __init__(self, token: anyio.lowlevel.EventLoopToken, loop_thread: int, name: str) -> None:
        super().__init__(loop_thread, f"budget {name!r}")
        self.token = token

    def run(
        self, func: Callable[..., Any], *args: object, what: str, settling: bool = False
    ) -> Any:
        self.check_thread(what, settling=settling)

        try:
            return anyio.from_thread.run(_invoke, func, args, token=self.token)
        except anyio.RunFinishedError as exc:
            raise BudgetClosed(f"{self.describe}'s event loop has finished") from exc


class SyncReservation:
    """A reservation for synchronous code: ``with budget.reserve(...) as r:``.

    Same rules as :class:`treasurer.Reservation`: leaving the block without
    :meth:`commit`, including by an exception, releases it.
    """

    __slots__ = ("_committed", "_reservation", "_runner")

    def __init__(self, runner: _Runner, reservation: Reservation) -> None:
        self._runner = runner
        self._reservation = reservation
        self._committed: object = None  # a validated commit, sent when the block ends

    @property
    def id(self) -> int:
        return self._reservation.id

    @property
    def amount(self) -> Usage:
        return self._reservation.amount

    @property
    def settled(self) -> bool:
        return self._committed is not None or self._reservation.settled

    @property
    def deadline(self) -> datetime | None:
        return self._reservation.deadline

    def __enter__(self) -> SyncReservation:
        reservation = self._reservation
        try:
            self._runner.run(reservation.__aenter__, what="reserve()")
        except BaseException:
            # Interrupted after the grant (the cancel came too late): hand it back.
            if reservation.id and not reservation.settled:
                self._settle(reservation.__aexit__, (None, None, None), "release()")
            raise
        return self

    def _settle(
        self, func: Callable[..., Any], args: tuple[object, ...], what: str, settling: bool = False
    ) -> None:
        """Run a call that settles this reservation on the loop thread; the
        settlement is applied before it returns (see _then_caught_up)."""
        core = self._reservation._core
        self._runner.run(_then_caught_up, core, func, args, what=what, settling=settling)

    def commit(self, **actual: Unpack[UsageInfo]) -> None:
        """Record what the call really used; see :meth:`treasurer.Reservation.commit`.

        Validated here, at once (bad input raises and changes nothing), and
        sent with the end of the block, in the same hop to the event loop:
        one hop fewer per reservation. So a late commit's
        :class:`ReservationExpired` is raised when the block ends (its usage
        is recorded all the same), and a snapshot shows the commit once the
        block is left, as in the async API.
        """
        self._runner.check_thread("commit()")
        if self._committed is not None:
            raise AlreadySettled(f"reservation {self.id} was already settled")
        self._committed = self._reservation._usage_of(actual)

    def release(self) -> None:
        """Give the reservation back without recording usage."""
        if self._committed is not None:
            raise AlreadySettled(f"reservation {self.id} was already settled")
        self._settle(self._reservation.release, (), "release()")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        reservation = self._reservation
        committed, self._committed = self._committed, None
        try:
            if committed is None:
                self._settle(reservation.__aexit__, (exc_type, exc, traceback), "release()", True)
            else:
                self._settle(self._commit_and_exit, (committed, exc_type), "commit()", True)
        except BudgetClosed:
            reservation._forget()  # the budget is gone, and with it what this held

    async def _commit_and_exit(
        self, committed: object, exc_type: type[BaseException] | None
    ) -> None:
        """On the loop thread: what ``r.commit(...)`` then leaving the block does."""
        reservation = self._reservation
        late: ReservationExpired | None = None
        try:
            reservation._settle_with(committed)
        except ReservationExpired as error:
            late = error
        await reservation.__aexit__(exc_type, None, None)
        if late is not None and exc_type is None:
            raise late

    def __repr__(self) -> str:
        return repr(self._reservation).replace("<Reservation", "<SyncReservation", 1)


class SyncBudget:
    """A budget for threads: the methods of :class:`treasurer.Budget`, blocking.

    Safe to share between any number of threads. Get one from
    :func:`treasurer.sync.open_budget` (which owns the budget and its event
    loop thread) or from :meth:`treasurer.Budget.sync_view` (a view of a
    budget that lives in your own event loop).
    """

    def __init__(self, budget: Budget, runner: _Runner) -> None:
        self._budget = budget
        self._runner = runner

    @property
    def name(self) -> str:
        return self._budget.name

    @property
    def caps(self) -> Caps:
        return self._budget.caps

    @property
    def closed(self) -> bool:
        return self._runner.closed or self._budget.closed

    @property
    def tenant_name(self) -> str | None:
        """The tenant this handle is scoped to (``None``: the whole budget)."""
        return self._budget.tenant_name

    def tenant(self, name: str) -> SyncBudget:
        """A blocking handle scoped to one tenant; see :meth:`treasurer.Budget.tenant`.

        It lives as long as this budget does; its :meth:`close` does nothing.
        """
        return _SyncTenant(self._budget.tenant(name), self._runner)

    def consume(self, tokens: int | None = None, /, **amounts: Unpack[Amounts]) -> bool:
        """Atomically check and deduct; see :meth:`treasurer.Budget.consume`."""
        call = functools.partial(self._budget.consume, tokens, **amounts)
        return bool(self._runner.run(call, what="consume()"))

    def refund(self, actual_used: int, estimated: int) -> None:
        """Return unused tokens; see :meth:`treasurer.Budget.refund`."""
        self._runner.run(
            _then_caught_up,
            self._budget._core,
            self._budget.refund,
            (actual_used, estimated),
            what="refund()",
        )

    def record(self, **usage: Unpack[UsageInfo]) -> Totals:
        """Charge usage if it fits; see :meth:`treasurer.Budget.record`."""
        totals: Totals = self._runner.run(
            functools.partial(self._budget.record, **usage), what="record()"
        )
        return totals

    def usage(self, period: str = "lifetime", *, top: int = 5) -> UsageReport:
        """Usage over a period; see :meth:`treasurer.Budget.usage`."""
        report: UsageReport = self._runner.run(
            functools.partial(self._budget.usage, period, top=top), what="usage()"
        )
        return report

    def reserve(
        self, *, ttl: timedelta | None = None, wait: bool = False, **amounts: Unpack[Amounts]
    ) -> SyncReservation:
        """Hold an estimate for one call: ``with budget.reserve(...) as r: ...``.

        See :meth:`treasurer.Budget.reserve`; with ``wait=True`` the thread
        blocks until the reservation fits. The amounts are validated here, in
        the calling thread.
        """
        return SyncReservation(self._runner, self._budget.reserve(ttl=ttl, wait=wait, **amounts))

    def check(self, **amounts: Unpack[Amounts]) -> Check:
        """Would this request fit now? See :meth:`treasurer.Budget.check`."""
        result: Check = self._runner.run(
            functools.partial(self._budget.check, **amounts), what="check()"
        )
        return result

    @contextmanager
    def child(
        self,
        *,
        name: str | None = None,
        wait: bool = False,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        tokens: int | None = None,
        usd: Money | None = None,
        requests: int | None = None,
    ) -> Iterator[SyncBudget]:
        """A sub-budget carved out of this one: ``with budget.child(tokens=...) as sub:``.

        See :meth:`treasurer.Budget.child`. Available on budgets opened with
        :func:`open_budget`; a :meth:`~treasurer.Budget.sync_view` has no task
        of its own to hold the child open, so open children in async code there.
        """
        runner = self._runner
        if not isinstance(runner, _PortalRunner):
            raise TreasurerError(
                "child() is not available on a sync_view(); open the child with "
                "`async with budget.child(...)` in async code and take its sync_view()"
            )
        runner.check_thread("child()")
        opening = self._budget.child(
            name=name,
            wait=wait,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tokens=tokens,
            usd=usd,
            requests=requests,
        )
        # The child's `async with` holds a task group, so it must be entered and
        # left in one task: the portal runs the whole block in a task of its own.
        with runner.portal.wrap_async_context_manager(opening) as sub:
            yield SyncBudget(sub, runner)

    def override(
        self,
        *,
        expires_at: datetime,
        window: str = "lifetime",
        reason: str = "",
        created_by: str = "",
        **increase: Unpack[Amounts],
    ) -> Override:
        """Raise caps until ``expires_at``; see :meth:`treasurer.Budget.override`."""
        call = functools.partial(
            self._budget.override,
            expires_at=expires_at,
            window=window,
            reason=reason,
            created_by=created_by,
            **increase,
        )
        result: Override = self._runner.run(call, what="override()")
        return result

    def remove_override(self, override: Override | int) -> None:
        """End an override early."""
        self._runner.run(self._budget.remove_override, override, what="remove_override()")

    @property
    def per_request(self) -> Caps:
        return self._budget.per_request

    def charge(self, **usage: Unpack[UsageInfo]) -> Totals:
        """Record usage that already happened; never refused. See ``Budget.charge``."""
        totals: Totals = self._runner.run(
            functools.partial(self._budget.charge, **usage), what="charge()"
        )
        return totals

    def reset(self, window: str | None = None) -> None:
        """Zero usage (or one window's); open reservations stay reserved."""
        self._runner.run(self._budget.reset, window, what="reset()")

    @property
    def remaining(self) -> int | None:
        """Tokens left (``None`` if uncapped); never blocks."""
        return self._budget.remaining

    def snapshot(self) -> Snapshot:
        """The state the actor last published; never blocks."""
        return self._budget.snapshot()

    def totals(self) -> Totals:
        """Usage so far; never blocks."""
        return self._budget.totals()

    def statistics(self) -> Statistics:
        """The actor's figures; never blocks (each figure is read separately)."""
        return self._budget.statistics()

    def close(self) -> None:
        """Stop using the budget from here; later calls raise BudgetClosed.

        For a budget opened by :func:`open_budget` this also closes the budget
        and stops its thread. For a view it only detaches the view.
        """
        self._runner.closed = True

    def __enter__(self) -> SyncBudget:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<SyncBudget {self.name!r} {state}>"


class _SyncTenant(SyncBudget):
    """A tenant's blocking handle. Its reads take one hop to the budget's loop:
    tenants' figures are read from the ledger there, not published."""

    def close(self) -> None:
        """Nothing to close: a tenant's handle shares its budget's life."""

    def _read(self, read: Callable[[], _T], what: str) -> _T:
        async def on_the_loop() -> _T:
            return read()

        result: _T = self._runner.run(on_the_loop, what=what)
        return result

    @property
    def remaining(self) -> int | None:
        """Tokens left for this tenant (``None`` if uncapped)."""
        return self._read(lambda: self._budget.remaining, "remaining")

    def snapshot(self) -> Snapshot:
        """The tenant's figures as of the actor's last batch."""
        return self._read(self._budget.snapshot, "snapshot()")

    def totals(self) -> Totals:
        """The tenant's usage so far."""
        return self._read(self._budget.totals, "totals()")


_open: weakref.WeakSet[_OwnedSyncBudget] = weakref.WeakSet()


class _OwnedSyncBudget(SyncBudget):
    """A SyncBudget that runs its budget's event loop in a daemon thread of its own."""

    def __init__(self, open_kwargs: dict[str, Any], backend: Backend, options: dict[str, Any]):
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop: anyio.Event | None = None
        self._lock = threading.Lock()  # only for close(), never on a call's path
        self._thread = threading.Thread(
            target=self._thread_main,
            args=(open_kwargs, backend, options),
            name=f"treasurer {open_kwargs.get('name') or 'budget'}",
            daemon=True,  # a forgotten budget never keeps the process alive
        )
        self._thread.start()
        self._started.wait()
        self._raise_startup_error()
        _open.add(self)

    def _raise_startup_error(self) -> None:
        """If the budget could not open (bad caps), raise why, here in the caller."""
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error

    def _thread_main(self, open_kwargs: dict[str, Any], backend: Backend, options: Any) -> None:
        try:
            anyio.run(self._serve, open_kwargs, backend=backend, backend_options=options)
        except BaseException as exc:
            if not self._started.is_set():
                self._startup_error = exc
        finally:
            self._started.set()

    async def _serve(self, open_kwargs: dict[str, Any]) -> None:
        runner: _PortalRunner | None = None
        async with BlockingPortal() as portal:
            try:
                # The budget closes first, which answers calls still waiting in it
                # (BudgetClosed); then the task group waits for their tasks to end.
                async with (
                    anyio.create_task_group() as calls,
                    _budget.open_budget(**open_kwargs) as budget,
                ):
                    self._stop = anyio.Event()
                    runner = _PortalRunner(
                        portal, calls, threading.get_ident(), f"budget {budget.name!r}"
                    )
                    SyncBudget.__init__(self, budget, runner)
                    self._started.set()
                    await self._stop.wait()
            finally:
                if runner is not None:
                    runner.stop()

    def close(self) -> None:
        with self._lock:
            if self._runner.closed:
                return
            self._runner.check_thread("close()")
            self._runner.closed = True
        stop = self._stop
        assert stop is not None
        try:
            assert isinstance(self._runner, _PortalRunner)
            self._runner.portal.call(stop.set)
        except RuntimeError:  # pragma: no cover - the loop already ended
            pass
        self._thread.join(_CLOSE_TIMEOUT)
        _open.discard(self)


@_typed_keyword_errors
def open_budget(
    *,
    name: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    tokens: int | None = None,
    usd: Money | None = None,
    requests: int | None = None,
    max_tokens: int | None = None,
    per_request: Mapping[str, int | Money | None] | None = None,
    windows: Sequence[Window] = (),
    clock: Callable[[], datetime] | None = None,
    thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
    on_event: Callable[[Event], object] | None = None,
    reservation_ttl: timedelta | None = _budget.DEFAULT_RESERVATION_TTL,
    tenant_defaults: TenantCaps | None = None,
    tenants: Mapping[str, TenantCaps] | None = None,
    mailbox_size: int = DEFAULT_MAILBOX_SIZE,
    backend: Backend = "asyncio",
    backend_options: dict[str, Any] | None = None,
) -> SyncBudget:
    """Open a budget for synchronous code; use as ``with open_budget(...) as budget:``.

    The budget's actor runs on an event loop (``backend``: asyncio by default,
    or trio) in a daemon thread of its own. The other options are those of
    :func:`treasurer.open_budget`; ``on_event`` runs on that thread, so a
    synchronous callback must not call this budget's blocking methods. Close
    it, or leave the ``with`` block, to stop the thread; a budget still open
    at interpreter exit is closed then.
    """
    kwargs: dict[str, Any] = {
        "name": name,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "tokens": tokens,
        "usd": usd,
        "requests": requests,
        "max_tokens": max_tokens,
        "per_request": per_request,
        "windows": windows,
        "clock": clock,
        "thresholds": thresholds,
        "on_event": on_event,
        "reservation_ttl": reservation_ttl,
        "tenant_defaults": tenant_defaults,
        "tenants": tenants,
        "mailbox_size": mailbox_size,
    }
    # Bad input raises here, in the caller's thread, before any thread starts.
    _budget.validated_caps(input_tokens, output_tokens, tokens, usd, requests, max_tokens)
    _budget.validated_per_request(per_request)
    _budget.validated_windows(windows, clock)
    _budget.validated_thresholds(thresholds, on_event)
    _budget.validated_ttl(reservation_ttl)
    validated_tenants(tenant_defaults, tenants)
    _budget.validate_mailbox_size(mailbox_size)
    if str(backend) not in _BACKENDS:  # for callers without a type checker
        raise InvalidOption(f"backend must be 'asyncio' or 'trio', not {backend!r}")
    return _OwnedSyncBudget(kwargs, backend, dict(backend_options or {}))


def sync_view(budget: Budget) -> SyncBudget:
    """A blocking view of ``budget`` for other threads; call it on the budget's loop."""
    try:
        token = anyio.lowlevel.current_token()
    except RuntimeError as exc:
        raise LoopThreadError("sync_view() must be called on the budget's event loop") from exc
    return SyncBudget(budget, _TokenRunner(token, threading.get_ident(), budget.name))


@atexit.register
def _close_forgotten_budgets() -> None:
    for budget in list(_open):
        budget.close()
