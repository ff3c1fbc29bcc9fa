"""Check family `impersonation`: business email compromise (BEC) signs.

BEC mail rarely carries a link or an attachment; it carries a *person*: a display name that
is the CEO's while the address is a free-mail one, a domain one letter off the company's, a
Reply-To that sends the answer somewhere else, and a request to pay, change bank details or
buy gift cards. Each sign on its own is weak (plenty of honest mail has a Reply-To), so each
gets its own small symbol, and `BEC_COMBINED` fires with a high weight when they add up.

The check runs in stage 1 so it can read facts earlier stages left in `result.facts`:
`sender_memory.first_contact` (set by the reputation family's sender memory when this
sender has never written to this recipient before).

Who counts as internal and who is a VIP comes from `[bec]`; when the gateway has a message
store, display names of internal senders seen in outbound/internal mail are added at build.
"""

from __future__ import annotations

import email.utils
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from mailmoat.config import Section
from mailmoat.domains import FREEMAIL, is_freemail
from mailmoat.message.model import Address, ParsedMessage, domain_of
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.lookalike import LookalikeIndex, Protected, registrable, skeleton, split_domain

log = logging.getLogger(__name__)

_G = "impersonation"
_B = Category.BEC


class BecSettings(Section):
    enabled: bool = Field(True, description="run the BEC / impersonation checks")
    vips: list[str] = Field(
        default_factory=list, description='people worth impersonating: "Jane Smith <jane@example.test>"')
    protected_domains: list[str] = Field(
        default_factory=list, description="the company's and partners' domains to protect from "
        "lookalikes (the internal domains are always protected)")
    internal_users: list[str] = Field(
        default_factory=list, description='internal people: "Name <address>" or just "Name"')
    freemail_domains_extra: list[str] = Field(
        default_factory=list, description="more free-mail domains")
    use_message_log: bool = Field(
        True, description="add display names of internal senders from the message store")
    message_log_limit: int = Field(20000, description="rows of the message log read at build")


# Payment / bank-change / gift-card / payroll / urgency language, English and Chinese.
# Each topic is (anchors, phrase regex): the regex only runs in a small window around an
# anchor found with a plain substring search, so a long newsletter costs microseconds, not the
# milliseconds a case-insensitive alternation over the whole body would.
_PAYMENT_TOPICS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("payment", ("wire", "transfer", "remittance", "swift", "iban", "routing", "invoice",
                 "payment", "outstanding", "汇款", "转账", "打款", "付款", "发票", "对公", "货款"),
     r"\b(?:wire transfer|wire the|bank transfer|remittance|swift code|iban|"
     r"routing number|overdue invoice|outstanding (?:invoice|balance|payment)|"
     r"(?:process|make|release|send) (?:a |the )?payment|payment (?:details|request)|"
     r"invoice attached|attached invoice|pay(?:ment)? today)\b"
     r"|汇款|转账|打款|付款|发票|对公账户|货款"),
    ("bank-change", ("bank", "banking", "account", "账户", "账号"),
     r"\b(?:(?:new|updated?|change[ds]?(?: of)?|changed our) (?:bank|banking|"
     r"account) (?:details|information|account)|bank (?:details|account) "
     r"(?:have|has) changed|update (?:the |our )?(?:bank|banking|payment) "
     r"(?:details|information))\b"
     r"|银行账户变更|银行账号变更|账户变更|更换账户|新账户|变更(?:收款)?账户|收款账户"),
    ("gift-card", ("gift", "itunes", "google play", "steam card", "scratch", "礼品卡", "购物卡",
                   "充值卡"),
     r"\b(?:gift ?cards?|itunes cards?|google play cards?|steam cards?|"
     r"scratch (?:off|the) (?:code|card))\b|礼品卡|购物卡|充值卡"),
    ("payroll", ("payroll", "direct deposit", "w-2", "w2", "salary", "paycheck", "工资", "薪资",
                 "薪水"),
     r"\b(?:payroll|direct deposit|w-?2 forms?|salary (?:account|payment|details)|"
     r"paycheck)\b|工资|薪资|薪水"),
)
_URGENCY_ANCHORS = ("urgent", "asap", "immediately", "right away", "as soon as", "available",
                    "at your desk", "quick", "confidential", "do not", "today", "紧急", "尽快",
                    "马上", "立即", "立刻", "保密", "今天之内")
_URGENCY = re.compile(
    r"\b(?:urgent(?:ly)?|asap|immediately|right away|as soon as possible|"
    r"are you (?:available|at your desk)|quick (?:favou?r|task)|confidential|"
    r"do not (?:call|share)|today before)\b|紧急|尽快|马上|立即|立刻|保密|今天之内")
_PAYMENT_RES = tuple((topic, anchors, re.compile(rx)) for topic, anchors, rx in _PAYMENT_TOPICS)
_MAX_LANGUAGE_CHARS = 8000  # BEC requests are short; the start of the text is what matters

# Advance-fee ("419") fraud: the windfall and what it is worth. Plain-substring anchors gate
# the regexes, so ordinary mail costs a few `in` tests.
_MAX_FRAUD_CHARS = 10000
_WINDFALL_ANCHORS = ("donat", "inherit", "beneficiar", "next of kin", "consignment", "compensat",
                     "lottery", "winning", "unclaimed", "abandoned", "deceased", "philanthrop",
                     "orphan", "diplomat", "barrister", "bequeath", "late ", "transfer",
                     "foreign ", "cancer", "widow", "confidential", "huge ", "sum of")
_WINDFALL = re.compile(
    r"\b(donation|inheritance|beneficiary|next of kin|consignment|compensation|lottery|"
    r"winnings?|unclaimed|abandoned|deceased|philanthropist|orphanage|diplomat(?:ic)?|barrister|"
    r"bequeath\w*|late (?:husband|client|father)|fund transfer|"
    r"transfer (?:of|the) (?:the )?(?:sum|fund)|foreign (?:partner|account)|cancer|widow|"
    r"confidential(?:ity)?|huge (?:sum|amount)|sum of)\b")
# Millions: "US$15,800,000.00", "£1,963,920", "$10.5million", "$Millions", "20 million dollars".
_BIG_SUM = re.compile(
    r"(?:us\s?\$|usd|\$|£|€|eur|gbp)\s?\d{1,3}(?:[,.]\d{3}){2,}|\d[\d,.]*\s?(?:million|billion)\b|"
    r"\$\s?millions?\b|\bmillions? (?:of )?(?:us )?(?:dollars|pounds|euros)")
_BTC_ADDRESS = re.compile(r"(?<![A-Za-z0-9])(?:bc1[02-9ac-hj-np-zA-HJ-NP-Z]{25,59}|"
                          r"[13][1-9A-HJ-NP-Za-km-z]{25,34})(?![A-Za-z0-9])")
_EXTORTION_THEMES = (
    ("recording", re.compile(r"\b(?:webcam|camera|recorded|recording|video|footage)\b")),
    ("shame", re.compile(r"\b(?:porn\w*|adult (?:site|website|video)s?|masturbat\w*|intimate|"
                         r"sex(?:ual)?)\b")),
    ("access", re.compile(r"\b(?:hacked|malware|trojan|virus|spyware|remote access|"
                          r"your (?:device|computer|contacts|contact list))\b")),
    ("deadline", re.compile(r"\b(?:24|36|48|72|twenty[- ]four|forty[- ]eight) hours\b|\bdeadline\b")),
)
_EMAIL_ADDR = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# "Kindly reply to my private email (x@gmail.com)": the answer moved to a mailbox of the
# writer's choosing, away from the address the mail came from.
_PRIVATE_CHANNEL = re.compile(
    r"\b(?:my|this|our)\s+(?:private|personal|direct|confidential|alternative|alternate|"
    r"secure)\s+(?:e-?mail(?:\s+address)?|mail\s?box|mail\s+address)\b")


def find_phrase(low: str, anchors: tuple[str, ...], rx: re.Pattern[str]) -> str:
    """The first phrase `rx` matches near one of the `anchors` in lower-cased `low`."""
    for anchor in anchors:
        i = low.find(anchor)
        tries = 0
        while i >= 0 and tries < 8:
            m = rx.search(low, max(0, i - 48), i + len(anchor) + 48)
            if m:
                return m.group(0)
            i = low.find(anchor, i + 1)
            tries += 1
    return ""


_REPLY_PREFIX = re.compile(r"(?i)^\s*(?:re|aw|sv|antw|vs|ref)\s*(?:\[\d+\])?\s*[:：]|^\s*(?:回复|答复|回覆)\s*[:：]")
# Signs that a message quotes the one it answers: real replies nearly always do.
_QUOTED = re.compile(r"(?im)^\s*(?:>|:\s|\|\s)|wrote:|writes:|schrieb:|a écrit|escribió|写道|的大作中提到|"
                     r"-----\s*original message|原始邮件|^\s*(?:from|发件人|寄件者)\s*[:：]")
_EMAIL_IN_NAME = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")


def name_key(name: str) -> str:
    """Order-free, punctuation-free, homoglyph-folded form of a person's name."""
    name = unicodedata.normalize("NFKC", name).strip().strip("'\"")
    if "," in name:  # "Smith, Jane"
        last, _, first = name.partition(",")
        name = f"{first} {last}"
    tokens = re.findall(r"[^\W\d_]+", name.lower())
    if not tokens:
        return ""
    return " ".join(sorted(skeleton(t) for t in tokens))


@dataclass(frozen=True)
class Person:
    name: str
    address: str  # "" when only a name was configured
    vip: bool


def parse_person(entry: str, vip: bool) -> Person:
    name, addr = email.utils.parseaddr(entry)
    if not addr or "@" not in addr:
        return Person(entry.strip(), "", vip)
    return Person(name.strip() or addr.split("@")[0].replace(".", " "), addr.lower(), vip)


SYMBOLS: dict[str, SymbolSpec] = {
    "BEC_VIP_IMPERSONATION": SymbolSpec(
        4.0, "The display name is a configured VIP's but the address is not one of ours.", _B, _G),
    "BEC_INTERNAL_NAME_EXTERNAL": SymbolSpec(
        2.0, "The display name is an internal person's but the address is external.", _B, _G),
    "BEC_FREEMAIL_INTERNAL_NAME": SymbolSpec(
        3.0, "A free-mail address uses the name of an internal person.", _B, _G),
    "BEC_DISPLAY_NAME_ADDRESS": SymbolSpec(
        1.0, "The display name shows an email address in another domain than the real one.",
        _B, _G),
    "BEC_LOOKALIKE_DOMAIN": SymbolSpec(
        5.0, "The sender's domain imitates the company's or a partner's domain.", _B, _G),
    "BEC_REPLYTO_DIVERSION": SymbolSpec(
        0.5, "Reply-To sends answers to another domain than the From address.", _B, _G),
    "BEC_REPLYTO_FREEMAIL": SymbolSpec(
        1.5, "Reply-To sends answers to a free-mail address while From is not free-mail, or to "
        "another person's free-mail mailbox while From is free-mail too.", _B, _G),
    "BEC_RETURN_PATH_FREEMAIL": SymbolSpec(
        0.5, "The envelope sender is a free-mail address while From is not.", _B, _G),
    "BEC_PAYMENT_LANGUAGE": SymbolSpec(
        0.3, "The text asks about payment, invoices, bank details, gift cards or payroll.", _B, _G),
    "BEC_FIRST_CONTACT_PAYMENT": SymbolSpec(
        2.0, "A sender who never wrote before talks about payment or bank details.", _B, _G),
    "BEC_THREAD_HIJACK": SymbolSpec(
        0.5, "The subject says it is a reply but the message belongs to no thread.", _B, _G),
    "FRAUD_ADVANCE_FEE": SymbolSpec(
        4.0, "Advance-fee fraud: a windfall (inheritance, donation, lottery, compensation, a "
        "dormant fund) worth millions, with replies going to a free-mail mailbox.",
        Category.PHISHING, _G),
    "FRAUD_PRIVATE_CHANNEL": SymbolSpec(
        2.5, "The text asks for replies to a \"private\" or \"personal\" free-mail address "
        "that is not the sender's (\"kindly reply to my private email\").",
        Category.PHISHING, _G),
    "FRAUD_EXTORTION": SymbolSpec(
        5.0, "Extortion: a Bitcoin address to pay to, with threats of a recorded video, a "
        "hacked device or leaked contacts and a deadline (\"sextortion\").",
        Category.PHISHING, _G),
    "BEC_COMBINED": SymbolSpec(
        6.0, "Several BEC signs combine (impersonation, diversion or lookalike with payment "
        "language).", _B, _G),
}

# Which symbols count as which kind of sign for BEC_COMBINED.
_IMPERSONATION = {"BEC_VIP_IMPERSONATION", "BEC_INTERNAL_NAME_EXTERNAL", "BEC_FREEMAIL_INTERNAL_NAME",
                  "BEC_DISPLAY_NAME_ADDRESS", "BEC_LOOKALIKE_DOMAIN"}
_DIVERSION = {"BEC_REPLYTO_DIVERSION", "BEC_REPLYTO_FREEMAIL", "BEC_RETURN_PATH_FREEMAIL"}
_STRONG_DIVERSION = {"BEC_REPLYTO_FREEMAIL", "BEC_RETURN_PATH_FREEMAIL"}
_CONTEXT = {"BEC_FIRST_CONTACT_PAYMENT", "BEC_THREAD_HIJACK"}


class ImpersonationCheck(Check):
    name = "impersonation"
    family = "impersonation"
    symbols = SYMBOLS
    stage = 1  # after the reputation family has set facts.sender_memory

    def __init__(self, internal_domains: Iterable[str], protected_domains: Iterable[str],
                 people: Iterable[Person], freemail: Iterable[str]) -> None:
        self.internal = frozenset(registrable(d) for d in internal_domains if d)
        self.partners = frozenset(registrable(d) for d in protected_domains if d) - self.internal
        self.ours = self.internal | self.partners
        self.freemail = frozenset(d.lower() for d in freemail)
        self.vips: dict[str, Person] = {}
        self.people: dict[str, Person] = {}
        self.known_addresses: dict[str, set[str]] = {}
        for p in people:
            key = name_key(p.name)
            if not key or " " not in key and len(key) < 4:
                continue  # a bare first name like "Al" would match half the world
            if p.vip:
                self.vips.setdefault(key, p)
            self.people.setdefault(key, p)
            if p.address:
                self.known_addresses.setdefault(key, set()).add(p.address)
        protected = [Protected(d, "company" if d in self.internal else "partner",
                               (split_domain(d).label,), frozenset({d}), (d,))
                     for d in sorted(self.ours)]
        self.index = LookalikeIndex(protected)

    def is_freemail(self, domain: str) -> bool:
        return is_freemail(domain, self.freemail)

    def is_ours(self, domain: str) -> bool:
        return bool(domain) and registrable(domain) in self.ours

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        fired: dict[str, tuple[str, float]] = {}

        def add(name: str, reason: str, factor: float = 1.0) -> None:
            if name not in fired:
                fired[name] = (reason, factor)

        present = {k.lower() for k, _ in msg.headers}
        listed = "list-id" in present or "list-post" in present
        fa = msg.from_addr
        from_dom = fa.domain if fa else ""
        from_reg = registrable(from_dom) if from_dom else ""
        if fa is not None and fa.address:
            self._names(fa, from_reg, add)
            self._lookalike(fa, from_reg, add)
        self._diversion(msg, fa, from_reg, add, listed)
        if not listed:
            self._advance_fee(msg, fa, add, "BEC_REPLYTO_FREEMAIL" in fired)
            self._private_channel(msg, fa, add)
            self._extortion(msg, add)
        memory = result.facts.sender_memory
        first_contact = memory is not None and memory.first_contact
        # Payment talk is everyday business; it is only reported next to another sign (or a
        # first contact), which also spares the language scan for most mail.
        topics: list[str] = []
        phrases: list[str] = []
        if fired or first_contact:
            topics, phrases = payment_language(msg.subject + "\n" + msg.body_text[:20000])
        if topics:
            add("BEC_PAYMENT_LANGUAGE", f"talks about {', '.join(topics)} "
                                        f"({', '.join(repr(p) for p in phrases[:3])})")
            if first_contact:
                add("BEC_FIRST_CONTACT_PAYMENT",
                    f"{fa.address if fa else 'the sender'} has not written to this recipient "
                    f"before and talks about {', '.join(topics)}")
        if _REPLY_PREFIX.match(msg.subject) and "in-reply-to" not in present \
                and "references" not in present and not (fa and self.is_ours(from_dom)) \
                and not listed and msg.body_text.strip() \
                and not _QUOTED.search(msg.body_text[:20000]):
            add("BEC_THREAD_HIJACK", f"subject {msg.subject[:60]!r} claims to be a reply but the "
                                     "message has no In-Reply-To or References")
        # Category bec when the signs combine.
        names = set(fired)
        imp = names & _IMPERSONATION
        div = names & _DIVERSION
        ctx = names & _CONTEXT
        pay = bool(topics)
        # A fake reply or a Reply-To in another company domain plus payment talk is common in
        # honest mail; they only count next to impersonation.
        if (pay and (imp or names & _STRONG_DIVERSION or "BEC_FIRST_CONTACT_PAYMENT" in names)) \
                or (imp and (div or ctx)):
            parts = sorted(imp | div | ctx | ({"BEC_PAYMENT_LANGUAGE"} if pay else set()))
            add("BEC_COMBINED", "combined signs: " + ", ".join(parts) + " — "
                + "; ".join(fired[n][0] for n in parts if n in fired)[:400])
        for name, (reason, factor) in fired.items():
            result.add(name, reason=reason, factor=factor)

    def _names(self, fa: Address, from_reg: str, add: Any) -> None:
        display = fa.display_name
        if not display:
            return
        external = from_reg not in self.ours
        key = name_key(display)
        person = self.people.get(key) if key else None
        if person is not None and external and fa.address not in self.known_addresses.get(key, ()):
            if person.vip:
                add("BEC_VIP_IMPERSONATION",
                    f"display name {display!r} matches VIP {person.address or person.name} but the "
                    f"address is {fa.address}")
            if self.is_freemail(fa.domain):
                add("BEC_FREEMAIL_INTERNAL_NAME",
                    f"free-mail address {fa.address} uses the name of internal person "
                    f"{person.name}")
            elif not person.vip:
                add("BEC_INTERNAL_NAME_EXTERNAL",
                    f"display name {display!r} is internal person {person.address or person.name}"
                    f" but the address {fa.address} is external")
        m = _EMAIL_IN_NAME.search(display)
        if m:
            shown_reg = registrable(m.group(1).lower())
            if shown_reg and shown_reg != from_reg:
                add("BEC_DISPLAY_NAME_ADDRESS",
                    f"display name shows {m.group(0)} but the address is {fa.address}",
                    2.0 if shown_reg in self.ours else 1.0)

    def _lookalike(self, fa: Address, from_reg: str, add: Any) -> None:
        if from_reg in self.ours:
            return
        lk = self.index.match(from_reg)
        if lk is not None:
            add("BEC_LOOKALIKE_DOMAIN", f"sender domain {lk.describe()} "
                                        f"({lk.protected.kind} domain {lk.protected.name})",
                0.5 if lk.how == "other-tld" else 1.0)

    def _advance_fee(self, msg: ParsedMessage, fa: Address | None, add: Any,
                     replyto_freemail: bool) -> None:
        """The 419 letter: a windfall worth millions and a free-mail mailbox to answer to.

        Which mailbox the victim is to answer is the part a scammer cannot do without, and
        honest mail that talks of inheritances or donations (a charity, a news story) comes
        from an organisation's own domain. So the windfall language counts only when replies
        go to free-mail: Reply-To (the strongest: it diverts the answer), a free-mail address
        written in the body that is not the sender's, or the From address itself.
        """
        text = (msg.subject + "\n" + msg.body_text[:_MAX_FRAUD_CHARS])
        low = text.lower()
        if not any(a in low for a in _WINDFALL_ANCHORS):
            return
        terms = sorted({m.group(1) for m in _WINDFALL.finditer(low)})
        money = _BIG_SUM.search(low) if terms else None
        if not (money or len(terms) >= 3):
            return
        from_addr = fa.address if fa else ""
        channel = ""
        if replyto_freemail:
            channel = "reply-to"
        else:
            for rt in msg.reply_to:
                if rt.address and rt.address != from_addr and self.is_freemail(rt.domain):
                    channel = "reply-to"
                    break
        if not channel:
            if "@" in text:
                for m in _EMAIL_ADDR.finditer(text):
                    addr = m.group(0).lower()
                    if addr != from_addr and self.is_freemail(domain_of(addr)):
                        channel = f"body address {addr}"
                        break
            if not channel and fa is not None and self.is_freemail(fa.domain):
                channel = "from"
        if not channel:
            return
        strong = channel == "reply-to"
        if (money and len(terms) >= 2) or (strong and money and terms) or \
                (strong and len(terms) >= 3):
            where = {"reply-to": "replies go to free-mail",
                     "from": f"sent from free-mail {from_addr}"}.get(channel, channel)
            add("FRAUD_ADVANCE_FEE",
                f"{', '.join(repr(t) for t in terms[:4])}"
                f"{f' and {money.group(0).strip()!r}' if money else ''}; {where}")

    def _private_channel(self, msg: ParsedMessage, fa: Address | None, add: Any) -> None:
        """A request to answer at a "private email" that is free-mail and not the sender's.

        Fraud openers ("can you manage investment funds? Kindly reply to my private email")
        carry no sum and no link; what they cannot do without is the mailbox the victim is
        to write to. Colleagues who give a personal address write from the company's own
        domain and weigh nothing more than this symbol's few points."""
        text = msg.body_text[:_MAX_FRAUD_CHARS]
        low = text.lower()
        m = _PRIVATE_CHANNEL.search(low)
        if m is None or "@" not in text:
            return
        from_addr = fa.address.lower() if fa else ""
        for found in _EMAIL_ADDR.finditer(text):
            addr = found.group(0).lower().rstrip(".")
            if addr != from_addr and self.is_freemail(domain_of(addr)):
                add("FRAUD_PRIVATE_CHANNEL",
                    f"asks for replies to {' '.join(m.group(0).split())!r} {addr}, not the sender's "
                    f"{from_addr or 'address'}")
                return

    @staticmethod
    def _extortion(msg: ParsedMessage, add: Any) -> None:
        """"I recorded you through your camera; pay 900 USD in Bitcoin to this address within
        48 hours." A valid Bitcoin address plus threats from three of four themes."""
        text = msg.subject + "\n" + msg.body_text[:_MAX_FRAUD_CHARS]
        low = text.lower()
        if "bitcoin" not in low and "btc" not in low:
            return  # the demand always names the currency
        wallet = next((m.group(0) for m in _BTC_ADDRESS.finditer(text)
                       if valid_bitcoin_address(m.group(0))), None)
        if wallet is None:
            return
        themes = {name: m.group(0) for name, rx in _EXTORTION_THEMES
                  if (m := rx.search(low)) is not None}
        if len(themes) >= 3:
            add("FRAUD_EXTORTION", f"Bitcoin address {wallet} with threats: "
                                   f"{', '.join(repr(v) for v in themes.values())}")

    def _diversion(self, msg: ParsedMessage, fa: Address | None, from_reg: str, add: Any,
                   listed: bool) -> None:
        if fa is None or not from_reg:
            return
        if listed:
            # Lists rewrite From to the list address (DMARC) and put the poster in Reply-To.
            return
        recipients = {a.address for a in msg.to + msg.cc}
        for rt in msg.reply_to:
            if not rt.address or rt.address in recipients or rt.local_part == fa.local_part:
                # the same person at another of their addresses is not a diversion
                continue  # mailing lists set Reply-To to the list address, which is also in To
            rt_reg = registrable(rt.domain)
            if not rt_reg:
                continue
            if self.is_freemail(rt_reg) and self.is_freemail(from_reg):
                # Free-mail to free-mail: the sending account (often a throwaway or a
                # compromised one) hands the conversation to another person's mailbox.
                if _same_person(fa.local_part, rt.local_part):
                    continue
                add("BEC_REPLYTO_FREEMAIL",
                    f"From is free-mail address {fa.address} but replies go to another "
                    f"free-mail mailbox, {rt.address}")
                break
            if rt_reg == from_reg:
                continue
            lk = None if rt_reg in self.ours else self.index.match(rt_reg)
            if lk is not None:
                add("BEC_LOOKALIKE_DOMAIN", f"Reply-To domain {lk.describe()} "
                                            f"({lk.protected.kind} domain {lk.protected.name})")
            if self.is_freemail(rt_reg) and not self.is_freemail(from_reg):
                add("BEC_REPLYTO_FREEMAIL",
                    f"From is {fa.address} but replies go to free-mail address {rt.address}")
            else:
                add("BEC_REPLYTO_DIVERSION",
                    f"From is {fa.address} but replies go to {rt.address} in {rt_reg}")
            break
        env_from = msg.envelope.mail_from
        if not env_from:
            env_from = _strip_angle(msg.header("return-path") or "")
        env_dom = domain_of(env_from)
        env_reg = registrable(env_dom) if env_dom else ""
        if env_reg and env_reg != from_reg and env_reg not in self.ours:
            lk = self.index.match(env_reg)
            if lk is not None:
                add("BEC_LOOKALIKE_DOMAIN", f"envelope sender domain {lk.describe()} "
                                            f"({lk.protected.kind} domain {lk.protected.name})")
        if env_dom and self.is_freemail(env_dom) and not self.is_freemail(from_reg) \
                and registrable(env_dom) != from_reg:
            add("BEC_RETURN_PATH_FREEMAIL",
                f"From is {fa.address} but the envelope sender is free-mail address {env_from}")


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def valid_bitcoin_address(addr: str) -> bool:
    """A Bitcoin address whose checksum holds: base58check (1…, 3…) or bech32/bech32m (bc1…).
    Random 26–35-character tokens (hashes, tracking ids) fail the checksum."""
    import hashlib

    if addr[:3].lower() == "bc1":
        a = addr.lower()
        if a != addr and addr.upper() != addr:
            return False
        data = [_BECH32.find(c) for c in a[3:]]
        if any(d < 0 for d in data) or len(data) < 8:
            return False
        chk = 1
        for v in [3, 3, 0, 2, 3] + data:  # hrp "bc" expanded, then the data part
            top = chk >> 25
            chk = (chk & 0x1FFFFFF) << 5 ^ v
            for i, g in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
                chk ^= g if (top >> i) & 1 else 0
        return chk in (1, 0x2BC830A3)  # bech32, bech32m
    n = 0
    for c in addr:
        i = _B58.find(c)
        if i < 0:
            return False
        n = n * 58 + i
    raw = n.to_bytes(25, "big") if n.bit_length() <= 200 else b""
    if len(raw) != 25 or raw[0] not in (0, 5):
        return False
    return hashlib.sha256(hashlib.sha256(raw[:21]).digest()).digest()[:4] == raw[21:]


def _same_person(a: str, b: str) -> bool:
    """Two local parts that are one person's (lalitha.viswanath and lalithaviswanath88)."""
    a, b = re.sub(r"[^a-z]", "", a.lower()), re.sub(r"[^a-z]", "", b.lower())
    if not a or not b:
        return False
    short, long_ = sorted((a, b), key=len)
    return short == long_ or (len(short) >= 4 and short in long_)


def payment_language(text: str) -> tuple[list[str], list[str]]:
    """Topics (payment, bank-change, gift-card, payroll, urgency) and the phrases that showed them.

    Urgency alone is not a payment topic; it is reported only next to one.
    """
    low = text[:_MAX_LANGUAGE_CHARS].lower()
    topics, phrases = [], []
    for topic, anchors, rx in _PAYMENT_RES:
        phrase = find_phrase(low, anchors, rx)
        if phrase:
            topics.append(topic)
            phrases.append(phrase)
    if topics:
        phrase = find_phrase(low, _URGENCY_ANCHORS, _URGENCY)
        if phrase:
            topics.append("urgency")
            phrases.append(phrase)
    return topics, phrases


def _strip_angle(s: str) -> str:
    return s.strip().strip("<>").strip()


def people_from_database(database: Any, internal_domains: frozenset[str], limit: int) -> list[Person]:
    """Display names of internal senders seen in the message log (outbound/internal mail)."""
    from sqlalchemy import select

    from mailmoat.store.models import MessageRow

    people: list[Person] = []
    seen: set[str] = set()
    with database.session() as s:
        rows = s.execute(select(MessageRow.from_header).where(
            MessageRow.direction.in_(("outbound", "internal"))).order_by(
            MessageRow.received_at.desc()).limit(limit)).scalars()
        for header in rows:
            name, addr = email.utils.parseaddr(header or "")
            addr = addr.lower()
            if not name or addr in seen or registrable(domain_of(addr)) not in internal_domains:
                continue
            seen.add(addr)
            people.append(Person(name, addr, False))
    return people


def build(ctx: BuildContext) -> list[Check]:
    cfg = ctx.config.section("bec", BecSettings)
    if not cfg.enabled:
        return []
    people = [parse_person(v, True) for v in cfg.vips]
    people += [parse_person(u, False) for u in cfg.internal_users]
    internal = ctx.config.internal_domains
    if cfg.use_message_log and ctx.database is not None:
        try:
            people += people_from_database(ctx.database, frozenset(registrable(d) for d in internal),
                                           cfg.message_log_limit)
        except Exception:  # the log is a bonus; configured people still work without it
            log.exception("could not read internal senders from the message log")
    freemail = FREEMAIL | {d.lower() for d in cfg.freemail_domains_extra}
    return [ImpersonationCheck(internal, cfg.protected_domains, people, freemail)]
