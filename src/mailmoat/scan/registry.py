"""Which check families exist, in scan order. One line per family, with why it is there.

Each module listed here exposes `build(ctx: BuildContext) -> list[Check]`; a family whose
configuration turns it off returns an empty list. Built-ins and plugins use the same hook.
"""

from __future__ import annotations

import importlib

from mailmoat.scan.base import BuildContext, Check
from mailmoat.scan.pipeline import Pipeline

FAMILY_MODULES: tuple[str, ...] = (
    "mailmoat.scan.gtube",          # the GTUBE test string: proves the pipeline end to end
    "mailmoat.scan.malformed",      # MIME defects, NUL bytes, missing headers: quarantine, not loss
    "mailmoat.scan.lists",          # admin allow/block lists by sender, domain and client IP
    "mailmoat.scan.auth",           # SPF, DKIM, DMARC, ARC
    "mailmoat.scan.reputation",     # DNSBL, URIBL, local sender memory
    "mailmoat.scan.urls",           # phishing URL analysis and URL lists
    "mailmoat.scan.impersonation",  # BEC: VIP / lookalike / reply diversion / payment language
    "mailmoat.scan.attachments",    # file types, archives, macros, PDFs, YARA
    "mailmoat.scan.bulk",           # legitimate bulk and automated mail: facts, not a score
    "mailmoat.scan.antivirus",      # ClamAV through clamd
    "mailmoat.scan.intel",          # live threat-intelligence indicators (feeds in [intel])
    "mailmoat.scan.content",        # tier 1: fast linear model over hashed features
    "mailmoat.scan.deep",           # tier 2: neural model, combined with tier 1
    "mailmoat.scan.lessons",        # near-copies of mail users reported or released
    "mailmoat.scan.llm",            # tier 3: optional LLM second opinion
    "mailmoat.scan.evidence",       # the content tiers' score must be backed by evidence
    "mailmoat.internal.check",      # last: our own accounts' sending behaviour, with the verdicts
)


def build_checks(ctx: BuildContext) -> list[Check]:
    disabled = set(ctx.config.scan.disabled_checks)
    checks: list[Check] = []
    for modname in FAMILY_MODULES:
        module = importlib.import_module(modname)
        for check in module.build(ctx):
            if check.name in disabled:
                continue
            if check.needs_network and not ctx.network:
                continue
            checks.append(check)
    return checks


def build_pipeline(ctx: BuildContext) -> Pipeline:
    return Pipeline(build_checks(ctx), weight_overrides=ctx.config.policy.scores,
                    default_timeout=ctx.config.scan.check_timeout)
