"""The keyword sets of the public API, as TypedDicts, so each is written once.

``CapOptions`` are the axis caps that ``open_budget``, ``child``,
``TenantCaps`` and ``Window`` take; ``Amounts`` the axis amounts of every call
that spends; ``Metadata`` what a call may say about itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Final, TypedDict

Money = int | float | Decimal


class CapOptions(TypedDict, total=False):
    """One optional cap per axis; an omitted or ``None`` cap is unbounded."""

    input_tokens: int | None
    output_tokens: int | None
    tokens: int | None
    usd: Money | None
    requests: int | None


class Amounts(TypedDict, total=False):
    """The axis keywords every call takes. Omitted axes count as zero.

    ``tokens`` is the total; it defaults to ``input_tokens + output_tokens``
    and, if given with them, must be at least their sum (the rest is usage
    not split into input and output). ``requests`` defaults to one per call.
    """

    input_tokens: int
    output_tokens: int
    tokens: int
    usd: Money
    requests: int


class Metadata(TypedDict, total=False):
    """What a call may say about itself besides its amounts.

    Carried by the call's events and usage records; ``usage()`` groups by them.
    """

    model: str
    tenant: str
    request_id: str
    session_id: str
    tags: Mapping[str, str]


class UsageInfo(Amounts, Metadata, total=False):
    """The keywords of reserve(), commit(), record() and charge(): amounts and metadata."""


METADATA_KEYS: Final = tuple(Metadata.__annotations__)
