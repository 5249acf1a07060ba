"""The Redis store: one budget shared by every process, on every host, that opens
its name on the same Redis (or Valkey) server.

Each batch is computed by this process's ledger on its copy of the budget,
and sent as ONE script call (:mod:`.redis_script`). A batch that only holds,
spends and settles is sent as additions to the stored counters, with the room
each of its decisions had: the script checks that room on the stored counters
and adds, so processes writing one budget at once do not exclude each other
(:mod:`.redis_merge`). Any other batch is a compare-and-set of the rows it
changed against the version the copy is at. Either way, when what the batch
assumed no longer holds, the script answers the stored rows and the batch is
computed again on them (no lock, no WATCH): every check-and-deduct holds on
the state it is applied to. A batch's id, kept ten minutes by the script,
makes a batch sent again after a lost answer apply once.

Time is the server's (``TIME``, offset from this host's clock measured at open)
unless ``open_budget`` was given a clock. Writes (but merges of reservations
alone) are announced on a channel; requests waiting for budget in other
processes are served again when one comes.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import anyio
import anyio.abc

from .._core import state
from .._core.commands import Command, OpenChild, Reserve
from .._core.config import BudgetConfig
from .._core.ledger import Ledger
from .._core.outcomes import ScopeView
from .._core.reads import view
from .._core.scopes import ScopePath
from .._errors import InvalidOption, StoreUnavailable
from . import redis_rows, rows
from .base import BatchResult, Clock, Health, Work, system_clock
from .redis_calls import ScriptCalls
from .redis_client import check_url, client, redis_errors
from .redis_merge import plan, settles_unseen
from .redis_outage import Outage, Unstored, begin, merged, renumbered, warn
from .redis_read import READ, StoredBudgets, pairs
from .redis_script import SCRIPT
from .redis_task import Reckoning, StoreTask

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX: Final = "treasurer"
BATCH_IDS_KEPT: Final = 600  # seconds; the script keeps applied batches' ids this long
TURN_AFTER: Final = 2  # stale answers in a row before a batch waits for a turn
MAX_RETRY_FOR: Final = 300  # seconds; the longest retry_for (below BATCH_IDS_KEPT)


def budget_keys(prefix: str, name: str) -> list[str]:
    """The keys of budget ``name``: one hash tag, so one Redis Cluster slot."""
    tag = f"{prefix}:{{{name}}}"
    kinds = ("budget", "scopes", "held", "batches", "line", "counts", "deadlines")
    return [f"{tag}:{kind}" for kind in kinds]


class RedisStore(StoredBudgets, StoreTask, ScriptCalls):
    """Keeps budgets in the Redis or Valkey server at ``url`` (``redis://``,
    ``rediss://`` for TLS, ``unix://``; a password in the URL). ``prefix``
    starts every key; ``timeout`` bounds connecting and each call to the server;
    a call that fails is tried again, with backoff, for ``retry_for`` seconds
    before the batch fails with :class:`StoreUnavailable` (fail closed), or,
    with ``fail_open=True``, is admitted on this process's copy of the budget
    and not stored (see :mod:`.redis_outage`). With ``cluster=True``, ``url`` is
    any node of a Redis Cluster (a budget's keys share one hash slot)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        retry_for: float = 10.0,
        fail_open: bool = False,
        cluster: bool = False,
        redis: Any = None,
    ) -> None:
        if redis is None:
            check_url(url)
        if not isinstance(prefix, str) or not prefix:
            raise InvalidOption(f"prefix must be a non-empty str, not {prefix!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidOption(f"timeout must be a positive number of seconds, not {timeout!r}")
        if (
            isinstance(retry_for, bool)
            or not isinstance(retry_for, int | float)
            or not 0 <= retry_for <= MAX_RETRY_FOR
        ):
            raise InvalidOption(
                f"retry_for must be 0 to {MAX_RETRY_FOR} seconds (a batch's id is kept "
                f"{BATCH_IDS_KEPT} s, so a resend is known), not {retry_for!r}"
            )
        for flag, value in (("fail_open", fail_open), ("cluster", cluster)):
            if not isinstance(value, bool):
                raise InvalidOption(f"{flag} must be True or False, not {value!r}")
        self.url: Final = url
        self.fail_open: Final = fail_open
        self.cluster: Final = cluster
        self.prefix: Final = prefix
        self.timeout: Final = float(timeout)
        self.retry_for: Final = float(retry_for)
        self._given = redis  # a client the application entered and will close
        self._redis: Any = None
        self._script: Any = None
        self._keys: list[str] = []
        self._channel = ""
        self._writer = uuid.uuid4().hex  # names this store's writes on the channel
        self._config: BudgetConfig | None = None
        self._clock: Clock | None = None
        self._reckoning = Reckoning(datetime.now(UTC), time.monotonic())  # until open
        self._reckon_due = math.inf
        self._ledger: Ledger | None = None
        self._version = ""  # the stored version the cached ledger is at
        self._known = redis_rows.Known()  # the stored shapes and counts the copy is built on
        self._config_text = ""  # the configuration as stored (a merge checks it still is)
        self._outage: Outage | None = None  # failing open: this process's copy
        self._unstored = Unstored()
        self._turn: anyio.Event | None = None  # set when the turn awaited is announced
        self._turn_of = ""  # the writer whose turn is awaited ("": any turn passing)
        self._waited = False  # the last batch waited in line for its turn

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """A store for the server at ``url`` (the keywords of the constructor)."""
        return cls(url, **options)

    @classmethod
    def from_client(cls, redis: Any, **options: Any) -> RedisStore:
        """A store that talks through ``redis``, a coredis client the application
        has entered (``async with``) and closes itself. It must decode replies
        (``decode_responses=True``), as the store's own clients do; a
        ``coredis.RedisCluster`` must retry ``ConnectionError`` (coredis's
        default policy does), or it never learns of a failover."""
        if getattr(redis, "decode_responses", True) is not True:
            raise InvalidOption("the Redis store needs a client made with decode_responses=True")
        return cls(redis=redis, **options)

    @property
    def _where(self) -> str:
        return f"Redis store at {self.url}" if self._given is None else "Redis store"

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        """An entered client: the application's, or one of ours for the block."""
        if self._given is not None:
            yield self._given
        else:
            async with client(self.url, self.timeout, self.cluster) as redis:
                yield redis

    async def _talk_through(self, redis: Any) -> None:
        self._redis = redis
        self._script = redis.register_script(SCRIPT)

    def _take_rows(self, answer: list[Any], config: BudgetConfig, now: datetime) -> Ledger:
        """The ledger in a ``state`` or ``stale`` answer, which becomes the cached one."""
        if self._ledger is not None and str(answer[1]) == self._version:
            return self._ledger  # nobody else wrote: the copy is the stored state
        if answer[4] is not None and json.loads(answer[4]) != state.dump_config(config):
            raise StoreUnavailable(
                f"budget {config.name!r} was reconfigured by another process; open it again"
            )
        ledger, self._known = self._ledger_in(answer, config, now)
        self._ledger, self._version = ledger, str(answer[1])
        return ledger

    def _ledger_in(
        self, answer: list[Any], config: BudgetConfig, now: datetime
    ) -> tuple[Ledger, redis_rows.Known]:
        """The ledger whose rows a ``state`` or ``stale`` answer holds, under ``config``,
        and what the rows hold."""
        if answer[1] is None or answer[5] is None:
            raise StoreUnavailable(f"budget {config.name!r} was removed from the {self._where}")
        known = redis_rows.Known.of(answer[6], answer[8], answer[5])
        return known.ledger(config, answer[5], pairs(answer[7]), now, int(answer[9])), known

    # -- the Store protocol -----------------------------------------------------------

    async def open(
        self, config: BudgetConfig, clock: Clock, *, reconfigure: bool = False
    ) -> ScopeView:
        if self._config is not None:
            raise InvalidOption("a RedisStore serves one open budget at a time")
        self._keys = budget_keys(self.prefix, config.name)
        self._channel = self._keys[0] + ":changes"
        try:
            async with redis_errors(self._where), self._client() as redis:
                # A client lives in the task that entered it: open() uses its own,
                # run() the one the budget's batches go through.
                await self._talk_through(redis)
                await self._reckon()
                self._clock = self.server_clock if clock is system_clock else clock
                ledger = await self._open_budget(config, self._clock, reconfigure)
        finally:
            self._redis = self._script = None
        self._config = config
        return view(ledger.root, self._clock())

    async def _open_budget(self, config: BudgetConfig, clock: Clock, reconfigure: bool) -> Ledger:
        given = state.dump_config(config)
        config_text = json.dumps(given, sort_keys=True)
        while True:
            answer = await self._call(READ)
            version, stored_text = answer[1], answer[4]
            if version is None:  # the first open creates the budget
                ledger, expected = Ledger(config, clock()), "none"
            else:
                stored = json.loads(stored_text)
                if stored == given and answer[9] != "0":
                    self._config_text = stored_text
                    return self._take_rows(answer, config, clock())
                if stored != given and not reconfigure:
                    raise state.other_configuration(config.name, self._where, stored, given)
                # Reconfigured, or kept by an earlier version (no reservation id stored
                # apart from the meta): every row is written again, in today's layout.
                old, _ = self._ledger_in(answer, config, clock())
                ledger = state.reconfigured(
                    config, stored["tenants"], state.dump_ledger(old), clock()
                )
                expected = str(version)
            rows_written = redis_rows.write(
                redis_rows.Known(), ledger, list(ledger.tree.scopes), set()
            )
            meta = rows.meta(ledger)
            args = self._args(expected, "", config_text, True, meta, (), ledger)
            deadline = anyio.current_time() + max(self.retry_for, self.timeout)
            written = await self._send(args + rows_written.args, deadline)
            if written[0] == "ok":
                self._config_text = config_text
                self._ledger, self._version = ledger, str(written[1])
                self._known = redis_rows.Known(meta=meta)  # every row was written
                rows_written.done(self._known, meta)
                return ledger
            # another process created or changed it meanwhile: read it again

    def _serving(self) -> tuple[BudgetConfig, Clock]:
        if self._config is None or self._clock is None:
            raise InvalidOption("the store serves no budget: open one first")
        return self._config, self._clock

    async def apply(
        self,
        batch: Sequence[Command],
        waiting: Sequence[Reserve | OpenChild] = (),
        *,
        new_from: int = 0,
        verbose: bool = True,
    ) -> BatchResult:
        config, clock = self._serving()
        if self._outage is not None and not await self._back(config, clock):
            return self._outage.serve(
                self._unstored, clock, Work(batch, waiting, new_from, verbose)
            )
        await self._reckon_again_if_due()
        sent, settled = self._unstored.translate(batch) if self._unstored.held else (batch, {})
        result = await self._apply(config, clock, Work(sent, waiting, new_from, verbose))
        return merged(batch, settled, result)

    async def _back(self, config: BudgetConfig, clock: Clock) -> bool:
        """Failing open: whether the server answers again (asked once)."""
        try:
            async with redis_errors(self._where):
                answer = await self._script(keys=self._keys, args=READ)
        except StoreUnavailable:
            return False
        self._take_rows(answer, config, clock())
        warn(config.name, "budget store back; what was spent while failing open was not stored", "")
        self._outage = None
        return True

    async def _apply(self, config: BudgetConfig, clock: Clock, work: Work) -> BatchResult:
        batch_id = uuid.uuid4().hex
        deadline = anyio.current_time() + max(self.retry_for, self.timeout)
        losses = 0
        merging = True  # until a merge is refused on rows nobody changed since
        if self._waited:  # the last batch waited in line: this one asks for a turn first
            self._waited = False
            await self._take_turn(config, clock, deadline)
        while True:
            ledger = self._ledger
            if ledger is None or settles_unseen(work.commands, ledger):
                answer = await self._call(READ)
                ledger = self._take_rows(answer, config, clock())
            self._ledger = None  # it holds what is not stored until the answer says so
            counters = state.dump_meta(ledger)
            held_before = {rid: held.token for rid, held in ledger.reservations.open.items()}
            first = ledger.reservations.next_id  # the first id this batch issues
            now = max(clock(), ledger.now)  # hosts' clocks may differ by a round trip
            ledger.tree.room = {}
            result = work.run(ledger, now)
            room, ledger.tree.room = ledger.tree.room, None
            merge = plan(self._known, ledger, work, result, room, held_before, first)
            if merge is not None and merging:
                mode, checked, meta, written = "merge", self._config_text, self._version, merge.args
            else:
                merge = None
                write = redis_rows.write(self._known, ledger, result.views, held_before.keys())
                unchanged = write.empty and state.dump_meta(ledger) == counters
                mode, checked, written = self._version, "", write.args
                meta = "" if unchanged else rows.meta(ledger)
            # Reserving alone changes no waiter's answer elsewhere: a spend may (it
            # can leave one that never fits, which is then refused at once).
            told = merge is None or not all(isinstance(c, Reserve) for c in work.commands)
            args = self._args(mode, batch_id, checked, False, meta, result.events, ledger, told)
            args += written
            try:
                answer = await self._send(args, deadline)
            except StoreUnavailable as failure:
                if not self.fail_open:
                    raise
                warn(config.name, "budget store unavailable; failing open", str(failure))
                self._outage, result = begin(ledger, result, first, now)
                self._unstored.note(ledger, result)
                return result
            tag = answer[0]
            if merge is not None and tag in ("ok", "merged"):
                result = merge.done(self._known, ledger, answer, result)
                # "merged": others wrote too, so the copy is at no stored version.
                self._ledger, self._version = ledger, str(answer[1]) if tag == "ok" else tag
                return result
            if tag in ("ok", "same"):
                if merge is None and tag == "ok":
                    write.done(self._known, meta)
                self._ledger, self._version = ledger, str(answer[1])
                return result
            if tag == "done":  # applied by an attempt whose answer was lost
                if merge is not None:  # (its ids moved as the script moved them)
                    result = renumbered(ledger, result, first, int(answer[4]))
                # What the rows hold is not known: a version no write has makes the
                # next call answer them (the copy serves if failing open meanwhile).
                self._ledger, self._version = ledger, "unknown"
                self._known = redis_rows.Known()
                return result
            if anyio.current_time() > deadline:
                raise StoreUnavailable(
                    f"{self._where}: budget {config.name!r} changed under every attempt "
                    f"for {max(self.retry_for, self.timeout):g} s"
                )
            if merge is not None and str(answer[1]) == self._version:
                merging = False  # (what it assumed did not hold even on an exact copy)
            self._take_rows(answer, config, clock())  # compute it again on these rows
            losses += tag == "stale"  # (not "state": the turn is this writer's)
            if losses >= TURN_AFTER:  # outrun again and again: take turns (redis_script)
                losses = 0
                await self._take_turn(config, clock, deadline)

    async def _take_turn(self, config: BudgetConfig, clock: Clock, deadline: float) -> None:
        """Waits for this writer's turn in the line; the rows it is answered with
        become the copy, and no other writer writes until this one has. (Failing
        open, a turn not had leaves the copy: the batch's own call decides.)"""
        try:
            answer = await self._send(self._args("turn", "", "", False, ""), deadline)
        except StoreUnavailable:
            if not self.fail_open:
                raise
            return
        self._take_rows(answer, config, clock())

    async def refresh(self, scope: ScopePath) -> ScopeView | None:
        config, clock = self._serving()
        answer = await self._call(READ)
        now = clock()
        ledger, _ = self._ledger_in(answer, config, now)
        ledger.advance(max(now, ledger.now))  # as the next batch will see it
        found = ledger.tree.scopes.get(scope)
        return None if found is None else rows.view_now(ledger, found)

    async def health(self) -> Health:
        """Healthy when the server answers ``PING`` within ``timeout``."""
        start = time.perf_counter()
        if self._redis is None:
            return Health(False, "redis", timedelta(0), "not open")
        try:
            with anyio.fail_after(self.timeout):
                async with redis_errors(self._where):
                    await self._redis.ping()
        except (StoreUnavailable, TimeoutError) as exc:
            took = timedelta(seconds=time.perf_counter() - start)
            return Health(False, "redis", took, str(exc) or "no answer within the timeout")
        return Health(True, "redis", timedelta(seconds=time.perf_counter() - start))

    async def close(self) -> None:
        self._config = self._clock = self._ledger = None
        self._version = ""

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"
