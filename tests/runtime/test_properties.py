"""Properties of whole runs over random graphs (hypothesis)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from weavegraph import (
    END,
    START,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    StateSnapshot,
    VersionedState,
)


@st.composite
def dags(
    draw: st.DrawFn,
) -> tuple[int, set[tuple[int, int]], set[tuple[tuple[int, ...], int]]]:
    """A random DAG over nodes 0..n-1: edges only go from lower to higher numbers."""
    n = draw(st.integers(1, 9))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    edges = set(draw(st.lists(st.sampled_from(pairs), unique=True))) if pairs else set()
    joins: set[tuple[tuple[int, ...], int]] = set()
    if n >= 3 and draw(st.booleans()):
        target = draw(st.integers(2, n - 1))
        sources = tuple(
            sorted(draw(st.sets(st.integers(0, target - 1), min_size=2, max_size=3)))
        )
        edges -= {(s, target) for s in sources}
        joins.add((sources, target))
    return n, edges, joins


def build(
    n: int,
    edges: set[tuple[int, int]],
    joins: set[tuple[tuple[int, ...], int]],
    delays: list[float],
) -> Any:
    def node(i: int) -> Any:
        async def body(snapshot: StateSnapshot, ctx: NodeContext) -> NodePartial:
            await trio.sleep(delays[i])
            return NodePartial(
                messages=[Message.assistant(f"n{i}@{ctx.step}")],
                extra={"last": f"n{i}", f"seen.n{i}": len(snapshot.messages)},
            )

        return body

    builder = GraphBuilder()
    for i in range(n):
        builder.add_node(f"n{i}", node(i))
    incoming = {j for _, j in edges} | {t for _, t in joins}
    outgoing = {i for i, _ in edges} | {s for srcs, _ in joins for s in srcs}
    for i in range(n):
        if i not in incoming:
            builder.add_edge(START, f"n{i}")
        if i not in outgoing:
            builder.add_edge(f"n{i}", END)
    for i, j in sorted(edges):
        builder.add_edge(f"n{i}", f"n{j}")
    for sources, target in sorted(joins):
        builder.add_edge([f"n{s}" for s in sources], f"n{target}")
    return builder.compile()


def run(app: Any) -> VersionedState:
    async def main() -> VersionedState:
        return await app.invoke(VersionedState.with_user_message("go"))  # type: ignore[no-any-return]

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=60)
@given(dags(), st.data())
def test_every_node_runs_and_results_ignore_completion_order(
    dag: tuple[int, set[tuple[int, int]], set[tuple[tuple[int, ...], int]]],
    data: st.DataObject,
) -> None:
    n, edges, joins = dag
    delay = st.sampled_from([0.0, 0.001, 0.01, 0.1])
    first = data.draw(st.lists(delay, min_size=n, max_size=n))
    second = data.draw(st.lists(delay, min_size=n, max_size=n))
    a = run(build(n, edges, joins, first))
    b = run(build(n, edges, joins, second))
    ran = {m.content.split("@")[0] for m in a.messages[1:]}
    assert ran == {f"n{i}" for i in range(n)}
    assert a == b
