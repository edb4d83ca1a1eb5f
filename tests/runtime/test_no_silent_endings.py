"""No silent endings: gated skips and lost same-key writes are diagnostic
events, a run ended by gating says so, ungated nodes poll; new turns work on
every store."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import hi, open_store

from weavegraph import (
    END,
    START,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    RuntimeConfig,
    StateSnapshot,
    VersionedState,
)
from weavegraph.testing import collect_events


def polling_app(gated: bool) -> GraphBuilder:
    async def poll(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        polls = snapshot.extra.get("polls", 0)
        if polls >= 3:
            return NodePartial(frontier=None, extra={"status": "done"})
        # Writes an unchanged status: nothing it reads changes after the first.
        return NodePartial(extra={"status": "pending"})

    def again(snapshot: StateSnapshot) -> str:
        return END if snapshot.extra.get("status") == "done" else "poll"

    async def count(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={"polls": snapshot.extra.get("polls", 0) + 1})

    return (
        GraphBuilder()
        .add_node("poll", poll, gated=gated)
        .add_node("count", count)
        .add_edge(START, "poll")
        .add_edge("poll", "count")
        .add_conditional_edge("count", again, path_map=["poll", END])
    )


async def test_a_gated_skip_is_visible_and_ends_the_run_says_so() -> None:
    async def same(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={"status": "pending"})

    def loop(snapshot: StateSnapshot) -> str:
        return "check"

    app = (
        GraphBuilder()
        .add_node("check", same)
        .add_edge(START, "check")
        .add_conditional_edge("check", loop, path_map=["check", END])
        .compile()
    )
    _, events = await collect_events(app, hi())
    gated = [e for e in events if e.scope_label == "frontier.gated"]
    assert [e.metadata["node"] for e in gated] == ["check"]
    assert "gated=False" in gated[0].message
    end = events[-1]
    assert end.metadata["status"] == "completed"
    assert end.metadata["ended_by"] == "gating"
    assert end.metadata["gated_out"] == ["check"]


async def test_an_ungated_node_runs_whenever_it_is_scheduled() -> None:
    final = await polling_app(gated=False).compile().invoke(hi())
    assert final.extra["status"] == "done" and final.extra["polls"] == 4


async def test_lost_same_key_writes_are_a_diagnostic_naming_key_and_nodes() -> None:
    def writer(value: str):  # type: ignore[no-untyped-def]
        async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
            return NodePartial(extra={"answer": value})

        return node

    builder = GraphBuilder()
    for name in ("left", "right"):
        builder.add_node(name, writer(name)).add_edge(START, name)
        builder.add_edge(name, END)
    final, events = await collect_events(builder.compile(), hi())
    assert final.extra["answer"] == "right"  # last write in frontier order wins
    (conflict,) = [e for e in events if e.scope_label == "barrier.key_conflict"]
    assert conflict.metadata["key"] == "answer"
    assert conflict.metadata["nodes"] == ["left", "right"]
    assert "with_key_reducer" in conflict.message


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
async def test_new_turns_and_per_invocation_budgets_on_every_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async def reply(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(
            messages=[Message.assistant("re: " + snapshot.messages[-1].content)]
        )

    async with open_store(kind, tmp_path, request) as store:
        app = (
            GraphBuilder()
            .add_node("reply", reply)
            .add_edge(START, "reply")
            .add_edge("reply", END)
            .compile(RuntimeConfig(checkpointer=store, max_steps=1))
        )
        await app.invoke(hi(), session_id="chat")
        for turn in range(4):
            state = await app.invoke(
                VersionedState.with_user_message(f"t{turn}"), session_id="chat"
            )
        assert await app.invoke(None, session_id="chat") == state
        stored = await store.load_latest("chat")
    assert [m.content for m in state.messages][-2:] == ["t3", "re: t3"]
    assert len(state.messages) == 10
    assert stored is not None and stored.step == 9  # 1 + 4 turns of (input + reply)
