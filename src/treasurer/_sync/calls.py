"""Running a budget's calls on its event loop thread, from other threads.

Two ways there: a :class:`BlockingPortal` into a loop the facade started for
the budget (``treasurer.sync.open_budget``), or the token of a loop the
application runs (``Budget.sync_view()``). A blocking call from a thread that
is itself running an event loop would freeze that loop, so it raises
:class:`LoopThreadError` at once.
"""

from __future__ import annotations

import asyncio
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.from_thread import BlockingPortal

from .._errors import BudgetClosed, LoopThreadError


def running_event_loop() -> str | None:
    """The event loop this thread is running, if any ("asyncio" or "trio")."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    return None


class Caller(ABC):
    """Runs functions on one budget's event loop thread and waits for them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def check(self, what: str) -> None:
        """Raise for a call that must not block here, or that comes too late."""
        loop = running_event_loop()
        if loop is not None:
            raise LoopThreadError(
                f"{what} blocks, and this thread runs an {loop} event loop it would freeze; "
                "use the async Budget in async code"
            )
        if self.closed:
            raise BudgetClosed(f"budget {self.name!r} is closed")

    @abstractmethod
    def call(self, func: Callable[..., Any], *args: object, what: str) -> Any:
        """Run ``func(*args)`` on the budget's loop and return its result."""

    def start(self, func: Callable[..., Any], *args: object) -> Future[Any] | None:
        """Start ``func(*args)`` on the budget's loop without waiting (``None``: it cannot)."""
        return None


class PortalCaller(Caller):
    """For a budget the facade owns: calls go through its loop's blocking portal."""

    def __init__(self, name: str, portal: BlockingPortal) -> None:
        super().__init__(name)
        self.portal = portal

    def call(self, func: Callable[..., Any], *args: object, what: str) -> Any:
        self.check(what)
        return self.wait(self.submit(func, *args))

    def submit(self, func: Callable[..., Any], *args: object) -> Future[Any]:
        try:
            return self.portal.start_task_soon(func, *args)
        except RuntimeError as exc:  # the portal has stopped
            raise BudgetClosed(f"budget {self.name!r} is closed") from exc

    def wait(self, future: Future[Any], timeout: float | None = None) -> Any:
        try:
            return future.result(timeout)
        except BaseException:
            if future.cancelled():
                raise BudgetClosed(f"budget {self.name!r} is closed") from None
            raise

    def start(self, func: Callable[..., Any], *args: object) -> Future[Any] | None:
        try:
            return self.portal.start_task_soon(func, *args)
        except RuntimeError:
            return None


class TokenCaller(Caller):
    """For a view of a budget that runs in the application's own event loop."""

    def __init__(self, name: str, token: anyio.lowlevel.EventLoopToken) -> None:
        super().__init__(name)
        self.token = token

    def call(self, func: Callable[..., Any], *args: object, what: str) -> Any:
        self.check(what)
        try:
            return anyio.from_thread.run(_invoke, func, args, token=self.token)
        except anyio.RunFinishedError as exc:
            raise BudgetClosed(f"budget {self.name!r}'s event loop has finished") from exc


async def _invoke(func: Callable[..., Any], args: tuple[object, ...]) -> Any:
    result = func(*args)
    if isinstance(result, Awaitable):
        result = await result
    return result
