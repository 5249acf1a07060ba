"""Tenants and waiting requests in the pure ledger: scopes made on first use, shared and
own caps, run-time caps, idle tenants forgotten, and the order in which
``Ledger.serve_waiting`` grants, holds up and answers waiting requests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from core_support import (
    T0,
    TOKENS,
    ZERO,
    apply,
    assert_refusal,
    figures,
    make_ledger,
    state,
    tokens,
)
from treasurer._core.commands import (
    Charge,
    CloseChild,
    Commit,
    OpenChild,
    Record,
    Release,
    RemoveOverride,
    Reserve,
    Reset,
    SetOverride,
    SetTenantCaps,
    TakeBack,
)
from treasurer._core.config import Limits
from treasurer._core.events import Override
from treasurer._core.ledger import Ledger
from treasurer._core.outcomes import ChildOpened, Granted, Refusal, Rejected
from treasurer._core.scopes import ROOT, ScopePath, tenant_path
from treasurer._core.tree import IDLE_TENANTS_KEPT
from treasurer._core.windows import Window

ALICE = tenant_path("alice")
BOB = tenant_path("bob")
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def held(ledger: object, scope: tuple[str, ...], n: int) -> int:
    """Reserve ``n`` tokens in ``scope`` that never expire; the reservation's id."""
    reply = apply(ledger, Reserve(scope, tokens(n), timedelta.max))  # type: ignore[arg-type]
    assert isinstance(reply, Granted), reply
    return reply.reservation


def answered(answers: Sequence[tuple[int, object]]) -> list[int]:
    return [index for index, _ in answers]


class TestTenantScopes:
    def test_a_tenant_is_made_on_first_use_with_the_defaults(self) -> None:
        """A tenant never configured gets the default caps; its usage counts in its own
        scope and in the shared one."""
        ledger = make_ledger({"tokens": 1000}, tenant_defaults=Limits.build({"tokens": 300}))
        assert ALICE not in ledger.tree.scopes
        apply(ledger, Record(ALICE, tokens(200)))
        assert state(ledger, ALICE) == ((0, 0, 200, 0, 1), ZERO, 1, 0)
        assert state(ledger) == ((0, 0, 200, 0, 1), ZERO, 1, 0)
        assert figures(ledger, ALICE).caps[TOKENS] == 300
        refusal = apply(ledger, Record(ALICE, tokens(101)))
        assert_refusal(
            refusal,
            too_large=False,
            axis=TOKENS,
            cap=300,
            requested=101,
            used=200,
            reserved=0,
            tenant="alice",
        )
        assert "tenant 'alice'" in str(refusal.error())  # type: ignore[union-attr]

    def test_configured_tenants_have_their_own_caps(self) -> None:
        """A configured tenant's caps replace the defaults for it only."""
        ledger = make_ledger(
            tenant_defaults=Limits.build({"tokens": 100}),
            tenants={"bob": Limits.build({"tokens": 500})},
        )
        apply(ledger, Record(ALICE, tokens(1)))
        apply(ledger, Record(BOB, tokens(1)))
        assert figures(ledger, ALICE).caps[TOKENS] == 100
        assert figures(ledger, BOB).caps[TOKENS] == 500

    def test_a_tenant_request_must_fit_the_shared_caps(self) -> None:
        """The budget's caps are the total all tenants share: they refuse as the budget's."""
        ledger = make_ledger({"tokens": 100}, tenant_defaults=Limits.build({"tokens": 80}))
        apply(ledger, Record(ALICE, tokens(70)))
        held(ledger, BOB, 20)
        refusal = apply(ledger, Reserve(BOB, tokens(20)))
        assert_refusal(
            refusal, too_large=False, axis=TOKENS, cap=100, requested=20, used=70, reserved=20
        )
        assert isinstance(refusal, Refusal)
        assert refusal.scope == ROOT

    def test_too_large_anywhere_comes_before_no_room_anywhere(self) -> None:
        """A request too large for the shared caps is refused as such even when its tenant's
        own cap has no room."""
        ledger = make_ledger({"tokens": 50}, tenant_defaults=Limits.build({"tokens": 100}))
        held(ledger, ALICE, 40)
        refusal = apply(ledger, Reserve(ALICE, tokens(70)))
        assert_refusal(
            refusal, too_large=True, axis=TOKENS, cap=50, requested=70, used=0, reserved=40
        )

    def test_reset_of_the_budget_zeroes_every_tenant(self) -> None:
        """A reset of the budget zeroes every tenant's usage; a tenant's reset only its own,
        and the shared total keeps counting what it spent."""
        ledger = make_ledger(tenant_defaults=Limits.build({"tokens": 100}))
        apply(ledger, Record(ALICE, tokens(30)))
        apply(ledger, Record(BOB, tokens(40)))
        assert apply(ledger, Reset(ALICE)) is None
        assert [state(ledger, path)[0][TOKENS] for path in (ROOT, ALICE, BOB)] == [70, 0, 40]
        assert apply(ledger, Reset(ROOT)) is None
        assert [state(ledger, path)[0][TOKENS] for path in (ROOT, ALICE, BOB)] == [0, 0, 0]

    def test_tenant_overrides_raise_that_tenant_only(self) -> None:
        """An override set in a tenant's scope raises that tenant's cap, and is removed only
        through that scope."""
        ledger = make_ledger(tenant_defaults=Limits.build({"tokens": 100}))
        apply(ledger, Record(ALICE, tokens(100)))
        override = apply(ledger, SetOverride(ALICE, "lifetime", (0, 0, 50, 0, 0), T0 + HOUR))
        assert isinstance(override, Override)
        assert override.tenant == "alice"
        assert figures(ledger, ALICE).limits[TOKENS] == 150
        apply(ledger, Record(BOB, tokens(1)))
        assert figures(ledger, BOB).limits[TOKENS] == 100
        assert isinstance(apply(ledger, RemoveOverride(ROOT, override.id)), Rejected)
        assert isinstance(apply(ledger, RemoveOverride(BOB, override.id)), Rejected)
        assert apply(ledger, RemoveOverride(ALICE, override.id)) is None
        assert figures(ledger, ALICE).limits[TOKENS] == 100


class TestTenantCapsAtRunTime:
    def test_new_caps_apply_from_now_on(self) -> None:
        """Setting a tenant's caps changes them at once; None goes back to the defaults."""
        ledger = make_ledger(tenant_defaults=Limits.build({"tokens": 100}))
        apply(ledger, Record(ALICE, tokens(90)))
        assert apply(ledger, SetTenantCaps("alice", Limits.build({"tokens": 50}))) is None
        assert isinstance(apply(ledger, Record(ALICE, tokens(1))), Refusal)
        assert figures(ledger, ALICE).caps[TOKENS] == 50
        apply(ledger, SetTenantCaps("alice", None))
        assert figures(ledger, ALICE).caps[TOKENS] == 100
        assert state(ledger, ALICE)[0][TOKENS] == 90  # usage is kept
        apply(ledger, SetTenantCaps("carol", Limits.build({"tokens": 7})))
        assert isinstance(apply(ledger, Record(tenant_path("carol"), tokens(8))), Refusal)

    def test_a_window_kept_under_its_name_keeps_its_usage(self) -> None:
        """A window of the same name and kind carries its usage over to the new caps; a
        window of another kind starts afresh."""
        ledger = make_ledger(
            tenant_defaults=Limits.build({}, windows=[Window.hour(tokens=100)]),
        )
        apply(ledger, Record(ALICE, tokens(60)))
        apply(ledger, SetTenantCaps("alice", Limits.build({}, windows=[Window.hour(tokens=70)])))
        refusal = apply(ledger, Record(ALICE, tokens(11)))
        assert isinstance(refusal, Refusal)
        assert (refusal.window, refusal.used) == ("hour", 60)
        swapped = Limits.build({}, windows=[Window.day(name="hour", tokens=70)])
        apply(ledger, SetTenantCaps("alice", swapped))
        assert figures(ledger, ALICE).windows[0].used == ZERO

    def test_an_override_of_a_window_that_is_gone_ends_with_it(self) -> None:
        """New caps without a window drop the overrides of that window."""
        ledger = make_ledger(tenant_defaults=Limits.build({}, windows=[Window.hour(tokens=10)]))
        override = apply(ledger, SetOverride(ALICE, "hour", (0, 0, 5, 0, 0), T0 + HOUR))
        assert isinstance(override, Override)
        apply(ledger, SetTenantCaps("alice", Limits.build({"tokens": 100})))
        assert figures(ledger, ALICE).overrides == ()
        assert isinstance(apply(ledger, RemoveOverride(ALICE, override.id)), Rejected)
        assert ledger.next_wakeup() is None  # nothing is left to expire


class TestIdleTenants:
    def test_idle_tenants_are_forgotten_beyond_the_most_recent(self) -> None:
        """Beyond IDLE_TENANTS_KEPT idle tenants the least recently used are forgotten; a
        tenant holding a reservation is never forgotten; a forgotten one starts from zero."""
        ledger = make_ledger()
        busy = held(ledger, tenant_path("busy"), 5)
        count = IDLE_TENANTS_KEPT + 10
        forgotten = []
        for number in range(count):  # one batch each, as a store applies them
            apply(ledger, Record(tenant_path(f"t{number}"), tokens(1)))
            forgotten += ledger.tree.forget_idle(T0, [])
            ledger.tree.views(T0)
        assert sorted(forgotten) == sorted(tenant_path(f"t{n}") for n in range(10))
        assert tenant_path("busy") in ledger.tree.scopes
        assert tenant_path(f"t{count - 1}") in ledger.tree.scopes
        assert state(ledger)[0][TOKENS] == count  # the budget keeps counting all of it
        apply(ledger, Release(tenant_path("busy"), busy))
        apply(ledger, Record(tenant_path("t0"), tokens(2)))
        assert state(ledger, tenant_path("t0"))[0][TOKENS] == 2

    def test_a_tenant_with_live_window_usage_is_kept(self) -> None:
        """A tenant whose window still counts usage is not idle until the window resets."""
        ledger = make_ledger(tenant_defaults=Limits.build({}, windows=[Window.hour(tokens=10)]))
        apply(ledger, Record(ALICE, tokens(10)))
        for number in range(IDLE_TENANTS_KEPT + 5):
            apply(ledger, Record(tenant_path(f"t{number}"), (0, 0, 0, 0, 1)))
            ledger.tree.forget_idle(T0, [])
            ledger.tree.views(T0)
        assert ALICE in ledger.tree.scopes
        assert isinstance(apply(ledger, Record(ALICE, tokens(1))), Refusal)


def changed_views(
    ledger: Ledger, step: Callable[[], object]
) -> tuple[set[ScopePath], set[ScopePath]]:
    """Run ``step`` as a store runs a batch (time first); the scopes whose figures it
    changed (or that it forgot), and those the ledger republished."""
    tree = ledger.tree
    tree.views(ledger.now)  # what the last batch published
    before = {path: state(ledger, path) for path in tree.scopes}
    ledger.advance(ledger.now)
    step()
    published = set(tree.views(ledger.now))  # a scope gone is published as None
    changed = {
        path for path in tree.scopes if path not in before or state(ledger, path) != before[path]
    }
    return changed | (set(before) - set(tree.scopes)), published


class TestPublishedViews:
    """A store publishes, after each batch, the figures of every scope the batch changed
    (``tree.views``): a tenant's or a child's snapshot shows its own writes."""

    def test_every_change_to_a_tenant_is_published(self) -> None:
        """Commits, releases, expiries and take-backs in a tenant republish it."""
        ledger = make_ledger(tenant_defaults=Limits.build({"tokens": 500}))
        first = held(ledger, ALICE, 100)
        second = held(ledger, ALICE, 50)
        expiring = apply(ledger, Reserve(ALICE, tokens(30), timedelta(minutes=1)))
        assert isinstance(expiring, Granted)
        apply(ledger, Record(ALICE, tokens(20)))
        steps = {
            "commit": lambda: apply(ledger, Commit(ALICE, first, tokens(80))),
            "release": lambda: apply(ledger, Release(ALICE, second)),
            "expiry": lambda: ledger.advance(T0 + HOUR),
            "take back": lambda: apply(ledger, TakeBack(ALICE, tokens(20), T0)),
        }
        for name, step in steps.items():
            changed, published = changed_views(ledger, step)
            assert ALICE in changed, name
            assert changed <= published, f"{name}: {sorted(changed - published)} not published"

    def test_every_change_to_a_child_and_its_parent_is_published(self) -> None:
        """Settling in a child, spending in a grandchild and closing a child republish
        every scope whose figures moved."""
        ledger = make_ledger(tenant_defaults=Limits.build({"tokens": 500}))
        child = apply(ledger, OpenChild(ALICE, None, (None, None, 200, None, None)))
        assert isinstance(child, ChildOpened)
        grandchild = apply(ledger, OpenChild(child.path, None, (None,) * 5))
        assert isinstance(grandchild, ChildOpened)
        reservation = held(ledger, child.path, 100)
        steps = {
            "commit in a child": lambda: apply(ledger, Commit(child.path, reservation, tokens(90))),
            "spend in a grandchild": lambda: apply(ledger, Record(grandchild.path, tokens(40))),
            "close a grandchild": lambda: apply(ledger, CloseChild(grandchild.path)),
            "close a child": lambda: apply(ledger, CloseChild(child.path)),
        }
        for name, step in steps.items():
            changed, published = changed_views(ledger, step)
            assert changed, name
            assert changed <= published, f"{name}: {sorted(changed - published)} not published"


class TestServingWaiters:
    def test_waiters_are_granted_first_come_first_served(self) -> None:
        """A refused head holds up smaller requests of its scope behind it, so it is never
        overtaken; once room frees they are granted in arrival order."""
        ledger = make_ledger({"tokens": 100})
        first = held(ledger, ROOT, 60)
        waiting = [Reserve(ROOT, tokens(50)), Reserve(ROOT, tokens(10))]
        assert ledger.serve_waiting(waiting) == []
        apply(ledger, Release(ROOT, first))
        answers = ledger.serve_waiting(waiting)
        assert answered(answers) == [0, 1]
        assert all(isinstance(reply, Granted) for _, reply in answers)
        assert state(ledger)[1][TOKENS] == 60

    def test_a_tenant_over_its_own_cap_holds_up_only_that_tenant(self) -> None:
        """A waiter refused by its tenant's own cap holds up that tenant's later waiters,
        not other tenants' nor the budget's own."""
        ledger = make_ledger({"tokens": 1000}, tenant_defaults=Limits.build({"tokens": 50}))
        held(ledger, ALICE, 40)
        waiting = [
            Reserve(ALICE, tokens(20)),  # alice has room for 10: waits
            Reserve(ALICE, tokens(5)),  # would fit, but is behind alice's head
            Reserve(BOB, tokens(30)),
            Reserve(ROOT, tokens(30)),
        ]
        assert answered(ledger.serve_waiting(waiting)) == [2, 3]

    def test_the_shared_caps_hold_up_everyone(self) -> None:
        """A waiter refused by the budget's own caps holds up every later waiter."""
        ledger = make_ledger({"tokens": 100}, tenant_defaults=Limits.build({"tokens": 50}))
        held(ledger, ROOT, 80)
        waiting = [Reserve(ROOT, tokens(30)), Reserve(ALICE, tokens(5)), Reserve(BOB, tokens(5))]
        assert ledger.serve_waiting(waiting) == []

    def test_a_waiter_that_can_never_fit_is_answered_at_once(self) -> None:
        """A head too large for a cap, or whose lifetime cap spent usage already fills,
        is answered with its refusal and holds up nobody."""
        ledger = make_ledger({"tokens": 100})
        apply(ledger, Record(ROOT, tokens(70)))
        waiting = [Reserve(ROOT, tokens(101)), Reserve(ROOT, tokens(40)), Reserve(ROOT, tokens(5))]
        answers = ledger.serve_waiting(waiting)
        assert answered(answers) == [0, 1, 2]
        too_large, final, granted = (reply for _, reply in answers)
        assert isinstance(too_large, Refusal)
        assert too_large.too_large
        assert isinstance(final, Refusal)
        assert final.final
        assert not final.too_large
        assert isinstance(granted, Granted)

    def test_a_waiter_the_budgets_spent_usage_leaves_no_room_for_fails_at_once(self) -> None:
        """A waiter that spent usage alone keeps out of a lifetime cap above it (the
        budget's) is answered at once, even while its tenant's own cap also has no room."""
        ledger = make_ledger({"tokens": 100}, tenant_defaults=Limits.build({"tokens": 50}))
        apply(ledger, Record(ROOT, tokens(90)))
        held(ledger, ALICE, 10)  # alice: 10 of 50 held; the budget: 90 used + 10 of 100
        # alice: 10 + 45 > 50 (a release would make room); the budget: 90 + 45 > 100 for good.
        answers = ledger.serve_waiting([Reserve(ALICE, tokens(45))])
        assert answered(answers) == [0]
        refusal = answers[0][1]
        assert isinstance(refusal, Refusal)
        assert refusal.final

    def test_a_new_waiter_that_can_never_fit_is_answered_even_when_held_up(self) -> None:
        """A request that just joined the queue and can never fit is answered at once,
        even behind a head that waits; one that waited already is left until limits drop."""
        ledger = make_ledger({"tokens": 100})
        held(ledger, ROOT, 90)
        waiting = [Reserve(ROOT, tokens(20)), Reserve(ROOT, tokens(500))]
        assert ledger.serve_waiting(waiting, new_from=2) == []  # both waited already
        answers = ledger.serve_waiting(waiting, new_from=1)
        assert answered(answers) == [1]
        assert isinstance(answers[0][1], Refusal)
        assert answers[0][1].too_large

    def test_serving_again_without_a_change_grants_nothing_more(self) -> None:
        """The answers of a pass depend only on the state, not on which waiters are new: a
        waiter held up by its tenant's head does not hold up the budget's later waiters,
        whether it just came or not (else a waiter that fits would wait for an unrelated
        call to wake the budget)."""
        ledger = make_ledger({"tokens": 100}, tenant_defaults=Limits.build({"tokens": 50}))
        held(ledger, ALICE, 30)
        held(ledger, ROOT, 60)  # the budget: 90 of 100 held
        waiting = [
            Reserve(ALICE, tokens(25)),  # alice: 30 + 25 > 50, waits
            Reserve(ALICE, tokens(15)),  # behind alice's head (the budget has no room either)
            Reserve(ROOT, tokens(10)),  # fits the budget: 90 + 10
        ]
        first = ledger.serve_waiting(waiting, new_from=0)
        second = ledger.serve_waiting(
            [w for i, w in enumerate(waiting) if i not in answered(first)], new_from=3
        )
        assert answered(first) == [2]
        assert second == []

    def test_a_waiter_is_judged_by_its_tenants_current_windows(self) -> None:
        """A tenant's windows move only when it is used; serving its waiter must still see
        them as of now (found by the old state machine, kept as a regression test)."""
        day = Window.day(tokens=10)
        ledger = make_ledger({"tokens": 30}, tenant_defaults=Limits.build({}, windows=[day]))
        apply(ledger, Record(ALICE, tokens(7)))  # alice's day: 7 of 10; shared: 7 of 30
        blocker = held(ledger, ROOT, 9)
        waiting = [
            Reserve(ROOT, tokens(15)),  # 7 + 9 + 15 > 30: holds up everyone
            Reserve(ALICE, tokens(5)),  # alice's day could not take it today
        ]
        assert ledger.serve_waiting(waiting) == []
        tomorrow = T0 + DAY
        ledger.advance(tomorrow)  # a new day for alice, who is not used
        apply(ledger, Release(ROOT, blocker), tomorrow)  # shared room for both: 7 + 15 + 5
        answers = ledger.serve_waiting(waiting, new_from=2)
        assert answered(answers) == [0, 1], "the second waiter was judged by yesterday's usage"

    def test_a_held_up_waiter_that_can_never_fit_is_answered_once_limits_drop(self) -> None:
        """When a shared override ends, a waiter held up behind its tenant's head that no
        longer ever fits is answered at once (found by the old state machine, kept as a
        regression test)."""
        ledger = make_ledger({"tokens": 10}, tenant_defaults=Limits.build({"tokens": 20}))
        override = apply(ledger, SetOverride(ROOT, "lifetime", (0, 0, 10, 0, 0), T0 + HOUR))
        assert isinstance(override, Override)
        held(ledger, ALICE, 15)  # alice: 15 of 20; shared: 15 of 10 + 10
        waiting = [Reserve(ALICE, tokens(8)), Reserve(ALICE, tokens(12))]  # alice has no room
        assert ledger.serve_waiting(waiting) == []
        assert apply(ledger, RemoveOverride(ROOT, override.id)) is None  # shared back to 10
        answers = ledger.serve_waiting(waiting, new_from=2)
        assert answered(answers) == [1], "the waiter that can never fit was left waiting"
        reply = answers[0][1]
        assert isinstance(reply, Refusal)
        assert reply.too_large
        assert (reply.tenant, reply.window) == (None, "lifetime")

    def test_a_waiter_that_no_longer_fits_new_tenant_caps_is_answered(self) -> None:
        """Lowering a tenant's caps answers its held-up waiters that can never fit now."""
        ledger = make_ledger(tenant_defaults=Limits.build({"tokens": 100}))
        held(ledger, ALICE, 90)
        waiting = [Reserve(ALICE, tokens(20)), Reserve(ALICE, tokens(60))]
        assert ledger.serve_waiting(waiting) == []
        apply(ledger, SetTenantCaps("alice", Limits.build({"tokens": 50})))
        answers = ledger.serve_waiting(waiting, new_from=2)
        assert answered(answers) == [1]
        assert isinstance(answers[0][1], Refusal)
        assert answers[0][1].tenant == "alice"

    def test_a_child_budget_waits_for_room_to_be_carved(self) -> None:
        """A child waiting to open is granted, in its turn, once its caps fit."""
        ledger = make_ledger({"tokens": 100})
        first = held(ledger, ROOT, 70)
        waiting = [OpenChild(ROOT, "sub", (None, None, 50, None, None))]
        assert ledger.serve_waiting(waiting) == []
        apply(ledger, Commit(ROOT, first, tokens(40)))
        (answer,) = ledger.serve_waiting(waiting)
        assert isinstance(answer[1], ChildOpened)
        assert answer[1].name == "sub"
        assert state(ledger) == ((0, 0, 40, 0, 1), (0, 0, 50, 0, 0), 1, 0)

    def test_calls_that_do_not_wait_are_not_held_back(self) -> None:
        """A record, a charge or a plain reserve gets what is free now, waiters or not."""
        ledger = make_ledger({"tokens": 100})
        held(ledger, ROOT, 60)
        waiting = [Reserve(ROOT, tokens(50))]
        assert ledger.serve_waiting(waiting) == []
        held(ledger, ROOT, 30)
        assert ledger.serve_waiting(waiting) == []
        assert apply(ledger, Charge(ROOT, tokens(5))) is not None
        assert state(ledger)[1][TOKENS] == 90
