"""Tracked sync OpenAI and Anthropic clients with a treasurer.sync budget, against a fake API."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

import treasurer
import treasurer.sync
from llm_server import FakeLLM
from treasurer import llm

MESSAGES = [{"role": "user", "content": "Say something about budgets."}]


@pytest.fixture
def budget() -> Iterator[treasurer.sync.SyncBudget]:
    with treasurer.sync.open_budget(usd=1) as opened:
        yield opened


@pytest.fixture
def openai_client(fake_llm: FakeLLM) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-fake", max_retries=0) as c:
        yield c


@pytest.fixture
def anthropic_client(fake_llm: FakeLLM) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake_llm.url, api_key="sk-fake", max_retries=0) as c:
        yield c


def assert_committed(
    budget: treasurer.sync.SyncBudget, model: str, input_tokens: int, output_tokens: int
) -> None:
    totals = budget.totals()
    assert (totals.input_tokens, totals.output_tokens) == (input_tokens, output_tokens)
    assert totals.usd == llm.cost(model, input_tokens=input_tokens, output_tokens=output_tokens)
    snapshot = budget.snapshot()
    assert (snapshot.open_reservations, snapshot.usd_reserved) == (0, 0)


def input_estimate(model: str) -> int:
    return llm.estimate(model, messages=MESSAGES).input_tokens


class TestOpenAI:
    def test_chat(self, budget: treasurer.sync.SyncBudget, openai_client: openai.OpenAI) -> None:
        """A sync chat completion commits the reported usage."""
        tracked = llm.track(openai_client, budget=budget)
        reply = tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert reply.choices[0].message.content
        assert_committed(budget, "gpt-4o-mini", 21, 5)

    def test_responses(
        self, budget: treasurer.sync.SyncBudget, openai_client: openai.OpenAI
    ) -> None:
        """A sync response commits the reported usage."""
        tracked = llm.track(openai_client, budget=budget)
        tracked.responses.create(model="gpt-4o-mini", input="Say something.")
        assert_committed(budget, "gpt-4o-mini", 21, 5)

    def test_stream_consumed_fully(
        self, budget: treasurer.sync.SyncBudget, openai_client: openai.OpenAI
    ) -> None:
        """A sync stream commits the usage of its final chunk, which the caller never sees."""
        tracked = llm.track(openai_client, budget=budget)
        stream = tracked.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        assert isinstance(stream, llm.TrackedStream)
        chunks = list(stream)
        assert all(chunk.choices for chunk in chunks)
        assert_committed(budget, "gpt-4o-mini", 21, 5)
        assert list(stream) == []
        assert "settled" in repr(stream)

    def test_stream_abandoned_early(
        self, budget: treasurer.sync.SyncBudget, openai_client: openai.OpenAI
    ) -> None:
        """A sync stream closed early commits the input and the output received."""
        tracked = llm.track(openai_client, budget=budget)
        with tracked.responses.create(model="gpt-4o-mini", input=MESSAGES, stream=True) as stream:
            for event in stream:
                if event.type.endswith(".delta"):
                    break
        assert_committed(budget, "gpt-4o-mini", input_estimate("gpt-4o-mini"), 1)
        stream.close()

    def test_stream_broken_by_the_server(
        self,
        budget: treasurer.sync.SyncBudget,
        openai_client: openai.OpenAI,
        fake_llm: FakeLLM,
    ) -> None:
        """A cut sync stream commits what it consumed, then raises."""
        fake_llm.break_after = 3
        tracked = llm.track(openai_client, budget=budget)
        stream = tracked.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APIConnectionError):
            list(stream)
        assert_committed(budget, "gpt-4o-mini", input_estimate("gpt-4o-mini"), 3)

    def test_server_error_releases(
        self,
        budget: treasurer.sync.SyncBudget,
        openai_client: openai.OpenAI,
        fake_llm: FakeLLM,
    ) -> None:
        """An error answer releases the reservation."""
        fake_llm.status = 503
        tracked = llm.track(openai_client, budget=budget)
        with pytest.raises(openai.APIStatusError):
            tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert budget.totals().usd == 0
        assert budget.snapshot().open_reservations == 0

    def test_timeout_commits_the_input(self, fake_llm: FakeLLM) -> None:
        """A call that times out may have been billed: its input is committed."""
        fake_llm.hold = True
        with (
            treasurer.sync.open_budget(usd=1) as budget,
            openai.OpenAI(
                base_url=f"{fake_llm.url}/v1", api_key="sk-fake", max_retries=0, timeout=0.2
            ) as client,
        ):
            tracked = llm.track(client, budget=budget)
            with pytest.raises(openai.APITimeoutError):
                tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert_committed(budget, "gpt-4o-mini", input_estimate("gpt-4o-mini"), 0)

    def test_connection_refused_releases(self, budget: treasurer.sync.SyncBudget) -> None:
        """A call that never reached a server releases its reservation."""
        with openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0) as client:
            tracked = llm.track(client, budget=budget)
            with pytest.raises(openai.APIConnectionError):
                tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert budget.totals().usd == 0
        assert budget.snapshot().open_reservations == 0

    def test_refused_before_any_request(
        self, openai_client: openai.OpenAI, fake_llm: FakeLLM
    ) -> None:
        """A sync call that does not fit raises BudgetExceeded unsent."""
        with treasurer.sync.open_budget(usd=0.001) as budget:
            tracked = llm.track(openai_client, budget=budget)
            with pytest.raises(treasurer.BudgetExceeded):
                tracked.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert fake_llm.requests == []

    def test_an_async_budget_is_refused(self, openai_client: openai.OpenAI) -> None:
        """A sync client needs a treasurer.sync budget."""
        with pytest.raises(treasurer.InvalidOption, match=r"treasurer\.sync\.SyncBudget"):
            llm.track(openai_client, budget=object())  # type: ignore[arg-type]

    def test_context_manager(self, budget: treasurer.sync.SyncBudget, fake_llm: FakeLLM) -> None:
        """with on the tracked client closes the client."""
        client = openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="sk-fake")
        with llm.track(client, budget=budget) as tracked:
            tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert client.is_closed()


class TestAnthropic:
    def test_messages(
        self, budget: treasurer.sync.SyncBudget, anthropic_client: anthropic.Anthropic
    ) -> None:
        """A sync message commits the reported usage."""
        tracked = llm.track(anthropic_client, budget=budget)
        tracked.messages.create(model="claude-3-haiku", max_tokens=50, messages=MESSAGES)
        assert_committed(budget, "claude-3-haiku", 21, 5)

    def test_stream(
        self, budget: treasurer.sync.SyncBudget, anthropic_client: anthropic.Anthropic
    ) -> None:
        """A sync stream commits message_start's input and message_delta's output."""
        tracked = llm.track(anthropic_client, budget=budget)
        with tracked.messages.create(
            model="claude-3-haiku", max_tokens=50, messages=MESSAGES, stream=True
        ) as stream:
            kinds = [event.type for event in stream]
        assert kinds[0] == "message_start"
        assert_committed(budget, "claude-3-haiku", 21, 5)
