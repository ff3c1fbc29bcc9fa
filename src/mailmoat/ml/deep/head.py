"""The trained head on top of the sentence embedding, and the named prototypes.

`head.npz` holds a small dense network (logistic regression = one layer, or an MLP with ReLU
hidden layers) from the 384-d embedding to P(ham), P(spam), P(phish), plus labelled
prototype phrases with their embeddings, so a verdict can name the closest known pattern
("nearest known pattern: 'account verification request'"). Inference is a few small numpy
matmuls: microseconds next to the encoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mailmoat.ml.deep.adapter import is_adapter_key

__all__ = ["PROTOTYPES", "Head", "default_head_path"]

# (class, short name shown to admins, phrase that is embedded). The names appear in symbol
# reasons, so they are plain language.
PROTOTYPES: tuple[tuple[str, str, str], ...] = (
    ("phish", "account verification request",
     "Verify your account now or it will be suspended. Click here to confirm your identity."),
    ("phish", "password expiry notice",
     "Your password expires today. Log in through the link below to keep your current password."),
    ("phish", "unusual sign-in alert",
     "We detected unusual sign-in activity on your account. Secure your account immediately."),
    ("phish", "mailbox quota warning",
     "Your mailbox is full and you cannot receive new messages. Upgrade your storage now."),
    ("phish", "bank details confirmation",
     "Dear customer, please update your online banking details to avoid account restriction."),
    ("phish", "parcel delivery fee",
     "Your package could not be delivered. Pay the customs fee to schedule a new delivery."),
    ("phish", "shared document lure",
     "A secure document has been shared with you. Sign in with your email password to view it."),
    ("phish", "payment failed notice",
     "Your payment was declined. Update your billing information to keep your subscription."),
    ("spam", "online pharmacy offer",
     "Cheap medication without prescription, viagra and cialis at the lowest prices."),
    ("spam", "lottery or prize win",
     "Congratulations, you have won the lottery prize. Send your details to claim your money."),
    ("spam", "advance-fee fund transfer",
     "I am a bank official and need your help to transfer millions of dollars abroad."),
    ("spam", "discount sales offer",
     "Limited time offer, buy now with a huge discount, free shipping on all orders."),
    ("spam", "work-from-home money scheme",
     "Make thousands of dollars a week working from home, no experience needed."),
    ("spam", "replica luxury goods",
     "Replica watches and designer handbags, luxury brands at a fraction of the price."),
    ("spam", "stock promotion",
     "Hot stock alert: this company is about to explode, buy shares before the news."),
    ("spam", "dating or adult content",
     "Lonely singles in your area want to meet you tonight, see their photos."),
    ("spam", "loan or mortgage offer",
     "Refinance your mortgage at the lowest rate, get approved for a loan today."),
    ("spam", "fake invoice service",
     "代开发票 增值税发票 优惠 联系电话"),
    ("ham", "meeting or scheduling",
     "Can we move our meeting to Thursday afternoon? I have attached the agenda."),
    ("ham", "personal conversation",
     "Thanks for your reply, it was great to see you last weekend. Talk soon."),
    ("ham", "technical discussion",
     "I looked at the patch and the build fails on the test suite, see the error log."),
    ("ham", "mailing-list discussion",
     "Re: the proposal on the list. I agree with the previous poster about the release plan."),
    ("ham", "work report",
     "Here is the weekly project status report with the numbers for the quarter."),
    ("ham", "order or service notification",
     "Your order has shipped and will arrive on Tuesday. Track your parcel in your account."),
    ("ham", "newsletter you subscribed to",
     "This week's newsletter: articles, events and community news."),
)

CLASSES = ("ham", "spam", "phish")


def default_head_path() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "deep" / "head.npz"


@dataclass
class Prediction:
    p_ham: float
    p_spam: float
    p_phish: float
    pattern: str  # the closest prototype of the winning class
    pattern_similarity: float

    @property
    def p_bad(self) -> float:
        return self.p_spam + self.p_phish


class Head:
    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], proto_emb: np.ndarray,
                 proto_label: list[str], proto_name: list[str], meta: dict[str, Any],
                 adapter: dict[str, np.ndarray] | None = None) -> None:
        self.layers = layers
        # A fine-tuned head comes with the encoder update it was trained with
        # (mailmoat.ml.deep.adapter); empty for a head on the frozen published encoder.
        self.adapter = adapter or {}
        self.proto_emb = proto_emb.astype(np.float32)
        self.proto_label = proto_label
        self.proto_name = proto_name
        self.meta = meta

    @property
    def max_tokens(self) -> int:
        return int(self.meta.get("max_tokens", 128))

    @classmethod
    def load(cls, path: str | Path | None = None) -> Head:
        p = Path(path) if path else default_head_path()
        with np.load(p, allow_pickle=False) as z:
            n = int(z["n_layers"])
            layers = [(z[f"W{i}"].astype(np.float32), z[f"b{i}"].astype(np.float32))
                      for i in range(n)]
            return cls(layers, z["proto_emb"], [str(x) for x in z["proto_label"]],
                       [str(x) for x in z["proto_name"]], json.loads(str(z["meta"])),
                       {k: z[k] for k in z.files if is_adapter_key(k)})

    def save(self, path: str | Path) -> None:
        arrays: dict[str, Any] = {"n_layers": np.array(len(self.layers))}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"W{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        arrays.update(self.adapter)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, proto_emb=self.proto_emb.astype(np.float16).astype(np.float32),
                            proto_label=np.array(self.proto_label),
                            proto_name=np.array(self.proto_name),
                            meta=np.array(json.dumps(self.meta)), **arrays)

    def proba(self, emb: np.ndarray) -> np.ndarray:
        """(n, 3) probabilities in CLASSES order for (n, 384) embeddings."""
        h = emb.astype(np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        h = h - h.max(axis=1, keepdims=True)
        e = np.exp(h)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, emb: np.ndarray, threshold: float = 0.5) -> Prediction:
        """Probabilities and the closest prototype of the side of `threshold` it falls on."""
        p = self.proba(emb[None, :])[0]
        if p[1] + p[2] < threshold:
            cls_idx = [i for i, lab in enumerate(self.proto_label) if lab == "ham"]
        else:
            # For spam-like mail, name the closest spam or phish pattern.
            winner = "phish" if p[2] >= p[1] else "spam"
            cls_idx = [i for i, lab in enumerate(self.proto_label) if lab == winner]
        sims = self.proto_emb[cls_idx] @ emb
        j = int(np.argmax(sims))
        return Prediction(float(p[0]), float(p[1]), float(p[2]),
                          self.proto_name[cls_idx[j]], float(sims[j]))
