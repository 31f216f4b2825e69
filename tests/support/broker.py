"""A real Mosquitto for tests: its own config in a temporary folder, free ports on 127.0.0.1.

    broker = Broker(tmp_path, password_file=..., acl_file=..., tls=TlsFiles(...)).start()
    ... broker.port, broker.tls_port ...
    broker.kill(); broker.start()   # a crash and a restart on the same ports
    broker.stop()

Persistence is on (in the folder), so retained messages and persistent sessions survive `stop()`
and `start()`; pass `extra_config="autosave_interval 1\\nautosave_on_changes true"` to keep most
of them across `kill()` too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

START_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TlsFiles:
    """The broker's TLS material: the CA that signed it, its certificate and its key (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def mosquitto_binary() -> Optional[str]:
    """The mosquitto executable, or None when it is not installed."""
    return shutil.which("mosquitto") or next(
        (path for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(path, os.X_OK)),
        None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Broker:
    """One Mosquitto process with a generated config, or with `config` (a template in which
    `{port}`, `{tls_port}` and `{operator_port}` are replaced) for testing a given configuration file."""

    def __init__(self, workdir: Path, password_file: Optional[Path] = None, acl_file: Optional[Path] = None,
                 tls: Optional[TlsFiles] = None, extra_config: str = "", config: Optional[str] = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.password_file, self.acl_file, self.tls = password_file, acl_file, tls
        self.extra_config, self.template = extra_config, config
        self.port = free_port()
        self.tls_port = free_port()
        self.operator_port = free_port()  # the sample config's second TLS listener, for operators
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.process: Optional[subprocess.Popen] = None

    def _config_text(self) -> str:
        if self.template is not None:
            body = self.template.format(port=self.port, tls_port=self.tls_port, operator_port=self.operator_port)
        else:
            lines = ["per_listener_settings false",
                     f"allow_anonymous {'false' if self.password_file else 'true'}"]
            if self.password_file:
                lines.append(f"password_file {self.password_file}")
            if self.acl_file:
                lines.append(f"acl_file {self.acl_file}")
            lines.append(f"listener {self.port} 127.0.0.1")
            if self.tls:
                lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {self.tls.ca}",
                          f"certfile {self.tls.cert}", f"keyfile {self.tls.key}", "tls_version tlsv1.2"]
            body = "\n".join(lines)
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        own = ["log_dest stderr", "log_type error", "log_type warning", "log_type notice",
               "log_type information", "persistence true", f"persistence_location {data}/"]
        if os.geteuid() == 0:
            own.append("user root")  # otherwise it drops to `mosquitto`, which cannot read a 0700 tmp dir
        return "\n".join([body, self.extra_config, *own]) + "\n"

    def start(self) -> Broker:
        """Start Mosquitto (again, on the same ports after `stop` or `kill`) and wait until every
        listener accepts connections; raises RuntimeError with the broker's log when it cannot."""
        if self.running:
            return self
        self.config_path.write_text(self._config_text())
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                            stdout=log, stderr=subprocess.STDOUT)
        ports = [self.port] + ([self.tls_port] if self.tls or "{tls_port}" in (self.template or "") else [])
        ports += [self.operator_port] if "{operator_port}" in (self.template or "") else []
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(_accepts(port) for port in ports):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto did not start on {ports}:\n{self.log()}")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly (SIGTERM: persistent state is saved), SIGKILL if it does not exit in time."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash or a power cut would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        """Everything the broker has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# Skips a test that needs a real broker where the mosquitto binary is not installed.
NEEDS_MOSQUITTO = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
