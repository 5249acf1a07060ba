"""What every design does: the size of one call, the caps of a run, what a design offers.

Two workloads, each a pair of operations (an *op* is one of them):

* ``reserve``: reserve 100 tokens and $0.001, then commit 80 tokens and $0.0008;
* ``consume``: consume 100 tokens, then refund down to the 80 really used.

A run's caps are exactly what it needs at its worst moment (every settled
pair's use plus one open reservation per task), so nothing is refused but the
last reservations land on the cap; after the run each design's books must
show exactly what was committed and nothing held.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, Protocol

Workload = Literal["reserve", "consume"]
WORKLOADS: Final[tuple[Workload, ...]] = ("reserve", "consume")

NANOS_PER_USD: Final = 10**9
RESERVE_TOKENS: Final = 100
RESERVE_USD: Final = 0.001
RESERVE_NANOS: Final = 1_000_000
USED_TOKENS: Final = 80
USED_USD: Final = 0.0008
USED_NANOS: Final = 800_000


@dataclass(frozen=True)
class Caps:
    tokens: int
    nanos: int

    @property
    def usd(self) -> Decimal:
        return Decimal(self.nanos) / NANOS_PER_USD

    @classmethod
    def for_run(cls, pairs: int, tasks: int) -> Caps:
        return cls(
            tokens=pairs * USED_TOKENS + tasks * RESERVE_TOKENS,
            nanos=pairs * USED_NANOS + tasks * RESERVE_NANOS,
        )


class Instance(Protocol):
    """One design's budget, open for one run."""

    async def pairs(self, k: int) -> None:
        """``k`` pairs of the workload, one after the other."""

    async def call(self) -> None:
        """One fan-out call: reserve, await a 0 ms "LLM call", commit."""

    def problems(self, pairs: int) -> list[str]:
        """What is wrong with the books after ``pairs`` settled pairs (nothing: [])."""


def expect(
    used_tokens: int, used_nanos: int, held_tokens: int, pairs: int, workload: Workload
) -> list[str]:
    """The books a design shows after ``pairs`` settled pairs, checked."""
    problems = []
    if held_tokens:
        problems.append(f"{held_tokens} tokens still reserved")
    if used_tokens != pairs * USED_TOKENS:
        problems.append(f"used {used_tokens} tokens, expected {pairs * USED_TOKENS}")
    nanos = pairs * USED_NANOS if workload == "reserve" else 0
    if used_nanos != nanos:
        problems.append(f"used {used_nanos} nano-USD, expected {nanos}")
    return problems


class Refused(Exception):
    """A design refused a request that fits its caps."""
