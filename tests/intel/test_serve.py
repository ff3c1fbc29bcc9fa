"""`mailmoat serve` with a TAXII feed (the contract): mail delivered through the gateway to
three mailboxes, then an indicator for its link published on a real TAXII server; the
gateway's poller picks it up, the retro-hunt finds every delivered copy and hands it to
recall as an automatic recall, and new mail with that link is refused."""

from __future__ import annotations

import smtplib
import time

import pytest
from sqlalchemy import select

from mailmoat.store.db import Database
from mailmoat.store.models import IntelHuntRow, MessageRow, RecipientRow
from tests.conftest import make_email, wait_for
from tests.e2e.gateway_proc import (
    CountingSink,
    free_port,
    start_gateway,
    start_sink_thread,
    stop_gateway,
    write_config,
)
from tests.intel.conftest import stix_indicator

LURE = "https://docs-share.lure-example.test/open?id=42"
RCPTS = ["ann@example.test", "bob@example.test", "cy@example.test"]
POLL = 2


@pytest.mark.slow
def test_serve_polls_taxii_hunts_delivered_copies_and_blocks_new_mail(tmp_path, taxii):
    (tmp_path / "taxii.secret").write_text("reader-secret")
    sink = start_sink_thread(CountingSink())
    port = free_port()
    cfg = write_config(tmp_path, port, sink.port, extra=f"""
[content]
enabled = false

[deep]
mode = "off"

[intel]
refresh_interval = 1

[[intel.feeds]]
name = "local-taxii"
kind = "taxii"
url = "{taxii.root}"
collection = "{taxii.collection}"
user = "reader"
password_file = "{tmp_path / 'taxii.secret'}"
poll_interval = {POLL}
auto_recall_confidence = 70
lookback_days = 14
""")
    proc = start_gateway(cfg, port, tmp_path / "serve.log")
    db = Database(f"sqlite:///{tmp_path / 'data' / 'mailmoat.db'}")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.sendmail("news@partner.example", RCPTS,
                       make_email(subject="Shared document", body=f"Open it: {LURE}",
                                  to=", ".join(RCPTS)))

        def delivered():  # type: ignore[no-untyped-def]
            with db.session() as s:
                rows = s.execute(select(MessageRow.id, RecipientRow.address)
                                 .join(RecipientRow, RecipientRow.message_id == MessageRow.id)
                                 .where(MessageRow.subject == "Shared document",
                                        RecipientRow.delivered_at.is_not(None))).all()
            return rows if len(rows) == 3 else None

        rows = wait_for("three delivered copies", delivered, 60)
        mailmoat_id = rows[0][0]

        published = time.monotonic()
        taxii.publish(stix_indicator("7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910",
                                     f"[url:value = '{LURE}']", confidence=85))

        def hunted():  # type: ignore[no-untyped-def]
            with db.session() as s:
                return s.scalars(select(IntelHuntRow).where(
                    IntelHuntRow.status.in_(("handed", "failed")))).first()

        hunt = wait_for("the retro-hunt", hunted, 2 * POLL + 60)
        assert time.monotonic() - published < 2 * POLL + 60
        assert hunt.feed == "local-taxii" and hunt.mode == "auto" and hunt.confidence == 85
        assert hunt.message_ids == [mailmoat_id]
        assert sorted(a for _, a in hunt.recipients) == RCPTS
        # handed to recall when it is installed; otherwise kept, with the reason, for later
        assert hunt.status == "handed" or "recall" in hunt.error

        def refused():  # type: ignore[no-untyped-def]
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                    c.sendmail("news@partner.example", ["ann@example.test"],
                               make_email(subject="Again", body=f"Open it: {LURE}"))
            except smtplib.SMTPDataError as exc:
                return exc
            return None

        exc = wait_for("the gateway to refuse the listed link", refused, 30)
        assert exc.smtp_code == 550
    finally:
        db.dispose()
        stop_gateway(proc)
        sink.stop()
