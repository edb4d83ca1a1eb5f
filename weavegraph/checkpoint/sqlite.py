"""`SQLiteCheckpointer`: the embedded default store (stdlib ``sqlite3``, WAL)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self, TypeVar

import trio

from .._core.errors import CheckpointError
from . import sql
from .record import Checkpoint, SessionSummary, StepPage, check_query

T = TypeVar("T")


class SQLiteCheckpointer:
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

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike):
            raise CheckpointError(f"SQLiteCheckpointer takes a file path, got {path!r}")
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._last: dict[str, tuple[Checkpoint, str]] = {}
        self._closed = False

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

    async def open(self) -> None:
        """Open (and create or upgrade) the store now rather than at first use."""
        await self._run(lambda conn: None)

    async def save(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` in one transaction. Not cancellable mid-write."""
        await self.save_many([checkpoint])

    async def save_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store several checkpoints in one transaction (the runner's batching)."""
        planned = sql.plan_rows(checkpoints, self._last)  # CPU work, in this thread
        written = await self._run(
            lambda conn: sql.write_rows(conn, sql.SQLITE, planned)
        )
        self._last.update(written)

    async def save_with_concurrency_check(
        self, checkpoint: Checkpoint, expected_last_step: int | None
    ) -> None:
        """Store only if the session ends at ``expected_last_step``.

        Raises:
            CheckpointConflict: another writer got there first.
        """
        planned = sql.plan_rows([checkpoint], self._last)
        written = await self._run(
            lambda conn: sql.write_rows(
                conn,
                sql.SQLITE,
                planned,
                expected_last_step=expected_last_step,
                check=True,
            )
        )
        self._last.update(written)

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The newest checkpoint of ``session_id``, or ``None``."""
        found = await self._run(
            lambda conn: sql.load_latest(conn, sql.SQLITE, session_id)
        )
        if found is None:
            return None
        self._last[session_id] = found
        return found[0]

    async def list_sessions(self) -> list[SessionSummary]:
        """Every session, most recently updated first."""
        return await self._run(lambda conn: sql.list_sessions(conn, sql.SQLITE))

    async def query_steps(
        self,
        session_id: str,
        *,
        limit: int = 100,
        offset: int = 0,
        min_step: int | None = None,
        max_step: int | None = None,
        ran_node: str | None = None,
        skipped_node: str | None = None,
    ) -> StepPage:
        """A page of the session's steps, newest first; node filters are exact."""
        check_query(limit, offset)
        return await self._run(
            lambda conn: sql.query_steps(
                conn,
                sql.SQLITE,
                session_id,
                limit=limit,
                offset=offset,
                min_step=min_step,
                max_step=max_step,
                ran_node=ran_node,
                skipped_node=skipped_node,
            )
        )

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session and its steps; whether it existed."""
        self._last.pop(session_id, None)
        return await self._run(
            lambda conn: sql.delete_session(conn, sql.SQLITE, session_id)
        )

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
