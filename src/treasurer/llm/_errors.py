"""The LLM edge's exceptions; each is also the built-in with the same meaning."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from treasurer import RequestTooLarge, TreasurerError


class UnknownModel(TreasurerError, LookupError):
    """No price is known for a model: neither a table given nor genai-prices has it.

    ``model`` and ``provider`` are what was asked for. Never a silent zero:
    add a price with ``prices={model: {"input": ..., "output": ...}}`` or
    :func:`treasurer.llm.register_price`.
    """

    def __init__(self, model: str, provider: str | None = None) -> None:
        self.model = model
        self.provider = provider
        where = "" if provider is None else f" of provider {provider!r}"
        super().__init__(
            f"no price known for model {model!r}{where}: pass "
            f"prices={{{model!r}: {{'input': ..., 'output': ...}}}} (USD per million "
            f"tokens), or call treasurer.llm.register_price({model!r}, input=..., output=...)"
        )


class NoModelFits(TreasurerError, LookupError):
    """No model in the catalog meets a request; ``refusals`` says why, model by model."""

    def __init__(self, task: str, refusals: Mapping[str, str]) -> None:
        self.task = task
        self.refusals = dict(refusals)
        reasons = "; ".join(f"{model}: {why}" for model, why in self.refusals.items())
        super().__init__(f"no model fits task {task!r}: {reasons or 'the catalog is empty'}")


class UntrackedCall(TreasurerError, NotImplementedError):
    """A helper of a tracked client that treasurer does not track (``.stream()``,
    ``.parse()``, raw responses): refused rather than spending outside the budget."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"{name} is not tracked by treasurer; use create(...) (with stream=True "
            "for a stream), or the original client to spend outside the budget"
        )


class MaxCostExceeded(RequestTooLarge):
    """A call's worst-case cost is above the ``max_cost=`` given to it; nothing was sent.

    A :class:`treasurer.RequestTooLarge` (so a ``BudgetExceeded``) on the
    ``usd`` axis, whose ``limit`` is the ``max_cost`` and ``requested`` the
    worst-case cost; ``model`` is the model asked for.
    """

    def __init__(self, *, budget: str, model: str, limit: Decimal, requested: Decimal) -> None:
        super().__init__(
            budget=budget,
            cap="usd",
            window="request",
            limit=limit,
            requested=requested,
            used=0,
            reserved=0,
            attempted=requested,
            available=limit,
        )
        self.model = model
        self.args = (
            f"budget {budget!r}: a call of {model!r} may cost up to ${requested:f}, "
            f"more than its max_cost of ${limit:f}; nothing was sent",
        )
