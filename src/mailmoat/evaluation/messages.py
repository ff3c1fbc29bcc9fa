"""Messages the benchmarks and tests build themselves: no corpus data, no malware.

`make_email` writes one well-formed message; `synthetic_message` the text + HTML + PDF-like
attachment messages of a given size that the latency benchmarks scan (bench/scan_latency.py,
bench/dkim_verify.py); `pdf` and `zip_bytes` build attachments.
"""

from __future__ import annotations

import io
import random
import zipfile
from email.message import EmailMessage

# The generated messages' words, sizes and default recipient (bench/scan_latency.py).
WORDS = (
    "invoice payment account meeting report please review attached schedule quarter "
    "budget team update project customer order shipping delivery confirm password "
    "security notice thanks regards tomorrow office"
).split()
SIZES = (("2KB", 2_000), ("20KB", 20_000), ("100KB", 100_000))


def make_email(*, subject: str = "Hello", body: str = "Hi there,\nsee you tomorrow.\n",
               html: str | None = None, sender: str = "Alice <alice@sender.test>",
               to: str = "bob@example.test", headers: dict[str, str] | None = None,
               attachments: list[tuple[str, str, bytes]] | None = None) -> bytes:
    """A well-formed RFC 5322 message as bytes; attachments are (filename, mime, data)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Sat, 28 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<test-1@sender.test>"
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, mime, data in attachments or []:
        maintype, subtype = mime.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def synthetic_message(target: int, seed: int, sender_domain: str = "partner.test",
                      link_domains: tuple[str, ...] = ()) -> bytes:
    """About `target` bytes of text, HTML with five links and a PDF-like attachment,
    the same bytes for the same arguments."""
    rnd = random.Random(seed)
    text_len = max(300, target // 4)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < text_len:
        words.append(rnd.choice(WORDS))
    text = " ".join(words)
    hosts = [f"{rnd.choice(['shop', 'mail', 'docs'])}{rnd.randrange(99)}."
             + (link_domains[i % len(link_domains)] if link_domains else "example.com")
             for i in range(5)]
    links = [f"https://{h}/p/{rnd.randrange(10**6)}" for h in hosts]
    html = (
        "<html><body><p>"
        + text.replace(" please ", " <b>please</b> ")
        + "</p>"
        + "".join(f'<p><a href="{u}">{u.split("/")[2]}</a></p>' for u in links)
        + "</body></html>"
    )
    msg = EmailMessage()
    msg["From"] = f"Sender {seed} <sender{seed}@{sender_domain}>"
    msg["To"] = "bob@example.test"
    msg["Subject"] = f"Quarterly {rnd.choice(WORDS)} #{seed}"
    msg["Date"] = "Sat, 28 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<bench-{seed}@{sender_domain}>"
    msg.set_content(text + "\n" + "\n".join(links) + "\n")
    msg.add_alternative(html, subtype="html")
    so_far = len(msg.as_bytes())
    attach = max(64, int((target - so_far) * 0.74))  # base64 grows 4/3
    msg.add_attachment(
        b"%PDF-1.4\n" + rnd.randbytes(attach),
        maintype="application",
        subtype="pdf",
        filename=f"report-{seed}.pdf",
    )
    return msg.as_bytes()


def zip_bytes(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def pdf(objects: list[bytes]) -> bytes:
    """A small well-formed PDF from object bodies (numbered from 1), with an xref table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def pdf_plain() -> bytes:
    content = b"BT /F1 12 Tf 72 720 Td (Quarterly report) Tj ET"
    return pdf([b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
                b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"])
