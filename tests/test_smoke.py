import inspect

import anyio
import pytest

import treasurer
import treasurer.sync

pytestmark = pytest.mark.anyio


async def test_opens_and_closes() -> None:
    """A budget opens, serves one call and closes."""
    async with treasurer.open_budget(tokens=10) as budget:
        assert await budget.consume(3)
        assert budget.remaining == 7
    assert budget.closed
    await anyio.lowlevel.checkpoint()


def test_public_api_is_exported() -> None:
    """Every public name is in __all__ and every name in __all__ exists."""
    public = {
        name
        for name, value in vars(treasurer).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(treasurer.__all__) == public - {"annotations"}
    assert treasurer.sync.__all__ == ("SyncBudget", "SyncReservation", "open_budget")
    for name in treasurer.__all__:
        assert getattr(treasurer, name) is not None
