"""What the deep model reads of a message: the subject, then the start of the body text.

Both training and the live check call `message_text`, so the model sees mail at scan time
exactly as it saw it while learning.
"""

from __future__ import annotations

import re

from mailmoat.message.model import ParsedMessage

_WS = re.compile(r"\s+")
_URL = re.compile(r"https?://\S+|www\.\S+", re.I)

# 64 word pieces (the bundled head; 128 for a head trained so) are rarely more than ~300
# (~600) characters of prose; 2000 leaves room for markup-like noise without tokenising a
# 100 KB body we would truncate anyway (the encoder tokenises only a prefix of this, too).
MAX_CHARS = 2000


def message_text(msg: ParsedMessage, max_chars: int = MAX_CHARS) -> str:
    body = msg.body_text[: max_chars * 2]
    # A URL costs many word pieces and says little to a sentence model; the URL checks own it.
    body = _URL.sub(" link ", body)
    text = f"{msg.subject}\n{body}"
    return _WS.sub(" ", text).strip()[:max_chars]


def text_of(raw: bytes) -> str:
    """`message_text` of a raw message (training and benches; the check has it parsed)."""
    from mailmoat.message.parse import parse_message

    return message_text(parse_message(raw))
