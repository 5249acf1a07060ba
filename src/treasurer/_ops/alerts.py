"""Alert channels: threshold crossings and forecast warnings sent to a webhook
or by e-mail, off the budget's path.

The actor hands each :class:`ThresholdCrossed` and
:class:`ExhaustionForecast` to the budget's alert
dispatcher, which only queues it for each channel (bounded; a full queue
drops and counts). Each channel sends from a task of its own: retries with
backoff, at most one send per ``min_interval``, failures counted and kept in
:meth:`Channel.statistics`. A dead channel never blocks or breaks the budget;
when the budget closes, channels get :data:`GRACE` seconds to send what is
queued, and what is left is counted as dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from decimal import Decimal
from email.message import EmailMessage
from typing import Any, Final, Literal

import anyio
import anyio.to_thread
import attrs

from .._core.events import Event, ExhaustionForecast, ThresholdCrossed
from .._errors import InvalidOption

Alert = ThresholdCrossed | ExhaustionForecast
GRACE: Final = 5.0  # seconds channels get to send what is queued when the budget closes


@attrs.frozen
class ChannelStatistics:
    """What a channel did: alerts ``sent``, ``failed`` (given up after the retries),
    ``dropped`` (its queue was full, or the budget closed first), ``retries`` made,
    and the last error's message."""

    sent: int
    failed: int
    dropped: int
    retries: int
    last_error: str | None


class PermanentFailure(Exception):
    """A send that retrying cannot fix (the receiver refused the request itself)."""


class Channel(ABC):
    """Where alerts go. ``retries`` more tries after a failed send, waiting
    ``backoff`` seconds, doubling each time; at most one send per ``min_interval``
    seconds (alerts wait in a queue of ``buffer``)."""

    def __init__(
        self,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        min_interval: float = 0.0,
        buffer: int = 100,
    ) -> None:
        _count(retries, "retries", 0)
        _count(buffer, "buffer", 1)
        _seconds(backoff, "backoff", allow_zero=True)
        _seconds(min_interval, "min_interval", allow_zero=True)
        self.retries: Final = retries
        self.backoff: Final = float(backoff)
        self.min_interval: Final = float(min_interval)
        self.buffer: Final = buffer
        self._queue: deque[Alert] = deque()
        self._sending: Alert | None = None
        self._ready: anyio.Event | None = None
        self._closing = False
        self._busy = False
        self._sent = self._failed = self._dropped = self._retries = 0
        self._last_error: str | None = None
        self._last_sent: float | None = None

    @abstractmethod
    async def send(self, alert: Alert) -> None:
        """Deliver one alert; raise to fail (:class:`PermanentFailure`: no retry)."""

    async def connect(self) -> None:  # noqa: B027 - most channels need nothing
        """Called once before the first send of a budget's life."""

    async def disconnect(self) -> None:  # noqa: B027
        """Called once after the last."""

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            self._sent, self._failed, self._dropped, self._retries, self._last_error
        )

    # -- run by the budget's dispatcher ------------------------------------------------

    def _start(self) -> None:
        if self._busy:
            raise InvalidOption(
                f"{self!r} serves one open budget at a time; give each budget its own"
            )
        self._busy, self._closing, self._ready = True, False, anyio.Event()

    def _offer(self, alert: Alert) -> None:
        if len(self._queue) >= self.buffer:
            self._dropped += 1
            return
        self._queue.append(alert)
        assert self._ready is not None, "_start() first"
        self._ready.set()

    def _finish(self) -> None:
        self._closing = True
        assert self._ready is not None, "_start() first"
        self._ready.set()

    async def _run(self) -> None:
        try:
            await self.connect()
            while self._queue or not self._closing:
                if not self._queue:
                    assert self._ready is not None
                    await self._ready.wait()
                    self._ready = anyio.Event()
                    continue
                await self._pace()
                self._sending = self._queue.popleft()  # buffer counts those waiting only
                await self._deliver(self._sending)
                self._sending = None
        finally:
            self._dropped += len(self._queue) + (self._sending is not None)
            self._sending = None
            self._queue.clear()
            self._busy = False
            with anyio.CancelScope(shield=True):
                await self.disconnect()

    async def _pace(self) -> None:
        if self._last_sent is not None and self.min_interval:
            wait = self._last_sent + self.min_interval - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)

    async def _deliver(self, alert: Alert) -> None:
        for attempt in range(self.retries + 1):
            try:
                await self.send(alert)
            except Exception as exc:  # a channel's failure never reaches the budget
                self._last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, PermanentFailure) or attempt == self.retries:
                    self._failed += 1
                    return
                self._retries += 1
                await anyio.sleep(self.backoff * 2**attempt)
            else:
                self._sent += 1
                self._last_sent = time.monotonic()
                return


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
        _seconds(timeout, "timeout")
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
        _count(port, "port", 1)
        if isinstance(to, str) or not to or not all(isinstance(a, str) and a for a in to):
            raise InvalidOption(f"to must be a list of one or more addresses, not {to!r}")
        if not isinstance(sender, str) or not sender:
            raise InvalidOption(f"sender must be an address, not {sender!r}")
        _seconds(timeout, "timeout")
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


class AlertDispatcher:
    """A budget's channels: the actor offers each event; channels send in tasks."""

    def __init__(self, channels: Sequence[Channel]) -> None:
        self.channels: Final = tuple(channels)
        self._closing: anyio.Event | None = None

    def start(self) -> None:
        for channel in self.channels:
            channel._start()
        self._closing = anyio.Event()

    def offer(self, event: Event) -> None:
        if isinstance(event, Alert):
            for channel in self.channels:
                channel._offer(event)

    def finish(self) -> None:
        assert self._closing is not None, "start() first"
        self._closing.set()

    async def run(self) -> None:
        assert self._closing is not None, "start() first"
        async with anyio.create_task_group() as tg:
            for channel in self.channels:
                tg.start_soon(channel._run)
            await self._closing.wait()
            for channel in self.channels:
                channel._finish()
            tg.cancel_scope.deadline = anyio.current_time() + GRACE


def channels(value: object) -> tuple[Channel, ...]:
    """``open_budget``'s ``alerts``, checked."""
    if value is None:
        return ()
    if isinstance(value, Channel):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(c, Channel) for c in value):
        raise InvalidOption(
            f"alerts must be a list of alert channels (treasurer.alerts.Webhook, Email), "
            f"not {value!r}"
        )
    if len({id(c) for c in value}) != len(value):
        raise InvalidOption("alerts lists a channel twice")
    return tuple(value)


def _count(value: object, name: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidOption(f"{name} must be an int >= {least}, not {value!r}")


def _seconds(value: object, name: str, *, allow_zero: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise InvalidOption(
            f"{name} must be a {'' if allow_zero else 'positive '}number of seconds, not {value!r}"
        )
