"""One tracked call, whatever the SDK: the estimate before, the settlement after.

An :class:`Endpoint` knows one API's shapes (where the model, the messages
and the output limit are in a request; where usage is in a response or a
stream's events). A :class:`Call` uses it to work out what to reserve, and
then what to commit: the response's usage, or for a stream that ended early
or broke, what was consumed (the input, and the output counted so far).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from treasurer import InvalidOption

from ._errors import MaxCostExceeded
from ._estimate import DEFAULT_MAX_OUTPUT_TOKENS, estimate, output_limit
from ._prices import Money, Prices, as_decimal, cost
from ._tokens import count_text

ReserveMode = Literal["worst", "expected"]


@dataclass(frozen=True)
class Usage:
    """A call's usage as the API reported it; ``input_tokens`` includes cached tokens."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Request:
    """What an endpoint read from a request's keywords."""

    model: str
    messages: list[object]
    prompt: str | None
    max_output_tokens: int | None
    stream: bool
    kwargs: dict[str, Any]  # what to send, possibly amended (usage asked for in a stream)
    outputs: int = 1  # completions asked for (OpenAI's n)
    asked_usage: bool = False  # usage in the stream was asked for here, not by the caller


@dataclass
class Meter:
    """What a stream has shown so far."""

    final: Usage | None = None
    input_tokens: int | None = None  # reported before the end (Anthropic's message_start)
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0  # counted from the text received
    request_id: str | None = None
    hide_usage_event: bool = False  # an event that only carries usage we asked for


class Endpoint(ABC):
    """The shapes of one API (OpenAI chat completions, OpenAI responses, Anthropic messages)."""

    provider: str
    status_errors: tuple[type[BaseException], ...] = ()  # the API answered with an error
    unsent_errors: tuple[type[BaseException], ...] = ()  # connection failed, not a timeout
    timeout_errors: tuple[type[BaseException], ...] = ()

    @abstractmethod
    def request(self, kwargs: dict[str, Any]) -> Request: ...

    @abstractmethod
    def usage(self, response: Any) -> Usage | None: ...

    @abstractmethod
    def observe(self, event: Any, meter: Meter, model: str) -> bool:
        """Take in one stream event; return whether the caller should see it."""

    def request_id(self, response: Any) -> str | None:
        value = getattr(response, "id", None)
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Settings:
    """A tracked client's options."""

    budget_name: str
    prices: Prices | None = None
    reserve: ReserveMode = "worst"
    wait: bool = False
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reserve not in ("worst", "expected"):
            raise InvalidOption(f"reserve must be 'worst' or 'expected', not {self.reserve!r}")
        if not isinstance(self.wait, bool):
            raise InvalidOption(f"wait must be True or False, not {self.wait!r}")


class Call:
    """One call through a tracked client, from its estimate to its settlement."""

    def __init__(self, endpoint: Endpoint, kwargs: dict[str, Any], settings: Settings) -> None:
        max_cost: Money | None = kwargs.pop("max_cost", None)
        self.endpoint = endpoint
        self.settings = settings
        self.request = request = endpoint.request(kwargs)
        self.model = request.model
        self.meter = Meter(hide_usage_event=request.asked_usage)
        limit = output_limit(
            request.model, request.max_output_tokens, settings.default_max_output_tokens
        )
        self.estimate = estimate(
            request.model,
            messages=request.messages,
            prompt=request.prompt,
            max_output_tokens=limit * request.outputs,
            provider=endpoint.provider,
            prices=settings.prices,
        )
        if max_cost is not None:
            ceiling = as_decimal(max_cost, "max_cost")
            if self.estimate.usd > ceiling:
                raise MaxCostExceeded(
                    budget=settings.budget_name,
                    model=request.model,
                    limit=ceiling,
                    requested=self.estimate.usd,
                )
        self.reserve: dict[str, Any] = self.estimate.amounts(
            expected=settings.reserve == "expected"
        )
        if settings.wait:
            self.reserve["wait"] = True

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.request.kwargs

    @property
    def stream(self) -> bool:
        return self.request.stream

    def commit_of(self, usage: Usage, request_id: str | None) -> dict[str, Any]:
        """The keywords of the commit for this usage: amounts, exact cost, metadata."""
        usd = cost(
            self.model,
            provider=self.endpoint.provider,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            prices=self.settings.prices,
        )
        commit: dict[str, Any] = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "usd": usd,
            "model": self.model,
        }
        if request_id is not None:
            commit["request_id"] = request_id
        if self.settings.tags:
            commit["tags"] = dict(self.settings.tags)
        return commit

    def from_response(self, response: Any) -> dict[str, Any]:
        """The commit for a whole response (its text counted if it reports no usage)."""
        usage = self.endpoint.usage(response)
        if usage is None:
            usage = Usage(self.estimate.input_tokens, self.estimate.output_tokens)
        return self.commit_of(usage, self.endpoint.request_id(response))

    def observe(self, event: Any) -> bool:
        return self.endpoint.observe(event, self.meter, self.model)

    def consumed(self) -> dict[str, Any]:
        """The commit for a stream that ended: its final usage, or what it consumed so far."""
        meter = self.meter
        usage = meter.final
        if usage is None:
            input_tokens = (
                self.estimate.input_tokens if meter.input_tokens is None else meter.input_tokens
            )
            usage = Usage(
                input_tokens,
                meter.output_tokens,
                meter.cache_read_tokens,
                meter.cache_write_tokens,
            )
        return self.commit_of(usage, meter.request_id)

    def after_error(self, error: BaseException) -> dict[str, Any] | None:
        """What a call that raised consumed: nothing if the API refused it or it never
        left; else (cancelled, timed out mid-call) its input, which the API may bill."""
        endpoint = self.endpoint
        if isinstance(error, endpoint.status_errors):
            return None
        if isinstance(error, endpoint.unsent_errors) and not isinstance(
            error, endpoint.timeout_errors
        ):
            return None
        return self.commit_of(Usage(self.estimate.input_tokens, 0), None)


def counted(model: str, text: object) -> int:
    """Output tokens of a piece of streamed text: at least one per non-empty delta."""
    if not isinstance(text, str) or not text:
        return 0
    return max(1, count_text(model, text))


def number(value: object) -> int:
    """A usage figure from an SDK object (None and missing count as 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def attr(value: Any, *path: str) -> Any:
    for name in path:
        value = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
    return value
