"""Engine overhead: weavegraph next to raw trio, LangGraph and pydantic-graph.

Node bodies only count their calls, so the time is the engine's own bookkeeping:
``chain`` (N nodes in a row, per step), ``fan-out`` (N branches and a join, per
branch), ``loop`` (one node a router sends back to itself N times, per iteration),
``map-reduce`` (a planner sends N items to one node, a task per item with its
payload — weavegraph's and LangGraph's ``Send``, pydantic-graph's ``map`` — and a
reducer reads the N results, per item).
Raw trio awaits weavegraph's very node functions in the same shape, with no graph
(for the fan-out one task per branch: a floor for task-per-node engines only).
LangGraph runs on asyncio, the others on trio. Timed: the invoke call.

Lifecycle events (``node.start``/``node.end`` per attempt, ``step.end`` per
step), ``lifecycle_events`` on against off, three ways: nobody listens
(``invoke``); a token stream listens (a subscription filtered to node and LLM
events, drained); a stream reads every event (``invoke_streaming``, drained,
lifecycle events checked by count). The streams' buffers hold a whole run, so
nothing is dropped and the lossless policy's backlog path is not taken.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, Literal, TypedDict

import attrs
import trio
from _common import Case, expect, header, measure, options, peer, ratio, table, us

import weavegraph as wg

SHAPES = {
    "chain": "step",
    "fan-out": "branch",
    "loop": "iteration",
    "map-reduce": "item",
}
ENGINES = ("weavegraph", "raw trio", "langgraph", "pydantic-graph")


@dataclass
class Counter:
    calls: int = 0


@dataclass(slots=True)
class RawSnapshot:
    """What weavegraph's node functions read, as raw trio hands it to them."""

    extra: dict[str, Any] = field(default_factory=dict)


# What an engine makes of (shape, size, call counter): its event loop, a function
# making the input, the invoke coroutine, and a reader of the loop's final count.
Built = tuple[
    Literal["trio", "asyncio"],
    Callable[[], Any],
    Callable[[Any], Any],
    Callable[[Any], int],
]


def weave_bodies(n: int, calls: Counter) -> tuple[Any, Any, Any]:
    async def noop(snapshot: Any, ctx: Any) -> None:
        calls.calls += 1

    async def tick(snapshot: Any, ctx: Any) -> wg.NodePartial:
        calls.calls += 1
        return wg.NodePartial(extra={"count": snapshot.extra.get("count", 0) + 1})

    def route(snapshot: Any) -> str:
        return "tick" if snapshot.extra.get("count", 0) < n else wg.END

    return noop, tick, route


Listen = Literal["nobody", "tokens", "everything"]


def build_weavegraph(
    shape: str,
    n: int,
    calls: Counter,
    lifecycle: bool | None = None,
    listen: Listen = "nobody",
) -> Built:
    """The graph of ``shape``, lifecycle events on or off (``None``: the default),
    run with ``listen`` listening."""
    noop, tick, route = weave_bodies(n, calls)
    b = wg.GraphBuilder()
    if shape == "chain":
        names = [f"n{i}" for i in range(n)]
        for name in names:
            b.add_node(name, noop)
        for src, dst in itertools.pairwise([wg.START, *names, wg.END]):
            b.add_edge(src, dst)
    elif shape == "fan-out":
        branches = [f"b{i}" for i in range(n)]
        b.add_node("fan", noop).add_node("join", noop).add_edge(wg.START, "fan")
        for name in branches:
            b.add_node(name, noop).add_edge("fan", name)
        b.add_edge(branches, "join").add_edge("join", wg.END)
    elif shape == "map-reduce":

        async def work(snapshot: Any, ctx: Any) -> wg.NodePartial:
            calls.calls += 1
            return wg.NodePartial(extra={"out": [ctx.payload * 2]})

        async def reduce(snapshot: Any, ctx: Any) -> wg.NodePartial:
            calls.calls += 1
            return wg.NodePartial(extra={"count": len(snapshot.extra["out"])})

        b.add_node("plan", noop).add_node("work", work).add_node("reduce", reduce)
        b.add_edge(wg.START, "plan").add_edge("work", "reduce")
        b.add_conditional_edge("plan", lambda s: [wg.Send("work", i) for i in range(n)])
        b.add_edge("reduce", wg.END).with_key_reducer("out", "append")
    else:
        b.add_node("tick", tick).add_edge(wg.START, "tick")
        b.add_conditional_edge("tick", route)
    config = wg.RuntimeConfig(max_steps=4 * n + 10)
    if lifecycle is not None:
        config = attrs.evolve(
            config,
            lifecycle_events=lifecycle,
            event_bus=wg.EventBusConfig(capacity=RUN_BUFFER),
        )
    app = b.compile(config)
    invoke: Callable[[Any], Any] = app.invoke
    if listen == "tokens":

        async def invoke(state: wg.VersionedState) -> wg.VersionedState:
            async with wg.open_runner(app) as runner:
                tokens = runner.event_bus.subscribe(
                    stop_at_stream_end=True, types=("node", "llm")
                )
                await runner.create_session("s", state)
                final = await runner.run_until_complete("s")
                seen = [event async for event in tokens]
            expect(len(seen) == 1, f"the token stream saw {len(seen)} events, not 1")
            return final

    elif listen == "everything":
        expected = lifecycle_count(shape, n) if lifecycle else 0

        async def invoke(state: wg.VersionedState) -> wg.VersionedState:
            seen = 0
            async with app.invoke_streaming(state) as (run, events):
                async for event in events:
                    seen += event.scope_label in LIFECYCLE
                final = await run.join()
            expect(seen == expected, f"{seen} lifecycle events, expected {expected}")
            return final

    return (
        "trio",
        lambda: wg.VersionedState.with_user_message("go"),
        invoke,
        lambda final: final.extra.get("count", 0),
    )


LIFECYCLE = frozenset({"node.start", "node.end", "step.end"})
LISTENERS: tuple[Listen, ...] = ("nobody", "tokens", "everything")
RUN_BUFFER = 1 << 16  # holds a whole run's events: nothing is dropped


def lifecycle_count(shape: str, n: int) -> int:
    """Lifecycle events of one run: two per node attempt, one per step."""
    if shape in ("fan-out", "map-reduce"):
        return 2 * (n + 2) + 3
    return 3 * n


def build_raw_trio(shape: str, n: int, calls: Counter) -> Built:
    noop, tick, route = weave_bodies(n, calls)

    async def chain(snapshot: RawSnapshot) -> RawSnapshot:
        for _ in range(n):
            await noop(snapshot, None)
        return snapshot

    async def fan_out(snapshot: RawSnapshot) -> RawSnapshot:
        await noop(snapshot, None)
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(noop, snapshot, None)
        await noop(snapshot, None)
        return snapshot

    async def loop(snapshot: RawSnapshot) -> RawSnapshot:
        while True:
            partial = await tick(snapshot, None)
            snapshot.extra.update(partial.extra)
            if route(snapshot) == wg.END:
                return snapshot

    async def map_reduce(snapshot: RawSnapshot) -> RawSnapshot:
        await noop(snapshot, None)
        out: list[Any] = [None] * n

        async def work(i: int) -> None:
            calls.calls += 1
            out[i] = i * 2

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(work, i)
        await noop(snapshot, None)
        snapshot.extra["count"] = len(out)
        return snapshot

    invoke = {
        "chain": chain,
        "fan-out": fan_out,
        "loop": loop,
        "map-reduce": map_reduce,
    }[shape]
    return "trio", RawSnapshot, invoke, lambda snap: snap.extra.get("count", 0)


class LgState(TypedDict, total=False):
    count: int
    out: Annotated[list[int], operator.add]


def build_langgraph(lg: Any, shape: str, n: int, calls: Counter) -> Built:
    async def noop(state: LgState) -> dict[str, Any]:
        calls.calls += 1
        return {}

    async def tick(state: LgState) -> dict[str, Any]:
        calls.calls += 1
        return {"count": state.get("count", 0) + 1}

    def route(state: LgState) -> str:
        return "tick" if state.get("count", 0) < n else lg.END

    g = lg.StateGraph(LgState)
    if shape == "chain":
        names = [f"n{i}" for i in range(n)]
        for name in names:
            g.add_node(name, noop)
        for src, dst in itertools.pairwise([lg.START, *names, lg.END]):
            g.add_edge(src, dst)
    elif shape == "fan-out":
        branches = [f"b{i}" for i in range(n)]
        g.add_node("fan", noop)
        g.add_node("join", noop)
        g.add_edge(lg.START, "fan")
        for name in branches:
            g.add_node(name, noop)
            g.add_edge("fan", name)
        g.add_edge(branches, "join")
        g.add_edge("join", lg.END)
    elif shape == "map-reduce":
        from langgraph.types import Send

        async def work(item: dict[str, int]) -> dict[str, Any]:
            calls.calls += 1
            return {"out": [item["item"] * 2]}

        async def reduce(state: LgState) -> dict[str, Any]:
            calls.calls += 1
            return {"count": len(state["out"])}

        g.add_node("plan", noop)
        g.add_node("work", work)
        g.add_node("reduce", reduce)
        g.add_edge(lg.START, "plan")
        g.add_conditional_edges(
            "plan", lambda s: [Send("work", {"item": i}) for i in range(n)], ["work"]
        )
        g.add_edge("work", "reduce")
        g.add_edge("reduce", lg.END)
    else:
        g.add_node("tick", tick)
        g.add_edge(lg.START, "tick")
        g.add_conditional_edges("tick", route, ["tick", lg.END])
    graph = g.compile()
    config = {"recursion_limit": 4 * n + 10}

    async def invoke(state: LgState) -> Any:
        return await graph.ainvoke(state, config)

    return "asyncio", lambda: {"count": 0}, invoke, lambda out: out.get("count", 0)


@dataclass
class PgState:
    count: int = 0


def build_pydantic_graph(pg: Any, shape: str, n: int, calls: Counter) -> Built:
    async def noop(ctx: Any) -> None:
        calls.calls += 1

    async def tick(ctx: Any) -> int:
        calls.calls += 1
        ctx.state.count += 1
        return int(ctx.state.count)

    g = pg.GraphBuilder(name="bench", state_type=PgState, auto_instrument=False)
    if shape == "chain":
        steps = [g.step(noop, node_id=f"n{i}") for i in range(n)]
        for src, dst in itertools.pairwise([g.start_node, *steps, g.end_node]):
            g.add_edge(src, dst)
    elif shape == "fan-out":
        fan, join = g.step(noop, node_id="fan"), g.step(noop, node_id="join")
        branches = [g.step(noop, node_id=f"b{i}") for i in range(n)]
        collect = g.join(pg.reduce_null, initial=None, node_id="collect")
        g.add_edge(g.start_node, fan)
        g.add(g.edge_from(fan).to(*branches))
        g.add(g.edge_from(*branches).to(collect))
        g.add_edge(collect, join)
        g.add_edge(join, g.end_node)
    elif shape == "map-reduce":

        async def plan(ctx: Any) -> list[int]:
            calls.calls += 1
            return list(range(n))

        async def work(ctx: Any) -> int:
            calls.calls += 1
            return int(ctx.inputs) * 2

        async def reduce(ctx: Any) -> None:
            calls.calls += 1
            ctx.state.count = len(ctx.inputs)

        planner, worker = g.step(plan, node_id="plan"), g.step(work, node_id="work")
        collect = g.join(pg.reduce_list_append, initial_factory=list, node_id="out")
        reducer = g.step(reduce, node_id="reduce")
        g.add_edge(g.start_node, planner)
        g.add(g.edge_from(planner).map().to(worker))
        g.add_edge(worker, collect)
        g.add_edge(collect, reducer)
        g.add_edge(reducer, g.end_node)
    else:
        step = g.step(tick, node_id="tick")
        again = g.match(int, matches=lambda count: count < n).to(step)
        g.add_edge(g.start_node, step)
        g.add(
            g.edge_from(step).to(
                g.decision().branch(again).branch(g.match(int).to(g.end_node))
            )
        )
    graph = g.build()

    async def invoke(state: PgState) -> PgState:
        await graph.run(state=state)
        return state

    return "trio", PgState, invoke, lambda state: state.count


def make_case(engine: str, build: Callable[..., Built], shape: str, n: int) -> Case:
    calls = Counter()
    loop, make_input, invoke, count = build(shape, n, calls)
    expected = n + 2 if shape in ("fan-out", "map-reduce") else n

    async def run(watch: Any) -> tuple[Any, int]:
        calls.calls = 0
        payload = make_input()
        with watch:
            out = await invoke(payload)
        return out, calls.calls

    def check(result: tuple[Any, int]) -> None:
        out, ran = result
        expect(ran == expected, f"node bodies ran {ran} times, expected {expected}")
        if shape in ("loop", "map-reduce"):
            expect(count(out) == n, f"{shape} counted {count(out)}, not {n}")

    return Case(f"{engine}/{shape}", run, check, units=n, loop=loop)


def main() -> None:
    args = options(
        __doc__.splitlines()[0],
        sizes=(
            {"chain": 100, "fan-out": 1000, "loop": 1000, "map-reduce": 1000},
            {"chain": 10, "fan-out": 50, "loop": 50, "map-reduce": 50},
        ),
    )
    header("bench/engine.py", args, ["weavegraph", "langgraph", "pydantic-graph"])
    builders: dict[str, Callable[..., Built]] = {
        "weavegraph": build_weavegraph,
        **{
            f"wg lifecycle {state}, {listen}": partial(
                build_weavegraph, lifecycle=state == "on", listen=listen
            )
            for listen in LISTENERS
            for state in ("on", "off")
        },
        "raw trio": build_raw_trio,
    }
    lg = peer("langgraph.graph", args.quick)
    if lg is not None:
        builders["langgraph"] = lambda *a: build_langgraph(lg, *a)
    pg = peer("pydantic_graph", args.quick)
    if pg is not None:
        builders["pydantic-graph"] = lambda *a: build_pydantic_graph(pg, *a)
    cases = [
        make_case(engine, build, shape, args.sizes[shape])
        for shape in SHAPES
        for engine, build in builders.items()
    ]
    found = trio.run(measure, cases, args.runs)

    def get(engine: str, shape: str) -> float | None:
        return found.get(f"{engine}/{shape}")

    rows = []
    for shape, unit in SHAPES.items():
        wg_time = get("weavegraph", shape)
        rows.append(
            [
                f"{shape} (µs/{unit})",
                str(args.sizes[shape]),
                *(us(get(engine, shape)) for engine in ENGINES),
                ratio(wg_time, get("raw trio", shape)),
                ratio(get("langgraph", shape), wg_time),
                ratio(get("pydantic-graph", shape), wg_time),
            ]
        )
    table(
        "Per-unit cost, µs (ratios > 1: the numerator is slower)",
        ["workload", "size", *ENGINES, "wg / raw", "lg / wg", "pg / wg"],
        rows,
    )
    rows = []
    for shape, unit in SHAPES.items():
        size = args.sizes[shape]
        row = [f"{shape} (µs/{unit})", f"{lifecycle_count(shape, size) / size:.2f}"]
        for listen in LISTENERS:
            on = get(f"wg lifecycle on, {listen}", shape)
            off = get(f"wg lifecycle off, {listen}", shape)
            row += [us(on), us(off), ratio(on, off)]
        rows.append(row)
    table(
        "Lifecycle events (node.start/end, step.end) on and off, µs per unit,"
        " by who listens",
        [
            "workload",
            "events/unit",
            *(f"{who} {col}" for who in LISTENERS for col in ("on", "off", "on/off")),
        ],
        rows,
    )


if __name__ == "__main__":
    main()
