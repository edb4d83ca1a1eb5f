"""``?modes=`` on the SSE routes: events, updates and values, filtered per client."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from asgi import fetch, request

from weavegraph import (
    END,
    START,
    App,
    GraphBuilder,
    InMemoryCheckpointer,
    Message,
    NodeContext,
    NodePartial,
    StateSnapshot,
    event_from_json,
)
from weavegraph.lowlevel import StepUpdates, StepValues
from weavegraph.serve import sse_app

STREAM_END = "__weavegraph_stream_end__"


async def plan(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    ctx.emit("plan", "planning")
    return NodePartial(messages=[Message.assistant("plan")], extra={"planned": True})


async def left(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    return NodePartial(extra={"left": 1})


async def right(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
    await trio.sleep(0.01)
    return NodePartial(extra={"right": 2})


def fan_out() -> App:
    """START -> plan -> (left, right) -> END."""
    return (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("left", left)
        .add_node("right", right)
        .add_edge(START, "plan")
        .add_edge("plan", "left")
        .add_edge("plan", "right")
        .add_edge("left", END)
        .add_edge("right", END)
        .compile()
    )


def parsed(frames: list[dict[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f["event"], json.loads(f["data"])) for f in frames]


async def test_the_default_is_the_events_mode() -> None:
    client = await fetch(sse_app(fan_out()), "POST", "/runs", {"messages": ["go"]})
    kinds = {event for event, _ in parsed(client.frames())}
    assert kinds == {"node", "diagnostic"}  # lifecycle events are diagnostics
    scopes = [data["scope"] for _, data in parsed(client.frames())]
    assert scopes.count("node.start") == 3 and scopes.count("step.end") == 2
    assert scopes[-1] == STREAM_END


async def test_updates_alone_give_partials_by_node() -> None:
    client = await fetch(
        sse_app(fan_out()), "POST", "/runs?modes=updates", {"messages": ["go"]}
    )
    frames = parsed(client.frames())
    assert [event for event, _ in frames] == ["updates", "updates", "diagnostic"]
    first, second = frames[0][1], frames[1][1]
    assert first["scope"] == "step.updates"
    assert first["metadata"]["step"] == 1
    assert first["metadata"]["updates"] == {
        "plan": {
            "messages": [{"role": "assistant", "content": "plan"}],
            "extra": {"planned": True},
        }
    }
    # The fan-out step: keyed by every node that ran, in frontier order.
    assert list(second["metadata"]["updates"]) == ["left", "right"]
    assert second["metadata"]["updates"]["right"] == {"extra": {"right": 2}}
    assert frames[-1][1]["scope"] == STREAM_END
    item = event_from_json(frames[0][1])
    assert isinstance(item, StepUpdates) and item.updates["plan"].extra == {
        "planned": True
    }


async def test_values_are_made_when_the_starting_request_asks() -> None:
    app = sse_app(fan_out(), keep_finished=10)
    client = await fetch(app, "POST", "/runs?modes=values,events", {"session_id": "v"})
    frames = parsed(client.frames())
    values = [data for event, data in frames if event == "values"]
    assert [v["metadata"]["step"] for v in values] == [1, 2]
    assert values[-1]["metadata"]["state"]["extra"] == {
        "planned": True,
        "left": 1,
        "right": 2,
    }
    last = event_from_json(values[-1])
    assert isinstance(last, StepValues) and last.state.extra["right"] == 2
    assert not any(event == "updates" for event, _ in frames)  # made, not asked
    # Each step's values follow that step's events.
    order = [
        (event, data["metadata"].get("step"))
        for event, data in frames
        if event == "values" or data["scope"] == "step.end"
    ]
    assert order == [("diagnostic", 1), ("values", 1), ("diagnostic", 2), ("values", 2)]
    # Another client asks for everything the run logged: updates were made too.
    again = await fetch(app, "GET", "/runs/v/events?modes=updates,values")
    assert [e for e, _ in parsed(again.frames())] == [
        "updates",
        "values",
        "updates",
        "values",
        "diagnostic",
    ]
    runs = (await fetch(app, "GET", "/runs")).json()["runs"]
    assert runs[0]["modes"] == ["events", "updates", "values"]


async def test_a_run_nobody_asked_values_of_has_none() -> None:
    app = sse_app(fan_out())
    await fetch(app, "POST", "/runs", {"session_id": "n"})
    client = await fetch(app, "GET", "/runs/n/events?modes=values")
    frames = parsed(client.frames())
    assert [data["scope"] for _, data in frames] == [STREAM_END]


async def test_reconnecting_with_a_mode_resumes_after_the_last_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        for i in range(5):
            ctx.emit("tick", f"t{i}")
            await trio.sleep(0.01)
        return NodePartial(extra={ctx.node_id: ctx.step})

    app = (
        GraphBuilder()
        .add_node("a", slow)
        .add_node("b", slow)
        .add_node("c", slow)
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_edge("b", "c")
        .add_edge("c", END)
        .compile()
    )
    served = sse_app(app, grace=5.0)
    async with request(
        served, "POST", "/runs?modes=updates", {"session_id": "u"}
    ) as first:
        await first.wait_for(b'"step":2')
        seen = first.frames()
        await first.disconnect()
    assert [f["event"] for f in seen] == ["updates", "updates"]
    again = await fetch(
        served,
        "GET",
        "/runs/u/events?modes=updates",
        headers={"Last-Event-ID": seen[-1]["id"]},
    )
    rest = parsed(again.frames())
    assert [(e, d["metadata"].get("step")) for e, d in rest] == [
        ("updates", 3),
        ("diagnostic", 3),
    ]
    assert rest[-1][1]["metadata"]["status"] == "completed"
    ids = [int(f["id"]) for f in seen + again.frames()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_resume_takes_modes_and_the_continuation_has_updates() -> None:
    async def ask(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        answer = await ctx.interrupt("ok?")
        return NodePartial(extra={"answer": answer})

    app = (
        GraphBuilder()
        .add_node("ask", ask)
        .add_edge(START, "ask")
        .add_edge("ask", END)
        .compile()
    )
    served = sse_app(app, checkpointer=InMemoryCheckpointer())
    paused = await fetch(served, "POST", "/runs?modes=updates", {"session_id": "r"})
    (end,) = parsed(paused.frames())  # the interrupted step committed nothing
    assert end[1]["metadata"]["status"] == "interrupted"
    resumed = await fetch(
        served, "POST", "/runs/r/resume?modes=updates,values", {"value": "yes"}
    )
    frames = parsed(resumed.frames())
    assert [e for e, _ in frames] == ["updates", "values", "diagnostic"]
    assert frames[0][1]["metadata"]["updates"] == {"ask": {"extra": {"answer": "yes"}}}
    assert frames[1][1]["metadata"]["state"]["extra"] == {"answer": "yes"}


async def test_a_stored_replay_keeps_its_steps_in_the_events_mode() -> None:
    store = InMemoryCheckpointer()
    await fetch(
        sse_app(fan_out(), checkpointer=store), "POST", "/runs", {"session_id": "s"}
    )
    fresh = sse_app(fan_out(), checkpointer=store)
    steps = await fetch(fresh, "GET", "/runs/s/events?modes=events,updates")
    # One per stored step: the start (step 0) and the two steps that ran.
    assert [d["scope"] for _, d in parsed(steps.frames())] == [
        "replay.step",
        "replay.step",
        "replay.step",
        STREAM_END,
    ]
    bare = await fetch(fresh, "GET", "/runs/s/events?modes=updates")
    assert [d["scope"] for _, d in parsed(bare.frames())] == [STREAM_END]


async def test_a_failed_step_has_no_updates_and_the_stream_ends_once() -> None:
    async def boom(snapshot: StateSnapshot, ctx: NodeContext) -> None:
        raise RuntimeError("boom")

    app = (
        GraphBuilder()
        .add_node("plan", plan)
        .add_node("boom", boom)
        .add_edge(START, "plan")
        .add_edge("plan", "boom")
        .add_edge("boom", END)
        .compile()
    )
    client = await fetch(sse_app(app), "POST", "/runs?modes=events,updates", {})
    frames = parsed(client.frames())
    updates = [d["metadata"]["step"] for e, d in frames if e == "updates"]
    assert updates == [1]
    assert [d["scope"] for _, d in frames].count(STREAM_END) == 1
    assert frames[-1][1]["metadata"]["status"] == "error"
    assert any(d["scope"] == "node.error" for _, d in frames)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/runs?modes=updatez"),
        ("POST", "/runs?modes=,"),
        ("GET", "/runs/x/events?modes=events,nope"),
        ("POST", "/runs/x/resume?modes=value"),
    ],
)
async def test_bad_modes_are_a_400_naming_the_valid_ones(
    method: str, path: str
) -> None:
    app = sse_app(fan_out(), checkpointer=InMemoryCheckpointer())
    body = {} if method == "POST" else None
    client = await fetch(app, method, path, body)
    assert client.status == 400
    error = client.json()["error"]
    assert "'events', 'updates', 'values'" in error and "modes" in error
    assert not app.runs  # nothing started
