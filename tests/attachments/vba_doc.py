"""Build real Office macro documents for tests: an OLE compound file holding a VBA project
(what Word writes as a `.doc`, and as `word/vbaProject.bin` inside a `.docm`).

olefile can read but not write compound files, and no sample documents may be committed, so
this writes the few structures olevba reads, following the specifications:

* [MS-CFB] compound file, version 3 (512-byte sectors). Every stream is made at least 4096
  bytes long (the mini-stream cutoff) so all data lives in regular FAT sectors and no
  mini stream is needed: the module stream through its MODULEOFFSET (the source starts after
  a zero "performance cache"), the dir stream by zero padding after its terminator.
* [MS-OVBA] 2.4.1 compression: full 4096-byte blocks as raw chunks, the last block as a
  compressed chunk of literal tokens only (valid, merely not smaller).
* [MS-OVBA] 2.3.4.2 the `VBA/dir` records olevba parses, one module per source.
"""

from __future__ import annotations

import io
import struct
import zipfile

SECTOR = 512
FREESECT, ENDOFCHAIN, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


def ovba_compress(data: bytes) -> bytes:
    out = bytearray(b"\x01")
    for off in range(0, max(len(data), 1), 4096):
        block = data[off:off + 4096]
        if len(block) == 4096:  # raw chunk: header size field 4098 - 3, flag 0
            out += struct.pack("<H", 0x0FFF | (0b011 << 12)) + block
            continue
        body = bytearray()
        for i in range(0, len(block), 8):  # flag byte 0: eight literal tokens follow
            body += b"\x00" + block[i:i + 8]
        out += struct.pack("<H", (len(body) + 2 - 3) | (0b011 << 12) | 0x8000) + body
    return bytes(out)


def _rec(rid: int, payload: bytes) -> bytes:
    return struct.pack("<HI", rid, len(payload)) + payload


def dir_stream(modules: list[str], project: str = "Project") -> bytes:
    d = bytearray()
    d += _rec(0x0001, struct.pack("<I", 1))  # PROJECTSYSKIND: 32-bit Windows
    d += _rec(0x0002, struct.pack("<I", 0x409))  # PROJECTLCID
    d += _rec(0x0014, struct.pack("<I", 0x409))  # PROJECTLCIDINVOKE
    d += _rec(0x0003, struct.pack("<H", 1252))  # PROJECTCODEPAGE
    d += _rec(0x0004, project.encode())  # PROJECTNAME
    d += _rec(0x0005, b"") + _rec(0x0040, b"")  # PROJECTDOCSTRING (+ unicode)
    d += _rec(0x0006, b"") + _rec(0x003D, b"")  # PROJECTHELPFILEPATH 1 and 2
    d += _rec(0x0007, struct.pack("<I", 0))  # PROJECTHELPCONTEXT
    d += _rec(0x0008, struct.pack("<I", 0))  # PROJECTLIBFLAGS
    d += struct.pack("<HIIH", 0x0009, 4, 1, 0)  # PROJECTVERSION (reserved 4, major, minor)
    d += _rec(0x000C, b"") + _rec(0x003C, b"")  # PROJECTCONSTANTS (+ unicode)
    d += _rec(0x000F, struct.pack("<H", len(modules)))  # PROJECTMODULES
    d += _rec(0x0013, struct.pack("<H", 0xFFFF))  # PROJECTCOOKIE
    for name in modules:
        n, u = name.encode(), name.encode("utf-16-le")
        d += _rec(0x0019, n) + _rec(0x0047, u)  # MODULENAME, MODULENAMEUNICODE
        d += _rec(0x001A, n) + _rec(0x0032, u)  # MODULESTREAMNAME (+ unicode)
        d += _rec(0x001C, b"") + _rec(0x0048, b"")  # MODULEDOCSTRING (+ unicode)
        d += _rec(0x0031, struct.pack("<I", 4096))  # MODULEOFFSET: source after 4 KiB
        d += _rec(0x001E, struct.pack("<I", 0))  # MODULEHELPCONTEXT
        d += _rec(0x002C, struct.pack("<H", 0xFFFF))  # MODULECOOKIE
        d += struct.pack("<HI", 0x0022 if name == "ThisDocument" else 0x0021, 0)  # MODULETYPE
        d += struct.pack("<HI", 0x002B, 0)  # MODULE terminator
    d += struct.pack("<HI", 0x0010, 0)  # dir terminator
    return bytes(d)


def _entry(name: str, kind: int, start: int = ENDOFCHAIN, size: int = 0, left: int = NOSTREAM,
           right: int = NOSTREAM, child: int = NOSTREAM) -> bytes:
    raw = name.encode("utf-16-le") + b"\x00\x00" if name else b""
    return (raw.ljust(64, b"\x00") + struct.pack("<HBB", len(raw), kind, 1)
            + struct.pack("<III", left, right, child) + bytes(16 + 4 + 16)
            + struct.pack("<IQ", start, size))


def compound_file(streams: list[tuple[str, bytes]]) -> bytes:
    """An OLE file with a root storage holding `PROJECT` and a `VBA` storage holding the
    other streams (names as "VBA/dir"). Each stream must be >= 4096 bytes."""
    sectors: list[bytes] = []
    placed: dict[str, tuple[int, int]] = {}
    fat: list[int] = []
    for name, data in streams:
        assert len(data) >= 4096, f"{name}: streams under 4096 bytes need a mini stream"
        n = -(-len(data) // SECTOR)
        first = len(sectors)
        for i in range(n):
            sectors.append(data[i * SECTOR:(i + 1) * SECTOR].ljust(SECTOR, b"\x00"))
            fat.append(first + i + 1 if i < n - 1 else ENDOFCHAIN)
        placed[name] = (first, len(data))
    # Directory: 0 root, 1 PROJECT, 2 VBA storage, 3.. the VBA streams chained right.
    vba = [name for name, _ in streams if name.startswith("VBA/")]
    entries = [_entry("Root Entry", 5, child=1),
               _entry("PROJECT", 2, *placed["PROJECT"], right=2),
               _entry("VBA", 1, child=3)]
    for i, name in enumerate(vba):
        entries.append(_entry(name[4:], 2, *placed[name],
                              right=4 + i if i < len(vba) - 1 else NOSTREAM))
    while len(entries) % 4:
        entries.append(_entry("", 0, start=0))
    dir_first = len(sectors)
    blob = b"".join(entries)
    nd = len(blob) // SECTOR
    for i in range(nd):
        sectors.append(blob[i * SECTOR:(i + 1) * SECTOR])
        fat.append(dir_first + i + 1 if i < nd - 1 else ENDOFCHAIN)
    # FAT sectors come last; they describe themselves too.
    n_fat = 1
    while (len(sectors) + n_fat) > n_fat * (SECTOR // 4):
        n_fat += 1
    fat_first = len(sectors)
    fat += [FATSECT] * n_fat
    fat += [FREESECT] * (n_fat * (SECTOR // 4) - len(fat))
    fat_bytes = struct.pack(f"<{len(fat)}I", *fat)
    for i in range(n_fat):
        sectors.append(fat_bytes[i * SECTOR:(i + 1) * SECTOR])
    assert n_fat <= 109
    difat = [fat_first + i for i in range(n_fat)] + [FREESECT] * (109 - n_fat)
    header = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16)
              + struct.pack("<HHHHH", 0x003E, 0x0003, 0xFFFE, 9, 6) + bytes(6)
              + struct.pack("<IIIIIIIII", 0, n_fat, dir_first, 0, 4096, ENDOFCHAIN, 0,
                            ENDOFCHAIN, 0)
              + struct.pack("<109I", *difat))
    assert len(header) == SECTOR
    return header + b"".join(sectors)


def vba_project(modules: dict[str, str]) -> bytes:
    """A vbaProject.bin (also a valid macro-only `.doc` container for olevba)."""
    project_text = ('ID="{00000000-0000-0000-0000-000000000000}"\r\n'
                    + "".join(f"Document={m}/&H00000000\r\n" if m == "ThisDocument"
                              else f"Module={m}\r\n" for m in modules)
                    + 'Name="Project"\r\nHelpContextID="0"\r\nVersionCompatible32="393222000"\r\n')
    project = project_text.encode("cp1252").ljust(4096, b"\r")
    streams = [("PROJECT", project),
               ("VBA/dir", ovba_compress(dir_stream(list(modules)).ljust(4096 * 2, b"\x00"))),
               ("VBA/_VBA_PROJECT", struct.pack("<HHBH", 0x61CC, 0xFFFF, 0, 0).ljust(4096, b"\x00"))]
    for name, source in modules.items():
        code = source.replace("\r\n", "\n").replace("\n", "\r\n").encode("cp1252")
        streams.append((f"VBA/{name}", bytes(4096) + ovba_compress(code)))
    return compound_file(streams)


_DOCM_TYPES = (b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats'
               b'.org/package/2006/content-types"><Default Extension="bin" ContentType="application/'
               b'vnd.ms-office.vbaProject"/><Default Extension="xml" ContentType="application/xml"/>'
               b'<Override PartName="/word/document.xml" ContentType="application/vnd.ms-word.'
               b'document.macroEnabled.main+xml"/></Types>')


def docm(modules: dict[str, str]) -> bytes:
    """A Word macro-enabled document: OOXML zip with word/vbaProject.bin."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _DOCM_TYPES)
        zf.writestr("word/document.xml", b'<w:document xmlns:w="http://schemas.openxmlformats.org/'
                    b'wordprocessingml/2006/main"><w:body><w:p/></w:body></w:document>')
        zf.writestr("word/vbaProject.bin", vba_project(modules))
    return buf.getvalue()
