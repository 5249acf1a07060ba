"""Serving waiting requests in the pure ledger: what the memo of last refusals may
skip, and what it must look at again (the public behaviour is in test_waiting.py
and the conformance suite)."""

from __future__ import annotations

from core_support import ZERO, apply, make_ledger, only_tokens, tokens
from treasurer._core.commands import CloseChild, OpenChild, Reserve
from treasurer._core.outcomes import ChildOpened, Granted, Rejected
from treasurer._core.scopes import ROOT


def test_a_waiter_in_a_child_that_closed_and_went_is_answered() -> None:
    """Refused by the full budget, a waiter in a child budget is remembered with the
    child's scope; the child closes and is forgotten (nothing open in it), so the
    memo cannot stand and the waiter is answered: the child is closed."""
    ledger = make_ledger({"tokens": 10})
    assert isinstance(apply(ledger, Reserve(ROOT, tokens(10))), Granted)
    child = apply(ledger, OpenChild(ROOT, "worker", (None,) * len(ZERO)))
    assert isinstance(child, ChildOpened)
    waiting = [Reserve(child.path, tokens(5))]
    assert ledger.serve_waiting(waiting, 0) == []  # refused by the budget, for now
    apply(ledger, CloseChild(child.path))
    assert child.path not in ledger.tree.scopes
    ((index, reply),) = ledger.serve_waiting(waiting, len(waiting))
    assert index == 0
    assert isinstance(reply, Rejected)
    assert reply.kind == "closed"


def test_the_memo_forgets_waiters_who_gave_up() -> None:
    """Memos of waiters no longer in the queue are dropped once they outnumber it."""
    ledger = make_ledger({"tokens": 10})
    apply(ledger, Reserve(ROOT, only_tokens(10)))
    gave_up = [Reserve(ROOT, only_tokens(1 + n % 10)) for n in range(100)]
    assert ledger.serve_waiting(gave_up, 0) == []
    remaining = [Reserve(ROOT, only_tokens(3))]
    assert ledger.serve_waiting(remaining, 0) == []
    assert len(ledger._refused_by) <= 2 * len(remaining) + 64
