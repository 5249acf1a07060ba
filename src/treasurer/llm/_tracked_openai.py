"""The OpenAI SDK's shapes: chat completions and responses, streamed or not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._calls import Endpoint, Meter, Request, Settings, Usage, attr, counted, number
from ._tracked import TrackedClient, _Proxy, tracked_endpoint
from ._util import given, model_of, sdk_errors


def usage_of(usage: Any, input_key: str, output_key: str, details_key: str) -> Usage | None:
    """OpenAI usage (chat's prompt/completion or responses' input/output figures)."""
    if usage is None:
        return None
    details = attr(usage, details_key)
    return Usage(
        number(attr(usage, input_key)),
        number(attr(usage, output_key)),
        number(attr(details, "cached_tokens")),
        number(attr(details, "cache_write_tokens")),
    )


class ChatCompletions(Endpoint):
    provider = "openai"

    def __init__(self) -> None:
        self.status_errors, self.unsent_errors, self.timeout_errors = sdk_errors("openai")

    def request(self, kwargs: dict[str, Any]) -> Request:
        model = model_of(kwargs, "chat.completions.create")
        messages = list(kwargs.get("messages") or ())
        for key in ("tools", "functions", "response_format"):
            if given(kwargs, key) is not None:
                messages.append({"role": key, "content": kwargs[key]})
        limit = given(kwargs, "max_completion_tokens", int)
        if limit is None:
            limit = given(kwargs, "max_tokens", int)
        stream = kwargs.get("stream") is True
        send, asked = kwargs, False
        if stream:
            options = given(kwargs, "stream_options", Mapping) or {}
            if "include_usage" not in options:  # ask for the usage in the final chunk
                send = {**kwargs, "stream_options": {**options, "include_usage": True}}
                asked = True
        outputs = given(kwargs, "n", int) or 1
        return Request(model, messages, None, limit, stream, send, outputs, asked)

    def usage(self, response: Any) -> Usage | None:
        return usage_of(
            getattr(response, "usage", None),
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
        )

    def observe(self, event: Any, meter: Meter, model: str) -> bool:
        meter.request_id = meter.request_id or self.request_id(event)
        choices = getattr(event, "choices", None) or ()
        usage = self.usage(event)
        if usage is not None:
            meter.final = usage
            if meter.hide_usage_event and not choices:
                return False  # the caller did not ask for this chunk
        for choice in choices:
            delta = attr(choice, "delta")
            meter.output_tokens += counted(model, attr(delta, "content"))
            meter.output_tokens += counted(model, attr(delta, "refusal"))
            for tool_call in attr(delta, "tool_calls") or ():
                meter.output_tokens += counted(model, attr(tool_call, "function", "arguments"))
        return True


class Responses(Endpoint):
    provider = "openai"

    def __init__(self) -> None:
        self.status_errors, self.unsent_errors, self.timeout_errors = sdk_errors("openai")

    def request(self, kwargs: dict[str, Any]) -> Request:
        model = model_of(kwargs, "responses.create")
        given_input = given(kwargs, "input")
        prompt = given_input if isinstance(given_input, str) else None
        messages = [] if given_input is None or prompt is not None else list(given_input)
        for key in ("instructions", "tools", "text"):
            if given(kwargs, key) is not None:
                messages.append({"role": key, "content": kwargs[key]})
        limit = given(kwargs, "max_output_tokens", int)
        stream = kwargs.get("stream") is True
        return Request(model, messages, prompt, limit, stream, kwargs)

    def usage(self, response: Any) -> Usage | None:
        return usage_of(
            getattr(response, "usage", None),
            "input_tokens",
            "output_tokens",
            "input_tokens_details",
        )

    def observe(self, event: Any, meter: Meter, model: str) -> bool:
        kind = getattr(event, "type", "")
        response = getattr(event, "response", None)
        if response is not None:
            meter.request_id = meter.request_id or self.request_id(response)
            usage = self.usage(response)
            if usage is not None:
                meter.final = usage
        elif kind.endswith(".delta"):
            meter.output_tokens += counted(model, getattr(event, "delta", None))
        return True


def wrap(client: Any, budget: Any, settings: Settings, is_async: bool) -> TrackedClient:
    """``client`` with chat.completions.create and responses.create tracked."""
    completions = tracked_endpoint(
        client.chat.completions, ChatCompletions(), budget, settings, is_async
    )
    responses = tracked_endpoint(client.responses, Responses(), budget, settings, is_async)
    chat = _Proxy(client.chat, {"completions": completions})
    return TrackedClient(client, {"chat": chat, "responses": responses}, budget)
