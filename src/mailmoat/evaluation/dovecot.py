"""A private Dovecot for tests: temp config, Maildirs and sockets, loopback, free ports.

`running_dovecot(root, users)` writes a dovecot.conf of its own (nothing of the system's
Dovecot is read or touched), with IMAP and LMTP on free 127.0.0.1 ports, `passwd-file`
users that all map to the unprivileged `dovecot` system account (Dovecot refuses mail
access as root), and a master user: SASL PLAIN with the recipient as authorization
identity, or `user*master` at LOGIN, logs in for anyone. Dovecot itself starts as root (as
a packaged one does) so it can drop to that account; the fixture is skipped elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imapclient import IMAPClient

MASTER_USER = "mailmoat"
MASTER_PASSWORD = "master-secret-1"
USER_PASSWORD = "user-pw"


def dovecot_available() -> str | None:
    """None when usable, else why not."""
    if shutil.which("dovecot") is None:
        return "dovecot is not installed (Debian: dovecot-imapd dovecot-lmtpd)"
    if not Path("/usr/lib/dovecot/lmtp").exists():
        return "dovecot-lmtpd is not installed"
    try:
        pwd.getpwnam("dovecot")
    except KeyError:
        return "the dovecot system user is missing"
    if os.geteuid() != 0:
        return "starting Dovecot needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    root: Path
    imap_port: int
    lmtp_port: int
    users: list[str]
    proc: subprocess.Popen[bytes] | None = None
    uid: int = 0
    gid: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def sasl_socket(self) -> Path:
        """Dovecot's SASL socket, for a Postfix's `smtpd_sasl_path`."""
        return self.root / "run" / "auth-client"

    @property
    def passwd(self) -> Path:
        return self.root / "users"

    def write_users(self, users: list[str]) -> None:
        self.users = list(users)
        lines = [f"{u}:{{PLAIN}}{USER_PASSWORD}:{self.uid}:{self.gid}::"
                 f"{self.root / 'mail' / u}::" for u in users]
        self.passwd.write_text("\n".join(lines) + "\n")

    def write_master(self, password: str = MASTER_PASSWORD) -> None:
        (self.root / "masters").write_text(f"{MASTER_USER}:{{PLAIN}}{password}\n")

    def lmtp_deliver(self, raw: bytes, recipients: list[str], sender: str = "") -> None:
        # One transaction per recipient: LMTP answers DATA once per recipient, which
        # smtplib.LMTP does not read.
        with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=30) as lmtp:
            for rcpt in recipients:
                refused = lmtp.sendmail(sender, [rcpt], raw)
                assert not refused, refused

    def client(self, user: str) -> IMAPClient:
        """The user's own IMAP session (what their mail program does)."""
        c = IMAPClient("127.0.0.1", port=self.imap_port, ssl=False, timeout=30)
        c.login(user, USER_PASSWORD)
        return c

    def folders_of(self, user: str, header: str, value: str) -> list[str]:
        """The folder of every copy of a message (by header), sorted."""
        out = []
        c = self.client(user)
        try:
            for flags, _d, name in c.list_folders():
                if b"\\Noselect" in flags:
                    continue
                c.select_folder(name, readonly=True)
                out += [name] * len(c.search(["HEADER", header, value]))
        finally:
            c.logout()
        return sorted(out)


CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
auth_username_format = %Lu
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
mail_privileged_group =
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = {root}/masters
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
service auth {{
  unix_listener auth-userdb {{
    mode = 0600
    user = dovecot
  }}
  # SASL for a test Postfix (smtpd_sasl_type = dovecot), whose smtpd runs as `postfix`;
  # the socket lies in this instance's private temp dir.
  unix_listener auth-client {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
protocol lmtp {{
  postmaster_address = postmaster@example.test
}}
lmtp_save_to_detail_mailbox = no
"""


def _wait_port(port: int, log: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited with {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-3000:] if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(200).startswith((b"* OK", b"220")):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"dovecot did not open port {port}")


@contextlib.contextmanager
def running_dovecot(users: list[str], timeout: float = 30.0) -> Iterator[Dovecot]:
    """Dovecot in a temp dir of its own: pytest's tmp_path is private to root (0700), and
    Dovecot's processes run as the `dovecot` and `dovenull` users."""
    pw = pwd.getpwnam("dovecot")
    root = Path(tempfile.mkdtemp(prefix="mm-dc-"))
    os.chmod(root, 0o755)
    for d in ("run", "state", "mail"):
        (root / d).mkdir(exist_ok=True)
    os.chown(root / "mail", pw.pw_uid, pw.pw_gid)
    dc = Dovecot(root, _free_port(), _free_port(), [], uid=pw.pw_uid, gid=pw.pw_gid)
    dc.write_users(users)
    dc.write_master()
    conf = root / "dovecot.conf"
    conf.write_text(CONF.format(root=root, uid=pw.pw_uid, imap_port=dc.imap_port,
                                lmtp_port=dc.lmtp_port))
    log = root / "dovecot.log"
    dc.proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=open(root / "stderr.log", "wb"))
    try:
        _wait_port(dc.imap_port, log, dc.proc, timeout)
        _wait_port(dc.lmtp_port, log, dc.proc, timeout)
        yield dc
    finally:
        if dc.proc.poll() is None:
            dc.proc.send_signal(signal.SIGTERM)
            try:
                dc.proc.wait(15)
            except subprocess.TimeoutExpired:
                dc.proc.kill()
                dc.proc.wait()
        shutil.rmtree(root, ignore_errors=True)
