"""Every store the conformance suite runs against: adding one is adding one line here.

A factory makes a fresh, empty store each time it is called; the suite opens it with
the budget's configuration and a clock it controls.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from treasurer import MemoryStore, SqliteStore, Store

from .reloading import ReloadingStore

StoreFactory = Callable[[], Store]

_FILES = tempfile.TemporaryDirectory(prefix="treasurer-conformance-")
atexit.register(_FILES.cleanup)


def fresh_file() -> Path:
    """A new SQLite file for each store the suite makes (removed at exit)."""
    handle, name = tempfile.mkstemp(suffix=".sqlite", dir=_FILES.name)
    os.close(handle)
    return Path(name)


STORES = [
    pytest.param(MemoryStore, id="memory"),
    # Not a product store: the memory semantics through state.py's JSON records,
    # reloaded before every batch, as a durable store reloads another's writes.
    pytest.param(ReloadingStore, id="reloading"),
    pytest.param(lambda: SqliteStore(fresh_file()), id="sqlite"),
]
