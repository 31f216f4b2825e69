"""A TCP listener on 127.0.0.1 for tests that stand in for a server: it accepts in a background thread
and hands each connection to `handle` (override it). `close` stops it."""

from __future__ import annotations

import socket
import threading


class LoopbackListener:
    """Accepts connections on a free loopback port (`port`), each passed to `handle`."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                peer, _ = self.socket.accept()
            except OSError:  # closed
                return
            self.handle(peer)

    def handle(self, peer: socket.socket) -> None:
        """What to do with one connection (here: close it)."""
        peer.close()

    def close(self) -> None:
        """Stop accepting."""
        self.socket.close()
