"""Graph authoring: `GraphBuilder`, the compiled `Graph`, validation and exports.

Pure and deterministic: nothing here imports trio. Nodes are stored as given; the
runtime calls them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, Self, cast, runtime_checkable

import attrs

from .errors import (
    ConfigError,
    CycleError,
    DuplicateEdgeError,
    DuplicateNodeError,
    EdgeFromEndError,
    InvalidEdgeError,
    InvalidNodeError,
    InvalidRouterError,
    MissingEntryError,
    NoPathToEndError,
    ReservedNodeNameError,
    UnknownNodeError,
    UnreachableNodesError,
)
from .reducers import Reducer, ReducerRegistry
from .state import NodePartial, StateSnapshot

if TYPE_CHECKING:
    from collections.abc import Awaitable

START = "__start__"
"""The virtual entry point of every graph; edges from it seed the first frontier."""
END = "__end__"
"""The virtual exit; a run completes when only ``END`` remains in the frontier."""

_VIRTUAL = (START, END)

NodeFunction = Callable[[StateSnapshot, Any], "Awaitable[NodePartial | None]"]
"""An async function ``(snapshot, ctx) -> NodePartial | None`` (ctx: NodeContext)."""

Router = Callable[[StateSnapshot], Any]
"""``router(snapshot)`` returns a node name, ``END``, or a list of them."""


@runtime_checkable
class Node(Protocol):
    """An object whose ``async def run(self, snapshot, ctx)`` is the node body."""

    async def run(
        self, snapshot: StateSnapshot, ctx: Any
    ) -> NodePartial | None:  # pragma: no cover - protocol
        """Run the node and return its update (``None`` for no update)."""
        ...


def display(name: str) -> str:
    """``START``/``END`` as their short labels, other names unchanged."""
    return "START" if name == START else "END" if name == END else name


# ------------------------------------------------------------------------ policies


def _positive_attempts(_: object, __: object, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"RetryPolicy.max_attempts must be an int >= 1, got {value!r}"
        )


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or value < 0:
        raise ConfigError(
            f"RetryPolicy.{attribute.name} must be a number >= 0, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often and how patiently a failing node is retried.

    Attempt ``n`` (from 1) that fails waits ``backoff * multiplier ** (n - 1)``
    seconds, capped at ``max_backoff``, before the next one. Exceptions that are not
    instances of ``retry_on`` fail at once; ``trio.Cancelled`` is never retried.

    Args:
        max_attempts: Total attempts, including the first (``1`` = no retry).
        backoff: Seconds to wait after the first failed attempt.
        multiplier: Growth factor of the wait.
        max_backoff: Upper bound of one wait.
        retry_on: Exception types worth retrying.
    """

    max_attempts: int = attrs.field(default=3, validator=_positive_attempts)
    backoff: float = attrs.field(default=0.0, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_non_negative)
    max_backoff: float = attrs.field(default=60.0, validator=_non_negative)
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        return float(
            min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1))
        )


@attrs.frozen
class NodeSpec:
    """A registered node: its body and its execution policy."""

    name: str
    body: NodeFunction
    timeout: float | None = None
    retry: RetryPolicy | None = None
    destinations: tuple[str, ...] | None = None
    label: str = ""
    gated: bool = True
    subgraph: Graph | None = attrs.field(default=None, eq=False, repr=False)
    """The child graph when the node runs a compiled app (a subgraph)."""


@attrs.frozen
class ConditionalEdge:
    """A router attached to ``source``; ``path_map`` maps its results to names."""

    source: str
    router: Router
    path_map: Mapping[Hashable, str] | None = None
    label: str = ""

    def declared_targets(self) -> tuple[str, ...] | None:
        """Where the router may send, or ``None`` when it declared nothing."""
        if self.path_map is None:
            return None
        return tuple(dict.fromkeys(self.path_map.values()))


@attrs.frozen
class JoinEdge:
    """``target`` runs once every one of ``sources`` ran since it last ran."""

    sources: tuple[str, ...]
    target: str
    key: str = attrs.field(init=False, eq=False, repr=False)
    """A stable identifier (used to persist join progress)."""

    def __attrs_post_init__(self) -> None:
        # JSON keeps names apart whatever they contain; sorted, like graph_hash.
        key = json.dumps([sorted(self.sources), self.target], separators=(",", ":"))
        object.__setattr__(self, "key", key)


def _callable_label(obj: object) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def _as_node_body(name: str, node: object) -> tuple[NodeFunction, str]:
    if inspect.isclass(node):
        raise InvalidNodeError(
            f"node {name!r}: got the class {node.__qualname__}; register an instance"
            f" ({node.__qualname__}(...)) or an async function"
        )
    run = getattr(node, "run", None)
    if not inspect.isroutine(node) and run is not None and callable(run):
        if not inspect.iscoroutinefunction(run):
            raise InvalidNodeError(
                f"node {name!r}: {type(node).__name__}.run must be declared"
                " 'async def run(self, snapshot, ctx)'"
            )
        return run, _callable_label(type(node))
    if not callable(node):
        raise InvalidNodeError(
            f"node {name!r} must be an async function (snapshot, ctx) or an object"
            f" with 'async def run(self, snapshot, ctx)', got {node!r}"
        )
    is_async = inspect.iscoroutinefunction(node) or (
        not inspect.isroutine(node)
        and inspect.iscoroutinefunction(getattr(node, "__call__", None))  # noqa: B004
    )
    if not is_async:
        raise InvalidNodeError(
            f"node {name!r} must be declared 'async def' (got the plain function"
            f" {_callable_label(node)}); run blocking work inside it with"
            " trio.to_thread.run_sync"
        )
    return cast(NodeFunction, node), _callable_label(node)


def _check_target(name: object, source: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidRouterError(
            f"the path_map of the router on {display(source)!r} maps to {name!r};"
            " its targets must be node names or END"
        )
    return name


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidEdgeError(f"{what} must be a non-empty node name, got {name!r}")
    return name


# ----------------------------------------------------------------------- builder


class BaseGraphBuilder:
    """The pure part of ``GraphBuilder``: nodes, edges, reducers, validation.

    ``weavegraph.GraphBuilder`` (in the runtime layer, next to ``App``) adds
    ``compile()``. Every method returns the builder, so calls chain::

        app = (GraphBuilder()
               .add_node("greet", greet)
               .add_edge(START, "greet")
               .add_edge("greet", END)
               .compile())
    """

    def __init__(self) -> None:
        self._nodes: dict[str, NodeSpec] = {}
        self._edges: dict[str, list[str]] = {}
        self._joins: list[JoinEdge] = []
        self._conditionals: list[ConditionalEdge] = []
        self._entries: list[str] = []
        self._reducers = ReducerRegistry()

    def add_node(
        self,
        name: str,
        node: NodeFunction | Node,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        destinations: Sequence[str] | None = None,
        gated: bool = True,
    ) -> Self:
        """Register ``node`` under ``name``.

        Args:
            name: A unique, non-empty name other than ``START``/``END``.
            node: An ``async def`` function ``(snapshot, ctx)`` or an object with
                ``async def run(self, snapshot, ctx)``.
            timeout: Seconds one attempt may take; exceeding it fails the node
                (with `NodeTimeoutError`) like any other error.
            retry: Retry failed attempts according to this `RetryPolicy`.
            destinations: Nodes this node may send to with `Replace`/`Append`
                frontier commands. Declares them for the compile-time reachability
                checks, and a command naming any other node fails the run with
                `RouterError`.
            gated: With ``False`` the node runs whenever it is scheduled. By
                default (version gating) a node that ran before is skipped when
                neither ``messages`` nor ``extra`` changed since: a polling node
                whose writes change nothing must be ungated to run again.

        Raises:
            ReservedNodeNameError: ``name`` is ``START`` or ``END``.
            DuplicateNodeError: ``name`` is already registered.
            InvalidNodeError: ``node`` is not an async callable nor a `Node`,
                ``timeout`` is not a positive number, or ``gated`` is not a bool.
        """
        if name in _VIRTUAL:
            raise ReservedNodeNameError(
                f"{display(name)} is a virtual endpoint and cannot be registered as a"
                " node; connect to it with add_edge instead"
            )
        if not isinstance(name, str) or not name:
            raise InvalidNodeError(
                f"node names must be non-empty strings, got {name!r}"
            )
        if "[" in name:
            raise InvalidNodeError(
                f"node {name!r}: a node name may not contain '[' (sent tasks are"
                " keyed as name[index]); pick another name"
            )
        if name in self._nodes:
            raise DuplicateNodeError(
                f"a node named {name!r} is already registered; pick another name"
            )
        body, label = _as_node_body(name, node)
        if timeout is not None and (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise InvalidNodeError(
                f"node {name!r}: timeout must be a positive number of seconds,"
                f" got {timeout!r}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidNodeError(
                f"node {name!r}: retry must be a RetryPolicy, got {retry!r}"
            )
        dests = None
        if destinations is not None:
            if isinstance(destinations, str):
                raise InvalidNodeError(
                    f"node {name!r}: destinations takes a list of node names; write"
                    f" destinations=[{destinations!r}]"
                )
            dests = tuple(_check_name(d, "a destination") for d in destinations)
        if not isinstance(gated, bool):
            raise InvalidNodeError(
                f"node {name!r}: gated must be True or False, got {gated!r}"
            )
        self._nodes[name] = NodeSpec(
            name=name,
            body=body,
            timeout=None if timeout is None else float(timeout),
            retry=retry,
            destinations=dests,
            label=label,
            gated=gated,
        )
        return self

    def add_edge(self, source: str | Sequence[str], target: str) -> Self:
        """Add an unconditional edge, or a join when ``source`` is a list.

        ``add_edge([a, b], c)`` schedules ``c`` once, after both ``a`` and ``b``
        ran since ``c`` last ran.

        Raises:
            InvalidEdgeError: malformed endpoints (not strings, empty join, START
                inside a join, an edge into START).
            EdgeFromEndError: ``source`` is ``END``.
            DuplicateEdgeError: the same edge was already added.
        """
        target = _check_name(target, "an edge target")
        if target == START:
            raise InvalidEdgeError("edges cannot point into START; START only starts")
        if isinstance(source, str):
            sources: tuple[str, ...] = (_check_name(source, "an edge source"),)
        elif isinstance(source, Iterable):
            sources = tuple(_check_name(s, "a join source") for s in source)
            if not sources:
                raise InvalidEdgeError("a join edge needs at least one source node")
            if len(set(sources)) != len(sources):
                raise InvalidEdgeError(f"join sources repeat a node: {list(sources)}")
        else:
            raise InvalidEdgeError(
                f"an edge source must be a node name or a list of them, got {source!r}"
            )
        if END in sources:
            raise EdgeFromEndError(
                f"invalid edge {display(END)} -> {display(target)}: edges cannot"
                " originate from END"
            )
        if len(sources) == 1:
            (src,) = sources
            if target in self._edges.get(src, ()) or any(
                j.target == target and src in j.sources for j in self._joins
            ):
                raise DuplicateEdgeError(
                    f"duplicate edge detected: {display(src)} -> {display(target)}"
                )
            self._edges.setdefault(src, []).append(target)
            return self
        if START in sources:
            raise InvalidEdgeError(
                "START cannot be part of a join (it never runs); add a plain edge from"
                " START instead"
            )
        for src in sources:
            if target in self._edges.get(src, ()):
                raise DuplicateEdgeError(
                    f"duplicate edge detected: {display(src)} -> {display(target)} is"
                    " both a plain edge and part of a join"
                )
        for join in self._joins:
            if join.target == target and set(join.sources) & set(sources):
                raise DuplicateEdgeError(
                    "duplicate edge detected: join"
                    f" {list(sources)} -> {display(target)}"
                    f" overlaps join {list(join.sources)} -> {display(target)}"
                )
        self._joins.append(JoinEdge(sources, target))
        return self

    def add_conditional_edge(
        self,
        source: str,
        router: Router,
        path_map: Mapping[Hashable, str] | Sequence[str] | None = None,
    ) -> Self:
        """Route from ``source`` with ``router(snapshot)`` after ``source`` runs.

        The router returns a node name, ``END``, or a list of them (a fan-out).
        With ``path_map`` its results are looked up in the mapping first; a list of
        names declares the possible targets without renaming. Declared targets let
        `compile` check reachability. A result outside the declared targets (with
        a ``path_map``), or naming no registered node, fails the run with
        `RouterError`. A router from ``START`` is evaluated once, when a session
        starts, with the initial state.

        Raises:
            EdgeFromEndError: ``source`` is ``END``.
            InvalidRouterError: ``router`` is not a plain callable (async routers
                are not supported: do async work in a node and route on state), or
                ``path_map`` is malformed.
        """
        source = _check_name(source, "a conditional edge source")
        if source == END:
            raise EdgeFromEndError("a conditional edge cannot originate from END")
        if not callable(router):
            raise InvalidRouterError(
                f"the router of {display(source)!r} must be a function of the snapshot,"
                f" got {router!r}"
            )
        if inspect.iscoroutinefunction(router) or (
            not inspect.isroutine(router)
            and inspect.iscoroutinefunction(getattr(router, "__call__", None))  # noqa: B004
        ):
            raise InvalidRouterError(
                f"the router of {display(source)!r} is async; routers must be plain"
                " functions. Do the async work in a node, store the decision in state"
                " and route on it"
            )
        mapping: Mapping[Hashable, str] | None
        if path_map is None:
            mapping = None
        elif isinstance(path_map, Mapping):
            for value in path_map.values():
                _check_target(value, source)
            mapping = MappingProxyType(dict(path_map))
        elif isinstance(path_map, Iterable) and not isinstance(path_map, str):
            names = [_check_target(v, source) for v in path_map]
            identity: dict[Hashable, str] = dict(zip(names, names, strict=True))
            mapping = MappingProxyType(identity)
        else:
            raise InvalidRouterError(
                f"path_map must be a dict of router results to node names or a list"
                f" of node names, got {path_map!r}"
            )
        self._conditionals.append(
            ConditionalEdge(source, router, mapping, _callable_label(router))
        )
        return self

    def add_entry(self, name: str) -> Self:
        """Declare ``name`` as an extra entry point (an iterative session's ``entry``).

        Runs still start from START; the declaration makes the node count as
        reachable for `compile`'s checks.

        Raises:
            InvalidEdgeError: ``name`` is not a non-empty string, or is START/END.
        """
        name = _check_name(name, "an entry")
        if name in _VIRTUAL:
            raise InvalidEdgeError(f"{display(name)} cannot be declared as an entry")
        if name not in self._entries:
            self._entries.append(name)
        return self

    def with_reducer(
        self, channel: str, reducer: Reducer, *, replace: bool = False
    ) -> Self:
        """Add a reducer for ``channel`` (``messages``, ``extra`` or ``errors``).

        Reducers of a channel run in registration order, after the built-in one
        unless ``replace=True`` removes the built-in (and earlier) reducers.

        Raises:
            InvalidReducerError: unknown channel or non-callable reducer.
        """
        self._reducers = self._reducers.with_reducer(channel, reducer, replace=replace)
        return self

    def with_key_reducer(self, key: str, reducer: Reducer | str) -> Self:
        """Fold every write to ``extra[key]`` with ``reducer(current, value) -> new``.

        The barrier applies the writes of a superstep in frontier order: the first
        write of an absent key is stored as is, each later one (from the same step
        or a later one) becomes ``reducer(stored, written)``. So three parallel
        nodes writing ``extra={"facts": [...]}`` under ``"append"`` keep all the
        facts. Writing ``None`` still deletes the key. Without a key reducer the
        last write of a step wins, and a lost write is reported.

        Args:
            key: The ``extra`` key.
            reducer: A function, or a built-in by name: ``"append"`` (extend a
                list), ``"add"`` (sum numbers), ``"merge"`` (shallow-merge dicts),
                ``"replace"`` (keep the last write, without a conflict report); the
                same functions are in `weavegraph.reducers`.

        Raises:
            InvalidReducerError: ``key`` is empty or not a string, already has a
                key reducer, or ``reducer`` is neither callable nor a built-in name.
        """
        self._reducers = self._reducers.with_key_reducer(key, reducer)
        return self

    def build(self) -> Graph:
        """Validate the topology and return the immutable `Graph`.

        Raises:
            GraphError: the first problem found, checked in this order: missing
                entry, unknown node, cycle of unconditional edges, unreachable
                nodes, nodes with no path to END.
        """
        graph = Graph(
            nodes=MappingProxyType(dict(self._nodes)),
            edges=MappingProxyType({k: tuple(v) for k, v in self._edges.items()}),
            joins=tuple(self._joins),
            conditionals=tuple(self._conditionals),
            reducers=self._reducers,
            entries=tuple(self._entries),
        )
        graph.validate()
        return graph


# ------------------------------------------------------------------ compiled graph


def _sort_key(name: str) -> tuple[int, str]:
    return (0 if name == START else 2 if name == END else 1, name)


@attrs.frozen(eq=False)
class Graph:
    """A validated, immutable graph: ``App.graph``."""

    nodes: Mapping[str, NodeSpec]
    edges: Mapping[str, tuple[str, ...]]
    joins: tuple[JoinEdge, ...]
    conditionals: tuple[ConditionalEdge, ...]
    reducers: ReducerRegistry
    entries: tuple[str, ...] = ()

    # Derived lookups, computed once.
    ungated: frozenset[str] = attrs.field(init=False)
    """The nodes registered with ``gated=False`` (`partition` runs them always)."""
    _routers_by_source: Mapping[str, tuple[ConditionalEdge, ...]] = attrs.field(
        init=False
    )
    _joins_by_source: Mapping[str, tuple[JoinEdge, ...]] = attrs.field(init=False)
    _static_next: Mapping[str, tuple[str, ...]] = attrs.field(init=False)
    _hash: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        routers: dict[str, list[ConditionalEdge]] = {}
        for cond in self.conditionals:
            routers.setdefault(cond.source, []).append(cond)
        joins: dict[str, list[JoinEdge]] = {}
        for join in self.joins:
            for src in join.sources:
                joins.setdefault(src, []).append(join)
        object.__setattr__(
            self, "_routers_by_source", {k: tuple(v) for k, v in routers.items()}
        )
        object.__setattr__(
            self, "_joins_by_source", {k: tuple(v) for k, v in joins.items()}
        )
        object.__setattr__(
            self,
            "ungated",
            frozenset(name for name, spec in self.nodes.items() if not spec.gated),
        )
        object.__setattr__(self, "_hash", self._compute_hash())
        static = {
            name: tuple(dict.fromkeys(self.edges.get(name, ())))
            for name in self.nodes
            if name not in routers and name not in joins
        }
        object.__setattr__(self, "_static_next", static)

    # -- lookups used by the scheduler

    def routers_of(self, node: str) -> tuple[ConditionalEdge, ...]:
        """The conditional edges whose source is ``node``, in registration order."""
        return self._routers_by_source.get(node, ())

    def static_next(self, node: str) -> tuple[str, ...] | None:
        """``node``'s plain targets when it has no router and is in no join."""
        return self._static_next.get(node)

    def joins_of(self, node: str) -> tuple[JoinEdge, ...]:
        """The join edges ``node`` is a source of."""
        return self._joins_by_source.get(node, ())

    # -- introspection

    def edge_list(self) -> list[tuple[str, str]]:
        """Every unconditional ``(source, target)`` pair, joins expanded, sorted."""
        pairs = [(s, t) for s, targets in self.edges.items() for t in targets]
        pairs += [(s, j.target) for j in self.joins for s in j.sources]
        return sorted(pairs, key=lambda p: (_sort_key(p[0]), _sort_key(p[1])))

    def topological_order(self) -> list[str]:
        """Kahn's order over unconditional edges: START first, END last, ties by name.

        Nodes on a cycle are omitted (compile rejects such cycles anyway).
        """
        present = {START, END, *self.nodes}
        indegree = dict.fromkeys(present, 0)
        succ: dict[str, list[str]] = {n: [] for n in present}
        for source, target in self.edge_list():
            succ[source].append(target)
            indegree[target] += 1
        queue = deque(sorted((n for n, d in indegree.items() if d == 0), key=_sort_key))
        order: list[str] = []
        while queue:
            node = queue.popleft()
            order.append(node)
            ready = []
            for target in succ[node]:
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
            queue.extend(sorted(ready, key=_sort_key))
        if END in order:  # END is last even when a router-only node sorts after it
            order.remove(END)
            order.append(END)
        return order

    def to_mermaid(self) -> str:
        """A Mermaid ``flowchart`` of the graph (dotted arrows: conditional edges).

        A subgraph node is drawn as itself plus a cluster holding its child
        graph (recursively), linked to it by a dotted line.
        """
        return "\n".join(["flowchart TD", *self._mermaid("n", "    ")]) + "\n"

    def _mermaid(self, prefix: str, indent: str) -> list[str]:
        names = sorted({START, END, *self.nodes}, key=_sort_key)
        ids = {name: f"{prefix}{i}" for i, name in enumerate(names)}

        def label(name: str) -> str:
            text = display(name).replace('"', "#quot;")
            if name in _VIRTUAL:
                return f'{ids[name]}(["{text}"])'
            return f'{ids[name]}["{text}"]'

        lines = [f"{indent}{label(n)}" for n in names]
        for source, target in self.edge_list():
            lines.append(f"{indent}{ids[source]} --> {ids[target]}")
        for cond in sorted(self.conditionals, key=lambda c: _sort_key(c.source)):
            targets = cond.declared_targets()
            if targets is None:
                lines.append(
                    f"{indent}{ids[cond.source]} -. router .-> {ids[cond.source]}"
                )
                continue
            lines.extend(
                f"{indent}{ids[cond.source]} -.-> {ids[target]}"
                for target in targets
                if target in ids
            )
        for name in names:
            child = self.nodes[name].subgraph if name in self.nodes else None
            if child is None:
                continue
            cluster = f"{ids[name]}_graph"
            text = display(name).replace('"', "#quot;")
            lines.append(f'{indent}subgraph {cluster} ["{text}"]')
            lines += child._mermaid(f"{ids[name]}_", indent + "    ")
            lines.append(f"{indent}end")
            lines.append(f"{indent}{ids[name]} -.- {cluster}")
        return lines

    def to_dot(self) -> str:
        """A Graphviz DOT digraph (dashed edges: declared router targets).

        A subgraph node's child graph is a cluster (recursively), reached from
        the node by a dotted edge.
        """
        lines = [
            "digraph {",
            "    rankdir=TB;",
            "    node [shape=box, style=rounded];",
        ]
        lines += self._dot("", "    ")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _dot(self, prefix: str, indent: str) -> list[str]:
        names = sorted({START, END, *self.nodes}, key=_sort_key)
        ids = {
            name: f"{prefix}{i}" if prefix else str(i) for i, name in enumerate(names)
        }

        def quote(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        def node_id(name: str) -> str:
            return ids[name] if not prefix else quote(ids[name])

        lines = []
        for name in names:
            extra = ""
            if name == START:
                extra = ' style="filled" fillcolor="lightgreen"'
            elif name == END:
                extra = ' style="filled" fillcolor="lightcoral"'
            lines.append(
                f"{indent}{node_id(name)} [ label={quote(display(name))}{extra} ];"
            )
        lines.append("")
        for source, target in self.edge_list():
            lines.append(f"{indent}{node_id(source)} -> {node_id(target)};")
        lines.extend(
            f"{indent}{node_id(cond.source)} -> {node_id(target)} [style=dashed];"
            for cond in sorted(self.conditionals, key=lambda c: _sort_key(c.source))
            for target in cond.declared_targets() or ()
            if target in ids
        )
        for name in names:
            child = self.nodes[name].subgraph if name in self.nodes else None
            if child is None:
                continue
            inner = f"{ids[name]}_"
            lines.append(f"{indent}subgraph {quote('cluster_' + inner)} {{")
            lines.append(f"{indent}    label={quote(display(name))};")
            lines += child._dot(inner, indent + "    ")
            lines.append(f"{indent}}}")
            lines.append(
                f"{indent}{node_id(name)} -> {quote(inner + '0')} [style=dotted];"
            )
        return lines

    @property
    def graph_hash(self) -> str:
        """A stable hex digest of the definition, independent of insertion order."""
        return self._hash

    def _compute_hash(self) -> str:
        parts: list[str] = ["weavegraph-graph/1"]
        for name in sorted(self.nodes):
            spec = self.nodes[name]
            parts.append(
                f"node:{name}:{spec.label}:{spec.timeout}:{spec.retry!r}"
                f":{sorted(spec.destinations) if spec.destinations else '-'}"
                # Only ungated nodes add a part: existing graphs keep their hash.
                + ("" if spec.gated else ":ungated")
            )
        parts += [f"edge:{s}->{t}" for s, t in self.edge_list()]
        parts += sorted(f"join:{sorted(j.sources)}->{j.target}" for j in self.joins)
        parts += sorted(
            f"router:{c.source}:{c.label}:"
            + (
                repr(sorted((repr(k), v) for k, v in c.path_map.items()))
                if c.path_map is not None
                else "-"
            )
            for c in self.conditionals
        )
        parts += [f"reducer:{sig}" for sig in self.reducers.signature()]
        parts += [f"entry:{name}" for name in sorted(self.entries)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    # -- validation

    def validate(self) -> None:
        """Raise the first topology problem found (see `GraphBuilder.compile`)."""
        has_entry = bool(self.edges.get(START)) or any(
            c.source == START for c in self.conditionals
        )
        if not has_entry:
            raise MissingEntryError(
                "missing entry: no edge or conditional edge originates from START;"
                " add one with add_edge(START, 'first_node')"
            )
        self._check_known()
        self._check_cycles()
        self._check_reachability()

    def _check_known(self) -> None:
        known = set(self.nodes) | {START, END}

        def require(name: str, where: str, *parts: object) -> None:
            # ``where`` is formatted only on failure: joins can be very wide.
            if name in known:
                return
            hint = ""
            close = [n for n in self.nodes if n.lower() == name.lower()]
            if close:
                hint = f" (did you mean {close[0]!r}?)"
            shown = [display(p) if isinstance(p, str) else p for p in parts]
            raise UnknownNodeError(
                f"unknown node referenced in {where.format(*shown)}: {name!r}{hint};"
                " register it with add_node first"
            )

        for source, targets in self.edges.items():
            require(source, "an edge from {!r}", source)
            for target in targets:
                require(target, "the edge {} -> {}", source, target)
        for join in self.joins:
            for name in (*join.sources, join.target):
                require(name, "the join {} -> {}", list(join.sources), join.target)
        for cond in self.conditionals:
            require(cond.source, "a conditional edge source")
            for target in cond.declared_targets() or ():
                require(target, "the path_map of the router on {!r}", cond.source)
        for spec in self.nodes.values():
            for target in spec.destinations or ():
                require(target, "the destinations of node {!r}", spec.name)
        for entry in self.entries:
            require(entry, "the entry points")

    def _check_cycles(self) -> None:
        succ: dict[str, list[str]] = {}
        for source, target in self.edge_list():
            succ.setdefault(source, []).append(target)
        grey, black = 1, 2
        colour: dict[str, int] = {}
        # Iterative depth-first search (graphs may be far deeper than the
        # recursion limit): a stack of (node, iterator over its successors).
        for root in sorted(succ, key=_sort_key):
            if root in colour:
                continue
            colour[root] = grey
            path = [root]
            stack = [iter(succ.get(root, ()))]
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    stack.pop()
                    colour[path.pop()] = black
                    continue
                state = colour.get(nxt)
                if state == grey:
                    cycle = [*path[path.index(nxt) :], nxt]
                    raise CycleError(
                        "cycle detected in graph: "
                        + " -> ".join(display(n) for n in cycle)
                        + "; unconditional edges must not loop, use a conditional"
                        " edge (a router) for loops",
                        cycle,
                    )
                if state is None:
                    colour[nxt] = grey
                    path.append(nxt)
                    stack.append(iter(succ.get(nxt, ())))

    def _forward(self) -> tuple[dict[str, set[str]], set[str]]:
        """Plain successors, and the sources whose routing is undeclared (any node)."""
        succ: dict[str, set[str]] = {}
        wildcard: set[str] = set()
        for source, targets in self.edges.items():
            succ.setdefault(source, set()).update(targets)
        for cond in self.conditionals:
            declared = cond.declared_targets()
            if declared is None:
                wildcard.add(cond.source)
            else:
                succ.setdefault(cond.source, set()).update(declared)
        for spec in self.nodes.values():
            if spec.destinations is not None:
                succ.setdefault(spec.name, set()).update(spec.destinations)
        return succ, wildcard

    def _check_reachability(self) -> None:
        succ, wildcard = self._forward()
        everything = [*self.nodes, END]
        # Forward search from START; a join target is reached once all its
        # sources are.
        missing = {join.key: len(join.sources) for join in self.joins}
        reached = {START, *self.entries}
        todo = list(reached)
        while todo:
            node = todo.pop()
            nexts: Iterable[str] = (
                everything if node in wildcard else succ.get(node, ())
            )
            for join in self.joins_of(node):
                missing[join.key] -= 1
                if missing[join.key] == 0:
                    nexts = [*nexts, join.target]
            for nxt in nexts:
                if nxt not in reached:
                    reached.add(nxt)
                    todo.append(nxt)
        unreachable = sorted(set(self.nodes) - reached)
        if unreachable:
            raise UnreachableNodesError(
                "unreachable nodes detected (no path from START): "
                + ", ".join(unreachable)
                + "; connect them with add_edge, declare router targets with"
                " path_map, or, for nodes reached through Replace/Append frontier"
                " commands, declare the sender's targets with"
                " add_node(sender, ..., destinations=[...])",
                unreachable,
            )
        # Backward search from END over the reversed edges; a node whose routing
        # is undeclared may reach END.
        pred: dict[str, list[str]] = {}
        for source, targets in succ.items():
            for target in targets:
                pred.setdefault(target, []).append(source)
        for join in self.joins:
            for source in join.sources:
                pred.setdefault(join.target, []).append(source)
        can_end = {END, *wildcard}
        todo = list(can_end)
        while todo:
            node = todo.pop()
            for prev in pred.get(node, ()):
                if prev not in can_end:
                    can_end.add(prev)
                    todo.append(prev)
        stuck = sorted(set(self.nodes) - can_end)
        if stuck:
            raise NoPathToEndError(
                "nodes with no path to END: "
                + ", ".join(stuck)
                + "; add an edge towards END (directly or through other nodes)",
                stuck,
            )
