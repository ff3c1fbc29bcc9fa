"""What tier 2 reads: subject + start of the body, URLs folded, bounded length."""

from __future__ import annotations

from mailmoat.message.parse import parse_message
from mailmoat.ml.deep.text import MAX_CHARS, message_text
from tests.conftest import make_email


def test_subject_then_body_with_urls_folded():
    raw = make_email(subject="Invoice 42", body="Pay here:\nhttps://evil.example/x?y=1   now\n")
    assert message_text(parse_message(raw)) == "Invoice 42 Pay here: link now"


def test_html_only_and_huge_bodies():
    raw = make_email(subject="News", body="", html="<p>Hello <b>there</b></p>" * 20000)
    text = message_text(parse_message(raw))
    assert text.startswith("News Hello there") and len(text) <= MAX_CHARS


def test_no_headers_besides_subject():
    # Path headers (Received, X-MS-*) say which corpus a message came from, not its intent.
    raw = make_email(subject="Hi", headers={"X-MS-Exchange-Organization": "corp",
                                            "Received": "from relay.example"})
    assert message_text(parse_message(raw)) == "Hi Hi there, see you tomorrow."
