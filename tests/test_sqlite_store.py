"""The SQLite store: budgets that survive a restart and are shared by a host's
processes. (Its semantics are the conformance suite's: tests/conformance.)"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import treasurer
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)


class TestRestart:
    async def test_spend_and_reservations_survive_a_restart(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.sqlite"
        clock = ManualClock(T0)
        options = {"name": "api", "tokens": 1_000, "reservation_ttl": timedelta(minutes=5)}
        async with treasurer.open_budget(
            store=treasurer.SqliteStore(path), clock=clock, **options
        ) as budget:
            await budget.record(tokens=300, model="m")
            left_open = await budget.reserve(tokens=200).__aenter__()  # the process "ends"
        left_open.release()  # only marks this handle settled: its budget has stopped
        async with treasurer.open_budget(
            store=treasurer.SqliteStore(path), clock=clock, **options
        ) as budget:
            snap = budget.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved, snap.open_reservations) == (300, 200, 1)
            clock.advance(timedelta(minutes=6))  # past the reservation's deadline
            await budget.check()
            snap = budget.snapshot()
            assert (snap.tokens_used, snap.tokens_reserved, snap.open_reservations) == (300, 0, 0)

    async def test_a_killed_process_leaves_its_spend_and_its_reservation(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "budget.sqlite"
        program = textwrap.dedent(
            f"""
            import anyio, os, signal, treasurer
            from datetime import datetime, timedelta, UTC
            from treasurer.testing import ManualClock
            async def main():
                clock = ManualClock(datetime(2026, 12, 1, 9, tzinfo=UTC))
                async with treasurer.open_budget(
                    name="api", tokens=1_000, reservation_ttl=timedelta(minutes=5),
                    store=treasurer.SqliteStore({str(path)!r}), clock=clock,
                ) as budget:
                    await budget.record(tokens=300)
                    await budget.reserve(tokens=200).__aenter__()
                    os.kill(os.getpid(), signal.SIGKILL)
            anyio.run(main)
            """
        )
        done = await anyio.run_process([sys.executable, "-c", program], check=False)
        assert done.returncode == -signal.SIGKILL
        clock = ManualClock(T0)
        async with treasurer.open_budget(
            name="api",
            tokens=1_000,
            reservation_ttl=timedelta(minutes=5),
            store=treasurer.SqliteStore(path),
            clock=clock,
        ) as budget:
            assert budget.remaining == 500
            clock.advance(timedelta(minutes=5))
            await budget.check()
            assert budget.remaining == 700

    async def test_another_configuration_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.sqlite"
        async with treasurer.open_budget(name="api", tokens=10, store=treasurer.SqliteStore(path)):
            pass
        with pytest.raises(treasurer.InvalidOption, match="another configuration"):
            async with treasurer.open_budget(
                name="api", tokens=20, store=treasurer.SqliteStore(path)
            ):
                pass  # pragma: no cover


WORKER = """
import anyio, json, random, sys, treasurer
async def main(path, seed):
    spent = 0
    refused = 0
    async with treasurer.open_budget(
        name="shared", tokens=20_000, store=treasurer.SqliteStore(path, timeout=30)
    ) as budget:
        async def one(rng):
            nonlocal spent, refused
            for _ in range(5):
                estimate = rng.randint(10, 60)
                try:
                    async with budget.reserve(tokens=estimate) as r:
                        await anyio.lowlevel.checkpoint()
                        actual = rng.randint(0, estimate)
                        r.commit(tokens=actual)
                        spent += actual
                except treasurer.BudgetExceeded:
                    refused += 1
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, random.Random(seed * 1000 + i))
    print(json.dumps({"spent": spent, "refused": refused}))
anyio.run(main, sys.argv[1], int(sys.argv[2]), backend=sys.argv[3])
"""


class TestProcesses:
    @pytest.mark.parametrize("loop", ["asyncio", "trio"])
    def test_four_processes_share_one_budget(self, tmp_path: Path, loop: str) -> None:
        """4 processes x 100 tasks x 5 reservations on one file: never overspent,
        and the stored books equal what the processes say they committed."""
        path = tmp_path / "shared.sqlite"
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(path), str(seed), loop],
                stdout=subprocess.PIPE,
                text=True,
            )
            for seed in range(4)
        ]
        reports = []
        for worker in workers:
            out, _ = worker.communicate(timeout=300)
            assert worker.returncode == 0
            reports.append(json.loads(out))
        spent = sum(r["spent"] for r in reports)
        assert sum(r["refused"] for r in reports) > 0  # the cap was reached
        with sqlite3.connect(path) as db:
            (state,) = db.execute("SELECT state FROM treasurer_budgets").fetchone()
        root = next(s for s in json.loads(state)["scopes"] if s["path"] == [])
        tokens = 2  # the tokens axis
        assert root["used"][tokens] == spent
        assert root["used"][tokens] <= 20_000
        assert root["reserved"][tokens] == 0


class TestBadFiles:
    async def test_a_file_that_is_not_a_database(self, tmp_path: Path) -> None:
        path = tmp_path / "garbage.sqlite"
        path.write_bytes(b"this is not sqlite" * 100)
        with pytest.raises(treasurer.StoreUnavailable, match="not a database"):
            async with treasurer.open_budget(tokens=10, store=treasurer.SqliteStore(path)):
                pass  # pragma: no cover

    async def test_a_database_of_another_program(self, tmp_path: Path) -> None:
        path = tmp_path / "other.sqlite"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE foo (x)")
        with pytest.raises(treasurer.InvalidOption, match="another program"):
            async with treasurer.open_budget(tokens=10, store=treasurer.SqliteStore(path)):
                pass  # pragma: no cover
        with sqlite3.connect(path) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert tables == {"foo"}  # left as it was

    async def test_a_directory_it_cannot_write(self, tmp_path: Path) -> None:
        path = tmp_path / "missing" / "budget.sqlite"
        with pytest.raises(treasurer.StoreUnavailable):
            async with treasurer.open_budget(tokens=10, store=treasurer.SqliteStore(path)):
                pass  # pragma: no cover

    async def test_a_locked_database_fails_closed(self, tmp_path: Path) -> None:
        """Another connection holds the write lock past the store's timeout: the call
        fails with StoreUnavailable and nothing is admitted."""
        path = tmp_path / "budget.sqlite"
        store = treasurer.SqliteStore(path, timeout=0.2)
        with pytest.raises(treasurer.BudgetBroken):  # a store failure stops the budget
            async with treasurer.open_budget(tokens=10, store=store) as budget:
                locker = sqlite3.connect(path, isolation_level=None)
                locker.execute("BEGIN EXCLUSIVE")
                try:
                    with pytest.raises(treasurer.BudgetBroken) as caught:
                        await budget.consume(5)
                    assert isinstance(caught.value.__cause__, treasurer.StoreUnavailable)
                    assert "locked" in str(caught.value.__cause__)
                finally:
                    locker.execute("ROLLBACK")
                    locker.close()
                assert budget.snapshot().tokens_used == 0
        # The file is intact: a new open finds nothing admitted.
        async with treasurer.open_budget(tokens=10, store=treasurer.SqliteStore(path)) as budget:
            assert budget.snapshot().tokens_used == 0

    async def test_health(self, tmp_path: Path) -> None:
        async with treasurer.open_budget(
            tokens=10, store=treasurer.SqliteStore(tmp_path / "b.sqlite")
        ) as budget:
            health = await budget.health()
            assert health
            assert health.store == "sqlite"

    def test_bad_arguments(self) -> None:
        with pytest.raises(treasurer.InvalidOption):
            treasurer.SqliteStore(5)  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption):
            treasurer.SqliteStore("x.sqlite", timeout=0)


class TestSharing:
    async def test_two_stores_on_one_file_see_each_others_writes(self, tmp_path: Path) -> None:
        """Two budgets of one name on one file (as two processes would hold them):
        each batch reads what the other wrote (windows, tenants and overrides too)."""
        path = tmp_path / "shared.sqlite"
        clock = ManualClock(T0)
        options = {
            "name": "api",
            "tokens": 1_000,
            "windows": [treasurer.Window.hour(tz="Europe/Berlin", tokens=500)],
            "tenant_defaults": treasurer.TenantCaps(tokens=200),
            "clock": clock,
        }
        async with (
            treasurer.open_budget(store=treasurer.SqliteStore(path), **options) as first,
            treasurer.open_budget(store=treasurer.SqliteStore(path), **options) as second,
        ):
            await first.tenant("alice").record(tokens=150, model="m")
            await first.override(tokens=100, window="hour", expires_at=T0 + timedelta(hours=2))
            assert not await second.tenant("alice").consume(60)  # 150 + 60 > 200
            assert await second.consume(400)  # the hour allows 500 + 100
            snap = await first.refresh()
            assert (snap.tokens_used, snap.windows[0].limits.tokens) == (550, 600)
            assert (await second.refresh()).tokens_used == 550
            assert len(second.snapshot().overrides) == 1

    async def test_store_misuse(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.sqlite"
        store = treasurer.SqliteStore(path)
        assert not await store.health()
        with pytest.raises(treasurer.InvalidOption, match="open one first"):
            await store.apply([])
        await store.close()  # not open: nothing to do
        async with treasurer.open_budget(name="a", tokens=5, store=store):
            with pytest.raises(treasurer.InvalidOption, match="one open budget"):
                async with treasurer.open_budget(name="b", tokens=5, store=store):
                    pass  # pragma: no cover

    async def test_a_file_of_another_schema_version(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.sqlite"
        async with treasurer.open_budget(tokens=5, store=treasurer.SqliteStore(path)):
            pass
        with sqlite3.connect(path) as db:
            db.execute("UPDATE treasurer_schema SET version = 99")
        with pytest.raises(treasurer.InvalidOption, match="schema version 99"):
            async with treasurer.open_budget(tokens=5, store=treasurer.SqliteStore(path)):
                pass  # pragma: no cover

    async def test_a_budget_removed_under_it(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.sqlite"
        with pytest.raises(treasurer.BudgetBroken):
            async with treasurer.open_budget(
                name="api", tokens=5, store=treasurer.SqliteStore(path)
            ) as budget:
                with sqlite3.connect(path) as db:
                    db.execute("DELETE FROM treasurer_budgets")
                with pytest.raises(treasurer.BudgetBroken, match="was removed"):
                    await budget.consume(1)
