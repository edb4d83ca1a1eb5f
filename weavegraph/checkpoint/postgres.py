"""`PostgresCheckpointer`: checkpoints in PostgreSQL (the ``postgres`` extra).

psycopg's async API does not run on trio, so this uses psycopg 3's synchronous
API with a `psycopg_pool.ConnectionPool`, each operation in a worker thread; a
`trio.CapacityLimiter` the size of the pool keeps threads and connections in
step. Writes are not abandoned when cancelled: a started transaction finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

import trio

from .._core.errors import CheckpointError
from . import sql
from .record import (
    Checkpoint,
    CheckpointConflict,
    SessionSummary,
    StepPage,
    check_query,
)

T = TypeVar("T")


class PostgresCheckpointer:
    """Checkpoints in PostgreSQL.

    The schema is created or upgraded on first use; a database whose ``sessions``
    or ``steps`` tables were not written by weavegraph is refused untouched.

    Args:
        dsn: A libpq connection string or URI
            (``postgresql://user@127.0.0.1:5432/db``).
        pool_size: Connections (and worker threads) at most.
        statement_timeout: Seconds after which the server cancels a statement.
    """

    backend = "postgres"

    def __init__(
        self, dsn: str, *, pool_size: int = 4, statement_timeout: float = 30.0
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise CheckpointError(
                f"PostgresCheckpointer takes a connection string, got {dsn!r}"
            )
        if not isinstance(pool_size, int) or pool_size < 1:
            raise CheckpointError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self.dsn = dsn
        self._pool_size = pool_size
        self._timeout_ms = int(statement_timeout * 1000)
        self._pool: Any = None
        self._limiter = trio.CapacityLimiter(pool_size)
        self._open_lock = trio.Lock()
        self._last: dict[str, tuple[Checkpoint, str]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresCheckpointer(pool_size={self._pool_size})"

    def _make_pool(self) -> Any:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise CheckpointError(
                "PostgresCheckpointer needs psycopg and psycopg_pool: install"
                " 'weavegraph[postgres]'"
            ) from exc

        timeout = self._timeout_ms

        def configure(conn: Any) -> None:
            conn.execute(f"SET statement_timeout = {timeout}")
            conn.commit()

        pool = ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self._pool_size,
            configure=configure,
            open=False,
            kwargs={"autocommit": False},
        )
        try:
            pool.open(wait=True, timeout=10.0)
            with pool.connection() as conn:
                sql.migrate(conn, sql.POSTGRES)
        except psycopg.Error as exc:
            pool.close()
            raise CheckpointError(
                f"cannot use PostgreSQL at the given DSN: {exc}"
            ) from exc
        except BaseException:
            pool.close()
            raise
        return pool

    async def _ensure_pool(self) -> Any:
        if self._closed:
            raise CheckpointError("this PostgresCheckpointer was closed")
        if self._pool is None:
            async with self._open_lock:
                if self._pool is None:
                    self._pool = await trio.to_thread.run_sync(self._make_pool)
        return self._pool

    async def _run(self, fn: Callable[[Any], T]) -> T:
        pool = await self._ensure_pool()

        def call() -> T:
            import psycopg

            try:
                with pool.connection() as conn:
                    return fn(conn)
            except psycopg.Error as exc:
                raise CheckpointError(f"PostgreSQL error: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def open(self) -> None:
        """Connect (and create or upgrade the schema) now rather than at first use."""
        await self._ensure_pool()

    async def save(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` in one transaction."""
        await self.save_many([checkpoint])

    async def save_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store several checkpoints in one transaction."""
        planned = sql.plan_rows(checkpoints, self._last)  # CPU work, in this thread
        written = await self._run(
            lambda conn: sql.write_rows(conn, sql.POSTGRES, planned)
        )
        self._last.update(written)

    async def save_with_concurrency_check(
        self, checkpoint: Checkpoint, expected_last_step: int | None
    ) -> None:
        """Store only if the session ends at ``expected_last_step``.

        The session row is locked (``SELECT … FOR UPDATE``) for the check, so of
        two concurrent writers expecting the same step exactly one wins; a new
        session is created by a unique insert, which also lets only one win.

        Raises:
            CheckpointConflict: another writer got there first.
        """
        planned = sql.plan_rows([checkpoint], self._last)

        def write(conn: Any) -> dict[str, tuple[Checkpoint, str]]:
            import psycopg

            try:
                return sql.write_rows(
                    conn,
                    sql.POSTGRES,
                    planned,
                    expected_last_step=expected_last_step,
                    check=True,
                )
            except psycopg.errors.UniqueViolation as exc:
                raise CheckpointConflict(
                    checkpoint.session_id, expected_last_step, None
                ) from exc

        written = await self._run(write)
        self._last.update(written)

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The newest checkpoint of ``session_id``, or ``None``."""
        found = await self._run(
            lambda conn: sql.load_latest(conn, sql.POSTGRES, session_id)
        )
        if found is None:
            return None
        self._last[session_id] = found
        return found[0]

    async def list_sessions(self) -> list[SessionSummary]:
        """Every session, most recently updated first."""
        return await self._run(lambda conn: sql.list_sessions(conn, sql.POSTGRES))

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
                sql.POSTGRES,
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
            lambda conn: sql.delete_session(conn, sql.POSTGRES, session_id)
        )

    async def aclose(self) -> None:
        """Close the pool. Idempotent."""
        pool, self._pool = self._pool, None
        self._closed = True
        if pool is not None:
            await trio.to_thread.run_sync(pool.close)
        else:
            await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
