"""Check family `attachments`: what the files in a message are, and what they can do.

Runs after parsing (the parser already decoded every attachment, hashed it and asked libmagic
what it is). For each attachment, and for every file found inside archives (see
`scan/archives.py`), it looks at:

* the name: executable/script extensions, double extensions (`invoice.pdf.exe`), padding
  before the real extension, and bidi control characters that reverse how the name displays;
* the type: declared (Content-Type, extension) against detected (libmagic), above all an
  executable dressed as something else;
* the content, only where it can act: Office macros (oletools' olevba keyword analysis),
  encrypted Office files, PDFs with JavaScript / launch actions / embedded files, HTML with
  forms or scripts, and YARA rules (yara-x; a built-in set plus `[attachments] yara_dir`).

Plain text and images get magic + hash and nothing more, so ordinary mail stays cheap. Every
file's SHA-256 goes into `result.facts.attachments` for the message log, recall
and threat-intel matching. ClamAV is the separate `antivirus` family.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from mailmoat.config import Section
from mailmoat.errors import ConfigError
from mailmoat.message.model import ParsedMessage
from mailmoat.message.sniff import sniff_type
from mailmoat.scan.archives import ArchiveLimits, Budget, WalkReport, archive_kind, walk
from mailmoat.scan.base import Action, BuildContext, Category, Check, ScanResult, SymbolSpec
from mailmoat.scan.facts import AttachmentHash

log = logging.getLogger(__name__)

_G = "attachments"
_INLINE_BUDGET = 512 * 1024  # bytes of attachments (and declared zip contents) judged inline
M = Category.MALWARE

DEFAULT_DANGEROUS = [
    "exe", "scr", "com", "pif", "cpl", "msi", "msp", "msc", "dll", "sys", "drv", "ocx",
    "bat", "cmd", "ps1", "psm1", "psd1", "vbs", "vbe", "js", "jse", "wsf", "wsh", "wsc",
    "hta", "sct", "jar", "lnk", "scf", "inf", "reg", "chm", "hlp", "iso", "img", "vhd",
    "vhdx", "one", "onepkg", "xll", "appx", "appxbundle", "msix", "application", "gadget",
    "appref-ms", "settingcontent-ms", "library-ms", "url", "diagcab", "cab", "apk",
]

SYMBOLS: dict[str, SymbolSpec] = {
    "ATTACH_DANGEROUS_EXT": SymbolSpec(
        6.0, "An attachment has an executable or script file extension.", M, _G),
    "ATTACH_DOUBLE_EXT": SymbolSpec(
        6.0, "An attachment name hides an executable extension behind a harmless-looking one "
        "(invoice.pdf.exe, or spaces before the real extension).", M, _G),
    "ATTACH_BIDI_NAME": SymbolSpec(
        8.0, "An attachment name contains a right-to-left override or other bidi control "
        "character, so it displays differently from what it is.", M, _G),
    "ATTACH_HIDDEN_EXECUTABLE": SymbolSpec(
        9.0, "A file's content is a program although its name and declared type say "
        "otherwise.", M, _G),
    "ATTACH_TYPE_MISMATCH": SymbolSpec(
        1.5, "An attachment's declared type differs from the type its content shows.", M, _G),
    "ARCHIVE_EXECUTABLE": SymbolSpec(
        8.0, "An archive (or a PDF, as an embedded file) holds an executable, script or "
        "other dangerous file.", M, _G),
    "ARCHIVE_BOMB": SymbolSpec(
        10.0, "An archive expands far beyond its size or holds too many files: a "
        "decompression bomb. It was not expanded.", M, _G),
    "ARCHIVE_TOO_DEEP": SymbolSpec(
        3.0, "Archives are nested deeper than the configured limit; the innermost were not "
        "opened.", M, _G),
    "ARCHIVE_ENCRYPTED": SymbolSpec(
        4.0, "A password-protected archive: its content cannot be scanned.", M, _G),
    "ARCHIVE_UNREADABLE": SymbolSpec(
        1.0, "An archive could not be opened (corrupt, or a format without a backend here).",
        M, _G),
    "OFFICE_MACRO": SymbolSpec(
        2.0, "An Office document contains VBA macros.", M, _G),
    "OFFICE_MACRO_AUTOEXEC": SymbolSpec(
        4.0, "Office macros run automatically when the document is opened or closed.", M, _G),
    "OFFICE_MACRO_SUSPICIOUS": SymbolSpec(
        4.0, "Office macros use keywords typical of malware (shell, download, obfuscation).",
        M, _G),
    "OFFICE_ENCRYPTED": SymbolSpec(
        3.0, "An Office document is encrypted with a password, so it cannot be scanned.", M, _G),
    "PDF_JAVASCRIPT": SymbolSpec(
        3.0, "A PDF contains JavaScript.", M, _G),
    "PDF_AUTO_JAVASCRIPT": SymbolSpec(
        4.0, "A PDF runs JavaScript automatically when opened (OpenAction / AA with JS).", M, _G),
    "PDF_LAUNCH": SymbolSpec(
        6.0, "A PDF has a /Launch action that starts a program or opens a file.", M, _G),
    "PDF_EMBEDDED_FILE": SymbolSpec(
        1.5, "A PDF carries an embedded file.", M, _G),
    "ATTACH_HTML_FORM": SymbolSpec(
        4.0, "An HTML attachment contains a form asking for a password or login details "
        "(a local credential-phishing page).",
        Category.PHISHING, _G),
    "ATTACH_HTML_SCRIPT": SymbolSpec(
        3.0, "An HTML or SVG attachment contains script.", Category.PHISHING, _G),
    "YARA_MATCH": SymbolSpec(
        6.0, "A file matches one of the configured YARA rules.", M, _G),
}


class AttachmentSettings(Section):
    enabled: bool = Field(True, description="run the attachment checks")
    yara_dir: str = Field("", description="folder of *.yar / *.yara rule files compiled at "
                          "start-up (relative to the config file); empty: built-in rules only")
    builtin_yara: bool = Field(True, description="load mailmoat's built-in YARA rules")
    yara_max_bytes: int = Field(20 * 1024 * 1024, description="larger files are not YARA-scanned")
    dangerous_extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DANGEROUS),
        description="extensions (no dot) treated as executable or script")
    archive_max_depth: int = Field(5, description="archives nested deeper are not opened")
    archive_max_ratio: float = Field(100.0, description="largest expansion of one member")
    archive_max_total_mb: int = Field(100, description="uncompressed MB per message, all archives")
    archive_max_files: int = Field(1000, description="files per message, all archives")
    pdf_max_inflate_mb: int = Field(10, description="MB of PDF streams inflated to look inside")
    macros: bool = Field(True, description="analyse Office macros with olevba")


# --- names --------------------------------------------------------------------------------

_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                          "\u200e\u200f\u061c"), None)
_DECOY_EXTS = {"pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "txt", "rtf", "jpg",
               "jpeg", "png", "gif", "bmp", "tif", "tiff", "mp3", "mp4", "avi", "mov", "wav",
               "zip", "rar", "7z", "htm", "html", "csv", "odt", "ods", "eml", "msg", "xml"}


def _ext(name: str) -> str:
    base = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].lower().rstrip(". ")
    return base.rsplit(".", 1)[1].strip() if "." in base else ""


_WEB_EXTS = {"htm", "html", "shtml", "xhtml", "svg"}


def _stem(name: str) -> str:
    """The name without its last extension ("a.pdf  .exe" -> "a.pdf  ")."""
    base = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].rstrip(". ")
    return base.rsplit(".", 1)[0] if "." in base else ""


def displayed_name(name: str) -> str:
    """Roughly how a mail client shows a name with a right-to-left override: the text after
    U+202E is drawn reversed ("invoice\u202efdp.exe" shows as "invoiceexe.pdf")."""
    if "\u202e" not in name:
        return name.translate(_BIDI)
    head, _, tail = name.partition("\u202e")
    return head.translate(_BIDI) + tail.translate(_BIDI)[::-1]


# --- types --------------------------------------------------------------------------------

_EXE_TYPES = ("application/x-dosexec", "application/x-msdownload", "application/x-executable",
              "application/x-elf", "application/x-mach-binary", "application/x-sharedlib",
              "application/vnd.microsoft.portable-executable", "application/x-pie-executable",
              "application/x-ms-shortcut")
_EXE_EXTS = {"exe", "dll", "scr", "com", "pif", "cpl", "sys", "drv", "ocx", "msi", "lnk",
             "efi", "elf", "bin", "so", "dylib", "xll"}

_EXT_FAMILY = {
    "pdf": "pdf", "zip": "zip", "docx": "zip", "xlsx": "zip", "pptx": "zip", "docm": "zip",
    "xlsm": "zip", "pptm": "zip", "jar": "zip", "odt": "zip", "ods": "zip", "odp": "zip",
    "doc": "ole", "xls": "ole", "ppt": "ole", "msg": "ole", "dot": "ole", "xlt": "ole",
    "jpg": "image", "jpeg": "image", "png": "image", "gif": "image", "bmp": "image",
    "tif": "image", "tiff": "image", "webp": "image", "7z": "7z", "rar": "rar", "gz": "gzip",
    "tgz": "gzip", "tar": "tar", "txt": "text", "csv": "text", "htm": "html", "html": "html", "rtf": "rtf",
    "exe": "exe", "dll": "exe", "scr": "exe", "com": "exe", "msi": "ole",
}


def type_family(mime: str) -> str:
    """A coarse family for a MIME type, so spelling variants do not count as mismatches."""
    m = mime.lower().split(";")[0].strip()
    if not m or m in ("application/octet-stream", "binary/octet-stream",
                      "application/x-empty", "inode/x-empty", "application/unknown"):
        return ""
    if m in _EXE_TYPES:
        return "exe"
    if m in ("application/pdf", "application/x-pdf"):
        return "pdf"
    if m in ("application/zip", "application/x-zip-compressed", "application/x-zip",
             "application/java-archive") or m.startswith(
                 ("application/vnd.openxmlformats", "application/vnd.oasis.opendocument",
                  "application/vnd.ms-word.", "application/vnd.ms-excel.sheet.macro",
                  "application/vnd.ms-powerpoint.presentation.macro")):
        return "zip"
    if m in ("application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
             "application/x-ole-storage", "application/cdfv2", "application/vnd.ms-outlook",
             "application/x-msi", "application/vnd.ms-office",
             "application/encrypted") or "cdfv2" in m:  # encrypted OOXML is an OLE file
        return "ole"
    if m.startswith("image/"):
        return "image"
    if m in ("text/html", "application/xhtml+xml"):
        return "html"
    if m in ("application/rtf", "text/rtf"):
        return "rtf"
    if m.startswith("text/"):
        return "text"
    if m in ("application/x-7z-compressed",):
        return "7z"
    if m in ("application/x-rar", "application/vnd.rar", "application/x-rar-compressed"):
        return "rar"
    # RFC 6839 structured suffixes: application/tlsrpt+gzip (RFC 8460) is a gzip file.
    if m in ("application/gzip", "application/x-gzip") or m.endswith("+gzip"):
        return "gzip"
    if m.endswith("+zip"):
        return "zip"
    if m in ("application/x-tar", "application/x-gtar"):
        return "tar"
    return "other:" + m


# A mismatch only matters when one side is a type that can carry or hide something: a
# patch sent as video/mng (seen in ham) is sloppy, a PDF that is really HTML is a lure.
_STRONG = {"exe", "pdf", "zip", "ole", "html", "rtf", "7z", "rar", "gzip", "image"}
# Families a sender may legitimately mix up; not worth a symbol.
_COMPATIBLE = {frozenset({"text", "html"}), frozenset({"zip", "ole"}), frozenset({"gzip", "tar"}),
               frozenset({"text", "rtf"}), frozenset({"text", "other:application/json"}),
               frozenset({"text", "other:application/xml"})}


# --- results of looking at one file ------------------------------------------------------

@dataclass(frozen=True)
class _File:
    name: str  # display path: "a.zip > b.exe" for archive members
    ext: str
    declared_type: str  # Content-Type, or "" for archive members
    detected_type: str
    data: bytes
    container: str  # "" for top-level attachments
    expanded: bool = False  # an archive member: the walk already opened what it holds


@dataclass
class Findings:
    """Symbol → list of (reason, file) found in one message; each symbol is added once."""

    hits: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    hashes: list[AttachmentHash] = field(default_factory=list)
    factors: dict[str, float] = field(default_factory=dict)
    # Work left for this message. Archives bound the bytes, these bound the costly steps per
    # file, so 1,000 small members cannot each take the most expensive path.
    magic_left: int = 100  # libmagic calls for members no signature identifies (1-3 ms each)
    macro_left: int = 20  # olevba analyses (5-30 ms each)
    pdf_inflate_left: int = 50 * 1024 * 1024  # bytes of PDF streams inflated, all PDFs
    embedded_left: int = 20  # files taken out of PDFs
    pending: list[_File] = field(default_factory=list)  # files found inside files (PDFs)
    # Definite malware verdicts (a YARA rule whose meta says `verdict = "malware"`): the
    # message is quarantined whatever its score, as a virus found by clamd is.
    malware: list[str] = field(default_factory=list)

    def add(self, symbol: str, reason: str, filename: str, factor: float = 1.0) -> None:
        self.hits.setdefault(symbol, []).append((reason, filename))
        self.factors[symbol] = max(self.factors[symbol], factor) if symbol in self.factors \
            else factor


def _detect(data: bytes, work: Findings) -> str:
    """Type of an archive member (the parser did this for top-level attachments)."""
    if not data:
        return ""
    sniffed = sniff_type(data)
    if sniffed or work.magic_left <= 0:
        return sniffed
    work.magic_left -= 1
    from mailmoat.message.parse import _detect_type  # the same libmagic wrapper as the parser

    return _detect_type(data)


class AttachmentsCheck(Check):
    name = "attachments"
    family = "attachments"
    symbols = SYMBOLS

    def __init__(self, settings: AttachmentSettings, yara_rules: Any = None) -> None:
        self.settings = settings
        self.dangerous = {e.lower().lstrip(".") for e in settings.dangerous_extensions}
        self.limits = ArchiveLimits(
            max_depth=settings.archive_max_depth, max_ratio=settings.archive_max_ratio,
            max_total_bytes=settings.archive_max_total_mb * 1024 * 1024,
            max_files=settings.archive_max_files)
        self.yara_rules = yara_rules

    async def run(self, msg: ParsedMessage, result: ScanResult) -> None:
        if not msg.attachments:
            return
        # Big files and archives that may expand a lot are CPU work: do them in a thread so
        # the event loop (and so the SMTP sessions) stays responsive. Ordinary attachments
        # cost a few ms, less than the thread hand-over costs on a busy machine.
        if sum(self._cost(a.content) for a in msg.attachments) > _INLINE_BUDGET:
            findings = await asyncio.to_thread(self.analyze, msg)
        else:
            findings = self.analyze(msg)
        result.facts.attachments = tuple(findings.hashes)
        for symbol, items in findings.hits.items():
            files = tuple(dict.fromkeys(f for _, f in items))
            reasons = list(dict.fromkeys(r for r, _ in items))
            reason = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more"
                                                if len(reasons) > 3 else "")
            result.add(symbol, reason=reason[:500], factor=findings.factors.get(symbol, 1.0),
                       options=files[:10])
        if findings.malware:
            result.force(Action.QUARANTINE, "; ".join(findings.malware[:3])[:300],
                         Category.MALWARE)

    @staticmethod
    def _cost(data: bytes) -> int:
        """A guess of the bytes analyze() will touch, used only to choose thread vs inline.
        Zip members are counted at their declared sizes; a zip that lies still cannot make
        the walk exceed the budget, only make this guess wrong."""
        kind = archive_kind(data)
        if kind == "zip":
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    infos = zf.infolist()
                    if len(infos) > 50:
                        return 1 << 40
                    return len(data) + sum(i.file_size for i in infos) + sum(
                        _INLINE_BUDGET for i in infos if i.filename.lower().endswith(
                            (".zip", ".7z", ".gz", ".tgz", ".bz2", ".xz", ".tar", ".rar")))
            except Exception:
                return len(data)
        if kind:
            return 1 << 40  # 7z, tar, gz, bz2, xz: sizes are not cheap to know
        return len(data)

    # The synchronous part, also used directly by tests and benchmarks.
    def analyze(self, msg: ParsedMessage) -> Findings:
        findings = Findings()
        report = WalkReport()
        budget = Budget(self.limits)
        queue = [_File(att.filename or "(unnamed)", _ext(att.filename), att.declared_type,
                       att.detected_type, att.content, "") for att in msg.attachments]
        i = 0
        while i < len(queue):  # grows: archive members, then files taken out of PDFs
            f = queue[i]
            i += 1
            if not f.expanded and archive_kind(f.data):
                before = len(report.members)
                walk(f.name, f.data, self.limits, report, budget)
                queue[i:i] = [_File(m.path, _ext(m.name), "", _detect(m.data, findings), m.data,
                                    m.container, expanded=True)
                              for m in report.members[before:]]
            findings.hashes.append(AttachmentHash(
                filename=f.name.rsplit(" > ", 1)[-1], sha256=hashlib.sha256(f.data).hexdigest(),
                size=len(f.data), type=f.detected_type or f.declared_type,
                container=f.container))
            self._inspect(f, findings)
            if findings.pending:
                queue[i:i] = findings.pending
                findings.pending = []
        for bomb, path in zip(report.bombs, report.bomb_paths):
            findings.add("ARCHIVE_BOMB", bomb, path)
        # An encrypted archive whose password is in the message is the classic way to get
        # malware past scanners: the recipient can open it, the gateway cannot.
        told = _PASSWORD_IN_TEXT.search(msg.body_text[:200_000]) if report.encrypted else None
        for path in report.encrypted:
            if told:
                findings.add("ARCHIVE_ENCRYPTED", f"{path} is password-protected and the "
                             f"message text gives the password ({told.group(0).strip()!r})",
                             path, factor=1.5)
            else:
                findings.add("ARCHIVE_ENCRYPTED", f"{path} is password-protected", path)
        for path in report.too_deep:
            findings.add("ARCHIVE_TOO_DEEP", f"{path} is nested deeper than "
                         f"{self.limits.max_depth} archives and was not opened", path)
        for why in report.unreadable:
            findings.add("ARCHIVE_UNREADABLE", why, why.split(":", 1)[0])
        return findings

    def _inspect(self, f: _File, out: Findings) -> None:
        base = f.name.rsplit(" > ", 1)[-1]
        where = f" (inside {f.container})" if f.container else ""
        # Names.
        if base != base.translate(_BIDI):
            out.add("ATTACH_BIDI_NAME", f'"{base.translate(_BIDI)}"{where} contains a bidi '
                    f'control character and displays as "{displayed_name(base)}"', f.name)
        clean = base.translate(_BIDI)
        ext = _ext(clean)
        det_fam = type_family(f.detected_type)
        is_exe_content = det_fam == "exe"
        dangerous = ext in self.dangerous
        if dangerous:
            if f.container:
                out.add("ARCHIVE_EXECUTABLE", f"{f.container} holds {base!r}, a .{ext} file",
                        f.name)
            else:
                out.add("ATTACH_DANGEROUS_EXT", f"attachment {base!r} is a .{ext} file", f.name)
            stem = _stem(clean)
            if stem != stem.rstrip():  # "report.pdf      .exe": the tail scrolls out of view
                out.add("ATTACH_DOUBLE_EXT", f"{base!r}{where} pads the name with spaces before "
                        f"its real extension .{ext}", f.name)
            elif "." in stem and _ext(stem) in _DECOY_EXTS:
                out.add("ATTACH_DOUBLE_EXT", f"{base!r}{where} looks like a .{_ext(stem)} file "
                        f"but is a .{ext}", f.name)
        elif ext in _WEB_EXTS and _ext(_stem(clean)) in _DECOY_EXTS - _WEB_EXTS - {"xml"}:
            # "PO45638.Xls.htm": a local phishing page dressed as a document (half weight: a
            # web page cannot run by itself, it can only ask for a password)
            decoy = _ext(_stem(clean))
            out.add("ATTACH_DOUBLE_EXT", f"{base!r}{where} looks like a .{decoy} file but is "
                    f"a web page (.{ext})", f.name, factor=0.5)
        if not dangerous and is_exe_content and ext not in _EXE_EXTS:
            if f.container:
                out.add("ARCHIVE_EXECUTABLE", f"{f.container} holds {base!r}, which is a "
                        f"program ({f.detected_type})", f.name)
            out.add("ATTACH_HIDDEN_EXECUTABLE", f"{base!r}{where} is a program "
                    f"({f.detected_type}) but is named "
                    f"{'.' + ext if ext else 'without extension'}"
                    f"{' and declared ' + f.declared_type if f.declared_type else ''}", f.name)
        # Declared vs detected type.
        # A dangerous extension is already flagged; its content type adds nothing.
        decl_fam = type_family(f.declared_type) or ("" if dangerous else _EXT_FAMILY.get(ext, ""))
        if (decl_fam and det_fam and decl_fam != det_fam and not is_exe_content
                and (decl_fam in _STRONG or det_fam in _STRONG)
                and frozenset({decl_fam, det_fam}) not in _COMPATIBLE):
            said = f.declared_type if type_family(f.declared_type) else f"the .{ext} name"
            out.add("ATTACH_TYPE_MISMATCH", f"{base!r}{where} is declared as {said} but its "
                    f"content is {f.detected_type}", f.name)
        data = f.data
        # Content that can act: only the types that can.
        if data[:5] == b"%PDF-" or (data[:1024].find(b"%PDF-") >= 0 and det_fam == "pdf"):
            self._pdf(f, out, where)
        if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
            self._office_encrypted(f, out, where)
        if self.settings.macros and _macro_candidate(f):
            self._macros(f, out, where)
        if det_fam == "html" or ext in ("htm", "html", "xhtml", "shtml", "svg", "mht"):
            _html(f, out, where)
        if self.yara_rules is not None and 0 < len(data) <= self.settings.yara_max_bytes:
            try:
                rules = list(self.yara_rules.scan(data).matching_rules)
            except Exception as exc:  # a scan timeout on a hostile file is not a crash
                log.warning("YARA scan of %s failed: %s", f.name, exc)
                rules = []
            names = [r.identifier for r in rules]
            if names:
                out.add("YARA_MATCH", f"{base!r}{where} matches YARA rule"
                        f"{'s' if len(names) > 1 else ''} {', '.join(names)}", f.name)
            for r in rules:
                if dict(r.metadata).get("verdict") == "malware":
                    out.malware.append(f"{base!r}{where} is malware (YARA rule {r.identifier})")

    # --- PDFs -----------------------------------------------------------------------------

    def _pdf(self, f: _File, out: Findings, where: str) -> None:
        allowance = min(self.settings.pdf_max_inflate_mb * 1024 * 1024, out.pdf_inflate_left)
        text, embedded, used = _pdf_scan(f.data, allowance)
        out.pdf_inflate_left -= used
        for ename, blob in embedded[:max(0, out.embedded_left)]:
            out.embedded_left -= 1
            out.pending.append(_File(f"{f.name} > {ename}", _ext(ename), "",
                                     _detect(blob, out), blob, f.name))
        base = f.name.rsplit(" > ", 1)[-1]
        has_js = bool(_PDF_JS.search(text))
        if _PDF_LAUNCH.search(text):
            out.add("PDF_LAUNCH", f"PDF {base!r}{where} has a /Launch action", f.name)
        if has_js:
            out.add("PDF_JAVASCRIPT", f"PDF {base!r}{where} contains JavaScript", f.name)
            if _PDF_AUTO.search(text):
                out.add("PDF_AUTO_JAVASCRIPT", f"PDF {base!r}{where} runs JavaScript when "
                        "opened (/OpenAction or /AA)", f.name)
        if _PDF_EMBED.search(text):
            out.add("PDF_EMBEDDED_FILE", f"PDF {base!r}{where} carries an embedded file", f.name)

    # --- Office ---------------------------------------------------------------------------

    def _office_encrypted(self, f: _File, out: Findings, where: str) -> None:
        base = f.name.rsplit(" > ", 1)[-1]
        if _office_is_encrypted(f.data):
            out.add("OFFICE_ENCRYPTED", f"Office file {base!r}{where} is password-encrypted",
                    f.name)

    def _macros(self, f: _File, out: Findings, where: str) -> None:
        base = f.name.rsplit(" > ", 1)[-1]
        if out.macro_left <= 0:
            log.info("macro analysis budget spent; %s not analysed", f.name)
            return
        out.macro_left -= 1
        try:
            autoexec, suspicious = analyze_macros(base, f.data)
        except _NoMacros:
            return
        except Exception as exc:  # olevba on a hostile file: note it, go on
            log.info("olevba could not read %s: %s", f.name, exc)
            return
        out.add("OFFICE_MACRO", f"{base!r}{where} contains VBA macros", f.name)
        if autoexec:
            out.add("OFFICE_MACRO_AUTOEXEC", f"macros in {base!r}{where} run automatically "
                    f"({', '.join(autoexec[:5])})", f.name)
        if suspicious:
            out.add("OFFICE_MACRO_SUSPICIOUS", f"macros in {base!r}{where} use "
                    f"{', '.join(suspicious[:6])}", f.name,
                    factor=1.5 if len(suspicious) >= 3 else 1.0)


# --- helpers that need no check state -----------------------------------------------------

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MACRO_TEXT_EXTS = {"bas", "cls", "frm", "vba", "vbs"}
_MACRO_DOC_EXTS = {"doc", "dot", "docm", "dotm", "xls", "xlt", "xlsm", "xltm", "xlsb", "xlam",
                   "xla", "ppt", "pot", "pptm", "potm", "ppsm", "sldm", "mht", "mhtml", "xml"}


def _macro_candidate(f: _File) -> bool:
    data = f.data
    if data[:8] == _OLE_MAGIC:
        return True
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                return any(n.lower().endswith(("vbaproject.bin", ".bin")) and "vba" in n.lower()
                           for n in zf.namelist()[:500])
        except Exception:
            return False
    head = data[:8192]
    if f.ext in _MACRO_TEXT_EXTS and b"\x00" not in head:
        return True
    if f.ext in _MACRO_DOC_EXTS and (b"schemas.microsoft.com/office/word/2003/wordml" in head
                                     or b"ActiveMime" in data[:200_000]
                                     or b"office/2006/xmlPackage" in head):
        return True
    return False


def _olevba() -> Any:
    # olevba builds its pyparsing grammar at import time with names pyparsing 3 deprecates;
    # those warnings are about oletools, not about the mail, so keep them out of our logs.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from oletools import olevba
    return olevba


_KEYWORDS: tuple[list[re.Pattern[str]], list[re.Pattern[str]], tuple[str, ...]] | None = None


def _keyword_patterns() -> tuple[list[re.Pattern[str]], list[re.Pattern[str]], tuple[str, ...]]:
    """olevba's AUTOEXEC/SUSPICIOUS keyword tables, compiled once. olevba's own
    detect_autoexec/detect_suspicious recompile ~1,400 patterns per call (the `re` cache
    holds 512), which cost ~20 ms per document here; the matching is the same."""
    global _KEYWORDS
    if _KEYWORDS is None:
        ov = _olevba()

        def pats(plain: dict[str, list[str]], regex: dict[str, list[str]]) -> list[re.Pattern[str]]:
            out = [re.compile(r"(?i)\b" + re.escape(k) + r"\b") for ks in plain.values() for k in ks]
            out += [re.compile(r"(?i)\b" + k + r"\b") for ks in regex.values() for k in ks]
            return out

        noregex = tuple(k for ks in ov.SUSPICIOUS_KEYWORDS_NOREGEX.values() for k in ks)
        _KEYWORDS = (pats(ov.AUTOEXEC_KEYWORDS, ov.AUTOEXEC_KEYWORDS_REGEX),
                     pats(ov.SUSPICIOUS_KEYWORDS, ov.SUSPICIOUS_KEYWORDS_REGEX), noregex)
    return _KEYWORDS


def _find_keywords(code: str, patterns: list[re.Pattern[str]], plain: tuple[str, ...]) -> list[str]:
    found = [m.group() for p in patterns if (m := p.search(code))]
    found += [k for k in plain if k.lower() in code]
    return list(dict.fromkeys(found))


class _NoMacros(Exception):
    pass


def analyze_macros(filename: str, data: bytes) -> tuple[list[str], list[str]]:
    """olevba's keyword analysis: (auto-exec keywords, suspicious keywords). Raises _NoMacros.

    olevba extracts the VBA source (OLE, OOXML, Word 2003 XML, MHT or plain VBA text) and its
    `detect_autoexec` / `detect_suspicious` tables judge it; hex and base64 strings are
    decoded and judged again, as `analyze_macros` does. Its VBA-expression deobfuscation
    (pyparsing, tens of ms per module) is left out to keep the scan cheap.
    """
    olevba = _olevba()
    vp = olevba.VBA_Parser(filename, data=data, relaxed=True, disable_pcode=True)
    try:
        if not vp.detect_vba_macros():
            raise _NoMacros()
        code = vp.get_vba_code_all_modules()[:2_000_000]
        if not code.strip():
            raise _NoMacros()
        auto_pats, susp_pats, susp_plain = _keyword_patterns()
        autoexec = _find_keywords(code, auto_pats, ())
        suspicious = _find_keywords(code, susp_pats, susp_plain)
        decoded = [d for _, d in olevba.detect_hex_strings(code)]
        decoded += [d for _, d in olevba.detect_base64_strings(code)]
        for text in decoded[:200]:
            if isinstance(text, bytes):
                text = text.decode("latin-1")
            # as olevba does, a backspace only counts in the raw source, not in decoded strings
            plain = tuple(k for k in susp_plain if k != "\b")
            suspicious += [f"{k} (obfuscated)" for k in _find_keywords(text, susp_pats, plain)]
        return list(dict.fromkeys(autoexec)), list(dict.fromkeys(suspicious))
    finally:
        vp.close()


def _office_is_encrypted(data: bytes) -> bool:
    try:
        import olefile

        ole = olefile.OleFileIO(io.BytesIO(data))
    except Exception:
        return False
    try:
        # Encrypted OOXML (docx/xlsx/pptx with a password) is an OLE file holding these two.
        if ole.exists("EncryptionInfo") and ole.exists("EncryptedPackage"):
            return True
    finally:
        ole.close()
    try:  # legacy .doc/.xls/.ppt: msoffcrypto-tool reads the format-specific flags
        import msoffcrypto

        return bool(msoffcrypto.OfficeFile(io.BytesIO(data)).is_encrypted())
    except Exception:
        return False


_PDF_NAME_ESC = re.compile(rb"#([0-9A-Fa-f]{2})")
_PDF_JS = re.compile(rb"/(?:JavaScript|JS)(?![A-Za-z0-9])")
_PDF_AUTO = re.compile(rb"/(?:OpenAction|AA)(?![A-Za-z0-9])")
_PDF_LAUNCH = re.compile(rb"/Launch(?![A-Za-z0-9])")
_PDF_EMBED = re.compile(rb"/EmbeddedFiles?(?![A-Za-z0-9])")
_PDF_STREAM = re.compile(rb"stream\r?\n")
_PDF_EMBED_STREAM = re.compile(rb"/Type\s*/EmbeddedFile(?![A-Za-z0-9])")
_PDF_FILESPEC_NAME = re.compile(rb"/Type\s*/Filespec[^>]*?/(?:UF|F)\s*\(((?:[^()\\]|\\.){1,255})\)")


def _pdf_scan(data: bytes, max_inflate: int) -> tuple[bytes, list[tuple[str, bytes]], int]:
    """The PDF's bytes plus its inflated streams (object streams hide names), names un-escaped
    (/J#61vaScript is /JavaScript); the embedded files with their names; and the bytes
    inflated. Inflation is bounded: at most `max_inflate` bytes in all."""
    parts = [data]
    budget = max_inflate
    pos = 0
    streams = 0
    blobs: list[bytes] = []
    while streams < 500:
        m = _PDF_STREAM.search(data, pos)
        if not m:
            break
        start = m.end()
        end = data.find(b"endstream", start)
        if end < 0:
            break
        pos = end + 9
        streams += 1
        head = data[max(0, m.start() - 400):m.start()]
        if b"#" in head:
            head = _PDF_NAME_ESC.sub(lambda x: bytes([int(x.group(1), 16)]), head)
        head = head[head.rfind(b"obj") + 3:] if b"obj" in head else head  # this object only
        body = data[start:end].rstrip(b"\r\n")
        if b"FlateDecode" in head and budget > 0:
            try:
                body = zlib.decompressobj().decompress(body, budget)
            except zlib.error:
                continue
            budget -= len(body)
            parts.append(body)
        if _PDF_EMBED_STREAM.search(head):
            blobs.append(body)
    text = b"\n".join(parts)
    if b"#" in text:
        text = _PDF_NAME_ESC.sub(lambda m: bytes([int(m.group(1), 16)]), text)
    names = [_pdf_string(n) for n in _PDF_FILESPEC_NAME.findall(text)]
    names = list(dict.fromkeys(n for n in names if n))
    # Filespecs and their streams are written in the same order by the PDF libraries we
    # know; when the counts differ the names are not trusted.
    if len(names) != len(blobs):
        names = [f"embedded-{i + 1}" for i in range(len(blobs))]
    return text, list(zip(names, blobs)), max_inflate - budget


def _pdf_string(raw: bytes) -> str:
    raw = re.sub(rb"\\([()\\])", rb"\1", raw)
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", "replace").strip("\x00")[:255]
    return raw.decode("latin-1")[:255]


_PASSWORD_IN_TEXT = re.compile(
    r"(?i)\b(?:password|passwort|passwd|pwd|pass ?code|mot de passe|contrase(?:ñ|n)a|"
    r"senha|wachtwoord|hasło|пароль|密码)\s*(?:is|ist|est|:|=|-)?\s*[:=]?\s*\S{3,40}")
_HTML_FORM = re.compile(rb"<form\b", re.I)
_HTML_PASSWORD = re.compile(rb"""<input\b[^>]*type\s*=\s*["']?password""", re.I)
_HTML_CREDENTIAL_FIELD = re.compile(
    rb"""<input\b[^>]*name\s*=\s*["']?([^"'\s>]*(?:user|login|email|e-mail|account|passw|"""
    rb"""card|cvv|cvc|ssn|pin|otp)[^"'\s>]*)""", re.I)
_HTML_SCRIPT = re.compile(rb"<script\b|\bon(?:load|error|click|mouseover|focus)\s*=|javascript:",
                          re.I)


def _html(f: _File, out: Findings, where: str) -> None:
    base = f.name.rsplit(" > ", 1)[-1]
    data = f.data[:5_000_000]
    # Newsletters attach HTML with search and subscribe forms (152 of 696 ham messages with
    # attachments in the local corpora did, counted when HTML bodies sent as `inline;
    # filename=` were still taken for attachments); only forms that ask for credentials count.
    if _HTML_FORM.search(data):
        if _HTML_PASSWORD.search(data):
            out.add("ATTACH_HTML_FORM", f"HTML attachment {base!r}{where} holds a form asking "
                    "for a password", f.name, factor=1.5)
        elif m := _HTML_CREDENTIAL_FIELD.search(data):
            field = m.group(1).decode("ascii", "replace")
            out.add("ATTACH_HTML_FORM", f"HTML attachment {base!r}{where} holds a form asking "
                    f"for {field!r}", f.name)
    if _HTML_SCRIPT.search(data):
        out.add("ATTACH_HTML_SCRIPT", f"HTML attachment {base!r}{where} contains script", f.name)


# --- YARA ---------------------------------------------------------------------------------

BUILTIN_YARA_DIR = Path(__file__).resolve().parent.parent / "data" / "yara"


def compile_yara(dirs: list[Path]) -> Any:
    """Compile every *.yar/*.yara file of the folders once; a broken rule file is a config
    error at start-up, not a scan-time surprise."""
    import yara_x

    compiler = yara_x.Compiler()
    count = 0
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"[attachments] yara_dir {d} is not a folder")
        for path in sorted(list(d.glob("*.yar")) + list(d.glob("*.yara"))):
            try:
                compiler.new_namespace(path.stem)
                compiler.add_source(path.read_text(encoding="utf-8"), origin=str(path))
            except Exception as exc:
                raise ConfigError(f"YARA rules in {path} do not compile: {exc}") from exc
            count += 1
    if count == 0:
        return None
    return compiler.build()


def build(ctx: BuildContext) -> list[Check]:
    settings = ctx.config.section("attachments", AttachmentSettings)
    if not settings.enabled:
        return []
    dirs = [BUILTIN_YARA_DIR] if settings.builtin_yara else []
    if settings.yara_dir:
        dirs.append(ctx.config.resolve_path(settings.yara_dir))
    rules = compile_yara(dirs) if dirs else None
    return [AttachmentsCheck(settings, rules)]
