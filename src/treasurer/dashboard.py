"""The dashboard: ``pip install 'treasurer[dashboard]'``, then
``await task_group.start(treasurer.dashboard.serve, budget)`` for a budget open
in this process, or ``treasurer dashboard --store PATH --log PATH`` for one kept
in a SQLite store (see docs/operations.md). Served on 127.0.0.1 by hypercorn,
on asyncio or trio."""

from ._ops.dashboard import app, serve, serve_store
from ._ops.dashboard_sources import LiveSource, Source, StoreSource

__all__ = ["LiveSource", "Source", "StoreSource", "app", "serve", "serve_store"]
