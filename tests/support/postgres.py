"""A real PostgreSQL for tests, from Debian's `postgresql` package: a throwaway cluster in a temporary
folder on a free port of 127.0.0.1, trust authentication for the user `test`, a fresh database per test.

    with PostgresServer() as server:
        url = server.new_database()   # postgresql://test@127.0.0.1:PORT/t_<hex>

`initdb` refuses to run as root: as root the cluster's folder is given to the `postgres` user and the
server runs as that user through `runuser`.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import List, Optional

from support.broker import free_port


def postgres_bin() -> Optional[Path]:
    """The folder holding initdb and pg_ctl (the newest Debian version, else the PATH's), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    on_path = shutil.which("initdb")
    path = found[-1] if found else on_path
    return Path(path).parent if path else None


class PostgresServer:
    """One PostgreSQL server process for a test session; a context manager."""

    def __init__(self) -> None:
        binaries = postgres_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)")
        self.bin = binaries
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="edge-agent-pg-"))
        self.as_postgres: List[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_postgres, str(self.bin / tool), *args], check=True, capture_output=True,
                       timeout=60)

    def start(self) -> PostgresServer:
        """initdb and start the server; return once it accepts connections."""
        self._run("initdb", "-D", str(self.folder / "data"), "-U", "test", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.resume()
        return self

    def pause(self) -> None:
        """Stop the server, keeping its data: an outage (`resume` ends it)."""
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server on its data and port; return once it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"), "-w", "-o", options,
                  "start")

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=test dbname=postgres", autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return f"postgresql://test@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
