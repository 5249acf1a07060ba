"""What benchmark runs share: the facts they record about the machine and the
code, and worker processes started together and let go at one instant."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def command(*args: str) -> str:
    """What ``args`` prints, or ``""`` if it cannot run."""
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def cpu_model() -> str:
    found = (
        line.split(":", 1)[1].strip()
        for line in command("lscpu").splitlines()
        if line.startswith("Model name")
    )
    return next(found, platform.processor())


def versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Each package's installed version (``None``: not installed)."""
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def start_workers(script: Path, args: list[str], count: int) -> list[subprocess.Popen[str]]:
    """``count`` processes of ``script --worker *args``, each of which has printed
    ``ready`` (a worker then waits for a line on its stdin: :func:`release`)."""
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), "--worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=script.parent,
        )
        for _ in range(count)
    ]
    try:
        for process in workers:
            _wait_ready(process)
    except BaseException:
        stop(workers)
        raise
    return workers


def _wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"a worker did not start: {line!r}")


def release(workers: list[subprocess.Popen[str]], line: str) -> None:
    """Send every worker ``line``: its signal to start."""
    for process in workers:
        assert process.stdin is not None
        process.stdin.write(f"{line}\n")
        process.stdin.flush()


def reports(workers: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    """Wait for every worker; the JSON object each printed last."""
    found = []
    for process in workers:
        out, _ = process.communicate(timeout=timeout)
        if process.returncode != 0:
            raise RuntimeError(f"a worker failed with status {process.returncode}")
        found.append(json.loads(out.strip().splitlines()[-1]))
    return found


def stop(workers: list[subprocess.Popen[str]]) -> None:
    """Kill the workers still running."""
    for process in workers:
        if process.poll() is None:
            process.kill()
            process.wait()
