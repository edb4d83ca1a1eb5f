"""SSE serving throughput over real hypercorn on loopback, next to in-process streams.

A one-node graph emits N events (``ctx.emit``, a checkpoint every 256; lossless
bus). In process: one reader through ``app.invoke_streaming``, or K streams of an
`EventBus` subscribed before ``open_runner`` starts it. Over HTTP
(``weavegraph.serve.serve_sse`` on 127.0.0.1, an httpx2 client in the same process
and trio loop, so both sides share one core): one ``POST /runs`` client, or that
POST plus K - 1 ``GET /runs/{id}/events`` clients on the same run. SSE frames are
counted in the raw bytes. Time to first event: a one-event graph, from starting
the run (or sending the POST) to its first event.
"""

from __future__ import annotations

import logging
import uuid
from functools import partial
from typing import Any

import httpx2
import trio
from _common import Case, expect, header, measure, options, rate, ratio, table, us

import weavegraph as wg
from weavegraph.serve import serve_sse

YIELD_EVERY = 256
MARK = b"\nevent: "
DROPPED = b"\nevent: dropped"


def one_node_app(n: int) -> wg.App:
    chunks, rest = divmod(n, YIELD_EVERY)
    checkpoint = trio.lowlevel.checkpoint

    async def produce(snapshot: Any, ctx: wg.NodeContext) -> None:
        for _ in range(chunks):
            for _ in range(YIELD_EVERY):
                ctx.emit("tick", "m")
            await checkpoint()
        for _ in range(rest):
            ctx.emit("tick", "m")

    config = wg.RuntimeConfig(  # only the node's events (lifecycle: engine.py)
        event_bus=wg.EventBusConfig(overflow="block"), lifecycle_events=False
    )
    return (
        wg.GraphBuilder()
        .add_node("p", produce)
        .add_edge(wg.START, "p")
        .add_edge("p", wg.END)
        .compile(config)
    )


class Frames:
    """Counts SSE frames in a byte stream arriving in arbitrary chunks."""

    def __init__(self, on_first: Any = None) -> None:
        self.count = 0
        self.dropped = 0
        self.tail = b"\n"  # stands for the start of the stream
        self.on_first = on_first

    def feed(self, chunk: bytes) -> None:
        # A mark split over two chunks shows up in the few bytes around the edge.
        edge = self.tail[1 - len(MARK) :] + chunk[: len(MARK) - 1]
        found = chunk.count(MARK) + edge.count(MARK)
        edge = self.tail[1 - len(DROPPED) :] + chunk[: len(DROPPED) - 1]
        self.dropped += chunk.count(DROPPED) + edge.count(DROPPED)
        if found and self.on_first is not None:
            self.on_first()
            self.on_first = None
        self.count += found
        self.tail = (self.tail + chunk)[-2048:]

    def problem(self, expected: int) -> str | None:
        last = self.tail.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
        if self.dropped or self.count != expected:
            return f"{self.count} frames ({self.dropped} 'dropped'), not {expected}"
        if wg.STREAM_END_SCOPE.encode() not in last or b"status=completed" not in last:
            return f"the stream does not end with a completed run: {last[-200:]!r}"
        return None


async def http_run(
    client: httpx2.AsyncClient, base: str, graph: str, k: int, watch: Any, first: bool
) -> list[Frames]:
    """One run of ``graph``: a POST client and ``k - 1`` clients attaching to it.

    Times the whole run, or with ``first`` until the POST client's first frame.
    """
    session = f"bench-{uuid.uuid4().hex}"
    frames = [Frames(watch.stop if first and not i else None) for i in range(k)]

    async def read(response: httpx2.Response, counter: Frames) -> None:
        expect(response.status_code == 200, f"HTTP {response.status_code}")
        async for chunk in response.aiter_bytes():
            counter.feed(chunk)

    async def post(*, task_status: Any) -> None:
        body = {"graph": graph, "session_id": session}
        async with client.stream("POST", f"{base}/runs", json=body) as response:
            task_status.started()  # the run is registered: others may attach
            await read(response, frames[0])

    async def attach(i: int) -> None:
        async with client.stream("GET", f"{base}/runs/{session}/events") as response:
            await read(response, frames[i])

    watch.start()
    async with trio.open_nursery() as nursery:
        await nursery.start(post)
        for i in range(1, k):
            nursery.start_soon(attach, i)
    if not first:
        watch.stop()
    return frames


SERVER_LIFECYCLE = 3
"""node.start, node.end and step.end: a server's runs always publish them."""


def check_frames(n: int) -> Any:
    def check(frames: list[Frames]) -> None:
        expected = n + SERVER_LIFECYCLE + 1
        problems = {p for p in (f.problem(expected) for f in frames) if p}
        expect(not problems, "; ".join(sorted(problems)))

    return check


async def inprocess_one(app: wg.App, watch: Any, first: bool) -> list[Any]:
    events_seen: list[Any] = []
    watch.start()
    async with app.invoke_streaming(wg.VersionedState()) as (run, events):
        events_seen.append(await events.receive())
        if first:
            watch.stop()
        events_seen.extend([event async for event in events])
        await run.join()
    if not first:
        watch.stop()
    return [events_seen]


async def inprocess_many(app: wg.App, k: int, watch: Any) -> list[Any]:
    bus = wg.EventBus(overflow="block")
    streams = [bus.subscribe() for _ in range(k)]
    seen: list[list[Any]] = [[] for _ in range(k)]

    async def consume(i: int) -> None:
        seen[i] = [event async for event in streams[i]]

    with watch:
        async with trio.open_nursery() as nursery:
            for i in range(k):
                nursery.start_soon(consume, i)
            async with wg.open_runner(app, event_bus=bus) as runner:
                session = f"bench-{uuid.uuid4().hex}"
                await runner.create_session(session, wg.VersionedState())
                await runner.run_until_complete(session)
    return seen


def check_streams(n: int) -> Any:
    def check(seen: list[list[Any]]) -> None:
        for events in seen:
            expect(len(events) == n + 1, f"a reader got {len(events)} of {n + 1}")
            last = events[-1]
            expect(
                last.is_stream_end and "status=completed" in last.message,
                f"the stream ends with {last!r}",
            )

    return check


async def main_async(args: Any) -> None:
    n, k = args.n, args.clients
    apps = {"stream": one_node_app(n), "first": one_node_app(1)}
    async with trio.open_nursery() as nursery:
        server = partial(serve_sse, apps, port=0, log_capacity=n + 10, grace=30.0)
        base = (await nursery.start(server))[0]
        limits = httpx2.Limits(max_connections=k + 8, max_keepalive_connections=k + 8)
        async with httpx2.AsyncClient(limits=limits, timeout=60.0) as client:
            http = partial(http_run, client, base)
            throughput = [
                Case(
                    "in-process/1",
                    partial(inprocess_one, apps["stream"], first=False),
                    check_streams(n),
                    n,
                ),
                Case(
                    "http/1",
                    partial(http, "stream", 1, first=False),
                    check_frames(n),
                    n,
                ),
                Case(
                    f"in-process/{k}",
                    partial(inprocess_many, apps["stream"], k),
                    check_streams(n),
                    n * k,
                ),
                Case(
                    f"http/{k}",
                    partial(http, "stream", k, first=False),
                    check_frames(n),
                    n * k,
                ),
            ]
            found = await measure(throughput, args.runs)
            latency = [
                Case(
                    "in-process",
                    partial(inprocess_one, apps["first"], first=True),
                    check_streams(1),
                ),
                Case("http", partial(http, "first", 1, first=True), check_frames(1)),
            ]
            firsts = await measure(latency, args.first_runs)
        nursery.cancel_scope.cancel()

    table(
        f"Deliveries/s, N = {n:,} events per run (events x readers / time)",
        ["readers", "in-process", "HTTP", "in-process / HTTP"],
        [
            [
                str(r),
                rate(found[f"in-process/{r}"]),
                rate(found[f"http/{r}"]),
                ratio(found[f"http/{r}"], found[f"in-process/{r}"]),
            ]
            for r in (1, k)
        ],
    )
    table(
        f"Time to first event, µs (median of {args.first_runs})",
        ["path", "µs", "vs in-process"],
        [
            [c.name, us(firsts[c.name]), ratio(firsts[c.name], firsts["in-process"])]
            for c in latency
        ],
    )


def main() -> None:
    args = options(
        __doc__.splitlines()[0], n=(20_000, 300), clients=(50, 10), first_runs=(20, 3)
    )
    header("bench/serve.py", args, ["weavegraph", "hypercorn", "httpx2"])
    # Hypercorn's start-up banner ("Running on ...") is no result.
    logging.getLogger("hypercorn.error").addFilter(
        lambda record: record.levelno >= logging.WARNING
    )
    trio.run(main_async, args)


if __name__ == "__main__":
    main()
