"""Suggestions from usage records: where the money went and how to spend less."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from ._errors import UnknownModel
from ._models import Catalog, ModelInfo, default_catalog, quality_rank
from ._prices import PriceTable, as_decimal, cost, token_count

MIN_SHARE: Final = Decimal("0.1")  # a model and task below this share of spend is not worth a line
LOW_CACHE_HIT_RATE: Final = Decimal("0.2")
OUTPUT_DOMINATES: Final = Decimal("0.5")


@dataclass(frozen=True)
class Recommendation:
    """One suggestion: ``kind`` is "cheaper_model", "cache" or "output";
    ``saving_usd`` what it would have saved on these records, where known."""

    kind: str
    message: str
    saving_usd: Decimal | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class _Record:
    model: str
    task: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int | None
    usd: Decimal


def _field(record: object, *names: str) -> object:
    for name in names:
        value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
        if value is not None:
            return value
    return None


def _count(record: object, *names: str) -> int:
    value = _field(record, *names)
    return 0 if value is None else token_count(value, names[0])


def _read(record: object, prices: PriceTable) -> _Record:
    model = str(_field(record, "model"))
    input_tokens = _count(record, "input_tokens", "prompt_tokens")
    output_tokens = _count(record, "output_tokens", "completion_tokens")
    cached = _field(record, "cache_read_tokens", "cached_tokens")
    usd = _field(record, "usd", "cost_usd")
    task = _field(record, "task", "endpoint")
    return _Record(
        model,
        None if task is None else str(task),
        input_tokens,
        output_tokens,
        None if cached is None else _count(record, "cache_read_tokens", "cached_tokens"),
        cost(model, input_tokens=input_tokens, output_tokens=output_tokens, prices=prices)
        if usd is None
        else as_decimal(usd, "cost_usd"),
    )


def _dollars(value: Decimal) -> str:
    return f"${round(value, 6).normalize():f}"


def _percent(part: Decimal, whole: Decimal) -> str:
    return f"{part * 100 / whole:.0f} %"


def _split(record: _Record, prices: PriceTable) -> tuple[Decimal, Decimal] | None:
    """The input and output parts of a record's cost, at list price (None: unknown model)."""
    try:
        return (
            cost(record.model, input_tokens=record.input_tokens, output_tokens=0, prices=prices),
            cost(record.model, input_tokens=0, output_tokens=record.output_tokens, prices=prices),
        )
    except UnknownModel:
        return None


def _alternative(
    current: ModelInfo | None, task: str | None, records: list[_Record], catalog: Catalog
) -> tuple[Decimal, ModelInfo] | None:
    """The catalog model that would have cost least on these records, at most one tier lower."""
    floor = 0 if current is None else max(quality_rank(current.quality) - 1, 0)
    best: tuple[Decimal, ModelInfo] | None = None
    for model in catalog:
        if current is not None and model.name == current.name:
            continue
        if (task is not None and not model.suits(task)) or quality_rank(model.quality) < floor:
            continue
        total = sum(
            (
                cost(
                    model.name,
                    provider=model.provider,
                    input_tokens=r.input_tokens,
                    output_tokens=r.output_tokens,
                    prices=catalog.prices,
                )
                for r in records
            ),
            Decimal(0),
        )
        if best is None or total < best[0]:
            best = (total, model)
    return best


def _cheaper_models(
    records: list[_Record], total: Decimal, catalog: Catalog
) -> list[Recommendation]:
    groups: dict[tuple[str, str | None], list[_Record]] = defaultdict(list)
    for record in records:
        groups[record.model, record.task].append(record)
    found = []
    for (model, task), group in groups.items():
        spent = sum((r.usd for r in group), Decimal(0))
        if spent < total * MIN_SHARE:
            continue
        alternative = _alternative(catalog.get(model), task, group, catalog)
        if alternative is None or alternative[0] >= spent:
            continue
        would, other = alternative
        where = "" if task is None else f" on {task}"
        found.append(
            Recommendation(
                "cheaper_model",
                f"{_percent(spent, total)} of spend is {model}{where} ({len(group)} calls); "
                f"{other.name} (quality {other.quality}) would have cost {_dollars(would)} "
                f"instead of {_dollars(spent)}",
                spent - would,
            )
        )
    return sorted(found, key=lambda r: -(r.saving_usd or 0))


def recommendations(
    usage: Iterable[object], *, catalog: Catalog | None = None
) -> list[Recommendation]:
    """Concrete suggestions from usage records, largest saving first.

    A record is any object or mapping with ``model``, ``input_tokens``,
    ``output_tokens`` and optionally ``cost_usd`` (or ``usd``; else priced
    here), ``task`` (or ``endpoint``) and ``cache_read_tokens``. Suggests a
    cheaper catalog model (at most one quality tier lower, suiting the task)
    for each model and task with at least 10 % of spend; better prompt
    caching when records report cache reads and under 20 % of input tokens
    were cache hits; shorter answers when output is over half the spend.
    """
    catalog = default_catalog() if catalog is None else catalog
    prices = catalog.prices
    records = [_read(record, prices) for record in usage]
    total = sum((r.usd for r in records), Decimal(0))
    if not records or total == 0:
        return []
    found = _cheaper_models(records, total, catalog)
    splits = [split for r in records if (split := _split(r, prices)) is not None]
    spent_in = sum((s[0] for s in splits), Decimal(0))
    spent_out = sum((s[1] for s in splits), Decimal(0))
    listed = spent_in + spent_out
    reported = [r for r in records if r.cache_read_tokens is not None]
    if reported and listed:
        read = sum(r.cache_read_tokens or 0 for r in reported)
        inputs = sum(r.input_tokens for r in reported)
        if inputs and Decimal(read) / inputs < LOW_CACHE_HIT_RATE:
            found.append(
                Recommendation(
                    "cache",
                    f"only {_percent(Decimal(read), Decimal(inputs))} of input tokens were "
                    f"prompt-cache hits, and input is {_percent(spent_in, listed)} of spend: "
                    "put the stable part of prompts (instructions, tools, documents) first "
                    "and keep it identical between calls so the provider can cache it",
                )
            )
    if listed and spent_out / listed > OUTPUT_DOMINATES:
        found.append(
            Recommendation(
                "output",
                f"output tokens are {_percent(spent_out, listed)} of spend "
                f"({_dollars(spent_out)} of {_dollars(listed)}): set max_tokens, or ask "
                "for shorter answers",
            )
        )
    return found
