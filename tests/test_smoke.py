"""The package opens a budget, and its public modules say what they export."""

from __future__ import annotations

import importlib
import inspect

import pytest

import treasurer

PUBLIC_MODULES = ["treasurer", "treasurer.sync", "treasurer.testing", "treasurer.compat"]


@pytest.mark.anyio
class TestSmoke:
    async def test_opens_serves_and_closes(self) -> None:
        """A budget opens, serves one call, and refuses calls once its block has ended."""
        async with treasurer.open_budget(tokens=10) as budget:
            assert not budget.closed
            assert await budget.consume(3)
            assert budget.remaining == 7
        assert budget.closed
        with pytest.raises(treasurer.BudgetClosed):
            await budget.consume(1)


class TestExports:
    def test_the_package_exports_exactly_its_public_names(self) -> None:
        """Every public name of ``treasurer`` is in ``__all__``, and nothing else is."""
        public = {
            name
            for name, value in vars(treasurer).items()
            if not name.startswith("_") and not inspect.ismodule(value)
        }
        assert set(treasurer.__all__) == public - {"annotations"}
        assert len(treasurer.__all__) == len(set(treasurer.__all__))

    @pytest.mark.parametrize("module_name", PUBLIC_MODULES)
    def test_every_public_module_has_a_tuple_all_of_names_it_defines(
        self, module_name: str
    ) -> None:
        """Each public module has a tuple ``__all__`` and every name in it resolves."""
        module = importlib.import_module(module_name)
        assert isinstance(module.__all__, tuple)
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == []

    def test_the_sync_module_exports_the_facade(self) -> None:
        """``treasurer.sync`` exports the blocking budget, reservation and subscription."""
        import treasurer.sync

        assert set(treasurer.sync.__all__) == {
            "SyncBudget",
            "SyncReservation",
            "SyncSubscription",
            "open_budget",
        }
