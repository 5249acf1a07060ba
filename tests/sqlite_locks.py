"""A SQLite file's write lock held by another connection, for tests of what a store
or a usage log does while it cannot write."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class WriteLock:
    """Another connection holding the file's write lock until the block ends."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)

    def __enter__(self) -> WriteLock:
        self.db.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()
