"""From model probabilities to content symbols and their factors, and the `[content]` config.

One function, `content_symbols`, used by the scan check, `mailmoat evaluate`, the training
report and bench/accuracy.py, so every number reported is the number the gateway would act on.

Calibration against the default policy (tag 5, quarantine 10, reject 15):
- P(spam or phish) ≥ `high` (0.98): `*_HIGH`, weight 12 → quarantine; the factor rises with
  confidence to 1.35 at P = 0.9999, so very sure mail alone reaches reject (16.2);
- ≥ `medium` (0.90): `*_MEDIUM`, weight 7 → tagged;
- ≥ `low` (0.70): `*_LOW`, weight 3 → not enough alone, adds to other evidence;
- ≤ `ham` (0.02): `CONTENT_HAM`, weight −2, factor up to 1.5 at P ≤ 0.0001 (−3).
"""

from __future__ import annotations

from pydantic import Field

from mailmoat.config import Section
from mailmoat.ml.model import logit


class ContentSettings(Section):
    """`[content]`: the tier-1 content model."""

    enabled: bool = Field(True, description="run the tier-1 content model")
    model_path: str = Field(
        "", description="model file; empty: the learned model in data_dir/model if any, "
        "else the bundled one")
    high: float = Field(0.98, description="P(spam or phish) for CONTENT_*_HIGH")
    medium: float = Field(0.90, description="P(spam or phish) for CONTENT_*_MEDIUM")
    low: float = Field(0.70, description="P(spam or phish) for CONTENT_*_LOW")
    ham: float = Field(0.02, description="P(spam or phish) at or below which CONTENT_HAM fires")
    explain: int = Field(5, description="how many contributing features a reason names")
    domain_bias: dict[str, float] = Field(
        default_factory=dict,
        description="recipient domain -> logit offset added to spam/phish (negative: more "
        "lenient); applied when every recipient is in that domain")
    learn_rate: float = Field(0.5, description="step size of `mailmoat learn` updates")
    learn_steps: int = Field(20, description="at most this many update steps per learned message")
    lesson_similarity: float = Field(
        0.7, gt=0, le=1, description="cosine similarity at or above which a message counts as "
        "a near-copy of a taught one (LEARNED_SPAM/PHISH/HAM; docs/ml.md)")
    delivered_sample_rate: float = Field(
        1.0, ge=0, le=1, description="share of the mail accepted for every recipient whose "
        "feature buckets are kept (the newest 5,000) as the counter-examples spam reports "
        "must not blame; 0: reports teach no words (docs/ml.md)")
    lesson_max_age_days: float = Field(
        0.0, ge=0, description="lessons (reports, releases, `mailmoat learn`) older than this "
        "are taken back by the retention purge, as `mailmoat unlearn --taught-before` would; "
        "0: kept until taken back by hand")


HIGH_CAP = 0.9999
MAX_HIGH_FACTOR = 1.35
MAX_HAM_FACTOR = 1.5

WEIGHTS = {"HIGH": 12.0, "MEDIUM": 7.0, "LOW": 3.0, "HAM": -2.0}


def content_symbols(p_spam: float, p_phish: float,
                    settings: ContentSettings | None = None) -> tuple[str, float] | None:
    """(symbol name, factor) for the probabilities, or None in the quiet middle band."""
    s = settings or ContentSettings()
    p_bad = p_spam + p_phish
    kind = "PHISH" if p_phish >= p_spam else "SPAM"
    if p_bad >= s.high:
        span = max(logit(HIGH_CAP) - logit(s.high), 1e-6)
        frac = min(max((logit(p_bad) - logit(s.high)) / span, 0.0), 1.0)
        return f"CONTENT_{kind}_HIGH", round(1.0 + (MAX_HIGH_FACTOR - 1.0) * frac, 3)
    if p_bad >= s.medium:
        return f"CONTENT_{kind}_MEDIUM", 1.0
    if p_bad >= s.low:
        return f"CONTENT_{kind}_LOW", 1.0
    if p_bad <= s.ham:
        p_ham = 1.0 - p_bad
        span = max(logit(HIGH_CAP) - logit(1.0 - s.ham), 1e-6)
        frac = min(max((logit(p_ham) - logit(1.0 - s.ham)) / span, 0.0), 1.0)
        return "CONTENT_HAM", round(1.0 + (MAX_HAM_FACTOR - 1.0) * frac, 3)
    return None


def content_score(p_spam: float, p_phish: float, settings: ContentSettings | None = None) -> float:
    """The score the content check alone adds for these probabilities."""
    hit = content_symbols(p_spam, p_phish, settings)
    if hit is None:
        return 0.0
    name, factor = hit
    return round(WEIGHTS[name.rsplit("_", 1)[1]] * factor, 3)
