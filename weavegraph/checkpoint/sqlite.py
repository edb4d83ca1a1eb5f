"""`SQLiteCheckpointer`: the embedded default store (stdlib ``sqlite3``, WAL)."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from .._core.errors import CheckpointError
from . import sql

T = TypeVar("T")


class SQLiteCheckpointer(sql.SQLCheckpointer):
    """Checkpoints in a SQLite file.

    Two connections, each used from worker threads through its own one-slot
    `trio.CapacityLimiter`, so the trio loop never blocks on disk I/O:

    * the **writer** (opened on first use, in WAL mode) runs every write and
      `load_latest` (which reads a bounded number of rows, so a run starting
      never waits long);
    * a read-only **reader** runs `query_steps` and `list_sessions`, so
      replaying long sessions never delays the runs writing (WAL lets readers
      and the writer work at once; each read sees one committed snapshot).

    Each write is one ``BEGIN IMMEDIATE`` transaction, which also serialises it
    against writers in other processes (they wait up to ``busy_timeout``).
    Opening a file that is not a weavegraph store (any table, view or index of
    its own, a ``user_version`` or a foreign ``application_id``), or one with a
    newer schema, raises `CheckpointError` without writing a byte; an older
    schema is upgraded. ``":memory:"`` keeps one connection for everything.

    Args:
        path: The database file (created if missing), or ``":memory:"``.
        busy_timeout: Seconds to wait for another process's write lock.
    """

    dialect = sql.SQLITE

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise CheckpointError(f"SQLiteCheckpointer takes a file path, got {path!r}")
        if not isinstance(busy_timeout, int | float) or busy_timeout < 0:
            raise CheckpointError(
                f"busy_timeout must be a number of seconds >= 0, got {busy_timeout!r}"
            )
        self.path = str(path)
        self._busy_timeout = float(busy_timeout)
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(1)
        self._closed = False
        super().__init__()

    def __repr__(self) -> str:
        return f"SQLiteCheckpointer({self.path!r})"

    @property
    def backend(self) -> str:
        """``"sqlite"``."""
        return "sqlite"

    # ------------------------------------------------------------------ plumbing

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise CheckpointError("this SQLiteCheckpointer was closed")
        if self._conn is not None:
            return self._conn
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path,
                check_same_thread=False,
                isolation_level=None,  # transactions are explicit
                timeout=self._busy_timeout,
            )
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot open {self.path!r}: {exc}") from exc
        try:
            sql.migrate(conn, sql.SQLITE)  # refuses a foreign file before any write
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise CheckpointError(
                f"{self.path!r} is not a usable SQLite checkpoint store: {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        if self._closed:
            raise CheckpointError("this SQLiteCheckpointer was closed")
        if self._reader is None:
            uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
            reader = sqlite3.connect(
                uri,
                uri=True,
                check_same_thread=False,
                isolation_level=None,
                timeout=self._busy_timeout,
            )
            reader.execute("PRAGMA query_only=ON")
            self._reader = reader
        return self._reader

    def _call(
        self,
        open_: Callable[[], sqlite3.Connection],
        fn: Callable[[sqlite3.Connection], T],
    ) -> T:
        try:
            return fn(open_())
        except sqlite3.Error as exc:
            raise CheckpointError(f"SQLite error on {self.path!r}: {exc}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await trio.to_thread.run_sync(
            self._call, self._open, fn, limiter=self._limiter
        )

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.path == ":memory:":
            return await self._write(fn)
        if self._conn is None:
            await self._write(lambda conn: None)  # create or check the file first
        return await trio.to_thread.run_sync(
            self._call, self._open_reader, fn, limiter=self._read_limiter
        )

    # ---------------------------------------------------------------- protocol

    async def open(self) -> None:
        """Open the file (and create or upgrade the schema) now. A checkpoint.

        Raises:
            CheckpointError: the file is not a weavegraph store, or is newer.
        """
        await self._write(lambda conn: None)

    async def aclose(self) -> None:
        """Close both connections (waiting for running statements). Idempotent."""

        def close_writer() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        def close_reader() -> None:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

        self._closed = True
        await trio.to_thread.run_sync(close_reader, limiter=self._read_limiter)
        await trio.to_thread.run_sync(close_writer, limiter=self._limiter)
