"""Typed facts that checks establish for later checks, the evidence gate and policy.

A check that learns something another check needs (who authenticated the message, whether
it is legitimate bulk mail, which brands it names, what the content models read) records it
here, typed, so a reader and its writer cannot disagree on a key's spelling or shape. Each
fact is written by one check family and read by others; a fact left as None means "not
established" (the check did not run, or found nothing), never "false".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailmoat.domains import org_domain

if TYPE_CHECKING:
    from mailmoat.internal.guard import Judgement
    from mailmoat.reputation_memory import PairStats
    from mailmoat.scan.evidence import Consistency


@dataclass(frozen=True)
class AuthFacts:
    """Sender authentication, from our own verification or a trusted upstream's header.

    `source` says whose verdict this is: "gateway" (the `auth` family verified it here) or
    "upstream:<authserv-id>" (an `Authentication-Results` field of an authserv-id the
    administrator trusts, `[auth] trusted_authserv_ids`).
    """

    source: str
    spf: str = "none"  # pass | fail | softfail | neutral | none | temperror | permerror
    spf_domain: str = ""  # the MAIL FROM (or HELO) domain SPF spoke for
    dkim_pass: tuple[str, ...] = ()  # d= of the signatures that verified
    dkim_fail: tuple[str, ...] = ()  # d= of the signatures that did not
    dmarc: str = "none"  # pass | fail | none
    from_domain: str = ""
    spf_identity: str = ""  # "mailfrom" or "helo": which identity SPF spoke for
    # The Authentication-Results clauses the gateway adds to delivered mail
    # (`policy.headers.rewrite_for_delivery`), e.g. ("spf=pass smtp.mailfrom=a.test",).
    # None while the gateway's own check has not finished (SPF and DKIM known, DMARC not
    # yet: a check that runs out of time leaves these) and for an upstream's verdict: the
    # gateway then verified nothing and adds no field of its own.
    clauses: tuple[str, ...] | None = None

    @property
    def verified_here(self) -> bool:
        """Did the gateway's own `auth` check verify the message to the end?"""
        return self.clauses is not None

    def aligned(self, domain: str | None = None) -> bool:
        """Is the From domain (or `domain`) authenticated, relaxed alignment (RFC 7489):
        DMARC passed, or a DKIM pass or SPF pass whose organisational domain is the From
        domain's?"""
        target = org_domain(domain or self.from_domain)
        if not target:
            return False
        if self.dmarc == "pass" and (domain is None or org_domain(self.from_domain) == target):
            return True
        if any(org_domain(d) == target for d in self.dkim_pass):
            return True
        return self.spf == "pass" and org_domain(self.spf_domain) == target

    @property
    def failed(self) -> bool:
        """DMARC failed, or nothing passed and SPF or DKIM failed outright."""
        if self.dmarc == "fail":
            return True
        if self.dmarc == "pass" or self.dkim_pass or self.spf == "pass":
            return False
        return self.spf == "fail" or bool(self.dkim_fail)


@dataclass(frozen=True)
class BulkFacts:
    """Signs that the message is legitimate bulk or automated mail (`bulk` family).

    `kind` is the strongest reading: "dsn" (a delivery status notification), "calendar"
    (an invitation or reply), "newsletter" (marketing or list mail with unsubscribe
    machinery), "notification" (automated mail from a service: receipts, shipping, account
    notices). `markers` are the plain-language signs found; `esp` names the email service
    provider whose infrastructure sent it, if known.
    """

    kind: str
    markers: tuple[str, ...] = ()
    esp: str = ""
    own_dsn: bool = False  # a DSN that returns mail our own users sent (checked, not assumed)
    report: str = ""  # "DMARC aggregate report (RFC 7489)" / "SMTP TLS report (RFC 8460)"


@dataclass(frozen=True)
class BrandFacts:
    """Brands the message names, and whether its sender and links belong to them (`urls`)."""

    named: tuple[str, ...] = ()  # brand keys named in display name, subject or body
    sender_brand: str = ""  # the brand whose domains the From domain belongs to, if any
    mismatched: tuple[str, ...] = ()  # named brands the From domain does not belong to


@dataclass(frozen=True)
class ModelFacts:
    """A content model's reading of the message: tier 1 (`content`) or tier 2 (`deep`)."""

    p_bad: float  # P(spam or phish)
    p_spam: float
    p_phish: float
    # Tier 2 only: the two tiers' P(spam or phish) combined (`deep.combined_bad`), when
    # tier 1 gave a reading; what the evidence gate and tier 3 read first.
    combined_bad: float | None = None


@dataclass(frozen=True)
class SenderMemoryFacts:
    """What the sender memory knows of this inbound message's sender (`reputation`)."""

    sender: str
    history: Mapping[str, PairStats] = field(default_factory=dict)  # recipient -> counters
    wrote_to_sender: tuple[str, ...] = ()  # our users who wrote to the sender
    replied_ids: tuple[str, ...] = ()  # Message-IDs we sent that this message answers

    @property
    def first_contact(self) -> bool:
        """Nobody here corresponded with the sender, and this answers none of our mail."""
        return not self.history and not self.wrote_to_sender and not self.replied_ids


@dataclass(frozen=True)
class AttachmentHash:
    """One file the message carried (`attachments`), archive members and files taken out
    of PDFs included, for the message log, recall and threat-intel look-ups by hash."""

    filename: str
    sha256: str
    size: int
    type: str  # detected MIME type, else the declared one
    container: str = ""  # the archive a member came from; "" for a top-level part


@dataclass(frozen=True)
class VirusFound:
    where: str  # "the message" or an attachment's name
    signature: str


@dataclass(frozen=True)
class AntivirusFacts:
    """What a virus scanner (`antivirus`) scanned and found."""

    engine: str  # "clamav"
    scanned: tuple[str, ...] = ()
    found: tuple[VirusFound, ...] = ()


@dataclass
class Facts:
    """What the checks of one scan established, typed. Written once per field."""

    auth: AuthFacts | None = None
    # Tier 1 (`content`, stage 0) and tier 2 (`deep`, stage 1, only for the mail it reads).
    content: ModelFacts | None = None
    deep: ModelFacts | None = None
    # Inbound mail whose sender the memory knows anything of (`reputation`, stage 0).
    sender_memory: SenderMemoryFacts | None = None
    # Every file walked (`attachments`); None: the family did not run or found no file.
    attachments: tuple[AttachmentHash, ...] | None = None
    antivirus: AntivirusFacts | None = None
    bulk: BulkFacts | None = None
    brands: BrandFacts | None = None
    # The evidence gate's assessment of the sender (evidence family, last stage).
    consistency: Consistency | None = None
    # 0–9, how spam-like a bulk or automated message reads (evidence family); None: the
    # message is not bulk. Policy maps it to an action with [policy] bulk_threshold.
    bulk_level: int | None = None
    # The sending account's behaviour and what the internal policy does about it (internal
    # family, after every other check); None for inbound mail and mail with no account.
    internal: Judgement | None = None
