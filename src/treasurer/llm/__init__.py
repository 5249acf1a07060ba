"""The LLM edge: prices, estimates, model choice and tracked OpenAI / Anthropic clients.

- :func:`cost` prices a call exactly (genai-prices' bundled table, offline,
  or your own prices); :func:`estimate` gives a call's input tokens and its
  worst-case output tokens and dollars before it is made, counting tokens
  offline (tiktoken for OpenAI models, a conservative count for others).
- :func:`choose_model` picks the cheapest model of a :class:`Catalog` for a
  task, quality and maximum cost; :func:`recommendations` reads usage
  records and says where money could be saved.
- :func:`track` wraps an ``openai`` or ``anthropic`` client so every call
  reserves its worst case from a budget first and commits what it used.

Needs the ``llm`` extra (``pip install 'treasurer[llm]'``), and the SDK you
track (``treasurer[openai]``, ``treasurer[anthropic]``).
"""

from __future__ import annotations

from ._calls import Usage as Usage
from ._errors import MaxCostExceeded as MaxCostExceeded
from ._errors import NoModelFits as NoModelFits
from ._errors import UnknownModel as UnknownModel
from ._errors import UntrackedCall as UntrackedCall
from ._estimate import DEFAULT_EXPECTED_OUTPUT_TOKENS as DEFAULT_EXPECTED_OUTPUT_TOKENS
from ._estimate import DEFAULT_MAX_OUTPUT_TOKENS as DEFAULT_MAX_OUTPUT_TOKENS
from ._estimate import Estimate as Estimate
from ._estimate import estimate as estimate
from ._models import Catalog as Catalog
from ._models import ModelInfo as ModelInfo
from ._models import choose_model as choose_model
from ._models import default_catalog as default_catalog
from ._prices import ModelPrice as ModelPrice
from ._prices import Price as Price
from ._prices import PriceTable as PriceTable
from ._prices import cost as cost
from ._prices import lookup as lookup
from ._prices import register_price as register_price
from ._prices import unregister_price as unregister_price
from ._recommend import Recommendation as Recommendation
from ._recommend import recommendations as recommendations
from ._tokens import count_messages as count_messages
from ._tokens import count_text as count_text
from ._track import track as track
from ._tracked import TrackedAsyncStream as TrackedAsyncStream
from ._tracked import TrackedClient as TrackedClient
from ._tracked import TrackedStream as TrackedStream

__all__ = (
    "DEFAULT_EXPECTED_OUTPUT_TOKENS",
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "Catalog",
    "Estimate",
    "MaxCostExceeded",
    "ModelInfo",
    "ModelPrice",
    "NoModelFits",
    "Price",
    "PriceTable",
    "Recommendation",
    "TrackedAsyncStream",
    "TrackedClient",
    "TrackedStream",
    "UnknownModel",
    "UntrackedCall",
    "Usage",
    "choose_model",
    "cost",
    "count_messages",
    "count_text",
    "default_catalog",
    "estimate",
    "lookup",
    "recommendations",
    "register_price",
    "track",
    "unregister_price",
)
