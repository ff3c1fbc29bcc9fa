"""SMTP intake: aiosmtpd hooks that decide who may send what, scan, spool, then answer.

The protocol edge stays thin. `GatewayHandler` implements the hooks:

    HELO/EHLO, MAIL, RCPT  envelope syntax checked at the edge (control characters,
          RFC 5321 length limits, malformed domains: 501/553); a trailing dot on an
          address's domain is dropped, so `a@example.test.` is `a@example.test` everywhere
    EHLO  advertise AUTH only when users exist (and, if required, after STARTTLS)
    RCPT  relay rules (our domains for anyone; other domains only for trusted networks or
          authenticated users: never an open relay), recipient list, recipient limit
    DATA  direction → scan → reject (5xx, no backscatter) or spool durably → 250 with our id

`GatewaySMTP` adds what aiosmtpd lacks: per-IP and per-process connection limits, a cap on
bytes in transit, a deadline for the DATA phase, a 421 before hanging up on a silent
client, and enhanced status codes on its replies.
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
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, TLSSetupException, syntax

from mailmoat.config import Config
from mailmoat import maillog
from mailmoat.errors import ConfigError
from mailmoat.internal.identity import (
    RECEIVED,
    SenderIdentity,
    auth_account,
    header_value,
    resolve_identity,
    strip_header,
)
from mailmoat.internal.settings import InternalSettings
from mailmoat.intake import ScannerRef, extra_recipients, prepare_delivery
from mailmoat.listen import bind_error, listen_address
from mailmoat.message.model import Direction, Envelope, domain_of
from mailmoat.relay.headers import received_value
from mailmoat.relay.routes import parse_hostport, route_for
from mailmoat.scan.base import Action
from mailmoat.scan.engine import Scanner
from mailmoat.smtp import replies as R
from mailmoat.smtp.limits import ConnectionLimiter, MemoryLimiter, ProcessLimits
from mailmoat.smtp.users import UserDB
from mailmoat.smtp.tls import handshake_failure
from mailmoat.spool.queue import Handover, Spool, SpoolEntry, new_message_id
from mailmoat.store.log import message_log_data

log = logging.getLogger(__name__)

NULL_SENDER = "<>"
_PLAIN_ADDR = re.compile(r'\s*<([^<>()\[\]\\,;:\s@"]+@[A-Za-z0-9.-]+)>(.*)\Z', re.DOTALL)
VERIFY_CACHE_SECONDS = 600.0
# C0, DEL and C1 controls: NUL and friends broke the spool's JSON, PostgreSQL's text
# columns and the next hop, so none of them gets past the SMTP edge.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_LOCAL_PART = 64  # octets, RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # octets, RFC 5321 4.5.3.1.2
MAX_LABEL = 63  # octets, RFC 1035


def control_problem(text: str) -> str | None:
    m = _CONTROL.search(text)
    return f"control character 0x{ord(m.group()):02x} not allowed" if m else None


def _octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def domain_problem(domain: str) -> str | None:
    """Why `domain` (or an address literal) is not acceptable in an envelope, or None.
    Non-ASCII letters are allowed (SMTPUTF8 U-labels); undecodable bytes are not."""
    if not domain:
        return "empty domain"
    if domain.startswith("["):
        literal = domain[1:-1] if domain.endswith("]") else ""
        try:
            ipaddress.ip_address(literal[5:] if literal.lower().startswith("ipv6:") else literal)
            return None
        except ValueError:
            return "malformed address literal"
    if _octets(domain) > MAX_DOMAIN:
        return f"domain longer than {MAX_DOMAIN} octets"
    for label in domain.split("."):
        if not label:
            return "malformed domain (empty label)"
        if _octets(label) > MAX_LABEL:
            return f"domain label longer than {MAX_LABEL} octets"
        if not all(c.isalnum() or c in "-_" for c in label):
            return "malformed domain (character not allowed in a domain)"
        if label[0] == "-" or label[-1] == "-":
            return "malformed domain (label starts or ends with a hyphen)"
    return None


def helo_problem(hostname: str) -> str | None:
    why = control_problem(hostname)
    if why:
        return why
    try:  # a bare IP address: wrong (RFC 5321 wants [1.2.3.4]) but common, and harmless
        ipaddress.ip_address(hostname)
        return None
    except ValueError:
        pass
    return domain_problem(hostname[:-1] if hostname.endswith(".") else hostname)


def normalise_address(address: str) -> str:
    """`a@example.test.` → `a@example.test`: the root dot is legal DNS but not SMTP, and
    left in place it made relay checks, routes and the next hop disagree."""
    local, at, domain = address.rpartition("@")
    if at and domain.endswith(".") and not domain.startswith("["):
        return f"{local}@{domain[:-1]}"
    return address


def address_problem(address: str) -> str | None:
    """Why an (already normalised) MAIL FROM or RCPT TO address is refused, or None."""
    why = control_problem(address)
    if why:
        return why
    if any("\udc80" <= c <= "\udcff" for c in address):
        return "address is not valid UTF-8"
    local, at, domain = address.rpartition("@")
    if not at:
        # RFC 5321 4.1.1.3: <postmaster> alone is a valid recipient.
        return None if address.lower() == "postmaster" else "address has no domain"
    if not local:
        return "empty local part"
    if _octets(local) > MAX_LOCAL_PART:
        return f"local part longer than {MAX_LOCAL_PART} octets"
    return domain_problem(domain)


def load_recipients(path: Path) -> frozenset[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"[smtp] recipients_file {path}: {exc}") from exc
    return frozenset(x.strip().lower() for x in lines if x.strip() and not x.startswith("#"))


S451_BACKLOG_FULL = "451 4.3.1 Delivery backlog full, try again later"


class GatewayHandler:
    """aiosmtpd handler: relay rules, limits, and the scan-then-spool DATA path."""

    def __init__(self, config: Config, scanner: Scanner | ScannerRef | None, spool: Spool,
                 on_spooled: Callable[..., None] = lambda _id, *_: None,
                 on_rejected: Callable[[dict[str, Any]], None] = lambda _data: None,
                 io_executor: concurrent.futures.Executor | None = None,
                 spool_state: str = "incoming",
                 on_verdict: Callable[[Any], object] | None = None,
                 backlog_full: Callable[[], bool] = lambda: False,
                 internal_guard: Any = None) -> None:
        self.config = config
        # [internal]: the account guard (mailmoat.internal.guard.InternalGuard) that refuses
        # suspended accounts' mail at MAIL (SMTP AUTH) or DATA (header or envelope
        # identity); None when the feature is off. `identity_header` is stripped from the
        # mail of every client outside trusted_networks whether or not the guard runs.
        self.internal = internal_guard
        self.identity_header = config.section("internal", InternalSettings).identity_header
        # The delivery side's backlog ([delivery] max_backlog): while it is full, MAIL FROM
        # gets 451 4.3.1 and the sending MTA keeps the mail (app.build passes
        # DeliveryManager.backlog_full; a count, so asking costs nothing).
        self.backlog_full = backlog_full
        # "active" when this process's delivery takes every message from `on_spooled`
        # (app.build): the message is then claimed by the write itself.
        self.spool_state = spool_state
        # Shared with delivery (app.build passes one ScannerRef to both).
        self.scanner_ref = ScannerRef.of(scanner)
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

    @property
    def scanner(self) -> Scanner | None:
        return self.scanner_ref.current  # type: ignore[no-any-return]

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

    async def handle_HELO(self, server: SMTP, session: Any, envelope: Any, hostname: str) -> str:
        why = helo_problem(hostname)
        if why:
            session.host_name = None  # MAIL now needs a valid greeting first (503)
            return R.S501_BAD_HELO.format(reason=why)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        why = helo_problem(hostname)
        if why:
            session.host_name = None
            return [R.S501_BAD_HELO.format(reason=why)]
        session.host_name = hostname
        if self.users is None:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        # aiosmtpd reads commands strictly in order, so pipelined clients are served
        # correctly; it just does not say so.
        responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: SMTP, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if self.backlog_full():
            log.warning("delivery backlog full; MAIL from %s deferred", _peer_ip(session))
            return S451_BACKLOG_FULL
        if address != NULL_SENDER:
            address = normalise_address(address)
            why = address_problem(address)
            if why:
                return R.S553_BAD_SENDER.format(reason=why)
        if self.internal is not None and session.authenticated \
                and isinstance(session.auth_data, LoginPassword):
            # [internal] A suspended account is refused here, before it sends anything.
            login = session.auth_data.login.decode("utf-8", "replace")
            refusal = await self.internal.refusal(auth_account(login), time.time())
            if refusal:
                log.info("MAIL from suspended account %s (%s) refused", login,
                         _peer_ip(session))
                return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        address = normalise_address(address)
        why = address_problem(address)
        if why:
            return R.S553_BAD_RECIPIENT.format(reason=why)
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
        raw: bytes = envelope.original_content
        if isinstance(server, GatewaySMTP):
            server.data_received_in_full()
            if not server.hold_in_transit(len(raw)):
                return R.S451_TOO_MUCH_IN_TRANSIT
        started = time.monotonic()
        mid = new_message_id()
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
        raw, sender, refusal = await self._internal_gate(raw, env)
        if refusal:
            self._intake_line({"id": mid}, ip, mail_from, rcpts, raw, started,
                              "reject" if refusal.startswith("5") else "tempfail", refusal[:9])
            return refusal
        outcome = None
        if self.scanner is not None:
            try:
                outcome = await self.scanner.scan(raw, env)
            except Exception:  # the scan is ours to fix; the mail is still taken and kept
                log.exception("scan of %s failed; spooling it unscanned", mid)
        data = message_log_data(mailmoat_id=mid, envelope=env, outcome=outcome,
                                node=self.config.smtp.hostname)
        judged = outcome.result.facts.internal if outcome is not None else None
        if sender is not None:
            data["sender_account"] = sender.account  # [internal] incidents list by it
        if judged is not None and judged.action in ("defer", "refuse"):
            # [internal] Throttled or suspended: nothing is spooled (nor learned from: a
            # deferred message comes back); on 4xx the upstream keeps the mail and retries,
            # on 5xx it bounces it to the sender.
            self._intake_line(data, ip, mail_from, rcpts, raw, started,
                              "reject" if judged.reply.startswith("5") else "tempfail",
                              judged.reply[:9])
            return judged.reply
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
                reply = R.S550_REJECTED.format(reason=_one_line(why))
                self._intake_line(data, ip, mail_from, rcpts, raw, started, "reject",
                                  reply[:9])
                return reply
            delivered, handover = prepare_delivery(outcome, raw, mailmoat_id=mid,
                                                   received=received, log=data,
                                                   config=self.config)
            rcpts = rcpts + extra_recipients(handover.plan, rcpts)  # review copies
        else:  # delivery scans it before it goes anywhere (relay.deliver)
            delivered = raw
            handover = Handover(plan={r: "deliver" for r in rcpts}, log=data,
                                received=received)
        entry = SpoolEntry(id=mid, mail_from=mail_from, rcpt_tos=rcpts, received_at=env.received_at,
                           client_ip=ip, helo=env.helo or "", auth_user=auth_user,
                           direction=direction.value, scanned=outcome is not None,
                           handover=handover)
        try:
            await asyncio.get_running_loop().run_in_executor(self.io_executor, self.spool.put,
                                                             entry, delivered, self.spool_state)
        except Exception:
            log.exception("spooling %s failed", mid)
            self._intake_line(data, ip, mail_from, rcpts, raw, started, "tempfail",
                              R.S451_SPOOL_FAILED[:9])
            return R.S451_SPOOL_FAILED
        self._intake_line(data, ip, mail_from, rcpts, raw, started,
                          None if outcome is not None else "unscanned")
        if outcome is not None:
            self._verdict(outcome)
        # The delivery side gets the entry and bytes in memory, so it does not read back
        # and re-parse what was just written (the spool copy is the durable one).
        if self.spool_state == "active":
            self.on_spooled(mid, entry, delivered)
        else:
            self.on_spooled(mid)
        return R.S250_QUEUED.format(id=mid)

    async def _internal_gate(self, raw: bytes, env: Envelope
                             ) -> tuple[bytes, SenderIdentity | None, str | None]:
        """[internal] at DATA: the message without an identity header it may not carry, its
        sending account, and the reply refusing it when that account is suspended."""
        name = self.identity_header
        trusted = self.is_trusted(env.client_ip or "")
        if name and not trusted and name.lower() != RECEIVED:
            raw, n = strip_header(raw, name)
            if n:
                log.warning("%s header from untrusted client %s removed (%d field%s): only "
                            "[smtp] trusted_networks may name the sender", name,
                            env.client_ip, n, "" if n == 1 else "s")
        if self.internal is None or env.direction is Direction.INBOUND:
            return raw, None, None
        try:
            sender = resolve_identity(env, lambda h: header_value(raw, h), identity_header=name,
                                      trusted=trusted, internal_domains=self.internal_domains)
            if sender is None or sender.source == "smtp_auth":  # AUTH was asked at MAIL
                return raw, sender, None
            return raw, sender, await self.internal.refusal(sender.account, env.received_at)
        except Exception:  # the guard is ours to fix; the mail goes on to be scanned
            log.exception("internal: identity of a message from %s failed", env.client_ip)
            return raw, None, None

    @staticmethod
    def _intake_line(data: dict[str, Any], ip: str, mail_from: str, rcpts: list[str],
                     raw: bytes, started: float, action: str | None = None,
                     code: str | None = None) -> None:
        """The mail log's line for this message (maillog.intake); never in the way."""
        try:
            maillog.intake(data, client=ip, mail_from=mail_from, rcpts=len(rcpts),
                           size=len(raw), ms=(time.monotonic() - started) * 1000,
                           action=action, code=code)
        except Exception:
            log.exception("mail log line for %s failed", data.get("id"))

    def _verdict(self, outcome: Any) -> None:
        if self.on_verdict is None:
            return
        try:
            self.on_verdict(outcome)
        except Exception:  # bookkeeping only: never in the way of the reply
            log.exception("verdict hook failed")


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with connection limits, a cap on bytes in transit, a DATA deadline,
    control characters refused at the edge, and enhanced codes."""

    def __init__(self, handler: GatewayHandler, *, limiter: ConnectionLimiter,
                 data_timeout: float, max_line_length: int,
                 process_limits: ProcessLimits | None = None, **kwargs: Any) -> None:
        # aiosmtpd sizes its stream buffer from this attribute in __init__.
        self.line_length_limit = max_line_length + 2
        super().__init__(handler, **kwargs)
        self.limiter = limiter
        self.process_limits = process_limits or ProcessLimits()
        self.data_timeout = data_timeout
        self._in_data = False
        self._in_transit = 0  # bytes this connection holds of process_limits' budget

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every MAIL/RCPT address with the RFC 5322 header parser, which
        # costs about a millisecond; plain `<local@domain>` (nearly all mail) is matched
        # here, anything else still goes through the full parser.
        m = _PLAIN_ADDR.match(arg) if arg else None
        if m is None:
            try:
                return super()._getaddr(arg)
            except (IndexError, ValueError):
                # The stdlib parser raises on a lone `"` or `<` (`MAIL FROM:<`), and aiosmtpd
                # only catches HeaderParseError: no address, so aiosmtpd answers 501 Syntax.
                return None, None
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

    async def _refuse_connection(self, reply: str) -> None:
        await self.push(reply)
        if self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        assert self.session is not None
        ip = _peer_ip(self.session)
        if not self.process_limits.open():
            log.warning("connection cap of %d reached; refusing %s",
                        self.process_limits.max_connections, ip)
            await self._refuse_connection(R.S421_SERVER_BUSY)
            return
        try:
            if self.event_handler.is_trusted(ip):
                # Our own mail server relaying its queue opens many connections at once
                # (Postfix: up to 20 per destination); a per-client cap would only defer
                # company mail. Postfix exempts $mynetworks likewise
                # (smtpd_client_event_limit_exceptions); the process-wide cap still holds.
                await super()._handle_client()
                return
            lease = await self.limiter.acquire(ip)
            if lease is None:
                log.info("connection limit reached for %s", ip)
                await self._refuse_connection(R.S421_TOO_MANY_CONNECTIONS)
                return
            try:
                await super()._handle_client()
            finally:
                await self.limiter.release(ip, lease)
        finally:
            self.process_limits.close()

    async def _refuse_controls(self, command: str, arg: str | None) -> bool:
        """Control characters anywhere in HELO/EHLO/MAIL/RCPT: refused before parsing."""
        why = control_problem(arg) if arg else None
        if why is None:
            return False
        log.info("%s with a control character from %s refused", command,
                 _peer_ip(self.session))
        await self.push(R.S501_BAD_HELO.format(reason=why) if command in ("HELO", "EHLO")
                        else R.S501_BAD_ARGUMENT.format(reason=why))
        return True

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._refuse_controls("HELO", hostname):
            await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._refuse_controls("EHLO", hostname):
            await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._refuse_controls("MAIL", arg):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._refuse_controls("RCPT", arg):
            await super().smtp_RCPT(arg)

    def hold_in_transit(self, n: int) -> bool:
        """Re-size this connection's share of the bytes in transit to the message's real
        size; False (the caller answers 451) when a client that declared less would push
        the process past its cap."""
        self.process_limits.free(self._in_transit)
        self._in_transit = 0
        if not self.process_limits.reserve(n):
            return False
        self._in_transit = n
        return True

    def _reserve_for_data(self) -> bool:
        env = self.envelope
        if env is None or not env.mail_from or not env.rcpt_tos:
            return True  # aiosmtpd answers 503; nothing will be read
        # The declared SIZE is what the client will send; without one, assume the worst.
        declared = next((int(o[5:]) for o in env.mail_options
                         if o.startswith("SIZE=") and o[5:].isdigit()), None)
        n = declared if declared is not None else (self.data_size_limit or 0)
        return self.hold_in_transit(n)

    async def smtp_DATA(self, arg: str) -> None:
        if not self._reserve_for_data():
            log.warning("bytes in transit at the cap (%d); DATA from %s deferred",
                        self.process_limits.max_bytes, _peer_ip(self.session))
            await self.push(R.S451_TOO_MUCH_IN_TRANSIT)
            return
        # aiosmtpd's idle timer restarts only on commands; the DATA phase gets its own budget.
        self._in_data = True
        self._reset_timeout(self.data_timeout)
        try:
            await super().smtp_DATA(arg)
        finally:
            self._in_data = False
            # Spooled (or refused) by now: the bytes are no longer this connection's.
            self.hold_in_transit(0)
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

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # RFC 3207: TLS is negotiated once per connection. aiosmtpd would start a second
        # handshake inside the first one (layering TLS in TLS) instead of refusing.
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport else None
        if self._tls_protocol is not None or ssl_object is not None:
            await self.push("503 5.5.1 TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A failed handshake is the client's problem and routine: one line, no traceback.
            # aiosmtpd closes the connection itself; the reply is never sent.
            log.warning("STARTTLS handshake with %s failed: %s", _peer_ip(self.session),
                        handshake_failure(error))
            return "454 4.7.0 TLS handshake failed"
        return await super().handle_exception(error)


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
    # One per listener (so per process): it guards this process's sockets and memory.
    process_limits = ProcessLimits(max_connections=smtp.max_connections,
                                   max_bytes=smtp.max_bytes_in_transit)

    def factory() -> GatewaySMTP:
        return GatewaySMTP(
            handler, limiter=limiter, data_timeout=smtp.data_timeout,
            process_limits=process_limits,
            max_line_length=smtp.max_line_length, data_size_limit=smtp.max_message_size,
            enable_SMTPUTF8=True, decode_data=False, hostname=smtp.hostname,
            ident="mailmoat ESMTP", tls_context=tls_context, timeout=smtp.command_timeout,
            auth_require_tls=smtp.require_tls_for_auth, authenticator=handler.authenticate,
            loop=loop)

    if sock is not None:
        return await loop.create_server(factory, sock=sock)
    host, port = listen_address("[smtp] listen", smtp.listen)
    try:
        return await loop.create_server(factory, host=host, port=port, reuse_address=True)
    except OSError as exc:  # one line that says what to change, not a traceback
        raise bind_error("[smtp] listen", smtp.listen, exc) from None


__all__ = ["GatewayHandler", "GatewaySMTP", "start_smtp_server"]
