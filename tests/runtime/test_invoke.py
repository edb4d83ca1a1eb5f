"""App.invoke end to end: the reference's worked traces, loops, joins, routers."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from helpers import appender, chain_app, hi, noop, tracer

from weavegraph import (
    END,
    START,
    STREAM_END_SCOPE,
    Append,
    GraphBuilder,
    MemorySink,
    Message,
    NodeContext,
    NodePartial,
    Replace,
    RouterError,
    RuntimeConfig,
    StateSnapshot,
    VersionedState,
    WorkflowError,
)


def texts(state: VersionedState) -> list[str]:
    return [m.content for m in state.messages]


async def test_linear_trace_reference_2_18_1() -> None:
    app = chain_app(["A", "B"])
    sink = MemorySink()
    final = await app.invoke_with_sinks(hi(), [sink])
    assert texts(final) == ["hi", "A", "B"]
    assert final.versions.messages == 3
    assert final.versions.extra == 1
    assert final.versions.errors == 1
    (sentinel,) = [e for e in sink.events if e.is_stream_end]
    assert sentinel.message.endswith("status=completed step=2")


async def test_reinvoking_with_the_output_continues_versions_2_18_2() -> None:
    app = chain_app(["A"])
    first = await app.invoke(hi())
    assert first.versions.messages == 2
    second = await app.invoke(first)
    assert second.versions.messages == 3
    assert second.versions.extra == 1
    assert texts(second) == ["hi", "A", "A"]


def counting_loop(limit: int = 3) -> GraphBuilder:
    async def x(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={"count": snapshot.extra.get("count", 0) + 1})

    def router(snapshot: StateSnapshot) -> str:
        return "X" if snapshot.extra["count"] < limit else END

    builder = GraphBuilder().add_node("X", x).add_edge(START, "X")
    return builder.add_conditional_edge("X", router, path_map=["X", END])


async def test_conditional_loop_trace_2_18_3() -> None:
    sink = MemorySink()
    final = await counting_loop(3).compile().invoke_with_sinks(hi(), [sink])
    assert final.extra == {"count": 3}
    assert final.versions.extra == 4
    assert sink.events[-1].message.endswith("status=completed step=3")


async def test_loop_that_writes_nothing_ends_by_gating_2_18_3() -> None:
    calls: list[int] = []

    async def x(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        calls.append(ctx.step)

    app = (
        GraphBuilder()
        .add_node("X", x)
        .add_edge(START, "X")
        .add_conditional_edge("X", lambda s: "X", path_map=["X", END])
        .compile()
    )
    sink = MemorySink()
    await app.invoke_with_sinks(hi(), [sink])
    assert calls == [1]  # step 2 gates X out: nothing changed since it ran
    assert sink.events[-1].message.endswith("status=completed step=2")


async def test_start_to_end_graph_completes_at_step_zero() -> None:
    app = GraphBuilder().add_edge(START, END).compile()
    sink = MemorySink()
    final = await app.invoke_with_sinks(hi(), [sink])
    assert final == hi()
    assert [e.message.split(" ", 1)[1] for e in sink.events] == [
        "status=completed step=0"
    ]


async def test_fan_in_without_join_reruns_like_the_reference_2_8() -> None:
    # Start->I; I->An, I->PA; An->PB; PA->Syn; PB->Syn; Syn->End
    builder = GraphBuilder()
    for name in ["I", "An", "PA", "PB", "Syn"]:
        builder.add_node(name, tracer(name))
    for a, b in [
        (START, "I"),
        ("I", "An"),
        ("I", "PA"),
        ("An", "PB"),
        ("PA", "Syn"),
        ("PB", "Syn"),
        ("Syn", END),
    ]:
        builder.add_edge(a, b)
    final = await builder.compile().invoke(hi())
    assert texts(final)[1:] == [
        "ran:I:step:1",
        "ran:An:step:2",
        "ran:PA:step:2",
        "ran:PB:step:3",
        "ran:Syn:step:3",
        "ran:Syn:step:4",
    ]


async def test_join_runs_target_once_after_all_sources() -> None:
    # Same shape as above, but Syn joins PA and PB: it waits for both.
    builder = GraphBuilder()
    for name in ["I", "An", "PA", "PB", "Syn"]:
        builder.add_node(name, tracer(name))
    for a, b in [(START, "I"), ("I", "An"), ("I", "PA"), ("An", "PB"), ("Syn", END)]:
        builder.add_edge(a, b)
    builder.add_edge(["PA", "PB"], "Syn")
    final = await builder.compile().invoke(hi())
    assert texts(final)[1:] == [
        "ran:I:step:1",
        "ran:An:step:2",
        "ran:PA:step:2",
        "ran:PB:step:3",
        "ran:Syn:step:4",
    ]


async def test_join_waits_again_in_a_loop() -> None:
    # loop: split -> (a, b) -> join -> router back to split twice
    async def split(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={"round": snapshot.extra.get("round", 0) + 1})

    def again(snapshot: StateSnapshot) -> str:
        return "split" if snapshot.extra["round"] < 3 else END

    builder = (
        GraphBuilder()
        .add_node("split", split)
        .add_node("a", tracer("a"))
        .add_node("b", tracer("b"))
        .add_node("join", tracer("join"))
        .add_edge(START, "split")
        .add_edge("split", "a")
        .add_edge("split", "b")
        .add_edge(["a", "b"], "join")
        .add_conditional_edge("join", again, path_map=["split", END])
    )
    final = await builder.compile().invoke(hi())
    joins = [t for t in texts(final) if t.startswith("ran:join")]
    assert joins == ["ran:join:step:3", "ran:join:step:6", "ran:join:step:9"]


async def test_a_router_result_naming_no_node_fails_the_run_loudly() -> None:
    # Unlike the seed crate: a typo is a RouterError, never a silent "completed".
    builder = (
        GraphBuilder()
        .add_node("root", noop)
        .add_node("valid", appender("valid"))
        .add_edge(START, "root")
        .add_edge("root", "valid")
        .add_edge("valid", END)
        .add_conditional_edge("root", lambda s: ["valid", "Invalid", END])
    )
    sink = MemorySink()
    with pytest.raises(WorkflowError) as caught:
        await builder.compile().invoke_with_sinks(hi(), [sink])
    assert isinstance(caught.value.__cause__, RouterError)
    text = str(caught.value.__cause__)
    assert "'root'" in text and "'Invalid'" in text and "'valid'" in text
    assert sink.events[-1].metadata["status"] == "error"


async def test_router_from_start_picks_the_entry() -> None:
    def entry(snapshot: StateSnapshot) -> str:
        return "b" if "b" in snapshot.messages[-1].content else "a"

    app = (
        GraphBuilder()
        .add_node("a", appender("a"))
        .add_node("b", appender("b"))
        .add_conditional_edge(START, entry, path_map=["a", "b"])
        .add_edge("a", END)
        .add_edge("b", END)
        .compile()
    )
    assert texts(await app.invoke(VersionedState.with_user_message("go b")))[-1] == "b"
    assert texts(await app.invoke(VersionedState.with_user_message("go")))[-1] == "a"


async def test_frontier_commands_replace_and_append() -> None:
    async def controller(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(frontier=Replace(["worker"]))

    async def fan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(frontier=Append(["extra"]))

    app = (
        GraphBuilder()
        .add_node("controller", controller, destinations=["worker"])
        .add_node("default", appender("default"))
        .add_node("worker", fan, destinations=["extra"])
        .add_node("normal", appender("normal"))
        .add_node("extra", appender("extra"))
        .add_edge(START, "controller")
        .add_edge("controller", "default")
        .add_edge("default", END)
        .add_edge("worker", "normal")
        .add_edge("normal", END)
        .add_edge("extra", END)
        .compile()
    )
    final = await app.invoke(hi())
    # Replace skipped "default"; Append kept "normal" and added "extra".
    assert texts(final) == ["hi", "normal", "extra"]


async def test_parallel_nodes_merge_in_frontier_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def sleeper(name: str, delay: float) -> Any:
        async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
            await trio.sleep(delay)
            return NodePartial(messages=[Message.assistant(name)], extra={"k": name})

        return node

    builder = GraphBuilder().add_node("fan", noop).add_edge(START, "fan")
    delays = {"a": 3.0, "b": 1.0, "c": 2.0}
    for name, delay in delays.items():
        builder.add_node(name, sleeper(name, delay))
        builder.add_edge("fan", name)
        builder.add_edge(name, END)
    start = trio.current_time()
    final = await builder.compile().invoke(hi())
    assert trio.current_time() - start == pytest.approx(3.0)  # they ran concurrently
    assert texts(final) == ["hi", "a", "b", "c"]  # frontier order, not finish order
    assert final.extra == {"k": "c"}  # the later node in frontier order wins
    assert final.versions.messages == 2


async def test_concurrency_limit_bounds_running_nodes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    running = 0
    peak = 0

    async def busy(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1

    builder = GraphBuilder().add_node("fan", noop).add_edge(START, "fan")
    for i in range(10):
        builder.add_node(f"n{i}", busy).add_edge("fan", f"n{i}").add_edge(f"n{i}", END)
    start = trio.current_time()
    await builder.compile(RuntimeConfig(concurrency_limit=3)).invoke(hi())
    assert peak == 3
    assert trio.current_time() - start == pytest.approx(4.0)  # ceil(10 / 3) rounds
    peak = 0
    await builder.compile().invoke(hi())
    assert peak == 10


async def test_node_objects_with_async_run() -> None:
    class Greeter:
        def __init__(self, greeting: str) -> None:
            self.greeting = greeting

        async def run(self, snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
            ctx.emit("greeting", self.greeting)
            return NodePartial(messages=[Message.assistant(self.greeting)])

    app = (
        GraphBuilder()
        .add_node("greet", Greeter("hello"))
        .add_edge(START, "greet")
        .add_edge("greet", END)
        .compile()
    )
    assert texts(await app.invoke(hi())) == ["hi", "hello"]


async def test_context_carries_node_step_and_session() -> None:
    seen: list[tuple[str, int, str, int]] = []

    async def probe(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        seen.append((ctx.node_id, ctx.step, ctx.session_id, ctx.attempt))

    app = (
        GraphBuilder()
        .add_node("probe", probe)
        .add_edge(START, "probe")
        .add_edge("probe", END)
        .compile(RuntimeConfig(session_id="s-1"))
    )
    await app.invoke(hi())
    assert seen == [("probe", 1, "s-1", 1)]


async def test_each_invoke_gets_a_fresh_session_id() -> None:
    ids: list[str] = []

    async def probe(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ids.append(ctx.session_id)

    app = (
        GraphBuilder()
        .add_node("p", probe)
        .add_edge(START, "p")
        .add_edge("p", END)
        .compile()
    )
    await app.invoke(hi())
    await app.invoke(hi())
    assert len(set(ids)) == 2
    assert all(i.startswith("run-") for i in ids)


async def test_clock_sets_event_timestamps_and_ctx_now() -> None:
    stamps: list[float] = []

    async def probe(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        stamps.append(ctx.now())
        ctx.emit("tick", "t")

    app = (
        GraphBuilder()
        .add_node("p", probe)
        .add_edge(START, "p")
        .add_edge("p", END)
        .compile(RuntimeConfig(clock=lambda: 1234.5))
    )
    sink = MemorySink()
    await app.invoke_with_sinks(hi(), [sink])
    assert stamps == [1234.5]
    assert sink.events[0].timestamp == 1234.5
    assert sink.events[0].to_json()["timestamp"] == "1970-01-01T00:20:34.500000+00:00"


async def test_stream_end_scope_is_only_the_sentinel() -> None:
    async def llm(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ctx.emit_llm_chunk("s1", "Hel")
        ctx.emit_llm_final("s1", "Hello")

    app = (
        GraphBuilder()
        .add_node("llm", llm)
        .add_edge(START, "llm")
        .add_edge("llm", END)
        .compile()
    )
    sink = MemorySink()
    await app.invoke_with_sinks(hi(), [sink])
    assert [e.scope_label for e in sink.events] == [
        "node.start",
        "llm.chunk",
        "llm.final",
        "node.end",
        "step.end",
        STREAM_END_SCOPE,
    ]
    assert [e.is_stream_end for e in sink.events] == [False] * 5 + [True]


def test_invoke_sync_from_plain_code() -> None:
    final = chain_app(["A"]).invoke_sync(hi())
    assert texts(final) == ["hi", "A"]


def test_invoke_sync_inside_a_running_asyncio_loop() -> None:
    import asyncio

    async def host() -> list[str]:
        # A notebook cell: an asyncio loop is running in this thread.
        return texts(chain_app(["A", "B"]).invoke_sync(hi()))

    assert asyncio.run(host()) == ["hi", "A", "B"]
