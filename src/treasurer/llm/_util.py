"""Reading an SDK call's keywords, and the SDK's error classes."""

from __future__ import annotations

import importlib
from typing import Any

from treasurer import InvalidOption

ErrorClasses = tuple[type[BaseException], ...]


def given(kwargs: dict[str, Any], key: str, kind: type | None = None) -> Any:
    """A keyword's value, or None if absent, None, an SDK "omit" sentinel or not a ``kind``."""
    value = kwargs.get(key)
    if value is None or type(value).__name__ in ("Omit", "NotGiven"):
        return None
    if kind is not None and not isinstance(value, kind):
        return None
    return value


def model_of(kwargs: dict[str, Any], method: str) -> str:
    model: str | None = given(kwargs, "model", str)
    if not model:
        raise InvalidOption(f"{method}() needs model= (a model's name) to be paid from a budget")
    return model


def sdk_errors(package: str) -> tuple[ErrorClasses, ErrorClasses, ErrorClasses]:
    """The SDK's error classes: the API answered with an error; the connection failed; timeout."""
    sdk = importlib.import_module(package)
    return (sdk.APIStatusError,), (sdk.APIConnectionError,), (sdk.APITimeoutError,)
