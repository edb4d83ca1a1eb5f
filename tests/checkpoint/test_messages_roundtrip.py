"""Messages with tool calls, ids, names and metadata survive every store exactly.

The SQL row codec (``checkpoint/_rows.py``) writes messages through the one
converter (``encode_message`` / ``decode_message``), so what these tests pin is
the converter's form going through real rows: saved, then loaded by a new store
object over the same data.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from weavegraph import (
    END,
    START,
    Checkpointer,
    GraphBuilder,
    InMemoryCheckpointer,
    Message,
    NodeContext,
    NodePartial,
    PostgresCheckpointer,
    RuntimeConfig,
    SQLiteCheckpointer,
    StateSnapshot,
    VersionedState,
    WorkflowError,
    open_runner,
)
from weavegraph._core.state import ToolCall
from weavegraph.lowlevel import Checkpoint, apply_barrier

BACKENDS = ["memory", "sqlite", "postgres"]

WHEN = dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=-3)))


@pytest.fixture(params=BACKENDS)
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], Checkpointer]:
    """A factory of stores over the same data (a new object each call)."""
    if request.param == "memory":
        shared = InMemoryCheckpointer()
        return lambda: shared
    if request.param == "sqlite":
        return lambda: SQLiteCheckpointer(tmp_path / "runs.db")
    dsn = request.getfixturevalue("postgres_dsn")
    return lambda: PostgresCheckpointer(dsn)


def agent_turn(step: int) -> list[Message]:
    """The messages one model/tool round trip of an agent appends."""
    calls = [
        ToolCall(f"call_{step}_a", "search", {"query": f"q{step}", "limit": 3}),
        ToolCall(
            f"call_{step}_b",
            "schedule",
            {"at": WHEN, "slots": (1, 2), "tags": {"x"}, "$wg": "not a tag"},
        ),
    ]
    return [
        Message(
            "assistant",
            "",
            tool_calls=calls,
            metadata={"model": "m-1", "usage": {"tokens": step}, "at": WHEN},
        ),
        Message.tool_result(calls[0], f"found {step}"),
        Message.tool_result(calls[1], "booked"),
        Message("assistant", f"done {step}", name="planner"),
    ]


def chain(session: str, steps: int) -> list[Checkpoint]:
    state = VersionedState.with_user_message("plan my day")
    out = [Checkpoint(session_id=session, step=0, state=state, frontier=["model"])]
    for step in range(1, steps + 1):
        partial = NodePartial(messages=agent_turn(step))
        state = apply_barrier(state, ["model"], [partial]).state
        out.append(
            Checkpoint(
                session_id=session,
                step=step,
                state=state,
                frontier=["model"],
                parent_step=step - 1,
            )
        )
    return out


def assert_exact(got: VersionedState, want: VersionedState) -> None:
    assert list(got.messages) == list(want.messages)
    for mine, theirs in zip(got.messages, want.messages, strict=True):
        assert type(mine.role) is type(theirs.role)
        for a, b in zip(mine.tool_calls, theirs.tool_calls, strict=True):
            assert list(a.arguments) == list(b.arguments)  # key order kept
            for key in a.arguments:
                assert type(a.arguments[key]) is type(b.arguments[key])
        assert dict(mine.metadata) == dict(theirs.metadata)
        for key in mine.metadata:
            assert type(mine.metadata[key]) is type(theirs.metadata[key])
    at = [m for m in got.messages if "at" in m.metadata]
    assert at and all(m.metadata["at"].utcoffset() == WHEN.utcoffset() for m in at)


async def test_tool_call_messages_survive_save_and_load(
    make_store: Callable[[], Checkpointer],
) -> None:
    saved = chain("agent", 4)
    async with make_store() as store:
        await store.append(saved[:2])
        for checkpoint in saved[2:]:
            await store.save(checkpoint)
    async with make_store() as store:
        latest = await store.load_latest("agent")
        page = await store.query_steps("agent", limit=10)
    assert latest is not None and latest.step == 4
    assert_exact(latest.state, saved[-1].state)
    assert [c.step for c in page.checkpoints] == [4, 3, 2, 1, 0]
    for got, want in zip(page.checkpoints, reversed(saved), strict=True):
        assert got.state.messages == want.state.messages
    reloaded = latest.state.messages[1].tool_calls[1]
    assert type(reloaded.arguments["slots"]) is tuple
    assert type(reloaded.arguments["tags"]) is set
    assert reloaded.arguments["$wg"] == "not a tag"


async def test_plain_messages_are_stored_as_before(tmp_path: Path) -> None:
    # The row holds each message in the converter's form: a plain message is
    # still {"role", "content"}, a tool-calling one carries its fields.
    path = tmp_path / "runs.db"
    async with SQLiteCheckpointer(path) as store:
        await store.append(chain("agent", 1))
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT messages_json FROM steps WHERE session_id = 'agent' ORDER BY step"
        ).fetchall()
    docs = [json.loads(text) for (text,) in rows if text]
    stored = [m for doc in docs for part in doc.values() for m in part]
    assert stored[0] == {"role": "user", "content": "plan my day"}
    assert stored[1]["tool_calls"][0] == {
        "id": "call_1_a",
        "name": "search",
        "arguments": {"query": "q1", "limit": 3},
    }
    assert stored[1]["metadata"]["usage"] == {"tokens": 1}
    assert stored[2]["tool_call_id"] == "call_1_a"
    assert stored[2]["name"] == "search"
    assert stored[4] == {"role": "assistant", "content": "done 1", "name": "planner"}


def agent(store: Checkpointer, *, fail_lookup: bool = False) -> Any:
    """START → model → tools → model → END, like a tool-calling agent."""

    async def model(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        last = snapshot.last_message
        if last is not None and last.role == "tool":
            return NodePartial(messages=[Message.assistant("it is sunny")])
        call = ToolCall("call_1", "weather", {"city": "Oslo", "when": WHEN})
        return NodePartial(
            messages=[Message.assistant(tool_calls=[call])],
            extra={"turn": 1},
        )

    async def tools(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        last = snapshot.last_message
        assert last is not None
        return NodePartial(
            messages=[Message.tool_result(c, "sunny") for c in last.tool_calls]
        )

    async def lookup(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        if fail_lookup:
            raise RuntimeError("lookup is down")
        return NodePartial(extra={"looked_up": True})

    def route(snapshot: StateSnapshot) -> str:
        last = snapshot.last_message
        return "tools" if last is not None and last.tool_calls else END

    builder = (
        GraphBuilder()
        .add_node("model", model)
        .add_node("tools", tools)
        .add_node("lookup", lookup)
        .add_edge(START, "model")
        .add_edge(START, "lookup")
        .add_edge("lookup", END)
        .add_conditional_edge("model", route, path_map=["tools", END])
        .add_edge("tools", "model")
    )
    return builder.compile(RuntimeConfig(checkpointer=store))


async def test_an_agent_run_is_stored_with_its_tool_calls(
    make_store: Callable[[], Checkpointer],
) -> None:
    async with make_store() as store:
        final = await agent(store).invoke(
            VersionedState.with_user_message("weather?"), session_id="run"
        )
    roles = [str(m.role) for m in final.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert final.messages[2].tool_call_id == "call_1"
    async with make_store() as store:
        latest = await store.load_latest("run")
    assert latest is not None
    assert latest.state.messages == final.messages
    assert latest.state.messages[1].tool_calls[0].arguments["when"] == WHEN


async def test_a_pending_tool_call_message_survives_a_failed_step(
    make_store: Callable[[], Checkpointer],
) -> None:
    # model finishes, its sibling fails: model's partial (with the tool call)
    # is kept as the session's pending record, and comes back from the store.
    async with make_store() as store:
        app = agent(store, fail_lookup=True)
        with pytest.raises(WorkflowError):
            await app.invoke(VersionedState.with_user_message("hi"), session_id="p")
    async with make_store() as store:
        async with open_runner(agent(store), checkpointer=store) as runner:
            pending = await runner.get_state("p")
    partial = pending.pending_writes["model"]
    assert partial is not None and partial.messages is not None
    (message,) = partial.messages
    assert message.tool_calls == (
        ToolCall("call_1", "weather", {"city": "Oslo", "when": WHEN}),
    )
    assert message.tool_calls[0].arguments["when"].utcoffset() == WHEN.utcoffset()
