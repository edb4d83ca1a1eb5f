"""One contract, every checkpointer: memory, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from weavegraph import (
    CheckpointConflict,
    Checkpointer,
    CheckpointError,
    ErrorEvent,
    InMemoryCheckpointer,
    InvalidSessionIdError,
    Message,
    NodePartial,
    PostgresCheckpointer,
    SQLiteCheckpointer,
    StateError,
    VersionedState,
)
from weavegraph.lowlevel import Checkpoint, apply_barrier

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], Checkpointer]:
    """A factory of stores over the same data (a new object, connections each)."""
    if request.param == "memory":
        shared = InMemoryCheckpointer()
        return lambda: shared
    if request.param == "sqlite":
        return lambda: SQLiteCheckpointer(tmp_path / "runs.db")
    dsn = request.getfixturevalue("postgres_dsn")
    return lambda: PostgresCheckpointer(dsn)


@pytest.fixture
async def store(make_store: Callable[[], Checkpointer]) -> AsyncIterator[Any]:
    cp = make_store()
    try:
        yield cp
    finally:
        await cp.aclose()


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
                parent_step=i - 1,
            )
        )
    return out


def then(cp: Checkpoint, **extra: object) -> Checkpoint:
    """The checkpoint after ``cp``: one more step, ``extra`` written."""
    return Checkpoint(
        session_id=cp.session_id,
        step=cp.step + 1,
        state=grow(cp.state, cp.step + 1, **extra),
        frontier=["n"],
        parent_step=cp.step,
    )


def same(a: Checkpoint, b: Checkpoint) -> None:
    assert (a.session_id, a.step) == (b.session_id, b.step)
    assert a.state == b.state
    assert a.state.versions == b.state.versions
    assert a.frontier == b.frontier
    assert dict(a.versions_seen) == dict(b.versions_seen)
    assert dict(a.join_progress) == dict(b.join_progress)
    assert a.parent_step == b.parent_step
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


# ------------------------------------------------------------ the base class


async def test_every_store_is_a_checkpointer_with_a_backend_name(
    store: Any, make_store: Callable[[], Checkpointer]
) -> None:
    assert isinstance(store, Checkpointer)
    assert store.backend in {"memory", "sqlite", "postgres"}
    assert (
        store.backend
        == {
            InMemoryCheckpointer: "memory",
            SQLiteCheckpointer: "sqlite",
            PostgresCheckpointer: "postgres",
        }[type(store)]
    )
    async with make_store() as opened:
        assert isinstance(opened, type(store))
        await opened.append(history("ctx", 0))
    async with make_store() as again:
        latest = await again.load_latest("ctx")
        assert latest is not None and latest.step == 0


def test_a_store_must_implement_the_whole_protocol() -> None:
    class Partial(Checkpointer):
        async def save_many(self, checkpoints: Any) -> None:
            pass

    with pytest.raises(TypeError, match="abstract"):
        Partial()  # type: ignore[abstract]


# ------------------------------------------------------- the guarded write path


async def test_append_stores_a_chain_with_its_parents(store: Any) -> None:
    saved = history("s", 5)
    await store.append(saved[:3])
    await store.append(saved[3:])
    latest = await store.load_latest("s")
    assert latest is not None
    same(latest, saved[-1])
    assert latest.parent_step == 4
    page = await store.query_steps("s")
    assert [c.parent_step for c in page.checkpoints] == [4, 3, 2, 1, 0, None]


async def test_a_stale_writer_is_refused_and_stores_nothing(store: Any) -> None:
    base = history("s", 3)
    await store.append(base)
    winner = then(base[-1], who="winner")
    loser = then(base[-1], who="loser")
    await store.append([winner, then(winner)])
    with pytest.raises(CheckpointConflict, match="expected last step 3, found 5") as e:
        await store.append([loser, then(loser)])
    assert (e.value.session_id, e.value.expected, e.value.found) == ("s", 3, 5)
    latest = await store.load_latest("s")
    assert latest is not None and latest.step == 5
    assert latest.state.extra["who"] == "winner"
    page = await store.query_steps("s", min_step=4)
    assert [c.state.extra["who"] for c in page.checkpoints] == ["winner", "winner"]


async def test_a_new_session_step_zero_conflicts_once_the_session_exists(
    store: Any,
) -> None:
    first = history("s", 0)[0]
    await store.append([first])
    again = attrs.evolve(first, state=VersionedState.with_user_message("other"))
    with pytest.raises(CheckpointConflict, match="expected last step None, found 0"):
        await store.append([again])
    with pytest.raises(CheckpointConflict, match="found None"):
        await store.append([then(history("unknown", 0)[0])])
    latest = await store.load_latest("s")
    assert latest is not None and latest.state == first.state


async def test_a_batch_is_all_or_nothing(store: Any) -> None:
    base = history("s", 2)
    await store.append(base)
    await store.append(history("other", 1))
    good = then(base[-1])
    # The second checkpoint does not follow the first: the whole batch fails.
    gap = attrs.evolve(then(good), step=good.step + 2, parent_step=good.step + 1)
    with pytest.raises(CheckpointConflict):
        await store.append([good, gap])
    # Across sessions too: "other" is stale, so "s" is not stored either.
    stale_other = attrs.evolve(then(history("other", 1)[-1]), parent_step=0, step=1)
    with pytest.raises(CheckpointConflict, match="'other'"):
        await store.append([good, stale_other])
    latest = await store.load_latest("s")
    assert latest is not None and latest.step == 2
    assert (await store.query_steps("s")).total == 3


async def test_a_step_must_come_after_its_parent(store: Any) -> None:
    base = history("s", 2)
    await store.append(base)
    backwards = attrs.evolve(then(base[-1]), step=2)
    with pytest.raises(CheckpointError, match="a step follows its parent"):
        await store.append([backwards])


async def test_save_with_concurrency_check_is_append_with_a_parent(store: Any) -> None:
    steps = history("s", 2)
    for cp in steps:
        await store.save_with_concurrency_check(
            attrs.evolve(cp, parent_step=None), cp.parent_step
        )
    latest = await store.load_latest("s")
    assert latest is not None and latest.parent_step == 1


async def test_writes_refuse_invalid_session_ids(store: Any) -> None:
    cp = Checkpoint(session_id="a/b", step=0, state=VersionedState())
    with pytest.raises(InvalidSessionIdError):
        await store.append([cp])
    with pytest.raises(InvalidSessionIdError):
        await store.save(cp)
    assert await store.list_sessions() == []


async def test_a_value_rewritten_to_an_equal_one_of_another_type_is_stored(
    store: Any,
) -> None:
    # 1 == True == 1.0: a delta that compared values would drop these writes.
    cp = Checkpoint(
        session_id="s",
        step=0,
        state=VersionedState(extra={"flag": True, "n": 1, "x": 2.0, "l": [1]}),
    )
    await store.append([cp])
    for step, extra in enumerate(
        [{"flag": 1, "n": 1.0, "x": 2, "l": [True]}, {"flag": False}], start=1
    ):
        state = apply_barrier(cp.state, ["n"], [NodePartial(extra=extra)]).state
        cp = Checkpoint(session_id="s", step=step, state=state, parent_step=step - 1)
        await store.append([cp])
    latest = await store.load_latest("s")
    assert latest is not None
    got = dict(latest.state.extra)
    assert got == {"flag": False, "n": 1.0, "x": 2, "l": [True]}
    assert [type(v) for v in got.values()] == [bool, float, int, list]
    assert type(got["l"][0]) is bool
    page = await store.query_steps("s", min_step=1, max_step=1)
    assert type(page.checkpoints[0].state.extra["flag"]) is int


# ------------------------------------------------------------ pending records

PENDING: dict[str, Any] = {
    "partials": {
        "a": {"extra": {"facts": [1, 2.5, "x", None, True, {"deep": [[], {}]}]}},
        "b": {"messages": [{"role": "assistant", "content": "done ✓"}]},
    },
    "error": {"node": "c", "message": "boom", "attempt": 3},
    "big": 2**62,
    "zero": -0.0,
}


def exactly(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(exactly(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(exactly, a, b))
    if isinstance(a, _dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


async def test_a_pending_record_attaches_to_the_latest_step(
    store: Any, make_store: Callable[[], Checkpointer]
) -> None:
    await store.append(history("s", 2))
    assert (await store.load_latest("s")).pending is None
    await store.save_pending("s", 2, PENDING)
    async with make_store() as reader:
        latest = await reader.load_latest("s")
    assert latest is not None and latest.step == 2
    assert latest.pending is not None and exactly(dict(latest.pending), PENDING)
    page = await store.query_steps("s")
    assert page.checkpoints[0].pending == latest.pending
    assert [c.pending for c in page.checkpoints[1:]] == [None, None]
    await store.save_pending("s", 2, {"only": "this"})
    assert dict((await store.load_latest("s")).pending) == {"only": "this"}
    await store.save_pending("s", 2, None)
    assert (await store.load_latest("s")).pending is None


async def test_pending_values_of_the_whole_domain_round_trip(store: Any) -> None:
    when = _dt.datetime(2026, 5, 1, 12, 30, tzinfo=_dt.timezone(_dt.timedelta(hours=2)))
    record = {
        "tuple": (1, (2.0, "x")),
        "set": {1, 2},
        "frozen": frozenset({"a"}),
        "bytes": b"\x00x",
        "when": when,
        "amount": Decimal("1.10"),
        "id": uuid.UUID(int=7),
        "looks_tagged": {"$wg": "not a tag"},
    }
    await store.append(history("s", 1))
    await store.save_pending("s", 1, record)
    pending = (await store.load_latest("s")).pending
    assert pending is not None and pending.keys() == record.keys()
    for key, value in record.items():
        assert exactly(pending[key], value), key
    with pytest.raises(StateError, match=r"pending\["):
        await store.save_pending("s", 1, {"bad": object()})


async def test_a_pending_record_needs_the_latest_step(store: Any) -> None:
    await store.append(history("s", 2))
    with pytest.raises(CheckpointConflict, match="expected last step 1, found 2"):
        await store.save_pending("s", 1, {"x": 1})
    with pytest.raises(CheckpointConflict, match="found None"):
        await store.save_pending("nope", 0, {"x": 1})
    assert (await store.load_latest("s")).pending is None
    with pytest.raises(CheckpointError, match="mapping"):
        await store.save_pending("s", 2, ["not", "a", "mapping"])  # type: ignore[arg-type]


async def test_a_following_step_clears_the_pending_record(store: Any) -> None:
    steps = history("s", 3)
    await store.append(steps[:2])
    await store.save_pending("s", 1, {"x": 1})
    await store.save(steps[0])  # out of order: the latest step stays, and its record
    assert dict((await store.load_latest("s")).pending) == {"x": 1}
    await store.append([steps[2]])
    latest = await store.load_latest("s")
    assert latest is not None and latest.step == 2 and latest.pending is None
    await store.save_pending("s", 2, {"y": 2})
    await store.save(steps[3])  # the unguarded path clears it too
    assert (await store.load_latest("s")).pending is None


async def test_a_pending_record_is_written_with_its_step(store: Any) -> None:
    steps = history("s", 2)
    await store.append(steps[:2])
    failed = attrs.evolve(steps[2], pending=PENDING)
    await store.append([failed])
    latest = await store.load_latest("s")
    assert latest is not None and latest.step == 2
    assert exactly(dict(latest.pending), PENDING)
    # A conflicting batch stores neither its steps nor its record.
    stale = attrs.evolve(steps[2], pending={"stale": True})
    with pytest.raises(CheckpointConflict):
        await store.append([stale])
    assert exactly(dict((await store.load_latest("s")).pending), PENDING)


async def test_deleting_a_session_deletes_its_pending_record(store: Any) -> None:
    await store.append(history("s", 1))
    await store.save_pending("s", 1, {"x": 1})
    assert await store.delete_session("s") is True
    await store.append(history("s", 0))
    assert (await store.load_latest("s")).pending is None


async def test_a_fork_keeps_its_origin(store: Any) -> None:
    first, *rest = history("fork", 3)
    await store.append([attrs.evolve(first, forked_from=("base", 7))])
    # Later steps do not move the origin, whatever they name.
    await store.append([attrs.evolve(rest[0], forked_from=None), *rest[1:]])
    await store.append(history("plain", 1))
    latest = await store.load_latest("fork")
    assert latest is not None and latest.forked_from == ("base", 7)
    page = await store.query_steps("fork")
    assert {c.forked_from for c in page.checkpoints} == {("base", 7)}
    summaries = {s.session_id: s.forked_from for s in await store.list_sessions()}
    assert summaries == {"fork": ("base", 7), "plain": None}
    plain = await store.load_latest("plain")
    assert plain is not None and plain.forked_from is None


@pytest.mark.parametrize("origin", [("s",), ("s", -1), (1, 2), ("s", True), "s@1"])
def test_a_malformed_origin_is_refused(origin: Any) -> None:
    with pytest.raises(CheckpointError, match="forked_from"):
        Checkpoint(session_id="s", step=0, state=VersionedState(), forked_from=origin)
