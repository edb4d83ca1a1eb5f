"""Random session histories come back from every store exactly, step by step.

Each example builds a session whose steps append or rewrite messages, set and
delete ``extra`` keys (with values that compare equal across types: 1, True,
1.0, (1,), [1]), record errors and update the gating memory; stores it in
random batches through two writers taking turns (one of them stale at times,
which must conflict and store nothing), with a snapshot every few rows; then
reads every step back through `query_steps` and `load_latest`, from a fresh
store object too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from weavegraph import (
    CheckpointConflict,
    ErrorEvent,
    InMemoryCheckpointer,
    Message,
    PostgresCheckpointer,
    SQLiteCheckpointer,
    VersionedState,
)
from weavegraph._core.state import History, Versions
from weavegraph.checkpoint import _rows
from weavegraph.lowlevel import Checkpoint

LOOKALIKES = st.sampled_from([1, True, 1.0, 0, False, (1,), [1], "1", None, {1}])
values = st.one_of(
    LOOKALIKES,
    st.integers(-5, 5),
    st.text(max_size=4),
    st.lists(LOOKALIKES, max_size=3),
    st.dictionaries(st.sampled_from("ab"), LOOKALIKES, max_size=2),
)
KEYS = st.sampled_from(["k1", "k2", "k3", "k4"])
NODES = st.sampled_from(["a", "b", "c"])

step_changes = st.fixed_dictionaries(
    {
        "append": st.lists(st.text(max_size=5), max_size=2),
        "rewrite": st.booleans(),
        "set": st.dictionaries(KEYS, values, max_size=2),
        "delete": st.lists(KEYS, max_size=1),
        "error": st.booleans(),
        "ran": st.lists(NODES, max_size=2, unique=True),
        "frontier": st.lists(NODES, max_size=2),
        "joins": st.dictionaries(NODES, st.frozensets(NODES, max_size=2), max_size=1),
    }
)


def build(session: str, changes: list[dict[str, Any]]) -> list[Checkpoint]:
    state = VersionedState.with_user_message("start")
    out = [Checkpoint(session_id=session, step=0, state=state, frontier=["a"])]
    seen: dict[str, tuple[int, int]] = {}
    for step, change in enumerate(changes, start=1):
        v = state.versions
        messages = state.messages
        if change["rewrite"]:
            messages = History([Message.system(f"summary {step}"), *map(
                Message.assistant, change["append"])])  # fmt: skip
        elif change["append"]:
            messages = messages.extend([Message.assistant(t) for t in change["append"]])
        extra = dict(state.extra)
        extra.update(change["set"])
        for key in change["delete"]:
            extra.pop(key, None)
        errors = state.errors
        if change["error"]:
            errors = errors.append(
                ErrorEvent.node("a", step, "boom", context={"at": (step, {step})})
            )
        versions = Versions(
            messages=v.messages + (messages is not state.messages),
            extra=v.extra + bool(change["set"] or change["delete"]),
            errors=v.errors + change["error"],
        )
        state = VersionedState._trusted(messages, extra, errors, versions)
        for node in change["ran"]:
            seen[node] = versions.gate_key()
        out.append(
            Checkpoint(
                session_id=session,
                step=step,
                state=state,
                frontier=change["frontier"],
                versions_seen=seen,
                join_progress=change["joins"],
                ran_nodes=change["ran"],
                parent_step=step - 1,
            )
        )
    return out


def exact(a: Any, b: Any) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            exact(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            exact(x, y)
    else:
        assert a == b


def same(got: Checkpoint, want: Checkpoint) -> None:
    assert got.step == want.step
    assert got.state.messages == want.state.messages
    assert got.state.errors == want.state.errors
    assert got.state.versions == want.state.versions
    exact(dict(got.state.extra), dict(want.state.extra))
    assert got.frontier == want.frontier
    assert dict(got.versions_seen) == dict(want.versions_seen)
    assert dict(got.join_progress) == dict(want.join_progress)
    assert got.ran_nodes == want.ran_nodes
    assert got.parent_step == want.parent_step


async def scenario(
    make: Callable[[], Any], changes: list[dict[str, Any]], cuts: list[int]
) -> None:
    session = f"p-{uuid.uuid4().hex[:12]}"
    steps = build(session, changes)
    writers = [make(), make()]
    try:
        start, turn = 0, 0
        for cut in [*sorted({c for c in cuts if c < len(steps)}), len(steps)]:
            if cut <= start:
                continue
            batch = steps[start:cut]
            writer = writers[turn % 2]
            if start and turn % 3 == 2:
                # A stale writer: it tries to store the previous step again.
                parent = start - 2 if start >= 2 else None
                stale = attrs.evolve(steps[start - 1], parent_step=parent)
                with pytest.raises(CheckpointConflict):
                    await writer.append([stale, *batch])
            await writer.append(batch)
            if turn % 4 == 3 and start:
                await writer.save(steps[start - 1])  # idempotent re-save
            start, turn = cut, turn + 1
        fresh = make()
        for store in (*writers, fresh):
            latest = await store.load_latest(session)
            assert latest is not None
            same(latest, steps[-1])
            page = await store.query_steps(session, limit=1000)
            assert [c.step for c in page.checkpoints] == list(range(len(steps)))[::-1]
            for got in page.checkpoints:
                same(got, steps[got.step])
            middle = await store.query_steps(session, limit=3, offset=len(steps) // 3)
            for got in middle.checkpoints:
                same(got, steps[got.step])
        await fresh.aclose()
    finally:
        for writer in writers:
            await writer.aclose()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
def test_random_histories_come_back_exactly(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_rows, "SNAPSHOT_EVERY", 3)
    if backend == "memory":
        shared = InMemoryCheckpointer()
        make: Callable[[], Any] = lambda: shared  # noqa: E731
    elif backend == "sqlite":
        make = lambda: SQLiteCheckpointer(tmp_path / "p.db")  # noqa: E731
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        make = lambda: PostgresCheckpointer(dsn)  # noqa: E731

    @settings(max_examples=40 if backend == "postgres" else 60)
    @given(
        st.lists(step_changes, min_size=1, max_size=14),
        st.lists(st.integers(1, 14), max_size=5),
    )
    def check(changes: list[dict[str, Any]], cuts: list[int]) -> None:
        trio.run(scenario, make, changes, cuts)

    check()
