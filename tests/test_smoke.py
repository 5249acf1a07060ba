import anyio
import pytest

import treasurer

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
    public = {name for name in vars(treasurer) if not name.startswith("_")}
    assert set(treasurer.__all__) == public - {"annotations"}
    for name in treasurer.__all__:
        assert getattr(treasurer, name) is not None
