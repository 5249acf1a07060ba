"""Every store the conformance suite runs against: adding one is adding one line here.

A factory makes a fresh, empty store each time it is called; the suite opens it with
the budget's configuration and a clock it controls.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from treasurer import MemoryStore, Store

from .reloading import ReloadingStore

StoreFactory = Callable[[], Store]

STORES = [
    pytest.param(MemoryStore, id="memory"),
    # Not a product store: the memory semantics through state.py's JSON records,
    # reloaded before every batch, as a durable store reloads another's writes.
    pytest.param(ReloadingStore, id="reloading"),
]
