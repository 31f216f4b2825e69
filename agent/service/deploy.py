"""`deploy`: download a bundle archive into the model store, check it, and install it atomically.

1. Download over https (plain http only from an allow-listed host; from `deploy.hosts` alone when
   that list is set; a redirect is checked the same way) into a hidden work folder inside the model
   store, hashing as it streams and cutting off at the announced size (itself at most
   `deploy.max_bytes`), once the disk has room for it and `deploy.min_free_bytes` more. A host that
   is not listed must resolve to public addresses only: loopback, link-local, private and other
   special ranges are refused before any connection is made, and the connection goes to the very
   address that was checked (no second DNS answer).
2. The sha256 must match the command's.
3. Unpack a tar (any compression) or zip archive member by member: absolute paths, `..`, links and
   devices are refused; the bytes written are counted as they stream and cut off at the smallest of
   `deploy.max_unpacked_bytes`, `deploy.max_unpack_ratio` times the archive's size, and the free
   space less `deploy.min_free_bytes` (an archive bomb stops there); nothing is extracted by the
   archive library itself.
4. The unpacked folder (or its single top folder) must be a valid bundle: `open_model` checks the
   manifest and every file's sha256.
5. Install with `rename` on the same filesystem: a new name appears whole; an existing bundle is
   first renamed away, so the name is missing only between two renames. Jobs run one at a time,
   so no measurement reads a bundle while it is replaced. The work folder goes in every case.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Dict, Iterator, List, Tuple, Type

from agent.bundle import open_model
from agent.config import DeploySettings
from agent.errors import DeployError, ProtocolError
from agent.mqtt.schema import Limits, download_size, download_url
from agent.service.model_store import WORK_PREFIX

_CHUNK = 1 << 16
Check = Callable[[], None]  # raises when the job is cancelled


def deploy(args: Dict[str, Any], model_dir: Path, settings: DeploySettings, check_cancelled: Check) -> Dict[str, Any]:
    """Carry out a validated deploy command; returns what was installed."""
    model_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=model_dir))
    try:
        archive = work / "archive"
        digest = download(args["url"], archive, args["bytes"], settings, check_cancelled)
        if digest != args["sha256"]:
            raise DeployError(f"the download's sha256 is {digest}, not {args['sha256']}")
        files = unpack(archive, work / "unpacked", unpack_cap(archive, settings), check_cancelled)
        root = _bundle_root(work / "unpacked")
        bundle = open_model(root, verify=True)
        target = model_dir / args["name"]
        install(root, target, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"name": args["name"], "bundle": bundle.name, "path": str(target), "sha256": digest,
            "bytes": args["bytes"], "files": files, "models": [f"{m.format}/{m.precision}" for m in bundle.models]}


def unpack_cap(archive: Path, settings: DeploySettings) -> Tuple[int, str]:
    """The most bytes `archive` may unpack to, and which limit sets it (for the error message)."""
    size = archive.stat().st_size
    room = shutil.disk_usage(archive.parent).free - settings.min_free_bytes
    caps = [(settings.max_unpacked_bytes, "deploy.max_unpacked_bytes"),
            (int(settings.max_unpack_ratio * size), f"deploy.max_unpack_ratio {settings.max_unpack_ratio:g} x "
                                                    f"the archive's {size} bytes"),
            (max(room, 0), f"the free space less deploy.min_free_bytes ({settings.min_free_bytes} bytes)")]
    return min(caps)


def public_addresses(host: str, port: int, listed: bool) -> List[Any]:
    """The addresses to connect to for `host`: all of them when it is listed in the settings, else
    only if every one is a public (global) address; a `DeployError` names the one that is not."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise DeployError(f"cannot resolve {host}: {error}") from None
    for *_, address in found:
        ip = ipaddress.ip_address(address[0].split("%")[0])
        ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is 127.0.0.1
        if not listed and not ip.is_global:
            kind = next((name for name in ("unspecified", "loopback", "link_local", "multicast", "private",
                                           "reserved") if getattr(ip, f"is_{name}")), "not public")
            raise DeployError(f"{host} resolves to {ip} ({kind.replace('_', '-')}): refused; "
                              "list the host in deploy.hosts to allow it")
    return [address for *_, address in found]


def _guarded(base: Type[http.client.HTTPConnection], settings: DeploySettings) -> Type[http.client.HTTPConnection]:
    """`base` whose connection goes only to addresses `public_addresses` allows (checked, then used)."""
    listed = {host.lower() for host in settings.hosts + settings.http_hosts}

    class Guarded(base):  # type: ignore[valid-type, misc]
        def connect(self) -> None:
            candidates = public_addresses(self.host, self.port, self.host.lower() in listed)
            self._create_connection = lambda _, timeout, source: _connect_any(candidates, timeout, source)
            super().connect()

    return Guarded


def _connect_any(addresses: List[Any], timeout: Any, source: Any) -> socket.socket:
    """A TCP connection to the first of the checked addresses that answers."""
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection(address[:2], timeout, source)
        except OSError as failed:
            error = failed
    raise error


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, settings: DeploySettings) -> None:
        super().__init__()
        self.connection = _guarded(http.client.HTTPConnection, settings)

    def http_open(self, req: Any) -> Any:
        return self.do_open(self.connection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, settings: DeploySettings) -> None:
        self.context = ssl.create_default_context()  # certificate and hostname checked
        super().__init__(context=self.context)
        self.connection = _guarded(http.client.HTTPSConnection, settings)

    def https_open(self, req: Any) -> Any:
        return self.do_open(self.connection, req, context=self.context)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the command itself could have named."""

    def __init__(self, limits: Limits) -> None:
        super().__init__()
        self.limits = limits

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        try:
            download_url("redirect", newurl, self.limits)
        except ProtocolError as error:
            raise DeployError(f"refused a redirect: {error.message}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download(url: str, target: Path, announced: int, settings: DeploySettings, check_cancelled: Check) -> str:
    """Stream `url` into `target`, at most `announced` bytes and exactly that many; returns the sha256."""
    limits = Limits(max_deploy_bytes=settings.max_bytes, deploy_hosts=settings.hosts, http_hosts=settings.http_hosts)
    try:
        download_url("url", url, limits)  # again: the allow-list may have changed since the command arrived
        download_size("bytes", announced, limits)
    except ProtocolError as error:
        raise DeployError(error.message) from None
    free = shutil.disk_usage(target.parent).free
    if announced + settings.min_free_bytes > free:
        raise DeployError(f"not enough disk space for {announced} bytes: {free} free, and deploy.min_free_bytes "
                          f"({settings.min_free_bytes}) must stay free")
    opener = urllib.request.build_opener(_GuardedHTTPHandler(settings), _GuardedHTTPSHandler(settings),
                                         _CheckedRedirects(limits))
    digest, size = hashlib.sha256(), 0
    try:
        with opener.open(url, timeout=settings.timeout_s) as response, open(target, "wb") as out:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > announced:
                raise DeployError(f"the server announces {length} bytes, more than the {announced} expected")
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                size += len(chunk)
                if size > announced:
                    raise DeployError(f"the download exceeds the {announced} bytes announced: cut off")
                digest.update(chunk)
                out.write(chunk)
                check_cancelled()
    except urllib.error.URLError as error:
        if isinstance(error.reason, DeployError):
            raise error.reason from None
        raise DeployError(f"cannot download {url}: {error.reason or error}") from None
    except OSError as error:
        raise DeployError(f"cannot download {url}: {error}") from None
    if size != announced:
        raise DeployError(f"the download has {size} bytes, not the {announced} announced")
    return digest.hexdigest()


def unpack(archive: Path, target: Path, cap: Tuple[int, str], check_cancelled: Check) -> int:
    """Extract a tar or zip archive's regular files into `target` (a new folder), writing at most `cap[0]`
    bytes (`cap[1]` names that limit); returns how many files."""
    target.mkdir()
    limit, why = cap
    total, count = 0, 0
    for name, kind, opener in _members(archive):
        path = _member_path(target, name)
        if kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with opener() as source, open(path, "xb") as out:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                if total + len(chunk) > limit:
                    raise DeployError(f"the archive unpacks to more than {limit} bytes ({why}): refused")
                total += len(chunk)
                out.write(chunk)
        count += 1
        check_cancelled()
    return count


def _members(archive: Path) -> Iterator[Tuple[str, str, Callable[[], Any]]]:
    """(name, "dir" or "file", open function) for every member; links and devices are refused."""
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not (member.isfile() or member.isdir()):
                    raise DeployError(f"archive member {member.name!r} is a link or device: refused")
                yield member.name, "dir" if member.isdir() else "file", _tar_opener(tar, member)
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle_zip:
            for info in bundle_zip.infolist():
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver stored no file type
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise DeployError(f"archive member {info.filename!r} is a link or device: refused")
                yield info.filename, "dir" if info.is_dir() else "file", _zip_opener(bundle_zip, info)
    else:
        raise DeployError("the download is neither a tar nor a zip archive")


def _tar_opener(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], Any]:
    @contextmanager
    def opened() -> Iterator[IO[bytes]]:
        handle = tar.extractfile(member)
        assert handle is not None  # a regular file always has data
        with handle:
            yield handle
    return opened


def _zip_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], Any]:
    return lambda: archive.open(info)


def _member_path(target: Path, name: str) -> Path:
    """Where a member goes: refuses absolute names, `..`, backslashes and drive letters."""
    pure = PurePosixPath(name)
    parts = [part for part in pure.parts if part not in ("", ".")]
    if pure.is_absolute() or "\\" in name or ".." in parts or not parts or ":" in parts[0]:
        raise DeployError(f"archive member {name!r} would land outside the bundle: refused")
    path = target.joinpath(*parts)
    if not os.path.realpath(path).startswith(os.path.realpath(target) + os.sep):
        raise DeployError(f"archive member {name!r} would land outside the bundle: refused")
    return path


def _bundle_root(unpacked: Path) -> Path:
    if (unpacked / "manifest.json").is_file():
        return unpacked
    entries = list(unpacked.iterdir())
    if len(entries) == 1 and (entries[0] / "manifest.json").is_file():
        return entries[0]
    raise DeployError("the archive has no manifest.json at its top or in its single top folder")


def install(source: Path, target: Path, work: Path) -> None:
    """Move the checked bundle into place by renames (same filesystem); an older one goes to `work`."""
    if target.is_symlink() or target.exists():
        os.rename(target, work / "previous")
    os.rename(source, target)
