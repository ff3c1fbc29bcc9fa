"""Typed facts that checks establish for later checks, the evidence gate and policy.

A check that learns something another check needs (who authenticated the message, whether
it is legitimate bulk mail, which brands it names) records it here instead of in the
untyped `ScanResult.annotations`. Each fact is written by one check family and read by
others; a fact left as None means "not established" (the check did not run, or found
nothing), never "false".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailmoat.domains import org_domain

if TYPE_CHECKING:
    from mailmoat.internal.guard import Judgement
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


@dataclass(frozen=True)
class BrandFacts:
    """Brands the message names, and whether its sender and links belong to them (`urls`)."""

    named: tuple[str, ...] = ()  # brand keys named in display name, subject or body
    sender_brand: str = ""  # the brand whose domains the From domain belongs to, if any
    mismatched: tuple[str, ...] = ()  # named brands the From domain does not belong to


@dataclass
class Facts:
    """What the checks of one scan established, typed. Written once per field."""

    auth: AuthFacts | None = None
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
