"""The SQL side shared by the SQLite and PostgreSQL checkpointers.

Plain synchronous functions over a DB-API connection; the backends run them in
worker threads. Differences between the two databases are confined to `Dialect`.

Schema (``schema_version`` 4):

* ``weavegraph_meta(key, value)``: marks the database as a weavegraph store and
  records its schema version.
* ``sessions(id, created_at, updated_at, last_step, concurrency_limit,
  graph_hash, config_hash, forked_from, forked_step)``: one row per session;
  ``last_step`` only ever grows (an out-of-order write never moves it back);
  a fork names the session and step it started from (set once, at creation).
* ``steps(session_id, step, base_step, parent_step, snap_step, mroot, eroot,
  created_at, state_json, messages_json, errors_json, seen_json, frontier_json,
  joins_json, ran_nodes_json, skipped_nodes_json, updated_channels_json,
  digest)``: one row per stored step, as a delta from ``base_step`` (see
  `_rows`).
* ``pending_writes(session_id, base_step, created_at, value_json, digest)``: at
  most one pending record per session, attached to its latest step.

Writes lock the session row for their transaction (SQLite: ``BEGIN
IMMEDIATE``, which takes the database's write lock; PostgreSQL: ``SELECT … FOR
UPDATE`` at READ COMMITTED, sessions locked in id order), so checking the
latest step and writing after it cannot be split by another writer, in this
process or another. Reads of several statements run in one snapshot (SQLite: a
read transaction; PostgreSQL: REPEATABLE READ, READ ONLY). Loading a step is
two statements whatever its chain: the session row with its latest row and
pending record, then one ``UNION ALL`` of every range the fold needs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs
import trio

from .._core.errors import CheckpointConflict, CheckpointError
from .._core.session import check_session_id
from . import _legacy
from ._rows import (
    COLUMNS,
    PendingRow,
    RowSource,
    StepRow,
    Stored,
    corrupt,
    decode_pending,
    decode_steps,
    encode_pending,
    parse_time,
    plan_session,
    row_from,
    row_values,
)
from .record import (
    Checkpoint,
    Checkpointer,
    SessionSummary,
    StepPage,
    check_chain,
    check_query,
)

SCHEMA_VERSION = 4
STORE_MARK = "weavegraph-checkpoints"
SQLITE_APPLICATION_ID = int.from_bytes(b"WGCP", "big")
"""``PRAGMA application_id`` of a weavegraph SQLite store."""

OUR_TABLES = frozenset({"weavegraph_meta", "sessions", "steps", "pending_writes"})

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
    # Run before reading a session's row with others joined (PostgreSQL: a
    # waiting FOR UPDATE re-reads only the locked row, not the joined ones).
    lock_first: str | None
    list_tables: str
    begin_write: tuple[str, ...]
    begin_read: tuple[str, ...]

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
    lock_session="",  # BEGIN IMMEDIATE already holds the database's write lock
    lock_first=None,
    list_tables="SELECT name FROM sqlite_master",
    begin_write=("BEGIN IMMEDIATE",),
    begin_read=("BEGIN",),
)

POSTGRES = Dialect(
    name="postgres",
    placeholder="%s",
    bigint="BIGINT",
    has_node_filter=lambda column, ph: (
        f"(steps.{column}::jsonb) @> jsonb_build_array({ph}::text)"
    ),
    lock_session=" FOR UPDATE",
    lock_first="SELECT 1 FROM sessions WHERE id = %s FOR UPDATE",
    list_tables=(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema()"
    ),
    begin_write=(),
    # `PostgresCheckpointer` opens its reads REPEATABLE READ, READ ONLY (set on
    # the connection, so BEGIN carries it: no extra round trip).
    begin_read=(),
)


# ------------------------------------------------------------------- schema


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
        [
            f"ALTER TABLE steps ADD COLUMN parent_step {d.bigint}",
            f"ALTER TABLE steps ADD COLUMN snap_step {d.bigint} NOT NULL DEFAULT 0",
            f"ALTER TABLE steps ADD COLUMN mroot {d.bigint} NOT NULL DEFAULT 0",
            f"ALTER TABLE steps ADD COLUMN eroot {d.bigint} NOT NULL DEFAULT 0",
            "ALTER TABLE steps ADD COLUMN messages_json TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE steps ADD COLUMN errors_json TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX steps_messages ON steps (session_id, mroot, step)"
            " WHERE messages_json <> ''",
            "CREATE INDEX steps_errors ON steps (session_id, eroot, step)"
            " WHERE errors_json <> ''",
            f"""CREATE TABLE pending_writes (
                session_id TEXT PRIMARY KEY
                    REFERENCES sessions (id) ON DELETE CASCADE,
                base_step {d.bigint} NOT NULL,
                created_at TEXT NOT NULL,
                value_json TEXT NOT NULL,
                digest TEXT NOT NULL
            )""",
        ],
        [
            "ALTER TABLE sessions ADD COLUMN forked_from TEXT",
            f"ALTER TABLE sessions ADD COLUMN forked_step {d.bigint}",
        ],
    ]


def migrate(conn: Connection, d: Dialect, *, target: int = SCHEMA_VERSION) -> int:
    """Create or upgrade the schema in one transaction; return the version found.

    A database is used only if it is a weavegraph store or entirely empty;
    anything else is refused before a single byte is written.

    Raises:
        CheckpointError: the database holds anything that is not a weavegraph
            store, or its schema is newer than this version of weavegraph.
    """
    cur = conn.cursor()
    if d.name == "sqlite":
        cur.execute("BEGIN IMMEDIATE")  # DDL is transactional in SQLite too
    else:
        # Two processes opening a fresh database at once must not both create it.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('weavegraph-migrate'))")
    try:
        return _migrate(conn, cur, d, target)
    except BaseException:
        conn.rollback()
        raise


def _foreign(what: str) -> CheckpointError:
    return CheckpointError(
        f"the database is not a weavegraph checkpoint store ({what}); refusing to"
        " modify it. Point the checkpointer at a new file or an empty database"
    )


def _check_empty(cur: Cursor, d: Dialect, names: set[str]) -> None:
    """Refuse a database without ``weavegraph_meta`` unless it is empty."""
    if d.name == "sqlite":
        if names:
            raise _foreign(f"it already holds {', '.join(sorted(names))}")
        cur.execute("PRAGMA user_version")
        (user_version,) = cur.fetchone()
        cur.execute("PRAGMA application_id")
        (application_id,) = cur.fetchone()
        if user_version != 0:
            raise _foreign(
                f"another application set its user_version to {user_version}"
            )
        if application_id not in (0, SQLITE_APPLICATION_ID):
            raise _foreign(f"its application_id is {application_id:#x}")
    elif names & OUR_TABLES:
        raise _foreign(
            f"it already holds {', '.join(sorted(names & OUR_TABLES))} that"
            " weavegraph did not write"
        )


def _migrate(conn: Connection, cur: Cursor, d: Dialect, target: int) -> int:
    cur.execute(d.list_tables)
    names = {row[0] for row in cur.fetchall() if not str(row[0]).startswith("sqlite_")}
    found = 0
    if "weavegraph_meta" in names:
        cur.execute(d.q("SELECT value FROM weavegraph_meta WHERE key = ?"), ("store",))
        mark = cur.fetchone()
        cur.execute(
            d.q("SELECT value FROM weavegraph_meta WHERE key = ?"), ("schema_version",)
        )
        version = cur.fetchone()
        if (
            mark is None
            or mark[0] != STORE_MARK
            or version is None
            or not str(version[0]).isdigit()
        ):
            raise CheckpointError(
                "the database has a weavegraph_meta table that weavegraph did not"
                " write; refusing to use it as a checkpoint store"
            )
        found = int(version[0])
    else:
        _check_empty(cur, d, names)
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
        if version == 3 and found > 0:
            _legacy.convert(cur, d, _insert_row_sql(d))
    if d.name == "sqlite":
        cur.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
    conn.commit()
    return found


# ------------------------------------------------------------------- writing


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


_SELECT_ROW = ", ".join(COLUMNS)


def _insert_row_sql(d: Dialect) -> str:
    placeholders = ", ".join([d.placeholder] * len(COLUMNS))
    return f"INSERT INTO steps ({_SELECT_ROW}) VALUES ({placeholders})"


@attrs.frozen
class SessionPlan:
    """One session's part of a write, encoded ahead of its transaction.

    Attributes:
        checkpoints: The session's checkpoints, in the order given.
        tip: What the writer believes is the session's latest stored row (the
            base of the first delta); the transaction checks it.
        rows: Per checkpoint: its row, what it stores, whether it is on top.
        pending: Per checkpoint index: its pending row (``None``: none).
    """

    checkpoints: tuple[Checkpoint, ...]
    tip: Stored | None
    rows: list[tuple[StepRow, Stored, bool]]
    pending: list[PendingRow | None]

    @property
    def session_id(self) -> str:
        return self.checkpoints[0].session_id


def plan(
    checkpoints: Sequence[Checkpoint], tips: Mapping[str, Stored]
) -> list[SessionPlan]:
    """Encode ``checkpoints`` per session. Pure CPU work: call it outside the
    database thread."""
    by_session: dict[str, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        if not isinstance(checkpoint, Checkpoint):
            raise CheckpointError(f"expected a Checkpoint, got {checkpoint!r}")
        check_session_id(checkpoint.session_id)
        by_session.setdefault(checkpoint.session_id, []).append(checkpoint)
    plans = []
    for sid, items in by_session.items():
        tip = tips.get(sid)
        plans.append(
            SessionPlan(
                checkpoints=tuple(items),
                tip=tip,
                rows=plan_session(items, tip),
                pending=[
                    None
                    if cp.pending is None
                    else encode_pending(sid, cp.step, cp.pending)
                    for cp in items
                ],
            )
        )
    return plans


def write(
    conn: Connection, d: Dialect, plans: Sequence[SessionPlan], *, checked: bool
) -> dict[str, Stored]:
    """Store planned sessions in one transaction.

    With ``checked`` each checkpoint must follow its parent (see
    `Checkpointer.append`), else `CheckpointConflict` and nothing is stored.
    Returns, per session whose latest row this wrote, what it stored (the
    base of the writer's next delta).
    """
    cur = conn.cursor()
    written: dict[str, Stored] = {}
    try:
        for statement in d.begin_write:
            cur.execute(statement)
        # One lock order for every writer: no deadlocks between two batches.
        for session_plan in sorted(plans, key=lambda p: p.session_id):
            tip = _write_session(cur, d, session_plan, checked)
            if tip is not None:
                written[session_plan.session_id] = tip
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return written


def _check_step(session_id: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise CheckpointError(
            f"corrupt checkpoint store: session {session_id!r} has last_step"
            f" {value!r}, not a step number"
        )
    return value


@attrs.frozen
class _Locked:
    """A session's row as its write transaction found (and locked) it."""

    latest: int | None  # None: the session did not exist
    latest_digest: str | None
    has_pending: bool
    created: bool


def _lock_session(cur: Cursor, d: Dialect, first: Checkpoint, create: str) -> _Locked:
    """Lock the session's row, creating it ``"first"`` (for a new session's
    first checkpoint: it must not exist), ``"if-missing"`` or ``"never"``.

    One statement finds the latest step, its row digest and whether a pending
    record exists, so the usual write is three statements in all (four on
    PostgreSQL, which locks the row first).
    """
    sid = first.session_id
    if create == "first" and _insert_session(cur, d, first):
        return _Locked(None, None, False, True)
    found, exists = None, True
    if d.lock_first is not None:
        cur.execute(d.lock_first, (sid,))
        exists = cur.fetchone() is not None
    if exists:
        # After the lock: a fresh statement sees every committed row.
        cur.execute(
            d.q(
                "SELECT sessions.last_step, steps.digest, pending_writes.base_step"
                " FROM sessions LEFT JOIN steps ON steps.session_id = sessions.id"
                " AND steps.step = sessions.last_step"
                " LEFT JOIN pending_writes"
                " ON pending_writes.session_id = sessions.id"
                " WHERE sessions.id = ?"
            ),
            (sid,),
        )
        found = cur.fetchone()
    if found is not None:
        latest = _check_step(sid, found[0])
        return _Locked(latest, found[1], found[2] is not None, False)
    if create == "if-missing":
        if _insert_session(cur, d, first):
            return _Locked(None, None, False, True)
        return _lock_session(cur, d, first, "never")  # created meanwhile
    return _Locked(None, None, False, False)


def _insert_session(cur: Cursor, d: Dialect, first: Checkpoint) -> bool:
    """Insert the session's row unless it exists; whether it was inserted."""
    now = _now()
    cur.execute(
        d.q(
            "INSERT INTO sessions (id, created_at, updated_at, last_step,"
            " concurrency_limit, graph_hash, config_hash, forked_from, forked_step)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        ),
        (
            first.session_id,
            now,
            now,
            first.step,
            first.concurrency_limit,
            first.graph_hash,
            first.config_hash,
            *(first.forked_from or (None, None)),
        ),
    )
    return bool(cur.rowcount == 1)


def _write_session(
    cur: Cursor, d: Dialect, session_plan: SessionPlan, checked: bool
) -> Stored | None:
    sid = session_plan.session_id
    checkpoints = session_plan.checkpoints
    first = checkpoints[0]
    if not checked:
        create = "if-missing"
    else:
        create = "first" if first.parent_step is None else "never"
    locked = _lock_session(cur, d, first, create)
    latest = locked.latest
    if checked:
        check_chain(checkpoints, {} if latest is None else {sid: latest})
    rows = list(session_plan.rows)
    tip = session_plan.tip
    # Steps known to be stored as this writer encoded them: valid delta bases.
    verified: set[int] = set()
    if (
        tip is not None
        and latest == tip.checkpoint.step
        and locked.latest_digest == tip.digest
    ):
        verified.add(latest)
    current = latest
    newest: tuple[Stored, int] | None = None  # what is on top, and its index
    index = 0
    while index < len(rows):
        row, stored, _ = rows[index]
        base = row.base_step
        if base is not None and not (
            base == current and row.step > base and base in verified
        ):
            # The store moved on since this writer's last write (or the base
            # was replaced): store the rest whole.
            rows[index:] = plan_session(checkpoints[index:], None)
            continue
        _put_row(cur, d, checkpoints[index], row, checked)
        verified.add(row.step)
        if current is None or row.step >= current:
            current = row.step
            newest = (stored, index)
        index += 1
    assert current is not None
    _touch_session(cur, d, sid, locked, current, newest, session_plan)
    if newest is None:
        return None
    return newest[0]


def _same(a: Checkpoint, b: Checkpoint) -> bool:
    return (
        a.state == b.state
        and a.state.versions == b.state.versions
        and a.frontier == b.frontier
        and dict(a.versions_seen) == dict(b.versions_seen)
        and dict(a.join_progress) == dict(b.join_progress)
        and (a.ran_nodes, a.skipped_nodes, a.updated_channels)
        == (b.ran_nodes, b.skipped_nodes, b.updated_channels)
    )


def _put_row(
    cur: Cursor, d: Dialect, checkpoint: Checkpoint, row: StepRow, checked: bool
) -> None:
    sid, step = row.session_id, row.step
    cur.execute(
        _insert_row_sql(d) + " ON CONFLICT (session_id, step) DO NOTHING",
        row_values(row),
    )
    if cur.rowcount == 1:
        return
    if checked:
        raise corrupt(
            sid, step, "it is stored although the session's latest step is older"
        )
    # The step is already stored: replace it, unless later steps build on it
    # and the content differs.
    cur.execute(
        d.q("SELECT digest FROM steps WHERE session_id = ? AND step = ?"), (sid, step)
    )
    existing = cur.fetchone()
    if existing is not None and existing[0] == row.digest:
        return
    cur.execute(
        d.q("SELECT step FROM steps WHERE session_id = ? AND base_step = ? LIMIT 1"),
        (sid, step),
    )
    if cur.fetchone() is not None:
        stored = _decode(cur, d, sid, [_fetch_row(cur, d, sid, step)])[0]
        if _same(stored.checkpoint, checkpoint):
            return
        raise CheckpointError(
            f"step {step} of session {sid!r} is already stored and later steps are"
            " stored relative to it; it cannot be replaced with different content"
        )
    cur.execute(d.q("DELETE FROM steps WHERE session_id = ? AND step = ?"), (sid, step))
    cur.execute(_insert_row_sql(d), row_values(row))


def _touch_session(
    cur: Cursor,
    d: Dialect,
    sid: str,
    locked: _Locked,
    current: int,
    newest: tuple[Stored, int] | None,
    session_plan: SessionPlan,
) -> None:
    """Move the latest pointer (never back) and set the pending record with it."""
    now = _now()
    if newest is None:  # only out-of-order steps: the latest row is untouched
        cur.execute(d.q("UPDATE sessions SET updated_at = ? WHERE id = ?"), (now, sid))
        return
    top = newest[0].checkpoint
    cur.execute(
        d.q(
            "UPDATE sessions SET updated_at = ?, last_step = ?, concurrency_limit = ?,"
            " graph_hash = ?, config_hash = ? WHERE id = ?"
        ),
        (now, current, top.concurrency_limit, top.graph_hash, top.config_hash, sid),
    )
    if locked.has_pending:
        cur.execute(d.q("DELETE FROM pending_writes WHERE session_id = ?"), (sid,))
    pending = session_plan.pending[newest[1]]
    if pending is not None:
        _insert_pending(cur, d, pending)


def _insert_pending(cur: Cursor, d: Dialect, row: PendingRow) -> None:
    cur.execute(
        d.q(
            "INSERT INTO pending_writes (session_id, base_step, created_at,"
            " value_json, digest) VALUES (?, ?, ?, ?, ?)"
        ),
        (row.session_id, row.base_step, row.created_at, row.value_json, row.digest),
    )


def save_pending(
    conn: Connection,
    d: Dialect,
    session_id: str,
    base_step: int,
    row: PendingRow | None,
) -> None:
    """Replace (or clear) the pending record of the session's latest step."""
    cur = conn.cursor()
    try:
        for statement in d.begin_write:
            cur.execute(statement)
        cur.execute(
            d.q("SELECT last_step FROM sessions WHERE id = ?" + d.lock_session),
            (session_id,),
        )
        found = cur.fetchone()
        latest = None if found is None else _check_step(session_id, found[0])
        if latest != base_step:
            raise CheckpointConflict(session_id, base_step, latest)
        cur.execute(
            d.q("DELETE FROM pending_writes WHERE session_id = ?"), (session_id,)
        )
        if row is not None:
            _insert_pending(cur, d, row)
        cur.execute(
            d.q("UPDATE sessions SET updated_at = ? WHERE id = ?"), (_now(), session_id)
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def delete_session(conn: Connection, d: Dialect, session_id: str) -> bool:
    """Delete a session, its steps and its pending record in one transaction."""
    cur = conn.cursor()
    try:
        for statement in d.begin_write:
            cur.execute(statement)
        cur.execute(
            d.q("DELETE FROM pending_writes WHERE session_id = ?"), (session_id,)
        )
        cur.execute(d.q("DELETE FROM steps WHERE session_id = ?"), (session_id,))
        cur.execute(d.q("DELETE FROM sessions WHERE id = ?"), (session_id,))
        existed = bool(cur.rowcount)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return existed


# ------------------------------------------------------------------- reading


@attrs.frozen
class SessionMeta:
    """A ``sessions`` row, checked."""

    last_step: int
    concurrency_limit: int | None
    graph_hash: str
    config_hash: str
    forked_from: tuple[str, int] | None


_META = (
    "last_step, concurrency_limit, graph_hash, config_hash, forked_from, forked_step"
)
_META_COLUMNS = len(_META.split(", "))


def _origin(session_id: str, parent: Any, step: Any) -> tuple[str, int] | None:
    """The ``forked_from`` columns of a ``sessions`` row, checked."""
    if parent is None and step is None:
        return None
    if not isinstance(parent, str) or type(step) is not int or step < 0:
        raise CheckpointError(
            f"corrupt checkpoint store: session {session_id!r} names its origin as"
            f" {parent!r} at step {step!r}"
        )
    return (parent, step)


def _session_meta(cur: Cursor, d: Dialect, session_id: str) -> SessionMeta | None:
    cur.execute(
        d.q(f"SELECT {_META} FROM sessions WHERE id = ?"),
        (session_id,),
    )
    found = cur.fetchone()
    if found is None:
        return None
    return _check_meta(session_id, found)


def _check_meta(session_id: str, found: Sequence[Any]) -> SessionMeta:
    last, limit, graph_hash, config_hash, parent, forked_step = found
    last = _check_step(session_id, last)
    if limit is not None and (type(limit) is not int or limit < 1):
        raise CheckpointError(
            f"corrupt checkpoint store: session {session_id!r} has concurrency_limit"
            f" {limit!r}"
        )
    if not isinstance(graph_hash, str) or not isinstance(config_hash, str):
        raise CheckpointError(
            f"corrupt checkpoint store: session {session_id!r} has a hash that is"
            " not text"
        )
    origin = _origin(session_id, parent, forked_step)
    return SessionMeta(last, limit, graph_hash, config_hash, origin)


def _fetch_row(cur: Cursor, d: Dialect, session_id: str, step: int) -> StepRow:
    cur.execute(
        d.q(f"SELECT {_SELECT_ROW} FROM steps WHERE session_id = ? AND step = ?"),
        (session_id, step),
    )
    record = cur.fetchone()
    if record is None:
        raise CheckpointError(
            f"corrupt checkpoint store: session {session_id!r} says its last step is"
            f" {step}, but that step is not stored"
        )
    return row_from(record, session_id)


_CHAIN, _MESSAGES, _ERRORS = 0, 1, 2


class _Source(RowSource):
    """The rows a fold asks for, read in one statement before it starts.

    The wanted rows name their snapshot and history roots, so every chain and
    history range they need is known up front: one ``UNION ALL`` reads them all
    (one round trip to PostgreSQL however many ranges a page needs).
    """

    def __init__(
        self, cur: Cursor, d: Dialect, session_id: str, known: Sequence[StepRow]
    ) -> None:
        self.cur, self.d, self.session_id = cur, d, session_id
        # Rows already read in this snapshot, by step: not built twice.
        self.known = {row.step: row for row in known}
        self.ranges: dict[tuple[int, int], list[StepRow]] = {}

    def prefetch(self, wanted: Sequence[StepRow]) -> None:
        uptos: dict[tuple[int, int], int] = {}
        for row in wanted:
            for part, root in (
                (_CHAIN, row.snap_step),
                (_MESSAGES, row.mroot),
                (_ERRORS, row.eroot),
            ):
                key = (part, root)
                uptos[key] = max(uptos.get(key, row.step), row.step)
        branches = []
        for (part, root), upto in sorted(uptos.items()):
            # Validated ints (`row_from`), so written into the text directly.
            where = {
                _CHAIN: f"snap_step = {root}",
                _MESSAGES: f"mroot = {root} AND messages_json <> ''",
                _ERRORS: f"eroot = {root} AND errors_json <> ''",
            }[part]
            branches.append(
                f"SELECT {part}, {root}, {_SELECT_ROW} FROM steps"
                f" WHERE session_id = ? AND {where} AND step BETWEEN {root} AND {upto}"
            )
            self.ranges[(part, root)] = []
        if not branches:
            return
        sql = self.d.q(" UNION ALL ".join(branches) + " ORDER BY 1, 2, 4")
        self.cur.execute(sql, (self.session_id,) * len(branches))
        known = self.known
        for record in self.cur.fetchall():
            fields = record[2:]
            step_row = known.get(fields[1])
            if step_row is None:
                step_row = known[fields[1]] = row_from(fields, self.session_id)
            self.ranges[(record[0], record[1])].append(step_row)

    def chain(self, snap_step: int, upto: int) -> Sequence[StepRow]:
        return [r for r in self.ranges[(_CHAIN, snap_step)] if r.step <= upto]

    def history(
        self, channel: Literal["messages", "errors"], root: int, upto: int
    ) -> Sequence[StepRow]:
        part = _MESSAGES if channel == "messages" else _ERRORS
        return [r for r in self.ranges[(part, root)] if r.step <= upto]


def _decode(
    cur: Cursor,
    d: Dialect,
    session_id: str,
    rows: Sequence[StepRow],
    meta: SessionMeta | None = None,
) -> list[Stored]:
    if meta is None:
        meta = _session_meta(cur, d, session_id)
        assert meta is not None
    return decode_steps(
        session_id,
        rows,
        _Source(cur, d, session_id, rows),
        concurrency_limit=meta.concurrency_limit,
        graph_hash=meta.graph_hash,
        config_hash=meta.config_hash,
        forked_from=meta.forked_from,
    )


def _pending(
    cur: Cursor, d: Dialect, session_id: str, last_step: int
) -> Mapping[str, Any] | None:
    cur.execute(
        d.q(
            "SELECT base_step, created_at, value_json, digest FROM pending_writes"
            " WHERE session_id = ?"
        ),
        (session_id,),
    )
    record = cur.fetchone()
    return None if record is None else decode_pending(record, session_id, last_step)


def _with_pending(stored: Stored, pending: Mapping[str, Any] | None) -> Stored:
    if pending is None:
        return stored
    return attrs.evolve(
        stored, checkpoint=attrs.evolve(stored.checkpoint, pending=pending)
    )


@contextlib.contextmanager
def end_read(conn: Connection) -> Iterator[None]:
    """End the read transaction opened in the block: COMMIT when the block
    went well, ROLLBACK when it raised.

    A read-only transaction commits as cheaply as it rolls back, and psycopg
    forgets (and deallocates on the server) every statement a connection
    prepared at each ROLLBACK: ending reads with COMMIT keeps them prepared.
    """
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _begin_read(cur: Cursor, d: Dialect) -> None:
    for statement in d.begin_read:
        cur.execute(statement)


_LATEST = (
    "SELECT "
    + ", ".join(f"sessions.{c}" for c in _META.split(", "))
    + ", pending_writes.base_step, pending_writes.created_at,"
    " pending_writes.value_json, pending_writes.digest, "
    + ", ".join(f"steps.{c}" for c in COLUMNS)
    + " FROM sessions LEFT JOIN steps ON steps.session_id = sessions.id"
    " AND steps.step = sessions.last_step"
    " LEFT JOIN pending_writes ON pending_writes.session_id = sessions.id"
    " WHERE sessions.id = ?"
)


def load_latest(conn: Connection, d: Dialect, session_id: str) -> Stored | None:
    """The newest checkpoint of ``session_id`` (and its row facts), or ``None``.

    Two statements: the session's row with its latest row and pending record,
    then every row the fold needs.
    """
    cur = conn.cursor()
    with end_read(conn):
        _begin_read(cur, d)
        cur.execute(d.q(_LATEST), (session_id,))
        found = cur.fetchone()
        if found is None:
            return None
        m = _META_COLUMNS
        meta = _check_meta(session_id, found[:m])
        if found[m + 5] is None:
            raise CheckpointError(
                f"corrupt checkpoint store: session {session_id!r} says its last"
                f" step is {meta.last_step}, but that step is not stored"
            )
        row = row_from(found[m + 4 :], session_id)
        (stored,) = _decode(cur, d, session_id, [row], meta)
        pending = None
        if found[m] is not None:
            pending = decode_pending(found[m : m + 4], session_id, meta.last_step)
        return _with_pending(stored, pending)


def _text_hash(session_id: str, value: Any) -> str:
    if not isinstance(value, str):
        raise CheckpointError(
            f"corrupt checkpoint store: session {session_id!r} has a hash that is"
            " not text"
        )
    return value


def list_sessions(conn: Connection, d: Dialect) -> list[SessionSummary]:
    """Every session, most recently updated first."""
    cur = conn.cursor()
    with end_read(conn):
        _begin_read(cur, d)
        cur.execute(
            "SELECT id, last_step, created_at, updated_at, graph_hash, forked_from,"
            " forked_step FROM sessions ORDER BY updated_at DESC, id"
        )
        records = cur.fetchall()
    out = []
    for sid, last, created, updated, graph_hash, parent, forked_step in records:
        try:
            out.append(
                SessionSummary(
                    session_id=sid,
                    last_step=_check_step(sid, last),
                    created_at=parse_time(created),
                    updated_at=parse_time(updated),
                    graph_hash=_text_hash(sid, graph_hash),
                    forked_from=_origin(sid, parent, forked_step),
                )
            )
        except ValueError as exc:
            raise CheckpointError(
                f"corrupt checkpoint store: session {sid!r} has a malformed"
                f" timestamp: {exc}"
            ) from exc
    return out


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
    with end_read(conn):
        _begin_read(cur, d)
        meta = _session_meta(cur, d, session_id)
        if meta is None:
            return StepPage(checkpoints=(), total=0, offset=offset, limit=limit)
        cur.execute(d.q(f"SELECT COUNT(*) FROM steps WHERE {condition}"), params)
        total = int(cur.fetchone()[0])
        cur.execute(
            d.q(
                f"SELECT {_SELECT_ROW} FROM steps WHERE {condition}"
                " ORDER BY step DESC LIMIT ? OFFSET ?"
            ),
            [*params, limit, offset],
        )
        rows = [row_from(r, session_id) for r in cur.fetchall()]
        stored = _decode(cur, d, session_id, rows, meta) if rows else []
        if stored and stored[-1].checkpoint.step == meta.last_step:
            stored[-1] = _with_pending(
                stored[-1], _pending(cur, d, session_id, meta.last_step)
            )
    return StepPage(
        checkpoints=tuple(s.checkpoint for s in reversed(stored)),
        total=total,
        offset=offset,
        limit=limit,
    )


# --------------------------------------------------------------- the backends


class SQLCheckpointer(Checkpointer):
    """What the SQLite and PostgreSQL checkpointers share.

    Subclasses set `dialect` and implement `_write(fn)` (and may implement
    `_read(fn)`), which call ``fn`` with a connection in a worker thread and
    map driver errors to `CheckpointError`. Rows are encoded in the caller's
    thread; only the statements (and decoding) run in the worker thread.
    """

    dialect: Dialect

    def __init__(self) -> None:
        # Per session, what this process last stored or loaded as its latest
        # step: the base of the next row's delta (checked by the write).
        self._tips: dict[str, Stored] = {}

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        """Run a read-only ``fn`` that may be long (a replay; default: where
        writes run)."""
        return await self._write(fn)

    async def _read_latest(self, fn: Callable[[Connection], T]) -> T:
        """Run `load_latest`'s ``fn``: short and bounded (default: where writes
        run, so a run resuming never waits behind replays)."""
        return await self._write(fn)

    def _remember(self, written: Mapping[str, Stored]) -> None:
        for sid, stored in written.items():
            known = self._tips.get(sid)
            if known is None or known.checkpoint.step <= stored.checkpoint.step:
                self._tips[sid] = stored

    async def _store(self, checkpoints: Sequence[Checkpoint], checked: bool) -> None:
        if not checkpoints:
            await trio.lowlevel.checkpoint()
            return
        plans = plan(checkpoints, self._tips)
        written = await self._write(
            lambda conn: write(conn, self.dialect, plans, checked=checked)
        )
        self._remember(written)

    async def append(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store ``checkpoints``, each after its parent, in one transaction.

        See `Checkpointer.append`. A checkpoint; a started transaction
        completes even if cancelled.

        Raises:
            CheckpointConflict: a parent is not the session's latest step;
                nothing is stored.
        """
        await self._store(checkpoints, checked=True)

    async def save_many(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Store several checkpoints unconditionally, in one transaction.

        A checkpoint; a started transaction completes even if cancelled.
        """
        await self._store(checkpoints, checked=False)

    async def save_pending(
        self, session_id: str, base_step: int, pending: Mapping[str, Any] | None
    ) -> None:
        """Attach ``pending`` to the session's latest step (``None``: clear it).

        Raises:
            CheckpointConflict: ``base_step`` is not the session's latest step.
        """
        row = (
            None if pending is None else encode_pending(session_id, base_step, pending)
        )
        await self._write(
            lambda conn: save_pending(conn, self.dialect, session_id, base_step, row)
        )

    async def load_latest(self, session_id: str) -> Checkpoint | None:
        """The newest checkpoint of ``session_id`` with its pending record, or ``None``.

        Reads a bounded number of rows however long the session is.
        """
        found = await self._read_latest(
            lambda conn: load_latest(conn, self.dialect, session_id)
        )
        if found is None:
            return None
        self._remember({session_id: found})
        return found.checkpoint

    async def list_sessions(self) -> list[SessionSummary]:
        """Every session, most recently updated first."""
        return await self._read(lambda conn: list_sessions(conn, self.dialect))

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
        return await self._read(
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
        """Delete the session, its steps and its pending record; whether it existed."""
        self._tips.pop(session_id, None)
        return await self._write(
            lambda conn: delete_session(conn, self.dialect, session_id)
        )
