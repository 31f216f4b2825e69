"""`deploy`: real archives served by a real HTTP server on 127.0.0.1 (allow-listed for plain http),
unpacked into a real model store; and one deploy over MQTT to a running agent."""

from __future__ import annotations

import io
import shutil
import socket
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
from support.agent import (
    DIGITS,
    AgentProcess,
    coordinator,
    no_stray_agents,  # noqa: F401 (an autouse fixture)
    wait_status,
)
from support.broker import NEEDS_MOSQUITTO, Broker
from support.listener import LoopbackListener
from support.served import bundle_tar, publish, served_folder, tar_of, url

from agent.config import DeploySettings
from agent.errors import BundleError, DeployError, ProtocolError
from agent.measure.isolate import WorkerCancelled
from agent.mqtt.schema import Limits, download_url
from agent.service.deploy import deploy, public_addresses, unpack, unpack_cap
from agent.service.model_store import remove_leftovers

LOCAL = DeploySettings(http_hosts=("127.0.0.1",), timeout_s=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder served over http on 127.0.0.1; `served.port` is where."""
    with served_folder(tmp_path_factory.mktemp("served")) as folder:
        yield folder


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (len(data) if kind == tarfile.REGTYPE else 0), kind, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def never() -> None:
    pass


class Listener(LoopbackListener):
    """A TCP listener on 127.0.0.1 that only counts the connections made to it."""

    def __init__(self) -> None:
        self.connections = 0
        super().__init__()

    def handle(self, peer: socket.socket) -> None:
        """Count it, close it."""
        self.connections += 1
        peer.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    opened = Listener()
    yield opened
    opened.close()


def test_a_tar_bundle_is_installed_whole(served: Path, tmp_path: Path) -> None:
    args = publish(served, "digits.tar.gz", bundle_tar())
    installed = deploy(args, tmp_path, LOCAL, never)
    assert installed["bundle"] == "digits" and installed["sha256"] == args["sha256"] and installed["files"] == 7
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == sorted(p.name for p in DIGITS.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]  # no work folder left


def test_a_zip_with_files_at_its_top_replaces_the_old_bundle(served: Path, tmp_path: Path) -> None:
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "stale.txt").write_text("old")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in DIGITS.iterdir():
            archive.write(path, path.name)
    installed = deploy(publish(served, "digits.zip", buffer.getvalue()), tmp_path, LOCAL, never)
    assert installed["models"] == ["onnx/fp32", "tflite/fp32", "tflite/int8"]
    assert not (tmp_path / "digits" / "stale.txt").exists() and [p.name for p in tmp_path.iterdir()] == ["digits"]


@pytest.mark.parametrize("case,message", [
    ("sha256", "sha256 is"),
    ("short", "more than the|exceeds the"),
    ("long", "not the"),
    ("not an archive", "neither a tar nor a zip"),
    ("traversal", "outside the bundle"),
    ("absolute", "outside the bundle"),
    ("symlink", "link or device"),
    ("hardlink", "link or device"),
    ("device", "link or device"),
    ("zip traversal", "outside the bundle"),
    ("zip symlink", "link or device"),
    ("too big unpacked", "unpacks to more than"),
    ("no manifest", "no manifest.json"),
])
def test_unsafe_or_wrong_downloads_are_refused_and_leave_nothing(served: Path, tmp_path: Path, case: str,
                                                                 message: str) -> None:
    data = bundle_tar()
    settings = LOCAL
    if case == "not an archive":
        data = b"just bytes " * 100
    elif case in ("traversal", "absolute", "symlink", "hardlink", "device"):
        name, kind, link = {"traversal": ("digits/../../evil", tarfile.REGTYPE, ""),
                            "absolute": ("/tmp/evil", tarfile.REGTYPE, ""),
                            "symlink": ("digits/link", tarfile.SYMTYPE, "/etc/passwd"),
                            "hardlink": ("digits/link", tarfile.LNKTYPE, "/etc/passwd"),
                            "device": ("digits/dev", tarfile.CHRTYPE, "")}[case]
        data = tar_of(lambda tar: (tar.add(DIGITS, arcname="digits"), add_bytes(tar, name, b"x", kind, link)))
    elif case.startswith("zip"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            if case == "zip traversal":
                archive.writestr("../evil", b"x")
            else:
                info = zipfile.ZipInfo("link")
                info.external_attr = (0o120777 << 16)
                archive.writestr(info, "/etc/passwd")
        data = buffer.getvalue()
    elif case == "too big unpacked":
        settings = DeploySettings(http_hosts=("127.0.0.1",), max_unpacked_bytes=100_000)
    elif case == "no manifest":
        data = tar_of(lambda tar: add_bytes(tar, "readme.txt", b"hello"))
    args = publish(served, case.replace(" ", "-") + ".bin", data)
    if case == "sha256":
        args["sha256"] = "0" * 64
    elif case == "short":
        args["bytes"] -= 1
    elif case == "long":
        args["bytes"] += 1
    with pytest.raises(DeployError, match=message):
        deploy(args, tmp_path, settings, never)
    assert list(tmp_path.iterdir()) == [] and not (served.parent / "evil").exists()


def test_a_bundle_that_fails_its_own_checks_is_not_installed(served: Path, tmp_path: Path) -> None:
    def corrupt(tar: tarfile.TarFile) -> None:
        for path in DIGITS.iterdir():
            data = path.read_bytes()
            add_bytes(tar, f"digits/{path.name}", data[:-1] + b"!" if path.name == "model.fp32.onnx" else data)
    with pytest.raises(BundleError, match="sha256"):
        deploy(publish(served, "corrupt.tgz", tar_of(corrupt)), tmp_path, LOCAL, never)
    assert list(tmp_path.iterdir()) == []


def test_hosts_and_redirects_must_be_allowed(served: Path, tmp_path: Path) -> None:
    args = publish(served, "digits.tar", bundle_tar())
    with pytest.raises(DeployError, match="https"):
        deploy(args, tmp_path, DeploySettings(), never)  # 127.0.0.1 not on the allow-list any more
    port = (served / "port").read_text()
    redirected = dict(args, url=url(served, f"redirect/localhost:{port}/digits.tar"))
    with pytest.raises(DeployError, match="refused a redirect"):
        deploy(redirected, tmp_path, LOCAL, never)  # localhost is not 127.0.0.1 on the list
    assert list(tmp_path.iterdir()) == []


def test_a_cancelled_download_stops_and_cleans_up(served: Path, tmp_path: Path) -> None:
    def cancel() -> None:
        raise WorkerCancelled("deploy")
    with pytest.raises(WorkerCancelled):
        deploy(publish(served, "digits.tar.gz", bundle_tar()), tmp_path, LOCAL, cancel)
    (tmp_path / ".deploy-crashed").mkdir()
    remove_leftovers(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.mqtt
@NEEDS_MOSQUITTO
def test_deploy_over_mqtt_then_measure_the_new_bundle(served: Path, tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt")
    args = dict(publish(served, "fresh.tar.gz", bundle_tar("fresh")), name="fresh")
    with Broker(tmp_path / "broker") as broker:
        agent = AgentProcess(tmp_path / "agent", broker, device_id=f"dev-{uuid.uuid4().hex[:8]}",
                             settings={"deploy": {"http_hosts": ["127.0.0.1"]}}).start()
        with coordinator(broker) as fleet:
            wait_status(fleet, agent.device_id)
            fleet.follow(agent.device_id)
            outcomes = []
            for cmd, command_args in (("deploy", args), ("models", {}),
                                      ("eval", {"model": "fresh", "backend": "tflite", "eval_limit": 50})):
                command = fleet.send(agent.device_id, cmd, command_args)
                outcomes.append(list(fleet.replies(command.id, True, 60))[-1])
        agent.stop()
    assert [outcome.status for outcome in outcomes] == ["done", "done", "done"], outcomes
    assert outcomes[0].report["sha256"] == args["sha256"]
    assert "fresh" in [entry["name"] for entry in outcomes[1].report["models"]]
    assert outcomes[2].report["reports"][0]["accuracy"]["top1"] > 0.9
    shutil.rmtree(tmp_path / "agent", ignore_errors=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_a_loopback_url_is_refused_before_any_connection(tmp_path: Path, listener: Listener, host: str) -> None:
    args = {"url": f"https://{host}:{listener.port}/digits.tar", "sha256": "0" * 64, "bytes": 1000,
            "name": "digits"}
    with pytest.raises(DeployError, match="loopback.*deploy.hosts"):
        deploy(args, tmp_path, DeploySettings(timeout_s=5), never)
    assert listener.connections == 0 and list(tmp_path.iterdir()) == []


def test_a_redirect_to_a_loopback_host_is_refused_before_it_connects(served: Path, tmp_path: Path,
                                                                     listener: Listener) -> None:
    args = publish(served, "digits.tar", bundle_tar())
    redirected = dict(args, url=url(served, f"redirect-https/localhost:{listener.port}/digits.tar"))
    with pytest.raises(DeployError, match="localhost resolves to .* \\(loopback\\)"):
        deploy(redirected, tmp_path, LOCAL, never)  # 127.0.0.1 is listed (plain http), localhost is not
    assert listener.connections == 0 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("address,kind", [("10.1.2.3", "private"), ("192.168.7.1", "private"),
                                          ("172.16.0.9", "private"), ("169.254.10.1", "link-local"),
                                          ("::1", "loopback"), ("fe80::1", "link-local"), ("0.0.0.0", "unspecified")])
def test_special_addresses_are_refused_unless_the_host_is_listed(address: str, kind: str) -> None:
    """Literal addresses only: getaddrinfo resolves them without any network traffic."""
    with pytest.raises(DeployError, match=f"\\({kind}\\)"):
        public_addresses(address, 443, listed=False)
    assert public_addresses(address, 443, listed=True)
    assert public_addresses("8.8.8.8", 443, listed=False)


def test_only_the_listed_hosts_may_be_named_when_deploy_hosts_is_set(tmp_path: Path, listener: Listener) -> None:
    limits = Limits(deploy_hosts=("models.example.com",))
    assert download_url("url", "https://MODELS.example.com/a.tar", limits)
    with pytest.raises(ProtocolError, match="not in deploy.hosts"):
        download_url("url", "https://elsewhere.example.com/a.tar", limits)
    args = {"url": f"https://127.0.0.1:{listener.port}/a.tar", "sha256": "0" * 64, "bytes": 10, "name": "digits"}
    with pytest.raises(DeployError, match="not in deploy.hosts"):
        deploy(args, tmp_path, DeploySettings(hosts=("models.example.com",)), never)
    assert listener.connections == 0


def test_a_download_the_disk_cannot_hold_is_refused_before_connecting(tmp_path: Path, listener: Listener) -> None:
    args = {"url": f"http://127.0.0.1:{listener.port}/a.tar", "sha256": "0" * 64, "bytes": 10, "name": "digits"}
    with pytest.raises(DeployError, match="not enough disk space"):
        deploy(args, tmp_path, DeploySettings(http_hosts=("127.0.0.1",), min_free_bytes=1 << 49), never)
    assert listener.connections == 0 and list(tmp_path.iterdir()) == []


def test_an_archive_bomb_stops_at_its_ratio_cap(served: Path, tmp_path: Path) -> None:
    bomb = tar_of(lambda tar: add_bytes(tar, "digits/zeros.bin", bytes(30 << 20)))  # 30 MB of zeros, ~30 KB
    assert len(bomb) < 100_000
    with pytest.raises(DeployError, match="max_unpack_ratio"):
        deploy(publish(served, "bomb.tgz", bomb), tmp_path, LOCAL, never)
    assert list(tmp_path.iterdir()) == []
    archive = tmp_path / "bomb.tgz"
    archive.write_bytes(bomb)
    cap = unpack_cap(archive, LOCAL)
    assert cap[0] == int(LOCAL.max_unpack_ratio * len(bomb))
    with pytest.raises(DeployError, match="unpacks to more than"):
        unpack(archive, tmp_path / "out", cap, never)
    written = sum(path.stat().st_size for path in (tmp_path / "out").rglob("*") if path.is_file())
    assert written <= cap[0]

