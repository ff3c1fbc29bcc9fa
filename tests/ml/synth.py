"""A tiny synthetic labelled corpus, made fresh by each test (no corpus data in the repo)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from tests.conftest import make_email

HAM_WORDS = ["meeting", "agenda", "tomorrow", "project", "review", "notes", "attached", "draft", "schedule", "team", "lunch", "report", "budget", "quarterly", "minutes", "thanks", "regards", "colleague", "office", "patch", "release", "build", "server", "config", "question", "answer", "thread", "list", "discussion"]
SPAM_WORDS = ["viagra", "cheap", "pills", "discount", "pharmacy", "offer", "limited", "winner", "prize", "casino", "free", "money", "credit", "loan", "guaranteed", "act", "now", "click", "here", "unsubscribe", "bonus", "replica", "watches", "lowest", "price", "order", "today"]
PHISH_WORDS = ["verify", "your", "account", "suspended", "password", "login", "security", "alert", "confirm", "identity", "unusual", "activity", "bank", "update", "billing", "information", "immediately", "locked", "mailbox", "storage", "expire"]


def message(label: str, rng: random.Random, i: int) -> bytes:
    words = {"ham": HAM_WORDS, "spam": SPAM_WORDS, "phish": PHISH_WORDS}[label]
    body = " ".join(rng.choice(words) for _ in range(40)) + f"\nref {i}\n"
    subject = " ".join(rng.choice(words) for _ in range(4))
    if label == "ham":
        return make_email(subject=subject, body=body, sender=f"Colleague <c{i}@work.test>")
    host = "deals.xyz.biz" if label == "spam" else "secure-login.example.top"
    html = f"<p>{body}</p><a href='http://{host}/promo/{i}'>click here</a>"
    return make_email(subject=subject, body=body, html=html, sender=f"Offers <o{i}@{host}>")


def make_corpus(root: Path, n: int = 40, seed: int = 7, labels: tuple[str, ...] = ("ham", "spam", "phish")) -> Path:
    """Write LABEL/synth/N.eml files and index-synth.tsv under `root`; return root."""
    rng = random.Random(seed)
    rows = ["path\tlabel\tcorpus\tsha256\tgroup"]
    for label in labels:
        d = root / label / "synth"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            raw = message(label, rng, i)
            p = d / f"{i}.eml"
            p.write_bytes(raw)
            sha = hashlib.sha256(raw).hexdigest()
            rows.append(f"{label}/synth/{i}.eml\t{label}\tsynth\t{sha}\tg{label}{i // 2}")
    (root / "index-synth.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
