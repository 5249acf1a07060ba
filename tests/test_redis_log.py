"""The usage log in a Redis stream, against a real server (Valkey 9) on 127.0.0.1:
records of several budgets in one stream, reports read back, trimming by length
and by age (the server's clock), and a server that is down or goes away."""

from __future__ import annotations

import gc
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import pytest

import treasurer
import treasurer.redis
import treasurer.reports
from redis_server import RedisServer
from treasurer._ops.redis_log import client
from treasurer.testing import ManualClock

pytestmark = [
    pytest.mark.anyio,
    # coredis leaves anyio memory streams unclosed when a connection fails (its own
    # objects, warned about when they are collected); treasurer's are all closed.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*MemoryObject.*Stream:pytest.PytestUnraisableExceptionWarning"
    ),
]

T0 = datetime(2026, 12, 4, 9, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _collect_what_coredis_left() -> Iterator[None]:
    """Collect coredis's unclosed objects while the filter above applies, not in
    whichever test the garbage collector would run in next."""
    yield
    gc.collect()


_streams = itertools.count()


def stream_name() -> str:
    return f"test:usage:{next(_streams)}:{id(object())}"


async def spend(budget: treasurer.Budget, clock: ManualClock) -> None:
    async with budget.reserve(tokens=2_000, model="gpt-4o", tags={"team": "search"}) as r:
        r.commit(input_tokens=1_200, output_tokens=300, usd=Decimal("0.006"))
    clock.advance(minutes=5)
    await budget.tenant("acme").record(tokens=500, usd=0.001, model="gpt-4o-mini")


async def until(done: Callable[[], bool], seconds: float) -> None:
    """Wait for the log's writer task (polled: it runs on a clock of its own)."""
    with anyio.fail_after(seconds):
        for _ in itertools.count():
            if done():
                return
            await anyio.sleep(0.01)


async def entries(url: str, stream: str) -> list[Any]:
    redis = client(url, 5.0)
    async with redis:
        return list(await redis.xrange(stream))


class TestWritingAndReading:
    async def test_records_go_to_the_stream_and_come_back(self, redis_url: str) -> None:
        stream = stream_name()
        clock = ManualClock(T0)
        log = treasurer.RedisUsageLog(redis_url, stream=stream)
        async with treasurer.open_budget(name="api", usage_log=log, clock=clock) as budget:
            await spend(budget, clock)
            report = await budget.usage(group_by="model")  # read back from the stream
            assert report.groups["gpt-4o"].tokens == 1_500
            assert report.groups["gpt-4o-mini"].usd == Decimal("0.001")
        assert log.statistics() == treasurer.UsageLogStatistics(2, 0, 0, 0, None)
        records = await treasurer.redis.read(redis_url, stream)
        assert [(r.budget, r.tenant, r.model, r.source, r.at) for r in records] == [
            ("api", None, "gpt-4o", "commit", T0),
            ("api", "acme", "gpt-4o-mini", "record", T0 + timedelta(minutes=5)),
        ]
        assert records[0].tags == {"team": "search"}
        assert records[0].usage.usd == Decimal("0.006")
        rows = treasurer.reports.usage_report(records, group_by=["tenant"])
        assert [(row.group, row.tokens) for row in rows] == [((None,), 1_500), (("acme",), 500)]
        (raw,) = (await entries(redis_url, stream))[:1]
        assert json.loads(raw.field_values["r"])["amount"][treasurer.AXES.index("tokens")] == 1_500

    async def test_budgets_share_a_stream_and_reads_filter(self, redis_url: str) -> None:
        stream = stream_name()
        clock = ManualClock(T0)
        for name in ("a", "b"):
            log = treasurer.RedisUsageLog(redis_url, stream=stream)
            async with treasurer.open_budget(name=name, usage_log=log, clock=clock) as budget:
                await budget.record(tokens=10 if name == "a" else 20)
                clock.advance(hours=1)
        only_b = await treasurer.redis.read(redis_url, stream, budget="b")
        assert [r.usage.tokens for r in only_b] == [20]
        first_hour = await treasurer.redis.read(
            redis_url, stream, since=T0, until=T0 + timedelta(hours=1)
        )
        assert [r.budget for r in first_hour] == ["a"]

    async def test_many_records_are_read_in_pages(
        self, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("treasurer._ops.redis_log.PAGE", 7)
        stream = stream_name()
        log = treasurer.RedisUsageLog(redis_url, stream=stream)
        async with treasurer.open_budget(name="many", usage_log=log) as budget:
            for tokens in range(1, 31):
                await budget.record(tokens=tokens)
        records = await treasurer.redis.read(redis_url, stream)
        assert [r.usage.tokens for r in records] == list(range(1, 31))


class TestRetention:
    async def test_maxlen_keeps_the_newest(self, redis_url: str) -> None:
        stream = stream_name()
        log = treasurer.RedisUsageLog(redis_url, stream=stream, maxlen=5)
        async with treasurer.open_budget(name="short", usage_log=log) as budget:
            for tokens in range(1, 13):
                await budget.record(tokens=tokens)
        records = await treasurer.redis.read(redis_url, stream)
        assert [r.usage.tokens for r in records] == [8, 9, 10, 11, 12]

    async def test_retention_drops_entries_older_than_the_servers_clock_allows(
        self, redis_url: str
    ) -> None:
        """An entry from long ago (its id is its server time) goes at the next write;
        entries within the retention stay."""
        stream = stream_name()
        old = treasurer.UsageRecorded(budget="old", at=T0, amount=(0, 0, 1, 0, 0), source="record")
        redis = client(redis_url, 5.0)
        async with redis:
            from treasurer._ops.redis_log import encode

            await redis.xadd(stream, {"r": encode(old)}, identifier="1000-0")
        log = treasurer.RedisUsageLog(
            redis_url, stream=stream, maxlen=None, retention=timedelta(days=1)
        )
        async with treasurer.open_budget(name="new", usage_log=log) as budget:
            await budget.record(tokens=2)
        assert [r.budget for r in await treasurer.redis.read(redis_url, stream)] == ["new"]


class TestFailures:
    async def test_a_server_that_does_not_answer_fails_the_open(self) -> None:
        from redis_server import free_port

        log = treasurer.RedisUsageLog(f"redis://127.0.0.1:{free_port()}/0", timeout=1)
        with pytest.raises(treasurer.StoreUnavailable, match="usage stream 'treasurer:usage'"):
            async with treasurer.open_budget(usage_log=log):
                pass  # pragma: no cover
        with pytest.raises(treasurer.StoreUnavailable):
            await treasurer.redis.read(log.url, call_timeout=1)
        with pytest.raises(treasurer.InvalidOption, match="url must be"):
            await treasurer.redis.read("http://127.0.0.1:1/")

    async def test_a_server_that_goes_away_loses_nothing_silently(
        self, redis_server: RedisServer
    ) -> None:
        """Writes that fail are counted and retried; when the server is back, what
        was queued is written; what cannot be written by the close is counted."""
        stream = stream_name()
        log = treasurer.RedisUsageLog(redis_server.url, stream=stream, timeout=1)
        async with treasurer.open_budget(name="flaky", usage_log=log) as budget:
            await budget.record(tokens=1)
            await until(lambda: log.statistics().written >= 1, 10)
            redis_server.stop()
            await budget.record(tokens=2)
            await until(lambda: log.statistics().failures >= 1, 10)
            assert log.statistics().pending == 1
            assert "flaky" not in (log.statistics().last_error or "")
            redis_server.start()
            await until(lambda: log.statistics().written >= 2, 15)
        stats = log.statistics()
        assert (stats.written, stats.pending, stats.dropped) == (2, 0, 0)
        assert [r.usage.tokens for r in await treasurer.redis.read(redis_server.url, stream)] == [2]

    async def test_a_batch_sent_again_is_written_once(self, redis_server: RedisServer) -> None:
        """A call that times out may still run on the server: the batch is sent
        again, and the stream keeps each record once."""
        stream = stream_name()
        log = treasurer.RedisUsageLog(redis_server.url, stream=stream, timeout=0.5)
        async with treasurer.open_budget(name="slow", usage_log=log) as budget:
            await budget.record(tokens=1)
            await until(lambda: log.statistics().written >= 1, 10)
            redis = client(redis_server.url, 5.0)
            async with redis:
                await redis.client_pause(1500)  # the server holds every call 1.5 s
            await budget.record(tokens=2)
            await until(lambda: log.statistics().written >= 2, 15)
        assert log.statistics().failures >= 1  # timed out, then sent again
        records = await treasurer.redis.read(redis_server.url, stream)
        assert [r.usage.tokens for r in records] == [1, 2]

    async def test_a_server_gone_for_good(self, redis_server: RedisServer) -> None:
        """The server goes before anything is written: each try fails and is
        counted; at the close what is queued is dropped and counted, and a read
        says why."""
        log = treasurer.RedisUsageLog(redis_server.url, stream=stream_name(), timeout=1)
        async with treasurer.open_budget(name="b", usage_log=log) as budget:
            redis_server.stop()
            await budget.record(tokens=1)
            await until(lambda: log.statistics().failures >= 2, 10)  # tried again
            with pytest.raises(treasurer.StoreUnavailable, match="usage stream"):
                await budget.usage(group_by="model")
        stats = log.statistics()
        assert (stats.written, stats.pending, stats.dropped) == (0, 0, 1)
        assert stats.last_error is not None
        assert "usage stream" in stats.last_error

    async def test_only_the_clients_errors_become_store_unavailable(self) -> None:
        from treasurer._ops.redis_log import redis_errors

        with pytest.raises(ValueError, match="ours"):
            async with redis_errors("here"):
                raise ValueError("ours")
        mixed = ExceptionGroup("both", [ConnectionError("down"), KeyError("k")])
        with pytest.raises(ExceptionGroup) as info:
            async with redis_errors("here"):
                raise mixed
        assert info.value is mixed
        nested = ExceptionGroup("outer", [ExceptionGroup("inner", [ConnectionError("down")])])
        with pytest.raises(treasurer.StoreUnavailable, match="here: down"):
            async with redis_errors("here"):
                raise nested

    async def test_a_stream_of_something_else(self, redis_url: str) -> None:
        stream = stream_name()
        redis = client(redis_url, 5.0)
        async with redis:
            await redis.xadd(stream, {"other": "data"})
        with pytest.raises(treasurer.InvalidOption, match="not a usage record"):
            await treasurer.redis.read(redis_url, stream)
        short = stream_name()
        async with redis:
            await redis.xadd(short, {"r": json.dumps({"amount": [1, 2, 3]})})
        with pytest.raises(treasurer.InvalidOption, match="a record of 3 axes"):
            await treasurer.redis.read(redis_url, short)

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"url": "http://x"}, "url must be"),
            ({"stream": ""}, "stream must be"),
            ({"maxlen": 0}, "maxlen must be"),
            ({"retention": timedelta(0)}, "retention must be"),
            ({"timeout": 0}, "timeout must be"),
            ({"buffer": 0}, "buffer must be"),
        ],
    )
    def test_bad_options(self, options: dict[str, Any], message: str) -> None:
        with pytest.raises(treasurer.InvalidOption, match=message):
            treasurer.RedisUsageLog(**options)

    async def test_one_budget_at_a_time(self, redis_url: str) -> None:
        log = treasurer.RedisUsageLog(redis_url, stream=stream_name())
        async with treasurer.open_budget(usage_log=log):
            with pytest.raises(treasurer.InvalidOption, match="one open budget at a time"):
                async with treasurer.open_budget(usage_log=log):
                    pass  # pragma: no cover
        assert repr(log).startswith("RedisUsageLog('redis://127.0.0.1:")


class TestCommandLine:
    async def test_report_from_a_stream(self, redis_url: str) -> None:
        stream = stream_name()
        clock = ManualClock(T0)
        log = treasurer.RedisUsageLog(redis_url, stream=stream)
        async with treasurer.open_budget(name="api", usage_log=log, clock=clock) as budget:
            await spend(budget, clock)
        done = await anyio.run_process(
            [sys.executable, "-m", "treasurer", "report", "--redis", redis_url,
             "--stream", stream, "--csv"],
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        lines = done.stdout.decode().splitlines()
        assert lines[0].startswith("model,calls,")
        assert lines[1].startswith("gpt-4o,1,1200,300,1500,0.006,")

    async def test_report_needs_one_source(self, redis_url: str) -> None:
        from typer.testing import CliRunner

        from treasurer._ops.cli import app

        def invoke(*args: str) -> Any:
            return CliRunner().invoke(app, ["report", *args])

        neither = await anyio.to_thread.run_sync(invoke)
        assert neither.exit_code == 2
        both = await anyio.to_thread.run_sync(invoke, "--log", "x", "--redis", redis_url)
        assert both.exit_code == 2
        down = await anyio.to_thread.run_sync(invoke, "--redis", "redis://127.0.0.1:1/0")
        assert down.exit_code == 1
        assert "usage stream" in down.stderr
        fine = await anyio.to_thread.run_sync(
            invoke, "--redis", redis_url, "--stream", stream_name(), "--json"
        )
        assert (fine.exit_code, fine.stdout.strip()) == (0, "[]")
        table = await anyio.to_thread.run_sync(invoke, "--redis", redis_url, "--stream", "s")
        assert table.exit_code == 0
        assert f"usage in {redis_url} s" in table.stdout
