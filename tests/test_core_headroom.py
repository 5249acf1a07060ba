"""The room a batch's admissions left (treasurer._core.headroom): a store that merges
a batch into counters others moved keeps it only within that room, so the room
must be exact. Another process's spend is played here as one more reservation
made before the batch, on a second copy of the same ledger."""

from __future__ import annotations

import json

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from core_support import TOKENS, apply, make_ledger, only_tokens
from treasurer._core import state
from treasurer._core.commands import Command, Commit, Release, Reserve
from treasurer._core.config import Limits
from treasurer._core.headroom import quiet_below
from treasurer._core.ledger import Ledger
from treasurer._core.outcomes import Granted
from treasurer._core.scopes import ROOT, ScopePath, tenant_path
from treasurer._core.windows import Window

TENANTS = ("a", "b", "c")


def ledger_of(cap: int, window_cap: int, tenant_cap: int) -> Ledger:
    return make_ledger(
        {"tokens": cap},
        windows=[Window.hour(tokens=window_cap)],
        tenant_defaults=Limits.build({"tokens": tenant_cap}),
    )


def copy_of(ledger: Ledger) -> Ledger:
    record = json.loads(json.dumps(state.dump_ledger(ledger)))
    return state.load_ledger(ledger.config, record, ledger.now)


def play(ledger: Ledger, steps: list[tuple[str, int, int]]) -> list[bool]:
    """Apply the steps in order (a reserve in a tenant, or the commit or release of
    one of the reservations this play made); which reserves were granted."""
    granted: list[tuple[ScopePath, int]] = []
    decided = []
    for kind, tenant, amount in steps:
        if kind == "reserve":
            path = tenant_path(TENANTS[tenant])
            reply = apply(ledger, Reserve(path, only_tokens(amount)))
            decided.append(isinstance(reply, Granted))
            if isinstance(reply, Granted):
                granted.append((path, reply.reservation))
        elif granted:
            path, rid = granted.pop(amount % len(granted))
            settle: Command = (
                Commit(path, rid, only_tokens(amount)) if kind == "commit" else Release(path, rid)
            )
            apply(ledger, settle)
    return decided


steps = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "reserve", "commit", "release"]),
        st.integers(0, len(TENANTS) - 1),
        st.integers(0, 60),
    ),
    max_size=12,
)


def chain_room(room: dict[tuple[ScopePath, int, int], int], tenant: int) -> int | None:
    """The least room under the caps a reservation in ``tenant`` counts against."""
    paths = (tenant_path(TENANTS[tenant]), ROOT)
    rooms = [left for (path, _, axis), left in room.items() if path in paths and axis == TOKENS]
    return min(rooms) if rooms else None


@settings(max_examples=300, deadline=None)
@given(
    caps=st.tuples(st.integers(50, 400), st.integers(50, 400), st.integers(30, 200)),
    before=steps,
    batch=steps,
    tenant=st.integers(0, len(TENANTS) - 1),
    over=st.booleans(),
)
def test_admissions_hold_within_the_room_and_only_there(
    caps: tuple[int, int, int],
    before: list[tuple[str, int, int]],
    batch: list[tuple[str, int, int]],
    tenant: int,
    over: bool,
) -> None:
    ledger = ledger_of(*caps)
    play(ledger, before)
    other = copy_of(ledger)
    ledger.tree.room = {}
    decided = play(ledger, batch)
    left = chain_room(ledger.tree.room, tenant)
    assume(left is not None and any(decided))
    assert left is not None
    spend = left + 1 if over else left
    assume(spend > 0)
    # The other process's spend must fit before the batch for it to happen at all.
    assume(
        isinstance(apply(other, Reserve(tenant_path(TENANTS[tenant]), only_tokens(spend))), Granted)
    )
    again = play(other, batch)
    if over:
        assert any(d and not a for d, a in zip(decided, again, strict=True))
    else:
        assert again == decided


def test_quiet_below_is_the_usage_just_short_of_the_next_threshold() -> None:
    ledger = make_ledger({"tokens": 1000}, windows=[Window.hour(tokens=300)])
    root = ledger.tree.root
    assert sorted(quiet_below(root)) == [(-1, TOKENS, 499), (0, TOKENS, 149)]
    granted = apply(ledger, Reserve(ROOT, only_tokens(200)))
    assert isinstance(granted, Granted)
    apply(ledger, Commit(ROOT, granted.reservation, only_tokens(200)))  # 20 %, 66.7 %
    assert sorted(quiet_below(root)) == [(-1, TOKENS, 499), (0, TOKENS, 224)]


def test_quiet_below_is_empty_without_thresholds() -> None:
    ledger = make_ledger({"tokens": 1000}, thresholds=())
    assert list(quiet_below(ledger.tree.root)) == []
