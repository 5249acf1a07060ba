"""Scope paths: which accounting scope of a budget a command acts in.

A budget is a tree of scopes. The root, ``()``, is the budget's shared scope;
a tenant is ``("tenant:alice",)``; a child budget carved out of a scope adds
``"child:<number>"`` to its parent's path. Paths are plain tuples of strings,
so commands that carry them serialize as they are.
"""

from __future__ import annotations

from typing import Final

ScopePath = tuple[str, ...]
ROOT: Final[ScopePath] = ()
_TENANT: Final = "tenant:"
_CHILD: Final = "child:"


def tenant_path(name: str) -> ScopePath:
    return (_TENANT + name,)


def child_path(parent: ScopePath, number: int) -> ScopePath:
    return (*parent, f"{_CHILD}{number}")


def tenant_of(path: ScopePath) -> str | None:
    """The tenant a scope belongs to (``None``: the budget's own)."""
    if path and path[0].startswith(_TENANT):
        return path[0][len(_TENANT) :]
    return None
