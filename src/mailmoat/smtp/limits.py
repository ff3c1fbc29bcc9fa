"""Connection limits: per client IP (in memory or in Redis) and per process (all clients).

Redis is used when `[redis] url` is set, so several gateway processes behind one address
share the per-IP count. There each connection holds a *lease*: a member of a sorted set
per IP (`<prefix>conns:<ip>`) whose score is the lease's expiry. A live process pushes its
leases' expiry forward every LEASE_SECONDS / 3; a process that dies (kill -9, power cut)
stops doing so, and its leases stop counting LEASE_SECONDS later at most. Every check
prunes expired leases first, and a refused attempt writes nothing, so a client that keeps
retrying cannot keep a dead process's count alive (the old INCR counter renewed its
one-hour expiry on every attempt, refused ones too, and locked senders out after a crash).

`ProcessLimits` caps what one process holds over all clients: open connections
(`[smtp] max_connections`) and bytes of mail in transit (`[smtp] max_bytes_in_transit`).
They protect this process's sockets and memory, so they are counted in memory, per process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


LEASE_SECONDS = 30.0  # a dead process's Redis leases stop counting this long after it died
MEMORY_LEASE = "memory"


class ConnectionLimiter(Protocol):
    async def acquire(self, ip: str) -> str | None:
        """A lease for one connection from `ip`, or None when `ip` is at its limit."""
        ...

    async def release(self, ip: str, lease: str) -> None: ...
    async def close(self) -> None: ...


class MemoryLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}

    async def acquire(self, ip: str) -> str | None:
        # A process's memory dies with it, so these counts need no lease.
        n = self.counts.get(ip, 0)
        if self.limit and n >= self.limit:
            return None
        self.counts[ip] = n + 1
        return MEMORY_LEASE

    async def release(self, ip: str, lease: str = MEMORY_LEASE) -> None:
        n = self.counts.get(ip, 0) - 1
        if n <= 0:
            self.counts.pop(ip, None)
        else:
            self.counts[ip] = n

    async def close(self) -> None:
        return None


# Atomic on the Redis side, so processes sharing the count never both take the last slot.
# KEYS[1]: the IP's sorted set; ARGV: now, expiry, lease id, limit (0: none), key TTL in ms.
# Over the limit it returns before writing anything: refused attempts extend nothing.
_ACQUIRE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = tonumber(ARGV[4])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisLimiter:
    """Per-IP leases in a Redis sorted set, refreshed while their connection lives.

    Expiries are this host's wall clock: nodes sharing a Redis need clocks within a few
    seconds of each other (NTP), far less than the lease.
    """

    def __init__(self, redis: Any, limit: int, prefix: str = "mailmoat:",
                 lease: float = LEASE_SECONDS) -> None:
        self.redis = redis
        self.limit = limit
        self.prefix = prefix
        self.lease = lease
        self.held: dict[str, str] = {}  # lease id -> ip, for the refresher
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._refresher: asyncio.Task[None] | None = None

    def key(self, ip: str) -> str:
        return f"{self.prefix}conns:{ip}"

    async def acquire(self, ip: str) -> str | None:
        lease = uuid.uuid4().hex
        now = time.time()
        try:
            ok = await self._acquire(keys=[self.key(ip)],
                                     args=[now, now + self.lease, lease, self.limit,
                                           int(self.lease * 1000)])
        except Exception as exc:  # Redis down: limit nothing rather than refuse all mail
            log.warning("connection limiter: redis unavailable (%s); allowing %s", exc, ip)
            return lease
        if not int(ok):
            return None
        self.held[lease] = ip
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh_loop(), name="connection-lease-refresh")
        return lease

    async def release(self, ip: str, lease: str) -> None:
        self.held.pop(lease, None)
        try:
            await self.redis.zrem(self.key(ip), lease)
        except Exception as exc:  # the lease then expires on its own
            log.warning("connection limiter: redis unavailable (%s)", exc)

    async def refresh(self) -> None:
        """Push every held lease's expiry forward, in one round trip."""
        if not self.held:
            return
        expiry = time.time() + self.lease
        ttl_ms = int(self.lease * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for lease, ip in list(self.held.items()):
            # XX: a lease released while this pipeline was in flight is not brought back.
            pipe.zadd(self.key(ip), {lease: expiry}, xx=True)
            pipe.pexpire(self.key(ip), ttl_ms)
        await pipe.execute()

    async def _refresh_loop(self) -> None:
        while self.held:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.refresh()
            except Exception as exc:  # leases may lapse: the count errs towards allowing
                log.warning("connection limiter: refreshing leases failed (%s)", exc)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self.redis.aclose()


@dataclass
class ProcessLimits:
    """Caps over all clients of this process; 0 means no cap."""

    max_connections: int = 0
    max_bytes: int = 0
    connections: int = 0
    bytes_in_transit: int = 0

    def open(self) -> bool:
        if self.max_connections and self.connections >= self.max_connections:
            return False
        self.connections += 1
        return True

    def close(self) -> None:
        self.connections = max(0, self.connections - 1)

    def reserve(self, n: int) -> bool:
        # One message always fits when nothing else is in transit, so a cap below
        # [smtp] max_message_size slows big mail down instead of refusing it for ever.
        if self.max_bytes and self.bytes_in_transit \
                and self.bytes_in_transit + n > self.max_bytes:
            return False
        self.bytes_in_transit += n
        return True

    def free(self, n: int) -> None:
        self.bytes_in_transit = max(0, self.bytes_in_transit - n)


def make_limiter(limit: int, redis_url: str = "", prefix: str = "mailmoat:",
                 lease: float = LEASE_SECONDS) -> ConnectionLimiter:
    if redis_url:
        import redis.asyncio as aioredis

        return RedisLimiter(aioredis.from_url(redis_url), limit, prefix, lease)
    return MemoryLimiter(limit)
