"""Tracked clients: an SDK client behind a proxy that reserves, calls and commits.

The proxy forwards every attribute to the client, except the ``create``
methods of the tracked endpoints, which run through :func:`call_async` or
:func:`call_sync`. Nothing in the SDK is patched: the original client is
untouched and still usable on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, ExitStack
from typing import Any

import anyio

from ._calls import Call, Endpoint, Settings
from ._errors import UntrackedCall

# Helpers of tracked endpoints that would spend untracked.
UNTRACKED = frozenset({"stream", "parse", "with_raw_response", "with_streaming_response"})


def settle(reservation: Any, commit: Mapping[str, Any] | None) -> None:
    """Commit ``commit`` (the reservation is released when its block ends otherwise)."""
    if commit is not None:
        reservation.commit(**commit)


async def close_shielded(stack: AsyncExitStack) -> None:
    """End the reservation's block even in a cancelled scope."""
    with anyio.CancelScope(shield=True):
        await stack.aclose()


async def call_async(
    budget: Any,
    endpoint: Endpoint,
    settings: Settings,
    create: Callable[..., Awaitable[Any]],
    kwargs: dict[str, Any],
) -> Any:
    """Estimate, reserve (raising before anything is sent), call, commit; release on error.

    The estimate runs in a worker thread: the first one of a process builds a
    tokenizer (about half a second), which must not stall the event loop.
    """
    call = await anyio.to_thread.run_sync(Call, endpoint, kwargs, settings)
    stack = AsyncExitStack()
    reservation = await stack.enter_async_context(budget.reserve(**call.reserve))
    try:
        result = await create(**call.kwargs)
    except BaseException as error:
        try:
            settle(reservation, call.after_error(error))
        finally:
            await close_shielded(stack)
        raise
    if call.stream:
        return TrackedAsyncStream(result, call, reservation, stack)
    try:
        settle(reservation, call.from_response(result))
    finally:
        await close_shielded(stack)
    return result


def call_sync(
    budget: Any,
    endpoint: Endpoint,
    settings: Settings,
    create: Callable[..., Any],
    kwargs: dict[str, Any],
) -> Any:
    """:func:`call_async` for a synchronous client and a ``treasurer.sync`` budget."""
    call = Call(endpoint, kwargs, settings)
    stack = ExitStack()
    reservation = stack.enter_context(budget.reserve(**call.reserve))
    try:
        result = create(**call.kwargs)
    except BaseException as error:
        with stack:
            settle(reservation, call.after_error(error))
        raise
    if call.stream:
        return TrackedStream(result, call, reservation, stack)
    with stack:
        settle(reservation, call.from_response(result))
    return result


class _StreamBase:
    """What both stream wrappers share: the SDK stream, the call and its reservation."""

    def __init__(self, stream: Any, call: Call, reservation: Any) -> None:
        self._stream = stream
        self._call = call
        self._reservation = reservation
        self._done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _settle_once(self) -> bool:
        """Commit what the stream consumed, the first time only; whether it was the first."""
        if self._done:
            return False
        self._done = True
        settle(self._reservation, self._call.consumed())
        return True

    def __repr__(self) -> str:
        state = "settled" if self._done else "open"
        return f"<{type(self).__name__} {state} of {self._stream!r}>"


class TrackedAsyncStream(_StreamBase):
    """An SDK stream whose usage is committed when it ends, however it ends.

    Iterate it as the SDK's stream; leave it by reaching its end, by
    ``async with``, or by ``aclose()``: then it commits the final usage, or,
    if it was left early, cancelled or broken, the input and the output
    received so far.
    """

    def __init__(self, stream: Any, call: Call, reservation: Any, stack: AsyncExitStack) -> None:
        super().__init__(stream, call, reservation)
        self._stack = stack

    def __aiter__(self) -> TrackedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        while True:
            try:
                event = await self._stream.__anext__()
            except BaseException:
                await self.aclose()
                raise
            if self._call.observe(event):
                return event

    async def aclose(self) -> None:
        """Close the stream and commit what it consumed."""
        if not self._settle_once():
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._stream.close()
            finally:
                await self._stack.aclose()

    close = aclose

    async def __aenter__(self) -> TrackedAsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class TrackedStream(_StreamBase):
    """:class:`TrackedAsyncStream` for synchronous clients."""

    def __init__(self, stream: Any, call: Call, reservation: Any, stack: ExitStack) -> None:
        super().__init__(stream, call, reservation)
        self._stack = stack

    def __iter__(self) -> TrackedStream:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        while True:
            try:
                event = next(self._stream)
            except BaseException:
                self.close()
                raise
            if self._call.observe(event):
                return event

    def close(self) -> None:
        """Close the stream and commit what it consumed."""
        if not self._settle_once():
            return
        try:
            self._stream.close()
        finally:
            self._stack.close()

    def __enter__(self) -> TrackedStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Proxy:
    """Forwards attribute reads to ``target``, except the names in ``overrides``."""

    def __init__(self, target: Any, overrides: Mapping[str, Any]) -> None:
        self._target = target
        self._overrides = dict(overrides)

    def __getattr__(self, name: str) -> Any:
        found = self._overrides.get(name)
        if found is not None:
            return found
        return getattr(self._target, name)

    def __repr__(self) -> str:
        return f"<tracked {self._target!r}>"


class _TrackedEndpoint(_Proxy):
    """An SDK resource whose ``create`` is tracked; its untracked spending helpers refuse."""

    def __getattr__(self, name: str) -> Any:
        if name in UNTRACKED:
            raise UntrackedCall(name)
        return super().__getattr__(name)


def tracked_endpoint(
    resource: Any, endpoint: Endpoint, budget: Any, settings: Settings, is_async: bool
) -> _TrackedEndpoint:
    create = resource.create
    if is_async:

        async def create_async(**kwargs: Any) -> Any:
            return await call_async(budget, endpoint, settings, create, kwargs)

        return _TrackedEndpoint(resource, {"create": create_async})

    def create_sync(**kwargs: Any) -> Any:
        return call_sync(budget, endpoint, settings, create, kwargs)

    return _TrackedEndpoint(resource, {"create": create_sync})


class TrackedClient(_Proxy):
    """An OpenAI or Anthropic client whose calls are paid from a budget.

    It behaves like the client it wraps (``untracked``): tracked calls
    (OpenAI ``chat.completions.create`` and ``responses.create``, Anthropic
    ``messages.create``) take one more keyword, ``max_cost=`` (USD); every
    other attribute is the client's own. Closing it closes the client.
    """

    def __init__(self, client: Any, overrides: Mapping[str, Any], budget: Any) -> None:
        super().__init__(client, overrides)
        self._budget = budget

    @property
    def untracked(self) -> Any:
        """The client itself, for calls that should not touch the budget."""
        return self._target

    @property
    def budget(self) -> Any:
        return self._budget

    def __enter__(self) -> TrackedClient:
        self._target.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._target.__exit__(*exc_info)

    async def __aenter__(self) -> TrackedClient:
        await self._target.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._target.__aexit__(*exc_info)
