"""A throwaway PostgreSQL cluster on loopback for the test suite.

Used when ``WEAVEGRAPH_TEST_POSTGRES_DSN`` is not set: finds Debian's (or any)
PostgreSQL server binaries, creates a cluster in a temporary folder, starts it on
a free port of 127.0.0.1, and removes everything when stopped. As root the server
runs as the ``postgres`` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Run `make test`,"
    " which installs Debian's postgresql package when missing, or set"
    " WEAVEGRAPH_TEST_POSTGRES_DSN to a server you own."
)


class PostgresUnavailable(RuntimeError):
    """No server can be started here."""


def _bin_dir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresUnavailable(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One temporary cluster; `start` returns a DSN, `stop` removes it all."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """``settings``: more server settings (``-c name=value``)."""
        self.settings = dict(settings or {})
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="weavegraph-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
            )

    def start(self) -> str:
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "weavegraph",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        ) + "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return f"postgresql://weavegraph@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            if self.data.exists():
                self._run(
                    "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
