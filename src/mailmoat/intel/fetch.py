"""Reading a feed document: a local file, or http(s) with a timeout and a size limit.

Every request has `[intel] fetch_timeout`, so a feed that stops answering fails its own poll
with a clear error and the other feeds go on. Proxy variables are not read (as for the
phishing lists): where a feed is fetched from is what the configuration says.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mailmoat.config import Config
from mailmoat.intel.settings import FeedSettings, IntelError, IntelSettings, secret

__all__ = ["basic_auth", "fetch_url", "read_source", "redact"]


def redact(url: str) -> str:
    """`url` without credentials written into it (https://user:pw@host/ -> https://host/),
    for errors, logs and the console."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def basic_auth(config: Config, feed: FeedSettings) -> tuple[str, str] | None:
    if not feed.user:
        return None
    return feed.user, secret(config, feed.name, feed.password_file, feed.password_env)


def fetch_url(url: str, feed: FeedSettings, settings: IntelSettings,
              auth: tuple[str, str] | None = None) -> bytes:
    """The body of a GET, or IntelError saying what went wrong (timeout, HTTP status,
    too large) without the credentials."""
    import httpx  # loaded by the first poll, not by the console or the config

    shown = redact(url)
    try:
        with httpx.Client(timeout=settings.fetch_timeout, follow_redirects=True,
                          trust_env=False, verify=feed.verify_tls, auth=auth) as client:
            with client.stream("GET", url) as resp:
                if resp.status_code >= 400:
                    raise IntelError(f"feed {feed.name}: {shown} answered HTTP "
                                     f"{resp.status_code}")
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > settings.max_feed_bytes:
                        raise IntelError(f"feed {feed.name}: {shown} is larger than "
                                         f"{settings.max_feed_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
    except httpx.TimeoutException as exc:
        raise IntelError(f"feed {feed.name}: {shown} did not answer within "
                         f"{settings.fetch_timeout:g} s ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise IntelError(f"feed {feed.name}: {shown}: {type(exc).__name__}: "
                         f"{str(exc).replace(url, shown)}") from exc


def read_file(path: Path, feed: FeedSettings, settings: IntelSettings) -> bytes:
    try:
        if path.stat().st_size > settings.max_feed_bytes:
            raise IntelError(f"feed {feed.name}: {path} is larger than "
                             f"{settings.max_feed_bytes} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise IntelError(f"feed {feed.name}: cannot read {path}: "
                         f"{exc.strerror or type(exc).__name__}") from exc


def read_source(config: Config, feed: FeedSettings, settings: IntelSettings) -> bytes:
    """The feed's whole document: `path` (relative to the config's folder) or `url`."""
    if feed.path:
        return read_file(config.resolve_path(feed.path), feed, settings)
    return fetch_url(feed.url, feed, settings, basic_auth(config, feed))
