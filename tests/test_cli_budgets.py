"""``treasurer override``, ``forecast`` and ``watch`` on a budget kept in a SQLite
store, run as a user runs them (``python -m treasurer`` in a process of its own),
and ``SqliteStore.options()``, which they open the budget with."""

from __future__ import annotations

import _thread
import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

import treasurer
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

OPTIONS: treasurer.BudgetOptions = {
    "name": "api",
    "tokens": 10_000,
    "usd": Decimal("2.5"),
    "per_request": {"tokens": 4_000},
    "windows": [
        treasurer.Window.day(tokens=5_000),
        treasurer.Window.hour(usd=1, tz="Europe/Paris"),
    ],
    "thresholds": (80, 100),
    "reservation_ttl": timedelta(minutes=3),
    "tenant_defaults": treasurer.TenantCaps(
        tokens=1_000, windows=[treasurer.Window.hour(tokens=300)]
    ),
    "tenants": {"vip": treasurer.TenantCaps(tokens=5_000, per_request={"usd": 1})},
}


async def run_cli(*args: str) -> tuple[int, str, str]:
    """The command in this process (in a worker thread: a command that opens the
    budget blocks), so coverage sees it: exit code, stdout, stderr."""
    from typer.testing import CliRunner

    from treasurer._ops.cli import app

    def invoke() -> tuple[int, str, str]:
        result = CliRunner().invoke(app, list(args))
        return result.exit_code, result.stdout, result.stderr

    return await anyio.to_thread.run_sync(invoke)


async def run_process(*args: str) -> tuple[int, str, str]:
    """The command as a user runs it, in a process of its own."""
    done = await anyio.run_process([sys.executable, "-m", "treasurer", *args], check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
async def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite"
    async with treasurer.open_budget(store=treasurer.SqliteStore(path), **OPTIONS) as budget:
        await budget.record(tokens=1_000, usd=1)
        await budget.tenant("acme").record(tokens=200)
    return path


class TestStoredOptions:
    async def test_the_stored_configuration_opens_the_budget_as_it_is(
        self, store_file: Path
    ) -> None:
        """The keywords give back every setting, so the budget opens without a
        reconfiguration, with its usage."""
        store = treasurer.SqliteStore(store_file)
        options = store.options("api")
        assert options["store"] is store
        assert (options["tokens"], options["usd"]) == (10_000, Decimal("2.5"))
        assert options["per_request"] == {"tokens": 4_000}
        assert list(options["windows"]) == OPTIONS["windows"]
        assert (options["thresholds"], options["reservation_ttl"]) == (
            (80, 100),
            timedelta(minutes=3),
        )
        assert options["tenant_defaults"] == OPTIONS["tenant_defaults"]
        assert options["tenants"] == OPTIONS["tenants"]
        async with treasurer.open_budget(**options) as budget:
            assert budget.snapshot().tokens_used == 1_200

    async def test_an_unknown_budget(self, store_file: Path) -> None:
        with pytest.raises(treasurer.InvalidOption, match="no budget named 'zz'"):
            treasurer.SqliteStore(store_file).options("zz")

    async def test_a_budget_with_no_caps(self, tmp_path: Path) -> None:
        store = treasurer.SqliteStore(tmp_path / "plain.sqlite")
        async with treasurer.open_budget(name="plain", store=store):
            pass
        options = store.options("plain")
        assert "per_request" not in options
        assert "tokens" not in options
        async with treasurer.open_budget(**options) as budget:
            assert budget.caps == treasurer.Caps()


class TestOverride:
    async def test_add_list_and_remove(self, store_file: Path) -> None:
        code, out, err = await run_process(
            "override", "add", "--store", str(store_file), "--tokens", "2000",
            "--window", "day", "--for", "2h", "--reason", "launch", "--by", "ops", "--json",
        )  # fmt: skip
        assert (code, err) == (0, "")
        added = json.loads(out)
        assert (added["window"], added["increase"], added["reason"]) == (
            "day",
            {"tokens": 2000},
            "launch",
        )
        expires = datetime.fromisoformat(added["expires_at"])
        assert timedelta(minutes=119) < expires - datetime.now(UTC) <= timedelta(hours=2)
        code, out, _ = await run_cli(
            "override", "add", "--store", str(store_file), "--tenant", "acme",
            "--tokens", "500", "--until", (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        )  # fmt: skip
        assert code == 0
        assert "tenant 'acme': lifetime tokens+500 until" in out
        async with treasurer.open_budget(**treasurer.SqliteStore(store_file).options("api")) as b:
            assert b.snapshot().window("day").limits.tokens == 7_000
            assert (await b.tenant("acme").refresh()).limits.tokens == 1_500
        code, out, _ = await run_cli("override", "list", "--store", str(store_file), "--json")
        listed = json.loads(out)["overrides"]
        assert [(o["id"], o["tenant"]) for o in listed] == [
            (added["id"], None),
            (listed[1]["id"], "acme"),
        ]
        code, out, _ = await run_cli("override", "list", "--store", str(store_file))
        assert code == 0
        assert "launch" in out
        for override in listed:
            code, out, _ = await run_cli(
                "override", "remove", str(override["id"]), "--store", str(store_file)
            )
            assert (code, out.strip()) == (0, f"override {override['id']} removed")
        code, out, _ = await run_cli("override", "list", "--store", str(store_file), "--json")
        assert json.loads(out)["overrides"] == []
        figures = treasurer.SqliteStore(store_file).read("api")
        assert figures[None].window("day").limits.tokens == 5_000

    async def test_in_this_process_with_json_and_a_budget_named(self, store_file: Path) -> None:
        code, out, _ = await run_cli(
            "override", "add", "--store", str(store_file), "--budget", "api",
            "--usd", "0.75", "--for", "1d", "--json",
        )  # fmt: skip
        assert code == 0
        assert json.loads(out)["increase"] == {"usd": "0.75"}
        figures = treasurer.SqliteStore(store_file).read("api")
        assert figures[None].limits.usd == Decimal("3.25")

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--tokens", "5"], "give --for or --until"),
            (["--tokens", "5", "--for", "1h", "--until", "2030-01-01"], "give --for or --until"),
            (["--for", "1h"], "say what to raise"),
            (["--tokens", "5", "--for", "soon"], "is not a duration"),
            (["--tokens", "5", "--for", "0m"], "not a positive duration"),
            (["--usd", "lots", "--for", "1h"], "is not a number"),
            (["--tokens", "5", "--until", "tomorrow"], "not an ISO 8601 time"),
        ],
    )
    async def test_a_wrong_command_line_exits_2(
        self, store_file: Path, args: list[str], message: str
    ) -> None:
        code, _, err = await run_cli("override", "add", "--store", str(store_file), *args)
        assert code == 2
        assert message in " ".join(err.split()).replace("│", "")

    async def test_an_unknown_tenant_is_not_made(self, store_file: Path) -> None:
        """A mistyped tenant exits 1 and adds nothing; a tenant the configuration
        names may be raised before it spends."""
        code, _, err = await run_cli(
            "override", "add", "--store", str(store_file), "--tenant", "acmee",
            "--tokens", "5", "--for", "1h",
        )  # fmt: skip
        assert code == 1
        assert "budget 'api' has no tenant 'acmee' (it has: acme, vip)" in err
        assert "acmee" not in treasurer.SqliteStore(store_file).read("api")
        code, _, _ = await run_cli(
            "override", "add", "--store", str(store_file), "--tenant", "vip",
            "--tokens", "5", "--for", "1h",
        )  # fmt: skip
        assert code == 0

    async def test_what_the_budget_refuses_exits_1(self, store_file: Path) -> None:
        """An override of a window the budget lacks: the budget's own error, exit 1."""
        code, out, err = await run_cli(
            "override", "add", "--store", str(store_file), "--tokens", "5", "--for", "1h",
            "--window", "week",
        )  # fmt: skip
        assert (code, out) == (1, "")
        assert err.startswith("treasurer override add: ")
        code, _, err = await run_cli("override", "remove", "99", "--store", str(store_file))
        assert code == 1
        assert "budget 'api' has no override 99" in err
        code, _, err = await run_cli(
            "override", "list", "--store", str(store_file.with_name("none.sqlite"))
        )
        assert code == 1
        assert "no SQLite store" in err


class TestForecast:
    async def test_rates_and_exhaustion_from_the_usage_log(self, tmp_path: Path) -> None:
        """Spend of 100 tokens a minute over the last 30 minutes: 6,000 an hour; the
        rolling two hours' cap of 5,000 runs out before its oldest use leaves it."""
        store_path, log_path = tmp_path / "store.sqlite", tmp_path / "usage.sqlite"
        clock = ManualClock(datetime.now(UTC) - timedelta(minutes=30))
        async with treasurer.open_budget(
            name="api",
            windows=[
                treasurer.Window.day(tokens=1_000_000),
                treasurer.Window.rolling(timedelta(hours=2), name="2h", tokens=5_000),
            ],
            tenant_defaults=treasurer.TenantCaps(tokens=100_000),
            store=treasurer.SqliteStore(store_path),
            usage_log=treasurer.SqliteUsageLog(log_path),
            clock=clock,
        ) as budget:
            for _ in range(30):
                clock.advance(minutes=1)
                await budget.tenant("acme").record(tokens=100)
        code, out, err = await run_cli(
            "forecast", "--store", str(store_path), "--log", str(log_path), "--json"
        )
        assert (code, err) == (0, "")
        found = {(f["tenant"], f["period"]): f for f in json.loads(out)["forecasts"]}
        assert set(found) == {(None, "day"), (None, "2h"), ("acme", "lifetime")}
        for forecast in found.values():
            assert forecast["linear_rate_per_hour"] == pytest.approx(6000, rel=0.05)
        assert found[None, "day"]["runs_out"] is False
        assert found[None, "2h"]["runs_out"] is True  # 2,000 left: 20 minutes
        assert found["acme", "lifetime"]["runs_out"] is True
        for run in (run_cli, run_process):
            code, out, _ = await run(
                "forecast", "--store", str(store_path), "--log", str(log_path), "--span", "30m"
            )
            assert code == 0
            assert "forecast of budget 'api'" in out
            assert "OUT" in out  # the 2h window runs out first
            assert "reset" in out  # the day resets first

    async def test_a_missing_log_exits_1(self, store_file: Path) -> None:
        code, _, err = await run_cli(
            "forecast", "--store", str(store_file), "--log", str(store_file.with_name("x"))
        )
        assert code == 1
        assert "no usage log" in err


class TestWatch:
    async def test_refreshes_then_stops(self, store_file: Path) -> None:
        code, out, err = await run_cli(
            "watch", "--store", str(store_file), "--interval", "0.1", "--count", "2"
        )
        assert (code, err) == (0, "")
        assert "budget 'api': 0 open reservations" in out
        assert "tenant 'acme'" in out

    def test_ctrl_c_ends_it_quietly(self, tmp_path: Path) -> None:
        """Ctrl-C is how a watch ends: exit code 0, no traceback."""
        from typer.testing import CliRunner

        from treasurer._ops.cli import app

        path = tmp_path / "store.sqlite"

        async def make() -> None:
            async with treasurer.open_budget(
                name="api", tokens=5, store=treasurer.SqliteStore(path)
            ):
                pass

        anyio.run(make)
        timer = threading.Timer(0.5, _thread.interrupt_main)
        timer.start()
        try:
            result = CliRunner().invoke(app, ["watch", "--store", str(path), "--interval", "0.1"])
        finally:
            timer.cancel()
        assert result.exit_code == 0
        assert "budget 'api'" in result.stdout

    async def test_help_everywhere(self) -> None:
        for command in (["watch"], ["forecast"], ["override"], ["override", "add"]):
            code, out, _ = await run_process(*command, "--help")
            assert code == 0
            assert "Usage:" in out
