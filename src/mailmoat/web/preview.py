"""Safe previews of quarantined mail: a text view, or HTML cleaned by nh3 with a strict
allowlist. Nothing in a preview may fetch anything or run anything: no scripts, no event
handlers, no forms, no iframes, no remote images, no CSS url() or @import, no meta refresh.
The page that shows it adds a sandboxed iframe and a Content-Security-Policy on top."""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
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


_SCHEMES = {"http": "hxxp", "https": "hxxps", "ftp": "fxp"}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):(//)?")
_URL_IN_TEXT = re.compile(r"(?i)\b(?:https?|ftp)://[^\s<>\"')\]]+")
_ANCHOR = re.compile(r'<a\b([^>]*)>(.*?)</a>', re.DOTALL | re.IGNORECASE)
_HREF = re.compile(r'\bhref="([^"]*)"', re.IGNORECASE)


def defang(url: str) -> str:
    """A link target that shows where it goes and cannot be followed by a click or a
    copy-paste: `https://203.0.113.7/login` -> `hxxps://203.0.113[.]7/login`."""
    u = url.strip()
    m = _SCHEME.match(u)
    scheme, sep, rest = "", "", u
    if m:
        scheme, sep, rest = m.group(1), m.group(0)[len(m.group(1)):], u[m.end():]
        if scheme.lower() == "mailto":
            return "mailto:" + _dot(rest.replace("@", "[@]"), len(rest) + 2)
        scheme = _SCHEMES.get(scheme.lower(), scheme)
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    return scheme + sep + _dot(rest, end)


def _dot(text: str, host_end: int) -> str:
    """Bracket the last dot of the host (the part before `host_end`)."""
    host = text[:host_end]
    i = host.rfind(".")
    if i == -1 or "[.]" in host:
        return text
    return host[:i] + "[.]" + host[i + 1:] + text[host_end:]


def _url_at(m: re.Match[str]) -> tuple[str, str]:
    """The URL a text match holds, and the punctuation after it that ends the sentence."""
    whole = m.group(0)
    url = whole.rstrip(".,;:!?")
    return url, whole[len(url):]


def defang_text(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        url, tail = _url_at(m)
        return defang(url) + tail

    return _URL_IN_TEXT.sub(one, text)


def show_link_targets(clean_html: str) -> str:
    """Sanitised HTML whose links cannot be followed but say where they lead: each <a> loses
    its href, and its target follows it, defanged, in plain sight."""
    def one(m: re.Match[str]) -> str:
        attrs, inner = m.group(1), m.group(2)
        href = _HREF.search(attrs)
        if href is None:
            return f"<a>{inner}</a>"
        target = defang(html.unescape(href.group(1)))
        return (f'<a>{inner}</a> <code style="color:#b71c1c;background:#fff3f3">'
                f'[{html.escape(target)}]</code>')

    return _ANCHOR.sub(one, clean_html)


class _Links(HTMLParser):
    """(target, visible text) of each <a href> of an HTML body."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._close()
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close()

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def _close(self) -> None:
        if self._href is not None and self._href.strip():
            self.links.append((self._href.strip(), " ".join("".join(self._text).split())))
        self._href = None


def links_of(html_body: str, text: str, limit: int = 100) -> list[dict[str, str]]:
    """Every link target of the message once, defanged, with the text it is shown as in the
    HTML (empty for links written out in the text)."""
    out: dict[str, dict[str, str]] = {}
    if html_body:
        parser = _Links()
        try:
            parser.feed(html_body[:500_000])
            parser.close()
        except Exception:  # a broken tag soup keeps the links read before it
            pass
        for target, shown in parser.links:
            if target.lower().startswith(("http:", "https:", "ftp:", "mailto:", "www.")):
                out.setdefault(target, {"target": defang(target), "text": shown[:200]})
    for m in _URL_IN_TEXT.finditer(text):
        url = _url_at(m)[0]
        out.setdefault(url, {"target": defang(url), "text": ""})
    return list(out.values())[:limit]


@dataclass
class Preview:
    subject: str = ""
    from_: str = ""
    to: str = ""
    date: str = ""
    text: str = ""
    html_clean: str = ""  # sanitised HTML fragment; "" when the mail has no HTML part
    attachments: list[dict[str, object]] = field(default_factory=list)
    links: list[dict[str, str]] = field(default_factory=list)  # {target (defanged), text}
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
            p.html_clean = show_link_targets(sanitize_html(html_body[:max_chars]))
        p.links = links_of(html_body, p.text)
        for part in msg.iter_attachments():
            payload = part.get_payload(decode=True) or b""
            if not isinstance(payload, bytes):
                payload = b""
            p.attachments.append({"filename": part.get_filename() or "", "type": part.get_content_type(),
                                  "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()})
    except Exception as exc:  # malformed mail: show what we can, never fail the page
        p.error = f"could not fully parse this message: {exc.__class__.__name__}: {exc}"
        if not p.text:
            p.text = raw[:max_chars].decode("utf-8", "replace")
    # Written-out addresses are shown defanged too: nothing in a preview is one click or
    # one paste away from a phishing page.
    p.text = defang_text(p.text[:max_chars])
    return p


def iframe_document(fragment: str) -> str:
    """The document placed in <iframe sandbox srcdoc>: its own CSP meta as a second lock."""
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{FRAME_CSP}\">"
            "<style>body{font-family:sans-serif;margin:8px;color:#222}</style></head>"
            f"<body>{fragment}</body></html>")
