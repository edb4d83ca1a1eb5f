"""`PostgresCheckpointer`: checkpoints in PostgreSQL (the ``postgres`` extra).

psycopg's async API does not run on trio, so this uses psycopg 3's synchronous
API with a `psycopg_pool.ConnectionPool`, each operation in a worker thread; a
`trio.CapacityLimiter` the size of the pool keeps threads and connections in
step, and reads (`query_steps`, `list_sessions`) use at most all connections
but one, so a write never waits behind replays. Writes are not abandoned when
cancelled: a started transaction finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import trio

from .._core.errors import CheckpointError, WeavegraphError
from . import sql

T = TypeVar("T")


def open_pool(
    dsn: str,
    size: int,
    settings: Mapping[str, int],
    migrate: Callable[[Any], object],
    error: type[WeavegraphError],
    who: str,
    *,
    min_size: int = 1,
) -> Any:
    """A psycopg pool of up to ``size`` connections (``min_size`` of them
    opened at once), each ``SET`` with ``settings``, opened, and
    ``migrate(conn)`` run once (blocking: run it in a worker thread).

    Raises:
        error: psycopg is missing (``who`` names what needs it), or the
            database cannot be used.
    """
    try:
        import psycopg
        from psycopg_pool import ConnectionPool
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise error(
            f"{who} psycopg and psycopg_pool: install 'weavegraph[postgres]'"
        ) from exc
    statements = [f"SET {name} = {int(value)}" for name, value in settings.items()]

    def configure(conn: Any) -> None:
        for statement in statements:
            conn.execute(statement)
        conn.commit()

    pool = ConnectionPool(
        dsn,
        min_size=min(min_size, size),
        max_size=size,
        configure=configure,
        open=False,
        kwargs={"autocommit": False, "prepare_threshold": 1},
    )
    try:
        pool.open(wait=True, timeout=10.0)
        with pool.connection() as conn:
            migrate(conn)
    except psycopg.Error as exc:
        pool.close()
        raise error(f"cannot use PostgreSQL at the given DSN: {exc}") from exc
    except BaseException:
        pool.close()
        raise
    return pool


class PostgresCheckpointer(sql.SQLCheckpointer):
    """Checkpoints in PostgreSQL.

    The schema is created or upgraded on first use; a database whose
    ``sessions``, ``steps`` or ``pending_writes`` (table or view) were not
    written by weavegraph is refused untouched. Writes run at READ COMMITTED
    with the session's row locked (``SELECT … FOR UPDATE``), so of two
    processes continuing one step exactly one commits; multi-statement reads
    run at REPEATABLE READ, READ ONLY.

    Args:
        dsn: A libpq connection string or URI
            (``postgresql://user@127.0.0.1:5432/db``).
        pool_size: Connections (and worker threads) at most.
        statement_timeout: Seconds after which the server cancels a statement.
        fence: Called with the connection at the start of every write's
            transaction, before anything is written; whatever it raises
            refuses the write (the transaction is rolled back and the error
            goes to the caller). A run queue's lease check is one: a worker
            that lost its lease cannot commit a step. Reads are not fenced.
        pool: An open ``psycopg_pool.ConnectionPool`` on a migrated database
            to use instead of making one (the caller closes it; closing this
            store leaves it open).
        limiter: With ``pool``, the `trio.CapacityLimiter` its other users
            share (default: one of ``pool_size`` tokens for this store).
    """

    dialect = sql.POSTGRES

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 4,
        statement_timeout: float = 30.0,
        fence: Callable[[Any], object] | None = None,
        pool: Any = None,
        limiter: trio.CapacityLimiter | None = None,
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
        if fence is not None and not callable(fence):
            raise CheckpointError(f"fence must be a callable, got {fence!r}")
        if limiter is not None and pool is None:
            raise CheckpointError("limiter= goes with pool=: the pool it guards")
        self._fence = fence
        self._pool: Any = pool
        self._own_pool = pool is None
        self._limiter = limiter or trio.CapacityLimiter(pool_size)
        # Reads leave a connection for writes: replays never hold up a run.
        self._read_limiter = trio.CapacityLimiter(max(1, pool_size - 1))
        self._open_lock = trio.Lock()
        self._closed = False
        super().__init__()

    def __repr__(self) -> str:
        return f"PostgresCheckpointer(pool_size={self._pool_size})"

    @property
    def backend(self) -> str:
        """``"postgres"``."""
        return "postgres"

    def _make_pool(self) -> Any:
        return open_pool(
            self.dsn,
            self._pool_size,
            {"statement_timeout": self._timeout_ms},
            lambda conn: sql.migrate(conn, sql.POSTGRES),
            CheckpointError,
            "PostgresCheckpointer needs",
        )

    async def _ensure_pool(self) -> Any:
        if self._closed:
            raise CheckpointError("this PostgresCheckpointer was closed")
        if self._pool is None:
            async with self._open_lock:
                if self._pool is None:
                    self._pool = await trio.to_thread.run_sync(self._make_pool)
        return self._pool

    async def _run(self, fn: Callable[[Any], T], *, read: bool) -> T:
        pool = await self._ensure_pool()
        fence = self._fence

        def call() -> T:
            import psycopg

            try:
                with pool.connection() as conn:
                    if not read:
                        if fence is not None:
                            try:
                                fence(conn)
                            except BaseException:
                                conn.rollback()
                                raise
                        return fn(conn)
                    # One snapshot for the read's statements, set before BEGIN.
                    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                    conn.read_only = True
                    try:
                        return fn(conn)
                    finally:
                        conn.rollback()
                        conn.isolation_level = None
                        conn.read_only = None
            except psycopg.Error as exc:
                raise CheckpointError(f"PostgreSQL error: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def _write(self, fn: Callable[[Any], T]) -> T:
        return await self._run(fn, read=False)

    async def _read(self, fn: Callable[[Any], T]) -> T:
        async with self._read_limiter:
            return await self._run(fn, read=True)

    async def _read_latest(self, fn: Callable[[Any], T]) -> T:
        return await self._run(fn, read=True)

    async def open(self) -> None:
        """Connect (and create or upgrade the schema) now rather than at first use."""
        await self._ensure_pool()

    async def aclose(self) -> None:
        """Close the pool (unless it was given). Idempotent."""
        pool, self._pool = self._pool, None
        self._closed = True
        if pool is not None and self._own_pool:
            await trio.to_thread.run_sync(pool.close)
        else:
            await trio.lowlevel.checkpoint()
