"""What a verdict is made of: the action taken and the category of threat it speaks for.

They live with policy, which decides them; checks (scan/) and learning (ml/) name them too,
and importing them from here keeps the dependencies one way: scan and ml depend on policy's
vocabulary, policy never imports a check.
"""

from __future__ import annotations

import enum

__all__ = ["Action", "Category"]


class Action(str, enum.Enum):
    ACCEPT = "accept"
    TAG = "tag"
    QUARANTINE = "quarantine"
    REJECT = "reject"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ACCEPT: 0, Action.TAG: 1, Action.QUARANTINE: 2, Action.REJECT: 3}


class Category(str, enum.Enum):
    """What kind of threat a symbol speaks for; a message's category is the strongest."""

    CLEAN = "clean"
    SPAM = "spam"
    PHISHING = "phishing"
    MALWARE = "malware"
    BEC = "bec"
    POLICY = "policy"  # allow/block lists, malformed mail, size: the admin's rules
    # Legitimate bulk and automated mail (newsletters, notifications, bounces): not a
    # threat, delivered and marked so a client or Sieve rule can file it (policy: bulk_*).
    BULK = "bulk"
