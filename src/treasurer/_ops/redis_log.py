"""The usage log in a Redis (or Valkey) stream: usage records of budgets on many
hosts in one place (``pip install 'treasurer[redis]'``, coredis, which runs on
asyncio and trio).

Each batch the writer task takes is ONE Lua script call: every record is an
entry (``XADD``, its id the server's time; the record is one JSON field ``r``),
then the stream is trimmed to ``maxlen`` entries and to the last ``retention``
of the server's time, all or nothing. Reading (reports, the CLI) walks the
stream with ``XRANGE`` in pages. A server that cannot be reached fails the
budget's open with :class:`StoreUnavailable`; later, writes that fail are
counted and retried like the SQLite log's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import anyio

from .._core.axes import AXES
from .._core.events import UsageRecorded
from .._errors import InvalidOption, StoreUnavailable
from .._stores.redis_client import check_url, client, redis_errors
from .queued_log import QueuedUsageLog, positive

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM: Final = "treasurer:usage"
PAGE: Final = 10_000  # entries read per XRANGE
# KEYS: the stream, and a sorted set of the ids of the records written (scored by
# the server's time, kept a day), so a batch sent again after a call whose end
# the client did not see adds nothing twice. ARGV: maxlen, retention (ms), then
# an id and a record for each record.
APPEND: Final = """
local maxlen, retention = ARGV[1], ARGV[2]
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('ZADD', KEYS[2], 'NX', ms, ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'r', ARGV[i + 1])
    added = added + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms - 86400000)
if maxlen ~= '' then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', maxlen)
end
if retention ~= '' then
  redis.call('XTRIM', KEYS[1], 'MINID', '=', string.format('%d', ms - tonumber(retention)))
end
return added
"""


def encode(record: UsageRecorded) -> str:
    return json.dumps(
        {
            "at": record.at.isoformat(),
            "budget": record.budget,
            "tenant": record.tenant,
            "child": record.child,
            "source": record.source,
            "reservation": record.reservation,
            "model": record.model,
            "request_id": record.request_id,
            "session_id": record.session_id,
            "amount": list(record.amount),
            "tags": record.tags,
        },
        sort_keys=True,
    )


def decode(text: str) -> UsageRecorded:
    fields = json.loads(text)
    amount = tuple(int(value) for value in fields["amount"])
    if len(amount) != len(AXES):
        raise ValueError(f"a record of {len(amount)} axes, not {len(AXES)}")
    return UsageRecorded(
        budget=fields["budget"],
        at=datetime.fromisoformat(fields["at"]),
        tenant=fields["tenant"],
        child=fields["child"],
        amount=amount,
        source=fields["source"],
        reservation=fields["reservation"],
        model=fields["model"],
        request_id=fields["request_id"],
        session_id=fields["session_id"],
        tags=fields["tags"],
    )


async def records_in(
    redis: Any,
    stream: str,
    *,
    budget: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[UsageRecorded]:
    """The records in ``stream`` (through an entered client), oldest first: of
    ``budget`` (``None``: every budget), at or after ``since``, before ``until``."""
    found: list[UsageRecorded] = []
    start = "-"
    while True:
        entries = await redis.xrange(stream, start, "+", count=PAGE)
        for entry in entries:
            try:
                record = decode(entry.field_values["r"])
            except (KeyError, ValueError, TypeError) as exc:
                raise InvalidOption(
                    f"stream {stream!r} holds an entry that is not a usage record "
                    f"({entry.identifier}: {exc})"
                ) from None
            if (
                (budget is None or record.budget == budget)
                and (since is None or record.at >= since)
                and (until is None or record.at < until)
            ):
                found.append(record)
        if len(entries) < PAGE:
            return found
        start = "(" + entries[-1].identifier


async def read(
    url: str = DEFAULT_URL,
    stream: str = DEFAULT_STREAM,
    *,
    budget: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    call_timeout: float = 5.0,
) -> list[UsageRecorded]:
    """The usage records in a Redis stream, oldest first (see :class:`RedisUsageLog`);
    ``call_timeout`` bounds each call to the server."""
    check_url(url)
    async with redis_errors(f"usage stream {stream!r} at {url}"):
        redis = client(url, positive(call_timeout, "call_timeout"))
        async with redis:
            return await records_in(redis, stream, budget=budget, since=since, until=until)


class RedisUsageLog(QueuedUsageLog):
    """Usage records in the Redis stream ``stream`` at ``url``; any number of
    budgets (and hosts) may write to one stream. ``maxlen`` keeps at most that
    many entries, ``retention`` only those younger (on the server's clock);
    ``None`` lifts the bound. ``buffer`` bounds the records waiting to be
    written; ``timeout`` bounds each call to the server."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        stream: str = DEFAULT_STREAM,
        maxlen: int | None = 1_000_000,
        retention: timedelta | None = None,
        buffer: int = 10_000,
        timeout: float = 5.0,
    ) -> None:
        check_url(url)
        if not isinstance(stream, str) or not stream:
            raise InvalidOption(f"stream must be a non-empty str, not {stream!r}")
        if maxlen is not None and (
            isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1
        ):
            raise InvalidOption(f"maxlen must be an int >= 1 or None, not {maxlen!r}")
        if retention is not None and (
            not isinstance(retention, timedelta) or retention < timedelta(milliseconds=1)
        ):
            raise InvalidOption(f"retention must be a timedelta of 1 ms or more, not {retention!r}")
        super().__init__(buffer=buffer)
        self.url: Final = url
        self.stream: Final = stream
        self.maxlen: Final = maxlen
        self.retention: Final = retention
        self.timeout: Final = positive(timeout, "timeout")
        self._redis: Any = None
        self._script: Any = None
        self._connected: anyio.Event | None = None
        self._writer = uuid.uuid4().hex  # names this log's records in the stream's id set

    @property
    def _where(self) -> str:
        return f"usage stream {self.stream!r} at {self.url}"

    async def _connect(self) -> None:
        # The writer task enters the client (coredis clients live in one task);
        # a short-lived one checks the server now, so a bad URL fails the open.
        async with redis_errors(self._where):
            probe = client(self.url, self.timeout)
            async with probe:
                await probe.ping()
        self._connected = anyio.Event()

    async def run(self) -> None:
        try:
            async with redis_errors(self._where):
                self._redis = client(self.url, self.timeout)
                async with self._redis:
                    self._script = self._redis.register_script(APPEND)
                    assert self._connected is not None
                    self._connected.set()
                    await super().run()
        except StoreUnavailable as exc:  # the client itself failed: the budget goes on
            self._failures += 1
            self._last_error = str(exc)
        finally:
            self._redis = self._script = None
            if self._connected is not None:
                self._connected.set()  # a reader waiting gets the error below

    async def _store(self, batch: Sequence[tuple[int, UsageRecorded]]) -> None:
        await self._ready_to_talk()
        retention = (
            "" if self.retention is None else str(self.retention // timedelta(milliseconds=1))
        )
        args = ["" if self.maxlen is None else str(self.maxlen), retention]
        async with redis_errors(self._where):
            for number, record in batch:
                args += [f"{self._writer}:{number}", encode(record)]
            await self._script(keys=[self.stream, f"{self.stream}:written"], args=args)

    async def _disconnect(self) -> None:
        pass  # the client closes when run() leaves it

    async def _records(self, budget: str, since: datetime | None) -> list[UsageRecorded]:
        await self._ready_to_talk()
        async with redis_errors(self._where):
            return await records_in(self._redis, self.stream, budget=budget, since=since)

    async def _ready_to_talk(self) -> None:
        if self._connected is not None:
            await self._connected.wait()
        if self._redis is None:
            raise StoreUnavailable(f"{self._where}: not connected")

    def __repr__(self) -> str:
        return f"RedisUsageLog({self.url!r}, stream={self.stream!r})"
