"""Drop-in names for code moving to treasurer from other budget libraries.

- ``BudgetPool(token_cap=..., usd_cap=...)`` opens a thread-safe
  :class:`treasurer.sync.SyncBudget`, whose methods already match the
  token-budget-py pool (``record``, ``reserve`` / ``commit``, ``snapshot``,
  ``reset``).
- ``BudgetManager(Budget(daily_limit=..., monthly_limit=...,
  per_request_limit=..., alert_threshold=...), alert_handler=...)`` keeps the
  budget-manager API (``can_spend``, ``record_spend(UsageRecord(...))``,
  ``get_status``, ``reset_daily``) on a treasurer budget with day and month
  windows, a per-request cap and a threshold alert.

See docs/coming-from.md for these and the other mappings.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal

from ._compat_llm import PRICING as PRICING
from ._compat_llm import CostOptimizer as CostOptimizer
from ._compat_llm import TrackedLLMClient as TrackedLLMClient
from ._core.events import ThresholdCrossed
from ._core.options import Money
from ._core.windows import Window
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import InvalidOption
from .sync import SyncBudget
from .sync import open_budget as _open_sync_budget

__all__ = (
    "PRICING",
    "AlertLevel",
    "Budget",
    "BudgetExceeded",
    "BudgetManager",
    "BudgetPool",
    "CostOptimizer",
    "TrackedLLMClient",
    "UsageRecord",
)


def BudgetPool(token_cap: int | None = None, usd_cap: Money | None = None) -> SyncBudget:
    """A pool with an optional token cap and USD cap, shared by any number of threads.

    Unlike token-budget-py's pool it runs an actor thread: close it (or use it
    as a context manager) when done; one left open is closed at exit.
    """
    return _open_sync_budget(tokens=token_cap, usd=usd_cap, name="pool")


class AlertLevel(enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass
class UsageRecord:
    """One call's usage. Only the tokens and the cost are budgeted; ``timestamp``
    is informational (the budget's clock places spend in its day and month)."""

    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    timestamp: datetime
    user_id: str | None = None
    endpoint: str | None = None
    request_id: str | None = None


@dataclass
class Budget:
    """The limits of a :class:`BudgetManager`, in USD; ``alert_threshold`` is a fraction."""

    daily_limit: float = 10.0
    monthly_limit: float = 200.0
    per_request_limit: float = 0.50
    alert_threshold: float = 0.8


class BudgetManager:
    """Daily, monthly and per-request USD limits with a threshold alert, thread-safe.

    Backed by a treasurer budget with a day and a month window (UTC unless
    ``tz`` is given). ``record_spend`` records spend that already happened and
    is never refused; ``can_spend`` is a pre-flight check. Figures come back
    as floats, converted from treasurer's exact Decimals at the last moment.
    """

    def __init__(
        self,
        budget: Budget,
        alert_handler: Callable[[AlertLevel, str], object] | None = None,
        *,
        tz: str | tzinfo | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not 0 < budget.alert_threshold <= 1:
            raise InvalidOption(f"alert_threshold must be in (0, 1], got {budget.alert_threshold}")
        self.budget = budget
        self._alert_handler = alert_handler
        threshold = round(budget.alert_threshold * 100)
        self._treasurer = _open_sync_budget(
            name="budget-manager",
            per_request={"usd": budget.per_request_limit},
            windows=[
                Window.day(usd=budget.daily_limit, tz=tz),
                Window.month(usd=budget.monthly_limit, tz=tz),
            ],
            thresholds=sorted({threshold, 100}),
            clock=clock,
        )
        # The alerts a call causes are buffered before it returns: record_spend
        # hands them to the alert handler before it returns too, as the manager did.
        self._subscribing = self._treasurer.subscribe(buffer=1024)
        self._events = self._subscribing.__enter__()

    def _alert(self) -> None:
        for event in self._events.pending():
            if self._alert_handler is not None and isinstance(event, ThresholdCrossed):
                self._alert_handler(AlertLevel(event.level), event.message)

    @property
    def treasurer_budget(self) -> SyncBudget:
        """The treasurer budget underneath, for everything this API does not cover."""
        return self._treasurer

    def can_spend(self, estimated_cost: float) -> bool:
        """Whether a call of this cost fits the per-request, daily and monthly limits now."""
        return self._treasurer.check(usd=estimated_cost).fits

    def record_spend(self, record: UsageRecord) -> None:
        """Record a call's spend; it happened, so it is recorded even past a limit."""
        tags = {
            name: value
            for name, value in (("user_id", record.user_id), ("endpoint", record.endpoint))
            if value
        }
        request = {"request_id": record.request_id} if record.request_id else {}
        self._treasurer.charge(
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            usd=record.cost_usd,
            model=record.model,
            tags=tags,
            **request,  # type: ignore[arg-type]
        )
        self._alert()

    def get_status(self) -> dict[str, float]:
        """Spent and remaining per day and month, and the percent of the daily limit used."""
        check = self._treasurer.check()  # brings the windows up to the budget's clock
        day, month = check.windows
        daily_spent, monthly_spent = day.used.usd, month.used.usd
        daily_left, monthly_left = day.remaining.usd, month.remaining.usd
        assert daily_left is not None  # both windows cap USD
        assert monthly_left is not None
        return {
            "daily_spent": float(daily_spent),
            "daily_remaining": float(max(daily_left, Decimal(0))),
            "monthly_spent": float(monthly_spent),
            "monthly_remaining": float(max(monthly_left, Decimal(0))),
            "percent_used": float(daily_spent * 100 / day.caps.usd) if day.caps.usd else 0.0,
        }

    def reset_daily(self) -> None:
        """Zero today's spend (the month keeps it)."""
        self._treasurer.reset(window="day")

    def close(self) -> None:
        """Stop the budget's thread; closed at interpreter exit otherwise."""
        if not self._treasurer.closed:
            self._subscribing.__exit__(None, None, None)
        self._treasurer.close()

    def __enter__(self) -> BudgetManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
