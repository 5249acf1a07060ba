"""The SQLite store: budgets that survive a restart and are shared by a host's
processes. (Its semantics are the conformance suite's: tests/conformance.)"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

import treasurer
import treasurer.sync
from sqlite_locks import WriteLock
from treasurer.testing import ManualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 1, 9, tzinfo=UTC)


def schema_1_file(path: Path, state: str) -> None:
    """A file as schema 1 left it: budget "api" kept as one document, ``state``."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE treasurer_schema (version INTEGER NOT NULL)")
        db.execute("INSERT INTO treasurer_schema VALUES (1)")
        db.execute(
            "CREATE TABLE treasurer_budgets (name TEXT PRIMARY KEY, config TEXT NOT NULL, "
            "state TEXT NOT NULL, version INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO treasurer_budgets VALUES ('api', '{}', ?, 0)", (state,))


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


TOKENS = treasurer.AXES.index("tokens")


def root_record(path: Path) -> dict[str, list[int]] | None:
    """The budget's own scope as the file holds it (one row: one consistent read)."""
    with closing(sqlite3.connect(path, timeout=30)) as db:
        row = db.execute("SELECT record FROM treasurer_scopes WHERE path = '[]'").fetchone()
    return None if row is None else json.loads(row[0])  # type: ignore[no-any-return]


def sample_while_running(path: Path, workers: list[subprocess.Popen[str]]) -> list[tuple[int, int]]:
    """(used, reserved) tokens of the shared budget, read from the file (WAL lets a
    reader in while writers work) until every worker has ended."""
    samples = []
    while any(worker.poll() is None for worker in workers):
        try:
            root = root_record(path) if path.exists() else None
        except sqlite3.OperationalError:  # created but not yet holding the budget
            root = None
        if root is not None:
            samples.append((root["used"][TOKENS], root["reserved"][TOKENS]))
        time.sleep(0.005)
    return samples


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
        samples = sample_while_running(path, workers)
        reports = []
        for worker in workers:
            out, _ = worker.communicate(timeout=300)
            assert worker.returncode == 0
            reports.append(json.loads(out))
        assert len(samples) >= 5, "the run ended before it could be watched"
        for used, reserved in samples:  # what any process could see at that moment
            assert used + reserved <= 20_000, (used, reserved)
        spent = sum(r["spent"] for r in reports)
        assert sum(r["refused"] for r in reports) > 0  # the cap was reached
        root = root_record(path)
        assert root is not None
        assert root["used"][TOKENS] == spent
        assert root["used"][TOKENS] <= 20_000
        assert root["reserved"][TOKENS] == 0


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

    async def test_a_locked_database_fails_the_calls_not_the_budget(self, tmp_path: Path) -> None:
        """Another connection holds the write lock past the store's timeout: each call
        of that batch fails with StoreUnavailable and nothing is admitted; a settlement
        that could not be stored leaves its reservation held (until its deadline); once
        the lock is gone the budget goes on."""
        path = tmp_path / "budget.sqlite"
        store = treasurer.SqliteStore(path, timeout=0.2)
        async with treasurer.open_budget(name="api", tokens=10, store=store) as budget:
            held = budget.reserve(tokens=4, ttl=timedelta(minutes=5))
            reservation = await held.__aenter__()
            with WriteLock(path):
                with pytest.raises(treasurer.StoreUnavailable, match="locked") as caught:
                    await budget.consume(5)
                assert isinstance(caught.value.__cause__, treasurer.StoreUnavailable)
                reservation.commit(tokens=3)
                with pytest.raises(treasurer.StoreUnavailable):
                    await held.__aexit__(None, None, None)
            snap = await budget.refresh()
            assert (snap.tokens_used, snap.tokens_reserved) == (0, 4)
            assert await budget.consume(5)
        # The file holds what was stored, and only that.
        async with treasurer.open_budget(
            name="api", tokens=10, store=treasurer.SqliteStore(path)
        ) as budget:
            assert (budget.snapshot().tokens_used, budget.snapshot().tokens_reserved) == (5, 4)

    async def test_a_waiter_is_served_once_the_lock_is_gone(self, tmp_path: Path) -> None:
        """A waiting request whose batch failed keeps waiting; the actor serves the queue
        again by itself a second later, so it is granted with no other call to wake it."""
        path = tmp_path / "budget.sqlite"
        async with treasurer.open_budget(
            tokens=10, store=treasurer.SqliteStore(path, timeout=0.2)
        ) as budget:
            granted = anyio.Event()

            async def waiter() -> None:
                async with budget.reserve(tokens=3, wait=True):
                    granted.set()

            async with anyio.create_task_group() as tg:
                with WriteLock(path):
                    tg.start_soon(waiter)
                    await anyio.sleep(0.5)  # its batch waited 0.2 s for the lock and failed
                    assert not granted.is_set()
                    assert budget.statistics().reservations_waiting == 1
                with anyio.fail_after(5):
                    await granted.wait()
            assert budget.snapshot().tokens_reserved == 0

    async def test_a_full_disk_fails_the_calls_not_the_budget(
        self, tmp_path: Path, anyio_backend_name: str
    ) -> None:
        """In a process whose file size limit (RLIMIT_FSIZE, as a full disk would)
        stops the file from growing: the batch that cannot be written fails with
        StoreUnavailable and is not applied; with room again, the budget goes on."""
        path = tmp_path / "budget.sqlite"
        program = textwrap.dedent(
            f"""
            import anyio, json, resource, signal, treasurer
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails
            async def main():
                async with treasurer.open_budget(
                    name="api", tokens=10**9, store=treasurer.SqliteStore({str(path)!r})
                ) as budget:
                    await budget.record(tokens=1)
                    resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, resource.RLIM_INFINITY))
                    error, stored = None, 1
                    for n in range(5_000):
                        try:
                            await budget.tenant(f"tenant-{{n:05d}}").record(tokens=1)
                            stored += 1
                        except treasurer.StoreUnavailable as exc:
                            error = str(exc)
                            break
                    full = (await budget.refresh()).tokens_used
                    limit = resource.RLIM_INFINITY
                    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
                    await budget.record(tokens=1)
                    print(json.dumps([error, stored, full, (await budget.refresh()).tokens_used]))
            anyio.run(main, backend={anyio_backend_name!r})
            """
        )
        done = await anyio.run_process([sys.executable, "-c", program])
        error, stored, full, after = json.loads(done.stdout)
        assert error is not None
        assert "disk" in error or "full" in error
        assert full == stored  # the batch that failed changed nothing
        assert after == stored + 1
        async with treasurer.open_budget(
            name="api", tokens=10**9, store=treasurer.SqliteStore(path)
        ) as budget:
            assert budget.snapshot().tokens_used == stored + 1

    async def test_a_zone_without_an_iana_name_is_refused(self, tmp_path: Path) -> None:
        """The file names time zones, so a fixed offset cannot be stored."""
        fixed = timezone(timedelta(hours=2))
        with pytest.raises(treasurer.InvalidOption, match="IANA"):
            async with treasurer.open_budget(
                windows=[treasurer.Window.hour(tokens=5, tz=fixed)],
                store=treasurer.SqliteStore(tmp_path / "b.sqlite"),
            ):
                pass  # pragma: no cover

    async def test_health_needs_the_write_lock(self, tmp_path: Path) -> None:
        path = tmp_path / "b.sqlite"
        async with treasurer.open_budget(
            tokens=10, store=treasurer.SqliteStore(path, timeout=0.1)
        ) as budget:
            with WriteLock(path):
                health = await budget.health()
                assert not health
                assert "locked" in health.detail
            assert await budget.health()

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

    async def test_a_window_in_zoneinfo_utc_keeps_its_usage_across_processes(
        self, tmp_path: Path
    ) -> None:
        """ZoneInfo("UTC") is stored apart from datetime.UTC: read back by another
        process, the window is the same one, so new caps keep its usage. (Found by
        the conformance suite: the usage of a tenant's window was lost.)"""
        path = tmp_path / "shared.sqlite"
        hourly = treasurer.TenantCaps(
            tokens=100, windows=[treasurer.Window.hour(tokens=50, tz="UTC")]
        )
        options = {"name": "api", "tenant_defaults": hourly, "clock": ManualClock(T0)}
        async with (
            treasurer.open_budget(store=treasurer.SqliteStore(path), **options) as first,
            treasurer.open_budget(store=treasurer.SqliteStore(path), **options) as second,
        ):
            await first.tenant("alice").record(tokens=20)
            await second.set_tenant_caps("alice", None)  # the defaults again: same window
            alice = await first.tenant("alice").refresh()
            assert alice.window("hour").used.tokens == 20

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

    async def test_a_file_of_schema_version_1_is_migrated(self, tmp_path: Path) -> None:
        """Version 1 kept a budget as one JSON document; the first store that opens
        such a file moves it to rows (version 2) in one transaction, and nothing
        changes in the figures."""
        path = tmp_path / "budget.sqlite"
        clock = ManualClock(T0)
        options = {
            "name": "api",
            "tokens": 1_000,
            "windows": [treasurer.Window.hour(tokens=500)],
            "tenant_defaults": treasurer.TenantCaps(tokens=200),
            "clock": clock,
        }
        async with treasurer.open_budget(store=treasurer.SqliteStore(path), **options) as budget:
            await budget.tenant("acme").record(tokens=150)
            held = await budget.reserve(tokens=100, ttl=timedelta(minutes=5)).__aenter__()
            before = {None: budget.snapshot(), "acme": budget.tenant("acme").snapshot()}
        held.release()  # only marks this handle settled: its budget has stopped
        with closing(sqlite3.connect(path)) as db, db:  # write it back as version 1 did
            (meta,) = db.execute("SELECT state FROM treasurer_budgets").fetchone()
            record = json.loads(meta)
            record["scopes"] = [
                json.loads(r) for (r,) in db.execute("SELECT record FROM treasurer_scopes")
            ]
            record["reservations"] = {
                str(i): json.loads(r)
                for i, r in db.execute("SELECT id, record FROM treasurer_reservations")
            }
            db.execute("UPDATE treasurer_budgets SET state = ?", (json.dumps(record),))
            db.execute("DROP TABLE treasurer_scopes")
            db.execute("DROP TABLE treasurer_reservations")
            db.execute("UPDATE treasurer_schema SET version = 1")
        async with treasurer.open_budget(store=treasurer.SqliteStore(path), **options) as budget:
            assert budget.snapshot() == before[None]
            assert (await budget.tenant("acme").refresh()) == before["acme"]
            assert budget.snapshot().open_reservations == 1
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT version FROM treasurer_schema").fetchone() == (2,)

    async def test_a_schema_1_file_it_cannot_read_is_left_as_it_was(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.sqlite"
        schema_1_file(path, "not json")
        with pytest.raises(treasurer.InvalidOption, match="cannot be moved"):
            async with treasurer.open_budget(name="api", store=treasurer.SqliteStore(path)):
                pass  # pragma: no cover
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT version FROM treasurer_schema").fetchone() == (1,)
            assert db.execute("SELECT state FROM treasurer_budgets").fetchone() == ("not json",)

    async def test_a_migration_that_fails_midway_is_rolled_back(self, tmp_path: Path) -> None:
        """Two schema 1 records of one scope cannot both become rows: the store says
        the file is unusable, and the file keeps schema 1 with nothing half moved."""
        path = tmp_path / "budget.sqlite"
        scope = {"path": []}
        record = {"scopes": [scope, scope], "reservations": {}, "now": None, "meta": {}}
        schema_1_file(path, json.dumps(record))
        with pytest.raises(treasurer.StoreUnavailable, match="UNIQUE constraint failed"):
            async with treasurer.open_budget(name="api", store=treasurer.SqliteStore(path)):
                pass  # pragma: no cover
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT version FROM treasurer_schema").fetchone() == (1,)
            assert db.execute("SELECT count(*) FROM treasurer_scopes").fetchone() == (0,)

    def test_reading_a_budget_the_file_does_not_hold(self, tmp_path: Path) -> None:
        path = tmp_path / "budget.sqlite"

        async def make() -> None:
            async with treasurer.open_budget(name="api", store=treasurer.SqliteStore(path)):
                pass

        anyio.run(make)
        with pytest.raises(treasurer.InvalidOption, match="no budget named 'zz'"):
            treasurer.SqliteStore(path).read("zz")

    async def test_a_budget_removed_under_it(self, tmp_path: Path) -> None:
        """Each call fails with StoreUnavailable saying so; the budget still closes."""
        path = tmp_path / "budget.sqlite"
        async with treasurer.open_budget(
            name="api", tokens=5, store=treasurer.SqliteStore(path)
        ) as budget:
            with sqlite3.connect(path) as db:
                db.execute("DELETE FROM treasurer_budgets")
            for _ in range(2):
                with pytest.raises(treasurer.StoreUnavailable, match="was removed"):
                    await budget.consume(1)


def store_maker(kind: str, path: Path) -> Callable[[], treasurer.Store]:
    """Stores that find the budget again: one MemoryStore reopened, or a new
    SqliteStore on the same file each time (as another process would make)."""
    if kind == "memory":
        memory = treasurer.MemoryStore()
        return lambda: memory
    return lambda: treasurer.SqliteStore(path)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
class TestReconfigure:
    """The first open stores the configuration; another is refused unless the open
    asks to ``reconfigure``, which replaces it and keeps the usage."""

    async def test_another_configuration_is_refused_and_changes_nothing(
        self, tmp_path: Path, kind: str
    ) -> None:
        store = store_maker(kind, tmp_path / "budget.sqlite")
        async with treasurer.open_budget(name="api", tokens=10, store=store()) as budget:
            await budget.record(tokens=4)
        with pytest.raises(treasurer.InvalidOption) as refused:
            async with treasurer.open_budget(name="api", tokens=20, store=store()):
                pass  # pragma: no cover
        assert "its limits differ" in str(refused.value)
        assert "reconfigure=True" in str(refused.value)
        assert isinstance(refused.value, ValueError)
        async with treasurer.open_budget(name="api", tokens=10, store=store()) as budget:
            assert (budget.snapshot().tokens_used, budget.caps.tokens) == (4, 10)

    async def test_reconfigure_keeps_the_usage_under_the_new_caps(
        self, tmp_path: Path, kind: str
    ) -> None:
        store = store_maker(kind, tmp_path / "budget.sqlite")
        clock = ManualClock(T0)
        before = {
            "name": "api",
            "tokens": 100,
            "windows": [treasurer.Window.hour(tokens=60), treasurer.Window.day(tokens=90)],
            "tenant_defaults": treasurer.TenantCaps(tokens=30),
            "tenants": {"vip": treasurer.TenantCaps(tokens=60)},
            "clock": clock,
        }
        after = before | {
            "tokens": 200,
            "windows": [treasurer.Window.hour(tokens=100)],
            "tenant_defaults": treasurer.TenantCaps(tokens=40),
            "tenants": {},
        }
        async with treasurer.open_budget(store=store(), **before) as budget:
            await budget.record(tokens=20)
            await budget.tenant("vip").record(tokens=25)
            await budget.tenant("bob").record(tokens=10)
            await budget.set_tenant_caps("carol", treasurer.TenantCaps(tokens=12))
            await budget.tenant("carol").record(tokens=1)
        async with treasurer.open_budget(store=store(), reconfigure=True, **after) as budget:
            snap = budget.snapshot()
            assert (snap.tokens_used, budget.caps.tokens) == (56, 200)
            assert [(w.name, w.used.tokens, w.limits.tokens) for w in snap.windows] == [
                ("hour", 56, 100)  # kept by name, with its usage; the day is gone
            ]
            vip = budget.tenant("vip")  # no longer named: the new defaults
            assert not await vip.consume(16)  # 25 + 16 > 40
            assert await vip.consume(15)
            carol, bob = (
                await budget.tenant("carol").refresh(),
                await budget.tenant("bob").refresh(),
            )
            assert (carol.caps.tokens, carol.tokens_used) == (12, 1)  # set at run time: kept
            assert (bob.caps.tokens, bob.tokens_used) == (40, 10)
        async with treasurer.open_budget(store=store(), **after) as budget:  # now stored
            assert budget.snapshot().tokens_used == 71
        with pytest.raises(treasurer.InvalidOption, match="reconfigure=True"):
            async with treasurer.open_budget(store=store(), **before):
                pass  # pragma: no cover

    def test_reconfigure_must_be_a_bool(self, kind: str) -> None:
        with pytest.raises(treasurer.InvalidOption, match="reconfigure"):
            treasurer.sync.open_budget(tokens=1, reconfigure="yes")  # type: ignore[typeddict-item]
