"""The console in real headless Chromium (Playwright): log in, search, open, release from
quarantine (into the spool), report and take the lesson back on the learning page, follow a
digest link, see the dashboard charts, move one's own bulk threshold, and open a hostile HTML
message without any script running or any network request leaving."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from mailmoat.spool.queue import Spool
from mailmoat.web.app import create_app
from mailmoat.web.digest import make_token
from tests.web.fixtures import PASSWORD, seed
from tests.web.sink import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from mailmoat.web.auth import set_hash_cost

    set_hash_cost(1, 1024)
    env = seed(tmp_path_factory.mktemp("browser"))
    port = free_port()
    env.config.web.public_url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(create_app(env.config, env.db), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield env, f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)
    env.db.dispose()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def login(page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_load_state()


@contextmanager
def logged_in(browser, base: str, email: str) -> Iterator[Any]:
    """A page of a fresh browser context, logged in as `email`; the context is closed after."""
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        login(page, base, email)
        yield page
    finally:
        ctx.close()


def test_login_search_open_release(served, browser):
    env, base = served
    with logged_in(browser, base, "alice@a.test") as page:
        page.goto(f"{base}/messages")
        page.fill("input[name=subject]", "cheap")
        page.click("#search-form button[type=submit]")
        rows = page.locator("tr.result")
        assert rows.count() == 1
        page.click("text=Cheap pills")
        assert page.inner_text("#subject") == "Cheap pills"
        assert "the body contains the GTUBE test string" in page.inner_text("#symbols")
        page.click("#btn-release")
        page.wait_for_load_state()
        assert "Released m0001spamalice to alice@a.test" in page.inner_text("#flash")
        sp = Spool(env.config.data_dir / "spool")
        entries = [sp.read("incoming", i)[0] for i in sp.ids("incoming")]
        assert [e.rcpt_tos for e in entries if e.handover.released_from == "m0001spamalice"] == [["alice@a.test"]]


def test_report_then_undo_on_the_learning_page(served, browser):
    _, base = served
    with logged_in(browser, base, "admin@corp.test") as page:
        page.goto(f"{base}/messages/m0002phishbob")
        page.click("#btn-report_spam")
        page.wait_for_load_state()
        assert "Reported as spam" in page.inner_text("#flash")
        page.click("text=Learning")
        page.wait_for_load_state()
        assert "admin@corp.test" in page.inner_text("#lessons")
        page.click("#lessons .btn-undo")
        page.wait_for_load_state()
        assert "Took back the lessons of 1 message(s)" in page.inner_text("#flash")
        assert "taken back" in page.inner_text("#lessons")


def test_hostile_html_runs_nothing_and_fetches_nothing(served, browser):
    env, base = served
    with logged_in(browser, base, "alice@a.test") as page:
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        url = f"{base}/quarantine/m0004hostile/preview?view=html"
        page.goto(url)
        page.wait_for_timeout(1500)
        frame = page.frame_locator("#html-preview")
        assert "Dear customer" in frame.locator("body").inner_text()
        assert page.evaluate("typeof window.__pwned") == "undefined"
        # The only request is the page itself: no image, stylesheet, frame, refresh or fetch.
        assert [u for u in requests if u != url] == [], requests
        # Clicking the neutralised javascript: link does nothing either.
        frame.locator("a").first.click()
        page.wait_for_timeout(300)
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert [u for u in requests if u != url] == []
        # The page's own buttons still work under its strict CSP (form-action 'self'). (A fresh
        # load and under heavy load, the first click after one inside the sandboxed frame is
        # sometimes lost: try again if no navigation follows.)
        page.goto(url)
        for attempt in range(3):
            try:
                with page.expect_navigation(timeout=5000):
                    page.click("button[value=delete]")
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
        # Deleting asks first.
        assert "Delete this held message?" in page.inner_text("h2")
        page.click("#btn-confirm")
        page.wait_for_load_state()
        assert "Deleted m0004hostile" in page.inner_text("#flash")


def test_digest_link_release_without_login(served, browser):
    env, base = served
    tok = make_token(env.config, "m0006shared", "bob@b.test", "release")
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{base}/d/{tok}")
    assert page.inner_text("#link-subject") == "For both of you"
    page.click("#link-release")
    page.wait_for_load_state()
    assert "Released to bob@b.test" in page.inner_text("#link-done")
    page.goto(f"{base}/d/{tok}")
    assert "already used" in page.inner_text("#link-error")
    # A phish's link only asks an administrator.
    page.goto(f"{base}/d/{make_token(env.config, 'm0002phishbob', 'bob@b.test', 'release')}")
    assert page.locator("#link-release").count() == 0
    page.click("#link-request")
    page.wait_for_load_state()
    assert "Asked an administrator to release it" in page.inner_text("#link-done")
    ctx.close()


def test_dashboard_charts_render(served, browser):
    env, base = served
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = ctx.new_page()
    login(page, base, "admin@corp.test")
    page.goto(f"{base}/")
    assert page.locator("svg.chart").count() >= 6
    bars = page.locator("#chart-volume rect.datapoint")
    assert bars.count() >= 3
    total = sum(int(bars.nth(i).get_attribute("data-count")) for i in range(bars.count()))
    assert total == 6
    box = bars.first.bounding_box()
    assert box and box["height"] > 0 and box["width"] > 0
    assert page.locator("#chart-domains rect.datapoint").count() >= 1
    page.screenshot(path="/tmp/mailmoat-dashboard.png", full_page=True)
    ctx.close()


def test_user_moves_own_bulk_threshold(served, browser):
    env, base = served
    with logged_in(browser, base, "bob@b.test") as page:
        page.click("text=My settings")
        page.wait_for_load_state()
        assert page.inner_text("#in-force-threshold") == "7"
        page.fill("input[name=bulk_threshold]", "3")
        page.select_option("select[name=bulk_action]", "quarantine")
        page.click("#btn-save-bulk")
        page.wait_for_load_state()
        assert "Saved: bulk threshold 3, bulk mail quarantine." in page.inner_text("#flash")
        assert page.inner_text("#in-force-threshold") == "3"


LAYOUT_WIDTHS = (1366, 390)


def _fits(page) -> None:
    """Nothing is wider than the viewport: the page never scrolls sideways."""
    over = page.evaluate("""() => {
        const w = document.documentElement.clientWidth;
        const wide = [...document.querySelectorAll('body *')].filter(e => {
            const r = e.getBoundingClientRect();
            // inside a scrolling box (tables and charts on a phone) is fine: the page does not widen
            let p = e.parentElement, clipped = false;
            while (p && p !== document.body) {
                const s = getComputedStyle(p);
                if (['auto', 'scroll', 'hidden'].includes(s.overflowX)) { clipped = true; break; }
                p = p.parentElement;
            }
            return !clipped && r.width > 0 && (r.right > w + 1 || r.left < -1);
        }).map(e => e.tagName + (e.id ? '#' + e.id : '') + ' ' + Math.round(e.getBoundingClientRect().right));
        return {scroll: document.documentElement.scrollWidth, width: w, wide: wide.slice(0, 5)};
    }""")
    assert over["scroll"] <= over["width"] and not over["wide"], over


def _menu_reachable(page, width: int, link: str) -> None:
    """The navigation is in reach: in the header on a wide screen, behind Menu on a phone."""
    nav_link = page.locator(f"#nav a[href='{link}']")
    if width >= 800:
        assert not page.locator("#menu-button").is_visible()
        assert nav_link.is_visible()
    else:
        assert page.locator("#menu-button").is_visible() and not nav_link.is_visible()
        page.click("#menu-button")
        assert nav_link.is_visible()
        box = nav_link.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width
    # Visible white-on-blue, not white on white: the link sits on the header's background.
    bg = page.evaluate("() => getComputedStyle(document.querySelector('header')).backgroundColor")
    assert bg == "rgb(31, 58, 95)"


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@pytest.mark.parametrize("width", LAYOUT_WIDTHS)
def test_layout_dashboard(served, browser, shots, width):
    env, base = served
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    page = ctx.new_page()
    login(page, base, "admin@corp.test")
    page.goto(f"{base}/")
    page.screenshot(path=str(shots / f"dashboard-{width}.png"), full_page=True)
    _fits(page)
    # The time charts take the card's width, with a labelled y axis.
    # (a wide chart for a screen, a compact one for a phone: the one shown fills the card)
    shown = page.locator(f"#chart-volume svg.{'wide' if width >= 800 else 'compact'}")
    assert shown.is_visible() and page.locator("#chart-volume svg").nth(1 if width >= 800 else 0).is_hidden()
    card, chart = page.locator("#chart-volume").bounding_box(), shown.bounding_box()
    assert card and chart and chart["width"] >= card["width"] * 0.9
    assert shown.locator(".y-title").text_content() == "messages per hour"
    assert shown.locator(".y-tick").count() >= 3
    assert "antivirus off" in page.inner_text("#health")
    _menu_reachable(page, width, "/users")
    ctx.close()


@pytest.mark.parametrize("width", LAYOUT_WIDTHS)
def test_layout_phish_preview(served, browser, shots, width):
    from tests.conftest import make_email
    from tests.web.fixtures import add_message

    env, base = served
    mid = f"m01{width}phish"
    html = ('<p>Dear customer, your account is limited. <a href="https://203.0.113.7/login">'
            'https://www.paypal.com/verify</a> within 24 hours.</p>')
    add_message(env.config, env.db, mid, rcpts=["alice@a.test"], category="phishing", score=29.7,
                subject="Your account has been limited", hold=True,
                raw=make_email(subject="Your account has been limited", to="alice@a.test",
                               body="Verify at https://203.0.113.7/login now.", html=html,
                               attachments=[("invoice.pdf", "application/pdf", b"%PDF-1.4 not really")]))
    ctx = browser.new_context(viewport={"width": width, "height": 800})
    page = ctx.new_page()
    login(page, base, "alice@a.test")
    page.goto(f"{base}/quarantine/{mid}/preview")
    page.screenshot(path=str(shots / f"preview-{width}.png"), full_page=True)
    _fits(page)
    # The verdict comes first, in view without scrolling, above the message.
    verdict, body = page.locator("#verdict").bounding_box(), page.locator("#text-preview").bounding_box()
    assert verdict and body and verdict["y"] < body["y"] and verdict["y"] < 800
    assert page.inner_text("#verdict-title") == "Held as phishing · score 29.7"
    assert "steal a password" in page.inner_text("#verdict-warning")
    assert "link text shows paypal.com but points to 203.0.113.7" in page.inner_text("#verdict-reasons")
    # Link targets in plain sight, defanged; attachments with type and hash.
    assert "hxxps://203.0.113[.]7/login" in page.inner_text("#links")
    assert "https://203.0.113.7" not in page.inner_text("body")
    att = page.inner_text("#attachments")
    assert "invoice.pdf" in att and "application/pdf" in att
    assert hashlib.sha256(b"%PDF-1.4 not really").hexdigest() in att
    # A user may only ask for a phish to be released.
    assert page.locator("#btn-release").count() == 0 and page.locator("#btn-request").is_visible()
    # The HTML view shows the link's target beside its text, and the link leads nowhere.
    page.click("#view-html")
    page.wait_for_load_state()
    frame = page.frame_locator("#html-preview")
    assert "[hxxps://203.0.113[.]7/login]" in frame.locator("body").inner_text()
    assert frame.locator("a[href]").count() == 0
    _fits(page)
    ctx.close()


@pytest.mark.parametrize("width", LAYOUT_WIDTHS)
def test_layout_users_page(served, browser, shots, width):
    env, base = served
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    page = ctx.new_page()
    login(page, base, "admin@corp.test")
    _menu_reachable(page, width, "/users")
    page.click("#nav a[href='/users']")
    page.wait_for_load_state()
    assert page.locator("tr.user-row").count() >= 4
    page.screenshot(path=str(shots / f"users-{width}.png"), full_page=True)
    _fits(page)
    # Adding with a mistake keeps what was typed and says what is wrong next to the field.
    email = f"new{width}@a.test"
    page.fill("#add-user-form input[name=email]", email)
    page.fill("#add-user-form input[name=password]", "long enough")
    page.fill("#add-user-form input[name=password2]", "different!")
    page.click("#btn-add-user")
    page.wait_for_load_state()
    assert "type the same one twice" in page.inner_text("#err-password2")
    assert page.input_value("#add-user-form input[name=email]") == email
    _fits(page)
    # An account's own page: every action in reach.
    page.click("tr.user-row[data-email='bob@b.test'] a.edit-user")
    page.wait_for_load_state()
    page.screenshot(path=str(shots / f"user-{width}.png"), full_page=True)
    _fits(page)
    for button in ("#btn-save-user", "#btn-reset-password", "#btn-disable", "#btn-delete-user"):
        box = page.locator(button).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, button
    ctx.close()
