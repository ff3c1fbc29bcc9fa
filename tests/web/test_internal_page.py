"""The Internal console page over real data: what our senders sent (message log), an
incident and a suspension made by the real scanner's internal check and a rule, charts,
per-group figures, release from the page, and the rules edited, validated and audited."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from mailmoat.internal.accounts import get_restriction
from mailmoat.store.models import AuditRow, MessageRow
from mailmoat.web.app import create_app
from mailmoat.web.policy_store import apply_policy_document, current_overrides
from tests.internal.helpers import Org
from tests.web.fixtures import add_message, seed
from tests.web.test_pages import csrf_of, form_login

GROUPS = {"finance": ["*@fin.example.test"], "sales": ["@sales.example.test"]}
CARDS = "Hi,\ncards 4111 1111 1111 1111 and 5555 5555 5555 4444\n"


@pytest.fixture
def env(tmp_path):
    sd = seed(tmp_path / "data",
              smtp={"trusted_networks": ["127.0.0.1/32"], "internal_domains": ["example.test",
                    "fin.example.test", "sales.example.test"]},
              internal={"identity_header": "X-Authenticated-Sender", "groups": GROUPS,
                        "rules": [{"name": "no-cards-outside", "recipients": "external",
                                   "detectors": {"card": 1}, "action": "suspend"}]})
    now = datetime.now(UTC)
    mail = [("bo@fin.example.test", "internal", 3, "accept"),
            ("bo@fin.example.test", "outbound", 2, "quarantine"),
            ("sam@sales.example.test", "outbound", 4, "accept"),
            ("al@example.test", "internal", 1, "accept")]
    n = 0
    for account, direction, count, action in mail:
        for k in range(count):
            n += 1
            mid = add_message(sd.config, sd.db, f"int{n:03d}", rcpts=["c@example.test"],
                              sender=account, category="clean", action=action,
                              direction=direction, when=now - timedelta(hours=k * 30))
            with sd.db.session() as s:
                s.get(MessageRow, mid).sender_account = account
    yield sd
    sd.db.dispose()


async def _suspend_by_rule(env) -> int:
    """The real scanner's internal check: a card number sent outside suspends the account."""
    org = Org(env.config, env.db)
    try:
        out = await org.send("bo@fin.example.test", ["x@partner.test"],
                             datetime.now(UTC).timestamp(), body=CARDS)
    finally:
        await org.close()
    j = out.result.facts.internal
    assert j.flagged and j.restriction.kind == "suspend"
    return j.incident_id


async def test_the_internal_page_shows_real_figures_and_releases(env):
    incident = await _suspend_by_rule(env)
    app = create_app(env.config, env.db)
    c, _ = form_login(app, "admin@corp.test")
    page = c.get("/internal")
    assert page.status_code == 200
    html = page.text
    assert '<a href="/internal">Internal</a>' in html  # in the navigation
    # Charts drawn from the message log: one bar per day and direction.
    bars = re.findall(r'class="datapoint" data-bucket="([^"]+)" data-category="(internal|'
                      r'outbound)" data-count="(\d+)"', html)
    by_kind: dict[str, int] = {}
    for _, kind, count in bars:
        by_kind[kind] = by_kind.get(kind, 0) + int(count)
    assert by_kind == {"internal": 4, "outbound": 6}
    assert "<b>4</b> internal and <b>6</b> outbound messages" in html
    assert 'data-key="sam@sales.example.test" data-count="4"' in html  # top senders
    assert re.search(r"<tr><td>finance</td><td>1</td><td>5</td><td>2</td></tr>", html)
    assert re.search(r"<tr><td>sales</td><td>1</td><td>4</td><td>0</td></tr>", html)
    assert 'id="chart-internal-incidents"' in html and 'data-category="opened"' in html
    # The suspended account and its incident, with the rule's reason in words.
    assert "bo@fin.example.test" in html and "suspended until released" in html
    assert f'<a href="/internal/incidents/{incident}">{incident}</a>' in html
    assert "rule &#39;no-cards-outside&#39;: 2 payment card numbers (Luhn-valid) to 1 " \
           "external recipient" in html
    assert "4111" not in html

    inc = c.get(f"/internal/incidents/{incident}").text
    assert "What the account sent from" in inc and "int001" in inc and "delivered" in inc

    r = c.post("/internal/accounts/bo@fin.example.test/release",
               data={"csrf_token": csrf_of(html)})
    assert r.status_code == 303 and "Released" in r.headers["location"]
    assert get_restriction(env.db, "bo@fin.example.test").released_by == "admin@corp.test"
    assert "No account is restricted." in c.get("/internal").text

    alice, _ = form_login(app, "alice@a.test")
    assert alice.get("/internal").status_code == 403
    assert '<a href="/internal">' not in alice.get("/messages").text


def test_rules_are_edited_validated_and_audited(env):
    app = create_app(env.config, env.db)
    c, _ = form_login(app, "admin@corp.test")
    html = c.get("/internal").text
    assert 'name = "no-cards-outside"' in unescape(html) and "from the configuration file" in html
    bad = '[[rules]]\nname = "ibans"\ndetectorz = { iban = 2 }\n'
    r = c.post("/internal/rules", data={"rules": bad, "csrf_token": csrf_of(html)})
    assert r.status_code == 422
    assert "unknown key &#39;detectorz&#39; (did you mean &#39;detectors&#39;?)" in r.text
    assert bad in unescape(r.text)  # what was typed is kept
    r = c.post("/internal/rules", data={"rules": '[[rules]]\nname = "x"\ngroups = ["finanse"]',
                                        "csrf_token": csrf_of(html)})
    assert r.status_code == 422 and "did you mean &#39;finance&#39;?" in r.text
    assert current_overrides(env.db) == {}

    good = ('[[rules]]\nname = "finance-ibans"\ngroups = ["finance"]\n'
            'detectors = { iban = 2 }\naction = "hold"\n')
    r = c.post("/internal/rules", data={"rules": good, "comment": "IBANs",
                                        "csrf_token": csrf_of(html)})
    assert r.status_code == 303
    live = apply_policy_document(env.config, current_overrides(env.db))
    assert live.model_extra["internal"]["rules"] == [
        {"name": "finance-ibans", "groups": ["finance"], "detectors": {"iban": 2},
         "action": "hold"}]
    assert live.model_extra["internal"]["groups"] == GROUPS
    page = c.get("/internal").text
    assert "saved in the console" in page and 'name = "finance-ibans"' in unescape(page)
    # The policy form keeps them; the API shows them.
    api = TestClient(app)
    api.headers["Authorization"] = f"Bearer {env.tokens['admin']}"
    assert api.get("/api/v1/internal/rules").json()["source"] == "console"
    doc = api.get("/api/v1/policy").json()["document"]
    doc.pop("internal_rules")
    assert api.put("/api/v1/policy", json={"document": doc}).status_code == 200
    assert [r["name"] for r in api.get("/api/v1/internal/rules").json()["rules"]] == [
        "finance-ibans"]
    r = api.put("/api/v1/internal/rules", json={"rules": [{"name": "x", "detectors": {"crd": 1}}]})
    assert r.status_code == 422 and "did you mean 'card'?" in str(r.json()["detail"])
    r = api.put("/api/v1/internal/rules", json={"rules": None})
    assert r.status_code == 200 and r.json()["source"] == "config"
    with env.db.session() as s:
        saved = [a.details for a in s.scalars(select(AuditRow).where(
            AuditRow.action == "internal.rules").order_by(AuditRow.id))]
    assert [d["rules"] for d in saved] == [["finance-ibans"], None]
