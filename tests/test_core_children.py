"""Child budgets in the pure ledger: a child is a scope of its parent's ledger. Its
named caps are carved (held) in its parent when it opens; every request in it must
fit its caps and every ancestor's (tenant, budget, windows); its spend counts in
every ancestor as it happens; what is left of the carve comes back when it closes,
and what settles in it afterwards still reaches the books."""

from __future__ import annotations

from datetime import timedelta

from core_support import (
    NAME,
    T0,
    TOKENS,
    USD,
    ZERO,
    apply,
    assert_refusal,
    everything,
    figures,
    make_ledger,
    only_tokens,
    state,
    tokens,
)
from treasurer import ReservationExpiredEvent, UsageRecorded
from treasurer._core.axes import NO_CAPS, parse, parse_caps
from treasurer._core.commands import (
    Charge,
    CloseChild,
    Commit,
    Consume,
    OpenChild,
    Record,
    Refund,
    Release,
    Reserve,
    Reset,
)
from treasurer._core.config import Limits
from treasurer._core.ledger import Ledger
from treasurer._core.outcomes import (
    Charged,
    ChildOpened,
    Granted,
    Refusal,
    Rejected,
    ScopeView,
    Settled,
)
from treasurer._core.scopes import ROOT, ScopePath, tenant_path
from treasurer._core.windows import Window

ALICE = tenant_path("alice")
HOUR = timedelta(hours=1)


def open_child(
    ledger: Ledger, parent: ScopePath = ROOT, name: str | None = None, **caps: object
) -> ChildOpened:
    reply = apply(ledger, OpenChild(parent, name, parse_caps(caps)))
    assert isinstance(reply, ChildOpened), reply
    return reply


def grant(ledger: Ledger, scope: ScopePath, amount: tuple[int, ...], **fields: object) -> int:
    reply = apply(ledger, Reserve(scope, amount, **fields))  # type: ignore[arg-type]
    assert isinstance(reply, Granted), reply
    return reply.reservation


class TestCarving:
    def test_a_child_holds_its_caps_in_its_parent(self) -> None:
        """Opening a child reserves its named caps in its parent, and only those."""
        ledger = make_ledger({"tokens": 1000, "usd": 5})
        child = open_child(ledger, tokens=300)
        assert child.name == f"{NAME}/child-1"
        assert state(ledger) == (ZERO, only_tokens(300), 0, 0)
        view = figures(ledger, child.path)
        assert (view.caps[TOKENS], view.caps[USD], view.child, view.tenant) == (
            300,
            None,
            child.name,
            None,
        )

    def test_spend_inside_the_carve_counts_in_the_parent_as_it_happens(self) -> None:
        """A child's usage is the parent's at once; the parent holds what is left of the carve."""
        ledger = make_ledger({"tokens": 1000})
        child = open_child(ledger, tokens=300)
        apply(ledger, Record(child.path, tokens(100)))
        assert state(ledger) == ((0, 0, 100, 0, 1), only_tokens(200), 1, 0)
        grant(ledger, child.path, tokens(150))
        # Inside the carve no more tokens are held; the request it counts is not carved.
        assert state(ledger)[1] == (0, 0, 200, 0, 1)
        assert state(ledger)[3] == 1

    def test_the_carve_does_not_fit(self) -> None:
        """A carve with no room in its parent is refused as the parent's; nothing changes."""
        ledger = make_ledger({"tokens": 1000})
        apply(ledger, Record(ROOT, tokens(800)))
        before = everything(ledger)
        refusal = apply(ledger, OpenChild(ROOT, None, parse_caps({"tokens": 300})))
        assert_refusal(
            refusal, too_large=False, axis=TOKENS, cap=1000, requested=300, used=800, reserved=0
        )
        assert everything(ledger) == before

    def test_a_per_request_cap_does_not_bound_a_carve(self) -> None:
        """A child's caps are not one request: a budget that caps each request at 8,000
        tokens can open a child of 20,000, whose requests are still capped at 8,000."""
        ledger = make_ledger({"tokens": 100_000}, per_request={"tokens": 8_000})
        child = apply(ledger, OpenChild(ROOT, None, parse_caps({"tokens": 20_000})))
        assert isinstance(child, ChildOpened), child
        refusal = apply(ledger, Record(child.path, tokens(8_001)))
        assert_refusal(
            refusal,
            too_large=True,
            axis=TOKENS,
            cap=8_000,
            requested=8_001,
            used=0,
            reserved=0,
            window="request",
        )

    def test_the_child_names_itself_in_its_refusals(self) -> None:
        """A refusal by the child's own cap names the child; its events carry its name."""
        ledger = make_ledger({"tokens": 1000})
        child = open_child(ledger, name="search", tokens=100)
        refusal = apply(ledger, Record(child.path, tokens(101)))
        assert_refusal(
            refusal,
            too_large=True,
            axis=TOKENS,
            cap=100,
            requested=101,
            used=0,
            reserved=0,
            child="search",
        )
        events = ledger.apply(Record(child.path, tokens(10)), T0).events
        assert isinstance(events[0], UsageRecorded)
        assert events[0].child == "search"

    def test_children_nest_and_are_named_after_their_parent(self) -> None:
        """A child of a child is carved from it, and named after it by default."""
        ledger = make_ledger({"tokens": 1000})
        outer = open_child(ledger, tokens=500)
        inner = open_child(ledger, outer.path, tokens=200)
        assert inner.name == f"{outer.name}/child-2"
        assert state(ledger, outer.path)[1] == only_tokens(200)
        assert state(ledger)[1] == only_tokens(500)
        apply(ledger, Record(inner.path, tokens(250)))  # past inner's carve: too large there
        assert state(ledger, inner.path)[0] == ZERO
        apply(ledger, Record(inner.path, tokens(150)))
        assert [state(ledger, p)[0][TOKENS] for p in (inner.path, outer.path, ROOT)] == [150] * 3
        assert state(ledger, outer.path)[1] == only_tokens(50)
        assert state(ledger)[1] == only_tokens(350)


class TestTheParentBoundsTheRest:
    def test_axes_the_child_does_not_cap_are_bounded_by_the_parent(self) -> None:
        """A child capped only in USD spends tokens straight from its parent's cap."""
        ledger = make_ledger({"tokens": 1000, "usd": 5})
        child = open_child(ledger, usd=1)
        apply(ledger, Record(child.path, parse({"tokens": 900, "usd": 0.5})))
        refusal = apply(ledger, Record(child.path, tokens(101)))
        assert_refusal(
            refusal, too_large=False, axis=TOKENS, cap=1000, requested=101, used=900, reserved=0
        )
        grant(ledger, child.path, tokens(50))
        assert state(ledger)[1] == (0, 0, 50, 5 * 10**8, 1)

    def test_a_parents_day_window_refuses_the_childs_token_spend(self) -> None:
        """A child capped only on USD, under a budget with a day window on tokens: the
        child's token spend is refused by the parent's window."""
        ledger = make_ledger({"usd": 10}, windows=[Window.day(tokens=500)])
        child = open_child(ledger, usd=1)
        apply(ledger, Record(child.path, tokens(400)))
        refusal = apply(ledger, Record(child.path, tokens(101)))
        assert_refusal(
            refusal,
            too_large=False,
            axis=TOKENS,
            cap=500,
            requested=101,
            used=400,
            reserved=0,
            window="day",
            resets_at=T0.replace(hour=0) + timedelta(days=1),
        )
        too_large = apply(ledger, Record(child.path, tokens(501)))
        assert isinstance(too_large, Refusal)
        assert (too_large.too_large, too_large.window, too_large.child) == (True, "day", None)
        apply(ledger, Record(child.path, tokens(100)))
        assert figures(ledger).windows[0].used[TOKENS] == 500

    def test_a_tenants_child_is_bounded_by_the_tenants_hourly_window(self) -> None:
        """A child of a tenant must fit the tenant's hourly window too, and the hour's
        rollover frees it."""
        ledger = make_ledger(
            tenant_defaults=Limits.build({}, windows=[Window.hour(tokens=500)]),
        )
        child = open_child(ledger, ALICE, usd=1)
        assert child.name == f"{NAME}/alice/child-1"
        apply(ledger, Record(child.path, tokens(400)))
        refusal = apply(ledger, Record(child.path, tokens(200)))
        assert_refusal(
            refusal,
            too_large=False,
            axis=TOKENS,
            cap=500,
            requested=200,
            used=400,
            reserved=0,
            window="hour",
            tenant="alice",
            resets_at=T0 + HOUR,
        )
        assert figures(ledger, ALICE).windows[0].used[TOKENS] == 400
        ledger.advance(T0 + HOUR)
        assert isinstance(apply(ledger, Record(child.path, tokens(500)), T0 + HOUR), Charged)
        assert isinstance(apply(ledger, Record(child.path, tokens(1)), T0 + HOUR), Refusal)

    def test_a_tenants_child_is_carved_from_the_tenant(self) -> None:
        """A child of a tenant holds its carve in the tenant (and so in the budget); the
        tenant's cap refuses a carve that does not fit it."""
        ledger = make_ledger({"tokens": 10_000}, tenant_defaults=Limits.build({"tokens": 500}))
        child = open_child(ledger, ALICE, tokens=300)
        assert state(ledger, ALICE)[1] == only_tokens(300)
        assert state(ledger)[1] == only_tokens(300)
        refusal = apply(ledger, OpenChild(ALICE, None, parse_caps({"tokens": 300})))
        assert_refusal(
            refusal,
            too_large=False,
            axis=TOKENS,
            cap=500,
            requested=300,
            used=0,
            reserved=300,
            tenant="alice",
        )
        apply(ledger, Record(child.path, tokens(300)))
        assert [state(ledger, p)[0][TOKENS] for p in (child.path, ALICE, ROOT)] == [300] * 3

    def test_spend_past_the_carve_is_charged_to_every_ancestor(self) -> None:
        """A commit above its estimate in a child is charged in full up the tree, even
        past the caps (that spend happened), and the carve no longer holds anything."""
        ledger = make_ledger({"tokens": 1000})
        child = open_child(ledger, tokens=100)
        reservation = grant(ledger, child.path, tokens(80))
        apply(ledger, Commit(child.path, reservation, tokens(150)))
        assert state(ledger, child.path)[:2] == ((0, 0, 150, 0, 1), ZERO)
        assert state(ledger)[:2] == ((0, 0, 150, 0, 1), ZERO)


class TestGrandchildren:
    def test_spend_in_a_grandchild_uses_up_its_parents_carve(self) -> None:
        """Usage in a child of a child counts against the middle child's carve: its parent
        holds only what is left of the carve, so what still fits the child is admitted."""
        ledger = make_ledger({"tokens": 100})
        child = open_child(ledger, tokens=100)
        grandchild = open_child(ledger, child.path)  # no caps of its own
        apply(ledger, Record(grandchild.path, only_tokens(60)))
        assert state(ledger)[:2] == (only_tokens(60), only_tokens(40))
        assert isinstance(apply(ledger, Record(child.path, only_tokens(10))), Charged)
        assert state(ledger)[:2] == (only_tokens(70), only_tokens(30))

    def test_a_refund_in_a_grandchild_never_lets_the_budget_overspend(self) -> None:
        """A refund (or a take-back) in a grandchild gives its parent's carve back in full,
        so the budget can never admit past its cap around it."""
        ledger = make_ledger({"tokens": 100})
        child = open_child(ledger, tokens=100)
        grandchild = open_child(ledger, child.path)
        apply(ledger, Consume(grandchild.path, only_tokens(60)))
        apply(ledger, Charge(child.path, ZERO))
        assert apply(ledger, Refund(grandchild.path, 0, 60)) is None
        assert state(ledger)[:2] == (ZERO, only_tokens(100))
        admitted = 0
        for scope, amount in ((ROOT, 60), (child.path, 100)):
            if isinstance(apply(ledger, Record(scope, only_tokens(amount))), Charged):
                admitted += amount
        used, reserved, _, _ = state(ledger)
        assert used[TOKENS] + reserved[TOKENS] <= 100
        assert admitted == 100


class TestClosing:
    def test_closing_gives_back_what_is_left_of_the_carve(self) -> None:
        """When a child closes, its unspent carve comes back and its final figures are
        returned; later requests in it are rejected as closed."""
        ledger = make_ledger({"tokens": 1000})
        child = open_child(ledger, tokens=300)
        apply(ledger, Record(child.path, tokens(100)))
        final = apply(ledger, CloseChild(child.path))
        assert isinstance(final, ScopeView)
        assert (final.used[TOKENS], final.child) == (100, child.name)
        assert state(ledger) == ((0, 0, 100, 0, 1), ZERO, 1, 0)
        assert child.path not in ledger.tree.scopes
        for command in (
            Record(child.path, tokens(1)),
            Reserve(child.path, tokens(1)),
            OpenChild(child.path, None, NO_CAPS),
        ):
            reply = apply(ledger, command)
            assert isinstance(reply, Rejected)
            assert reply.kind == "closed"
        assert apply(ledger, CloseChild(child.path)) is None  # closing twice is harmless

    def test_a_reservation_open_at_close_keeps_holding_and_settles_later(self) -> None:
        """A reservation still open when its child closes keeps holding in the parent and
        settles into the books as usual; then the child is gone."""
        ledger = make_ledger({"tokens": 1000})
        child = open_child(ledger, tokens=300)
        reservation = grant(ledger, child.path, tokens(200))
        apply(ledger, CloseChild(child.path))
        assert state(ledger)[1:] == (tokens(200), 0, 1)
        assert isinstance(apply(ledger, Record(child.path, tokens(1))), Rejected)
        assert apply(ledger, Commit(child.path, reservation, tokens(250))) == Settled(reservation)
        assert state(ledger) == ((0, 0, 250, 0, 1), ZERO, 1, 0)
        assert child.path not in ledger.tree.scopes

    def test_a_child_cannot_be_reset(self) -> None:
        """Resetting a child is rejected: its spend is its parent's too."""
        ledger = make_ledger({"tokens": 1000})
        child = open_child(ledger, tokens=300)
        apply(ledger, Record(child.path, tokens(100)))
        reply = apply(ledger, Reset(child.path))
        assert isinstance(reply, Rejected)
        assert reply.kind == "invalid_option"
        assert state(ledger, child.path)[0][TOKENS] == 100

    def test_an_expiry_in_a_child_names_it(self) -> None:
        """A reservation of a child expires like any other, with an event naming the child."""
        ledger = make_ledger({"tokens": 1000}, reservation_ttl=timedelta(minutes=5))
        child = open_child(ledger, name="sub", tokens=300)
        grant(ledger, child.path, tokens(100))
        (event,) = ledger.advance(T0 + HOUR)
        assert isinstance(event, ReservationExpiredEvent)
        assert (event.child, event.tenant) == ("sub", None)
        assert state(ledger)[1] == only_tokens(300)

    def test_a_late_commit_in_a_tenants_child_reaches_the_tenant(self) -> None:
        """A reservation of a tenant's child that expired after the child closed, committed
        late, is charged to the tenant as well as the budget: its caps must see that spend."""
        ledger = make_ledger(
            {"tokens": 10_000},
            tenant_defaults=Limits.build({"tokens": 500}),
            reservation_ttl=timedelta(minutes=1),
        )
        child = open_child(ledger, ALICE, tokens=100)
        reservation = grant(ledger, child.path, tokens(50))
        apply(ledger, CloseChild(child.path))
        later = T0 + HOUR
        ledger.advance(later)
        reply = apply(ledger, Commit(child.path, reservation, tokens(70)), later)
        assert reply == Settled(reservation, expired=True)
        assert state(ledger)[0][TOKENS] == 70
        assert state(ledger, ALICE)[0][TOKENS] == 70

    def test_a_charge_to_a_closed_tenants_child_reaches_the_tenant(self) -> None:
        """Usage charged to a tenant's child after it closed is the tenant's as well as the
        budget's."""
        ledger = make_ledger(tenant_defaults=Limits.build({"tokens": 500}))
        child = open_child(ledger, ALICE, tokens=100)
        apply(ledger, CloseChild(child.path))
        assert isinstance(apply(ledger, Charge(child.path, tokens(40))), Charged)
        assert state(ledger)[0][TOKENS] == 40
        assert state(ledger, ALICE)[0][TOKENS] == 40

    def test_a_request_waiting_in_a_closed_child_is_answered_at_once(self) -> None:
        """A request still waiting in a child budget when it closes gets the "closed"
        answer at the next serving, not only once room frees (nothing hangs)."""
        ledger = make_ledger({"tokens": 100})
        child = open_child(ledger, tokens=50)
        grant(ledger, child.path, tokens(50), ttl=timedelta.max)  # keeps the child alive
        grant(ledger, ROOT, tokens(50), ttl=timedelta.max)  # and the budget full
        waiting = [Reserve(child.path, tokens(10))]
        assert ledger.serve_waiting(waiting) == []
        apply(ledger, CloseChild(child.path))
        (answer,) = ledger.serve_waiting(waiting, new_from=1)
        assert answer[0] == 0
        assert isinstance(answer[1], Rejected)
        assert answer[1].kind == "closed"

    def test_releasing_a_reservation_of_a_closed_child_frees_the_parent(self) -> None:
        """A release after the child closed gives the room back to the parent."""
        ledger = make_ledger({"tokens": 1000})
        child = open_child(ledger, tokens=300)
        reservation = grant(ledger, child.path, tokens(200))
        apply(ledger, CloseChild(child.path))
        assert apply(ledger, Release(child.path, reservation)) == Settled(reservation)
        assert state(ledger) == (ZERO, ZERO, 0, 0)
