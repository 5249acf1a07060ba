"""Redis (or Valkey) for budgets on many hosts: ``pip install 'treasurer[redis]'``
(coredis, on asyncio and trio). :class:`RedisStore` keeps a budget that every
process opening its name on the same server shares; :class:`RedisUsageLog`
keeps usage records in a stream, and :func:`read` reads them back."""

from ._ops.redis_log import RedisUsageLog, read
from ._stores.redis import RedisStore, budget_keys

__all__ = ["RedisStore", "RedisUsageLog", "budget_keys", "read"]
