"""Subgraphs: compiled apps as nodes, nested to any depth, on every store."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import STORES, hi, open_store

from weavegraph import (
    END,
    START,
    STREAM_END_SCOPE,
    App,
    Checkpointer,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    PausedReport,
    Resume,
    RuntimeConfig,
    Send,
    StateSnapshot,
    VersionedState,
    WorkflowError,
    open_runner,
)
from weavegraph.errors import InvalidNodeError, NodeTimeoutError
from weavegraph.testing import collect_events


def chain(names: list[str], calls: Counter[str], **nodes: Any) -> GraphBuilder:
    """A chain of nodes that each append a message and count their calls."""

    def make(name: str) -> Any:
        async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
            calls[name] += 1
            ctx.emit("work", name)
            return NodePartial(
                messages=[Message.assistant(name)], extra={name: len(snapshot.messages)}
            )

        return node

    builder = GraphBuilder()
    for name in names:
        builder.add_node(name, nodes.get(name) or make(name))
    builder.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        builder.add_edge(a, b)
    return builder.add_edge(names[-1], END)


async def collect(app: App, state: Any, sid: str) -> list[Any]:
    async with app.invoke_streaming(state, session_id=sid) as (run, events):
        seen = [e async for e in events]
        await run.join()
    return seen


def research(calls: Counter[str], store: Checkpointer | None = None) -> App:
    child = chain(["search", "summarise"], calls).compile()
    return chain(["plan", "research", "write"], calls, research=child).compile(
        RuntimeConfig(checkpointer=store)
    )


@pytest.mark.parametrize("kind", STORES)
async def test_a_child_runs_as_one_node(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()
    async with open_store(kind, tmp_path, request) as store:
        app = research(calls, store)
        final, events = await collect_events(app, hi())
    assert [m.content for m in final.messages] == [
        "hi",
        "plan",
        "search",
        "summarise",
        "write",
    ]
    # The child started from the parent's snapshot; its changes merged back.
    assert dict(final.extra) == {
        "plan": 1,
        "search": 2,
        "summarise": 3,
        "write": 4,
    }
    work = [
        (e.message, e.metadata.get("path")) for e in events if e.scope_label == "work"
    ]
    assert work == [
        ("plan", None),
        ("search", ["research", "search"]),
        ("summarise", ["research", "summarise"]),
        ("write", None),
    ]
    child_starts = [
        e.metadata["path"]
        for e in events
        if e.scope_label == "node.start" and "path" in e.metadata
    ]
    assert child_starts == [["research", "search"], ["research", "summarise"]]
    step_ends = [e.metadata.get("path") for e in events if e.scope_label == "step.end"]
    assert step_ends == [None, ["research"], ["research"], None, None]
    # One stream end: the parent's.
    assert [e.scope_label for e in events].count(STREAM_END_SCOPE) == 1
    assert events[-1].scope_label == STREAM_END_SCOPE
    assert calls == Counter(dict.fromkeys(["plan", "search", "summarise", "write"], 1))


async def test_input_and_output_map_the_state() -> None:
    calls: Counter[str] = Counter()
    child = chain(["search"], calls).compile()

    def start(snapshot: StateSnapshot) -> VersionedState:
        return VersionedState.with_user_message(snapshot.extra["topic"])

    def found(final: VersionedState, snapshot: StateSnapshot) -> NodePartial:
        return NodePartial(extra={"found": [m.content for m in final.messages]})

    app = (
        GraphBuilder()
        .add_node("research", child, input=start, output=found)
        .add_edge(START, "research")
        .add_edge("research", END)
        .compile()
    )
    final = await app.invoke(VersionedState(extra={"topic": "trio"}))
    assert dict(final.extra) == {"topic": "trio", "found": ["trio", "search"]}

    async def plain(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    with pytest.raises(InvalidNodeError, match="only when the node is a compiled App"):
        GraphBuilder().add_node("x", plain, input=start)
    with pytest.raises(InvalidNodeError, match="output= must be a function"):
        GraphBuilder().add_node("x", child, output="found")  # type: ignore[arg-type]


async def test_cancelling_the_parent_cancels_everything_in_the_child() -> None:
    cleaned: list[int] = []
    started = trio.Event()

    async def sleeper(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        try:
            if ctx.task_index == 2:
                started.set()
            await trio.sleep_forever()
        finally:
            cleaned.append(ctx.task_index)
        raise AssertionError

    async def fan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    child = (
        GraphBuilder()
        .add_node("fan", fan)
        .add_node("sleep", sleeper)
        .add_edge(START, "fan")
        .add_conditional_edge("fan", lambda s: [Send("sleep", i) for i in range(3)])
        .add_edge("sleep", END)
        .compile()
    )
    app = (
        GraphBuilder()
        .add_node("research", child, timeout=0.5)
        .add_edge(START, "research")
        .add_edge("research", END)
        .compile()
    )
    with pytest.raises(WorkflowError) as caught:
        await app.invoke(hi())
    assert isinstance(caught.value.__cause__, NodeTimeoutError)
    assert sorted(cleaned) == [0, 1, 2]  # every child task ended before the parent
    # And through the caller: leaving invoke_streaming cancels the child.
    cleaned.clear()
    started = trio.Event()
    async with app.invoke_streaming(hi()) as (run, _):
        await started.wait()
        run.cancel("the client left")
    assert sorted(cleaned) == [0, 1, 2]
    # And a failing sibling of the subgraph node cancels the child too.
    cleaned.clear()
    started = trio.Event()

    async def fails(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await started.wait()
        raise RuntimeError("sibling failed")

    siblings = (
        GraphBuilder()
        .add_node("research", child)
        .add_node("other", fails)
        .add_edge(START, "research")
        .add_edge(START, "other")
        .add_edge("research", END)
        .add_edge("other", END)
        .compile()
    )
    with pytest.raises(WorkflowError, match="sibling failed"):
        await siblings.invoke(hi())
    assert sorted(cleaned) == [0, 1, 2]


@pytest.mark.parametrize("kind", STORES[1:])
async def test_a_crash_inside_the_child_resumes_inside_it(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()
    failing = {"summarise"}

    async def summarise(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls["summarise"] += 1
        if "summarise" in failing:
            failing.clear()
            raise ConnectionError("model gone")
        return NodePartial(messages=[Message.assistant("summarise")])

    async with open_store(kind, tmp_path, request) as store:
        child = chain(
            ["search", "summarise", "cite"], calls, summarise=summarise
        ).compile()
        app = chain(["plan", "research", "write"], calls, research=child).compile(
            RuntimeConfig(checkpointer=store)
        )
        with pytest.raises(WorkflowError, match="model gone"):
            await app.invoke(hi(), session_id="c")
        # The child's finished step is stored under the parent's session.
        listed = {s.session_id for s in await store.list_sessions()}
        assert "c:research@2" in listed
        final = await app.invoke(None, session_id="c")
    assert [m.content for m in final.messages][1:] == [
        "plan",
        "search",
        "summarise",
        "cite",
        "write",
    ]
    assert calls == Counter(
        {"plan": 1, "search": 1, "summarise": 2, "cite": 1, "write": 1}
    )


def asking_child(calls: Counter[str]) -> App:
    async def review(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls["review"] += 1
        found = await ctx.task("lookup", _lookup, calls)
        verdict = await ctx.interrupt({"draft": found, "ask": "ok?"})
        return NodePartial(extra={"verdict": verdict})

    return chain(["draft", "review"], calls, review=review).compile()


async def _lookup(calls: Counter[str]) -> str:
    calls["lookup"] += 1
    await trio.lowlevel.checkpoint()
    return "draft-1"


@pytest.mark.parametrize("kind", STORES[1:])
async def test_an_interrupt_in_the_child_pauses_the_session(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()
    async with open_store(kind, tmp_path, request) as store:
        app = chain(
            ["plan", "review", "send"], calls, review=asking_child(calls)
        ).compile(RuntimeConfig(checkpointer=store))
        events = await collect(app, hi(), "i")
        end = events[-1]
        assert end.metadata["status"] == "interrupted"
        (asked,) = end.metadata["interrupts"]
        assert asked["node"] == "review"
        assert asked["payload"] == {"draft": "draft-1", "ask": "ok?"}
        async with open_runner(app, checkpointer=store) as runner:
            state = await runner.get_state("i")
            assert state.interrupts[0].payload["ask"] == "ok?"
        final = await app.invoke(Resume("approve"), session_id="i")
    assert final.extra["verdict"] == "approve"
    assert [m.content for m in final.messages][-1] == "send"
    # The child's finished work ran once across the pause.
    assert calls["draft"] == 1 and calls["lookup"] == 1 and calls["send"] == 1


@pytest.mark.parametrize("kind", STORES)
async def test_three_levels(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()
    async with open_store(kind, tmp_path, request) as store:
        inner = asking_child(calls)
        middle = chain(["fetch", "inner"], calls, inner=inner).compile()
        app = chain(["top", "middle"], calls, middle=middle).compile(
            RuntimeConfig(checkpointer=store)
        )
        events = await collect(app, hi(), "deep")
        paths = [e.metadata.get("path") for e in events if e.scope_label == "work"]
        assert paths == [
            None,
            ["middle", "fetch"],
            ["middle", "inner", "draft"],
        ]
        assert events[-1].metadata["status"] == "interrupted"
        async with open_runner(app, checkpointer=store) as runner:
            report = await runner.resume("deep", "yes")
        assert isinstance(report, VersionedState) and report.extra["verdict"] == "yes"
        assert not isinstance(report, PausedReport)
    assert calls["draft"] == calls["fetch"] == calls["top"] == 1


async def test_the_graph_hash_includes_the_child() -> None:
    calls: Counter[str] = Counter()
    one = chain(["a"], calls).compile()
    two = chain(["a", "b"], calls).compile()
    first = chain(["x", "sub"], calls, sub=one).compile()
    second = chain(["x", "sub"], calls, sub=two).compile()
    assert first.graph.graph_hash != second.graph.graph_hash
    again = chain(["x", "sub"], calls, sub=chain(["a"], calls).compile()).compile()
    assert again.graph.graph_hash == first.graph.graph_hash


def test_diagrams_draw_the_child_as_a_cluster() -> None:
    calls: Counter[str] = Counter()
    inner = chain(["search"], calls).compile()
    middle = chain(["inner"], calls, inner=inner).compile()
    app = chain(["plan", "research"], calls, research=middle).compile()
    mermaid = app.graph.to_mermaid()
    # research is n2 (START, plan, research, END sorted); its child nested.
    assert 'subgraph n2_graph ["research"]' in mermaid
    assert '        subgraph n2_1_graph ["inner"]' in mermaid
    assert '            n2_1_1["search"]' in mermaid
    assert "    n2 -.- n2_graph" in mermaid
    dot = app.graph.to_dot()
    assert 'subgraph "cluster_2_" {' in dot and 'label="research";' in dot
    assert '"2_1_1" [ label="search" ];' in dot
    assert dot.count("{") == dot.count("}")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_subgraph_per_sent_task(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async def look(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        ctx.emit("look", snapshot.extra["q"])
        return NodePartial(extra={"seen": [snapshot.extra["q"]]})

    child = (
        GraphBuilder()
        .add_node("look", look)
        .add_edge(START, "look")
        .add_edge("look", END)
        .with_key_reducer("seen", "append")
        .compile()
    )

    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    def per_topic(snapshot: StateSnapshot) -> list[Send]:
        return [Send("research", {"q": q}) for q in ("trio", "attrs", "sqlite")]

    async with open_store(kind, tmp_path, request) as store:
        app = (
            GraphBuilder()
            .add_node("plan", plan)
            .add_node(
                "research",
                child,
                output=lambda final, s: NodePartial(
                    extra={"seen": final.extra["seen"]}
                ),
            )
            .add_edge(START, "plan")
            .add_conditional_edge("plan", per_topic)
            .add_edge("research", END)
            .with_key_reducer("seen", "append")
            .compile(RuntimeConfig(checkpointer=store))
        )
        final, events = await collect_events(app, hi())
        children = sorted(
            s.session_id for s in await store.list_sessions() if ":" in s.session_id
        )
    assert [c.split(":", 1)[1] for c in children] == [
        "research@2.0",
        "research@2.1",
        "research@2.2",
    ]
    paths = sorted(e.metadata["path"] for e in events if e.scope_label == "look")
    assert paths == [
        ["research[0]", "look"],
        ["research[1]", "look"],
        ["research[2]", "look"],
    ]
    # Each child started from its payload; the outputs merge in send order.
    assert list(final.extra["seen"]) == ["trio", "attrs", "sqlite"]

    def explicit(snapshot: StateSnapshot, payload: Any) -> VersionedState:
        return VersionedState(extra={"q": payload["q"].upper()})

    mapped = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("research", child, input=explicit)
        .add_edge(START, "plan")
        .add_conditional_edge("plan", per_topic)
        .add_edge("research", END)
        .compile()
    )
    state = await mapped.invoke(hi())
    assert state.extra["seen"] == ["SQLITE"]  # no parent reducer: the last wins


async def test_without_a_store_finished_children_are_not_kept() -> None:
    calls: Counter[str] = Counter()
    inner = chain(["search"], calls).compile()
    middle = chain(["inner"], calls, inner=inner).compile()
    app = chain(["plan", "research"], calls, research=middle).compile()
    async with open_runner(app) as runner:
        await runner.create_session("m", hi())
        final = await runner.run_until_complete("m")
        memory = runner._engine.host._memory
        assert memory is not None and await memory.list_sessions() == []
    assert isinstance(final, VersionedState) and calls["search"] == 1


async def test_a_retried_subgraph_node_resumes_its_child() -> None:
    from weavegraph import RetryPolicy

    calls: Counter[str] = Counter()
    flaky = ["once"]

    async def rank(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls["rank"] += 1
        if flaky:
            raise ConnectionError(flaky.pop())
        return NodePartial(extra={"ranked": True})

    child = chain(["search", "rank"], calls, rank=rank).compile()
    app = (
        GraphBuilder()
        .add_node("research", child, retry=RetryPolicy(max_attempts=2))
        .add_edge(START, "research")
        .add_edge("research", END)
        .compile()
    )
    final = await app.invoke(hi())
    assert final.extra["ranked"] is True
    # The retry resumed the child: its finished step did not run again.
    assert calls == Counter({"search": 1, "rank": 2})
