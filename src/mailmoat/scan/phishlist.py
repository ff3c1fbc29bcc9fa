"""Phishing URL lists: loaded from files or http(s) URLs, refreshed on a schedule, matched in O(1).

A list is plain text, one entry a line, `#` comments allowed. An entry is an exact URL
(`https://evil.example/login.php?x=1`), a host (`login.evil.example`) or a domain
(`evil.example`, which also covers every host below it). Entries are normalised once when
loaded into three sets, so matching a URL is a few set look-ups: the normalised URL, the host
and each parent of the host (a host has few labels).

Files are read when the check is built; http(s) lists are fetched by an asyncio task that
runs every `refresh_interval` seconds. A failed fetch keeps the last good copy of that list
and is logged, so a feed outage never empties the list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mailmoat.message.model import Url
from mailmoat.message.parse import idna_to_unicode

log = logging.getLogger(__name__)

MAX_LIST_BYTES = 64 * 1024 * 1024  # a feed larger than this is refused, not half-loaded


def normalise_url(url: str) -> str:
    """Lower-case scheme and host, drop the fragment, default ports and a lone trailing '/'."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        p = urlsplit(url)
        host = (p.hostname or "").rstrip(".")
        port = p.port
    except ValueError:
        return url.lower()
    if "xn--" in host:
        host = idna_to_unicode(host)
    scheme = p.scheme.lower()
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    path = p.path or "/"
    # http and https of the same resource are the same threat.
    return urlunsplit(("http", host, path, p.query, ""))


def normalise_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    return idna_to_unicode(host) if "xn--" in host else host


@dataclass
class ListSnapshot:
    """The parsed contents of one list source."""

    urls: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    loaded_at: float = 0.0

    def __len__(self) -> int:
        return len(self.urls) + len(self.hosts)


def parse_list(text: str) -> ListSnapshot:
    snap = ListSnapshot(loaded_at=time.time())
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith(("http://", "https://")) \
            else line.strip()
        if not line:
            continue
        if "/" in line or "?" in line or line.lower().startswith(("http:", "https:")):
            snap.urls.add(normalise_url(line))
        else:
            snap.hosts.add(normalise_host(line))
    return snap


@dataclass(frozen=True)
class ListHit:
    source: str
    kind: str  # "url" | "host" | "domain"
    entry: str


class PhishList:
    """All configured sources merged into two sets, rebuilt whenever a source changes."""

    def __init__(self, sources: list[str], refresh_interval: float = 3600.0,
                 fetch_timeout: float = 30.0, network: bool = True,
                 base_dir: Path | None = None) -> None:
        self.sources = list(sources)
        self.refresh_interval = refresh_interval
        self.fetch_timeout = fetch_timeout
        self.network = network
        self.base_dir = base_dir
        self.snapshots: dict[str, ListSnapshot] = {}
        self.errors: dict[str, str] = {}
        self._urls: dict[str, str] = {}  # normalised URL -> source
        self._hosts: dict[str, str] = {}  # host or domain -> source
        self._task: asyncio.Task[None] | None = None
        for src in self.sources:
            if not _is_remote(src):
                self.load_file(src)
        self._rebuild()

    # -- loading ---------------------------------------------------------------------------

    def _path(self, src: str) -> Path:
        p = Path(src[len("file:"):] if src.startswith("file:") else src)
        if p.is_absolute() or self.base_dir is None:
            return p
        return self.base_dir / p

    def load_file(self, src: str) -> None:
        path = self._path(src)
        try:
            if path.stat().st_size > MAX_LIST_BYTES:
                raise ValueError(f"larger than {MAX_LIST_BYTES} bytes")
            self.snapshots[src] = parse_list(path.read_text(encoding="utf-8", errors="replace"))
            self.errors.pop(src, None)
        except (OSError, ValueError) as exc:
            self.errors[src] = f"{type(exc).__name__}: {exc}"
            log.warning("phishing list %s not loaded: %s", src, exc)

    async def fetch(self, src: str) -> None:
        import httpx

        try:
            async with httpx.AsyncClient(timeout=self.fetch_timeout, follow_redirects=True,
                                         trust_env=False) as client:
                resp = await client.get(src)
                resp.raise_for_status()
                if len(resp.content) > MAX_LIST_BYTES:
                    raise ValueError(f"larger than {MAX_LIST_BYTES} bytes")
                self.snapshots[src] = parse_list(resp.text)
                self.errors.pop(src, None)
        except (httpx.HTTPError, ValueError) as exc:
            self.errors[src] = f"{type(exc).__name__}: {exc}"
            log.warning("phishing list %s not refreshed (keeping the last copy): %s", src, exc)

    async def refresh(self) -> None:
        """Reload every source now: files from disk, URLs over http(s) when network is on."""
        for src in self.sources:
            if _is_remote(src):
                if self.network:
                    await self.fetch(src)
            else:
                await asyncio.to_thread(self.load_file, src)
        self._rebuild()

    def _rebuild(self) -> None:
        urls: dict[str, str] = {}
        hosts: dict[str, str] = {}
        for src, snap in self.snapshots.items():
            for u in snap.urls:
                urls.setdefault(u, src)
            for h in snap.hosts:
                hosts.setdefault(h, src)
        # Swap whole dicts: a scan running concurrently sees the old or the new list, never half.
        self._urls, self._hosts = urls, hosts

    def start(self) -> None:
        """Start the refresh loop (idempotent); it needs a running event loop."""
        if self._task is None and self.sources and self.refresh_interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="phishlist-refresh")

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad feed must not kill the loop
                log.exception("phishing list refresh failed")
            await asyncio.sleep(self.refresh_interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    # -- matching --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._urls) + len(self._hosts)

    def match(self, url: Url) -> ListHit | None:
        if not (self._urls or self._hosts):
            return None
        if url.scheme in ("http", "https") and self._urls:
            norm = normalise_url(url.url)
            src = self._urls.get(norm)
            if src is not None:
                return ListHit(src, "url", norm)
        host = url.host
        if not host or not self._hosts:
            return None
        src = self._hosts.get(host)
        if src is not None:
            return ListHit(src, "host", host)
        # Parents of the host: a listed domain covers its subdomains.
        rest = host
        while "." in rest:
            rest = rest.split(".", 1)[1]
            if "." not in rest:
                break  # never match a bare TLD
            src = self._hosts.get(rest)
            if src is not None:
                return ListHit(src, "domain", rest)
        return None


def _is_remote(src: str) -> bool:
    return src.lower().startswith(("http://", "https://"))
