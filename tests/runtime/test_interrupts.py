"""Human in the loop: interrupts inside nodes with resume values, durable tasks,
breakpoints everywhere, state edits, history and forks."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from helpers import STORES, hi, open_store

from weavegraph import (
    END,
    START,
    STREAM_END_SCOPE,
    App,
    Checkpointer,
    ConfigError,
    GraphBuilder,
    InMemoryCheckpointer,
    Message,
    NodeContext,
    NodePartial,
    PausedReport,
    Resume,
    RuntimeConfig,
    SQLiteCheckpointer,
    StateSnapshot,
    StepReport,
    VersionedState,
    WorkflowError,
    open_runner,
)
from weavegraph.testing import collect_events


def review_app(store: Checkpointer | None, calls: Counter[str]) -> App:
    """draft → review (asks twice, with durable tasks between) → send."""

    async def draft(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls["draft"] += 1
        return NodePartial(extra={"draft": "Hello, Bob"})

    async def expensive(what: str) -> str:
        calls[f"task:{what}"] += 1
        await trio.lowlevel.checkpoint()
        return f"{what}-done"

    async def review(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls["review"] += 1
        first = await ctx.task("lookup", expensive, "lookup")
        verdict = await ctx.interrupt({"draft": snapshot.extra["draft"], "ask": "ok?"})
        second = await ctx.task("check", expensive, "check")
        signature = await ctx.interrupt("signature?")
        third = await ctx.task("lookup", expensive, "lookup2")
        return NodePartial(
            extra={"verdict": verdict, "signature": signature},
            messages=[Message.assistant(f"{first} {second} {third}")],
        )

    async def send(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls["send"] += 1
        return NodePartial(extra={"sent": snapshot.extra["draft"]})

    return (
        GraphBuilder()
        .add_node("draft", draft)
        .add_node("review", review)
        .add_node("send", send)
        .add_edge(START, "draft")
        .add_edge("draft", "review")
        .add_edge("review", "send")
        .add_edge("send", END)
        .compile(RuntimeConfig(checkpointer=store))
    )


@pytest.mark.parametrize("kind", STORES)
async def test_interrupts_pause_resume_and_tasks_run_once(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()
    async with open_store(kind, tmp_path, request) as store:
        app = review_app(store, calls)
        # A pause is not an error: invoke returns the state at the pause.
        paused, events = await collect_events(app, hi())
        assert paused.extra == {"draft": "Hello, Bob"}
        end = events[-1]
        assert end.metadata["status"] == "interrupted"
        (asked,) = end.metadata["interrupts"]
        assert asked["node"] == "review" and asked["payload"]["ask"] == "ok?"
        assert any(e.scope_label == "session.interrupt" for e in events)
        sid = end.metadata["session_id"]
        async with open_runner(app, checkpointer=store) as runner:
            state = await runner.get_state(sid)
            (interrupt,) = state.interrupts
            assert interrupt.payload == {"draft": "Hello, Bob", "ask": "ok?"}
            assert state.next == ("review",) and not state.completed
            report = await runner.resume(sid, "approve")
            assert isinstance(report, PausedReport) and report.reason == "interrupt"
            assert report.interrupts[0].payload == "signature?"
        # Resume through the App, in a new runner: reads the store.
        final = await app.invoke(Resume("— Ann"), session_id=sid)
    assert final.extra["verdict"] == "approve"
    assert final.extra["signature"] == "— Ann"
    assert final.extra["sent"] == "Hello, Bob"
    assert final.messages[-1].content == "lookup-done check-done lookup2-done"
    # Every expensive call ran exactly once across two pauses and resumes.
    assert calls == Counter(
        {
            "draft": 1,
            "review": 3,
            "send": 1,
            "task:lookup": 1,
            "task:check": 1,
            "task:lookup2": 1,
        }
    )


async def test_parallel_interrupts_are_answered_together() -> None:
    async def ask(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        answer = await ctx.interrupt(f"{ctx.node_id}?")
        return NodePartial(extra={ctx.node_id: answer})

    store = InMemoryCheckpointer()
    builder = GraphBuilder().add_node("fan", ask).add_edge(START, "fan")
    for name in ("a", "b"):
        builder.add_node(name, ask).add_edge(START, name).add_edge(name, END)
    builder.add_edge("fan", END)
    app = builder.compile(RuntimeConfig(checkpointer=store))
    await app.invoke(hi(), session_id="p")
    async with open_runner(app, checkpointer=store) as runner:
        state = await runner.get_state("p")
        ids = {i.node: i.id for i in state.interrupts}
        assert sorted(ids) == ["a", "b", "fan"]
        with pytest.raises(ConfigError, match="values="):
            await runner.resume("p", "x")
        with pytest.raises(ConfigError, match="no pending interrupt"):
            await runner.resume("p", values={"nope": 1})
        final = await runner.resume(
            "p", values={ids["a"]: 1, ids["b"]: 2, ids["fan"]: 3}
        )
    assert isinstance(final, VersionedState)
    assert dict(final.extra) == {"a": 1, "b": 2, "fan": 3}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_breakpoints_everywhere_and_resuming_moves_past(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()

    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls[ctx.node_id] += 1
        return NodePartial(messages=[Message.assistant(ctx.node_id)])

    async with open_store(kind, tmp_path, request) as store:
        app = (
            GraphBuilder()
            .add_node("a", node)
            .add_node("b", node)
            .add_node("c", node)
            .add_edge(START, "a")
            .add_edge("a", "b")
            .add_edge("b", "c")
            .add_edge("c", END)
            .compile(RuntimeConfig(checkpointer=store, interrupt_before=("b",)))
        )
        state = await app.invoke(hi(), session_id="bp")
        assert [m.content for m in state.messages] == ["hi", "a"]
        # Calling again with the same options moves past the breakpoint.
        state = await app.invoke(None, session_id="bp", interrupt_after=["c"])
        assert [m.content for m in state.messages] == ["hi", "a", "b", "c"]
        async with open_runner(app, checkpointer=store) as runner:
            await runner.create_session("bp2", hi())
            first = await runner.run_until_complete("bp2", interrupt_before=["*"])
            assert isinstance(first, PausedReport) and first.node == "a"
            second = await runner.run_until_complete("bp2", interrupt_before=["*"])
            assert isinstance(second, PausedReport) and second.node == "b"
            done = await runner.run_until_complete("bp2", interrupt_before=())
        assert isinstance(done, VersionedState)
    assert calls == Counter({"a": 2, "b": 2, "c": 2})


async def test_a_breakpoint_on_no_node_is_refused_with_a_sentinel() -> None:
    # A typo in a breakpoint would never pause: the run is refused, naming
    # the graph's nodes, and its stream still ends with an error sentinel.
    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(messages=[Message.assistant(ctx.node_id)])

    app = (
        GraphBuilder()
        .add_node("draft", node)
        .add_edge(START, "draft")
        .add_edge("draft", END)
        .compile()
    )
    with pytest.raises(ConfigError, match=r"interrupt_before.*\['drfat'\].*draft"):
        await app.invoke(hi(), interrupt_before=["drfat"])
    async with app.invoke_streaming(hi(), interrupt_after=["draft", "x"]) as (
        run,
        stream,
    ):
        events = [event async for event in stream]
        with pytest.raises(ConfigError, match=r"interrupt_after.*\['x'\]"):
            await run.join()
    (end,) = [e for e in events if e.is_stream_end]
    assert end.metadata["status"] == "error"
    state = await app.invoke(hi(), interrupt_before=["*"])  # "*" is every node
    assert [m.content for m in state.messages] == ["hi"]


@pytest.mark.parametrize("kind", STORES)
async def test_edit_history_and_fork(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()
    async with open_store(kind, tmp_path, request) as store:
        app = review_app(store, calls)
        await app.invoke(hi(), session_id="e")
        async with open_runner(app, checkpointer=store) as runner:
            # Edit the paused draft; the pending interrupt stays.
            edited = await runner.update_state(
                "e", NodePartial(extra={"draft": "Hi, Bob!"})
            )
            assert edited.step == 2 and len(edited.interrupts) == 1
            report = await runner.resume("e", "approve")
            assert isinstance(report, PausedReport)
            final = await runner.resume("e", "Ann")
            assert isinstance(final, VersionedState)
            assert final.extra["sent"] == "Hi, Bob!"
            history = await runner.history("e")
            steps = [h.step for h in history]
            assert steps == sorted(steps, reverse=True) and steps[-1] == 0
            assert history[0].parent_step == history[1].step
            past = await runner.get_state("e", step=1)
            assert past.state.extra == {"draft": "Hello, Bob"}
            # Time travel: fork at step 1 and run from there.
            fork = await runner.fork("e", 1, "e-fork")
            assert fork.forked_from == ("e", 1) and fork.step == 1
            again = await runner.run_until_complete("e-fork")
            assert isinstance(again, PausedReport)  # review asks again
            with pytest.raises(ConfigError, match="exists"):
                await runner.fork("e", 1, "e-fork")
        untouched = await store.load_latest("e")
        assert untouched is not None and untouched.state.extra["sent"] == "Hi, Bob!"
        # The origin is the store's: a new runner, the history and the
        # session summary all name it, after the fork has taken steps.
        async with open_runner(app, checkpointer=store) as runner:
            reread = await runner.get_state("e-fork")
            assert reread.forked_from == ("e", 1) and reread.interrupts
            assert (await runner.get_state("e")).forked_from is None
            again = await runner.resume("e-fork", "approve")
            assert isinstance(again, PausedReport)
            done = await runner.resume("e-fork", "Bo")
            assert isinstance(done, VersionedState) and done.extra["signature"] == "Bo"
        async with open_runner(app, checkpointer=store) as runner:
            history = await runner.history("e-fork")
            assert [h.step for h in history] == [3, 2, 1]
            assert {h.forked_from for h in history} == {("e", 1)}
            assert (await runner.get_state("e-fork", step=1)).forked_from == ("e", 1)
        summaries = {s.session_id: s for s in await store.list_sessions()}
        assert summaries["e-fork"].forked_from == ("e", 1)
        assert summaries["e"].forked_from is None
        latest = await store.load_latest("e-fork")
        assert latest is not None and latest.forked_from == ("e", 1)


async def test_update_state_as_node_moves_the_frontier() -> None:
    calls: Counter[str] = Counter()
    store = InMemoryCheckpointer()
    app = review_app(store, calls)
    await app.invoke(hi(), session_id="n")
    async with open_runner(app, checkpointer=store) as runner:
        state = await runner.update_state(
            "n", NodePartial(extra={"verdict": "by hand"}), as_node="review"
        )
        assert state.next == ("send",) and state.interrupts == ()
        final = await runner.run_until_complete("n")
        with pytest.raises(ConfigError, match="not a node"):
            await runner.update_state("n", NodePartial(), as_node="ghost")
    assert isinstance(final, VersionedState)
    assert final.extra["sent"] == "Hello, Bob" and calls["review"] == 1


async def test_streaming_a_resume(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    async with SQLiteCheckpointer(tmp_path / "s.db") as store:
        app = review_app(store, calls)
        await app.invoke(hi(), session_id="st")
        seen: list[Any] = []
        async with app.invoke_streaming(Resume("yes"), session_id="st") as (run, ev):
            seen = [e async for e in ev]
            state = await run.join()
    assert seen[-1].metadata["status"] == "interrupted"
    assert state.extra.get("verdict") is None  # paused again at the signature


def stream_ends(events: list[Any]) -> list[str]:
    return [e.metadata["status"] for e in events if e.scope_label == STREAM_END_SCOPE]


@pytest.mark.parametrize("kind", STORES)
async def test_a_stepped_run_ends_its_stream(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()

    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls[ctx.node_id] += 1
        ctx.emit("work", ctx.node_id)
        return NodePartial(messages=[Message.assistant(ctx.node_id)])

    async with open_store(kind, tmp_path, request) as store:
        chain = (
            GraphBuilder()
            .add_node("a", node)
            .add_node("b", node)
            .add_edge(START, "a")
            .add_edge("a", "b")
            .add_edge("b", END)
            .compile(RuntimeConfig(checkpointer=store))
        )
        async with open_runner(chain, checkpointer=store) as runner:
            await runner.create_session("rs", hi())
            events = runner.event_stream(stop_at_stream_end=True)
            with trio.fail_after(5):
                first = await runner.run_step("rs")
                second = await runner.run_step("rs")
                seen = [e async for e in events]  # ends: no hang
            assert not first.completed and second.completed
            labels = [e.scope_label for e in seen]
            assert [x for x in labels if not x.startswith(("node.", "step."))] == [
                "work",
                "work",
                STREAM_END_SCOPE,
            ]
            assert labels[-1] == STREAM_END_SCOPE
            assert seen[-1].metadata["step"] == 2
            assert seen[-1].metadata["status"] == "completed"
            # Asked again, a complete session runs nothing and sends nothing.
            again = runner.event_stream()
            done = await runner.run_step("rs")
            assert done.completed
            assert again.buffered == 0
            again.close()
            # A node that interrupts pauses the stepped run, with its sentinel.
            app = review_app(store, calls)
        async with open_runner(app, checkpointer=store) as runner:
            await runner.create_session("ri", hi())
            events = runner.event_stream(stop_at_stream_end=True)
            with trio.fail_after(5):
                drafted = await runner.run_step("ri")
                paused = await runner.run_step("ri")
                seen = [e async for e in events]
            assert isinstance(drafted, StepReport)
            assert isinstance(paused, PausedReport) and paused.reason == "interrupt"
            assert paused.interrupts[0].payload["ask"] == "ok?"
            assert (
                stream_ends(seen) == ["interrupted"]
                and seen[-1].metadata["interrupts"][0]["node"] == "review"
            )
            state = await runner.get_state("ri")
            assert state.interrupts == paused.interrupts and state.step == 1
            final = await runner.resume("ri", "approve")
            assert isinstance(final, PausedReport)  # the signature next
    assert calls["a"] == calls["b"] == 1


async def test_a_stepped_run_that_fails_or_is_cancelled_ends_its_stream() -> None:
    async def boom(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        raise RuntimeError("no")

    async def sleepy(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        await trio.sleep_forever()
        raise AssertionError

    for node, status in ((boom, "error"), (sleepy, "cancelled")):
        store = InMemoryCheckpointer()
        app = (
            GraphBuilder()
            .add_node("n", node)
            .add_edge(START, "n")
            .add_edge("n", END)
            .compile(RuntimeConfig(checkpointer=store))
        )
        async with open_runner(app, checkpointer=store) as runner:
            await runner.create_session("f", hi())
            events = runner.event_stream(stop_at_stream_end=True)
            fails = pytest.raises(WorkflowError) if status == "error" else None
            with trio.move_on_after(0.2) as scope, fails or nullcontext():
                await runner.run_step("f")
            assert scope.cancelled_caught == (status == "cancelled")
            with trio.fail_after(5):
                seen = [e async for e in events]
            assert stream_ends(seen) == [status]


async def test_resume_and_fork_events() -> None:
    calls: Counter[str] = Counter()
    store = InMemoryCheckpointer()
    app = review_app(store, calls)
    await app.invoke(hi(), session_id="ev")
    async with open_runner(app, checkpointer=store) as runner:
        asked = (await runner.get_state("ev")).interrupts[0].id
        events = runner.event_stream(stop_at_stream_end=True)
        await runner.resume("ev", "approve")
        seen = [e async for e in events]
        (resumed,) = [e for e in seen if e.scope_label == "session.resume"]
        assert seen[0] is resumed  # before any node of the run
        assert dict(resumed.metadata) == {
            "session_id": "ev",
            "step": 2,
            "after": "interrupt",
            "answered": [asked],
            "kept": [],
        }
        events = runner.event_stream()
        await runner.fork("ev", 1, "ev-2")
        (forked,) = [events.receive_nowait()]
        assert forked.scope_label == "session.fork"
        assert dict(forked.metadata) == {
            "session_id": "ev-2",
            "forked_from": {"session_id": "ev", "step": 1},
            "next": ["review"],
        }
        events.close()
    # A fresh run says nothing of the kind; node code may not send these scopes.
    _, fresh = await collect_events(review_app(None, calls), hi())
    assert not [e for e in fresh if e.scope_label in ("session.resume", "session.fork")]
