"""What is normal for an account, learned online: its baseline, its recent window, and
its peers.

`AccountBaseline` is the long memory of one account (small, bounded, serialisable):

* the current hour's counts, folded into decayed *peaks* (its busiest hours so far, half
  life `PEAK_HALF_LIFE_DAYS`) when the hour is over — an hour in which the account was
  flagged is not folded, so a burst never becomes the account's normal;
* an hour-of-day profile (weekdays and weekends apart, UTC);
* the correspondents it wrote to, in a two-generation Bloom filter (a few percent false
  "known" answers, fixed size, old correspondents age out with the older generation);
* client networks and mail programs seen, attachment types and link domains sent, sizes,
  internal against external recipients, and how often the content checks objected.

`Entry` is one message in the recent window (time, content fingerprint, recipient keys,
…); `WindowStats` sums a window up. `PeerStats` is the organisation's side: for each
measure, a histogram of the accounts' peaks, so "peers' busiest hours reach N" is a
percentile read from a few dozen bins, updated as each account's peak changes.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mailmoat.internal.fingerprint import distance

HOUR = 3600.0
DAY = 86400.0
PEAK_HALF_LIFE_DAYS = 90.0  # a quarter: quarter-end runs are still "normal" next quarter
METRICS = ("messages", "recipients", "new_recipients", "fanout", "external_attachments")
BLOOM_BITS = 2048
BLOOM_BYTES = BLOOM_BITS // 8
BLOOM_GENERATION = 300  # insertions before the older generation is dropped
MAX_NETWORKS = 8
MAX_AGENTS = 8
MAX_TYPES = 24
MAX_LINK_DOMAINS = 64
MAX_FORWARDS = 8  # outside addresses whose forwards are counted
MAX_DROPS = 16  # free-mail addresses that got attachments when first written to
FORWARD_RUN = DAY  # forwards to one address are counted over a day from the first
DROP_DAYS = 1.0  # a free-mail address first sent attachments this recently is a "drop"
PROFILE_SLOTS = 48  # 24 hours, weekdays then weekends


def _bloom_mask(key: int) -> int:
    """The filter bits of a recipient key: three of 2048, as one int to AND and OR with."""
    mixed = (key * 0x9E3779B1) & 0xFFFFFFFF
    return (1 << (key & 0x7FF)) | (1 << ((key >> 11) & 0x7FF)) | (1 << ((mixed >> 21) & 0x7FF))


def profile_slot(at: float) -> int:
    """The hour-of-day slot of a time (UTC); weekends (days 5, 6 of the week) apart."""
    days = int(at // DAY)
    hour = int(at % DAY // HOUR)
    weekend = (days + 3) % 7 >= 5  # 1970-01-01 was a Thursday (weekday 3)
    return hour + (24 if weekend else 0)


def _touch(seen: dict[str, float], key: str, at: float, cap: int) -> None:
    seen[key] = max(at, seen.get(key, 0.0))
    if len(seen) > cap:
        del seen[min(seen, key=lambda k: seen[k])]


@dataclass(slots=True)
class AccountBaseline:
    first_seen: float = 0.0
    last_seen: float = 0.0
    learned: int = 0  # messages it was learned from (not flagged, not bad content)
    days: int = 0  # distinct days with mail
    last_day: int = -1
    hour: int = -1  # the hour being counted (hours since the epoch)
    hour_counts: list[int] = field(default_factory=lambda: [0] * len(METRICS))
    hour_flagged: bool = False
    peaks: list[float] = field(default_factory=lambda: [0.0] * len(METRICS))
    peaks_at: float = 0.0  # when the peaks were last decayed
    profile: bytearray = field(default_factory=lambda: bytearray(PROFILE_SLOTS))
    # Correspondents: two generations of a 2048-bit Bloom filter, each an int (bit i set:
    # slot i taken), so a look-up is one AND of 32 machine words.
    bloom_new: int = 0
    bloom_old: int = 0
    bloom_count: int = 0  # insertions into the newer generation
    internal_rcpts: int = 0
    external_rcpts: int = 0
    networks: dict[str, float] = field(default_factory=dict)
    agents: dict[str, float] = field(default_factory=dict)
    types: dict[str, float] = field(default_factory=dict)
    link_domains: dict[str, float] = field(default_factory=dict)
    reply_tos: dict[str, float] = field(default_factory=dict)  # outside Reply-To addresses used
    # Forwards of others' mail to outside addresses: address -> how many since `fwd_at`.
    fwd: dict[str, float] = field(default_factory=dict)
    fwd_at: dict[str, float] = field(default_factory=dict)
    # Free-mail recipients (keys) first written to with attachments: key -> when.
    drops: dict[str, float] = field(default_factory=dict)
    size_avg: float = 0.0
    bad: int = 0  # messages the content checks objected to
    flagged_at: float = 0.0

    # -- correspondents --------------------------------------------------------------------

    def knows(self, key: int) -> bool:
        mask = _bloom_mask(key)
        return self.bloom_new & mask == mask or self.bloom_old & mask == mask

    def remember(self, key: int) -> None:
        mask = _bloom_mask(key)
        if self.bloom_new & mask == mask or self.bloom_old & mask == mask:
            return
        if self.bloom_count >= BLOOM_GENERATION:
            # The newer generation becomes the older; the oldest correspondents go.
            self.bloom_old, self.bloom_new, self.bloom_count = self.bloom_new, 0, 0
        self.bloom_new |= mask
        self.bloom_count += 1

    def knows_network(self, network: str) -> bool:
        """A network it sent from, or one in the same /16 (IPv4): a mobile carrier or a
        home ISP hands out addresses from a few /16s, not one /24."""
        if not network or network in self.networks:
            return True
        if ":" in network:
            return False
        wide = network.split(".")[:2]
        return any(n.split(".")[:2] == wide for n in self.networks if ":" not in n)

    def note_forward(self, target: str, at: float) -> int:
        """Count a forward to `target`; how many in its run (a day from the first)."""
        if at - self.fwd_at.get(target, at) > FORWARD_RUN:
            self.fwd.pop(target, None)
        if target not in self.fwd:
            self.fwd_at[target] = at
        self.fwd[target] = self.fwd.get(target, 0.0) + 1
        if len(self.fwd) > MAX_FORWARDS:
            oldest = min(self.fwd_at, key=lambda k: self.fwd_at[k])
            self.fwd.pop(oldest, None)
            self.fwd_at.pop(oldest, None)
        for k in [k for k in self.fwd_at if k not in self.fwd]:
            del self.fwd_at[k]
        return int(self.fwd[target])

    def drop_address(self, key: int, at: float) -> bool:
        """Whether free-mail recipient `key` of a message with attachments is one the
        account first wrote to (with attachments) within `DROP_DAYS`: true for a never
        written one, which is remembered as such."""
        k = str(key)
        first = self.drops.get(k)
        if first is not None:
            return at - first <= DROP_DAYS * DAY
        if self.knows(key):
            return False
        self.drops[k] = at
        if len(self.drops) > MAX_DROPS:
            del self.drops[min(self.drops, key=lambda x: self.drops[x])]
        return True

    def quiet_hour(self, at: float, min_messages: int = 20, min_days: int = 5) -> bool:
        """Whether `at` falls in hours (it and the hour either side) holding at most 2 % of
        what the account sent, once it has some history."""
        if self.learned < min_messages or self.days < min_days:
            return False
        near, total, _ = self.hour_share(at, min_messages)
        return total >= min_messages and near <= 0.02 * total

    # -- history ---------------------------------------------------------------------------

    def has_history(self, min_messages: int) -> bool:
        return self.learned >= min_messages and self.days >= 3

    def decayed_peaks(self, now: float) -> list[float]:
        if self.peaks_at <= 0 or now <= self.peaks_at:
            return list(self.peaks)
        k = 0.5 ** ((now - self.peaks_at) / (PEAK_HALF_LIFE_DAYS * DAY))
        return [p * k for p in self.peaks]

    def roll_hour(self, now: float) -> list[tuple[int, float, float]]:
        """Close the counted hour when `now` is in a later one: fold its counts into the
        peaks (unless the account was flagged in it). Returns (metric, old peak, new peak)
        for each peak that changed, for the peers' histograms."""
        hour = int(now // HOUR)
        if hour <= self.hour:
            return []  # the same hour, or a clock that went back: keep counting
        changed: list[tuple[int, float, float]] = []
        if self.hour >= 0 and not self.hour_flagged and any(self.hour_counts):
            decayed = self.decayed_peaks(now)
            for i, count in enumerate(self.hour_counts):
                new = max(decayed[i], float(count))
                if abs(new - self.peaks[i]) > 1e-9:
                    changed.append((i, self.peaks[i], new))
                self.peaks[i] = new
            self.peaks_at = now
        self.hour = hour
        self.hour_counts = [0] * len(METRICS)
        self.hour_flagged = False
        return changed

    def count(self, messages: int, recipients: int, new_recipients: int, fanout: int,
              external_attachments: int) -> None:
        """Add a message to the counted hour (fan-out is the hour's largest cluster)."""
        c = self.hour_counts
        c[0] += messages
        c[1] += recipients
        c[2] += new_recipients
        c[3] = max(c[3], fanout)
        c[4] += external_attachments

    def learn(self, at: float, *, recipient_keys: Iterable[int], internal: int, external: int,
              network: str, agent: str, types: Iterable[str], link_domains: Iterable[str],
              reply_to: str, size: int) -> None:
        """What a message that raised nothing teaches about the account."""
        if not self.first_seen:
            self.first_seen = at
        self.last_seen = max(self.last_seen, at)
        self.learned += 1
        day = int(at // DAY)
        if day != self.last_day:
            self.days += 1
            self.last_day = day
        slot = profile_slot(at)
        if self.profile[slot] >= 255:
            self.profile[:] = bytes(v >> 1 for v in self.profile)
        self.profile[slot] += 1
        for key in recipient_keys:
            self.remember(key)
        self.internal_rcpts += internal
        self.external_rcpts += external
        if network:
            _touch(self.networks, network, at, MAX_NETWORKS)
        if agent:
            _touch(self.agents, agent, at, MAX_AGENTS)
        for t in types:
            _touch(self.types, t, at, MAX_TYPES)
        for d in link_domains:
            _touch(self.link_domains, d, at, MAX_LINK_DOMAINS)
        if reply_to:
            _touch(self.reply_tos, reply_to, at, MAX_AGENTS)
        self.size_avg = size if self.learned == 1 else self.size_avg * 0.95 + size * 0.05

    def hour_share(self, at: float, min_total: int, spread: int = 1) -> tuple[int, int, str]:
        """(messages learned in this hour of day and the `spread` hours either side, all
        learned messages, which days) from the profile: the same kind of day (weekdays,
        weekends) when it has `min_total` messages, else all days together."""
        slot = profile_slot(at)
        hour = slot % 24
        hours = [(hour + d) % 24 for d in range(-spread, spread + 1)]
        base = 24 if slot >= 24 else 0
        same = sum(self.profile[base:base + 24])
        if same >= min_total:
            near = sum(self.profile[base + h] for h in hours)
            return near, same, "weekend" if base else "weekday"
        near = sum(self.profile[h] + self.profile[24 + h] for h in hours)
        return near, sum(self.profile), "all"

    # -- storage ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1, "first_seen": self.first_seen, "last_seen": self.last_seen,
            "learned": self.learned, "days": self.days, "last_day": self.last_day,
            "hour": self.hour, "hour_counts": list(self.hour_counts),
            "hour_flagged": self.hour_flagged,
            "peaks": [round(p, 3) for p in self.peaks], "peaks_at": self.peaks_at,
            "profile": base64.b64encode(bytes(self.profile)).decode("ascii"),
            "bloom": base64.b64encode(self.bloom_new.to_bytes(BLOOM_BYTES, "little")
                                      + self.bloom_old.to_bytes(BLOOM_BYTES, "little")
                                      ).decode("ascii"),
            "bloom_count": self.bloom_count, "internal_rcpts": self.internal_rcpts,
            "external_rcpts": self.external_rcpts, "networks": dict(self.networks),
            "agents": dict(self.agents), "types": dict(self.types),
            "link_domains": dict(self.link_domains), "reply_tos": dict(self.reply_tos),
            "fwd": dict(self.fwd), "fwd_at": dict(self.fwd_at), "drops": dict(self.drops),
            "size_avg": round(self.size_avg, 1),
            "bad": self.bad, "flagged_at": self.flagged_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AccountBaseline:
        """A baseline from `to_dict`; a field that is missing or of the wrong shape keeps
        its default (a damaged row costs history, never a message)."""
        b = cls()

        def num(name: str, kind: type = float) -> None:
            v = d.get(name)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                setattr(b, name, kind(v))

        for name in ("first_seen", "last_seen", "peaks_at", "size_avg", "flagged_at"):
            num(name)
        for name in ("learned", "days", "last_day", "hour", "bloom_count", "internal_rcpts",
                     "external_rcpts", "bad"):
            num(name, int)
        b.hour_flagged = bool(d.get("hour_flagged", False))
        for name, size in (("hour_counts", len(METRICS)), ("peaks", len(METRICS))):
            v = d.get(name)
            if isinstance(v, list) and len(v) == size and all(isinstance(x, int | float)
                                                              for x in v):
                setattr(b, name, [type(getattr(b, name)[0])(x) for x in v])
        for name, size in (("profile", PROFILE_SLOTS), ("bloom", 2 * BLOOM_BYTES)):
            try:
                raw = base64.b64decode(str(d.get(name, "")), validate=True)
            except ValueError:
                continue
            if len(raw) != size:
                continue
            if name == "profile":
                b.profile = bytearray(raw)
            else:
                b.bloom_new = int.from_bytes(raw[:BLOOM_BYTES], "little")
                b.bloom_old = int.from_bytes(raw[BLOOM_BYTES:], "little")
        for name in ("networks", "agents", "types", "link_domains", "reply_tos", "fwd",
                     "fwd_at", "drops"):
            v = d.get(name)
            if isinstance(v, dict):
                setattr(b, name, {str(k): float(x) for k, x in v.items()
                                  if isinstance(x, int | float)})
        return b


# -- the recent window ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Entry:
    """One message in an account's recent window."""

    at: float
    fingerprint: int  # content simhash; 0: none (or not to be clustered)
    recipients: tuple[int, ...]  # recipient keys
    new: int  # of them never written to before
    external: int
    external_attachments: bool  # carried attachments to outside recipients
    freemail: int  # recipients at free-mail providers
    forwarded: bool
    copy: bool = False  # a further transaction of a message already counted (a list's)
    drop: bool = False  # attachments to a free-mail address first written to lately


@dataclass(frozen=True)
class WindowStats:
    messages: int
    recipients: int  # distinct
    new_recipients: int
    external_attachments: int
    attachment_freemail: int  # of those, messages to free-mail recipients
    forwards: int
    forward_freemail: int
    fanout: int  # distinct recipients of content near-identical to this message's
    fanout_messages: int
    fanout_new: int  # of the fan-out's recipients, those new when written to
    fanout_span: float  # seconds from the cluster's first message to this one
    span: float  # seconds from the window's first message to this one
    drops: int = 0  # messages with attachments to free-mail addresses first written to lately


def window_stats(entries: list[Entry], current: Entry, since: float, bits: int) -> WindowStats:
    """Sum up the window's entries from `since` on, and the current message's."""
    rcpts: set[int] = set()
    cluster: set[int] = set()
    messages = new = ext_att = att_free = fwd = fwd_free = cmsgs = cnew = drops = 0
    first = cfirst = current.at
    for e in (*entries, current):
        if e.at < since and e is not current:
            continue
        messages += not e.copy
        drops += e.drop
        rcpts.update(e.recipients)
        new += e.new
        if e.external_attachments:
            ext_att += 1
            att_free += e.freemail > 0
        if e.forwarded:
            fwd += 1
            fwd_free += e.freemail > 0
        first = min(first, e.at)
        if current.fingerprint and e.fingerprint and \
                distance(e.fingerprint, current.fingerprint) <= bits:
            fresh = len(set(e.recipients) - cluster)
            cluster.update(e.recipients)
            cmsgs += not e.copy
            # New-when-written, spread over the recipients this entry adds to the cluster.
            cnew += min(e.new, fresh)
            cfirst = min(cfirst, e.at)
    return WindowStats(messages=messages, recipients=len(rcpts), new_recipients=new,
                       external_attachments=ext_att, attachment_freemail=att_free,
                       forwards=fwd, forward_freemail=fwd_free, fanout=len(cluster),
                       fanout_messages=cmsgs, fanout_new=cnew,
                       fanout_span=current.at - cfirst, span=current.at - first, drops=drops)


# -- the peers -----------------------------------------------------------------------------

BINS = 96  # quarter octaves: 2**(95/4) is far above any real hourly count


def _bin(value: float) -> int:
    if value < 1:
        return 0
    return min(BINS - 1, int(math.log2(value) * 4) + 1)


def _bin_top(i: int) -> float:
    return 0.0 if i == 0 else 2 ** (i / 4)


@dataclass
class PeerStats:
    """For each measure, how many accounts have their busiest hour in each bin."""

    hist: list[list[int]] = field(default_factory=lambda: [[0] * BINS for _ in METRICS])
    # (accounts, 99th percentile) per measure, kept until a peak moves: asked every
    # message, changed once per account-hour at most.
    _read: dict[int, tuple[int, float]] = field(default_factory=dict, repr=False)

    def move(self, metric: int, old: float, new: float) -> None:
        row = self.hist[metric]
        if old > 0:
            i = _bin(old)
            row[i] = max(0, row[i] - 1)
        if new > 0:
            row[_bin(new)] += 1
        self._read.pop(metric, None)

    def _of(self, metric: int) -> tuple[int, float]:
        got = self._read.get(metric)
        if got is None:
            row = self.hist[metric]
            total = sum(row)
            got = self._read[metric] = (total, self._quantile(row, total, 0.99))
        return got

    def accounts(self, metric: int) -> int:
        return self._of(metric)[0]

    def high(self, metric: int) -> float:
        """The 99th percentile of the accounts' busiest hours (a bin's upper edge)."""
        return self._of(metric)[1]

    @staticmethod
    def _quantile(row: list[int], total: int, q: float) -> float:
        if not total:
            return 0.0
        need = q * total
        seen = 0
        for i, n in enumerate(row):
            seen += n
            if seen >= need:
                return _bin_top(i)
        return _bin_top(BINS - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "hist": [list(r) for r in self.hist]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PeerStats:
        p = cls()
        hist = d.get("hist")
        if isinstance(hist, list) and len(hist) == len(METRICS) and all(
                isinstance(r, list) and len(r) == BINS for r in hist):
            p.hist = [[max(0, int(x)) for x in r] for r in hist]
        return p
