"""A worker process on a shared Redis budget, for tests/test_redis_store.py.

``python redis_worker.py spend URL PREFIX NAME BACKEND TASKS ROUNDS SEED`` runs
TASKS tasks that each, as one of TENANTS tenants (each capped at TENANT_CAP),
ROUNDS times, reserve an estimate (refused past a cap) and commit less than
that or now and then more, release it, or are cancelled while they reserve or
hold; it prints the tokens it committed, in all and by tenant, and by how
much its commits overran their estimates, as JSON. ``hold URL PREFIX NAME N`` reserves N times 10
tokens (a 1 s TTL), prints ``held``, and sleeps until killed. ``edge URL PREFIX
EDGE_AT BACKEND TASKS SEED`` spends across the end of an hour (see :func:`edge`).
``restart URL PREFIX UNTIL BACKEND TASKS SEED`` spends until UNTIL while the
server is restarted (see :func:`through_restart`).
"""

from __future__ import annotations

import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

import treasurer
from treasurer._core.axes import INDEX
from treasurer.redis import RedisStore

CAP = 200_000
TENANTS = 5
TENANT_CAP = 45_000  # five of them pass CAP: both caps are reached


async def spend(url: str, prefix: str, name: str, tasks: int, rounds: int, seed: int) -> None:
    committed = refused = overrun = 0
    by_tenant: dict[str, int] = {}

    async def one(number: int, rng: random.Random) -> None:
        nonlocal committed, refused, overrun
        tenant = budget.tenant(f"t{number % TENANTS}")  # made by whichever process is first
        for _ in range(rounds):
            estimate = rng.randint(50, 400)
            choice = rng.random()
            try:
                if choice < 0.1:  # cancelled while it reserves, or while it holds
                    with anyio.move_on_after(rng.choice([0, 0.001])):
                        async with tenant.reserve(tokens=estimate, wait=True):
                            await anyio.sleep(0.01)
                    continue
                async with tenant.reserve(tokens=estimate) as held:
                    await anyio.sleep(rng.random() / 1000)
                    if choice < 0.3:
                        held.release()
                    else:
                        # One commit in ten uses more than its estimate (charged all
                        # the same, even past a cap: that spend happened).
                        high = estimate * 3 // 2 if choice > 0.93 else estimate
                        used = rng.randint(estimate // 2, high)
                        overrun += max(0, used - estimate)
                        held.commit(tokens=used)
                        committed += used
                        by_tenant[tenant.tenant_name] = by_tenant.get(tenant.tenant_name, 0) + used
            except treasurer.BudgetExceeded:
                refused += 1

    store = RedisStore(url, prefix=prefix)
    caps = treasurer.TenantCaps(tokens=TENANT_CAP)
    async with treasurer.open_budget(
        name=name, tokens=CAP, tenant_defaults=caps, store=store
    ) as budget:
        async with anyio.create_task_group() as group:
            for number in range(tasks):
                group.start_soon(one, number, random.Random(seed * 1000 + number))
    report = {
        "committed": committed,
        "refused": refused,
        "overrun": overrun,
        "by_tenant": by_tenant,
    }
    print(json.dumps(report), flush=True)


EDGE = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)  # the hour that ends in an ``edge`` run
EDGE_TENANTS = 20
EDGE_HOUR_CAP = 10**7  # a tenant's, an hour: not reached (a refusal is no merge)
AFTER_EDGE = 1.5  # seconds the workers go on after the hour ends


class EdgeClock:
    """The host's clock moved so that the hour ends at ``edge_at`` (seconds since
    the epoch); half an hour before the end until ``edge_at`` is set, so that a
    process can open, however late it starts, before the end is fixed."""

    def __init__(self, edge_at: float | None = None) -> None:
        self.edge_at = edge_at

    def __call__(self) -> datetime:
        if self.edge_at is None:
            return EDGE - timedelta(minutes=30)
        return EDGE + timedelta(seconds=time.time() - self.edge_at)


def edge_options(clock: EdgeClock) -> dict[str, Any]:
    """The budget of an ``edge`` run: on ``clock``, an hourly window for the budget
    and one for each tenant."""
    hourly = treasurer.TenantCaps(windows=[treasurer.Window.hour(tokens=EDGE_HOUR_CAP)])
    return {
        "name": "edge",
        "tokens": 10**9,
        "clock": clock,
        "windows": [treasurer.Window.hour(tokens=EDGE_TENANTS * EDGE_HOUR_CAP)],
        "tenant_defaults": hourly,
    }


async def edge(url: str, prefix: str, tasks: int, seed: int) -> None:
    """Opens, prints "open", reads the end of the hour (seconds since the epoch)
    from stdin, then spends as EDGE_TENANTS tenants across it; prints each commit
    (tenant, when its reservation was asked for and when the commit returned, in
    host seconds, tokens), the refusals before and after the end, the
    roll-overs it heard of, and the usage its batches recorded (tenant, the
    batch's time on the budget's clock, tokens)."""
    commits: list[tuple[str, float, float, int]] = []
    refused = {"before": 0, "after": 0}
    rolled: dict[str, int] = {}  # roll-overs heard, by tenant ("": the budget's own)
    charged: list[tuple[str, str, int]] = []  # each commit: tenant, its batch's time, tokens

    def heard(event: treasurer.Event) -> None:
        if isinstance(event, treasurer.WindowRolledOver):
            rolled[event.tenant or ""] = rolled.get(event.tenant or "", 0) + 1
        elif isinstance(event, treasurer.UsageRecorded):
            tokens = event.amount[INDEX["tokens"]]
            charged.append((event.tenant or "", event.at.isoformat(), tokens))

    async def one(number: int, rng: random.Random) -> None:
        while time.time() < edge_at + AFTER_EDGE:
            tenant = budget.tenant(f"t{rng.randrange(EDGE_TENANTS)}")
            estimate = rng.randint(50, 400)
            begun = time.time()
            try:
                async with tenant.reserve(tokens=estimate) as held:
                    await anyio.sleep(rng.random() / 1000)
                    used = rng.randint(estimate // 2, estimate)
                    held.commit(tokens=used)
                commits.append((tenant.tenant_name or "", begun, time.time(), used))
            except treasurer.BudgetExceeded:
                refused["before" if time.time() < edge_at else "after"] += 1
                await anyio.sleep(rng.random() / 100)

    store = RedisStore(url, prefix=prefix)
    clock = EdgeClock()
    async with treasurer.open_budget(store=store, on_event=heard, **edge_options(clock)) as budget:
        print("open", flush=True)
        edge_at = clock.edge_at = float(await anyio.to_thread.run_sync(sys.stdin.readline))
        async with anyio.create_task_group() as group:
            for number in range(tasks):
                group.start_soon(one, number, random.Random(seed * 1000 + number))
    report = {"commits": commits, "refused": refused, "rolled": rolled, "charged": charged}
    print(json.dumps(report), flush=True)


RESTART_TTL = timedelta(seconds=1)  # what a lost reserve strands, at most


async def through_restart(url: str, prefix: str, tasks: int, seed: int, until: float) -> None:
    """Reserves and commits until ``until`` (seconds since the epoch) while the
    server goes away and comes back; prints, as JSON, the tokens of the commits
    that returned, of those that failed (applied or not: their answer was lost),
    the reserves that failed, and the time of the last commit that returned."""
    report = {"committed": 0, "unknown": 0, "failed_reserves": 0, "last_commit": 0.0}

    async def one(rng: random.Random) -> None:
        while time.time() < until:
            estimate = rng.randint(50, 400)
            used = rng.randint(estimate // 2, estimate)
            entered = False
            try:
                async with budget.reserve(tokens=estimate, ttl=RESTART_TTL) as held:
                    entered = True
                    await anyio.sleep(rng.random() / 1000)
                    held.commit(tokens=used)
                report["committed"] += used
                report["last_commit"] = time.time()
            except treasurer.StoreUnavailable:
                report["unknown" if entered else "failed_reserves"] += used if entered else 1
                await anyio.sleep(rng.random() / 10)

    # Quick to give up (a call is made again for 0.3 s), so the outage is seen.
    store = RedisStore(url, prefix=prefix, timeout=0.5, retry_for=0.3)
    async with treasurer.open_budget(name="restart", tokens=10**9, store=store) as budget:
        print("open", flush=True)
        async with anyio.create_task_group() as group:
            for number in range(tasks):
                group.start_soon(one, random.Random(seed * 1000 + number))
    print(json.dumps(report), flush=True)


async def hold(url: str, prefix: str, name: str, count: int) -> None:
    store = RedisStore(url, prefix=prefix)
    async with treasurer.open_budget(name=name, tokens=CAP, store=store) as budget:
        for _ in range(count):
            async with budget.reserve(tokens=10, ttl=timedelta(seconds=1)) as reservation:
                reservation.detach()
        print("held", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    what, url, prefix, name, *rest = sys.argv[1:]
    if what == "spend":
        backend, tasks, rounds, seed = rest
        anyio.run(spend, url, prefix, name, int(tasks), int(rounds), int(seed), backend=backend)
    elif what == "restart":  # (NAME is when to stop: seconds since the epoch)
        backend, tasks, seed = rest
        until = float(name)
        anyio.run(through_restart, url, prefix, int(tasks), int(seed), until, backend=backend)
    elif what == "edge":  # (NAME is unused: the edge comes on stdin)
        backend, tasks, seed = rest
        anyio.run(edge, url, prefix, int(tasks), int(seed), backend=backend)
    else:
        anyio.run(hold, url, prefix, name, int(rest[0]))
