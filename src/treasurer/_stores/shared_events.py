"""The events a store sends to the other processes that share its budget, as JSON.

Those that happen once for the whole budget, whichever process's batch made
them: thresholds crossed, windows rolled over, reservations expired, overrides
set, expired and removed. Each process keeps its own usage records, refusals,
reservation lifecycle and forecasts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import attrs

from .._core.events import (
    Event,
    Override,
    OverrideExpired,
    OverrideRemoved,
    OverrideSet,
    ReservationExpiredEvent,
    ThresholdCrossed,
    WindowRolledOver,
)
from .._core.values import Usage

SHARED: Final[dict[str, type[Event]]] = {
    kind.__name__: kind
    for kind in (
        ThresholdCrossed,
        WindowRolledOver,
        ReservationExpiredEvent,
        OverrideSet,
        OverrideExpired,
        OverrideRemoved,
    )
}
_VALUES: Final[dict[str, type[Any]]] = {"Usage": Usage, "Override": Override}


def shared(events: Sequence[Event]) -> list[Event]:
    return [event for event in events if type(event).__name__ in SHARED]


def encode(events: Sequence[Event]) -> list[Any]:
    """``events`` as JSON-able records (see :func:`decode`)."""
    return [{"kind": type(event).__name__, **_fields(event)} for event in events]


def decode(records: Sequence[Any]) -> list[Event]:
    """The events :func:`encode` wrote; records of kinds this version does not
    share (a newer process's) are skipped."""
    return [
        SHARED[record["kind"]](**{k: _value(v) for k, v in record.items() if k != "kind"})
        for record in records
        if record.get("kind") in SHARED
    ]


def _fields(value: Any) -> dict[str, Any]:
    return {field.name: _plain(getattr(value, field.name)) for field in attrs.fields(type(value))}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$time": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if type(value).__name__ in _VALUES:
        return {"$" + type(value).__name__: _fields(value)}
    return value


def _value(value: Any) -> Any:
    if not isinstance(value, dict) or len(value) != 1:
        return value
    ((key, inner),) = value.items()
    if key == "$time":
        return datetime.fromisoformat(inner)
    if key == "$decimal":
        return Decimal(inner)
    return _VALUES[key[1:]](**{k: _value(v) for k, v in inner.items()})


def message(writer: str, events: Sequence[Event]) -> str:
    """What a store publishes after a write: who wrote, and the shared events."""
    return json.dumps({"writer": writer, "events": encode(shared(events))})


def read_message(text: object) -> tuple[str | None, list[Event]]:
    """Who wrote and the shared events of a :func:`message`, but those the script
    marked ``"unsaid"`` (another writer told them: a scope rolled over alike); for
    anything else published on the channel, ``(None, [])``: someone wrote,
    nothing to hand on."""
    try:
        said = json.loads(str(text))
        unsaid = set(said.get("unsaid", ()))
        events = [record for index, record in enumerate(said["events"]) if index not in unsaid]
        return str(said["writer"]), decode(events)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, []
