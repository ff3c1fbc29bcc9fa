"""A private clamd for tests and benchmarks, loaded with EICAR test signatures only.

No signature download is possible (or wanted) here, so the database is made on the spot:

* `test.hdb`: `sigtool --md5` of the corpus' eicar.com (ClamAV's own tool, as an admin
  would), which matches the file wherever clamd unpacks it (MIME parts, zips);
* `test.ndb`: a body signature for the EICAR string, so it is found at any offset.

`running_clamd(tmpdir)` writes a private clamd.conf (unix socket in the temp dir, TCP on a
free loopback port, foreground, no freshclam), starts `clamd -c`, waits for PING/PONG and
stops it afterwards. tests/clamd.py wraps it in the session-scoped `clamd_server` fixture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailmoat.evaluation.paths import shared_corpus

# The EICAR test string, from two halves so this file does not itself look like the test file.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def eicar_corpus_dir() -> Path | None:
    """../shared/corpus/eicar beside the checkout (how developers and CI lay it out)."""
    cand = shared_corpus() / "eicar"
    return cand if (cand / "eicar.com").is_file() else None


def clamd_binary() -> str | None:
    for cand in (shutil.which("clamd"), "/usr/sbin/clamd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
            s.sendall(b"zPING\0")
            return s.recv(16).startswith(b"PONG")
    except OSError:
        return False


@dataclass(frozen=True)
class Clamd:
    socket_path: str
    tcp_port: int
    pid: int

    @property
    def unix_address(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def tcp_address(self) -> str:
        return f"tcp:127.0.0.1:{self.tcp_port}"


def write_database(dbdir: Path, kinds: tuple[str, ...] = ("hdb", "ndb")) -> None:
    corpus = eicar_corpus_dir()
    sigtool = shutil.which("sigtool")
    if corpus is not None and sigtool:
        hdb = subprocess.run([sigtool, "--md5", str(corpus / "eicar.com")], check=True,
                             capture_output=True, timeout=30).stdout
    else:  # the same line sigtool writes: md5:size:name
        import hashlib

        hdb = f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:eicar.com\n".encode()
    if "hdb" in kinds:
        (dbdir / "test.hdb").write_bytes(hdb)
    if "ndb" in kinds:
        (dbdir / "test.ndb").write_text(f"Mailmoat.Test.EICAR-String:0:*:{EICAR.hex()}\n")


@contextlib.contextmanager
def running_clamd(workdir: Path | None = None, startup_timeout: float = 60.0,
                  signatures: tuple[str, ...] = ("hdb", "ndb"),
                  stream_max: str = "30M") -> Iterator[Clamd]:
    binary = clamd_binary()
    if binary is None:
        raise RuntimeError("clamd is not installed (Debian: apt-get install clamav-daemon)")
    owned = workdir is None
    # Unix socket paths are limited to ~107 bytes: keep the directory short.
    base = Path(tempfile.mkdtemp(prefix="mm-clamd-")) if workdir is None else workdir
    try:
        write_database(base, signatures)
        sock = str(base / "clamd.sock")
        port = _free_port()
        conf = base / "clamd.conf"
        conf.write_text("\n".join([
            f"LocalSocket {sock}",
            "LocalSocketMode 600",
            "TCPAddr 127.0.0.1",
            f"TCPSocket {port}",
            f"DatabaseDirectory {base}",
            f"LogFile {base / 'clamd.log'}",
            f"PidFile {base / 'clamd.pid'}",
            f"TemporaryDirectory {base}",
            "Foreground yes",
            "ScanArchive yes",
            "ScanMail yes",
            "ScanPDF yes",
            "ScanOLE2 yes",
            "Bytecode no",
            "MaxThreads 4",
            f"StreamMaxLength {stream_max}",
            "SelfCheck 0",
            "",
        ]))
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + startup_timeout
            while not _ping(sock):
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    log = (base / "clamd.log").read_text(errors="replace") \
                        if (base / "clamd.log").exists() else ""
                    raise RuntimeError(f"clamd exited with {proc.returncode}: {err}\n{log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"clamd did not answer PING within {startup_timeout:g}s")
                time.sleep(0.1)
            yield Clamd(socket_path=sock, tcp_port=port, pid=proc.pid)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            if proc.stderr:
                proc.stderr.close()
    finally:
        if owned:
            shutil.rmtree(base, ignore_errors=True)

