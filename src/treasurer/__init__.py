"""Share one token and money budget between many concurrent LLM calls, never overspending it.

A single actor task owns each budget; every other task sends it commands and
awaits the outcome, so check-and-deduct is atomic without locks, on asyncio
and trio alike. Where the state lives is a store: in memory by default.
"""

from __future__ import annotations

from ._core.axes import AXES as AXES
from ._core.events import Event as Event
from ._core.events import ExhaustionForecast as ExhaustionForecast
from ._core.events import Override as Override
from ._core.events import OverrideExpired as OverrideExpired
from ._core.events import OverrideRemoved as OverrideRemoved
from ._core.events import OverrideSet as OverrideSet
from ._core.events import RequestRefused as RequestRefused
from ._core.events import ReservationCommitted as ReservationCommitted
from ._core.events import ReservationCreated as ReservationCreated
from ._core.events import ReservationExpiredEvent as ReservationExpiredEvent
from ._core.events import ReservationReleased as ReservationReleased
from ._core.events import ThresholdCrossed as ThresholdCrossed
from ._core.events import UsageRecorded as UsageRecorded
from ._core.events import WindowRolledOver as WindowRolledOver
from ._core.options import Amounts as Amounts
from ._core.options import CapOptions as CapOptions
from ._core.options import Metadata as Metadata
from ._core.options import UsageInfo as UsageInfo
from ._core.values import Caps as Caps
from ._core.values import Check as Check
from ._core.values import Period as Period
from ._core.values import Snapshot as Snapshot
from ._core.values import Statistics as Statistics
from ._core.values import Totals as Totals
from ._core.values import Usage as Usage
from ._core.values import UsageReport as UsageReport
from ._core.values import WindowUsage as WindowUsage
from ._core.windows import Window as Window
from ._errors import AlreadySettled as AlreadySettled
from ._errors import BudgetBroken as BudgetBroken
from ._errors import BudgetClosed as BudgetClosed
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import InvalidAmount as InvalidAmount
from ._errors import InvalidAmountType as InvalidAmountType
from ._errors import InvalidOption as InvalidOption
from ._errors import InvalidRefund as InvalidRefund
from ._errors import LoopThreadError as LoopThreadError
from ._errors import RequestTooLarge as RequestTooLarge
from ._errors import ReservationError as ReservationError
from ._errors import ReservationExpired as ReservationExpired
from ._errors import StoreUnavailable as StoreUnavailable
from ._errors import TreasurerError as TreasurerError
from ._errors import UnknownAxis as UnknownAxis
from ._handles.budget import Budget as Budget
from ._handles.open import open_budget as open_budget
from ._handles.reservation import Reservation as Reservation
from ._handles.settings import BudgetOptions as BudgetOptions
from ._handles.settings import TenantCaps as TenantCaps
from ._ops.redis_log import RedisUsageLog as RedisUsageLog
from ._ops.sqlite_log import SqliteUsageLog as SqliteUsageLog
from ._runtime.subscription import Subscription as Subscription
from ._runtime.usage_log import MemoryUsageLog as MemoryUsageLog
from ._runtime.usage_log import UsageLog as UsageLog
from ._runtime.usage_log import UsageLogStatistics as UsageLogStatistics
from ._stores.base import BatchResult as BatchResult
from ._stores.base import Health as Health
from ._stores.base import Store as Store
from ._stores.memory import MemoryStore as MemoryStore
from ._stores.redis import RedisStore as RedisStore
from ._stores.sqlite import SqliteStore as SqliteStore

__all__ = (
    "AXES",
    "AlreadySettled",
    "Amounts",
    "BatchResult",
    "Budget",
    "BudgetBroken",
    "BudgetClosed",
    "BudgetExceeded",
    "BudgetOptions",
    "CapOptions",
    "Caps",
    "Check",
    "Event",
    "ExhaustionForecast",
    "Health",
    "InvalidAmount",
    "InvalidAmountType",
    "InvalidOption",
    "InvalidRefund",
    "LoopThreadError",
    "MemoryStore",
    "MemoryUsageLog",
    "Metadata",
    "Override",
    "OverrideExpired",
    "OverrideRemoved",
    "OverrideSet",
    "Period",
    "RedisStore",
    "RedisUsageLog",
    "RequestRefused",
    "RequestTooLarge",
    "Reservation",
    "ReservationCommitted",
    "ReservationCreated",
    "ReservationError",
    "ReservationExpired",
    "ReservationExpiredEvent",
    "ReservationReleased",
    "Snapshot",
    "SqliteStore",
    "SqliteUsageLog",
    "Statistics",
    "Store",
    "StoreUnavailable",
    "Subscription",
    "TenantCaps",
    "ThresholdCrossed",
    "Totals",
    "TreasurerError",
    "UnknownAxis",
    "Usage",
    "UsageInfo",
    "UsageLog",
    "UsageLogStatistics",
    "UsageRecorded",
    "UsageReport",
    "Window",
    "WindowRolledOver",
    "WindowUsage",
    "open_budget",
)
