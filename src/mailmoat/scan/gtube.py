"""GTUBE: the Generic Test for Unsolicited Bulk Email.

Any anti-spam system should reject a message carrying this string; administrators use it to
prove the whole path (intake → scan → policy → SMTP reply) works.
"""

from __future__ import annotations

from mailmoat.message.model import ParsedMessage
from mailmoat.scan.base import Action, BuildContext, Category, Check, ScanResult, SymbolSpec

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class GtubeCheck(Check):
    name = "gtube"
    family = "gtube"
    symbols = {
        "GTUBE": SymbolSpec(100.0, "The message carries the GTUBE anti-spam test string.",
                            Category.SPAM, "gtube"),
    }

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        if GTUBE in msg.raw or GTUBE.decode() in msg.body_text:
            result.add("GTUBE", reason="contains the GTUBE test string")
            result.force(Action.REJECT, "GTUBE test string", Category.SPAM)


def build(ctx: BuildContext) -> list[Check]:
    return [GtubeCheck()]
