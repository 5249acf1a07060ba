"""Prices: what a call costs, from genai-prices' bundled table or the user's own.

genai-prices ships a maintained table of providers' prices and works offline;
it knows cache-read and cache-write rates and tiered prices, and answers in
exact ``Decimal``. Own prices (an own deployment, a negotiated rate) come from
a :class:`PriceTable` passed to a call, or from :func:`register_price`, which
changes a registry the user asked to change, and nothing else: genai-prices'
global snapshot is never touched.

Token counts follow genai-prices: ``input_tokens`` is every input token,
cached ones included, and ``cache_read_tokens`` / ``cache_write_tokens`` say
how many of them were read from or written to the provider's prompt cache;
those are priced at the cache rates, the rest at the input rate.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from treasurer import InvalidAmount, InvalidAmountType, InvalidOption

from ._errors import UnknownModel

if TYPE_CHECKING:
    from genai_prices.types import PriceCalculation

PER_MILLION: Final = Decimal(1_000_000)
_PROBE: Final = 1000  # tokens priced to read a per-million rate below any price tier

Money = int | float | Decimal


def as_decimal(value: object, name: str) -> Decimal:
    """A finite, non-negative amount of dollars as an exact Decimal (floats by their repr)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidAmountType(f"{name} must be an int, float or Decimal, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidAmount(f"{name} must be a finite number, got {value}")
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not exact.is_finite() or exact < 0:
        raise InvalidAmount(f"{name} must be a finite number >= 0, got {value}")
    return exact


def token_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmountType(f"{name} must be an int, not {value!r}")
    if value < 0:
        raise InvalidAmount(f"{name} must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class Price:
    """A model's price in USD per million tokens.

    ``cache_read`` and ``cache_write`` are the rates of cached input tokens;
    ``None`` prices them as ordinary input.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None

    @classmethod
    def of(cls, spec: Price | Mapping[str, object], model: str = "model") -> Price:
        """A Price from a Price or a mapping ``{"input": ..., "output": ..., ...}``."""
        if isinstance(spec, Price):
            return spec
        if not isinstance(spec, Mapping):
            raise InvalidOption(
                f"the price of {model!r} must be a mapping or a Price, not {spec!r}"
            )
        unknown = set(spec) - {"input", "output", "cache_read", "cache_write"}
        if unknown:
            raise InvalidOption(
                f"unknown keys {sorted(unknown)} in the price of {model!r}; "
                "expected input, output, cache_read, cache_write (USD per million tokens)"
            )
        if "input" not in spec or "output" not in spec:
            raise InvalidOption(f"the price of {model!r} needs 'input' and 'output'")

        def rate(key: str) -> Decimal | None:
            value = spec.get(key)
            return None if value is None else as_decimal(value, f"{model} {key} price")

        input_rate, output_rate = rate("input"), rate("output")
        assert input_rate is not None
        assert output_rate is not None
        return cls(input_rate, output_rate, rate("cache_read"), rate("cache_write"))

    def cost(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Decimal:
        """The exact cost of this usage; ``input_tokens`` includes the cached ones."""
        uncached = input_tokens - cache_read_tokens - cache_write_tokens
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        total = (
            uncached * self.input
            + cache_read_tokens * read
            + cache_write_tokens * write
            + output_tokens * self.output
        )
        return total / PER_MILLION


class PriceTable(Mapping[str, Price]):
    """The user's own prices, model name -> :class:`Price`; immutable.

    ``PriceTable({"my-llama": {"input": 0.2, "output": 0.6}})``; rates are
    USD per million tokens. Model names match case-insensitively.
    """

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[str, Price | Mapping[str, object]] | None = None) -> None:
        self._prices: dict[str, Price] = {
            _key(model): Price.of(spec, model) for model, spec in (prices or {}).items()
        }

    def __getitem__(self, model: str) -> Price:
        return self._prices[_key(model)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceTable({self._prices!r})"


def _key(model: str) -> str:
    if not isinstance(model, str) or not model:
        raise InvalidOption(f"a model is named by a non-empty str, not {model!r}")
    return model.lower()


Prices = PriceTable | Mapping[str, Price | Mapping[str, object]]

_registered: dict[str, Price] = {}
_registry_lock = threading.Lock()


def register_price(
    model: str,
    *,
    input: Money,
    output: Money,
    cache_read: Money | None = None,
    cache_write: Money | None = None,
) -> None:
    """Price ``model`` (USD per million tokens) for every later call in this process.

    It takes precedence over genai-prices; a ``prices=`` table given to a
    call takes precedence over it. :func:`unregister_price` removes it.
    """
    spec = {"input": input, "output": output, "cache_read": cache_read, "cache_write": cache_write}
    price = Price.of(spec, model)
    with _registry_lock:
        _registered[_key(model)] = price


def unregister_price(model: str) -> None:
    """Forget a price given to :func:`register_price`; a model never registered is ignored."""
    with _registry_lock:
        _registered.pop(_key(model), None)


@dataclass(frozen=True)
class ModelPrice:
    """Where a model's price comes from: its canonical name, provider, rates and context."""

    model: str
    provider: str | None
    price: Price
    context_window: int | None = None


def own_price(model: str, prices: Prices | None) -> Price | None:
    """The price from a table given to the call, else the registry, else None."""
    if prices:
        table = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        found = table.get(model)
        if found is not None:
            return found
    return _registered.get(_key(model))


def lookup(model: str, *, provider: str | None = None, prices: Prices | None = None) -> ModelPrice:
    """The price of ``model``: own prices first, then genai-prices; else :class:`UnknownModel`."""
    price = own_price(model, prices)
    if price is not None:
        return ModelPrice(model, provider, price)
    calc = _genai_price(model, provider, input_tokens=_PROBE, output_tokens=0)
    scale = PER_MILLION / _PROBE

    def rate(**usage: int) -> Decimal:
        return tidy(_genai_price(model, provider, **usage).total_price * scale)

    return ModelPrice(
        calc.model.id,
        calc.provider.id,
        Price(
            input=tidy(calc.total_price * scale),
            output=rate(input_tokens=0, output_tokens=_PROBE),
            cache_read=rate(input_tokens=_PROBE, cache_read_tokens=_PROBE),
            cache_write=rate(input_tokens=_PROBE, cache_write_tokens=_PROBE),
        ),
        calc.model.context_window,
    )


def tidy(value: Decimal) -> Decimal:
    """``Decimal("3.000")`` as ``3``, ``Decimal("3.7500")`` as ``3.75``."""
    tidied = value.normalize()
    return tidied.quantize(Decimal(1)) if tidied.as_tuple().exponent > 0 else tidied  # type: ignore[operator]


def cost(
    model: str,
    *,
    provider: str | None = None,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    prices: Prices | None = None,
) -> Decimal:
    """What a call of ``model`` with this usage costs, in USD, exactly.

    ``input_tokens`` counts every input token, the cached ones included;
    ``cache_read_tokens`` and ``cache_write_tokens`` (parts of it) are priced
    at the cache rates. Own prices (``prices=``, then :func:`register_price`)
    come first, then genai-prices' bundled table (``provider`` narrows its
    lookup: "openai", "anthropic", ...). An unknown model raises
    :class:`UnknownModel`, never a silent zero.
    """
    usage = {
        "input_tokens": token_count(input_tokens, "input_tokens"),
        "output_tokens": token_count(output_tokens, "output_tokens"),
        "cache_read_tokens": token_count(cache_read_tokens, "cache_read_tokens"),
        "cache_write_tokens": token_count(cache_write_tokens, "cache_write_tokens"),
    }
    if cache_read_tokens + cache_write_tokens > input_tokens:
        raise InvalidAmount(
            f"cache_read_tokens + cache_write_tokens ({cache_read_tokens + cache_write_tokens}) "
            f"must be <= input_tokens ({input_tokens}): input_tokens includes the cached ones"
        )
    price = own_price(model, prices)
    if price is not None:
        return price.cost(**usage)
    return _genai_price(model, provider, **usage).total_price


def _genai_price(model: str, provider: str | None, **usage: int) -> PriceCalculation:
    from genai_prices import Usage, calc_price

    try:
        return calc_price(Usage(**usage), model, provider_id=provider)
    except LookupError:
        raise UnknownModel(model, provider) from None
