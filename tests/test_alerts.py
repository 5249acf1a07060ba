"""Alert channels against real receivers on 127.0.0.1: an HTTP server for webhooks
and an SMTP server (aiosmtpd) for e-mail. A dead or slow channel never holds up
the budget; what it could not send is counted."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

import treasurer
import treasurer.alerts
import treasurer.sync

pytestmark = pytest.mark.anyio


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers with the next
    status of ``statuses`` (then 200); ``gate``, when given, holds each answer until set."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.gate: threading.Event | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((time.monotonic(), dict(self.headers), body))
                if receiver.gate is not None:
                    receiver.gate.wait(10)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def bodies(self) -> list[Any]:
        return [json.loads(body) for _, _, body in self.requests]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestWebhook:
    async def test_each_crossing_is_posted_in_order(self, receiver: Receiver) -> None:
        hook = treasurer.alerts.Webhook(receiver.url)
        async with treasurer.open_budget(name="api", tokens=100, alerts=[hook]) as budget:
            await budget.record(tokens=80)  # crosses 50 % and 75 %
            await budget.record(tokens=5)  # crosses nothing new
        texts = [body["text"] for body in receiver.bodies()]
        assert texts == [
            "budget 'api': tokens usage reached 50% of its cap (80 of 100)",
            "budget 'api': tokens usage reached 75% of its cap (80 of 100)",
        ]
        assert hook.statistics() == treasurer.alerts.ChannelStatistics(2, 0, 0, 0, None)

    async def test_json_signed_with_hmac(self, receiver: Receiver) -> None:
        hook = treasurer.alerts.Webhook(receiver.url, format="json", secret="s3cret")
        async with treasurer.open_budget(
            name="api", usd=10, tenant_defaults=treasurer.TenantCaps(usd=1)
        ) as budget:
            pass
        async with treasurer.open_budget(
            name="api",
            usd=10,
            tenant_defaults=treasurer.TenantCaps(usd=1),
            alerts=[hook],
            thresholds=[90],
        ) as budget:
            await budget.tenant("acme").record(usd=0.95)
        ((_, headers, body),) = receiver.requests
        stamp = headers["X-Treasurer-Timestamp"]
        expected = hmac.new(b"s3cret", stamp.encode() + b"." + body, hashlib.sha256)
        assert headers["X-Treasurer-Signature"] == f"sha256={expected.hexdigest()}"
        data = json.loads(body)
        assert {k: data[k] for k in ("type", "budget", "tenant", "cap", "threshold")} == {
            "type": "threshold_crossed",
            "budget": "api",
            "tenant": "acme",
            "cap": "usd",
            "threshold": 90,
        }
        assert (data["used"], data["limit"], data["window"]) == ("0.95", "1", "lifetime")

    async def test_server_errors_are_retried(self, receiver: Receiver) -> None:
        receiver.statuses = [500, 503]
        hook = treasurer.alerts.Webhook(receiver.url, backoff=0.01)
        async with treasurer.open_budget(tokens=10, thresholds=[50], alerts=[hook]) as budget:
            await budget.record(tokens=6)
        stats = hook.statistics()
        assert (stats.sent, stats.failed, stats.retries) == (1, 0, 2)
        assert len(receiver.requests) == 3

    async def test_giving_up_and_refusals_are_counted(self, receiver: Receiver) -> None:
        receiver.statuses = [500, 500, 404]
        hook = treasurer.alerts.Webhook(receiver.url, retries=1, backoff=0.01)
        async with treasurer.open_budget(tokens=10, thresholds=[50, 75], alerts=[hook]) as b:
            await b.record(tokens=6)  # 500, 500: given up after one retry
            await b.record(tokens=2)  # 404: not retried
        stats = hook.statistics()
        assert (stats.sent, stats.failed, stats.retries) == (0, 2, 1)
        assert "answered 404" in (stats.last_error or "")
        assert len(receiver.requests) == 3

    async def test_a_dead_channel_never_holds_up_the_budget(self) -> None:
        hook = treasurer.alerts.Webhook(f"http://127.0.0.1:{free_port()}/", retries=0)
        started = time.monotonic()
        async with treasurer.open_budget(tokens=100, alerts=[hook]) as budget:
            for _ in range(10):
                await budget.record(tokens=10)
            assert budget.snapshot().tokens_used == 100
        assert time.monotonic() - started < treasurer.alerts.GRACE
        stats = hook.statistics()
        assert (stats.sent, stats.failed + stats.dropped) == (0, 4)  # 50, 75, 90, 100 %
        assert "ConnectError" in (stats.last_error or "")

    async def test_a_slow_receiver_fills_the_queue_and_drops_are_counted(
        self, receiver: Receiver
    ) -> None:
        receiver.gate = threading.Event()
        hook = treasurer.alerts.Webhook(receiver.url, buffer=1)
        async with treasurer.open_budget(tokens=100, alerts=[hook]) as budget:
            await budget.record(tokens=50)  # 50 %: being sent, held by the receiver
            with anyio.fail_after(5):
                while not receiver.requests:  # noqa: ASYNC110 - the receiver is a thread
                    await anyio.sleep(0.005)
            await budget.record(tokens=25)  # 75 %: queued
            await budget.record(tokens=15)  # 90 %: the queue is full
            receiver.gate.set()
        stats = hook.statistics()
        assert (stats.sent, stats.dropped) == (2, 1)

    async def test_min_interval_spaces_the_sends(self, receiver: Receiver) -> None:
        hook = treasurer.alerts.Webhook(receiver.url, min_interval=0.2)
        async with treasurer.open_budget(tokens=100, alerts=[hook]) as budget:
            await budget.record(tokens=95)  # 50, 75 and 90 % at once
        times = [at for at, _, _ in receiver.requests]
        assert len(times) == 3
        assert all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(times))

    def test_from_a_sync_budget(self, receiver: Receiver) -> None:
        hook = treasurer.alerts.Webhook(receiver.url)
        with treasurer.sync.open_budget(tokens=10, thresholds=[100], alerts=hook) as budget:
            budget.record(tokens=10)
        assert [body["text"] for body in receiver.bodies()] == [
            f"budget {budget.name!r}: tokens usage reached 100% of its cap (10 of 10)"
        ]


class Mailbox:
    """An SMTP server on 127.0.0.1 (aiosmtpd, in a thread of its own)."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[Any] = []
        self.logins: list[str] = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mailbox.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
                return "250 OK"

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> Any:
            ok = (
                isinstance(data, LoginPassword)
                and (
                    data.login.decode(),
                    data.password.decode(),
                )
                == login
            )
            if ok:
                mailbox.logins.append(data.login.decode())
            return AuthResult(success=ok)

        self.port = free_port()
        options: dict[str, Any] = {}
        if login is not None:
            options = {"authenticator": authenticate, "auth_require_tls": False}
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


class TestEmail:
    async def test_each_crossing_is_mailed(self) -> None:
        mailbox = Mailbox()
        try:
            mail = treasurer.alerts.Email(
                "127.0.0.1", mailbox.port, sender="budget@example.test", to=["ops@example.test"]
            )
            async with treasurer.open_budget(
                name="api", usd=5, thresholds=[80], alerts=[mail]
            ) as budget:
                await budget.record(usd=4.5)
        finally:
            mailbox.close()
        ((recipients, message),) = mailbox.messages
        assert recipients == ["ops@example.test"]
        assert (
            message["Subject"]
            == "[treasurer] budget 'api': usd usage reached 80% of its cap (4.5 of 5)"
        )
        assert "threshold: 80" in message.get_payload()
        assert mail.statistics().sent == 1

    async def test_logging_in(self) -> None:
        mailbox = Mailbox(login=("alerts", "s3cret"))
        try:
            good = treasurer.alerts.Email(
                "127.0.0.1",
                mailbox.port,
                sender="a@example.test",
                to=["b@example.test"],
                username="alerts",
                password="s3cret",
            )
            async with treasurer.open_budget(tokens=10, thresholds=[50], alerts=[good]) as b:
                await b.record(tokens=5)
        finally:
            mailbox.close()
        assert mailbox.logins == ["alerts"]
        assert len(mailbox.messages) == 1
        assert good.statistics().sent == 1

    async def test_no_server_is_a_counted_failure(self) -> None:
        mail = treasurer.alerts.Email(
            "127.0.0.1", free_port(), sender="a@example.test", to=["b@example.test"], retries=0
        )
        async with treasurer.open_budget(tokens=10, thresholds=[50], alerts=[mail]) as budget:
            await budget.record(tokens=5)
        stats = mail.statistics()
        assert (stats.sent, stats.failed) == (0, 1)
        assert "ConnectionRefusedError" in (stats.last_error or "")


class TestConfiguration:
    def test_bad_channels_and_options(self) -> None:
        Webhook, Email = treasurer.alerts.Webhook, treasurer.alerts.Email
        for bad in ("ftp://x", 5):
            with pytest.raises(treasurer.InvalidOption, match="http"):
                Webhook(bad)  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption, match="format"):
            Webhook("http://127.0.0.1/", format="xml")  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption, match="secret"):
            Webhook("http://127.0.0.1/", secret=5)  # type: ignore[arg-type]
        for options in ({"retries": -1}, {"buffer": 0}, {"backoff": -1}, {"timeout": 0}):
            with pytest.raises(treasurer.InvalidOption):
                Webhook("http://127.0.0.1/", **options)
        for to in ([], "ops@example.test", [""]):
            with pytest.raises(treasurer.InvalidOption, match="to must"):
                Email("127.0.0.1", sender="a@example.test", to=to)  # type: ignore[arg-type]
        with pytest.raises(treasurer.InvalidOption, match="sender"):
            Email("127.0.0.1", sender="", to=["b@example.test"])
        with pytest.raises(treasurer.InvalidOption, match="host"):
            Email("", sender="a@example.test", to=["b@example.test"])
        with pytest.raises(treasurer.InvalidOption, match="alerts must be"):
            treasurer.sync.open_budget(alerts=["http://127.0.0.1/"])  # type: ignore[list-item]
        mail = Email("127.0.0.1", 2525, sender="a@example.test", to=["b@example.test"])
        assert repr(mail) == "Email('127.0.0.1', 2525, to=['b@example.test'])"
        hook = Webhook("http://127.0.0.1/")
        assert repr(hook) == "Webhook('http://127.0.0.1/')"
        with pytest.raises(treasurer.InvalidOption, match="twice"):
            treasurer.sync.open_budget(alerts=[hook, hook])

    async def test_a_channel_serves_one_open_budget(self, receiver: Receiver) -> None:
        hook = treasurer.alerts.Webhook(receiver.url)
        async with treasurer.open_budget(alerts=[hook]):
            with pytest.raises(treasurer.InvalidOption, match="one open budget"):
                async with treasurer.open_budget(alerts=[hook]):
                    pass  # pragma: no cover
        async with treasurer.open_budget(tokens=2, thresholds=[50], alerts=[hook]) as budget:
            await budget.record(tokens=1)
        assert hook.statistics().sent == 1
