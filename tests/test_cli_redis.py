"""The ``treasurer`` commands on a budget kept in a Redis store (``--store
redis://...``), against a real Valkey server, and ``RedisStore``'s readers
(``names``, ``read``, ``options``) they use; the dashboard's source too."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import treasurer
import treasurer.dashboard
from test_cli_budgets import OPTIONS, run_cli, run_process
from treasurer import InvalidOption, StoreUnavailable
from treasurer.redis import RedisStore, RedisUsageLog

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def kept(redis_url: str) -> dict[str, Any]:
    """A budget "api" kept under a new prefix, with usage in a stream of its own."""
    prefix, stream = f"cli-{uuid.uuid4().hex[:8]}", f"usage-{uuid.uuid4().hex[:8]}"

    async def seed() -> None:
        log = RedisUsageLog(redis_url, stream=stream)
        store = RedisStore(redis_url, prefix=prefix)
        async with treasurer.open_budget(store=store, usage_log=log, **OPTIONS) as budget:
            await budget.record(tokens=1_000, usd=1, model="m")
            await budget.tenant("acme").record(tokens=200, model="m")

    anyio.run(seed)
    return {"url": redis_url, "prefix": prefix, "stream": stream}


def where(kept: dict[str, Any]) -> list[str]:
    return ["--store", kept["url"], "--prefix", kept["prefix"]]


class TestReaders:
    """Called as scripts call them: blocking, from plain code."""

    def test_names_read_and_options(self, kept: dict[str, Any]) -> None:
        store = RedisStore(kept["url"], prefix=kept["prefix"])
        assert store.names() == ["api"]
        figures = store.read("api")
        assert list(figures) == [None, "acme"]
        assert figures[None].tokens_used == 1_200
        assert figures["acme"].tokens_used == 200
        options = store.options("api")
        assert options["store"] is store

        async def reopen() -> None:
            async with treasurer.open_budget(**options) as budget:  # no reconfigure needed
                assert budget.snapshot().tokens_used == 1_200

        anyio.run(reopen)
        later = datetime.now(UTC) + timedelta(days=2)
        figures = store.read("api", clock=lambda: later)
        assert figures[None].window("day").used.tokens == 0  # the day rolled over

    def test_an_unknown_budget_and_an_absent_server(self, kept: dict[str, Any]) -> None:
        store = RedisStore(kept["url"], prefix=kept["prefix"])
        with pytest.raises(InvalidOption, match="holds no budget named 'nope'"):
            store.read("nope")
        gone = RedisStore("redis://127.0.0.1:1/0", timeout=0.5)
        with pytest.raises(StoreUnavailable):
            gone.names()


class TestCommands:
    async def test_status(self, kept: dict[str, Any]) -> None:
        code, out, err = await run_process("status", *where(kept), "--json")
        assert (code, err) == (0, "")
        scopes = {scope["tenant"]: scope for scope in json.loads(out)["scopes"]}
        lifetime = [p for p in scopes[None]["periods"] if p["period"] == "lifetime"]
        assert {p["axis"]: p["used"] for p in lifetime}["tokens"] == 1_200
        code, out, _ = await run_cli("status", *where(kept))
        assert code == 0
        assert "tenant 'acme'" in out

    async def test_override_add_list_remove(self, kept: dict[str, Any]) -> None:
        code, out, err = await run_cli(
            "override", "add", *where(kept), "--tokens", "2000", "--window", "day",
            "--for", "2h", "--reason", "launch", "--json",
        )  # fmt: skip
        assert (code, err) == (0, "")
        added = json.loads(out)
        store = RedisStore(kept["url"], prefix=kept["prefix"])
        figures = await anyio.to_thread.run_sync(store.read, "api")
        assert figures[None].window("day").limits.tokens == 7_000
        code, out, _ = await run_cli("override", "list", *where(kept), "--json")
        assert [o["id"] for o in json.loads(out)["overrides"]] == [added["id"]]
        code, out, _ = await run_cli("override", "remove", str(added["id"]), *where(kept))
        assert (code, out.strip()) == (0, f"override {added['id']} removed")
        figures = await anyio.to_thread.run_sync(store.read, "api")
        assert figures[None].window("day").limits.tokens == 5_000

    async def test_forecast_from_the_stream(self, kept: dict[str, Any]) -> None:
        code, out, err = await run_cli(
            "forecast", *where(kept), "--stream", kept["stream"], "--json"
        )
        assert (code, err) == (0, "")
        forecasts = json.loads(out)["forecasts"]
        day = [f for f in forecasts if f["tenant"] is None and f["period"] == "day"]
        assert [f["used"] for f in day] == [1_200]
        assert day[0]["linear_rate_per_hour"] > 0

    async def test_forecast_needs_one_log(self, kept: dict[str, Any]) -> None:
        code, _, err = await run_cli("forecast", *where(kept))
        assert code == 2
        assert "--log PATH or --stream NAME" in err
        code, _, err = await run_cli("forecast", "--store", "x.sqlite", "--stream", "s")
        assert code == 2
        assert "redis://" in err

    async def test_watch(self, kept: dict[str, Any]) -> None:
        code, out, err = await run_cli("watch", *where(kept), "--interval", "0.1", "--count", "2")
        assert (code, err) == (0, "")
        assert "budget 'api'" in out

    async def test_several_budgets_and_an_unknown_one(self, kept: dict[str, Any]) -> None:
        store = RedisStore(kept["url"], prefix=kept["prefix"])
        async with treasurer.open_budget(name="other", tokens=5, store=store):
            pass
        code, _, err = await run_cli("status", *where(kept))
        assert code == 2
        assert "holds 2 budgets (api, other)" in err
        code, _, err = await run_cli("status", *where(kept), "--budget", "nope")
        assert code == 1
        assert "no budget named 'nope'" in " ".join(err.split())


class TestDashboard:
    async def test_a_redis_kept_budget(self, kept: dict[str, Any]) -> None:
        store = RedisStore(kept["url"], prefix=kept["prefix"])
        source = await anyio.to_thread.run_sync(
            lambda: treasurer.dashboard.StoreSource(store, budget="api")
        )
        status = await source.status()
        assert status["budget"] == "api"
        scopes = {scope["tenant"]: scope for scope in status["scopes"]}  # type: ignore[attr-defined]
        assert set(scopes) == {None, "acme"}
        day = [p for p in scopes[None]["periods"] if p["period"] == "day"]
        assert day[0]["used"] == 1_200
