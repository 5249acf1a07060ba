"""One accounting scope: its caps, usage, reservations held, windows, thresholds.

A scope knows only itself; the ledger walks the chain of scopes a request
must fit (a child budget, its tenant, the budget) and calls each. Every
method that changes usage appends the events it causes to ``events``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from . import thresholds
from .axes import AXES, ZERO, CapVector, Vector, add, take
from .config import Limits
from .events import Event, Override, WindowRolledOver
from .outcomes import Refusal
from .scopes import ScopePath
from .windows import FOREVER, WindowState, add_to, later

Names = tuple[str, str | None, str | None]
"""The budget's name, the tenant's and the child budget's (for events and refusals)."""


class Scope:
    """Caps and usage of one scope: the budget's own, a tenant's or a child budget's.

    ``used`` and ``reserved`` include every scope below this one. ``carve`` is
    set for a child budget: the caps its parent reserved for it when it
    opened. In its parent a child holds its carve, or its usage and
    reservations where they exceed it (:meth:`holding`); ``contributed`` is
    what it holds there now.
    """

    __slots__ = (
        "_caps",
        "_request_caps",
        "_window_caps",
        "by_model",
        "calls",
        "caps",
        "carve",
        "children",
        "closed",
        "consumed",
        "contributed",
        "fired",
        "freed_at",
        "held_at",
        "limits",
        "names",
        "open",
        "overrides",
        "parent",
        "path",
        "per_request",
        "reserved",
        "since",
        "spent_at",
        "stale_at",
        "thresholds",
        "used",
        "windows",
    )

    def __init__(
        self,
        path: ScopePath,
        names: Names,
        limits: Limits,
        thresholds: tuple[int, ...],
        now: datetime,
        parent: Scope | None = None,
        carve: CapVector | None = None,
    ) -> None:
        self.path: Final = path
        self.names: Final = names
        self.parent: Final = parent
        # When (in ScopeTree.changes) room here last grew, reservations here grew,
        # and usage here was spent: what a waiter's last refusal depends on.
        self.freed_at = self.held_at = self.spent_at = 0
        self.thresholds: Final = thresholds
        self.caps = limits.caps
        self.per_request = limits.per_request
        self.limits = limits.caps  # the caps plus active overrides
        self.windows = tuple(WindowState(window, now) for window in limits.windows)
        self.used = ZERO
        self.reserved = ZERO
        self.calls = 0
        self.open = 0  # open reservations
        self.children = 0  # open child budgets
        self.closed = False  # a child budget that takes no more requests
        self.by_model: dict[str, Vector] = {}
        self.fired = [0] * len(AXES)  # lifetime thresholds fired, per axis
        self.overrides: dict[int, tuple[Override, Vector]] = {}  # id: (override, increase)
        self.consumed: dict[int, int] = {}  # estimate: consumes not yet refunded
        self.since: datetime | None = None  # the last reset of the lifetime figures
        self.carve: Final = carve
        self.contributed = ZERO  # what this scope holds in its parent's reserved
        self.stale_at = self.next_reset()
        self._index_caps()

    def _index_caps(self) -> None:
        """List the capped axes of each period, so checks skip unbounded ones.

        Made again whenever a limit changes (an override, new tenant caps).
        """
        self._request_caps = _capped(self.per_request)
        self._caps = _capped(self.limits)
        self._window_caps = [(window, _capped(window.limits)) for window in self.windows]

    # -- admission ---------------------------------------------------------------

    def fits(self, amount: Vector, whole: Vector) -> bool:
        """Whether ``amount`` has room under every cap of this scope now (``whole``:
        the request before carves took their part, for per-request caps)."""
        for axis, cap in self._request_caps:
            if whole[axis] > cap:
                return False
        used, reserved = self.used, self.reserved
        for axis, cap in self._caps:
            if used[axis] + reserved[axis] + amount[axis] > cap:
                return False
        for window, caps in self._window_caps:
            for axis, cap in caps:
                if window.used[axis] + reserved[axis] + amount[axis] > cap:
                    return False
        return True

    def too_large(self, amount: Vector, whole: Vector) -> Refusal | None:
        """A cap of this scope that the request exceeds on its own: it never fits."""
        for axis, cap in enumerate(self.per_request):
            if cap is not None and whole[axis] > cap:
                return Refusal.build(
                    self.path, self.names, axis, "request",
                    limit=cap, requested=whole[axis], used=0, reserved=0, too_large=True,
                )  # fmt: skip
        for axis, cap in enumerate(self.limits):
            if cap is not None and amount[axis] > cap:
                return self._refusal(axis, amount, cap, self.used, None, too_large=True)
        for window in self.windows:
            for axis, cap in enumerate(window.limits):
                if cap is not None and amount[axis] > cap:
                    return self._refusal(axis, amount, cap, window.used, window, too_large=True)
        return None

    def no_room(self, amount: Vector) -> Refusal | None:
        """The first cap of this scope without room for ``amount`` now."""
        for axis, cap in enumerate(self.limits):
            if cap is not None and self.used[axis] + self.reserved[axis] + amount[axis] > cap:
                # Spent usage alone leaves no room: no release or rollover can help.
                final = self.used[axis] + amount[axis] > cap
                return self._refusal(axis, amount, cap, self.used, None, final=final)
        # Open reservations count in every window: they may be charged in any of them.
        for window in self.windows:
            for axis, cap in enumerate(window.limits):
                if cap is not None and window.used[axis] + self.reserved[axis] + amount[axis] > cap:
                    return self._refusal(axis, amount, cap, window.used, window)
        return None

    def _refusal(
        self,
        axis: int,
        amount: Vector,
        cap: int,
        used: Vector,
        window: WindowState | None,
        *,
        too_large: bool = False,
        final: bool = False,
    ) -> Refusal:
        return Refusal.build(
            self.path,
            self.names,
            axis,
            "lifetime" if window is None else window.window.name,
            limit=cap,
            requested=amount[axis],
            used=used[axis],
            reserved=self.reserved[axis],
            resets_at=None if window is None else window.resets_at(),
            too_large=too_large,
            final=final,
        )

    # -- what a scope holds in its parent -----------------------------------------

    def holding(self) -> Vector:
        """What this scope reserves in its parent: its own ``reserved``, except that
        an open child budget holds its whole carve until its usage passes it."""
        if self.carve is None or self.closed:
            return self.reserved
        return tuple(
            reserved if cap is None else max(cap, used + reserved) - used
            for cap, used, reserved in zip(self.carve, self.used, self.reserved, strict=True)
        )

    def growth(self, amount: Vector) -> Vector:
        """How much more room this scope takes in its parent if it takes ``amount``."""
        if self.carve is None or self.closed:
            return amount
        return tuple(
            value if cap is None else max(cap, u + r + value) - max(cap, u + r)
            for cap, u, r, value in zip(self.carve, self.used, self.reserved, amount, strict=True)
        )

    # -- usage -------------------------------------------------------------------

    def charge(
        self, amount: Vector, now: datetime, model: str | None, events: list[Event], calls: int = 1
    ) -> None:
        """Count usage that happened in the lifetime and every window."""
        self.used = add(self.used, amount)
        self.calls += calls
        if model is not None:
            add_to(self.by_model, model, amount)
        for window in self.windows:
            if window.rolling and not window.entries:
                assert window.window.duration is not None
                self.stale_at = min(self.stale_at, later(now, window.window.duration))
            window.charge(amount, now, model)
        self.check_thresholds(now, events)

    def credit(self, amount: Vector) -> None:
        """Give usage back to the lifetime (a refund). Time windows keep counting
        it: which window the credited usage fell in is not known, and crediting
        the wrong one could admit more than its cap."""
        self.used = take(self.used, amount)

    def take_back(self, amount: Vector, at: datetime, model: str | None) -> None:
        """Undo one call's charge made at ``at`` (its caller never saw the reply)."""
        self.credit(amount)
        self.calls = max(self.calls - 1, 0)
        if model is not None and model in self.by_model:
            self.by_model[model] = take(self.by_model[model], amount)
        for window in self.windows:
            window.take_back(amount, at, model)

    def check_thresholds(self, now: datetime, events: list[Event]) -> None:
        """Fire every threshold that usage has newly reached, once per period."""
        if self.thresholds:
            thresholds.fire(
                self.names, self.thresholds, self._caps, self.used, self.fired, None, now, events
            )
            for window, caps in self._window_caps:
                thresholds.fire(
                    self.names,
                    self.thresholds,
                    caps,
                    window.used,
                    window.fired,
                    window,
                    now,
                    events,
                )

    # -- time --------------------------------------------------------------------

    def advance(self, now: datetime, events: list[Event]) -> bool:
        """Move every window to the period holding ``now``; True if one dropped usage."""
        if now < self.stale_at:
            return False
        dropped = False
        for window in self.windows:
            if not window.advance(now):
                continue
            dropped = True
            if window.rolling:
                thresholds.rearm_rolling(window, self.thresholds)
            else:
                events.append(
                    WindowRolledOver(
                        budget=self.names[0],
                        tenant=self.names[1],
                        child=self.names[2],
                        at=now,
                        window=window.window.name,
                        resets_at=window.end,
                    )
                )
        self.stale_at = self.next_reset()
        return dropped

    def next_reset(self) -> datetime:
        """When one of its windows next drops usage (FOREVER: none will)."""
        resets = [at for window in self.windows if (at := window.resets_at()) is not None]
        return min(resets, default=FOREVER)

    # -- limits ------------------------------------------------------------------

    def period(self, name: str) -> int | None:
        """-1 for "lifetime", a window's index by name, or ``None`` if there is none."""
        if name == "lifetime":
            return -1
        for index, window in enumerate(self.windows):
            if window.window.name == name:
                return index
        return None

    def describe(self) -> str:
        """The scope in words, for messages."""
        budget, tenant, child = self.names
        if child is not None:
            return f"child budget {child!r}"
        return f"tenant {tenant!r}" if tenant is not None else f"budget {budget!r}"

    def periods(self) -> list[str]:
        return ["lifetime", *(window.window.name for window in self.windows)]

    def base_caps(self, index: int) -> CapVector:
        return self.caps if index < 0 else self.windows[index].window.caps

    def recompute_limits(self, index: int) -> None:
        """The caps in force in one period: its caps plus its active overrides."""
        limits = list(self.base_caps(index))
        name = self.periods()[index + 1]
        for override, increase in self.overrides.values():
            if override.window == name:
                for axis, value in enumerate(increase):
                    cap = limits[axis]
                    if cap is not None:
                        limits[axis] = cap + value
        if index < 0:
            self.limits = tuple(limits)
        else:
            self.windows[index].limits = tuple(limits)
        self._index_caps()

    def relimit(self, limits: Limits, now: datetime) -> None:
        """New caps from now on. A window kept under the same name and kind keeps
        its usage; overrides of a window that is gone end with it."""
        kept = {(w.window.name, w.window.kind): w for w in self.windows}
        windows = []
        for window in limits.windows:
            state = kept.get((window.name, window.kind))
            if (
                state is None
                or state.window.tz != window.tz
                or state.window.duration != window.duration
            ):
                state = WindowState(window, now)
            state.window = window
            windows.append(state)
        self.caps, self.per_request, self.windows = limits.caps, limits.per_request, tuple(windows)
        names = set(self.periods())
        self.overrides = {i: o for i, o in self.overrides.items() if o[0].window in names}
        for index in range(-1, len(self.windows)):
            self.recompute_limits(index)
        self.stale_at = self.next_reset()
        self._index_caps()

    def reset(self, index: int | None, now: datetime) -> None:
        """Zero usage: all of it (``None``), or one window's current period."""
        windows = self.windows if index is None else (self.windows[index],)
        for window in windows:
            window.clear()
            window.since = now
        if index is None:
            self.used = ZERO
            self.by_model = {}
            self.calls = 0
            self.fired = [0] * len(AXES)
            self.consumed = {}  # their refunds would give back usage the reset zeroed
            self.since = now

    # -- reads -------------------------------------------------------------------

    def idle(self) -> bool:
        """Whether forgetting this scope loses nothing a later call needs: nothing
        held or waiting on it, no live window usage, no lifetime cap with usage."""
        return (
            not self.open
            and not self.children
            and not any(self.reserved)
            and not self.overrides
            and not self.consumed
            and all(window.empty() for window in self.windows)
            and not any(
                cap is not None and used for cap, used in zip(self.limits, self.used, strict=True)
            )
        )


def _capped(caps: CapVector) -> list[tuple[int, int]]:
    """(axis, cap) for every axis with a cap."""
    return [(axis, cap) for axis, cap in enumerate(caps) if cap is not None]
