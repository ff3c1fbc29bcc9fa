"""Messages in the message log as the gateway writes them, for job tests without a gateway."""

from __future__ import annotations

import time
from typing import Any

from mailmoat.config import Config
from mailmoat.message.model import Direction, Envelope
from mailmoat.store.log import LogWriter, message_log_data
from tests.conftest import make_config, scan_bytes

OWN_DOMAIN = "corp.test"


def corp_config(**sections: dict[str, Any]) -> Config:
    """A test config whose own domain is corp.test, where the job tests' mailboxes are:
    recall touches mailboxes in the gateway's own domains only."""
    return make_config(smtp={"relay_domains": [OWN_DOMAIN]}, **sections)


async def log_delivered(writer: LogWriter, mid: str, raw: bytes, rcpts: tuple[str, ...],
                        *, direction: Direction = Direction.INBOUND,
                        mail_from: str = "lure@phish.test",
                        received_at: float | None = None) -> None:
    """Log message `mid` as scanned and delivered to every recipient in `rcpts`."""
    out = await scan_bytes(raw, rcpts=rcpts, direction=direction, mail_from=mail_from)
    env = Envelope(mail_from=mail_from, rcpt_tos=rcpts, client_ip="192.0.2.10",
                   direction=direction, received_at=received_at or time.time())
    data = message_log_data(mailmoat_id=mid, envelope=env, outcome=out)
    data["recipients"] = {r: "accept" for r in rcpts}
    assert writer.log_message(data).result(10) is True
    writer.log_delivery(mid, [(r, "delivered", "250 ok") for r in rcpts], 1).result(10)
