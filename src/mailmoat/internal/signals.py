"""Signals: how this message and the account's recent window differ from its normal.

Each signal becomes one INTERNAL_* symbol with a factor (how strongly) and a reason in
plain words with the numbers that triggered it. Counts are compared with a *limit*:

    limit = max(floor, burst_factor × the account's busiest hour so far, peers' busiest hours)

where the account's own figure counts only once it has history (`min_history_messages`),
and the peers' figure (the 99th percentile of the accounts' busiest hours) only once
`min_peer_accounts` accounts have one; until then the `floor_*` settings stand in. So an
account with no history is judged against its peers, never for having none.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailmoat.internal.baseline import METRICS, AccountBaseline, PeerStats, WindowStats
from mailmoat.internal.settings import InternalSettings

# Symbol names, in the order their reasons read best.
BURST = "INTERNAL_BURST"
FANOUT = "INTERNAL_FANOUT"
NEW_RECIPIENTS = "INTERNAL_NEW_RECIPIENTS"
EXTERNAL_ATTACHMENTS = "INTERNAL_EXTERNAL_ATTACHMENTS"
BAD_CONTENT = "INTERNAL_BAD_CONTENT"
REPLY_TO = "INTERNAL_REPLY_TO"
FORWARD = "INTERNAL_FORWARD"
NEW_CLIENT = "INTERNAL_NEW_CLIENT"
ODD_HOUR = "INTERNAL_ODD_HOUR"
EXFILTRATION = "INTERNAL_EXFILTRATION"
SHARED_CLIENT = "INTERNAL_SHARED_CLIENT"

M_MESSAGES, M_RECIPIENTS, M_NEW, M_FANOUT, M_EXT_ATT = range(len(METRICS))
ODD_HOUR_MIN_DAYS = 14
NEW_CLIENT_MIN_MESSAGES = 20
THREATS = frozenset({"phishing", "malware", "bec"})


@dataclass(frozen=True)
class Signal:
    name: str
    factor: float
    reason: str


@dataclass(frozen=True)
class MessageFacts:
    """What the signals need to know about the message itself (from `check.py`)."""

    at: float
    recipients: int
    internal: int
    external: int
    network: str
    agent: str
    client_ip: str
    types: tuple[str, ...]  # attachment extensions
    link_domains: tuple[str, ...]  # registrable domains of its links, not ours
    reply_to: str  # a Reply-To address outside our domains and the From domain, or ""
    reply_to_freemail: bool
    forwarded: bool  # someone else's mail sent on to outside recipients
    freemail_rcpts: int
    category: str  # what the other checks made of the content
    content_score: float  # their score
    threat_evidence: bool  # a threat category backed by non-text evidence
    tag_threshold: float
    freemail_keys: tuple[int, ...] = ()  # recipient keys of its free-mail recipients
    forward_to: str = ""  # the outside address a forward went to
    forward_auto: bool = False  # written by a mail server's forwarding rule, not a person


@dataclass(frozen=True)
class Context:
    """What the guard worked out beyond the message and the window."""

    forwards: int = 0  # forwards to `forward_to` in the run that this one is part of
    forward_new: bool = False  # `forward_to` was never written to before those forwards
    quiet_hour: bool = False  # the account hardly ever sends at this hour
    # The client network this message came from, new to the account, seen new on these
    # other accounts in the last hour (with the mail program, when that is shared too).
    shared_accounts: int = 0
    shared_network: str = ""
    shared_agent: str = ""


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return _n(max(1, round(seconds)), "second")
    if seconds < 5400:
        return _n(round(seconds / 60), "minute")
    return f"{seconds / 3600:.1f} hours"


def _ratio(value: float, limit: float) -> str:
    r = value / limit if limit else 0.0
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×"


class Limits:
    """The per-measure limits of one account at one time, and how they were made."""

    def __init__(self, settings: InternalSettings, base: AccountBaseline, peers: PeerStats,
                 now: float) -> None:
        s = settings
        self.floors = (s.floor_messages, s.floor_recipients, s.floor_new_recipients,
                       s.floor_fanout, s.floor_external_attachments)
        self.own_known = base.has_history(s.min_history_messages)
        self.own = base.decayed_peaks(now) if self.own_known else [0.0] * len(METRICS)
        self.peer_known = [peers.accounts(i) >= s.min_peer_accounts for i in range(len(METRICS))]
        self.peer = [peers.high(i) if self.peer_known[i] else float(self.floors[i])
                     for i in range(len(METRICS))]
        self.factor = s.burst_factor

    def limit(self, metric: int) -> float:
        return max(float(self.floors[metric]), self.own[metric] * self.factor, self.peer[metric])

    def why(self, metric: int, unit: str) -> str:
        """"its own busiest hour had 4; its peers' busiest hours reach 30 messages"."""
        floor = self.floors[metric]
        if self.own_known and self.peer_known[metric]:
            return (f"its own busiest hour had {self.own[metric]:.0f}; its peers' busiest "
                    f"hours reach {self.peer[metric]:.0f} {unit}")
        if self.peer_known[metric]:
            return (f"it has no history of its own yet; its peers' busiest hours reach "
                    f"{self.peer[metric]:.0f} {unit}")
        if self.own_known:
            return (f"its own busiest hour had {self.own[metric]:.0f}; until its peers' "
                    f"habits are known no account is held to fewer than {floor} {unit}")
        return (f"it has no history of its own yet, and until its peers' habits are known "
                f"any account is held to {floor} {unit} an hour")


def _share(part: int, whole: int) -> str:
    if whole and part >= whole:
        return "all"
    return "none" if part <= 0 else f"{part / max(1, whole):.0%}"


def evaluate(settings: InternalSettings, base: AccountBaseline, peers: PeerStats,
             w: WindowStats, m: MessageFacts, *, exempt: bool = False,
             ctx: Context | None = None) -> list[Signal]:
    """The signals this message raises, given the account's baseline before it."""
    ctx = ctx or Context()
    lim = Limits(settings, base, peers, m.at)
    window = "at once" if w.messages <= 1 else f"within {_minutes(max(w.span, 1.0))}"
    out: list[Signal] = []

    if not exempt:
        msgs_limit, rcpts_limit = lim.limit(M_MESSAGES), lim.limit(M_RECIPIENTS)
        by_msgs, by_rcpts = w.messages / msgs_limit, w.recipients / rcpts_limit
        if by_msgs > 1 or by_rcpts > 1:
            what = (f"{_ratio(w.messages, msgs_limit)} the {msgs_limit:.0f} messages"
                    if by_msgs >= by_rcpts else
                    f"{_ratio(w.recipients, rcpts_limit)} the {rcpts_limit:.0f} recipients")
            unit = "messages" if by_msgs >= by_rcpts else "recipients"
            metric = M_MESSAGES if by_msgs >= by_rcpts else M_RECIPIENTS
            out.append(Signal(BURST, min(2.5, max(by_msgs, by_rcpts)), (
                f"sent {_n(w.messages, 'message')} to {_n(w.recipients, 'recipient')} "
                f"{window}, {what} expected in an hour, "
                f"{_share(w.new_recipients, w.recipients)} to recipients never written to "
                f"before; {lim.why(metric, unit)}")))
        fan_limit = lim.limit(M_FANOUT)
        if w.fanout > fan_limit:
            share = w.fanout_new / max(1, w.fanout)
            weight = 1.5 if share >= 0.8 else 1.0 if share >= 0.5 else 0.5
            colleagues = "colleagues" if m.external == 0 else "recipients"
            out.append(Signal(FANOUT, weight * min(2.0, w.fanout / fan_limit), (
                f"sent near-identical content to {w.fanout} {colleagues} in "
                f"{_n(w.fanout_messages, 'message')} within {_minutes(max(w.fanout_span, 1.0))}, "
                f"{_share(w.fanout_new, w.fanout)} of them written to for the first time; "
                f"{lim.why(M_FANOUT, 'recipients of one text')}")))
        new_limit = lim.limit(M_NEW)
        if w.new_recipients > new_limit:
            out.append(Signal(NEW_RECIPIENTS, min(2.0, w.new_recipients / new_limit), (
                f"wrote to {w.new_recipients} recipients never written to before {window}, "
                f"{_ratio(w.new_recipients, new_limit)} the {new_limit:.0f} expected in an "
                f"hour; {lim.why(M_NEW, 'new recipients')}")))
    att_limit = lim.limit(M_EXT_ATT)
    if w.external_attachments > att_limit:
        free = w.attachment_freemail / max(1, w.external_attachments)
        factor = min(2.0, w.external_attachments / att_limit) * (1.5 if free >= 0.5 else 1.0)
        out.append(Signal(EXTERNAL_ATTACHMENTS, factor,
                          (f"sent attachments to outside recipients in "
                           f"{_n(w.external_attachments, 'message')} {window}"
                           + (f", {free:.0%} of them to free-mail addresses" if free else "")
                           + f"; {lim.why(M_EXT_ATT, 'such messages')}")))

    odd = _odd_hour(settings, base, m)
    if w.drops and m.freemail_rcpts and m.types:
        # Attachments to a private free-mail address the account never wrote to before
        # (or first did within the day): how data leaves after a takeover. One such
        # message is common enough (a candidate's CV answered, a file sent home); a
        # stream of them, or one at an hour the account never sends at, is not.
        factor = 2.0 if w.drops >= 10 else 1.5 if w.drops >= 6 else 1.0 if w.drops >= 3 \
            else 0.5
        night = ""
        if ctx.quiet_hour and odd is None:  # the hour counts once: here or as ODD_HOUR
            factor *= 2.0
            hour = int(m.at % 86400 // 3600)
            night = f", at {hour:02d}:00 UTC, an hour at which it hardly ever sends"
        out.append(Signal(EXFILTRATION, min(2.5, factor), (
            f"sent attachments ({', '.join('.' + t for t in m.types[:3])}) to a free-mail "
            f"address it had never written to before{night}; "
            f"{_n(w.drops, 'such message')} {window}")))

    if m.category in THREATS | {"spam"} and m.content_score >= m.tag_threshold:
        # The text alone misleads now and then (a legitimate mail about passwords or
        # payments): a verdict on the text counts fully only well past the threshold.
        strong = m.content_score >= 2 * m.tag_threshold
        factor = {"phishing": 1.0, "malware": 1.0, "bec": 1.0, "spam": 0.5}[m.category]
        if m.threat_evidence and m.category in THREATS:
            factor = 1.5
        elif m.category == "spam":
            factor = 0.75 if strong else 0.5
        elif not strong:
            factor = 0.75
        backed = " backed by evidence beyond the text" if m.threat_evidence else ""
        out.append(Signal(BAD_CONTENT, factor, (
            f"the content checks judged this outgoing message {m.category} (score "
            f"{m.content_score:g}{backed}); an account of ours sending it is likely "
            "compromised")))

    if m.reply_to:
        known = m.reply_to in base.reply_tos
        if not known:
            kind = "a free-mail address" if m.reply_to_freemail else "an outside address"
            out.append(Signal(REPLY_TO, 1.5 if m.reply_to_freemail else 1.0, (
                f"replies are diverted to {m.reply_to}, {kind} that is neither ours nor "
                "the sender's domain")))

    if m.forwarded:
        n = max(1, ctx.forwards)
        free = m.freemail_rcpts > 0
        # A rule the mail server runs, to a private address never written to before, over
        # and over: what an intruder sets up to keep reading the mailbox.
        factor = (1.5 if m.forward_auto else 1.0) * (1.5 if free else 1.0) * \
            (1.0 if ctx.forward_new else 0.5) * min(2.0, 1.0 + (n - 1) / 2)
        how = "automatically (a forwarding rule)" if m.forward_auto else "by hand"
        target = m.forward_to or "outside recipients"
        kind = "a free-mail address" if free else "an outside address"
        fresh = " it had never written to before" if ctx.forward_new else ""
        out.append(Signal(FORWARD, min(3.0, factor), (
            f"forwards mail written by others to {target}, {kind}{fresh}, {how}: "
            f"{_n(n, 'forward')} to it within a day" + (
                f" and {w.forwards} {window}" if w.forwards > 1 else "")
            + "; an intruder's forwarding rule looks like this")))

    if ctx.shared_accounts >= 1 and ctx.shared_network:
        # A network none of our accounts ever sent good mail from, new to each of them, on
        # several accounts within the hour: one intruder using several stolen passwords.
        n = ctx.shared_accounts + 1
        factor = min(2.0, 0.5 * n) if n >= 2 else 0.0
        agent = f" with the same mail program ({ctx.shared_agent})" if ctx.shared_agent else ""
        if factor:
            out.append(Signal(SHARED_CLIENT, factor * (1.25 if ctx.shared_agent else 1.0), (
                f"sends from {ctx.shared_network}{agent}, a network none of our accounts "
                f"sent from before, as {_n(n - 1, 'other account')} of ours also started "
                "doing within the hour: several accounts in one intruder's hands look like "
                "this")))

    if base.has_history(NEW_CLIENT_MIN_MESSAGES):
        new_net = bool(m.network) and bool(base.networks) and not base.knows_network(m.network)
        new_agent = bool(m.agent) and bool(base.agents) and m.agent not in base.agents
        if new_net or new_agent:
            what = " and ".join(x for x in (
                f"from network {m.network} ({m.client_ip})" if new_net else "",
                f"with a mail program it never used ({m.agent})" if new_agent else "") if x)
            fresh_links = [d for d in m.link_domains if d not in base.link_domains]
            fresh_types = [t for t in m.types if t not in base.types]
            changes = [s.name for s in out]
            if fresh_links:
                changes.append(f"links to {', '.join(fresh_links[:3])} it never sent before")
            if fresh_types:
                changes.append(f".{', .'.join(fresh_types[:3])} attachments it never sent")
            if changes:
                # A new network alone is common (a first mail from home, a hotel); a new
                # mail program less so; both together least.
                base_f = 1.25 if new_net and new_agent else 1.0 if new_agent else 0.75
                out.append(Signal(NEW_CLIENT, base_f + 0.25 * min(2, len(changes) - 1), (
                    f"sends {what}, together with other changes: {'; '.join(changes)}")))

    if odd is not None:
        out.append(odd)
    return out


def _odd_hour(settings: InternalSettings, base: AccountBaseline, m: MessageFacts
              ) -> Signal | None:
    if base.learned < settings.odd_hour_min_messages or base.days < ODD_HOUR_MIN_DAYS:
        return None
    near, total, days = base.hour_share(m.at, settings.odd_hour_min_messages // 4)
    if total < settings.odd_hour_min_messages // 4 or near != 0:
        return None
    hour = int(m.at % 86400 // 3600)
    kind = {"weekday": " on weekdays", "weekend": " on weekends", "all": ""}[days]
    # Far from any hour it sends at (none within two hours either side): three quarters;
    # just outside its usual hours (an evening a little later than usual): half. People
    # do write late now and then: the hour backs other evidence, it is not one itself.
    wide, _, _ = base.hour_share(m.at, settings.odd_hour_min_messages // 4, spread=2)
    span = 2 if wide == 0 else 1
    return Signal(ODD_HOUR, 0.75 if wide == 0 else 0.5, (
        f"sent at {hour:02d}:00 UTC; of the {total} messages it sent{kind} over "
        f"{base.days} days with mail, none was between {(hour - span) % 24:02d}:00 "
        f"and {(hour + span + 1) % 24:02d}:00 UTC"))
