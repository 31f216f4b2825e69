"""sd_notify, spoken directly: one datagram to `$NOTIFY_SOCKET` per message, no dependency.

systemd's protocol (sd_notify(3)): newline-separated `KEY=VALUE` lines in one datagram on the
AF_UNIX socket named by NOTIFY_SOCKET (a leading `@` is the abstract namespace). With
`WatchdogSec=`, systemd sets WATCHDOG_USEC (and WATCHDOG_PID) and expects `WATCHDOG=1` at least
that often. Outside systemd the variable is unset and every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping, Optional

_log = logging.getLogger(__name__)


class Notifier:
    """Tells systemd how the service is doing: READY, STATUS, WATCHDOG, RELOADING, STOPPING."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        mine = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None

    def send(self, *lines: str) -> bool:
        """Send `KEY=VALUE` lines as one datagram; False when there is no socket or it failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(lines).encode("utf-8"), self.address)
            return True
        except OSError as error:
            _log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), error)
            return False

    def ready(self, status: str) -> bool:
        """Start-up is complete."""
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        """A one-line state for `systemctl status`."""
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        """The main loop is alive."""
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """A configuration reload begins (READY=1 ends it)."""
        return self.send("RELOADING=1")

    def stopping(self) -> bool:
        """Shutdown begins."""
        return self.send("STOPPING=1", "STATUS=stopping")
