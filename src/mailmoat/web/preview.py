"""Safe previews of quarantined mail: a text view, or HTML cleaned by nh3 with a strict
allowlist. Nothing in a preview may fetch anything or run anything: no scripts, no event
handlers, no forms, no iframes, no remote images, no CSS url() or @import, no meta refresh.
The page that shows it adds a sandboxed iframe and a Content-Security-Policy on top."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import nh3

# On the preview page itself: nothing may load but inline styles and data: images; its own
# buttons may post back to us.
PREVIEW_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
# Inside the sandboxed iframe, as a second lock: not even forms.
FRAME_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup",
         "dd", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
         "img", "li", "ol", "p", "pre", "s", "small", "span", "strike", "strong", "sub", "sup",
         "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul"}
_ATTRS = {"*": {"align", "title", "dir", "style"}, "a": {"href"}, "img": {"src", "alt", "width", "height"},
          "td": {"colspan", "rowspan", "valign", "width"}, "th": {"colspan", "rowspan", "valign", "width"},
          "table": {"width", "border", "cellpadding", "cellspacing"}, "font": {"color", "size"},
          "col": {"span", "width"}}
_STYLE_PROPS = {"color", "background-color", "font-weight", "font-style", "font-size",
                "font-family", "text-align", "text-decoration", "margin", "padding", "border",
                "width", "height", "line-height", "vertical-align", "white-space", "display"}
_DANGEROUS_CSS = re.compile(r"url\s*\(|@import|expression\s*\(|image-set|\\", re.IGNORECASE)
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpeg|webp);base64,[a-z0-9+/=\s]+$", re.IGNORECASE)


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if attr == "src":
        # Only inline images: a remote image is a tracking beacon.
        return value if _DATA_IMAGE.match(value.strip()) else None
    if attr == "href":
        v = value.strip().lower()
        return value if v.startswith(("http://", "https://", "mailto:")) else None
    if attr == "style" and _DANGEROUS_CSS.search(value):
        return None
    return value


def sanitize_html(body: str) -> str:
    return nh3.clean(body, tags=_TAGS, attributes=_ATTRS, url_schemes={"http", "https", "mailto", "data"},
                     clean_content_tags={"script", "style", "title", "head", "noscript", "template",
                                         "iframe", "object", "embed", "svg", "math", "form",
                                         "textarea", "select", "button"},
                     filter_style_properties=_STYLE_PROPS, attribute_filter=_attribute_filter,
                     link_rel="noopener noreferrer nofollow", strip_comments=True)


@dataclass
class Preview:
    subject: str = ""
    from_: str = ""
    to: str = ""
    date: str = ""
    text: str = ""
    html_clean: str = ""  # sanitised HTML fragment; "" when the mail has no HTML part
    attachments: list[dict[str, object]] = field(default_factory=list)
    error: str = ""


def _strip_html(s: str) -> str:
    s = re.sub(r"(?is)<(script|style|head|title)[^>]*>.*?</\1>", " ", s)
    s = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</h\d>", "\n", s)
    s = re.sub(r"<[^>]+>", "", s)
    s = html.unescape(s)
    return re.sub(r"\n\s*\n+", "\n\n", s).strip()


def build_preview(raw: bytes, max_chars: int = 200_000) -> Preview:
    p = Preview()
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(msg, EmailMessage)
        p.subject = str(msg.get("Subject", ""))
        p.from_ = str(msg.get("From", ""))
        p.to = str(msg.get("To", ""))
        p.date = str(msg.get("Date", ""))
        text_part = msg.get_body(preferencelist=("plain",))
        html_part = msg.get_body(preferencelist=("html",))
        html_body = html_part.get_content() if html_part is not None else ""
        if text_part is not None:
            p.text = text_part.get_content()
        elif html_body:
            p.text = _strip_html(html_body)
        if html_body:
            p.html_clean = sanitize_html(html_body[:max_chars])
        for part in msg.iter_attachments():
            payload = part.get_payload(decode=True) or b""
            p.attachments.append({"filename": part.get_filename() or "", "type": part.get_content_type(),
                                  "size": len(payload)})
    except Exception as exc:  # malformed mail: show what we can, never fail the page
        p.error = f"could not fully parse this message: {exc.__class__.__name__}: {exc}"
        if not p.text:
            p.text = raw[:max_chars].decode("utf-8", "replace")
    p.text = p.text[:max_chars]
    return p


def iframe_document(fragment: str) -> str:
    """The document placed in <iframe sandbox srcdoc>: its own CSP meta as a second lock."""
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{FRAME_CSP}\">"
            "<style>body{font-family:sans-serif;margin:8px;color:#222}</style></head>"
            f"<body>{fragment}</body></html>")
