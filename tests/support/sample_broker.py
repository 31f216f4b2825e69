"""The shipped broker set-up (deploy/mosquitto) running for tests: TLS, passwords, the ACL.

    with sample_broker(folder, {"dev-a": ["lab"], "dashboard": None}) as fleet:
        fleet.broker.tls_port (boards), fleet.broker.operator_port (operators, TLS), fleet.broker.port
        (operators, plain, loopback), fleet.ca, fleet.passwords["dev-a"]

The shipped mosquitto.conf is used with only its file paths and port numbers changed; the CA and
the server certificate are made here with openssl; credentials come from the shipped
make-device-credentials script (a device with its groups, or `None` for an operator's account).
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from support.broker import Broker, TlsFiles

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_tls(folder: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for localhost and 127.0.0.1 signed by it."""
    folder.mkdir(parents=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj",
            "/CN=edge-agent test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=folder)
    (folder / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=folder)
    return TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")


def make_credentials(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "EDGE_MQTT_PASSWORD_FILE": str(folder / "passwd"),
           "EDGE_MQTT_OPERATORS_FILE": str(folder / "operators.passwd"), "EDGE_MQTT_ACL_FILE": str(folder / "acl")}
    return subprocess.run([str(DEPLOY / "make-device-credentials"), *args], env=env, capture_output=True,
                          text=True, timeout=30)


class Fleet:
    """The running broker, its CA and the passwords the script made."""

    def __init__(self, broker: Broker, ca: Path, passwords: Dict[str, str]) -> None:
        self.broker, self.ca, self.passwords = broker, ca, passwords


@contextmanager
def sample_broker(folder: Path, accounts: Dict[str, Optional[List[str]]]) -> Iterator[Fleet]:
    """Start Mosquitto with the shipped config; `accounts` maps each user to a device's groups, or
    to None for an operator's account such as the dashboard."""
    tls = make_tls(folder / "tls")
    shutil.copy(DEPLOY / "acl", folder / "acl")
    passwords = {}
    for user, groups in accounts.items():
        made = make_credentials(folder, *(["--operator", user] if groups is None else [user, *groups]))
        assert made.returncode == 0, made.stderr
        passwords[user] = made.stdout.strip()
    config = ((DEPLOY / "mosquitto.conf").read_text().replace("/etc/mosquitto/edge-agent/", f"{folder}/")
              .replace("\nlistener 8883\n", "\nlistener {tls_port} 127.0.0.1\n")
              .replace("\nlistener 8884\n", "\nlistener {operator_port} 127.0.0.1\n")
              .replace("\nlistener 1883 127.0.0.1\n", "\nlistener {port} 127.0.0.1\n"))
    assert "{tls_port}" in config and "{operator_port}" in config and "{port}" in config
    with Broker(folder / "broker", config=config) as broker:
        startup = broker.log()
        assert "running" in startup and "Error" not in startup and "Warning: ACL" not in startup, startup
        yield Fleet(broker, tls.ca, passwords)
