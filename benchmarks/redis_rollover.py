"""Redis store: throughput across a window rolling over.

Four worker processes x 100 tasks share one budget with an hourly window and
tenants (each task reserves 100 tokens for a tenant it picks at random, and
commits 60). The workers' clock is the host's, moved so that an hour ends in
the middle of the run: every tenant's window rolls over at its first batch
after that instant (each tenant has an hourly window of its own). The
table gives the pairs per second in the seconds before the hour ends and in
each second after it, the ratio of the two, and the script's answers by tag.

Run it with the test venv: ``.nox/tests/bin/python benchmarks/redis_rollover.py``
(or ``nox -s bench -- --rollover``); it writes benchmarks/ROLLOVER.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

import treasurer
from treasurer._core.axes import INDEX
from treasurer._stores import redis_calls
from treasurer._stores.redis_client import client
from treasurer.redis import RedisStore, budget_keys

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from redis_store import Server  # noqa: E402

PROCESSES, TASKS, RESERVE, COMMIT = 4, 100, 100, 60
CAP = 10**15
EDGE = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)  # the hour that ends during the run
PHASES = ((-3.0, 0.0), (0.0, 1.0), (1.0, 2.0), (2.0, 4.0))  # seconds from the edge
# Each tenant has an hourly window of its own (tenants do not take the budget's).
TENANT_CAPS = treasurer.TenantCaps(tokens=CAP // 10, windows=[treasurer.Window.hour(tokens=CAP)])


def worker(url: str, prefix: str, edge_at: float, tenants: int, backend: str) -> None:
    """One process: spends until 4 s after the edge; prints what it made and saw."""
    answers: list[tuple[float, str]] = []
    call = redis_calls.ScriptCalls._call

    async def counted(self: Any, args: list[str]) -> list[Any]:
        sent = time.time()
        answer: list[Any] = await call(self, args)
        answers.append((sent, str(answer[0])))
        return answer

    redis_calls.ScriptCalls._call = counted  # type: ignore[method-assign]
    made: list[float] = []  # when each pair ended
    begun: list[float] = []  # when each pair began

    def clock() -> datetime:
        return EDGE + timedelta(seconds=time.time() - edge_at)

    async def main() -> None:
        store = RedisStore(url, prefix=prefix, retry_for=60.0)
        options: dict[str, Any] = {
            "name": "bench",
            "tokens": CAP,
            "store": store,
            "clock": clock,
            "windows": [treasurer.Window.hour(tokens=CAP)],
            "tenant_defaults": TENANT_CAPS,
        }
        async with treasurer.open_budget(**options) as budget:
            handles = [budget.tenant(f"t{n}") for n in range(tenants)]
            stop = False

            async def task(seed: int) -> None:
                pick = random.Random(seed)
                while not stop:
                    begun.append(time.time())
                    async with pick.choice(handles).reserve(tokens=RESERVE) as held:
                        held.commit(tokens=COMMIT)
                    made.append(time.time())

            async with anyio.create_task_group() as group:
                for seed in range(TASKS):
                    group.start_soon(task, seed + os.getpid() * TASKS)
                await anyio.sleep(max(0.0, edge_at + PHASES[-1][1] - time.time()))
                stop = True

    anyio.run(main, backend=backend)
    print(json.dumps({"made": made, "begun": begun[: len(made)], "answers": answers}))


async def books(url: str, prefix: str, edge_at: float) -> tuple[int, int]:
    """The budget's tokens used, and its hour's, as stored."""
    store = RedisStore(url, prefix=prefix)
    at = EDGE + timedelta(seconds=time.time() - edge_at)
    options: dict[str, Any] = {"name": "bench", "tokens": CAP, "store": store}
    options |= {"windows": [treasurer.Window.hour(tokens=CAP)], "clock": lambda: at}
    options["tenant_defaults"] = TENANT_CAPS
    async with treasurer.open_budget(**options) as budget:
        figures = await budget.refresh()
        (hour,) = figures.windows
        return figures.tokens_used, hour.used.tokens


async def tenants_hours(url: str, prefix: str) -> tuple[int, int]:
    """The tokens in the tenants' lifetimes and in their hours begun at the edge,
    summed from the stored rows (one read, where a refresh per tenant would read
    them all). A tenant not used since the edge still holds the hour before."""
    keys = budget_keys(prefix, "bench")
    async with client(url, 5.0) as redis:
        shapes, counts = await redis.hgetall(keys[1]), await redis.hgetall(keys[5])
    current = {
        key
        for key, text in shapes.items()
        if datetime.fromisoformat(json.loads(text)["windows"][0]["start"]) >= EDGE
    }
    lifetime = hours = 0
    tokens = str(INDEX["tokens"])
    for field, value in counts.items():
        key, name, *rest = field.split("\t")
        if json.loads(key) and rest == [tokens]:
            lifetime += int(value) if name == "used" else 0
            hours += int(value) if name == "w0.used" and key in current else 0
    return lifetime, hours


def case(url: str, tenants: int, backend: str, warmup: float) -> dict[str, Any]:
    prefix = f"roll-{uuid.uuid4().hex[:8]}"
    edge_at = time.time() + warmup - PHASES[0][0]
    command = [sys.executable, __file__, "--worker", url, prefix, repr(edge_at)]
    command += [str(tenants), backend]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE) for _ in range(PROCESSES)]
    reports = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    if any(w.returncode for w in workers):
        raise RuntimeError("a worker failed")
    made = sorted(t for r in reports for t in r["made"])
    answers = [a for r in reports for a in r["answers"]]
    phases = []
    for low, high in PHASES:
        pairs = sum(edge_at + low <= t < edge_at + high for t in made)
        tags = Counter(tag for t, tag in answers if edge_at + low <= t < edge_at + high)
        phases.append({"pairs_per_s": pairs / (high - low), "answers": dict(tags)})
    used, hour = anyio.run(books, url, prefix, edge_at, backend=backend)
    by_tenants = anyio.run(tenants_hours, url, prefix, backend=backend)
    # The hour holds the commits of every pair begun after its start, and of
    # none that ended before it.
    begun = sum(t >= edge_at for r in reports for t in r["begun"])
    ended = sum(t >= edge_at for t in made)
    books_ok = used == len(made) * COMMIT and begun * COMMIT <= hour <= ended * COMMIT
    books_ok = books_ok and by_tenants == (used, hour)  # every tenant's window rolled over
    return {"tenants": tenants, "backend": backend, "phases": phases, "books_ok": books_ok}


def table(rows: list[dict[str, Any]]) -> list[str]:
    head = ["loop", "tenants"]
    head += [f"{low:+g} to {high:+g} s" for low, high in PHASES]
    head += ["first second after / before", "answers after the edge", "books"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        rates = [p["pairs_per_s"] for p in row["phases"]]
        after: Counter[str] = Counter()
        for phase in row["phases"][1:]:
            after.update(phase["answers"])
        cells = [row["backend"], f"{row['tenants']:,}", *(f"{r:,.0f}" for r in rates)]
        cells.append(f"{rates[1] / rates[0]:.2f}x" if rates[0] else "-")
        cells.append(", ".join(f"{tag} {n:,}" for tag, n in sorted(after.items())))
        cells.append("right" if row["books_ok"] else "**WRONG**")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        url, prefix, edge_at, tenants, backend = argv[1:]
        worker(url, prefix, float(edge_at), int(tenants), backend)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="the folder to write to")
    args = parser.parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    server = Server()
    try:
        rows = [
            case(server.url, tenants, backend, warmup=3.0)
            for backend in ("asyncio", "trio")
            for tenants in (10, 1000)
        ]
    finally:
        server.close()
    lines = [
        "# Redis store: throughput across a window rolling over",
        "",
        f"Generated by `benchmarks/redis_rollover.py` (its docstring says what is run); "
        f"run {started}, treasurer at commit {commit or 'unknown'}; {os.cpu_count()} CPUs; "
        f"{PROCESSES} processes x {TASKS} tasks, pairs per second in each span of time "
        "from the end of the hour.",
        "",
        *table(rows),
        "",
    ]
    (args.out / "ROLLOVER.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all(row["books_ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
