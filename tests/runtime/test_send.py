"""Send: dynamic fan-out with per-task payloads, on every store."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import STORES, hi, open_store

from weavegraph import (
    END,
    START,
    App,
    Checkpointer,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    PausedReport,
    Replace,
    RuntimeConfig,
    Send,
    StateSnapshot,
    VersionedState,
    WorkflowError,
    open_runner,
)
from weavegraph.errors import InvalidNodeError, StateError
from weavegraph.testing import collect_events

DOCS = ["alpha", "bravo", "charlie", "delta", "echo"]


def map_reduce(
    store: Checkpointer | None,
    calls: Counter[str],
    *,
    fail_once: set[str] | None = None,
    limit: int | None = None,
    running: list[int] | None = None,
) -> App:
    """plan → a Send per document to summarise → reduce (joins every task)."""
    finished: list[str] = []
    both_done = trio.Event()

    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={"docs": DOCS})

    def fan_out(snapshot: StateSnapshot) -> list[Any]:
        return [Send("summarise", {"doc": d}) for d in snapshot.extra["docs"]]

    async def summarise(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        doc = ctx.payload["doc"]
        calls[doc] += 1
        if running is not None:
            running[0] += 1
            running[1] = max(running[1], running[0])
        if fail_once:
            # A choreography: delta and echo finish, charlie fails once they
            # have, alpha and bravo are still running then (and cancelled).
            if doc in ("delta", "echo"):
                finished.append(doc)
                if len(finished) == 2:
                    both_done.set()
            elif doc in fail_once:
                await both_done.wait()
                fail_once.discard(doc)
                raise RuntimeError(f"{doc} failed")
            else:
                await trio.sleep(10)
        else:
            # Later documents finish first: the merge order is the send order.
            await trio.sleep(0.001 * (len(DOCS) - DOCS.index(doc)))
        if running is not None:
            running[0] -= 1
        ctx.emit("summary", doc)
        return NodePartial(
            messages=[Message.assistant(f"{doc}:{ctx.task_index}")],
            extra={"summaries": [doc.upper()]},
        )

    async def reduce(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls["reduce"] += 1
        return NodePartial(extra={"report": "+".join(snapshot.extra["summaries"])})

    return (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("summarise", summarise)
        .add_node("reduce", reduce)
        .add_edge(START, "plan")
        .add_conditional_edge("plan", fan_out)
        .add_edge("summarise", "reduce")
        .add_edge("reduce", END)
        .with_key_reducer("summaries", "append")
        .compile(RuntimeConfig(checkpointer=store, concurrency_limit=limit))
    )


WANT_REPORT = "ALPHA+BRAVO+CHARLIE+DELTA+ECHO"


@pytest.mark.parametrize("kind", STORES)
async def test_map_reduce_merges_in_send_order(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()
    async with open_store(kind, tmp_path, request) as store:
        app = map_reduce(store, calls)
        final, events = await collect_events(app, hi())
    assert final.extra["report"] == WANT_REPORT
    assert [m.content for m in final.messages[1:]] == [
        f"{d}:{i}" for i, d in enumerate(DOCS)
    ]
    assert calls == Counter({**dict.fromkeys(DOCS, 1), "reduce": 1})
    # Every event of a sent task carries its index.
    summaries = [e for e in events if e.scope_label == "summary"]
    assert {(e.message, e.metadata["task"]) for e in summaries} == {
        (d, i) for i, d in enumerate(DOCS)
    }
    starts = [
        e.metadata["task"]
        for e in events
        if e.scope_label == "node.start" and e.metadata["node"] == "summarise"
    ]
    assert sorted(starts) == list(range(len(DOCS)))


async def test_the_concurrency_limit_applies_to_sent_tasks() -> None:
    calls: Counter[str] = Counter()
    running = [0, 0]
    final = await map_reduce(None, calls, limit=2, running=running).invoke(hi())
    assert final.extra["report"] == WANT_REPORT
    assert running[1] == 2


@pytest.mark.parametrize("kind", STORES[1:])
async def test_a_failed_fan_out_resumes_only_unfinished_tasks(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()
    async with open_store(kind, tmp_path, request) as store:
        app = map_reduce(store, calls, fail_once={"charlie"})
        with pytest.raises(WorkflowError, match="charlie failed"):
            await app.invoke(hi(), session_id="mr")
        async with open_runner(app, checkpointer=store) as runner:
            state = await runner.get_state("mr")
            # What finished before the failure is kept (keyed by task).
            assert set(state.pending_writes) == {"summarise[3]", "summarise[4]"}
            assert state.step == 1
            assert state.next == ("summarise",) * 3
            stored = await store.load_latest("mr")
            assert stored is not None
            assert [s.payload["doc"] for s in stored.sends] == DOCS
        # A new runner (the store's view only) resumes the same tasks.
        final = await app.invoke(None, session_id="mr")
    assert final.extra["report"] == WANT_REPORT
    assert [m.content for m in final.messages[1:]] == [
        f"{d}:{i}" for i, d in enumerate(DOCS)
    ]
    # Cancelled siblings and the failed task re-run; finished ones never do.
    assert calls == Counter(
        {"alpha": 2, "bravo": 2, "charlie": 2, "delta": 1, "echo": 1, "reduce": 1}
    )


async def test_sends_mix_with_names_and_commands() -> None:
    seen: list[tuple[str, Any, int | None]] = []

    async def node(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        seen.append((ctx.node_id, ctx.payload, ctx.task_index))
        if ctx.node_id == "start":
            return NodePartial(frontier=Replace([Send("work", 10), "side"]))
        return NodePartial()

    def route(snapshot: StateSnapshot) -> list[Any]:
        return ["side", Send("work", 1), Send("work", 2)]

    app = (
        GraphBuilder()
        .add_node("start", node, destinations=["work", "side"])
        .add_node("work", node)
        .add_node("side", node, gated=False)
        .add_node("again", node)
        .add_edge(START, "start")
        .add_edge("work", END)
        .add_edge("side", "again")
        .add_conditional_edge("again", route)
        .compile()
    )
    await app.invoke(hi())
    # Names first, then the sends in order; a task's index counts its step's
    # sends. The second visit to "again" is gated out (nothing changed).
    assert seen == [
        ("start", None, None),
        ("side", None, None),
        ("work", 10, 0),
        ("again", None, None),
        ("side", None, None),
        ("work", 1, 0),
        ("work", 2, 1),
    ]


async def test_interrupts_in_sent_tasks_are_answered_by_id() -> None:
    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    async def ask(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        answer = await ctx.interrupt(f"ok {ctx.payload}?")
        return NodePartial(extra={"answers": [f"{ctx.payload}={answer}"]})

    from weavegraph import InMemoryCheckpointer

    store = InMemoryCheckpointer()
    app = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("ask", ask)
        .add_edge(START, "plan")
        .add_conditional_edge("plan", lambda s: [Send("ask", x) for x in "ab"])
        .add_edge("ask", END)
        .with_key_reducer("answers", "append")
        .compile(RuntimeConfig(checkpointer=store))
    )
    await app.invoke(hi(), session_id="q")
    async with open_runner(app, checkpointer=store) as runner:
        state = await runner.get_state("q")
        asked = {i.payload: i for i in state.interrupts}
        assert sorted(asked) == ["ok a?", "ok b?"]
        assert asked["ok a?"].id == "ask[0]@2#0" and asked["ok b?"].task == 1
        final = await runner.resume(
            "q", values={asked["ok a?"].id: "yes", asked["ok b?"].id: "no"}
        )
    assert isinstance(final, VersionedState)
    assert list(final.extra["answers"]) == ["a=yes", "b=no"]


async def test_bad_sends_are_refused() -> None:
    with pytest.raises(StateError, match="cannot send"):
        Send("x", object())
    with pytest.raises(StateError, match="node name"):
        Send("", 1)
    with pytest.raises(InvalidNodeError, match=r"may not contain '\['"):
        GraphBuilder().add_node("a[0]", lambda s, c: NodePartial())

    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    app = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_edge(START, "plan")
        .add_conditional_edge("plan", lambda s: [Send("nope", 1)])
        .compile()
    )
    with pytest.raises(WorkflowError, match="sends to no node"):
        await app.invoke(hi())


async def test_a_paused_fan_out_keeps_its_sends(tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    from weavegraph import SQLiteCheckpointer

    async with SQLiteCheckpointer(tmp_path / "p.db") as store:
        app = map_reduce(store, calls)
        async with open_runner(app, checkpointer=store) as runner:
            await runner.create_session("p", hi())
            first = await runner.run_step("p")  # plan: the sends are stored
            assert not isinstance(first, PausedReport) and not first.completed
        stored = await store.load_latest("p")
        assert stored is not None and len(stored.sends) == len(DOCS)
        final = await app.invoke(None, session_id="p")
    assert final.extra["report"] == WANT_REPORT


async def test_sent_tasks_in_updates_and_step_end() -> None:
    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    async def work(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(extra={f"w{ctx.payload}": ctx.payload})

    app = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("work", work)
        .add_edge(START, "plan")
        .add_conditional_edge("plan", lambda s: [Send("work", i) for i in range(3)])
        .add_edge("work", END)
        .compile()
    )
    async with app.invoke_streaming(hi(), modes=["events", "updates"]) as (run, ev):
        seen = [e async for e in ev]
        await run.join()
    updates = [e for e in seen if e.scope_label == "step.updates"]
    assert [sorted(u.updates) for u in updates] == [
        ["plan"],
        ["work[0]", "work[1]", "work[2]"],
    ]
    assert updates[1].updates["work[2]"].extra == {"w2": 2}
    ends = [e.metadata["ran"] for e in seen if e.scope_label == "step.end"]
    assert ends == [["plan"], ["work[0]", "work[1]", "work[2]"]]


@pytest.mark.parametrize("kind", STORES[1:])
async def test_a_cancelled_fan_out_resumes_the_same_tasks(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    calls: Counter[str] = Counter()
    finished = trio.Event()
    first_run = [True]

    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    async def work(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        calls[ctx.payload] += 1
        if first_run[0] and ctx.payload != "quick":
            await trio.sleep_forever()  # cancelled with the run
        if ctx.payload == "quick":
            finished.set()
        return NodePartial(extra={"done": [ctx.payload]})

    async with open_store(kind, tmp_path, request) as store:
        app = (
            GraphBuilder()
            .add_node("plan", plan)
            .add_node("work", work)
            .add_edge(START, "plan")
            .add_conditional_edge(
                "plan", lambda s: [Send("work", p) for p in ("slow", "quick", "late")]
            )
            .add_edge("work", END)
            .with_key_reducer("done", "append")
            .compile(RuntimeConfig(checkpointer=store))
        )
        async with app.invoke_streaming(hi(), session_id="cx") as (run, _):
            await finished.wait()
            run.cancel("the client left")
        first_run[0] = False
        stored = await store.load_latest("cx")
        assert stored is not None and [s.payload for s in stored.sends] == [
            "slow",
            "quick",
            "late",
        ]
        final = await app.invoke(None, session_id="cx")
    assert list(final.extra["done"]) == ["slow", "quick", "late"]
    assert calls == Counter({"slow": 2, "quick": 1, "late": 2})


async def test_a_command_with_sends_travels_as_json() -> None:
    from weavegraph import event_from_json

    async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(frontier=Replace([Send("work", {"n": 1}), "work"]))

    async def work(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial()

    app = (
        GraphBuilder()
        .add_node("plan", plan, destinations=["work"])
        .add_node("work", work)
        .add_edge(START, "plan")
        .add_edge("work", END)
        .compile()
    )
    async with app.invoke_streaming(hi(), modes=["updates"]) as (run, ev):
        seen = [e async for e in ev]
        await run.join()
    first = next(e for e in seen if e.scope_label == "step.updates")
    text = json.dumps(first.to_json())
    assert '{"send": "work", "payload": {"n": 1}}' in text
    again = event_from_json(json.loads(text))
    assert again == first
    command = again.updates["plan"].frontier
    assert isinstance(command, Replace)
    assert command.targets == (Send("work", {"n": 1}), "work")
