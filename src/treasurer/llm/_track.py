"""``track(client, budget=...)``: which SDK, which budget, which wrapper."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from treasurer import Budget, InvalidOption
from treasurer.sync import SyncBudget

from . import _tracked_anthropic, _tracked_openai
from ._calls import ReserveMode, Settings
from ._estimate import DEFAULT_MAX_OUTPUT_TOKENS
from ._prices import Prices
from ._tracked import TrackedClient

# (package, async client class, sync client class, wrapper)
_SDKS = (
    ("openai", "AsyncOpenAI", "OpenAI", _tracked_openai.wrap),
    ("anthropic", "AsyncAnthropic", "Anthropic", _tracked_anthropic.wrap),
)


def track(
    client: Any,
    *,
    budget: Budget | SyncBudget,
    prices: Prices | None = None,
    reserve: ReserveMode = "worst",
    wait: bool = False,
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    tags: Mapping[str, str] | None = None,
) -> TrackedClient:
    """Wrap an official OpenAI or Anthropic client so every call is paid from ``budget``.

    Async clients (``AsyncOpenAI``, ``AsyncAnthropic``) take a
    :class:`treasurer.Budget` (asyncio or trio); sync clients (``OpenAI``,
    ``Anthropic``) a :class:`treasurer.sync.SyncBudget`. Each tracked call
    estimates its worst case (``reserve="expected"``: the expected case),
    reserves it, raising :class:`treasurer.BudgetExceeded` before anything is
    sent if it does not fit (or waiting for room with ``wait=True``), makes
    the call and commits the usage and exact cost the API reports, with the
    model, the response's id as ``request_id`` and ``tags``. An error answer
    releases the reservation. ``prices`` are own prices, before genai-prices';
    ``default_max_output_tokens`` caps the worst-case output of a request that
    sets no limit.
    """
    for package, async_name, sync_name, wrap in _SDKS:
        sdk = sys.modules.get(package)  # a client of it exists only if it was imported
        async_class = getattr(sdk, async_name, None)
        sync_class = getattr(sdk, sync_name, None)
        if async_class is not None and isinstance(client, async_class):
            is_async = True
        elif sync_class is not None and isinstance(client, sync_class):
            is_async = False
        else:
            continue
        wanted, name = (
            (Budget, "treasurer.Budget") if is_async else (SyncBudget, "treasurer.sync.SyncBudget")
        )
        if not isinstance(budget, wanted):
            kind = "an async" if is_async else "a sync"
            raise InvalidOption(f"{kind} client is paid from a {name}, not {budget!r}")
        settings = Settings(
            budget_name=budget.name,
            prices=prices,
            reserve=reserve,
            wait=wait,
            default_max_output_tokens=default_max_output_tokens,
            tags=dict(tags or {}),
        )
        return wrap(client, budget, settings, is_async)
    raise InvalidOption(
        "track() takes an official SDK client (openai.OpenAI, openai.AsyncOpenAI, "
        f"anthropic.Anthropic, anthropic.AsyncAnthropic), not {client!r}"
    )
