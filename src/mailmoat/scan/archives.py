"""A safe, recursive archive walker: zip, 7z, tar and gzip/bzip2/xz, never extracted to disk.

Archives are the usual wrapping for malware (an `.exe` in a zip, a zip in a zip to get past
scanners that only look one level deep) and for decompression bombs (42.zip: a few KB that
expand to petabytes). The walker hands every file inside an attachment to the same checks as
a top-level attachment, and stops — flagging the archive — the moment a limit is crossed:

* depth: archives nested deeper than `max_depth` are not opened;
* ratio: a member that expands more than `max_ratio` times its packed size (once it is past
  `ratio_floor` bytes, so tiny well-compressed text does not trip it);
* total: more than `max_total_bytes` uncompressed over the whole message;
* count: more than `max_files` files over the whole message.

Declared sizes are never trusted: every member is read in chunks and reading stops at the
limit, so a bomb costs at most `max_total_bytes` of memory and the time to inflate that much.
Nothing calls `extractall` to a path; 7z members are written to bounded in-memory writers.
RAR is recognised but not opened: no free decompressor is installed (see docs/attachments.md).
"""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_depth: int = 5
    max_ratio: float = 100.0
    ratio_floor: int = 1024 * 1024  # bytes a member may expand to before the ratio counts
    max_total_bytes: int = 100 * 1024 * 1024
    max_files: int = 1000


@dataclass(frozen=True)
class Member:
    """One file found inside an archive."""

    name: str  # the name inside its archive
    path: str  # the chain of containers and the name: "a.zip > b.zip > x.exe"
    container: str  # the archive that holds it ("a.zip > b.zip")
    data: bytes
    depth: int  # 1 for a member of a top-level attachment


@dataclass
class WalkReport:
    members: list[Member] = field(default_factory=list)
    bombs: list[str] = field(default_factory=list)  # plain-language reasons
    bomb_paths: list[str] = field(default_factory=list)  # the archive each reason is about
    encrypted: list[str] = field(default_factory=list)  # archive paths (or member paths)
    too_deep: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "path: why"


class _LimitHit(Exception):
    """A limit was crossed; the message says which, in words."""


class Budget:
    """Uncompressed bytes and file count left for the whole message."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.bytes_left = limits.max_total_bytes
        self.files_left = limits.max_files

    def take_file(self, path: str) -> None:
        self.files_left -= 1
        if self.files_left < 0:
            raise _LimitHit(f"more than {self.limits.max_files} files inside archives "
                            f"(stopped at {path})")

    def take_bytes(self, n: int, path: str) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise _LimitHit(f"more than {self.limits.max_total_bytes // (1024 * 1024)} MB "
                            f"uncompressed inside archives (stopped at {path})")


def archive_kind(data: bytes) -> str:
    """The archive format by magic bytes, or "" for anything else."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if data[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:3] == b"BZh":
        return "bzip2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if data[:7] == b"Rar!\x1a\x07\x00" or data[:8] == b"Rar!\x1a\x07\x01\x00":
        return "rar"
    if len(data) >= 262 and data[257:262] == b"ustar":
        return "tar"
    return ""


# Zip-based document formats are documents, not archives: their parts are XML, and the macro
# and YARA checks look at them whole.
_ZIP_DOCUMENT_MARKERS = ("[Content_Types].xml", "mimetype", "META-INF/manifest.xml")


def is_zip_document(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist()[:50])
    except Exception:
        return False
    return any(m in names for m in _ZIP_DOCUMENT_MARKERS)


def walk(name: str, data: bytes, limits: ArchiveLimits, report: WalkReport | None = None,
         budget: Budget | None = None) -> WalkReport:
    """Walk one attachment (if it is an archive), appending what is found to `report`.

    Pass the same `report` and a shared budget for every attachment of a message so the total
    and count limits hold per message. Never raises on hostile or broken input.
    """
    report = report if report is not None else WalkReport()
    budget = budget or Budget(limits)
    # Iterative depth-first walk: (display path, data, depth of this container).
    stack: list[tuple[str, bytes, int]] = [(name or "(unnamed)", data, 0)]
    while stack:
        path, blob, depth = stack.pop()
        kind = archive_kind(blob)
        if not kind or (kind == "zip" and is_zip_document(blob)):
            continue
        if depth >= limits.max_depth:
            report.too_deep.append(path)
            continue
        try:
            children = list(_open(kind, path, blob, limits, budget, report))
        except _LimitHit as exc:
            report.bombs.append(str(exc))
            report.bomb_paths.append(path)
            return report  # the whole message is over budget: stop walking anything
        except Exception as exc:  # a corrupt archive is a finding, not a crash
            report.unreadable.append(f"{path}: {type(exc).__name__}: {exc}"[:300])
            continue
        for child_name, child_data in children:
            member = Member(name=child_name, path=f"{path} > {child_name}", container=path,
                            data=child_data, depth=depth + 1)
            report.members.append(member)
            stack.append((member.path, child_data, depth + 1))
    return report


def _open(kind: str, path: str, blob: bytes, limits: ArchiveLimits, budget: Budget,
          report: WalkReport) -> Iterator[tuple[str, bytes]]:
    if kind == "zip":
        yield from _zip_members(path, blob, limits, budget, report)
    elif kind == "7z":
        yield from _7z_members(path, blob, limits, budget, report)
    elif kind == "tar":
        yield from _tar_members(path, blob, budget)
    elif kind in ("gzip", "bzip2", "xz"):
        inner = path.rsplit(" > ", 1)[-1]
        for suffix in (".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz"):
            if inner.lower().endswith(suffix):
                inner = inner[: -len(suffix)] + (".tar" if suffix.startswith(".t") else "")
                break
        else:
            inner = inner + ".out"
        budget.take_file(path)
        yield inner, _decompress_stream(kind, path, blob, limits, budget)
    elif kind == "rar":
        report.unreadable.append(f"{path}: RAR archives cannot be opened here (no unrar backend)")
        if _rar_encrypted(blob):
            report.encrypted.append(path)


def _zip_members(path: str, blob: bytes, limits: ArchiveLimits, budget: Budget,
                 report: WalkReport) -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            mpath = f"{path} > {info.filename}"
            budget.take_file(mpath)
            if info.flag_bits & 0x1:  # bit 0: the member is encrypted
                if path not in report.encrypted:
                    report.encrypted.append(path)
                continue
            try:
                with zf.open(info) as fh:
                    data = _bounded_read(fh.read, mpath, max(info.compress_size, 1), limits, budget)
            except _LimitHit:
                raise
            except Exception as exc:
                report.unreadable.append(f"{mpath}: {type(exc).__name__}: {exc}"[:300])
                continue
            yield info.filename, data


def _bounded_read(read: object, path: str, packed: int, limits: ArchiveLimits,
                  budget: Budget) -> bytes:
    """Read a member chunk by chunk, stopping at the ratio or the message budget."""
    out = bytearray()
    reader = read  # a callable taking a size
    while True:
        chunk = reader(CHUNK)  # type: ignore[operator]
        if not chunk:
            break
        out += chunk
        budget.take_bytes(len(chunk), path)
        if len(out) > limits.ratio_floor and len(out) > packed * limits.max_ratio:
            raise _LimitHit(f"{path} expands more than {limits.max_ratio:g} times its packed "
                            f"size ({packed} bytes packed, over {len(out)} bytes so far)")
    return bytes(out)


def _decompress_stream(kind: str, path: str, blob: bytes, limits: ArchiveLimits,
                       budget: Budget) -> bytes:
    """gzip/bzip2/xz with max_length-bounded steps: never more than a chunk past the limit."""
    if kind == "gzip":
        d: object = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif kind == "bzip2":
        d = bz2.BZ2Decompressor()
    else:
        d = lzma.LZMADecompressor()
    out = bytearray()
    pending = blob
    while True:
        if kind == "gzip":
            z = d  # zlib: leftover input comes back in unconsumed_tail
            chunk = z.decompress(pending, CHUNK)  # type: ignore[attr-defined]
            pending = z.unconsumed_tail  # type: ignore[attr-defined]
            done = z.eof or (not chunk and not pending)  # type: ignore[attr-defined]
        else:
            chunk = d.decompress(pending, CHUNK)  # type: ignore[attr-defined]
            pending = b""
            done = d.eof or (not chunk and d.needs_input)  # type: ignore[attr-defined]
        out += chunk
        budget.take_bytes(len(chunk), path)
        if len(out) > limits.ratio_floor and len(out) > len(blob) * limits.max_ratio:
            raise _LimitHit(f"{path} expands more than {limits.max_ratio:g} times its packed "
                            f"size ({len(blob)} bytes packed, over {len(out)} bytes so far)")
        if done:
            return bytes(out)


def _tar_members(path: str, blob: bytes, budget: Budget) -> Iterator[tuple[str, bytes]]:
    # The tar is already in memory and within budget (it came from a bounded read), so its
    # members cannot be larger than it; they still count against the file limit.
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tf:
        for ti in tf:
            if not ti.isfile():
                continue
            budget.take_file(f"{path} > {ti.name}")
            fh = tf.extractfile(ti)
            if fh is None:
                continue
            yield ti.name, fh.read(len(blob))


def _7z_members(path: str, blob: bytes, limits: ArchiveLimits, budget: Budget,
                report: WalkReport) -> Iterator[tuple[str, bytes]]:
    import py7zr
    from py7zr.exceptions import PasswordRequired
    from py7zr.io import Py7zIO, WriterFactory

    ceiling = max(limits.ratio_floor, int(len(blob) * limits.max_ratio))
    written = [0]

    class _Writer(Py7zIO):
        def __init__(self, name: str) -> None:
            self.name = name
            self.buf = io.BytesIO()

        def write(self, s: bytes | bytearray) -> int:
            budget.take_bytes(len(s), f"{path} > {self.name}")
            written[0] += len(s)
            if written[0] > ceiling:
                raise _LimitHit(f"{path} expands more than {limits.max_ratio:g} times its "
                                f"packed size ({len(blob)} bytes packed)")
            return self.buf.write(s)

        def read(self, size: int | None = None) -> bytes:
            return self.buf.getvalue()

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.buf.seek(offset, whence)

        def flush(self) -> None:
            pass

        def size(self) -> int:
            return len(self.buf.getbuffer())

    class _Factory(WriterFactory):
        def __init__(self) -> None:
            self.products: dict[str, _Writer] = {}

        def create(self, filename: str) -> Py7zIO:
            budget.take_file(f"{path} > {filename}")
            w = self.products[filename] = _Writer(filename)
            return w

    try:
        with py7zr.SevenZipFile(io.BytesIO(blob), mode="r") as z:
            if z.needs_password():
                report.encrypted.append(path)
                return
            factory = _Factory()
            z.extractall(factory=factory)
    except PasswordRequired:  # the headers themselves are encrypted
        report.encrypted.append(path)
        return
    for name, w in factory.products.items():
        yield name, w.buf.getvalue()


def _rar_encrypted(blob: bytes) -> bool:
    """RAR 4 marks an encrypted archive in the main header flags; RAR 5 has an encryption
    header right after the signature. Enough to flag it without a decompressor."""
    if blob[:7] == b"Rar!\x1a\x07\x00" and len(blob) > 12:
        main_flags = int.from_bytes(blob[10:12], "little")
        return bool(main_flags & 0x0080)  # MHD_PASSWORD: headers encrypted
    if blob[:8] == b"Rar!\x1a\x07\x01\x00" and len(blob) > 16:
        # skip CRC32 (4) and the header-size vint, then read the header-type vint
        pos = 12
        while pos < len(blob) and blob[pos] & 0x80:
            pos += 1
        pos += 1
        return pos < len(blob) and blob[pos] == 4  # type 4: archive encryption header
    return False
