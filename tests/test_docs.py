"""Every ```python block in docs/*.md and README.md runs, on asyncio and on trio.

Each block is a complete program that calls ``anyio.run(main)`` and asserts its
own figures, so a wrong figure in the documentation fails here. The block runs
once as written (asyncio, anyio's default) and once with ``anyio.run``
patched to use trio. Fragments not meant to run are fenced as ``pycon`` or
``text`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from llm_server import FakeLLM

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    source: str

    @property
    def id(self) -> str:
        return f"{self.path.name}:L{self.line}"


def python_blocks(path: Path) -> Iterator[Block]:
    """The ```python blocks of a Markdown file, skipping every other fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["fence"]
        start = index + 1
        end = start
        while end < len(lines):
            closing = _FENCE.match(lines[end])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"]
            ):
                break
            end += 1
        if opening["info"].lower() in ("python", "py", "python3"):
            indent = len(opening["indent"])
            body = [line[indent:] if line[:indent].isspace() else line for line in lines[start:end]]
            yield Block(path, index + 1, "\n".join(body) + "\n")
        index = end + 1


def _cases() -> list[Any]:
    cases = []
    for path in DOCUMENTS:
        if not path.exists():
            continue
        for block in python_blocks(path):
            cases.append(pytest.param(block, "asyncio", id=f"{block.id}-asyncio"))
            # A block with no event loop of its own (say, logging setup) runs once.
            if "anyio.run(" in block.source:
                cases.append(pytest.param(block, "trio", id=f"{block.id}-trio"))
    return cases


CASES = _cases()


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """A block may configure structlog, as an application would; undo it afterwards."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_docs_have_examples() -> None:
    assert CASES, "no ```python blocks found in docs/*.md or README.md"


@pytest.mark.parametrize(("block", "backend"), CASES)
def test_block_runs(
    block: Block,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    fake_llm: FakeLLM,
    redis_url: str,
) -> None:
    # LLM examples build their clients from the SDKs' standard environment
    # variables; here they point at a fake API on 127.0.0.1, and Redis examples
    # at the tests' server.
    for name, value in fake_llm.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TREASURER_REDIS_URL", redis_url)
    runs: list[str] = []
    if backend == "trio":
        original: Callable[..., Any] = anyio.run

        def run_on_trio(
            func: Callable[..., Any],
            *args: object,
            backend: str = "asyncio",
            backend_options: dict[str, Any] | None = None,
        ) -> Any:
            runs.append("trio")
            return original(func, *args, backend="trio")

        monkeypatch.setattr(anyio, "run", run_on_trio)

    # Pad with blank lines so tracebacks point at the line in the Markdown file.
    source = "\n" * block.line + block.source
    code = compile(source, str(block.path), "exec")
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(block.path)}
    exec(code, namespace)

    if backend == "trio":
        assert runs, "the block never called anyio.run, so it did not run on trio"
