"""Concurrent connections per client IP, counted in memory or in Redis.

Redis is used when `[redis] url` is set, so several gateway processes behind one address
share the count. A key carries an expiry refreshed on every connect, so counts left by a
crashed process fade out instead of locking a client out for ever.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class ConnectionLimiter(Protocol):
    async def acquire(self, ip: str) -> bool: ...
    async def release(self, ip: str) -> None: ...
    async def close(self) -> None: ...


class MemoryLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}

    async def acquire(self, ip: str) -> bool:
        n = self.counts.get(ip, 0)
        if self.limit and n >= self.limit:
            return False
        self.counts[ip] = n + 1
        return True

    async def release(self, ip: str) -> None:
        n = self.counts.get(ip, 0) - 1
        if n <= 0:
            self.counts.pop(ip, None)
        else:
            self.counts[ip] = n

    async def close(self) -> None:
        return None


class RedisLimiter:
    """INCR on connect, DECR on disconnect; over the limit the INCR is undone at once."""

    def __init__(self, redis: Any, limit: int, prefix: str = "mailmoat:", ttl: int = 3600) -> None:
        self.redis = redis
        self.limit = limit
        self.prefix = prefix
        self.ttl = ttl

    def key(self, ip: str) -> str:
        return f"{self.prefix}conn:{ip}"

    async def acquire(self, ip: str) -> bool:
        key = self.key(ip)
        try:
            pipe = self.redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, self.ttl)
            n, _ = await pipe.execute()
        except Exception as exc:  # Redis down: limit nothing rather than refuse all mail
            log.warning("connection limiter: redis unavailable (%s); allowing %s", exc, ip)
            return True
        if self.limit and int(n) > self.limit:
            await self._decr(key)
            return False
        return True

    async def release(self, ip: str) -> None:
        await self._decr(self.key(ip))

    async def _decr(self, key: str) -> None:
        try:
            n = await self.redis.decr(key)
            if int(n) <= 0:
                await self.redis.delete(key)
        except Exception as exc:
            log.warning("connection limiter: redis unavailable (%s)", exc)

    async def close(self) -> None:
        await self.redis.aclose()


def make_limiter(limit: int, redis_url: str = "", prefix: str = "mailmoat:") -> ConnectionLimiter:
    if redis_url:
        import redis.asyncio as aioredis

        return RedisLimiter(aioredis.from_url(redis_url), limit, prefix)
    return MemoryLimiter(limit)
