"""A TCP relay on 127.0.0.1 that a test can cut and restore: a link between two services (a Mosquitto bridge
and its central broker) that goes down and comes back, with both ends alive.

    relay = Relay(central.port)      # connect to relay.port instead of central.port
    relay.cut()                      # every connection through it is closed, new ones are refused
    relay.restore()
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import List

from support.listener import LoopbackListener


class Relay(LoopbackListener):
    """Forwards each connection to 127.0.0.1:`target` until `cut`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.down = threading.Event()
        self._open: List[socket.socket] = []
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, peer: socket.socket) -> None:
        """Connect the peer to the target, or close it while the link is cut."""
        if self.down.is_set():
            peer.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            peer.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open += [peer, upstream]
        for source, sink in ((peer, upstream), (upstream, peer)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Close every connection through the relay and refuse new ones."""
        self.down.set()
        with self._lock:
            for end in self._open:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            self._open.clear()

    def restore(self) -> None:
        """Accept and forward connections again."""
        self.down.clear()
