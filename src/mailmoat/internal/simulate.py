"""A seeded simulator of an organisation's internal and outbound mail, with labelled takeovers.

    sim = simulate(SimConfig(seed=1, accounts=500, days=61))
    for m in sim.messages():          # time order; rendered lazily, one message at a time
        m.raw, m.envelope, m.account, m.label

What the company looks like (all of it decided by the seed):

* accounts in roles and departments (engineering, product, sales, support, marketing,
  communications, finance, HR, legal, IT, executives and their assistants) at three sites in
  three time zones (New York, Berlin, Shanghai; daylight-saving changes included). Each person
  has working hours of their own, a hybrid week (office LAN some days, a home ISP address
  others, a phone on a mobile carrier in the evening), a mail client and a phone client,
  and a sending volume drawn from a log-normal around their role's median (a heavy tail:
  assistants and support agents send many times the median engineer).
* who writes to whom: a team, colleagues met across teams (a few hubs everybody writes
  to), external partners per role (customers for sales and support, vendors and banks for
  finance, candidates on free-mail for HR, ...), new correspondents at a per-role rate,
  replies (a chain goes on while people answer), department, site and all-staff lists that
  the company mail server expands as aliases (Postfix `virtual_alias_maps`, an Exchange
  distribution group: the author's envelope, no List-Id) into envelope recipients, 50 per
  transaction as Postfix does (`smtp_destination_recipient_limit`). Only mail our people
  send is simulated: mail from outside that they answer or forward is implied, not sent.
* the legitimate bursts a detector must sit through (`BURSTS`): an all-hands announcement,
  the weekly newsletter that communications sends one copy per employee, the quarter-end
  invoice run from finance, new hires' first week, vacation auto-replies (sent by the mail
  server, null envelope sender, as Sieve's vacation does), one person's new phone and
  another's week abroad.
* takeovers (`SCENARIOS`, one `_s_<name>` method each), in the last part of the run
  (`attack_from`), every malicious message labelled with its scenario. The attacker sends
  from a network and mail program of their own (hosting ranges, a residential proxy near
  the victim for the slow lateral phishing), except the auto-forward, which the mail server
  sends on the account's behalf as Exchange inbox rules do. The owner goes on sending their
  own mail meanwhile.

How mail reaches the gateway (`SimConfig.identity`): "header" — the company mail server
(`MAIL_SERVER_IP`, a trusted network) relays everything and names the authenticated user
in `identity_header`, the device's address in the Received line it adds, as Postfix does
with `smtpd_sasl_authenticated_header`; "auth" — devices submit to the gateway with SMTP
AUTH, so the envelope carries the user and the device's address.

Determinism: the plan (who sends what when) comes from one `random.Random(seed)` walked
in a fixed order; each message's text is drawn from a generator seeded by (seed, event),
so rendering any subset, in any order, gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.charset import QP, Charset
from email.utils import format_datetime, formataddr
from zoneinfo import ZoneInfo

from mailmoat.message.model import Direction, Envelope

SCENARIOS = (
    "spam_burst",           # hundreds of spam messages to outsiders within the hour
    "lateral_phishing",     # a few credential lures an hour to colleagues, for two days
    "payment_fraud",        # a finance account asks customers to pay a new IBAN, Reply-To diverted
    "company_phish",        # a credential lure to the whole company in Bcc batches
    "night_exfiltration",   # attachments to free-mail at 1-4 a.m. local time
    "auto_forward",         # a rule forwards everything the account receives outside
    "new_network_content",  # a new network and agent, sending e-signature lures to contacts
    "multi_takeover",       # several accounts taken over at once, one lure between them
    "thread_hijack",        # replies inside the account's own threads, carrying a payload
)
BURSTS = ("all_hands", "newsletter", "quarter_end", "new_hire", "vacation", "new_phone",
          "travel")

MAIL_SERVER_IP = "10.0.0.25"
MAIL_SERVER_HELO = "mail"  # + "." + domain
LIST_CHUNK = 50  # recipients per transaction when the mail server relays a list post
FREEMAIL = ("gmail.com", "outlook.com", "yahoo.com", "hotmail.com", "icloud.com", "gmx.de",
            "web.de", "qq.com", "163.com", "proton.me")


@dataclass(frozen=True)
class SimConfig:
    seed: int = 1
    accounts: int = 500
    days: int = 61
    start: date = date(2025, 2, 17)  # a Monday; with 61 days the run spans a quarter end
    domain: str = "example.test"
    identity: str = "header"  # "header" (relayed by the mail server) or "auth" (SMTP AUTH)
    identity_header: str = "X-Authenticated-Sender"
    volume: float = 1.0  # multiplies every account's daily rate
    scenarios: tuple[str, ...] = SCENARIOS
    attack_from: float = 0.55  # scenarios start in [attack_from, 1) of the run (clean before)

    def __post_init__(self) -> None:
        if self.identity not in ("header", "auth"):
            raise ValueError(f"identity must be 'header' or 'auth', not {self.identity!r}")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
        if self.accounts < 60:
            raise ValueError("at least 60 accounts: every role needs a few people")
        if self.days < 14:
            raise ValueError("at least 14 days: a clean fortnight comes before the takeovers")


# -- the organisation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    key: str
    city: str
    tz: str
    office_net: str  # first two octets of the office LAN
    home_nets: tuple[str, ...]  # /16s of the home ISPs around the site
    mobile_nets: tuple[str, ...]  # /16s of the mobile carriers
    share: float


SITES = (
    Site("nyc", "New York", "America/New_York", "10.10", ("73.12", "24.46", "98.116", "67.80"),
         ("172.56", "174.205"), 0.45),
    Site("ber", "Berlin", "Europe/Berlin", "10.20", ("84.56", "91.64", "93.128", "87.123"),
         ("80.187", "176.0"), 0.32),
    Site("sha", "Shanghai", "Asia/Shanghai", "10.30", ("114.84", "117.136", "180.168"),
         ("223.104", "112.96"), 0.23),
)
HOTEL_NETS = {"nyc": ("38.122", "64.125"), "ber": ("62.96", "195.37"), "sha": ("101.226", "58.246")}
ATTACKER_NETS = ("45.142", "185.220", "193.42", "5.188", "102.89", "41.190", "194.26")


@dataclass(frozen=True)
class Role:
    name: str
    group: str
    share: float  # of the head count
    per_day: float  # median messages started per working day (replies come on top)
    external: float  # share of new messages to outsiders
    new_internal: float  # chance a message adds a colleague never written to
    new_external: float  # chance an external message goes to a new outside address
    attach: float  # chance a message carries attachments
    evening: float  # share of a day's mail sent after hours
    weekend: float  # weekend volume as a share of a weekday's
    topics: str  # which text bank
    partners: str  # which partner pool


_R = Role
ROLES = (  # name, group, share, per_day, external, new_int, new_ext, attach, evening, weekend
    _R("engineer", "engineering", .24, 2.2, .05, .02, .05, .06, .10, .05, "eng", "vendor"),
    _R("eng_manager", "engineering", .03, 4.0, .05, .03, .05, .10, .08, .05, "eng", "vendor"),
    _R("product", "product", .07, 3.0, .10, .03, .08, .12, .06, .03, "product", "customer"),
    _R("sales", "sales", .13, 4.0, .55, .02, .12, .25, .12, .08, "sales", "customer"),
    _R("support", "support", .10, 9.0, .70, .01, .15, .10, .05, .10, "support", "customer"),
    _R("marketing", "marketing", .06, 3.0, .30, .03, .08, .20, .05, .03, "marketing", "agency"),
    _R("communications", "communications", .02, 3.0, .35, .03, .10, .20, .05, .05, "comms",
       "press"),
    _R("finance", "finance", .06, 3.5, .40, .02, .05, .35, .04, .02, "finance", "finance"),
    _R("hr", "hr", .04, 3.5, .30, .05, .25, .25, .04, .02, "hr", "hr"),
    _R("legal", "legal", .02, 2.5, .40, .02, .06, .35, .05, .04, "legal", "law"),
    _R("it", "it", .05, 3.5, .15, .08, .05, .08, .08, .08, "it", "vendor"),
    _R("executive", "executives", .02, 3.5, .35, .01, .04, .15, .20, .25, "exec", "board"),
    _R("assistant", "executives", .01, 8.0, .30, .03, .08, .15, .04, .02, "assistant", "board"),
)
ROLE_BY_NAME = {r.name: r for r in ROLES}
PARTNER_POOLS = {"customer": 160, "vendor": 30, "agency": 10, "press": 20, "finance": 40,
                 "hr": 12, "law": 8, "board": 12}

FIRST = ("James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
         "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa "
         "Anthony Betty Mark Sandra Steven Ashley Paul Kimberly Andrew Emily Joshua Donna Kevin "
         "Michelle Brian Carol George Amanda Lukas Anna Leon Lena Finn Emma Jonas Mia Felix "
         "Hannah Paul Sophie Maximilian Laura Niklas Julia Tobias Lea Jan Katharina Wei Fang "
         "Jing Lei Min Yan Tao Xiu Hao Ying Jun Li Chen Mei Qiang Hui Priya Arjun Sofia Mateo "
         "Aisha Omar Yuki Kenji Olga Ivan Fatima Carlos Lucia Pierre Chloe Noah Zoe").split()
LAST = ("Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
        "Lopez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Thompson White Harris "
        "Clark Lewis Robinson Walker Young Allen King Wright Scott Green Baker Adams Nelson "
        "Mueller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch "
        "Richter Klein Wolf Neumann Schwarz Braun Zimmermann Wang Li Zhang Liu Chen Yang Huang "
        "Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo Lin He Gao Patel Singh Kumar Nakamura Tanaka "
        "Ivanova Petrov Rossi Bianchi Dubois Moreau Silva Santos Novak Kowalski Larsen").split()
ORG_WORDS = ("north wind blue peak calder stone harbor bright field iron oak summit river "
             "cedar vista nova apex orbit pioneer granite maple silver lake willow beacon "
             "crescent falcon meridian atlas quantum vertex keystone evergreen horizon lumen "
             "sterling copper redwood aurora cobalt tidal juniper prairie").split()
ORG_SUFFIX = ("logistics", "systems", "labs", "partners", "group", "capital", "health",
              "retail", "foods", "energy", "consulting", "media", "tech", "industries")
ORG_TLDS = ("com", "com", "com", "io", "de", "co.uk", "cn", "net", "fr", "com.cn")


@dataclass(frozen=True)
class Agent:
    header: str  # "User-Agent" or "X-Mailer"; "" when the client adds neither
    value: str
    msgid: str  # Message-ID style: outlook, apple, uuid, server
    html: bool  # sends multipart/alternative with HTML


DESKTOP_AGENTS = (
    Agent("X-Mailer", "Microsoft Outlook 16.0", "outlook", True),
    Agent("X-Mailer", "Microsoft Outlook 16.0", "outlook", True),
    Agent("X-Mailer", "Microsoft Outlook 16.0", "outlook", True),
    Agent("User-Agent", "Mozilla Thunderbird 115.8.1", "uuid", False),
    Agent("X-Mailer", "Apple Mail (2.3774.500.171.1.1)", "apple", True),
    Agent("User-Agent", "Microsoft-MacOutlook/16.82.24021116", "outlook", True),
)
PHONE_AGENTS = (
    Agent("X-Mailer", "iPhone Mail (21E236)", "apple", False),
    Agent("X-Mailer", "iPhone Mail (20H240)", "apple", False),
    Agent("User-Agent", "Outlook-iOS/2.0", "outlook", True),
    Agent("User-Agent", "Outlook-Android/2.0", "outlook", True),
    Agent("User-Agent", "Android Mail 2024.03", "uuid", False),
)
NEWSLETTER_AGENT = Agent("X-Mailer", "Campaign Sender 3.2 (internal comms)", "uuid", True)
SERVER_AGENT = Agent("", "", "server", False)
ATTACKER_AGENTS = (
    Agent("", "", "uuid", False),
    Agent("X-Mailer", "PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)", "uuid", True),
    Agent("X-Mailer", "Microsoft Office Outlook 12.0", "outlook", True),
    Agent("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 "
          "Thunderbird/102.9.0", "uuid", False),
)


@dataclass
class Account:
    index: int
    address: str
    name: str
    role: Role
    site: Site
    team: int  # team number within the organisation
    rate: float  # median new messages per working day
    start_hour: float  # local
    end_hour: float
    office_days: tuple[int, ...]  # weekdays (0 = Monday) at the office
    desktop: Agent
    phone: Agent | None
    home_net: str  # /24 prefix, e.g. "73.12.44"
    home_net_later: str  # after the ISP renumbers (same as home_net for most)
    renumber_day: int
    mobile_net: str  # /16
    personal: str  # the person's own free-mail address
    joins_day: int = 0  # > 0: a new hire, absent before that day
    contacts: list[int] = field(default_factory=list)  # colleagues, weighted by repetition
    externals: list[str] = field(default_factory=list)  # outside addresses written to
    partner_orgs: list[int] = field(default_factory=list)

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.site.tz)

    @property
    def first(self) -> str:
        return self.name.split(" ", 1)[0]


@dataclass(frozen=True)
class PartnerOrg:
    name: str
    domain: str
    kind: str
    people: tuple[str, ...]  # display names; addresses from them


@dataclass(frozen=True)
class MailingList:
    address: str
    name: str
    members: tuple[int, ...]


@dataclass(frozen=True)
class Scenario:
    """One injected takeover: which accounts, from when, and what the attacker used."""

    name: str
    accounts: tuple[str, ...]
    start: float  # epoch of the first malicious message
    attacker_ip: str
    description: str


@dataclass(frozen=True)
class Burst:
    """One legitimate burst that must not alert."""

    kind: str
    accounts: tuple[str, ...]
    start: float
    end: float
    description: str


@dataclass(frozen=True)
class SimMessage:
    index: int  # position in time order
    raw: bytes
    envelope: Envelope
    account: str  # the account that really sent it ("" for none)
    label: str | None  # the scenario for malicious mail, None for legitimate
    kind: str  # what produced it: "new", "reply", "list", a burst, a scenario, ...


@dataclass(frozen=True)
class Planned:
    """One composed message before it is rendered (a list post: one, several transactions)."""

    t: float
    account: str
    kind: str
    label: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    recipients: tuple[str, ...]  # envelope recipients, all transactions together
    attachments: int
    client_ip: str  # of the device (the envelope has the mail server's in "header" mode)
    agent: str
    authenticated: bool
    site: str  # where the sender works


@dataclass(slots=True)
class _Event:
    t: float
    idx: int
    sender: int
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()  # envelope-only recipients
    expand: tuple[str, ...] = ()  # envelope recipients of a list post (To holds the list)
    kind: str = "new"
    topic: str = ""
    thread: int = -1  # the idx of the thread's first event
    parent: int = -1
    ip: str = ""
    helo: str = ""
    agent: Agent = SERVER_AGENT
    attach: int = 0
    label: str | None = None
    null_sender: bool = False
    authenticated: bool = True
    extra: tuple[tuple[str, str], ...] = ()  # extra headers (Reply-To, Auto-Submitted, ...)


_SMTP = compat32.clone(linesep="\r\n")
_ZONES: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    z = _ZONES.get(name)
    if z is None:
        z = _ZONES[name] = ZoneInfo(name)
    return z


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:  # normal approximation: Knuth's loop is slow and exact enough is enough
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


# -- the planner ----------------------------------------------------------------------------


class _Planner:
    """Builds the organisation and the time-ordered list of events, all from one rng."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.t0 = datetime(cfg.start.year, cfg.start.month, cfg.start.day,
                           tzinfo=timezone.utc).timestamp()
        self.t_end = self.t0 + cfg.days * 86400
        self.events: list[_Event] = []
        self.accounts: list[Account] = []
        self.by_address: dict[str, int] = {}
        self.lists: list[MailingList] = []
        self.partners: list[PartnerOrg] = []
        self.partner_pool: dict[str, list[int]] = {}
        self.scenarios: list[Scenario] = []
        self.bursts: list[Burst] = []
        self.away: dict[int, list[tuple[float, float]]] = {}  # vacations
        self.travel: dict[int, tuple[float, float, Site]] = {}
        self.new_phone: dict[int, tuple[float, Agent, str]] = {}
        self.compromised: set[int] = set()

    # organisation

    def build_org(self) -> None:
        rng, cfg = self.rng, self.cfg
        roles = [r for r in ROLES for _ in range(max(1, round(r.share * cfg.accounts)))]
        while len(roles) < cfg.accounts:
            roles.append(ROLES[0])
        roles = roles[:cfg.accounts]
        # The few one-of-a-kind roles must survive the trim above.
        for must in ("communications", "executive", "assistant", "finance", "hr", "it"):
            if not any(r.name == must for r in roles):
                roles[-1 - ROLES.index(ROLE_BY_NAME[must])] = ROLE_BY_NAME[must]
        used: set[str] = set()
        team = 0
        for i, role in enumerate(roles):
            site = rng.choices(SITES, [s.share for s in SITES])[0]
            while True:
                name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
                local = name.lower().replace(" ", ".")
                if local not in used:
                    break
                local = f"{local}{rng.randint(2, 99)}"
                if local not in used:
                    break
            used.add(local)
            if i == 0 or role.name != roles[i - 1].name or rng.random() < 0.12:
                team += 1
            # Heavy tail: log-normal around the role's median; a few people send far more.
            rate = role.per_day * math.exp(rng.gauss(0.0, 1.0)) * cfg.volume
            start = rng.gauss(8.5, 0.6)
            home = f"{rng.choice(site.home_nets)}.{rng.randint(1, 254)}"
            renumber = rng.random() < 0.1
            acct = Account(
                index=i, address=f"{local}@{cfg.domain}", name=name, role=role, site=site,
                team=team, rate=min(rate, role.per_day * 12), start_hour=start,
                end_hour=start + rng.gauss(9.0, 0.7),
                office_days=tuple(sorted(rng.sample(range(5), rng.choice((2, 3, 3, 4, 5))))),
                desktop=rng.choice(DESKTOP_AGENTS),
                phone=rng.choice(PHONE_AGENTS) if rng.random() < 0.7 else None,
                home_net=home,
                home_net_later=(f"{home.rsplit('.', 1)[0]}.{rng.randint(1, 254)}"
                                if renumber else home),
                renumber_day=rng.randint(5, cfg.days - 1),
                mobile_net=rng.choice(site.mobile_nets),
                personal=f"{local.replace('.', rng.choice(('', '.', '_')))}"
                         f"{rng.randint(1, 99) if rng.random() < 0.5 else ''}"
                         f"@{rng.choice(FREEMAIL)}",
            )
            self.accounts.append(acct)
            self.by_address[acct.address] = i
        self._partners()
        self._contacts()
        self._lists()

    def _partners(self) -> None:
        rng = self.rng
        taken: set[str] = set()
        for kind, n in PARTNER_POOLS.items():
            ids = []
            for _ in range(n):
                while True:
                    a, b = rng.sample(ORG_WORDS, 2)
                    name = f"{a.title()}{b} {rng.choice(ORG_SUFFIX).title()}"
                    dom = f"{a}{b}{'-' + name.split()[-1].lower() if rng.random() < 0.3 else ''}." \
                          f"{rng.choice(ORG_TLDS)}"
                    if dom not in taken:
                        break
                taken.add(dom)
                people = tuple(f"{rng.choice(FIRST)} {rng.choice(LAST)}"
                               for _ in range(rng.randint(2, 8)))
                ids.append(len(self.partners))
                self.partners.append(PartnerOrg(name, dom, kind, people))
            self.partner_pool[kind] = ids

    def partner_address(self, org: PartnerOrg, person: int) -> str:
        first, last = org.people[person % len(org.people)].lower().split(" ", 1)
        if hash_bit(org.domain):  # each company has one address format
            return f"{first}.{last}@{org.domain}"
        return f"{first[0]}{last}@{org.domain}"

    def _contacts(self) -> None:
        rng = self.rng
        by_team: dict[int, list[int]] = {}
        for a in self.accounts:
            by_team.setdefault(a.team, []).append(a.index)
        # Hubs: assistants, IT, HR and managers are written to by many.
        hubs = [a.index for a in self.accounts
                if a.role.name in ("assistant", "it", "hr", "eng_manager", "executive")]
        n = len(self.accounts)
        for a in self.accounts:
            mates = [m for m in by_team[a.team] if m != a.index]
            contacts = mates * 4
            contacts += rng.sample(hubs, min(len(hubs), rng.randint(1, 4))) * 2
            contacts += [rng.randrange(n) for _ in range(rng.randint(4, 14))]
            a.contacts = [c for c in contacts if c != a.index]
            pool = self.partner_pool[a.role.partners]
            k = max(1, round(len(pool) * rng.uniform(0.05, 0.2))) if a.role.external > 0.2 else \
                rng.randint(1, 3)
            a.partner_orgs = rng.sample(pool, min(k, len(pool)))
            for org_i in a.partner_orgs:
                org = self.partners[org_i]
                n = min(len(org.people), rng.randint(1, 3))
                for p in rng.sample(range(len(org.people)), n):
                    a.externals.append(self.partner_address(org, p))

    def _lists(self) -> None:
        d = self.cfg.domain
        everyone = tuple(a.index for a in self.accounts)
        self.lists.append(MailingList(f"all@{d}", "All staff", everyone))
        groups: dict[str, list[int]] = {}
        for a in self.accounts:
            groups.setdefault(a.role.group, []).append(a.index)
        for g, members in groups.items():
            self.lists.append(MailingList(f"{g}@{d}", g.title(), tuple(members)))
        for s in SITES:
            self.lists.append(MailingList(f"{s.key}-office@{d}", f"{s.city} office",
                                          tuple(a.index for a in self.accounts if a.site is s)))
        teams: dict[int, list[int]] = {}
        for a in self.accounts:
            teams.setdefault(a.team, []).append(a.index)
        for team, members in teams.items():
            if len(members) >= 3:
                group = self.accounts[members[0]].role.group
                self.lists.append(MailingList(f"{group}-team{team}@{d}", f"{group.title()} "
                                              f"team {team}", tuple(members)))
        self.list_of_group = {ml.address.split("@")[0]: ml for ml in self.lists}

    # time helpers

    def local_epoch(self, acct: Account | Site, day: int, hour: float) -> float:
        tz = _zone(acct.site.tz if isinstance(acct, Account) else acct.tz)
        d = self.cfg.start + timedelta(days=day)
        dt = datetime(d.year, d.month, d.day, tzinfo=tz) + timedelta(hours=hour)
        return dt.timestamp()

    def local_day_hour(self, acct: Account, t: float) -> tuple[int, float, int]:
        """(day index, local hour, weekday) of epoch t in the account's zone."""
        dt = datetime.fromtimestamp(t, self.zone_at(acct, t))
        day = (dt.date() - self.cfg.start).days
        return day, dt.hour + dt.minute / 60, dt.weekday()

    def zone_at(self, acct: Account, t: float) -> ZoneInfo:
        trip = self.travel.get(acct.index)
        if trip and trip[0] <= t < trip[1]:
            return _zone(trip[2].tz)
        return acct.zone

    def working_time(self, acct: Account, t: float) -> float:
        """t if the person is at work then, else a moment in their next working hours."""
        day, hour, wd = self.local_day_hour(acct, t)
        if wd < 5 and acct.start_hour <= hour < acct.end_hour:
            return t
        rng = self.rng
        if wd < 5 and hour < acct.start_hour:
            return self.local_epoch(acct, day, acct.start_hour + rng.uniform(0, 1.5))
        nxt = day + 1
        while (self.cfg.start + timedelta(days=nxt)).weekday() >= 5:
            nxt += 1
        return self.local_epoch(acct, nxt, acct.start_hour + rng.uniform(0, 2.0))

    def is_away(self, i: int, t: float) -> bool:
        return any(a <= t < b for a, b in self.away.get(i, ()))

    def active(self, i: int, t: float) -> bool:
        a = self.accounts[i]
        return t >= self.t0 + a.joins_day * 86400 and not self.is_away(i, t)

    # clients

    def client(self, acct: Account, t: float, day: int, hour: float,
               wd: int) -> tuple[str, str, Agent]:
        """(ip, helo, agent) of the device a person sends from at that moment."""
        rng = self.rng
        trip = self.travel.get(acct.index)
        phone = self.new_phone.get(acct.index)
        phone_agent = acct.phone
        mobile_net = acct.mobile_net
        if phone and t >= phone[0]:
            phone_agent, mobile_net = phone[1], phone[2]
        working = wd < 5 and acct.start_hour <= hour < acct.end_hour
        share = 0.12 if working else 0.55
        if phone and phone[0] <= t < phone[0] + 7 * 86400:
            # A new phone gets used: everything on the first day, half the first week.
            share = 1.0 if t < phone[0] + 86400 else 0.5
        use_phone = phone_agent is not None and rng.random() < share
        if use_phone:
            assert phone_agent is not None
            if trip and trip[0] <= t < trip[1]:
                ip = f"{rng.choice(HOTEL_NETS[trip[2].key])}.{rng.randint(1, 254)}." \
                     f"{rng.randint(2, 254)}"
            else:
                ip = f"{mobile_net}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            return ip, f"[{ip}]", phone_agent
        if trip and trip[0] <= t < trip[1]:
            ip = f"{trip[2].home_nets[0].split('.')[0]}.{hash_octet(acct.address, 'hotel')}." \
                 f"{hash_octet(acct.address, 'room')}.{rng.randint(2, 254)}"
            return ip, f"[{ip}]", acct.desktop
        if working and wd in acct.office_days:
            ip = f"{acct.site.office_net}.{acct.team % 250}.{hash_octet(acct.address, 'desk')}"
            return ip, f"WS-{acct.site.key.upper()}-{acct.index:04d}", acct.desktop
        net = acct.home_net_later if day >= acct.renumber_day else acct.home_net
        ip = f"{net}.{hash_octet(acct.address, net) or 7}"
        return ip, f"LAPTOP-{hash_hex(acct.address)[:7].upper()}", acct.desktop

    # everyday mail

    def day_times(self, acct: Account, day: int, n: int, weekend: bool) -> list[float]:
        rng = self.rng
        out = []
        for _ in range(n):
            if weekend or rng.random() < acct.role.evening:
                hour = rng.uniform(18.5, 23.5) if rng.random() < 0.85 else rng.uniform(6.0, 8.0)
                if weekend and rng.random() < 0.6:
                    hour = rng.uniform(9.0, 18.0)
            else:
                hour = rng.uniform(acct.start_hour, acct.end_hour)
                if 12.0 <= hour < 13.0 and rng.random() < 0.5:  # lunch
                    hour = rng.uniform(acct.start_hour, acct.end_hour)
            out.append(self.local_epoch(acct, day, hour))
        return out

    def pick_internal(self, acct: Account, t: float, n: int) -> list[str]:
        rng, out = self.rng, list[str]()
        for _ in range(n * 3):
            if len(out) >= n:
                break
            if rng.random() < acct.role.new_internal or not acct.contacts:
                c = rng.randrange(len(self.accounts))
                acct.contacts.append(c)
            else:
                c = rng.choice(acct.contacts)
            other = self.accounts[c]
            if c != acct.index and t >= self.t0 + other.joins_day * 86400 \
                    and other.address not in out:
                out.append(other.address)
        return out

    def pick_external(self, acct: Account) -> str:
        rng = self.rng
        if acct.externals and rng.random() >= acct.role.new_external:
            # Zipf-like: the first partners written to are written to most.
            k = min(len(acct.externals) - 1, int(rng.paretovariate(1.2)) - 1)
            return acct.externals[k]
        if acct.role.name == "hr" and rng.random() < 0.6:  # candidates write from free-mail
            addr = f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}" \
                   f"{rng.randint(1, 999)}@{rng.choice(FREEMAIL)}"
        else:
            org_i = rng.choice(self.partner_pool[acct.role.partners])
            if org_i not in acct.partner_orgs:
                acct.partner_orgs.append(org_i)
            org = self.partners[org_i]
            addr = self.partner_address(org, rng.randrange(len(org.people)))
        if addr not in acct.externals:
            acct.externals.append(addr)
        return addr

    def add(self, ev: _Event) -> _Event:
        ev.idx = len(self.events)
        if ev.thread < 0:
            ev.thread = ev.idx
        self.events.append(ev)
        return ev

    def new_message(self, acct: Account, t: float, kind: str = "new") -> _Event | None:
        rng = self.rng
        day, hour, wd = self.local_day_hour(acct, t)
        ip, helo, agent = self.client(acct, t, day, hour, wd)
        role = acct.role
        cc: list[str] = []
        external = rng.random() < role.external
        if external:
            to = [self.pick_external(acct)]
            if rng.random() < 0.2:
                to.append(self.pick_external(acct))
            if rng.random() < 0.25:
                cc = self.pick_internal(acct, t, 1)
            # Half the outside mail answers a thread the partner started (inbound, unseen).
            kind = "reply_external" if rng.random() < 0.5 else "new_external"
        else:
            n = 1 if rng.random() < 0.6 else min(8, 1 + int(rng.paretovariate(1.6)))
            to = self.pick_internal(acct, t, n)
            if rng.random() < 0.2:
                cc = self.pick_internal(acct, t, rng.randint(1, 3))
            if not to:
                return None
        attach = 0
        if rng.random() < role.attach:
            attach = 1 if rng.random() < 0.8 else rng.randint(2, 3)
        return self.add(_Event(t=t, idx=0, sender=acct.index, to=tuple(to),
                               cc=tuple(c for c in cc if c not in to), kind=kind,
                               topic=role.topics, ip=ip, helo=helo, agent=agent, attach=attach))

    def reply(self, parent: _Event, replier: int, t: float, all_: bool) -> _Event:
        acct = self.accounts[replier]
        day, hour, wd = self.local_day_hour(acct, t)
        ip, helo, agent = self.client(acct, t, day, hour, wd)
        sender_addr = self.sender_address(parent)
        to = [sender_addr]
        cc: list[str] = []
        if all_:
            cc = [a for a in parent.to + parent.cc
                  if a != acct.address and a != sender_addr][:10]
        attach = 1 if self.rng.random() < acct.role.attach * 0.4 else 0
        return self.add(_Event(t=t, idx=0, sender=replier, to=tuple(to), cc=tuple(cc),
                               kind="reply", topic=parent.topic, thread=parent.thread,
                               parent=parent.idx, ip=ip, helo=helo, agent=agent, attach=attach))

    def sender_address(self, ev: _Event) -> str:
        return self.accounts[ev.sender].address

    def everyday(self) -> None:
        rng, cfg = self.rng, self.cfg
        for acct in self.accounts:
            for day in range(max(0, acct.joins_day), cfg.days):
                d = cfg.start + timedelta(days=day)
                weekend = d.weekday() >= 5
                lam = acct.rate * (acct.role.weekend if weekend else 1.0)
                lam *= math.exp(rng.gauss(0.0, 0.35))  # busy and quiet days
                if day - acct.joins_day < 10 and acct.joins_day > 0:
                    lam *= 0.5 + 0.05 * (day - acct.joins_day)  # a new hire builds up
                for t in sorted(self.day_times(acct, day, _poisson(rng, lam), weekend)):
                    if not self.active(acct.index, t):
                        continue
                    if rng.random() < 0.02 and acct.role.name != "support":
                        self.list_post(acct, t)
                    elif rng.random() < 0.002:
                        self.to_personal(acct, t)
                    else:
                        self.new_message(acct, t)

    def list_post(self, acct: Account, t: float) -> None:
        rng = self.rng
        # Mostly the team's list; now and then the department's or the whole office's.
        x = rng.random()
        team = self.list_of_group.get(f"{acct.role.group}-team{acct.team}")
        if team is not None and x < 0.7:
            ml = team
        elif x < 0.92:
            ml = self.list_of_group[acct.role.group]
        else:
            ml = self.list_of_group[f"{acct.site.key}-office"]
        self.post(acct, t, ml, "list", acct.role.topics)

    def post(self, acct: Account, t: float, ml: MailingList, kind: str, topic: str,
             attach: int = 0) -> _Event:
        day, hour, wd = self.local_day_hour(acct, t)
        ip, helo, agent = self.client(acct, t, day, hour, wd)
        members = tuple(self.accounts[m].address for m in ml.members if self.active(m, t)
                        or self.is_away(m, t))
        # The mail server expands the list as an alias (Postfix virtual_alias_maps, an
        # Exchange distribution group): no List-Id, the author's envelope, every member an
        # envelope recipient.
        return self.add(_Event(t=t, idx=0, sender=acct.index, to=(ml.address,), expand=members,
                               kind=kind, topic=topic, ip=ip, helo=helo, agent=agent,
                               attach=attach))

    def to_personal(self, acct: Account, t: float) -> None:
        day, hour, wd = self.local_day_hour(acct, t)
        ip, helo, agent = self.client(acct, t, day, hour, wd)
        self.add(_Event(t=t, idx=0, sender=acct.index, to=(acct.personal,), kind="to_personal",
                        topic=acct.role.topics, ip=ip, helo=helo, agent=agent, attach=1))

    def replies(self) -> None:
        """Answers to internal mail, and answers to those, while people keep answering."""
        rng = self.rng
        queue = list(range(len(self.events)))
        depth: dict[int, int] = {}
        while queue:
            nxt: list[int] = []
            for i in queue:
                ev = self.events[i]
                if ev.kind not in ("new", "reply", "list", "new_hire", "all_hands", "quarter_end"):
                    continue
                d = depth.get(ev.thread, 0)
                if d >= 8:
                    continue
                listed = bool(ev.expand)
                candidates = ev.to + ev.cc if not listed else tuple(
                    rng.sample(ev.expand, min(len(ev.expand), 3)))
                p = 0.3 if not listed else 0.05
                if ev.kind == "all_hands":
                    p = 0.01
                    candidates = ev.expand
                for addr in candidates:
                    r = self.by_address.get(addr)
                    if r is None or r == ev.sender:
                        continue
                    # Chatty people answer more: the tail of the volumes survives replies.
                    who = self.accounts[r]
                    chat = min(2.5, max(0.3, who.rate / (who.role.per_day * self.cfg.volume)))
                    if rng.random() >= p * (0.75 ** d) * math.sqrt(chat):
                        continue
                    t = ev.t + 60 * rng.lognormvariate(3.4, 1.1)  # median half an hour
                    t = self.working_time(self.accounts[r], t)
                    if t >= self.t_end or not self.active(r, t):
                        continue
                    rep = self.reply(ev, r, t, all_=bool(ev.cc) and rng.random() < 0.3)
                    depth[ev.thread] = d + 1
                    nxt.append(rep.idx)
            queue = nxt

    # legitimate bursts

    def bursts_(self) -> None:
        rng, cfg = self.rng, self.cfg
        by_role: dict[str, list[Account]] = {}
        for a in self.accounts:
            by_role.setdefault(a.role.name, []).append(a)
        span = cfg.days
        # New hires: two or three people join during the run, one in the attack window.
        hires = rng.sample([a for a in self.accounts if a.role.name in
                            ("engineer", "sales", "support", "product", "marketing")], 3)
        for k, a in enumerate(hires):
            join = max(3, int(span * (0.25, 0.5, 0.75)[k]))
            while (cfg.start + timedelta(days=join)).weekday() >= 5:
                join += 1
            if join >= span:
                continue
            a.joins_day = join
            a.contacts = [c for c in a.contacts if self.accounts[c].team == a.team]
        self.hires = [a for a in hires if a.joins_day > 0]
        # Who sends the planned bursts is at work when they are sent.
        self.clerks = [a.index for a in self.accounts if a.role.name == "finance"][:3]
        self.ceo = next(a for a in self.accounts if a.role.name == "executive")
        self.editor = next(a for a in self.accounts if a.role.name == "communications")
        on_duty = set(self.clerks) | {self.ceo.index, self.editor.index}
        # Vacations: a week off for about 6 % of people, with an auto-reply.
        for a in rng.sample(self.accounts, max(3, len(self.accounts) // 16)):
            if a.joins_day or a.index in on_duty:
                continue
            first = rng.randint(2, span - 8)
            self.away[a.index] = [(self.local_epoch(a, first, 18.0),
                                   self.local_epoch(a, first + rng.randint(5, 9), 7.0))]
        # A week abroad, and a new phone.
        travellers = [a for a in self.accounts if a.role.name in ("sales", "executive", "product")
                      and a.index not in self.away and not a.joins_day]
        for a in rng.sample(travellers, min(3, len(travellers))):
            first = rng.randint(3, span - 8)
            dest = rng.choice([s for s in SITES if s is not a.site])
            self.travel[a.index] = (self.local_epoch(a, first, 6.0),
                                    self.local_epoch(a, first + 6, 20.0), dest)
        phones = [a for a in self.accounts if a.index not in self.away and not a.joins_day
                  and a.index not in self.travel and a.rate >= a.role.per_day]
        for a in rng.sample(phones, min(4, len(phones))):
            day = rng.randint(3, span - 3)
            if a.phone is None:
                a.phone = PHONE_AGENTS[0]
            new = rng.choice([p for p in PHONE_AGENTS if p != a.phone])
            carrier = rng.choice([n for n in a.site.mobile_nets if n != a.mobile_net]
                                 or list(a.site.mobile_nets))
            self.new_phone[a.index] = (self.local_epoch(a, day, 9.0), new, carrier)

    def planned_bursts(self) -> None:
        """The one-off and periodic bursts, after everyday mail exists (they add to it)."""
        rng, cfg, span = self.rng, self.cfg, self.cfg.days
        finance = [a for a in self.accounts if a.role.name == "finance"]
        everyone = self.list_of_group["all"]
        ceo = self.ceo
        for frac in (0.3, 0.7):
            day = int(span * frac)
            while (cfg.start + timedelta(days=day)).weekday() >= 5:
                day += 1
            t = self.local_epoch(ceo, day, 9.0 + rng.random())
            ev = self.post(ceo, t, everyone, "all_hands", "allhands", attach=1)
            self.bursts.append(Burst("all_hands", (ceo.address,), t, t + 3600,
                                     f"{ceo.name} writes to {everyone.address} "
                                     f"({len(ev.expand)} people)"))
        # Weekly newsletter: one copy per employee from a bulk tool, Thursdays at 10:00.
        editor = self.editor
        for day in range(span):
            if (cfg.start + timedelta(days=day)).weekday() != 3:
                continue
            t = self.local_epoch(editor, day, 10.0)
            sent = 0
            for m in everyone.members:
                if not self.active(m, t) and not self.is_away(m, t):
                    continue
                tt = t + sent * rng.uniform(0.8, 2.5)
                sent += 1
                self.add(_Event(t=tt, idx=0, sender=editor.index,
                                to=(self.accounts[m].address,), kind="newsletter",
                                topic="newsletter", thread=-1, ip="10.0.5.20",
                                helo=f"comms-tool.{cfg.domain}", agent=NEWSLETTER_AGENT,
                                extra=(("Precedence", "bulk"), (
                                    "List-Unsubscribe",
                                    f"<https://intranet.{cfg.domain}/newsletter/prefs>"))))
            self.bursts.append(Burst("newsletter", (editor.address,), t, t + sent * 2.5,
                                     f"weekly newsletter, {sent} copies"))
        # Quarter end: finance invoices every customer on the last working days of a quarter.
        for day in range(span):
            d = cfg.start + timedelta(days=day)
            nxt = d + timedelta(days=1)
            if nxt.month not in (1, 4, 7, 10) or nxt.day != 1:
                continue
            runs = []
            for back in range(4):
                dd = day - back
                if dd >= 0 and (cfg.start + timedelta(days=dd)).weekday() < 5:
                    runs.append(dd)
            runs = runs[:2]
            clerks = [a for a in finance if a.index in self.clerks]
            customers = [self.partners[i] for i in self.partner_pool["customer"]]
            for clerk in clerks:
                batch = customers[:]
                rng.shuffle(batch)
                first_t = None
                for k, org in enumerate(batch[: 60 + rng.randint(0, 40)]):
                    dd = runs[k % len(runs)]
                    t = self.local_epoch(clerk, dd, rng.uniform(clerk.start_hour, clerk.end_hour))
                    first_t = t if first_t is None else min(first_t, t)
                    day_, hour, wd = self.local_day_hour(clerk, t)
                    ip, helo, agent = self.client(clerk, t, day_, hour, wd)
                    addr = f"accounts.payable@{org.domain}" if rng.random() < 0.6 else \
                        self.partner_address(org, 0)
                    if addr not in clerk.externals:
                        clerk.externals.append(addr)
                    self.add(_Event(t=t, idx=0, sender=clerk.index, to=(addr,),
                                    kind="quarter_end", topic="invoice", ip=ip, helo=helo,
                                    agent=agent, attach=1))
                if first_t is not None:
                    self.bursts.append(Burst("quarter_end", (clerk.address,), first_t,
                                             first_t + 2 * 86400,
                                             f"quarter-end invoices to customers ({d})"))
        # New hires' first week: hello to the team and the department, questions to IT/HR.
        it = [a for a in self.accounts if a.role.name in ("it", "hr")]
        for a in self.hires:
            t = self.local_epoch(a, a.joins_day, a.start_hour + 1.5)
            team = [m.address for m in self.accounts if m.team == a.team and m is not a]
            dept = self.list_of_group[a.role.group]
            self.post(a, t, dept, "new_hire", "intro")
            for k in range(min(25, 6 + len(team))):
                tt = self.local_epoch(a, a.joins_day + k // 6,
                                      rng.uniform(a.start_hour, a.end_hour))
                who = team[k % len(team)] if team and k < len(team) else \
                    rng.choice(it).address if rng.random() < 0.5 else \
                    self.accounts[rng.randrange(len(self.accounts))].address
                if who == a.address:
                    continue
                day, hour, wd = self.local_day_hour(a, tt)
                ip, helo, agent = self.client(a, tt, day, hour, wd)
                self.add(_Event(t=tt, idx=0, sender=a.index, to=(who,), kind="new_hire",
                                topic="intro", ip=ip, helo=helo, agent=agent))
            self.bursts.append(Burst("new_hire", (a.address,), t, t + 7 * 86400,
                                     f"{a.name} joins {a.role.group}"))
        for i, spans in self.away.items():
            a = self.accounts[i]
            for s, e in spans:
                self.bursts.append(Burst("vacation", (a.address,), s, e,
                                         f"{a.name} on vacation with an auto-reply"))
        for i, (s, e, dest) in self.travel.items():
            a = self.accounts[i]
            self.bursts.append(Burst("travel", (a.address,), s, e,
                                     f"{a.name} travels from {a.site.city} to {dest.city}"))
        for i, (s, agent, net) in self.new_phone.items():
            a = self.accounts[i]
            for k in range(2):  # trying it out
                self.new_message(a, s + 3600 * (1 + 2 * k))
            self.bursts.append(Burst("new_phone", (a.address,), s, self.t_end,
                                     f"{a.name} switches to a new phone ({agent.value})"))

    def vacation_replies(self) -> None:
        """Sieve's vacation: once per sender per absence, to mail naming the person in
        To/Cc (not list mail), from the mail server with a null envelope sender."""
        rng = self.rng
        answered: set[tuple[int, str]] = set()
        received: list[tuple[float, int, str, int]] = []
        for ev in self.events:
            if ev.expand or ev.kind == "newsletter":
                continue
            for addr in ev.to + ev.cc:
                r = self.by_address.get(addr)
                if r is not None and self.is_away(r, ev.t):
                    received.append((ev.t, r, self.sender_address(ev), ev.idx))
        for i, spans in self.away.items():  # outside mail to the absent, unseen but answered
            for s, e in spans:
                a = self.accounts[i]
                for _ in range(_poisson(rng, (e - s) / 86400 * 2.5)):
                    if not a.externals:
                        break
                    received.append((rng.uniform(s, e), i, rng.choice(a.externals), -1))
        received.sort()
        for t, r, to, parent in received:
            if (r, to) in answered:
                continue
            answered.add((r, to))
            self.add(_Event(t=t + rng.uniform(1, 20), idx=0, sender=r, to=(to,),
                            kind="vacation", topic="vacation", parent=parent,
                            thread=self.events[parent].thread if parent >= 0 else -1,
                            ip=MAIL_SERVER_IP, helo=f"{MAIL_SERVER_HELO}.{self.cfg.domain}",
                            agent=SERVER_AGENT, null_sender=True, authenticated=False,
                            extra=(("Auto-Submitted", "auto-replied (vacation)"),
                                   ("Precedence", "bulk"))))

    # takeovers

    def inject(self) -> None:
        rng, cfg = self.rng, self.cfg
        lo = self.t0 + cfg.attack_from * cfg.days * 86400
        hi = self.t_end - 5 * 86400  # the slowest scenario (two working days) fits
        # Victims are people with a plain history: the legitimate bursts stay apart from the
        # takeovers, so a flag on either is attributed without doubt.
        busy = {a.index for a in self.hires} | set(self.away) | set(self.travel) | \
            set(self.new_phone) | set(self.clerks) | \
            {a.index for a in self.accounts if a.role.name in ("communications", "executive")}

        def victim(roles: Sequence[str] | None = None) -> Account:
            pool = [a for a in self.accounts if a.index not in busy and a.index not in
                    self.compromised and (roles is None or a.role.name in roles)]
            if not pool:  # a small organisation: anyone of the role not yet taken
                pool = [a for a in self.accounts if a.index not in self.compromised
                        and not a.joins_day and (roles is None or a.role.name in roles)]
            a = rng.choice(pool)
            self.compromised.add(a.index)
            return a

        slots = sorted(rng.uniform(lo, hi) for _ in cfg.scenarios)
        order = list(cfg.scenarios)
        rng.shuffle(order)
        for name, when in zip(order, slots):
            getattr(self, f"_s_{name}")(victim, when)

    def _attacker(self) -> tuple[str, Agent, str]:
        rng = self.rng
        net = rng.choice(ATTACKER_NETS)
        ip = f"{net}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        helo = rng.choice(("User", "WIN-" + hash_hex(ip)[:8].upper(), f"[{ip}]",
                           f"vps{rng.randint(100, 9999)}.hosting.test"))
        return ip, rng.choice(ATTACKER_AGENTS), helo

    def _at_local(self, acct: Account, t: float, h0: float, h1: float,
                  workday: bool = False) -> float:
        """The first moment from t on between local hours h0 and h1 (on a working day)."""
        day, _, _ = self.local_day_hour(acct, t)
        hour = self.rng.uniform(h0, h1)
        while (workday and (self.cfg.start + timedelta(days=day)).weekday() >= 5) \
                or self.local_epoch(acct, day, hour) < t:
            day += 1
        return self.local_epoch(acct, day, hour)

    def _mal(self, acct: Account, t: float, to: Sequence[str], label: str, kind: str,
             ip: str, helo: str, agent: Agent, **kw: object) -> _Event | None:
        if t >= self.t_end:
            return None
        return self.add(_Event(t=t, idx=0, sender=acct.index, to=tuple(to), kind=kind,
                               topic=kind, label=label, ip=ip, helo=helo, agent=agent,
                               **kw))  # type: ignore[arg-type]

    def _scenario(self, name: str, accts: Sequence[Account], start: float, ip: str,
                  what: str) -> None:
        self.scenarios.append(Scenario(name, tuple(a.address for a in accts), start, ip, what))

    def colleagues(self, acct: Account, n: int, known_share: float) -> list[str]:
        rng = self.rng
        known = list(dict.fromkeys(self.accounts[c].address for c in acct.contacts
                                   if c != acct.index))
        others = [a.address for a in self.accounts if a.index != acct.index]
        out: list[str] = []
        while len(out) < n:
            src = known if known and rng.random() < known_share else others
            c = rng.choice(src)
            if c not in out:
                out.append(c)
        return out

    def _s_spam_burst(self, victim, when: float) -> None:  # type: ignore[no-untyped-def]
        a = victim(("engineer", "product", "marketing", "support", "sales"))
        ip, agent, helo = self._attacker()
        t = self._at_local(a, when, 0.0, 5.0)
        start = t
        for k in range(rng_int(self.rng, 250, 400)):
            to = [random_outsider(self.rng) for _ in range(self.rng.randint(1, 5))]
            self._mal(a, t, to, "spam_burst", "spam", ip, helo, agent)
            t += self.rng.expovariate(1 / 9.0)
        self._scenario("spam_burst", [a], start, ip, "spam to outsiders, ~400/hour")

    def _s_lateral_phishing(self, victim, when: float) -> None:  # type: ignore[no-untyped-def]
        a = victim()
        # A residential proxy near the victim: a new network, but not a foreign one.
        ip = f"{self.rng.choice(a.site.home_nets)}.{self.rng.randint(0, 255)}." \
             f"{self.rng.randint(2, 254)}"
        agent, helo = Agent("X-Mailer", "Microsoft Outlook Web App", "outlook", True), f"[{ip}]"
        first = None
        day0 = self._at_local(a, when, a.start_hour, a.start_hour + 0.5, True)
        for day_off in range(2):
            t = self._at_local(a, day0 + day_off * 86400, a.start_hour, a.start_hour + 0.5, True)
            end = t + 8 * 3600
            while t < end:
                to = self.colleagues(a, self.rng.randint(1, 3), 0.3)
                sent = self._mal(a, t, to, "lateral_phishing", "lateral", ip, helo, agent)
                if sent is not None and first is None:
                    first = t
                t += self.rng.uniform(900, 2400)  # two to four an hour
        self._scenario("lateral_phishing", [a], first or when, ip,
                       "a shared-document lure to a few colleagues at a time, 2-4 an hour")

    def _s_payment_fraud(self, victim, when: float) -> None:  # type: ignore[no-untyped-def]
        a = victim(("finance",))
        ip, agent, helo = self._attacker()
        agent = Agent("X-Mailer", "Microsoft Outlook Web App", "outlook", True)
        base = self.cfg.domain.split(".")[0]
        free = self.rng.choice(("outlook.com", "gmail.com", "proton.me"))
        divert = f"{a.first.lower()}.{base}.accounts@{free}"
        t = self._at_local(a, when, a.start_hour + 1, a.start_hour + 3, True)
        start = t
        customers = [x for x in a.externals if "@" in x][:12] or [random_outsider(self.rng)]
        for k in range(8):
            to = customers[k % len(customers)]
            self._mal(a, t, (to,), "payment_fraud", "payment_fraud", ip, helo, agent,
                      attach=1 if k % 2 == 0 else 0, extra=(("Reply-To", divert),))
            t += self.rng.uniform(600, 3600)
        self._scenario("payment_fraud", [a], start, ip,
                       f"new bank details to customers, Reply-To {divert}")

    def _s_company_phish(self, victim, when: float) -> None:  # type: ignore[no-untyped-def]
        a = victim(tuple(r.name for r in ROLES if r.name != "it"))
        ip, agent, helo = self._attacker()
        t = self._at_local(a, when, 6.0, 7.5, True)
        start = t
        everyone = [x.address for x in self.accounts if x.index != a.index]
        self.rng.shuffle(everyone)
        for k in range(0, len(everyone), 50):
            self._mal(a, t, (a.address,), "company_phish", "company_phish", ip, helo, agent,
                      bcc=tuple(everyone[k:k + 50]))
            t += self.rng.uniform(60, 240)
        self._scenario("company_phish", [a], start, ip,
                       "password-expiry lure to every employee in Bcc batches of 50")

    def _s_night_exfiltration(self, victim, when: float) -> None:  # type: ignore[no-untyped-def]
        a = victim(("finance", "hr", "legal", "sales", "product", "eng_manager"))
        ip, agent, helo = self._attacker()
        drops = [f"{hash_hex(a.address)[:6]}.files@{self.rng.choice(FREEMAIL)}"]
        drops.append(f"backup{self.rng.randint(10, 99)}@{self.rng.choice(FREEMAIL)}")
        t = self._at_local(a, when, 1.0, 2.0)
        start = t
        for k in range(self.rng.randint(30, 60)):
            self._mal(a, t, (drops[k % 3 == 2],), "night_exfiltration", "exfiltration", ip,
                      helo, agent, attach=self.rng.randint(1, 3))
            t += self.rng.uniform(60, 240)
        self._scenario("night_exfiltration", [a], start, ip, f"attachments to {', '.join(drops)}")

    def _s_auto_forward(self, victim, when: float) -> None:  # type: ignore[no-untyped-def]
        a = victim()
        self.forwarding = (a.index, when, f"{a.first.lower()}{self.rng.randint(100, 999)}"
                                          f"@{self.rng.choice(FREEMAIL)}")
        self._scenario("auto_forward", [a], when, MAIL_SERVER_IP,
                       f"everything the account receives forwarded to {self.forwarding[2]}")

    def forwards(self) -> None:
        fwd = getattr(self, "forwarding", None)
        if fwd is None:
            return
        i, since, target = fwd
        a = self.accounts[i]
        triggers = [(ev.t, ev.idx) for ev in self.events if ev.t >= since and ev.label is None
                    and (a.address in ev.to or a.address in ev.cc or a.address in ev.expand
                         or a.address in ev.bcc)]
        for _ in range(_poisson(self.rng, (self.t_end - since) / 86400 * 6)):
            triggers.append((self.rng.uniform(since, self.t_end), -1))  # from outside
        triggers.sort()
        first = None
        for t, parent in triggers:
            # As Exchange / Microsoft 365 inbox rules write it: a new message from the
            # account, "FW:", the original quoted, the loop-prevention header naming it.
            ev = self._mal(a, t + self.rng.uniform(2, 15), (target,), "auto_forward", "forward",
                           MAIL_SERVER_IP, f"{MAIL_SERVER_HELO}.{self.cfg.domain}", SERVER_AGENT,
                           parent=parent, thread=self.events[parent].thread if parent >= 0 else -1,
                           extra=(("X-MS-Exchange-Inbox-Rules-Loop", a.address),))
            if ev is not None and first is None:
                first = ev.t
        if first is not None:
            self.scenarios[:] = [s if s.name != "auto_forward" else
                                 Scenario(s.name, s.accounts, first, s.attacker_ip, s.description)
                                 for s in self.scenarios]

    def _s_new_network_content(self, victim, when: float) -> None:  # type: ignore[no-untyped-def]
        a = victim()
        ip, agent, helo = self._attacker()
        t = self._at_local(a, when, 10.0, 14.0, True)
        start = t
        for k in range(self.rng.randint(20, 30)):
            if a.externals and self.rng.random() < 0.4:
                to = [self.rng.choice(a.externals)]
            else:
                to = self.colleagues(a, self.rng.randint(1, 2), 0.8)
            self._mal(a, t, to, "new_network_content", "esign", ip, helo, agent)
            t += self.rng.uniform(200, 700)
        self._scenario("new_network_content", [a], start, ip,
                       "new network and client; e-signature lures to the account's contacts")

    def _s_multi_takeover(self, victim, when: float) -> None:  # type: ignore[no-untyped-def]
        accts = [victim() for _ in range(4)]
        net = self.rng.choice(ATTACKER_NETS)
        agent = self.rng.choice(ATTACKER_AGENTS)
        start = None
        for a in accts:
            ip = f"{net}.{self.rng.randint(0, 255)}.{self.rng.randint(2, 254)}"
            t = self._at_local(accts[0], when, 9.0, 9.5, True) + self.rng.uniform(0, 1800)
            start = t if start is None else min(start, t)
            for k in range(self.rng.randint(12, 20)):
                if a.externals and self.rng.random() < 0.3:
                    to = [self.rng.choice(a.externals)]
                else:
                    to = self.colleagues(a, self.rng.randint(2, 5), 0.5)
                self._mal(a, t, to, "multi_takeover", "hr_lure", ip, f"[{ip}]", agent)
                t += self.rng.uniform(300, 900)
        self._scenario("multi_takeover", accts, start or when, f"{net}.0.0/16",
                       f"{len(accts)} accounts, one payroll lure")

    def _s_thread_hijack(self, victim, when: float) -> None:  # type: ignore[no-untyped-def]
        a = victim()
        ip, agent, helo = self._attacker()
        t0 = self._at_local(a, when, 9.0, 11.0, True)
        recent = sorted((ev for ev in self.events if ev.label is None and ev.t < t0
                         and ev.t > t0 - 21 * 86400 and not ev.expand
                         and ev.kind in ("new", "reply")
                         and (ev.sender == a.index or a.address in ev.to)),
                        key=lambda ev: (ev.t, ev.idx))
        threads = list({ev.thread: ev for ev in recent}.values())[-15:]
        t = t0
        for ev in threads:
            to = [x for x in (self.sender_address(ev),) + ev.to if x != a.address][:3]
            if not to:
                continue
            self._mal(a, t, to, "thread_hijack", "hijack", ip, helo, agent,
                      thread=ev.thread, parent=ev.idx, attach=1)
            t += self.rng.uniform(300, 1500)
        if t == t0:  # nobody to answer: new messages to known colleagues instead
            for k in range(10):
                self._mal(a, t, self.colleagues(a, 1, 1.0), "thread_hijack", "hijack", ip, helo,
                          agent, attach=1)
                t += self.rng.uniform(300, 1500)
        self._scenario("thread_hijack", [a], t0, ip,
                       "answers in the account's recent threads with a payload attached")

    def plan(self) -> list[_Event]:
        self.build_org()
        self.bursts_()
        self.everyday()
        self.planned_bursts()
        self.replies()
        self.inject()
        self.vacation_replies()
        self.forwards()
        # A scenario starts with its first malicious message.
        first: dict[str, float] = {}
        for e in self.events:
            if e.label is not None and e.t < self.t_end:
                first[e.label] = min(first.get(e.label, e.t), e.t)
        self.scenarios = [dataclasses.replace(s, start=first.get(s.name, s.start))
                          for s in self.scenarios]
        self.scenarios.sort(key=lambda s: s.start)
        self.bursts.sort(key=lambda b: b.start)
        return sorted((e for e in self.events if self.t0 <= e.t < self.t_end),
                      key=lambda e: (e.t, e.idx))


def rng_int(rng: random.Random, lo: int, hi: int) -> int:
    return rng.randint(lo, hi)


def hash_hex(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def hash_octet(text: str, salt: str) -> int:
    return int(hash_hex(text + "/" + salt)[:4], 16) % 254 + 1


def hash_bit(text: str) -> bool:
    return int(hash_hex(text)[:2], 16) % 2 == 0


def random_outsider(rng: random.Random) -> str:
    user = f"{rng.choice(FIRST).lower()}{rng.choice(('', '.', '_'))}{rng.choice(LAST).lower()}"
    if rng.random() < 0.5:
        return f"{user}{rng.randint(1, 9999)}@{rng.choice(FREEMAIL)}"
    a, b = rng.sample(ORG_WORDS, 2)
    return f"{user}@{a}{b}.{rng.choice(ORG_TLDS)}"


# -- text -----------------------------------------------------------------------------------

PROJECTS = ("Atlas", "Borealis", "Cobalt", "Delta", "Ember", "Falcon", "Granite", "Helios",
            "Ion", "Juniper", "Kestrel", "Lumen", "Mosaic", "Nimbus", "Orion", "Pulsar")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
TIMES = ("9:30", "10:00", "11:00", "13:30", "14:00", "15:00", "16:30")
DOCS = ("the draft", "the spreadsheet", "the slides", "the contract", "the proposal",
        "the test plan", "the summary", "the minutes", "the forecast", "the checklist")

TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # (subjects, body sentences); {p} project, {d} weekday, {t} time, {n} number, {doc}, {c} org
    "eng": (("{p} build failing on main", "Design review: {p} storage layer",
             "Question about the {p} API", "{p} release {n}.{m} checklist",
             "On-call handover", "Flaky test in {p}", "Migration plan for {p}",
             "Code review for the {p} change", "Latency regression in {p}"),
            ("The nightly build of {p} failed again on the integration tests.",
             "I pushed a fix to the branch; could you take a look before {d}?",
             "The p99 latency went from {n} ms to {m} ms after the last deploy.",
             "Can we move the design review to {d} at {t}?",
             "I left a few comments on the pull request, mostly naming.",
             "The migration needs a maintenance window of about {n} minutes.",
             "Logs are in the usual place: https://grafana.{dom}/d/{p}-overview",
             "See the ticket for details: https://jira.{dom}/browse/{P}-{n}{m}",
             "I think we should roll back and investigate tomorrow.",
             "The new index cut the query time roughly in half.",
             "Let's pair on it after standup if you have time.",
             "Docs are updated: https://wiki.{dom}/eng/{p}/runbook")),
    "product": (("{p} roadmap for Q{q}", "Customer feedback on {p}", "{p} pricing question",
                 "Spec: {p} onboarding flow", "Notes from the {c} call", "{p} beta sign-ups"),
                ("The beta has {n}{m} sign-ups so far, ahead of plan.",
                 "{c} asked again about SSO support in {p}.",
                 "I updated the spec with the open questions from {d}.",
                 "Can engineering give a rough estimate by {d}?",
                 "The mock-ups are here: https://figma.com/file/{P}{n}{m}/onboarding",
                 "Let's keep the scope small for the first release.",
                 "Sales would like a one-pager for {c} before the renewal.")),
    "sales": (("Renewal: {c}", "Proposal for {c}", "Follow-up from our call",
               "{c} - pricing for {n}{m} seats", "Meeting on {d}?", "Quote Q-{n}{m}{q}",
               "Introduction: {c} and {org}"),
              ("Thanks for your time on the call {d}, it was good to hear about your plans.",
               "As promised, I attached the proposal with the volume discount we discussed.",
               "Could we set up a short demo for your team on {d} at {t}?",
               "The quote is valid until the end of the month.",
               "Let me know if your procurement team needs anything else from us.",
               "I have looped in our solutions engineer, who can answer the technical points.",
               "Our case study with a similar customer is at https://www.{dom}/customers",
               "Happy to adjust the payment terms if that helps on your side.")),
    "support": (("Re: Ticket #{n}{m}{q}: login problem", "Your request #{n}{m}{q} has been updated",
                 "Re: Export not working", "Re: Question about invoices",
                 "Re: Error {n}{m} when syncing", "Case {n}{m}{q}: next steps"),
                ("Thank you for contacting support.",
                 "I was able to reproduce the issue on our side and have escalated it.",
                 "Could you send us the time of the error and a screenshot?",
                 "The fix is rolling out today; please try again in an hour.",
                 "You can find the steps in our help centre: https://help.{dom}/articles/{n}{m}",
                 "Clearing the browser cache usually resolves this.",
                 "I will keep the ticket open until you confirm it works.",
                 "Sorry for the trouble, and thanks for your patience.")),
    "marketing": (("Campaign brief: {p} launch", "Webinar on {d}", "Draft blog post",
                   "Event budget", "Social posts for next week"),
                  ("The landing page is ready for review: https://www.{dom}/lp/{p}",
                   "We expect around {n}{m} registrations for the webinar.",
                   "The agency sent the second round of designs.",
                   "Can you approve the copy by {d}?",
                   "Budget for the trade show is in the attached sheet.")),
    "comms": (("Press enquiry from {c}", "Draft announcement", "Interview request",
               "Intranet story ideas"),
              ("A journalist asked for a comment on the {p} launch.",
               "Here is the draft; legal has seen the first version.",
               "Could you spare twenty minutes for an interview on {d}?",
               "The story goes on the intranet on {d}.")),
    "finance": (("Invoice {n}{m}{q} from {c}", "Month-end close", "Budget vs actual, {p}",
                 "Expense report approval", "PO {n}{m}{q}", "Payment run {d}"),
                ("Please find attached the invoice for the services in the last period.",
                 "The payment run goes out on {d}; approvals needed by {t}.",
                 "We are {n}% under budget on {p} for the quarter.",
                 "Could you approve the purchase order in the system?",
                 "Remittance advice is attached for your records.",
                 "The month-end close calendar is on the finance page: "
                 "https://intranet.{dom}/finance/close",
                 "Please code the expenses to cost centre {n}{m}{q}.")),
    "hr": (("Interview schedule", "Offer letter", "Onboarding for new starters",
            "Benefits enrolment reminder", "Performance review cycle", "Your application"),
           ("Thank you for your interest in the position.",
            "Would {d} at {t} work for the next interview?",
            "The onboarding checklist is on the HR portal: https://hr.{dom}/onboarding",
            "Please complete your self-review by {d}.",
            "Attached is the signed offer letter for your records.",
            "Benefits enrolment closes at the end of the month.")),
    "legal": (("NDA with {c}", "Contract review: {c}", "Redlines", "Data processing agreement"),
              ("I attached our redlines to the agreement.",
               "Clause {n} needs another look before we sign.",
               "Could you confirm the governing law is acceptable?",
               "Signature pages are attached; please countersign.")),
    "it": (("Laptop replacement", "Planned maintenance {d}", "VPN certificate renewal",
            "Your ticket IT-{n}{m}{q}", "New starter accounts"),
           ("Your new laptop is ready for pick-up at the service desk.",
            "The VPN gateway will be down on {d} from {t} for about an hour.",
            "The request is done; please sign in again to pick up the change.",
            "Instructions are on the IT page: https://it.{dom}/kb/{n}{m}",
            "Accounts for the new starters are created; passwords go to their managers.")),
    "exec": (("Board pack", "Q{q} priorities", "Offsite agenda", "Thanks", "Hiring plan"),
             ("Thanks for the update, this looks good.",
              "Let's discuss at the staff meeting on {d}.",
              "Please send me the numbers before the board call.",
              "Great work by the team on {p}.",
              "I'd like to see the hiring plan for next quarter.")),
    "assistant": (("Calendar for {d}", "Travel booking", "Board meeting logistics",
                   "Room booking: {t}"),
                  ("The meeting is moved to {d} at {t}.",
                   "Flights are booked; the itinerary is attached.",
                   "Could you confirm your availability for the board dinner?",
                   "The dial-in details are in the invitation.")),
    "intro": (("Hello from the new starter", "Hi, I just joined", "Quick question",
               "Getting set up"),
              ("I just joined the team this week and wanted to say hello.",
               "Could you point me to the right place to request access?",
               "Looking forward to working with you.",
               "Is there a good time this week for a short intro call?")),
}
REPLIES = ("Thanks, that works for me.", "Sounds good, go ahead.", "Thanks for the quick reply!",
           "I'll take a look this afternoon.", "Agreed.", "Can we talk about it tomorrow?",
           "Done, see the updated version.", "Let me check with the team and get back to you.",
           "Yes, {d} at {t} is fine.", "Great, thank you.", "I have a few comments, see below.",
           "Good catch, I'll fix it.", "Looks fine to me.", "Not yet, maybe by {d}.")
GREETINGS = ("Hi {name},", "Hello {name},", "Dear {name},", "{name},", "Hi all,", "Hi {name}")
CLOSINGS = ("Thanks,", "Best,", "Regards,", "Kind regards,", "Cheers,", "Best regards,",
            "Thank you,")


class _Writer:
    """Renders planned events into RFC 5322 bytes and envelopes."""

    def __init__(self, planner: _Planner) -> None:
        self.p = planner
        self.cfg = planner.cfg
        self.base = planner.cfg.domain.split(".")[0]
        self._bodies: dict[int, str] = {}

    def rng_for(self, ev: _Event, salt: int = 0) -> random.Random:
        return random.Random(self.cfg.seed * 1_000_003 + ev.idx * 7 + salt)

    def fill(self, s: str, rng: random.Random, c: str = "") -> str:
        p = rng.choice(PROJECTS)
        return s.format(p=p, P=p.upper()[:3], d=rng.choice(DAYS), t=rng.choice(TIMES),
                        n=rng.randint(2, 9), m=rng.randint(0, 9), q=rng.randint(1, 4),
                        doc=rng.choice(DOCS), c=c or rng.choice(self.p.partners).name,
                        dom=self.cfg.domain, org=self.cfg.domain.split(".")[0].title())

    def subject(self, ev: _Event) -> str:
        root = self.p.events[ev.thread] if 0 <= ev.thread < len(self.p.events) else ev
        rng = random.Random(self.cfg.seed * 7_919 + root.idx)
        topic = TOPICS.get(root.topic) or TOPICS.get(self.p.accounts[root.sender].role.topics) \
            or TOPICS["eng"]
        base = self.fill(rng.choice(topic[0]), rng)
        return base

    def body(self, ev: _Event, rng: random.Random, to_name: str) -> str:
        acct = self.p.accounts[ev.sender]
        topic = TOPICS.get(ev.topic) or TOPICS.get(acct.role.topics) or TOPICS["eng"]
        lines = [rng.choice(GREETINGS).format(name=to_name), ""]
        if ev.kind == "reply":
            lines.append(self.fill(rng.choice(REPLIES), rng))
            if rng.random() < 0.5:
                lines.append(self.fill(rng.choice(topic[1]), rng))
        else:
            k = rng.randint(2, 5)
            picked = rng.sample(topic[1], min(k, len(topic[1])))
            lines.append(" ".join(self.fill(s, rng) for s in picked))
            if rng.random() < 0.4:
                lines += ["", " ".join(self.fill(s, rng) for s in rng.sample(topic[1], 2))]
        lines += ["", rng.choice(CLOSINGS), acct.first]
        if ev.agent.msgid != "apple" or rng.random() < 0.5:
            lines += ["", "--", f"{acct.name}", f"{acct.role.name.replace('_', ' ').title()}, "
                      f"{acct.site.city}", f"{self.cfg.domain.split('.')[0].title()} Inc."]
        if ev.agent.value.startswith("iPhone"):
            lines += ["", "Sent from my iPhone"]
        return "\n".join(lines) + "\n"

    def text_of(self, ev: _Event) -> str:
        body = self._bodies.get(ev.idx)
        if body is None:
            body = self.content(ev, self.rng_for(ev))[1]
        return body

    def content(self, ev: _Event, rng: random.Random) -> tuple[str, str, str | None]:
        """(subject, plain text, html or None) for an event."""
        kind = ev.kind
        to_name = self.display_first(ev.to[0]) if ev.to else "all"
        if ev.label is not None:
            return self.lure(ev, rng, to_name)
        if kind == "newsletter":
            return self.newsletter(ev, rng)
        if kind == "all_hands":
            return self.all_hands(ev, rng)
        if kind == "quarter_end":
            n = f"{rng.randint(20250000, 20259999)}"
            amt = f"{rng.randint(1, 90)},{rng.randint(100, 999)}.{rng.randint(10, 99)}"
            text = (f"Dear customer,\n\nPlease find attached invoice INV-{n} for the period "
                    f"ending {self.p.cfg.start.year}-03-31, amount EUR {amt}, due in 30 days.\n"
                    f"Payment details are on the invoice and unchanged.\n\nFor questions reply "
                    f"to this message or call our receivables team.\n\nKind regards,\n"
                    f"{self.p.accounts[ev.sender].name}\nAccounts Receivable\n")
            return f"Invoice INV-{n}", text, None
        if kind == "vacation":
            a = self.p.accounts[ev.sender]
            subj = "Out of office" if ev.parent < 0 else \
                f"Automatic reply: {self.subject(self.p.events[ev.parent])}"
            text = (f"Thank you for your message. I am out of the office with limited access to "
                    f"email and will reply when I am back. For urgent matters please contact "
                    f"{a.role.group}@{self.cfg.domain}.\n\n{a.name}\n")
            return subj, text, None
        if kind == "to_personal":
            return "fyi", "Sending this to myself to read at home.\n", None
        subject = self.subject(ev)
        if kind == "reply" or kind == "reply_external":
            subject = f"Re: {subject}" if not subject.startswith("Re:") else subject
        text = self.body(ev, rng, to_name)
        if ev.kind == "reply" and ev.parent >= 0:
            parent = self.p.events[ev.parent]
            who = self.p.accounts[parent.sender]
            when = format_datetime(datetime.fromtimestamp(parent.t, timezone.utc))
            quoted = "\n".join("> " + ln for ln in self.text_of(parent).splitlines()[:12])
            text += f"\nOn {when}, {who.name} <{who.address}> wrote:\n{quoted}\n"
        html = None
        if ev.agent.html:
            paras = "".join(f"<p>{_esc(pp)}</p>" for pp in text.split("\n\n"))
            html = f"<html><head><meta charset=\"utf-8\"></head><body>{paras}</body></html>"
        return subject, text, html

    def display_first(self, addr: str) -> str:
        i = self.p.by_address.get(addr)
        if i is not None:
            return self.p.accounts[i].first
        return addr.split("@")[0].split(".")[0].title()

    def newsletter(self, ev: _Event, rng: random.Random) -> tuple[str, str, str]:
        week = int((ev.t - self.p.t0) // (7 * 86400)) + 1
        r = random.Random(self.cfg.seed * 31 + week)
        items = r.sample(("Meet the {p} team", "Quarterly results town hall recording",
                          "New parental leave policy", "Office move in {city}",
                          "Security tip: report suspicious mail", "Volunteering day",
                          "Customer win: {c}", "Welcome to our new colleagues",
                          "Engineering blog: how we cut build times"), 5)
        items = [i.format(p=r.choice(PROJECTS), city=r.choice(SITES).city,
                          c=r.choice(self.p.partners).name) for i in items]
        d = self.cfg.domain
        text = f"This week at {self.base.title()} (issue {week})\n\n" + "\n".join(
            f"* {it}: https://intranet.{d}/news/{week}/{k}" for k, it in enumerate(items)) + \
            f"\n\nManage your newsletter preferences: https://intranet.{d}/newsletter/prefs\n"
        html = ("<html><body><h1>This week at " + self.base.title() + "</h1>" + "".join(
            f'<h2>{_esc(it)}</h2><p>Read more on the intranet: '
            f'<a href="https://intranet.{d}/news/{week}/{k}">{_esc(it)}</a></p>'
            for k, it in enumerate(items)) +
            f'<p><a href="https://intranet.{d}/newsletter/prefs">Preferences</a></p></body></html>')
        return f"This week at {self.base.title()}, issue {week}", text, html

    def all_hands(self, ev: _Event, rng: random.Random) -> tuple[str, str, str | None]:
        a = self.p.accounts[ev.sender]
        text = (f"Hi everyone,\n\nOur next all-hands meeting is on {rng.choice(DAYS)} at 16:00 "
                f"Berlin / 10:00 New York / 22:00 Shanghai. We will go through the quarter's "
                f"results, the plans for {rng.choice(PROJECTS)} and take your questions.\n\n"
                f"Join here: https://meet.{self.cfg.domain}/all-hands\nQuestions in advance: "
                f"https://intranet.{self.cfg.domain}/all-hands/questions\n\nThe invitation is "
                f"attached.\n\nThank you all for a great quarter.\n\n{a.name}\n")
        return "All-hands meeting and Q&A", text, None

    def lure(self, ev: _Event, rng: random.Random, to_name: str) -> tuple[str, str, str | None]:
        a = self.p.accounts[ev.sender]
        base = self.base
        look = rng.choice((f"{base}-sso.com", f"{base.replace('e', '3', 1)}-login.com",
                           f"login-{base}.net", f"{base}-secure.online", f"portal-{base}.top"))
        token = hash_hex(f"{ev.idx}")
        kind = ev.kind
        if kind == "spam":
            offer = rng.choice((
                ("Earn 40% monthly with our AI crypto robot",
                 "Join thousands who already earn passive income with automated trading. "
                 "Minimum deposit $250, withdraw any time.", "cryptoyield-pro.top"),
                ("Cheap meds without prescription, 80% off",
                 "Viagra, Cialis and more at unbeatable prices. Discreet worldwide shipping.",
                 "pharma-discount.shop"),
                ("You have (3) unread messages from local singles",
                 "Someone near you wants to meet. See who viewed your profile tonight.",
                 "meetlocal-now.xyz"),
                ("Pre-approved loan: $15,000 deposited today",
                 "No credit check. Fill in the short form and get the money within hours.",
                 "fastcash-approve.click")))
            text = (f"{offer[1]}\n\nClick here: http://{offer[2]}/?id={token}\n\n"
                    f"Unsubscribe: http://{offer[2]}/u/{token}\n")
            html = (f"<html><body><h2>{_esc(offer[0])}</h2><p>{_esc(offer[1])}</p>"
                    f'<p><a href="http://{offer[2]}/?id={token}">CLICK HERE NOW</a></p>'
                    "</body></html>")
            return offer[0], text, html
        if kind in ("lateral", "company_phish"):
            if kind == "company_phish":
                subj = rng.choice(("Action required: your password expires today",
                                   "IT notice: mailbox quota exceeded",
                                   "Mandatory: verify your account for the new security policy"))
                url = f"https://{look}/owa/auth/verify?u={token}"
                text = (f"Dear user,\n\nYour {base.title()} password expires in 24 hours. To keep "
                        f"access to email and files, validate your account now:\n\n{url}\n\n"
                        f"If you do not verify, your mailbox will be suspended.\n\n"
                        "IT Service Desk\n")
            else:
                doc = rng.choice(("Q2 bonus structure.xlsx", "Revised org chart.pdf",
                                  "Salary review 2025.docx", "Project budget - confidential.xlsx"))
                subj = f"{a.name} shared \"{doc}\" with you"
                url = f"https://{look}/:x:/s/shared/{token}?e=login"
                text = (f"Hi {to_name},\n\nI've shared \"{doc}\" with you. Please review it "
                        f"before the meeting.\n\nOpen document: {url}\n\nYou may need to sign "
                        f"in with your work account to view it.\n\n{a.first}\n")
            html = (f"<html><body><p>{_esc(text.split(chr(10) * 2)[0])}</p><p>"
                    f'<a href="{url}" style="background:#0078d4;color:#fff;padding:8px">'
                    f"Open</a></p><p>{_esc(text.split(chr(10) * 2)[-1])}</p></body></html>")
            return subj, text, html
        if kind == "payment_fraud":
            iban = fake_iban(rng)
            n = rng.randint(20250000, 20259999)
            text = (f"Dear {to_name},\n\nPlease note that due to our annual audit our banking "
                    f"details have changed. Kindly make the payment for the outstanding invoice "
                    f"INV-{n} to our new account:\n\nBank: Metro Commerce Bank\nIBAN: {iban}\n"
                    f"BIC: MCBKGB2L\n\nPlease do not use the old account anymore, as it is "
                    f"under review. Confirm once the transfer is done by replying to this "
                    f"email.\n\nKind regards,\n{a.name}\nAccounts Receivable\n")
            return rng.choice((f"Updated bank details - invoice INV-{n}",
                               f"Re: Payment INV-{n}", "Change of remittance details")), text, None
        if kind == "exfiltration":
            return (rng.choice(("", "docs", "scan", "fw", "files")),
                    rng.choice(("", ".", "see attached\n")), None)
        if kind == "forward":
            if ev.parent >= 0:
                parent = self.p.events[ev.parent]
                sub = self.subject(parent)
                who = self.p.accounts[parent.sender]
                text = (f"\n\n-----Original Message-----\nFrom: {who.name} <{who.address}>\n"
                        f"Subject: {sub}\n\n{self.text_of(parent)}")
                return f"FW: {sub}", text, None
            sub = self.fill(rng.choice(TOPICS["sales"][0]), rng)
            quoted = self.fill(" ".join(rng.sample(TOPICS["sales"][1], 3)), rng)
            return f"FW: {sub}", f"\n\n-----Original Message-----\n{quoted}\n", None
        if kind == "esign":
            sign = rng.choice(("docusign-review.net", "esign-documents.com",
                               "adobe-signdocs.online"))
            url = f"https://{sign}/envelope/{token}/view"
            text = (f"{a.name} sent you a document to review and sign.\n\n"
                    f"REVIEW DOCUMENT: {url}\n\n"
                    f"Document: Agreement_{rng.randint(1000, 9999)}.pdf\n"
                    "Please complete by end of day.\n\n"
                    f"Do not share this email. Powered by secure e-signature.\n")
            html = (f'<html><body><p>{_esc(a.name)} sent you a document to review and sign.</p><p>'
                    f'<a href="{url}">REVIEW DOCUMENT</a></p></body></html>')
            return f"Please DocuSign: Agreement for {to_name}", text, html
        if kind == "hr_lure":
            url = f"https://hr-{base}.portal-review.com/payroll/{token}"
            text = (f"Hi {to_name},\n\nHR has published the 2025 salary adjustments. Please review "
                    f"and acknowledge yours before Friday:\n\n{url}\n\nSign in with your "
                    f"company credentials.\n\nThanks,\n{a.first}\n")
            return "2025 salary adjustment - please acknowledge", text, None
        if kind == "hijack":
            hijacked = self.p.events[ev.parent] if ev.parent >= 0 else None
            sub = f"Re: {self.subject(hijacked)}" if hijacked else "Documents"
            text = (f"Hi {to_name},\n\nAs discussed, please see the attached document and let me "
                    f"know your thoughts.\n\nPassword to open: {rng.randint(1000, 9999)}\n\n"
                    f"{a.first}\n")
            if hijacked is not None:
                quoted = "\n".join("> " + ln for ln in self.text_of(hijacked).splitlines()[:8])
                text += f"\n> -----Original Message-----\n{quoted}\n"
            return sub, text, None
        raise ValueError(f"no lure for {kind}")

    def attachments(self, ev: _Event, rng: random.Random) -> list[tuple[str, str, str, bytes]]:
        """(filename, maintype, subtype, data) for each attachment."""
        out = []
        kind = ev.kind
        for k in range(ev.attach):
            if kind == "all_hands":
                out.append(("invite.ics", "text", "calendar", ics(rng, self.cfg.domain)))
            elif kind in ("quarter_end", "payment_fraud"):
                out.append((f"INV-{rng.randint(20250000, 20259999)}.pdf", "application", "pdf",
                            pdf(rng, rng.randint(8, 30) * 1024)))
            elif kind == "hijack":
                if rng.random() < 0.5:
                    inner = phish_page(rng, self.base)
                    out.append((f"Document_{rng.randint(1000, 9999)}.zip", "application", "zip",
                                zip_of({f"Document_{rng.randint(1000, 9999)}.html": inner})))
                else:
                    out.append((f"Invoice_{rng.randint(1000, 9999)}.htm", "text", "html",
                                phish_page(rng, self.base)))
            elif kind == "exfiltration":
                name = rng.choice(("customer_list", "payroll", "contracts", "pipeline",
                                   "board_minutes", "salaries", "passwords", "bank_accounts"))
                ext = rng.choice(("xlsx", "pdf", "docx", "zip"))
                out.append((f"{name}_{rng.randint(2021, 2025)}.{ext}",
                            *office_file(rng, ext, 60, 250)))
            else:
                ext = rng.choice(("pdf", "pdf", "docx", "xlsx", "png", "pptx", "csv"))
                name = rng.choice(("report", "notes", "draft", "summary", "plan", "budget",
                                   "screenshot", "agenda", "invoice", "proposal"))
                out.append((f"{name}_{rng.randint(1, 99)}.{ext}", *office_file(rng, ext, 4, 60)))
        return out

    def render(self, ev: _Event) -> bytes:
        rng = self.rng_for(ev)
        acct = self.p.accounts[ev.sender]
        cfg = self.cfg
        subject, text, html = self.content(ev, rng)
        if ev.kind not in ("newsletter",):
            self._bodies[ev.idx] = text
            if len(self._bodies) > 50_000:
                for key in list(self._bodies)[:10_000]:
                    del self._bodies[key]
        # compat32 MIME classes: the modern EmailMessage API parses every header it is given
        # through the header registry, which made rendering slower than scanning.
        body: Message = _text(text, "plain")
        if html is not None:
            alt = MIMEMultipart("alternative", boundary=_boundary(rng))
            alt.attach(body)
            alt.attach(_text(html, "html"))
            body = alt
        files = self.attachments(ev, rng)
        if files:
            mixed = MIMEMultipart("mixed", boundary=_boundary(rng))
            mixed.attach(body)
            for fname, maintype, subtype, data in files:
                if maintype == "text":
                    part: Message = _text(data.decode("utf-8"), subtype)
                else:
                    part = MIMEApplication(data, subtype) if maintype == "application" else \
                        MIMEImage(data, subtype)
                part.add_header("Content-Disposition", "attachment", filename=fname)
                mixed.attach(part)
            msg: Message = mixed
        else:
            msg = body
        for part in msg.walk():
            if part is not msg:
                del part["MIME-Version"]  # the MIME classes add it to every part; clients do not
        head: list[tuple[str, str]] = []
        if ev.authenticated and cfg.identity == "header" and not ev.null_sender:
            rdns = "unknown" if ev.helo.startswith("[") else ev.helo
            when = format_datetime(datetime.fromtimestamp(ev.t, timezone.utc))
            head.append(("Received", f"from {ev.helo} ({rdns} [{ev.ip}])\r\n\t"
                                     f"(Authenticated sender: {acct.address})\r\n\tby "
                                     f"{MAIL_SERVER_HELO}.{cfg.domain} (Postfix) with ESMTPSA id "
                                     f"{hash_hex(str(ev.idx))[:10].upper()};\r\n\t{when}"))
            head.append((cfg.identity_header, acct.address))
        name = acct.name
        if ev.kind == "newsletter":
            name = f"{self.base.title()} Internal Communications"
        elif ev.kind == "company_phish":
            name = "IT Service Desk"
        head.append(("From", formataddr((name, acct.address))))
        head.append(("To", ", ".join(self.addr_display(x) for x in ev.to)))
        if ev.cc:
            head.append(("Cc", ", ".join(self.addr_display(x) for x in ev.cc)))
        head.append(("Subject", subject))
        zone = self.p.zone_at(acct, ev.t)
        head.append(("Date", format_datetime(datetime.fromtimestamp(int(ev.t), zone))))
        head.append(("Message-ID", self.message_id(ev)))
        if ev.parent >= 0 and ev.kind in ("reply", "hijack", "vacation"):
            pid = self.message_id(self.p.events[ev.parent])
            head += [("In-Reply-To", pid), ("References", pid)]
        elif ev.kind == "reply_external":
            pid = f"<{hash_hex(str(ev.idx) + 'ext')}@{ev.to[0].split('@')[-1]}>"
            head += [("In-Reply-To", pid), ("References", pid)]
        if ev.agent.header:
            head.append((ev.agent.header, ev.agent.value))
        head += list(ev.extra)
        # The MIME classes wrote MIME-Version and Content-Type first; put the RFC 5322
        # headers on top, in the order clients write them.
        mime = list(msg.items())
        for k in list(msg.keys()):
            del msg[k]
        for k, v in head + mime:
            msg[k] = v
        return msg.as_bytes(policy=_SMTP)

    def addr_display(self, addr: str) -> str:
        i = self.p.by_address.get(addr)
        if i is not None:
            return formataddr((self.p.accounts[i].name, addr))
        for ml in self.p.lists:
            if ml.address == addr:
                return formataddr((ml.name, addr))
        return addr

    def message_id(self, ev: _Event) -> str:
        h = hash_hex(f"{self.cfg.seed}/{ev.idx}")
        style = ev.agent.msgid
        dom = self.cfg.domain
        if style == "outlook":
            return f"<{h.upper()}{ev.idx:06X}@{dom}>"
        if style == "apple":
            u = hash_hex(f"a{self.cfg.seed}/{ev.idx}") + h
            u = u.upper()
            return f"<{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{h.upper()[:12]}@{dom}>"
        if style == "server":
            return f"<{ev.idx}.{h}@{MAIL_SERVER_HELO}.{dom}>"
        return f"<{h[:8]}-{h[8:12]}-{ev.idx:04x}-{h[12:16]}@{dom}>"

    def envelopes(self, ev: _Event) -> list[Envelope]:
        acct = self.p.accounts[ev.sender]
        cfg = self.cfg
        rcpts = list(ev.expand or (ev.to + ev.cc)) + list(ev.bcc)
        rcpts = list(dict.fromkeys(r for r in rcpts))
        if cfg.identity == "header" or not ev.authenticated:
            ip, helo, auth = MAIL_SERVER_IP, f"{MAIL_SERVER_HELO}.{cfg.domain}", None
        else:
            ip, helo, auth = ev.ip, ev.helo, acct.address
        mail_from = "" if ev.null_sender else acct.address
        internal = cfg.domain
        out = []
        for k in range(0, len(rcpts), LIST_CHUNK):
            chunk = tuple(rcpts[k:k + LIST_CHUNK])
            direction = Direction.INTERNAL if all(r.rsplit("@", 1)[-1] == internal for r in chunk) \
                else Direction.OUTBOUND
            out.append(Envelope(mail_from=mail_from, rcpt_tos=chunk, client_ip=ip, helo=helo,
                                auth_user=auth, tls=True, direction=direction,
                                received_at=ev.t + k / LIST_CHUNK * 0.5))
        return out


_QP_UTF8 = Charset("utf-8")
_QP_UTF8.body_encoding = QP


def _text(text: str, subtype: str) -> MIMEText:
    """A text part as mail clients write them: 7bit when ASCII, else quoted-printable."""
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        return MIMEText(text, subtype, "us-ascii")
    return MIMEText(text, subtype, _QP_UTF8)  # type: ignore[arg-type]


def _boundary(rng: random.Random) -> str:
    # The email package draws boundaries from the global generator: not reproducible.
    return f"----=_Part_{rng.getrandbits(64):016x}"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")


def fake_iban(rng: random.Random) -> str:
    """A GB IBAN whose check digits are right (mod 97), as a fraudster's real account is."""
    bban = "MCBK" + "".join(str(rng.randint(0, 9)) for _ in range(14))
    digits = "".join(str(int(ch, 36)) for ch in bban + "GB00")
    check = 98 - int(digits) % 97
    iban = f"GB{check:02d}{bban}"
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))


def pdf(rng: random.Random, size: int) -> bytes:
    stream = zlib.compress(rng.randbytes(size // 2), 0)[: size // 2]
    return (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
            b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>"
            b" endobj\n"
            b"4 0 obj << /Length " + str(len(stream)).encode() + b" >> stream\n" + stream +
            b"\nendstream endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
            z.writestr(info, data)
    return buf.getvalue()


def office_file(rng: random.Random, ext: str, lo_kb: int, hi_kb: int) -> tuple[str, str, bytes]:
    size = rng.randint(lo_kb, hi_kb) * 1024
    if ext == "pdf":
        return "application", "pdf", pdf(rng, size)
    if ext == "png":
        return "image", "png", png(rng, min(size, 40_000))
    if ext == "csv":
        rows = "\n".join(f"{rng.randint(1000, 9999)},{rng.choice(LAST)},{rng.randint(10, 99999)}"
                         for _ in range(size // 40))
        return "text", "csv", ("id,name,amount\n" + rows + "\n").encode()
    if ext == "zip":
        return "application", "zip", zip_of({f"file{k}.pdf": pdf(rng, size // 4) for k in range(3)})
    types = {"docx": ("wordprocessingml.document", "word/document.xml"),
             "xlsx": ("spreadsheetml.sheet", "xl/workbook.xml"),
             "pptx": ("presentationml.presentation", "ppt/presentation.xml")}
    sub, main = types[ext]
    words = " ".join(rng.choice(LAST) for _ in range(size // 16))
    data = zip_of({
        "[Content_Types].xml": (b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats'
                                b'.org/package/2006/content-types"><Default Extension="xml" '
                                b'ContentType="application/xml"/></Types>'),
        "_rels/.rels": (b'<?xml version="1.0"?><Relationships xmlns="http://schemas.'
                        b'openxmlformats.org/package/2006/relationships"/>'),
        main: f'<?xml version="1.0"?><doc><t>{words}</t></doc>'.encode(),
        "docProps/thumb.bin": rng.randbytes(size // 2),
    })
    return "application", f"vnd.openxmlformats-officedocument.{sub}", data


def png(rng: random.Random, size: int) -> bytes:
    w = h = max(8, int(math.sqrt(size / 3)))
    raw = b"".join(b"\x00" + rng.randbytes(w * 3) for _ in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def ics(rng: random.Random, domain: str) -> bytes:
    uid = hash_hex(str(rng.random()))
    return (f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Mail Sim//EN\r\nMETHOD:REQUEST\r\n"
            f"BEGIN:VEVENT\r\nUID:{uid}@{domain}\r\nDTSTART:20250401T140000Z\r\n"
            f"DTEND:20250401T150000Z\r\nSUMMARY:All-hands meeting\r\n"
            f"LOCATION:https://meet.{domain}/all-hands\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()


def phish_page(rng: random.Random, base: str) -> bytes:
    post = f"https://{base}-docs-view.com/submit.php?id={hash_hex(str(rng.random()))}"
    return (f'<html><head><title>Microsoft 365 - Sign in</title></head><body>'
            f'<h3>Sign in to view the shared document</h3><form action="{post}" method="post">'
            f'<input name="email" placeholder="Email"><input type="password" name="pass" '
            f'placeholder="Password"><button>Sign in</button></form></body></html>').encode()


# -- the public interface -------------------------------------------------------------------


@dataclass
class Simulation:
    config: SimConfig
    accounts: list[Account]
    lists: list[MailingList]
    partners: list[PartnerOrg]
    scenarios: list[Scenario]
    bursts: list[Burst]
    start: float
    end: float
    _planner: _Planner = field(repr=False)
    _plan: list[_Event] = field(repr=False)

    @property
    def events(self) -> int:
        """Messages as composed (a list post is one event, several transactions)."""
        return len(self._plan)

    def transactions(self) -> int:
        """How many (message, envelope) pairs `messages()` yields."""
        return sum(max(1, math.ceil(len(set(e.expand or (e.to + e.cc)) | set(e.bcc)) / LIST_CHUNK))
                   for e in self._plan)

    def outline(self) -> Iterator[Planned]:
        """The plan in time order, without rendering: cheap, for statistics."""
        for ev in self._plan:
            a = self._planner.accounts[ev.sender]
            rcpts = tuple(dict.fromkeys(list(ev.expand or (ev.to + ev.cc)) + list(ev.bcc)))
            yield Planned(t=ev.t, account=a.address, kind=ev.kind if ev.label is None else ev.label,
                          label=ev.label, to=ev.to, cc=ev.cc, recipients=rcpts,
                          attachments=ev.attach, client_ip=ev.ip, agent=ev.agent.value,
                          authenticated=ev.authenticated, site=a.site.key)

    def messages(self, select: Callable[[Planned], bool] | None = None) -> Iterator[SimMessage]:
        """Every (message, envelope) in time order, rendered as it is reached; with
        `select`, only the planned messages it accepts (the same bytes as in the whole
        stream, `index` still counting every transaction)."""
        writer = _Writer(self._planner)
        n = 0
        for ev, planned in zip(self._plan, self.outline()):
            if select is not None and not select(planned):
                n += len(writer.envelopes(ev))
                continue
            raw = writer.render(ev)
            acct = self._planner.accounts[ev.sender].address
            kind = ev.kind if ev.label is None else ev.label
            for env in writer.envelopes(ev):
                yield SimMessage(index=n, raw=raw, envelope=env, account=acct,
                                 label=ev.label, kind=kind)
                n += 1

    def account(self, address: str) -> Account:
        return self.accounts[self._planner.by_address[address]]


def simulate(config: SimConfig | None = None, **kw: object) -> Simulation:
    """Plan a run; `messages()` renders it. `simulate(seed=2, accounts=200)` works too."""
    cfg = config or SimConfig(**kw)  # type: ignore[arg-type]
    p = _Planner(cfg)
    plan = p.plan()
    return Simulation(config=cfg, accounts=p.accounts, lists=p.lists, partners=p.partners,
                      scenarios=p.scenarios, bursts=p.bursts, start=p.t0, end=p.t_end,
                      _planner=p, _plan=plan)
