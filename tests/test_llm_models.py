"""Model choice, the catalog and recommendations (treasurer.llm)."""

from __future__ import annotations

from decimal import Decimal

import pytest

import treasurer
from treasurer import llm


class TestChooseModel:
    def test_the_reference_example(self) -> None:
        """Summarization within $0.01 at medium quality: the cheapest medium model."""
        assert llm.choose_model("summarization", max_cost=0.01) == "gpt-4o-mini"
        assert llm.choose_model("summarization", max_cost=0.01, provider="anthropic") == (
            "claude-3-5-haiku"
        )

    def test_quality(self) -> None:
        """Higher quality costs more; low lets the cheapest model in."""
        assert llm.choose_model("summarization", quality="low") == "gpt-4.1-nano"
        assert llm.choose_model("summarization", quality="high") == "o4-mini"
        assert llm.choose_model("reasoning", quality="high") == "o3-mini"

    def test_messages_count(self) -> None:
        """The cost is estimated on the messages and the expected output."""
        long = [{"role": "user", "content": "word " * 5000}]
        with pytest.raises(llm.NoModelFits):
            llm.choose_model("chat", max_cost=0.0005, messages=long)
        assert llm.choose_model("chat", max_cost=0.0005, expected_output_tokens=100) == (
            "gpt-4o-mini"
        )

    def test_max_cost_too_small_for_any_model(self) -> None:
        """NoModelFits lists why each model was refused."""
        with pytest.raises(llm.NoModelFits) as error:
            llm.choose_model("summarization", max_cost=0.00001)
        refusals = error.value.refusals
        assert isinstance(error.value, LookupError)
        assert refusals["gpt-4o-mini"] == "would cost $0.0003, above max_cost $0.00001"
        assert refusals["gpt-4.1-nano"] == "quality low is below medium"
        assert refusals["o3-mini"] == "suits code, reasoning, not 'summarization'"
        assert "no model fits task 'summarization'" in str(error.value)

    def test_bad_quality(self) -> None:
        with pytest.raises(treasurer.InvalidOption, match="quality"):
            llm.choose_model("chat", quality="great")


class TestCatalog:
    def test_edit_a_catalog(self) -> None:
        """A catalog is yours: add own-priced models, remove others; the default is untouched."""
        catalog = llm.default_catalog()
        catalog.add(
            "my-llama",
            quality="high",
            tasks=["summarization"],
            price={"input": 0.01, "output": 0.02},
        )
        assert llm.choose_model("summarization", quality="high", catalog=catalog) == "my-llama"
        assert "my-llama" not in llm.default_catalog()
        catalog.remove("my-llama")
        assert "my-llama" not in catalog
        info = catalog["gpt-4o"]
        assert (info.provider, info.quality, info.max_output_tokens) == ("openai", "high", 16_384)
        assert info.context_window == 128_000
        assert catalog.get("nope") is None
        assert len(catalog) == len(llm.default_catalog())
        assert "gpt-4o" in repr(catalog)
        assert catalog.prices == {}
        assert [m.name for m in llm.Catalog([info])] == ["gpt-4o"]

    def test_add_from_genai_prices(self) -> None:
        """A model added without a price is priced by genai-prices; any task if none given."""
        catalog = llm.Catalog()
        info = catalog.add("gpt-5-mini")
        assert info.provider == "openai"
        assert info.suits("anything")
        assert llm.choose_model("poetry", catalog=catalog) == "gpt-5-mini"
        with pytest.raises(llm.UnknownModel):
            catalog.add("no-such-model")
        with pytest.raises(treasurer.InvalidOption):
            catalog.add("gpt-4o", tasks="chat")
        with pytest.raises(llm.NoModelFits, match="the catalog is empty"):
            llm.choose_model("chat", catalog=llm.Catalog())

    def test_provider(self) -> None:
        """provider= keeps that provider's models (and those of no known provider)."""
        catalog = llm.Catalog()
        catalog.add("claude-3-haiku", quality="high", provider="anthropic")
        catalog.add("local", price={"input": 100, "output": 100})
        assert llm.choose_model("chat", provider="openai", catalog=catalog) == "local"
        with pytest.raises(llm.NoModelFits, match="provider anthropic, not openai"):
            llm.choose_model("chat", provider="openai", max_cost=0.001, catalog=catalog)


class Record:
    def __init__(self, model: str, input_tokens: int, output_tokens: int, **extra: object) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        for key, value in extra.items():
            setattr(self, key, value)


class TestRecommendations:
    def test_cheaper_model(self) -> None:
        """Most spend on gpt-4o for summaries: gpt-4o-mini would have cost less, in dollars."""
        records = [Record("gpt-4o", 2000, 300, task="summarization") for _ in range(6)]
        records += [{"model": "gpt-4o-mini", "input_tokens": 1000, "output_tokens": 100}] * 4
        found = llm.recommendations(records)
        first = found[0]
        assert first.kind == "cheaper_model"
        spent = 6 * llm.cost("gpt-4o", input_tokens=2000, output_tokens=300)
        would = 6 * llm.cost("gpt-4o-mini", input_tokens=2000, output_tokens=300)
        assert first.saving_usd == spent - would
        assert str(first).startswith("98 % of spend is gpt-4o on summarization (6 calls); ")
        assert f"gpt-4o-mini (quality medium) would have cost ${would:f} instead of ${spent:f}" in (
            first.message
        )

    def test_low_cache_hit_rate(self) -> None:
        """Records that report cache reads, few of them hits, input-heavy: cache better."""
        records = [Record("gpt-4.1-nano", 10_000, 50, cache_read_tokens=500)] * 3
        kinds = {r.kind: r for r in llm.recommendations(records)}
        assert "5 % of input tokens were prompt-cache hits" in kinds["cache"].message
        assert "output" not in kinds
        cached = [Record("gpt-4.1-nano", 10_000, 50, cache_read_tokens=5000)]
        assert "cache" not in {r.kind for r in llm.recommendations(cached)}

    def test_output_dominates(self) -> None:
        """Output over half the spend: ask for shorter answers."""
        records = [Record("gpt-4.1-nano", 100, 2000, cost_usd=0.0008)]
        (output,) = [r for r in llm.recommendations(records) if r.kind == "output"]
        assert output.message.startswith("output tokens are 99 % of spend")

    def test_nothing_to_say(self) -> None:
        """No records, no spend, or an unknown model's records: nothing made up."""
        assert llm.recommendations([]) == []
        assert llm.recommendations([Record("gpt-4o", 0, 0)]) == []
        found = llm.recommendations([Record("mystery", 10, 10, usd=Decimal("0.01"))])
        assert [r.kind for r in found] == ["cheaper_model"]
