"""The alert channels treasurer ships: :class:`Webhook` (Slack-compatible text,
or JSON signed with HMAC, through httpx: ``pip install 'treasurer[alerts]'``)
and :class:`Email` (smtplib in a worker thread, so asyncio and trio alike)."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import time
from collections.abc import Sequence
from decimal import Decimal
from email.message import EmailMessage
from typing import Any, Final, Literal

import anyio
import anyio.to_thread

from .._core.events import ExhaustionForecast
from .._errors import InvalidOption
from .alerts import Alert, Channel, PermanentFailure, count, seconds


def payload(alert: Alert) -> dict[str, Any]:
    """An alert as plain JSON data."""

    def plain(value: object) -> object:
        if isinstance(value, Decimal):
            return str(value)
        return value.isoformat() if hasattr(value, "isoformat") else value

    common = {
        "message": alert.message,
        "level": alert.level,
        "budget": alert.budget,
        "tenant": alert.tenant,
        "child": alert.child,
        "at": plain(alert.at),
        "cap": alert.cap,
        "window": alert.window,
    }
    if isinstance(alert, ExhaustionForecast):
        return {
            "type": "exhaustion_forecast",
            **common,
            "exhausts_at": plain(alert.exhausts_at),
            "rate_per_hour": alert.rate,
            "used": plain(alert.used),
            "limit": plain(alert.limit),
            "resets_at": plain(alert.resets_at),
        }
    return {
        "type": "threshold_crossed",
        **common,
        "threshold": alert.threshold,
        "used": plain(alert.used),
        "limit": plain(alert.limit),
        "resets_at": plain(alert.resets_at),
    }


class Webhook(Channel):
    """POSTs each alert to ``url`` (http or https), with httpx.

    ``format="slack"`` sends ``{"text": message}`` (Slack's and most chat tools'
    incoming webhooks); ``"json"`` sends the alert's fields. With ``secret``,
    each request carries ``X-Treasurer-Timestamp`` and ``X-Treasurer-Signature:
    sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"`` under the secret.
    A 2xx answer is success; 408, 429 and 5xx are retried; other answers fail
    at once.
    """

    def __init__(
        self,
        url: str,
        *,
        format: Literal["slack", "json"] = "slack",
        secret: str | bytes | None = None,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidOption(f"a webhook url starts with http:// or https://, not {url!r}")
        if format not in ("slack", "json"):
            raise InvalidOption(f"format must be 'slack' or 'json', not {format!r}")
        if secret is not None and not isinstance(secret, str | bytes):
            raise InvalidOption("secret must be str or bytes")
        seconds(timeout, "timeout")
        self.url: Final = url
        self.format: Final = format
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self.timeout: Final = float(timeout)
        self.headers: Final = dict(headers or {})
        self._client: Any = None

    async def connect(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(timeout=self.timeout)

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def send(self, alert: Alert) -> None:
        data = {"text": alert.message} if self.format == "slack" else payload(alert)
        body = json.dumps(data).encode()
        headers = {"Content-Type": "application/json", **self.headers}
        if self._secret is not None:
            stamp = str(int(time.time()))
            digest = hmac.new(self._secret, stamp.encode() + b"." + body, hashlib.sha256)
            headers["X-Treasurer-Timestamp"] = stamp
            headers["X-Treasurer-Signature"] = f"sha256={digest.hexdigest()}"
        response = await self._client.post(self.url, content=body, headers=headers)
        status = response.status_code
        if 200 <= status < 300:
            return
        message = f"{self.url} answered {status}"
        if status in (408, 429) or status >= 500:
            raise ConnectionError(message)
        raise PermanentFailure(message)

    def __repr__(self) -> str:
        return f"Webhook({self.url!r})"


class Email(Channel):
    """Sends each alert as an e-mail from ``sender`` to ``to`` through the SMTP
    server at ``host``:``port`` (smtplib, in a worker thread). ``starttls`` upgrades
    the connection (``ssl=True`` connects with TLS at once); ``username`` and
    ``password`` log in."""

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str,
        to: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        timeout: float = 10.0,
        subject_prefix: str = "[treasurer]",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(host, str) or not host:
            raise InvalidOption(f"host must be a host name, not {host!r}")
        count(port, "port", 1)
        if isinstance(to, str) or not to or not all(isinstance(a, str) and a for a in to):
            raise InvalidOption(f"to must be a list of one or more addresses, not {to!r}")
        if not isinstance(sender, str) or not sender:
            raise InvalidOption(f"sender must be an address, not {sender!r}")
        seconds(timeout, "timeout")
        self.host: Final = host
        self.port: Final = port
        self.sender: Final = sender
        self.to: Final = tuple(to)
        self.username: Final = username
        self._password = password
        self.starttls: Final = bool(starttls)
        self.ssl: Final = bool(ssl)
        self.timeout: Final = float(timeout)
        self.subject_prefix: Final = subject_prefix

    def message(self, alert: Alert) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = f"{self.subject_prefix} {alert.message}".strip()
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        fields = "\n".join(f"{key}: {value}" for key, value in payload(alert).items())
        message.set_content(f"{alert.message}\n\n{fields}\n")
        return message

    async def send(self, alert: Alert) -> None:
        message = self.message(alert)
        await anyio.to_thread.run_sync(self._send_now, message)

    def _send_now(self, message: EmailMessage) -> None:
        kind = smtplib.SMTP_SSL if self.ssl else smtplib.SMTP
        with kind(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username is not None:
                smtp.login(self.username, self._password or "")
            smtp.send_message(message)

    def __repr__(self) -> str:
        return f"Email({self.host!r}, {self.port}, to={list(self.to)!r})"
