"""Real hypercorn on 127.0.0.1:0, a real HTTP client reading incrementally."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from functools import partial

import httpx2
import pytest
import trio

from weavegraph import (
    END,
    START,
    GraphBuilder,
    NodeContext,
    NodePartial,
    RuntimeConfig,
    StateSnapshot,
)
from weavegraph.serve import serve_sse, sse_app

# These tests stop reading streams early on purpose (that is what a leaving
# client does). httpx2 reads a streamed body through nested async generators;
# those its caller cannot reach stay unfinished and trio warns when they are
# collected. The warnings are about the client library, not the server.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def emitter(
    count: int,
    delay: float,
    log: list[float] | None = None,
    noticed: trio.Event | None = None,
):
    async def emit(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
        try:
            for i in range(count):
                ctx.emit("tick", f"t{i}", pad="x" * 200)
                if delay:
                    await trio.sleep(delay)
                elif i % 100 == 0:
                    await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            if log is not None:
                log.append(time.monotonic())
            if noticed is not None:
                noticed.set()
            raise
        return NodePartial(extra={"count": count})

    return (
        GraphBuilder()
        .add_node("emit", emit)
        .add_edge(START, "emit")
        .add_edge("emit", END)
        .compile(RuntimeConfig(lifecycle_events=False))
    )


# A server run adds lifecycle events (node.start before the ticks; node.end,
# step.end and the step's updates after them) to the node's own events.
AROUND_TICKS = 5
"""Events of an emitter's run besides its ticks, the stream-end event included."""


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[object]:
    started: dict[str, str] = {}

    async def start(asgi: object) -> str:
        urls = await nursery.start(partial(serve_sse, asgi, port=0))
        started["url"] = urls[0]
        return urls[0]

    yield start


def frames(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
        if fields:
            out.append(fields)
    return out


async def test_events_arrive_while_the_run_is_going(server) -> None:
    url = await server(sse_app(emitter(5, 0.2)))
    arrivals: list[float] = []
    start = time.monotonic()
    async with httpx2.AsyncClient(timeout=30) as client:
        async with client.stream("POST", f"{url}/runs", json={}) as response:
            assert response.status_code == 200
            async for sse in httpx2.EventSource(response):
                end = json.loads(sse.data)["scope"] == "__weavegraph_stream_end__"
                if sse.event == "node" or end:
                    arrivals.append(time.monotonic() - start)
                if end:
                    break
    assert len(arrivals) == 6
    assert arrivals[0] < 0.6  # the first event came long before the run ended
    assert arrivals[-1] > 0.8


async def test_client_disconnect_cancels_the_run_within_100ms(server) -> None:
    cancelled: list[float] = []
    noticed = trio.Event()
    url = await server(sse_app(emitter(100_000, 0.005, cancelled, noticed)))
    async with httpx2.AsyncClient(timeout=30) as client:
        async with client.stream("POST", f"{url}/runs", json={}) as response:
            async for sse in httpx2.EventSource(response):
                if sse.id == "3":
                    break
        left = time.monotonic()
    with trio.move_on_after(2):
        await noticed.wait()
    assert cancelled, "the run was not cancelled"
    assert cancelled[0] - left < 0.1


async def test_reconnect_with_last_event_id(server) -> None:
    url = await server(sse_app(emitter(30, 0.01), grace=2.0))
    ids: list[int] = []
    async with httpx2.AsyncClient(timeout=30) as client:
        async with client.stream(
            "POST", f"{url}/runs?modes=events,updates", json={"session_id": "again"}
        ) as response:
            async for sse in httpx2.EventSource(response):
                ids.append(int(sse.id))
                if len(ids) == 10:
                    break
        # The connection dropped; the browser-style reconnect resumes after id 10.
        async with client.stream(
            "GET",
            f"{url}/runs/again/events?modes=events,updates",
            headers={"Last-Event-ID": str(ids[-1])},
        ) as response:
            ids.extend([int(sse.id) async for sse in httpx2.EventSource(response)])
    assert ids == list(range(1, 30 + AROUND_TICKS + 1))


async def test_one_stalled_client_does_not_slow_fifty_others(server) -> None:
    total = 6000  # ~1.6 MB of frames: more than the socket buffers hold
    app = sse_app(emitter(total, 0.0), log_capacity=500, grace=10.0)
    url = await server(app)
    done: dict[int, float] = {}
    counts: dict[int, int] = {}
    started = trio.Event()
    stall = trio.Event()
    stalled_result: dict[str, int] = {}

    async def watcher(i: int, client: httpx2.AsyncClient) -> None:
        async with client.stream("GET", f"{url}/runs/shared/events") as response:
            n = 0
            async for sse in httpx2.EventSource(response):
                n += sse.event != "dropped"
            counts[i] = n
            done[i] = time.monotonic()

    async def stalled(client: httpx2.AsyncClient) -> None:
        async with client.stream("GET", f"{url}/runs/shared/events") as response:
            lines = response.aiter_lines()
            await lines.__anext__()
            await stall.wait()  # stop reading while the others finish
            text = "\n".join([line async for line in lines])
        got = frames(text)
        stalled_result["dropped"] = max(
            (
                json.loads(f["data"])["total"]
                for f in got
                if f.get("event") == "dropped"
            ),
            default=0,
        )
        stalled_result["last"] = int(got[-1]["id"])

    async def owner(client: httpx2.AsyncClient) -> None:
        async with client.stream(
            "POST", f"{url}/runs", json={"session_id": "shared"}
        ) as r:
            started.set()
            async for _ in r.aiter_bytes():
                pass

    limits = httpx2.Limits(max_connections=100)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(owner, client)
            await started.wait()
            nursery.start_soon(stalled, client)
            async with trio.open_nursery() as watchers:
                for i in range(49):
                    watchers.start_soon(watcher, i, client)
            stall.set()
    assert len(done) == 49
    # Every fast client saw the whole run (those that attached late start from
    # the log's window), ending with the sentinel; none waited for the stalled one.
    assert all(count > 0 for count in counts.values())
    assert stalled_result["dropped"] > 0  # the stalled client's own drops, counted
    # ... and it still got the end (the last event of the run).
    assert stalled_result["last"] == total + AROUND_TICKS
