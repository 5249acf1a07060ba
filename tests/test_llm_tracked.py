"""Tracked async OpenAI and Anthropic clients against a fake API on 127.0.0.1, on asyncio and trio.

The real SDK clients talk HTTP to tests/llm_server.py; nothing in the SDKs is
patched. Each test checks what the budget holds afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anthropic
import anyio
import openai
import pytest

import treasurer
import treasurer.sync
from llm_server import FakeLLM
from treasurer import llm
from treasurer.llm import _calls, _tracked_openai, _util

pytestmark = [
    pytest.mark.anyio,
    # On trio, the SDKs leave their server-sent-event generators unfinished
    # when they stop at OpenAI's "[DONE]" or a stream is closed early; trio
    # reports each as a ResourceWarning when it is collected (asyncio
    # finalizes them silently). The SDKs' own generators, not treasurer's.
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\.[\w.]+' "
        r"was garbage collected:ResourceWarning"
    ),
]

MESSAGES = [{"role": "user", "content": "Say something about budgets."}]


@asynccontextmanager
async def openai_client(fake: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="sk-fake", max_retries=0) as c:
        yield c


@asynccontextmanager
async def anthropic_client(fake: FakeLLM) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="sk-fake", max_retries=0) as c:
        yield c


def input_estimate(model: str, **request: Any) -> int:
    return llm.estimate(model, messages=request.get("messages", MESSAGES)).input_tokens


def assert_settled(budget: treasurer.Budget) -> None:
    snapshot = budget.snapshot()
    assert (snapshot.open_reservations, snapshot.usd_reserved, snapshot.tokens_reserved) == (
        0,
        0,
        0,
    )


def assert_committed(
    budget: treasurer.Budget, model: str, input_tokens: int, output_tokens: int, **cache: int
) -> None:
    totals = budget.totals()
    assert (totals.input_tokens, totals.output_tokens) == (input_tokens, output_tokens)
    expected = llm.cost(model, input_tokens=input_tokens, output_tokens=output_tokens, **cache)
    assert totals.usd == expected
    assert totals.usd > 0
    assert_settled(budget)


class TestOpenAIChat:
    async def test_commits_the_reported_usage(self, fake_llm: FakeLLM) -> None:
        """A call commits the usage and exact cost the API reports, with the model's name."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            reply = await tracked.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=100
            )
            assert reply.choices[0].message.content == fake_llm.text
            assert_committed(budget, "gpt-4o-mini", 21, 5)
            assert (await budget.usage()).top_models_by_tokens == (("gpt-4o-mini", 26),)

    async def test_cached_input_is_priced_at_the_cache_rate(self, fake_llm: FakeLLM) -> None:
        """Cached prompt tokens count as input and are priced at the cache-read rate."""
        fake_llm.cached_tokens = 16
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            await tracked.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert_committed(budget, "gpt-4o", 21, 5, cache_read_tokens=16)
            assert budget.totals().usd < llm.cost("gpt-4o", input_tokens=21, output_tokens=5)

    async def test_refused_before_any_request(self, fake_llm: FakeLLM) -> None:
        """A call whose worst case does not fit raises BudgetExceeded; the server sees nothing."""
        async with treasurer.open_budget(usd=0.01) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            with pytest.raises(treasurer.BudgetExceeded) as refused:
                await tracked.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert refused.value.cap == "usd"
            assert fake_llm.requests == []
            assert budget.totals().calls == 0

    async def test_max_cost(self, fake_llm: FakeLLM) -> None:
        """max_cost= refuses a call whose worst case costs more, before any request."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            with pytest.raises(llm.MaxCostExceeded) as refused:
                await tracked.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, max_tokens=1000, max_cost=0.001
                )
            assert isinstance(refused.value, treasurer.BudgetExceeded)
            assert refused.value.limit == Decimal("0.001")
            assert "max_cost" in str(refused.value)
            reply = await tracked.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, max_tokens=10, max_cost=0.001
            )
            assert reply.usage is not None
            assert len(fake_llm.requests) == 1
            assert "max_cost" not in fake_llm.requests[0]["body"]

    async def test_per_request_cap(self, fake_llm: FakeLLM) -> None:
        """The budget's per-request cap refuses a call's worst case before any request."""
        async with (
            treasurer.open_budget(per_request={"usd": 0.001}) as budget,
            openai_client(fake_llm) as client,
        ):
            tracked = llm.track(client, budget=budget)
            with pytest.raises(treasurer.RequestTooLarge):
                await tracked.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert fake_llm.requests == []

    async def test_server_error_releases(self, fake_llm: FakeLLM) -> None:
        """An error answer releases the reservation: the budget is as before."""
        fake_llm.status = 500
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            with pytest.raises(openai.InternalServerError):
                await tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert len(fake_llm.requests) == 1
            assert budget.totals().usd == 0
            assert_settled(budget)

    async def test_stream_consumed_fully(self, fake_llm: FakeLLM) -> None:
        """A stream asks for usage in its last chunk, commits it, and hides that chunk."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            stream = await tracked.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            assert isinstance(stream, llm.TrackedAsyncStream)
            assert stream.response.status_code == 200  # the SDK stream's own attributes
            pieces = [chunk.choices[0].delta.content async for chunk in stream]
            assert "".join(p or "" for p in pieces) == fake_llm.text
            assert fake_llm.requests[0]["body"]["stream_options"] == {"include_usage": True}
            assert_committed(budget, "gpt-4o-mini", 21, 5)
            assert [chunk async for chunk in stream] == []  # ended

    async def test_stream_with_usage_asked_by_the_caller(self, fake_llm: FakeLLM) -> None:
        """A caller who asks for usage in the stream gets the usage chunk, as without tracking."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            stream = await tracked.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:
                chunks = [chunk async for chunk in stream]
            assert chunks[-1].choices == []
            assert chunks[-1].usage.prompt_tokens == 21
            assert_committed(budget, "gpt-4o-mini", 21, 5)

    async def test_stream_abandoned_early(self, fake_llm: FakeLLM) -> None:
        """A stream closed early commits its input and the output received, never $0."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            stream = await tracked.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            async with stream:
                seen = 0
                async for _ in stream:
                    seen += 1
                    if seen == 3:  # the role chunk, "Money", " is"
                        break
            assert_committed(budget, "gpt-4o-mini", input_estimate("gpt-4o-mini"), 2)
            await stream.aclose()  # again: nothing more
            assert budget.totals().calls == 1

    async def test_stream_broken_by_the_server(self, fake_llm: FakeLLM) -> None:
        """A stream cut by the server commits its input and the output received, then raises."""
        fake_llm.break_after = 2
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            stream = await tracked.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            with pytest.raises(openai.APIConnectionError):
                async for _ in stream:
                    pass
            assert_committed(budget, "gpt-4o-mini", input_estimate("gpt-4o-mini"), 2)

    async def test_cancelled_mid_call(self, fake_llm: FakeLLM) -> None:
        """A call cancelled while the server works commits its input (the API may bill it)."""
        fake_llm.hold = True
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(
                        lambda: tracked.chat.completions.create(
                            model="gpt-4o-mini", messages=MESSAGES
                        )
                    )
                    await anyio.to_thread.run_sync(fake_llm.received.wait, 5)
                    scope.cancel()
            assert scope.cancelled_caught
            assert_committed(budget, "gpt-4o-mini", input_estimate("gpt-4o-mini"), 0)

    async def test_cancelled_while_waiting_for_a_chunk(self, fake_llm: FakeLLM) -> None:
        """A stream cancelled while it waits for the next chunk commits what it consumed."""
        fake_llm.pause_after = 2
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            stream = await tracked.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            with anyio.move_on_after(5) as scope:
                async with anyio.create_task_group() as tg:

                    async def read() -> None:
                        async for _ in stream:
                            pass

                    tg.start_soon(read)
                    await anyio.to_thread.run_sync(fake_llm.paused.wait, 5)
                    await anyio.wait_all_tasks_blocked()
                    tg.cancel_scope.cancel()
            assert not scope.cancelled_caught
            assert_committed(budget, "gpt-4o-mini", input_estimate("gpt-4o-mini"), 2)

    async def test_cancelled_in_the_loop_body(self, fake_llm: FakeLLM) -> None:
        """Cancelled in the caller's own code, a stream used with async with still commits."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            with anyio.CancelScope() as scope:
                async with await tracked.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True
                ) as stream:
                    async for chunk in stream:
                        if chunk.choices[0].delta.content:
                            scope.cancel()
                            await anyio.sleep(1)
            assert scope.cancelled_caught
            assert_committed(budget, "gpt-4o-mini", input_estimate("gpt-4o-mini"), 1)


class TestOpenAIResponses:
    async def test_commits_the_reported_usage(self, fake_llm: FakeLLM) -> None:
        """responses.create commits the usage the API reports."""
        fake_llm.cached_tokens = 8
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            reply = await tracked.responses.create(
                model="gpt-4.1",
                input="Say something.",
                instructions="Be brief.",
                max_output_tokens=50,
            )
            assert reply.output_text == fake_llm.text
            assert_committed(budget, "gpt-4.1", 21, 5, cache_read_tokens=8)

    async def test_stream(self, fake_llm: FakeLLM) -> None:
        """A streamed response commits the usage of its response.completed event."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            stream = await tracked.responses.create(model="gpt-4.1", input=MESSAGES, stream=True)
            kinds = [event.type async for event in stream]
            assert kinds[-1] == "response.completed"
            assert_committed(budget, "gpt-4.1", 21, 5)

    async def test_stream_abandoned_early(self, fake_llm: FakeLLM) -> None:
        """A streamed response left early commits its input and the deltas received."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            async with await tracked.responses.create(
                model="gpt-4.1", input="Say something.", stream=True
            ) as stream:
                async for event in stream:
                    if event.type.endswith(".delta"):
                        break
            expected = llm.estimate("gpt-4.1", messages=[], prompt="Say something.").input_tokens
            assert_committed(budget, "gpt-4.1", expected, 1)


class TestAnthropic:
    async def test_commits_the_reported_usage_with_cache(self, fake_llm: FakeLLM) -> None:
        """Cache reads, reported apart by Anthropic, count as input at the cache rate."""
        fake_llm.cached_tokens = 5
        async with treasurer.open_budget(usd=1) as budget, anthropic_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            reply = await tracked.messages.create(
                model="claude-3-5-haiku", max_tokens=100, messages=MESSAGES, system="Be brief."
            )
            assert reply.content[0].text == fake_llm.text
            assert_committed(budget, "claude-3-5-haiku", 21, 5, cache_read_tokens=5)

    async def test_stream(self, fake_llm: FakeLLM) -> None:
        """A stream commits message_start's input and message_delta's output."""
        async with treasurer.open_budget(usd=1) as budget, anthropic_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            stream = await tracked.messages.create(
                model="claude-3-5-haiku", max_tokens=100, messages=MESSAGES, stream=True
            )
            async with stream:
                kinds = [event.type async for event in stream]
            assert kinds[-1] == "message_stop"
            assert_committed(budget, "claude-3-5-haiku", 21, 5)

    async def test_stream_broken_by_the_server(self, fake_llm: FakeLLM) -> None:
        """A cut stream commits the reported input and the output counted so far."""
        fake_llm.break_after = 2
        async with treasurer.open_budget(usd=1) as budget, anthropic_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            stream = await tracked.messages.create(
                model="claude-3-5-haiku", max_tokens=100, messages=MESSAGES, stream=True
            )
            with pytest.raises(Exception, match="incomplete chunked read"):
                async for _ in stream:
                    pass
            counted = llm.count_text("claude-3-5-haiku", "Money") + llm.count_text(
                "claude-3-5-haiku", " is"
            )
            assert_committed(budget, "claude-3-5-haiku", 21, counted)

    async def test_stream_abandoned_early(self, fake_llm: FakeLLM) -> None:
        """A stream closed after message_start commits the input it reported."""
        async with treasurer.open_budget(usd=1) as budget, anthropic_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            stream = await tracked.messages.create(
                model="claude-3-5-haiku", max_tokens=100, messages=MESSAGES, stream=True
            )
            async for event in stream:
                assert event.type == "message_start"
                break
            await stream.close()
            assert_committed(budget, "claude-3-5-haiku", 21, 0)

    async def test_overloaded_releases(self, fake_llm: FakeLLM) -> None:
        """An overloaded answer (529) releases the reservation."""
        fake_llm.status = 529
        async with treasurer.open_budget(usd=1) as budget, anthropic_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            with pytest.raises(anthropic.APIStatusError):
                await tracked.messages.create(
                    model="claude-3-5-haiku", max_tokens=100, messages=MESSAGES
                )
            assert budget.totals().usd == 0
            assert_settled(budget)

    async def test_refused_before_any_request(self, fake_llm: FakeLLM) -> None:
        """max_tokens is the worst case; one that does not fit is refused unsent."""
        async with treasurer.open_budget(usd=0.01) as budget, anthropic_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            with pytest.raises(treasurer.BudgetExceeded):
                await tracked.messages.create(
                    model="claude-3-5-sonnet", max_tokens=8000, messages=MESSAGES
                )
            assert fake_llm.requests == []


class TestOptions:
    async def test_reserve_expected(self, fake_llm: FakeLLM) -> None:
        """reserve="expected" reserves the expected output instead of the worst case."""
        async with treasurer.open_budget(usd=0.01) as budget, openai_client(fake_llm) as client:
            worst = llm.track(client, budget=budget)
            with pytest.raises(treasurer.BudgetExceeded):
                await worst.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            expected = llm.track(client, budget=budget, reserve="expected")
            await expected.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert_committed(budget, "gpt-4o", 21, 5)

    async def test_wait_for_room(self, fake_llm: FakeLLM) -> None:
        """wait=True waits for room instead of refusing; nothing is sent meanwhile."""
        async with treasurer.open_budget(usd=0.01) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget, wait=True)
            async with anyio.create_task_group() as tg:
                async with budget.reserve(usd=0.01):
                    tg.start_soon(
                        lambda: tracked.chat.completions.create(
                            model="gpt-4o-mini", messages=MESSAGES, max_tokens=100
                        )
                    )
                    await anyio.wait_all_tasks_blocked()
                    assert fake_llm.requests == []
            assert len(fake_llm.requests) == 1
            assert_committed(budget, "gpt-4o-mini", 21, 5)

    async def test_tags_and_request_id(self, fake_llm: FakeLLM) -> None:
        """The commit carries the model, the response's id and the client's tags."""
        async with (
            treasurer.open_budget(usd=1) as budget,
            openai_client(fake_llm) as client,
            budget.subscribe() as events,
        ):
            tracked = llm.track(client, budget=budget, tags={"team": "search"})
            await tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            (usage,) = [e for e in events.pending() if isinstance(e, treasurer.UsageRecorded)]
        assert usage.request_id == "chatcmpl-fake"
        assert usage.model == "gpt-4o-mini"
        assert usage.tags == {"team": "search"}
        assert usage.source == "commit"

    async def test_own_prices(self, fake_llm: FakeLLM) -> None:
        """prices= prices a model genai-prices does not know (a fine-tune, a local model)."""
        prices = {"my-llama": {"input": 1, "output": 2}}
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget, prices=prices)
            await tracked.chat.completions.create(model="my-llama", messages=MESSAGES)
            assert budget.totals().usd == Decimal("0.000031")  # (21 * 1 + 5 * 2) / 1e6
            bare = llm.track(client, budget=budget)
            with pytest.raises(llm.UnknownModel):
                await bare.chat.completions.create(model="my-llama", messages=MESSAGES)
            assert len(fake_llm.requests) == 1

    async def test_the_client_passes_through(self, fake_llm: FakeLLM) -> None:
        """Untracked attributes are the client's own; untracked spending helpers refuse."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            assert tracked.untracked is client
            assert tracked.budget is budget
            assert tracked.models is client.models
            assert tracked.chat.completions.messages is client.chat.completions.messages
            assert tracked.base_url == client.base_url
            with pytest.raises(treasurer.llm.UntrackedCall, match="not tracked"):
                tracked.chat.completions.stream  # noqa: B018
            with pytest.raises(AttributeError):
                tracked.no_such_attribute  # noqa: B018
            assert "tracked" in repr(tracked)

    async def test_a_closed_tracked_client_closes_its_client(self, fake_llm: FakeLLM) -> None:
        """async with on the tracked client closes the client it wraps."""
        async with treasurer.open_budget(usd=1) as budget:
            client = openai.AsyncOpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-fake")
            async with llm.track(client, budget=budget) as tracked:
                await tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert client.is_closed()

    async def test_wrong_arguments(self, fake_llm: FakeLLM) -> None:
        """track() refuses what it cannot track, before any call."""
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            with pytest.raises(treasurer.InvalidOption, match="official SDK client"):
                llm.track(object(), budget=budget)
            # A blocking budget is opened and closed from a worker thread: never on a loop.
            sync_budget = await anyio.to_thread.run_sync(lambda: treasurer.sync.open_budget(usd=1))
            try:
                with pytest.raises(treasurer.InvalidOption, match=r"treasurer\.Budget"):
                    llm.track(client, budget=sync_budget)  # type: ignore[arg-type]
            finally:
                await anyio.to_thread.run_sync(sync_budget.close)
            with pytest.raises(treasurer.InvalidOption, match="reserve"):
                llm.track(client, budget=budget, reserve="all")  # type: ignore[arg-type]
            with pytest.raises(treasurer.InvalidOption, match="wait"):
                llm.track(client, budget=budget, wait="yes")  # type: ignore[arg-type]
            tracked = llm.track(client, budget=budget)
            with pytest.raises(treasurer.InvalidOption, match="model="):
                await tracked.chat.completions.create(messages=MESSAGES)
            assert fake_llm.requests == []


class TestWithoutUsage:
    """An API (or a proxy in front of it) that reports no usage: treasurer's own counts."""

    async def test_a_response_commits_the_worst_case(self, fake_llm: FakeLLM) -> None:
        """Without reported usage, a response commits its estimate: the worst case."""
        fake_llm.report_usage = False
        async with treasurer.open_budget(usd=1) as budget, openai_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            await tracked.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_completion_tokens=40
            )
            assert_committed(budget, "gpt-4o-mini", input_estimate("gpt-4o-mini"), 40)

    async def test_streams_commit_what_they_counted(self, fake_llm: FakeLLM) -> None:
        """Without reported usage, streams commit the estimated input and the output counted."""
        fake_llm.report_usage = False
        async with treasurer.open_budget(usd=1) as budget, anthropic_client(fake_llm) as client:
            tracked = llm.track(client, budget=budget)
            async with await tracked.messages.create(
                model="claude-3-5-haiku", max_tokens=100, messages=MESSAGES, stream=True
            ) as stream:
                async for _ in stream:
                    pass
            counted = sum(llm.count_text("claude-3-5-haiku", p) for p in fake_llm.reply)
            expected = input_estimate("claude-3-5-haiku")
            assert_committed(budget, "claude-3-5-haiku", expected, counted)
            await tracked.messages.create(model="claude-3-5-haiku", max_tokens=7, messages=MESSAGES)
            assert budget.totals().output_tokens == counted + 7


class TestShapes:
    """What an endpoint reads from requests and events, on the SDK's own types."""

    def test_chat_request_with_tools(self) -> None:
        """Tools count as input; max_completion_tokens and n set the worst case."""
        endpoint = _tracked_openai.ChatCompletions()
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
        request = endpoint.request(
            {
                "model": "gpt-4o",
                "messages": MESSAGES,
                "tools": tools,
                "max_completion_tokens": 9,
                "max_tokens": 99,
                "n": 2,
            }
        )
        assert request.max_output_tokens == 9
        assert request.outputs == 2
        assert request.messages[-1] == {"role": "tools", "content": tools}

    def test_streamed_tool_call_arguments_count(self) -> None:
        """A streamed tool call's arguments count as output."""
        from openai.types.chat import ChatCompletionChunk

        chunk = ChatCompletionChunk.model_validate(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": None,
                        "delta": {
                            "tool_calls": [
                                {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
                            ]
                        },
                    }
                ],
            }
        )
        meter = _calls.Meter()
        assert _tracked_openai.ChatCompletions().observe(chunk, meter, "gpt-4o")
        assert meter.output_tokens == llm.count_text("gpt-4o", '{"city": "Paris"}')

    def test_keywords_the_sdk_leaves_out(self) -> None:
        """Absent, None, the SDK's omit, or the wrong type: not given."""
        kwargs = {"a": None, "b": openai.omit, "c": "3", "d": 3}
        assert [_util.given(kwargs, key, int) for key in "abcde"] == [None, None, None, 3, None]
