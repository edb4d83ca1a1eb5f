"""The SQL side shared by the SQLite and PostgreSQL checkpointers.

Plain synchronous functions over a DB-API connection; the backends run them in
worker threads. Differences between the two databases are confined to `Dialect`.

Schema (``schema_version`` 2):

* ``weavegraph_meta(key, value)``: marks the database as a weavegraph store and
  records its schema version.
* ``sessions(id, created_at, updated_at, last_step, concurrency_limit,
  graph_hash, config_hash)``: one row per session; ``last_step`` only ever grows
  (an out-of-order write never moves it back).
* ``steps(session_id, step, base_step, created_at, state_json, frontier_json,
  seen_json, joins_json, ran_nodes_json, skipped_nodes_json,
  updated_channels_json, digest)``: one row per stored step, as a delta from
  ``base_step`` (see `record`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

from .._core.errors import CheckpointConflict, CheckpointError
from .record import (
    Checkpoint,
    SessionSummary,
    StepPage,
    StepRow,
    check_query,
    decode_rows,
    encode_row,
)

SCHEMA_VERSION = 2
STORE_MARK = "weavegraph-checkpoints"

Cursor = Any
Connection = Any
T = TypeVar("T")


@attrs.frozen
class Dialect:
    """What differs between SQLite and PostgreSQL."""

    name: str
    placeholder: str
    bigint: str
    has_node_filter: Callable[[str, str], str]
    lock_session: str  # appended to the SELECT of the session row in a transaction
    list_tables: str

    def q(self, sql: str) -> str:
        """``sql`` with ``?`` placeholders rewritten for this database."""
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    bigint="INTEGER",
    has_node_filter=lambda column, ph: (
        f"EXISTS (SELECT 1 FROM json_each(steps.{column}) AS j WHERE j.value = {ph})"
    ),
    lock_session="",
    list_tables="SELECT name FROM sqlite_master WHERE type = 'table'",
)

POSTGRES = Dialect(
    name="postgres",
    placeholder="%s",
    bigint="BIGINT",
    has_node_filter=lambda column, ph: (
        f"(steps.{column}::jsonb) @> jsonb_build_array({ph}::text)"
    ),
    lock_session=" FOR UPDATE",
    list_tables=(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema()"
    ),
)


def _migrations(d: Dialect) -> list[list[str]]:
    """Schema changes, one list of statements per version (index 0: version 1)."""
    return [
        [
            "CREATE TABLE weavegraph_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            f"""CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                last_step {d.bigint} NOT NULL,
                concurrency_limit {d.bigint}
            )""",
            "CREATE INDEX sessions_updated_at ON sessions (updated_at DESC)",
            f"""CREATE TABLE steps (
                session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                step {d.bigint} NOT NULL,
                base_step {d.bigint},
                created_at TEXT NOT NULL,
                state_json TEXT NOT NULL,
                frontier_json TEXT NOT NULL,
                seen_json TEXT NOT NULL,
                joins_json TEXT NOT NULL,
                ran_nodes_json TEXT NOT NULL,
                skipped_nodes_json TEXT NOT NULL,
                updated_channels_json TEXT NOT NULL,
                digest TEXT NOT NULL,
                PRIMARY KEY (session_id, step)
            )""",
        ],
        [
            "ALTER TABLE sessions ADD COLUMN graph_hash TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE sessions ADD COLUMN config_hash TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX steps_base_step ON steps (session_id, base_step)",
        ],
    ]


def migrate(conn: Connection, d: Dialect, *, target: int = SCHEMA_VERSION) -> int:
    """Create or upgrade the schema in one transaction; return the version found.

    Raises:
        CheckpointError: the database holds other tables but is not a weavegraph
            store, or its schema is newer than this version of weavegraph.
    """
    cur = conn.cursor()
    if d.name == "sqlite":
        cur.execute("BEGIN IMMEDIATE")  # DDL is transactional in SQLite too
    cur.execute(d.list_tables)
    tables = {row[0] for row in cur.fetchall()}
    try:
        return _migrate(conn, cur, d, tables, target)
    except BaseException:
        conn.rollback()
        raise


def _migrate(
    conn: Connection, cur: Cursor, d: Dialect, tables: set[str], target: int
) -> int:
    found = 0
    if "weavegraph_meta" in tables:
        cur.execute(d.q("SELECT value FROM weavegraph_meta WHERE key = ?"), ("store",))
        mark = cur.fetchone()
        cur.execute(
            d.q("SELECT value FROM weavegraph_meta WHERE key = ?"), ("schema_version",)
        )
        version = cur.fetchone()
        if mark is None or mark[0] != STORE_MARK or version is None:
            raise CheckpointError(
                "the database has a weavegraph_meta table that weavegraph did not"
                " write; refusing to use it as a checkpoint store"
            )
        found = int(version[0])
    elif tables & {"sessions", "steps"} or (d.name == "sqlite" and tables):
        raise CheckpointError(
            "the database is not a weavegraph checkpoint store (it already holds the"
            f" tables {', '.join(sorted(tables))}); refusing to modify it. Point the"
            " checkpointer at a new file or an empty database"
        )
    if found > target:
        raise CheckpointError(
            f"the checkpoint store has schema version {found}, newer than the"
            f" {target} this weavegraph supports; upgrade weavegraph to open it"
        )
    if found == target:
        conn.rollback()
        return found
    for version, statements in enumerate(_migrations(d)[found:target], start=found + 1):
        for statement in statements:
            cur.execute(statement)
        if version == 1:
            cur.execute(
                d.q("INSERT INTO weavegraph_meta (key, value) VALUES (?, ?)"),
                ("store", STORE_MARK),
            )
            cur.execute(
                d.q("INSERT INTO weavegraph_meta (key, value) VALUES (?, ?)"),
                ("schema_version", str(version)),
            )
        else:
            cur.execute(
                d.q("UPDATE weavegraph_meta SET value = ? WHERE key = ?"),
                (str(version), "schema_version"),
            )
    conn.commit()
    return found


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


_ROW_COLUMNS = (
    "session_id, step, base_step, created_at, state_json, frontier_json, seen_json,"
    " joins_json, ran_nodes_json, skipped_nodes_json, updated_channels_json, digest"
)


def _row_values(row: StepRow) -> tuple[Any, ...]:
    return (
        row.session_id,
        row.step,
        row.base_step,
        row.created_at,
        row.state_json,
        row.frontier_json,
        row.seen_json,
        row.joins_json,
        row.ran_nodes_json,
        row.skipped_nodes_json,
        row.updated_channels_json,
        row.digest,
    )


def _row_from(record: Sequence[Any]) -> StepRow:
    return StepRow(
        session_id=record[0],
        step=int(record[1]),
        base_step=None if record[2] is None else int(record[2]),
        created_at=record[3],
        state_json=record[4],
        frontier_json=record[5],
        seen_json=record[6],
        joins_json=record[7],
        ran_nodes_json=record[8],
        skipped_nodes_json=record[9],
        updated_channels_json=record[10],
        digest=record[11],
    )


@attrs.frozen
class PlannedRow:
    """A row encoded ahead of its transaction (in the caller's thread).

    ``base_digest`` is set when the row is a delta from a step stored by an
    earlier transaction: the write checks that this step is still stored as it
    was, and stores the row whole otherwise.
    """

    checkpoint: Checkpoint
    row: StepRow
    base_digest: str | None


def plan_rows(
    checkpoints: Sequence[Checkpoint], known: dict[str, tuple[Checkpoint, str]]
) -> list[PlannedRow]:
    """Encode ``checkpoints``, each as a delta from its session's previous one.

    ``known`` maps sessions to the last checkpoint this process stored, with
    its row digest. Pure CPU work: call it outside the database thread.
    """
    planned: list[PlannedRow] = []
    last: dict[str, tuple[Checkpoint, str | None]] = {
        sid: (cp, digest) for sid, (cp, digest) in known.items()
    }
    for checkpoint in checkpoints:
        previous = last.get(checkpoint.session_id)
        if previous is not None and previous[0].step < checkpoint.step:
            row = encode_row(checkpoint, previous[0])
            planned.append(PlannedRow(checkpoint, row, previous[1]))
            last[checkpoint.session_id] = (checkpoint, None)
        else:
            planned.append(PlannedRow(checkpoint, encode_row(checkpoint, None), None))
            if previous is None:
                last[checkpoint.session_id] = (checkpoint, None)
    return planned


def write_rows(
    conn: Connection,
    d: Dialect,
    planned: Sequence[PlannedRow],
    *,
    expected_last_step: int | None = None,
    check: bool = False,
) -> dict[str, tuple[Checkpoint, str]]:
    """Store planned rows in one transaction.

    Returns, per session, the newest checkpoint written and its row digest (for
    the caller's ``known`` map, once the transaction committed). With ``check``,
    the session of the (single) checkpoint must end at ``expected_last_step``
    (``None``: must not exist), else `CheckpointConflict`.
    """
    cur = conn.cursor()
    written: dict[str, tuple[Checkpoint, str]] = {}
    try:
        if d.name == "sqlite":
            cur.execute("BEGIN IMMEDIATE")
        by_session: dict[str, list[PlannedRow]] = {}
        for item in planned:
            by_session.setdefault(item.checkpoint.session_id, []).append(item)
        for session_id, items in by_session.items():
            _touch_session(
                cur, d, [i.checkpoint for i in items], check, expected_last_step
            )
            newest: tuple[Checkpoint, str] | None = None
            for item in items:
                row = item.row
                if item.base_digest is not None and not _stored_as(
                    cur, d, session_id, row.base_step, item.base_digest
                ):
                    row = encode_row(item.checkpoint, None)  # the base changed
                digest = _write_step(cur, d, item.checkpoint, row)
                if newest is None or newest[0].step < item.checkpoint.step:
                    newest = (item.checkpoint, digest)
            assert newest is not None
            written[session_id] = newest
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return written


def _touch_session(
    cur: Cursor,
    d: Dialect,
    items: Sequence[Checkpoint],
    check: bool,
    expected: int | None,
) -> None:
    """Create or update the session row (locked for the transaction)."""
    first = items[0]
    now = _now()
    cur.execute(
        d.q("SELECT last_step FROM sessions WHERE id = ?" + d.lock_session),
        (first.session_id,),
    )
    found = cur.fetchone()
    last = None if found is None else int(found[0])
    if check and last != expected:
        raise CheckpointConflict(first.session_id, expected, last)
    newest = max(cp.step for cp in items)
    if found is None:
        cur.execute(
            d.q(
                "INSERT INTO sessions (id, created_at, updated_at, last_step,"
                " concurrency_limit, graph_hash, config_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                first.session_id,
                now,
                now,
                newest,
                first.concurrency_limit,
                first.graph_hash,
                first.config_hash,
            ),
        )
    else:
        # Monotonic: the latest pointer never moves back on an out-of-order write.
        cur.execute(
            d.q(
                "UPDATE sessions SET updated_at = ?,"
                " last_step = CASE WHEN last_step < ? THEN ? ELSE last_step END"
                " WHERE id = ?"
            ),
            (now, newest, newest, first.session_id),
        )


def _stored_as(
    cur: Cursor, d: Dialect, session_id: str, step: int | None, digest: str
) -> bool:
    """Whether ``step`` is stored with exactly that row digest."""
    cur.execute(
        d.q("SELECT digest FROM steps WHERE session_id = ? AND step = ?"),
        (session_id, step),
    )
    stored = cur.fetchone()
    return stored is not None and stored[0] == digest


def _write_step(cur: Cursor, d: Dialect, cp: Checkpoint, row: StepRow) -> str:
    placeholders = ", ".join([d.placeholder] * 12)
    cur.execute(
        f"INSERT INTO steps ({_ROW_COLUMNS}) VALUES ({placeholders})"
        " ON CONFLICT (session_id, step) DO NOTHING",
        _row_values(row),
    )
    if cur.rowcount == 1:
        return row.digest
    # The step is already stored: replace it, unless later steps build on it and
    # the content differs.
    cur.execute(
        d.q("SELECT digest FROM steps WHERE session_id = ? AND step = ?"),
        (cp.session_id, cp.step),
    )
    existing = cur.fetchone()
    if existing is not None and existing[0] != row.digest:
        cur.execute(
            d.q(
                "SELECT step FROM steps WHERE session_id = ? AND base_step = ? LIMIT 1"
            ),
            (cp.session_id, cp.step),
        )
        if cur.fetchone() is not None:
            raise CheckpointError(
                f"step {cp.step} of session {cp.session_id!r} is already stored and"
                " later steps are stored relative to it; it cannot be replaced with"
                " different content"
            )
    cur.execute(
        d.q("DELETE FROM steps WHERE session_id = ? AND step = ?"),
        (cp.session_id, cp.step),
    )
    cur.execute(
        f"INSERT INTO steps ({_ROW_COLUMNS}) VALUES ({placeholders})",
        _row_values(row),
    )
    return row.digest


def _session_meta(
    cur: Cursor, d: Dialect, session_id: str
) -> tuple[int, int | None, str, str] | None:
    cur.execute(
        d.q(
            "SELECT last_step, concurrency_limit, graph_hash, config_hash"
            " FROM sessions WHERE id = ?"
        ),
        (session_id,),
    )
    found = cur.fetchone()
    if found is None:
        return None
    return (int(found[0]), found[1], found[2], found[3])


def _chain_rows(cur: Cursor, d: Dialect, session_id: str, upto: int) -> list[StepRow]:
    """The rows needed to rebuild ``upto``: its base chain, ascending."""
    cur.execute(
        d.q(
            f"SELECT {_ROW_COLUMNS} FROM steps WHERE session_id = ? AND step <= ?"
            " ORDER BY step"
        ),
        (session_id, upto),
    )
    rows = [_row_from(r) for r in cur.fetchall()]
    by_step = {r.step: r for r in rows}
    chain: list[StepRow] = []
    current = by_step.get(upto)
    while current is not None:
        chain.append(current)
        if current.base_step is None:
            break
        parent = by_step.get(current.base_step)
        if parent is None:
            raise CheckpointError(
                f"corrupt checkpoint chain for session {session_id!r}: step"
                f" {current.step} is stored relative to step {current.base_step},"
                " which is missing"
            )
        current = parent
    chain.reverse()
    return chain


def load_latest(
    conn: Connection, d: Dialect, session_id: str
) -> tuple[Checkpoint, str] | None:
    """The newest checkpoint of ``session_id`` and its row digest, or ``None``."""
    cur = conn.cursor()
    try:
        meta = _session_meta(cur, d, session_id)
        if meta is None:
            return None
        last, limit, graph_hash, config_hash = meta
        chain = _chain_rows(cur, d, session_id, last)
    finally:
        conn.rollback()
    if not chain or chain[-1].step != last:
        raise CheckpointError(
            f"corrupt checkpoint store: session {session_id!r} says its last step is"
            f" {last}, but that step is not stored"
        )
    (checkpoint,) = decode_rows(
        chain,
        wanted={last},
        concurrency_limit=limit,
        graph_hash=graph_hash,
        config_hash=config_hash,
    )
    return checkpoint, chain[-1].digest


def list_sessions(conn: Connection, d: Dialect) -> list[SessionSummary]:
    """Every session, most recently updated first."""
    cur = conn.cursor()
    try:
        cur.execute(
            "SELECT id, last_step, created_at, updated_at, graph_hash FROM sessions"
            " ORDER BY updated_at DESC, id"
        )
        records = cur.fetchall()
    finally:
        conn.rollback()
    return [
        SessionSummary(
            session_id=r[0],
            last_step=int(r[1]),
            created_at=_dt.datetime.fromisoformat(r[2]),
            updated_at=_dt.datetime.fromisoformat(r[3]),
            graph_hash=r[4],
        )
        for r in records
    ]


def query_steps(
    conn: Connection,
    d: Dialect,
    session_id: str,
    *,
    limit: int,
    offset: int,
    min_step: int | None,
    max_step: int | None,
    ran_node: str | None,
    skipped_node: str | None,
) -> StepPage:
    """One page of a session's steps, newest first (see `Checkpointer.query_steps`)."""
    where = ["session_id = ?"]
    params: list[Any] = [session_id]
    if min_step is not None:
        where.append("step >= ?")
        params.append(min_step)
    if max_step is not None:
        where.append("step <= ?")
        params.append(max_step)
    if ran_node is not None:
        where.append(d.has_node_filter("ran_nodes_json", "?"))
        params.append(ran_node)
    if skipped_node is not None:
        where.append(d.has_node_filter("skipped_nodes_json", "?"))
        params.append(skipped_node)
    condition = " AND ".join(where)
    cur = conn.cursor()
    try:
        meta = _session_meta(cur, d, session_id)
        if meta is None:
            return StepPage(checkpoints=(), total=0, offset=offset, limit=limit)
        _, concurrency, graph_hash, config_hash = meta
        cur.execute(d.q(f"SELECT COUNT(*) FROM steps WHERE {condition}"), params)
        total = int(cur.fetchone()[0])
        cur.execute(
            d.q(
                f"SELECT step FROM steps WHERE {condition}"
                " ORDER BY step DESC LIMIT ? OFFSET ?"
            ),
            [*params, limit, offset],
        )
        steps = [int(r[0]) for r in cur.fetchall()]
        rows: list[StepRow] = []
        if steps:
            rows = _rows_for(cur, d, session_id, steps)
    finally:
        conn.rollback()
    checkpoints = decode_rows(
        rows,
        wanted=set(steps),
        concurrency_limit=concurrency,
        graph_hash=graph_hash,
        config_hash=config_hash,
    )
    checkpoints.sort(key=lambda c: c.step, reverse=True)
    return StepPage(
        checkpoints=tuple(checkpoints), total=total, offset=offset, limit=limit
    )


def _rows_for(
    cur: Cursor, d: Dialect, session_id: str, steps: list[int]
) -> list[StepRow]:
    """Every row needed to rebuild ``steps`` (their chains), ascending."""
    cur.execute(
        d.q(
            f"SELECT {_ROW_COLUMNS} FROM steps WHERE session_id = ? AND step <= ?"
            " ORDER BY step"
        ),
        (session_id, max(steps)),
    )
    rows = [_row_from(r) for r in cur.fetchall()]
    by_step = {r.step: r for r in rows}
    needed: set[int] = set()
    for step in steps:
        current = by_step.get(step)
        while current is not None and current.step not in needed:
            needed.add(current.step)
            if current.base_step is None:
                break
            parent = by_step.get(current.base_step)
            if parent is None:
                raise CheckpointError(
                    f"corrupt checkpoint chain for session {session_id!r}: step"
                    f" {current.step} is stored relative to step"
                    f" {current.base_step}, which is missing"
                )
            current = parent
    return [r for r in rows if r.step in needed]


def delete_session(conn: Connection, d: Dialect, session_id: str) -> bool:
    """Delete a session and its steps in one transaction."""
    cur = conn.cursor()
    try:
        cur.execute(d.q("DELETE FROM steps WHERE session_id = ?"), (session_id,))
        cur.execute(d.q("DELETE FROM sessions WHERE id = ?"), (session_id,))
        existed = bool(cur.rowcount)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return existed


class SQLCheckpointer:
    """What the SQLite and PostgreSQL checkpointers share: the protocol methods.

    Subclasses set `dialect` and implement `_run(fn)`, which calls ``fn`` with a
    connection in a worker thread and maps driver errors to `CheckpointError`.
    """

    dialect: Dialect

    def __init__(self) -> None:
        # Per session, the newest checkpoint this process stored and its row
        # digest: the base of the next row's delta.
        self._last: dict[str, tuple[Checkpoint, str]] = {}

    async def _run(self, fn: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    async def open(self) -> None:
        """Connect (and create or upgrade the schema) now rather than at first use."""
        await self._run(lambda conn: None)

    async def save(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` in one transaction."""
        await self.save_many([checkpoint])

    async def save_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store several checkpoints in one transaction (the runner's batching).

        Rows are encoded here, in the caller's thread; only the statements run in
        the worker thread. A started transaction completes even if cancelled.
        """
        planned = plan_rows(checkpoints, self._last)
        written = await self._run(lambda conn: write_rows(conn, self.dialect, planned))
        self._last.update(written)

    async def save_with_concurrency_check(
        self, checkpoint: Checkpoint, expected_last_step: int | None
    ) -> None:
        """Store only if the session's latest step is ``expected_last_step``.

        ``None`` means the session must not exist yet. The check and the write
        are one transaction, so of two concurrent writers expecting the same step
        exactly one wins.

        Raises:
            CheckpointConflict: another writer got there first.
        """
        planned = plan_rows([checkpoint], self._last)
        written = await self._run(
            lambda conn: self._checked_write(conn, planned, expected_last_step)
        )
        self._last.update(written)

    def _checked_write(
        self, conn: Connection, planned: list[PlannedRow], expected: int | None
    ) -> dict[str, tuple[Checkpoint, str]]:
        return write_rows(
            conn, self.dialect, planned, expected_last_step=expected, check=True
        )

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The newest checkpoint of ``session_id``, or ``None``."""
        found = await self._run(
            lambda conn: load_latest(conn, self.dialect, session_id)
        )
        if found is None:
            return None
        self._last[session_id] = found
        return found[0]

    async def list_sessions(self) -> list[SessionSummary]:
        """Every session, most recently updated first."""
        return await self._run(lambda conn: list_sessions(conn, self.dialect))

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
            lambda conn: query_steps(
                conn,
                self.dialect,
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
            lambda conn: delete_session(conn, self.dialect, session_id)
        )
