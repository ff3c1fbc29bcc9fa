"""From a scan's outcome to what delivery gets: the one place that does it.

Mail is scanned at intake (`smtp.server`, in the SMTP session) or, when the scanner was
broken then, by delivery before it goes anywhere (`relay.deliver`). Both turn the outcome
into the same three things here, so the two paths cannot drift apart: the delivery plan
per recipient, the bytes with our headers (verdict, symbols, Authentication-Results), and
the `Handover` record the spool keeps beside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailmoat.config import Config
from mailmoat.policy.types import Action
from mailmoat.relay.dsn import sender_auth_failed
from mailmoat.relay.headers import add_gateway_headers
from mailmoat.scan.auth import AuthSettings
from mailmoat.spool.queue import Handover

if TYPE_CHECKING:  # delivery's late scan need not load the pipeline to import this
    from mailmoat.scan.engine import ScanOutcome

__all__ = ["ScannerRef", "add_review_copies", "delivery_plan", "extra_recipients",
           "prepare_delivery"]


class ScannerRef:
    """The scanner in force, one reference shared by intake and delivery's late scan: a
    policy reload swaps it here, once, and both scan with the new one from their next
    message on. `current` is None when the gateway runs without a scanner."""

    __slots__ = ("current",)

    def __init__(self, scanner: Any = None) -> None:
        self.current = scanner

    @classmethod
    def of(cls, scanner: Any) -> ScannerRef:
        """`scanner` if it already is a reference, else a new one holding it."""
        return scanner if isinstance(scanner, ScannerRef) else cls(scanner)


def delivery_plan(outcome: ScanOutcome) -> dict[str, str]:
    """recipient -> "deliver" | "quarantine". After DATA one reply covers every recipient,
    so a recipient whose policy says reject while others accept is held in quarantine."""
    return {r: ("quarantine" if v.action in (Action.QUARANTINE, Action.REJECT) else "deliver")
            for r, v in outcome.per_recipient.items()}


def prepare_delivery(outcome: ScanOutcome, raw: bytes, *, mailmoat_id: str, received: str,
                     log: dict[str, Any], config: Config) -> tuple[bytes, Handover]:
    """The bytes to spool (our headers added, forged ones removed) and the hand-over for
    delivery. `log` is the message-log row (`store.log.message_log_data`)."""
    delivered = add_gateway_headers(
        raw, mailmoat_id=mailmoat_id, verdict=outcome.verdict, result=outcome.result,
        hostname=config.smtp.hostname, received=received,
        trusted_authserv_ids=config.section("auth", AuthSettings).trusted_authserv_ids)
    plan = delivery_plan(outcome)
    add_review_copies(outcome, plan, log)
    # Delivery decides on bounces without the scan result: keep what it needs.
    return delivered, Handover(plan=plan, log=log, received=received,
                               sender_auth_failed=sender_auth_failed(outcome.result))


def add_review_copies(outcome: ScanOutcome, plan: dict[str, str], log: dict[str, Any]) -> None:
    """[internal] review_copy_to: the reviewers join the plan (and the message log, as
    recipients with action `copy`) when the internal check asks for a copy and the message
    goes to someone; the caller adds them to the spool entry's recipients (see
    `extra_recipients`). Held mail is reviewed in quarantine, not copied."""
    judged = outcome.result.facts.internal
    if judged is None or not judged.copy_to or "deliver" not in plan.values():
        return
    logged = log.setdefault("recipients", {})
    for r in judged.copy_to:
        if r not in plan:
            plan[r] = "deliver"
            logged[r] = "copy"


def extra_recipients(plan: dict[str, str], rcpts: list[str]) -> list[str]:
    """Who the plan delivers to beyond the envelope's recipients (review copies)."""
    have = set(rcpts)
    return [r for r in plan if r not in have]
