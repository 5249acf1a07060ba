"""Alert channels: ``open_budget(..., alerts=[treasurer.alerts.Webhook(url),
treasurer.alerts.Email(host, sender=..., to=[...])])`` sends every threshold
crossing and forecast warning (an ``Alert``), off the budget's path (see
docs/operations.md). Webhooks need ``pip install 'treasurer[alerts]'`` (httpx)."""

from ._ops.alert_channels import Email, Webhook, payload
from ._ops.alerts import GRACE, Alert, Channel, ChannelStatistics, PermanentFailure

__all__ = [
    "GRACE",
    "Alert",
    "Channel",
    "ChannelStatistics",
    "Email",
    "PermanentFailure",
    "Webhook",
    "payload",
]
