"""Lookalike detection shared by the `urls` and `impersonation` families.

Phishers register names that *read* like a protected one: `pаypal.com` with a Cyrillic `а`,
`examp1e.test`, `exarnple.test` (`rn` reads as `m`), `paypa1-secure.com`, `example-test.com`.
We compare names by their *skeleton* (every character folded to the ASCII letter it is
confused with, after Unicode TR39's idea, using the confusables table shipped with
`confusable-homoglyphs` plus a few multi-letter shapes) and by Damerau-Levenshtein distance.

Everything that can be is computed once when the index is built: the skeletons of the
protected names and their one-deletion neighbourhoods (the "symmetric delete" trick), so a
candidate costs a handful of dict look-ups instead of one edit-distance run per protected name.
Results per domain are memoised, since the same hosts recur across messages.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterable

# One reading of domain names for every check (mailmoat.domains); re-exported for the families
# that import them from here.
from mailmoat.domains import DomainParts as DomainParts
from mailmoat.domains import is_ip as is_ip
from mailmoat.domains import registrable as registrable
from mailmoat.domains import split_domain as split_domain

# Shapes made of several letters that read as one; applied after the per-character fold.
_MULTI = (("rn", "m"), ("vv", "w"), ("cl", "d"))
# ASCII letters and digits that are themselves confusable with other ASCII letters.
_ASCII_FOLD = {"0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "$": "s", "@": "a"}


def _build_fold_table() -> dict[int, str]:
    """char -> ASCII letter/digit it is confusable with, from the confusables data."""
    table: dict[int, str] = {}
    try:
        data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json")
                          .read_text(encoding="utf-8"))
    except Exception:  # the package is a declared dependency; degrade to NFKC only if absent
        data = {}
    for ch, entries in data.items():
        if len(ch) != 1 or ch.isascii():
            continue
        best = ""
        for e in entries:
            c = e.get("c", "").strip("\u200e")
            if len(c) == 1 and c.isascii() and c.isalnum():
                c = c.lower()
                if c.isalpha():  # prefer a letter over a digit
                    best = c
                    break
                best = best or c
        if best:
            table[ord(ch)] = best
    for a, b in _ASCII_FOLD.items():
        table[ord(a)] = b
    return table


_FOLD = _build_fold_table()


@lru_cache(maxsize=65536)
def skeleton(text: str) -> str:
    """A lower-case ASCII-ish form in which confusable spellings coincide."""
    s = unicodedata.normalize("NFKC", text).lower()
    s = s.translate(_FOLD)
    # Latin letters with diacritics (é, ı, ℓ…) that the table did not fold: strip the marks.
    if not s.isascii():
        s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
        s = s.translate(_FOLD)
    for a, b in _MULTI:
        if a in s:
            s = s.replace(a, b)
    return s


def damerau_levenshtein(a: str, b: str, limit: int = 3) -> int:
    """Optimal-string-alignment distance; returns limit+1 as soon as it must exceed limit."""
    if a == b:
        return 0
    la, lb = len(a), len(b)
    if abs(la - lb) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(lb + 1))
    for i in range(1, la + 1):
        cur = [i] + [0] * lb
        row_min = i
        ca = a[i - 1]
        for j in range(1, lb + 1):
            cost = 0 if ca == b[j - 1] else 1
            v = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == b[j - 1]:
                v = min(v, prev2[j - 2] + 1)
            cur[j] = v
            row_min = min(row_min, v)
        if row_min > limit:
            return limit + 1
        prev2, prev = prev, cur
    return min(prev[lb], limit + 1)


def scripts_of(label: str) -> set[str]:
    """Unicode scripts of the letters in a label (digits and '-' ignored)."""
    out: set[str] = set()
    for c in label:
        if not c.isalpha():
            continue
        if c.isascii():
            out.add("LATIN")
            continue
        try:
            name = unicodedata.name(c)
        except ValueError:
            continue
        first = name.split(" ", 1)[0]
        if first in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO"):
            first = "HAN"  # Han with kana/hangul is normal for CJK names
        out.add(first)
    return out


def is_mixed_script(label: str) -> bool:
    s = scripts_of(label)
    return len(s) > 1 and not (s <= {"LATIN", "HAN"})


@dataclass(frozen=True)
class Protected:
    """A name worth protecting: a brand, the company, or a partner."""

    name: str  # shown in reasons: "paypal", "example.test"
    kind: str  # "brand" | "company" | "partner"
    labels: tuple[str, ...]  # registrable labels to protect: ("paypal",), ("example",)
    domains: frozenset[str]  # registrable domains that legitimately belong to it
    full_keys: tuple[str, ...] = ()  # "exampletest" for example.test: catches example-test.com
    # For names that are ordinary words ("ledger", "booking"): only look-alike characters
    # count, not typos or the name inside a longer label (sql-ledger.org is not Ledger).
    strict: bool = False


@dataclass(frozen=True)
class Lookalike:
    protected: Protected
    candidate: str  # the registrable domain that looks alike
    how: str  # "homoglyph" | "typo" | "hyphenated" | "embedded" | "other-tld"
    target: str  # the protected label or domain it imitates

    def describe(self) -> str:
        words = {
            "homoglyph": "uses look-alike characters for",
            "typo": "is one typo away from",
            "hyphenated": "splits up",
            "embedded": "embeds",
            "other-tld": "copies the name of",
        }[self.how]
        return f"{self.candidate} {words} {self.target}"


# RFC 2606 names appear in documentation and examples; nobody can register them.
RESERVED = frozenset({"example.com", "example.net", "example.org"})


def _strip(s: str) -> str:
    return s.replace("-", "").replace(".", "").replace("_", "")


class LookalikeIndex:
    """Answers "does this registrable domain imitate a protected name?" in O(label length)."""

    def __init__(self, protected: Iterable[Protected], min_typo_len: int = 6,
                 min_embed_len: int = 3, other_tld_kinds: tuple[str, ...] = ("company", "partner")):
        self.protected = list(protected)
        self.min_typo_len = min_typo_len
        self.min_embed_len = min_embed_len
        self.other_tld_kinds = other_tld_kinds
        self.legit: dict[str, Protected] = {}
        self.by_skel: dict[str, list[tuple[Protected, str]]] = {}
        self.deletes: dict[str, list[tuple[Protected, str, str]]] = {}
        self.full: dict[str, list[tuple[Protected, str]]] = {}
        self.embed: dict[str, tuple[Protected, str]] = {}
        for p in self.protected:
            for d in p.domains:
                self.legit.setdefault(d, p)
            for label in p.labels:
                sk = skeleton(label)
                self.by_skel.setdefault(sk, []).append((p, label))
                if p.strict:
                    continue
                if len(sk) >= min_typo_len:
                    for i in range(len(sk)):
                        self.deletes.setdefault(sk[:i] + sk[i + 1:], []).append((p, label, sk))
                    self.deletes.setdefault(sk, []).append((p, label, sk))
                if len(sk) >= min_embed_len:
                    self.embed.setdefault(sk, (p, label))
            for key in p.full_keys:
                self.full.setdefault(_strip(skeleton(key)), []).append((p, key))
        self._cache: dict[str, Lookalike | None] = {}

    def owner(self, domain: str) -> Protected | None:
        """The protected name a registrable domain legitimately belongs to, if any."""
        return self.legit.get(domain)

    def match(self, domain: str) -> Lookalike | None:
        """`domain` is a registrable domain (see `registrable`)."""
        try:
            return self._cache[domain]
        except KeyError:
            pass
        res = self._match(domain)
        if len(self._cache) > 65536:
            self._cache.clear()
        self._cache[domain] = res
        return res

    def _match(self, domain: str) -> Lookalike | None:
        if not domain or domain in self.legit or domain in RESERVED or is_ip(domain):
            return None
        parts = split_domain(domain)
        label = parts.label
        sk = skeleton(label)
        # 1. Same skeleton: homoglyphs, or the same name under another suffix.
        for p, plabel in self.by_skel.get(sk, ()):
            if label != plabel:
                return Lookalike(p, domain, "homoglyph", plabel)
            if p.kind in self.other_tld_kinds:
                return Lookalike(p, domain, "other-tld", p.name)
        # 2. Company name with its suffix folded in: example-test.com, exampletest.net.
        stripped = _strip(sk)
        for p, key in self.full.get(stripped, ()):
            return Lookalike(p, domain, "hyphenated", key)
        for p, plabel in self.by_skel.get(stripped, ()):
            if stripped != sk:
                return Lookalike(p, domain, "hyphenated", plabel)
        # 3. One edit away (insert, delete, substitute, transpose) on the skeleton.
        if len(sk) >= self.min_typo_len:
            cands = list(self.deletes.get(sk, ()))
            for i in range(len(sk)):
                cands.extend(self.deletes.get(sk[:i] + sk[i + 1:], ()))
            for p, plabel, psk in cands:
                if psk != sk and damerau_levenshtein(sk, psk, 1) <= 1:
                    return Lookalike(p, domain, "typo", plabel)
        # 4. The protected name as one hyphen-separated token, or as a prefix of a longer label:
        #    paypal-secure.com, secure-paypal.net, appleid-verify.com.
        for token in re.split(r"[-_.\d]+", sk):
            hit = self.embed.get(token)
            if hit is not None and token != sk:
                return Lookalike(hit[0], domain, "embedded", hit[1])
        for n in range(6, len(sk)):
            hit = self.embed.get(sk[:n])
            if hit is not None:
                return Lookalike(hit[0], domain, "embedded", hit[1])
        return None

    def names_in_subdomain(self, host: str) -> Protected | None:
        """paypal.com.account-check.xyz or paypal.verify.xyz: the brand sits left of a foreign
        registrable domain."""
        parts = split_domain(host)
        if not parts.subdomain or parts.registrable in self.legit:
            return None
        for lab in parts.subdomain.split("."):
            for p, _ in self.by_skel.get(skeleton(lab), ()):
                # Three-letter brand names ("dhl", "ups") are too often a department or a word.
                if not p.strict and (len(lab) >= 4 or p.kind != "brand"):
                    return p
        return None
