"""Share one token and money budget between many concurrent LLM calls, never overspending it.

A single actor task owns each budget; every other task sends it messages and
awaits the reply, so check-and-deduct is atomic without locks, on asyncio and
trio alike.
"""

from __future__ import annotations

from ._amounts import AXES as AXES
from ._amounts import Amounts as Amounts
from ._amounts import Metadata as Metadata
from ._amounts import UsageInfo as UsageInfo
from ._budget import Budget as Budget
from ._budget import Reservation as Reservation
from ._budget import open_budget as open_budget
from ._errors import AlreadySettled as AlreadySettled
from ._errors import BudgetBroken as BudgetBroken
from ._errors import BudgetClosed as BudgetClosed
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import InvalidAmount as InvalidAmount
from ._errors import InvalidAmountType as InvalidAmountType
from ._errors import InvalidOption as InvalidOption
from ._errors import LoopThreadError as LoopThreadError
from ._errors import RequestTooLarge as RequestTooLarge
from ._errors import ReservationError as ReservationError
from ._errors import ReservationExpired as ReservationExpired
from ._errors import TreasurerError as TreasurerError
from ._errors import UnknownAxis as UnknownAxis
from ._events import Event as Event
from ._events import Override as Override
from ._events import OverrideExpired as OverrideExpired
from ._events import OverrideRemoved as OverrideRemoved
from ._events import OverrideSet as OverrideSet
from ._events import RequestRefused as RequestRefused
from ._events import ReservationCommitted as ReservationCommitted
from ._events import ReservationCreated as ReservationCreated
from ._events import ReservationExpired as ReservationExpiredEvent
from ._events import ReservationReleased as ReservationReleased
from ._events import Subscription as Subscription
from ._events import ThresholdCrossed as ThresholdCrossed
from ._events import WindowRolledOver as WindowRolledOver
from ._tenants import TenantCaps as TenantCaps
from ._types import Caps as Caps
from ._types import Check as Check
from ._types import Snapshot as Snapshot
from ._types import Statistics as Statistics
from ._types import Totals as Totals
from ._types import Usage as Usage
from ._types import UsageReport as UsageReport
from ._types import WindowUsage as WindowUsage
from ._windows import Window as Window

__all__ = (
    "AXES",
    "AlreadySettled",
    "Amounts",
    "Budget",
    "BudgetBroken",
    "BudgetClosed",
    "BudgetExceeded",
    "Caps",
    "Check",
    "Event",
    "InvalidAmount",
    "InvalidAmountType",
    "InvalidOption",
    "LoopThreadError",
    "Metadata",
    "Override",
    "OverrideExpired",
    "OverrideRemoved",
    "OverrideSet",
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
    "Statistics",
    "Subscription",
    "TenantCaps",
    "ThresholdCrossed",
    "Totals",
    "TreasurerError",
    "UnknownAxis",
    "Usage",
    "UsageInfo",
    "UsageReport",
    "Window",
    "WindowRolledOver",
    "WindowUsage",
    "open_budget",
)
