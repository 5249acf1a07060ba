"""Redis (or Valkey) for budgets on many hosts: ``pip install 'treasurer[redis]'``
(coredis, on asyncio and trio). What exists: :class:`RedisUsageLog`, the usage
log in a Redis stream, and :func:`read` for its records. The Redis store
(budgets shared by many processes) is not built yet."""

from ._ops.redis_log import RedisUsageLog, read

__all__ = ["RedisUsageLog", "read"]
