"""A store for tests that watch or pause the actor between batches.

``ProbeStore`` is a real :class:`treasurer.MemoryStore` (the budget behaves
exactly as with the default store) that also records every batch, checks after
each one that no scope holds more than its limits, and can run a hook before
and after a batch is applied. A hook may await (an ``anyio.Event``, say), which
holds the actor inside that batch: the exact interleavings the cancellation
tests need come from there, through the public ``store=`` seam, never from
sleeping and never from test code in the library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import treasurer
from treasurer._core.axes import AXES
from treasurer._core.commands import Command, Commit, OpenChild, Reserve
from treasurer._core.outcomes import Settled
from treasurer._core.scopes import ScopePath
from treasurer._stores.base import BatchResult

Hook = Callable[[Sequence[Command]], Awaitable[None] | None]


class ProbeStore(treasurer.MemoryStore):
    """A memory store that records batches, checks the caps, and runs hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Command]] = []
        self.violations: list[str] = []
        self.before: Hook | None = None
        self.after: Hook | None = None
        # Spend the caps may be passed by (it happened): commits of expired
        # reservations, counted here per scope, and commits above their
        # estimate, which the test adds to ``overrun`` before it commits.
        self.late: dict[ScopePath, list[int]] = {}
        self.overrun = [0] * len(AXES)
        self.peak_waiting = 0
        self.peak_waiting_scopes = 0

    async def apply(
        self,
        batch: Sequence[Command],
        waiting: Sequence[Reserve | OpenChild] = (),
        *,
        new_from: int = 0,
        verbose: bool = True,
    ) -> BatchResult:
        self.batches.append(list(batch))
        await _run(self.before, batch)
        result = await super().apply(batch, waiting, new_from=new_from, verbose=verbose)
        self._count_late(batch, result)
        self._check(result)
        self.peak_waiting = max(self.peak_waiting, len(waiting))
        self.peak_waiting_scopes = max(self.peak_waiting_scopes, len({c.scope for c in waiting}))
        await _run(self.after, batch)
        return result

    def _count_late(self, batch: Sequence[Command], result: BatchResult) -> None:
        for command, reply in zip(batch, result.replies, strict=True):
            if isinstance(command, Commit) and isinstance(reply, Settled) and reply.expired:
                late = self.late.setdefault(command.scope, [0] * len(AXES))
                for axis, amount in enumerate(command.actual):
                    late[axis] += amount

    def allowance(self, path: ScopePath) -> list[int]:
        """How far past its limits a scope may be: the late commits made in it and
        in the scopes inside it, and the overruns."""
        total = list(self.overrun)
        for scope, late in self.late.items():
            if scope[: len(path)] == path:
                total = [a + b for a, b in zip(total, late, strict=True)]
        return total

    def _check(self, result: BatchResult) -> None:
        """used + reserved within every limit and window, in every scope the batch
        touched, beyond the allowance (spend above an estimate or after a
        deadline is recorded past a cap: it happened)."""
        for path, view in result.views.items():
            if view is None:
                continue
            allowed = self.allowance(path)
            spans = [("lifetime", view.used, view.limits)]
            spans += [(w.name, w.used, w.limits) for w in view.windows]
            for span, used, limits in spans:
                for axis, limit in enumerate(limits):
                    held = used[axis] + view.reserved[axis]
                    if limit is not None and held > limit + allowed[axis]:
                        self.violations.append(
                            f"{path!r} {span} {AXES[axis]}: {held} > {limit} + {allowed[axis]}"
                        )

    def commands(self, kind: type[Command]) -> list[Command]:
        """Every command of ``kind`` the store was given, in order."""
        return [c for batch in self.batches for c in batch if isinstance(c, kind)]


async def _run(hook: Hook | None, batch: Sequence[Command]) -> None:
    if hook is not None:
        waiting = hook(batch)
        if waiting is not None:
            await waiting


TOKENS = AXES.index("tokens")


def holding(kind: type[Command], tokens: int) -> Callable[[Sequence[Command]], bool]:
    """A test for a batch: does it hold a ``kind`` command for exactly ``tokens``
    total tokens? (How a test finds its victim's command: give it a unique amount.)"""

    def test(batch: Sequence[Command]) -> bool:
        return any(
            isinstance(c, kind) and getattr(c, "amount", ())[TOKENS : TOKENS + 1] == (tokens,)
            for c in batch
        )

    return test
