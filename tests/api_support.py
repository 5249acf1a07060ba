"""Helpers shared by the public-API tests: event loops for heavy and timer tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import anyio
import pytest
import trio.testing

# Both loops, asyncio without its debug mode: for tests that make tens of
# thousands of calls (debug mode tracks every coroutine's origin, ~10x slower).
BOTH_LOOPS_FAST = pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ],
)

# trio on a virtual clock that jumps ahead whenever every task is blocked.
ON_TRIO_VIRTUAL_TIME = pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio")],
)


def loop_clock(start: datetime) -> Callable[[], datetime]:
    """A budget clock that reads ``start`` now and moves with the event loop's clock
    (trio's virtual one under ON_TRIO_VIRTUAL_TIME); call it inside the loop."""
    base = start - timedelta(seconds=anyio.current_time())
    return lambda: base + timedelta(seconds=anyio.current_time())
