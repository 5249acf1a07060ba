"""How the Redis store calls its script: a call tried again after a failure, and
a write that waits for its writer's turn while others are in line (see the
line in :mod:`.redis_script`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio

from .._core.events import Event
from .._core.ledger import Ledger
from .._errors import InvalidOption, StoreUnavailable
from . import shared_events
from .redis_client import redis_errors, unanswered
from .redis_script import TURN_LEASE_MS

_BACKOFF: Final = (0.02, 1.0)  # first and longest pause between attempts of a call


class ScriptCalls:
    """The script calls of :class:`~.redis.RedisStore`."""

    if TYPE_CHECKING:

        @property
        def _where(self) -> str: ...

        _script: Any
        _redis: Any
        _keys: list[str]
        _channel: str
        _writer: str
        _turn: anyio.Event | None
        _turn_of: str
        _waited: bool

        @property
        def retry_for(self) -> float: ...

        @property
        def timeout(self) -> float: ...

    async def _call(self, args: list[str]) -> list[Any]:
        """One script call, tried again (with the same arguments, so the same batch
        id) after a failure until ``retry_for`` has passed."""
        if self._script is None:
            raise InvalidOption(
                "the RedisStore is not connected: its run() task holds the connection "
                "(open_budget starts it; a program driving the Store protocol starts it too)"
            )
        deadline = anyio.current_time() + self.retry_for
        pause = _BACKOFF[0]
        while True:
            try:
                async with redis_errors(self._where):
                    answer: list[Any] = await self._script(keys=self._keys, args=args)
                    return answer
            except StoreUnavailable as failure:
                if isinstance(failure.__cause__, TimeoutError):
                    unanswered(self._redis)
                if anyio.current_time() + pause > deadline:
                    raise
                await anyio.sleep(pause)
                pause = min(pause * 2, _BACKOFF[1])

    def _args(
        self,
        expected: str,
        batch: str,
        config: str,
        replace: bool,
        meta: str,
        events: Sequence[Event] = (),
        copy: Ledger | None = None,
        announce: bool = True,
    ) -> list[str]:
        """The arguments every call starts with (see :mod:`.redis_script`); a write's
        end with the next reservation id its ``copy`` would issue. A write is
        announced on the channel unless ``announce`` is false and it made no
        event other processes are told of."""
        said = ""
        if announce or shared_events.shared(events):
            said = shared_events.message(self._writer, events)
        flag = "1" if replace else "0"
        args = [expected, batch, config, flag, meta, self._channel, said, self._writer]
        return args if copy is None else [*args, str(copy.reservations.next_id)]

    async def _leave_line(self) -> None:
        """Take this writer out of the line it gave up waiting in (unanswered, its
        place lapses with the turn's lease)."""
        with anyio.move_on_after(self.timeout):
            async with redis_errors(self._where):
                await self._redis.lrem(self._keys[4], 0, self._writer)

    async def _send(self, args: list[str], deadline: float) -> list[Any]:
        """A write's script call. Answered ``wait`` (other writers are in line first;
        nothing was applied), a compare-and-set waits for this writer's turn,
        announced on the channel (or a turn's lease, should the announcement be
        lost), then asks for the turn: the answer is ``state``, the rows to
        compute the batch again on. A merge is sent again as it is (what it
        assumed is checked on the rows then stored) each time the turn passes;
        once it has waited a turn's lease, it joins the line and waits for its
        own turn, so writers taking turns cannot hold it off for longer."""
        joins_at = anyio.current_time() + TURN_LEASE_MS / 1000
        while True:
            merge = args[0] == "merge"
            in_line = not merge or args[3] == "1"
            self._turn, self._turn_of = anyio.Event(), self._writer if in_line else ""
            answer = await self._call(args)
            if answer[0] != "wait":
                return answer
            if anyio.current_time() > deadline:
                if in_line:  # (else the others would wait a lease for it at the front)
                    await self._leave_line()
                raise StoreUnavailable(
                    f"{self._where}: budget {self._keys[0]!r} had other writers in line "
                    "before this one for longer than the timeout"
                )
            with anyio.move_on_after(TURN_LEASE_MS / 1000):
                await self._turn.wait()
            if merge and anyio.current_time() >= joins_at:
                args = [*args[:3], "1", *args[4:]]  # (answered wait again: it joins)
            elif not merge:
                # Computed on rows others have since changed: not sent again, and
                # the next batch asks for a turn first (a convoy computes each once).
                self._waited = True
                args = self._args("turn", "", "", False, "")
