"""A fan-out of simulated LLM calls sharing one budget, on asyncio and then on trio.

Run it with ``python examples/demo.py`` (or ``nox -s demo``). A few thousand
simulated agent calls, at most 200 in flight at once, share ONE budget capped on
input tokens, output tokens, total tokens and USD. The caps are well below what
the whole workload would like to spend, so a good share of the calls is refused
at reservation time. Each admitted call:

1. reserves its estimate: the prompt's input tokens, the call's ``max_tokens``
   of output, and the USD those would cost at worst;
2. "calls the provider": sleeps 5-50 ms; 2% of calls fail with a provider error,
   which leaves the ``async with`` block by an exception, so the reservation is
   released rather than committed;
3. commits what it really used: output between 30% and 115% of ``max_tokens``,
   so most calls come in under their estimate and some overrun it.

The demo keeps its own plain-Python tally of everything it committed and, at the
end, checks the budget against it. It exits with status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import anyio
import structlog
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import treasurer

BACKENDS = ("asyncio", "trio")
# Calls in flight at once, like a client's connection pool.
CONCURRENCY = 200
PROVIDER_ERROR_RATE = 0.02
LATENCY_SECONDS = (0.005, 0.050)
# Actual output as a fraction of max_tokens: mostly below, sometimes above.
OUTPUT_FRACTION = (0.30, 1.15)
MAX_OUTPUT_CHOICES = (256, 512, 1024, 2048)
PROMPT_TOKENS = (200, 6000)

# What the budget allows, per planned call; the caps scale with --calls so the
# share of refused calls stays about the same whatever the size of the run.
# Set at about 70% of what the workload would use: some 25-32% of calls are refused.
CAP_PER_CALL_INPUT_TOKENS = 2_200
CAP_PER_CALL_OUTPUT_TOKENS = 600
CAP_PER_CALL_TOKENS = 2_600
CAP_PER_CALL_USD = Decimal("0.0055")

USD_PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Model:
    """A fictional model and its price per million tokens."""

    name: str
    input_usd_per_million: Decimal
    output_usd_per_million: Decimal
    weight: float  # how often the agents pick it

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        """Exact cost in USD (every price is a whole number of nano-dollars per token)."""
        return (
            input_tokens * self.input_usd_per_million + output_tokens * self.output_usd_per_million
        ) / USD_PER_MILLION


# Illustrative prices for made-up models, not any provider's real price list.
# Each is a whole number of nano-dollars per token, the budget's USD unit, so the
# demo's own Decimal sums and the budget's totals can be compared exactly.
MODELS = (
    Model("quill-mini", Decimal("0.15"), Decimal("0.60"), weight=0.6),
    Model("quill-pro", Decimal("2.50"), Decimal("10.00"), weight=0.3),
    Model("atlas-xl", Decimal("5.00"), Decimal("25.00"), weight=0.1),
)


@dataclass(frozen=True)
class CallPlan:
    """One simulated call, drawn in advance so both backends run the same workload."""

    model: Model
    input_tokens: int
    max_output_tokens: int
    actual_output_tokens: int
    latency: float
    fails: bool


@dataclass
class Spend:
    """An amount on the four capped axes."""

    input_tokens: int = 0
    output_tokens: int = 0
    tokens: int = 0
    usd: Decimal = Decimal(0)

    @classmethod
    def of_call(cls, model: Model, input_tokens: int, output_tokens: int) -> Spend:
        return cls(
            input_tokens,
            output_tokens,
            input_tokens + output_tokens,
            model.cost(input_tokens, output_tokens),
        )

    def add(self, other: Spend) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.tokens += other.tokens
        self.usd += other.usd

    def excess_over(self, estimate: Spend) -> Spend:
        """How far this exceeds ``estimate`` on each axis (zero where it does not)."""
        return Spend(
            max(self.input_tokens - estimate.input_tokens, 0),
            max(self.output_tokens - estimate.output_tokens, 0),
            max(self.tokens - estimate.tokens, 0),
            max(self.usd - estimate.usd, Decimal(0)),
        )

    def axes(self) -> Iterator[tuple[str, int | Decimal]]:
        yield "input_tokens", self.input_tokens
        yield "output_tokens", self.output_tokens
        yield "tokens", self.tokens
        yield "usd", self.usd


@dataclass
class Tally:
    """The demo's own counters, kept by the tasks independently of the budget."""

    admitted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by the cap that refused
    failed: int = 0
    committed: int = 0
    used: Spend = field(default_factory=Spend)  # actual usage of committed calls
    overrun: Spend = field(default_factory=Spend)  # the part of it above the estimates
    overrunning_calls: int = 0

    @property
    def finished(self) -> int:
        return self.committed + self.failed + self.refused.total()


@dataclass(frozen=True)
class RunResult:
    backend: str
    calls: int
    caps: Spend
    tally: Tally
    snapshot: treasurer.Snapshot  # after every call, with the budget still open
    closed_snapshot: treasurer.Snapshot  # after the budget was closed
    statistics: treasurer.Statistics
    wall_seconds: float


class ProviderError(Exception):
    """A simulated failure of the LLM provider (a 500, a timeout...)."""


def plan_workload(calls: int, seed: int) -> list[CallPlan]:
    rng = random.Random(seed)
    weights = [model.weight for model in MODELS]
    plans = []
    for _ in range(calls):
        max_output = rng.choice(MAX_OUTPUT_CHOICES)
        plans.append(
            CallPlan(
                model=rng.choices(MODELS, weights)[0],
                input_tokens=rng.randint(*PROMPT_TOKENS),
                max_output_tokens=max_output,
                actual_output_tokens=round(max_output * rng.uniform(*OUTPUT_FRACTION)),
                latency=rng.uniform(*LATENCY_SECONDS),
                fails=rng.random() < PROVIDER_ERROR_RATE,
            )
        )
    return plans


def caps_for(calls: int) -> Spend:
    return Spend(
        input_tokens=calls * CAP_PER_CALL_INPUT_TOKENS,
        output_tokens=calls * CAP_PER_CALL_OUTPUT_TOKENS,
        tokens=calls * CAP_PER_CALL_TOKENS,
        usd=calls * CAP_PER_CALL_USD,
    )


async def call_provider(plan: CallPlan) -> int:
    """Pretend to call the model; return the output tokens it produced."""
    await anyio.sleep(plan.latency)
    if plan.fails:
        raise ProviderError(f"{plan.model.name}: 503 Service Unavailable")
    return plan.actual_output_tokens


async def agent_call(
    budget: treasurer.Budget,
    plan: CallPlan,
    limiter: anyio.CapacityLimiter,
    tally: Tally,
    on_done: Callable[[], None],
) -> None:
    # The limiter plays the HTTP client's connection pool: at most N calls in flight.
    async with limiter:
        estimate = Spend.of_call(plan.model, plan.input_tokens, plan.max_output_tokens)
        try:
            async with budget.reserve(
                input_tokens=estimate.input_tokens,
                output_tokens=estimate.output_tokens,
                usd=estimate.usd,
            ) as reservation:
                tally.admitted += 1
                output_tokens = await call_provider(plan)
                actual = Spend.of_call(plan.model, plan.input_tokens, output_tokens)
                reservation.commit(
                    input_tokens=actual.input_tokens,
                    output_tokens=actual.output_tokens,
                    usd=actual.usd,
                )
        except treasurer.BudgetExceeded as refusal:
            tally.refused[refusal.cap] += 1
        except ProviderError:
            # Leaving the block by an exception released the reservation.
            tally.failed += 1
        else:
            tally.committed += 1
            tally.used.add(actual)
            excess = actual.excess_over(estimate)
            tally.overrun.add(excess)
            if excess.tokens:
                tally.overrunning_calls += 1
        finally:
            on_done()


async def run_backend(
    backend: str, plans: Sequence[CallPlan], caps: Spend, progress: Progress
) -> RunResult:
    tally = Tally()
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    task = progress.add_task(backend, total=len(plans), counts="")

    def on_done() -> None:
        counts = (
            f"[green]{tally.committed} committed[/] "
            f"[yellow]{tally.refused.total()} refused[/] "
            f"[red]{tally.failed} failed[/]"
        )
        progress.update(task, completed=tally.finished, counts=counts)

    started = time.perf_counter()
    async with treasurer.open_budget(
        name=f"demo-{backend}",
        input_tokens=caps.input_tokens,
        output_tokens=caps.output_tokens,
        tokens=caps.tokens,
        usd=caps.usd,
    ) as budget:
        async with anyio.create_task_group() as task_group:
            for plan in plans:
                task_group.start_soon(agent_call, budget, plan, limiter, tally, on_done)
        wall_seconds = time.perf_counter() - started
        # Read while the budget is still open: leaving a reservation block waits
        # until the actor has applied its commit or release, so once every task is
        # done this snapshot must already be final, not merely drained at close.
        snapshot = budget.snapshot()
        statistics = budget.statistics()
    return RunResult(
        backend=backend,
        calls=len(plans),
        caps=caps,
        tally=tally,
        snapshot=snapshot,
        closed_snapshot=budget.snapshot(),
        statistics=statistics,
        wall_seconds=wall_seconds,
    )


def budget_used(snapshot: treasurer.Snapshot) -> Spend:
    return Spend(
        snapshot.input_tokens_used,
        snapshot.output_tokens_used,
        snapshot.tokens_used,
        snapshot.usd_used,
    )


def budget_reserved(snapshot: treasurer.Snapshot) -> Spend:
    return Spend(
        snapshot.input_tokens_reserved,
        snapshot.output_tokens_reserved,
        snapshot.tokens_reserved,
        snapshot.usd_reserved,
    )


def verify(result: RunResult) -> list[str]:
    """Every way the run could have gone wrong; empty if it did not."""
    snapshot, tally = result.snapshot, result.tally
    problems = []
    if snapshot.open_reservations != 0:
        problems.append(f"{snapshot.open_reservations} reservations still open")
    for axis, held in budget_reserved(snapshot).axes():
        if held != 0:
            problems.append(f"{axis}: {held} still reserved")
    # The demo's own sums of what it committed must match the budget to the unit:
    # nothing lost, nothing counted twice, no rounding drift on USD.
    own_sums = dict(tally.used.axes())
    for axis, used in budget_used(snapshot).axes():
        if used != own_sums[axis]:
            problems.append(
                f"{axis}: budget says {used} used, the calls committed {own_sums[axis]}"
            )
    if snapshot.calls != tally.committed:
        problems.append(f"budget counted {snapshot.calls} calls, {tally.committed} committed")
    # Why "cap + overrun" is the right bound: the budget admits a reservation only
    # if used + reserved + request <= cap, so admitting never takes used + reserved
    # past the cap. A release lowers it. A commit swaps the estimate for the actual
    # usage, so it raises used + reserved by at most (actual - estimate) when that
    # is positive. Hence used + reserved <= cap + the overruns committed so far, at
    # every moment; at the end nothing is reserved, so used <= cap + total overrun.
    # Only spend above the estimates, which really happened, can pass a cap.
    overruns = dict(tally.overrun.axes())
    caps = dict(result.caps.axes())
    for axis, used in budget_used(snapshot).axes():
        if used > caps[axis] + overruns[axis]:
            problems.append(
                f"{axis}: {used} used > cap {caps[axis]} + overrun above estimates "
                f"{overruns[axis]}: overspent"
            )
    if result.closed_snapshot != snapshot:
        problems.append("closing the budget changed its figures: a settlement was late")
    if tally.admitted != tally.committed + tally.failed:
        problems.append(f"{tally.admitted} admitted but {tally.committed + tally.failed} settled")
    if tally.finished != result.calls:
        problems.append(f"{tally.finished} of {result.calls} calls finished")
    return problems


def fmt(axis: str, value: int | Decimal) -> str:
    # Display only, to a micro-dollar; the checks compare exact Decimals.
    return f"${value:,.6f}" if axis == "usd" else f"{value:,}"


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


AXIS_LABELS = {
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
    "tokens": "total tokens",
    "usd": "USD",
}


def render(result: RunResult) -> Table:
    tally, statistics = result.tally, result.statistics
    table = Table(
        title=f"{result.backend}: {result.calls:,} calls sharing one budget",
        title_justify="left",
        title_style="bold",
    )
    table.add_column("")
    table.add_column("count / used", justify="right")
    table.add_column("cap", justify="right")
    table.add_column("share", justify="right")
    table.add_column("above estimate", justify="right")

    def calls_row(label: str, count: int, note: str = "") -> None:
        table.add_row(label, f"{count:,}", "", percent(count, result.calls), note)

    calls_row("calls admitted", tally.admitted)
    calls_row("refused", tally.refused.total())
    for cap_name, count in tally.refused.most_common():
        calls_row(f"  {cap_name} cap", count)
    calls_row("failed (released)", tally.failed)
    calls_row("committed", tally.committed, f"{tally.overrunning_calls:,} calls")
    table.add_section()

    caps = dict(result.caps.axes())
    overruns = dict(tally.overrun.axes())
    for axis, used in budget_used(result.snapshot).axes():
        cap = caps[axis]
        share = percent(float(used), float(cap))
        table.add_row(
            AXIS_LABELS[axis],
            fmt(axis, used),
            fmt(axis, cap),
            f"[bold yellow]{share}[/]" if used > cap else share,
            f"+{fmt(axis, overruns[axis])}" if overruns[axis] else "",
        )
        if used > cap:
            # Possible only through spend above estimates: see verify().
            table.add_row("  [yellow]over cap by[/]", f"[yellow]{fmt(axis, used - cap)}[/]")
    table.add_section()

    table.add_row("actor batches served", f"{statistics.batches_served:,}")
    table.add_row("peak batch size", f"{statistics.peak_batch_size:,}")
    table.add_row("messages served", f"{statistics.messages_served:,}")
    table.add_row("wall time", f"{result.wall_seconds:.2f} s")
    return table


def make_progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000, help="simulated calls (default 3000)")
    parser.add_argument("--seed", type=int, default=2024, help="random seed (default 2024)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    # The demo is an application, so it decides what gets logged: warnings and up.
    # The library logs every grant and commit at debug level.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    args = parse_args(argv)
    console = Console()
    plans = plan_workload(args.calls, args.seed)
    caps = caps_for(args.calls)

    demand = Spend()
    for plan in plans:
        demand.add(Spend.of_call(plan.model, plan.input_tokens, plan.actual_output_tokens))
    console.print(
        f"[bold]{args.calls:,} simulated calls[/] (seed {args.seed}, at most {CONCURRENCY} "
        f"in flight) would use {demand.tokens:,} tokens and {fmt('usd', demand.usd)}; "
        f"the budget allows {caps.tokens:,} tokens and {fmt('usd', caps.usd)}.\n"
    )

    failures = 0
    for backend in BACKENDS:
        with make_progress(console) as progress:
            result = anyio.run(run_backend, backend, plans, caps, progress, backend=backend)
        console.print(render(result))
        problems = verify(result)
        if problems:
            failures += 1
            console.print(f"[bold red]FAILED ({backend}): {escape('; '.join(problems))}[/]\n")
        else:
            console.print(
                f"[bold green]OK ({backend}): no reservation open, nothing reserved; "
                "every axis within cap + spend above estimates; "
                "budget totals equal the calls' own sums exactly.[/]\n"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
