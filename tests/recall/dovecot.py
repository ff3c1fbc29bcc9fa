"""The Dovecot fixture for recall tests. The launcher is mailmoat.evaluation.dovecot, which
bench/recall.py starts too; its names are re-exported here for the tests."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from mailmoat.evaluation.dovecot import (
    MASTER_PASSWORD,
    MASTER_USER,
    USER_PASSWORD,
    Dovecot,
    dovecot_available,
    running_dovecot,
)

__all__ = ["MASTER_PASSWORD", "MASTER_USER", "USER_PASSWORD", "Dovecot", "SlowProxy",
           "dovecot", "dovecot_available", "running_dovecot"]


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    why = dovecot_available()
    if why:
        pytest.skip(why)
    with running_dovecot([f"user{i}@example.test" for i in range(1, 5)]) as dc:
        yield dc


class SlowProxy:
    """A TCP forwarder on loopback that waits `delay` seconds before it connects each
    client through: IMAP sessions through it take long enough to stop a recall half-way."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream = upstream_port
        self.delay = delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self._stop = False
        import threading

        self._threading = threading
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self._threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        time.sleep(self.delay)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=30)
        except OSError:
            client.close()
            return

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    b.shutdown(socket.SHUT_WR)

        t = self._threading.Thread(target=pump, args=(upstream, client), daemon=True)
        t.start()
        pump(client, upstream)
        t.join(30)
        client.close()
        upstream.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
