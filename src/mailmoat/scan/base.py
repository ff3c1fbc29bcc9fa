"""The check interface: symbols → score → action.

A check is a small class in `scan/<family>.py`. It declares the symbols it may emit
(`SymbolSpec`: weight, category, description) and, in `run()`, only calls
`result.add(SYMBOL, reason=…)`. It never decides delivery: policy maps the total score to an
action. The single exception is `result.force(Action.REJECT, reason)` for verdicts that no
score should outvote (a virus, GTUBE), as Rspamd's passthrough results do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mailmoat.message.model import Envelope, ParsedMessage
# Re-exported: checks name the action and category they force or speak for from here.
from mailmoat.policy.types import Action as Action
from mailmoat.policy.types import Category as Category
from mailmoat.scan.facts import Facts

if TYPE_CHECKING:
    from mailmoat.config import Config


# Symbol groups that judge what the text reads like (tiers 1–3), as opposed to evidence.
TEXT_GROUPS = frozenset({"content", "deep", "llm"})
_THREATS = frozenset({Category.PHISHING, Category.MALWARE, Category.BEC})
THREAT_EVIDENCE = 3.0  # as [evidence] evidence_reject: evidence that may reject names the threat


@dataclass(frozen=True)
class SymbolSpec:
    weight: float
    description: str  # one sentence for humans: what it means when this symbol fires
    category: Category = Category.SPAM
    group: str = ""  # family name; per-group caps may apply


@dataclass(frozen=True)
class Symbol:
    name: str
    score: float
    category: Category
    reason: str  # plain language, specific to this message
    group: str = ""
    options: tuple[str, ...] = ()


class UndeclaredSymbol(Exception):
    pass


@dataclass
class ScanResult:
    """Accumulates symbols while checks run; policy reads it afterwards."""

    specs: Mapping[str, SymbolSpec]
    weight_overrides: Mapping[str, float] = field(default_factory=dict)
    symbols: list[Symbol] = field(default_factory=list)
    forced: tuple[Action, str, Category] | None = None
    # Forced actions that concern only some recipients (per-recipient block lists):
    # lowercased recipient -> (action, reason, category); see force_for.
    forced_for: dict[str, tuple[Action, str, Category]] = field(default_factory=dict)
    # Typed facts checks establish for later checks, the evidence gate and policy.
    facts: Facts = field(default_factory=Facts)
    timings: dict[str, float] = field(default_factory=dict)  # check name -> seconds
    # check name -> what its start_early() began before the parse (see Check.start_early)
    early: dict[str, asyncio.Future[Any]] = field(default_factory=dict)

    def add(self, name: str, reason: str, factor: float = 1.0, options: tuple[str, ...] = ()) -> Symbol:
        spec = self.specs.get(name)
        if spec is None:
            raise UndeclaredSymbol(f"symbol {name} is not declared by any check")
        weight = self.weight_overrides.get(name, spec.weight)
        sym = Symbol(name=name, score=round(weight * factor, 3), category=spec.category,
                     reason=reason, group=spec.group, options=options)
        self.symbols.append(sym)
        return sym

    def force(self, action: Action, reason: str, category: Category = Category.POLICY) -> None:
        """Force an action no score can outvote; the most severe forced action wins."""
        if self.forced is None or action.severity > self.forced[0].severity:
            self.forced = (action, reason, category)

    def force_for(self, recipients: Iterable[str], action: Action, reason: str,
                  category: Category = Category.POLICY) -> None:
        """`force` for these recipients only; policy applies it to their verdicts."""
        for r in recipients:
            self.forced_for[r.lower()] = (action, reason, category)

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.symbols)

    def get(self, name: str) -> Symbol | None:
        return next((s for s in self.symbols if s.name == name), None)

    @property
    def score(self) -> float:
        return round(sum(s.score for s in self.symbols), 3)

    @property
    def category(self) -> Category:
        """The category whose symbols add up to the most, or the forced one.

        Evidence names the threat before the text models do: when the other checks' symbols
        of a threat category (phishing, malware, BEC) add up to `THREAT_EVIDENCE` or more, the
        strongest of those is the category, even if the content models read the text as
        spam ("names DHL, sent from dhl-paket-info.xyz, links to an IP" is phishing)."""
        if self.forced is not None and self.forced[2] is not Category.POLICY:
            return self.forced[2]
        totals: dict[Category, float] = {}
        threats: dict[Category, float] = {}
        for s in self.symbols:
            if s.score > 0 and s.category is not Category.CLEAN:
                totals[s.category] = totals.get(s.category, 0.0) + s.score
                if s.category in _THREATS and s.group not in TEXT_GROUPS:
                    threats[s.category] = threats.get(s.category, 0.0) + s.score
        strong = {c: v for c, v in threats.items() if v >= THREAT_EVIDENCE}
        if strong:
            return max(strong.items(), key=lambda kv: kv[1])[0]
        if not totals:
            return self.forced[2] if self.forced else Category.CLEAN
        return max(totals.items(), key=lambda kv: kv[1])[0]


@dataclass
class BuildContext:
    """What a family gets when the pipeline is built: config, and shared services if any."""

    config: Config
    network: bool = True  # False for offline `mailmoat scan` unless --network
    database: Any = None  # mailmoat.store.db.Database when a store is available
    redis: Any = None  # redis.asyncio.Redis when [redis] url is set
    extras: dict[str, Any] = field(default_factory=dict)

    def disabled(self, check_name: str) -> bool:
        """True when `[scan] disabled_checks` names the check: the registry drops it
        anyway, but a family that loads a model asks first, so a disabled check costs
        neither memory nor start-up time."""
        return check_name in self.config.scan.disabled_checks


class Check:
    """Base class of every check. Subclasses set the class attributes and implement run()."""

    name: ClassVar[str] = ""  # unique, lower-case, e.g. "spf"
    family: ClassVar[str] = ""  # module family, e.g. "auth"; the *_FAIL symbol uses it
    symbols: ClassVar[dict[str, SymbolSpec]] = {}
    # Checks in a lower stage finish before a higher stage starts, so later checks can read
    # earlier results (the deep model only looks at mail the fast model found uncertain).
    stage: ClassVar[int] = 0
    # Seconds the pipeline gives run(); None: `[scan] check_timeout`. A family whose section
    # has its own timeout sets it per instance (auth, reputation, antivirus, deep, llm).
    timeout: float | None = None
    needs_network: ClassVar[bool] = False

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        raise NotImplementedError

    def start_early(self, raw: bytes, envelope: Envelope) -> asyncio.Future[Any] | None:
        """Start the work that needs only the bytes and the envelope (a DNS look-up of the
        client, clamd reading the raw message) before the message is parsed, so its waits
        overlap the parse. run() collects it with `result.early.pop(self.name, None)`; the
        pipeline cancels what no run() collected. None: nothing to start."""
        return None

    async def close(self) -> None:
        """Release sockets, pools or models held by the check."""
