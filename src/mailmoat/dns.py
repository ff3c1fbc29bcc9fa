"""Asynchronous DNS for the checks: one resolver per process, with timeouts and a TTL cache.

SPF, DKIM, DMARC, ARC, DNSBL and URIBL all ask DNS many small questions, often the same
ones (a sender's DMARC record, a popular DKIM key). `Resolver` wraps dnspython's asyncio
resolver and adds what a gateway needs:

* answers are cached for their TTL (clamped), NXDOMAIN and empty answers too, in an LRU of
  `[dns] cache_size` entries; concurrent identical questions share one query;
* a look-up never raises for "no such name" or "no data": it returns an empty answer;
* what is a temporary failure (timeout, SERVFAIL, REFUSED, no reachable server) raises
  `DnsTempError`, so each check can turn it into its own `*_TEMPERROR` symbol;
* nameservers are `host` or `host:port` (`[::1]:5353` for IPv6), so tests point it at a
  DNS server on loopback. Empty: the system's /etc/resolv.conf.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from pydantic import Field

from mailmoat.config import Config, Section


class DnsSettings(Section):
    nameservers: list[str] = Field(
        default_factory=list,
        description="resolvers as host or host:port ([v6]:port); empty: /etc/resolv.conf",
    )
    timeout: float = Field(2.0, description="seconds to wait for one server's answer")
    lifetime: float = Field(
        4.0, description="seconds a whole look-up may take, retries and servers included")
    cache_size: int = Field(10000, description="answers kept in the in-memory cache (LRU)")
    min_ttl: int = Field(30, description="seconds: shorter TTLs are raised to this")
    max_ttl: int = Field(3600, description="seconds: longer TTLs are cut to this")
    negative_ttl: int = Field(
        300, description="seconds to cache NXDOMAIN / no data when the zone gives no SOA")


class DnsError(Exception):
    """A DNS look-up could not be answered."""


class DnsTempError(DnsError):
    """Temporary: timeout, SERVFAIL, REFUSED or no server reachable. Retry later."""


@dataclass(frozen=True)
class Answer:
    """The records of one (name, type) question; empty when the name or data is absent."""

    name: str
    rdtype: str
    records: tuple[Any, ...] = ()  # dnspython rdata objects
    nxdomain: bool = False

    def __bool__(self) -> bool:
        return bool(self.records)


@dataclass
class _Entry:
    expires: float
    answer: Answer


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    queries: list[tuple[str, str]] = field(default_factory=list)  # last few sent, for tests


def parse_nameserver(spec: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]:5353` → (address, port)."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return host, int(port)
    return spec, 53


class Resolver:
    """Cached async look-ups. Create one and share it between checks."""

    def __init__(self, settings: DnsSettings | None = None) -> None:
        self.settings = settings or DnsSettings()
        if self.settings.nameservers:
            res = dns.asyncresolver.Resolver(configure=False)
            res.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                               for host, port in map(parse_nameserver, self.settings.nameservers)]
        else:
            res = dns.asyncresolver.Resolver()
        res.timeout = self.settings.timeout
        res.lifetime = self.settings.lifetime
        res.cache = None  # ours is below: it also keeps negative answers and counts hits
        self._res = res
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self.stats = CacheStats()

    @classmethod
    def from_config(cls, config: Config) -> Resolver:
        return cls(config.section("dns", DnsSettings))

    async def query(self, name: str, rdtype: str) -> Answer:
        """Records of `name`/`rdtype`; empty Answer for NXDOMAIN or no data.

        Raises DnsTempError for timeouts and server failures (never cached)."""
        key = (name.lower().rstrip("."), rdtype.upper())
        now = time.monotonic()
        entry = self._cache.get(key)
        if entry is not None:
            if entry.expires > now:
                self._cache.move_to_end(key)
                self.stats.hits += 1
                return entry.answer
            del self._cache[key]
        pending = self._inflight.get(key)
        if pending is not None:
            self.stats.hits += 1
            return await asyncio.shield(pending)
        self.stats.misses += 1
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            answer, ttl = await self._lookup(*key)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else DnsTempError(str(exc)))
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            fut.set_result(answer)
            self._store(key, answer, ttl)
            return answer
        finally:
            self._inflight.pop(key, None)

    async def _lookup(self, name: str, rdtype: str) -> tuple[Answer, int]:
        self.stats.queries.append((name, rdtype))
        del self.stats.queries[:-50]
        s = self.settings
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError):
            # Not a valid DNS name (empty label, label over 63 bytes, bad IDNA): it cannot
            # exist, which is an answer, not a failure.
            return Answer(name, rdtype, nxdomain=True), s.negative_ttl
        try:
            ans = await self._res.resolve(qname, rdtype,
                                          raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            return Answer(name, rdtype, nxdomain=True), self._negative_ttl(_nx_response(exc))
        except dns.resolver.YXDOMAIN:
            return Answer(name, rdtype, nxdomain=True), s.negative_ttl
        except dns.resolver.NoNameservers as exc:
            raise DnsTempError(f"no DNS server could answer {name}/{rdtype}: {exc}") from exc
        except dns.exception.Timeout as exc:
            raise DnsTempError(f"DNS look-up {name}/{rdtype} timed out") from exc
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"DNS look-up {name}/{rdtype} failed: {exc}") from exc
        if ans.rrset is None:
            return Answer(name, rdtype), self._negative_ttl(ans.response)
        return Answer(name, rdtype, tuple(ans.rrset)), ans.rrset.ttl

    def _negative_ttl(self, response: Any) -> int:
        # RFC 2308: the SOA in the authority section bounds how long "no" may be cached.
        try:
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return int(min(rrset.ttl, rrset[0].minimum))
        except Exception:
            pass
        return self.settings.negative_ttl

    def _store(self, key: tuple[str, str], answer: Answer, ttl: int) -> None:
        s = self.settings
        if s.cache_size <= 0:
            return
        ttl = max(s.min_ttl, min(s.max_ttl, ttl))
        self._cache[key] = _Entry(time.monotonic() + ttl, answer)
        self._cache.move_to_end(key)
        while len(self._cache) > s.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()

    # Typed helpers ---------------------------------------------------------------------

    async def txt(self, name: str) -> list[bytes]:
        """TXT strings of `name`, each record's character-strings joined (RFC 7208 3.3)."""
        ans = await self.query(name, "TXT")
        return [b"".join(r.strings) for r in ans.records]

    async def addresses(self, name: str, rdtype: str = "A") -> list[str]:
        ans = await self.query(name, rdtype)
        return [r.address for r in ans.records]


def _nx_response(exc: dns.resolver.NXDOMAIN) -> Any:
    try:
        return exc.response(exc.qnames()[0])
    except Exception:
        return None
