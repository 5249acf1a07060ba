"""Regressions from issue 15 that belong to no single area: calls from another thread's
event loop, and names a user confused."""

from __future__ import annotations

import anyio
import anyio.to_thread
import pytest

import treasurer

pytestmark = pytest.mark.anyio


class TestAnotherThreadsEventLoop:
    @pytest.mark.parametrize("other_loop", ["asyncio", "trio"])
    async def test_the_async_api_from_another_loop_raises_at_once(self, other_loop: str) -> None:
        """An async call made on another thread's event loop raises LoopThreadError at once
        (instead of working by accident on asyncio or failing oddly on trio); the budget
        keeps serving its own loop."""
        async with treasurer.open_budget(tokens=100) as budget:
            errors: list[BaseException] = []

            async def from_the_other_loop() -> None:
                for attempt in (
                    lambda: budget.record(tokens=1),
                    lambda: budget.consume(1),
                    lambda: budget.reserve(tokens=1).__aenter__(),
                    lambda: budget.check(tokens=1),
                ):
                    try:
                        await attempt()
                    except treasurer.LoopThreadError as exc:
                        errors.append(exc)

            def other_thread() -> None:
                anyio.run(from_the_other_loop, backend=other_loop)

            with anyio.fail_after(10):
                await anyio.to_thread.run_sync(other_thread)
            assert len(errors) == 4
            assert all(isinstance(error, RuntimeError) for error in errors)
            assert budget.snapshot().tokens_used == 0
            await budget.record(tokens=1)
            assert budget.snapshot().tokens_used == 1
            assert budget.statistics().messages_served == 1


class TestNames:
    def test_the_expiry_event_and_the_exception_cannot_be_confused(self) -> None:
        """The event a budget emits on expiry is ReservationExpiredEvent (by its class name
        too); the exception a late commit raises is ReservationExpired."""
        event, error = treasurer.ReservationExpiredEvent, treasurer.ReservationExpired
        assert event.__name__ == "ReservationExpiredEvent"
        assert error.__name__ == "ReservationExpired"
        assert issubclass(event, treasurer.Event)
        assert not issubclass(event, BaseException)
        assert issubclass(error, treasurer.TreasurerError)
