"""`[internal]`: intra-domain security, the behaviour of our own senders' accounts.

Read with `config.section("internal", InternalSettings)`. The thresholds are where the
signals start (`signals.py` says how far above them a symbol's factor grows); the actions
say what happens to an account whose message's behaviour symbols add up to `flag_score`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mailmoat.config import Section
from mailmoat.internal.rules import MAX_RULES, InternalRule, address_patterns, check_rules

Action = Literal["tag", "hold", "throttle", "suspend"]
Reply = Literal["4xx", "5xx"]


def _members(values: list[str], group: str) -> list[str]:
    return address_patterns(values, f"group {group!r}")


class InternalSettings(Section):
    enabled: bool = Field(
        True, description="judge the sending behaviour of our own accounts (mail from SMTP "
        "AUTH users and [smtp] trusted_networks: directions internal and outbound); see "
        "docs/internal.md")
    identity_header: str = Field(
        "", description="header a trusted upstream mail server adds with the authenticated "
        "sender (e.g. X-Authenticated-Sender); `Received` reads Postfix's `(Authenticated "
        "sender: …)` comment of the topmost Received field. Believed only from [smtp] "
        "trusted_networks and removed from mail of every other client; empty: none")
    # -- what is normal ------------------------------------------------------------------
    window_minutes: int = Field(
        60, ge=5, le=1440, description="the recent window the volume, fan-out and "
        "attachment counts are taken over")
    burst_factor: float = Field(
        3.0, ge=1, description="how far above its own busiest hour so far an account may go "
        "before its volume counts as a burst")
    min_history_messages: int = Field(
        20, ge=1, description="messages an account must have sent (on at least 3 days) "
        "before its own history is compared; before that it is judged against its peers "
        "only, never for having no history")
    min_peer_accounts: int = Field(
        20, ge=1, description="accounts with history needed before the peers' busiest hours "
        "stand in for the floors below")
    floor_messages: int = Field(
        40, ge=1, description="messages per window no account is held to less than "
        "(the peers' figure when too few accounts have history)")
    floor_recipients: int = Field(
        60, ge=1, description="distinct recipients per window, likewise")
    floor_new_recipients: int = Field(
        25, ge=1, description="recipients never written to before per window, likewise")
    floor_fanout: int = Field(
        20, ge=2, description="distinct recipients of near-identical content per window, "
        "likewise")
    floor_external_attachments: int = Field(
        10, ge=1, description="messages with attachments to outside recipients per window, "
        "likewise")
    similarity_bits: int = Field(
        10, ge=0, le=24, description="how many of the 64 bits of two messages' content "
        "fingerprints (subject and body) may differ for them to count as near-identical")
    odd_hour_min_messages: int = Field(
        100, ge=10, description="messages (over at least 14 days) before an hour the account "
        "never sends at counts as odd")
    exempt_accounts: list[str] = Field(
        default_factory=list, description="accounts whose mass mail to colleagues is expected "
        "(communications, HR, IT announcements): no burst or fan-out symbols; everything else "
        "is still judged")
    lists: list[str] = Field(
        default_factory=list, description="the company's list and alias addresses (addresses, "
        "@domains or patterns such as *-team@example.test): when set, only a message the mail "
        "server expanded from one of these counts as one post to the list; empty: any "
        "address of ours in To/Cc that is not an envelope recipient is taken for a list")
    # -- what happens --------------------------------------------------------------------
    flag_score: float = Field(
        6.0, gt=0, description="the INTERNAL_* symbols of one message adding up to this flag "
        "the account: an incident opens, the alerts go out and `action` applies")
    action: Action = Field(
        "suspend", description="what a flagged account gets: tag (incident and alerts only), "
        "hold (its mail is quarantined), throttle (its mail beyond throttle_per_hour gets "
        "451 4.7.1) or suspend (its mail is refused, at MAIL with SMTP AUTH, else at DATA); the "
        "message that flagged it is quarantined for hold and suspend, deferred for throttle")
    action_minutes: int = Field(
        0, ge=0, le=5_256_000, description="minutes the action lasts (at most ten years); "
        "0: until an administrator releases the account")
    suspend_reply: Reply = Field(
        "4xx", description="reply to a suspended account's mail: 4xx (451 4.7.1, the upstream "
        "keeps it queued) or 5xx (550 5.7.1, the upstream bounces it)")
    throttle_per_hour: int = Field(
        10, ge=0, description="messages per hour a throttled account may still send")
    release_grace_hours: float = Field(
        24.0, ge=0, le=87_600, description="after an administrator releases an account, its "
        "mail is still judged and logged but flags nothing for this long (the queued mail "
        "then flows)")
    # -- who is told ---------------------------------------------------------------------
    alert_webhook_env: str = Field(
        "", description="environment variable holding the URL an alert is POSTed to (JSON "
        "body); kept out of the config file because such URLs carry tokens; empty: none")
    alert_syslog: str = Field(
        "", description="syslog target of alerts: a socket path (/dev/log) or host:port "
        "(UDP); empty: none (the alert is always in the gateway's log)")
    alert_mail_to: list[str] = Field(
        default_factory=list, description="administrators mailed on each flagged account "
        "(through [delivery] downstream)")
    review_copy_to: list[str] = Field(
        default_factory=list, description="reviewers who get a copy of every delivered "
        "message that flags an account, or that a rule with action `copy` matches (the "
        "message still goes to its recipients); empty: no copies")
    # -- where state lives ---------------------------------------------------------------
    max_accounts_in_memory: int = Field(
        200_000, ge=100, description="accounts whose baseline is kept in memory; the least "
        "recently seen past it are written to the database and dropped")
    forget_after_days: int = Field(
        180, ge=1, description="an account that sent nothing for this long is forgotten")
    sync_seconds: float = Field(
        5.0, gt=0, description="how often baselines are written to the database and "
        "suspensions made elsewhere (console, CLI, another node) are read back")

    # -- internal policy ------------------------------------------------------------------
    groups: dict[str, list[str]] = Field(
        default_factory=dict, description="group name -> accounts (addresses, @domains or "
        "patterns such as *@finance.example.test) for rules and the console's per-group "
        "statistics")
    groups_file: str = Field(
        "", description="file of `group: member, member` lines, read at start and with each "
        "policy change, added to groups; empty: none")
    rules: list[InternalRule] = Field(
        default_factory=list, max_length=MAX_RULES, description="`[[internal.rules]]`: "
        "conditions on account, group, direction, recipients, symbols, verdict, attachment "
        "types and data-loss detectors, and an action; see docs/internal.md, Rules")

    @model_validator(mode="after")
    def _rules(self) -> InternalSettings:
        for name, members in self.groups.items():
            if not name.strip():
                raise ValueError("a group needs a name")
            self.groups[name] = _members(members, name)
        check_rules(self.rules, None if self.groups_file else self.groups)
        copying = [r.name for r in self.rules if r.action == "copy"]
        if copying and not self.review_copy_to:
            raise ValueError(f"rule {copying[0]!r} has action copy but [internal] "
                             "review_copy_to names no reviewer")
        self.review_copy_to = address_patterns(self.review_copy_to, "review_copy_to")
        self.lists = address_patterns(self.lists, "lists")
        if any("*" in a or a.startswith("@") for a in self.review_copy_to):
            raise ValueError("review_copy_to takes addresses, not patterns or @domains")
        return self

    @model_validator(mode="after")
    def _header_name(self) -> InternalSettings:
        name = self.identity_header
        if name and (not name.isascii() or any(c in name for c in ": \t\r\n")):
            raise ValueError(f"identity_header {name!r} is not a header field name")
        return self
