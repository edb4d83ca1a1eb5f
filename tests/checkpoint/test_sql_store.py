"""What only the SQL stores do: deltas, integrity, schema management."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
from weavegraph.checkpoint import sql
from weavegraph.lowlevel import Checkpoint, apply_barrier


def conversation(session: str, length: int, steps: int) -> list[Checkpoint]:
    """``steps`` checkpoints of a session whose history starts ``length`` long."""
    state = VersionedState.with_messages(
        Message.user(f"earlier message {i} " + "x" * 40) for i in range(length)
    )
    out = [Checkpoint(session_id=session, step=0, state=state, frontier=["n"])]
    for i in range(1, steps + 1):
        state = apply_barrier(
            state,
            ["n"],
            [NodePartial(messages=[Message.assistant(f"reply {i}")], extra={"i": i})],
        ).state
        out.append(
            Checkpoint(
                session_id=session,
                step=i,
                state=state,
                frontier=["n"],
                versions_seen={"n": (i, i)},
                ran_nodes=["n"],
            )
        )
    return out


def step_bytes(path: Path, session: str) -> list[int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT length(state_json) + length(seen_json) + length(frontier_json)"
            " FROM steps WHERE session_id = ? ORDER BY step",
            (session,),
        ).fetchall()
    return [r[0] for r in rows]


async def test_rows_hold_deltas_so_storage_is_linear(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteCheckpointer(path) as store:
        for cp in conversation("short", 10, 20):
            await store.save(cp)
        for cp in conversation("long", 1000, 20):
            await store.save(cp)
        short, long = step_bytes(path, "short"), step_bytes(path, "long")
        # The first row holds the history; every later row only the step's delta,
        # the same size whatever the history length.
        assert long[0] > 50 * short[0]
        assert short[1:] == long[1:]
        latest = await store.load_latest("long")
        assert latest is not None and len(latest.state.messages) == 1020


async def test_custom_reducer_rewrite_is_stored_in_full(tmp_path: Path) -> None:
    base = conversation("s", 3, 1)
    rewritten = VersionedState(
        messages=[Message.system("summary")], versions=base[-1].state.versions
    )
    cp = Checkpoint(session_id="s", step=2, state=rewritten, frontier=["n"])
    async with SQLiteCheckpointer(tmp_path / "r.db") as store:
        for item in [*base, cp]:
            await store.save(item)
        latest = await store.load_latest("s")
        assert latest is not None and latest.state == rewritten
    async with SQLiteCheckpointer(tmp_path / "r.db") as reader:
        again = await reader.load_latest("s")
        assert again is not None and again.state == rewritten


async def test_hand_edited_row_is_reported_with_session_and_step(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteCheckpointer(path) as store:
        for cp in conversation("s1", 2, 4):
            await store.save(cp)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE steps SET state_json = replace(state_json, 'reply 3', 'forged')"
            " WHERE session_id = 's1' AND step = 3"
        )
    async with SQLiteCheckpointer(path) as store:
        with pytest.raises(CheckpointError, match=r"session 's1' at step 3"):
            await store.load_latest("s1")


async def test_corrupt_json_is_reported_not_defaulted(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteCheckpointer(path) as store:
        for cp in conversation("s1", 2, 2):
            await store.save(cp)
    with sqlite3.connect(path) as conn:
        # Rewrite both the content and its digest, as a careless tool would.
        conn.execute(
            "UPDATE steps SET state_json = '{\"messages\": 5}', digest = ''"
            " WHERE session_id = 's1' AND step = 2"
        )
    async with SQLiteCheckpointer(path) as store:
        with pytest.raises(CheckpointError, match=r"session 's1' at step 2"):
            await store.load_latest("s1")


async def test_missing_base_step_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with SQLiteCheckpointer(path) as store:
        for cp in conversation("s1", 2, 3):
            await store.save(cp)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM steps WHERE session_id = 's1' AND step = 1")
    async with SQLiteCheckpointer(path) as store:
        with pytest.raises(
            CheckpointError, match=r"relative to step 1, which is missing"
        ):
            await store.load_latest("s1")


async def test_a_base_step_cannot_be_replaced_by_different_content(
    tmp_path: Path,
) -> None:
    steps = conversation("s", 1, 3)
    async with SQLiteCheckpointer(tmp_path / "r.db") as store:
        for cp in steps:
            await store.save(cp)
        other = Checkpoint(
            session_id="s", step=1, state=VersionedState.with_user_message("other")
        )
        with pytest.raises(CheckpointError, match="cannot be replaced"):
            await store.save(other)
        latest = await store.load_latest("s")
        assert latest is not None and latest.state == steps[-1].state


async def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    before = path.read_bytes()
    store = SQLiteCheckpointer(path)
    with pytest.raises(CheckpointError, match="not a weavegraph checkpoint store"):
        await store.list_sessions()
    await store.aclose()
    assert path.read_bytes() == before
    assert not (tmp_path / "app.db-wal").exists()


async def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes, not a database\n" * 20)
    before = path.read_bytes()
    store = SQLiteCheckpointer(path)
    with pytest.raises(CheckpointError, match=r"notes\.txt"):
        await store.load_latest("x")
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
    async with SQLiteCheckpointer(path) as store:
        assert [s.session_id for s in await store.list_sessions()] == ["legacy"]
        await store.save(conversation("new", 1, 1)[-1])
    with sqlite3.connect(path) as conn:
        version = conn.execute(
            "SELECT value FROM weavegraph_meta WHERE key = 'schema_version'"
        ).fetchone()[0]
        columns = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
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
    store = SQLiteCheckpointer(path)
    with pytest.raises(CheckpointError, match="schema version 99"):
        await store.load_latest("s")
    await store.aclose()


async def test_postgres_refuses_foreign_tables(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, owner TEXT)")
    store = PostgresCheckpointer(postgres_dsn)
    with pytest.raises(CheckpointError, match="not a weavegraph checkpoint store"):
        await store.list_sessions()
    await store.aclose()
    with psycopg.connect(postgres_dsn) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'sessions' AND table_schema = current_schema()"
            )
        ]
    assert sorted(columns) == ["id", "owner"]


async def test_postgres_rows_are_deltas_too(postgres_dsn: str) -> None:
    async with PostgresCheckpointer(postgres_dsn) as store:
        for cp in conversation("long", 500, 5):
            await store.save(cp)
        latest = await store.load_latest("long")
        assert latest is not None and len(latest.state.messages) == 505
    with psycopg.connect(postgres_dsn) as conn:
        sizes = [
            r[0]
            for r in conn.execute(
                "SELECT length(state_json) FROM steps ORDER BY step"
            ).fetchall()
        ]
    assert sizes[0] > 20_000
    assert max(sizes[1:]) < 400


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteCheckpointer(tmp_path / "x.db")
    await store.aclose()
    with pytest.raises(CheckpointError, match="closed"):
        await store.list_sessions()
    await trio.lowlevel.checkpoint()
