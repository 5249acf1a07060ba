"""A worker process on a shared Redis budget, for tests/test_redis_store.py.

``python redis_worker.py spend URL PREFIX NAME BACKEND TASKS ROUNDS SEED`` runs
TASKS tasks that each, ROUNDS times, reserve an estimate (refused past the cap)
and commit at most that, release it, or are cancelled while they reserve or hold; it prints the
tokens it committed as JSON. ``hold URL PREFIX NAME N`` reserves N times 10
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


async def spend(url: str, prefix: str, name: str, tasks: int, rounds: int, seed: int) -> None:
    committed = 0
    refused = 0

    async def one(rng: random.Random) -> None:
        nonlocal committed, refused
        for _ in range(rounds):
            estimate = rng.randint(50, 400)
            choice = rng.random()
            try:
                if choice < 0.1:  # cancelled while it reserves, or while it holds
                    with anyio.move_on_after(rng.choice([0, 0.001])):
                        async with budget.reserve(tokens=estimate, wait=True):
                            await anyio.sleep(0.01)
                    continue
                async with budget.reserve(tokens=estimate) as held:
                    await anyio.sleep(rng.random() / 1000)
                    if choice < 0.3:
                        held.release()
                    else:
                        used = rng.randint(estimate // 2, estimate)
                        held.commit(tokens=used)
                        committed += used
            except treasurer.BudgetExceeded:
                refused += 1

    store = RedisStore(url, prefix=prefix)
    async with treasurer.open_budget(name=name, tokens=CAP, store=store) as budget:
        async with anyio.create_task_group() as group:
            for number in range(tasks):
                group.start_soon(one, random.Random(seed * 1000 + number))
    print(json.dumps({"committed": committed, "refused": refused}), flush=True)


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
