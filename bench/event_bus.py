"""Event streaming throughput: weavegraph next to raw trio, a floor and LangGraph.

One reader, N events: building the ``NodeEvent`` objects alone (no bus), a raw
trio memory channel carrying N ready-made events, a one-node graph emitting N
events read through ``app.invoke_streaming`` (lossless ``overflow="block"``;
``ctx.emit`` with a checkpoint every 256, or ``await ctx.emit_async`` for each),
and LangGraph's ``stream_mode="custom"`` (asyncio). K readers: one `EventBus`
(subscribed before it starts, so its broadcaster task fans out), one producer,
K reading tasks; deliveries = N * K. Lossless accounting and bounded memory are
product properties, tested in tests/events/test_bus_accounting.py.
"""

from __future__ import annotations

from typing import Any, TypedDict

import trio
from _common import Case, expect, header, measure, options, peer, rate, ratio, table

import weavegraph as wg

CAPACITY = 1024
YIELD_EVERY = 256
READERS = (1, 4, 16)


def make_event() -> wg.NodeEvent:
    return wg.NodeEvent(scope="tick", message="m", node_id="p", step=1, session_id="s")


def floor_case(n: int) -> Case:
    async def run(watch: Any) -> int:
        built = 0
        with watch:
            for _ in range(n):
                wg.NodeEvent(
                    scope="tick", message="m", node_id="p", step=1, session_id="s"
                )
                built += 1
        return built

    return Case("NodeEvent(...) alone", run, lambda b: expect(b == n, f"{b} of {n}"), n)


def raw_trio_case(events: list[wg.NodeEvent]) -> Case:
    async def run(watch: Any) -> int:
        received = 0
        with watch:
            send, receive = trio.open_memory_channel[wg.NodeEvent](CAPACITY)

            async def produce() -> None:
                with send:
                    for event in events:
                        await send.send(event)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                with receive:
                    async for _ in receive:
                        received += 1
        return received

    n = len(events)
    return Case(
        "raw trio memory channel", run, lambda r: expect(r == n, f"got {r} of {n}"), n
    )


def e2e_case(name: str, n: int, producer: str) -> Case:
    chunks, rest = divmod(n, YIELD_EVERY)
    checkpoint = trio.lowlevel.checkpoint

    async def emit(snapshot: Any, ctx: wg.NodeContext) -> None:
        for _ in range(chunks):
            for _ in range(YIELD_EVERY):
                ctx.emit("tick", "m")
            await checkpoint()
        for _ in range(rest):
            ctx.emit("tick", "m")

    async def emit_async(snapshot: Any, ctx: wg.NodeContext) -> None:
        for _ in range(n):
            await ctx.emit_async("tick", "m")

    node = emit if producer == "emit" else emit_async
    config = wg.RuntimeConfig(  # only the node's events (lifecycle: engine.py)
        event_bus=wg.EventBusConfig(capacity=CAPACITY, overflow="block"),
        lifecycle_events=False,
    )
    app = (
        wg.GraphBuilder()
        .add_node("p", node)
        .add_edge(wg.START, "p")
        .add_edge("p", wg.END)
        .compile(config)
    )

    async def run(watch: Any) -> tuple[int, Any, int]:
        received, last = 0, None
        with watch:
            async with app.invoke_streaming(wg.VersionedState()) as (run, events):
                async for last in events:  # noqa: B007 - the last one is checked
                    received += 1
                await run.join()
        return received, last, events.dropped

    def check(result: tuple[int, Any, int]) -> None:
        received, last, dropped = result
        expect(
            received == n + 1 and dropped == 0,
            f"received {received} (dropped {dropped}), expected {n} + the sentinel",
        )
        expect(last.is_stream_end, f"the last event is {last!r}, not the stream end")

    return Case(name, run, check, n)


class LgState(TypedDict, total=False):
    done: bool


def langgraph_case(lg: Any, lg_config: Any, n: int) -> Case:
    payload = {"scope": "tick", "message": "m"}

    async def producer(state: LgState) -> dict[str, Any]:
        write = lg_config.get_stream_writer()
        for _ in range(n):
            write(payload)
        return {"done": True}

    g = lg.StateGraph(LgState)
    g.add_node("p", producer)
    g.add_edge(lg.START, "p")
    g.add_edge("p", lg.END)
    graph = g.compile()

    async def run(watch: Any) -> int:
        received = 0
        with watch:
            async for _ in graph.astream({"done": False}, stream_mode="custom"):
                received += 1
        return received

    return Case(
        'LangGraph astream(stream_mode="custom")',
        run,
        lambda r: expect(r == n, f"received {r} of {n}"),
        n,
        loop="asyncio",
    )


def bus_case(events: list[wg.NodeEvent], k: int) -> Case:
    checkpoint = trio.lowlevel.checkpoint

    async def run(watch: Any) -> tuple[list[int], list[int]]:
        bus = wg.EventBus(capacity=CAPACITY, overflow="block")
        streams = [bus.subscribe() for _ in range(k)]
        got = [0] * k

        async def consume(i: int, stream: wg.EventStream) -> None:
            count = 0
            async for _ in stream:
                count += 1
            got[i] = count

        async def produce() -> None:
            emit = bus.emit
            for start in range(0, len(events), YIELD_EVERY):
                for event in events[start : start + YIELD_EVERY]:
                    emit(event)
                await checkpoint()
            bus.close()

        with watch:
            async with bus, trio.open_nursery() as nursery:
                for i, stream in enumerate(streams):
                    nursery.start_soon(consume, i, stream)
                nursery.start_soon(produce)
        return got, [s.dropped for s in streams]

    def check(result: tuple[list[int], list[int]]) -> None:
        got, dropped = result
        n = len(events)
        expect(got == [n] * k, f"readers received {got}, expected {n} each")
        expect(dropped == [0] * k, f"a lossless bus dropped {dropped}")

    return Case(f"bus/{k}", run, check, len(events) * k)


def main() -> None:
    args = options(__doc__.splitlines()[0], n=(200_000, 5_000))
    header("bench/event_bus.py", args, ["weavegraph", "langgraph"])
    n = args.n
    events = [make_event() for _ in range(n)]
    e2e = "weavegraph invoke_streaming, ctx.emit + checkpoint/256"
    one = [
        floor_case(n),
        raw_trio_case(events),
        e2e_case(e2e, n, "emit"),
        e2e_case("weavegraph invoke_streaming, await ctx.emit_async", n, "async"),
    ]
    lg, lg_config = (
        peer("langgraph.graph", args.quick),
        peer("langgraph.config", args.quick),
    )
    if lg is not None and lg_config is not None:
        one.append(langgraph_case(lg, lg_config, n))
    many = [bus_case(events, k) for k in READERS]
    found = trio.run(measure, [*one, *many], args.runs)

    table(
        f"One reader, N = {n:,} events",
        ["path", "events/s", "weavegraph (emit) / this"],
        [[c.name, rate(found[c.name]), ratio(found[c.name], found[e2e])] for c in one],
    )
    single = found["bus/1"]
    table(
        f"One EventBus, K readers, lossless, bus.emit + checkpoint/{YIELD_EVERY}",
        ["readers", "deliveries/s", "per reader/s", "deliveries/s vs 1 reader"],
        [
            [
                str(k),
                rate(found[f"bus/{k}"]),
                rate(found[f"bus/{k}"] * k),
                ratio(single, found[f"bus/{k}"]),
            ]
            for k in READERS
        ],
    )


if __name__ == "__main__":
    main()
