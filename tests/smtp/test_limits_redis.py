"""The Redis connection limiter survives crashes (issue 21, item 2): a process killed with
SIGKILL, or leases whose owner is gone, stop counting within the lease time, and refused
attempts do not extend them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mailmoat.smtp.limits import RedisLimiter
from tests.conftest import SRC_DIR
from tests.smtp.helpers import gateway_config, running_gateway

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/0"


async def banner(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


async def first_accept(port: int, within: float) -> float:
    """Connect every 0.1 s (each refusal is an attempt that must not extend anything);
    seconds until the first 220."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        line = await banner(port)
        if line.startswith(b"220"):
            return time.monotonic() - start
        assert line.startswith(b"421 4.7.0"), line
        await asyncio.sleep(0.1)
    raise AssertionError(f"still refused after {within} s")


def limiter(prefix: str, limit: int = 2, lease: float = 30.0) -> RedisLimiter:
    import redis.asyncio as aioredis

    return RedisLimiter(aioredis.from_url(URL), limit, prefix, lease=lease)


async def test_lease_accounting_and_refusals_write_nothing(redis_prefix):
    lim = limiter(redis_prefix, limit=2, lease=5.0)
    try:
        a = await lim.acquire("192.0.2.7")
        b = await lim.acquire("192.0.2.7")
        assert a and b and a != b
        key = lim.key("192.0.2.7")
        before = (await lim.redis.zrange(key, 0, -1, withscores=True), await lim.redis.pttl(key))
        await asyncio.sleep(0.2)
        for _ in range(5):
            assert await lim.acquire("192.0.2.7") is None
        after = (await lim.redis.zrange(key, 0, -1, withscores=True), await lim.redis.pttl(key))
        assert after[0] == before[0]  # no lease added, no expiry moved
        assert after[1] < before[1]  # the key's own expiry was not renewed either
        await lim.refresh()  # a live owner does push its leases forward
        scores = dict(await lim.redis.zrange(key, 0, -1, withscores=True))
        assert all(scores[k] > v for k, v in dict(before[0]).items())
        await lim.release("192.0.2.7", a)
        assert await lim.acquire("192.0.2.7")
        assert await lim.acquire("192.0.2.8")  # per IP
    finally:
        await lim.close()


async def test_leases_of_a_gone_owner_expire_despite_retries(tmp_path, sink, redis_prefix):
    """Leases written by an owner that is gone (its process crashed, nothing refreshes
    them): the next connection is accepted within the lease time although the client
    kept retrying the whole time."""
    cfg = gateway_config(tmp_path, sink.port, smtp={"max_connections_per_ip": 2},
                         redis={"url": URL, "key_prefix": redis_prefix})
    async with running_gateway(cfg) as gw:
        dead = limiter(redis_prefix, limit=2, lease=1.5)
        try:
            assert await dead.acquire("127.0.0.1") and await dead.acquire("127.0.0.1")
            dead.held.clear()  # the owner is gone: nobody refreshes these any more
        finally:
            await dead.close()
        assert (await banner(gw.smtp_port)).startswith(b"421 4.7.0")
        waited = await first_accept(gw.smtp_port, within=5.0)
        assert waited < 2.0, waited


HOLDER = textwrap.dedent("""
    import asyncio, sys
    import redis.asyncio as aioredis
    from mailmoat.smtp.limits import RedisLimiter

    async def main():
        lim = RedisLimiter(aioredis.from_url(sys.argv[1]), 2, sys.argv[2], lease=1.5)
        for _ in range(2):
            assert await lim.acquire("127.0.0.1")
        print("held", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


async def test_sigkilled_process_leases_stop_counting(tmp_path, sink, redis_prefix):
    """A separate process takes the IP's two slots and keeps them alive past the lease time
    (it refreshes); after `kill -9` the gateway accepts within the lease time."""
    env = dict(os.environ, PYTHONPATH=str(SRC_DIR))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, URL, redis_prefix],
                              stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 20)
        assert line.strip() == b"held"
        cfg = gateway_config(tmp_path, sink.port, smtp={"max_connections_per_ip": 2},
                             redis={"url": URL, "key_prefix": redis_prefix})
        async with running_gateway(cfg) as gw:
            assert (await banner(gw.smtp_port)).startswith(b"421 4.7.0")
            await asyncio.sleep(2.0)  # past the 1.5 s lease: the live holder refreshed it
            assert (await banner(gw.smtp_port)).startswith(b"421 4.7.0")
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(5)
            waited = await first_accept(gw.smtp_port, within=5.0)
            assert waited < 2.5, waited
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)
