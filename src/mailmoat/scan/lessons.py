"""Check family `lessons`: near-copies of mail the administrators and users taught.

Every message taught through `mailmoat learn` or the console's report / release buttons is
kept in the lesson memory (`mailmoat.ml.lessons`). This check runs after both content tiers
and compares the message with the memory of its scope (global, and the recipients' domain
when it has one): a near-copy (cosine similarity of the tier-1 features ≥ `[content]
lesson_similarity`) of reported spam or phishing raises the content tiers' verdict to at
least the tag level (`LEARNED_SPAM` / `LEARNED_PHISH`), a near-copy of mail released as not
spam withdraws it (`LEARNED_HAM`). Other families (authentication, URLs, attachments, lists)
are untouched. With an empty memory it costs nothing.
"""

from __future__ import annotations

from mailmoat.config import Config
from mailmoat.message.model import ParsedMessage
from mailmoat.ml.features import N_FEATURES_BITS, vector_of
from mailmoat.ml.learn import delta_path, recipient_domain
from mailmoat.ml.lessons import LessonMemory, Match, adjustment, lessons_path, read
from mailmoat.ml.scoring import ContentSettings
from mailmoat.scan.base import BuildContext, Category, Check, ScanResult, SymbolSpec

_G = "lessons"
# What "the content tiers' verdict" is: the families whose scores a lesson may move.
CONTENT_FAMILIES = ("content", "deep")

SYMBOLS: dict[str, SymbolSpec] = {
    "LEARNED_SPAM": SymbolSpec(1.0, "A near-copy of mail reported as spam: the content verdict "
                               "is raised to at least the tag level (the factor is the rise).",
                               Category.SPAM, _G),
    "LEARNED_PHISH": SymbolSpec(1.0, "A near-copy of mail reported as phishing: the content "
                                "verdict is raised to at least the tag level.",
                                Category.PHISHING, _G),
    "LEARNED_HAM": SymbolSpec(-1.0, "A near-copy of mail released as not spam: the content "
                              "verdict is withdrawn (the factor is what it was).",
                              Category.CLEAN, _G),
}


class LessonCheck(Check):
    name = "lessons"
    family = _G
    symbols = SYMBOLS
    stage = 2  # after tier 1 (stage 0) and tier 2 (stage 1), whose verdict it adjusts
    needs_network = False

    def __init__(self, config: Config, settings: ContentSettings) -> None:
        self.config = config
        self.settings = settings

    def _memories(self, msg: ParsedMessage) -> list[tuple[str, LessonMemory]]:
        """The non-empty memories that apply: global, and the recipients' domain's."""
        scopes = [("", delta_path(self.config))]
        if dom := recipient_domain(msg):
            try:
                scopes.append((dom, delta_path(self.config, dom)))
            except ValueError:  # not a domain name a lesson could have been stored under
                pass
        memories = [(scope, read(lessons_path(p), N_FEATURES_BITS)) for scope, p in scopes]
        return [(scope, m) for scope, m in memories if m.labels]

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        memories = self._memories(msg)
        if not memories:
            return
        idx, vals, _ = vector_of(msg)
        best: tuple[str, Match] | None = None
        for scope, mem in memories:
            hit = mem.nearest(idx, vals, self.settings.lesson_similarity)
            if hit is not None and (best is None or hit.similarity > best[1].similarity):
                best = (scope, hit)
        if best is None:
            return
        scope, match = best
        content_part = sum(s.score for s in result.symbols if s.group in CONTENT_FAMILIES)
        adj = adjustment(match, content_part)
        if adj is None:
            return
        name, score = adj
        taught = {"ham": "released as not spam", "spam": "reported as spam",
                  "phish": "reported as phishing"}[match.label]
        where = f" for {scope}" if scope else ""
        change = (f"content verdict {content_part:g} withdrawn" if name == "LEARNED_HAM"
                  else f"content verdict raised from {content_part:g} to {content_part + score:g}")
        result.add(name, factor=abs(score), reason=(
            f"near-copy (similarity {match.similarity:.2f}) of a message {taught}{where} by "
            f"{match.actor} on {match.time[:10]} (sha256 {match.sha256[:12]}…); {change}"),
            options=(match.sha256,))


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("content", ContentSettings)
    if not settings.enabled or ctx.disabled(LessonCheck.name):
        return []
    return [LessonCheck(ctx.config, settings)]
