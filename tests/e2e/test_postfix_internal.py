"""mailmoat as the smarthost of a real Postfix that authenticates its users (SASL through a
test Dovecot) and names them in its Received field (`smtpd_sasl_authenticated_header`):
one account's burst gets it suspended with 4xx, Postfix keeps the rest queued, an
administrator releases the account in the console (headless Chromium) and the queued
mail flows, nothing lost.
The same Received comment from a client outside `trusted_networks` names no account."""

from __future__ import annotations

import asyncio
import random
import shutil
import smtplib
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import select

from mailmoat.app import build
from mailmoat.evaluation.dovecot import USER_PASSWORD, dovecot_available, running_dovecot
from mailmoat.store.models import MessageRow
from tests.conftest import make_email
from tests.e2e.postfix import PrivatePostfix, postfix_available
from tests.internal.helpers import held_count, lure, ordinary_text, settle
from tests.smtp.helpers import Sink, free_port, gateway_config, port_of, running_gateway, start_sink
from tests.web.fixtures import PASSWORD
from tests.web.test_browser import ARGS, CHROMIUM, login

pytestmark = [pytest.mark.postfix, pytest.mark.browser, pytest.mark.slow]

MALLORY, ALICE = "mallory@example.test", "alice@example.test"
BURST = 150


@pytest.fixture
def sasl_dovecot():
    why = dovecot_available() or postfix_available() or \
        (None if Path(CHROMIUM).exists() else "Debian chromium is not installed")
    if why:
        pytest.skip(why)
    with running_dovecot([MALLORY, ALICE]) as dc:
        yield dc


def company_postfix(root: Path, gateway_port: int, sasl_socket: Path) -> PrivatePostfix:
    """The company's mail server: SASL-authenticated users only, every message to the
    smarthost (mailmoat), nothing delivered locally; deferred mail waits for a flush."""
    return PrivatePostfix(root, main={
        "mynetworks": "127.0.0.1/32",
        "virtual_mailbox_domains": "",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": str(sasl_socket),
        "smtpd_sasl_authenticated_header": "yes",
        "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
        "relayhost": f"[127.0.0.1]:{gateway_port}",
        "default_transport": "smtp",
        "relay_transport": "smtp",
        "smtp_dns_support_level": "disabled",
        "smtp_tls_security_level": "none",
        # Nothing retries by itself during the test: the flush after the release does.
        "minimal_backoff_time": "1h",
        "maximal_backoff_time": "2h",
        "queue_run_delay": "1h",
    })


def submit(port: int, account: str, items: list[tuple[str, str, str]]) -> None:
    """What a mail program does: log in to the company server and send each (rcpt,
    subject, body)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("laptop.example.test")
        c.login(account, USER_PASSWORD)
        for rcpt, subject, body in items:
            c.sendmail(account, [rcpt], make_email(subject=subject, body=body,
                                                   sender=f"<{account}>", to=rcpt))


def release_in_console(base: str, admin: str, account: str) -> str:
    """An administrator in headless Chromium: the Internal page, the account's Release
    button; returns the page's confirmation."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            login(page, base, admin)
            page.click("nav >> text=Internal")
            page.wait_for_load_state()
            row = page.locator("#restricted tr", has_text=account)
            assert row.count() == 1, page.inner_text("main")
            row.locator("button.release").click()
            page.wait_for_load_state()
            return page.inner_text("#flash")
        finally:
            browser.close()


def delivered_from(sink: Sink, account: str) -> int:
    return sum(1 for mail_from, _, _ in sink.messages if mail_from == account)


async def test_a_burst_through_postfix_is_held_in_its_queue_until_released(tmp_path, sasl_dovecot):
    import httpx

    from mailmoat.web.auth import create_token, create_user

    sink = Sink()
    server = await start_sink(sink)
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    cfg = gateway_config(tmp_path, port_of(server), **{
        "smtp": {"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test"]},
        "internal": {"identity_header": "Received"},
        "web": {"enabled": True, "listen": f"127.0.0.1:{web_port}"}})
    # Postfix's daemons run as `postfix`: not under pytest's root-only tmp dir.
    root = Path(tempfile.mkdtemp(prefix="mailmoat-postfix-"))
    try:
        gw = build(cfg)
        await gw.start(web=True)
        try:
            pf = company_postfix(root, gw.smtp_port, sasl_dovecot.sasl_socket)
            await asyncio.to_thread(pf.start)
            try:
                subject, body = lure("team")
                await asyncio.to_thread(submit, pf.port, MALLORY, [
                    (f"colleague{i}@example.test", subject, body) for i in range(BURST)])

                # Postfix has tried every message: each delivered, held by mailmoat (the one
                # that flagged the account) or deferred in Postfix's queue; none lost.
                def settled() -> bool:
                    q = pf.queued()
                    return not q.get("incoming") and not q.get("active") and \
                        delivered_from(sink, MALLORY) + held_count(gw.db, MALLORY) + \
                        q.get("deferred", 0) == BURST
                await settle(settled, timeout=120, what=(
                    "Postfix to try every message", lambda: (
                        f"queue {pf.queued()}, {delivered_from(sink, MALLORY)} delivered; "
                        f"{pf.log()[-2000:]}")))
                through = delivered_from(sink, MALLORY)
                assert through <= 30, f"{through} of the burst reached the mailboxes"
                held = held_count(gw.db, MALLORY)
                assert held == 1
                assert pf.queued()["deferred"] == BURST - through - held
                assert "451 4.7.1" in pf.log(), pf.log()[-3000:]

                # Everyone else's mail flows meanwhile.
                text = [ordinary_text(random.Random(i)) for i in range(3)]
                await asyncio.to_thread(submit, pf.port, ALICE, [
                    (f"colleague{i}@example.test", s, b) for i, (s, b) in enumerate(text)])
                await settle(lambda: delivered_from(sink, ALICE) == 3, timeout=60,
                             what="alice's ordinary mail")

                # The account was named by Postfix's Received comment, and is suspended.
                with gw.db.session() as s:
                    accounts = set(s.scalars(select(MessageRow.sender_account)
                                             .where(MessageRow.mail_from == MALLORY)))
                assert accounts == {MALLORY}

                admin = create_user(gw.db, "admin@example.test", "admin", PASSWORD)
                token = create_token(gw.db, admin.id, "e2e")
                async with httpx.AsyncClient(base_url=base,
                                             headers={"Authorization": f"Bearer {token}"}) as api:
                    r = await api.get(f"/api/v1/internal/accounts/{MALLORY}")
                    assert r.status_code == 200, r.text
                    assert r.json()["restriction"]["kind"] == "suspend", r.json()
                flash = await asyncio.to_thread(release_in_console, base, admin.email, MALLORY)
                assert f"Released {MALLORY}" in flash, flash

                # The queue flushed (as Postfix's own retry would): every deferred message
                # goes through now.
                assert (await asyncio.to_thread(pf.postqueue, "-f")).returncode == 0
                await settle(lambda: delivered_from(sink, MALLORY) == BURST - held, timeout=120,
                             what=("the queued burst to flow after the release", lambda: (
                                 f"queue {pf.queued()}, {delivered_from(sink, MALLORY)} "
                                 f"delivered; {pf.log()[-3000:]}")))
                assert not pf.queued()
            finally:
                await asyncio.to_thread(pf.stop)
        finally:
            await gw.stop()
            gw.db.dispose()
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


async def test_the_postfix_received_comment_from_an_untrusted_client_names_no_account(tmp_path):
    sink = Sink()
    server = await start_sink(sink)
    cfg = gateway_config(tmp_path, port_of(server), **{
        "smtp": {"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test"]},
        "internal": {"identity_header": "Received"}})
    try:
        async with running_gateway(cfg) as gw:
            forged = ("from laptop (laptop [192.0.2.7]) (Authenticated sender: "
                      f"{ALICE}) by mail.example.test (Postfix) with ESMTPSA id 4AbC")

            def send(source: str, mail_from: str) -> None:
                # 127.0.0.2 is loopback too, but outside trusted_networks.
                with smtplib.SMTP(timeout=30, source_address=(source, 0)) as c:
                    c.connect("127.0.0.1", gw.smtp_port)
                    c.sendmail(mail_from, ["bob@example.test"], make_email(
                        subject="Hello", sender=f"<{mail_from}>", to="bob@example.test",
                        headers={"Received": forged}))
            await asyncio.to_thread(send, "127.0.0.2", "someone@partner.test")
            await asyncio.to_thread(send, "127.0.0.1", ALICE)
            await settle(lambda: len(sink.messages) == 2, what="both delivered")

            def logged() -> dict[str, str]:
                with gw.db.session() as s:
                    rows = s.execute(select(MessageRow.client_ip,
                                            MessageRow.sender_account)).all()
                return {ip: account for ip, account in rows}
            # The message log is written behind delivery: wait for both rows.
            await settle(lambda: len(logged()) == 2, what="both logged")
            assert logged() == {"127.0.0.2": "", "127.0.0.1": ALICE}
    finally:
        server.close()
