"""Tier-1 features: readable tokens from a `ParsedMessage`, hashed into a fixed-size vector.

Every feature is a short string with a namespace prefix (`w:click`, `ud:example.biz`,
`att:exe`), so the model can say in plain words which of *this* message's tokens pushed it
towards spam: the hashing trick loses names inside the model, but we still hold the tokens we
hashed for the message in hand (see `describe_token`).

What is read, and what deliberately is not:
- subject and body text: word unigrams and bigrams, character 3-grams of the subject, and
  character unigrams and bigrams of CJK runs (Chinese/Japanese/Korean need no segmenter);
  text is capped (`MAX_BODY_CHARS`) so the cost per message is bounded;
- sender: registrable domain of From, Reply-To alignment, a display name that carries a
  different address, the mail program family;
- structure: top content type, html-only / alternative, attachment extensions and types;
- URLs: registrable domains, TLDs, path words, IP-literal hosts, link text that names another
  domain than the link target.
Domains are read as everywhere in the gateway (`mailmoat.domains`, the public-suffix list with
its private section): two sites under github.io are two domains, not one `ud:github.io`.
Never read: Received, Return-Path, ARC-*, Authentication-Results, X-MS-*, DKIM-Signature,
Message-ID or Date. They describe the relay path and the era, not the sender's intent, and in
the shared corpora they would give the label away (ham from 2002–2007 list servers, phishing
from 2023–2026 Microsoft 365).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from mailmoat.domains import is_ip, split_domain
from mailmoat.message.model import ParsedMessage

TOKEN_VERSION = 6  # bump when extract() changes: cached tokens become stale
FEATURE_VERSION = 4  # bump when tokens or vectorize() change: models must be retrained
# A block's values are 1/sqrt(max(n, floor)): a short message has less evidence, so its
# vector is shorter and its verdict less confident, instead of a handful of words each
# weighing as much as a whole newsletter.
TEXT_NORM_FLOOR = 60
META_NORM_FLOOR = 12
N_FEATURES_BITS = 20
MAX_BODY_CHARS = 4000  # the first 4,000 characters say what a message is about
MAX_SUBJECT_CHARS = 160
MAX_URLS = 40
MAX_PATH_TOKENS = 80
MAX_WORD_LEN = 30

_WORD_RE = re.compile(r"[^\W_]+(?:['’.][^\W_]+)*")
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_CJK_RUN_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
_DIGITS_RE = re.compile(r"\d")
_PATH_SPLIT_RE = re.compile(r"[A-Za-z]{3,20}")
_DOMAIN_IN_TEXT_RE = re.compile(r"(?i)\b((?:[a-z0-9-]+\.)+[a-z]{2,24})\b")
_SPACE_RE = re.compile(r"\s+")

# (bucket indices, values, tokens) of one message: what `vectorize` returns.
Vector = tuple[np.ndarray, np.ndarray, list[str]]


@dataclass
class Features:
    """The tokens of one message, in two blocks that are normalised separately."""

    text: list[str]  # words, bigrams, CJK characters, subject n-grams
    meta: list[str]  # sender, structure, URLs, attachments
    notes: dict[str, str] = field(default_factory=dict)  # token -> plain-words detail


def _domain(host: str) -> tuple[str, str]:
    """(registrable domain, public suffix) of a host, in `mailmoat.domains`' one reading of
    the public-suffix list (private section included: `evil.github.io` is its own domain);
    IP literals give ("<ip>", "")."""
    host = host.strip(".").lower()
    if not host:
        return "", ""
    if is_ip(host):
        return "<ip>", ""
    parts = split_domain(host)
    return parts.registrable, parts.suffix


def _norm_word(w: str) -> str:
    if len(w) > MAX_WORD_LEN:
        w = w[:MAX_WORD_LEN]
    if _DIGITS_RE.search(w) and w.isdigit():
        return f"<num{min(len(w), 9)}>"  # numbers by length: prices, codes, phone numbers
    return w


def _text_tokens(text: str, prefix: str, out: list[str]) -> None:
    """Word uni/bigrams (`prefix` + word) and CJK character uni/bigrams into `out`."""
    prev = ""
    for m in _WORD_RE.finditer(text):
        w = m.group().lower()
        if _CJK_RE.search(w):
            prev = ""
            for run in _CJK_RUN_RE.findall(w):
                out.extend(prefix + "c:" + ch for ch in run)
                out.extend(prefix + "c:" + run[i:i + 2] for i in range(len(run) - 1))
            rest = _CJK_RUN_RE.sub(" ", w).split()
            for r in rest:
                out.append(prefix + _norm_word(r))
            continue
        w = _norm_word(w)
        out.append(prefix + w)
        if prev:
            out.append(prefix + "b:" + prev + " " + w)
        prev = w


def _mailer_family(msg: ParsedMessage) -> str:
    ua = msg.header("X-Mailer") or msg.header("User-Agent") or ""
    if not ua:
        return "none"
    m = re.match(r"\s*([A-Za-z][A-Za-z .-]{1,30})", ua)
    word = m.group(1).strip().lower() if m else "other"
    return word.split()[0] if word else "other"


def features_of(msg: ParsedMessage) -> Features:
    """`extract(msg)`, computed once per message and shared by the checks that read it (the
    content model and the lesson memory). Read-only for its users."""
    feats = msg.derived.get("tier1_features")
    if feats is None:
        feats = msg.derived["tier1_features"] = extract(msg)
    return feats


def vector_of(msg: ParsedMessage, n_bits: int = N_FEATURES_BITS) -> Vector:
    """`vectorize(features_of(msg), n_bits)`, computed once per message and shared by the
    content model, the lesson memory and the delivered-mail sample. Read-only."""
    key = f"tier1_vector_{n_bits}"
    vec = msg.derived.get(key)
    if vec is None:
        vec = msg.derived[key] = vectorize(features_of(msg), n_bits)
    return vec


def extract(msg: ParsedMessage) -> Features:
    """The tokens of a message. Pure: same message, same tokens."""
    text: list[str] = []
    meta: list[str] = []
    notes: dict[str, str] = {}

    subject = _SPACE_RE.sub(" ", msg.subject or "").strip()[:MAX_SUBJECT_CHARS]
    if subject:
        _text_tokens(subject, "s:", text)
        low = subject.lower()
        text.extend("sc:" + low[i:i + 3] for i in range(len(low) - 2))
    else:
        meta.append("st:no_subject")

    body = msg.text if msg.text.strip() else msg.html_text
    body = body[:MAX_BODY_CHARS]
    _text_tokens(body, "w:", text)
    if not body.strip():
        meta.append("st:empty_body")

    # Sender and alignment.
    from_dom = msg.from_domain
    freg = _domain(from_dom)[0] if from_dom else ""
    meta.append("fd:" + (freg or "<none>"))
    fa = msg.from_addr
    if fa is not None and "@" in fa.display_name:
        shown = _DOMAIN_IN_TEXT_RE.search(fa.display_name.split("@", 1)[1])
        if shown and _domain(shown.group(1))[0] != freg:
            meta.append("fn:other_address")
            notes["fn:other_address"] = (f"the sender name shows {fa.display_name.strip()!r} "
                                         f"but the address is {fa.address}")
    if msg.reply_to:
        rreg = _domain(msg.reply_to[0].domain)[0]
        meta.append("rt:same" if rreg == freg else "rt:other")
        if rreg != freg:
            notes["rt:other"] = f"replies go to {msg.reply_to[0].address}, not to {fa.address if fa else 'the sender'}"
    # Only tokens for what is there: "no X-Mailer", "one recipient", "no attachment" mostly
    # describe how the corpora were collected (list archives vs personal mail), and on short
    # mail they would outweigh its few words.
    mailer = _mailer_family(msg)
    if mailer != "none":
        meta.append("mailer:" + mailer)
    if len(msg.to) + len(msg.cc) >= 6:
        meta.append("rcpt:many")

    # Structure and attachments.
    meta.append("ct:" + (msg.content_type or "none"))
    has_text, has_html = bool(msg.text.strip()), bool(msg.html.strip())
    if has_html and not has_text:
        meta.append("st:html_only")
    elif has_html:
        meta.append("st:text_and_html")
    else:
        meta.append("st:text_only")
    for att in msg.attachments[:20]:
        meta.append("att:" + (att.extension[:10] or "noext"))
        meta.append("att_type:" + (att.detected_type or att.declared_type or "unknown")[:60])
    if msg.attachments:
        meta.append("att_n:" + str(min(len(msg.attachments), 3)))

    # URLs.
    urls = msg.urls
    if urls:
        meta.append("url_n:" + ("1" if len(urls) == 1 else "few" if len(urls) < 10 else "many"))
    seen: set[str] = set()
    path_tokens = 0
    for u in urls[:MAX_URLS]:
        host = u.host
        if not host:
            continue
        reg, suffix = _domain(host)
        if reg == "<ip>":
            meta.append("u_ip")
            notes.setdefault("u_ip", f"links to a bare IP address ({host})")
        if reg not in seen:
            seen.add(reg)
            meta.append("ud:" + reg)
            if suffix:
                meta.append("utld:" + suffix)
            if freg and reg == freg:
                meta.append("u_from_domain")
        if u.scheme == "http":
            meta.append("u_http")
        if u.display_text and u.tag == "a":
            shown = _DOMAIN_IN_TEXT_RE.search(u.display_text)
            if shown:
                sreg = _domain(shown.group(1))[0]
                if sreg and sreg != reg and "." in sreg:
                    meta.append("u_text_mismatch")
                    notes.setdefault("u_text_mismatch",
                                     f"link text shows {shown.group(1).lower()} but points to {host}")
        if path_tokens < MAX_PATH_TOKENS:
            for t in _PATH_SPLIT_RE.findall(u.path)[:8]:
                meta.append("up:" + t.lower())
                path_tokens += 1
    return Features(text=text, meta=meta, notes=notes)


def bucket(token: str, n_bits: int = N_FEATURES_BITS) -> int:
    """The hash bucket of a token (crc32: stable across processes and platforms)."""
    return zlib.crc32(token.encode("utf-8", "surrogatepass")) & ((1 << n_bits) - 1)


def vectorize(feats: Features, n_bits: int = N_FEATURES_BITS) -> Vector:
    """(bucket indices, values, tokens): each distinct token once, each block L2-normalised
    (with a floor on the token count, see TEXT_NORM_FLOOR).

    Presence, not counts: repeating a word a hundred times should not shout a hundred times.
    Indices may repeat when two tokens collide; consumers add them up.
    """
    mask = (1 << n_bits) - 1
    toks: list[str] = []
    vals: list[float] = []
    for block, floor in ((feats.text, TEXT_NORM_FLOOR), (feats.meta, META_NORM_FLOOR)):
        uniq = list(dict.fromkeys(block))
        if not uniq:
            continue
        v = 1.0 / np.sqrt(max(len(uniq), floor))
        toks.extend(uniq)
        vals.extend([v] * len(uniq))
    idx = np.fromiter((zlib.crc32(t.encode("utf-8", "surrogatepass")) & mask for t in toks),
                      dtype=np.int64, count=len(toks))
    return idx, np.asarray(vals, dtype=np.float32), toks


_KIND_LABELS = {
    "w:": "phrase", "s:": "subject word", "sc:": "subject spelling",
    "fd:": "sender domain", "ud:": "URL domain", "utld:": "URL top-level domain",
    "up:": "URL path word", "att:": "attachment type", "att_type:": "attachment content",
    "mailer:": "mail program", "ct:": "message type",
}

_FIXED = {
    "st:html_only": "HTML-only message (no plain-text part)",
    "st:text_and_html": "plain text and HTML versions",
    "st:text_only": "plain-text message",
    "st:no_subject": "no subject",
    "st:empty_body": "empty body",
    "u_http": "links without https",
    "u_ip": "links to a bare IP address",
    "u_from_domain": "links to the sender's own domain",
    "u_text_mismatch": "link text names another domain than the link target",
    "rt:other": "Reply-To goes to another domain than From",
    "rt:same": "Reply-To matches From",
    "fn:other_address": "the sender name carries a different address",
    "rcpt:0": "no visible recipients", "rcpt:many": "many visible recipients",
    "rcpt:1": "one visible recipient", "rcpt:few": "a few visible recipients",
    "url_n:0": "no links", "url_n:1": "one link", "url_n:few": "a few links",
    "url_n:many": "many links", "att_n:0": "no attachments",
}


_STOPWORDS = frozenset(["a", "an", "and", "are", "as", "at", "be", "but", "by", "do", "for", "from", "has", "have", "he", "her", "his", "i", "if", "in", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "she", "so", "than", "that", "the", "their", "them", "then", "there", "they", "this", "to", "us", "was", "we", "were", "what", "when", "which", "who", "will", "with", "you", "your", "re", "fw", "fwd", "http", "https", "www", "com", "html"])
_DULL_PREFIXES = ("att_n:", "rcpt:", "url_n:", "ct:", "mailer:none")


def explainable(token: str) -> bool:
    """Whether a token helps a human: not a stopword, a bare number or a count bucket.

    Such tokens still count in the model; they are only left out of the reason text.
    """
    if token.startswith(_DULL_PREFIXES) or "<num" in token:
        return False
    for prefix in ("w:b:", "s:b:"):
        if token.startswith(prefix):
            words = token[len(prefix):].split(" ")
            return not all(w in _STOPWORDS or len(w) < 3 for w in words)
    for prefix in ("w:", "s:"):
        if token.startswith(prefix) and not token.startswith((prefix + "c:", prefix + "b:")):
            w = token[len(prefix):]
            return w not in _STOPWORDS and len(w) >= 3
    return True


def describe_token(token: str) -> tuple[str, str]:
    """(kind, plain words) for a token, e.g. ("phrase", "'click here'")."""
    if token in _FIXED:
        return "structure", _FIXED[token]
    for prefix in ("s:c:", "w:c:"):
        if token.startswith(prefix):
            return "phrase", repr(token[len(prefix):])
    for prefix in ("s:b:", "w:b:"):
        if token.startswith(prefix):
            return ("subject word" if prefix == "s:b:" else "phrase"), repr(token[len(prefix):])
    head, sep, rest = token.partition(":")
    if sep:
        kind = _KIND_LABELS.get(head + ":")
        if kind:
            if head == "att":
                return kind, "." + rest
            if rest.startswith("<num"):
                return kind, "a number"
            return kind, repr(rest) if kind in ("phrase", "subject word", "subject spelling",
                                                "URL path word") else rest
        if head == "att_n":
            return "structure", f"{rest} attachment(s)"
    return "feature", token
