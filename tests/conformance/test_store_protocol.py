"""The conformance machine through the Store protocol, against every store, on asyncio
and trio: each operation is a batch, ``await store.apply([command], waiting)``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from .drivers import Backend, ProtocolDriver
from .machine import ConformanceMachine
from .stores import PROTOCOL_ONLY, STORES, StoreFactory, examples

SETTINGS = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    report_multiple_bugs=False,
    # Explaining a failure traces coverage and would take minutes; a shrunk one is enough.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


class TestStoreProtocol:
    @pytest.mark.parametrize("factory", STORES + PROTOCOL_ONLY)
    def test_every_store_conforms(self, factory: StoreFactory, anyio_backend: Backend) -> None:
        """Every batch answers as the model of the specification does, every published
        view shows the model's figures, and nothing is admitted over a limit."""
        run_state_machine_as_test(
            lambda: ConformanceMachine(ProtocolDriver(factory, anyio_backend)),
            settings=settings(SETTINGS, max_examples=examples(factory, SETTINGS.max_examples)),
        )
