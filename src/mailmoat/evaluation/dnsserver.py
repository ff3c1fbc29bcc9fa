"""A small authoritative DNS server on loopback (dnslib), UDP and TCP on one port.

The tests and the benchmarks that measure DNS-bound checks (bench/scan_latency.py,
bench/auth_dns.py) answer the gateway's look-ups with it. dnslib comes with the `test` and
`bench` extras (`pip install -e '.[bench]'`), not with the gateway.

Zones are plain dicts, name → type → values, and can be changed while the server runs:

    zones = {
        "sender.test": {"TXT": ["v=spf1 ip4:192.0.2.10 -all"], "A": ["192.0.2.10"],
                        "MX": ["10 mx.sender.test"]},
        "_dmarc.sender.test": {"TXT": ["v=DMARC1; p=reject"]},
        "broken.test": "SERVFAIL",       # a whole name answers SERVFAIL
        "refusing.test": "REFUSED",
        "slow.test": "TIMEOUT",          # never answered: the client times out
    }

Names not in the dict (and with no name below them) are NXDOMAIN; a name that exists with
other types answers NOERROR with no data. TXT values longer than 255 bytes are split into
several character-strings, as real zones do. Use `server.nameserver` ("127.0.0.1:PORT") in
`[dns] nameservers`; tests/dnsserver.py wraps the server in the `dns_server` fixture.

`publish_sender(zones, domain, dkim_pem=...)` adds a sending domain's SPF, DMARC and DKIM
records. `DnsServerProcess(zones)` runs the same server in a child process, for benchmarks
that must not share the measured process's CPU with the server (bench/scan_latency.py,
bench/auth_dns.py).
"""

from __future__ import annotations

import socketserver
import threading
from typing import Any

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

ZoneData = dict[str, Any]

_RDATA = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "PTR": PTR}


def _txt(value: str | bytes) -> TXT:
    raw = value.encode() if isinstance(value, str) else value
    return TXT([raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""])


def _rdata(rtype: str, value: Any) -> Any:
    if rtype == "TXT":
        return _txt(value)
    if rtype == "MX":
        pref, host = str(value).split(None, 1)
        return MX(host, int(pref))
    return _RDATA[rtype](value)


class ZoneResolver(BaseResolver):
    def __init__(self, zones: ZoneData, ttl: int = 60) -> None:
        self.zones = zones
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []
        # Index of the zone's names (normalised name -> key as written, and every name that
        # has a name below it), rebuilt whenever the set of keys changes: a look-up stays
        # cheap with the thousands of names a benchmark publishes, and tests may still edit
        # `zones` while the server runs.
        self._keys: set[str] = set()
        self._names: dict[str, str] = {}
        self._parents: set[str] = set()

    def _index(self) -> None:
        if self._keys == self.zones.keys():
            return
        keys = set(self.zones)
        names: dict[str, str] = {}
        parents: set[str] = set()
        for key in keys:
            norm = key.lower().rstrip(".")
            names.setdefault(norm, key)
            labels = norm.split(".")
            parents.update(".".join(labels[i:]) for i in range(1, len(labels)))
        self._names, self._parents, self._keys = names, parents, keys  # keys last: threads

    def _lookup(self, name: str) -> Any:
        self._index()
        key = self._names.get(name)
        return None if key is None else self.zones.get(key)

    def _exists_below(self, name: str) -> bool:
        self._index()
        return name in self._parents

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        qname = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        self.queries.append((qname, qtype))
        reply = request.reply()
        data = self._lookup(qname)
        if data == "TIMEOUT":
            raise DNSError("dropped on purpose: the client should time out")
        if isinstance(data, str):  # SERVFAIL / REFUSED
            reply.header.rcode = getattr(RCODE, data)
            return reply
        if data is None:
            if not self._exists_below(qname):
                reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(RR(qname, QTYPE.SOA, ttl=self.ttl,
                              rdata=SOA("ns.test", "hostmaster.test", (1, 60, 60, 60, self.ttl))))
            return reply
        types = {k.upper(): v for k, v in data.items()}
        if "CNAME" in types and qtype != "CNAME":
            target = types["CNAME"][0] if isinstance(types["CNAME"], list) else types["CNAME"]
            reply.add_answer(RR(qname, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(target)))
            tdata = self._lookup(str(target).lower().rstrip("."))
            if isinstance(tdata, dict):
                for value in {k.upper(): v for k, v in tdata.items()}.get(qtype, []):
                    reply.add_answer(RR(target, getattr(QTYPE, qtype), ttl=self.ttl,
                                        rdata=_rdata(qtype, value)))
            return reply
        values = types.get(qtype, [])
        if isinstance(values, (str, bytes)):
            values = [values]
        for value in values:
            reply.add_answer(RR(qname, getattr(QTYPE, qtype), ttl=self.ttl,
                                rdata=_rdata(qtype, value)))
        if not values:
            reply.add_auth(RR(qname, QTYPE.SOA, ttl=self.ttl,
                              rdata=SOA("ns.test", "hostmaster.test", (1, 60, 60, 60, self.ttl))))
        return reply


class _SerialUDPServer(socketserver.UDPServer):
    """Answers UDP queries one after the other in the serving thread: no thread per query."""

    allow_reuse_address = True


class TestDnsServer:
    """UDP + TCP servers on one free loopback port, serving `zones` (a mutable dict).

    `threaded=False` answers UDP in the serving thread instead of a new thread per query
    (dnslib's default): faster per query, for benchmarks; tests keep the default."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, zones: ZoneData | None = None, *, threaded: bool = True) -> None:
        self.zones: ZoneData = zones if zones is not None else {}
        self.resolver = ZoneResolver(self.zones)
        logger = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data",
                           prefix=False, logf=lambda _s: None)
        last_error: OSError | None = None
        for _ in range(20):
            udp = DNSServer(self.resolver, address="127.0.0.1", port=0, logger=logger,
                            server=None if threaded else _SerialUDPServer)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(self.resolver, address="127.0.0.1", port=port, tcp=True,
                                logger=logger)
            except OSError as exc:  # the port is taken for TCP: try another
                last_error = exc
                udp.server.server_close()
                continue
            self.port = port
            self._servers = (udp, tcp)
            break
        else:
            raise RuntimeError(f"no free UDP+TCP port for the test DNS server: {last_error}")

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def queries(self) -> list[tuple[str, str]]:
        return self.resolver.queries

    def start(self) -> TestDnsServer:
        for s in self._servers:
            # A short poll interval keeps shutdown (and so fixture teardown) fast.
            threading.Thread(target=s.server.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.server.shutdown()
            s.server.server_close()

    def __enter__(self) -> TestDnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish_sender(zones: ZoneData, domain: str, *, spf: str = "v=spf1 ip4:192.0.2.0/24 -all",
                   dmarc: str = "v=DMARC1; p=reject", dkim_pem: bytes | None = None,
                   selector: str = "s1") -> None:
    """Publish a sending domain: its SPF record, its DMARC policy and (with `dkim_pem`) the
    public half of its DKIM key under `selector`."""
    from mailmoat.dkimsign import dns_record_value

    zones.setdefault(domain, {})["TXT"] = [spf]
    zones[f"_dmarc.{domain}"] = {"TXT": [dmarc]}
    if dkim_pem is not None:
        zones[f"{selector}._domainkey.{domain}"] = {"TXT": [dns_record_value(dkim_pem)]}


def _serve_forever(zones: ZoneData, conn: Any) -> None:
    with TestDnsServer(zones, threaded=False) as server:
        conn.send(server.port)
        conn.recv()  # anything, or EOF when the parent goes away: stop
    conn.close()


class DnsServerProcess:
    """A TestDnsServer in a child process, as a local resolver would be: its CPU time is not
    taken from the process under measurement (benchmarks). Zones are fixed at start; UDP
    queries are answered one at a time without a thread each (`threaded=False`)."""

    def __init__(self, zones: ZoneData) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_forever, args=(zones, child), daemon=True)
        self.port = 0

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> DnsServerProcess:
        self._proc.start()
        if not self._conn.poll(60):
            self._proc.kill()
            raise RuntimeError("the DNS server process did not start")
        self.port = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()

