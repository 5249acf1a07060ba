"""A worker process on a shared Redis budget, for tests/test_redis_store.py.

``python redis_worker.py spend URL PREFIX NAME BACKEND TASKS ROUNDS SEED`` runs
TASKS tasks that each, as one of TENANTS tenants (each capped at TENANT_CAP),
ROUNDS times, reserve an estimate (refused past a cap) and commit at most that,
release it, or are cancelled while they reserve or hold; it prints the tokens it
committed, in all and by tenant, as JSON. ``hold URL PREFIX NAME N`` reserves N times 10
tokens (a 1 s TTL), prints ``held``, and sleeps until killed.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import timedelta

import anyio

import treasurer
from treasurer.redis import RedisStore

CAP = 200_000
TENANTS = 5
TENANT_CAP = 45_000  # five of them pass CAP: both caps are reached


async def spend(url: str, prefix: str, name: str, tasks: int, rounds: int, seed: int) -> None:
    committed = 0
    refused = 0
    by_tenant: dict[str, int] = {}

    async def one(number: int, rng: random.Random) -> None:
        nonlocal committed, refused
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
                        used = rng.randint(estimate // 2, estimate)
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
    report = {"committed": committed, "refused": refused, "by_tenant": by_tenant}
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
    else:
        anyio.run(hold, url, prefix, name, int(rest[0]))
