"""The coredis client the Redis store and the Redis usage log talk through, and
its errors as treasurer's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio

from .._errors import InvalidOption, StoreUnavailable, TreasurerError


def _is_redis_error(exc: BaseException) -> bool:
    """An error of the client or its connection (coredis's pub/sub raises a stream's
    ClosedResourceError when its connection is torn down)."""
    from coredis.exceptions import RedisError

    connection = ConnectionError | OSError | TimeoutError | anyio.ClosedResourceError
    return isinstance(exc, RedisError | connection)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _described(exc: BaseException) -> str:
    """The error's text, and that of the OS or TLS error beneath it when the client
    only said it could not connect (a certificate it could not verify, say)."""
    beneath = exc.__cause__ or exc.__context__
    if isinstance(beneath, OSError) and str(beneath) not in str(exc):
        return f"{exc} ({beneath})"
    return str(exc)


@asynccontextmanager
async def redis_errors(where: str) -> AsyncIterator[None]:
    """The client's errors (coredis raises them in exception groups) as
    :class:`StoreUnavailable`, naming ``where``."""
    try:
        yield
    except BaseExceptionGroup as group:
        ours, others = group.split(TreasurerError)
        if ours is not None and others is None:  # our own error, from inside the client
            raise _first(ours) from None
        failures, rest = group.split(_is_redis_error)
        if failures is None or rest is not None:
            raise
        first = _first(failures)
        raise StoreUnavailable(f"{where}: {_described(first)}") from first
    except Exception as exc:
        if not _is_redis_error(exc):
            raise
        raise StoreUnavailable(f"{where}: {_described(exc)}") from exc


def check_url(url: object) -> None:
    """Refuse, when the store is made, a URL no client could connect to: another
    scheme, a port that is not a number, a database that is not one."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidOption(f"url must be a redis://, rediss:// or unix:// URL, not {url!r}")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (parsing it raises ValueError)
    except ValueError as error:
        raise InvalidOption(f"url {url!r} is not a Redis URL: {error}") from None
    database = parts.path.strip("/") if parts.scheme != "unix" else ""
    if database and not database.isdigit():
        raise InvalidOption(f"url {url!r} is not a Redis URL: database {database!r}")


def client(url: str, timeout: float, cluster: bool = False) -> Any:
    """A coredis client for ``url`` (enter it with ``async with`` before use); with
    ``cluster``, for the Redis Cluster that the node at ``url`` belongs to."""
    import coredis

    options: dict[str, Any] = {
        "decode_responses": True,
        "connect_timeout": timeout,
        "stream_timeout": timeout,
        "retry_policy": coredis.retry.NoRetryPolicy(),
    }
    if not cluster:
        return coredis.Redis.from_url(url, **options)
    from coredis.connection import TCPLocation
    from coredis.exceptions import ConnectionError as NodeUnreachable

    # The cluster client learns that a node cannot be reached only from a call it
    # tries again, so such a call is tried once more at once; after the first
    # such error (coredis's default waits for two) it maps the cluster's slots
    # anew, and the store's next attempt finds a replica promoted in a failover.
    options["retry_policy"] = coredis.retry.ConstantRetryPolicy((NodeUnreachable,), 1, delay=0)
    # Named here: the node coredis would make from the URL is a deprecated kind.
    where = urlsplit(url)
    node = TCPLocation(where.hostname or "localhost", where.port or 6379)
    return coredis.RedisCluster.from_url(url, startup_nodes=[node], reinitialize_steps=1, **options)


def unanswered(redis: Any) -> None:
    """Tells a cluster client that a node did not answer in time, as if it could
    not be reached: coredis maps the slots anew only after such errors, and does
    not count a timeout as one, so a node that hangs (not one that is gone)
    would keep its slots in this client for ever. (A client of one server: nothing.)"""
    layout = getattr(getattr(redis, "connection_pool", None), "cluster_layout", None)
    if layout is not None:
        from coredis.exceptions import ConnectionError as Unreachable

        layout.report_errors(None, Unreachable("no answer within the timeout"))
