"""Real servers on loopback for gateway tests: a downstream sink and the gateway itself."""

from __future__ import annotations

import asyncio
import socket
import time
from contextlib import asynccontextmanager
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from mailmoat.app import Gateway, build
from mailmoat.config import Config, config_from_dict


class Sink:
    """An aiosmtpd downstream that records what it accepts; replies can be scripted."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.rcpt_replies: dict[str, str] = {}  # address -> reply instead of 250
        self.data_replies: list[str] = []  # replies to DATA, used up in order

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        self.messages.append((mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 sink ok"

    def parsed(self) -> list[Message]:
        return [message_from_bytes(raw) for _, _, raw in self.messages]

    async def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"sink got {len(self.messages)} messages, wanted {n}")
            await asyncio.sleep(0.02)


async def start_sink(sink: Sink, port: int = 0) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(sink, hostname="sink.test", enable_SMTPUTF8=True, loop=loop),
        host="127.0.0.1", port=port)


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_config(tmp_path: Path, downstream_port: int, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "smtp": {"listen": "127.0.0.1:0", "hostname": "mx.gateway.test",
                 "relay_domains": ["example.test"], "trusted_networks": []},
        "delivery": {"downstream": f"127.0.0.1:{downstream_port}", "workers": 4,
                     "retry_schedule": [1], "connect_timeout": 5, "tls": "opportunistic"},
        "storage": {"data_dir": str(tmp_path / "data")},
        "web": {"enabled": False},
        "scan": {"network": False},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return config_from_dict(data)


@asynccontextmanager
async def running_gateway(config: Config):
    gw = build(config)
    await gw.start(web=False)
    try:
        yield gw
    finally:
        await gw.stop()


async def wait_until(pred, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


__all__ = ["Gateway", "Sink", "free_port", "gateway_config", "port_of", "running_gateway",
           "start_sink", "wait_until"]
