"""The dashboard, served by hypercorn on 127.0.0.1 on the test's own event loop,
read as JSON with httpx and as a page in headless Chromium (Debian's package; the
nox session installs it), whose figures are checked against the budget's."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import treasurer
import treasurer.dashboard
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-headless-shell")


async def chromium(url: str, screenshot: Path) -> str:
    """The page's DOM after its script ran, and a screenshot of it."""
    assert CHROMIUM is not None, "the tests need Debian's chromium (nox -s tests installs it)"
    with tempfile.TemporaryDirectory() as profile:
        done = await anyio.run_process(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--window-size=1400,900",
                f"--screenshot={screenshot}",
                "--dump-dom",
                url,
            ],
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode()


class Cells(HTMLParser):
    """The text of each cell of the page's period rows and model rows, by key."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, ...], list[str]] = {}
        self.classes: dict[tuple[str, ...], list[str]] = {}
        self._scope = ""
        self._row: tuple[str, ...] | None = None
        self._cell: list[str] | None = None
        self.loaded = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.loaded = found.get("data-loaded") == "yes"
        if tag == "section" and "data-tenant" in found:
            self._scope = found["data-tenant"]
        if tag == "tr" and "data-period" in found:
            self._row = (self._scope, found["data-period"], found["data-axis"])
        elif tag == "tr" and "data-model" in found:
            self._row = ("model", found["data-model"])
        if tag == "td" and self._row is not None:
            self._cell = []
            self.classes.setdefault(self._row, []).append(found.get("class", ""))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self.rows.setdefault(self._row, []).append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr":
            self._row = None


def parse(dom: str) -> Cells:
    cells = Cells()
    cells.feed(dom)
    return cells


@pytest.fixture
async def live() -> AsyncIterator[tuple[treasurer.Budget, ManualClock, str]]:
    """A budget with a tenant, windows and forecasts, 20 minutes of spend, a refusal,
    and its dashboard."""
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20))
    async with (
        treasurer.open_budget(
            name="api",
            usd=20,
            windows=[
                treasurer.Window.rolling(timedelta(hours=3), name="3h", tokens=40_000),
                treasurer.Window.hour(usd=2),
            ],
            tenant_defaults=treasurer.TenantCaps(tokens=20_000),
            forecast=True,
            thresholds=(50, 75, 100),
            clock=clock,
        ) as budget,
        anyio.create_task_group() as tasks,
    ):
        url = await tasks.start(
            lambda task_status: treasurer.dashboard.serve(budget, port=0, task_status=task_status)
        )
        for _ in range(20):
            clock.advance(minutes=1)
            await budget.tenant("acme").record(tokens=900, usd=0.06, model="gpt-4o")
            await budget.record(tokens=300, usd=0.01, model="gpt-4o-mini")
        assert not await budget.tenant("acme").consume(5_000)
        yield budget, clock, url
        tasks.cancel_scope.cancel()


class TestLive:
    async def test_the_status_is_the_budgets(
        self, live: tuple[treasurer.Budget, ManualClock, str]
    ) -> None:
        budget, _, url = live
        async with httpx.AsyncClient() as client:
            response = await client.get(url + "api/status")
        assert response.status_code == 200
        data = response.json()
        assert data["budget"] == "api"
        scopes = {s["tenant"]: s for s in data["scopes"]}
        assert set(scopes) == {None, "acme"}
        periods = {(p["period"], p["axis"]): p for p in scopes[None]["periods"]}
        assert set(periods) == {("lifetime", "usd"), ("3h", "tokens"), ("hour", "usd")}
        window = budget.snapshot().window("3h")
        assert periods["3h", "tokens"]["used"] == window.used.tokens == 24_000
        assert periods["3h", "tokens"]["limit"] == 40_000
        assert periods["3h", "tokens"]["forecast"]["runs_out"] is True
        assert periods["lifetime", "usd"]["used"] == pytest.approx(1.4)
        acme = scopes["acme"]["periods"]
        assert [(p["period"], p["used"], p["limit"]) for p in acme] == [
            ("lifetime", 18_000, 20_000)
        ]
        assert data["refusals"]["count"] == 1
        assert "requested 5000 but only 2000 available" in data["refusals"]["recent"][0]["message"]
        messages = [a["message"] for a in data["alerts"]]
        assert any("tenant 'acme': tokens usage reached 75%" in m for m in messages)
        assert any("at this rate the tokens cap per 3h (40000) runs out" in m for m in messages)
        assert data["models"] == [
            {"model": "gpt-4o", "tokens": 18_000, "usd": pytest.approx(1.2)},
            {"model": "gpt-4o-mini", "tokens": 6_000, "usd": pytest.approx(0.2)},
        ]

    async def test_the_page_in_chromium_shows_the_budgets_figures(
        self, live: tuple[treasurer.Budget, ManualClock, str], tmp_path: Path
    ) -> None:
        budget, _, url = live
        screenshot = tmp_path / "dashboard.png"
        cells = parse(await chromium(url, screenshot))
        assert cells.loaded
        snapshot = budget.snapshot()
        day = cells.rows["", "3h", "tokens"]
        assert day[:4] == ["3h", "tokens", str(snapshot.window("3h").used.tokens), "40000"]
        assert "out" in cells.classes["", "3h", "tokens"][6]  # runs out before it resets
        assert cells.rows["", "lifetime", "usd"][2:4] == [str(snapshot.usd_used), "20"]
        assert cells.rows["acme", "lifetime", "tokens"][2:4] == ["18000", "20000"]
        assert cells.rows["model", "gpt-4o"] == ["gpt-4o", "18000", "1.2"]
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert screenshot.stat().st_size > 10_000

    async def test_a_budget_without_forecasts_or_usage_log(self) -> None:
        async with (
            treasurer.open_budget(name="plain", tokens=100) as budget,
            anyio.create_task_group() as tasks,
        ):
            url = await tasks.start(
                lambda task_status: treasurer.dashboard.serve(
                    budget, port=0, refresh=0.5, task_status=task_status
                )
            )
            await anyio.wait_all_tasks_blocked()
            await budget.record(tokens=10, model="m")
            await anyio.wait_all_tasks_blocked()
            async with httpx.AsyncClient() as client:
                page = (await client.get(url)).text
                data = (await client.get(url + "api/status")).json()
            tasks.cancel_scope.cancel()
        assert "const REFRESH_MS = 500;" in page
        (scope,) = data["scopes"]
        assert scope["periods"][0]["forecast"] is None
        assert data["models"] == [{"model": "m", "tokens": 10, "usd": 0.0}]
        assert data["refusals"] == {"count": 0, "recent": []}

    async def test_models_from_the_usage_log_cover_the_budgets_life(self) -> None:
        """With a usage log, top models include what was spent before the dashboard
        started."""
        log = treasurer.MemoryUsageLog()
        async with treasurer.open_budget(name="logged", usage_log=log) as budget:
            await budget.record(tokens=7, usd=0.5, model="early")
            async with anyio.create_task_group() as tasks:
                url = await tasks.start(
                    lambda task_status: treasurer.dashboard.serve(
                        budget, port=0, task_status=task_status
                    )
                )
                await budget.record(tokens=3, model="late")
                async with httpx.AsyncClient() as client:
                    data = (await client.get(url + "api/status")).json()
                tasks.cancel_scope.cancel()
        assert data["models"] == [
            {"model": "early", "tokens": 7, "usd": 0.5},
            {"model": "late", "tokens": 3, "usd": 0.0},
        ]

    async def test_the_status_includes_events_not_yet_read(self) -> None:
        """A status built right after a call counts that call's events, even before
        the source's task read them; events it does not show are passed over."""
        async with treasurer.open_budget(name="b", tokens=10) as budget:
            source = treasurer.dashboard.LiveSource(budget)
            before = await source.status()  # not following the budget yet
            async with anyio.create_task_group() as tasks:
                await tasks.start(source.run)
                async with budget.reserve(tokens=2, model="x") as reservation:
                    reservation.commit(tokens=2)
                assert not await budget.consume(9)
                data = await source.status()
                tasks.cancel_scope.cancel()
        assert before["models"] == []
        assert data["models"] == [{"model": "x", "tokens": 2, "usd": 0.0}]
        assert data["refusals"]["count"] == 1  # type: ignore[index]

    async def test_a_usage_log_it_cannot_read_leaves_the_rest(self, tmp_path: Path) -> None:
        """The log's file is gone: top models are what the dashboard sees from then
        on, and the figures are served as usual."""
        path = tmp_path / "usage.sqlite"
        log = treasurer.SqliteUsageLog(path)
        async with treasurer.open_budget(name="lost", usage_log=log) as budget:
            path.unlink()
            source = treasurer.dashboard.LiveSource(budget)
            async with anyio.create_task_group() as tasks:
                await tasks.start(source.run)
                await budget.record(tokens=4, model="m")
                data = await source.status()
                tasks.cancel_scope.cancel()
        assert data["models"] == [{"model": "m", "tokens": 4, "usd": 0.0}]

    async def test_bad_arguments(self) -> None:
        with pytest.raises(treasurer.InvalidOption, match=r"treasurer\.Budget"):
            treasurer.dashboard.LiveSource(object())  # type: ignore[arg-type]
        async with treasurer.open_budget(tokens=1) as closed:
            pass
        port = socket.create_server(("127.0.0.1", 0))
        number = port.getsockname()[1]
        port.close()
        with pytest.raises(treasurer.BudgetClosed):  # itself, not in a group
            await treasurer.dashboard.serve(closed, port=number)
        socket.create_server(("127.0.0.1", number)).close()  # the port was let go
        async with treasurer.open_budget(tokens=1) as budget:
            with pytest.raises(treasurer.InvalidOption, match="refresh"):
                await treasurer.dashboard.serve(budget, port=0, refresh=0)


@pytest.fixture
async def stored(tmp_path: Path) -> tuple[Path, Path]:
    """A budget kept in a SQLite store with its usage log, 30 minutes of spend."""
    store, log = tmp_path / "store.sqlite", tmp_path / "usage.sqlite"
    clock = ManualClock(datetime.now(UTC) - timedelta(minutes=30))
    async with treasurer.open_budget(
        name="api",
        tokens=100_000,
        windows=[treasurer.Window.rolling(timedelta(hours=2), name="2h", tokens=5_000)],
        thresholds=(50, 100),
        store=treasurer.SqliteStore(store),
        usage_log=treasurer.SqliteUsageLog(log),
        clock=clock,
    ) as budget:
        for _ in range(30):
            clock.advance(minutes=1)
            await budget.record(tokens=100, model="gpt-4o-mini")
    return store, log


class TestStored:
    async def test_a_stored_budget_and_its_log(self, stored: tuple[Path, Path]) -> None:
        store, log = stored
        async with anyio.create_task_group() as tasks:
            url = await tasks.start(
                lambda task_status: treasurer.dashboard.serve_store(
                    store, log=log, port=0, task_status=task_status
                )
            )
            async with httpx.AsyncClient() as client:
                data = (await client.get(url + "api/status")).json()
                store.unlink()
                gone = await client.get(url + "api/status")
            tasks.cancel_scope.cancel()
        (scope,) = data["scopes"]
        periods = {p["period"]: p for p in scope["periods"]}
        assert periods["2h"]["used"] == 3_000
        assert periods["2h"]["forecast"]["runs_out"] is True
        assert periods["2h"]["forecast"]["rate_per_hour"] == pytest.approx(6_000, rel=0.05)
        assert data["refusals"] == {"count": None, "recent": []}
        assert data["models"] == [{"model": "gpt-4o-mini", "tokens": 3_000, "usd": 0.0}]
        messages = [a["message"] for a in data["alerts"]]
        assert "budget 'api': tokens usage per 2h is past 50% of its cap (3000 of 5000)" in messages
        assert any("at this rate the tokens cap per 2h (5000) runs out" in m for m in messages)
        assert gone.status_code == 503
        assert "no SQLite store" in gone.json()["error"]

    async def test_without_a_log(self, stored: tuple[Path, Path]) -> None:
        store, _ = stored
        source = treasurer.dashboard.StoreSource(store, budget="api")
        data = await source.status()
        assert data["models"] == []
        assert data["scopes"][0]["periods"][0]["forecast"] is None  # type: ignore[index]

    async def test_a_file_of_several_budgets_needs_a_name(self, stored: tuple[Path, Path]) -> None:
        store, _ = stored
        async with treasurer.open_budget(name="other", store=treasurer.SqliteStore(store)):
            pass
        with pytest.raises(treasurer.InvalidOption, match="holds 2 budgets"):
            treasurer.dashboard.StoreSource(store)

    async def test_the_command_serves_until_ctrl_c(self, stored: tuple[Path, Path]) -> None:
        store, log = stored
        command = [sys.executable, "-m", "treasurer", "dashboard", "--store", str(store)]
        async with await anyio.open_process(
            [*command, "--log", str(log), "--port", "0"]
        ) as process:
            assert process.stdout is not None
            line = b""
            with anyio.fail_after(30):
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive(1)
            match = re.search(r"on (http://127\.0\.0\.1:\d+/)", line.decode())
            assert match is not None, line
            async with httpx.AsyncClient() as client:
                data = (await client.get(match[1] + "api/status")).json()
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                code = await process.wait()
        assert data["budget"] == "api"
        assert code == 0

    async def test_the_command_on_a_missing_store(self, tmp_path: Path) -> None:
        from typer.testing import CliRunner

        from treasurer._ops.cli import app

        def invoke(*args: str) -> Any:
            return CliRunner().invoke(app, ["dashboard", *args])

        result = await anyio.to_thread.run_sync(invoke, "--store", str(tmp_path / "none.sqlite"))
        assert result.exit_code == 1
        assert "no SQLite store" in result.stderr


def test_the_command_announces_its_address(capsys: pytest.CaptureFixture[str]) -> None:
    """What the command prints once the server listens (the Ctrl-C test above runs
    it in a process of its own)."""
    from treasurer._ops.dashboard import Announce

    Announce("treasurer dashboard on {} (Ctrl-C stops it)").started("http://127.0.0.1:1/")
    assert (
        capsys.readouterr().out == "treasurer dashboard on http://127.0.0.1:1/ (Ctrl-C stops it)\n"
    )


def test_a_port_in_use_exits_1(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from treasurer._ops.cli import app

    path = tmp_path / "store.sqlite"

    async def make() -> None:
        async with treasurer.open_budget(name="api", tokens=5, store=treasurer.SqliteStore(path)):
            pass

    anyio.run(make)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(app, ["dashboard", "--store", str(path), "--port", port])
    assert result.exit_code == 1
    assert "treasurer dashboard: [Errno 98] Address already in use" in result.stderr


def test_the_json_is_plain() -> None:
    """Figures are numbers and times ISO 8601 text, so the page needs no parsing."""
    from treasurer._ops.dashboard_sources import status

    snapshot = treasurer.Snapshot(
        caps=treasurer.Caps(usd=treasurer.Caps(usd=1).usd),
        calls=0,
        open_reservations=0,
        **{f"{a}_{k}": 0 for a in treasurer.AXES for k in ("used", "reserved")},  # type: ignore[arg-type]
        **{f"{a}_remaining": None for a in treasurer.AXES},  # type: ignore[arg-type]
        limits=treasurer.Caps(usd=1),
    )
    now = datetime(2026, 12, 4, tzinfo=UTC)
    data = status("b", {None: snapshot}, [], [], {"count": 0, "recent": []}, [], now)
    assert json.loads(json.dumps(data))["at"] == "2026-12-04T00:00:00+00:00"


def test_only_a_lone_error_is_unwrapped() -> None:
    from treasurer._ops.dashboard import _alone

    lone = KeyError("k")
    assert _alone(ExceptionGroup("a", [ExceptionGroup("b", [lone])])) is lone
    assert _alone(ExceptionGroup("two", [KeyError("x"), ValueError("y")])) is None
