"""The usage log in a SQLite file: every settled call written without holding up the
budget, failures and losses counted, read back by reports and the command line."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

import treasurer
import treasurer.reports
import treasurer.sync
from sqlite_locks import WriteLock
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)


async def spend(budget: treasurer.Budget) -> None:
    """A few calls with every kind of metadata, in a tenant and a child too."""
    async with budget.reserve(tokens=100, model="gpt-4o", request_id="r1", tags={"team": "a"}) as r:
        r.commit(input_tokens=30, output_tokens=20, usd=Decimal("0.000123"))
    await budget.tenant("acme").record(tokens=40, model="gpt-4o-mini", session_id="s1")
    async with budget.child(tokens=500, name="agent") as child:
        await child.record(tokens=7, usd=0.5, model="claude", tags={"team": "b"})
    await budget.charge(tokens=3)


class TestWriting:
    async def test_every_settled_call_is_written_as_it_happened(self, tmp_path: Path) -> None:
        path = tmp_path / "usage.sqlite"
        log = treasurer.SqliteUsageLog(path)
        seen: list[treasurer.UsageRecorded] = []
        async with treasurer.open_budget(
            name="api", usage_log=log, on_event=seen.append, clock=ManualClock(T0)
        ) as budget:
            await spend(budget)
        records = treasurer.reports.read(path)
        expected = [event for event in seen if isinstance(event, treasurer.UsageRecorded)]
        assert len(expected) == 4
        assert records == expected
        assert [(r.tenant, r.child) for r in records][1:3] == [("acme", None), (None, "agent")]
        assert records[0].usage.usd == Decimal("0.000123")
        assert log.statistics() == treasurer.UsageLogStatistics(4, 0, 0)

    async def test_usage_group_by_reads_the_file_with_the_calls_just_made(
        self, tmp_path: Path
    ) -> None:
        log = treasurer.SqliteUsageLog(tmp_path / "usage.sqlite")
        async with treasurer.open_budget(name="api", usage_log=log) as budget:
            await spend(budget)
            report = await budget.usage(group_by="model")
            assert report.groups_complete
            assert {model: usage.tokens for model, usage in report.groups.items()} == {
                "gpt-4o": 50,
                "gpt-4o-mini": 40,
                "claude": 7,
                None: 3,
            }
            by_team = await budget.usage(group_by="tag:team")
            assert {team: usage.tokens for team, usage in by_team.groups.items()} == {
                "a": 50,
                "b": 7,
                None: 43,
            }
            acme = await budget.tenant("acme").usage(group_by="model")
            assert {m: u.tokens for m, u in acme.groups.items()} == {"gpt-4o-mini": 40}
            with pytest.raises(treasurer.InvalidOption, match="group_by"):
                await budget.usage(group_by="colour")

    async def test_many_tasks_lose_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "usage.sqlite"
        log = treasurer.SqliteUsageLog(path)
        async with treasurer.open_budget(name="api", usage_log=log) as budget:

            async def calls(n: int) -> None:
                for _ in range(40):
                    async with budget.reserve(tokens=10, model=f"m{n % 3}") as r:
                        r.commit(tokens=n % 7)

            async with anyio.create_task_group() as tg:
                for n in range(50):
                    tg.start_soon(calls, n)
            total = budget.snapshot().tokens_used
        stats = log.statistics()
        assert (stats.written, stats.pending, stats.dropped) == (2_000, 0, 0)
        records = treasurer.reports.read(path)
        assert len(records) == 2_000
        assert sum(r.usage.tokens for r in records) == total

    async def test_a_locked_file_holds_records_back_then_writes_them(self, tmp_path: Path) -> None:
        """While the file is locked the writes fail (counted); the budget's calls go on;
        past ``buffer`` records waiting, new ones are dropped (counted); once the lock
        is gone, what was kept is written."""
        path = tmp_path / "usage.sqlite"
        log = treasurer.SqliteUsageLog(path, buffer=5, timeout=0.05)
        async with treasurer.open_budget(name="api", usage_log=log) as budget:
            await budget.record(tokens=1)
            await written(log, 1)
            with WriteLock(path):
                for _ in range(8):
                    await budget.record(tokens=1)  # never held up by the log
                await until(lambda: log.statistics().failures > 0)
                stats = log.statistics()
                assert (stats.pending, stats.dropped) == (5, 3)
                assert "locked" in (stats.last_error or "")
            await written(log, 6)
            report = await budget.usage(group_by="model")
            assert not report.groups_complete  # records of the lifetime were dropped
        stats = log.statistics()
        assert (stats.written, stats.dropped) == (6, 3)
        assert len(treasurer.reports.read(path)) == 6

    async def test_records_that_cannot_be_written_at_close_are_counted(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "usage.sqlite"
        log = treasurer.SqliteUsageLog(path, timeout=0.05)
        await make(path)
        with WriteLock(path):
            async with treasurer.open_budget(name="api", usage_log=log) as budget:
                await budget.record(tokens=1)
                await budget.record(tokens=2)
        stats = log.statistics()
        assert (stats.written, stats.pending, stats.dropped) == (0, 0, 2)
        assert stats.failures >= 1

    async def test_a_budget_cancelled_from_outside_still_writes_its_records(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "usage.sqlite"
        with anyio.CancelScope() as outer:
            async with treasurer.open_budget(
                name="api", usage_log=treasurer.SqliteUsageLog(path)
            ) as budget:
                for _ in range(20):
                    await budget.record(tokens=1)
                outer.cancel()
                await anyio.sleep_forever()
        assert len(treasurer.reports.read(path)) == 20


async def make(path: Path) -> None:
    """A usage log file with its tables, as a budget would leave it."""
    async with treasurer.open_budget(usage_log=treasurer.SqliteUsageLog(path)):
        pass


async def written(log: treasurer.SqliteUsageLog, count: int) -> None:
    await until(lambda: log.statistics().written >= count)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (10 s at most) until ``condition()``: the log writes in a worker thread,
    and tells nobody when, so the test looks every few milliseconds."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.005)


class TestFiles:
    async def test_a_path_it_cannot_use_fails_the_open(self, tmp_path: Path) -> None:
        with pytest.raises(treasurer.StoreUnavailable):
            async with treasurer.open_budget(
                usage_log=treasurer.SqliteUsageLog(tmp_path / "missing" / "usage.sqlite")
            ):
                pass  # pragma: no cover
        other = tmp_path / "other.sqlite"
        with sqlite3.connect(other) as db:
            db.execute("CREATE TABLE foo (x)")
        with pytest.raises(treasurer.InvalidOption, match="another program"):
            async with treasurer.open_budget(usage_log=treasurer.SqliteUsageLog(other)):
                pass  # pragma: no cover

    async def test_it_shares_a_file_with_the_sqlite_store(self, tmp_path: Path) -> None:
        path = tmp_path / "treasurer.sqlite"
        for _ in range(2):
            async with treasurer.open_budget(
                name="api",
                tokens=100,
                store=treasurer.SqliteStore(path),
                usage_log=treasurer.SqliteUsageLog(path),
            ) as budget:
                await budget.record(tokens=10, model="m")
                report = await budget.usage(group_by="model")
        assert budget.snapshot().tokens_used == 20
        assert report.groups["m"].tokens == 20  # the lifetime spans both runs

    async def test_one_log_serves_one_open_budget(self, tmp_path: Path) -> None:
        log = treasurer.SqliteUsageLog(tmp_path / "usage.sqlite")
        async with treasurer.open_budget(name="a", usage_log=log):
            with pytest.raises(treasurer.InvalidOption, match="one open budget"):
                async with treasurer.open_budget(name="b", usage_log=log):
                    pass  # pragma: no cover
        async with treasurer.open_budget(name="b", usage_log=log) as budget:  # free again
            await budget.record(tokens=1)
        assert log.statistics().written == 1

    def test_bad_arguments(self, tmp_path: Path) -> None:
        for bad in ({"buffer": 0}, {"buffer": True}, {"timeout": 0}, {"timeout": "1"}):
            with pytest.raises(treasurer.InvalidOption):
                treasurer.SqliteUsageLog(tmp_path / "u.sqlite", **bad)  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption):
            treasurer.SqliteUsageLog(5)  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption, match="usage log"):
            treasurer.sync.open_budget(usage_log=object())  # type: ignore[typeddict-item]

    def test_reading_what_is_not_a_usage_log(self, tmp_path: Path) -> None:
        with pytest.raises(treasurer.StoreUnavailable, match="no usage log"):
            treasurer.reports.read(tmp_path / "missing.sqlite")
        other = tmp_path / "other.sqlite"
        with sqlite3.connect(other) as db:
            db.execute("CREATE TABLE foo (x)")
        with pytest.raises(treasurer.InvalidOption, match="not a treasurer usage log"):
            treasurer.reports.read(other)
        garbage = tmp_path / "garbage.sqlite"
        garbage.write_bytes(b"not sqlite" * 100)
        with pytest.raises(treasurer.StoreUnavailable):
            treasurer.reports.read(garbage)


def records() -> list[treasurer.UsageRecorded]:
    def one(hours: int, model: str | None, tokens: int, usd: int, **extra: object) -> object:
        return treasurer.UsageRecorded(
            budget="api",
            at=T0 + timedelta(hours=hours),
            amount=(tokens, 0, tokens, usd, 1),
            source="record",
            model=model,
            **extra,  # type: ignore[arg-type]
        )

    return [
        one(0, "gpt-4o", 100, 2_000_000, tenant="acme", tags={"team": "a"}),  # type: ignore[list-item]
        one(1, "gpt-4o", 50, 1_000_000),  # type: ignore[list-item]
        one(25, "gpt-4o-mini", 400, 500_000, tags={"team": "a"}),  # type: ignore[list-item]
        one(26, None, 5, 0),  # type: ignore[list-item]
    ]


class TestReports:
    def test_rows_by_model_the_most_expensive_first(self) -> None:
        rows = treasurer.reports.usage_report(records())
        assert [(r.group, r.calls, r.tokens, r.usd) for r in rows] == [
            (("gpt-4o",), 2, 150, Decimal("0.003")),
            (("gpt-4o-mini",), 1, 400, Decimal("0.0005")),
            ((None,), 1, 5, Decimal("0")),
        ]

    def test_rows_by_time_and_tag_within_a_range(self) -> None:
        rows = treasurer.reports.usage_report(
            records(), group_by=("day", "tag:team"), since=T0 + timedelta(hours=1)
        )
        assert [(r.group, r.tokens) for r in rows] == [
            (("2026-12-01", None), 50),
            (("2026-12-02", "a"), 400),
            (("2026-12-02", None), 5),
        ]
        by_month = treasurer.reports.usage_report(
            records(), group_by="month", until=T0 + timedelta(hours=25)
        )
        assert [(r.group, r.calls) for r in by_month] == [(("2026-12",), 2)]
        hours = treasurer.reports.usage_report(records(), group_by=["hour", "tenant"])
        assert hours[0].group == ("2026-12-01T09:00Z", "acme")

    def test_csv_and_json(self) -> None:
        import io

        rows = treasurer.reports.usage_report(records(), group_by=("model", "source"))
        out = io.StringIO()
        treasurer.reports.write_csv(rows, out, ("model", "source"))
        lines = out.getvalue().splitlines()
        assert lines[0] == "model,source,calls,input_tokens,output_tokens,tokens,usd,requests"
        assert lines[1] == "gpt-4o,record,2,150,0,150,0.003,2"
        assert lines[3].startswith(",record,1,")  # no model: an empty cell
        items = json.loads(treasurer.reports.to_json(rows, ("model", "source")))
        assert items[0] == {
            "model": "gpt-4o",
            "source": "record",
            "calls": 2,
            "input_tokens": 150,
            "output_tokens": 0,
            "tokens": 150,
            "usd": "0.003",
            "requests": 2,
        }

    def test_unknown_keys_are_refused(self) -> None:
        for bad in ("colour", "tag:", 5):
            with pytest.raises(treasurer.InvalidOption, match="group_by"):
                treasurer.reports.usage_report(records(), group_by=(bad,))  # type: ignore[arg-type]


async def run_cli(*args: str) -> tuple[int, str, str]:
    done = await anyio.run_process([sys.executable, "-m", "treasurer", *args], check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


class TestCommandLine:
    """``treasurer report`` run as a program, on a log written by a budget."""

    @pytest.fixture
    async def log_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "usage.sqlite"
        async with treasurer.open_budget(
            name="api", usage_log=treasurer.SqliteUsageLog(path), clock=ManualClock(T0)
        ) as budget:
            await spend(budget)
        async with treasurer.open_budget(
            name="other", usage_log=treasurer.SqliteUsageLog(path), clock=ManualClock(T0)
        ) as budget:
            await budget.record(tokens=1_000, model="gpt-4o")
        return path

    async def test_report_as_csv(self, log_file: Path) -> None:
        code, out, err = await run_cli("report", "--log", str(log_file), "--csv")
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == "model,calls,input_tokens,output_tokens,tokens,usd,requests"
        assert lines[1:] == [
            "claude,1,0,0,7,0.5,1",
            "gpt-4o,2,30,20,1050,0.000123,2",
            "gpt-4o-mini,1,0,0,40,0,1",
            ",1,0,0,3,0,1",
        ]

    async def test_report_as_json_for_one_budget_grouped_by_tenant(self, log_file: Path) -> None:
        code, out, _ = await run_cli(
            "report", "--log", str(log_file), "--json", "--budget", "api", "-g", "tenant"
        )
        assert code == 0
        items = {item["tenant"]: item["tokens"] for item in json.loads(out)}
        assert items == {None: 60, "acme": 40}

    async def test_report_as_a_table_within_a_range(self, log_file: Path) -> None:
        code, out, _ = await run_cli(
            "report", "--log", str(log_file), "--since", "2026-12-01T08:00", "-g", "day"
        )
        assert code == 0
        assert "2026-12-01" in out
        assert "1100" in out
        code, out, _ = await run_cli("report", "--log", str(log_file), "--until", "2026-12-01")
        assert code == 0
        assert "gpt-4o" not in out

    async def test_errors_and_exit_codes(self, log_file: Path, tmp_path: Path) -> None:
        code, _, err = await run_cli("report", "--log", str(tmp_path / "missing.sqlite"))
        assert code == 1
        assert "no usage log" in err
        other = tmp_path / "other.sqlite"
        with sqlite3.connect(other) as db:
            db.execute("CREATE TABLE foo (x)")
        code, _, err = await run_cli("report", "--log", str(other))
        assert code == 1
        assert "not a treasurer usage log" in err
        code, _, err = await run_cli("report", "--log", str(log_file), "--csv", "--json")
        assert code == 2
        assert "not both" in err
        code, _, err = await run_cli("report", "--log", str(log_file), "--since", "noon")
        assert code == 2
        assert "ISO 8601" in err
        code, _, err = await run_cli("report", "--log", str(log_file), "-g", "colour")
        assert code == 1
        assert "group_by" in err
        code, _, err = await run_cli("report")
        assert code == 2
        assert "--log" in err

    async def test_help_and_the_console_script(self) -> None:
        code, out, _ = await run_cli("--help")
        assert code == 0
        assert "report" in out
        code, out, _ = await run_cli("report", "--help")
        assert code == 0
        assert "--group-by" in out
        assert "--csv" in out
        script = Path(sys.executable).parent / "treasurer"
        done = await anyio.run_process([str(script), "--help"])
        assert b"report" in done.stdout


class TestCommandLineInProcess:
    """The same commands through typer's test runner, in this process (what the
    coverage of the command's code is measured on)."""

    @pytest.fixture
    def log_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "usage.sqlite"

        async def fill() -> None:
            async with treasurer.open_budget(
                name="api", usage_log=treasurer.SqliteUsageLog(path), clock=ManualClock(T0)
            ) as budget:
                await spend(budget)

        anyio.run(fill)
        return path

    def invoke(self, *args: str) -> tuple[int, str]:
        from typer.testing import CliRunner

        from treasurer._ops.cli import app

        result = CliRunner().invoke(app, list(args))
        return result.exit_code, result.output

    def test_every_output(self, log_file: Path) -> None:
        code, out = self.invoke("report", "--log", str(log_file), "--csv")
        assert code == 0
        assert out.splitlines()[0].startswith("model,calls,")
        code, out = self.invoke("report", "--log", str(log_file), "--json", "-g", "source")
        assert code == 0
        assert {item["source"] for item in json.loads(out)} == {
            "commit",
            "record",
            "charge",
        }
        code, out = self.invoke("report", "--log", str(log_file), "--since", "2026-12-01T10:00Z")
        assert code == 0
        assert "gpt-4o" not in out
        code, out = self.invoke("report", "--log", str(log_file), "--until", "2026-12-02")
        assert code == 0
        assert "gpt-4o" in out
        assert "0.000123" in out

    def test_errors(self, log_file: Path, tmp_path: Path) -> None:
        code, out = self.invoke("report", "--log", str(tmp_path / "missing.sqlite"))
        assert code == 1
        assert "no usage log" in out
        assert self.invoke("report", "--log", str(log_file), "--csv", "--json")[0] == 2
        assert self.invoke("report", "--log", str(log_file), "--until", "tomorrow")[0] == 2

    def test_python_dash_m(self, log_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import runpy

        monkeypatch.setattr(sys, "argv", ["treasurer", "report", "--log", str(log_file)])
        with pytest.raises(SystemExit) as done:
            runpy.run_module("treasurer", run_name="__main__")
        assert done.value.code == 0


async def test_the_memory_log_counts_what_it_pushed_out() -> None:
    log = treasurer.MemoryUsageLog(capacity=2)
    async with treasurer.open_budget(usage_log=log) as budget:
        for _ in range(3):
            await budget.record(tokens=1)
        report = await budget.usage(group_by="model")
    assert log.statistics() == treasurer.UsageLogStatistics(written=2, pending=0, dropped=1)
    assert not report.groups_complete
    assert len(log) == 2
