"""Check family `content`: tier 1, the fast linear model over hashed message features.

Always on, a fraction of a millisecond per message on top of parsing. It reads the parsed
message only (words and CJK characters of subject and body, sender alignment, structure,
URLs, attachments; never the relay path), gives P(ham), P(spam), P(phish), and emits one
symbol whose weight grows with confidence (see `mailmoat.ml.scoring`). The reason names the
message's own tokens that pushed the verdict most, in plain words.

For the later tiers it leaves `result.facts.content`: P(spam or phish), P(spam) and
P(phish).
"""

from __future__ import annotations

import logging

from mailmoat.config import Config
from mailmoat.message.model import ParsedMessage
from mailmoat.ml.features import features_of, vector_of
from mailmoat.ml.learn import get_model, has_domain_delta, recipient_domain
from mailmoat.ml.model import ModelError, Prediction
from mailmoat.ml.scoring import WEIGHTS, ContentSettings, content_symbols
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import ModelFacts

log = logging.getLogger(__name__)


def _spec(level: str, kind: str) -> SymbolSpec:
    what = {"HIGH": "very likely", "MEDIUM": "likely", "LOW": "somewhat likely"}[level]
    cat = Category.PHISHING if kind == "PHISH" else Category.SPAM
    noun = "phishing" if kind == "PHISH" else "spam"
    return SymbolSpec(WEIGHTS[level], f"The content model finds the message {what} {noun}.",
                      cat, "content")


SYMBOLS: dict[str, SymbolSpec] = {
    f"CONTENT_{kind}_{level}": _spec(level, kind)
    for kind in ("SPAM", "PHISH") for level in ("HIGH", "MEDIUM", "LOW")
}
SYMBOLS["CONTENT_HAM"] = SymbolSpec(
    WEIGHTS["HAM"], "The content model is confident the message is legitimate mail.",
    Category.CLEAN, "content")


def explain(pred: Prediction, symbol: str) -> str:
    """The symbol's reason: probability, then the strongest features grouped by kind."""
    p_bad = pred.p_bad
    if symbol == "CONTENT_HAM":
        head = f"content model: P(spam or phishing) {p_bad:.3f}"
        label = "legitimate-mail features"
    else:
        noun = "phishing" if "PHISH" in symbol else "spam"
        head = f"content model: P({noun}) {pred.probabilities['phish' if noun == 'phishing' else 'spam']:.3f}"
        if noun == "phishing" and pred.probabilities["spam"] > 0.01:
            head += f", P(spam or phishing) {p_bad:.3f}"
        label = f"{noun}-typical features"
    groups: dict[str, list[str]] = {}
    for c in pred.contributions:
        words = c.words
        if c.kind == "structure" and c.token in pred.notes:
            words = pred.notes[c.token]
        groups.setdefault(c.kind, []).append(words)
    parts: list[str] = []
    for kind, phrases in groups.items():
        if kind == "structure":
            parts.extend(phrases)
        else:
            plural = kind + ("s" if len(phrases) > 1 and not kind.endswith("s") else "")
            parts.append(f"{plural} {', '.join(phrases)}")
    # Notes (link text mismatch, other reply address) are facts worth saying even when
    # they were not among the top weights.
    extra = [n for t, n in pred.notes.items() if symbol != "CONTENT_HAM"
             and not any(c.token == t for c in pred.contributions)]
    body = "; ".join(parts + extra[:2])
    return f"{head}; {label}: {body}" if body else head


class ContentCheck(Check):
    name = "content"
    family = "content"
    symbols = SYMBOLS
    stage = 0

    def __init__(self, config: Config, settings: ContentSettings) -> None:
        self.config = config
        self.settings = settings
        get_model(config, None, settings)  # load now: a broken model file shows at start-up

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        s = self.settings
        domain = recipient_domain(msg)
        use_domain = domain if domain and has_domain_delta(self.config, domain) else None
        model = get_model(self.config, use_domain, s)
        pred = model.predict(features_of(msg), explain=s.explain,
                             bias=s.domain_bias.get(domain, 0.0),
                             vector=vector_of(msg, model.n_bits))
        result.facts.content = ModelFacts(p_bad=pred.p_bad, p_spam=pred.probabilities["spam"],
                                          p_phish=pred.p_phish)
        hit = content_symbols(pred.probabilities["spam"], pred.probabilities["phish"], s)
        if hit is None:
            return
        name, factor = hit
        result.add(name, reason=explain(pred, name), factor=factor,
                   options=tuple(f"{c.kind}: {c.words}" for c in pred.contributions))


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("content", ContentSettings)
    if not settings.enabled or ctx.disabled(ContentCheck.name):
        return []
    try:
        return [ContentCheck(ctx.config, settings)]
    except ModelError:
        # A configured model that cannot be read is an operator error worth stopping for:
        # running without the content model would silently let spam through.
        log.exception("content model could not be loaded")
        raise
