"""Hypothesis strategies shared by the test suite.

* `dags` draws a random acyclic graph description (`DagSpec`): plain edges and
  joins that always point "forward" in creation order, with every node reachable
  from START and able to reach END; `build_dag` turns it into a `GraphBuilder`,
  optionally with the nodes, edges and join sources inserted in another order.
* `messages`, `extras`, `error_events`, `partials` draw state updates.
* `history_programs` draws sequences of ``extend`` calls that branch from old
  `History` versions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import attrs
from hypothesis import strategies as st

from weavegraph import (
    END,
    START,
    Append,
    ErrorEvent,
    GraphBuilder,
    Message,
    NodeContext,
    NodePartial,
    Replace,
    StateSnapshot,
    VersionedState,
)
from weavegraph.errors import ErrorDetail, ErrorScope
from weavegraph.lowlevel import Versions


async def dummy_node(snapshot: StateSnapshot, ctx: NodeContext) -> None:
    """A valid node body that changes nothing (never awaited by the pure tests)."""


# ----------------------------------------------------------------------- graphs

node_names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
"""Short node names; they can never collide with START/END."""


@attrs.frozen
class DagSpec:
    """A random acyclic graph: every edge goes from a lower to a higher rank.

    Attributes:
        names: Node names in rank order (rank = position).
        edges: Plain ``(source, target)`` edges, START/END included.
        joins: ``(sources, target)`` join edges.
    """

    names: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    joins: tuple[tuple[tuple[str, ...], str], ...]

    def all_pairs(self) -> set[tuple[str, str]]:
        """Every unconditional (source, target) pair, joins expanded."""
        pairs = set(self.edges)
        pairs |= {(s, t) for sources, t in self.joins for s in sources}
        return pairs


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 8, allow_joins: bool = True) -> DagSpec:
    """A valid random DAG (compiles: reachable from START, reaches END)."""
    names = draw(st.lists(node_names, min_size=1, max_size=max_nodes, unique=True))
    edges: list[tuple[str, str]] = []
    joins: list[tuple[tuple[str, ...], str]] = []
    has_out: set[str] = set()
    for rank, target in enumerate(names):
        preds: list[str] = []
        if rank:
            preds = draw(
                st.lists(st.sampled_from(names[:rank]), unique=True, max_size=4)
            )
        join_sources: list[str] = []
        plain = preds
        if allow_joins and len(preds) >= 2 and draw(st.booleans()):
            size = draw(st.integers(2, len(preds)))
            join_sources, plain = preds[:size], preds[size:]
            joins.append((tuple(join_sources), target))
        edges.extend((p, target) for p in plain)
        has_out.update(preds)
        # A node without any predecessor hangs from START; others sometimes too.
        if not preds or draw(st.integers(0, 4)) == 0:
            edges.append((START, target))
    edges.extend(
        (name, END)
        for name in names
        if name not in has_out or draw(st.integers(0, 4)) == 0
    )
    return DagSpec(tuple(names), tuple(edges), tuple(joins))


def build_dag(
    spec: DagSpec,
    *,
    node_order: Sequence[str] | None = None,
    edge_order: Sequence[tuple[str, str]] | None = None,
    join_order: Sequence[tuple[tuple[str, ...], str]] | None = None,
    reverse_join_sources: bool = False,
) -> GraphBuilder:
    """A `GraphBuilder` for ``spec``, inserting things in the given orders."""
    builder = GraphBuilder()
    for name in node_order if node_order is not None else spec.names:
        builder.add_node(name, dummy_node)
    for source, target in edge_order if edge_order is not None else spec.edges:
        builder.add_edge(source, target)
    for sources, target in join_order if join_order is not None else spec.joins:
        ordered = list(reversed(sources)) if reverse_join_sources else list(sources)
        builder.add_edge(ordered, target)
    return builder


@st.composite
def dag_with_shuffled_insertion(
    draw: st.DrawFn,
) -> tuple[DagSpec, GraphBuilder, GraphBuilder]:
    """A DAG built twice: in its natural order and in a random insertion order."""
    spec = draw(dags())
    natural = build_dag(spec)
    shuffled = build_dag(
        spec,
        node_order=draw(st.permutations(spec.names)),
        edge_order=draw(st.permutations(spec.edges)),
        join_order=draw(st.permutations(spec.joins)),
        reverse_join_sources=draw(st.booleans()),
    )
    return spec, natural, shuffled


# ------------------------------------------------------------------------ state

roles = st.sampled_from(["user", "assistant", "system", "tool", "critic", "planner"])
texts = st.text(max_size=8)


@st.composite
def message_items(draw: st.DrawFn) -> Message:
    """One `Message` with a known or custom role."""
    return Message(draw(roles), draw(texts))


messages = st.lists(message_items(), max_size=4)
"""A list of messages (possibly empty)."""

extra_keys = st.sampled_from(["a", "b", "c", "d", "count", "k"])
json_scalars = st.one_of(
    st.booleans(),
    st.integers(-5, 5),
    st.text(alphabet="xyz", max_size=3),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(alphabet="pq", max_size=2), inner, max_size=2),
    ),
    max_leaves=5,
)
"""JSON-like values, never ``None``."""

extras = st.dictionaries(extra_keys, json_values, max_size=4)
"""An ``extra`` mapping without deletions (a current state)."""

extra_updates = st.dictionaries(extra_keys, st.none() | json_values, max_size=4)
"""An ``extra`` update; ``None`` values delete keys."""

_BASE_TIME = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@st.composite
def error_events(draw: st.DrawFn) -> ErrorEvent:
    """An `ErrorEvent` with a random scope, UTC time and message."""
    kind = draw(st.sampled_from(["node", "scheduler", "runner", "app"]))
    step = draw(st.integers(0, 3))
    scope = {
        "node": lambda: ErrorScope.for_node(draw(st.sampled_from(["x", "y"])), step),
        "scheduler": lambda: ErrorScope.for_scheduler(step),
        "runner": lambda: ErrorScope.for_runner(
            draw(st.sampled_from(["s1", "s2"])), step
        ),
        "app": ErrorScope.for_app,
    }[kind]()
    when = _BASE_TIME + dt.timedelta(seconds=draw(st.integers(0, 3)))
    message = draw(st.sampled_from(["boom", "bad", "oops"]))
    return ErrorEvent(scope=scope, error=ErrorDetail(message=message), when=when)


frontier_commands = st.one_of(
    st.none(),
    st.builds(Replace, st.lists(node_names, max_size=2)),
    st.builds(Append, st.lists(node_names, max_size=2)),
)


@st.composite
def partials(draw: st.DrawFn) -> NodePartial | None:
    """A random `NodePartial` (or ``None``, which nodes may return)."""
    if draw(st.integers(0, 9)) == 0:
        return None
    return NodePartial(
        messages=draw(st.none() | messages),
        extra=draw(st.none() | extra_updates),
        errors=draw(st.none() | st.lists(error_events(), max_size=2)),
        frontier=draw(frontier_commands),
    )


@st.composite
def states(draw: st.DrawFn) -> VersionedState:
    """A random state; its versions are not necessarily 1."""
    return VersionedState(
        messages=draw(messages),
        extra=draw(extras),
        errors=draw(st.lists(error_events(), max_size=2)),
        versions=Versions(
            messages=draw(st.integers(1, 5)),
            extra=draw(st.integers(1, 5)),
            errors=draw(st.integers(1, 5)),
        ),
    )


@st.composite
def frontier_runs(
    draw: st.DrawFn,
) -> tuple[list[str], list[NodePartial | None], list[int]]:
    """Ran nodes (frontier order), their partials, and a completion order."""
    ran = draw(st.lists(node_names, unique=True, min_size=1, max_size=5))
    outputs = [draw(partials()) for _ in ran]
    completion = draw(st.permutations(range(len(ran))))
    return ran, outputs, list(completion)


# ---------------------------------------------------------------------- history

history_programs = st.lists(
    st.tuples(st.integers(0, 1000), st.lists(st.integers(), max_size=4)),
    max_size=25,
)
"""Steps ``(which existing version to extend, items)``; the index wraps around."""
