"""Estimates before a call: input tokens, worst-case output, worst-case dollars."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from treasurer import InvalidOption

from ._known import known
from ._prices import Prices, cost, token_count
from ._tokens import count_messages, count_text, is_exact

DEFAULT_MAX_OUTPUT_TOKENS: Final = 4096
DEFAULT_EXPECTED_OUTPUT_TOKENS: Final = 500


@dataclass(frozen=True)
class Estimate:
    """What a call may cost, before it is made.

    ``output_tokens`` and ``usd`` are the worst case: the request's output
    limit, every input token at the full (uncached) rate. ``expected_*`` are
    the figures for ``expected_output_tokens`` instead. ``exact_input`` says
    whether the input was counted with the model's own tokenizer (OpenAI
    models) or conservatively (others).
    """

    model: str
    input_tokens: int
    output_tokens: int
    usd: Decimal
    expected_output_tokens: int
    expected_usd: Decimal
    exact_input: bool

    def amounts(self, *, expected: bool = False) -> dict[str, int | Decimal]:
        """The budget amounts to reserve: the worst case, or with ``expected`` the expected one."""
        if expected:
            output, usd = self.expected_output_tokens, self.expected_usd
        else:
            output, usd = self.output_tokens, self.usd
        return {"input_tokens": self.input_tokens, "output_tokens": output, "usd": usd}


def output_limit(model: str, max_output_tokens: int | None, default_max_output_tokens: int) -> int:
    """The worst-case output: the request's limit, else the model's capped by the default."""
    if max_output_tokens is not None:
        return token_count(max_output_tokens, "max_output_tokens")
    default = token_count(default_max_output_tokens, "default_max_output_tokens")
    entry = known(model)
    return default if entry is None else min(entry.max_output_tokens, default)


def count_input(model: str, messages: Iterable[object] | None, prompt: str | None) -> int:
    """Input tokens of a chat's messages plus a plain prompt."""
    if messages is not None and (isinstance(messages, str) or not isinstance(messages, Iterable)):
        raise InvalidOption(f"messages must be a list of messages, not {messages!r}")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidOption(f"prompt must be a str, not {prompt!r}")
    total = 0 if messages is None else count_messages(model, messages)
    return total + (0 if prompt is None else count_text(model, prompt))


def estimate(
    model: str,
    *,
    messages: Iterable[object] | None = None,
    prompt: str | None = None,
    max_output_tokens: int | None = None,
    expected_output_tokens: int | None = None,
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    provider: str | None = None,
    prices: Prices | None = None,
) -> Estimate:
    """Estimate a call of ``model`` on ``messages`` (chat format) and/or ``prompt`` (text).

    Input tokens: tiktoken for OpenAI models (offline), a conservative count
    for others (see :mod:`treasurer.llm`). Worst-case output tokens: the
    request's ``max_output_tokens``, else the model's own output limit capped
    by ``default_max_output_tokens`` (4096). Worst-case USD prices all of it
    at the full input and output rates, so reserving it never under-reserves
    (unless the request sets no output limit and the model writes past the
    default). ``expected_output_tokens`` (default 500, at most the worst
    case) gives the expected figures. Raises :class:`UnknownModel` for a
    model without a price.
    """
    input_tokens = count_input(model, messages, prompt)
    worst = output_limit(model, max_output_tokens, default_max_output_tokens)
    if expected_output_tokens is None:
        expected = min(worst, DEFAULT_EXPECTED_OUTPUT_TOKENS)
    else:
        expected = min(worst, token_count(expected_output_tokens, "expected_output_tokens"))

    def usd(output_tokens: int) -> Decimal:
        return cost(
            model,
            provider=provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            prices=prices,
        )

    return Estimate(
        model=model,
        input_tokens=input_tokens,
        output_tokens=worst,
        usd=usd(worst),
        expected_output_tokens=expected,
        expected_usd=usd(expected),
        exact_input=is_exact(model),
    )
