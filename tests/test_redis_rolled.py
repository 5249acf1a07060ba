"""Which shape changes the Redis store merges as a window rolling over
(``redis_rows.rolled``): a calendar window's new period, and nothing else."""

from __future__ import annotations

from datetime import timedelta

from core_support import T0, apply, make_ledger, tokens
from treasurer._core import state
from treasurer._core.commands import Record
from treasurer._core.ledger import Ledger
from treasurer._core.scopes import ROOT
from treasurer._core.windows import Window
from treasurer._stores.redis_rows import in_windows, rolled, shape


def shape_of(ledger: Ledger) -> str:
    return shape(state.dump_scope(ledger.tree.scopes[ROOT]))


def test_a_calendar_window_in_a_new_period_rolled_over() -> None:
    ledger = make_ledger(windows=[Window.day(tokens=900), Window.hour(tokens=100)])
    apply(ledger, Record(ROOT, tokens(10)))
    before = shape_of(ledger)
    ledger.advance(T0 + timedelta(hours=1))  # the hour rolls over, the day does not
    assert rolled(before, shape_of(ledger)) == [1]
    ledger.advance(T0 + timedelta(days=1))
    assert rolled(before, shape_of(ledger)) == [0, 1]


def test_anything_else_that_changed_is_not_a_roll_over() -> None:
    ledger = make_ledger(windows=[Window.hour(tokens=100)], thresholds=[50])
    before = shape_of(ledger)
    apply(ledger, Record(ROOT, tokens(60)))  # fires 50 % of the hour
    fired = shape_of(ledger)
    assert rolled(before, fired) == []
    ledger.advance(T0 + timedelta(hours=1))
    rolled_shape = shape_of(ledger)
    assert rolled(fired, rolled_shape) == [0]  # what fired is cleared in a new period
    # A record stored by a host whose clock is ahead: not one to roll over from.
    assert rolled(rolled_shape, before) == []
    apply(ledger, Record(ROOT, tokens(60)))  # a threshold fired in the new period too
    assert rolled(fired, shape_of(ledger)) == []


def test_a_rolling_window_is_never_rolled_over() -> None:
    """Its record holds every charge still in it: each charge changes it."""
    ledger = make_ledger(windows=[Window.rolling(timedelta(minutes=10), tokens=100)])
    apply(ledger, Record(ROOT, tokens(10)))
    before = shape_of(ledger)
    ledger.advance(T0 + timedelta(minutes=11))  # the charge ages out
    assert before != shape_of(ledger)
    assert rolled(before, shape_of(ledger)) == []


def test_caps_changed_are_not_a_roll_over() -> None:
    before = shape_of(make_ledger({"tokens": 1000}, windows=[Window.hour(tokens=100)]))
    later = make_ledger({"tokens": 2000}, windows=[Window.hour(tokens=100)])
    later.advance(T0 + timedelta(hours=1))
    assert rolled(before, shape_of(later)) == []


def test_the_count_fields_of_a_window() -> None:
    key = '["team-a",null,null]'
    assert in_windows(f"{key}\tw1.used\t2", [1])
    assert in_windows(f"{key}\tw1.by_model\t2\tgpt-4o", [0, 1])
    assert not in_windows(f"{key}\tw1.used\t2", [0])
    assert not in_windows(f"{key}\tw12.used\t2", [1])
    assert not in_windows(f"{key}\tused\t2", [0, 1])
    assert not in_windows(f"{key}\tby_model\t2\tw1.x", [1])
