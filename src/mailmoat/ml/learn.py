"""Online learning: `mailmoat learn`, and the console's "report as spam / not spam" buttons.

The bundled model is never rewritten. What a deployment learns is a sparse *delta* over it:
only weight rows of the learned messages' tokens, stored in
`data_dir/model/content-delta.npz` (or, for a per-domain lesson,
`data_dir/model/domains/<domain>/content-delta.npz`, applied only to mail whose recipients
are all in that domain).

Every lesson is kept whole in the lesson memory (`mailmoat.ml.lessons`), so its near-copies
are recognised whatever their senders. Lessons also move weights, by normalised steps of the
softmax log-loss, each lesson moving a token's contribution to each class's logit by at most
`LESSON_LOGIT_CAP` (one lesson is one vote), until the model agrees (P ≥ 0.9), the caps are
reached or `learn_steps` run out — but only tokens that cannot hurt other mail
(`LESSON_TOKENS`):
- a release ("not spam") moves only the sender's registrable domain — never a free-mail
  domain that thousands of unrelated senders share, nor our own domains, nor `fd:<none>`;
- a report (spam, phish) moves the words and link domains and path words, never the sender
  (spam forges it), and of those only the ones no recently delivered or released message
  uses (`mailmoat.ml.delivered`: the counter-examples) and the model does not already count
  as ham evidence. Until the gateway has sampled `MIN_COUNTER_EXAMPLES` delivered messages
  a report moves nothing.
Moving every token of the message instead (what lessons did until 2026-11-28) shifts every
message with similar words, and one-sided feedback then piles up: replayed on an unseen
source (bench/feedback.py at 9a9b25b), 18 releases doubled the missed spam and 80 spam
reports multiplied the false positives by five; an ad-hoc variant that blamed the sender of
reported spam flagged the mail of the domain that trec06c's spam forged (docs/ml.md). A
lesson that moves no weight says so in the audit (`steps` 0).

Every lesson is appended to `data_dir/model/learn-audit.jsonl`: time, actor, label, sha256
of the message, domain, and the probability before and after. A lesson that moved weights
also records its own change (`lesson-changes/` beside the delta), so `unlearn()` can take
lessons back exactly — by message, by who taught them, by age — leaving the others' intact.

Python API (used by the web console): `learn(config, raw, label, actor, domain=None)`,
`unlearn(config, sha256_or_LessonFilter, actor, domain=None)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mailmoat.domains import is_freemail, is_public_suffix, registrable
from mailmoat.message.model import Envelope, ParsedMessage, domain_of
from mailmoat.message.parse import parse_message
from mailmoat.ml import delivered
from mailmoat.ml.corpus import LABELS
from mailmoat.ml.features import N_FEATURES_BITS, describe_token, explainable, extract, vectorize
from mailmoat.ml.filelock import locked
from mailmoat.ml.lessons import forget, lessons_path, remember
from mailmoat.ml.lessons import read as read_lessons
from mailmoat.ml.model import ContentModel, ModelError, bundled_model_path, softmax
from mailmoat.ml.scoring import ContentSettings

if TYPE_CHECKING:
    from mailmoat.config import Config

# The token namespaces a lesson may move (mailmoat.ml.features): for a release, the sender's
# registrable domain; for a report, the words of subject and body (not a single CJK
# character, nor the subject's spelling fragments: neither is a word, and every text shares
# them) and the link domains and path words — never the sender (spam forges it: an ad-hoc
# variant that blamed it flagged the mail of the domain trec06c's spam forged), and only
# buckets that no recently delivered or released message uses (mailmoat.ml.delivered).
REPORT_TOKENS = ("w:", "s:", "ud:", "up:")
LESSON_TOKENS: dict[str, tuple[str, ...]] = {"ham": ("fd:",), "spam": REPORT_TOKENS,
                                             "phish": REPORT_TOKENS}
LESSON_LOGIT_CAP = 1.0
# A report moves words only once this many delivered messages are sampled: with fewer, too
# little of the deployment's good mail is known to tell its words from the spam's.
MIN_COUNTER_EXAMPLES = 200

DELTA_NAME = "content-delta.npz"
CHANGES_DIR = "lesson-changes"  # one file per lesson that moved weights: what `unlearn` takes back
AUDIT_NAME = "learn-audit.jsonl"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # UTC, whole seconds
TARGET_P = 0.9
_DOMAIN_RE = re.compile(r"^[a-z0-9.-]{1,253}$")

_lock = threading.Lock()
_base_cache: dict[tuple[str, float], ContentModel] = {}
_model_cache: dict[tuple[str, str, float, float], ContentModel] = {}


@dataclass(frozen=True)
class LearnResult:
    sha256: str
    label: str
    actor: str
    domain: str
    before: dict[str, float]
    after: dict[str, float]
    steps: int
    time: str
    # What it taught, in plain words: the tokens whose move counts most towards the label
    # in this message, as [kind, words, logit change]: the audit says what was learned,
    # not only that something was (a poisoner's reports show what they blame).
    taught: tuple[tuple[str, str, float], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_dir(config: Config) -> Path:
    return config.data_dir / "model"


def delta_path(config: Config, domain: str | None = None) -> Path:
    if domain:
        d = domain.lower().strip(".")
        if not _DOMAIN_RE.match(d) or ".." in d:
            raise ValueError(f"not a domain name: {domain!r}")
        return model_dir(config) / "domains" / d / DELTA_NAME
    return model_dir(config) / DELTA_NAME


def audit_path(config: Config) -> Path:
    return model_dir(config) / AUDIT_NAME


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


def base_model_path(config: Config, settings: ContentSettings | None = None) -> Path:
    s = settings or config.section("content", ContentSettings)
    return config.resolve_path(s.model_path) if s.model_path else bundled_model_path()


def _base(path: Path) -> ContentModel:
    key = (str(path), _mtime(path))
    m = _base_cache.get(key)
    if m is None:
        m = ContentModel.load(path)
        _base_cache.clear()
        _base_cache[key] = m
    return m


def read_delta(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(rows, values) of a delta file; empty when there is none."""
    if not path.exists():
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["rows"].astype(np.int64), z["values"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable learned delta ({exc})") from exc


def get_model(config: Config, domain: str | None = None,
              settings: ContentSettings | None = None) -> ContentModel:
    """The model the gateway uses: base + global delta (+ the domain's delta). Cached."""
    base_path = base_model_path(config, settings)
    gpath = delta_path(config)
    dpath = delta_path(config, domain) if domain else None
    key = (str(base_path), domain or "", _mtime(gpath), _mtime(dpath) if dpath else 0.0)
    with _lock:
        m = _model_cache.get(key)
        if m is not None:
            return m
        base = _base(base_path)
        deltas = [p for p in (gpath, dpath) if p is not None and p.exists()]
        if not deltas:
            m = base
        else:
            m = base.copy()
            for p in deltas:
                rows, vals = read_delta(p)
                if len(rows) and (vals.shape[1] != len(m.classes) or rows.max() >= m.weights.shape[0]):
                    raise ModelError(f"{p}: learned for a model of another shape; move it away "
                                     "and learn again")
                if len(rows):
                    m.weights[rows] += vals
        for k in [k for k in _model_cache if k[:2] == key[:2]]:
            del _model_cache[k]
        _model_cache[key] = m
        return m


def recipient_domain(msg: ParsedMessage) -> str:
    """The domain per-domain lessons apply to: the recipients' one domain, or "" when they
    are in several (then only global lessons apply)."""
    doms = {domain_of(r) for r in msg.envelope.rcpt_tos}
    return doms.pop() if len(doms) == 1 else ""


def has_domain_delta(config: Config, domain: str) -> bool:
    try:
        return delta_path(config, domain).exists()
    except ValueError:
        return False


def learn(config: Config, raw: bytes, label: str, actor: str = "cli",
          domain: str | None = None) -> LearnResult:
    """Teach the model that `raw` is `label` (ham | spam | phish); returns what changed."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
    settings = config.section("content", ContentSettings)
    msg = parse_message(raw, Envelope(mail_from="", rcpt_tos=()),
                        max_depth=config.scan.max_parse_depth, max_parts=config.scan.max_parts)
    current = get_model(config, domain, settings)
    idx, vals, toks = vectorize(extract(msg), current.n_bits)
    own = {registrable(d) for d in config.internal_domains}
    movable = np.array([_movable(t, label, own) for t in toks], dtype=bool)
    path = delta_path(config, domain)
    if label != "ham" and movable.any():
        # Words the deployment's good mail uses are not blamed (mailmoat.ml.delivered), nor
        # words the model already counts as evidence of ham: those are what good mail it
        # has not seen yet would share with the report (an ad-hoc variant of
        # bench/feedback.py's trec07p replay flagged fewer ham with this rule; docs/ml.md).
        movable &= ~np.isin(idx, _protected(config, settings, path, idx))
        w_now = current.weights[idx]
        movable &= w_now[:, current.classes.index(label)] >= w_now[:, 0]
    target = current.classes.index(label)
    with locked(path):
        w = current.weights[idx].astype(np.float64)
        b = current.intercept.astype(np.float64)

        def probs(w_: np.ndarray) -> np.ndarray:
            return softmax(vals.astype(np.float64) @ w_ + b) if len(idx) else softmax(b)

        p0 = probs(w)
        steps = 0
        x = np.where(movable, vals, 0.0).astype(np.float64)
        norm = float(x @ x)
        if norm > 0:
            onehot = np.zeros(len(current.classes))
            onehot[target] = 1.0
            w0 = w.copy()
            # One lesson is one vote: it may move a token's contribution to any message by
            # at most LESSON_LOGIT_CAP, so a single report cannot condemn (or clear) all
            # mail of a domain; several lessons about the same domain add up.
            limit = np.where(movable, LESSON_LOGIT_CAP / np.maximum(x, 1e-12), 0.0)[:, None]
            p = p0
            while steps < settings.learn_steps and (p[target] < TARGET_P or int(np.argmax(p)) != target):
                # Normalised (as in normalised LMS): each step moves this message's logits
                # by learn_rate × (label − p), however few identity tokens carry it.
                # Two tokens of this message that share a bucket each get their own step,
                # and the merge below adds both.
                stepped = w - settings.learn_rate * x[:, None] * (p - onehot)[None, :] / norm
                stepped = w0 + np.clip(stepped - w0, -limit, limit)
                if np.allclose(stepped, w):
                    break  # every identity token is at its cap
                w = stepped
                steps += 1
                p = probs(w)
        change = (w - current.weights[idx].astype(np.float64)).astype(np.float32)
        merged = _read_merged(path)
        for r, v in zip(idx.tolist(), change):
            if v.any():  # only what moved: the delta stays as small as the lessons
                merged[r] = merged.get(r, np.zeros(len(current.classes), np.float32)) + v
        if steps:
            _write_delta(path, merged)
        after_model = get_model(config, domain, settings)
        p1 = softmax(vals.astype(np.float64) @ after_model.weights[idx].astype(np.float64)
                     + after_model.intercept) if len(idx) else p0
        result = LearnResult(
            sha256=hashlib.sha256(raw).hexdigest(), label=label, actor=actor, domain=domain or "",
            before={c: round(float(p0[i]), 6) for i, c in enumerate(current.classes)},
            after={c: round(float(p1[i]), 6) for i, c in enumerate(current.classes)},
            steps=steps, time=_stamp(), taught=_taught(toks, vals, change, target))
        if steps:
            # What this lesson alone moved, so that `unlearn` can take exactly it back.
            moved = np.flatnonzero(change.any(axis=1))
            _write_change(path, result, idx[moved], change[moved])
        # Also kept whole, to recognise its near-copies (mailmoat.ml.lessons) — the part of
        # a report that reaches spam which changes its domains.
        remember(lessons_path(path), idx, vals, current.n_bits, label, result.sha256,
                 result.time, actor)
        _append_audit(config, result.as_dict())
    return result


TAUGHT_SHOWN = 8


def _taught(toks: list[str], vals: np.ndarray, change: np.ndarray,
            target: int) -> tuple[tuple[str, str, float], ...]:
    """The readable tokens whose change moved this message most towards class `target`
    (against the strongest other class), strongest first: at most TAUGHT_SHOWN."""
    toward = (change[:, target] - np.delete(change, target, axis=1).max(axis=1)) * vals
    order = np.argsort(-toward, kind="stable")
    out: list[tuple[str, str, float]] = []
    seen: set[tuple[str, str]] = set()
    for j in order:
        if toward[j] <= 1e-6 or len(out) >= TAUGHT_SHOWN:
            break
        if not explainable(toks[j]):
            continue
        kind, words = describe_token(toks[j])
        if (kind, words) not in seen:
            seen.add((kind, words))
            out.append((kind, words, round(float(toward[j]), 3)))
    return tuple(out)


@dataclass(frozen=True)
class LessonFilter:
    """Which lessons `unlearn` takes back: those matching every criterion given — about the
    message with this sha256, taught by this actor, taught before this time (UTC, ISO 8601:
    `2026-11-01` or `2026-11-01T12:00:00Z`)."""

    sha256: str | None = None
    taught_by: str | None = None
    taught_before: str | None = None

    def __post_init__(self) -> None:
        if not (self.sha256 or self.taught_by or self.taught_before):
            raise ValueError("say which lessons to take back: a sha256, --taught-by or --taught-before")
        if self.sha256 is not None:
            sha = self.sha256.strip().lower()
            if not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise ValueError(f"not a sha256 (64 hex digits): {self.sha256!r}")
            object.__setattr__(self, "sha256", sha)
        if self.taught_before is not None:
            object.__setattr__(self, "taught_before", _audit_time(self.taught_before))

    def matches(self, sha256: str, when: str, taught_by: str) -> bool:
        return ((self.sha256 is None or sha256 == self.sha256)
                and (self.taught_by is None or taught_by == self.taught_by)
                and (self.taught_before is None or when < self.taught_before))

    def describe(self) -> str:
        parts = [f"about {self.sha256}" if self.sha256 else "",
                 f"taught by {self.taught_by}" if self.taught_by else "",
                 f"taught before {self.taught_before}" if self.taught_before else ""]
        return " ".join(p for p in parts if p)


def _audit_time(text: str) -> str:
    """An ISO date or time as the audit and the lesson memory write it (UTC, seconds)."""
    from datetime import UTC, datetime

    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"not an ISO date or time: {text!r}") from exc
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t.strftime(TIME_FORMAT)


@dataclass(frozen=True)
class UnlearnResult:
    which: dict[str, str | None]  # the LessonFilter's criteria
    messages: list[str]  # sha256 of the messages whose lessons were taken back
    domain: str
    actor: str  # who took them back
    lessons: int  # entries dropped from the lesson memory
    changes: int  # recorded weight changes taken back
    rows: int  # weight rows those changes touched
    time: str

    def as_dict(self) -> dict[str, Any]:
        return {"undo": True, **asdict(self)}


def unlearn(config: Config, which: LessonFilter | str, actor: str = "cli",
            domain: str | None = None) -> UnlearnResult:
    """Take back the lessons `which` selects (a LessonFilter, or the sha256 of a message as
    `learn` printed it and the audit records it) in one scope (global, or `domain`):
    subtract the weight changes they made from the delta, drop them from the lesson memory,
    and say so in the audit. Other lessons keep what they moved, even where they moved the
    same words. So a mistaken report, or everything an account taught (one whose owner was
    careless, or that was taken over to poison the filter), or every lesson older than a
    date, can be undone. Lessons taught before commit 1420953 recorded no change of their own:
    only their lesson-memory entry can be dropped. Raises LookupError when no lesson in the
    scope matches."""
    f = LessonFilter(sha256=which) if isinstance(which, str) else which
    path = delta_path(config, domain)
    n_bits = get_model(config, domain).n_bits
    with locked(path):
        pattern = f"{f.sha256}.*.npz" if f.sha256 else "*.npz"
        files, shas = [], set()
        merged = _read_merged(path)
        touched: set[int] = set()
        for cf in sorted(_changes_dir(path).glob(pattern)):
            with np.load(cf, allow_pickle=False) as z:
                if not f.matches(str(z["sha256"]), str(z["time"]), str(z["taught_by"])):
                    continue
                shas.add(str(z["sha256"]))
                files.append(cf)
                for r, v in zip(z["rows"].astype(np.int64).tolist(), z["values"].astype(np.float32)):
                    if r in merged:
                        merged[r] -= v
                        touched.add(r)
        for r in touched:
            # Rounding leaves a trace where the lesson was the only one to move a row.
            if np.all(np.abs(merged[r]) < 1e-6):
                del merged[r]
        dropped = forget(lessons_path(path), f.matches, n_bits)
        if not files and not dropped:
            raise LookupError(f"no lesson {f.describe()} in the {domain or 'global'} scope")
        shas |= set(dropped)
        if files:
            _write_delta(path, merged)
            for cf in files:
                cf.unlink()
        result = UnlearnResult(
            which={"sha256": f.sha256, "taught_by": f.taught_by, "taught_before": f.taught_before},
            messages=sorted(shas), domain=domain or "", actor=actor, lessons=len(dropped),
            changes=len(files), rows=len(touched),
            time=_stamp())
        _append_audit(config, result.as_dict())
    return result


def expire_lessons(config: Config, max_age_days: float, now: float | None = None,
                   actor: str = "retention") -> int:
    """Take back, in every scope (global and each domain), the lessons taught more than
    `max_age_days` ago (`[content] lesson_max_age_days`, run by the gateway's retention
    purge): a campaign's words stop counting once it is long over, and a deployment's
    lessons do not pile up for ever. Returns how many messages' lessons were taken back;
    nothing when `max_age_days` is 0."""
    if max_age_days <= 0:
        return 0
    cutoff = _stamp((time.time() if now is None else now) - max_age_days * 86400)
    domains_dir = model_dir(config) / "domains"
    scopes: list[str | None] = [None]
    if domains_dir.is_dir():
        scopes += sorted(p.name for p in domains_dir.iterdir() if p.is_dir())
    taken = 0
    for domain in scopes:
        try:
            taken += len(unlearn(config, LessonFilter(taught_before=cutoff), actor, domain).messages)
        except LookupError:
            continue  # nothing that old in this scope
    return taken


def _stamp(t: float | None = None) -> str:
    """A UTC time as the audit, the lesson memory and the change records write it (their
    strings compare in time order, which `LessonFilter.taught_before` relies on)."""
    return time.strftime(TIME_FORMAT, time.gmtime(t))


def _read_merged(path: Path) -> dict[int, np.ndarray]:
    """The delta file as row -> values (writable copies), for `_write_delta` to store back."""
    rows, dvals = read_delta(path)
    return {r: v.copy() for r, v in zip(rows.tolist(), dvals)}


def _write_delta(path: Path, merged: dict[int, np.ndarray]) -> None:
    """Replace the delta file by these rows (removed when none are left)."""
    if not merged:
        path.unlink(missing_ok=True)
        return
    keys = np.array(sorted(merged), dtype=np.int32)
    values = np.stack([merged[int(k)] for k in keys]).astype(np.float32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, rows=keys, values=values)
    os.replace(tmp, path)


def _changes_dir(delta: Path) -> Path:
    return delta.with_name(CHANGES_DIR)


def _write_change(delta: Path, result: LearnResult, rows: np.ndarray, values: np.ndarray) -> None:
    """Record one lesson's own weight change beside the delta (the caller holds its lock)."""
    d = _changes_dir(delta)
    d.mkdir(parents=True, exist_ok=True)
    sha256 = result.sha256
    stamp = time.time_ns()
    while (d / f"{sha256}.{stamp}.npz").exists():
        stamp += 1
    tmp = d / f".{sha256}.{stamp}.tmp.npz"
    np.savez_compressed(tmp, rows=rows.astype(np.int32), values=values.astype(np.float32),
                        sha256=np.array(sha256), time=np.array(result.time),
                        taught_by=np.array(result.actor), label=np.array(result.label))
    os.replace(tmp, d / f"{sha256}.{stamp}.npz")


def _append_audit(config: Config, record: dict[str, Any]) -> None:
    apath = audit_path(config)
    apath.parent.mkdir(parents=True, exist_ok=True)
    with apath.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _protected(config: Config, settings: ContentSettings, path: Path,
               idx: np.ndarray) -> np.ndarray:
    """The buckets a report must not move: those of recently delivered mail and of mail
    released from the quarantine (this scope's and the global lesson memory), leaving out
    their near-copies of the reported message. All of `idx` until the delivered sample holds
    MIN_COUNTER_EXAMPLES messages, or when sampling is off (`delivered_sample_rate` 0: what
    an earlier sample holds may be old)."""
    sample = delivered.read(delivered.sample_path(model_dir(config)))
    if settings.delivered_sample_rate == 0 or len(sample.buckets) < MIN_COUNTER_EXAMPLES:
        return np.unique(idx)
    released = []
    for p in {lessons_path(path), lessons_path(delta_path(config))}:
        mem = read_lessons(p, N_FEATURES_BITS)
        m = mem.matrix
        released += [m.indices[m.indptr[i]:m.indptr[i + 1]].astype(np.uint32)
                     for i, lab in enumerate(mem.labels) if lab == "ham"]
    return sample.protected(idx, released)


def _movable(token: str, label: str, own: set[str] | frozenset[str] = frozenset()) -> bool:
    """May a lesson with this label move this token (before the counter-examples)? A
    release: the sender's domain only, and only a real one: not `fd:<none>` (no parseable
    sender, shared by every such message), not a free-mail domain (one lesson about one
    Gmail user must not judge all of Gmail), and not one of our own domains (`own`), which
    spam forges in From:, nor a public suffix itself (onmicrosoft.com, github.io: a
    release credits one tenant, corp.onmicrosoft.com, never all of them). A report: the
    words (not single CJK characters) and links, except links to our own domains, which
    phishing shows beside its own to look genuine."""
    if not token.startswith(LESSON_TOKENS[label]):
        return False
    if token.startswith("fd:"):
        dom = token[3:]
        return "." in dom and not dom.startswith("<") and dom not in own \
            and not is_freemail(dom) and not is_public_suffix(dom)
    if token.startswith("ud:"):
        return token[3:] not in own
    if token.startswith(("w:c:", "s:c:")):
        return len(token) > len("w:c:") + 1  # a CJK bigram, not a single character
    return True


def read_audit(config: Config) -> list[dict[str, Any]]:
    p = audit_path(config)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
