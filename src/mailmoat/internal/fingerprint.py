"""A cheap content fingerprint for "near-identical": a 64-bit simhash of word 3-grams.

The subject and the start of the body (less a short greeting line) are lower-cased,
digits become 0 and the words are shingled in threes; each shingle's 64-bit hash votes on
each bit. Two messages that differ in a name, a date or a tracking number differ in a few
bits, unrelated text in about half (32). Hashes are built from crc32 of each word,
combined and mixed in numpy, so the fingerprint is the same on every node and costs tens
of microseconds, not a hash call per shingle. 0 means "no text".
"""

from __future__ import annotations

import string
import zlib

import numpy as np

MAX_CHARS = 2000  # of the body: enough to tell one message from another, at a bounded cost
# Digits become 0 and ASCII punctuation a space, so str.split() finds the words: three
# times faster than a \w+ regex (a word joined by non-ASCII punctuation stays one word).
_WORDS = str.maketrans({**{c: " " for c in string.punctuation},
                        **{d: "0" for d in "123456789"}})
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves about half the output bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M2
    x = x ^ (x >> np.uint64(27))
    x = x * _M3
    return x ^ (x >> np.uint64(31))


def _without_greeting(body: str) -> str:
    """The body without a short first line ("Hi Bob," "Dear Ms Chen:"): the one place
    where copies of a message sent one by one usually differ."""
    text = body.lstrip()
    first, nl, rest = text.partition("\n")
    return rest if nl and len(first.split()) <= 4 else text


def simhash(subject: str, body: str) -> int:
    words = f"{subject}\n{_without_greeting(body[:MAX_CHARS])}".lower().translate(_WORDS).split()
    if not words:
        return 0
    w = np.fromiter((zlib.crc32(x.encode("utf-8", "surrogatepass")) for x in words),
                    dtype=np.uint64, count=len(words))
    with np.errstate(over="ignore"):
        if len(w) >= 3:
            h = _mix(w[:-2] * _M1 + (w[1:-1] << np.uint64(21)) + (w[2:] << np.uint64(42)))
        else:
            h = _mix(w * _M1 + np.uint64(len(w)))
    # Bit i of the result is 1 when most shingles have bit i set (bit order is fixed by
    # the little-endian view, the same on every node).
    votes = np.unpackbits(h.astype("<u8").view(np.uint8).reshape(-1, 8), axis=1,
                          bitorder="little").sum(axis=0, dtype=np.int64)
    bits = (votes * 2 > len(h)).astype(np.uint8)
    value = int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")
    return value or 1  # 0 is "no text"


def distance(a: int, b: int) -> int:
    """How many of the 64 bits differ."""
    return (a ^ b).bit_count()


def recipient_key(address: str) -> int:
    """A 32-bit key of a recipient: what the windows and the correspondent filter keep,
    so no address is stored twice per account."""
    return zlib.crc32(address.strip().strip("<>").lower().encode("utf-8", "surrogatepass"))
