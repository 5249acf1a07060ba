"""Forecasts: burn rates and when each cap runs out at them.

``open_budget(..., forecast=True)`` (or ``forecast=ForecastOptions(...)``)
makes a budget follow its burn rate: ``budget.forecast()`` returns a
:class:`Forecast` per capped axis of each period, and a cap projected to run
out before its period resets fires an :class:`~treasurer.ExhaustionForecast`
event (sent to alert channels too). :func:`from_records` forecasts from usage
records instead, such as a usage log's (``treasurer forecast`` does).
"""

from __future__ import annotations

from ._core.events import ExhaustionForecast as ExhaustionForecast
from ._ops.forecast import Forecast as Forecast
from ._ops.forecast import ForecastOptions as ForecastOptions
from ._ops.forecast import from_records as from_records

__all__ = ("ExhaustionForecast", "Forecast", "ForecastOptions", "from_records")
