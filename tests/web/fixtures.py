"""Seed data for the web tests: accounts, message-log rows, delivery events, quarantine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mailmoat.config import Config, config_from_dict
from mailmoat.store.db import Database
from mailmoat.store.models import DeliveryEventRow, MessageRow, RecipientRow
from mailmoat.store.quarantine import quarantine_message
from mailmoat.web.auth import create_token, create_user
from tests.conftest import make_email

PASSWORD = "correct horse battery"

HOSTILE_HTML = """<html><head>
<meta http-equiv="refresh" content="0;url=http://127.0.0.1:9/refresh">
<link rel="stylesheet" href="http://127.0.0.1:9/evil.css">
<style>@import url(http://127.0.0.1:9/import.css); body{background:url(http://127.0.0.1:9/bg.png)}</style>
<script>window.top.__pwned = 1; fetch('http://127.0.0.1:9/xhr');</script>
<base href="http://127.0.0.1:9/">
</head><body onload="window.top.__pwned = 2">
<p>Dear customer, <b>verify</b> your account.</p>
<img src="http://127.0.0.1:9/track.gif" onerror="window.top.__pwned = 3">
<img src="x" onerror="window.top.__pwned = 4">
<div style="background-image:url('http://127.0.0.1:9/div.png')">styled</div>
<form action="http://127.0.0.1:9/steal" method="post"><input name="password"><button>Log in</button></form>
<iframe src="http://127.0.0.1:9/frame"></iframe>
<object data="http://127.0.0.1:9/obj"></object>
<svg><script>window.top.__pwned = 5</script></svg>
<a href="javascript:window.top.__pwned=6">click</a>
<video src="http://127.0.0.1:9/v.mp4" autoplay></video>
</body></html>"""


@dataclass
class Seeded:
    config: Config
    db: Database
    tokens: dict[str, str] = field(default_factory=dict)  # role name -> bearer token
    ids: dict[str, str] = field(default_factory=dict)  # label -> mailmoat id
    users: dict[str, str] = field(default_factory=dict)  # role name -> email


def make_env(data_dir: Path, database_url: str = "", **extra: Any) -> tuple[Config, Database]:
    data: dict[str, Any] = {"storage": {"data_dir": str(data_dir), "database_url": database_url},
                            "scan": {"network": False}}
    data.update(extra)
    config = config_from_dict(data)
    db = Database(config.database_url)
    import mailmoat.store.webmodels  # noqa: F401

    db.create_schema()
    return config, db


def add_message(config: Config, db: Database, mid: str, *, rcpts: list[str], sender: str = "spammer@bad.test",
                subject: str = "Hello", category: str = "spam", action: str = "quarantine",
                score: float = 12.0, when: datetime | None = None, status: str | None = None,
                raw: bytes | None = None, hold: bool = False, direction: str = "inbound",
                symbols: list[dict[str, Any]] | None = None, client_ip: str = "192.0.2.10",
                message_id: str = "", bulk_level: int | None = None) -> str:
    when = when or datetime.now(UTC)
    status = status or ("quarantined" if action == "quarantine" else "delivered")
    with db.session() as s:
        s.add(MessageRow(
            id=mid, received_at=when, direction=direction, client_ip=client_ip, client_name="mail.bad.test",
            helo="mail.bad.test", mail_from=sender, from_header=sender, from_domain=sender.split("@")[1],
            subject=subject, message_id=message_id or f"<{mid}@bad.test>", size=1234, score=score,
            action=action, category=category, bulk_level=bulk_level,
            reason=f"score {score:g} reaches the {action} threshold",
            symbols=symbols if symbols is not None else [
                {"name": "GTUBE", "score": score, "category": category, "group": "gtube",
                 "reason": "the body contains the GTUBE test string"},
                {"name": "URL_PHISH_TEXT_MISMATCH", "score": 2.5, "category": "phishing", "group": "urls",
                 "reason": "link text shows paypal.com but points to 203.0.113.7"}],
            headers={"Authentication-Results": "mx.example.test; spf=fail"}, scan_ms=42.0,
            urls=["http://203.0.113.7/login"], url_domains=["203.0.113.7"], attachments=[],
            recipients=[RecipientRow(address=r, domain=r.split("@")[1], action=action, status=status,
                                     attempts=1 if status == "delivered" else 0,
                                     last_response="250 2.0.0 Ok" if status == "delivered" else "")
                        for r in rcpts]))
        s.flush()
        if status == "delivered":
            for r in rcpts:
                s.add(DeliveryEventRow(message_id=mid, address=r, at=when + timedelta(seconds=1),
                                       status="deferred", response="451 4.7.1 try later"))
                s.add(DeliveryEventRow(message_id=mid, address=r, at=when + timedelta(seconds=61),
                                       status="delivered", response="250 2.0.0 Ok queued"))
    if hold:
        raw = raw or make_email(subject=subject, sender=sender, to=", ".join(rcpts))
        quarantine_message(config, db, mid, raw, sender, rcpts, rcpts)
    return mid


def seed(data_dir: Path, database_url: str = "", **extra: Any) -> Seeded:
    config, db = make_env(data_dir, database_url, **extra)
    sd = Seeded(config=config, db=db)
    specs = {"admin": ("admin@corp.test", "admin", []),
             "dadmin": ("postmaster@a.test", "domain_admin", ["a.test"]),
             "alice": ("alice@a.test", "user", []),
             "bob": ("bob@b.test", "user", [])}
    for name, (email, role, doms) in specs.items():
        u = create_user(db, email, role, PASSWORD, doms)
        sd.tokens[name] = create_token(db, u.id, "test")
        sd.users[name] = email
    now = datetime.now(UTC)
    sd.ids["spam_alice"] = add_message(config, db, "m0001spamalice", rcpts=["alice@a.test"],
                                       subject="Cheap pills", hold=True, when=now - timedelta(minutes=50))
    sd.ids["phish_bob"] = add_message(config, db, "m0002phishbob", rcpts=["bob@b.test"], category="phishing",
                                      subject="Verify your account", hold=True, when=now - timedelta(minutes=40))
    sd.ids["clean_alice"] = add_message(config, db, "m0003cleanalice", rcpts=["alice@a.test", "carol@a.test"],
                                        sender="partner@good.test", category="clean", action="accept",
                                        score=0.5, subject="Meeting notes", when=now - timedelta(minutes=30),
                                        symbols=[], message_id="<notes-42@good.test>", client_ip="198.51.100.7")
    sd.ids["hostile"] = add_message(
        config, db, "m0004hostile", rcpts=["alice@a.test"], category="phishing", subject="Account locked",
        hold=True, when=now - timedelta(minutes=20),
        raw=make_email(subject="Account locked", to="alice@a.test", body="Plain text part: verify now.",
                       html=HOSTILE_HTML))
    sd.ids["malware_alice"] = add_message(config, db, "m0005malware", rcpts=["alice@a.test"], category="malware",
                                          subject="Invoice attached", hold=True, when=now - timedelta(minutes=10))
    sd.ids["shared"] = add_message(config, db, "m0006shared", rcpts=["alice@a.test", "bob@b.test"],
                                   subject="For both of you", hold=True, when=now - timedelta(minutes=5))
    return sd
