"""What only the SQL stores do: deltas, snapshots, schema management, readers."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio

from weavegraph import (
    CheckpointError,
    Message,
    NodePartial,
    PostgresCheckpointer,
    SQLiteCheckpointer,
    VersionedState,
)
from weavegraph.checkpoint import _rows, sql
from weavegraph.lowlevel import Checkpoint, apply_barrier

SQL_BACKENDS = ["sqlite", "postgres"]


def conversation(
    session: str, length: int, steps: int, *, nodes: int = 1
) -> list[Checkpoint]:
    """``steps`` checkpoints of a session whose history starts ``length`` long.

    Each step appends a reply and writes ``extra["i"]``; the graph has
    ``nodes`` nodes, one of which runs per step (its gating entry changes).
    """
    state = VersionedState.with_messages(
        Message.user(f"earlier message {i} " + "x" * 40) for i in range(length)
    )
    out = [Checkpoint(session_id=session, step=0, state=state, frontier=["n"])]
    seen: dict[str, tuple[int, int]] = {}
    for i in range(1, steps + 1):
        state = apply_barrier(
            state,
            ["n"],
            [NodePartial(messages=[Message.assistant(f"reply {i}")], extra={"i": i})],
        ).state
        seen[f"n{i % nodes}"] = (i, i)
        out.append(
            Checkpoint(
                session_id=session,
                step=i,
                state=state,
                frontier=["n"],
                versions_seen=seen,
                ran_nodes=["n"],
                parent_step=i - 1,
            )
        )
    return out


def chunks(items: list[Checkpoint], size: int) -> Iterator[Sequence[Checkpoint]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def counter(session: str, steps: int) -> list[Checkpoint]:
    """A session whose state has a constant size: one counter in ``extra``."""
    state = VersionedState()
    out = [Checkpoint(session_id=session, step=0, state=state, frontier=["tick"])]
    for i in range(1, steps + 1):
        state = apply_barrier(state, ["tick"], [NodePartial(extra={"count": i})]).state
        out.append(
            Checkpoint(
                session_id=session,
                step=i,
                state=state,
                frontier=["tick"],
                versions_seen={"tick": state.versions.gate_key()},
                ran_nodes=["tick"],
                parent_step=i - 1,
            )
        )
    return out


# ---------------------------------------------------- raw access to the files


class Database:
    """Hand access to a store's database, as an outside tool would have."""

    def __init__(self, backend: str, target: str) -> None:
        self.backend, self.target = backend, target

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.backend == "sqlite":
            with sqlite3.connect(self.target) as conn:
                rows = conn.execute(statement, params).fetchall()
            conn.close()
            return rows
        with psycopg.connect(self.target) as pg:
            cur = pg.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def row(self, session: str, step: int) -> _rows.StepRow:
        (record,) = self.execute(
            f"SELECT {', '.join(_rows.COLUMNS)} FROM steps"
            " WHERE session_id = ? AND step = ?",
            (session, step),
        )
        return _rows.StepRow._make(record)

    def forge(self, session: str, step: int, **changes: Any) -> None:
        """Rewrite a row's columns and recompute its digest, as a forger would."""
        row = self.row(session, step)._replace(**changes)
        row = row._replace(digest=row.content_digest())
        names = [n for n in _rows.COLUMNS if n not in ("session_id", "step")]
        self.execute(
            f"UPDATE steps SET {', '.join(f'{n} = ?' for n in names)}"
            " WHERE session_id = ? AND step = ?",
            (*(getattr(row, n) for n in names), session, step),
        )


@pytest.fixture(params=SQL_BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """(open a store, raw database access) for SQLite and PostgreSQL."""
    if request.param == "sqlite":
        path = str(tmp_path / "runs.db")
        yield (lambda: SQLiteCheckpointer(path)), Database("sqlite", path)
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        yield (lambda: PostgresCheckpointer(dsn)), Database("postgres", dsn)


def step_bytes(db: Database, session: str) -> list[int]:
    """Stored bytes of each step's row (every column that holds text)."""
    columns = " + ".join(f"length({c})" for c in _rows.COLUMNS[7:])
    rows = db.execute(
        f"SELECT {columns} FROM steps WHERE session_id = ? ORDER BY step", (session,)
    )
    return [r[0] for r in rows]


# ----------------------------------------------------------- rows and deltas


async def test_rows_hold_deltas_so_storage_is_linear(backend: Any) -> None:
    open_store, db = backend
    async with open_store() as store:
        await store.append(conversation("short", 10, 200))
        await store.append(conversation("long", 1000, 200))
        short, long = step_bytes(db, "short"), step_bytes(db, "long")
        # The first row holds the history; every later row only the step's delta
        # (and every SNAPSHOT_EVERY rows the extra and gating maps, not the
        # history): the same size whatever the history length.
        assert long[0] > 50 * short[0]
        # (Only the digits of the message count differ.)
        assert all(abs(a - b) <= 2 for a, b in zip(short[1:], long[1:], strict=True))
        latest = await store.load_latest("long")
        assert latest is not None and len(latest.state.messages) == 1200


async def test_bytes_per_step_barely_depend_on_the_graph_size(backend: Any) -> None:
    open_store, db = backend
    async with open_store() as store:
        await store.append(conversation("narrow", 10, 256, nodes=10))
        await store.append(conversation("wide", 10, 256, nodes=100))
    narrow, wide = step_bytes(db, "narrow"), step_bytes(db, "wide")
    # A delta row of the wide graph is as large as the narrow one's (one gating
    # entry changes per node that ran); snapshots carry the whole map, and come
    # less often when it is larger.
    per_step = sum(wide[1:]) / sum(narrow[1:])
    assert per_step < 1.2  # measured: 214 and 225 bytes
    whole = set(snapshots(db, "wide"))
    deltas = [b for i, b in enumerate(wide) if i not in whole]
    assert max(deltas) < 2 * min(deltas)


def snapshots(db: Database, session: str) -> list[int]:
    return [
        r[0]
        for r in db.execute(
            "SELECT step FROM steps WHERE session_id = ? AND snap_step = step"
            " ORDER BY step",
            (session,),
        )
    ]


async def test_snapshots_come_when_deltas_outweigh_them(backend: Any) -> None:
    open_store, db = backend
    big = {f"doc{i}": "x" * 200 for i in range(20)}
    start = Checkpoint(session_id="big", step=0, state=VersionedState(extra=big))
    steps = [start]
    for i in range(1, 201):
        state = apply_barrier(
            steps[-1].state, ["n"], [NodePartial(extra={"count": i})]
        ).state
        steps.append(
            Checkpoint(session_id="big", step=i, state=state, parent_step=i - 1)
        )
    async with open_store() as store:
        await store.append(counter("small", 200))
        await store.append(steps)
        for sid, want in (("small", 200), ("big", 200)):
            latest = await store.load_latest(sid)
            assert latest is not None and latest.step == want
    # A small state costs about as much whole as a delta: a snapshot every few
    # rows.
    small = snapshots(db, "small")
    assert max(b - a for a, b in itertools.pairwise(small)) <= 2 + _rows.SNAPSHOT_WEIGHT
    # A large one is stored whole every SNAPSHOT_EVERY rows, no more often.
    assert snapshots(db, "big") == list(range(0, 201, _rows.SNAPSHOT_EVERY))


async def test_custom_reducer_rewrite_is_stored_in_full(backend: Any) -> None:
    open_store, db = backend
    base = conversation("s", 3, 1)
    rewritten = VersionedState(
        messages=[Message.system("summary")], versions=base[-1].state.versions
    )
    cp = Checkpoint(
        session_id="s", step=2, state=rewritten, frontier=["n"], parent_step=1
    )
    async with open_store() as store:
        await store.append([*base, cp])
        await store.append([attrs.evolve(cp, step=3, parent_step=2)])
        latest = await store.load_latest("s")
        assert latest is not None and latest.state == rewritten
    assert db.row("s", 2).mroot == 2 and db.row("s", 3).mroot == 2
    async with open_store() as reader:
        again = await reader.load_latest("s")
        assert again is not None and again.state == rewritten
        page = await reader.query_steps("s")
        assert [len(c.state.messages) for c in page.checkpoints] == [1, 1, 4, 3]


async def test_a_base_step_cannot_be_replaced_by_different_content(
    backend: Any,
) -> None:
    open_store, _ = backend
    steps = conversation("s", 1, 3)
    async with open_store() as store:
        await store.append(steps)
        other = Checkpoint(
            session_id="s", step=1, state=VersionedState.with_user_message("other")
        )
        with pytest.raises(CheckpointError, match="cannot be replaced"):
            await store.save(other)
        await store.save(steps[1])  # the same content again is fine
        latest = await store.load_latest("s")
        assert latest is not None and latest.state == steps[-1].state


async def test_a_writer_that_fell_behind_writes_a_whole_row(backend: Any) -> None:
    open_store, db = backend
    steps = conversation("s", 2, 4)
    async with open_store() as first, open_store() as second:
        await first.append(steps[:3])
        assert (await second.load_latest("s")).step == 2
        await first.save(steps[3])
        # ``second`` believes step 2 is the latest: its delta would be wrong.
        await second.save(steps[4])
    assert db.row("s", 4).base_step is None
    async with open_store() as store:
        latest = await store.load_latest("s")
        assert latest is not None and latest.state == steps[4].state


# --------------------------------------------------------- bounded row reads


class Counting:
    """A DB-API connection that counts the rows its cursors return."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.rows = conn, 0

    def cursor(self) -> Any:
        outer, inner = self, self.conn.cursor()

        class Cursor:
            def execute(self, *args: Any) -> Any:
                return inner.execute(*args)

            def fetchall(self) -> list[Any]:
                rows = inner.fetchall()
                outer.rows += len(rows)
                return list(rows)

            def fetchone(self) -> Any:
                row = inner.fetchone()
                outer.rows += row is not None
                return row

            @property
            def rowcount(self) -> int:
                return int(inner.rowcount)

        return Cursor()

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()


def raw_connection(db: Database) -> Any:
    if db.backend == "sqlite":
        return sqlite3.connect(db.target, isolation_level=None)
    return psycopg.connect(db.target)


async def test_load_latest_reads_a_bounded_number_of_rows(backend: Any) -> None:
    open_store, db = backend
    async with open_store() as store:
        await store.append(counter("short", 10))
        for chunk in chunks(counter("long", 5000), 1000):
            await store.append(chunk)
    dialect = sql.SQLITE if db.backend == "sqlite" else sql.POSTGRES
    conn = raw_connection(db)
    try:
        reads = {}
        for sid, steps in [("short", 10), ("long", 5000)]:
            counting = Counting(conn)
            stored = sql.load_latest(counting, dialect, sid)
            assert stored is not None
            assert stored.checkpoint.step == steps
            assert stored.checkpoint.state.extra["count"] == steps
            reads[sid] = counting.rows
    finally:
        conn.close()
    # The session row, the step's chain since its snapshot, the list roots.
    assert reads["short"] <= 10 + 5
    assert reads["long"] <= _rows.SNAPSHOT_EVERY + 5


async def test_a_page_reads_its_chains_and_the_history_once(backend: Any) -> None:
    open_store, db = backend
    steps = conversation("s", 5, 1000)
    async with open_store() as store:
        await store.append(steps)
        page = await store.query_steps("s", limit=100, offset=450)
    assert [c.step for c in page.checkpoints] == list(range(550, 450, -1))
    for got in page.checkpoints:
        want = steps[got.step]
        assert got.state == want.state and got.versions_seen == want.versions_seen
    dialect = sql.SQLITE if db.backend == "sqlite" else sql.POSTGRES
    conn = raw_connection(db)
    try:
        counting = Counting(conn)
        sql.query_steps(
            counting,
            dialect,
            "s",
            limit=100,
            offset=450,
            min_step=None,
            max_step=None,
            ran_node=None,
            skipped_node=None,
        )
    finally:
        conn.close()
    # The page, the rows back to its first snapshot, and every row that added
    # a message up to the page's newest step (the history, read once).
    assert counting.rows <= 100 + (100 + _rows.SNAPSHOT_EVERY) + 551 + 5


# ------------------------------------------------------ integrity and forgery


async def stored_session(open_store: Callable[[], Any], steps: int = 6) -> None:
    async with open_store() as store:
        await store.append(conversation("s1", 2, steps))


async def expect_corrupt(
    open_store: Callable[[], Any], pattern: str, *, listing: bool = False
) -> None:
    async with open_store() as store:
        with pytest.raises(CheckpointError, match=pattern):
            if listing:
                await store.list_sessions()
            else:
                await store.load_latest("s1")


async def test_a_hand_edited_row_is_reported(backend: Any) -> None:
    open_store, db = backend
    await stored_session(open_store)
    db.execute(
        "UPDATE steps SET messages_json = replace(messages_json, 'reply 6', 'forged')"
        " WHERE session_id = 's1' AND step = 6"
    )
    await expect_corrupt(open_store, r"session 's1' at step 6: .*digest")


async def test_an_emptied_digest_is_reported(backend: Any) -> None:
    open_store, db = backend
    await stored_session(open_store)
    db.execute("UPDATE steps SET digest = '' WHERE session_id = 's1' AND step = 6")
    await expect_corrupt(open_store, r"session 's1' at step 6: .*digest")


async def test_a_repointed_base_step_is_reported(backend: Any) -> None:
    open_store, db = backend
    await stored_session(open_store)
    db.execute("UPDATE steps SET base_step = 4 WHERE session_id = 's1' AND step = 6")
    await expect_corrupt(open_store, r"session 's1' at step 6: .*digest")
    # Even with a recomputed digest the chain does not hold.
    db.forge("s1", 6, base_step=4)
    await expect_corrupt(open_store, r"session 's1'.* step 6 .*relative to step 5")


async def test_forged_versions_and_counts_are_reported(backend: Any) -> None:
    open_store, db = backend
    await stored_session(open_store)
    state = _rows.loads(db.row("s1", 6).state_json)
    db.forge("s1", 6, state_json=_rows.dumps({**state, "versions": [-3, 2, 1]}))
    await expect_corrupt(
        open_store, r"session 's1' at step 6: the messages version must be an int"
    )
    db.forge("s1", 6, state_json=_rows.dumps({**state, "counts": [99, 0, 1]}))
    await expect_corrupt(open_store, r"session 's1' at step 6: it holds 8 messages")


async def test_a_forged_history_root_is_reported(backend: Any) -> None:
    open_store, db = backend
    await stored_session(open_store)
    db.forge("s1", 6, mroot=3)
    await expect_corrupt(open_store, r"session 's1'.*step 6.*step 3")


async def test_a_deleted_middle_row_is_reported(backend: Any) -> None:
    open_store, db = backend
    await stored_session(open_store)
    db.execute("DELETE FROM steps WHERE session_id = 's1' AND step = 5")
    await expect_corrupt(open_store, r"session 's1'.* step 6 .*relative to step")


async def test_a_forged_timestamp_is_reported(backend: Any) -> None:
    open_store, db = backend
    await stored_session(open_store)
    db.forge("s1", 6, created_at="yesterday")
    await expect_corrupt(open_store, r"session 's1' at step 6: .*yesterday")
    db.forge("s1", 6, created_at="2026-01-01T00:00:00")
    await expect_corrupt(open_store, r"session 's1' at step 6: .*no UTC offset")


async def test_a_malformed_session_row_is_reported(backend: Any) -> None:
    open_store, db = backend
    await stored_session(open_store)
    db.execute("UPDATE sessions SET created_at = 'garbage' WHERE id = 's1'")
    await expect_corrupt(open_store, r"session 's1' .*timestamp", listing=True)
    db.execute(
        "UPDATE sessions SET created_at = updated_at, updated_at = '' WHERE id = 's1'"
    )
    await expect_corrupt(open_store, r"session 's1' .*timestamp", listing=True)
    db.execute("UPDATE sessions SET last_step = 9 WHERE id = 's1'")
    await expect_corrupt(open_store, r"session 's1' says its last step is 9")
    db.execute("UPDATE sessions SET last_step = -1 WHERE id = 's1'")
    await expect_corrupt(open_store, r"session 's1' has last_step -1")


async def test_a_text_last_step_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await stored_session(lambda: SQLiteCheckpointer(path))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sessions SET last_step = 'abc' WHERE id = 's1'")
    conn.close()
    store = SQLiteCheckpointer(path)
    with pytest.raises(CheckpointError, match="session 's1' has last_step 'abc'"):
        await store.list_sessions()
    with pytest.raises(CheckpointError, match="session 's1' has last_step 'abc'"):
        await store.load_latest("s1")
    with pytest.raises(CheckpointError, match="session 's1' has last_step 'abc'"):
        await store.append([conversation("s1", 2, 7)[-1]])
    await store.aclose()


async def test_a_text_step_column_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await stored_session(lambda: SQLiteCheckpointer(path))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE steps SET snap_step = 'x' WHERE step = 6")
    conn.close()
    await expect_corrupt(
        lambda: SQLiteCheckpointer(path), r"session 's1' at step 6: snap_step is 'x'"
    )


async def test_a_forged_pending_record_is_reported(backend: Any) -> None:
    open_store, db = backend
    await stored_session(open_store)
    async with open_store() as store:
        await store.save_pending("s1", 6, {"partials": {"a": 1}})
    db.execute('UPDATE pending_writes SET value_json = \'{"partials": {"a": 2}}\'')
    await expect_corrupt(open_store, r"pending record for session 's1' at step 6")
    db.execute("UPDATE pending_writes SET base_step = 5")
    await expect_corrupt(open_store, r"pending record for session 's1': attached to")


async def test_corrupt_json_with_a_recomputed_digest_is_reported(
    backend: Any,
) -> None:
    open_store, db = backend
    await stored_session(open_store)
    db.forge("s1", 6, messages_json='{"append": 5}')
    await expect_corrupt(open_store, r"session 's1' at step 6: messages must hold")
    db.forge("s1", 6, messages_json="", seen_json='{"set": {"n0": [1, "x"]}}')
    await expect_corrupt(open_store, r"session 's1' at step 6: the gating entry")


# --------------------------------------------------------- foreign databases


def untouched(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before
    for suffix in ("-wal", "-journal", "-shm"):
        assert not Path(f"{path}{suffix}").exists()


async def refused(path: Path, pattern: str) -> None:
    store = SQLiteCheckpointer(path)
    with pytest.raises(CheckpointError, match=pattern):
        await store.list_sessions()
    with pytest.raises(CheckpointError, match=pattern):
        await store.append(conversation("s", 1, 0))
    await store.aclose()


@pytest.mark.parametrize(
    "schema",
    [
        ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"],
        ["CREATE VIEW report AS SELECT 1 AS answer"],
        ["CREATE TABLE sessions (id TEXT PRIMARY KEY, owner TEXT)"],
    ],
    ids=["table", "view-only", "same-table-name"],
)
async def test_a_foreign_sqlite_database_is_refused_untouched(
    tmp_path: Path, schema: list[str]
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        for statement in schema:
            conn.execute(statement)
    conn.close()
    before = path.read_bytes()
    await refused(path, "not a weavegraph checkpoint store")
    untouched(path, before)


@pytest.mark.parametrize(
    ("pragma", "pattern"),
    [("user_version = 7", "user_version to 7"), ("application_id = 42", "0x2a")],
)
async def test_an_empty_database_another_application_claimed_is_refused(
    tmp_path: Path, pragma: str, pattern: str
) -> None:
    path = tmp_path / "claimed.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA {pragma}")
    conn.close()
    before = path.read_bytes()
    assert before  # SQLite wrote the header
    await refused(path, pattern)
    untouched(path, before)


async def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "touched.db"
    path.write_bytes(b"")
    async with SQLiteCheckpointer(path) as store:
        await store.append(conversation("s", 1, 1))
    conn = sqlite3.connect(path)
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    conn.close()
    assert app_id == sql.SQLITE_APPLICATION_ID
    async with SQLiteCheckpointer(path) as store:
        assert (await store.load_latest("s")).step == 1


async def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes, not a database\n" * 20)
    before = path.read_bytes()
    store = SQLiteCheckpointer(path)
    with pytest.raises(CheckpointError, match=r"notes\.txt"):
        await store.load_latest("x")
    await store.aclose()
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, owner TEXT)",
        "CREATE VIEW steps AS SELECT 1 AS step",
        "CREATE TABLE pending_writes (id TEXT)",
    ],
    ids=["table", "view", "pending"],
)
async def test_postgres_refuses_foreign_tables_untouched(
    postgres_dsn: str, statement: str
) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(statement)
        before = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY 1, 2"
        ).fetchall()
    store = PostgresCheckpointer(postgres_dsn)
    with pytest.raises(CheckpointError, match="not a weavegraph checkpoint store"):
        await store.list_sessions()
    await store.aclose()
    with psycopg.connect(postgres_dsn) as conn:
        after = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY 1, 2"
        ).fetchall()
    assert after == before


async def test_postgres_reads_keep_the_connections_prepared_statements(
    postgres_dsn: str,
) -> None:
    """Reads end with COMMIT: at a ROLLBACK psycopg deallocates every
    statement the connection prepared, and each write after a read would be
    parsed and planned again."""
    steps = counter("prepared", 6)
    async with PostgresCheckpointer(postgres_dsn, pool_size=1) as store:

        def prepared() -> set[str]:
            with store._pool.connection() as conn:
                rows = conn.execute("SELECT statement FROM pg_prepared_statements")
                found = {str(r[0]) for r in rows.fetchall()}
                conn.commit()
                return found

        for chunk in chunks(steps[:4], 2):  # a write's statements, twice
            await store.append(chunk)
        written = await trio.to_thread.run_sync(prepared)
        assert any(s.startswith("INSERT INTO steps") for s in written), written
        assert (await store.load_latest("prepared")).step == 3  # type: ignore[union-attr]
        assert (await store.query_steps("prepared")).total == 4
        assert [s.session_id for s in await store.list_sessions()] == ["prepared"]
        await store.append(steps[4:])
        assert written <= await trio.to_thread.run_sync(prepared)
        assert (await store.load_latest("prepared")).step == 6  # type: ignore[union-attr]


# ------------------------------------------------------------------ schemas


def legacy_rows(session: str) -> list[tuple[Any, ...]]:
    """Rows as schema 2 stored them (the whole delta in state_json)."""

    def row(
        step: int, base: int | None, state: dict[str, Any], seen: dict[str, Any]
    ) -> tuple[Any, ...]:
        texts = [
            _rows.dumps(state),
            _rows.dumps(["n"]),
            _rows.dumps(seen),
            _rows.dumps({"j": ["a"]} if step % 2 else {}),
        ]
        digest = format(
            zlib.crc32("\x00".join([texts[0], texts[2], texts[1], texts[3]]).encode()),
            "08x",
        )
        return (
            session,
            step,
            base,
            f"2026-01-0{step + 1}T00:00:00+00:00",
            texts[0],
            texts[1],
            texts[2],
            texts[3],
            _rows.dumps(["n"] if step else []),
            "[]",
            "[]",
            digest,
        )

    def versions(m: int, x: int) -> dict[str, int]:
        return {"messages": m, "extra": x, "errors": 1}

    hi = {"role": "user", "content": "hi"}
    return [
        row(
            0,
            None,
            {
                "messages": {"reset": [hi]},
                "extra": {"reset": {}},
                "errors": {"reset": []},
                "versions": versions(1, 1),
            },
            {"reset": {}},
        ),
        row(
            1,
            0,
            {
                "messages": {"append": [{"role": "assistant", "content": "one"}]},
                "extra": {"set": {"i": 1, "keep": [1, {"a": None}]}},
                "errors": {"append": []},
                "versions": versions(2, 2),
            },
            {"set": {"n": [2, 2]}},
        ),
        row(
            2,
            1,
            {
                "messages": {"append": [{"role": "critic", "content": "two"}]},
                "extra": {"set": {"i": 2}},
                "errors": {"append": []},
                "versions": versions(3, 3),
            },
            {"set": {"n": [3, 3]}},
        ),
        # Schema 2 could base a row on any earlier one.
        row(
            3,
            1,
            {
                "messages": {"append": [{"role": "assistant", "content": "three"}]},
                "extra": {"set": {"i": 3}, "delete": ["keep"]},
                "errors": {"append": []},
                "versions": versions(3, 4),
            },
            {"set": {"n": [3, 4]}},
        ),
    ]


def make_v2_store(path: Path, rows: list[tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(path)
    sql.migrate(conn, sql.SQLITE, target=2)
    conn.execute(
        "INSERT INTO sessions (id, created_at, updated_at, last_step,"
        " concurrency_limit, graph_hash) VALUES ('old', '2026-01-01T00:00:00+00:00',"
        " '2026-01-04T00:00:00+00:00', 3, 2, 'g')"
    )
    conn.executemany(f"INSERT INTO steps VALUES ({', '.join('?' * 12)})", rows)
    conn.commit()
    conn.close()


async def test_a_schema_2_store_is_upgraded_with_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_v2_store(path, legacy_rows("old"))
    async with SQLiteCheckpointer(path) as store:
        latest = await store.load_latest("old")
        assert latest is not None and latest.step == 3
        assert [m.content for m in latest.state.messages] == ["hi", "one", "three"]
        assert dict(latest.state.extra) == {"i": 3}
        assert latest.state.versions.extra == 4
        assert dict(latest.versions_seen) == {"n": (3, 4)}
        assert (latest.concurrency_limit, latest.graph_hash) == (2, "g")
        page = await store.query_steps("old")
        assert [c.step for c in page.checkpoints] == [3, 2, 1, 0]
        two = page.checkpoints[1]
        assert [m.role for m in two.state.messages] == ["user", "assistant", "critic"]
        assert dict(two.state.extra) == {"i": 2, "keep": [1, {"a": None}]}
        assert dict(two.join_progress) == {}
        assert page.checkpoints[2].join_progress == {"j": frozenset({"a"})}
        assert [c.parent_step for c in page.checkpoints] == [2, 1, 0, None]
        assert page.checkpoints[0].created_at.day == 4
        await store.append([attrs.evolve(latest, step=4, parent_step=3)])
    conn = sqlite3.connect(path)
    version = conn.execute(
        "SELECT value FROM weavegraph_meta WHERE key = 'schema_version'"
    ).fetchone()[0]
    conn.close()
    assert version == str(sql.SCHEMA_VERSION)


async def test_a_damaged_schema_2_row_stops_the_upgrade_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    rows = legacy_rows("old")
    rows[2] = (*rows[2][:11], "")  # its digest emptied by hand
    make_v2_store(path, rows)
    before = path.read_bytes()
    store = SQLiteCheckpointer(path)
    with pytest.raises(CheckpointError, match=r"session 'old' at step 2 is corrupt"):
        await store.load_latest("old")
    await store.aclose()
    assert path.read_bytes() == before


async def test_an_older_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        sql.migrate(conn, sql.SQLITE, target=1)
        conn.execute(
            "INSERT INTO sessions (id, created_at, updated_at, last_step)"
            " VALUES ('legacy', '2026-01-01T00:00:00+00:00',"
            " '2026-01-01T00:00:00+00:00', 0)"
        )
        columns = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
        assert "graph_hash" not in columns
    conn.close()
    async with SQLiteCheckpointer(path) as store:
        assert [s.session_id for s in await store.list_sessions()] == ["legacy"]
        await store.append(conversation("new", 1, 1))
    with sqlite3.connect(path) as conn:
        version = conn.execute(
            "SELECT value FROM weavegraph_meta WHERE key = 'schema_version'"
        ).fetchone()[0]
        columns = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
    conn.close()
    assert version == str(sql.SCHEMA_VERSION)
    assert "graph_hash" in columns


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    async with SQLiteCheckpointer(path) as store:
        await store.save(conversation("s", 1, 0)[0])
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE weavegraph_meta SET value = '99' WHERE key = 'schema_version'"
        )
    conn.close()
    store = SQLiteCheckpointer(path)
    with pytest.raises(CheckpointError, match="schema version 99"):
        await store.load_latest("s")
    await store.aclose()


async def test_postgres_schema_2_store_is_upgraded(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        sql.migrate(conn, sql.POSTGRES, target=2)
        conn.execute(
            "INSERT INTO sessions (id, created_at, updated_at, last_step)"
            " VALUES ('old', '2026-01-01T00:00:00+00:00',"
            " '2026-01-04T00:00:00+00:00', 3)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO steps VALUES ({', '.join(['%s'] * 12)})",
                legacy_rows("old"),
            )
        conn.commit()
    async with PostgresCheckpointer(postgres_dsn) as store:
        latest = await store.load_latest("old")
        assert latest is not None
        assert [m.content for m in latest.state.messages] == ["hi", "one", "three"]


# ------------------------------------------------------------------ readers


async def test_writes_do_not_wait_for_busy_readers(backend: Any) -> None:
    """Replays holding every read connection do not hold up a run's writes."""
    open_store, _ = backend
    release = threading.Event()
    async with open_store() as store:
        await store.append(conversation("long", 1, 10))
        readers = 1 if isinstance(store, SQLiteCheckpointer) else 3

        def block(conn: Any) -> None:
            cur = conn.cursor()
            for statement in store.dialect.begin_read:
                cur.execute(statement)
            cur.execute("SELECT count(*) FROM steps")
            cur.fetchall()
            release.wait(10)
            conn.rollback()

        async with trio.open_nursery() as nursery:
            for _ in range(readers + 2):
                nursery.start_soon(store._read, block)
            await trio.sleep(0.05)
            with trio.fail_after(5):
                for chunk in chunks(counter("run", 20), 5):
                    await store.append(chunk)
                latest = await store.load_latest("run")
                assert latest is not None and latest.step == 20
            release.set()
        page = await store.query_steps("run", limit=1)
        assert page.checkpoints[0].step == 20  # the readers see committed writes


async def test_a_write_waiting_for_a_lock_sees_what_the_holder_committed(
    postgres_dsn: str,
) -> None:
    """A pending record committed while an append waited is cleared by it."""
    async with PostgresCheckpointer(postgres_dsn) as store:
        steps = conversation("s", 1, 2)
        await store.append(steps[:2])
        holder = psycopg.connect(postgres_dsn)
        try:
            holder.execute("SELECT 1 FROM sessions WHERE id = 's' FOR UPDATE")
            row = _rows.encode_pending("s", 1, {"left": "over"})
            holder.execute(
                "INSERT INTO pending_writes VALUES (%s, %s, %s, %s, %s)",
                (row.session_id, row.base_step, row.created_at, row.value_json,
                 row.digest),
            )  # fmt: skip
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.append, steps[2:])
                await trio.sleep(0.3)  # the append now waits for the row lock
                holder.commit()
        finally:
            holder.close()
        latest = await store.load_latest("s")
        assert latest is not None and latest.step == 2 and latest.pending is None


async def test_a_replay_is_cheap(backend: Any) -> None:
    open_store, _ = backend
    async with open_store() as store:
        steps = conversation("long", 1, 1000)
        await store.append(steps)
        start = trio.current_time()
        page = await store.query_steps("long", limit=1000)
        elapsed = trio.current_time() - start
    assert [c.step for c in page.checkpoints] == list(range(1000, 0, -1))
    assert all(c.state == steps[c.step].state for c in page.checkpoints[::97])
    # It took 1.6-1.9 s when every step rebuilt its whole history.
    assert elapsed < 1.0


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteCheckpointer(tmp_path / "x.db")
    await store.aclose()
    with pytest.raises(CheckpointError, match="closed"):
        await store.list_sessions()
    await trio.lowlevel.checkpoint()


async def test_memory_database_uses_one_connection() -> None:
    async with SQLiteCheckpointer(":memory:") as store:
        await store.append(conversation("s", 1, 3))
        assert (await store.query_steps("s")).total == 4
        assert [s.session_id for s in await store.list_sessions()] == ["s"]


async def test_a_corrupt_origin_is_refused_on_read(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with SQLiteCheckpointer(path) as store:
        await store.append(conversation("o", 1, 1))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sessions SET forked_from = 'x', forked_step = -2")
    conn.close()
    async with SQLiteCheckpointer(path) as store:
        with pytest.raises(CheckpointError, match="names its origin"):
            await store.load_latest("o")
        with pytest.raises(CheckpointError, match="names its origin"):
            await store.list_sessions()
