"""The parse-once message model shared by every check.

`parse_message(raw, envelope)` (in `parse.py`) builds a `ParsedMessage` exactly once per
message; checks read it and never parse the bytes again.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


class Direction(str, enum.Enum):
    INBOUND = "inbound"  # from the outside world to one of our domains
    OUTBOUND = "outbound"  # from one of our users to the outside world
    INTERNAL = "internal"  # between our own users, through the smarthost


@dataclass(frozen=True)
class Envelope:
    """What the SMTP session told us, as opposed to what the headers claim."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    client_ip: str | None = None
    client_name: str | None = None  # reverse DNS of the client, when known
    helo: str | None = None
    auth_user: str | None = None
    tls: bool = False
    direction: Direction = Direction.INBOUND
    received_at: float = field(default_factory=time.time)

    @property
    def mail_from_domain(self) -> str:
        return domain_of(self.mail_from)


@dataclass(frozen=True)
class Address:
    display_name: str
    address: str  # lower-cased addr-spec; "" when the header had none we could read

    @property
    def domain(self) -> str:
        return domain_of(self.address)

    @property
    def local_part(self) -> str:
        return self.address.rsplit("@", 1)[0] if "@" in self.address else self.address


@dataclass(frozen=True)
class Url:
    """A URL found in the message, with where it came from."""

    url: str  # as found, stripped of surrounding punctuation
    scheme: str  # lower-case: http, https, mailto, data, javascript, …
    host: str  # lower-case, IDNA-decoded to Unicode when it was punycode ("" if none)
    port: int | None
    path: str
    source: str  # "text", "html" (href/src/action) or "attachment"
    display_text: str = ""  # the visible anchor text of an HTML link
    tag: str = ""  # html tag the URL was found on: a, img, form, iframe, …
    raw_host: str = ""  # the host exactly as written (punycode kept), lower-case


@dataclass(frozen=True)
class Attachment:
    """A leaf MIME part that is not a text body, or a file inside an archive."""

    filename: str
    declared_type: str  # Content-Type as declared by the sender
    detected_type: str  # by content (libmagic when available), "" when unknown
    size: int
    sha256: str
    content: bytes = field(repr=False)
    depth: int = 0  # MIME nesting depth of the part
    disposition: str = ""  # attachment | inline | ""
    container: str = ""  # for files found inside archives: the archive's name

    @property
    def extension(self) -> str:
        name = self.filename.lower()
        return name.rsplit(".", 1)[1] if "." in name else ""


@dataclass(frozen=True)
class ParsedMessage:
    """One message, decoded once. Checks treat it as read-only."""

    raw: bytes = field(repr=False)
    envelope: Envelope
    headers: tuple[tuple[str, str], ...]  # decoded (name, value) in order, names as written
    from_: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    sender: Address | None
    subject: str
    message_id: str
    date: str
    text: str  # text/plain bodies joined
    html: str = field(repr=False)  # text/html bodies joined (raw HTML)
    html_text: str  # visible text of the HTML bodies
    urls: tuple[Url, ...]
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]  # parse problems (MAILMOAT_* names), empty for clean MIME
    mime_depth: int
    part_count: int
    content_type: str  # of the top-level entity

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def from_addr(self) -> Address | None:
        return self.from_[0] if self.from_ else None

    @property
    def from_domain(self) -> str:
        a = self.from_addr
        return a.domain if a else ""

    @property
    def body_text(self) -> str:
        """Plain text if there is any, else the text of the HTML."""
        return self.text if self.text.strip() else self.html_text

    @cached_property
    def _headers_by_name(self) -> dict[str, tuple[str, ...]]:
        # Built on first use: checks ask for headers by name many times per message.
        index: dict[str, list[str]] = {}
        for k, v in self.headers:
            index.setdefault(k.lower(), []).append(v)
        return {k: tuple(v) for k, v in index.items()}

    @cached_property
    def derived(self) -> dict[str, Any]:
        """Values derived from the message by one module and read by several checks (the
        tier-1 features: `mailmoat.ml.features.features_of`), so each is computed once."""
        return {}

    def header(self, name: str) -> str | None:
        """First header of that name, decoded; None when absent."""
        values = self._headers_by_name.get(name.lower())
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return list(self._headers_by_name.get(name.lower(), ()))

    @property
    def url_hosts(self) -> frozenset[str]:
        return frozenset(u.host for u in self.urls if u.host)


def domain_of(address: str) -> str:
    address = address.strip().strip("<>")
    return address.rsplit("@", 1)[1].lower().rstrip(".") if "@" in address else ""
