"""Check family `evidence`: the content tiers' verdict must be backed by evidence.

The content models (tier 1, tier 2, the optional LLM) judge what a message *reads like*.
Trained on 2002–2007 ham and 2023–2026 phishing, "reads like a modern shop, bank or parcel
service" became "phishing" for them, and a real shipping notice scored as high as its
imitation. This check runs last and weighs their score against what every other check found:

1. **Corroborated** — another check found something off (authentication failed, a link to a
   bare IP, a brand named from a foreign domain, a first-time sender asking for payment, …:
   non-content symbols adding up to `evidence_min`): the content verdict stands, and
   `EVIDENCE_CORROBORATED` names the evidence — up to quarantine; to reach reject the
   evidence must add up to `evidence_reject` (a shortened link alone does not).
2. **Consistent bulk or brand mail** — nothing else is off, and the message is bulk or
   automated mail (`bulk` family: unsubscribe machinery, an email service provider, a
   bounce, an invitation) or names a brand it is authenticated for, from a sender whose
   From domain is authenticated, whose display name matches its domain, and whose links
   stay with the sender, its provider or the brand: the content score is withdrawn
   (`EVIDENCE_CONSISTENT`) and becomes the message's **bulk level** (0–9, how spam-like
   the bulk mail reads), which policy maps to its own action (`[policy] bulk_threshold`,
   `bulk_action`). A bounce that returns our own users' mail (`own_dsn`) is always here, and
   so is a DMARC aggregate or SMTP TLS report whose text links nowhere but its recipient's
   own domain (a machine's report for postmasters: the text models cannot judge it, the
   attached report is scanned).
3. **Consistent sender, in a language the models do not know** — nothing else is off, the
   sender is shown consistent (authenticated, named for its domain, no other brand's name,
   links stay home) and the text is in a language of which the content models were trained
   on fewer than `language_min_ham` legitimate messages (the counts are in the model's
   metadata, made by `mailmoat train`). The bundled corpora hold 12 legitimate German
   messages against 478 German spam and phishing, 6 Portuguese against 271, 2 Dutch against
   129: to the models the language itself reads as phishing, so a German shop's order
   confirmation scores as high as a German phish. Their score is withdrawn
   (`EVIDENCE_UNFAMILIAR_LANGUAGE`), unless tier 3 (the optional LLM, not trained on
   these corpora) objects too. A sender that is not shown consistent stays under
   case 5: withdrawing the score for every sender lets a quarter of phishing_pot through
   (75.5% caught instead of 98.2%: `bench/pipeline_accuracy.py` on a copy of `settle`
   without the consistency condition), because its German, Portuguese and Dutch phish are
   caught by their text and little else offline.
4. **Content alone, consistent sender** — nothing else is off and the sender is shown
   consistent (authenticated, named for its domain, links stay home) but the message is
   not bulk or brand mail: text alone may tag it, not hold it (`EVIDENCE_CONTENT_ONLY`
   lowers the total below `[policy] quarantine_threshold`).
5. **Content alone** — nothing else is off, but the sender is not shown consistent: the
   content score may tag or quarantine, never reject on its own (`EVIDENCE_CONTENT_ONLY`
   lowers the total below `[policy] reject_threshold`).

A delivery status notification from the null sender is judged on the other checks alone
when no message log can say whose mail it returns (offline scans): it may be a bounce of
our own users' mail, which is never held. With a log, the bulk family decides (`own_dsn`,
or `BULK_BACKSCATTER` for a forged one).

"Authenticated" is our own SPF/DKIM/DMARC verification or a trusted upstream's
(`AuthFacts`). When authentication could not run at all (offline `mailmoat scan`, where
DNS is unavailable), a DKIM-Signature whose d= is aligned with the From domain stands in
for its verification; reasons say "claims" then, and benchmark figures that rely on it
say so. A verified failure always counts as evidence (case 1).

The assessment (`Consistency`) is computed for every message, whatever the content score,
so benchmarks can combine it with out-of-fold content scores through `settle()`, the same
pure function the check uses.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from pydantic import Field

from mailmoat.config import Config, Section
from mailmoat.domains import is_freemail, org_domain
from mailmoat.message.language import language_of
from mailmoat.message.language import warm as warm_language_model
from mailmoat.message.model import ParsedMessage
from mailmoat.scan.base import (
    TEXT_GROUPS,
    BuildContext,
    Category,
    Check,
    ScanResult,
    Symbol,
    SymbolSpec,
)
from mailmoat.scan.bulk import dkim_domains, esp_domains, report_domain
from mailmoat.scan.facts import AuthFacts
from mailmoat.scan.urls import brand_domains as _brand_domains
from mailmoat.scan.urls import link_occurrences

log = logging.getLogger(__name__)

_G = "evidence"
TOPIC_GROUPS = TEXT_GROUPS  # the content tiers: what the text reads like
# Checks that judge a conversation: who writes to whom, asking what (BEC, first contact).
# A bounce is written by an MTA and quotes our own user's mail: they have nothing to judge.
CONVERSATION_GROUPS = frozenset({"impersonation", "reputation"})

SYMBOLS: dict[str, SymbolSpec] = {
    "EVIDENCE_CORROBORATED": SymbolSpec(
        0.0, "The content verdict is backed by other checks' evidence, which the reason "
        "names; it stands.", Category.POLICY, _G),
    "EVIDENCE_CONSISTENT": SymbolSpec(
        -1.0, "Bulk, automated or brand mail from a consistent, authenticated sender and "
        "nothing else off: the content score is withdrawn (the factor is what it was) and "
        "becomes the bulk level.", Category.CLEAN, _G),
    "EVIDENCE_UNFAMILIAR_LANGUAGE": SymbolSpec(
        -1.0, "A consistent, authenticated sender writes in a language of which the content "
        "models saw too little legitimate mail in training to tell it from spam or "
        "phishing, and no other check found anything off: their score is withdrawn (the "
        "factor is what it was).",
        Category.CLEAN, _G),
    "EVIDENCE_CONTENT_ONLY": SymbolSpec(
        -1.0, "Only the content models object and no other check found anything off: the "
        "total is lowered below the reject threshold (the factor is by how much), so the "
        "text alone can tag or quarantine but never reject.", Category.CLEAN, _G),
}


class EvidenceSettings(Section):
    enabled: bool = Field(True, description="weigh the content tiers' score against the other "
                          "checks' evidence (docs/policy.md#evidence-before-verdict)")
    evidence_min: float = Field(
        1.0, gt=0, description="non-content symbols must add up to this for the content "
        "verdict to count as corroborated")
    evidence_reject: float = Field(
        3.0, gt=0, description="non-content symbols must add up to this for the content "
        "verdict to reach reject; between evidence_min and this it can quarantine at most")
    link_share: float = Field(
        0.5, ge=0, le=1, description="share of a message's links that must stay with the "
        "sender, its email service provider or the brand for it to count as consistent")
    reject_margin: float = Field(
        0.5, gt=0, description="uncorroborated content is lowered to this far below "
        "[policy] reject_threshold")
    language_min_ham: int = Field(
        200, ge=0, description="legitimate messages of a language the content models must "
        "have been trained on for their score alone to count against mail in that language; "
        "0 turns this off (docs/policy.md#evidence-before-verdict)")


# Links every kind of commercial mail carries in its footer: social profiles, the app
# store. They say nothing about where the message wants the reader to go. Not here: the
# hosts of forms, documents and chats scams send readers to (google.com's Forms and Docs,
# t.me, wa.me): those count as links elsewhere.
FOOTER_DOMAINS = frozenset({
    "facebook.com", "fb.com", "instagram.com", "twitter.com", "x.com", "linkedin.com",
    "youtube.com", "youtu.be", "pinterest.com", "tiktok.com", "xing.com", "apple.com",
    "weibo.com", "wechat.com", "w3.org", "schema.org",
})
# Labels of a sender domain that say nothing about who the sender is.
_GENERIC_LABELS = frozenset({
    "mail", "email", "e", "em", "news", "newsletter", "info", "noreply", "no", "reply",
    "www", "mailer", "bounce", "bounces", "send", "mx", "smtp", "notify", "notifications",
    "service", "services", "marketing", "mg", "m", "t", "go", "click", "shop", "store",
    "team", "support", "hello", "contact", "the", "and", "und", "der", "die", "das", "from",
    "von", "your", "ihr", "com", "net", "org", "de", "co", "uk",
})
_WORD = re.compile(r"[a-z0-9]+")
# "Jane Doe (via Google Docs)", "… via Dropbox": a service sending on a user's behalf.
_ON_BEHALF = re.compile(r"\(via [^)]+\)|\bvia (?:google|dropbox|docusign|linkedin)\b", re.I)
_UNSPELLABLE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
# Services on which anyone may send mail under the service's own domain: a help desk's
# ticket mail, a form builder's notifications, a blog platform's newsletters. That the
# service authenticated the mail says nothing about who wrote it, and phishers use them
# for exactly that reason. Free-mail providers are the same (domains.is_freemail).
SHARED_SENDER_DOMAINS = frozenset({
    "zendesk.com", "freshdesk.com", "helpscoutapp.com", "typeform.com", "jotform.com",
    "formstack.com", "surveymonkey.com", "wufoo.com", "hubspotpagebuilder.com", "ghost.io",
    "wixsite.com", "weebly.com", "sharepointonline.com", "onmicrosoft.com", "canva.com",
})


@dataclass(frozen=True)
class Consistency:
    """Whether the sender is shown consistent, and why not. Computed for every message."""

    auth: str  # verified | claimed | shared | failed | unaligned | unknown
    auth_domain: str  # the domain authentication speaks for ("" when none)
    name_coherent: bool
    links_consistent: bool
    bulk_kind: str  # BulkFacts.kind, "brand" for authenticated brand mail, "" otherwise
    bulk_markers: tuple[str, ...]
    own_dsn: bool
    brand_mismatch: tuple[str, ...]
    foreign_links: tuple[str, ...]  # link domains that are neither sender, ESP nor brand
    evidence: tuple[tuple[str, float], ...]  # (symbol, score) of non-content objections
    # A report from the null sender whose returned mail no message log could be checked for
    # (offline): it may well be a bounce of our own mail, which must never be held.
    unverifiable_dsn: bool = False
    # For a bounce judged as ours (own_dsn, unverifiable_dsn): what the checks that judge a
    # conversation (impersonation/BEC, sender reputation) added by reading the returned
    # original, our own user's mail, and the MTA that returned it. Withdrawn with the text.
    conversation: float = 0.0
    # A DMARC aggregate or SMTP TLS report (BulkFacts.report) whose text links nowhere
    # but its recipient's own domain: a machine's summary for postmasters, which the content
    # models (trained on mail people write and read) cannot judge; the report itself is an
    # attachment the other checks scan.
    machine_report: str = ""
    # The message's language (message/language.py) and how many legitimate and how many
    # spam or phishing messages of it the content models were trained on (-1: the model
    # records no counts, or the language could not be told). Told only for a sender shown
    # consistent, the one case where it decides.
    language: str = ""
    language_ham: int = -1
    language_bad: int = -1
    # What tier 3 (the optional LLM) added: it was not trained on the corpora whose
    # languages the counts describe, so its word on the text is not withdrawn with theirs.
    llm: float = 0.0

    def unfamiliar_language(self, min_ham: int) -> bool:
        """Is the text in a language of which the models saw fewer than `min_ham`
        legitimate messages? Their verdict on it then says "not like the ham we know",
        which every message in that language is."""
        return min_ham > 0 and 0 <= self.language_ham < min_ham

    @property
    def evidence_score(self) -> float:
        return round(sum(s for _, s in self.evidence), 3)

    @property
    def sender_ok(self) -> bool:
        return self.auth in ("verified", "claimed")

    @property
    def sender_consistent(self) -> bool:
        """Authenticated, named for its domain, no other brand's name, links stay home."""
        return self.sender_ok and self.name_coherent and not self.brand_mismatch \
            and self.links_consistent

    def why_not_consistent(self) -> list[str]:
        """Plain-language reasons the sender is not shown consistent (empty: it is)."""
        why: list[str] = []
        if not self.sender_ok:
            why.append({"failed": "authentication failed",
                        "unaligned": "nothing authenticates the From domain",
                        "shared": "sent from a free-mail or shared service's domain, which "
                        "anyone may send from",
                        "unknown": "authentication could not be checked and no aligned "
                        "DKIM signature is claimed"}.get(self.auth, self.auth))
        if not self.name_coherent:
            why.append("the display name does not match the sender's domain")
        if self.brand_mismatch:
            why.append("names " + ", ".join(self.brand_mismatch) + " but is not sent from it")
        if not self.links_consistent:
            why.append("links go elsewhere (" + ", ".join(self.foreign_links[:3]) + ")")
        return why


@dataclass(frozen=True)
class Settlement:
    """What the gate does to one message's score: a symbol, its factor, and the bulk level."""

    symbol: str | None
    factor: float
    reason: str
    bulk_level: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def bulk_level(p_bad: float | None) -> int:
    """0–9: how spam-like a bulk message reads, from the content tiers' P(spam or phish).

    Log-odds scaled so 0.5 is level 4–5 and 0.9999 is 9, as Microsoft's bulk complaint
    level runs 0–9; a client or Sieve rule files by it."""
    if p_bad is None:
        return 0
    p = min(max(p_bad, 1e-6), 1 - 1e-6)
    lo = math.log(p / (1 - p))
    return int(min(9, max(0, round(4.5 + lo / 2.0))))


def settle(topic: float, total: float, c: Consistency, p_bad: float | None,
           s: EvidenceSettings, quarantine_threshold: float,
           reject_threshold: float) -> Settlement:
    """The gate's decision for a message whose content tiers add `topic` to `total`."""
    level = bulk_level(p_bad) if (c.bulk_kind and c.bulk_kind != "brand") or c.own_dsn \
        else None
    if c.own_dsn and max(topic, 0.0) + c.conversation > 0:
        gone = round(max(topic, 0.0) + c.conversation, 3)
        return Settlement("EVIDENCE_CONSISTENT", gone,
                          f"a bounce of mail our own users sent ({', '.join(c.bulk_markers[:2])}"
                          f"): what the text and conversation checks read in it ({gone:g}) is "
                          "withdrawn; it returns mail we scanned on the way out", level)
    if c.unverifiable_dsn and c.evidence_score < s.evidence_min \
            and max(topic, 0.0) + c.conversation > 0:
        gone = round(max(topic, 0.0) + c.conversation, 3)
        return Settlement("EVIDENCE_CONSISTENT", gone,
                          f"a delivery status notification from the null sender "
                          f"({', '.join(c.bulk_markers[:2])}) and nothing else off; no message "
                          f"log to check whose mail it returns: what the text and conversation "
                          f"checks read in it ({gone:g}) is withdrawn", level)
    if c.machine_report and c.evidence_score < s.evidence_min and topic > 0:
        return Settlement("EVIDENCE_CONSISTENT", topic,
                          f"a {c.machine_report}, linking nowhere but its recipient's own "
                          f"domain, and nothing else off: the content score {topic:g} is "
                          f"withdrawn (the text models "
                          "read mail written for people, not a machine's report)", level)
    if topic <= 0:
        return Settlement(None, 0.0, "", level)
    if c.evidence_score >= s.evidence_min:
        named = ", ".join(f"{n} ({v:g})" for n, v in
                          sorted(c.evidence, key=lambda e: -e[1])[:4])
        if c.evidence_score < s.evidence_reject and total >= reject_threshold:
            return _lower(topic, total, reject_threshold - s.reject_margin, level,
                          f"content score {topic:g} is backed only by weak evidence "
                          f"({named}, under {s.evidence_reject:g})", "quarantine but not reject")
        return Settlement("EVIDENCE_CORROBORATED", 1.0,
                          f"content score {topic:g} backed by {named}", level)
    why = c.why_not_consistent()
    if c.sender_consistent and c.bulk_kind:
        how = "authenticated" if c.auth == "verified" else "claims DKIM"
        what = "brand mail" if c.bulk_kind == "brand" else f"{c.bulk_kind} mail"
        signs = ", ".join(c.bulk_markers[:3])
        return Settlement("EVIDENCE_CONSISTENT", topic,
                          f"{what} ({signs}), {how} for {c.auth_domain}, links stay with the "
                          f"sender; nothing else off: content score {topic:g} withdrawn"
                          + (f", bulk level {level}" if level is not None else ""),
                          level if level is not None else bulk_level(p_bad))
    if c.unfamiliar_language(s.language_min_ham) and c.sender_consistent and c.llm <= 0:
        name = LANGUAGE_NAMES.get(c.language, c.language)
        return Settlement("EVIDENCE_UNFAMILIAR_LANGUAGE", topic,
                          f"written in {name}, a language the content models were trained on "
                          f"{c.language_ham} legitimate and {c.language_bad} spam or phishing "
                          f"messages of, and no other check found anything off: content "
                          f"score {topic:g} withdrawn", level)
    if c.sender_consistent:
        # Authenticated, named for its domain, linking home: text alone may tag it, not hold it.
        if total < quarantine_threshold:
            return Settlement(None, 0.0, "", level)
        return _lower(topic, total, quarantine_threshold - s.reject_margin, level,
                      f"only the content models object (score {topic:g}); the sender is "
                      f"authenticated for {c.auth_domain}, named for it and links stay with "
                      "it, but it is not bulk or brand mail", "tag but not quarantine")
    if total < reject_threshold:
        return Settlement(None, 0.0, "", level)
    return _lower(topic, total, reject_threshold - s.reject_margin, level,
                  f"only the content models object (score {topic:g}) and no other check "
                  f"found anything off; not shown consistent: {'; '.join(why[:3])}",
                  "quarantine but not reject")


def _lower(topic: float, total: float, ceiling: float, level: int | None, why: str,
           can: str) -> Settlement:
    cut = round(min(topic, total - ceiling), 3)
    return Settlement("EVIDENCE_CONTENT_ONLY", cut,
                      f"{why}: lowered by {cut:g} so the text alone can {can}", level)


# English names of the languages a reason is likely to name; others are given by code.
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "cs": "Czech", "sv": "Swedish",
    "da": "Danish", "no": "Norwegian", "fi": "Finnish", "hu": "Hungarian", "ro": "Romanian",
    "ru": "Russian", "uk": "Ukrainian", "bg": "Bulgarian", "el": "Greek", "tr": "Turkish",
    "ar": "Arabic", "he": "Hebrew", "fa": "Persian", "hi": "Hindi", "th": "Thai",
    "vi": "Vietnamese", "id": "Indonesian", "ms": "Malay", "zh": "Chinese", "ja": "Japanese",
    "ko": "Korean",
}


# --- the assessment ----------------------------------------------------------------------


def _auth_state(msg: ParsedMessage, auth: AuthFacts | None) -> tuple[str, str]:
    """(verified | claimed | failed | unaligned | unknown, the domain it speaks for)."""
    from_org = org_domain(msg.from_domain)
    if auth is not None:
        if auth.aligned(msg.from_domain or None):
            return "verified", from_org
        if auth.failed:
            return "failed", from_org
        return "unaligned", ""
    # Authentication did not run (offline, or the family is off): an aligned DKIM-Signature
    # is the claim a verification would check. Online, AuthFacts replaces this.
    if from_org and any(org_domain(d) == from_org for d in dkim_domains(msg)):
        return "claimed", from_org
    return "unknown", ""


def shared_sender(domain: str) -> bool:
    """Is the From domain a free-mail provider's or a service's anyone may send through?"""
    return org_domain(domain) in SHARED_SENDER_DOMAINS or is_freemail(domain)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def _labels(domains: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for d in domains:
        for lab in re.split(r"[.\-_]", d.lower()):
            if len(lab) >= 2 and lab not in _GENERIC_LABELS:
                out.add(lab)
    return out


def name_coherent(display_name: str, domains: Sequence[str], local_part: str = "") -> bool:
    """Does the display name say who the sender's domain is? "Amazon.de" <x@amazon.de>,
    "The New York Times" <x@nytimes.com>, "DHL Paket" <x@dhl.de> do; "Ledger"
    <x@maileon.de> and "TrustWallet APP" <x@pepsup.com> do not. An empty name claims
    nothing. A word of the name (four letters or more) inside a label, a three-letter word
    equal to a label, or a label inside the squashed name. `local_part` counts only where
    the caller knows the domain is a publishing platform whose addresses name the
    publication ("Platformer" <platformer@substack.com>): anywhere else the sender writes
    both ("Coolblue" <coolblue@aprimarse.com>), so their agreement proves nothing."""
    name = _fold(display_name)
    # Names in scripts a domain cannot spell (京东, 順豐) claim nothing we can compare; other
    # letters outside a–z (ᴘᴀʏᴍᴇɴᴛ in small capitals) are words that match no label.
    words = [w for w in re.findall(r"[^\W_]+", name)
             if len(w) >= 3 and w not in _GENERIC_LABELS and not _UNSPELLABLE.search(w)]
    squashed = "".join(_WORD.findall(name))
    if not words:
        # "De.Fi(v2.0)": no word long enough, but a name all the same.
        if len(squashed) < 4 or _UNSPELLABLE.search(name):
            return True
        words = [squashed]
    labels = _labels(domains)
    if len(local_part) >= 3:
        labels |= _labels([_fold(local_part)])
    for lab in labels:
        if len(lab) >= 4 and lab in squashed:
            return True
        if any((w in lab) if len(w) >= 4 else (w == lab) for w in words):
            return True
    return False


def assess(msg: ParsedMessage, result: ScanResult, s: EvidenceSettings,
           exclude: Iterable[Symbol] = (), log_available: bool = True,
           languages: Mapping[str, Mapping[str, int]] | None = None) -> Consistency:
    """What every non-content check found, and whether the sender is shown consistent.
    `log_available`: the bulk family could check reports against our message log.
    `languages`: the content model's training messages per language and class (the
    `languages` of its metadata; None when it records none)."""
    facts = result.facts
    sender = msg.from_addr
    auth, auth_domain = _auth_state(msg, facts.auth)
    if auth in ("verified", "claimed") and (shared_sender(msg.from_domain) or (
            sender is not None and _ON_BEHALF.search(sender.display_name))):
        auth = "shared"  # authenticated, but for a service anyone may send through
    from_org = org_domain(msg.from_domain)
    return_path = msg.header("return-path") or msg.envelope.mail_from or ""
    rp_org = org_domain(return_path.strip().strip("<>").rsplit("@", 1)[-1]) \
        if "@" in return_path else ""
    dkim = dkim_domains(msg)
    brands = facts.brands
    bulk = facts.bulk
    provider = esp_link_domains(bulk.esp) if bulk is not None and bulk.esp else frozenset()

    # Who the sender may link to: itself, whoever signed or bounces for it, the email
    # service provider that sent it and the brand it is. Social-media and app-store footers
    # count neither way: every newsletter has them, and so does many a phish.
    own = {d for d in (from_org, rp_org, *(org_domain(d) for d in dkim)) if d}
    allowed = set(own)
    allowed |= provider
    if brands is not None and brands.sender_brand:
        allowed |= brand_domains(brands.sender_brand)
    occurrences = [d for d in link_occurrences(msg, attachments=False)
                   if d not in FOOTER_DOMAINS]
    foreign = [d for d in dict.fromkeys(occurrences) if d not in allowed]
    share = (sum(1 for d in occurrences if d in allowed) / len(occurrences)) \
        if occurrences else 1.0

    coherent = name_coherent(sender.display_name if sender else "", [msg.from_domain],
                             sender.local_part if sender and from_org in provider else "")
    if not coherent and brands is not None and brands.sender_brand \
            and brands.sender_brand in brands.named:
        coherent = True  # "DHL Paket" <x@dhl.de>: the brand table knows dhl.de is DHL's

    kind = bulk.kind if bulk is not None else ""
    markers = tuple(bulk.markers) if bulk is not None else ()
    if not kind and brands is not None and brands.sender_brand \
            and brands.sender_brand in brands.named and auth == "verified":
        kind, markers = "brand", (f"names {brands.sender_brand}, its own domain",)

    skip = set(id(x) for x in exclude)
    own_dsn = bool(bulk is not None and bulk.own_dsn)
    unverifiable_dsn = kind == "dsn" and not log_available and not msg.envelope.mail_from
    ours = own_dsn or unverifiable_dsn
    conversation = 0.0
    evidence: list[tuple[str, float]] = []
    for sym in result.symbols:
        if sym.score <= 0 or sym.group in TOPIC_GROUPS or sym.group == _G or id(sym) in skip:
            continue
        if ours and sym.group in CONVERSATION_GROUPS:
            conversation += sym.score
        else:
            evidence.append((sym.name, sym.score))
    c = Consistency(
        auth=auth, auth_domain=auth_domain, name_coherent=coherent,
        links_consistent=share >= s.link_share, bulk_kind=kind, bulk_markers=markers,
        own_dsn=own_dsn,
        brand_mismatch=tuple(brands.mismatched) if brands is not None else (),
        foreign_links=tuple(foreign), evidence=tuple(evidence),
        unverifiable_dsn=unverifiable_dsn, conversation=round(conversation, 3),
        machine_report=_machine_report(msg, bulk.report if bulk is not None else "", occurrences),
        llm=round(sum(sym.score for sym in result.symbols if sym.group == "llm"), 3))
    # The language decides only for a sender shown consistent (settle, case 3): the rest of
    # the mail is not read a second time for it.
    return replace(c, **_language_support(msg, languages)) if c.sender_consistent else c


def _language_support(msg: ParsedMessage,
                      languages: Mapping[str, Mapping[str, int]] | None) -> dict[str, Any]:
    if not languages:
        return {}
    lang = language_of(msg)
    if not lang:
        return {"language": ""}
    seen = languages.get(lang, {})
    return {"language": lang, "language_ham": int(seen.get("ham", 0)),
            "language_bad": int(sum(n for k, n in seen.items() if k != "ham"))}


def _machine_report(msg: ParsedMessage, report: str, links: list[str]) -> str:
    """`report` (the bulk family's reading: which authentication report `msg` is), when no
    link in its text leads outside the domain it reports on, one of its recipients' (a
    footer their own server added); else "". Stored mail has no envelope recipients: its To
    field stands in for them then."""
    if not report or not links:
        return report
    home = org_domain(report_domain(msg))
    rcpts = msg.envelope.rcpt_tos or tuple(a.address for a in msg.to)
    ours = {org_domain(r.rsplit("@", 1)[-1]) for r in rcpts if "@" in r}
    return report if home and home in ours and all(d == home for d in links) else ""


@lru_cache(maxsize=256)
def esp_link_domains(esp: str) -> frozenset[str]:
    """The sending, click-tracking and hosting domains of an email service provider."""
    return frozenset(org_domain(d) for d in esp_domains(esp))


@lru_cache(maxsize=1024)
def brand_domains(brand: str) -> frozenset[str]:
    """The domains a brand of the brand table sends from and links to."""
    return frozenset(org_domain(d) for d in _brand_domains(brand))


def topic_score(symbols: Iterable[Symbol]) -> float:
    """What the content tiers add together, net: tier 2 lowering tier 1 counts against it."""
    return round(sum(s.score for s in symbols if s.group in TOPIC_GROUPS), 3)


def content_p_bad(result: ScanResult) -> float | None:
    """P(spam or phish) of the content verdict, both tiers combined where tier 2 ran."""
    deep, content = result.facts.deep, result.facts.content
    if deep is not None and deep.combined_bad is not None:
        return deep.combined_bad
    return content.p_bad if content is not None else None


class EvidenceCheck(Check):
    name = "evidence"
    family = _G
    symbols = SYMBOLS
    stage = 3  # after every check that scores: tiers 1–3 and the lessons (stages 0–2)
    needs_network = False

    def __init__(self, config: Config, settings: EvidenceSettings,
                 log_available: bool = True,
                 languages: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self.config = config
        self.settings = settings
        self.log_available = log_available
        self.languages = languages

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        c = assess(msg, result, self.settings, log_available=self.log_available,
                   languages=self.languages)
        topic = topic_score(result.symbols)
        policy = self.config.policy
        st = settle(topic, result.score, c, content_p_bad(result), self.settings,
                    policy.quarantine_threshold, policy.reject_threshold)
        result.facts.consistency = c
        result.facts.bulk_level = st.bulk_level
        if st.symbol is not None:
            result.add(st.symbol, reason=st.reason[:400], factor=st.factor)


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("evidence", EvidenceSettings)
    if not settings.enabled:
        return []
    return [EvidenceCheck(ctx.config, settings, log_available=ctx.database is not None,
                          languages=training_languages(ctx) if settings.language_min_ham else None)]


def training_languages(ctx: BuildContext) -> Mapping[str, Mapping[str, int]] | None:
    """What the content model was trained on, per language (its metadata), or None: a
    model trained before the counts were recorded, or none loadable. Without counts no
    language is judged unfamiliar."""
    from mailmoat.ml.learn import get_model
    from mailmoat.ml.model import ModelError

    try:
        langs = get_model(ctx.config).meta.get("languages")
    except (ModelError, OSError) as exc:
        log.warning("evidence: no content model to read training languages from (%s)", exc)
        return None
    if not isinstance(langs, dict):
        return None
    warm_language_model()  # now, not in the first message's scan
    return langs
