"""The Internal page in real headless Chromium: its charts draw, the rules form refuses a
typo with the closest name and saves a good rule, and a suspended account is released."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailmoat.internal.accounts import get_restriction, restrict_account
from mailmoat.store.models import MessageRow
from mailmoat.web.app import create_app
from mailmoat.web.policy_store import current_rules
from tests.web.fixtures import add_message, seed
from tests.web.live import live_console
from tests.web.test_browser import browser, login  # noqa: F401  (the fixture, shared)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from mailmoat.web.auth import set_hash_cost

    set_hash_cost(1, 1024)
    env = seed(tmp_path_factory.mktemp("internal-browser"),
               internal={"groups": {"finance": ["*@fin.example.test"]}})
    now = datetime.now(UTC)
    for k in range(6):
        mid = add_message(env.config, env.db, f"ib{k}", rcpts=["c@example.test"],
                          sender="bo@fin.example.test", category="clean", action="accept",
                          direction="outbound" if k % 2 else "internal",
                          when=now - timedelta(days=k))
        with env.db.session() as s:
            s.get(MessageRow, mid).sender_account = "bo@fin.example.test"
    restrict_account(env.config, env.db, "bo@fin.example.test", "admin@corp.test",
                     reason="test")
    with live_console(create_app(env.config, env.db)) as base:
        yield env, base
    env.db.dispose()


def test_internal_page_charts_rules_and_release(served, browser):  # noqa: F811
    env, base = served
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = ctx.new_page()
        login(page, base, "admin@corp.test")
        page.click("nav >> text=Internal")
        page.wait_for_load_state()
        bars = page.locator("#chart-internal-volume svg.wide rect.datapoint")
        assert bars.count() == 6
        assert sum(int(bars.nth(i).get_attribute("data-count")) for i in range(6)) == 6
        box = bars.first.bounding_box()
        assert box and box["height"] > 0 and box["width"] > 0
        assert page.locator("#chart-groups rect.datapoint").count() == 1

        page.fill("#rules-form textarea", '[[rules]]\nname = "x"\ndetectors = { crd = 1 }\n')
        page.click("#rules-form button[type=submit] >> nth=0")
        page.wait_for_load_state()
        assert "did you mean 'card'?" in page.inner_text("#rules-error")
        page.fill("#rules-form textarea", '[[rules]]\nname = "cards"\ndetectors = { card = 1 }\n')
        page.click("#rules-form button[type=submit] >> nth=0")
        page.wait_for_load_state()
        assert "Saved 1 rule" in page.inner_text("#flash")
        assert [r.name for r in current_rules(env.config, env.db)[0]] == ["cards"]

        page.click("#restricted button.release")
        page.wait_for_load_state()
        assert "Released bo@fin.example.test" in page.inner_text("#flash")
        assert get_restriction(env.db, "bo@fin.example.test").released_by == "admin@corp.test"
    finally:
        ctx.close()
