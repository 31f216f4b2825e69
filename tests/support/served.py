"""A folder served over plain http on 127.0.0.1 (deploy's allow-listed host in tests), and bundle archives.

    with served_folder(tmp_path) as folder:
        args = publish(folder, "digits.tar.gz", bundle_tar())   # the deploy command's arguments
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

from support.agent import DIGITS


class _Handler(SimpleHTTPRequestHandler):
    """Files of the folder, and `/redirect/HOST/PATH` (`/redirect-https/...`) answered with a 302 there."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.startswith(("/redirect/", "/redirect-https/")):
            scheme, _, rest = self.path[len("/redirect"):].partition("/")
            self.send_response(302)
            self.send_header("Location", ("https://" if scheme == "-https" else "http://") + rest)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def served_folder(folder: Path) -> Iterator[Path]:
    """Serve `folder` over http on 127.0.0.1 while the block runs; its `port` file says where."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]  # cut-off downloads
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (folder / "port").write_text(str(server.server_address[1]))
    try:
        yield folder
    finally:
        server.shutdown()


def url(served: Path, name: str) -> str:
    """The http URL of `name` in the served folder."""
    return f"http://127.0.0.1:{(served / 'port').read_text()}/{name}"


def publish(served: Path, name: str, data: bytes) -> Dict[str, Any]:
    """Serve `data` as `name`; returns the deploy arguments for it."""
    (served / name).write_bytes(data)
    return {"url": url(served, name), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "name": "digits"}


def tar_of(members: Callable[[tarfile.TarFile], None], mode: str = "w:gz") -> bytes:
    """A tar archive (gzip by default) that `members` fills."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        members(tar)
    return buffer.getvalue()


def bundle_tar(top: str = "digits") -> bytes:
    """The digits bundle as a .tar.gz with its files under `top/`."""
    return tar_of(lambda tar: tar.add(DIGITS, arcname=top))
