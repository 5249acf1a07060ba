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
