"""What treasurer knows about popular models beyond their prices.

genai-prices has prices and context windows; this table adds what model
choice needs (a quality tier, the tasks a model suits) and each model's
output limit, for worst-case estimates. A catalog is seeded from it; users
edit their own catalog, never this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

QUALITIES: Final = ("low", "medium", "high")

GENERAL: Final = frozenset(
    {"chat", "summarization", "classification", "extraction", "translation", "writing"}
)
CODE: Final = GENERAL | {"code"}
EVERYTHING: Final = CODE | {"reasoning"}


@dataclass(frozen=True)
class Known:
    provider: str
    quality: str
    tasks: frozenset[str]
    max_output_tokens: int


KNOWN: Final = {
    "gpt-4.1-nano": Known("openai", "low", GENERAL, 32_768),
    "gpt-4o-mini": Known("openai", "medium", CODE, 16_384),
    "gpt-4.1-mini": Known("openai", "medium", CODE, 32_768),
    "gpt-4o": Known("openai", "high", CODE, 16_384),
    "gpt-4.1": Known("openai", "high", CODE, 32_768),
    "o4-mini": Known("openai", "high", EVERYTHING, 100_000),
    "o3-mini": Known("openai", "high", frozenset({"reasoning", "code"}), 100_000),
    "claude-3-haiku": Known("anthropic", "low", GENERAL, 4_096),
    "claude-3-5-haiku": Known("anthropic", "medium", CODE, 8_192),
    "claude-haiku-4-5": Known("anthropic", "medium", EVERYTHING, 64_000),
    "claude-3-5-sonnet": Known("anthropic", "high", CODE, 8_192),
    "claude-sonnet-4": Known("anthropic", "high", EVERYTHING, 64_000),
    "claude-sonnet-4-5": Known("anthropic", "high", EVERYTHING, 64_000),
}


def known(model: str) -> Known | None:
    """The entry of ``model`` or of the longest known name it starts with (dated versions)."""
    model = model.lower()
    best: str | None = None
    for name in KNOWN:
        if (model == name or model.startswith(name + "-")) and (
            best is None or len(name) > len(best)
        ):
            best = name
    return None if best is None else KNOWN[best]
