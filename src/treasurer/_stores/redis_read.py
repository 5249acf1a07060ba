"""Reading budgets a Redis store keeps without opening them (scripts, the command
line): the names under a prefix, a budget's configuration, its figures now.

These methods block (each runs its own event loop, so call them from plain
code or a worker thread, not from inside an event loop) and write nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from .._core import state
from .._core.config import BudgetConfig
from .._core.values import Snapshot
from .._errors import InvalidOption
from . import rows
from .base import Clock
from .redis_client import redis_errors
from .redis_rows import Known
from .redis_script import SCRIPT

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from .._handles.settings import BudgetOptions

T = TypeVar("T")
READ: list[str] = ["read", "", "", "0", "", "", "", ""]  # the script's arguments for a read


class StoredBudgets:
    """What :class:`RedisStore` reads without opening a budget."""

    if TYPE_CHECKING:

        @property
        def prefix(self) -> str: ...

        @property
        def _where(self) -> str: ...

        def _client(self) -> AbstractAsyncContextManager[Any]: ...

    def _blocking(self, func: Callable[[Any], Awaitable[T]]) -> T:
        """``await func(client)`` in an event loop of its own. (Everything is done
        inside it: coverage stops tracing the frame that called a loop where a
        coredis client ran, so no code of ours runs after one.)"""

        async def run() -> T:
            async with redis_errors(self._where), self._client() as redis:
                return await func(redis)

        return anyio.run(run)

    def names(self) -> list[str]:
        """The names of the budgets kept under this store's prefix (blocking)."""
        start, end = f"{self.prefix}:{{", "}:budget"

        async def scan(redis: Any) -> list[str]:
            keys = [key async for key in redis.scan_iter(match=f"{self.prefix}:{{*}}:budget")]
            return sorted(key[len(start) : -len(end)] for key in keys)

        return self._blocking(scan)

    async def _rows(self, redis: Any, name: str) -> list[Any]:
        from .redis import budget_keys

        answer: list[Any] = await redis.register_script(SCRIPT)(
            keys=budget_keys(self.prefix, name), args=READ
        )
        if answer[1] is None:
            raise InvalidOption(f"the {self._where} holds no budget named {name!r}")
        return answer

    def options(self, name: str) -> BudgetOptions:
        """The keywords of ``open_budget`` that open budget ``name`` as it is stored
        (its caps, windows, tenants, thresholds, TTL, and ``store``), blocking."""
        from .._handles.settings import options_of  # settings builds on the stores

        async def read(redis: Any) -> BudgetOptions:
            options = options_of(_config(await self._rows(redis, name)))
            options["store"] = self  # type: ignore[typeddict-item]
            return options

        return self._blocking(read)

    def read(self, name: str, *, clock: Clock | None = None) -> dict[str | None, Snapshot]:
        """The stored figures of budget ``name`` as of now (the server's time, or
        ``clock()``), blocking and read-only: the budget's own under ``None``, then
        each tenant's by name (see :meth:`SqliteStore.read`)."""

        async def figures(redis: Any) -> dict[str | None, Snapshot]:
            answer = await self._rows(redis, name)
            seconds, microseconds = int(answer[2]), int(answer[3])
            server = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=microseconds)
            now = server if clock is None else clock()
            config = _config(answer)
            known = Known.of(answer[6], answer[8], answer[5])
            ledger = known.ledger(config, answer[5], pairs(answer[7]), now, int(answer[9]))
            return rows.figures(ledger, now)

        return self._blocking(figures)


def _config(answer: list[Any]) -> BudgetConfig:
    return state.load_config(json.loads(answer[4]))


def pairs(flat: list[str]) -> list[tuple[str, str]]:
    return list(zip(flat[::2], flat[1::2], strict=True))
