"""Sessions: tests, lint, typecheck, demo, bench, and for the optional mypyc build
tests_compiled and wheel_compiled.

Everything a session needs is installed into its own virtualenv from PyPI, so
`python -m pip install nox && python -m nox -s tests` works on a fresh machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint", "typecheck"]

PYPROJECT = nox.project.load_toml("pyproject.toml")

# The floor only goes up: raise it when coverage rises, never lower it.
COVERAGE_FLOOR = 99.0


def install_group(session: nox.Session, group: str) -> None:
    session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, every async test on asyncio and trio, with coverage."""
    install_group(session, "test")
    session.install("-e", ".")
    stale = sorted(str(path) for path in Path("src").rglob("*.so"))
    if stale:  # left by a compiled build in this checkout; they would be imported
        session.error(f"compiled modules in src/, remove them first: {', '.join(stale)}")
    session.run("pytest", "--cov=treasurer", "--cov-report=", *session.posargs)
    # The floor is enforced by coverage itself (exit status 2 below it), at two
    # decimals, so 97.98 % cannot round up to a 98 % floor.
    session.run("coverage", "report", f"--fail-under={COVERAGE_FLOOR}")


# The modules the optional mypyc build compiles (pyproject.toml lists them too).
COMPILED_MODULES = ("_actor", "_amounts", "_ledger", "_slots")


MYPYC_ENV = {"HATCH_BUILD_HOOK_ENABLE_MYPYC": "1"}


def compiled_source(session: nox.Session) -> str:
    """A fresh copy of what the wheel is built from, for the optional mypyc build.

    A copy because the build leaves its extension modules beside the sources
    it compiled, where an editable install would then import them.
    """
    copy = Path(session.create_tmp()) / "mypyc"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree("src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(name, copy)
    return str(copy)


def install_compiled(session: nox.Session) -> None:
    """Build the optional mypyc wheel and install it over the session's treasurer
    (pip always reinstalls a local directory, whatever build was there)."""
    session.install("--no-deps", compiled_source(session), env=MYPYC_ENV)


@nox.session
def wheel_compiled(session: nox.Session) -> None:
    """Build the optional mypyc wheel into dist/ (needs a C compiler)."""
    wheel = ["python", "-m", "pip", "wheel", "--no-deps", "--wheel-dir", "dist"]
    session.run(*wheel, compiled_source(session), env=MYPYC_ENV)


@nox.session
def tests_compiled(session: nox.Session) -> None:
    """The whole test suite against the optional build compiled with mypyc.

    Needs a C compiler. The suite imports the installed wheel, not src/, and
    the session first checks that each compiled module really is compiled.
    """
    install_group(session, "test")
    session.install(".")
    install_compiled(session)
    modules = ", ".join(f"treasurer.{name}" for name in COMPILED_MODULES)
    session.run(
        "python",
        "-c",
        f"import sys, {modules}\n"
        f"interpreted = [m.__name__ for m in ({modules}) if m.__file__.endswith('.py')]\n"
        "sys.exit(f'not compiled: {interpreted}' if interpreted else 0)",
    )
    session.run("pytest", *session.posargs)


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
    """The actor against lock-based designs on asyncio, uvloop and trio (docs/performance.md).

    `nox -s bench` is the full run (under 15 minutes on 2 cores); it writes
    docs/bench/. `nox -s bench -- --quick` is a smoke run (under 2 minutes)
    that writes build/bench/ instead. See `-- --help` for the other options.
    """
    install_group(session, "bench")
    session.install(".")
    if "--compiled" in session.posargs:  # the optional mypyc build (needs a C compiler)
        install_compiled(session)
    session.run("python", "benchmarks/run.py", *session.posargs)
