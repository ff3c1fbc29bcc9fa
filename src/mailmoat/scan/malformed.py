"""Malformed-message checks: defects found while parsing, and missing essential headers.

Mail we cannot parse is not dropped: `MIME_UNPARSEABLE` forces the configured
`[policy] malformed_action` (quarantine by default) so an administrator can look at it.
"""

from __future__ import annotations

import re

from mailmoat.message.model import ParsedMessage
from mailmoat.scan.base import Action, BuildContext, Category, Check, ScanResult, SymbolSpec

_G = "malformed"

# Parse defects that are common in legitimate mail get small weights; the ones that only
# broken or evasive mail shows get more.
DEFECT_WEIGHTS: dict[str, tuple[float, str]] = {
    "MIME_UNPARSEABLE": (5.0, "The message could not be parsed as MIME at all."),
    "MIME_TOO_DEEP": (3.0, "MIME parts are nested deeper than the configured limit."),
    "MIME_TOO_MANY_PARTS": (3.0, "The message has more MIME parts than the configured limit."),
    "MIME_NUL_BYTES": (2.0, "The message contains NUL bytes, which RFC 5322 forbids."),
    "MIME_HUGE_HEADER": (2.0, "A header is longer than 64 KiB."),
    "MIME_NO_HEADERS": (3.0, "The message has no header section."),
    "MIME_JUNK_BEFORE_HEADERS": (0.5, ("Stray lines that are not header fields precede the "
                                  "header section; the headers after them were read.")),
    "MIME_BROKEN_FOLD": (0.5, ("A header continues on a line without the leading space "
                          "folding requires; it was read as the continuation it is.")),
    "MIME_START_BOUNDARY_NOT_FOUND": (1.0, "A multipart body lacks its first boundary."),
    "MIME_CLOSE_BOUNDARY_NOT_FOUND": (0.5, "A multipart body lacks its closing boundary."),
    "MIME_NO_BOUNDARY_IN_MULTIPART": (1.0, "A multipart part declares no boundary."),
    "MIME_MULTIPART_INVARIANT_VIOLATION": (1.0, "A multipart type holds a non-multipart body."),
    "MIME_MISPLACED_ENVELOPE_HEADER": (0.5, "An mbox 'From ' line sits among the headers."),
    "MIME_MISSING_HEADER_BODY_SEPARATOR": (0.5, "No blank line separates headers and body."),
    "MIME_INVALID_BASE64_PADDING": (0.3, "A base64 part has wrong padding."),
    "MIME_INVALID_BASE64_CHARACTERS": (0.3, "A base64 part holds invalid characters."),
    "MIME_INVALID_BASE64_LENGTH": (0.3, "A base64 part has an impossible length."),
    "MIME_UNDECODABLE_PART": (1.0, "A MIME part could not be decoded."),
    "MIME_FIRST_HEADER_LINE_IS_CONTINUATION": (0.5, "The first header line is a continuation."),
    "MIME_MALFORMED_HEADER": (0.5, "A header line is malformed."),
    "MIME_NON_PRINTABLE": (0.3, "A header holds non-printable characters."),
    # Past a parse budget (message/parse.py): read by a linear fallback, or not at all.
    "HTML_TOO_DEEP": (3.0, ("The HTML body nests deeper (or a select holds more options) "
                      "than [scan] max_html_depth; it was read without building a tree.")),
    "HTML_TOO_MANY_TAGS": (3.0, ("The HTML body has more tags than [scan] max_html_tags; it "
                           "was read without building a tree.")),
    "HTML_TOO_MANY_ATTRIBUTES": (3.0, ("An HTML tag has more than 1,000 attributes; the body "
                                 "was read without building a tree.")),
    "PARSE_TIMEOUT": (5.0, ("Parsing the message took longer than [scan] parse_timeout; it "
                      "was judged on its raw text.")),
}

SYMBOLS: dict[str, SymbolSpec] = {
    name: SymbolSpec(w, d, Category.POLICY, _G) for name, (w, d) in DEFECT_WEIGHTS.items()
}
SYMBOLS.update({
    "MIME_OTHER_DEFECT": SymbolSpec(0.3, "The MIME parser reported another defect.", Category.POLICY, _G),
    "MISSING_FROM": SymbolSpec(2.0, "The message has no From header.", Category.SPAM, _G),
    "MISSING_DATE": SymbolSpec(0.5, "The message has no Date header.", Category.SPAM, _G),
    "MISSING_MESSAGE_ID": SymbolSpec(0.5, "The message has no Message-ID header.", Category.SPAM, _G),
    "MULTIPLE_FROM": SymbolSpec(2.0, "The message has more than one From header.", Category.SPAM, _G),
    "HEADER_INJECTION": SymbolSpec(
        4.0, "A header's value carries further header fields (From:, Content-Type:, "
        "Message-ID: …): a web form's mail function abused by header injection.",
        Category.SPAM, _G),
})

# Header fields a mail script writes itself. A folded line of Subject/To/Cc/Reply-To that
# starts with one of them means a line break was smuggled into a form field (the classic PHP
# mail() header injection): the attacker's own From, Content-Type and body end up folded into
# the header. Only fold lines count, so a subject that merely talks about "From: and To:"
# does not.
_INJECTED = re.compile(rb"(?i)[ \t]+(from|to|cc|bcc|reply-to|message-id|content-type|"
                       rb"mime-version|content-transfer-encoding|x-mailer)[ \t]*:[ \t]*\S")
_INJECTABLE = (b"subject", b"to", b"cc", b"reply-to")
_MAX_HEADER_BYTES = 256 * 1024
_UNPARSEABLE_ACTIONS = {"quarantine": Action.QUARANTINE, "reject": Action.REJECT}
# A message past a parse budget was read only roughly (or not at all): like unparseable
# mail it is held (malformed_action) rather than delivered on a partial reading. It is also
# the shape of a denial-of-service attempt, which nobody sends by mistake.
_OVER_BUDGET = ("HTML_TOO_DEEP", "HTML_TOO_MANY_TAGS", "HTML_TOO_MANY_ATTRIBUTES",
                "PARSE_TIMEOUT")


class MalformedCheck(Check):
    name = "malformed"
    family = "malformed"
    symbols = SYMBOLS

    def __init__(self, unparseable_action: str = "quarantine") -> None:
        self.unparseable_action = _UNPARSEABLE_ACTIONS.get(unparseable_action)

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        for defect in msg.defects:
            if defect in SYMBOLS:
                result.add(defect, reason=SYMBOLS[defect].description)
            else:
                result.add("MIME_OTHER_DEFECT", reason=f"parser defect {defect}", options=(defect,))
        if "MIME_UNPARSEABLE" in msg.defects and self.unparseable_action is not None:
            result.force(self.unparseable_action, "message could not be parsed", Category.POLICY)
        over = [d for d in _OVER_BUDGET if d in msg.defects]
        if over and self.unparseable_action is not None:
            result.force(self.unparseable_action, f"message exceeds a parse budget ({over[0]})",
                         Category.POLICY)
        if "MIME_UNPARSEABLE" in msg.defects or "MIME_NO_HEADERS" in msg.defects:
            return
        froms = msg.header_all("from")
        if not froms:
            result.add("MISSING_FROM", reason="no From header")
        elif len(froms) > 1:
            result.add("MULTIPLE_FROM", reason=f"{len(froms)} From headers")
        if msg.header("date") is None:
            result.add("MISSING_DATE", reason="no Date header")
        if not msg.message_id:
            result.add("MISSING_MESSAGE_ID", reason="no Message-ID header")
        self._injection(msg, result)

    @staticmethod
    def _injection(msg: ParsedMessage, result: ScanResult) -> None:
        # A folded line leaves two blanks in the decoded value; no fold with a colon, no
        # field can hide in it (the usual case, decided without touching the raw bytes).
        if not any(":" in v and ("  " in v or "\t" in v) for k, v in msg.headers
                   if k.lower().encode() in _INJECTABLE):
            return
        head = msg.raw[:_MAX_HEADER_BYTES]
        end = head.find(b"\n\r\n")
        end2 = head.find(b"\n\n")
        cut = min(e for e in (end, end2, len(head)) if e >= 0)
        current = b""
        found: set[str] = set()
        for line in head[:cut].split(b"\n"):
            if line[:1] in (b" ", b"\t"):
                if current in _INJECTABLE:
                    m = _INJECTED.match(line)
                    if m:
                        found.add(m.group(1).decode().lower())
                continue
            if len(found) >= 2:
                break
            found = set()
            current = line.split(b":", 1)[0].strip().lower() if b":" in line else b""
        if len(found) >= 2:
            result.add("HEADER_INJECTION",
                       reason=f"folded lines of the {current.decode(errors='replace').title()} "
                       f"header carry the fields {', '.join(sorted(found))}")


def build(ctx: BuildContext) -> list[Check]:
    return [MalformedCheck(ctx.config.policy.malformed_action)]
