"""``treasurer status`` and ``SqliteStore.read()``: a stored budget's figures, read
without opening it."""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import treasurer
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)


async def stored(path: Path, clock: ManualClock) -> None:
    """Budget "api" with a day window, a tenant and an open reservation; budget "b"."""
    async with treasurer.open_budget(
        name="api",
        tokens=1_000,
        usd=5,
        windows=[treasurer.Window.day(tokens=500)],
        tenant_defaults=treasurer.TenantCaps(tokens=100),
        store=treasurer.SqliteStore(path),
        clock=clock,
    ) as budget:
        await budget.record(tokens=300, usd=1.25)
        await budget.tenant("acme").record(tokens=40)
        left_open = await budget.reserve(tokens=50, ttl=timedelta(hours=1)).__aenter__()
    left_open.release()  # only marks this handle settled: its budget has stopped


class TestRead:
    async def test_figures_as_of_now(self, tmp_path: Path) -> None:
        path = tmp_path / "store.sqlite"
        clock = ManualClock(T0)
        await stored(path, clock)
        store = treasurer.SqliteStore(path)
        assert store.names() == ["api"]
        figures = store.read("api", clock=clock)
        assert list(figures) == [None, "acme"]
        own = figures[None]
        assert (own.tokens_used, own.tokens_reserved, own.open_reservations) == (340, 50, 1)
        assert own.window("day").used.tokens == 340
        assert figures["acme"].tokens_remaining == 60
        clock.advance(timedelta(days=1))  # the day rolled, the reservation expired
        later = store.read("api", clock=clock)[None]
        assert (later.window("day").used.tokens, later.tokens_reserved) == (0, 0)
        assert later.tokens_used == 340
        assert store.read("api", clock=clock)[None] == later  # nothing was written

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(treasurer.StoreUnavailable, match="no SQLite store"):
            treasurer.SqliteStore(tmp_path / "missing.sqlite").names()
        other = tmp_path / "other.sqlite"
        with sqlite3.connect(other) as db:
            db.execute("CREATE TABLE foo (x)")
        with pytest.raises(treasurer.InvalidOption, match="no treasurer budgets"):
            treasurer.SqliteStore(other).names()


async def run_cli(*args: str) -> tuple[int, str, str]:
    done = await anyio.run_process([sys.executable, "-m", "treasurer", *args], check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


class TestStatus:
    @pytest.fixture
    async def store_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "store.sqlite"
        await stored(path, ManualClock(datetime.now(UTC)))
        return path

    async def test_a_table_per_scope(self, store_file: Path) -> None:
        code, out, err = await run_cli("status", "--store", str(store_file))
        assert (code, err) == (0, "")
        assert "budget 'api': 1 open reservations" in out
        assert "budget 'api', tenant 'acme'" in out
        assert "68%" in out  # 340 of the day's 500
        assert "UTC" in out  # when the day resets

    async def test_json(self, store_file: Path) -> None:
        code, out, _ = await run_cli("status", "--store", str(store_file), "--json")
        assert code == 0
        data = json.loads(out)
        assert data["budget"] == "api"
        own, acme = data["scopes"]
        assert (own["tenant"], own["open_reservations"], own["reserved"]["tokens"]) == (None, 1, 50)
        assert [(p["period"], p["axis"], p["used"], p["limit"]) for p in own["periods"]] == [
            ("lifetime", "tokens", 340, 1000),
            ("lifetime", "usd", "1.25", "5"),
            ("day", "tokens", 340, 500),
        ]
        assert acme["periods"][0]["remaining"] == 60

    async def test_several_budgets_and_errors(self, store_file: Path, tmp_path: Path) -> None:
        async with treasurer.open_budget(name="b", store=treasurer.SqliteStore(store_file)):
            pass
        code, _, err = await run_cli("status", "--store", str(store_file))
        assert code == 2
        assert "2 budgets (api, b)" in err
        code, out, _ = await run_cli("status", "--store", str(store_file), "--budget", "b")
        assert code == 0
        assert "0 open reservations" in out
        code, _, err = await run_cli("status", "--store", str(store_file), "--budget", "zz")
        assert code == 1
        assert "no budget named 'zz'" in err
        code, _, err = await run_cli("status", "--store", str(tmp_path / "missing.sqlite"))
        assert code == 1
        assert "no SQLite store" in err

    def test_in_process(self, tmp_path: Path) -> None:
        from typer.testing import CliRunner

        from treasurer._ops.cli import app

        path = tmp_path / "store.sqlite"
        anyio.run(stored, path, ManualClock(datetime.now(UTC)))
        result = CliRunner().invoke(app, ["status", "--store", str(path)])
        assert result.exit_code == 0
        assert "acme" in result.output
        result = CliRunner().invoke(app, ["status", "--store", str(path), "--json"])
        assert json.loads(result.output)["scopes"][1]["tenant"] == "acme"
        empty = tmp_path / "empty.sqlite"
        anyio.run(self._empty, empty)
        result = CliRunner().invoke(app, ["status", "--store", str(empty)])
        assert result.exit_code == 2
        assert "0 budgets (none)" in result.output
        result = CliRunner().invoke(app, ["status", "--store", str(tmp_path / "nope")])
        assert result.exit_code == 1

    @staticmethod
    async def _empty(path: Path) -> None:
        store = treasurer.SqliteStore(path)
        async with treasurer.open_budget(name="x", store=store):
            pass
        with sqlite3.connect(path) as db:
            db.execute("DELETE FROM treasurer_budgets")
