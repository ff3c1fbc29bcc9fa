"""A private Postfix instance for tests: temp config/queue/Maildir, loopback, a free port.

Postfix runs from its own config directory (`postfix -c DIR start`), accepts mail for
example.test on 127.0.0.1:PORT only, and delivers it with the virtual agent into
DIR/mail/maildir/ (Maildir format). Nothing of the system's Postfix is touched.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path


def postfix_available() -> str | None:
    """None when usable, else why not."""
    if shutil.which("postfix") is None or shutil.which("postconf") is None:
        return "the postfix binary is not installed"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or postdrop group is missing"
    if os.geteuid() != 0:
        return "starting Postfix needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostfix:
    def __init__(self, root: Path, main: dict[str, str] | None = None) -> None:
        """`main`: main.cf settings that replace (or add to) the defaults below."""
        self.root = root
        self.main = dict(main or {})
        self.conf = root / "etc"
        self.queue = root / "queue"
        self.maildir = root / "mail" / "maildir"
        self.port = _free_port()

    def write_config(self) -> None:
        pw = pwd.getpwnam("postfix")
        for d in (self.conf, self.queue, self.root / "data", self.root / "mail"):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.root / "data", self.root / "mail"):
            os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o755)
        main_cf = f"""
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.root / 'data'}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.example.test
mydomain = example.test
myorigin = example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
virtual_mailbox_domains = example.test
virtual_mailbox_base = {self.root / 'mail'}
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:{pw.pw_uid}
virtual_gid_maps = static:{pw.pw_gid}
virtual_minimum_uid = 1
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = $myhostname ESMTP
biff = no
maillog_file = {self.root / 'maillog'}
maillog_file_prefixes = {self.root}
smtputf8_enable = no
default_transport = error:no outside delivery in tests
relay_transport = error:no outside delivery in tests
"""
        pending = dict(self.main)
        lines = []
        for line in main_cf.splitlines():
            key = line.split("=", 1)[0].strip()
            lines.append(f"{key} = {pending.pop(key)}" if key in pending else line)
        lines += [f"{k} = {v}" for k, v in pending.items()]
        (self.conf / "main.cf").write_text("\n".join(lines) + "\n")
        master = Path("/etc/postfix/master.cf").read_text()
        lines = []
        for line in master.splitlines():
            if not line or line[0] in "# \t":
                lines.append(line)
                continue
            fields = line.split()
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = f"127.0.0.1:{self.port}"
            if len(fields) >= 8:
                fields[4] = "n"  # no chroot: the temp dirs are not inside a chroot
            lines.append("  ".join(fields) if len(fields) >= 8 else line)
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # Postfix reports errors to syslog, or to stderr only when that is a terminal;
        # `script` gives it one so a failure says why.
        cmd = " ".join(["postfix", "-c", str(self.conf), *args])
        return subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True,
                              text=True, timeout=60)

    def start(self) -> None:
        self.write_config()
        res = self._run("start")
        if res.returncode != 0:
            raise RuntimeError(f"postfix start failed: {res.stdout}{res.stderr}"
                               f"{self.log()[-2000:]}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(200).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"postfix did not listen on {self.port}: {self.log()[-2000:]}")

    def stop(self) -> None:
        pidfile = self.queue / "pid" / "master.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        self._run("stop")
        # `postfix stop` only signals the master; wait for it to take its children down.
        deadline = time.monotonic() + 10
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def postqueue(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postqueue", "-c", str(self.conf), *args], capture_output=True,
                              text=True, timeout=60)

    def queued(self) -> dict[str, int]:
        """Messages in the queue by queue name (incoming, active, deferred, hold)."""
        out: dict[str, int] = {}
        for line in self.postqueue("-j").stdout.splitlines():
            name = json.loads(line)["queue_name"]
            out[name] = out.get(name, 0) + 1
        return out

    def log(self) -> str:
        p = self.root / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def delivered(self) -> list[bytes]:
        new = self.maildir / "new"
        if not new.is_dir():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]


def header(raw: bytes, name: str) -> str | None:
    m = re.search(rb"^" + name.encode() + rb":[ \t]*(.*)$", raw, re.M | re.I)
    return m.group(1).decode().strip() if m else None
