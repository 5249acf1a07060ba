"""Alert channels: ``open_budget(..., alerts=[treasurer.alerts.Webhook(url),
treasurer.alerts.Email(host, sender=..., to=[...])])`` sends every threshold
crossing, off the budget's path (see docs/operations.md). Webhooks need
``pip install 'treasurer[alerts]'`` (httpx)."""

from ._ops.alerts import (
    GRACE,
    Channel,
    ChannelStatistics,
    Email,
    PermanentFailure,
    Webhook,
    payload,
)

__all__ = [
    "GRACE",
    "Channel",
    "ChannelStatistics",
    "Email",
    "PermanentFailure",
    "Webhook",
    "payload",
]
