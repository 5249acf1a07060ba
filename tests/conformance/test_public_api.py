"""The conformance machine through the public API (``treasurer.sync.open_budget`` with
a manual clock), against every store, with the budget on asyncio and on trio."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from .drivers import ApiDriver, Backend
from .machine import ConformanceMachine
from .stores import STORES, StoreFactory, examples

SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


class TestPublicApi:
    @pytest.mark.parametrize("factory", STORES)
    def test_every_store_conforms(self, factory: StoreFactory, anyio_backend: Backend) -> None:
        """Every call answers (or raises) as the model of the specification says, every
        handle shows the model's figures, and nothing is admitted over a limit."""
        run_state_machine_as_test(
            lambda: ConformanceMachine(ApiDriver(factory, anyio_backend)),
            settings=settings(SETTINGS, max_examples=examples(factory, SETTINGS.max_examples)),
        )
