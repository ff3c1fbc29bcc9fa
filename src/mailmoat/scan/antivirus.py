"""Check family `antivirus`: ClamAV through clamd's INSTREAM command.

The raw message is streamed to clamd (so clamd's own MIME, archive and document parsers see
everything, exactly as it arrived); optionally each decoded attachment is streamed too. A hit
forces the configured action (reject by default) with the signature name as the reason.

When clamd cannot be reached, answers with an error or is too slow, the check says so with
`AV_UNAVAILABLE` (and the error) instead of the generic `ANTIVIRUS_FAIL`, then either lets the
mail flow (fail-open, the default: the symbol weighs 0) or, with `fail_closed = true`, forces
quarantine so nothing unscanned reaches a mailbox; an administrator releases it once clamd
is back. We quarantine rather than tempfail because the message is already spooled and
acknowledged when the scan runs: the gateway never loses mail, and never bounces it for our
own outage.

Protocol (clamd(8)): send `zINSTREAM\\0`, then chunks as a 4-byte big-endian length plus
data, then a zero length; clamd answers `stream: OK`, `stream: <signature> FOUND` or
`<message> ERROR`, NUL-terminated. One connection per scan; clamd closes it after replying.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from mailmoat.config import Section
from mailmoat.message.model import Envelope, ParsedMessage
from mailmoat.scan.base import Action, BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import AntivirusFacts, VirusFound

_G = "antivirus"


class ClamdError(Exception):
    """clamd could not be reached or did not give a verdict."""


class AntivirusSettings(Section):
    clamd: str = Field("", description='"unix:/run/clamav/clamd.ctl" or "tcp:127.0.0.1:3310"; '
                       "empty: antivirus off")
    action: Literal["reject", "quarantine"] = Field(
        "reject", description="what a virus forces: reject | quarantine")
    fail_closed: bool = Field(False, description="quarantine mail that could not be scanned "
                              "because clamd is down (default: let it through, with "
                              "AV_UNAVAILABLE)")
    scan: Literal["message", "attachments", "both"] = Field(
        "message", description="message | attachments | both: what is streamed")
    timeout: float = Field(15.0, description="seconds for one whole scan, connect included")
    connect_timeout: float = Field(2.0, description="seconds to connect to clamd")
    chunk_size: int = Field(64 * 1024, description="bytes per INSTREAM chunk")

    @field_validator("action")
    @classmethod
    def _action(cls, v: str) -> str:
        if v not in ("reject", "quarantine"):
            raise ValueError("action must be reject or quarantine")
        return v

    @field_validator("scan")
    @classmethod
    def _scan(cls, v: str) -> str:
        if v not in ("message", "attachments", "both"):
            raise ValueError("scan must be message, attachments or both")
        return v

    @field_validator("clamd")
    @classmethod
    def _address(cls, v: str) -> str:
        if v:
            parse_address(v)
        return v


@dataclass(frozen=True)
class ClamdAddress:
    unix_path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.unix_path}" if self.unix_path else f"tcp:{self.host}:{self.port}"


def parse_address(text: str) -> ClamdAddress:
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a socket path")
        return ClamdAddress(unix_path=path)
    if text.startswith("tcp:"):
        host, sep, port = text[4:].rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"tcp address must be tcp:HOST:PORT, not {text!r}")
        return ClamdAddress(host=host.strip("[]"), port=int(port))
    if text.startswith("/"):
        return ClamdAddress(unix_path=text)
    raise ValueError(f'clamd address must start with "unix:" or "tcp:", not {text!r}')


class ClamdClient:
    """A tiny asyncio clamd client: PING, VERSION and INSTREAM."""

    def __init__(self, address: str | ClamdAddress, *, timeout: float = 15.0,
                 connect_timeout: float = 2.0, chunk_size: int = 64 * 1024) -> None:
        self.address = parse_address(address) if isinstance(address, str) else address
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.chunk_size = chunk_size

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        a = self.address
        try:
            if a.unix_path:
                conn = asyncio.open_unix_connection(a.unix_path)
            else:
                conn = asyncio.open_connection(a.host, a.port)
            return await asyncio.wait_for(conn, self.connect_timeout)
        except asyncio.TimeoutError as exc:
            raise ClamdError(f"connecting to clamd at {a} timed out after "
                             f"{self.connect_timeout:g}s") from exc
        except OSError as exc:
            raise ClamdError(f"cannot connect to clamd at {a}: {exc.strerror or exc}") from exc

    async def _command(self, command: bytes, payloads: tuple[bytes, ...] = ()) -> str:
        async def exchange() -> str:
            reader, writer = await self._connect()
            try:
                # Each frame (length + chunk, and the command with the first one) goes out as
                # one write: small separate segments invite Nagle/delayed-ACK stalls on TCP.
                pending = b"z" + command + b"\0"
                for data in payloads:
                    for off in range(0, len(data), self.chunk_size):
                        chunk = data[off:off + self.chunk_size]
                        writer.write(pending + struct.pack(">I", len(chunk)) + chunk)
                        pending = b""
                        await writer.drain()  # respect clamd's pace: bounded buffering
                if payloads:
                    pending += struct.pack(">I", 0)
                writer.write(pending)
                await writer.drain()
                reply = await reader.readuntil(b"\0")
                return reply.rstrip(b"\0").decode("utf-8", "replace").strip()
            except asyncio.IncompleteReadError as exc:
                partial = exc.partial.decode("utf-8", "replace").strip("\0 \n")
                raise ClamdError(f"clamd at {self.address} closed the connection"
                                 + (f": {partial}" if partial else "")) from exc
            except (ConnectionError, OSError) as exc:
                # clamd resets the connection when a stream passes its StreamMaxLength; its
                # "size limit exceeded" line is lost with the reset, so say what it likely is.
                hint = (" while receiving the stream; is the message larger than clamd's "
                        "StreamMaxLength?" if payloads else "")
                raise ClamdError(f"clamd at {self.address} dropped the connection ({exc})"
                                 f"{hint}") from exc
            finally:
                writer.close()
                try:
                    await writer.wait_closed()
                except Exception:
                    pass

        try:
            return await asyncio.wait_for(exchange(), self.timeout)
        except asyncio.TimeoutError as exc:
            raise ClamdError(f"clamd at {self.address} did not answer within "
                             f"{self.timeout:g}s") from exc

    async def ping(self) -> bool:
        return (await self._command(b"PING")) == "PONG"

    async def version(self) -> str:
        return await self._command(b"VERSION")

    async def instream(self, data: bytes) -> str | None:
        """The signature name if clamd finds one, None if clean; ClamdError otherwise."""
        reply = await self._command(b"INSTREAM", (data,))
        # "stream: OK" | "stream: Eicar-Signature FOUND" | "INSTREAM size limit exceeded. ERROR"
        body = reply.split(": ", 1)[1] if reply.startswith("stream: ") else reply
        if body == "OK":
            return None
        if body.endswith(" FOUND"):
            return body[: -len(" FOUND")].strip() or "unknown signature"
        raise ClamdError(f"clamd at {self.address} answered: {reply[:200]}")


class ClamavCheck(Check):
    name = "clamav"
    family = "antivirus"
    symbols = {
        "AV_VIRUS_FOUND": SymbolSpec(
            # The forced action decides; the weight stays under the default reject threshold
            # so that `action = "quarantine"` is not outvoted by the score alone.
            10.0, "ClamAV found malware; the message is rejected or quarantined whatever its "
            "score.", Category.MALWARE, _G),
        "AV_UNAVAILABLE": SymbolSpec(
            0.0, "The message could not be scanned for viruses because clamd was down, slow "
            "or answered with an error.", Category.POLICY, _G),
    }

    def __init__(self, settings: AntivirusSettings) -> None:
        self.settings = settings
        self.client = ClamdClient(settings.clamd, timeout=settings.timeout,
                                  connect_timeout=settings.connect_timeout,
                                  chunk_size=settings.chunk_size)
        self.action = Action.REJECT if settings.action == "reject" else Action.QUARANTINE
        # Our own timeout fires first, so an outage is AV_UNAVAILABLE, not ANTIVIRUS_FAIL.
        self.timeout = settings.timeout + 5.0

    def start_early(self, raw: bytes, envelope: Envelope) -> asyncio.Future[Any] | None:
        # clamd parses the raw message itself, on its own core, while we parse ours.
        if self.settings.scan not in ("message", "both"):
            return None
        return asyncio.ensure_future(self.client.instream(raw))

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        early = result.early.pop(self.name, None)
        targets: list[tuple[str, bytes]] = []
        if self.settings.scan in ("message", "both"):
            targets.append(("the message", msg.raw))
        if self.settings.scan in ("attachments", "both"):
            targets += [(f"attachment {a.filename or '(unnamed)'!r}", a.content)
                        for a in msg.attachments if a.content]
        # At most four streams per message at once: a message with 200 attachments must not
        # take 200 of clamd's connection slots.
        gate = asyncio.Semaphore(4)

        async def scan_one(data: bytes) -> str | None:
            async with gate:
                return await self.client.instream(data)

        # The whole message, when it is already on its way (start_early), comes first.
        jobs: list[Awaitable[str | None]] = [early] if early is not None else []
        jobs += [scan_one(d) for _, d in targets[len(jobs):]]
        try:
            verdicts = await asyncio.gather(*jobs)
        except ClamdError as exc:
            result.add("AV_UNAVAILABLE", reason=f"not scanned for viruses: {exc}")
            if self.settings.fail_closed:
                result.force(Action.QUARANTINE, "virus scanner unavailable (fail_closed)",
                             Category.POLICY)
            return
        found = [(what, sig) for (what, _), sig in zip(targets, verdicts) if sig]
        result.facts.antivirus = AntivirusFacts(
            engine="clamav", scanned=tuple(what for what, _ in targets),
            found=tuple(VirusFound(where=what, signature=sig) for what, sig in found))
        if not found:
            return
        sigs = tuple(dict.fromkeys(sig for _, sig in found))
        where = ", ".join(dict.fromkeys(what for what, _ in found))
        result.add("AV_VIRUS_FOUND", reason=f"ClamAV found {', '.join(sigs)} in {where}",
                   options=sigs)
        result.force(self.action, f"virus found: {', '.join(sigs)}", Category.MALWARE)


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("antivirus", AntivirusSettings)
    if not settings.clamd:
        return []
    return [ClamavCheck(settings)]
