"""`SQLiteCheckpointer`: the embedded default store (stdlib ``sqlite3``, WAL)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

import trio

from .._core.errors import CheckpointError
from . import sql

T = TypeVar("T")


class SQLiteCheckpointer(sql.SQLCheckpointer):
    """Checkpoints in a SQLite file.

    One connection (opened on first use, in WAL mode) is shared by worker threads
    through a one-slot `trio.CapacityLimiter`, so the trio loop never blocks on
    disk I/O and SQLite sees one statement at a time. Each save is one
    transaction. Opening a file that is not a weavegraph store (or has a newer
    schema) raises `CheckpointError` without modifying it; an older schema is
    upgraded.

    Args:
        path: The database file (created if missing), or ``":memory:"``.
    """

    backend = "sqlite"
    dialect = sql.SQLITE

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike):
            raise CheckpointError(f"SQLiteCheckpointer takes a file path, got {path!r}")
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False
        super().__init__()

    def __repr__(self) -> str:
        return f"SQLiteCheckpointer({self.path!r})"

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
                self.path, check_same_thread=False, isolation_level="DEFERRED"
            )
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot open {self.path!r}: {exc}") from exc
        try:
            sql.migrate(conn, sql.SQLITE)
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

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            conn = self._open()
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise CheckpointError(f"SQLite error on {self.path!r}: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    # ---------------------------------------------------------------- protocol

    async def aclose(self) -> None:
        """Close the connection (waiting for a running statement). Idempotent."""

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await trio.to_thread.run_sync(close, limiter=self._limiter)
        self._closed = True

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
