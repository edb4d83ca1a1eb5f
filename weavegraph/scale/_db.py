"""The queue's PostgreSQL side: its schema, a thread-run connection pool, and a
LISTEN connection that turns notifications into trio wake-ups.

psycopg's async API does not run on trio, so, like `PostgresCheckpointer`, every
statement runs with psycopg's synchronous API in a worker thread, a
`trio.CapacityLimiter` the size of the pool keeping threads and connections in
step. The queue's tables live beside the checkpoint store's, in the same
database: opening a `Database` creates or upgrades the store's schema first,
then the queue's (``queue_schema_version`` in ``weavegraph_meta``).

Schema (``queue_schema_version`` 1):

* ``weavegraph_runs``: one row per submitted run — its session, app, encoded
  input, status, the lease (``lease_token``, ``lease_expires``, ``worker``),
  ``attempts``, ``base_step`` (the session's last step when the run was first
  claimed: a later owner knows from it whether the input was applied),
  ``cancel_requested``, ``error``, ``last_seq`` (its newest event) and
  ``claimed_at`` (its latest claim). At most
  one queued or running run per session (a partial unique index).
* ``weavegraph_run_events(run_id, seq, created_at, event_json)``: each run's
  events, numbered from 1.
* ``weavegraph_apps(name, graph_hash, updated_at)``: the apps workers serve.

``queue_schema_version`` 2 adds who watches a run:

* ``weavegraph_runs.watch_grace``: for a run that its watchers own (posted to
  a server without ``detach``), the seconds it survives without any; ``NULL``:
  nobody's departure cancels it.
* ``weavegraph_run_watchers(run_id, watcher, expires)``: one row per client
  streaming the run, renewed by its server while it streams and expired when
  the client leaves (or, if its server dies, when nobody renews it).

``queue_schema_version`` 3 drops the foreign key from
``weavegraph_run_events.run_id`` to ``weavegraph_runs``: it checked (and
key-share-locked) the run's row once per event row, while every writer of
events already holds that row in the same transaction (the lease check, or the
run's end). The queue never deletes runs; whoever deletes one by hand deletes
its events too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import trio

from .._core.errors import QueueError
from ..checkpoint import sql
from ..checkpoint.postgres import open_pool

T = TypeVar("T")

QUEUE_SCHEMA_VERSION = 3
QUEUE_CHANNEL = "weavegraph_queue"
"""NOTIFY channel of submissions, hand-backs and cancellations (workers listen)."""
ENDS_CHANNEL = "weavegraph_run_ends"
"""NOTIFY channel of runs that ended (queues listen: `RunQueue.wait`)."""
EVENTS_CHANNEL = "weavegraph_events"
"""NOTIFY channel of appended events (payload: ``batch`` or ``end``)."""
_WAKE_APP_LIMIT = 200  # a NOTIFY payload holds 8000 bytes at most


def wake_app(app: str) -> str:
    """The app named in a ``run:<id>:<app>`` wake-up on `QUEUE_CHANNEL` (a
    worker serving other apps sleeps on): ``app``, or ``""`` (any worker
    looks) for a name too long to send."""
    return app if len(app.encode()) <= _WAKE_APP_LIMIT else ""


QUEUE_TABLES = frozenset(
    {
        "weavegraph_runs",
        "weavegraph_run_events",
        "weavegraph_apps",
        "weavegraph_run_watchers",
    }
)

_MIGRATIONS: list[list[str]] = [
    [
        "CREATE SEQUENCE weavegraph_lease_tokens",
        """CREATE TABLE weavegraph_runs (
            id BIGSERIAL PRIMARY KEY,
            session_id TEXT NOT NULL,
            app TEXT NOT NULL,
            input_json TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            worker TEXT,
            lease_token BIGINT,
            lease_expires TIMESTAMPTZ,
            base_step BIGINT,
            cancel_requested BOOLEAN NOT NULL DEFAULT false,
            error TEXT,
            last_seq BIGINT NOT NULL DEFAULT 0,
            submitted_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            started_at TIMESTAMPTZ,
            claimed_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ
        )""",
        "CREATE UNIQUE INDEX weavegraph_runs_active ON weavegraph_runs (session_id)"
        " WHERE status IN ('queued', 'running')",
        "CREATE INDEX weavegraph_runs_session ON weavegraph_runs (session_id, id)",
        "CREATE INDEX weavegraph_runs_queued ON weavegraph_runs (id)"
        " WHERE status = 'queued'",
        "CREATE INDEX weavegraph_runs_running ON weavegraph_runs (lease_expires)"
        " WHERE status = 'running'",
        """CREATE TABLE weavegraph_run_events (
            run_id BIGINT NOT NULL REFERENCES weavegraph_runs (id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            event_json TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        )""",
        "CREATE INDEX weavegraph_run_events_age ON weavegraph_run_events (created_at)",
        """CREATE TABLE weavegraph_apps (
            name TEXT PRIMARY KEY,
            graph_hash TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
        )""",
    ],
    [
        "ALTER TABLE weavegraph_runs ADD COLUMN watch_grace DOUBLE PRECISION",
        """CREATE TABLE weavegraph_run_watchers (
            run_id BIGINT NOT NULL REFERENCES weavegraph_runs (id) ON DELETE CASCADE,
            watcher TEXT NOT NULL,
            expires TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (run_id, watcher)
        )""",
    ],
    [
        "ALTER TABLE weavegraph_run_events"
        " DROP CONSTRAINT IF EXISTS weavegraph_run_events_run_id_fkey",
    ],
]

UNWATCHED = (
    "(r.watch_grace IS NOT NULL AND NOT EXISTS (SELECT 1 FROM"
    " weavegraph_run_watchers AS w WHERE w.run_id = r.id AND w.expires"
    " > clock_timestamp() - make_interval(secs => r.watch_grace)))"
)
"""SQL, true of a run ``r`` its watchers own when none has watched it for its
grace: the run is then cancelled (by a server or at the worker's renewal)."""


def migrate_queue(conn: Any, *, target: int = QUEUE_SCHEMA_VERSION) -> int:
    """Create or upgrade the store's schema, then the queue's; the queue
    version found.

    Raises:
        CheckpointError: the database is not a weavegraph store.
        QueueError: the queue's tables exist but weavegraph did not write them,
            or their schema is newer than this weavegraph's.
    """
    sql.migrate(conn, sql.POSTGRES)
    cur = conn.cursor()
    try:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('weavegraph-queue'))")
        cur.execute(
            "SELECT value FROM weavegraph_meta WHERE key = 'queue_schema_version'"
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(sql.POSTGRES.list_tables)
            names = {r[0] for r in cur.fetchall()} & QUEUE_TABLES
            if names:
                raise QueueError(
                    f"the database holds {', '.join(sorted(names))} that weavegraph"
                    " did not write; refusing to use it as a run queue"
                )
            found = 0
        elif not str(row[0]).isdigit():
            raise QueueError(
                f"weavegraph_meta says queue_schema_version {row[0]!r}, not a number"
            )
        else:
            found = int(row[0])
        if found > target:
            raise QueueError(
                f"the run queue has schema version {found}, newer than the"
                f" {target} this weavegraph supports; upgrade weavegraph"
            )
        for statements in _MIGRATIONS[found:target]:
            for statement in statements:
                cur.execute(statement)
        if found == 0:
            cur.execute(
                "INSERT INTO weavegraph_meta (key, value)"
                " VALUES ('queue_schema_version', %s)",
                (str(target),),
            )
        elif found < target:
            cur.execute(
                "UPDATE weavegraph_meta SET value = %s"
                " WHERE key = 'queue_schema_version'",
                (str(target),),
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return found


class Database:
    """A pool of connections to the queue's database, used from trio.

    Args:
        dsn: A libpq connection string or URI.
        pool_size: Connections (and worker threads) at most.
        statement_timeout: Seconds after which the server cancels a statement.
        idle_timeout: Seconds after which the server ends a session idle in a
            transaction (``idle_in_transaction_session_timeout``): a worker
            paused in the middle of a write releases its locks, so another
            worker can take its runs over.
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 4,
        statement_timeout: float = 30.0,
        idle_timeout: float | None = None,
    ) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise QueueError(f"the run queue takes a connection string, got {dsn!r}")
        if not isinstance(pool_size, int) or pool_size < 1:
            raise QueueError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self.dsn = dsn
        self.pool_size = pool_size
        self._timeout_ms = int(statement_timeout * 1000)
        self._idle_ms = 0 if idle_timeout is None else max(1, int(idle_timeout * 1000))
        self.pool: Any = None
        self.limiter = trio.CapacityLimiter(pool_size)

    def _open(self) -> Any:
        return open_pool(
            self.dsn,
            self.pool_size,
            {
                "statement_timeout": self._timeout_ms,
                "idle_in_transaction_session_timeout": self._idle_ms,
            },
            migrate_queue,
            QueueError,
            "the run queue needs",
            min_size=self.pool_size,  # no connection is opened while runs go on
        )

    async def open(self) -> None:
        """Connect, and create or upgrade the store's and the queue's schema."""
        if self.pool is None:
            self.pool = await trio.to_thread.run_sync(self._open)

    async def run(self, fn: Callable[[Any], T], *, autocommit: bool = False) -> T:
        """``fn(conn)`` in a worker thread; it commits what it writes.

        A started transaction finishes even if the caller is cancelled. With
        ``autocommit`` each of ``fn``'s statements is a transaction of its own,
        with no BEGIN and COMMIT to wait for (for one-statement work).

        Raises:
            QueueError: a database error (anything ``fn`` raises on purpose
                goes through as it is).
        """
        pool = self.pool
        if pool is None:
            raise QueueError("the run queue's database is not open: use 'async with'")

        def call() -> T:
            import psycopg

            try:
                with pool.connection() as conn:
                    if autocommit:
                        conn.autocommit = True
                    try:
                        return fn(conn)
                    except BaseException:
                        conn.rollback()
                        raise
                    finally:
                        if autocommit and not conn.broken:
                            conn.autocommit = False
            except psycopg.Error as exc:
                raise QueueError(f"PostgreSQL error: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self.limiter)

    async def aclose(self) -> None:
        """Close the pool. Idempotent."""
        pool, self.pool = self.pool, None
        if pool is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pool.close)
        else:
            await trio.lowlevel.checkpoint()


class Listener:
    """A dedicated connection that LISTENs on channels; `run` calls
    ``on_notify(channel, payload)`` for each notification.

    Notifications are only wake-ups: whoever is woken reads the rows, and
    everyone also polls, so a lost notification delays, never loses, work.
    Only connecting runs in a thread: the connection's socket is then waited
    on by trio itself (`trio.lowlevel.wait_readable`) and read with libpq's
    non-blocking calls, so a notification costs a wake-up, not a thread.
    """

    def __init__(self, dsn: str, channels: Iterable[str]) -> None:
        self.dsn = dsn
        self.channels = tuple(channels)

    async def run(
        self,
        on_notify: Callable[[str, str], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """LISTEN until cancelled (started once listening).

        Raises:
            QueueError: the connection could not be made, or it broke.
        """
        import psycopg

        def connect() -> Any:
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
                for channel in self.channels:
                    conn.execute(f"LISTEN {channel}")
            except psycopg.Error as exc:
                raise QueueError(f"cannot LISTEN at the given DSN: {exc}") from exc
            return conn

        conn = await trio.to_thread.run_sync(connect)
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        try:
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(pgconn.socket)
                try:
                    pgconn.consume_input()
                except psycopg.Error as exc:
                    raise QueueError(f"the LISTEN connection failed: {exc}") from exc
                if pgconn.status != psycopg.pq.ConnStatus.OK:  # never spin on EOF
                    raise QueueError("the LISTEN connection was closed by the server")
                while (found := pgconn.notifies()) is not None:
                    on_notify(
                        found.relname.decode(encoding), found.extra.decode(encoding)
                    )
        finally:
            conn.close()
