"""One contract, every checkpointer: memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from weavegraph import (
    CheckpointConflict,
    CheckpointError,
    ErrorEvent,
    InMemoryCheckpointer,
    Message,
    NodePartial,
    PostgresCheckpointer,
    SQLiteCheckpointer,
    VersionedState,
)
from weavegraph.lowlevel import Checkpoint, apply_barrier

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[object]:
    if request.param == "memory":
        cp: object = InMemoryCheckpointer()
    elif request.param == "sqlite":
        cp = SQLiteCheckpointer(tmp_path / "runs.db")
    else:
        cp = PostgresCheckpointer(request.getfixturevalue("postgres_dsn"))
    try:
        yield cp
    finally:
        await cp.aclose()  # type: ignore[attr-defined]


def grow(state: VersionedState, i: int, **extra: object) -> VersionedState:
    partial = NodePartial(
        messages=[Message.assistant(f"m{i}")], extra={"i": i, **extra}
    )
    return apply_barrier(state, ["n"], [partial]).state


def history(
    session: str, steps: int, *, start: VersionedState | None = None
) -> list[Checkpoint]:
    """Checkpoints 0..steps of a session whose node appends one message a step."""
    state = start or VersionedState.with_user_message("hi")
    out = [Checkpoint(session_id=session, step=0, state=state, frontier=["n"])]
    for i in range(1, steps + 1):
        state = grow(state, i)
        out.append(
            Checkpoint(
                session_id=session,
                step=i,
                state=state,
                frontier=["n"] if i < steps else ["__end__"],
                versions_seen={"n": (i, i)},
                join_progress={"j": {"a"}} if i % 2 else {},
                ran_nodes=["n", "n2"] if i % 2 else ["n"],
                skipped_nodes=["x"] if i == 2 else [],
                updated_channels=["messages", "extra"],
                concurrency_limit=4,
            )
        )
    return out


def same(a: Checkpoint, b: Checkpoint) -> None:
    assert (a.session_id, a.step) == (b.session_id, b.step)
    assert a.state == b.state
    assert a.state.versions == b.state.versions
    assert a.frontier == b.frontier
    assert dict(a.versions_seen) == dict(b.versions_seen)
    assert dict(a.join_progress) == dict(b.join_progress)
    assert (a.ran_nodes, a.skipped_nodes, a.updated_channels) == (
        b.ran_nodes,
        b.skipped_nodes,
        b.updated_channels,
    )


async def test_round_trip_of_every_step(store) -> None:
    saved = history("s1", 6)
    for cp in saved:
        await store.save(cp)
    latest = await store.load_latest("s1")
    assert latest is not None
    same(latest, saved[-1])
    page = await store.query_steps("s1", limit=100)
    assert [c.step for c in page.checkpoints] == list(range(6, -1, -1))
    for got, want in zip(page.checkpoints, reversed(saved), strict=True):
        same(got, want)


async def test_unknown_session(store) -> None:
    assert await store.load_latest("nope") is None
    page = await store.query_steps("nope")
    assert page.total == 0 and page.checkpoints == ()
    assert await store.delete_session("nope") is False


async def test_errors_and_custom_roles_survive(store) -> None:
    state = VersionedState(
        messages=[Message("critic", "meh")],
        extra={"nested": {"a": [1, 2, {"b": None}]}, "flag": True},
        errors=[ErrorEvent.node("x", 1, "boom", tags=["node"], context={"k": 1})],
    )
    await store.save(Checkpoint(session_id="e", step=3, state=state, frontier=["x"]))
    loaded = await store.load_latest("e")
    assert loaded is not None
    assert loaded.state == state
    assert loaded.state.errors[0].tags == ("node",)
    assert loaded.state.messages[0].role == "critic"


async def test_list_sessions_most_recent_first(store) -> None:
    for sid in ["a", "b", "c"]:
        await store.save(history(sid, 1)[-1])
        await trio.sleep(0.002)
    await store.save(history("a", 2)[-1])
    summaries = await store.list_sessions()
    assert [s.session_id for s in summaries] == ["a", "c", "b"]
    assert summaries[0].last_step == 2


async def test_query_paging_range_and_exact_node_filters(store) -> None:
    for cp in history("s", 5):
        await store.save(cp)
    page = await store.query_steps("s", limit=2, offset=0)
    assert (page.total, [c.step for c in page.checkpoints], page.has_next) == (
        6,
        [5, 4],
        True,
    )
    last = await store.query_steps("s", limit=2, offset=4)
    assert ([c.step for c in last.checkpoints], last.has_next) == ([1, 0], False)
    ranged = await store.query_steps("s", min_step=2, max_step=4)
    assert [c.step for c in ranged.checkpoints] == [4, 3, 2]
    ran = await store.query_steps("s", ran_node="n2")
    assert [c.step for c in ran.checkpoints] == [5, 3, 1]
    prefix = await store.query_steps("s", ran_node="n2x")  # exact, not a substring
    assert prefix.total == 0
    assert (await store.query_steps("s", ran_node="n")).total == 5
    skipped = await store.query_steps("s", skipped_node="x")
    assert [c.step for c in skipped.checkpoints] == [2]
    with pytest.raises(CheckpointError, match="limit"):
        await store.query_steps("s", limit=0)


async def test_latest_never_moves_back(store) -> None:
    steps = history("s", 5)
    await store.save(steps[5])
    await store.save(steps[2])
    latest = await store.load_latest("s")
    assert latest is not None and latest.step == 5
    same(latest, steps[5])


async def test_saving_twice_is_idempotent(store) -> None:
    steps = history("s", 2)
    for cp in steps:
        await store.save(cp)
    await store.save(steps[2])
    latest = await store.load_latest("s")
    assert latest is not None
    same(latest, steps[2])
    assert (await store.query_steps("s")).total == 3


async def test_concurrency_check(store) -> None:
    steps = history("s", 3)
    await store.save_with_concurrency_check(steps[0], None)
    with pytest.raises(CheckpointConflict):
        await store.save_with_concurrency_check(steps[0], None)
    await store.save_with_concurrency_check(steps[1], 0)
    await store.save_with_concurrency_check(steps[2], 1)
    with pytest.raises(CheckpointConflict, match="expected last step 1, found 2"):
        await store.save_with_concurrency_check(steps[3], 1)


async def test_exactly_one_of_two_concurrent_writers_wins(store) -> None:
    base = history("s", 1)
    for cp in base:
        await store.save(cp)
    results: list[str] = []

    async def writer(marker: str) -> None:
        state = grow(base[-1].state, 2, marker=marker)
        cp = Checkpoint(session_id="s", step=2, state=state, frontier=["n"])
        try:
            await store.save_with_concurrency_check(cp, 1)
            results.append(marker)
        except CheckpointConflict:
            results.append("lost")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "left")
        nursery.start_soon(writer, "right")
    winners = [r for r in results if r != "lost"]
    assert len(winners) == 1 and results.count("lost") == 1
    latest = await store.load_latest("s")
    assert latest is not None and latest.step == 2
    assert latest.state.extra["marker"] == winners[0]


async def test_concurrent_new_sessions_only_one_creates(store) -> None:
    outcomes: list[bool] = []

    async def create(i: int) -> None:
        cp = Checkpoint(
            session_id="fresh", step=0, state=VersionedState.with_user_message(str(i))
        )
        try:
            await store.save_with_concurrency_check(cp, None)
            outcomes.append(True)
        except CheckpointConflict:
            outcomes.append(False)

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(create, i)
    assert sorted(outcomes) == [False, False, False, True]


async def test_delete_session(store) -> None:
    for cp in history("gone", 2):
        await store.save(cp)
    await store.save(history("kept", 1)[-1])
    assert await store.delete_session("gone") is True
    assert await store.load_latest("gone") is None
    assert [s.session_id for s in await store.list_sessions()] == ["kept"]


async def test_many_sessions_saved_concurrently(store) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(store.save, history(f"s{i}", 1)[-1])
    assert len(await store.list_sessions()) == 30
