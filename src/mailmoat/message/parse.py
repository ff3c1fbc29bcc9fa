"""Bytes → `ParsedMessage`, once, with limits, never raising on bad mail.

Hostile or broken MIME is normal input for a gateway. Everything here degrades instead of
failing: undecodable headers fall back through charsets, nesting beyond `max_depth` is not
followed, and a message the parser cannot read at all still yields a model carrying the
`MIME_UNPARSEABLE` defect (which policy quarantines by default).
"""

from __future__ import annotations

import codecs
import logging
import email.feedparser
import email.header
import email.utils
import hashlib
import html as _html_entities
import re
from itertools import islice
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from urllib.parse import urlsplit

from mailmoat.message.model import Address, Attachment, Envelope, ParsedMessage, Url
from mailmoat.message.sniff import sniff_type

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 1_000_000  # per body kind; checks never need more to judge a message
MAX_HEADER_VALUE = 64 * 1024
MAX_URLS = 2000
DEFAULT_MAX_HTML_DEPTH = 2000  # [scan] max_html_depth: see html_over_budget
DEFAULT_MAX_HTML_TAGS = 100_000  # [scan] max_html_tags

# (?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>"'`{}|\\^\[\]]+ written so that the pattern starts
# with a plain character set: the regex engine then skips to the next h/f/w in C instead of
# trying the whole pattern at every position (4-7x faster on the text of a 100 KB message).
# Same matches: \b is checked behind the first letter, and "ſ" is there because (?i) lets
# "s" match it. Checked against the old pattern on every message of the corpora.
_URL_RE = re.compile(r"""[hHfFwW](?<=\b[hHfFwW])(?:(?<=[hH])[tT][tT][pP][sSſ]?://"""
                     r"""|(?<=[fF])[tT][pP]://|(?<=[wW])[wW][wW]\.)[^\s<>"'`{}|\\^\[\]]+""")
_TRAILING_PUNCT = ".,;:!?)]}>'\""
_CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030",
                    "ks_c_5601-1987": "cp949", "unknown-8bit": "utf-8", "x-unknown": "utf-8"}

# Types whose signature libmagic would only confirm: answered by the cheap sniffer, because
# libmagic costs milliseconds per call on text-like data. A zip is not among them: libmagic
# tells an Office document from a plain zip, and the type-mismatch check needs that.
_SNIFF_TRUSTED = frozenset({"application/pdf", "image/png", "image/jpeg", "image/gif"})

try:  # libmagic is optional at import time; without it detected_type stays ""
    import magic as _magic

    def _libmagic(data: bytes) -> str:
        try:
            return str(_magic.from_buffer(data[:8192], mime=True))
        except Exception:  # libmagic errors must not break parsing
            return ""
except Exception:  # pragma: no cover - depends on the system library
    def _libmagic(data: bytes) -> str:
        return ""


class _LineBreakAtEnd:
    r"""The stdlib MIME parser drops the line break that ends each part with
    `NLCRE_eol.search(payload)`, where NLCRE_eol is `(\r\n|\r|\n)\Z`: the regex is tried at
    every position of the part, a scan of the whole body (measured: 0.9 ms for a 77 KB
    base64 attachment) to look at its last two characters. A match of that pattern can only
    start in the last two characters, so searching from there finds the same match."""

    _re = re.compile(r"(\r\n|\r|\n)\Z")
    pattern = _re.pattern

    def search(self, string: str) -> re.Match[str] | None:
        return self._re.search(string, max(0, len(string) - 2))


# typeshed does not declare feedparser's module-level NLCRE_eol: read it with getattr, and
# the assignment needs the ignore below (a stub gap; the name exists at run time).
_nlcre_eol = getattr(email.feedparser, "NLCRE_eol", None)
if _nlcre_eol is not None and _nlcre_eol.pattern == _LineBreakAtEnd.pattern:
    email.feedparser.NLCRE_eol = _LineBreakAtEnd()  # type: ignore[attr-defined]


def _detect_type(data: bytes) -> str:
    sniffed = sniff_type(data[:8192])
    return sniffed if sniffed in _SNIFF_TRUSTED else _libmagic(data)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, then sensible fallbacks; never raises."""
    candidates = []
    declared = None
    if charset:
        cs = charset.strip().strip('"').lower()
        declared = _CHARSET_ALIASES.get(cs, cs)
        candidates.append(declared)
    candidates += ["utf-8", "gb18030", "cp1252"]
    for cs in candidates:
        try:
            codecs.lookup(cs)
            return data.decode(cs)
        except (LookupError, ValueError):  # ValueError: any UnicodeError (idna), a NUL in the name
            if cs == declared and _multibyte(cs):
                # A text cut inside a multi-byte character (an archiver truncating a
                # Subject, a relay a line) is still in its declared charset: a couple of
                # bad bytes must not turn the whole of it into Western mojibake.
                text = _decode_nearly(data, cs)
                if text is not None:
                    return text
            continue
    return data.decode("latin-1")


# East Asian multi-byte charsets: a cut character fails the strict decode of the whole text.
# (A single-byte or UTF-8 label that fails is more often simply wrong: Latin-1 text labelled
# us-ascii or utf-8, which the cp1252 fallback reads right.)
_MULTIBYTE = frozenset(["gb2312", "gbk", "gb18030", "hz", "big5", "big5hkscs", "cp950",
                        "shift_jis", "cp932", "shift_jis_2004", "shift_jisx0213", "euc_jp",
                        "euc_jis_2004", "euc_jisx0213", "euc_kr", "cp949", "johab",
                        "iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_2004",
                        "iso2022_jp_3", "iso2022_jp_ext", "iso2022_kr"])


def _multibyte(charset: str) -> bool:
    try:
        return codecs.lookup(charset).name.replace("-", "_") in _MULTIBYTE
    except (LookupError, ValueError):
        return False


def _decode_nearly(data: bytes, charset: str) -> str | None:
    """`data` in `charset` (a known codec) with undecodable bytes replaced, if only a few."""
    text = data.decode(charset, errors="replace")
    return text if text.count("\ufffd") <= max(2, len(text) // 100) else None


def decode_header_value(value: object) -> str:
    """RFC 2047-decode a header value, repairing raw 8-bit bytes."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        value = str(value)
    text = str(value)
    if not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text):
        # compat32 carries raw 8-bit header bytes as surrogates: recover and guess the charset.
        text = decode_bytes(text.encode("ascii", "surrogateescape"), None)
    if "=?" in text:
        try:
            parts = email.header.decode_header(text)
            out = []
            for chunk, cs in parts:
                out.append(decode_bytes(chunk, cs) if isinstance(chunk, bytes) else chunk)
            text = "".join(out)
        except Exception:  # malformed encoded-words: keep the raw text
            pass
    text = text.replace("\r", "").replace("\n", " ").replace("\x00", "")
    return text[:MAX_HEADER_VALUE]


def parse_addresses(values: list[str]) -> tuple[Address, ...]:
    out = []
    try:
        pairs = email.utils.getaddresses(values)
    except Exception:
        pairs = []
    for name, addr in pairs:
        addr = addr.strip().lower()
        if not name and not addr:
            continue
        out.append(Address(display_name=name.strip(), address=addr if "@" in addr else ""))
    return tuple(out)


def idna_to_unicode(host: str) -> str:
    """Decode the punycode labels of a host; labels that do not decode are kept as written."""
    out = []
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                label = label.encode("ascii").decode("idna")
            except UnicodeError:
                pass
        out.append(label)
    return ".".join(out)


def make_url(raw: str, source: str, display_text: str = "", tag: str = "") -> Url | None:
    raw = raw.strip().strip(_TRAILING_PUNCT) if source == "text" else raw.strip()
    if not raw:
        return None
    candidate = raw
    if candidate.lower().startswith("www."):
        candidate = "http://" + candidate
    try:
        parts = urlsplit(candidate)
        scheme = parts.scheme.lower()
        raw_host = (parts.hostname or "").lower().rstrip(".")
        try:
            port = parts.port
        except ValueError:
            port = None
        path = parts.path
    except ValueError:
        return None
    if not scheme:
        return None
    host = idna_to_unicode(raw_host) if "xn--" in raw_host else raw_host
    return Url(url=raw[:4096], scheme=scheme, host=host, port=port, path=path[:2048],
               source=source, display_text=display_text[:500], tag=tag, raw_host=raw_host)


def urls_in_text(text: str, source: str = "text") -> list[Url]:
    found = []
    for m in _URL_RE.finditer(text):
        u = make_url(m.group(0), source)
        if u is not None:
            found.append(u)
        if len(found) >= MAX_URLS:
            break
    return found


_HTML_URL_ATTRS = (("a", "href"), ("area", "href"), ("form", "action"), ("img", "src"),
                   ("iframe", "src"), ("script", "src"), ("link", "href"), ("meta", "content"))


def html_to_text_and_urls(html: str, *, max_depth: int = DEFAULT_MAX_HTML_DEPTH,
                          max_tags: int = DEFAULT_MAX_HTML_TAGS) -> tuple[str, list[Url]]:
    """Visible text of an HTML body and the URLs it links to (with anchor text).

    HTML beyond the budget (`html_over_budget`) is read by the linear fallback instead of
    the tree builder, so no caller (attachment scans included) can be held for minutes."""
    if html_over_budget(html, max_depth, max_tags) is not None:
        return html_fallback_text_and_urls(html)
    return _html_tree_text_and_urls(html)


def _html_tree_text_and_urls(html: str) -> tuple[str, list[Url]]:
    from selectolax.lexbor import LexborHTMLParser

    try:
        tree = LexborHTMLParser(html)
    except Exception:
        return re.sub(r"<[^>]+>", " ", html), []
    urls: list[Url] = []
    for tag, attr in _HTML_URL_ATTRS:
        for node in tree.css(tag):
            value = node.attributes.get(attr)
            if not value:
                continue
            if tag == "meta":  # <meta http-equiv=refresh content="0; url=…">
                m = re.search(r"url\s*=\s*['\"]?([^'\"\s>]+)", value, re.I)
                if not m:
                    continue
                value = m.group(1)
            text = node.text(separator=" ", strip=True) if tag == "a" else ""
            u = make_url(value, "html", display_text=text, tag=tag)
            if u is not None:
                urls.append(u)
            if len(urls) >= MAX_URLS:
                break
    for node in tree.css("script, style, head, noscript"):
        node.decompose()
    body = tree.body or tree.root
    text = body.text(separator=" ") if body is not None else ""
    text = _collapse_blanks(text)
    text = re.sub(r"\n\s*\n+", "\n\n", text)
    return text.strip(), urls


_BLANKS = str.maketrans("\t\r\f\v", "    ")


def _collapse_blanks(text: str) -> str:
    """Every run of spaces, tabs, CR, FF and VT → one space. What re.sub(r"[ \t\r\f\v]+",
    " ", text) does, without a Python-level replacement per single space (timeit, best of
    15, on the 25 KB of HTML text of bench/scan_latency.py's 100 KB message: 1.3 → 0.09 ms)."""
    if "\t" in text or "\r" in text or "\f" in text or "\v" in text:
        text = text.translate(_BLANKS)
    while "  " in text:
        text = text.replace("  ", " ")
    return text


# -- the HTML budget -------------------------------------------------------------------------
#
# lexbor (selectolax) builds a tree in time that grows with depth × tags for some shapes:
# 200,000 closed nested <div>s (2 MB) held the parser for minutes, and with it the gateway.
# Measured (1 MB of HTML, selectolax 1.0.2): 40,000 nested <div>s 2.4 s, unclosed <pre>
# 3.8 s, 20,000 <option>s in one <select> 1.3 s (90,000: 56 s), one tag with 40,000
# attributes 3.9 s; ordinary shapes of the same size take 10-60 ms. So before a tree is
# built, a linear scan estimates what lexbor would build; past the budget the HTML is read
# by a linear regex fallback and the message carries a defect (quarantined by the malformed
# check): never accepted on a partial reading, never left to stall the process.
# Calibration: of 7,984 corpus messages (ham, spam, phish), the deepest HTML is a phish of
# 509 levels (this scan: 507), four times under the default. 2,000 levels of blocks in 1 MB take
# lexbor about 0.25 s; 100,000 flat tags about 0.1 s, plus 0.1 s for this scan.

MAX_HTML_ATTRIBUTES = 1000  # per tag; lexbor checks each new attribute against the others

_TAG_OPEN = re.compile(r"<(?:(/?)([A-Za-z][^\s/>]*)|!--|[!?])")
_VOID = frozenset("area base basefont bgsound br col embed frame hr image img input isindex "
                  "keygen link meta param source track wbr".split())
# Elements whose content is text up to their end tag (no tags inside to count).
_RAW_TEXT = frozenset("script style textarea title xmp iframe noembed noframes".split())
# A start tag of one of these closes an open <p> on top of the stack.
_CLOSES_P = frozenset("address article aside blockquote center details dialog dir div dl "
                      "fieldset figcaption figure footer header hgroup main menu nav ol p "
                      "search section summary ul h1 h2 h3 h4 h5 h6 pre listing form li dd dt "
                      "table hr xmp".split())
_HEADINGS = frozenset("h1 h2 h3 h4 h5 h6".split())
_CELLS = frozenset(("td", "th"))
_TABLE_SECTIONS = frozenset(("tbody", "thead", "tfoot"))
# An end tag only closes an element above the nearest scope boundary (HTML "has an element
# in scope"); table parts look past everything but table/template/html.
_SCOPE = frozenset("applet caption html table td th marquee object template".split())
_TABLE_SCOPE = frozenset(("html", "table", "template"))
_TABLE_PARTS = frozenset("table tbody thead tfoot tr td th caption".split())
# The end tag of a formatting element runs the adoption agency: a block opened inside it
# (the "furthest block", a special element) stays open, so only phrasing above it is closed.
_FORMATTING = frozenset("a b big code em font i nobr s small strike strong tt u".split())
_SPECIAL = frozenset("address applet article aside blockquote body button caption center "
                     "colgroup dd details dir div dl dt fieldset figcaption figure footer form "
                     "frameset h1 h2 h3 h4 h5 h6 head header hgroup html li listing main marquee "
                     "menu nav noscript object ol p plaintext pre search section select summary "
                     "table tbody td template tfoot th thead tr ul".split())
# HTML elements that end SVG/MathML content when they start inside it (font included,
# though only some of its forms do: counting it as HTML errs on the deep side).
_BREAKOUT = frozenset("b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 "
                      "h5 h6 head hr i img li listing menu meta nobr ol p pre ruby s small "
                      "span strong strike sub sup table tt u ul var font".split())


class _OpenElements:
    """The stack of open elements as lexbor would keep it, roughly: start tags push, the end
    tags and implied ends ordinary generators rely on (<p>, <li>, <td>, <tr>, <option>…
    left open) pop. Where the HTML rules are subtler it errs on the deep side, so a shape
    can be over-counted but not under-counted. Every operation is O(1) amortised."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.at: dict[str, list[int]] = {}  # name -> its positions in the stack
        self.scope: list[int] = []  # positions of _SCOPE elements
        self.table_scope: list[int] = []  # positions of _TABLE_SCOPE elements
        self.special: list[int] = []  # positions of _SPECIAL elements

    def top(self) -> str:
        return self.names[-1] if self.names else ""

    def push(self, name: str) -> int:
        pos = len(self.names)
        self.names.append(name)
        self.at.setdefault(name, []).append(pos)
        if name in _SCOPE:
            self.scope.append(pos)
        if name in _TABLE_SCOPE:
            self.table_scope.append(pos)
        if name in _SPECIAL:
            self.special.append(pos)
        return pos + 1

    def pop_to(self, pos: int) -> None:
        """Pop the element at `pos` and everything above it."""
        names = self.names
        while len(names) > pos:
            name = names.pop()
            self.at[name].pop()
            if self.scope and self.scope[-1] == len(names):
                self.scope.pop()
            if self.table_scope and self.table_scope[-1] == len(names):
                self.table_scope.pop()
            if self.special and self.special[-1] == len(names):
                self.special.pop()

    def pop_top_if(self, names: frozenset[str] | tuple[str, ...]) -> None:
        if self.names and self.names[-1] in names:
            self.pop_to(len(self.names) - 1)

    def end_tag(self, name: str) -> None:
        where = self.at.get(name)
        if not where:
            return  # a stray end tag: ignored
        if name == "form":  # </form> takes the form out of the stack, nothing above it
            if self.top() == "form":
                self.pop_to(where[-1])
            return
        if name in _FORMATTING and self.special and self.special[-1] > where[-1]:
            return  # a block inside it stays open (and the element with it: erring deep)
        bounds = self.table_scope if name in _TABLE_PARTS else self.scope
        if where[-1] >= (bounds[-1] if bounds else -1):
            self.pop_to(where[-1])

    def start_tag(self, name: str) -> int:
        """Apply the implied ends a start tag causes, push it; the depth after."""
        if name in _CLOSES_P:
            self.pop_top_if(("p",))
        if name == "li":
            self.pop_top_if(("li",))
        elif name in ("dd", "dt"):
            self.pop_top_if(("dd", "dt"))
        elif name in _HEADINGS:
            self.pop_top_if(_HEADINGS)
        elif name in _CELLS:
            self.pop_top_if(_CELLS)
        elif name == "tr":
            self.pop_top_if(_CELLS)
            self.pop_top_if(("tr",))
        elif name in _TABLE_SECTIONS:
            self.pop_top_if(_CELLS)
            self.pop_top_if(("tr",))
            self.pop_top_if(_TABLE_SECTIONS)
        elif name in ("option", "optgroup"):
            self.pop_top_if(("option",))
            if name == "optgroup" and self.at.get("select"):
                self.pop_top_if(("optgroup",))
        return self.push(name)


def html_over_budget(html: str, max_depth: int = DEFAULT_MAX_HTML_DEPTH,
                     max_tags: int = DEFAULT_MAX_HTML_TAGS) -> tuple[str, int] | None:
    """None when lexbor may build the tree of `html`; else (defect, offset): the defect
    (HTML_TOO_MANY_TAGS, HTML_TOO_DEEP, HTML_TOO_MANY_ATTRIBUTES) and where the HTML goes
    past the budget (what comes before it is within the budget). Linear in len(html)."""
    if html.count("<") <= min(max_depth, max_tags) and html.count("=") <= MAX_HTML_ATTRIBUTES:
        return None  # the common small body: nothing in it can exceed any limit
    lower = html.lower()
    # Options of one select cost lexbor like nesting does (it walks the list at each one):
    # they count against the depth limit, open or closed.
    options = lower.count("<option") + lower.count("<optgroup")
    if options > max_depth:
        return "HTML_TOO_DEEP", _nth(lower, ("<option", "<optgroup"), max_depth)
    stack = _OpenElements()
    pos, n, seen = 0, len(html), 0
    while pos < n:
        m = _TAG_OPEN.search(html, pos)
        if m is None:
            break
        if m.group(2) is None:  # <!-- comment -->, <!doctype>, <?…>: skipped whole
            end = html.find("-->", m.end()) + 2 if m.group(0) == "<!--" else html.find(">", m.end())
            if end < m.end():
                break  # unterminated: the rest is not markup
            pos = end + 1
            continue
        end = html.find(">", m.end())
        if end < 0:
            break  # an unfinished tag at the end is dropped by parsers too
        pos = end + 1
        seen += 1
        if seen > max_tags:  # bounds this loop as well as the tree
            return "HTML_TOO_MANY_TAGS", m.start()
        name = m.group(2).lower()
        if m.group(1):
            stack.end_tag(name)
            continue
        if html.count("=", m.end(), end) > MAX_HTML_ATTRIBUTES:
            return "HTML_TOO_MANY_ATTRIBUTES", m.start()
        if name in _VOID or (html[end - 1] == "/" and name not in _BREAKOUT
                             and (stack.at.get("svg") or stack.at.get("math"))):
            continue  # "/>" closes only in SVG and MathML: <div/> opens a div
        if name in _RAW_TEXT:
            close = lower.find("</" + name, pos)
            if close < 0:
                break
            pos = close
            continue
        if name == "plaintext":
            break
        if stack.start_tag(name) > max_depth:
            return "HTML_TOO_DEEP", m.start()
    return None


def _nth(text: str, marks: tuple[str, ...], n: int) -> int:
    """Offset of the n-th (0-based) occurrence of any of `marks` in `text`."""
    found = sorted(m.start() for m in islice(
        re.finditer("|".join(re.escape(x) for x in marks), text), n + 1))
    return found[-1] if found else len(text)


_FALLBACK_TAG = re.compile(r"<[^<>]*>")  # stops at the next "<": linear, even unterminated
_HIDDEN = re.compile(r"<(script|style|head|noscript)\b")
_LINK_TAG = re.compile(r"<(a|area|form|img|iframe|script|link|meta)\b([^<>]*)>", re.I)
_LINK_ATTR = {"a": "href", "area": "href", "form": "action", "img": "src", "iframe": "src",
              "script": "src", "link": "href", "meta": "content"}
_ATTR_VALUE = r"""\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))"""
_ATTR_RES = {attr: re.compile(r"(?<![\w-])" + attr + _ATTR_VALUE, re.I)
             for attr in set(_LINK_ATTR.values())}
_ANCHOR_TEXT_SPAN = 2000


def html_fallback_text_and_urls(html: str) -> tuple[str, list[Url]]:
    """What `html_to_text_and_urls` gives, read without a tree, in linear time: the text
    with tags stripped (script, style, head and noscript left out) and the links of the
    same tags and attributes, with anchor text up to the next </a>. For HTML beyond the
    budget: rougher than the tree (no DOM fix-ups), but every word and link reaches the
    checks."""
    lower = html.lower()
    urls: list[Url] = []
    for m in _LINK_TAG.finditer(html):
        tag = m.group(1).lower()
        a = _ATTR_RES[_LINK_ATTR[tag]].search(m.group(2))
        if a is None:
            continue
        value = _html_entities.unescape(next(g for g in a.groups() if g is not None))
        if tag == "meta":
            r = re.search(r"url\s*=\s*['\"]?([^'\"\s>]+)", value, re.I)
            if not r:
                continue
            value = r.group(1)
        text = ""
        if tag == "a":
            close = lower.find("</a", m.end(), m.end() + _ANCHOR_TEXT_SPAN)
            if close > 0:
                text = _strip_tags(html[m.end():close]).strip()
        u = make_url(value, "html", display_text=text, tag=tag)
        if u is not None:
            urls.append(u)
        if len(urls) >= MAX_URLS:
            break
    text = _strip_tags(_without_hidden(html, lower))
    text = re.sub(r"\n\s*\n+", "\n\n", text)
    return text.strip(), urls


def _without_hidden(html: str, lower: str) -> str:
    """`html` without the content of script, style, head and noscript elements. An element
    left open keeps what follows it: better shown to the checks than hidden."""
    out: list[str] = []
    pos = 0
    while True:
        m = _HIDDEN.search(lower, pos)
        if m is None:
            break
        close = lower.find("</" + m.group(1), m.end())
        if close < 0:
            break
        out.append(html[pos:m.start()])
        pos = close
    out.append(html[pos:])
    return " ".join(out)


def _strip_tags(fragment: str) -> str:
    return _collapse_blanks(_html_entities.unescape(_FALLBACK_TAG.sub(" ", fragment)))


def _walk(root: Message, max_depth: int, max_parts: int, defects: list[str]) -> list[tuple[Message, int]]:
    """Iterative MIME walk (no recursion: 1,000-deep nesting must not blow the stack)."""
    leaves: list[tuple[Message, int]] = []
    stack: list[tuple[Message, int]] = [(root, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > max_parts:
            defects.append("MIME_TOO_MANY_PARTS")
            break
        for d in getattr(part, "defects", []) or []:
            defects.append("MIME_" + _defect_name(d))
        try:
            payload = part.get_payload()
        except Exception:  # the stdlib decodes a leaf's 8-bit text with its declared charset
            payload = None  # and trips on some (idna, a NUL in the name): a leaf all the same
        if part.is_multipart() and isinstance(payload, list):
            if depth >= max_depth:
                defects.append("MIME_TOO_DEEP")
                continue
            for sub in reversed(payload):
                if isinstance(sub, Message):
                    stack.append((sub, depth + 1))
        else:
            leaves.append((part, depth))
    return leaves


def _looks_like_html(text: str) -> bool:
    head = text[:2048].lower()
    return "<html" in head or "<body" in head or "<div" in head or "<p>" in head


def _defect_name(defect: object) -> str:
    name = type(defect).__name__.replace("Defect", "")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() or "DEFECT"


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        try:
            param = part.get_param("name")
        except Exception:
            param = None
        if isinstance(param, tuple):  # RFC 2231 triple
            param = email.utils.collapse_rfc2231_value(param)
        name = param
    return decode_header_value(name)[:255] if name else ""


def _head_of(payload: bytes) -> bytes:
    """The start of a huge body, enough for MAX_TEXT_CHARS: decoding 50 MB to keep 1 MB
    costs seconds and hundreds of MB. Cut at a line break so no multi-byte character is
    split (which would send decode_bytes to a wrong fallback charset)."""
    limit = MAX_TEXT_CHARS * 4
    if len(payload) <= limit:
        return payload
    cut = payload.rfind(b"\n", 0, limit)
    return payload[: cut + 1 if cut > 0 else limit]


_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
_MAX_JUNK_LINES = 2


def junk_before_headers(raw: bytes) -> int:
    """Length of stray lines in front of an otherwise intact header section, else 0.

    A message whose first line or two are neither a header field, a fold nor an mbox 'From '
    line (typically the broken tail of a Received header cut by a relay or an archiver),
    followed by a run of header fields, still has its headers: the stdlib parser would take
    the whole message for a headerless body and lose From, Subject and the MIME structure.
    """
    pos = 0
    for _ in range(_MAX_JUNK_LINES):
        end = raw.find(b"\n", pos)
        if end < 0:
            return 0
        line = raw[pos:end + 1]
        if not line.strip() or line[:1] in (b" ", b"\t") or _HEADER_LINE.match(line) \
                or line.startswith(b"From "):
            break
        pos = end + 1
    if pos == 0:
        return 0
    # At least three header fields in a row (folds allowed) must follow the junk.
    fields, cur = 0, pos
    while fields < 3:
        end = raw.find(b"\n", cur)
        line = raw[cur:end + 1 if end >= 0 else len(raw)]
        if _HEADER_LINE.match(line):
            fields += 1
        elif not (line[:1] in (b" ", b"\t") and fields):
            return 0
        if end < 0:
            break
        cur = end + 1
    return pos if fields >= 3 else 0


# Fields every real header section carries; one of them after a stray line shows the section
# goes on (a body without its blank separator rarely starts with "Content-Type:").
_STRUCTURAL_FIELD = re.compile(
    rb"(?i)(?:date|from|to|cc|subject|message-id|mime-version|content-type|"
    rb"content-transfer-encoding|received|return-path|reply-to|x-mailer)[ \t]*:")
_MAX_BROKEN_FOLDS = 8
# A line inside the header section that is neither a fold, a field nor an mbox "From " line.
_ODD_HEADER_LINE = re.compile(rb"\n(?![ \t]|[!-9;-~]+[ \t]*:|From )")
_MAX_HEADER_SCAN = 256 * 1024


def repair_broken_folds(raw: bytes) -> tuple[bytes, int]:
    """(raw with each broken fold indented, how many were mended).

    A long header (typically a base64 encoded-word Subject from Chinese mail programs of the
    2000s) continued on a line *without* the leading space RFC 5322 requires: the stdlib
    parser ends the header section there, and everything after it (Date, MIME-Version,
    Content-Type) becomes body text. The message loses its subject and its MIME structure,
    so its attachments would go unscanned. Such a line is taken for the continuation it is
    (joined to the line before when it was cut inside an encoded word) when it follows a
    header field and standard fields (`_STRUCTURAL_FIELD`) come after it before the blank
    line. Only the bytes scanned change; the mail delivered is untouched.
    """
    first_eol = raw.find(b"\n", 0, 4096)
    crlf = first_eol > 0 and raw[first_eol - 1] == 13  # CR: look for the blank line it uses
    end = raw.find(b"\r\n\r\n" if crlf else b"\n\n", 0, _MAX_HEADER_SCAN)
    if end < 0:
        end = raw.find(b"\n\n" if crlf else b"\r\n\r\n", 0, _MAX_HEADER_SCAN)
    head = raw[:end] if end >= 0 else raw[:_MAX_HEADER_SCAN]
    if not _ODD_HEADER_LINE.search(head):
        return raw, 0  # the common case, in one pass of the regex engine
    lines = head.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():  # the blank line ends the section, whatever its line ending
            lines = lines[:i]
            break
    section_end = sum(len(line) + 1 for line in lines) - 1  # bytes of `lines`, joined
    broken: set[int] = set()
    in_field = False
    for i, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            continue
        if _HEADER_LINE.match(line) or line.startswith(b"From "):
            in_field = True
            continue
        if not in_field or len(broken) >= _MAX_BROKEN_FOLDS:
            return raw, 0
        if not any(_STRUCTURAL_FIELD.match(later) for later in lines[i + 1:]):
            return raw, 0  # the body began without a blank line: leave it to the parser
        broken.add(i)
    if not broken:
        return raw, 0
    out: list[bytes] = []
    for i, line in enumerate(lines):
        if i in broken and _open_encoded_word(out[-1]):
            # Cut inside an encoded word: joined without a space, or the word would not decode.
            out[-1] = out[-1].rstrip(b"\r") + line
        else:
            out.append(b" " + line if i in broken else line)
    return b"\n".join(out) + raw[section_end:], len(broken)


def _open_encoded_word(line: bytes) -> bool:
    """Whether a header line ends inside an RFC 2047 encoded word (`=?charset?B?...`)."""
    start = line.rfind(b"=?")
    return start >= 0 and line.count(b"?", start + 2) < 3


def parse_message(raw: bytes, envelope: Envelope | None = None, *, max_depth: int = 30,
                  max_parts: int = 1000, max_html_depth: int = DEFAULT_MAX_HTML_DEPTH,
                  max_html_tags: int = DEFAULT_MAX_HTML_TAGS) -> ParsedMessage:
    """Build the message model. Never raises for bad input."""
    html_limits = (max_html_depth, max_html_tags)
    envelope = envelope or Envelope(mail_from="", rcpt_tos=())
    defects: list[str] = []
    if b"\x00" in raw:
        defects.append("MIME_NUL_BYTES")
    junk = junk_before_headers(raw[:8192])
    if junk:
        defects.append("MIME_JUNK_BEFORE_HEADERS")
    mended, folds = repair_broken_folds(raw[junk:] if junk else raw)
    if folds:
        defects.append("MIME_BROKEN_FOLD")
    try:
        msg = BytesParser(policy=compat32).parsebytes(mended)
    except RecursionError:
        # The stdlib parser recurses per nesting level; absurd nesting (a known evasion and
        # DoS trick) exhausts the stack. Keep the headers, mark the body unparseable.
        defects += ["MIME_TOO_DEEP", "MIME_UNPARSEABLE"]
        try:
            msg = BytesHeaderParser(policy=compat32).parsebytes(mended)
        except Exception:
            return _unparseable(raw, envelope, defects)
    except Exception:  # the stdlib parser is tolerant; this is the last line of defence
        return _unparseable(raw, envelope, defects)
    try:
        return _build(raw, envelope, msg, defects, max_depth, max_parts, html_limits)
    except RecursionError:
        defects.append("MIME_TOO_DEEP")
        return _unparseable(raw, envelope, defects)
    except Exception:  # a parser bug must not lose the message: log it, quarantine the mail
        log.exception("could not build the message model")
        return _unparseable(raw, envelope, defects)


def _build(raw: bytes, envelope: Envelope, msg: Message, defects: list[str], max_depth: int,
           max_parts: int, html_limits: tuple[int, int]) -> ParsedMessage:
    headers = tuple((k, decode_header_value(v)) for k, v in msg.raw_items())
    if not headers:
        # No header section at all is not an RFC 5322 message: hold it for a human
        # (malformed_action) rather than guess at a verdict.
        defects += ["MIME_NO_HEADERS", "MIME_UNPARSEABLE"]
    if any(len(v) >= MAX_HEADER_VALUE for _, v in headers):
        defects.append("MIME_HUGE_HEADER")

    by_name: dict[str, list[str]] = {}
    for k, v in headers:
        by_name.setdefault(k.lower(), []).append(v)

    def hdr_all(name: str) -> list[str]:
        return by_name.get(name, [])

    texts: list[str] = []
    htmls: list[str] = []
    attachments: list[Attachment] = []
    leaves = _walk(msg, max_depth, max_parts, defects)
    max_seen_depth = max((d for _, d in leaves), default=0)
    for part, depth in leaves:
        ctype = (part.get_content_type() or "text/plain").lower()
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part)
        try:
            payload = part.get_payload(decode=True)
        except Exception:
            payload = None
            defects.append("MIME_UNDECODABLE_PART")
        if not isinstance(payload, bytes):  # decode=True: bytes, or None for a multipart
            p = part.get_payload()
            payload = p.encode("utf-8", "surrogateescape") if isinstance(p, str) else b""
        # A text part with a file name is still the body when mail programs show it as such:
        # the message's only part, or a part marked inline (newsletters send their HTML as
        # `inline; filename="news.htm"`). Taken for an attachment, its words, links and forms
        # would reach no check: a way to hide a message's content from the filter.
        is_body = (ctype in ("text/plain", "text/html") and disposition != "attachment"
                   and (not filename or disposition == "inline" or part is msg))
        if is_body:
            text = decode_bytes(_head_of(payload), part.get_content_charset())
            (texts if ctype == "text/plain" else htmls).append(text[:MAX_TEXT_CHARS])
            continue
        if ctype.startswith("multipart/"):
            # A multipart that lost its boundaries (already a defect) still carries a body
            # readers see as text: judge it as text rather than lose it from every check.
            if payload.strip():
                text = decode_bytes(payload, part.get_content_charset())
                target = htmls if _looks_like_html(text) else texts
                target.append(text[:MAX_TEXT_CHARS])
            continue
        attachments.append(Attachment(
            filename=filename, declared_type=ctype, detected_type=_detect_type(payload),
            size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), content=payload,
            depth=depth, disposition=disposition))

    text = "\n".join(texts)[:MAX_TEXT_CHARS]
    html = "\n".join(htmls)[:MAX_TEXT_CHARS]
    html_text: str = ""
    html_urls: list[Url] = []
    if html:
        over = html_over_budget(html, *html_limits)
        if over is None:
            html_text, html_urls = _html_tree_text_and_urls(html)
        else:
            defect, cut = over
            defects.append(defect)
            html_text, html_urls = html_fallback_text_and_urls(html)
            # The model keeps only the part within the budget, so a check that builds its
            # own tree of msg.html (the form check does) is bounded too; the text and links
            # of the whole body are in html_text and urls.
            html = html[:cut]
    urls = urls_in_text(text) + html_urls
    # Bare URLs that only appear in HTML text (not in an href) still count.
    if html_text:
        known = {u.url for u in urls}
        urls += [u for u in urls_in_text(html_text) if u.url not in known]
    sender = parse_addresses(hdr_all("sender"))
    return ParsedMessage(
        raw=raw, envelope=envelope, headers=headers,
        from_=parse_addresses(hdr_all("from")), reply_to=parse_addresses(hdr_all("reply-to")),
        to=parse_addresses(hdr_all("to")), cc=parse_addresses(hdr_all("cc")),
        sender=sender[0] if sender else None,
        subject=(hdr_all("subject") or [""])[0], message_id=(hdr_all("message-id") or [""])[0].strip(),
        date=(hdr_all("date") or [""])[0], text=text, html=html, html_text=html_text,
        urls=tuple(urls[:MAX_URLS]), attachments=tuple(attachments),
        defects=tuple(dict.fromkeys(defects)), mime_depth=max_seen_depth,
        part_count=len(leaves), content_type=(msg.get_content_type() or "text/plain").lower())


def unparsed_message(raw: bytes, envelope: Envelope, defects: list[str]) -> ParsedMessage:
    """The model of a message that was not parsed (for instance past the parse time budget):
    its text and URLs read from the raw bytes, `MIME_UNPARSEABLE` among its defects, so it
    is quarantined (malformed_action) rather than judged on a guess."""
    return _unparseable(raw, envelope, list(defects))


def _unparseable(raw: bytes, envelope: Envelope, defects: list[str]) -> ParsedMessage:
    defects.append("MIME_UNPARSEABLE")
    text = decode_bytes(raw[:MAX_TEXT_CHARS], None)
    return ParsedMessage(
        raw=raw, envelope=envelope, headers=(), from_=(), reply_to=(), to=(), cc=(), sender=None,
        subject="", message_id="", date="", text=text, html="", html_text="",
        urls=tuple(urls_in_text(text)[:MAX_URLS]), attachments=(),
        defects=tuple(dict.fromkeys(defects)), mime_depth=0, part_count=0, content_type="")
