"""Two writers of one Redis budget answer as one memory store (Hypothesis).

Each step is one batch of several reserves, commits, releases and records, for a
few tenants with hourly windows, applied by one of two Redis stores (each with a
copy of its own, as two processes) and by a memory store, at a time that moves
on now and then. The batches mostly merge into counters and reservation ids the
other writer moved (the conformance suite's batches, refused or crossing a
threshold as they often are, mostly do not), roll windows over, alike or not,
and find reservations expired. Every reply must be the memory store's,
reservation ids included, and so must the stored figures of every scope.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import treasurer
from conformance.drivers import view_figures
from treasurer._core.commands import Command, Commit, Probe, Record, Release, Reserve
from treasurer._core.config import BudgetConfig, Limits
from treasurer._core.outcomes import Granted
from treasurer._core.scopes import ROOT, ScopePath, tenant_path
from treasurer.redis import RedisStore

TENANTS = [tenant_path(name) for name in ("a", "b", "c")]

operation = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 2), st.integers(1, 500)),
    st.tuples(st.just("commit"), st.integers(0, 50), st.integers(0, 600)),
    st.tuples(st.just("release"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("record"), st.integers(0, 2), st.integers(1, 500)),
)
step = st.tuples(
    st.integers(0, 1),  # the writer
    st.lists(operation, min_size=1, max_size=6),
    st.sampled_from([0, 0, 0, 7, 300, 1500]),  # seconds the clock moves first
)


def tokens(amount: int) -> tuple[int, ...]:
    return (0, 0, amount, 0, 1)


def config() -> BudgetConfig:
    hourly = Limits.build({}, None, [treasurer.Window.hour(tokens=10**8)])
    return BudgetConfig.build(
        "writers",
        Limits.build({"tokens": 10**9}, None, [treasurer.Window.hour(tokens=10**9)]),
        reservation_ttl=timedelta(minutes=20),
        tenant_defaults=hourly,
    )


def batch(
    operations: Sequence[tuple[str, int, int]], open_ids: list[tuple[int, ScopePath]]
) -> list[Command]:
    """The commands of a step: a commit or release names an open reservation by its
    index (modulo those open), none taken twice in one batch."""
    commands: list[Command] = []
    for kind, which, amount in operations:
        if kind in ("reserve", "record"):
            scope = TENANTS[which]
            commands.append(
                Reserve(scope, tokens(amount))
                if kind == "reserve"
                else Record(scope, tokens(amount))
            )
        elif open_ids:
            reservation, scope = open_ids.pop(which % len(open_ids))
            if kind == "commit":
                commands.append(Commit(scope, reservation, tokens(amount)))
            else:
                commands.append(Release(scope, reservation))
    return commands


def untokened(replies: Sequence[object]) -> list[object]:
    """The replies with the grants' tokens left out: each store draws its own."""
    return [r._replace(token=0) if isinstance(r, Granted) else r for r in replies]


async def run(url: str, steps: Sequence[tuple[int, list[tuple[str, int, int]], int]]) -> None:
    now = datetime(2026, 12, 4, 10, 40, tzinfo=UTC)

    def clock() -> datetime:
        return now

    prefix = f"w-{uuid.uuid4().hex[:8]}"
    memory = treasurer.MemoryStore()
    writers = [RedisStore(url, prefix=prefix), RedisStore(url, prefix=prefix)]
    await memory.open(config(), clock)
    for writer in writers:
        await writer.open(config(), clock)
    open_ids: list[tuple[int, ScopePath]] = []
    async with anyio.create_task_group() as group:
        for writer in writers:
            await group.start(writer.run, lambda: None)
        for number, (chosen, operations, seconds) in enumerate(steps):
            now += timedelta(seconds=seconds)
            commands = batch(operations, open_ids)
            expected = await memory.apply(commands)
            got = await writers[chosen].apply(commands)
            assert untokened(got.replies) == untokened(expected.replies), f"step {number}"
            for command, reply in zip(commands, expected.replies, strict=True):
                if isinstance(reply, Granted):
                    open_ids.append((reply.reservation, command.scope))
            live = set(memory._ledger.reservations.open) if memory._ledger else set()
            open_ids = [(rid, scope) for rid, scope in open_ids if rid in live]
        # A memory store's refresh is as of the batch that last touched the scope; a
        # probe's views have the windows of now, as a Redis refresh reads them.
        known = [scope for scope in [ROOT, *TENANTS] if await memory.refresh(scope)]
        probed = await memory.apply([Probe(scope, (0,) * 5) for scope in known])
        for scope in [ROOT, *TENANTS]:
            expected_view = probed.views.get(scope)
            for writer in writers:
                stored = await writer.refresh(scope)
                if expected_view is None:
                    assert stored is None
                else:
                    assert stored is not None
                    assert view_figures(stored) == view_figures(expected_view), scope
        group.cancel_scope.cancel()
    for store in (memory, *writers):
        await store.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=12))
# The second's copy has not seen the first's reservation 1 when its batch issues
# an id and releases 1: its copy took 1 for the id it had just issued.
@example(steps=[(0, [("reserve", 0, 1)], 0), (1, [("reserve", 0, 1), ("release", 0, 0)], 0)])
# Tenant b's hour ended untouched: a refresh read it as of its last batch.
@example(steps=[(1, [("reserve", 1, 1)], 0), (0, [("reserve", 0, 1)], 1500)])
def test_two_writers_answer_as_one_memory_store(
    redis_url: str, backend: str, steps: list[Any]
) -> None:
    anyio.run(run, redis_url, steps, backend=backend)
