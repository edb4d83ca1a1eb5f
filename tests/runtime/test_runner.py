"""AppRunner: sessions, stepping, interrupts, iterative sessions, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import appender, chain_app, hi, tracer

from weavegraph import (
    END,
    INVOCATION_END_SCOPE,
    START,
    STREAM_END_SCOPE,
    EventBus,
    GraphBuilder,
    InMemoryCheckpointer,
    MemorySink,
    Message,
    NodeContext,
    NodePartial,
    PausedReport,
    RuntimeConfig,
    SessionNotFound,
    SQLiteCheckpointer,
    StateSnapshot,
    StepReport,
    VersionedState,
    WorkflowError,
    open_runner,
)
from weavegraph._runtime.lifecycle import LIFECYCLE_SCOPES
from weavegraph.errors import InvalidEntryError


def texts(state: VersionedState) -> list[str]:
    return [m.content for m in state.messages]


async def test_create_session_fresh_then_step_by_step() -> None:
    store = InMemoryCheckpointer()
    async with open_runner(chain_app(["A", "B"]), checkpointer=store) as runner:
        init = await runner.create_session("s1", hi())
        assert init.fresh and init.step == 0
        first = await runner.run_step("s1")
        assert isinstance(first, StepReport)
        assert (first.step, first.ran_nodes, first.next_frontier) == (1, ("A",), ("B",))
        assert first.updated_channels == ("messages",)
        second = await runner.run_step("s1")
        assert isinstance(second, StepReport) and second.completed
        done = await runner.run_step("s1")  # nothing left: no step
        assert isinstance(done, StepReport) and done.completed and done.step == 2
        assert texts(runner.get_session("s1").state) == ["hi", "A", "B"]
        await runner.flush()
    steps = await store.query_steps("s1")
    assert [c.step for c in steps.checkpoints] == [2, 1, 0]
    assert steps.checkpoints[0].ran_nodes == ("B",)


async def test_unknown_session() -> None:
    async with open_runner(chain_app(["A"])) as runner:
        with pytest.raises(SessionNotFound, match="'ghost'"):
            await runner.run_step("ghost")
        with pytest.raises(SessionNotFound):
            await runner.run_until_complete("ghost")
        with pytest.raises(SessionNotFound):
            await runner.finish_iterative_session("ghost")


async def test_interrupt_before_pauses_without_running() -> None:
    async with open_runner(chain_app(["A", "review", "B"])) as runner:
        await runner.create_session("s", hi())
        await runner.run_step("s")
        paused = await runner.run_step("s", interrupt_before=["review"])
        assert isinstance(paused, PausedReport)
        assert (paused.reason, paused.node, paused.step) == ("before_node", "review", 1)
        again = await runner.run_step("s", interrupt_before=["review"])
        assert isinstance(again, PausedReport) and again.step == 1
        resumed = await runner.run_step("s")  # other options: it proceeds
        assert isinstance(resumed, StepReport) and resumed.ran_nodes == ("review",)


async def test_interrupt_after_and_each_step() -> None:
    store = InMemoryCheckpointer()
    async with open_runner(chain_app(["A", "B"]), checkpointer=store) as runner:
        await runner.create_session("s", hi())
        paused = await runner.run_step("s", interrupt_after=["A"])
        assert isinstance(paused, PausedReport)
        assert (paused.reason, paused.node, paused.step) == ("after_node", "A", 1)
        assert paused.report is not None and paused.report.ran_nodes == ("A",)
        each = await runner.run_step("s", interrupt_each_step=True)
        assert isinstance(each, PausedReport) and each.reason == "after_step"
        await runner.flush()
    latest = await store.load_latest("s")
    assert latest is not None and latest.step == 2  # paused steps are saved


async def test_run_until_complete_emits_the_sentinel_and_saves() -> None:
    store = InMemoryCheckpointer()
    sink = MemorySink()
    app = chain_app(["A", "B"])
    async with open_runner(app, checkpointer=store, event_bus=EventBus([sink])) as r:
        await r.create_session("s", hi())
        final = await r.run_until_complete("s")
    assert texts(final) == ["hi", "A", "B"]
    assert sink.events[-1].message == "session=s status=completed step=2"
    latest = await store.load_latest("s")
    assert latest is not None
    assert latest.state == final
    assert latest.graph_hash == app.graph.graph_hash


async def test_failed_step_is_recorded_saved_and_resumable() -> None:
    attempts = 0

    async def flaky(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("first try fails")
        return NodePartial(extra={"ok": True})

    app = (
        GraphBuilder()
        .add_node("X", flaky)
        .add_edge(START, "X")
        .add_edge("X", END)
        .compile()
    )
    store = InMemoryCheckpointer()
    async with open_runner(app, checkpointer=store) as runner:
        await runner.create_session("s", hi())
        with pytest.raises(WorkflowError):
            await runner.run_until_complete("s")
    # Nothing of the failed step is committed: the session stays at step 0,
    # with the failure in its pending record.
    stored = await store.load_latest("s")
    assert stored is not None
    assert stored.step == 0 and stored.frontier == ("X",)
    assert stored.state.errors == ()
    async with open_runner(app, checkpointer=store) as runner:
        pending = await runner.get_state("s")
    assert pending.step == 0 and pending.next == ("X",)
    assert pending.error is not None and pending.error.scope.node == "X"
    assert "first try fails" in pending.error.error.message
    # A new runner resumes at the failed frontier and retries it.
    async with open_runner(app, checkpointer=store) as runner:
        init = await runner.create_session("s", VersionedState())
        assert init.resumed and init.step == 0
        final = await runner.run_until_complete("s")
        done = await runner.get_state("s")
    assert final.extra == {"ok": True}
    assert final.errors == ()  # the final state is an uninterrupted run's
    assert done.error is None and done.completed and done.step == 1


async def test_resume_from_sqlite_after_restart(tmp_path: Path) -> None:
    app = chain_app(["A", "B", "C"])
    async with SQLiteCheckpointer(tmp_path / "runs.db") as store:
        async with open_runner(app, checkpointer=store) as runner:
            await runner.create_session("s", hi())
            await runner.run_step("s")
    async with SQLiteCheckpointer(tmp_path / "runs.db") as store:
        async with open_runner(app, checkpointer=store) as runner:
            init = await runner.create_session("s", VersionedState())
            assert init.resumed and init.step == 1
            session = runner.get_session("s")
            assert session.frontier == ("B",)
            final = await runner.run_until_complete("s")
    assert texts(final) == ["hi", "A", "B", "C"]


async def test_a_completed_session_resumes_as_complete() -> None:
    store = InMemoryCheckpointer()
    app = chain_app(["A"])
    config = RuntimeConfig(session_id="fixed", checkpointer=store)
    first = await app.invoke(hi(), config=config)
    again = await app.invoke(None, config=config)
    assert again == first  # no input: the stored final state; nothing ran again
    assert await app.invoke(VersionedState(), config=config) == first  # empty too
    assert (await store.load_latest("fixed")).step == 1  # type: ignore[union-attr]


async def test_new_input_on_a_stored_session_is_a_new_turn() -> None:
    store = InMemoryCheckpointer()
    app = chain_app(["A"], RuntimeConfig(checkpointer=store))
    await app.invoke(hi(), session_id="chat")
    again = VersionedState.with_user_message("again")
    second = await app.invoke(again, session_id="chat")
    assert [m.content for m in second.messages] == ["hi", "A", "again", "A"]
    stored = await store.load_latest("chat")
    assert stored is not None and stored.step == 3  # 1 step, the input, 1 step
    # The same through the runner: SessionInit says so.
    async with open_runner(app, checkpointer=store) as runner:
        init = await runner.create_session(
            "chat", VersionedState.with_user_message("3")
        )
        assert init.resumed and init.new_turn and init.step == 4
        final = await runner.run_until_complete("chat")
    assert [m.content for m in final.messages][-2:] == ["3", "A"]


async def test_a_failed_session_given_corrected_input_runs_the_new_turn() -> None:
    store = InMemoryCheckpointer()

    async def picky(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        if snapshot.extra.get("ok") is not True:
            raise ValueError("needs extra ok=True")
        return NodePartial(messages=[Message.assistant("done")])

    app = (
        GraphBuilder()
        .add_node("picky", picky)
        .add_edge(START, "picky")
        .add_edge("picky", END)
        .compile(RuntimeConfig(checkpointer=store))
    )
    with pytest.raises(WorkflowError):
        await app.invoke(hi(), session_id="s")
    fixed = VersionedState.builder().with_extra("ok", True).build()
    final = await app.invoke(fixed, session_id="s")
    assert final.messages[-1].content == "done"


async def test_the_step_budget_is_per_invocation() -> None:
    store = InMemoryCheckpointer()
    app = chain_app(["A", "B"], RuntimeConfig(checkpointer=store, max_steps=3))
    for turn in range(10):
        state = await app.invoke(
            VersionedState.with_user_message(f"t{turn}"), session_id="budget"
        )
    assert len(state.messages) == 30  # ten turns of three messages


async def test_app_helpers_save_through_the_configured_checkpointer(
    tmp_path: Path,
) -> None:
    async with SQLiteCheckpointer(tmp_path / "runs.db") as store:
        app = chain_app(["A", "B"], RuntimeConfig(checkpointer=store))
        sink = MemorySink()
        await app.invoke_with_sinks(hi(), [sink])
        (summary,) = await store.list_sessions()
        assert summary.last_step == 2
        assert sink.events[-1].is_stream_end
        async with app.invoke_streaming(hi()) as (invocation, events):
            seen = [e async for e in events]
            await invocation.join()
        assert seen[-1].message.endswith("status=completed step=2")
        assert len(await store.list_sessions()) == 2


async def test_event_stream_of_a_runner() -> None:
    async def talk(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        ctx.emit("say", "hello")

    app = (
        GraphBuilder()
        .add_node("talk", talk)
        .add_edge(START, "talk")
        .add_edge("talk", END)
        .compile()
    )
    async with open_runner(app) as runner:
        events = runner.event_stream(stop_at_stream_end=True)
        await runner.create_session("s", hi())
        await runner.run_until_complete("s")
        seen = [e async for e in events]
    assert [e.scope_label for e in seen] == [
        "node.start",
        "say",
        "node.end",
        "step.end",
        STREAM_END_SCOPE,
    ]


async def test_fifty_concurrent_sessions_on_one_runner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await trio.sleep(1)
        return NodePartial(extra={"who": ctx.session_id})

    app = (
        GraphBuilder()
        .add_node("slow", slow)
        .add_edge(START, "slow")
        .add_edge("slow", END)
        .compile()
    )
    store = InMemoryCheckpointer()
    results: dict[str, VersionedState] = {}
    async with open_runner(app, checkpointer=store) as runner:

        async def one(i: int) -> None:
            await runner.create_session(f"s{i}", hi())
            results[f"s{i}"] = await runner.run_until_complete(f"s{i}")

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        assert trio.current_time() - start == pytest.approx(1.0)
    assert all(results[f"s{i}"].extra == {"who": f"s{i}"} for i in range(50))
    assert len(await store.list_sessions()) == 50


async def test_run_metadata() -> None:
    app = chain_app(["A"], RuntimeConfig(clock=lambda: 123.0))
    async with open_runner(app, checkpointer=InMemoryCheckpointer()) as runner:
        meta = runner.run_metadata()
    assert meta.graph_hash == app.graph.graph_hash
    assert meta.config_hash == app.config.config_hash
    assert meta.checkpointer_backend == "memory"
    assert meta.clock_mode == "configured"


# ----------------------------------------------------------- iterative sessions


def summing_app():
    async def add(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        total = snapshot.extra.get("sum", 0) + snapshot.extra.get("input", 0)
        ctx.emit("sum", str(total))
        return NodePartial(extra={"sum": total})

    async def double(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={"sum": snapshot.extra.get("sum", 0) + 5})

    return (
        GraphBuilder()
        .add_node("add", add)
        .add_node("second", double)
        .add_edge(START, "add")
        .add_edge("add", END)
        .add_edge("second", END)
        .add_entry("second")
        .compile()
    )


async def test_identical_inputs_are_each_processed() -> None:
    async with open_runner(summing_app()) as runner:
        await runner.create_iterative_session("it", VersionedState())
        one = await runner.invoke_next("it", NodePartial(extra={"input": 1}))
        two = await runner.invoke_next("it", NodePartial(extra={"input": 1}))
        assert (one.extra["sum"], two.extra["sum"]) == (1, 2)
        assert runner.get_session("it").step == 2


async def test_invalid_entries_are_rejected_before_anything_happens() -> None:
    async with open_runner(summing_app()) as runner:
        with pytest.raises(InvalidEntryError, match="END"):
            await runner.create_iterative_session("it", VersionedState(), entry=END)
        assert runner.list_sessions() == []
        await runner.create_iterative_session("it", VersionedState())
        with pytest.raises(InvalidEntryError, match="'nowhere'"):
            await runner.invoke_next("it", NodePartial(extra={"input": 1}), "nowhere")
        session = runner.get_session("it")
        assert session.step == 0 and "input" not in session.state.extra


async def test_custom_entry_runs_from_that_node() -> None:
    async with open_runner(summing_app()) as runner:
        await runner.create_iterative_session("it", VersionedState(), entry="second")
        state = await runner.invoke_next("it", None, entry="second")
        assert state.extra == {"sum": 5}
        assert runner.get_session("it").step == 1


async def test_iterative_stream_stays_open_until_finished() -> None:
    async with open_runner(summing_app()) as runner:
        events = runner.event_stream()
        await runner.create_iterative_session("it", VersionedState())
        await runner.invoke_next("it", NodePartial(extra={"input": 2}))
        await runner.invoke_next("it", NodePartial(extra={"input": 3}))
        await runner.finish_iterative_session("it")
        await trio.testing.wait_all_tasks_blocked()
        seen = []
        while events.buffered:
            seen.append(await events.receive())
    # The node's events and the sentinels (lifecycle events are tested apart).
    assert [
        (e.scope_label, e.message)
        for e in seen
        if e.scope_label not in LIFECYCLE_SCOPES
    ] == [
        ("sum", "2"),
        (INVOCATION_END_SCOPE, "session=it status=completed step=1"),
        ("sum", "5"),
        (INVOCATION_END_SCOPE, "session=it status=completed step=2"),
        (STREAM_END_SCOPE, "session=it status=completed step=2"),
    ]


async def test_iterative_errors_do_not_close_the_stream() -> None:
    async def picky(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        if snapshot.extra.get("input") == "bad":
            raise ValueError("bad input")

    app = (
        GraphBuilder()
        .add_node("picky", picky)
        .add_edge(START, "picky")
        .add_edge("picky", END)
        .compile()
    )
    sink = MemorySink()
    async with open_runner(app, event_bus=EventBus([sink])) as runner:
        await runner.create_iterative_session("it", VersionedState())
        with pytest.raises(WorkflowError):
            await runner.invoke_next("it", NodePartial(extra={"input": "bad"}))
        await runner.invoke_next("it", NodePartial(extra={"input": "good"}))
        await runner.finish_iterative_session("it")
    ends = [e for e in sink.events if e.is_sentinel]
    messages = [e.message for e in ends]
    assert messages[0].startswith("session=it status=error step=1 error=ValueError")
    # The failed attempt committed nothing: the next input runs step 1 again.
    assert messages[1:] == [
        "session=it status=completed step=1",
        "session=it status=completed step=1",
    ]
    assert [e.scope_label for e in ends] == [
        INVOCATION_END_SCOPE,
        INVOCATION_END_SCOPE,
        STREAM_END_SCOPE,
    ]
    # Each invocation's attempt is visible: the failed one, then the good one.
    assert [e.scope_label for e in sink.events if not e.is_sentinel] == [
        "node.start",
        "node.error",
        "node.start",
        "node.end",
        "step.end",
    ]


async def test_iterative_session_resumes_across_a_restart(tmp_path: Path) -> None:
    async def run(ticks: int, restart_after: int | None) -> VersionedState:
        path = tmp_path / f"it-{ticks}-{restart_after}.db"
        state = None
        done = 0
        while done < ticks:
            async with SQLiteCheckpointer(path) as store:
                async with open_runner(summing_app(), checkpointer=store) as runner:
                    init = await runner.create_iterative_session("it", VersionedState())
                    assert init.step == done
                    while done < ticks:
                        state = await runner.invoke_next(
                            "it", NodePartial(extra={"input": done + 1})
                        )
                        done += 1
                        if done == restart_after:
                            break
        assert state is not None
        return state

    uninterrupted = await run(5, None)
    resumed = await run(5, 3)
    assert resumed.extra == uninterrupted.extra == {"input": 5, "sum": 15}
    assert resumed == uninterrupted


async def test_tracer_helper_reports_steps() -> None:
    # Keeps the tracer helper honest (used by other suites).
    app = GraphBuilder().add_node("a", tracer("a")).add_edge(START, "a")
    final = await app.add_edge("a", END).compile().invoke(hi())
    assert texts(final)[-1] == "ran:a:step:1"
    assert appender("x").__name__ == "append_x"
