"""`mailmoat doctor`: is every component the configuration uses actually there?

Each check looks at one component the way the gateway will use it (the same settings, the
same loaders) and answers ok, warn or fail with a sentence and, when not ok, the command or
setting that fixes it. `serve` runs the checks marked `fatal` before it opens a socket: a
configured part that cannot load (a missing model, an unreadable certificate, a database it
cannot reach) stops the start with that sentence instead of every message later carrying a
`<FAMILY>_FAIL` symbol nobody reads. Things the gateway survives (clamd down, downstream
down, DNS slow) are warnings: mail waits in the spool or the check degrades as documented.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mailmoat.config import Config

__all__ = ["Finding", "run_checks", "fatal_problems"]

Status = Literal["ok", "warn", "fail"]
NETWORK_TIMEOUT = 3.0
TIER2_FIX = ('reinstall mailmoat (pip install --force-reinstall mailmoat, or scripts/setup-venv '
             'from a checkout): the weights ship inside the package; or set [deep] mode = "off"')


@dataclass(frozen=True, slots=True)
class Finding:
    component: str
    status: Status
    detail: str
    fix: str = ""
    fatal: bool = False  # a fail here stops `serve`


def _data_dir(cfg: Config) -> Finding:
    d = cfg.data_dir
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Finding("data_dir", "fail", f"{d} is not writable: {exc.strerror or exc}",
                       "create it and give the gateway's user write access, or set "
                       "[storage] data_dir", fatal=True)
    return Finding("data_dir", "ok", f"{d} is writable")


def _database(cfg: Config) -> Finding:
    from sqlalchemy import text

    from mailmoat.store import migrate
    from mailmoat.store.db import make_engine

    url = cfg.database_url
    shown = url.split("@")[-1] if "@" in url else url  # never a password
    try:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            current = migrate.current_revision(engine)
        finally:
            engine.dispose()
    except Exception as exc:
        return Finding("database", "fail", f"cannot use {shown}: {str(exc).splitlines()[0]}",
                       "check [storage] database_url and that the server is running",
                       fatal=True)
    head = migrate.head_revision()
    if current != head:
        return Finding("database", "ok", f"{shown} reachable; schema {current or 'empty'} "
                       f"is brought to {head} when serve starts")
    return Finding("database", "ok", f"{shown} at schema {head}")


def _tier1(cfg: Config) -> Finding:
    from mailmoat.ml.learn import base_model_path
    from mailmoat.ml.model import ContentModel
    from mailmoat.ml.scoring import ContentSettings

    settings = cfg.section("content", ContentSettings)
    if not settings.enabled:
        return Finding("content model (tier 1)", "ok", "disabled ([content] enabled = false)")
    path = base_model_path(cfg, settings)
    try:
        ContentModel.load(path)
    except Exception as exc:
        return Finding("content model (tier 1)", "fail", f"{path} cannot be loaded: {exc}",
                       "set [content] model_path to a model file (mailmoat train), or "
                       "reinstall mailmoat to restore the bundled one", fatal=True)
    return Finding("content model (tier 1)", "ok", f"{path.name} loads")


def _tier2(cfg: Config) -> Finding:
    from mailmoat.scan.deep import DeepSettings

    settings = cfg.section("deep", DeepSettings)
    name = "deep model (tier 2)"
    if settings.mode == "off" or "deep" in cfg.scan.disabled_checks:
        return Finding(name, "ok", "off")
    if settings.model_dir:
        mdir = cfg.resolve_path(settings.model_dir)
    else:
        from mailmoat.ml.deep.encoder import default_model_dir

        mdir = default_model_dir()
    missing = [f for f in ("model.safetensors", "tokenizer.json") if not (mdir / f).is_file()]
    if missing:
        return Finding(name, "fail", f"{mdir} lacks {', '.join(missing)}",
                       "point [deep] model_dir at an all-MiniLM-L6-v2 folder, or "
                       + TIER2_FIX, fatal=True)
    try:
        from mailmoat.ml.deep.head import Head

        Head.load(str(cfg.resolve_path(settings.head_path)) if settings.head_path else None)
    except Exception as exc:
        return Finding(name, "fail", f"the head cannot be loaded: {exc}",
                       "set [deep] head_path to a trained head (.npz), or empty for the "
                       "bundled one", fatal=True)
    return Finding(name, "ok", f"weights in {mdir}, mode {settings.mode}")


def _tls(cfg: Config) -> Finding:
    from mailmoat.errors import MailmoatError
    from mailmoat.smtp.tls import server_context

    if not cfg.smtp.tls_cert:
        return Finding("TLS", "ok", "self-signed certificate in data_dir (set [smtp] tls_cert "
                       "for a real one)")
    try:
        server_context(cfg)
    except MailmoatError as exc:
        return Finding("TLS", "fail", str(exc), "fix [smtp] tls_cert / tls_key", fatal=True)
    return Finding("TLS", "ok", f"{cfg.smtp.tls_cert} loads")


def _clamd(cfg: Config) -> Finding:
    from mailmoat.scan.antivirus import AntivirusSettings, ClamdClient, ClamdError

    settings = cfg.section("antivirus", AntivirusSettings)
    if not settings.clamd:
        return Finding("antivirus", "warn", "off: no [antivirus] clamd is configured, so "
                       "only YARA rules and known hashes catch malware",
                       'install clamav-daemon and set [antivirus] clamd = '
                       '"unix:/run/clamav/clamd.ctl"')
    client = ClamdClient(settings.clamd, timeout=NETWORK_TIMEOUT,
                         connect_timeout=NETWORK_TIMEOUT)
    try:
        version = asyncio.run(client.version())
    except (ClamdError, OSError) as exc:
        how = "quarantines" if settings.fail_closed else "delivers with AV_UNAVAILABLE"
        return Finding("antivirus", "warn", f"clamd does not answer ({exc}); meanwhile the "
                       f"gateway {how} what it cannot scan", "start clamd (service "
                       "clamav-daemon start) or fix [antivirus] clamd")
    return Finding("antivirus", "ok", f"clamd answers: {version}")


def _redis(cfg: Config) -> Finding:
    if not cfg.redis.url:
        return Finding("redis", "ok", "not configured: counters are per process")
    import redis

    shown = cfg.redis.url.split("@")[-1]
    try:
        client = redis.Redis.from_url(cfg.redis.url, socket_timeout=NETWORK_TIMEOUT,
                                      socket_connect_timeout=NETWORK_TIMEOUT)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return Finding("redis", "fail", f"{shown} does not answer: {exc}",
                       "start Redis or fix [redis] url", fatal=True)
    return Finding("redis", "ok", f"{shown} answers")


def _dns(cfg: Config) -> Finding:
    if not cfg.scan.network:
        return Finding("dns", "ok", "network look-ups off ([scan] network = false)")
    import dns.exception
    import dns.resolver

    from mailmoat.dns import DnsSettings, parse_nameserver

    settings = cfg.section("dns", DnsSettings)
    resolver = dns.resolver.Resolver(configure=not settings.nameservers)
    if settings.nameservers:
        hosts = [parse_nameserver(n) for n in settings.nameservers]
        resolver.nameservers = [h for h, _ in hosts]
        resolver.port = hosts[0][1]
    resolver.lifetime = NETWORK_TIMEOUT
    try:
        resolver.resolve("example.com", "NS")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        pass  # an answer, if an odd one: the resolver is there
    except dns.exception.DNSException as exc:
        return Finding("dns", "warn", f"the resolver does not answer ({exc.__class__.__name__}):"
                       " SPF, DKIM, DMARC and DNSBL checks will time out",
                       "set [dns] nameservers to a resolver the gateway may use, or "
                       "[scan] network = false")
    return Finding("dns", "ok", "the resolver answers")


def _downstream(cfg: Config) -> Finding:
    from mailmoat.relay.routes import parse_hostport

    targets = {cfg.delivery.downstream, *cfg.delivery.routes.values()}
    down = []
    for target in sorted(t for t in targets if t):
        host, port = parse_hostport(target)
        try:
            with socket.create_connection((host, port), timeout=NETWORK_TIMEOUT) as s:
                s.settimeout(NETWORK_TIMEOUT)
                banner = s.recv(512)
            if not banner.startswith(b"220"):
                down.append(f"{target} answers {banner[:40]!r}, not an SMTP greeting")
        except OSError as exc:
            down.append(f"{target} cannot be reached ({exc.strerror or exc})")
    if down:
        return Finding("downstream", "warn", "; ".join(down) + ": accepted mail waits in the "
                       "spool and is retried", "start the mail server or fix [delivery] "
                       "downstream / routes")
    return Finding("downstream", "ok", ", ".join(sorted(t for t in targets if t)) + " greet")


CHECKS: tuple[Callable[[Config], Finding], ...] = (
    _data_dir, _database, _tier1, _tier2, _tls, _clamd, _redis, _dns, _downstream)
# What `serve` runs before it starts: the parts it cannot work without. Network services it
# survives (clamd, DNS, the downstream) are left to their own warnings at run time.
FATAL_CHECKS: tuple[Callable[[Config], Finding], ...] = (_data_dir, _tier1, _tier2, _tls)


def _guarded(check: Callable[[Config], Finding], cfg: Config) -> Finding:
    try:
        return check(cfg)
    except Exception as exc:  # a doctor that crashes tells nobody anything
        name = check.__name__.strip("_")
        return Finding(name, "fail", f"the check itself failed: {exc}", fatal=True)


def run_checks(cfg: Config) -> list[Finding]:
    return [_guarded(check, cfg) for check in CHECKS]


def fatal_problems(cfg: Config) -> list[Finding]:
    """The failures that must stop `serve`, each with its fix."""
    return [f for f in (_guarded(c, cfg) for c in FATAL_CHECKS)
            if f.status == "fail" and f.fatal]
