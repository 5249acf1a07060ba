"""The budget manager's cost optimizer and tracked client, on ``treasurer.llm``.

Re-exported by :mod:`treasurer.compat`. ``CostOptimizer(pricing)`` takes the
manager's pricing table (model -> ``{"input": USD per 1M input tokens,
"output": USD per 1M output tokens}``, with optional ``"quality"`` and
``"tasks"``); ``PRICING`` is that table for treasurer's default catalog,
priced by genai-prices. ``TrackedLLMClient`` pays each chat from the
manager's budget through a tracked OpenAI (or Anthropic) client.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from treasurer import InvalidOption
from treasurer.llm import (
    Catalog,
    UnknownModel,
    choose_model,
    default_catalog,
    estimate,
    lookup,
    recommendations,
    track,
)

if TYPE_CHECKING:
    from .compat import BudgetManager

_PRICE_KEYS = ("input", "output", "cache_read", "cache_write")


class _Pricing(Mapping[str, dict[str, object]]):
    """The default catalog in the manager's pricing format, built on first use."""

    def __init__(self) -> None:
        self._table: dict[str, dict[str, object]] | None = None

    @property
    def _data(self) -> dict[str, dict[str, object]]:
        if self._table is None:
            self._table = {
                model.name: {
                    "input": model.price.input,
                    "output": model.price.output,
                    "quality": model.quality,
                    "tasks": sorted(model.tasks),
                }
                for model in default_catalog()
            }
        return self._table

    def __getitem__(self, model: str) -> dict[str, object]:
        return self._data[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


PRICING: Mapping[str, dict[str, object]] = _Pricing()


def _provider(model: str) -> str | None:
    try:
        return lookup(model).provider
    except UnknownModel:
        return None


def catalog_of(pricing: Mapping[str, Mapping[str, Any]]) -> Catalog:
    """A catalog from the manager's pricing table (quality "medium" and any task by default)."""
    catalog = Catalog()
    for model, spec in pricing.items():
        if not isinstance(spec, Mapping):
            raise InvalidOption(f"the pricing of {model!r} must be a mapping, not {spec!r}")
        catalog.add(
            model,
            quality=spec.get("quality", "medium"),
            tasks=spec.get("tasks", ()),
            provider=_provider(model),
            price={key: spec[key] for key in _PRICE_KEYS if spec.get(key) is not None},
        )
    return catalog


class CostOptimizer:
    """Estimates a call's cost and picks the cheapest model fit for a task.

    ``pricing`` is a table in the budget manager's format; ``None`` uses
    treasurer's default catalog (genai-prices' prices).
    """

    def __init__(self, pricing: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.pricing = PRICING if pricing is None else pricing
        self.catalog = default_catalog() if pricing is None else catalog_of(pricing)

    def select_model(
        self,
        task_type: str,
        max_cost: float | None = None,
        quality: str = "medium",
        *,
        provider: str | None = None,
    ) -> str:
        """The cheapest model for ``task_type`` at ``quality`` or better whose call
        (no input, 500 output tokens) costs at most ``max_cost``; raises
        :class:`treasurer.llm.NoModelFits` (a ``LookupError``) if none does."""
        return choose_model(
            task_type, max_cost=max_cost, quality=quality, provider=provider, catalog=self.catalog
        )

    def estimate_cost(
        self, model: str, input_text: str, expected_output_tokens: int = 500
    ) -> float:
        """What a call of ``model`` on ``input_text`` writing ``expected_output_tokens`` costs."""
        known = self.catalog.get(model)
        return float(
            estimate(
                model,
                prompt=input_text,
                max_output_tokens=expected_output_tokens,
                provider=None if known is None else known.provider,
                prices=self.catalog.prices,
            ).usd
        )

    def recommend_optimizations(self, usage_records: Iterable[object]) -> list[str]:
        """Suggestions from usage records; see :func:`treasurer.llm.recommendations`."""
        return [r.message for r in recommendations(usage_records, catalog=self.catalog)]


class TrackedLLMClient:
    """A chat client whose calls are paid from a :class:`BudgetManager`'s budget.

    ``chat`` picks a model if none is given (the optimizer's cheapest for
    "chat" within ``max_cost``, among those the client's provider serves),
    reserves the call's worst case (its input and ``max_output_tokens`` of
    output) from the manager's budget, raising ``BudgetExceeded`` before any
    request if it does not fit the daily, monthly or per-request limit or
    ``max_cost``, makes the call and records its actual cost. ``client`` is an
    ``openai.OpenAI`` or ``anthropic.Anthropic`` client; by default an
    ``openai.OpenAI()`` built, on the first chat, from the standard
    ``OPENAI_*`` environment variables.
    """

    def __init__(
        self,
        budget_manager: BudgetManager,
        optimizer: CostOptimizer,
        client: Any = None,
        *,
        max_output_tokens: int = 1024,
    ) -> None:
        self.budget_manager = budget_manager
        self.optimizer = optimizer
        self._client = client
        self._owns_client = client is None
        self._tracked: Any = None
        self.max_output_tokens = max_output_tokens

    def _tracked_client(self) -> Any:
        if self._tracked is None:
            if self._client is None:
                import openai

                self._client = openai.OpenAI()
            self._tracked = track(
                self._client,
                budget=self.budget_manager.treasurer_budget,
                prices=self.optimizer.catalog.prices,
            )
        return self._tracked

    def chat(
        self,
        messages: list[dict[str, Any]],
        model: str | None = None,
        max_cost: float | None = None,
    ) -> str:
        """Send ``messages``; return the reply's text."""
        client = self._tracked_client()
        anthropic = type(self._client).__module__.startswith("anthropic")
        if model is None:
            model = choose_model(
                "chat",
                max_cost=max_cost,
                messages=messages,
                expected_output_tokens=self.max_output_tokens,  # the worst case, as reserved
                provider="anthropic" if anthropic else "openai",
                catalog=self.optimizer.catalog,
            )
        if anthropic:
            system = [m["content"] for m in messages if m.get("role") == "system"]
            extra = {"system": "\n\n".join(system)} if system else {}
            reply = client.messages.create(
                model=model,
                max_tokens=self.max_output_tokens,
                messages=[m for m in messages if m.get("role") != "system"],
                max_cost=max_cost,
                **extra,
            )
            return "".join(getattr(block, "text", "") for block in reply.content)
        completion = client.chat.completions.create(
            model=model, messages=messages, max_tokens=self.max_output_tokens, max_cost=max_cost
        )
        return completion.choices[0].message.content or ""

    def close(self) -> None:
        """Close the client this built (one given to it is left open)."""
        if self._owns_client and self._client is not None:
            self._client.close()

    def __enter__(self) -> TrackedLLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
