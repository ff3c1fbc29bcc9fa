"""The HTML budget: hostile HTML is read in linear time, flagged, and quarantined (issue 21)."""

from __future__ import annotations

import time

import pytest

import mailmoat.scan.engine as engine
from mailmoat.message.parse import (
    _html_tree_text_and_urls,
    html_fallback_text_and_urls,
    html_over_budget,
    html_to_text_and_urls,
    parse_message,
)
from tests.conftest import make_config, make_email, scan_bytes, symbol_names

LURE = ("<p>Your mailbox is full. <a href=\"https://login.evil.test/verify\">Verify now</a>"
        "</p><img src=\"https://cdn.evil.test/logo.png\">")


def nested_divs_message(levels: int = 200_000, top: str = LURE) -> bytes:
    """The campaign's message: closed nested <div>s in 900-byte lines, text and a link
    near the top (the 1 MB text cut of the parser keeps the top of a body)."""
    html = ("<html><body>" + top + "<div>" * levels + "deep words" + "</div>" * levels
            + "</body></html>")
    body = "\r\n".join(html[i:i + 900] for i in range(0, len(html), 900))
    head = ("From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: deep\r\n"
            "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <deep-1@sender.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n")
    return (head + body + "\r\n").encode()


def test_200000_nested_divs_parse_fast_with_defect_text_and_links():
    raw = nested_divs_message()
    assert len(raw) > 2_000_000
    started = time.perf_counter()
    msg = parse_message(raw)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{elapsed:.2f} s"  # about 0.06 s; minutes before the budget
    assert "HTML_TOO_DEEP" in msg.defects
    assert "Your mailbox is full." in msg.html_text and "Verify now" in msg.html_text
    urls = {u.url: u for u in msg.urls}
    assert urls["https://login.evil.test/verify"].display_text == "Verify now"
    assert urls["https://login.evil.test/verify"].tag == "a"
    assert "https://cdn.evil.test/logo.png" in urls
    # msg.html keeps only the part within the budget: checks may build a tree of it.
    assert html_over_budget(msg.html) is None and len(msg.html) < 20_000


@pytest.mark.parametrize("html, defect", [
    ("<div>x" * 40_000, "HTML_TOO_DEEP"),  # unclosed
    ("<pre>x" * 40_000, "HTML_TOO_DEEP"),  # <pre> does not close <pre>
    ("<div/>" * 40_000, "HTML_TOO_DEEP"),  # "/>" does not close an HTML element
    ("<ul>x" * 40_000, "HTML_TOO_DEEP"),
    ("<div><table><td></div>" * 40_000, "HTML_TOO_DEEP"),  # </div> cannot leave the cell
    ("<b><div>x</b>" * 30_000, "HTML_TOO_DEEP"),  # the adoption agency keeps the div open
    ("<form><div>x</form>" * 30_000, "HTML_TOO_DEEP"),  # </form> leaves the div open
    ("<select>" + "<option>x</option>" * 40_000, "HTML_TOO_DEEP"),  # flat but quadratic
    ("<div " + " ".join(f"a{i}=x" for i in range(40_000)) + ">", "HTML_TOO_MANY_ATTRIBUTES"),
    ("<i>x</i>" * 150_000, "HTML_TOO_MANY_TAGS"),
])
def test_shapes_that_stall_the_tree_builder_are_caught_in_linear_time(html, defect):
    started = time.perf_counter()
    over = html_over_budget(html)
    text, _ = html_to_text_and_urls(html)
    assert time.perf_counter() - started < 1.0
    assert over is not None and over[0] == defect
    if ">x" in html:  # the words still reach the checks
        assert "x" in text


@pytest.mark.parametrize("html", [
    "<table>" + "<tr><td>cell" * 5_000 + "</table>",  # cells and rows left open
    "<p>para" * 5_000,
    "<ol>" + "<li>item" * 5_000 + "</ol>",
    "<dl>" + "<dt>t<dd>d" * 3_000 + "</dl>",
    ("<div>" * 500 + "x" + "</div>" * 500) * 20,
    "<svg>" + "<path d='M0 0'/>" * 5_000 + "</svg>",
    "<div><span><b>x</div>" * 5_000,  # inline elements left open inside closed blocks
    "<a href=x><span>y</a>" * 5_000,
    "<a href=x><div>block link</div></a>" * 5_000,
])
def test_ordinary_if_sloppy_html_stays_within_the_budget(html):
    assert html_over_budget(html) is None


def test_ordinary_html_mail_parses_as_before():
    html = ("<html><head><style>p{color:red}</style><title>t</title></head><body>"
            "<table><tr><td><p>Hello <b>Bob</b>,</p><p>see <a href=\"https://docs.sender.test/q3\">"
            "the report</a> &amp; <a href='http://www.sender.test/x?a=1&amp;b=2'>this</a>.</p>"
            "</td></tr></table><script>var x = '<div>';</script></body></html>")
    raw = make_email(html=html)
    msg = parse_message(raw)
    assert not any(d.startswith("HTML_") for d in msg.defects)
    assert msg.html_text == _html_tree_text_and_urls(msg.html)[0]
    assert "Hello Bob" in msg.html_text and "color" not in msg.html_text
    # The fallback reads the same words and links, should it ever be needed for this mail.
    fb_text, fb_urls = html_fallback_text_and_urls(html)
    tree_text, tree_urls = _html_tree_text_and_urls(html)
    assert [(u.url, u.display_text) for u in fb_urls] == [(u.url, u.display_text) for u in tree_urls]
    assert fb_text.split() == tree_text.split()


def test_fallback_is_linear_on_unterminated_markup():
    for html in ("<" * 1_000_000, "<!--" * 250_000, '<a href="x ' * 100_000,
                 "<script>" * 125_000):
        started = time.perf_counter()
        html_fallback_text_and_urls(html)
        html_over_budget(html, 10, 10)
        assert time.perf_counter() - started < 1.0


async def test_a_message_over_the_html_budget_is_quarantined():
    outcome = await scan_bytes(nested_divs_message(20_000))
    assert "HTML_TOO_DEEP" in symbol_names(outcome)
    assert outcome.verdict.action.value == "quarantine"


async def test_the_budget_is_configurable():
    cfg = make_config(scan={"network": False, "max_html_depth": 10})
    outcome = await scan_bytes(make_email(html="<div>" * 20 + "hi" + "</div>" * 20), cfg)
    assert "HTML_TOO_DEEP" in symbol_names(outcome)
    assert outcome.verdict.action.value == "quarantine"


async def test_a_parse_past_its_time_budget_is_quarantined_not_lost(monkeypatch):
    def stuck(raw, envelope, **limits):
        time.sleep(1.0)  # a runaway parse nobody foresaw
        raise AssertionError("its result must not be waited for")

    monkeypatch.setattr(engine, "parse_message", stuck)
    cfg = make_config(scan={"network": False, "parse_timeout": 0.2})
    raw = make_email(body="Pay the invoice at https://pay.evil.test/now\n" + "x" * 100_000)
    assert len(raw) > engine.INLINE_PARSE_MAX  # parsed in a thread, on the budget
    started = time.perf_counter()
    outcome = await scan_bytes(raw, cfg)
    assert time.perf_counter() - started < 0.9
    assert {"PARSE_TIMEOUT", "MIME_UNPARSEABLE"} <= symbol_names(outcome)
    assert outcome.verdict.action.value == "quarantine"
    assert "https://pay.evil.test/now" in {u.url for u in outcome.message.urls}


async def test_a_form_attachment_inside_deep_nesting_is_read_within_the_budget():
    """The urls check builds a tree of HTML attachments to find login forms: a hostile
    attachment must not make it take seconds, and a form before the nesting is still seen."""
    import time

    from tests.conftest import make_email, scan_bytes

    page = ('<form action="https://evil.example/p"><input type="password" name="pw"></form>'
            + "<div>" * 30000 + "x" + "</div>" * 30000).encode()
    raw = make_email(subject="invoice", attachments=[("invoice.html", "text/html", page)])
    started = time.perf_counter()
    out = await scan_bytes(raw)
    assert time.perf_counter() - started < 2.0
    assert out.result.has("PHISH_HTML_ATTACHMENT_FORM")
