"""The dashboard: a page on 127.0.0.1 with a budget's live burn, forecasts,
alerts, refusals and top models (``pip install 'treasurer[dashboard]'``).

Starlette serves the page and ``/api/status`` (JSON, from a source of
:mod:`.dashboard_sources`); hypercorn runs it on the event loop it is called
from, asyncio or trio. The page fetches the status every ``refresh`` seconds
and draws it; it needs nothing from the internet. :func:`serve` shows a
budget open in this process, :func:`serve_store` (and ``treasurer
dashboard``) one kept in a SQLite store.
"""

from __future__ import annotations

import logging
import socket
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import anyio.to_thread

if TYPE_CHECKING:
    from .._stores.redis import RedisStore
    from .._stores.sqlite import SqliteStore
import sniffio

from .._errors import InvalidOption, TreasurerError
from .._handles.budget import Budget
from .dashboard_sources import LiveSource, Source, StoreSource

STOPPING: Final = 2.0  # seconds the server gets to close its connections
log = logging.getLogger("treasurer.dashboard")


def page(refresh: float) -> str:
    html = files("treasurer._ops").joinpath("dashboard.html").read_text(encoding="utf-8")
    return html.replace("{{REFRESH_MS}}", str(int(refresh * 1000)))


def app(source: Source, *, refresh: float = 2.0) -> Any:
    """The Starlette application of the dashboard."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    html = page(refresh)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    async def api_status(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await source.status())
        except TreasurerError as exc:  # the file went away, the budget closed
            return JSONResponse({"error": str(exc)}, status_code=503)

    return Starlette(routes=[Route("/", index), Route("/api/status", api_status)])


class Announce(anyio.abc.TaskStatus[str]):
    """A task status that prints the address once the server listens."""

    def __init__(self, template: str) -> None:
        self.template = template

    def started(self, value: str | None = None) -> None:
        print(self.template.format(value), flush=True)


async def serve_source(
    source: Source,
    host: str,
    port: int,
    refresh: float,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard of ``source`` until cancelled."""
    from hypercorn.config import Config

    if not isinstance(refresh, int | float) or refresh <= 0:
        raise InvalidOption(f"refresh must be a positive number of seconds, not {refresh!r}")
    config = Config()
    config.errorlog = log  # quiet unless the application turns logging on
    config.accesslog = None
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as run_server
    else:
        from hypercorn.asyncio import serve as run_server  # type: ignore[assignment]
    # Hypercorn stops on its shutdown trigger (it does not take being cancelled
    # well): shielded, it serves until this task is cancelled, then gets
    # STOPPING seconds to close its connections.
    stop = anyio.Event()
    server_scope = anyio.CancelScope(shield=True)

    async def run() -> None:
        with server_scope:
            await run_server(app(source, refresh=refresh), config, shutdown_trigger=stop.wait)

    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(source.run)
            listener = socket.create_server((host, port))  # hypercorn owns it from here
            address = listener.getsockname()
            config.bind = [f"fd://{listener.detach()}"]
            tasks.start_soon(run)
            shown = f"[{address[0]}]" if ":" in address[0] else address[0]
            task_status.started(f"http://{shown}:{address[1]}/")
            try:
                await anyio.sleep_forever()
            finally:
                stop.set()
                server_scope.deadline = anyio.current_time() + STOPPING
    except BaseExceptionGroup as group:  # one error (a closed budget, a taken port): itself
        alone = _alone(group)
        if alone is None:
            raise
        raise alone from None


def _alone(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception in ``group`` (groups of one unwrapped), or None."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error


async def serve(
    budget: Budget,
    *,
    host: str = "127.0.0.1",
    port: int = 8050,
    refresh: float = 2.0,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard of ``budget`` (open in this process) until cancelled;
    ``await task_group.start(serve, budget)`` gives its address (``port=0``: any free)."""
    await serve_source(LiveSource(budget), host, port, refresh, task_status)


async def serve_store(
    store: str | Path | SqliteStore | RedisStore,
    *,
    budget: str | None = None,
    log: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8050,
    refresh: float = 2.0,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard of a budget kept in ``store`` (a SQLite file's path, or a
    SqliteStore or RedisStore; its usage log ``log``, if given, for forecasts and
    models) until cancelled."""
    source = await anyio.to_thread.run_sync(lambda: StoreSource(store, budget=budget, log=log))
    await serve_source(source, host, port, refresh, task_status)
