"""treasurer.compat's CostOptimizer and TrackedLLMClient, and the budget manager's test case."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import anthropic
import openai
import pytest

import treasurer
from llm_server import FakeLLM
from treasurer import llm
from treasurer.compat import (
    PRICING,
    AlertLevel,
    Budget,
    BudgetExceeded,
    BudgetManager,
    CostOptimizer,
    TrackedLLMClient,
    UsageRecord,
)


@pytest.fixture
def fake_env(fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> FakeLLM:
    """The standard OPENAI_* / ANTHROPIC_* variables, pointing at the fake API."""
    for name, value in fake_llm.environ().items():
        monkeypatch.setenv(name, value)
    return fake_llm


def test_the_reference_test_case(fake_env: FakeLLM, capsys: pytest.CaptureFixture[str]) -> None:
    """The budget manager's whole test case, with only its imports changed."""
    # --- the reference's test case, as written ---
    # Budget setup
    budget = Budget(daily_limit=5.0, monthly_limit=50.0)
    manager = BudgetManager(budget, alert_handler=print)
    optimizer = CostOptimizer(PRICING)

    # Check budget
    assert manager.can_spend(0.01) == True  # noqa: E712
    assert manager.can_spend(100.0) == False  # noqa: E712

    # Record spending
    manager.record_spend(
        UsageRecord(
            model="gpt-4o",
            input_tokens=1000,
            output_tokens=500,
            cost_usd=0.05,
            timestamp=datetime.now(),
        )
    )

    # Status check
    status = manager.get_status()
    assert status["daily_spent"] == 0.05
    assert status["daily_remaining"] == 4.95

    # Cost optimization
    model = optimizer.select_model("summarization", max_cost=0.01)
    assert model in ["gpt-4o-mini", "claude-3-haiku"]

    # Tracked client
    client = TrackedLLMClient(manager, optimizer)
    # Should raise if budget exceeded
    # --- end of the reference's test case ---

    assert client.chat([{"role": "user", "content": "Hello"}]) == fake_env.text
    assert manager.get_status()["daily_spent"] > 0.05
    manager.record_spend(
        UsageRecord(
            model="gpt-4o", input_tokens=0, output_tokens=0, cost_usd=4.95, timestamp=datetime.now()
        )
    )
    sent = len(fake_env.requests)
    with pytest.raises(BudgetExceeded):
        client.chat([{"role": "user", "content": "Hello again"}])
    assert len(fake_env.requests) == sent  # refused before any request
    assert "usd usage per day reached 100%" in capsys.readouterr().out
    client.close()
    manager.close()


def test_pricing_table_format() -> None:
    """PRICING is the reference's format: USD per 1M tokens, with quality and tasks."""
    for model in ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-haiku"):
        assert set(PRICING[model]) == {"input", "output", "quality", "tasks"}
    assert PRICING["gpt-4o-mini"]["input"] == llm.lookup("gpt-4o-mini").price.input
    assert len(PRICING) == len(list(PRICING))


class TestCostOptimizer:
    TABLE: ClassVar[dict[str, dict[str, object]]] = {  # the reference's kind of table
        "gpt-4o": {"input": 2.50, "output": 10.00, "quality": "high"},
        "gpt-4o-mini": {"input": 0.15, "output": 0.60},
        "claude-3-5-sonnet": {"input": 3.00, "output": 15.00, "quality": "high"},
        "claude-3-haiku": {"input": 0.25, "output": 1.25, "tasks": ["summarization"]},
    }

    def test_select_model(self) -> None:
        """The cheapest model for the task at the quality within max_cost, from the table."""
        optimizer = CostOptimizer(self.TABLE)
        assert optimizer.pricing is self.TABLE
        assert optimizer.select_model("summarization", max_cost=0.01) == "gpt-4o-mini"
        assert optimizer.select_model("summarization", provider="anthropic") == "claude-3-haiku"
        assert optimizer.select_model("chat", quality="high") == "gpt-4o"
        with pytest.raises(llm.NoModelFits):
            optimizer.select_model("summarization", max_cost=0.00001)
        assert CostOptimizer().select_model("summarization") == "gpt-4o-mini"

    def test_estimate_cost(self) -> None:
        """estimate_cost counts the text's tokens and prices the expected output, as a float."""
        optimizer = CostOptimizer(self.TABLE)
        tokens = llm.count_text("gpt-4o", "Summarize this report.")
        figure = optimizer.estimate_cost("gpt-4o", "Summarize this report.")
        assert figure == (tokens * 2.5 + 500 * 10) / 1e6
        assert optimizer.estimate_cost("gpt-4.1", "hi", 100) == float(
            llm.cost("gpt-4.1", input_tokens=1, output_tokens=100)
        )

    def test_recommend_optimizations(self) -> None:
        """Suggestions from the manager's usage records, as strings."""
        records = [
            UsageRecord("gpt-4o", 2000, 500, 0.01, datetime.now(), endpoint="summarization")
        ] * 5
        (advice, *_) = CostOptimizer(self.TABLE).recommend_optimizations(records)
        assert advice.startswith("100 % of spend is gpt-4o on summarization (5 calls); gpt-4o-mini")

    def test_own_models(self) -> None:
        """A table may price models genai-prices does not know; they suit any provider."""
        optimizer = CostOptimizer({"my-llama": {"input": 0.1, "output": 0.1}})
        assert optimizer.select_model("chat", provider="openai") == "my-llama"
        assert optimizer.estimate_cost("my-llama", "", 1000) == 0.0001

    def test_bad_table(self) -> None:
        with pytest.raises(treasurer.TreasurerError):
            CostOptimizer({"m": 3})  # type: ignore[dict-item]


class TestTrackedLLMClient:
    def test_alerts_and_status(self, fake_env: FakeLLM) -> None:
        """Chats are paid from the manager's daily budget, so its status shows them."""
        alerts: list[tuple[AlertLevel, str]] = []
        with BudgetManager(Budget(daily_limit=1.0), lambda *a: alerts.append(a)) as manager:
            with TrackedLLMClient(manager, CostOptimizer()) as client:
                assert client.chat([{"role": "user", "content": "Hi"}], model="gpt-4o") == (
                    fake_env.text
                )
            spent = manager.get_status()["daily_spent"]
            assert spent == float(llm.cost("gpt-4o", input_tokens=21, output_tokens=5))
            assert fake_env.requests[0]["body"]["max_tokens"] == 1024

    def test_max_cost(self, fake_env: FakeLLM) -> None:
        """max_cost picks a model within it, or refuses before any request."""
        with BudgetManager(Budget()) as manager:
            client = TrackedLLMClient(manager, CostOptimizer(), max_output_tokens=100)
            client.chat([{"role": "user", "content": "Hi"}], max_cost=0.0001)
            assert fake_env.requests[0]["body"]["model"] == "gpt-4o-mini"
            with pytest.raises(BudgetExceeded):
                client.chat([{"role": "user", "content": "Hi"}], model="gpt-4o", max_cost=0.0001)
            assert len(fake_env.requests) == 1
            client.close()

    def test_an_anthropic_client(self, fake_env: FakeLLM) -> None:
        """Given an Anthropic client, it chooses among Anthropic models and sends system apart."""
        with BudgetManager(Budget()) as manager, anthropic.Anthropic(max_retries=0) as sdk:
            client = TrackedLLMClient(manager, CostOptimizer(), sdk)
            messages = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ]
            assert client.chat(messages) == fake_env.text
            body = fake_env.requests[0]["body"]
            assert (body["model"], body["system"]) == ("claude-3-5-haiku", "Be brief.")
            assert body["messages"] == [{"role": "user", "content": "Hi"}]
            client.close()  # not its own: left open
            assert not sdk.is_closed()

    def test_a_given_openai_client(self, fake_llm: FakeLLM) -> None:
        with (
            BudgetManager(Budget()) as manager,
            openai.OpenAI(base_url=f"{fake_llm.url}/v1", api_key="x") as sdk,
        ):
            client = TrackedLLMClient(manager, CostOptimizer(), sdk)
            assert client.chat([{"role": "user", "content": "Hi"}]) == fake_llm.text
