"""Where a budget's log events go; quiet unless the application turns logging on.

If the application configured structlog, events go to structlog's
``treasurer`` logger (its configuration decides what is shown). Otherwise
they go to the standard library's ``logging.getLogger("treasurer")``, which
has a ``NullHandler``: nothing is printed until the application configures
logging, e.g. ``logging.basicConfig(level=logging.INFO)``.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import structlog

STDLIB_LOGGER: Final = logging.getLogger("treasurer")
STDLIB_LOGGER.addHandler(logging.NullHandler())


class Log:
    """One budget's logger: the budget's name bound to every event."""

    def __init__(self, budget: str) -> None:
        self.budget: Final = budget
        self._structlog: Any = None
        if structlog.is_configured():
            self._structlog = structlog.get_logger("treasurer").bind(budget=budget)

    def enabled(self, level: int) -> bool:
        """Whether an event at ``level`` would go anywhere; cheap, ask before building one."""
        if self._structlog is None:
            return STDLIB_LOGGER.isEnabledFor(level)
        is_enabled_for = getattr(self._structlog, "is_enabled_for", None)
        return True if is_enabled_for is None else bool(is_enabled_for(level))

    def log(self, level: int, event: str, /, **fields: Any) -> None:
        if not self.enabled(level):
            return
        if self._structlog is not None:
            self._structlog.log(level, event, **fields)
            return
        shown = " ".join(f"{key}={value!r}" for key, value in fields.items())
        STDLIB_LOGGER.log(
            level,
            "%s budget=%r %s",
            event,
            self.budget,
            shown,
            extra={"treasurer": {"event": event, "budget": self.budget, **fields}},
        )

    def exception(self, event: str, /, **fields: Any) -> None:
        """An error with the traceback of the exception being handled."""
        if self._structlog is not None:
            self._structlog.exception(event, **fields)
        elif STDLIB_LOGGER.isEnabledFor(logging.ERROR):
            STDLIB_LOGGER.exception("%s budget=%r", event, self.budget, extra={"treasurer": fields})
