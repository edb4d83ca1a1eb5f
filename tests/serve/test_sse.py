"""The SSE ASGI app, in-process: framing, errors, disconnects, re-attaching."""

from __future__ import annotations

import json

import trio
import trio.testing
from asgi import fetch, request

from weavegraph import (
    END,
    START,
    GraphBuilder,
    InMemoryCheckpointer,
    Message,
    NodeContext,
    NodeEvent,
    NodePartial,
    RuntimeConfig,
    StateSnapshot,
)
from weavegraph.serve import encode_sse, sse_app

QUIET = RuntimeConfig(lifecycle_events=False)
"""The app's own setting; a run the server starts has lifecycle events anyway.

A ticker run logs: 1 ``node.start``, 2-4 the ticks, 5 ``node.end``, 6
``step.end``, 7 the step's updates (shown only with ``?modes=`` naming
``updates``), 8 the stream's end.
"""


def ticker(count: int = 3, delay: float = 0.0, log: list[str] | None = None):
    async def tick(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        try:
            for i in range(count):
                ctx.emit("tick", f"t{i}")
                await trio.sleep(delay)
        except trio.Cancelled:
            if log is not None:
                log.append(f"cancelled at {trio.current_time():.3f}")
            raise
        return NodePartial(messages=[Message.assistant(f"ticked {count}")])

    return (
        GraphBuilder()
        .add_node("tick", tick)
        .add_edge(START, "tick")
        .add_edge("tick", END)
        .compile(QUIET)
    )


def test_frame_format() -> None:
    frame = encode_sse(NodeEvent(scope="s", message="m", timestamp=0.0), 7)
    head, data = frame.split(b"data: ")
    assert head == b"id: 7\nevent: node\n"
    assert data.endswith(b"\n\n")
    assert json.loads(data)["scope"] == "s"


async def test_post_runs_streams_every_event_then_the_sentinel() -> None:
    client = await fetch(
        sse_app(ticker()),
        "POST",
        "/runs",
        {"messages": [{"role": "user", "content": "go"}]},
    )
    assert client.status == 200
    assert client.headers["content-type"].startswith("text/event-stream")
    frames = client.frames()
    assert [f["id"] for f in frames] == ["1", "2", "3", "4", "5", "6", "8"]
    assert [f["event"] for f in frames] == ["diagnostic"] + ["node"] * 3 + [
        "diagnostic"
    ] * 3
    scopes = [json.loads(f["data"])["scope"] for f in frames]
    assert scopes[0] == "node.start" and scopes[4:6] == ["node.end", "step.end"]
    assert [json.loads(f["data"])["message"] for f in frames[1:4]] == ["t0", "t1", "t2"]
    last = json.loads(frames[-1]["data"])
    assert last["scope"] == "__weavegraph_stream_end__"
    assert "status=completed step=1" in last["message"]


async def test_errors_are_json_4xx() -> None:
    app = sse_app({"one": ticker(), "two": ticker()})
    cases = [
        ("POST", "/runs", b"{not json", 400, "not valid JSON"),
        ("POST", "/runs", [1, 2], 400, "JSON object"),
        ("POST", "/runs", {"graph": "three"}, 404, "unknown graph 'three'"),
        (
            "POST",
            "/runs",
            {"messages": [{"content": 5}]},
            400,
            "content must be a string",
        ),
        ("POST", "/runs", {"bogus": 1}, 400, "unknown keys"),
        ("GET", "/runs/nope/events", None, 404, "unknown session 'nope'"),
        ("DELETE", "/runs", None, 405, "not allowed"),
        ("GET", "/nowhere", None, 404, "no route"),
        ("GET", "/graph?graph=zzz", None, 404, "unknown graph"),
    ]
    for method, path, body, status, text in cases:
        client = await fetch(app, method, path, body)
        assert client.status == status, (method, path, client.body)
        assert text in client.json()["error"], client.json()


async def test_request_body_limit() -> None:
    app = sse_app(ticker(), max_body=100)
    client = await fetch(app, "POST", "/runs", b"x" * 500)
    assert client.status == 413
    assert "larger than 100 bytes" in client.json()["error"]


async def test_graph_and_runs_listing() -> None:
    app = sse_app({"main": ticker()})
    graph = (await fetch(app, "GET", "/graph")).json()
    assert graph["nodes"] == ["START", "tick", "END"]
    assert graph["edges"] == [["START", "tick"], ["tick", "END"]]
    assert graph["mermaid"].startswith("flowchart TD")
    await fetch(app, "POST", "/runs", {"session_id": "s1"})
    runs = (await fetch(app, "GET", "/runs")).json()["runs"]
    assert runs == [
        {
            "session_id": "s1",
            "graph": "main",
            "status": "completed",
            "events": 8,
            "clients": 0,
            "modes": ["events", "updates"],
        }
    ]


async def test_the_page_is_served() -> None:
    client = await fetch(sse_app(ticker()), "GET", "/")
    assert client.status == 200
    assert client.headers["content-type"].startswith("text/html")
    assert b"<svg" in client.body or b"svg" in client.body


async def test_disconnect_cancels_the_run_within_100ms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    app = sse_app(ticker(count=10_000, delay=0.01, log=log))
    async with request(app, "POST", "/runs", {}) as client:
        await client.wait_for(b"t5")
        left_at = trio.current_time()
        await client.disconnect()
    assert len(log) == 1
    cancelled_at = float(log[0].split()[-1])
    assert cancelled_at - left_at < 0.1
    runs = (await fetch(app, "GET", "/runs")).json()["runs"]
    assert runs[0]["status"] == "cancelled"


async def test_reattach_with_last_event_id_neither_loses_nor_repeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = sse_app(ticker(count=20, delay=0.01), grace=1.0)
    every = "?modes=events,updates"  # everything this run logs
    async with request(app, "POST", "/runs" + every, {"session_id": "r"}) as first:
        await first.wait_for(b"t4")
        seen = first.frames()
        async with request(
            app,
            "GET",
            "/runs/r/events" + every,
            headers={"Last-Event-ID": seen[-1]["id"]},
        ) as second:
            await first.disconnect()  # the second client keeps the run alive
            await second.finished.wait()
    resumed = second.frames()
    ids = [int(f["id"]) for f in seen + resumed]
    assert ids == list(range(1, 26))  # start, 20 ticks, end, step, updates, end
    assert json.loads(resumed[-1]["data"])["message"].endswith(
        "status=completed step=1"
    )


async def test_a_finished_run_replays_from_its_log() -> None:
    app = sse_app(ticker())
    await fetch(app, "POST", "/runs", {"session_id": "done"})
    again = await fetch(app, "GET", "/runs/done/events", headers={"Last-Event-ID": "2"})
    # 7 is the step's updates: not asked for, not sent, still numbered.
    assert [f["id"] for f in again.frames()] == ["3", "4", "5", "6", "8"]
    bad = await fetch(app, "GET", "/runs/done/events", headers={"Last-Event-ID": "x"})
    assert bad.status == 400


async def test_a_stored_run_replays_from_the_checkpointer() -> None:
    store = InMemoryCheckpointer()
    first = sse_app(ticker(), checkpointer=store)
    await fetch(first, "POST", "/runs", {"session_id": "kept"})
    fresh = sse_app(ticker(), checkpointer=store)  # a restarted server
    client = await fetch(fresh, "GET", "/runs/kept/events")
    frames = client.frames()
    assert [json.loads(f["data"])["scope"] for f in frames] == [
        "replay.step",
        "replay.step",
        "__weavegraph_stream_end__",
    ]
    assert "status=completed step=1" in json.loads(frames[-1]["data"])["message"]


async def test_keepalive_comments_when_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = sse_app(ticker(count=2, delay=40.0), keepalive=15.0)
    client = await fetch(app, "POST", "/runs", {})
    assert client.body.count(b": keep-alive\n\n") >= 2
    assert client.frames()[-1]["event"] == "diagnostic"


async def test_lifespan_and_shutdown_end_open_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = sse_app(ticker(count=10_000, delay=0.01))
    to_app, from_server = trio.open_memory_channel[dict](4)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, {"type": "lifespan"}, from_server.receive, send)
        await to_app.send({"type": "lifespan.startup"})
        async with request(app, "POST", "/runs", {}) as client:
            await client.wait_for(b"t3")
            await to_app.send({"type": "lifespan.shutdown"})
            await client.finished.wait()
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert "status=cancelled" in json.loads(client.frames()[-1]["data"])["message"]


async def test_concurrent_runs_with_a_conflicting_session_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = sse_app(ticker(count=100, delay=0.01))
    async with request(app, "POST", "/runs", {"session_id": "same"}) as first:
        await first.wait_for(b"t1")
        clash = await fetch(app, "POST", "/runs", {"session_id": "same"})
        assert clash.status == 409
        await first.disconnect()


async def test_final_state_of_a_run() -> None:
    store = InMemoryCheckpointer()
    app = sse_app(ticker(), checkpointer=store)
    await fetch(app, "POST", "/runs", {"session_id": "st", "messages": ["hello"]})
    state = (await fetch(app, "GET", "/runs/st/state")).json()
    assert state["status"] == "completed"
    assert [m["content"] for m in state["state"]["messages"]] == ["hello", "ticked 3"]
    assert state["state"]["versions"]["messages"] == 2
    restarted = sse_app(ticker(), checkpointer=store)
    stored = (await fetch(restarted, "GET", "/runs/st/state")).json()
    assert stored["state"] == state["state"] and stored["step"] == 1
    missing = await fetch(restarted, "GET", "/runs/nope/state")
    assert missing.status == 404


async def test_post_runs_on_a_stored_session_takes_a_new_turn() -> None:
    async def reply(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        return NodePartial(
            messages=[Message.assistant("re: " + snapshot.messages[-1].content)]
        )

    store = InMemoryCheckpointer()
    graph = (
        GraphBuilder()
        .add_node("reply", reply)
        .add_edge(START, "reply")
        .add_edge("reply", END)
        .compile(RuntimeConfig(checkpointer=store))
    )
    app = sse_app(graph, checkpointer=store)
    for text in ("one", "two"):
        client = await fetch(
            app,
            "POST",
            "/runs",
            {"session_id": "chat", "messages": [{"role": "user", "content": text}]},
        )
        assert client.status == 200
        end = json.loads(client.frames()[-1]["data"])
        assert end["metadata"]["status"] == "completed"
    stored = await store.load_latest("chat")
    assert stored is not None
    assert [m.content for m in stored.state.messages] == [
        "one",
        "re: one",
        "two",
        "re: two",
    ]


async def test_graph_shows_subgraphs_nested() -> None:
    inner = (
        GraphBuilder()
        .add_node("search", ticker().graph.nodes["tick"].body)
        .add_edge(START, "search")
        .add_edge("search", END)
        .compile()
    )
    outer = (
        GraphBuilder()
        .add_node("research", inner)
        .add_edge(START, "research")
        .add_edge("research", END)
        .compile()
    )
    graph = (await fetch(sse_app(outer), "GET", "/graph")).json()
    assert graph["nodes"] == ["START", "research", "END"]
    assert graph["subgraphs"] == {
        "research": {
            "nodes": ["START", "search", "END"],
            "edges": [["START", "search"], ["search", "END"]],
            "conditional": [],
            "subgraphs": {},
        }
    }
    assert 'subgraph n1_graph ["research"]' in graph["mermaid"]
