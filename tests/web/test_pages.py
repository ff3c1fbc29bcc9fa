"""Console pages over TestClient: form login with CSRF, search, message page, quarantine
actions, preview safety headers, policy form, dashboard charts."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from mailmoat.spool.queue import Spool
from tests.web.fixtures import PASSWORD


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def form_login(app, email: str) -> tuple[TestClient, str]:
    c = TestClient(app, follow_redirects=False)
    page = c.get("/login")
    r = c.post("/login", data={"email": email, "password": PASSWORD, "next": "/messages",
                               "csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/messages"
    page = c.get("/messages")
    return c, csrf_of(page.text)


def test_login_form_needs_csrf_and_right_password(app, anon):
    page = anon.get("/login")
    assert anon.post("/login", data={"email": "alice@a.test", "password": PASSWORD}).status_code == 403
    r = anon.post("/login", data={"email": "alice@a.test", "password": "nope", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 401 and "wrong email or password" in r.text
    r = anon.post("/login", data={"email": "alice@a.test", "password": PASSWORD, "next": "//evil.test/",
                                  "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_secret_key_generated_and_private(app, env):
    key = env.config.data_dir / "web_secret"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600


def test_search_and_message_page(app, env):
    c, _ = form_login(app, "admin@corp.test")
    r = c.get("/messages", params={"sender": "@good.test"})
    assert r.status_code == 200 and "Meeting notes" in r.text and "Cheap pills" not in r.text
    assert "Content-Security-Policy" in r.headers and "script-src 'self'" in r.headers["content-security-policy"]
    r = c.get("/messages", params={"since": "not a date"})
    assert "bad search" in r.text
    page = c.get("/messages/m0001spamalice").text
    assert "link text shows paypal.com but points to 203.0.113.7" in page
    assert 'id="quarantine-actions"' in page
    page = c.get("/messages/m0003cleanalice").text
    assert "451 4.7.1 try later" in page and "250 2.0.0 Ok queued" in page
    paged = c.get("/messages", params={"recipient": "@a.test"}).text
    assert paged.count('class="result"') == 5


def test_user_sees_only_own_mail_in_console(app, env):
    c, _ = form_login(app, "bob@b.test")
    assert "Cheap pills" not in c.get("/messages").text
    assert c.get("/messages/m0001spamalice").status_code == 404
    assert c.get("/policy").status_code == 403
    assert c.get("/quarantine/m0001spamalice/preview").status_code == 404


def test_release_from_console_form(app, env):
    c, csrf = form_login(app, "alice@a.test")
    r = c.post("/quarantine/m0001spamalice/act", data={"op": "release", "back_to": "/messages/m0001spamalice"})
    assert r.status_code == 403  # no CSRF token
    r = c.post("/quarantine/m0001spamalice/act", data={"op": "release", "csrf_token": csrf,
                                                       "back_to": "/messages/m0001spamalice"})
    assert r.status_code == 303 and "Released" in c.get(r.headers["location"]).text
    sp = Spool(env.config.data_dir / "spool")
    [mid] = sp.ids("incoming")
    assert sp.read("incoming", mid)[0].rcpt_tos == ["alice@a.test"]
    r = c.post("/quarantine/m0002phishbob/act", data={"op": "release", "csrf_token": csrf})
    assert "Could not release" in c.get(r.headers["location"]).text
    r = c.post("/quarantine/m0005malware/act", data={"op": "delete", "csrf_token": csrf})
    assert r.status_code == 200 and 'id="confirm-question"' in r.text  # asks first
    r = c.post("/quarantine/m0005malware/act", data={"op": "delete", "csrf_token": csrf, "confirm": "yes"})
    assert "Deleted m0005malware" in c.get(r.headers["location"]).text


def test_admin_undoes_a_lesson_from_the_message_page(app, env):
    alice, csrf_a = form_login(app, "alice@a.test")
    assert 'id="btn-unlearn"' not in alice.get("/messages/m0001spamalice").text
    r = alice.post("/quarantine/m0001spamalice/act", data={"op": "report_spam", "csrf_token": csrf_a,
                                                           "back_to": "/messages/m0001spamalice"})
    assert "Reported as spam" in alice.get(r.headers["location"]).text
    r = alice.post("/quarantine/m0001spamalice/act", data={"op": "unlearn", "csrf_token": csrf_a})
    assert "only administrators" in alice.get(r.headers["location"]).text

    admin, csrf = form_login(app, "admin@corp.test")
    page = admin.get("/messages/m0001spamalice").text
    assert 'id="btn-unlearn"' in page
    r = admin.post("/quarantine/m0001spamalice/act", data={"op": "unlearn", "csrf_token": csrf,
                                                           "back_to": "/messages/m0001spamalice"})
    assert "Took back what this message taught: 1 remembered lesson" in admin.get(r.headers["location"]).text
    r = admin.post("/quarantine/m0001spamalice/act", data={"op": "unlearn", "csrf_token": csrf,
                                                           "back_to": "/messages/m0001spamalice"})
    assert "nothing was learned from this message" in admin.get(r.headers["location"]).text


def test_preview_page_is_locked_down(app, env):
    c, _ = form_login(app, "alice@a.test")
    r = c.get("/quarantine/m0004hostile/preview")
    csp = r.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; img-src data:; style-src 'unsafe-inline'")
    assert 'id="text-preview"' in r.text and "<iframe" not in r.text
    r = c.get("/quarantine/m0004hostile/preview", params={"view": "html"})
    frame = re.search(r"<iframe[^>]*>", r.text).group(0)
    assert " sandbox " in frame and "allow-" not in frame
    srcdoc = re.search(r'srcdoc="([^"]*)"', frame).group(1)
    assert "&lt;script" not in srcdoc and "onerror" not in srcdoc and "127.0.0.1:9" not in srcdoc


def test_policy_form_saves_validates_and_rolls_back(app, env):
    c, csrf = form_login(app, "admin@corp.test")
    base = {"csrf_token": csrf, "tag_threshold": "4", "quarantine_threshold": "9", "reject_threshold": "20",
            "allow_senders": "", "block_senders": "@evil.test\nboss@bad.test", "allow_ips": "",
            "block_ips": "203.0.113.0/24", "vips": "Jane Doe", "protected_domains": "corp.test",
            "domains": '{"a.test": {"quarantine_threshold": 7}}', "comment": "first"}
    r = c.post("/policy", data=base)
    assert r.status_code == 303
    page = c.get("/policy").text
    assert "(version 1)" in page and "boss@bad.test" in page
    r = c.post("/policy", data=base | {"tag_threshold": "30"})
    assert r.status_code == 422 and "ordered" in r.text and 'id="err-thresholds"' in r.text
    r = c.post("/policy", data=base | {"domains": "{nope"})
    assert r.status_code == 422 and 'id="err-domains"' in r.text
    assert "Per-domain overrides are not valid JSON: Expecting property name" in r.text
    # Each mistake in a sentence next to its field; what was typed stays in the form.
    r = c.post("/policy", data=base | {"quarantine_threshold": "nine", "block_ips": "203.0.113.0/24\nnot-an-ip",
                                       "comment": "typed comment"})
    assert r.status_code == 422
    err = re.search(r'id="err-quarantine_threshold"[^>]*>([^<]*)<', r.text).group(1)
    assert err == "Quarantine threshold: give a number (&#39;nine&#39; is not one)."
    assert "Blocked IPs:" in re.search(r'id="err-block_ips"[^>]*>([^<]*)<', r.text).group(1)
    assert 'name="quarantine_threshold" value="nine"' in r.text and "not-an-ip</textarea>" in r.text
    assert 'value="typed comment"' in r.text and "Jane Doe</textarea>" in r.text
    assert "validation error" not in r.text and "pydantic" not in r.text
    c.post("/policy", data=base | {"vips": "Someone Else", "comment": "second"})
    r = c.post("/policy/rollback/1", data={"csrf_token": csrf})
    assert r.status_code == 303 and "Rolled back to version 1" in c.get(r.headers["location"]).text
    from mailmoat.web.policy_store import current_overrides

    assert current_overrides(env.db)["vips"] == ["Jane Doe"]


def test_dashboard_renders_svg_charts(app, env):
    c, _ = form_login(app, "admin@corp.test")
    page = c.get("/").text
    assert page.count("<svg") >= 6
    bars = re.findall(r'class="datapoint"[^>]*data-count="(\d+)"', page)
    volume = page.split('id="chart-volume"')[1].split("</svg>")[0]
    assert bars and sum(map(int, re.findall(r'data-category="[^"]+" data-count="(\d+)"', volume))) == 6
    assert volume.count("<text") > 5  # axis labels for the hourly buckets
    assert "Top blocked sender domains" in page and "bad.test" in page


def test_logout(app, env):
    c, csrf = form_login(app, "alice@a.test")
    assert c.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert c.get("/messages").status_code == 401


def test_audit_page_admin_only(app, env):
    c, csrf = form_login(app, "admin@corp.test")
    c.post("/quarantine/m0001spamalice/act", data={"op": "delete", "csrf_token": csrf, "confirm": "yes"})
    page = c.get("/audit").text
    assert "quarantine.delete" in page and "m0001spamalice" in page and "admin@corp.test" in page
    u, _ = form_login(app, "alice@a.test")
    assert u.get("/audit").status_code == 403


def test_learning_page_lists_lessons_and_takes_back_an_accounts(app, env):
    """An account reported good mail as spam: the administrator sees it on the learning
    page and takes back everything it taught; another account's lesson stays."""
    from mailmoat.ml.learn import read_audit

    alice, csrf_a = form_login(app, "alice@a.test")
    assert alice.get("/lessons").status_code == 403
    alice.post("/quarantine/m0001spamalice/act", data={"op": "report_spam", "csrf_token": csrf_a})
    admin, csrf = form_login(app, "admin@corp.test")
    admin.post("/quarantine/m0002phishbob/act", data={"op": "report_spam", "csrf_token": csrf})

    page = admin.get("/lessons").text
    assert 'href="/lessons"' in page and page.count('class="btn-undo"') == 2
    assert "alice@a.test" in page and "admin@corp.test" in page
    assert "admin@corp.test" not in admin.get("/lessons", params={"taught_by": "alice@a.test"}).text.split(
        'id="lessons"')[1]
    r = admin.post("/lessons/unlearn", data={"taught_by": "alice@a.test", "csrf_token": csrf})
    assert "Took back the lessons of 1 message(s)" in admin.get(r.headers["location"]).text
    assert read_audit(env.config)[-1]["which"]["taught_by"] == "alice@a.test"
    r = admin.post("/lessons/unlearn", data={"taught_by": "alice@a.test", "csrf_token": csrf})
    assert "Could not take lessons back: no lesson taught by alice@a.test" in admin.get(r.headers["location"]).text
    r = admin.post("/lessons/unlearn", data={"csrf_token": csrf})
    assert "say which lessons" in admin.get(r.headers["location"]).text
    assert admin.get("/lessons").text.count('class="btn-undo"') == 1


def test_learning_page_says_what_a_report_taught(app, env):
    """Once the gateway has delivered enough good mail to tell its words apart, a report
    moves weights, and the learning page names the words it taught."""
    import random

    import markupsafe

    from mailmoat.ml import delivered
    from mailmoat.ml.learn import MIN_COUNTER_EXAMPLES, model_dir, read_audit
    from tests.ml import synth
    from tests.ml.test_learn_evaluate import _vector

    rng = random.Random(5)
    sample = delivered.sample_path(model_dir(env.config))
    for i in range(MIN_COUNTER_EXAMPLES):
        delivered.append(sample, _vector(synth.message("ham", rng, i)))
    # A lure in words the delivered mail above never uses (which words a report may move
    # depends on that sample and on the bundled model: spell the lure out).
    from tests.conftest import make_email
    from tests.web.fixtures import add_message

    add_message(env.config, env.db, "m0009lure", rcpts=["bob@b.test"], category="phishing",
                subject="Mailbox quota exceeded", hold=True,
                raw=make_email(subject="Mailbox quota exceeded", to="bob@b.test",
                               body="Your mailbox quota is exceeded. Confirm your password at "
                                    "the webmail portal within 24 hours or incoming messages "
                                    "will be suspended.\n"))
    admin, csrf = form_login(app, "admin@corp.test")
    # A phish the model reads as phish, reported as spam: the words move towards spam.
    admin.post("/quarantine/m0009lure/act", data={"op": "report_spam", "csrf_token": csrf})
    lesson = read_audit(env.config)[-1]
    assert lesson["steps"] > 0 and lesson["taught"]
    page = admin.get("/lessons").text
    kind, words, _ = lesson["taught"][0]
    assert 'class="taught"' in page
    assert str(markupsafe.escape(f"{kind} {words}")) in page
    from tests.web.conftest import bearer

    items = bearer(app, env, "admin").get("/api/v1/lessons").json()["items"]
    assert items[0]["taught"] == lesson["taught"]
