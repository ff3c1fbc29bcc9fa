"""SMTP intake: aiosmtpd hooks that decide who may send what, scan, spool, then answer.

The protocol edge stays thin. `GatewayHandler` implements the hooks:

    EHLO  advertise AUTH only when users exist (and, if required, after STARTTLS)
    RCPT  relay rules (our domains for anyone; other domains only for trusted networks or
          authenticated users: never an open relay), recipient list, recipient limit
    DATA  direction → scan → reject (5xx, no backscatter) or spool durably → 250 with our id

`GatewaySMTP` adds what aiosmtpd lacks: a per-IP connection limit, a deadline for the DATA
phase, a 421 before hanging up on a silent client, and enhanced status codes on its replies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiosmtplib
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from mailmoat.config import Config
from mailmoat.errors import ConfigError
from mailmoat.message.model import Direction, Envelope, domain_of
from mailmoat.relay.headers import add_gateway_headers, received_value
from mailmoat.relay.routes import parse_hostport, route_for
from mailmoat.scan.auth import AuthSettings
from mailmoat.scan.base import Action
from mailmoat.scan.engine import Scanner
from mailmoat.smtp import replies as R
from mailmoat.smtp.limits import ConnectionLimiter, MemoryLimiter
from mailmoat.smtp.users import UserDB
from mailmoat.spool.queue import Spool, SpoolEntry, new_message_id
from mailmoat.store.log import message_log_data

log = logging.getLogger(__name__)

NULL_SENDER = "<>"
_PLAIN_ADDR = re.compile(r'\s*<([^<>()\[\]\\,;:\s@"]+@[A-Za-z0-9.-]+)>(.*)\Z', re.DOTALL)
VERIFY_CACHE_SECONDS = 600.0


def load_recipients(path: Path) -> frozenset[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"[smtp] recipients_file {path}: {exc}") from exc
    return frozenset(x.strip().lower() for x in lines if x.strip() and not x.startswith("#"))


class GatewayHandler:
    """aiosmtpd handler: relay rules, limits, and the scan-then-spool DATA path."""

    def __init__(self, config: Config, scanner: Scanner | None, spool: Spool,
                 on_spooled: Callable[..., None] = lambda _id, *_: None,
                 on_rejected: Callable[[dict[str, Any]], None] = lambda _data: None,
                 io_executor: concurrent.futures.Executor | None = None,
                 spool_state: str = "incoming",
                 on_verdict: Callable[[Any], object] | None = None) -> None:
        self.config = config
        # "active" when this process's delivery takes every message from `on_spooled`
        # (app.build): the message is then claimed by the write itself.
        self.spool_state = spool_state
        self.scanner = scanner
        self.spool = spool
        self.on_spooled = on_spooled
        self.on_rejected = on_rejected
        # Called with the ScanOutcome of every scanned message that is answered (rejected or
        # spooled); it must not block (app.build hands the work to a thread). What it returns
        # is ignored (SenderMemory's feed answers whether it took the observation).
        self.on_verdict = on_verdict
        self.io_executor = io_executor
        smtp = config.smtp
        self.relay_domains = frozenset(d.lower() for d in smtp.relay_domains)
        self.internal_domains = frozenset(config.internal_domains)
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in smtp.trusted_networks]
        self._trusted_cache: dict[str, bool] = {}
        self.users = UserDB.load(config.resolve_path(smtp.auth_users_file)) \
            if smtp.auth_users_file else None
        self.recipients = load_recipients(config.resolve_path(smtp.recipients_file)) \
            if smtp.recipients_file else None
        self._verified: dict[str, tuple[float, str | None]] = {}

    # -- who is this client --------------------------------------------------------------

    def is_trusted(self, ip: str) -> bool:
        # Asked at RCPT and DATA of every message: parsing the address each time was 2 % of
        # the intake's CPU. Few clients talk to a gateway, so the answers are kept (bounded).
        known = self._trusted_cache.get(ip)
        if known is None:
            try:
                addr = ipaddress.ip_address(ip)
                known = any(addr in net for net in self.trusted)
            except ValueError:
                known = False
            if len(self._trusted_cache) >= 4096:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = known
        return known

    def internal_sender(self, session: Any) -> bool:
        return bool(session.authenticated) or self.is_trusted(_peer_ip(session))

    def direction(self, session: Any, rcpts: list[str]) -> Direction:
        if not self.internal_sender(session):
            return Direction.INBOUND
        if any(domain_of(r) not in self.internal_domains for r in rcpts):
            return Direction.OUTBOUND
        return Direction.INTERNAL

    def authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        if self.users is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        ok = self.users.check(user, auth_data.password.decode("utf-8", "replace"))
        log.info("AUTH %s for %r from %s: %s", mechanism, user, _peer_ip(session),
                 "ok" if ok else "failed")
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    async def verify_downstream(self, address: str) -> str | None:
        """Ask the next hop whether it knows the recipient (RCPT TO, then RSET). A refusal
        comes back as our reply; an unreachable or undecided downstream accepts the
        recipient, so verification can delay nothing and lose nothing."""
        key = address.lower()
        now = time.monotonic()
        hit = self._verified.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        host, port = route_for(self.config, address)
        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=10, start_tls=False,
                                 local_hostname=self.config.smtp.hostname)
        verdict: str | None = None
        try:
            await client.connect()
            await client.ehlo()
            await client.mail("")
            await client.rcpt(address)
        except aiosmtplib.SMTPRecipientRefused as exc:
            if 500 <= exc.code < 600:
                verdict = R.S550_NO_SUCH_USER.format(rcpt=address)
            else:
                verdict = R.S450_VERIFY_LATER.format(rcpt=address)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            log.info("recipient verification of %s at %s:%d failed (%s); accepting",
                     address, host, port, exc)
            return None
        finally:
            try:
                if client.is_connected:
                    await asyncio.wait_for(client.quit(), 5)
            except Exception:
                client.close()
        self._verified[key] = (now + VERIFY_CACHE_SECONDS, verdict)
        if len(self._verified) > 100_000:
            self._verified.clear()
        return verdict

    # -- hooks ---------------------------------------------------------------------------

    async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.users is None:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        # aiosmtpd reads commands strictly in order, so pipelined clients are served
        # correctly; it just does not say so.
        responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if any(r.lower() == address.lower() for r in envelope.rcpt_tos):
            return "250 2.1.5 Ok (duplicate recipient, delivered once)"
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            return R.S452_TOO_MANY_RECIPIENTS
        domain = domain_of(address)
        if domain in self.relay_domains:
            if self.recipients is not None and address.lower() not in self.recipients \
                    and f"@{domain}" not in self.recipients:
                return R.S550_NO_SUCH_USER.format(rcpt=address)
            if self.config.smtp.verify_recipients_downstream:
                refusal = await self.verify_downstream(address)
                if refusal:
                    return refusal
        elif not self.internal_sender(session):
            log.info("relay denied: %s -> %s from %s", envelope.mail_from, address,
                     _peer_ip(session))
            return R.S554_RELAY_DENIED.format(rcpt=address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if isinstance(server, GatewaySMTP):
            server.data_received_in_full()
        mid = new_message_id()
        raw: bytes = envelope.original_content
        rcpts = list(envelope.rcpt_tos)
        mail_from = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from
        direction = self.direction(session, rcpts)
        envelope.direction = direction
        ip = _peer_ip(session)
        auth_user = ""
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            auth_user = session.auth_data.login.decode("utf-8", "replace")
        tls = session.ssl is not None
        env = Envelope(mail_from=mail_from, rcpt_tos=tuple(rcpts), client_ip=ip,
                       helo=session.host_name or "", auth_user=auth_user or None, tls=tls,
                       direction=direction)
        outcome = None
        if self.scanner is not None:
            try:
                outcome = await self.scanner.scan(raw, env)
            except Exception:  # the scan is ours to fix; the mail is still taken and kept
                log.exception("scan of %s failed; spooling it unscanned", mid)
        data = message_log_data(mailmoat_id=mid, envelope=env, outcome=outcome,
                                node=self.config.smtp.hostname)
        plan = {r: "deliver" for r in rcpts}
        received = received_value(helo=env.helo or "", client_ip=ip,
                                  hostname=self.config.smtp.hostname, mailmoat_id=mid, tls=tls,
                                  recipient=rcpts[0] if len(rcpts) == 1 else None)
        if outcome is not None:
            actions = {r: v.action for r, v in outcome.per_recipient.items()}
            if actions and all(a is Action.REJECT for a in actions.values()):
                # Refused in the session: the client owns the bounce, we send no backscatter.
                self.on_rejected(data)
                self._verdict(outcome)
                top = sorted(outcome.result.symbols, key=lambda x: -x.score)[:3]
                why = outcome.verdict.reason + "".join(f"; {x.name}: {x.reason}" for x in top)
                return R.S550_REJECTED.format(reason=_one_line(why))
            # After DATA one reply covers every recipient, so a recipient whose policy says
            # reject while others accept is held in quarantine instead.
            plan = {r: ("quarantine" if a in (Action.QUARANTINE, Action.REJECT) else "deliver")
                    for r, a in actions.items()}
            delivered = add_gateway_headers(raw, mailmoat_id=mid, verdict=outcome.verdict,
                                            result=outcome.result,
                                            hostname=self.config.smtp.hostname,
                                            received=received,
                                            trusted_authserv_ids=self.config.section(
                                                "auth", AuthSettings).trusted_authserv_ids)
        else:
            delivered = raw
        entry = SpoolEntry(id=mid, mail_from=mail_from, rcpt_tos=rcpts, received_at=env.received_at,
                           client_ip=ip, helo=env.helo or "", auth_user=auth_user,
                           direction=direction.value, scanned=outcome is not None,
                           extra={"plan": plan, "log": data, "tls": tls, "received": received})
        try:
            await asyncio.get_running_loop().run_in_executor(self.io_executor, self.spool.put,
                                                             entry, delivered, self.spool_state)
        except Exception:
            log.exception("spooling %s failed", mid)
            return R.S451_SPOOL_FAILED
        if outcome is not None:
            self._verdict(outcome)
        # The delivery side gets the entry and bytes in memory, so it does not read back
        # and re-parse what was just written (the spool copy is the durable one).
        if self.spool_state == "active":
            self.on_spooled(mid, entry, delivered)
        else:
            self.on_spooled(mid)
        return R.S250_QUEUED.format(id=mid)


    def _verdict(self, outcome: Any) -> None:
        if self.on_verdict is None:
            return
        try:
            self.on_verdict(outcome)
        except Exception:  # bookkeeping only: never in the way of the reply
            log.exception("verdict hook failed")


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with per-IP connection limits, a DATA deadline and enhanced codes."""

    def __init__(self, handler: GatewayHandler, *, limiter: ConnectionLimiter,
                 data_timeout: float, max_line_length: int, **kwargs: Any) -> None:
        # aiosmtpd sizes its stream buffer from this attribute in __init__.
        self.line_length_limit = max_line_length + 2
        super().__init__(handler, **kwargs)
        self.limiter = limiter
        self.data_timeout = data_timeout
        self._in_data = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every MAIL/RCPT address with the RFC 5322 header parser, which
        # costs about a millisecond; plain `<local@domain>` (nearly all mail) is matched
        # here, anything else still goes through the full parser.
        m = _PLAIN_ADDR.match(arg) if arg else None
        if m is None:
            return super()._getaddr(arg)
        addr = m.group(1)
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, m.group(2).lstrip()

    async def push(self, status: str | bytes) -> None:
        # aiosmtpd's push takes an AnyStr, which a str | bytes union cannot bind: one call each.
        if isinstance(status, bytes):
            await super().push(status)
            return
        if status in R.REWRITE:
            status = R.REWRITE[status].format(limit=self.data_size_limit)
        await super().push(status)

    async def _handle_client(self) -> None:
        assert self.session is not None
        ip = _peer_ip(self.session)
        if not await self.limiter.acquire(ip):
            log.info("connection limit reached for %s", ip)
            await self.push(R.S421_TOO_MANY_CONNECTIONS)
            if self.transport is not None:
                self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            await self.limiter.release(ip)

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's idle timer restarts only on commands; the DATA phase gets its own budget.
        self._in_data = True
        self._reset_timeout(self.data_timeout)
        try:
            await super().smtp_DATA(arg)
        finally:
            self._in_data = False
            if self.transport is not None:
                self._reset_timeout()

    def data_received_in_full(self) -> None:
        """Called when DATA is complete: scanning and spooling are not the client's fault,
        so they are not held to the client's timeouts (which would risk a duplicate)."""
        self._reset_timeout(max(self._timeout_duration, 600.0))

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            reply = R.S421_DATA_TIMEOUT if self._in_data else \
                f"421 4.4.2 {self.hostname} Timeout, closing connection"
            # aiosmtpd types it a BaseTransport; a connection's (socket or TLS) is a Transport.
            transport = cast(asyncio.Transport, self.transport)
            try:
                transport.write(reply.encode() + b"\r\n")
            except Exception:
                pass
        super()._timeout_cb()


def _peer_ip(session: Any) -> str:
    peer = getattr(session, "peer", None)
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


async def start_smtp_server(config: Config, handler: GatewayHandler,
                            limiter: ConnectionLimiter | None = None,
                            tls_context: Any = None,
                            sock: socket.socket | None = None) -> asyncio.Server:
    """Listen on [smtp] listen (or on `sock`, for tests that bound port 0 themselves)."""
    loop = asyncio.get_running_loop()
    smtp = config.smtp
    limiter = limiter or MemoryLimiter(smtp.max_connections_per_ip)

    def factory() -> GatewaySMTP:
        return GatewaySMTP(
            handler, limiter=limiter, data_timeout=smtp.data_timeout,
            max_line_length=smtp.max_line_length, data_size_limit=smtp.max_message_size,
            enable_SMTPUTF8=True, decode_data=False, hostname=smtp.hostname,
            ident="mailmoat ESMTP", tls_context=tls_context, timeout=smtp.command_timeout,
            auth_require_tls=smtp.require_tls_for_auth, authenticator=handler.authenticate,
            loop=loop)

    if sock is not None:
        return await loop.create_server(factory, sock=sock)
    host, port = parse_hostport(smtp.listen)
    return await loop.create_server(factory, host=host, port=port, reuse_address=True)


__all__ = ["GatewayHandler", "GatewaySMTP", "start_smtp_server"]
