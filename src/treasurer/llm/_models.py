"""Choosing a model: a catalog of models and the cheapest one that does the job."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from treasurer import InvalidOption

from ._errors import NoModelFits
from ._estimate import DEFAULT_EXPECTED_OUTPUT_TOKENS, estimate
from ._known import KNOWN, QUALITIES
from ._prices import Money, Price, PriceTable, as_decimal, lookup


@dataclass(frozen=True)
class ModelInfo:
    """A model in a :class:`Catalog`.

    ``quality`` is "low", "medium" or "high"; ``tasks`` are the task types it
    suits (empty: any task); ``price`` is in USD per million tokens.
    """

    name: str
    provider: str | None
    quality: str
    tasks: frozenset[str]
    price: Price
    max_output_tokens: int | None = None
    context_window: int | None = None
    own_price: bool = field(default=False, repr=False)

    def suits(self, task: str) -> bool:
        return not self.tasks or task in self.tasks


def quality_rank(quality: str) -> int:
    if quality not in QUALITIES:
        raise InvalidOption(f"quality must be one of {', '.join(QUALITIES)}, not {quality!r}")
    return QUALITIES.index(quality)


class Catalog:
    """The models to choose from; yours to edit (:meth:`add`, :meth:`remove`).

    :func:`default_catalog` returns a new one seeded from genai-prices' table
    and treasurer's notes on popular OpenAI and Anthropic models; changing it
    changes nothing else.
    """

    def __init__(self, models: Iterable[ModelInfo] = ()) -> None:
        self._models: dict[str, ModelInfo] = {}
        for model in models:
            self._models[model.name] = model

    def add(
        self,
        name: str,
        *,
        quality: str = "medium",
        tasks: Iterable[str] = (),
        provider: str | None = None,
        price: Price | Mapping[str, Money] | None = None,
        max_output_tokens: int | None = None,
    ) -> ModelInfo:
        """Add or replace a model; without ``price``, genai-prices' price is looked up."""
        quality_rank(quality)
        if isinstance(tasks, str):
            raise InvalidOption(f"tasks must be a collection of task names, not {tasks!r}")
        if price is None:
            found = lookup(name, provider=provider)
            info = ModelInfo(
                name,
                provider or found.provider,
                quality,
                frozenset(tasks),
                found.price,
                max_output_tokens,
                found.context_window,
            )
        else:
            spec = Price.of(price, name)
            info = ModelInfo(
                name, provider, quality, frozenset(tasks), spec, max_output_tokens, own_price=True
            )
        self._models[name] = info
        return info

    def remove(self, name: str) -> None:
        """Take a model out; KeyError if it is not in the catalog."""
        del self._models[name]

    def __getitem__(self, name: str) -> ModelInfo:
        return self._models[name]

    def get(self, name: str) -> ModelInfo | None:
        return self._models.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)

    @property
    def prices(self) -> PriceTable:
        """The own prices of the catalog's models (those not from genai-prices)."""
        return PriceTable({m.name: m.price for m in self._models.values() if m.own_price})

    def __repr__(self) -> str:
        return f"Catalog({', '.join(self._models)})"


def default_catalog() -> Catalog:
    """A new catalog of popular OpenAI and Anthropic models, priced by genai-prices."""
    catalog = Catalog()
    for name, notes in KNOWN.items():
        catalog.add(
            name,
            quality=notes.quality,
            tasks=notes.tasks,
            provider=notes.provider,
            max_output_tokens=notes.max_output_tokens,
        )
    return catalog


def expected_cost(
    model: ModelInfo,
    catalog: Catalog,
    messages: Iterable[object] | None,
    prompt: str | None,
    expected_output_tokens: int,
) -> Decimal:
    """The cost of a call of ``model`` writing ``expected_output_tokens``."""
    return estimate(
        model.name,
        messages=messages,
        prompt=prompt,
        max_output_tokens=expected_output_tokens,
        provider=model.provider,
        prices=catalog.prices,
    ).usd


def choose_model(
    task: str,
    *,
    max_cost: Money | None = None,
    quality: str = "medium",
    messages: Iterable[object] | None = None,
    prompt: str | None = None,
    expected_output_tokens: int = DEFAULT_EXPECTED_OUTPUT_TOKENS,
    provider: str | None = None,
    catalog: Catalog | None = None,
) -> str:
    """The cheapest model that suits ``task`` at ``quality`` or better within ``max_cost``.

    A call's cost is estimated on ``messages`` and/or ``prompt`` (none: no
    input) with ``expected_output_tokens`` of output. ``provider`` keeps
    only that provider's models. Raises :class:`NoModelFits`, whose
    ``refusals`` says why each model was refused, when none fits.
    """
    wanted = quality_rank(quality)
    limit = None if max_cost is None else as_decimal(max_cost, "max_cost")
    catalog = default_catalog() if catalog is None else catalog
    messages = None if messages is None else list(messages)
    refusals: dict[str, str] = {}
    fitting: list[tuple[Decimal, str]] = []
    for model in catalog:
        if not model.suits(task):
            refusals[model.name] = f"suits {', '.join(sorted(model.tasks))}, not {task!r}"
        elif quality_rank(model.quality) < wanted:
            refusals[model.name] = f"quality {model.quality} is below {quality}"
        elif provider is not None and model.provider not in (None, provider):
            refusals[model.name] = f"provider {model.provider}, not {provider}"
        else:
            usd = expected_cost(model, catalog, messages, prompt, expected_output_tokens)
            if limit is not None and usd > limit:
                refusals[model.name] = f"would cost ${usd:f}, above max_cost ${limit:f}"
            else:
                fitting.append((usd, model.name))
    if not fitting:
        raise NoModelFits(task, refusals)
    return min(fitting)[1]
