"""A fake OpenAI and Anthropic HTTP API on 127.0.0.1, for the real SDK clients.

It runs ``http.server`` in a thread of its own, so it never depends on the
event loop under test. It answers ``POST /v1/chat/completions``,
``/v1/responses`` and ``/v1/messages`` with responses shaped like the real
APIs' (usage included), streamed as server-sent events when the request asks
for a stream. Knobs a test sets before a call:

- ``status``: answer every request with this HTTP error status instead;
- ``break_after``: a stream sends this many text deltas, then the connection
  is cut without finishing the body;
- ``hold``: the server waits (up to 10 s) for ``release()`` before answering,
  after setting ``received``, so a test can cancel a call in flight;
- ``pause_after``: a stream sends this many text deltas, sets ``paused``,
  then waits (up to 10 s) for ``release()`` before going on;
- ``reply``: the text pieces of the answer (one output token each);
- ``input_tokens`` and ``cached_tokens``: the usage the server reports;
  ``report_usage = False`` leaves usage out of responses and streams.

``requests`` lists every request body received, in order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

DEFAULT_REPLY = ("Money", " is", " kept", " safe", ".")  # one token each


class FakeLLM:
    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.requests: list[dict[str, Any]] = []
        self.received = threading.Event()
        self.paused = threading.Event()
        self._released = threading.Event()
        self.reset()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        self.requests.clear()
        self.status: int | None = None
        self.break_after: int | None = None
        self.hold = False
        self.pause_after: int | None = None
        self.reply: tuple[str, ...] = DEFAULT_REPLY
        self.input_tokens = 21
        self.cached_tokens = 0
        self.report_usage = True
        self.received.clear()
        self.paused.clear()
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def environ(self) -> dict[str, str]:
        """The standard variables the SDKs read, pointing at this server."""
        return {
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "OPENAI_API_KEY": "sk-fake",
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "sk-ant-fake",
        }

    @property
    def output_tokens(self) -> int:
        return len(self.reply)

    @property
    def text(self) -> str:
        return "".join(self.reply)


@pytest.fixture(scope="session")
def llm_server() -> Iterator[FakeLLM]:
    """One fake API for the whole run (see fake_llm)."""
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture
def fake_llm(llm_server: FakeLLM) -> Iterator[FakeLLM]:
    """The fake API, its knobs and its request log reset for this test."""
    llm_server.reset()
    yield llm_server
    llm_server.release()  # a call the test left waiting on the server answers now


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet

    @property
    def fake(self) -> FakeLLM:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        fake = self.fake
        fake.requests.append({"path": self.path, "body": body})
        fake.received.set()
        if fake.hold:
            fake._released.wait(10)
        if fake.status is not None:
            self._json(
                {"error": {"message": "the fake server failed", "type": "server_error"}},
                fake.status,
            )
            return
        api = _API.get(self.path.split("?")[0])
        if api is None:
            self._json({"error": {"message": f"no route {self.path}"}}, 404)
            return
        if body.get("stream"):
            self._stream(api.events(fake, body))
        else:
            self._json(api.response(fake, body))

    def _json(self, payload: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("x-request-id", "req_fake")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (cancelled)
            self.close_connection = True

    def _stream(self, events: Iterator[tuple[str | None, Any, bool]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        deltas = 0
        fake = self.fake
        try:
            for name, data, is_delta in events:
                if is_delta and deltas == fake.break_after:
                    self.close_connection = True  # cut: no final chunk
                    self.wfile.flush()
                    return
                if is_delta and deltas == fake.pause_after:
                    fake.paused.set()
                    fake._released.wait(10)
                deltas += is_delta
                text = data if isinstance(data, str) else json.dumps(data)
                frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
                raw = frame.encode()
                self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the client went away
            self.close_connection = True


class _OpenAIChat:
    @staticmethod
    def usage(fake: FakeLLM) -> dict[str, Any]:
        return {
            "prompt_tokens": fake.input_tokens,
            "completion_tokens": fake.output_tokens,
            "total_tokens": fake.input_tokens + fake.output_tokens,
            "prompt_tokens_details": {"cached_tokens": fake.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }

    @classmethod
    def response(cls, fake: FakeLLM, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_790_000_000,
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": fake.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": cls.usage(fake) if fake.report_usage else None,
        }

    @classmethod
    def events(cls, fake: FakeLLM, body: dict[str, Any]) -> Iterator[tuple[str | None, Any, bool]]:
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        with_usage = with_usage and fake.report_usage

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_790_000_000,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                data["usage"] = None
            return data

        yield None, chunk({"role": "assistant", "content": ""}), False
        for piece in fake.reply:
            yield None, chunk({"content": piece}), True
        yield None, chunk({}, "stop"), False
        if with_usage:
            final = chunk({})
            final["choices"] = []
            final["usage"] = cls.usage(fake)
            yield None, final, False
        yield None, "[DONE]", False


class _OpenAIResponses:
    @staticmethod
    def body(fake: FakeLLM, body: dict[str, Any], done: bool) -> dict[str, Any]:
        output = [
            {
                "type": "message",
                "id": "msg_fake",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": fake.text, "annotations": []}],
            }
        ]
        usage = {
            "input_tokens": fake.input_tokens,
            "input_tokens_details": {"cached_tokens": fake.cached_tokens},
            "output_tokens": fake.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": fake.input_tokens + fake.output_tokens,
        }
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": 1_790_000_000,
            "status": "completed" if done else "in_progress",
            "model": body["model"],
            "output": output if done else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage if done and fake.report_usage else None,
        }

    @classmethod
    def response(cls, fake: FakeLLM, body: dict[str, Any]) -> dict[str, Any]:
        return cls.body(fake, body, done=True)

    @classmethod
    def events(cls, fake: FakeLLM, body: dict[str, Any]) -> Iterator[tuple[str | None, Any, bool]]:
        number = iter(range(1000))
        start = {"response": cls.body(fake, body, done=False)}
        yield "response.created", {"type": "response.created", **start, "sequence_number": 0}, False
        next(number)
        for piece in fake.reply:
            delta = {
                "type": "response.output_text.delta",
                "item_id": "msg_fake",
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
                "sequence_number": next(number),
            }
            yield delta["type"], delta, True
        text_done = {
            "type": "response.output_text.done",
            "item_id": "msg_fake",
            "output_index": 0,
            "content_index": 0,
            "text": fake.text,
            "logprobs": [],
            "sequence_number": next(number),
        }
        yield text_done["type"], text_done, False
        done = {
            "type": "response.completed",
            "response": cls.body(fake, body, done=True),
            "sequence_number": next(number),
        }
        yield done["type"], done, False


class _AnthropicMessages:
    @staticmethod
    def usage(fake: FakeLLM, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": fake.input_tokens - fake.cached_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": fake.cached_tokens,
        }

    @classmethod
    def message(cls, fake: FakeLLM, body: dict[str, Any], done: bool) -> dict[str, Any]:
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": fake.text}] if done else [],
            "stop_reason": "end_turn" if done else None,
            "stop_sequence": None,
            "usage": cls.usage(fake, fake.output_tokens if done else 1),
        }
        if not fake.report_usage:
            del message["usage"]
        return message

    @classmethod
    def response(cls, fake: FakeLLM, body: dict[str, Any]) -> dict[str, Any]:
        return cls.message(fake, body, done=True)

    @classmethod
    def events(cls, fake: FakeLLM, body: dict[str, Any]) -> Iterator[tuple[str | None, Any, bool]]:
        start = {"type": "message_start", "message": cls.message(fake, body, done=False)}
        yield "message_start", start, False
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        yield "content_block_start", block, False
        yield "ping", {"type": "ping"}, False
        for piece in fake.reply:
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            yield "content_block_delta", delta, True
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}, False
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": fake.output_tokens},
        }
        if not fake.report_usage:
            del end["usage"]
        yield "message_delta", end, False
        yield "message_stop", {"type": "message_stop"}, False


_API: dict[str, Any] = {
    "/v1/chat/completions": _OpenAIChat,
    "/v1/responses": _OpenAIResponses,
    "/v1/messages": _AnthropicMessages,
}
