"""`deploy`: download a bundle archive into the model store, check it, and install it atomically.

1. Download over https (plain http only from an allow-listed host; a redirect is checked the same
   way) into a hidden work folder inside the model store, hashing as it streams and cutting off at
   the announced size (itself at most `deploy.max_bytes`).
2. The sha256 must match the command's.
3. Unpack a tar (any compression) or zip archive member by member: absolute paths, `..`, links,
   devices and more than `deploy.max_unpacked_bytes` in all are refused; nothing is extracted by the
   archive library itself.
4. The unpacked folder (or its single top folder) must be a valid bundle: `open_model` checks the
   manifest and every file's sha256.
5. Install with `rename` on the same filesystem: a new name appears whole; an existing bundle is
   first renamed away, so the name is missing only between two renames. Jobs run one at a time,
   so no measurement reads a bundle while it is replaced. The work folder goes in every case.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Dict, Iterator, Tuple

from agent.config import DeploySettings
from agent.errors import DeployError, ProtocolError
from agent.mqtt.schema import Limits, download_size, download_url

WORK_PREFIX = ".deploy-"
_CHUNK = 1 << 16
Check = Callable[[], None]  # raises when the job is cancelled


def deploy(args: Dict[str, Any], model_dir: Path, settings: DeploySettings, check_cancelled: Check) -> Dict[str, Any]:
    """Carry out a validated deploy command; returns what was installed."""
    from agent.bundle import open_model

    model_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=model_dir))
    try:
        archive = work / "archive"
        digest = download(args["url"], archive, args["bytes"], settings, check_cancelled)
        if digest != args["sha256"]:
            raise DeployError(f"the download's sha256 is {digest}, not {args['sha256']}")
        files = unpack(archive, work / "unpacked", settings.max_unpacked_bytes, check_cancelled)
        root = _bundle_root(work / "unpacked")
        bundle = open_model(root, verify=True)
        target = model_dir / args["name"]
        install(root, target, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"name": args["name"], "bundle": bundle.name, "path": str(target), "sha256": digest,
            "bytes": args["bytes"], "files": files, "models": [f"{m.format}/{m.precision}" for m in bundle.models]}


def remove_leftovers(model_dir: Path) -> None:
    """Delete work folders of deploys that a crash interrupted."""
    if model_dir.is_dir():
        for entry in model_dir.iterdir():
            if entry.name.startswith(WORK_PREFIX) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


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
    limits = Limits(max_deploy_bytes=settings.max_bytes, http_hosts=settings.http_hosts)
    try:
        download_url("url", url, limits)  # again: the allow-list may have changed since the command arrived
        download_size("bytes", announced, limits)
    except ProtocolError as error:
        raise DeployError(error.message) from None
    opener = urllib.request.build_opener(_CheckedRedirects(limits))
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
    except (urllib.error.URLError, OSError) as error:
        raise DeployError(f"cannot download {url}: {getattr(error, 'reason', None) or error}") from None
    if size != announced:
        raise DeployError(f"the download has {size} bytes, not the {announced} announced")
    return digest.hexdigest()


def unpack(archive: Path, target: Path, cap: int, check_cancelled: Check) -> int:
    """Extract a tar or zip archive's regular files into `target` (a new folder); returns how many."""
    target.mkdir()
    total, count = 0, 0
    for name, kind, opener in _members(archive):
        path = _member_path(target, name)
        if kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with opener() as source, open(path, "xb") as out:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                total += len(chunk)
                if total > cap:
                    raise DeployError(f"the archive unpacks to more than {cap} bytes (deploy.max_unpacked_bytes)")
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
