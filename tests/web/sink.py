"""A real SMTP sink on loopback (aiosmtpd) that keeps what it receives."""

from __future__ import annotations

import socket
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Keep:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content
                                                                                 or envelope.content)))
        return "250 2.0.0 Ok: kept"


class Sink:
    def __init__(self) -> None:
        self.handler = _Keep()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[tuple[str, list[str], bytes]]:
        return self.handler.messages

    def parsed(self, i: int = -1):
        return message_from_bytes(self.messages[i][2], policy=policy.default)
