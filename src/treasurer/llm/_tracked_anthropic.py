"""The Anthropic SDK's shapes: messages, streamed or not."""

from __future__ import annotations

from typing import Any

from ._calls import Endpoint, Meter, Request, Settings, Usage, attr, counted, number
from ._tracked import TrackedClient, tracked_endpoint
from ._util import given, model_of, sdk_errors


def usage_of(usage: Any) -> Usage | None:
    """Anthropic reports cached input apart from ``input_tokens``; treasurer counts it in."""
    if usage is None:
        return None
    read = number(attr(usage, "cache_read_input_tokens"))
    write = number(attr(usage, "cache_creation_input_tokens"))
    return Usage(
        number(attr(usage, "input_tokens")) + read + write,
        number(attr(usage, "output_tokens")),
        read,
        write,
    )


class Messages(Endpoint):
    provider = "anthropic"

    def __init__(self) -> None:
        self.status_errors, self.unsent_errors, self.timeout_errors = sdk_errors("anthropic")

    def request(self, kwargs: dict[str, Any]) -> Request:
        model = model_of(kwargs, "messages.create")
        messages = list(kwargs.get("messages") or ())
        for key in ("system", "tools"):
            if given(kwargs, key) is not None:
                messages.append({"role": key, "content": kwargs[key]})
        limit = given(kwargs, "max_tokens", int)
        stream = kwargs.get("stream") is True
        return Request(model, messages, None, limit, stream, kwargs)

    def usage(self, response: Any) -> Usage | None:
        return usage_of(getattr(response, "usage", None))

    def observe(self, event: Any, meter: Meter, model: str) -> bool:
        kind = getattr(event, "type", "")
        if kind == "message_start":
            message = getattr(event, "message", None)
            meter.request_id = self.request_id(message)
            start = usage_of(getattr(message, "usage", None))
            if start is not None:
                meter.input_tokens = start.input_tokens
                meter.cache_read_tokens = start.cache_read_tokens
                meter.cache_write_tokens = start.cache_write_tokens
        elif kind == "content_block_delta":
            delta = getattr(event, "delta", None)
            for key in ("text", "partial_json", "thinking"):
                meter.output_tokens += counted(model, attr(delta, key))
        elif kind == "message_delta":
            # The final output count (cumulative); the input came with message_start.
            reported = number(attr(event, "usage", "output_tokens"))
            meter.output_tokens = reported or meter.output_tokens
        return True


def wrap(client: Any, budget: Any, settings: Settings, is_async: bool) -> TrackedClient:
    """``client`` with messages.create tracked."""
    messages = tracked_endpoint(client.messages, Messages(), budget, settings, is_async)
    return TrackedClient(client, {"messages": messages}, budget)
